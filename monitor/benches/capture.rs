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
    host::cgroup,
    kernel::{AttachScope, BudgetSettings, Hooks, ProgramStats, SensorOptions},
    policy::{Policy, PolicySources},
    session::{Blocking, Plan, Session},
};
use monitor_common::{MODE_NAMES, WATCH_TAG_APP_BASE};
use serde_json::{json, Value};

#[path = "capture/output.rs"]
mod output;

use output::{print_results, print_watched, write_json, Results};

const ROUNDS: usize = 7;

/// Off/on rounds of one scenario (ns/op), each sorted, and their medians.
struct Rounds {
    off: Vec<f64>,
    on: Vec<f64>,
    /// The medians, off and on.
    median: (f64, f64),
}

impl Rounds {
    fn new(mut off: Vec<f64>, mut on: Vec<f64>) -> Self {
        let median = (median(&mut off), median(&mut on));
        Self { off, on, median }
    }

    fn json(&self) -> Value {
        let (off, on) = self.median;
        json!({"off_ns": off, "on_ns": on, "ratio": on / off,
            "off_rounds": self.off, "on_rounds": self.on, "target_ratio": 1.01})
    }
}

/// One off/on line of the table: medians, [min-max] of the rounds, ratio.
fn print_row(label: &str, r: &Rounds) {
    let (off, on) = r.median;
    let (off_lo, off_hi) = spread(&r.off);
    let (on_lo, on_hi) = spread(&r.on);
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

/// A session with the programs loaded per `opts`, watching nothing yet (needs the runtime
/// `main` entered: the ring's reader registers with it).
fn session(opts: SensorOptions) -> Session {
    Session::start(&Plan::bare(opts), &Policy::default(), Blocking::new())
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The monitor as the daemon would run it: meeting apps watched by name, nothing else.
fn monitor_on() -> Session {
    let mut s = session(SensorOptions::default());
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
        s.sensor
            .watch_name(name, WATCH_TAG_APP_BASE + i as u32)
            .unwrap();
    }
    s.sensor.set_mode(MODE_NAMES).unwrap();
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

/// Off/on rounds of `f`, alternating, with the monitor [`monitor_on`] builds.
fn side_by_side(f: impl FnMut() -> f64) -> Rounds {
    side_by_side_with(monitor_on, f)
}

/// The same with the monitor `on()` builds.
fn side_by_side_with<S>(mut on: impl FnMut() -> S, mut f: impl FnMut() -> f64) -> Rounds {
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    f(); // warm-up
    for _ in 0..ROUNDS {
        offs.push(f());
        let monitor = on();
        ons.push(f());
        drop(monitor);
    }
    Rounds::new(offs, ons)
}

/// The monitor watching this very process (its connects are watched ones), programs on
/// the root.
fn monitor_watching_me() -> Session {
    let mut s = session(SensorOptions::default());
    s.sensor
        .watch_tgid(std::process::id(), WATCH_TAG_APP_BASE)
        .unwrap();
    s.sensor.set_mode(MODE_NAMES).unwrap();
    s
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// `kernel.bpf_stats_enabled`: the kernel counts run time per program while it is on.
fn bpf_stats(on: bool) {
    let _ = std::fs::write(BPF_STATS, u8::from(on).to_string());
}

/// Each TCP connect timed on its own, the way the loop measured from outside does it
/// (bench `modes`, `bwconnloop tcp`): connect to a listener of this thread, accept, close
/// the client's end, then the server's. The same packets a connect (six each way), so that
/// the two benches' figures per connect can be set side by side.
fn tcp_connect_samples(n: u32, listener: &std::net::TcpListener) -> Vec<f64> {
    let to = listener.local_addr().unwrap();
    (0..n)
        .map(|_| {
            let start = Instant::now();
            let c = std::net::TcpStream::connect(to).unwrap();
            let (x, _) = listener.accept().unwrap();
            drop(c);
            drop(x);
            start.elapsed().as_nanos() as f64
        })
        .collect()
}

/// Scenario 9's results.
struct Watched {
    /// Per-connect p50, monitor off and on (ns).
    off: f64,
    on: f64,
    /// Every program's statistics, with its in-kernel time per connect (ns).
    programs: Vec<(ProgramStats, f64)>,
    /// The in-kernel time per connect of all programs (ns).
    total: f64,
    /// Times the programs woke the reader (each a VM exit, charged to the waking program).
    wakeups: u64,
}

/// Scenario 9: watched TCP connects: per-connect p50 off and on (alternating rounds), and
/// the in-kernel time of every program per connect from the kernel's own statistics.
fn watched_tcp() -> Watched {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let _ = tcp_connect_samples(500, &listener);
    for _ in 0..ROUNDS {
        off.extend(tcp_connect_samples(1_000, &listener));
        let s = monitor_watching_me();
        on.extend(tcp_connect_samples(1_000, &listener));
        drop(s);
    }
    // In-kernel cost: statistics on, a fresh monitor, N connects, the books per program.
    // The monitor runs the tools' own reader (`next_batch`: it tells the kernel until when
    // it passes by itself, and waits for a wakeup only when it stops passing) on a thread
    // of its own, so that these figures are the ones a user measures from outside (bench
    // `modes`).
    let n = 5_000;
    let stop = AtomicBool::new(false);
    let ready = std::sync::Barrier::new(2);
    let (stats, wakeups) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut s = monitor_watching_me();
                bpf_stats(true);
                ready.wait();
                while !stop.load(Ordering::Relaxed) {
                    let pass = s.capture.next_batch(|_| {});
                    let _ = tokio::time::timeout(Duration::from_millis(5), pass).await;
                }
                let stats = s.sensor.program_stats();
                bpf_stats(false);
                let wakeups = s.sensor.counters().map(|k| k.wakeups).unwrap_or(0);
                s.capture.drain(|_| {});
                (stats, wakeups)
            })
        });
        ready.wait();
        let _ = tcp_connect_samples(n, &listener);
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap()
    });
    let programs: Vec<(ProgramStats, f64)> = stats
        .into_iter()
        .map(|p| {
            let per = p.run_time_ns as f64 / n as f64;
            (p, per)
        })
        .collect();
    let total = programs.iter().map(|(_, per)| per).sum::<f64>();
    Watched {
        off: median(&mut off),
        on: median(&mut on),
        programs,
        total,
        wakeups,
    }
}

