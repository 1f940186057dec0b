//! Issue 5 (daemon part): alerts, history, per-user filtering, restart and reload, with the
//! real programs attached. Users: root and `nobody` (65534, group `nogroup`).

mod common;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{require_root, PROBE};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");

struct Daemon {
    child: Child,
    dir: PathBuf,
}

fn policy_text(company: &str) -> String {
    format!(
        "[[destination]]\nid = \"test-broker\"\ncompany = \"{company}\"\ncategory = \"data-broker\"\ncidrs = [\"127.0.0.2/32\"]\nsource = \"test fixture\"\n"
    )
}

impl Daemon {
    fn start(dir: &Path) -> Self {
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new(BIN)
            .args(["-v", "daemon", "--group", "nogroup", "--policy-dir"])
            .arg(dir.join("policies.d"))
            .arg("--socket")
            .arg(dir.join("run/brokerwatch.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            dir: dir.to_owned(),
        };
        let start = Instant::now();
        while client(dir, None, &["status", "--json"]).0 != Some(0) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "daemon not ready: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `brokerwatch ARGS --socket ...`, as `nobody` when `as_nobody`.
fn client(dir: &Path, as_user: Option<u32>, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = match as_user {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                "--regid=65534",
                "--clear-groups",
                BIN,
            ]);
            c
        }
        None => Command::new(BIN),
    };
    let out = cmd
        .args(args)
        .arg("--socket")
        .arg(dir.join("run/brokerwatch.sock"))
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

fn history(dir: &Path, as_user: Option<u32>) -> Vec<Value> {
    let (code, text) = client(dir, as_user, &["history", "--json", "--since", "1h"]);
    assert_eq!(code, Some(0), "{text}");
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{text}: {e}"));
    v["alerts"].as_array().cloned().unwrap_or_default()
}

/// A process named like a meeting app contacts the test broker, as `as_user`.
fn zoom_contacts_broker(dir: &Path, port: u16, as_user: Option<u32>) {
    let zoom = dir.join("zoom");
    if !zoom.exists() {
        std::fs::copy(PROBE, &zoom).unwrap();
    }
    let status = match as_user {
        Some(uid) => Command::new("setpriv")
            .args([&format!("--reuid={uid}"), "--regid=65534", "--clear-groups"])
            .arg(&zoom)
            .arg(format!("tcp:127.0.0.2:{port}"))
            .status(),
        None => Command::new(&zoom)
            .arg(format!("tcp:127.0.0.2:{port}"))
            .status(),
    }
    .unwrap();
    assert!(status.success());
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lab_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bw-daemon-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies.d")).unwrap();
    // nobody must reach the socket directory and run the copied probe.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn issue5_alerts_reach_history_and_each_user_sees_only_their_own() {
    require_root();
    let dir = lab_dir("users");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Test Data Broker Inc."),
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = l.local_addr().unwrap().port();
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
    assert!(status["attached"].as_array().unwrap().len() >= 9);
    drop(d);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn issue5_history_survives_sigkill_and_a_broken_policy_keeps_the_last_good_one() {
    require_root();
    let dir = lab_dir("restart");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("First Broker"),
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = l.local_addr().unwrap().port();
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

#[test]
fn issue5_clients_get_a_clear_error_when_the_daemon_is_down() {
    let dir = lab_dir("down");
    let (code, text) = client(&dir, None, &["status"]);
    assert_eq!(code, Some(2));
    assert!(
        text.contains("cannot connect to the brokerwatch daemon"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
