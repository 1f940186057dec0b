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

/// Outcome lines of a probe run (`tcp ADDR ok|denied|refused|failed`), by address; an
/// address tried more than once gets its outcomes in order, comma-separated.
fn outcomes(file: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let _ = std::fs::remove_file(file);
    let mut seen: HashMap<String, String> = HashMap::new();
    for l in text.lines() {
        let mut w = l.split_whitespace();
        let (Some(_), Some(addr), Some(word)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        seen.entry(addr.to_owned())
            .and_modify(|s| {
                s.push(',');
                s.push_str(word);
            })
            .or_insert_with(|| word.to_owned());
    }
    seen
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
    run_in_lab(lab, Path::new(PROBE), None, args)
}

/// Runs `program args` in the lab, unwatched by any harness (as `uid` when given), and
/// returns its outcomes.
fn run_in_lab(
    lab: &Lab,
    program: &Path,
    uid: Option<u32>,
    args: &[&str],
) -> HashMap<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let out = lab.dir.join(format!("out-{}", uid.unwrap_or(0)));
    std::fs::write(&out, "").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.netns]);
    if let Some(uid) = uid {
        cmd.args([
            "setpriv",
            &format!("--reuid={uid}"),
            "--regid=65534",
            "--clear-groups",
        ]);
    }
    let status = cmd
        .arg(program)
        .arg("--out")
        .arg(&out)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
    outcomes(&out)
}

/// Asserts that the probe's call to `addr` ended in `word` (`ok`, `denied`, ...).
fn expect(seen: &HashMap<String, String>, addr: impl AsRef<str>, word: &str) {
    let addr = addr.as_ref();
    assert_eq!(
        seen.get(addr).map(String::as_str),
        Some(word),
        "{addr}: {seen:?}"
    );
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
    set(&mut h.session.sensor, &lab_tables());
    let before = h.counters();
    let seen = run_watched_in_lab(&mut h, &lab, &ACTIONS);
    // The broker's first connection, right after its answer, fails with EPERM; so does the
    // first-party name that CNAMEs to a tracker, and the blocked range. The rest goes.
    expect(&seen, addr("127.0.0.2"), "denied");
    expect(&seen, addr("127.0.0.3"), "denied");
    expect(&seen, addr("127.0.0.9"), "denied");
    expect(&seen, addr("127.0.0.1"), "ok");
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
    set(&mut h.session.sensor, &lab_tables());
    let seen = run_unwatched_in_lab(&lab, &ACTIONS);
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9"] {
        expect(&seen, addr(ip), "ok");
    }
    // And the watched command, after it, is still denied.
    let seen = run_watched_in_lab(&mut h, &lab, &ACTIONS[..1]);
    expect(&seen, addr("127.0.0.2"), "denied");
}

#[test]
fn block_is_lifted_when_the_tables_empty_and_when_the_sensor_goes() {
    let lab = Lab::new("bll");
    let mut h = Harness::new();
    set(&mut h.session.sensor, &lab_tables());
    let seen = run_watched_in_lab(&mut h, &lab, &ACTIONS[..1]);
    expect(&seen, addr("127.0.0.2"), "denied");
    // A reload without block rules: the address learned earlier no longer denies.
    set(&mut h.session.sensor, &BlockTables::default());
    assert!(!h.session.sensor.blocking());
    let seen = run_watched_in_lab(&mut h, &lab, &ACTIONS);
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9"] {
        expect(&seen, addr(ip), "ok");
    }
    // Blocking again, then the sensor (the daemon) goes: its links die with it.
    set(&mut h.session.sensor, &lab_tables());
    let seen = run_watched_in_lab(&mut h, &lab, &ACTIONS[..1]);
    expect(&seen, addr("127.0.0.2"), "denied");
    drop(h);
    let mut h2 = Harness::new();
    let seen = run_watched_in_lab(&mut h2, &lab, &ACTIONS);
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9"] {
        expect(&seen, addr(ip), "ok");
    }
}

