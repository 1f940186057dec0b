//! Issue 16: the daemon's store of connections and alerts, with the real programs attached
//! (root): every connection of a watched app is recorded, and a full disk costs neither
//! alerts nor the rows that waited.

mod common;

use std::{
    io::{BufRead as _, Write as _},
    os::unix::net::UnixStream,
    process::Command,
    time::Duration,
};

use brokerwatch::{
    daemon::store::{self, FILE_NAME},
    protocol::Status,
};
use common::{
    daemon::{client, history, lab_dir, policy_text, wait_for, Daemon},
    require_root,
};

fn status(dir: &std::path::Path) -> Status {
    let (code, text) = client(dir, None, &["status", "--json"]);
    assert_eq!(code, Some(0), "{text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    serde_json::from_value(v["status"].clone())
        .or_else(|_| serde_json::from_value(v.clone()))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Stops the daemon as systemd does (SIGTERM) and waits for it to finish writing.
fn stop(mut d: Daemon) {
    let st = Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let exit = d.child.wait().unwrap();
    assert!(exit.success(), "daemon exit {exit:?}: {}", d.log());
}

fn run_zoom(dir: &std::path::Path, args: &[String]) {
    let zoom = dir.join("zoom");
    if !zoom.exists() {
        std::fs::copy(common::PROBE, &zoom).unwrap();
    }
    let st = Command::new(&zoom).args(args).status().unwrap();
    assert!(st.success());
}

/// A daemon, and a copy of the probe named zoom that contacts a broker (127.0.0.2) and a
/// first party (127.0.0.3) three times each.
struct Contacts {
    daemon: Daemon,
    _listeners: [std::net::TcpListener; 2],
    broker: u16,
    first_party: u16,
}

fn zoom_contacts_both_three_times(tag: &str) -> (std::path::PathBuf, Contacts) {
    let dir = lab_dir(tag);
    std::fs::write(dir.join("policies.d/test.toml"), policy_text("Broker")).unwrap();
    let (b, broker) = common::accepting_listener("127.0.0.2:0");
    let (f, first_party) = common::accepting_listener("127.0.0.3:0");
    let daemon = Daemon::start(&dir);
    run_zoom(
        &dir,
        &[
            "--repeat".into(),
            "3".into(),
            format!("tcp:127.0.0.3:{first_party}"),
            format!("tcp:127.0.0.2:{broker}"),
        ],
    );
    let c = Contacts {
        daemon,
        _listeners: [b, f],
        broker,
        first_party,
    };
    (dir, c)
}

#[test]
fn daemon_records_every_connection_of_watched_apps_in_the_store_not_only_alerts() {
    require_root();
    let (dir, c) = zoom_contacts_both_three_times("store-every");
    let (d, broker, first_party) = (c.daemon, c.broker, c.first_party);
    wait_for(|| !history(&dir, None).is_empty(), "the alert");
    stop(d);
    let rows = store::read_connections(&dir.join("state").join(FILE_NAME), 0).unwrap();
    let count = |port: u16| -> u64 {
        rows.iter()
            .filter(|r| r.finding.dst_port == port && r.finding.comm == "zoom")
            .map(|r| r.finding.count)
            .sum()
    };
    assert_eq!(count(first_party), 3, "first-party contacts: {rows:#?}");
    assert_eq!(count(broker), 3, "broker contacts: {rows:#?}");
    assert!(rows
        .iter()
        .filter(|r| r.finding.dst_port == broker)
        .all(|r| r.finding.flagged && r.finding.company.as_deref() == Some("Broker")));
    assert!(rows
        .iter()
        .filter(|r| r.finding.dst_port == first_party)
        .all(|r| !r.finding.flagged));
}

// Item 6: on a full disk `status` said nothing, a half-written line swallowed the next
// alert, and a restart failed.
#[test]
fn daemon_keeps_alerting_on_a_full_disk_says_so_and_saves_what_waited() {
    require_root();
    let dir = lab_dir("diskfull");
    std::fs::write(dir.join("policies.d/test.toml"), policy_text("Broker")).unwrap();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "bw-diskfull"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(mounted.success(), "cannot mount a small tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    let (_b, port) = common::accepting_listener("127.0.0.2:0");
    let d = Daemon::start(&dir);
    wait_for(|| state.join(FILE_NAME).exists(), "the store");
    // Fill the disk to the last block.
    let filler = state.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status();
    let mut sub = UnixStream::connect(dir.join("run/brokerwatch.sock")).unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    sub.write_all(b"{\"op\":\"subscribe\"}\n").unwrap();
    let mut lines = std::io::BufReader::new(sub.try_clone().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("subscribed"));
    for _ in 0..3 {
        run_zoom(&dir, &[format!("tcp:127.0.0.2:{port}")]);
    }
    // The alert still reaches subscribers, and root (an admin) is told about the store.
    let mut seen_alert = false;
    let mut seen_notice = false;
    for line in lines.by_ref().map_while(Result::ok) {
        seen_alert |= line.contains("\"type\":\"alert\"");
        if line.contains("store-error") {
            assert!(line.contains("full"), "{line}");
            seen_notice = true;
        }
        if seen_alert && seen_notice {
            break;
        }
    }
    assert!(seen_alert && seen_notice, "{}", d.log());
    let st = status(&dir);
    let err = st
        .store
        .error
        .clone()
        .expect("status names the store error");
    assert!(err.contains("full"), "{err}");
    assert!(st.store.pending > 0, "{:?}", st.store);
    assert!(d.log().contains("cannot write to the store"), "{}", d.log());
    // Space comes back: what waited is written, nothing was dropped.
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        || {
            let s = status(&dir).store;
            s.error.is_none() && s.pending == 0
        },
        "the waiting rows written",
    );
    assert_eq!(status(&dir).store.dropped, 0);
    assert_eq!(history(&dir, None).len(), 3);
    // A restart on a full disk still monitors.
    stop(d);
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status();
    let d = Daemon::start(&dir);
    run_zoom(&dir, &[format!("tcp:127.0.0.2:{port}")]);
    wait_for(|| status(&dir).alerts == 1, "an alert after the restart");
    drop(d);
}

// Issue 13: the report over the daemon's store has first-party contacts as well as alerts,
// and each user sees only their own processes'.
#[test]
fn daemon_report_over_the_store_includes_first_party_contacts_and_is_per_user() {
    require_root();
    // Kept alive to the end: the daemon and the listeners.
    let (dir, _contacts) = zoom_contacts_both_three_times("store-report");
    let report = |user: Option<u32>| -> serde_json::Value {
        let (code, text) = client(&dir, user, &["report", "--json", "--since", "1h"]);
        assert_eq!(code, Some(0), "{text}");
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{text}: {e}"))
    };
    let zoom_of = |r: &serde_json::Value| -> Option<serde_json::Value> {
        r["apps"]
            .as_array()?
            .iter()
            .find(|a| a["app"] == "Zoom")
            .cloned()
    };
    wait_for(
        || zoom_of(&report(None)).is_some_and(|z| z["connections"] == 6),
        "six connections in the report",
    );
    let r = report(None);
    assert_eq!(r["schema"], brokerwatch::report::SCHEMA);
    let zoom = zoom_of(&r).unwrap();
    let broker_row = &zoom["companies"][0];
    assert_eq!(broker_row["company"], "Broker");
    assert_eq!(broker_row["flagged"], true);
    assert_eq!(broker_row["domains"][0]["count"], 3);
    let other = zoom["other"].as_array().unwrap();
    assert!(
        other
            .iter()
            .any(|d| d["destination"] == "127.0.0.3" && d["count"] == 3),
        "first-party contacts: {zoom:#}"
    );
    // Another user sees none of root's processes.
    assert!(zoom_of(&report(Some(65534))).is_none());
    let (_, text) = client(&dir, None, &["report", "--since", "1h"]);
    assert!(text.contains("Zoom contacted 1 data broker"), "{text}");
    let html = dir.join("report.html");
    let (code, _) = client(&dir, None, &["report", "--html", html.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));
}

/// Issue 26, item 2: `report --new` through the daemon, over a store that already knew
/// Zoom's first-party host from ten days ago: only the broker, first contacted now, is new.
#[test]
fn daemon_report_new_lists_what_an_app_started_contacting_not_what_it_knew() {
    require_root();
    let dir = lab_dir("store-new");
    std::fs::write(dir.join("policies.d/test.toml"), policy_text("Broker")).unwrap();
    let ten_days_ago = brokerwatch::host::clock::now_ms() - 10 * 24 * 3600 * 1000;
    {
        // The baseline: a store of an earlier run (the daemon opens it as its own).
        let mut s = store::Store::open(&dir.join("state"), store::Retention::default()).unwrap();
        s.record_connection(store::ConnRow {
            key: "earlier".into(),
            first_ms: ten_days_ago,
            last_ms: ten_days_ago,
            finding: brokerwatch::finding::Finding {
                app: Some("Zoom".into()),
                dst_ip: "127.0.0.3".parse().unwrap(),
                count: 1,
                ..Default::default()
            },
        });
        s.close();
    }
    let (_b, broker) = common::accepting_listener("127.0.0.2:0");
    let (_f, first_party) = common::accepting_listener("127.0.0.3:0");
    let _daemon = Daemon::start(&dir);
    run_zoom(
        &dir,
        &[
            format!("tcp:127.0.0.3:{first_party}"),
            format!("tcp:127.0.0.2:{broker}"),
        ],
    );
    let new = || -> serde_json::Value {
        let (code, text) = client(&dir, None, &["report", "--new", "--since", "1h", "--json"]);
        assert_eq!(code, Some(0), "{text}");
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{text}: {e}"))
    };
    wait_for(
        || new()["apps"].as_array().is_some_and(|a| !a.is_empty()),
        "the new contact in the report",
    );
    let r = new();
    assert!(r["new_since_ms"].is_u64(), "{r:#}");
    let zoom = &r["apps"][0];
    assert_eq!(zoom["app"], "Zoom", "{r:#}");
    assert_eq!(zoom["companies"][0]["company"], "Broker", "{r:#}");
    assert!(
        zoom["other"].as_array().unwrap().is_empty(),
        "the first-party host was known ten days ago: {r:#}"
    );
    // The full report still has both.
    let (_, all) = client(&dir, None, &["report", "--since", "1h"]);
    assert!(all.contains("127.0.0.3"), "{all}");
    let (_, text) = client(&dir, None, &["report", "--new", "--since", "1h"]);
    assert!(text.starts_with("New since "), "{text}");
    assert!(!text.contains("127.0.0.3"), "{text}");
    let (code, err) = client(&dir, None, &["report", "--baseline", "7d"]);
    assert_ne!(code, Some(0), "--baseline without --new is refused: {err}");
}
