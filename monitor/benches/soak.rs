//! Soak (run by `cargo xtask bench`, as root): four hostile local users attack the daemon's
//! socket for five minutes (`BW_SOAK_SECS` to change it) while a watched app keeps making
//! connections, to a broker and to a first party. Reports the connect-to-decision latency
//! of the alerts, the daemon's RSS over time, and whether every connection reached the
//! store. Output JSON at `$BW_BENCH_OUT` (default bench-results/soak.json).
//!
//! The attackers are this binary re-run as other users (`--hostile KIND SOCKET`):
//! * `flood`: connects and asks for `history` and `status` as fast as it can;
//! * `slowloris`: holds connections that send a byte a second and never a newline;
//! * `hugeline`: sends megabytes without a newline, again and again;
//! * `fdhog`: subscribes on as many connections as it may and never reads;
//! * `connflood` (two processes of one more user, this binary copied as `x/zoom` so that
//!   the kernel watches it): UDP `connect()` to every port of 127.0.0.9 in turn, as fast
//!   as it can (issue 22: it starved everyone's records before per-user budgets).

use std::{
    io::{BufRead, BufReader, Read as _, Write},
    net::TcpListener,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use brokerwatch::{daemon::store, host::clock::boot_ns};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");
const PROBE: &str = env!("CARGO_BIN_EXE_bw-netprobe");

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn hostile(kind: &str, socket: &Path) {
    let connect = || UnixStream::connect(socket).ok();
    match kind {
        "flood" => loop {
            if let Some(mut s) = connect() {
                let _ = s.write_all(b"{\"op\":\"history\",\"since_ms\":0}\n{\"op\":\"status\"}\n");
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        },
        "slowloris" => {
            let mut held: Vec<UnixStream> = Vec::new();
            loop {
                while held.len() < 64 {
                    match connect() {
                        Some(s) => held.push(s),
                        None => break,
                    }
                }
                held.retain_mut(|s| s.write_all(b"{").is_ok());
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        "hugeline" => {
            let chunk = vec![b'x'; 1 << 20];
            loop {
                if let Some(mut s) = connect() {
                    while s.write_all(&chunk).is_ok() {}
                }
            }
        }
        "fdhog" => {
            let mut held = Vec::new();
            loop {
                if let Some(mut s) = connect() {
                    let _ = s.write_all(b"{\"op\":\"subscribe\"}\n");
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(if held.len() < 2000 {
                    1
                } else {
                    1000
                }));
            }
        }
        "connflood" => loop {
            for port in 1..60000u16 {
                if let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") {
                    let _ = s.connect(("127.0.0.9", port));
                }
            }
        },
        other => panic!("unknown attack {other}"),
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Writes the daemon's policy (127.0.0.2 is a broker) in `dir` and listens on 127.0.0.2
/// (the broker) and 127.0.0.3 (a first party), accepting and dropping every connection;
/// returns the listeners and their ports.
fn prepare(dir: &Path) -> Vec<(TcpListener, u16)> {
    std::fs::create_dir_all(dir.join("policies.d")).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("policies.d/b.toml"),
        "[[destination]]\nid = \"b\"\ncompany = \"Soak Broker\"\ncategory = \"data-broker\"\ncidrs = [\"127.0.0.2/32\"]\nsource = \"bench\"\n",
    )
    .unwrap();
    ["127.0.0.2:0", "127.0.0.3:0"]
        .iter()
        .map(|a| {
            let l = TcpListener::bind(a).unwrap();
            let port = l.local_addr().unwrap().port();
            let acceptor = l.try_clone().unwrap();
            std::thread::spawn(move || {
                for c in acceptor.incoming() {
                    drop(c);
                }
            });
            (l, port)
        })
        .collect()
}

/// Starts the daemon with its state in `dir` (its log in `dir/daemon.log`) and waits for
/// its `socket`.
fn start_daemon(dir: &Path, socket: &Path) -> Child {
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let daemon = Command::new(BIN)
        .args(["daemon", "--group", "nogroup", "--policy-dir"])
        .arg(dir.join("policies.d"))
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while UnixStream::connect(socket).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon
}

/// The attackers, each as a user of its own (the socket's group lets them in): this
/// binary, copied to `dir` (as `x/zoom` for the connect flood, so that it is watched),
/// re-run with `--hostile`.
fn attack(dir: &Path, socket: &Path) -> Kill {
    let me = dir.join("soak");
    std::fs::copy(std::env::current_exe().unwrap(), &me).unwrap();
    std::fs::create_dir_all(dir.join("x")).unwrap();
    let zoom = dir.join("x/zoom");
    std::fs::copy(std::env::current_exe().unwrap(), &zoom).unwrap();
    let attackers = [
        ("flood", &me, 61000),
        ("slowloris", &me, 61001),
        ("hugeline", &me, 61002),
        ("fdhog", &me, 61003),
        ("connflood", &zoom, 61004),
        ("connflood", &zoom, 61004),
    ];
    Kill(
        attackers
            .iter()
            .map(|(kind, exe, uid)| {
                Command::new("setpriv")
                    .arg(format!("--reuid={uid}"))
                    .args(["--regid=65534", "--clear-groups"])
                    .arg(exe)
                    .args(["--hostile", kind])
                    .arg(socket)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    )
}

/// The kernel's counters as the daemon's `status --json` gives them.
fn kernel_counters(socket: &Path) -> Value {
    let out = Command::new(BIN)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["counters"].clone()
}

/// Root's own subscription: a reader thread stamps every alert as it arrives.
fn subscribe(socket: &Path) -> (UnixStream, Receiver<(u64, String)>) {
    let mut sub = UnixStream::connect(socket).unwrap();
    sub.write_all(b"{\"op\":\"subscribe\"}\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(u64, String)>();
    let mut reader = BufReader::new(sub.try_clone().unwrap());
    // The app starts once the daemon has answered: an alert before the subscription
    // counted would not be the daemon's miss.
    let mut ack = String::new();
    reader.read_line(&mut ack).unwrap();
    assert!(ack.contains("subscribed"), "{ack}");
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send((boot_ns(), line)).is_err() {
                break;
            }
        }
    });
    (sub, rx)
}

/// Adds the connect-to-decision latency (ms) of every alert received so far to `decide`.
fn take_decisions(rx: &Receiver<(u64, String)>, decide: &mut Vec<f64>) {
    while let Ok((_, line)) = rx.try_recv() {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let a = &v["alert"];
        if let (Some(c), Some(d)) = (a["connect_boot_ns"].as_u64(), a["decided_boot_ns"].as_u64()) {
            decide.push((d - c) as f64 / 1e6);
        }
    }
}

/// What the watched app saw during the attack.
struct Traffic {
    /// Connect-to-decision latencies of the alerts, in ms.
    decide: Vec<f64>,
    /// The daemon's RSS in KiB, every 5 s.
    rss: Vec<u64>,
    /// Connections made to each destination.
    made: u64,
    /// Descriptors the daemon held at most: the attack's weight (held connections).
    max_fds: usize,
}

/// For `secs`, the watched app (the probe at `zoom`) contacts the broker and the first
/// party every 50 ms, while the alerts on `rx` are timed and the daemon `pid` sampled
/// every 5 s; then 2 s more for the last alerts.
fn run_app(
    zoom: &Path,
    ports: (u16, u16),
    pid: u32,
    rx: &Receiver<(u64, String)>,
    secs: u64,
) -> Traffic {
    let (broker, first_party) = ports;
    let mut decide = Vec::new();
    let mut rss = Vec::new();
    let mut made = 0u64;
    let mut max_fds = 0usize;
    let mut last_rss = Instant::now();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        let st = Command::new(zoom)
            .arg(format!("tcp:127.0.0.2:{broker}"))
            .arg(format!("tcp:127.0.0.3:{first_party}"))
            .status()
            .unwrap();
        assert!(st.success());
        made += 1;
        take_decisions(rx, &mut decide);
        if last_rss.elapsed() >= Duration::from_secs(5) {
            rss.push(rss_kib(pid));
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0);
            max_fds = max_fds.max(fds);
            last_rss = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    take_decisions(rx, &mut decide);
    Traffic {
        decide,
        rss,
        made,
        max_fds,
    }
}

/// What the daemon kept.
struct Stored {
    exit: ExitStatus,
    /// Contacts of the broker's and of the first party's port in the store.
    broker: u64,
    first_party: u64,
    /// "cannot accept clients" lines in its log.
    accept_errors: usize,
}

/// Stops the daemon cleanly (it writes what is pending), then counts what its store in
/// `dir` holds for `zoom` on each of `ports`, and its log's accept errors.
fn stop(mut daemon: Child, dir: &Path, ports: (u16, u16)) -> Stored {
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let exit = daemon.wait().unwrap();
    let rows = store::read_connections(&dir.join("state").join(store::FILE_NAME), 0).unwrap();
    let stored = |port: u16| -> u64 {
        rows.iter()
            .filter(|r| r.finding.dst_port == port && r.finding.comm == "zoom")
            .map(|r| r.finding.count)
            .sum()
    };
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    Stored {
        exit,
        broker: stored(ports.0),
        first_party: stored(ports.1),
        accept_errors: log.matches("cannot accept clients").count(),
    }
}

/// Prints the results and writes them as JSON to `$BW_BENCH_OUT`; returns where.
fn report(
    secs: u64,
    rss_start: u64,
    traffic: Traffic,
    stored: &Stored,
    counters: &Value,
) -> String {
    let Traffic {
        mut decide,
        rss,
        made,
        max_fds,
    } = traffic;
    let (exit, stored_broker, stored_first, accept_errors) = (
        stored.exit,
        stored.broker,
        stored.first_party,
        stored.accept_errors,
    );
    let rss_max = rss.iter().copied().max().unwrap_or(0);
    let rss_end = rss.last().copied().unwrap_or(0);
    let alerts = decide.len();
    let (d50, d99) = (pct(&mut decide, 0.5), pct(&mut decide, 0.99));
    println!("soak: {secs} s, 5 hostile users (request flood, slowloris, huge lines, descriptor hog, 2 processes flooding connect()); daemon exit {exit}");
    let refused = counters["over_budget"].as_u64().unwrap_or(0);
    let (generated, lost) = (
        counters["generated"].as_u64().unwrap_or(0),
        counters["lost"].as_u64().unwrap_or(0),
    );
    println!("kernel: {generated} records generated, {refused} refused over the flooding user's budget, {lost} lost");
    println!("connect -> alert decision under attack: p50 {d50:.2} ms, p99 {d99:.2} ms ({alerts} alerts of {made} broker contacts)");
    println!(
        "daemon RSS: {:.1} MiB at start, {:.1} MiB max, {:.1} MiB at the end",
        rss_start as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    println!("daemon descriptors at most {max_fds} during the attack (connections held by the attackers)");
    println!("store: broker contacts {stored_broker} of {made}, first-party contacts {stored_first} of {made}");
    let out = json!({
        "seconds": secs,
        "decision_ms": {"p50": d50, "p99": d99, "target_p99": 5.0},
        "alerts_received": alerts,
        "connections_made_each": made,
        "stored_broker": stored_broker,
        "stored_first_party": stored_first,
        "every_connection_stored": stored_broker == made && stored_first == made,
        "rss_mib": {"start": rss_start as f64 / 1024.0, "max": rss_max as f64 / 1024.0, "end": rss_end as f64 / 1024.0},
        "accept_error_log_lines": accept_errors,
        "daemon_fds_max": max_fds,
        "kernel": {"generated": generated, "over_budget": refused, "lost": lost},
    });
    let path = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/soak.json".into());
    if let Some(p) = PathBuf::from(&path).parent() {
        let _ = std::fs::create_dir_all(p);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    path
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--hostile") {
        hostile(&args[i + 1], Path::new(&args[i + 2]));
        return;
    }
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the soak loads eBPF programs and runs attackers as other users: run it as root");
        std::process::exit(2);
    }
    let secs: u64 = std::env::var("BW_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let dir = std::env::temp_dir().join(format!("bw-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let listeners = prepare(&dir);
    let ports = (listeners[0].1, listeners[1].1);
    let socket = dir.join("run/s.sock");
    let daemon = start_daemon(&dir, &socket);
    let pid = daemon.id();
    let rss_start = rss_kib(pid);
    let attackers = attack(&dir, &socket);
    let (_sub, rx) = subscribe(&socket);
    let zoom = dir.join("zoom");
    std::fs::copy(PROBE, &zoom).unwrap();
    let traffic = run_app(&zoom, ports, pid, &rx, secs);
    drop(attackers);
    let counters = kernel_counters(&socket);
    let stored = stop(daemon, &dir, ports);
    let path = report(secs, rss_start, traffic, &stored, &counters);
    std::fs::remove_dir_all(&dir).ok();
    println!("wrote {path}");
}
