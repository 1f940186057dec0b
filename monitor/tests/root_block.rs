//! Issue 15: blocking in the kernel, with the real programs attached, in a lab namespace
//! (dnsmasq and TLS servers on its loopback). Run as root, one test at a time.

mod common;

use std::{collections::HashMap, path::Path, process::Command};

use brokerwatch::kernel::{BlockTables, Sensor};
use common::{
    lab::{Lab, TLS_PORT},
    Harness, PROBE,
};
use monitor_common::{dest_hash, domain_hash, BLOCK_EVERY_USER, WATCH_TAG_CGROUP};

/// Tables that deny the watched command (tag `WATCH_TAG_CGROUP`) `broker.test` and
/// `tracker.test` (which `api.vendor.test` CNAMEs to), and 127.0.0.9/32 by address.
fn lab_tables() -> BlockTables {
    let mut t = BlockTables::default();
    for (domain, id) in [
        ("broker.test", "lab-broker"),
        ("tracker.test", "lab-tracker"),
    ] {
        t.domains.insert(domain_hash(domain).0, dest_hash(id));
        t.pairs
            .insert((dest_hash(id), WATCH_TAG_CGROUP, BLOCK_EVERY_USER));
    }
    t.cidrs
        .push(("127.0.0.9/32".parse().unwrap(), dest_hash("lab-range")));
    t.pairs
        .insert((dest_hash("lab-range"), WATCH_TAG_CGROUP, BLOCK_EVERY_USER));
    t
}

/// Outcome lines of a probe run (`tcp ADDR ok|denied|refused|failed`), by address.
fn outcomes(file: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let _ = std::fs::remove_file(file);
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_, addr, word) = (w.next()?, w.next()?, w.next()?);
            Some((addr.to_owned(), word.to_owned()))
        })
        .collect()
}

/// Runs the probe in the lab, watched from its first instruction, with `args`.
fn run_watched_in_lab(h: &mut Harness, lab: &Lab, args: &[&str]) -> HashMap<String, String> {
    let out = lab.dir.join("outcomes");
    let mut argv = vec!["netns", "exec", &lab.netns, PROBE, "--out"];
    let out_s = out.to_str().unwrap().to_owned();
    argv.push(&out_s);
    argv.extend_from_slice(args);
    h.run_watched_program("/usr/sbin/ip".into(), &argv);
    outcomes(&out)
}

fn run_unwatched_in_lab(lab: &Lab, args: &[&str]) -> HashMap<String, String> {
    let out = lab.dir.join("outcomes-unwatched");
    let status = Command::new("ip")
        .args(["netns", "exec", &lab.netns, PROBE, "--out"])
        .arg(&out)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
    outcomes(&out)
}

fn addr(ip: &str) -> String {
    format!("{ip}:{TLS_PORT}")
}

fn set(sensor: &mut Sensor, t: &BlockTables) {
    sensor
        .set_blocks(t)
        .unwrap_or_else(|e| panic!("block tables: {e}"));
}

const ACTIONS: [&str; 4] = [
    "resolve:broker.test:4433",
    "resolve:page.vendor.test:4433",
    "resolve:api.vendor.test:4433",
    "tcp:127.0.0.9:4433",
];