impl Watched {
    fn json(&self) -> Value {
        let (off, on) = (self.off, self.on);
        json!({"off_p50_ns": off, "on_p50_ns": on, "ratio": on / off,
            "target_ratio": 1.10, "in_kernel_ns_per_connect": self.total, "target_in_kernel_ns": 1000.0,
            "reader_wakeups": self.wakeups,
            "programs": self.programs.iter().map(|(p, per)| json!({"name": p.name, "runs": p.run_count,
                "run_time_ns": p.run_time_ns, "ns_per_connect": per})).collect::<Vec<_>>()})
    }
}

/// A watched "app" (a sleeping child of this benchmark) in a cgroup of its own, the
/// programs attached only there, as the daemon runs on a desktop; this process, in another
/// cgroup, is the unwatched rest of the machine.
struct AppInItsCgroup {
    session: Session,
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
        let mut session = session(SensorOptions {
            attach: AttachScope::Cgroups,
            ..SensorOptions::default()
        });
        let sensor = &mut session.sensor;
        sensor.watch_tgid(child.id(), WATCH_TAG_APP_BASE).unwrap();
        sensor.set_mode(MODE_NAMES).unwrap();
        sensor.attach_cgroup(&dir, Hooks::All).unwrap();
        Self {
            session,
            child,
            dir,
        }
    }
}

impl Drop for AppInItsCgroup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = &self.session;
    }
}

/// A side-by-side scenario: its line in the table, its key in the JSON and its rounds.
struct Scenario {
    label: &'static str,
    key: &'static str,
    rounds: Rounds,
}

/// The six scenarios where this process is not watched, in the table's order.
fn unwatched(port: u16, tcp_port: u16) -> Vec<Scenario> {
    let c = side_by_side(|| connect_loop(200_000, port));
    let t = side_by_side(|| tcp_connect_loop(5_000, tcp_port));
    let g = side_by_side(|| getpid_loop(2_000_000));
    // The daemon on a desktop: programs only in the watched app's cgroup.
    let ac = side_by_side_with(AppInItsCgroup::start, || connect_loop(200_000, port));
    let at = side_by_side_with(AppInItsCgroup::start, || tcp_connect_loop(5_000, tcp_port));
    let ag = side_by_side_with(AppInItsCgroup::start, || getpid_loop(2_000_000));
    [
        ("UDP connect(), unwatched", "connect_unwatched", c),
        ("TCP connect+accept, unwatched", "tcp_connect_unwatched", t),
        ("getpid() whole-machine tax", "getpid_tax", g),
        (
            "UDP connect(), app in own cgroup",
            "app_cgroup_connect_unwatched",
            ac,
        ),
        (
            "TCP connect+accept, app in own cg",
            "app_cgroup_tcp_connect_unwatched",
            at,
        ),
        ("getpid(), app in own cgroup", "app_cgroup_getpid", ag),
    ]
    .into_iter()
    .map(|(label, key, rounds)| Scenario { label, key, rounds })
    .collect()
}

/// Scenario 4's results.
struct ShortLived {
    /// Children whose connection was seen.
    children: usize,
    /// Of them, attributed to the right executable and parent.
    attributed: usize,
    secs: f64,
}

