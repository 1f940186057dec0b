//! End-to-end: the `brokerwatch audit` command as a user runs it (as root), its output
//! formats, exit statuses and error messages.

mod common;

use std::{net::TcpListener, process::Command};

use common::{require_root, PROBE};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");

fn listener() -> (TcpListener, u16) {
    common::accepting_listener("127.0.0.1:0")
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

// Issue 2.
#[test]
fn audit_command_json_has_every_field_and_the_command_status() {
    require_root();
    let (_l, port) = listener();
    let out = Command::new(BIN)
        .args([
            "audit", "--json", "--", PROBE, "--depth", "1", "--repeat", "3",
        ])
        .arg(format!("tcp:127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    let rows: Vec<&Value> = lines.iter().filter(|v| v["type"] == "connection").collect();
    assert_eq!(rows.len(), 1, "{lines:#?}");
    let row = rows[0];
    for field in [
        "ts",
        "pid",
        "comm",
        "exe",
        "app",
        "proto",
        "dst_ip",
        "dst_port",
        "domain",
        "domain_source",
        "category",
        "company",
        "severity",
        "count",
    ] {
        assert!(row.get(field).is_some(), "field {field} missing in {row}");
    }
    assert_eq!(row["dst_ip"], "127.0.0.1");
    assert_eq!(row["dst_port"], port);
    assert_eq!(row["proto"], "tcp");
    assert_eq!(
        row["count"], 3,
        "three connects to one destination aggregate into one row"
    );
    assert_eq!(row["exe"], PROBE);
    assert!(row["domain"].is_null());
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["command_exit_code"], 0);
    assert_eq!(summary["records_lost"], 0);
    assert_eq!(
        summary["records_generated"], summary["records_delivered"],
        "books balance: {summary}"
    );
}

// Issue 2.
#[test]
fn audit_csv_has_a_header_and_the_same_columns() {
    require_root();
    let (_l, port) = listener();
    let out = Command::new(BIN)
        .args(["audit", "--csv", "--", PROBE])
        .arg(format!("tcp:[::1]:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert!(
        header.contains(&"dst_ip") && header.contains(&"company"),
        "{header:?}"
    );
    assert_eq!(lines.count(), 1);
}

// Issue 2.
#[test]
fn audit_table_names_process_destination_and_summary() {
    require_root();
    let (_l, port) = listener();
    let out = Command::new(BIN)
        .args(["audit", "--", PROBE])
        .arg(format!("tcp:127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("Summary: "), "{text}");
    assert!(text.contains("0 lost"), "{text}");
    assert!(text.contains("exited with status 0"), "{text}");
}

// Issue 2.
#[test]
fn audit_missing_command_is_a_clear_error_with_status_2() {
    require_root();
    let out = Command::new(BIN)
        .args(["audit", "--", "no-such-command-brokerwatch-test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("command not found: no-such-command-brokerwatch-test"),
        "{err}"
    );
}

// Issue 2.
#[test]
fn audit_unprivileged_user_is_told_to_use_root() {
    require_root();
    // setpriv (util-linux) drops to nobody with no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
        ])
        .args(["audit", "--duration", "1s"])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CAP_BPF") && err.contains("sudo brokerwatch"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

// Issue 2.
#[test]
fn audit_bad_arguments_exit_2() {
    let out = Command::new(BIN)
        .args(["audit", "--ring-size", "3000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("power of two"));
}

// Issue 4.
#[test]
fn audit_meeting_app_contacting_a_data_broker_exits_1_with_company_and_category() {
    require_root();
    // A test host on loopback that a test policy names as a data broker.
    let l = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("bw-issue4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("test-broker.toml");
    std::fs::write(
        &policy,
        r#"[[destination]]
id = "test-broker"
company = "Test Data Broker Inc."
category = "data-broker"
cidrs = ["127.0.0.2/32"]
source = "test fixture"
"#,
    )
    .unwrap();
    // A process named like a meeting app.
    let zoom = dir.join("zoom");
    std::fs::copy(PROBE, &zoom).unwrap();
    let out = Command::new(BIN)
        .args(["audit", "--json", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg(&zoom)
        .arg(format!("tcp:127.0.0.2:{port}"))
        .arg(format!("tcp:127.0.0.1:{port}"))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let lines = json_lines(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {lines:#?} stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broker = lines
        .iter()
        .find(|v| v["type"] == "connection" && v["dst_ip"] == "127.0.0.2")
        .expect("the broker row");
    assert_eq!(broker["company"], "Test Data Broker Inc.");
    assert_eq!(broker["category"], "data-broker");
    assert_eq!(broker["app"], "Zoom");
    assert_eq!(broker["severity"], "high", "meeting app x data broker");
    assert_eq!(broker["action"], "alert");
    assert_eq!(broker["flagged"], true);
    let other = lines
        .iter()
        .find(|v| v["type"] == "connection" && v["dst_ip"] == "127.0.0.1")
        .expect("the other row");
    assert!(other["company"].is_null());
    assert_eq!(lines.last().unwrap()["flagged"], 1);
}

/// An audit that ends by --duration must not wait for the audited command.
// Issue 2.
#[test]
fn audit_duration_ends_the_audit_while_the_command_runs_on() {
    require_root();
    // The command inherits brokerwatch's stdout: write it to a file, and wait for
    // brokerwatch alone.
    let path = std::env::temp_dir().join(format!("bw-duration-{}.txt", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let start = std::time::Instant::now();
    let status = Command::new(BIN)
        .args(["audit", "--duration", "1s", "--", "sleep", "30"])
        .stdout(file)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "the audit waited for the command"
    );
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(text.contains("Still running after the audit"), "{text}");
}

/// Cgroups left by audits whose commands outlived them are removed by the next audit once
/// empty.
/// `brokerwatch audit -- true` exits 0.
fn audit_true_succeeds() {
    let out = Command::new(BIN)
        .args(["audit", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// Issue 2.
#[test]
fn audit_stale_empty_audit_cgroups_are_cleaned_up() {
    require_root();
    let mount = brokerwatch::host::cgroup::cgroup2_mount().unwrap();
    let stale = mount.join("brokerwatch").join("audit-4000000001");
    std::fs::create_dir_all(&stale).unwrap();
    audit_true_succeeds();
    assert!(!stale.exists(), "{} is still there", stale.display());
}

// Issue 16, item 12: a second audit's clean-up deleted a concurrent audit's fresh cgroup.
#[test]
fn audit_concurrent_audits_keep_each_others_cgroups() {
    require_root();
    let mount = brokerwatch::host::cgroup::cgroup2_mount().unwrap();
    let parent = mount.join("brokerwatch");
    // A cgroup of an audit that still runs (this test process, by pid and start time) and
    // one whose owner's start time does not match (its pid was reused).
    let live = parent.join(brokerwatch::host::cgroup::audit_cgroup_name());
    let reused = parent.join(format!("audit-{}-1", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    std::fs::create_dir_all(&reused).unwrap();
    audit_true_succeeds();
    assert!(live.exists(), "a running audit's cgroup was removed");
    assert!(!reused.exists(), "{} is still there", reused.display());
    std::fs::remove_dir(&live).unwrap();
    // And for real: audits started a few tens of milliseconds apart all succeed.
    for gap_ms in [10u64, 30, 50, 70, 90] {
        let first = Command::new(BIN)
            .args(["audit", "--", "sleep", "0.3"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(gap_ms));
        let second = Command::new(BIN)
            .args(["audit", "--", "true"])
            .output()
            .unwrap();
        let first = first.wait_with_output().unwrap();
        assert_eq!(
            first.status.code(),
            Some(0),
            "gap {gap_ms} ms: {}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert_eq!(
            second.status.code(),
            Some(0),
            "gap {gap_ms} ms: {}",
            String::from_utf8_lossy(&second.stderr)
        );
    }
}

/// What a tmux pane shows.
fn pane(session: &str) -> String {
    let out = Command::new("tmux")
        .args(["capture-pane", "-p", "-t", session])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// Issue 13: a 30 s audit showed nothing until it ended. On a terminal the status line and
// each flagged contact appear while it runs (checked in a real tmux pane).
#[test]
fn audit_live_line_and_flagged_contacts_show_on_a_terminal_before_the_audit_ends() {
    require_root();
    let (_l, port) = common::accepting_listener("127.0.0.2:0");
    let dir = std::env::temp_dir().join(format!("bw-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let zoom = dir.join("zoom");
    std::fs::copy(PROBE, &zoom).unwrap();
    let policy = dir.join("broker.toml");
    std::fs::write(&policy, common::daemon::policy_text("Live Broker")).unwrap();
    let session = format!("bwlive{}", std::process::id());
    let cmd = format!(
        "{BIN} audit --duration 20s --policy {} --output {} -- sh -c '{} tcp:127.0.0.2:{port}; sleep 20'; sleep 60",
        policy.display(),
        dir.join("report.txt").display(),
        zoom.display()
    );
    let st = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "40",
            "-s",
            &session,
            &cmd,
        ])
        .status()
        .expect("tmux");
    assert!(st.success());
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .status();
        }
    }
    let _kill = Kill(session.clone());
    let start = std::time::Instant::now();
    let mut shown = String::new();
    while start.elapsed() < std::time::Duration::from_secs(15) {
        shown = pane(&session);
        if shown.contains("Live Broker") && shown.contains("1 flagged") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        shown.contains("Live Broker"),
        "no flagged contact while running:\n{shown}"
    );
    assert!(shown.contains("1 flagged"), "no status line:\n{shown}");
    assert!(shown.contains("processes,"), "{shown}");
    assert!(
        !dir.join("report.txt").exists()
            || std::fs::read_to_string(dir.join("report.txt"))
                .unwrap()
                .is_empty(),
        "the audit had already ended"
    );
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 13: "No connections" said nothing about what was watched or what to try.
#[test]
fn audit_that_saw_nothing_says_what_it_watched_and_what_to_try() {
    require_root();
    let out = Command::new(BIN)
        .args([
            "audit",
            "--duration",
            "1s",
            "--quiet",
            "--app",
            "no-such-app-xyz",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Watched: no-such-app-xyz"), "{text}");
    assert!(text.contains("None of them ran"), "{text}");
    assert!(text.contains("--all") && text.contains("-- CMD"), "{text}");
}

// Issue 13: 40 runs of one app to one domain printed 40 rows and counted 40 "destinations".
#[test]
fn audit_table_groups_forty_processes_to_one_destination_into_one_line() {
    require_root();
    let (_l, port) = common::accepting_listener("127.0.0.2:0");
    let dir = std::env::temp_dir().join(format!("bw-group-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let zoom = dir.join("zoom");
    std::fs::copy(PROBE, &zoom).unwrap();
    let policy = dir.join("broker.toml");
    std::fs::write(&policy, common::daemon::policy_text("Group Broker")).unwrap();
    let out = Command::new(BIN)
        .args(["audit", "--quiet", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg(&zoom)
        .args(["--spawn", "40", &format!("tcp:127.0.0.2:{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // Destination lines (the command line also names the address).
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("      ") && l.contains("127.0.0.2"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("40x"), "{text}");
    assert!(
        text.contains("40 connections to 1 destination in"),
        "{text}"
    );
    assert!(text.contains("Flagged: 1 destination(s)"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
