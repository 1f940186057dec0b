//! Daemon benchmarks (run by `cargo xtask bench`, as root): connect-to-decision and
//! connect-to-client latency, RSS idle and with a 1,000,000-domain list, CPU and wakeups of
//! an idle daemon. Output JSON at `$BW_BENCH_OUT` (default bench-results/daemon.json).

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use brokerwatch::host::clock::boot_ns;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");
const PROBE: &str = env!("CARGO_BIN_EXE_bw-netprobe");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, extra: &[&str]) -> (Daemon, f64) {
    let _ = std::fs::remove_file(dir.join("s.sock"));
    let t0 = Instant::now();
    let child = Command::new(BIN)
        .args(["daemon", "--group", "nogroup", "--policy-dir"])
        .arg(dir.join("policies.d"))
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon(child);
    while UnixStream::connect(dir.join("s.sock")).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready = t0.elapsed().as_secs_f64();
    (d, ready)
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after ')'.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A command run in the benchmark's desktop session: display :95 and the session bus at
/// `bus`.
fn spawn_in(bus: &Path, argv: &[&str], out: Stdio) -> std::io::Result<Child> {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..])
        .stdout(out)
        .stderr(Stdio::null())
        .env("DISPLAY", ":95")
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}", bus.display()),
        );
    c.spawn()
}

/// Starts a desktop session (Xvfb, a session D-Bus at `bus`, dunst) into `procs`, and a
/// `dbus-monitor` whose every Notify call is stamped (boot clock) on the channel returned.
/// `None` (and says why) when the tools are missing.
fn start_desktop(bus: &Path, procs: &mut Kill) -> Option<std::sync::mpsc::Receiver<u64>> {
    let (Ok(x), Ok(b)) = (
        spawn_in(
            bus,
            &[
                "Xvfb",
                ":95",
                "-screen",
                "0",
                "800x600x24",
                "-nolisten",
                "tcp",
            ],
            Stdio::null(),
        ),
        spawn_in(
            bus,
            &[
                "dbus-daemon",
                "--session",
                "--nofork",
                "--nopidfile",
                &format!("--address=unix:path={}", bus.display()),
            ],
            Stdio::null(),
        ),
    ) else {
        eprintln!("no Xvfb/dbus-daemon: notification latency not measured (cargo xtask setup installs them)");
        return None;
    };
    procs.0.extend([x, b]);
    std::thread::sleep(Duration::from_secs(1));
    let (Ok(dunst), Ok(mut monitor)) = (
        spawn_in(bus, &["dunst"], Stdio::null()),
        spawn_in(
            bus,
            &[
                "dbus-monitor",
                "--session",
                "interface='org.freedesktop.Notifications',member='Notify'",
            ],
            Stdio::piped(),
        ),
    ) else {
        eprintln!("no dunst/dbus-monitor: notification latency not measured");
        return None;
    };
    let (ntx, nrx) = std::sync::mpsc::channel::<u64>();
    let out = monitor.stdout.take().unwrap();
    procs.0.extend([dunst, monitor]);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("method call")
                && line.contains("member=Notify")
                && ntx.send(boot_ns()).is_err()
            {
                break;
            }
        }
    });
    Some(nrx)
}

/// Starts `brokerwatch notify` in the desktop session at `bus` into `procs` (no dedup, no
/// rate limit), for the daemon whose socket is in `dir`. False if it cannot start.
fn start_agent(bus: &Path, dir: &Path, procs: &mut Kill) -> bool {
    let socket = dir.join("s.sock");
    let Ok(agent) = spawn_in(
        bus,
        &[
            BIN,
            "notify",
            "--socket",
            socket.to_str().unwrap(),
            "--dedup",
            "0s",
            "--per-minute",
            "1000000",
        ],
        Stdio::null(),
    ) else {
        return false;
    };
    procs.0.push(agent);
    true
}

/// 30 broker contacts by `zoom`, each followed by its alert (on `alerts`) and the
/// notification server's Notify call (on `notified`); the connect-to-Notify latencies in ms.
fn notify_samples(
    zoom: &Path,
    port: u16,
    alerts: &std::sync::mpsc::Receiver<(u64, String)>,
    notified: &std::sync::mpsc::Receiver<u64>,
) -> Vec<f64> {
    while alerts.try_recv().is_ok() {}
    while notified.try_recv().is_ok() {}
    let mut out = Vec::new();
    for _ in 0..30 {
        let st = Command::new(zoom)
            .arg(format!("tcp:127.0.0.2:{port}"))
            .status()
            .unwrap();
        assert!(st.success());
        let Ok((_, line)) = alerts.recv_timeout(Duration::from_secs(10)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&line).unwrap();
        let connect = v["alert"]["connect_boot_ns"].as_u64().unwrap_or(0);
        if let Ok(at) = notified.recv_timeout(Duration::from_secs(5)) {
            out.push((at.saturating_sub(connect)) as f64 / 1e6);
        }
        // Past the agent's burst window: the next alert is a new notification.
        std::thread::sleep(Duration::from_millis(1700));
        while notified.try_recv().is_ok() {}
    }
    out
}

