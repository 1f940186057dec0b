//! What watching costs a watched TCP connect in each audit mode users run (issue 23),
//! measured from outside as a user would: a separate process (a copy of Python named
//! `bwconnloop`) in a network namespace of its own connects to its own listener on
//! loopback 3,000 times (connect, accept, close), alone and under `brokerwatch audit --
//! LOOP`, `audit --all` and `audit --app bwconnloop`. The kernel's statistics
//! (`kernel.bpf_stats_enabled`, read with `bpftool prog show` before and after the loop)
//! give every program's time per run and per connect; the loop gives the connect's p50 and
//! p99. On loopback both ends are local: the packet programs run for the client's and the
//! server's packets alike.
//!
//! Output JSON at `$BW_BENCH_OUT` (default bench-results/modes.json).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");
const CONNECTS: usize = 3_000;
const RUNS: usize = 3;

/// The loop: waits for `DIR/go`, connects, writes its figures to `DIR/done`, then waits to
/// be ended (so that an audit of it as its command is still loaded when it is read).
const LOOP: &str = "import socket, time, sys, os, json
d, n = sys.argv[1], int(sys.argv[2])
l = socket.create_server(('127.0.0.1', 0)); port = l.getsockname()[1]
while not os.path.exists(d + '/go'):
    time.sleep(0.01)
t = []
for _ in range(n):
    a = time.perf_counter_ns()
    c = socket.create_connection(('127.0.0.1', port)); s, _ = l.accept(); c.close(); s.close()
    t.append(time.perf_counter_ns() - a)
