//! Issue 22, item 1: a local user who is not even in the daemon's group names a copy of
//! python3 like a watched app and floods `connect()` across thousands of ports from two
//! processes. Before per-user budgets the one shared ring lost millions of records and
//! none of root's flagged contacts made during the flood was alerted or stored; the
//! daemon's memory grew five-fold and stayed. The real programs are attached (root); the
//! traffic stays in a network namespace the test creates.

mod common;

use std::{
    io::{BufRead as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    daemon::{history, lab_dir, policy_text, rss_kib, Daemon},
    require_root, PROBE,
};

/// The hostile user: no account, no group of the daemon's.
const HOSTILE_UID: u32 = 4242;
/// How long each flooder floods.
const FLOOD_SECS: u64 = 8;
/// The victim's flagged contacts during the flood.
const CONTACTS: usize = 10;

/// A network namespace of the test's own, removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("bwflood{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let ok = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        };
        ok(&["netns", "add", &name]);
        ok(&["-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(argv);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One hostile flooder: python3 copied as `x/zoom`, connecting UDP sockets to every port
/// of 127.0.0.9 in turn for [`FLOOD_SECS`], as the hostile user.
fn flooder(ns: &Netns, dir: &Path) -> Child {
    let script = format!(
        "import socket, time\n\
         end = time.time() + {FLOOD_SECS}\n\
         n = 0\n\
         while time.time() < end:\n\
         \x20   for port in range(1, 60000):\n\
         \x20       s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20       s.connect(('127.0.0.9', port))\n\
         \x20       s.close()\n\
         \x20       n += 1\n\
         \x20       if n % 1000 == 0 and time.time() >= end:\n\
         \x20           break\n\
         print(n)\n"
    );
    let zoom = dir.join("x/zoom");
    ns.cmd(&[
        "setpriv",
        &format!("--reuid={HOSTILE_UID}"),
        &format!("--regid={HOSTILE_UID}"),
        "--clear-groups",
        zoom.to_str().unwrap(),
        "-c",
        &script,
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap()
}

/// Alerts to 127.0.0.2 a subscriber receives, counted on a thread of its own.
fn count_alerts(dir: &Path) -> std::sync::mpsc::Receiver<usize> {
    let sub = UnixStream::connect(dir.join("run/brokerwatch.sock")).unwrap();
    let mut w = sub.try_clone().unwrap();
    w.write_all(b"{\"op\":\"subscribe\"}\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut n = 0;
        for line in std::io::BufReader::new(sub).lines().map_while(Result::ok) {
            if line.contains("\"type\":\"alert\"") && line.contains("127.0.0.2") {
                n += 1;
                let _ = tx.send(n);
            }
        }
    });
    rx
}

#[test]
fn daemon_a_hostile_users_flood_costs_no_other_users_alerts_rows_or_memory() {
    require_root();
    let dir = lab_dir("flood");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Test Data Broker Inc."),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("x")).unwrap();
    std::fs::copy("/usr/bin/python3", dir.join("x/zoom")).unwrap();
    std::fs::copy(PROBE, dir.join("zoom")).unwrap();
    let ns = Netns::new();
    let d = Daemon::start(&dir);
    let alerts = count_alerts(&dir);
    // The daemon's resting size, once it has settled.
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kib(d.child.id());

    let floods = [flooder(&ns, &dir), flooder(&ns, &dir)];
    std::thread::sleep(Duration::from_secs(2));
    // Root's app contacts the broker ten times, one process each, while the flood runs.
    for _ in 0..CONTACTS {
        let st = ns
            .cmd(&[dir.join("zoom").to_str().unwrap(), "tcp:127.0.0.2:9"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut flooded = 0u64;
    for f in floods {
        let out = f.wait_with_output().unwrap();
        assert!(out.status.success(), "the flooder failed");
        flooded += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap();
    }
    let peak = rss_kib(d.child.id());

    // Every contact alerted live and stored, with the flood's size to show it was one.
    let start = Instant::now();
    let mut live = 0;
    while live < CONTACTS && start.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = alerts.recv_timeout(Duration::from_millis(500)) {
            live = n;
        }
    }
    assert_eq!(
        live,
        CONTACTS,
        "alerts received live during a flood of {flooded} connects\n{}",
        d.log()
    );
    let stored: Vec<_> = history(&dir, None)
        .into_iter()
        .filter(|a| a["uid"] == 0 && a["dst_ip"] == "127.0.0.2")
        .collect();
    assert_eq!(stored.len(), CONTACTS, "stored: {stored:#?}");
    assert!(
        flooded > 50_000,
        "the flood was too small to test: {flooded}"
    );

    // The flood is told to administrators, naming the user and what it called.
    let (_, status) = common::daemon::client(&dir, None, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert!(
        status["counters"]["over_budget"].as_u64().unwrap() > 0,
        "{status}"
    );
    common::daemon::wait_for(
        || {
            let log = d.log();
            log.contains(&format!("uid {HOSTILE_UID}: ")) && log.contains("127.0.0.9")
        },
        "the over-budget notice in the log",
    );

    // Memory returns to within 20 % of its resting size within a minute.
    let start = Instant::now();
    let mut now = rss_kib(d.child.id());
    while now * 5 > before * 6 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        now = rss_kib(d.child.id());
    }
    assert!(
        now * 5 <= before * 6,
        "RSS {before} KiB at rest, {peak} KiB after the flood, {now} KiB a minute later"
    );
    eprintln!(
        "flood of {flooded} connects: RSS {before} -> {peak} -> {now} KiB after {:.0?}",
        start.elapsed()
    );
}