/// Starts a desktop session and the agent; returns connect-to-Notify latencies in ms.
fn notification_latency(
    dir: &Path,
    zoom: &Path,
    port: u16,
    alerts: &std::sync::mpsc::Receiver<(u64, String)>,
) -> Vec<f64> {
    let bus = dir.join("bus");
    let mut procs = Kill(Vec::new());
    let Some(notified) = start_desktop(&bus, &mut procs) else {
        return Vec::new();
    };
    if !start_agent(&bus, dir, &mut procs) {
        return Vec::new();
    }
    std::thread::sleep(Duration::from_secs(2));
    notify_samples(zoom, port, alerts, &notified)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Seconds the idle daemon is watched for.
const IDLE_SECS: u64 = 60;

/// Alerts timed in the latency scenario.
const SAMPLES: usize = 200;

/// Writes the daemon's policy (127.0.0.2 is a broker) in `dir`, listens there (accepting
/// and dropping every connection so that the backlog never fills) and copies the probe to
/// `dir/zoom`; returns the broker's port and the probe.
fn prepare(dir: &Path) -> (u16, PathBuf) {
    std::fs::create_dir_all(dir.join("policies.d")).unwrap();
    std::fs::write(
        dir.join("policies.d/b.toml"),
        "[[destination]]\nid = \"b\"\ncompany = \"Bench Broker\"\ncategory = \"data-broker\"\ncidrs = [\"127.0.0.2/32\"]\nsource = \"bench\"\n",
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    let zoom = dir.join("zoom");
    std::fs::copy(PROBE, &zoom).unwrap();
    (port, zoom)
}

/// Subscribes to the daemon's alerts at `dir/s.sock`; a reader thread stamps every alert
/// (boot clock) as it arrives, while the probes run.
fn subscribe(dir: &Path) -> (UnixStream, std::sync::mpsc::Receiver<(u64, String)>) {
    let mut sub = UnixStream::connect(dir.join("s.sock")).unwrap();
    sub.write_all(b"{\"op\":\"subscribe\"}\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(u64, String)>();
    let mut reader = BufReader::new(sub.try_clone().unwrap());
    // The daemon answers once the subscription holds: an alert broadcast before then would
    // not reach this client, and the first probe would wait for it in vain.
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("subscribed"), "{first}");
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send((boot_ns(), line)).is_err() {
                break;
            }
        }
    });
    (sub, rx)
}

/// Per-alert latencies in ms.
struct AlertLatency {
    /// Connect to the daemon's decision.
    decide: Vec<f64>,
    /// Connect to the alert's arrival at a client.
    deliver: Vec<f64>,
}

/// Scenario 5: [`SAMPLES`] broker contacts by `zoom`, each awaited as an alert on `alerts`.
fn alert_latency(
    zoom: &Path,
    port: u16,
    alerts: &std::sync::mpsc::Receiver<(u64, String)>,
) -> AlertLatency {
    let (mut decide, mut deliver) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        let st = Command::new(zoom)
            .arg(format!("tcp:127.0.0.2:{port}"))
            .status()
            .unwrap();
        assert!(st.success());
        let (got, line) = alerts
            .recv_timeout(Duration::from_secs(10))
            .expect("an alert");
        let v: Value = serde_json::from_str(&line).unwrap();
        let a = &v["alert"];
        let c = a["connect_boot_ns"].as_u64().unwrap();
        decide.push((a["decided_boot_ns"].as_u64().unwrap() - c) as f64 / 1e6);
        deliver.push((got - c) as f64 / 1e6);
    }
    AlertLatency { decide, deliver }
}

/// What an idle daemon costs.
struct Idle {
    rss_kb: u64,
    /// CPU over [`IDLE_SECS`], in % of a core.
    cpu_pct: f64,
    /// Context switches per second.
    wakeups: f64,
}

/// Context switches of `pid` so far, voluntary or not.
fn switches(pid: u32) -> u64 {
    status_field(pid, "voluntary_ctxt_switches:") + status_field(pid, "nonvoluntary_ctxt_switches:")
}

/// Scenario 6: the daemon `pid` idle: its RSS after 2 s, then its CPU and wakeups over
/// [`IDLE_SECS`].
fn idle(pid: u32) -> Idle {
    std::thread::sleep(Duration::from_secs(2));
    let rss_kb = status_field(pid, "VmRSS:");
    let (t0, c0) = (cpu_ticks(pid), switches(pid));
    std::thread::sleep(Duration::from_secs(IDLE_SECS));
    let (t1, c1) = (cpu_ticks(pid), switches(pid));
    // SAFETY: plain sysconf.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Idle {
        rss_kb,
        cpu_pct: (t1 - t0) as f64 / hz / IDLE_SECS as f64 * 100.0,
        wakeups: (c1 - c0) as f64 / IDLE_SECS as f64,
    }
}

