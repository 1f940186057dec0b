//! Issue 5 (daemon part): alerts, history, per-user filtering, restart and reload, with the
//! real programs attached. Users: root and `nobody` (65534, group `nogroup`).

mod common;

use std::process::Command;

use common::{
    daemon::{client, history, lab_dir, policy_text, wait_for, zoom_contacts_broker, Daemon},
    require_root,
};
use serde_json::Value;

// Issue 5.
#[test]
fn daemon_alerts_reach_history_and_each_user_sees_only_their_own() {
    require_root();
    let dir = lab_dir("users");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Test Data Broker Inc."),
    )
    .unwrap();
    let (_l, port) = common::accepting_listener("127.0.0.2:0");
    let d = Daemon::start(&dir);
    zoom_contacts_broker(&dir, port, None);
    zoom_contacts_broker(&dir, port, Some(65534));
    wait_for(|| history(&dir, None).len() >= 2, "two alerts");
    let all = history(&dir, None);
    assert_eq!(all.len(), 2, "{all:#?}");
    for a in &all {
        assert_eq!(a["company"], "Test Data Broker Inc.");
        assert_eq!(a["category"], "data-broker");
        assert_eq!(a["app"], "Zoom");
        assert_eq!(a["severity"], "high");
    }
    let mine = history(&dir, Some(65534));
    assert_eq!(mine.len(), 1, "nobody sees only nobody's alert: {mine:#?}");
    assert_eq!(mine[0]["uid"], 65534);
    // A user with no alerts sees none of the others'.
    assert!(
        history(&dir, Some(65533)).is_empty()
            || client(&dir, Some(65533), &["status"]).0 != Some(0)
    );
    let (code, status) = client(&dir, None, &["status", "--json"]);
    assert_eq!(code, Some(0));
    let status: Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(status["alerts"], 2, "{status}");
    assert_eq!(status["counters"]["lost"], 0);
    // No systemd here: apps share the root cgroup, so the hooks run there.
    assert_eq!(status["attach"], "root", "{status}");
    let attached = status["attached"].to_string();
    use monitor_common::names::program;
    for prog in [
        program::CONNECT4,
        program::EGRESS,
        program::INGRESS,
        program::EXEC,
        program::CGROUP_MKDIR,
    ] {
        assert!(attached.contains(prog), "{prog} missing: {attached}");
    }
    drop(d);
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 10.
#[test]
fn daemon_a_flatpak_scope_created_after_start_is_watched_as_its_app() {
    require_root();
    let dir = lab_dir("scope");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Scope Broker"),
    )
    .unwrap();
    let (_l, port) = common::accepting_listener("127.0.0.2:0");
    let d = Daemon::start(&dir);
    let mount = brokerwatch::host::cgroup::cgroup2_mount().unwrap();
    let base = mount.join(format!("bwdaemon-{}", std::process::id()));
    let scope = base.join("app-flatpak-us.zoom.Zoom-77.scope");
    let _cgroups = common::audit::Cleanup(vec![base.clone(), scope.clone()]);
    std::fs::create_dir_all(&scope).unwrap();
    wait_for(
        || d.log().contains("app-flatpak-us.zoom.Zoom-77.scope ("),
        "the daemon to watch the new scope",
    );
    // A process whose name is none of Zoom's starts in the scope.
    let helper = dir.join("bw-helper");
    std::fs::copy(common::PROBE, &helper).unwrap();
    common::audit::run_in_cgroup(&scope, &helper, &[&format!("tcp:127.0.0.2:{port}")]);
    wait_for(|| !history(&dir, None).is_empty(), "the alert");
    let alerts = history(&dir, None);
    assert_eq!(alerts[0]["app"], "Zoom", "{alerts:#?}\n{}", d.log());
    assert_eq!(alerts[0]["comm"], "bw-helper");
    assert_eq!(alerts[0]["company"], "Scope Broker");
    drop(d);
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 5.
#[test]
fn daemon_history_survives_sigkill_and_a_broken_policy_keeps_the_last_good_one() {
    require_root();
    let dir = lab_dir("restart");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("First Broker"),
    )
    .unwrap();
    let (_l, port) = common::accepting_listener("127.0.0.2:0");
    let mut d = Daemon::start(&dir);
    zoom_contacts_broker(&dir, port, None);
    wait_for(|| history(&dir, None).len() == 1, "the first alert");
    // SIGKILL: nothing is flushed on the way out.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    drop(d);
    let d = Daemon::start(&dir);
    assert_eq!(history(&dir, None).len(), 1, "history kept across the kill");
    // A broken policy, then SIGHUP: the error is logged, alerts go on under the old one.
    std::fs::write(dir.join("policies.d/test.toml"), "[[destination]\nbroken").unwrap();
    let pid = d.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(
        || d.log().contains("policy reload failed"),
        "the reload error in the log",
    );
    assert!(d.log().contains("test.toml:1:"), "{}", d.log());
    zoom_contacts_broker(&dir, port, None);
    wait_for(
        || history(&dir, None).len() == 2,
        "an alert after the failed reload",
    );
    assert_eq!(history(&dir, None)[1]["company"], "First Broker");
    drop(d);
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 5.
#[test]
fn daemon_clients_get_a_clear_error_when_the_daemon_is_down() {
    let dir = lab_dir("down");
    let (code, text) = client(&dir, None, &["status"]);
    assert_eq!(code, Some(2));
    assert!(
        text.contains("cannot connect to the brokerwatch daemon"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The shipped unit passes `systemd-analyze verify` and scores 3.0 or lower on
/// `systemd-analyze security` (both offline; no system manager runs here).
// Issue 5.
#[test]
fn daemon_system_unit_verifies_and_is_hardened() {
    let dir = lab_dir("unit");
    let unit = dir.join("brokerwatch.service");
    // Point ExecStart at the binary under test so that verify can check it.
    let text =
        brokerwatch::install::SYSTEM_UNIT.replace("/usr/bin/brokerwatch", common::daemon::BIN);
    std::fs::write(&unit, text).unwrap();
    // Documentation= names man pages: verify looks them up, in the ones this binary makes.
    let man = dir.join("man");
    let made = Command::new(common::daemon::BIN)
        .arg("generate-assets")
        .arg(&man)
        .status()
        .unwrap();
    assert!(made.success());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", &man)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "verify: {err}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for brokerwatch.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    assert!(score <= 3.0, "exposure {score}: {text}");
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 24, item 5: a meeting app's connection to a broker, opened before the daemon
// started, is found at its start and alerted, said to be open before it started.
#[test]
fn daemon_a_connection_open_before_it_started_is_found_and_alerted() {
    require_root();
    let dir = lab_dir("before");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Test Data Broker Inc."),
    )
    .unwrap();
    // A server that keeps what it accepts open, as a broker's API would.
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(std::time::Duration::from_secs(60));
        drop(held);
    });
    let zoom = dir.join("zoom");
    // A copy: the app is known by its program's name.
    std::fs::copy("/usr/bin/python3", &zoom).unwrap();
    let ready = dir.join("connected");
    let script = format!(
        "import socket, time\ns = socket.create_connection(('127.0.0.2', {port}))\nopen({:?}, 'w').close()\ntime.sleep(60)\n",
        ready.display().to_string()
    );
    let mut app = Command::new(&zoom).args(["-c", &script]).spawn().unwrap();
    wait_for(|| ready.exists(), "the app's connection");
    let d = Daemon::start(&dir);
    let pid = app.id();
    let mine = |dir: &std::path::Path| -> Vec<Value> {
        history(dir, None)
            .into_iter()
            .filter(|a| a["pid"] == pid)
            .collect()
    };
    wait_for(|| !mine(&dir).is_empty(), "an alert");
    let alerts = mine(&dir);
    let _ = app.kill();
    let _ = app.wait();
    assert_eq!(alerts.len(), 1, "{alerts:#?}\n{}", d.log());
    let a = &alerts[0];
    assert_eq!(
        (&a["company"], &a["app"], &a["pid"]),
        (&"Test Data Broker Inc.".into(), &"Zoom".into(), &pid.into()),
        "{a}"
    );
    assert!(
        a["name_note"]
            .as_str()
            .is_some_and(|n| n.starts_with("open before brokerwatch started")),
        "{a}"
    );
    drop(d);
    std::fs::remove_dir_all(&dir).ok();
}