#[test]
fn block_denies_ipv6_ranges_and_v4_mapped_destinations() {
    let lab = Lab::new("bl6");
    let mut h = Harness::new();
    let mut t = lab_tables();
    t.cidrs
        .push(("::1/128".parse().unwrap(), dest_hash("lab-v6")));
    t.pairs
        .insert((dest_hash("lab-v6"), WATCH_TAG_CGROUP, BLOCK_EVERY_USER));
    set(&mut h.session.sensor, &t);
    let seen = run_watched_in_lab(
        &mut h,
        &lab,
        &[
            "tcp:[::1]:4433",
            "tcp:[::ffff:127.0.0.9]:4433",
            "tcp:[::ffff:127.0.0.1]:4433",
            "resolve:broker.test:4433",
            "tcp:[::ffff:127.0.0.2]:4433",
        ],
    );
    expect(&seen, "[::1]:4433", "denied");
    // An IPv4 destination written as IPv6 is still the blocked IPv4 range.
    expect(&seen, "[::ffff:127.0.0.9]:4433", "denied");
    expect(&seen, "[::ffff:127.0.0.1]:4433", "ok");
    // And an address a DNS answer gave for a blocked name (learned as IPv4).
    expect(&seen, "[::ffff:127.0.0.2]:4433", "denied");
}

#[test]
fn block_denies_udp_sends_to_a_blocked_range() {
    let lab = Lab::new("blq");
    let mut h = Harness::new();
    set(&mut h.session.sensor, &lab_tables());
    let seen = run_watched_in_lab(&mut h, &lab, &["udp:127.0.0.9:443", "udp:127.0.0.8:443"]);
    expect(&seen, "127.0.0.9:443", "denied");
    expect(&seen, "127.0.0.8:443", "ok");
}

// The daemon: policy rules, reloads, users' own blocks, stopping.

mod daemon_side {
    use std::path::PathBuf;

    use serde_json::Value;

    use super::{addr, Lab};
    use crate::common::{
        daemon::{client, history, lab_dir, wait_for, Daemon},
        PROBE,
    };

    const DESTINATIONS: &str = r#"
[[destination]]
id = "lab-broker"
company = "Lab Broker"
category = "data-broker"
domains = ["broker.test"]
source = "test fixture"

[[destination]]
id = "lab-tracker"
company = "Lab Tracker"
category = "data-broker"
domains = ["tracker.test"]
source = "test fixture"
"#;

    fn write_policy(dir: &std::path::Path, action: &str, allow_user_blocks: bool) {
        let text = format!(
            "{DESTINATIONS}\n[[rule]]\nid = \"lab-brokers\"\napps = \"meeting\"\ncategory = \"data-broker\"\nseverity = \"high\"\naction = \"{action}\"\n\n[settings]\nallow_user_blocks = {allow_user_blocks}\n"
        );
        std::fs::write(dir.join("policies.d/lab.toml"), text).unwrap();
    }

    /// The probe, copied under a meeting app's name.
    fn zoom(dir: &std::path::Path) -> PathBuf {
        let zoom = dir.join("zoom");
        if !zoom.exists() {
            std::fs::copy(PROBE, &zoom).unwrap();
        }
        zoom
    }

    use super::run_in_lab as run;

    fn word(seen: &std::collections::HashMap<String, String>, ip: &str) -> String {
        seen.get(&addr(ip))
            .cloned()
            .unwrap_or_else(|| format!("nothing in {seen:?}"))
    }

    fn status(dir: &std::path::Path) -> Value {
        let (code, text) = client(dir, None, &["status", "--json"]);
        assert_eq!(code, Some(0), "{text}");
        serde_json::from_str(text.trim()).unwrap()
    }

    /// A lab, and a daemon of its own with the lab policy; the probe copied as `zoom`.
    fn start(tag: &str, action: &str, allow_user_blocks: bool) -> (Lab, PathBuf, Daemon, PathBuf) {
        let lab = Lab::new(tag);
        let dir = lab_dir(tag);
        write_policy(&dir, action, allow_user_blocks);
        let d = Daemon::start(&dir);
        let zoom = zoom(&dir);
        (lab, dir, d, zoom)
    }

    fn wait_blocking(dir: &std::path::Path, on: bool) {
        wait_for(|| status(dir)["blocking"] == on, &format!("blocking {on}"));
    }

    const CONTACTS: [&str; 3] = [
        "resolve:broker.test:4433",
        "resolve:api.vendor.test:4433",
        "resolve:page.vendor.test:4433",
    ];