/// Scenario 6 with a 1,000,000-domain list imported: the daemon's start to socket ready
/// in seconds, and its RSS in KiB 2 s later.
fn with_million(dir: &Path) -> (f64, u64) {
    let list = dir.join("million.txt");
    let mut text = String::with_capacity(28_000_000);
    for i in 0..1_000_000 {
        text.push_str(&format!("||t{i}.track{}.example{}.com^\n", i % 997, i % 13));
    }
    std::fs::write(&list, &text).unwrap();
    drop(text);
    let spec = format!("adblock:{}:ad-attribution", list.display());
    let (d, ready_list_s) = start(dir, &["--import", &spec]);
    std::thread::sleep(Duration::from_secs(2));
    let rss_list_kb = status_field(d.0.id(), "VmRSS:");
    (ready_list_s, rss_list_kb)
}

/// Everything measured.
struct Results {
    ready_s: f64,
    ready_list_s: f64,
    alerts: AlertLatency,
    /// Connect to the notification server's Notify call, in ms (none without a desktop).
    notify_ms: Vec<f64>,
    idle: Idle,
    rss_list_kb: u64,
}

/// Prints the results and writes them as JSON to `$BW_BENCH_OUT`.
fn report(mut r: Results) {
    let notify_ms = &mut r.notify_ms;
    let (s50, s99) = if notify_ms.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (pct(notify_ms, 0.5), pct(notify_ms, 0.99))
    };
    let (decide, deliver) = (&mut r.alerts.decide, &mut r.alerts.deliver);
    let (d50, d99) = (pct(decide, 0.5), pct(decide, 0.99));
    let (n50, n99) = (pct(deliver, 0.5), pct(deliver, 0.99));
    let (ready_s, ready_list_s) = (r.ready_s, r.ready_list_s);
    let (rss_idle_kb, rss_list_kb) = (r.idle.rss_kb, r.rss_list_kb);
    let (cpu_pct, wakeups, idle_secs, samples) =
        (r.idle.cpu_pct, r.idle.wakeups, IDLE_SECS, SAMPLES);
    println!("daemon start to socket ready: {:.0} ms (built-in policies), {:.0} ms (with 1,000,000 domains)", ready_s * 1e3, ready_list_s * 1e3);
    println!("connect -> alert decision: p50 {d50:.2} ms, p99 {d99:.2} ms ({samples} samples)");
    println!("connect -> alert at a client: p50 {n50:.2} ms, p99 {n99:.2} ms");
    println!(
        "connect -> notification server (dunst) receives it: p50 {s50:.2} ms, p99 {s99:.2} ms ({} samples)",
        notify_ms.len()
    );
    println!(
        "RSS idle {:.1} MiB; with 1,000,000 domains {:.1} MiB",
        rss_idle_kb as f64 / 1024.0,
        rss_list_kb as f64 / 1024.0
    );
    println!(
        "idle over {idle_secs} s: CPU {cpu_pct:.3} % of a core, {wakeups:.2} context switches/s"
    );
    let out = json!({
        "ready_ms": ready_s * 1e3, "ready_with_list_ms": ready_list_s * 1e3,
        "decision_ms": {"p50": d50, "p99": d99, "target_p99": 5.0},
        "client_ms": {"p50": n50, "p99": n99},
        "notification_server_ms": {"p50": s50, "p99": s99, "samples": notify_ms.len(), "target_p99": 50.0},
        "samples": samples,
        "rss_idle_mib": rss_idle_kb as f64 / 1024.0,
        "rss_with_million_mib": rss_list_kb as f64 / 1024.0,
        "idle_cpu_pct": cpu_pct, "idle_switches_per_s": wakeups, "idle_seconds": idle_secs,
        "target_idle_cpu_pct": 0.1,
    });
    let path = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/daemon.json".into());
    if let Some(p) = PathBuf::from(&path).parent() {
        let _ = std::fs::create_dir_all(p);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("wrote {path}");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the daemon benchmarks load eBPF programs: run them as root");
        std::process::exit(2);
    }
    let dir = std::env::temp_dir().join(format!("bw-daemon-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (port, zoom) = prepare(&dir);

    // Scenario 7 (daemon form) and 5: latency.
    let (d, ready_s) = start(&dir, &[]);
    let (sub, rx) = subscribe(&dir);
    let alerts = alert_latency(&zoom, port, &rx);
    // Scenario 5, second half: connect -> the notification server receiving the Notify
    // call (a real session: Xvfb, a session D-Bus, dunst, and `brokerwatch notify`).
    let notify_ms = notification_latency(&dir, &zoom, port, &rx);
    let idle = idle(d.0.id());
    drop(d);
    drop(sub);
    let (ready_list_s, rss_list_kb) = with_million(&dir);
    std::fs::remove_dir_all(&dir).ok();
    report(Results {
        ready_s,
        ready_list_s,
        alerts,
        notify_ms,
        idle,
        rss_list_kb,
    });
}