t.sort()
open(d + '/done.tmp', 'w').write(json.dumps({'p50_ns': t[len(t) // 2], 'p99_ns': t[len(t) * 99 // 100]}))
os.rename(d + '/done.tmp', d + '/done')
while not os.path.exists(d + '/stop'):
    time.sleep(0.05)
";

/// Run time and count of every `bw_` program loaded now.
fn stats() -> BTreeMap<String, (u64, u64)> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut m = BTreeMap::new();
    for p in v.as_array().into_iter().flatten() {
        let Some(name) = p["name"].as_str().filter(|n| n.starts_with("bw_")) else {
            continue;
        };
        let e = m.entry(name.to_owned()).or_insert((0, 0));
        e.0 += p["run_time_ns"].as_u64().unwrap_or(0);
        e.1 += p["run_cnt"].as_u64().unwrap_or(0);
    }
    m
}

fn wait_file(path: &Path, what: &str) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Lab {
    netns: String,
    dir: PathBuf,
    python: PathBuf,
}

impl Lab {
    fn new() -> Self {
        let netns = format!("bwmodes{}", std::process::id());
        let dir = std::env::temp_dir().join(&netns);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ok = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success());
        ok(&["netns", "add", &netns]);
        ok(&["-n", &netns, "link", "set", "lo", "up"]);
        let python = dir.join("bwconnloop");
        std::fs::copy("/usr/bin/python3", &python).unwrap();
        Lab { netns, dir, python }
    }

    /// The loop's argv, in the namespace, with a fresh run directory.
    fn loop_argv(&self, run: &Path) -> Vec<String> {
        let _ = std::fs::remove_dir_all(run);
        std::fs::create_dir_all(run).unwrap();
        [
            "ip",
            "netns",
            "exec",
            &self.netns,
            self.python.to_str().unwrap(),
            "-c",
            LOOP,
            run.to_str().unwrap(),
            &CONNECTS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One run: the audit (`None`: none) started and ready, the loop let go, the statistics
/// around it. Returns (p50 ns, p99 ns, per-program (ns, runs)).
fn run(lab: &Lab, audit: Option<&[&str]>, n: usize) -> (f64, f64, BTreeMap<String, (u64, u64)>) {
    let dir = lab.dir.join(format!("run{n}"));
    let argv = lab.loop_argv(&dir);
    let as_command = audit.is_some_and(|a| a.is_empty());
    let mut loop_child: Option<Child> = None;
    let mut audit_child = audit.map(|args| {
        let mut cmd = Command::new(BIN);
        cmd.args(["audit", "--quiet", "--duration", "300s"])
            .args(args);
        if as_command {
            cmd.arg("--").args(&argv);
        }
        let c = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Ready once its programs are loaded (they are attached a moment later).
        let start = Instant::now();
        while !stats().contains_key("bw_connect4") {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the audit never loaded"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    });
    if !as_command {
        loop_child = Some(Command::new(&argv[0]).args(&argv[1..]).spawn().unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = stats();
    std::fs::write(dir.join("go"), "").unwrap();
    wait_file(&dir.join("done"), "figures from the loop");
    let after = stats();
    std::fs::write(dir.join("stop"), "").unwrap();
    if let Some(mut c) = loop_child {
        let _ = c.wait();
    }
    if let Some(c) = audit_child.as_mut() {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        let _ = c.wait();
    }
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("done")).unwrap()).unwrap();
    let delta = after
        .iter()
        .filter_map(|(k, (t, c))| {
            let (t0, c0) = before.get(k).copied().unwrap_or((0, 0));
            (c > &c0).then(|| (k.clone(), (t - t0, c - c0)))
        })
        .collect();
    (
        v["p50_ns"].as_f64().unwrap(),
        v["p99_ns"].as_f64().unwrap(),
        delta,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A mode's figures over [`RUNS`] runs (medians).
fn mode(lab: &Lab, name: &str, audit: Option<&[&str]>) -> Value {
    let runs: Vec<_> = (0..RUNS).map(|n| run(lab, audit, n)).collect();
    let p50 = median(runs.iter().map(|r| r.0).collect());
    let p99 = median(runs.iter().map(|r| r.1).collect());
    let mut programs = serde_json::Map::new();
    let mut total = 0.0;
    let names: std::collections::BTreeSet<&String> = runs.iter().flat_map(|r| r.2.keys()).collect();
    for p in names {
        let per_run = median(
            runs.iter()
                .filter_map(|r| r.2.get(p))
                .map(|(t, c)| *t as f64 / *c as f64)
                .collect(),
        );
        let per_connect = median(
            runs.iter()
                .map(|r| r.2.get(p).map_or(0.0, |(t, _)| *t as f64 / CONNECTS as f64))
                .collect(),
        );
        total += per_connect;
        programs.insert(
            p.clone(),
            json!({"ns_per_run": per_run.round(), "ns_per_connect": per_connect.round()}),
        );
    }
    eprintln!(
        "modes: {name}: connect p50 {:.1} us, p99 {:.1} us; in-kernel {total:.0} ns a connect, {programs:?}",
        p50 / 1e3,
        p99 / 1e3
    );
    json!({"connect_p50_ns": p50, "connect_p99_ns": p99, "kernel_ns_per_connect": total.round(), "programs": programs})
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "the modes benchmark loads eBPF programs: run it as root (cargo xtask bench does)"
        );
        std::process::exit(2);
    }
    let lab = Lab::new();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").unwrap();
    let off = mode(&lab, "off", None);
    let modes = [
        ("audit -- LOOP", &[][..]),
        ("audit --all", &["--all"][..]),
        ("audit --app bwconnloop", &["--app", "bwconnloop"][..]),
    ];
    let mut out = serde_json::Map::new();
    for (name, args) in modes {
        let mut v = mode(&lab, name, Some(args));
        let ratio = v["connect_p50_ns"].as_f64().unwrap() / off["connect_p50_ns"].as_f64().unwrap();
        v["connect_p50_ratio"] = json!((ratio * 1000.0).round() / 1000.0);
        out.insert(name.into(), v);
    }
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0").unwrap();
    out.insert("off".into(), off);
    let out = json!({
        "method": "a separate process (Python, named bwconnloop) in its own network namespace: 3,000 loopback TCP connects (connect, accept, close), median of 3 runs per mode; in-kernel time from bpf_stats via bpftool before and after the loop",
        "modes": out,
    });
    let path = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/modes.json".into());
    if let Some(dir) = Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
}
