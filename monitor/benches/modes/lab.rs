//! The `modes` bench's lab: the namespace and cgroups the loop runs in, the settings it
//! runs under (alone, the floor, an audit, the daemon) and one run of the loop with the
//! kernel's statistics read around it.

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use brokerwatch::kernel::floor::Floor;
use serde_json::Value;

use super::{outside::BIN, CONNECTS};

/// Where the cgroup v2 hierarchy is mounted.
pub fn cgroup_root() -> PathBuf {
    brokerwatch::host::cgroup::cgroup2_mount().expect("a cgroup v2 hierarchy")
}

/// Turns the kernel's per-program statistics on or off.
pub fn set_stats(on: bool) {
    std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        if on { "1" } else { "0" },
    )
    .expect("kernel.bpf_stats_enabled");
}

/// Run time and count of every `bw_` program loaded now.
pub fn stats() -> BTreeMap<String, (u64, u64)> {
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

/// Records that woke the reader (`Counter::Wakeups`, summed over CPUs) of the one
/// brokerwatch loaded now; 0 when none is.
pub fn wakeups() -> u64 {
    let out = Command::new("bpftool")
        .args(["map", "dump", "name", "COUNTERS", "-j"])
        .output()
        .expect("bpftool");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let byte = |b: &Value| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok();
    let slot = monitor_common::Counter::Wakeups as u8;
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["key"].get(0).and_then(byte) == Some(slot))
        .flat_map(|e| e["values"].as_array().cloned().unwrap_or_default())
        .map(|per_cpu| {
            let bytes: Vec<u8> = per_cpu["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(byte)
                .collect();
            bytes.iter().rev().fold(0u64, |n, b| n << 8 | *b as u64)
        })
        .sum()
}

pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < Duration::from_secs(60), "no {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The namespace, the loop's cgroup (and another app's, and the server's), the compiled
/// loop (and its copy that serves).
pub struct Lab {
    netns: String,
    dir: PathBuf,
    exe: PathBuf,
    server_exe: PathBuf,
    cgroup: PathBuf,
    other_cgroup: PathBuf,
    server_cgroup: PathBuf,
    runs: usize,
}

impl Lab {
    pub fn new() -> Self {
        let netns = format!("bwmodes{}", std::process::id());
        let dir = std::env::temp_dir().join(&netns);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ok = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success());
        ok(&["netns", "add", &netns]);
        ok(&["-n", &netns, "link", "set", "lo", "up"]);
        let exe = dir.join("bwconnloop");
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/outside/connloop.c");
        let cc = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(src)
            .status()
            .expect("cc (Rust's linker) compiles the loop");
        assert!(cc.success(), "cannot compile {src}");
        // The server under a name of its own: `--app bwconnloop` must not watch it.
        let server_exe = dir.join("bwconnserve");
        std::fs::copy(&exe, &server_exe).unwrap();
        let base = cgroup_root().join(&netns);
        let (cgroup, other_cgroup, server_cgroup) = (
            base.join("loop"),
            base.join("other-app"),
            base.join("server"),
        );
        for c in [&cgroup, &other_cgroup, &server_cgroup] {
            std::fs::create_dir_all(c).unwrap();
        }
        Lab {
            netns,
            dir,
            exe,
            server_exe,
            cgroup,
            other_cgroup,
            server_cgroup,
            runs: 0,
        }
    }

    /// The loop's argv (`ip netns exec NS bwconnloop KIND N RUNDIR`) with a fresh run
    /// directory.
    fn loop_argv(&mut self, kind: &str, n: usize) -> (Vec<String>, PathBuf) {
        self.runs += 1;
        let run = self.dir.join(format!("run{}", self.runs));
        std::fs::create_dir_all(&run).unwrap();
        (self.argv(&self.exe, kind, n, &run), run)
    }

    fn argv(&self, exe: &Path, kind: &str, n: usize, run: &Path) -> Vec<String> {
        [
            "ip",
            "netns",
            "exec",
            &self.netns,
            exe.to_str().unwrap(),
            kind,
            &n.to_string(),
            run.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The server of a `client` loop, in its own cgroup, serving once its port is in `run`.
    fn server(&self, run: &Path) -> Child {
        let server = spawn_in(
            &self.server_cgroup,
            &self.argv(&self.server_exe, "serve", 0, run),
        );
        let port = run.join("port");
        wait_until("the server's port", || port.exists());
        server
    }
}

/// `argv` started in the cgroup `cgroup`.
pub fn spawn_in(cgroup: &Path, argv: &[String]) -> Child {
    let procs = cgroup.join("cgroup.procs");
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: only a write(2) to a file in the child before exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    cmd.spawn().unwrap()
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        for d in [&self.cgroup, &self.other_cgroup, &self.server_cgroup] {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(self.cgroup.parent().unwrap());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What watches (or does not) while the loop runs.
#[derive(Clone, Copy)]
pub enum Setting<'a> {
    Alone,
    /// Empty programs at the cgroup root.
    Floor,
    /// `brokerwatch audit ARGS` (empty: `audit -- LOOP`).
    Audit(&'a [&'a str]),
    /// `brokerwatch daemon ARGS`.
    Daemon(&'a [&'a str]),
}

/// A running setting; ends when dropped.
pub enum Running {
    None,
    Floor(#[allow(dead_code)] Floor),
    Process(Child, Vec<Child>),
}

impl Running {
    /// The CPU time the monitor's threads have used so far, in ns (`None` without a
    /// monitor process): run time from each thread's `schedstat`, as `top` sees it.
    fn cpu_ns(&self) -> Option<u64> {
        let Running::Process(c, _) = self else {
            return None;
        };
        let tasks = std::fs::read_dir(format!("/proc/{}/task", c.id())).ok()?;
        Some(
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Process(c, others) = self {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
            for o in others {
                let _ = o.kill();
                let _ = o.wait();
            }
        }
    }
}

/// Starts `setting` (ready: its programs loaded, a daemon's socket up); a daemon watching
/// `zoom` gets a `zoom` running in the other app's cgroup, so that `--attach apps` attaches
/// somewhere.
pub fn start(lab: &Lab, setting: Setting, loop_argv: &[String]) -> Running {
    let quiet = |mut c: Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    match setting {
        Setting::Alone => Running::None,
        Setting::Floor => Running::Floor(Floor::attach(&cgroup_root()).unwrap()),
        Setting::Audit(args) => {
            let mut cmd = Command::new(BIN);
            cmd.args(["audit", "--quiet", "--duration", "300s"])
                .args(args);
            if args.is_empty() {
                cmd.arg("--").args(loop_argv);
            }
            let c = quiet(cmd);
            wait_until("audit's programs", || stats().contains_key("bw_connect4"));
            Running::Process(c, Vec::new())
        }
        Setting::Daemon(args) => {
            let mut others = Vec::new();
            if args.contains(&"zoom") {
                let zoom = lab.dir.join("zoom");
                let _ = std::fs::copy("/usr/bin/sleep", &zoom);
                others.push(spawn_in(
                    &lab.other_cgroup,
                    &[zoom.display().to_string(), "600".into()],
                ));
            }
            let sock = lab.dir.join("d.sock");
            let _ = std::fs::remove_file(&sock);
            let _ = std::fs::create_dir_all(lab.dir.join("policies.d"));
            let mut cmd = Command::new(BIN);
            cmd.args(["daemon", "--group", "nogroup", "--policy-dir"])
                .arg(lab.dir.join("policies.d"))
                .arg("--socket")
                .arg(&sock)
                .arg("--state-dir")
                .arg(lab.dir.join("state"))
                .args(args);
            let c = quiet(cmd);
            wait_until("daemon socket", || {
                std::os::unix::net::UnixStream::connect(&sock).is_ok()
            });
            Running::Process(c, others)
        }
    }
}

/// One run of the loop under `setting`: its figures and every program's (ns, runs).
pub struct Run {
    pub figures: Value,
    pub programs: BTreeMap<String, (u64, u64)>,
    /// Records that woke the reader during the loop.
    pub wakeups: u64,
    /// The monitor's own CPU time for the timed pass (watched settings with a process).
    pub monitor_ns: Option<u64>,
}

pub fn run(lab: &mut Lab, setting: Setting, kind: &str, n: usize) -> Run {
    // The programs' time is read in a second pass; alone there are none, and the
    // unwatched loops only need their time.
    let programs_wanted = !matches!(setting, Setting::Alone) && n == CONNECTS;
    let (argv, dir) = lab.loop_argv(kind, n);
    let server = (kind == "client").then(|| lab.server(&dir));
    let as_command = matches!(setting, Setting::Audit(a) if a.is_empty());
    let running = start(lab, setting, &argv);
    let loop_child = (!as_command).then(|| spawn_in(&lab.cgroup, &argv));
    // Settle: the loop exec'd (and was seen), attachments made; a daemon done with its
    // start (its first look at /proc, its store).
    let settle = if matches!(setting, Setting::Daemon(_)) {
        2_000
    } else {
        500
    };
    std::thread::sleep(Duration::from_millis(settle));
    // Timed as a user runs it: the kernel's statistics off.
    set_stats(false);
    let woke = wakeups();
    let cpu_before = running.cpu_ns();
    std::fs::write(dir.join("go"), "").unwrap();
    let done = dir.join("done");
    wait_until("figures from the loop", || done.exists());
    let wakeups = wakeups().saturating_sub(woke);
    // What the monitor spent on the loop's records: read once it had time to take them
    // all (the statistics' switch and read below, or a moment).
    let monitor_cpu = |running: &Running| Some(running.cpu_ns()?.saturating_sub(cpu_before?));
    // The same loop again, with them on, for every program's time.
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    let mut monitor_ns = None;
    if programs_wanted {
        set_stats(true);
        before = stats();
        std::thread::sleep(Duration::from_millis(200));
        monitor_ns = monitor_cpu(&running);
        std::fs::write(dir.join("go2"), "").unwrap();
        let done2 = dir.join("done2");
        wait_until("figures from the loop's second pass", || done2.exists());
        after = stats();
        set_stats(false);
    }
    std::fs::write(dir.join("stop"), "").unwrap();
    if let Some(mut c) = loop_child {
        let _ = c.wait();
    }
    drop(running);
    if let Some(mut s) = server {
        let _ = s.kill();
        let _ = s.wait();
    }
    let figures = serde_json::from_str(&std::fs::read_to_string(done).unwrap()).unwrap();
    let programs = after
        .iter()
        .filter_map(|(k, (t, c))| {
            let (t0, c0) = before.get(k).copied().unwrap_or((0, 0));
            (c > &c0).then(|| (k.clone(), (t - t0, c - c0)))
        })
        .collect();
    Run {
        figures,
        programs,
        wakeups,
        monitor_ns,
    }
}