    #[test]
    fn daemon_blocks_a_meeting_apps_brokers_from_the_first_connection_and_lifts_it_on_reload_and_stop(
    ) {
        let (lab, dir, mut d, zoom) = start("bld", "block", false);
        let seen = run(&lab, &zoom, None, &CONTACTS);
        assert_eq!(word(&seen, "127.0.0.2"), "denied", "broker");
        assert_eq!(word(&seen, "127.0.0.3"), "denied", "CNAME-cloaked tracker");
        assert_eq!(word(&seen, "127.0.0.1"), "ok", "first-party page");
        // A process that is no meeting app reaches the broker.
        let seen = run(&lab, std::path::Path::new(PROBE), None, &CONTACTS[..1]);
        assert_eq!(word(&seen, "127.0.0.2"), "ok");
        // The history records the blocked contacts as blocked.
        wait_for(
            || {
                history(&dir, None)
                    .iter()
                    .filter(|a| a["action"] == "block" && a["blocked"].as_u64() > Some(0))
                    .count()
                    >= 2
            },
            "blocked contacts in the history",
        );
        let alerts = history(&dir, None);
        let companies: Vec<&str> = alerts
            .iter()
            .filter(|a| a["blocked"].as_u64() > Some(0))
            .filter_map(|a| a["company"].as_str())
            .collect();
        assert!(
            companies.contains(&"Lab Broker") && companies.contains(&"Lab Tracker"),
            "{alerts:#?}"
        );
        let (_, text) = client(&dir, None, &["status"]);
        assert!(text.contains("Blocking: on (2 connects"), "{text}");
        let (_, text) = client(&dir, None, &["history", "--since", "1h"]);
        assert!(text.contains("Lab Broker  BLOCKED"), "{text}");
        // So does the report built from the store.
        let blocked_in_report = || {
            let (_, text) = client(&dir, None, &["report", "--json", "--since", "1h"]);
            let v: Value = serde_json::from_str(text.trim()).unwrap_or_default();
            v["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["companies"].as_array().cloned().unwrap_or_default())
                .any(|c| c["company"] == "Lab Broker" && c["blocked"].as_u64() > Some(0))
        };
        wait_for(blocked_in_report, "the broker marked blocked in the report");
        // A reload that turns the rule into an alert lifts the block.
        write_policy(&dir, "alert", false);
        wait_blocking(&dir, false);
        let seen = run(&lab, &zoom, None, &CONTACTS);
        assert_eq!(word(&seen, "127.0.0.2"), "ok", "after reload");
        assert_eq!(word(&seen, "127.0.0.3"), "ok", "after reload");
        // Back to blocking; then the daemon stops, and nothing stays blocked.
        write_policy(&dir, "block", false);
        wait_blocking(&dir, true);
        let seen = run(&lab, &zoom, None, &CONTACTS[..1]);
        assert_eq!(word(&seen, "127.0.0.2"), "denied", "blocking again");
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
        let _ = d.child.wait();
        let seen = run(&lab, &zoom, None, &CONTACTS);
        assert_eq!(word(&seen, "127.0.0.2"), "ok", "after the daemon stopped");
        assert_eq!(word(&seen, "127.0.0.3"), "ok", "after the daemon stopped");
    }

    #[test]
    fn daemon_blocks_an_sni_only_contact_from_its_second_connection_and_says_why_not_the_first() {
        let (lab, dir, _d, zoom) = start("bls", "block", false);
        // No DNS: the name is only in the ClientHello, after the connect. The first
        // connection goes through; once the daemon read its name, the next is denied.
        let sni = "tls:broker.test@127.0.0.2:4433";
        let seen = run(&lab, &zoom, None, &[sni, "sleep:1500", sni]);
        assert_eq!(word(&seen, "127.0.0.2"), "ok,denied");
        wait_for(
            || {
                history(&dir, None).iter().any(|a| {
                    a["block_note"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("not blockable before connect"))
                })
            },
            "a not-blockable note",
        );
        // And for the app's later processes too.
        let again = run(&lab, &zoom, None, &[sni]);
        assert_eq!(word(&again, "127.0.0.2"), "denied", "{again:?}");
    }

    // Issue 22, item 4: one user's block of a company too large for the kernel's tables
    // made the daemon drop every user's blocks, told that user "blocked for you" and the
    // others nothing. Users' blocks are admitted one by one now: the one that does not fit
    // is refused, and no one else's block changes.
    #[test]
    fn a_users_block_that_does_not_fit_is_refused_and_no_one_elses_changes() {
        let (lab, dir, _d, zoom) = start("blo", "alert", true);
        // A victim blocks the lab tracker for themselves.
        let (code, text) = client(&dir, Some(65533), &["block", "zoom", "Lab Tracker"]);
        assert_eq!(code, Some(0), "{text}");
        // A company with more destinations than the kernel's pair table holds.
        let mut big = String::new();
        for i in 0..70_000 {
            big.push_str(&format!(
                "[[destination]]\nid = \"big-{i}\"\ncompany = \"Big Co\"\ncategory = \"ad-attribution\"\ndomains = [\"t{i}.big.test\"]\nsource = \"test fixture\"\n"
            ));
        }
        std::fs::write(dir.join("policies.d/big.toml"), big).unwrap();
        // A policy this large takes the daemon a few seconds to reload.
        let start = std::time::Instant::now();
        let refusal = loop {
            let (code, text) = client(&dir, Some(65534), &["block", "zoom", "Big Co"]);
            if text.contains("does not fit") {
                assert_ne!(code, Some(0), "{text}");
                break text;
            }
            assert!(
                !text.contains("blocked for you"),
                "the block that cannot fit was accepted: {text}"
            );
            assert!(
                start.elapsed().as_secs() < 60,
                "nobody's block of Big Co: {text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        assert!(refusal.contains("nothing changed"), "{refusal}");
        // Nothing was left out, and everyone's blocks hold.
        let st = status(&dir);
        assert_eq!(st["block_error"], Value::Null, "{st}");
        assert_eq!(st["blocking"], true);
        let (_, blocks) = client(&dir, None, &["blocks", "--json"]);
        assert!(blocks.contains("Lab Tracker"), "{blocks}");
        assert!(!blocks.contains("Big Co"), "{blocks}");
        // The victim's block holds; it binds the victim alone.
        let seen = run(&lab, &zoom, Some(65533), &CONTACTS[1..2]);
        assert_eq!(word(&seen, "127.0.0.3"), "denied", "the victim's own block");
        let seen = run(&lab, &zoom, None, &CONTACTS[1..2]);
        assert_eq!(word(&seen, "127.0.0.3"), "ok", "root blocked nothing");
    }

    #[test]
    fn a_block_added_by_reload_covers_addresses_resolved_before_it() {
        let (lab, dir, _d, zoom) = start("blr", "alert", false);
        let seen = run(&lab, &zoom, None, &CONTACTS[..1]);
        assert_eq!(word(&seen, "127.0.0.2"), "ok", "only alerted");
        // The app keeps the answer it got and connects again without asking DNS, after
        // the administrator turned the rule into a block.
        write_policy(&dir, "block", false);
        wait_blocking(&dir, true);
        let seen = run(&lab, &zoom, None, &["tcp:127.0.0.2:4433"]);
        assert_eq!(word(&seen, "127.0.0.2"), "denied", "from the DNS cache");
    }

    #[test]
    fn user_blocks_need_the_administrators_leave_and_bind_only_that_user() {
        let (lab, dir, _d, zoom) = start("blu", "alert", false);
        let (code, text) = client(&dir, Some(65534), &["block", "zoom", "Lab Broker"]);
        assert_ne!(code, Some(0));
        assert!(text.contains("allow_user_blocks"), "{text}");
        write_policy(&dir, "alert", true);
        wait_for(
            || {
                client(&dir, Some(65534), &["block", "zoom", "lab broker"])
                    .1
                    .contains("blocked for you")
            },
            "the user's block",
        );
        let (code, text) = client(&dir, Some(65534), &["block", "zoom", "No Such Co"]);
        assert_ne!(code, Some(0));
        assert!(text.contains("no company"), "{text}");
        wait_blocking(&dir, true);
        let seen = run(&lab, &zoom, Some(65534), &CONTACTS[..1]);
        assert_eq!(word(&seen, "127.0.0.2"), "denied", "nobody's own block");
        let seen = run(&lab, &zoom, None, &CONTACTS[..1]);
        assert_eq!(
            word(&seen, "127.0.0.2"),
            "ok",
            "root is not bound by nobody's block"
        );
        // The user sees their block; another user does not.
        let (_, mine) = client(&dir, Some(65534), &["blocks"]);
        assert!(mine.contains("zoom -> Lab Broker  (uid 65534)"), "{mine}");
        let (_, theirs) = client(&dir, Some(65533), &["blocks"]);
        assert!(theirs.starts_with("No blocks"), "{theirs}");
        // It survives a restart of the daemon (kept in the state directory)...
        drop(_d);
        let _d = Daemon::start(&dir);
        let seen = run(&lab, &zoom, Some(65534), &CONTACTS[..1]);
        assert_eq!(word(&seen, "127.0.0.2"), "denied", "after a restart");
        // Another user flipping blocks as fast as they can is held back.
        let mut refused = None;
        for i in 0..25 {
            let verb = if i % 2 == 0 { "block" } else { "unblock" };
            let (code, text) = client(&dir, Some(65533), &[verb, "zoom", "Lab Broker"]);
            if code != Some(0) {
                refused = Some((i, text));
                break;
            }
        }
        let (i, text) = refused.expect("a flood of block requests is refused");
        assert_eq!(i, 20, "{text}");
        assert!(text.contains("too many block requests"), "{text}");
        // ...and goes with unblock.
        let (code, text) = client(&dir, Some(65534), &["unblock", "zoom", "Lab Broker"]);
        assert_eq!(code, Some(0), "{text}");
        wait_blocking(&dir, false);
        let seen = run(&lab, &zoom, Some(65534), &CONTACTS[..1]);
        assert_eq!(word(&seen, "127.0.0.2"), "ok", "after unblock");
    }
}

mod audit_side {
    use std::process::Command;

    use serde_json::Value;

    use super::{expect, outcomes, Lab};
    use crate::common::{daemon::BIN, PROBE};

    /// `brokerwatch audit --json [--enforce]` of the probe resolving the lab's broker:
    /// its rows and summary, and what the probe saw.
    fn audit(lab: &Lab, enforce: bool) -> (Vec<Value>, std::collections::HashMap<String, String>) {
        let policy = lab.dir.join("audit-block.toml");
        std::fs::write(
            &policy,
            "[[destination]]\nid = \"lab-broker\"\ncompany = \"Lab Broker\"\ncategory = \"data-broker\"\ndomains = [\"broker.test\"]\nsource = \"test fixture\"\n\n[[rule]]\nid = \"lab-block\"\napps = \"*\"\ncategory = \"data-broker\"\nseverity = \"high\"\naction = \"block\"\n",
        )
        .unwrap();
        let out = lab.dir.join("audit-out");
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new(BIN);
        cmd.args(["audit", "--json", "--quiet", "--policy"])
            .arg(&policy);
        if enforce {
            cmd.arg("--enforce");
        }
        let o = cmd
            .args(["--", "ip", "netns", "exec", &lab.netns, PROBE, "--out"])
            .arg(&out)
            .arg("resolve:broker.test:4433")
            .output()
            .unwrap();
        let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(!lines.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
        (lines, outcomes(&out))
    }

    fn broker_row(lines: &[Value]) -> &Value {
        lines
            .iter()
            .find(|v| v["type"] == "connection" && v["dst_ip"] == "127.0.0.2")
            .unwrap_or_else(|| panic!("no row for the broker: {lines:#?}"))
    }

    #[test]
    fn audit_reports_would_be_blocks_and_enforce_blocks_them() {
        let lab = Lab::new("bla");
        let (lines, seen) = audit(&lab, false);
        expect(&seen, "127.0.0.2:4433", "ok");
        let row = broker_row(&lines);
        assert_eq!(row["action"], "block");
        assert_eq!(row["blocked"], 0);
        assert!(
            row["block_note"]
                .as_str()
                .unwrap_or("")
                .starts_with("would be blocked"),
            "{row}"
        );
        let (lines, seen) = audit(&lab, true);
        expect(&seen, "127.0.0.2:4433", "denied");
        let row = broker_row(&lines);
        assert_eq!(row["blocked"], 1, "{row}");
        assert!(row["block_note"].is_null(), "{row}");
        let summary = lines.iter().find(|v| v["type"] == "summary").unwrap();
        assert_eq!(summary["enforced"], true);
        assert_eq!(summary["blocked_calls"], 1, "{summary}");
    }
}