/// Scenario 4: `n` short-lived processes (this benchmark re-executed as a client), each
/// connecting once and exiting; share attributed to the right executable and parent.
fn short_lived(n: usize, port: u16) -> ShortLived {
    let mut s = session(SensorOptions {
        ring_bytes: 16 * 1024 * 1024,
        ..SensorOptions::default()
    });
    let me = std::process::id();
    s.sensor.watch_tgid(me, 1).unwrap();
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let status = std::process::Command::new(&exe)
            .env("BW_BENCH_CHILD_CONNECT", port.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        s.capture.drain(|r| s.engine.handle(&r));
    }
    let secs = start.elapsed().as_secs_f64();
    for _ in 0..100 {
        s.capture.drain(|r| s.engine.handle(&r));
        let k = s.sensor.counters().unwrap();
        if k.generated == s.capture.delivered + k.lost + k.over_budget {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let exe = exe.display().to_string();
    let rows = s.engine.connections();
    let children: Vec<u32> = rows
        .iter()
        .map(|(k, _)| k.pid)
        .filter(|&p| p != me)
        .collect();
    let attributed = children
        .iter()
        .filter(|pid| {
            s.engine
                .process(**pid)
                .is_some_and(|p| p.exe.as_deref() == Some(exe.as_str()) && p.ppid == me)
        })
        .count();
    ShortLived {
        children: children.len(),
        attributed,
        secs,
    }
}

/// Scenario 7's results, in seconds from the start.
struct Startup {
    /// The built-in policies loaded.
    policies: f64,
    /// And the programs loaded and attached (a session started).
    total: f64,
}

/// Scenario 7: loading the built-in policies and the kernel programs, attached.
fn startup() -> Startup {
    let start = Instant::now();
    let policy = Policy::load(&PolicySources::default()).unwrap();
    let policies = start.elapsed().as_secs_f64();
    let session = Session::start(
        &Plan::bare(SensorOptions::default()),
        &policy,
        Blocking::new(),
    )
    .unwrap();
    let total = start.elapsed().as_secs_f64();
    drop((policy, session));
    Startup { policies, total }
}

struct Flood {
    seconds: f64,
    generated: u64,
    delivered: u64,
    lost: u64,
}

impl Flood {
    /// Everything generated was delivered or counted lost.
    fn exact(&self) -> bool {
        self.generated == self.delivered + self.lost
    }

    fn records_per_s(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }

    fn json(&self) -> Value {
        json!({"seconds": self.seconds, "records_per_s": self.records_per_s(),
            "generated": self.generated, "delivered": self.delivered, "lost": self.lost,
            "invariant_exact": self.exact()})
    }
}

/// A watched process (this one) connecting as fast as it can for `dur`, consumer on the
/// other core.
fn flood(dur: Duration, port: u16, producers: usize) -> Flood {
    // The reader's throughput: no user budget refuses the flood first (with one, a flood
    // costs its own user's records; the soak measures that).
    let mut s = session(SensorOptions {
        budget: Some(BudgetSettings::OFF),
        ..SensorOptions::default()
    });
    s.sensor.watch_tgid(std::process::id(), 1).unwrap();
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
        if s.capture.drain(|_| {}) == 0 {
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
        s.capture.drain(|_| {});
        let k = s.sensor.counters().unwrap();
        if k.generated == s.capture.delivered + k.lost + k.over_budget {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let k = s.sensor.counters().unwrap();
    Flood {
        seconds,
        generated: k.generated,
        delivered: s.capture.delivered,
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
    // std listens with a backlog of 128: when the connecting loop outruns this thread the
    // queue fills and a dropped SYN waits a second for its retry (the 'off' rounds read
    // 2.6 ms a connect on a faster VM). Listening again only raises the backlog.
    // SAFETY: a listening socket this function owns.
    let relisten = unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) };
    assert_eq!(relisten, 0, "raising the listener's backlog");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    // Sessions' ring readers register with an event loop (drained by hand here).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();

    // `BW_BENCH_ONLY=watched`: the watched-connect scenario alone (quick iterations).
    if std::env::var("BW_BENCH_ONLY").as_deref() == Ok("watched") {
        print_watched(&watched_tcp());
        return;
    }
    let r = Results {
        unwatched: unwatched(port, tcp_port),
        watched: watched_tcp(),
        floods: [
            flood(Duration::from_secs(3), port, 1),
            flood(Duration::from_secs(3), port, 2),
        ],
        short: short_lived(1000, tcp_port),
        startup: startup(),
    };
    print_results(&r);
    let path = write_json(&r);
    println!("wrote {path}");
    if r.floods.iter().any(|f| !f.exact()) {
        std::process::exit(1);
    }
}
