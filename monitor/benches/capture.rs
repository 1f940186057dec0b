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
    host::cgroup,
    kernel::{AttachScope, Capture, Hooks, ProgramStats, Sensor, SensorOptions},
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
fn side_by_side(f: impl FnMut() -> f64) -> (Vec<f64>, Vec<f64>) {
    side_by_side_with(monitor_on, f)
}

/// The same with the monitor `on()` builds.
fn side_by_side_with<S>(
    mut on: impl FnMut() -> S,
    mut f: impl FnMut() -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    f(); // warm-up
    for _ in 0..ROUNDS {
        offs.push(f());
        let sensor = on();
        ons.push(f());
        drop(sensor);
    }
    (offs, ons)
}

/// The monitor watching this very process (its connects are watched ones), programs on
/// the root.
fn monitor_watching_me() -> Sensor {
    let mut s = Sensor::load(&SensorOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
    s.watch_tgid(std::process::id(), WATCH_TAG_APP_BASE)
        .unwrap();
    s.set_mode(MODE_NAMES).unwrap();
    s
}

/// `kernel.bpf_stats_enabled`: the kernel counts run time per program while it is on.
fn bpf_stats(on: bool) {
    let _ = std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        if on { "1" } else { "0" },
    );
}

/// Each TCP connect (handshake, accept on another thread, reset) timed on its own.
fn tcp_connect_samples(n: u32, port: u16) -> Vec<f64> {
    (0..n).map(|_| tcp_connect_loop(1, port)).collect()
}

fn p50(mut v: Vec<f64>) -> f64 {
    median(&mut v)
}

/// Scenario 9: watched TCP connects: per-connect p50 off and on (alternating rounds), and
/// the in-kernel time of every program per connect from the kernel's own statistics.
fn watched_tcp(port: u16) -> Watched {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let _ = tcp_connect_samples(500, port);
    for _ in 0..ROUNDS {
        off.extend(tcp_connect_samples(1_000, port));
        let s = monitor_watching_me();
        on.extend(tcp_connect_samples(1_000, port));
        drop(s);
    }
    // In-kernel cost: statistics on, a fresh monitor, N connects, the books per program.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    let n = 5_000;
    let mut s = monitor_watching_me();
    let mut capture = Capture::new(s.take_ring().unwrap()).unwrap();
    bpf_stats(true);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let drainer = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            capture.drain(|_| {});
            std::thread::sleep(Duration::from_micros(200));
        }
        capture.drain(|_| {});
    });
    let _ = tcp_connect_samples(n, port);
    let stats = s.program_stats();
    bpf_stats(false);
    stop.store(true, Ordering::Relaxed);
    drainer.join().unwrap();
    let per_connect: Vec<(ProgramStats, f64)> = stats
        .into_iter()
        .map(|p| {
            let per = p.run_time_ns as f64 / n as f64;
            (p, per)
        })
        .collect();
    let total = per_connect.iter().map(|(_, per)| per).sum::<f64>();
    (p50(off), p50(on), per_connect, total)
}

type Watched = (f64, f64, Vec<(ProgramStats, f64)>, f64);

fn print_watched((off, on, stats, total): &Watched) {
    println!(
        "watched TCP connect p50: off {:.1} us, on {:.1} us: {:.3}x",
        off / 1e3,
        on / 1e3,
        on / off
    );
    println!("in-kernel time per watched TCP connect (bpf_stats), all programs: {total:.0} ns");
    for (p, per) in stats {
        if p.run_count > 0 {
            println!(
                "  {:<18} {:>8} runs  {:>7.0} ns/run  {:>7.0} ns per connect",
                p.name,
                p.run_count,
                p.run_time_ns as f64 / p.run_count as f64,
                per
            );
        }
    }
}