#[test]
fn block_denies_the_first_connection_after_the_answer_and_only_to_blocked_destinations() {
    let lab = Lab::new("blk");
    let mut h = Harness::new();
    set(&mut h.sensor, &lab_tables());
    let before = h.counters();
    let seen = run_watched_in_lab(&mut h, &lab, &ACTIONS);
    // The broker's first connection, right after its answer, fails with EPERM; so does the
    // first-party name that CNAMEs to a tracker, and the blocked range. The rest goes.
    assert_eq!(
        seen.get(&addr("127.0.0.2")).map(String::as_str),
        Some("denied"),
        "{seen:?}"
    );
    assert_eq!(
        seen.get(&addr("127.0.0.3")).map(String::as_str),
        Some("denied"),
        "{seen:?}"
    );
    assert_eq!(
        seen.get(&addr("127.0.0.9")).map(String::as_str),
        Some("denied"),
        "{seen:?}"
    );
    assert_eq!(
        seen.get(&addr("127.0.0.1")).map(String::as_str),
        Some("ok"),
        "{seen:?}"
    );
    let after = h.counters();
    assert_eq!(after.blocked - before.blocked, 3, "{after:?}");
    assert!(after.block_learned - before.block_learned >= 2, "{after:?}");
    // Denied calls are reported, naming the destination that was blocked.
    let blocked: HashMap<String, Option<u64>> = h
        .socks()
        .iter()
        .filter(|s| s.port == TLS_PORT)
        .map(|s| (s.dst.to_string(), s.blocked))
        .collect();
    assert_eq!(blocked["127.0.0.2"], Some(dest_hash("lab-broker")));
    assert_eq!(blocked["127.0.0.3"], Some(dest_hash("lab-tracker")));
    assert_eq!(blocked["127.0.0.9"], Some(dest_hash("lab-range")));
    assert_eq!(blocked["127.0.0.1"], None);
}

#[test]
fn block_leaves_unwatched_processes_alone() {
    let lab = Lab::new("blu");
    let mut h = Harness::new();
    set(&mut h.sensor, &lab_tables());
    let seen = run_unwatched_in_lab(&lab, &ACTIONS);
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9"] {
        assert_eq!(
            seen.get(&addr(ip)).map(String::as_str),
            Some("ok"),
            "{ip}: {seen:?}"
        );
    }
    // And the watched command, after it, is still denied.
    let seen = run_watched_in_lab(&mut h, &lab, &ACTIONS[..1]);
    assert_eq!(
        seen.get(&addr("127.0.0.2")).map(String::as_str),
        Some("denied")
    );
}

#[test]
fn block_is_lifted_when_the_tables_empty_and_when_the_sensor_goes() {
    let lab = Lab::new("bll");
    let mut h = Harness::new();
    set(&mut h.sensor, &lab_tables());
    let seen = run_watched_in_lab(&mut h, &lab, &ACTIONS[..1]);
    assert_eq!(
        seen.get(&addr("127.0.0.2")).map(String::as_str),
        Some("denied")
    );
    // A reload without block rules: the address learned earlier no longer denies.
    set(&mut h.sensor, &BlockTables::default());
    assert!(!h.sensor.blocking());
    let seen = run_watched_in_lab(&mut h, &lab, &ACTIONS);
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9"] {
        assert_eq!(
            seen.get(&addr(ip)).map(String::as_str),
            Some("ok"),
            "{ip}: {seen:?}"
        );
    }
    // Blocking again, then the sensor (the daemon) goes: its links die with it.
    set(&mut h.sensor, &lab_tables());
    let seen = run_watched_in_lab(&mut h, &lab, &ACTIONS[..1]);
    assert_eq!(
        seen.get(&addr("127.0.0.2")).map(String::as_str),
        Some("denied")
    );
    drop(h);
    let mut h2 = Harness::new();
    let seen = run_watched_in_lab(&mut h2, &lab, &ACTIONS);
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9"] {
        assert_eq!(
            seen.get(&addr(ip)).map(String::as_str),
            Some("ok"),
            "{ip}: {seen:?}"
        );
    }
}

#[test]
fn block_denies_udp_sends_to_a_blocked_range() {
    let lab = Lab::new("blq");
    let mut h = Harness::new();
    set(&mut h.sensor, &lab_tables());
    let seen = run_watched_in_lab(&mut h, &lab, &["udp:127.0.0.9:443", "udp:127.0.0.8:443"]);
    assert_eq!(
        seen.get("127.0.0.9:443").map(String::as_str),
        Some("denied"),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("127.0.0.8:443").map(String::as_str),
        Some("ok"),
        "{seen:?}"
    );
}
