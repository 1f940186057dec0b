//! Issue 14: alerts and daemon logs in a real journald (started here when none runs), read
//! back with `journalctl -o json`.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use brokerwatch::daemon::journal::{ALERT_ID, LOSS_ID};
use common::{
    daemon::{history, lab_dir, policy_text, wait_for, zoom_contacts_broker, Daemon},
    journal::{entries, Journald},
    require_root,
};
use serde_json::Value;

#[test]
fn journal_alert_is_read_back_from_a_real_journald_with_its_fields_and_priority() {
    require_root();
    let _j = Journald::ensure();
    let dir = lab_dir("journal-alert");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Journal Broker"),
    )
    .unwrap();
    let (_l, port) = common::accepting_listener("127.0.0.2:0");
    let _d = Daemon::start(&dir);
    zoom_contacts_broker(&dir, port, None);
    wait_for(|| !history(&dir, None).is_empty(), "the alert");
    let found = entries(&[
        format!("MESSAGE_ID={ALERT_ID}"),
        format!("BROKERWATCH_DESTINATION=127.0.0.2:{port}"),
    ]);
    assert_eq!(found.len(), 1, "{found:#?}");
    let e = &found[0];
    let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
    assert_eq!(field("SYSLOG_IDENTIFIER"), "brokerwatch");
    assert_eq!(field("BROKERWATCH_COMPANY"), "Journal Broker");
    assert_eq!(field("BROKERWATCH_CATEGORY"), "data-broker");
    assert_eq!(field("BROKERWATCH_SEVERITY"), "high");
    assert_eq!(field("PRIORITY"), "4", "high is a warning: {e:#}");
    assert_eq!(field("BROKERWATCH_APP"), "Zoom");
    assert_eq!(field("BROKERWATCH_UID"), "0");
    assert!(field("BROKERWATCH_PID").parse::<u32>().is_ok(), "{e:#}");
    assert!(field("MESSAGE").contains("contacted"), "{e:#}");
}

#[test]
fn journal_daemon_logs_go_to_the_journal_under_systemd_with_their_priorities() {
    require_root();
    let _j = Journald::ensure();
    let dir = lab_dir("journal-logs");
    let d = Daemon::start_full(&dir, &["--ring-size", "4K", "--user-budget", "off"], true);
    let pid = d.child.id();
    // Readiness is information (notice, 5), in the journal and not on stderr.
    let ready = entries(&[
        format!("_PID={pid}"),
        "SYSLOG_IDENTIFIER=brokerwatch".into(),
        "PRIORITY=5".into(),
    ]);
    assert!(
        ready
            .iter()
            .any(|e| e["MESSAGE"].as_str().unwrap_or("").contains("ready")),
        "{ready:#?}"
    );
    assert!(
        !d.log().contains("ready"),
        "logged to stderr as well: {}",
        d.log()
    );
    // Lost records: a warning with its own MESSAGE_ID.
    d.overflow_ring();
    let loss = entries(&[format!("_PID={pid}"), format!("MESSAGE_ID={LOSS_ID}")]);
    assert!(!loss.is_empty(), "no loss entry");
    assert_eq!(loss[0]["PRIORITY"], "4");
}

/// A process stopped on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// Fleet use: the shipped rsyslog example forwards alerts from the journal to a central
// collector (here a TCP listener of the test's own), one JSON object per alert.
#[test]
fn journal_alerts_reach_a_collector_through_the_shipped_rsyslog_forwarding() {
    use std::io::BufRead as _;
    require_root();
    let _j = Journald::ensure();
    let dir = lab_dir("journal-fleet");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Fleet Broker"),
    )
    .unwrap();
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector_port = collector.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for conn in collector.incoming().map_while(Result::ok) {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(conn).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
    });
    let example = include_str!("../../dist/rsyslog/60-brokerwatch-forward.conf");
    let conf = format!(
        "global(workDirectory=\"{}\")\n{}",
        dir.display(),
        example
            .replace("loghost.example.org", "127.0.0.1")
            .replace("\"6514\"", &format!("\"{collector_port}\""))
    );
    std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
    let check = Command::new("rsyslogd")
        .args(["-N1", "-f"])
        .arg(dir.join("rsyslog.conf"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _rsyslog = Running(
        Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd (package rsyslog)"),
    );
    let (_l, port) = common::accepting_listener("127.0.0.2:0");
    let _d = Daemon::start(&dir);
    zoom_contacts_broker(&dir, port, None);
    let want = format!("127.0.0.2:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(&want) => break l,
            Ok(_) => continue,
            Err(_) => panic!("no alert reached the collector in 30 s"),
        }
    };
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(v["company"], "Fleet Broker", "{v:#}");
    assert_eq!(v["category"], "data-broker");
    assert_eq!(v["severity"], "high");
    assert_eq!(v["app"], "Zoom");
    assert!(
        v["message"].as_str().unwrap().contains("contacted"),
        "{v:#}"
    );
    // Issue 26, item 4: the fleet report over the collector's file, with this desktop's
    // line as it arrived and the same line as a second desktop (desk-2) sends it.
    let host = v["host"].as_str().unwrap();
    assert!(!host.is_empty(), "{v:#}");
    let file = dir.join("collector.jsonl");
    let other = line.replace(&format!("\"host\":\"{host}\""), "\"host\":\"desk-2\"");
    std::fs::write(&file, format!("{line}\n{other}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_brokerwatch"))
        .args(["report", "--since", "1h", "--json", "--input"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{stdout}: {e}"));
    assert_eq!(r["scope"], "fleet", "{r:#}");
    assert_eq!(r["fleet"][0]["company"], "Fleet Broker", "{r:#}");
    assert_eq!(r["fleet"][0]["alerts"], 2, "{r:#}");
    let mut hosts: Vec<&str> = r["fleet"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    hosts.sort();
    let mut want = vec![host, "desk-2"];
    want.sort();
    assert_eq!(hosts, want);
    let apps: Vec<&str> = r["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["app"].as_str().unwrap())
        .collect();
    assert!(
        apps.contains(&format!("Zoom on {host}").as_str()),
        "{apps:?}"
    );
    assert!(apps.contains(&"Zoom on desk-2"), "{apps:?}");
}