/// A watched "app" (a sleeping child of this benchmark) in a cgroup of its own, the
/// programs attached only there, as the daemon runs on a desktop; this process, in another
/// cgroup, is the unwatched rest of the machine.
struct AppInItsCgroup {
    sensor: Sensor,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl AppInItsCgroup {
    fn start() -> Self {
        let mount = cgroup::cgroup2_mount().unwrap();
        let dir = mount.join(format!("bwbench-app-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = std::process::Command::new("sleep")
            .arg("3600")
            .spawn()
            .unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        let mut sensor = Sensor::load(&SensorOptions {
            attach: AttachScope::Cgroups,
            ..SensorOptions::default()
        })
        .unwrap();
        sensor.watch_tgid(child.id(), WATCH_TAG_APP_BASE).unwrap();
        sensor.set_mode(MODE_NAMES).unwrap();
        sensor.attach_cgroup(&dir, Hooks::All).unwrap();
        Self { sensor, child, dir }
    }
}

impl Drop for AppInItsCgroup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = &self.sensor;
    }
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

    // `BW_BENCH_ONLY=watched`: the watched-connect scenario alone (quick iterations).
    if std::env::var("BW_BENCH_ONLY").as_deref() == Ok("watched") {
        let w = watched_tcp(tcp_port);
        print_watched(&w);
        return;
    }
    let (mut c_off, mut c_on) = side_by_side(|| connect_loop(200_000, port));
    let (mut t_off, mut t_on) = side_by_side(|| tcp_connect_loop(5_000, tcp_port));
    let (mut g_off, mut g_on) = side_by_side(|| getpid_loop(2_000_000));
    // The daemon on a desktop: programs only in the watched app's cgroup.
    let (mut ac_off, mut ac_on) =
        side_by_side_with(AppInItsCgroup::start, || connect_loop(200_000, port));
    let (mut at_off, mut at_on) =
        side_by_side_with(AppInItsCgroup::start, || tcp_connect_loop(5_000, tcp_port));
    let (mut ag_off, mut ag_on) =
        side_by_side_with(AppInItsCgroup::start, || getpid_loop(2_000_000));
    let (w_off, w_on, w_stats, w_total) = watched_tcp(tcp_port);
    let fl = flood(Duration::from_secs(3), port, 1);
    let fl2 = flood(Duration::from_secs(3), port, 2);
    let (children, attributed, short_secs) = short_lived(1000, tcp_port);
    let (startup_policies, startup_total) = startup();

    let c = (median(&mut c_off), median(&mut c_on));
    let g = (median(&mut g_off), median(&mut g_on));
    let t = (median(&mut t_off), median(&mut t_on));
    let ac = (median(&mut ac_off), median(&mut ac_on));
    let at = (median(&mut at_off), median(&mut at_on));
    let ag = (median(&mut ag_off), median(&mut ag_on));
    let rate = fl.delivered as f64 / fl.seconds;
    println!("scenario                               off (ns/op)        on (ns/op)        on/off");
    print_row("UDP connect(), unwatched", c, &c_off, &c_on);
    print_row("TCP connect+accept, unwatched", t, &t_off, &t_on);
    print_row("getpid() whole-machine tax", g, &g_off, &g_on);
    print_row("UDP connect(), app in own cgroup", ac, &ac_off, &ac_on);
    print_row("TCP connect+accept, app in own cg", at, &at_off, &at_on);
    print_row("getpid(), app in own cgroup", ag, &ag_off, &ag_on);
    print_watched(&(w_off, w_on, w_stats.clone(), w_total));
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
        "app_cgroup_connect_unwatched": {"off_ns": ac.0, "on_ns": ac.1, "ratio": ac.1 / ac.0,
            "off_rounds": ac_off, "on_rounds": ac_on, "target_ratio": 1.01},
        "app_cgroup_tcp_connect_unwatched": {"off_ns": at.0, "on_ns": at.1, "ratio": at.1 / at.0,
            "off_rounds": at_off, "on_rounds": at_on, "target_ratio": 1.01},
        "app_cgroup_getpid": {"off_ns": ag.0, "on_ns": ag.1, "ratio": ag.1 / ag.0,
            "off_rounds": ag_off, "on_rounds": ag_on, "target_ratio": 1.01},
        "watched_tcp_connect": {"off_p50_ns": w_off, "on_p50_ns": w_on, "ratio": w_on / w_off,
            "target_ratio": 1.10, "in_kernel_ns_per_connect": w_total, "target_in_kernel_ns": 1000.0,
            "programs": w_stats.iter().map(|(p, per)| json!({"name": p.name, "runs": p.run_count,
                "run_time_ns": p.run_time_ns, "ns_per_connect": per})).collect::<Vec<_>>()},
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
