//! Capture benchmarks (run by `cargo xtask bench`, as root). Each scenario measures the
//! monitor off and on side by side in the same run, alternating rounds, and reports the
//! median and spread. Traffic goes to loopback only.
//!
//! Output: a table on stdout and JSON at `$BW_BENCH_OUT` (default bench-results/capture.json).

use std::{
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use brokerwatch::{
    engine::Engine,
    kernel::{Capture, Sensor, SensorOptions},
    policy::{Policy, PolicySources},
};
use monitor_common::{MODE_NAMES, WATCH_TAG_APP_BASE};
use serde_json::json;

const ROUNDS: usize = 7;

/// One off/on line of the table: medians, [min-max] of the rounds, ratio.
fn print_row(label: &str, (off, on): (f64, f64), off_rounds: &[f64], on_rounds: &[f64]) {
    let (off_lo, off_hi) = spread(off_rounds);
    let (on_lo, on_hi) = spread(on_rounds);
    println!(
        "{label:<36}{off:>8.1} [{off_lo:.0}-{off_hi:.0}]  {on:>8.1} [{on_lo:.0}-{on_hi:.0}]  {:.3}",
        on / off
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// The monitor as the daemon would run it: meeting apps watched by name, nothing else.
fn monitor_on() -> Sensor {
    let mut s = Sensor::load(&SensorOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
    for (i, name) in [
        "zoom",
        "ZoomWebviewHost",
        "teams-for-linux",
        "slack",
        "Discord",
    ]
    .iter()
    .enumerate()
    {
        s.watch_name(name, WATCH_TAG_APP_BASE + i as u32).unwrap();
    }
    s.set_mode(MODE_NAMES).unwrap();
    s
}

fn connect_loop(n: u32, port: u16) -> f64 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dst = format!("127.0.0.1:{port}");
    let start = Instant::now();
    for _ in 0..n {
        sock.connect(&dst).unwrap();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Full TCP connects (handshake, accept on another thread, close) to loopback.
fn tcp_connect_loop(n: u32, port: u16) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Close with a reset: no TIME_WAIT pile-up across rounds.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid socket and option buffer.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn getpid_loop(n: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: getpid has no arguments and no side effects.
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Off/on rounds of `f`, alternating; returns (off ns/op, on ns/op) per round.
fn side_by_side(mut f: impl FnMut() -> f64) -> (Vec<f64>, Vec<f64>) {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    f(); // warm-up
    for _ in 0..ROUNDS {
        off.push(f());
        let sensor = monitor_on();
        on.push(f());
        drop(sensor);
    }
    (off, on)
}

/// Scenario 4: `n` short-lived processes (this benchmark re-executed as a client), each
/// connecting once and exiting; share attributed to the right executable and parent.
fn short_lived(n: usize, port: u16) -> (usize, usize, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    let mut sensor = Sensor::load(&SensorOptions {
        ring_bytes: 16 * 1024 * 1024,
        ..SensorOptions::default()
    })
    .unwrap();
    let me = std::process::id();
    sensor.watch_tgid(me, 1).unwrap();
    let mut capture = Capture::new(sensor.take_ring().unwrap()).unwrap();
    let mut engine = Engine::new();
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let status = std::process::Command::new(&exe)
            .env("BW_BENCH_CHILD_CONNECT", port.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        capture.drain(|r| engine.handle(&r));
    }
    let secs = start.elapsed().as_secs_f64();
    for _ in 0..100 {
        capture.drain(|r| engine.handle(&r));
        let k = sensor.counters().unwrap();
        if k.generated == capture.delivered + k.lost {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let exe = exe.display().to_string();
    let rows = engine.connections();
    let children: Vec<u32> = rows
        .iter()
        .map(|(k, _)| k.pid)
        .filter(|&p| p != me)
        .collect();
    let attributed = children
        .iter()
        .filter(|pid| {
            engine
                .process(**pid)
                .is_some_and(|p| p.exe.as_deref() == Some(exe.as_str()) && p.ppid == me)
        })
        .count();
    (children.len(), attributed, secs)
}

/// Scenario 7: loading the built-in policies and the kernel programs, attached.
fn startup() -> (f64, f64) {
    let start = Instant::now();
    let policy = Policy::load(&PolicySources::default()).unwrap();
    let policies = start.elapsed().as_secs_f64();
    let sensor = Sensor::load(&SensorOptions::default()).unwrap();
    let total = start.elapsed().as_secs_f64();
    drop((policy, sensor));
    (policies, total)
}

struct Flood {
    seconds: f64,
    generated: u64,
    delivered: u64,
    lost: u64,
}

/// A watched process (this one) connecting as fast as it can for `dur`, consumer on the
/// other core.
fn flood(dur: Duration, port: u16, producers: usize) -> Flood {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    let mut sensor = Sensor::load(&SensorOptions::default()).unwrap();
    sensor.watch_tgid(std::process::id(), 1).unwrap();
    let mut capture = Capture::new(sensor.take_ring().unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..producers)
        .map(|_| {
            let stop2 = stop.clone();
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                let dst = format!("127.0.0.1:{port}");
                while !stop2.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        sock.connect(&dst).unwrap();
                    }
                }
            })
        })
        .collect();
    while start.elapsed() < dur {
        if capture.drain(|_| {}) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let seconds = start.elapsed().as_secs_f64();
    // Settle: everything generated is either delivered or counted lost.
    for _ in 0..200 {
        capture.drain(|_| {});
        let k = sensor.counters().unwrap();
        if k.generated == capture.delivered + k.lost {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let k = sensor.counters().unwrap();
    Flood {
        seconds,
        generated: k.generated,
        delivered: capture.delivered,
        lost: k.lost,
    }
}

fn main() {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "the capture benchmarks load eBPF programs: run them as root (cargo xtask bench does)"
        );
        std::process::exit(2);
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Re-executed as a short-lived client (scenario 4): connect once, exit.
    if let Ok(port) = std::env::var("BW_BENCH_CHILD_CONNECT") {
        let _ = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()));
        return;
    }
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });

    let (mut c_off, mut c_on) = side_by_side(|| connect_loop(200_000, port));
    let (mut t_off, mut t_on) = side_by_side(|| tcp_connect_loop(5_000, tcp_port));
    let (mut g_off, mut g_on) = side_by_side(|| getpid_loop(2_000_000));
    let fl = flood(Duration::from_secs(3), port, 1);
    let fl2 = flood(Duration::from_secs(3), port, 2);
    let (children, attributed, short_secs) = short_lived(1000, tcp_port);
    let (startup_policies, startup_total) = startup();

    let c = (median(&mut c_off), median(&mut c_on));
    let g = (median(&mut g_off), median(&mut g_on));
    let t = (median(&mut t_off), median(&mut t_on));
    let rate = fl.delivered as f64 / fl.seconds;
    println!("scenario                               off (ns/op)        on (ns/op)        on/off");
    print_row("UDP connect(), unwatched", c, &c_off, &c_on);
    print_row("TCP connect+accept, unwatched", t, &t_off, &t_on);
    print_row("getpid() whole-machine tax", g, &g_off, &g_on);
    println!(
        "watched flood: {:.0} records/s delivered over {:.1}s; generated {} = delivered {} + lost {}: {}",
        rate,
        fl.seconds,
        fl.generated,
        fl.delivered,
        fl.lost,
        if fl.generated == fl.delivered + fl.lost { "exact" } else { "MISMATCH" }
    );
    println!(
        "watched flood, 2 producers: {:.0} records/s delivered; generated {} = delivered {} + lost {}: {}",
        fl2.delivered as f64 / fl2.seconds,
        fl2.generated,
        fl2.delivered,
        fl2.lost,
        if fl2.generated == fl2.delivered + fl2.lost { "exact" } else { "MISMATCH" }
    );
    println!(
        "1,000 short-lived processes: {children} connected, {attributed} attributed with exe and parent ({:.1}%) in {short_secs:.1}s",
        100.0 * attributed as f64 / 1000.0
    );
    println!(
        "start-up: built-in policies {:.1} ms, + programs loaded and attached = {:.1} ms",
        startup_policies * 1e3,
        startup_total * 1e3
    );
    let out = json!({
        "connect_unwatched": {"off_ns": c.0, "on_ns": c.1, "ratio": c.1 / c.0,
            "off_rounds": c_off, "on_rounds": c_on, "target_ratio": 1.01},
        "tcp_connect_unwatched": {"off_ns": t.0, "on_ns": t.1, "ratio": t.1 / t.0,
            "off_rounds": t_off, "on_rounds": t_on, "target_ratio": 1.01},
        "getpid_tax": {"off_ns": g.0, "on_ns": g.1, "ratio": g.1 / g.0,
            "off_rounds": g_off, "on_rounds": g_on, "target_ratio": 1.01},
        "watched_flood": {"seconds": fl.seconds, "records_per_s": rate, "generated": fl.generated,
            "delivered": fl.delivered, "lost": fl.lost,
            "invariant_exact": fl.generated == fl.delivered + fl.lost},
        "watched_flood_2_producers": {"seconds": fl2.seconds, "records_per_s": fl2.delivered as f64 / fl2.seconds,
            "generated": fl2.generated, "delivered": fl2.delivered, "lost": fl2.lost,
            "invariant_exact": fl2.generated == fl2.delivered + fl2.lost},
        "short_lived_1000": {"connected": children, "attributed": attributed,
            "share": attributed as f64 / 1000.0, "seconds": short_secs, "target_share": 1.0},
        "startup": {"policies_ms": startup_policies * 1e3, "total_ms": startup_total * 1e3, "target_ms": 300.0},
    });
    let path =
        std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/capture.json".into());
    if let Some(dir) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("wrote {path}");
    if fl.generated != fl.delivered + fl.lost || fl2.generated != fl2.delivered + fl2.lost {
        std::process::exit(1);
    }
}
