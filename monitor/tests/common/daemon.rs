//! A brokerwatch daemon of the test's own (temporary socket, state and policy directories).
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::PROBE;

pub const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");

pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
}

pub fn policy_text(company: &str) -> String {
    format!(
        "[[destination]]\nid = \"test-broker\"\ncompany = \"{company}\"\ncategory = \"data-broker\"\ncidrs = [\"127.0.0.2/32\"]\nsource = \"test fixture\"\n"
    )
}

impl Daemon {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Starts the daemon with `extra` daemon arguments.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        Self::start_full(dir, extra, false)
    }

    /// Starts the daemon; with `journal_stream`, as systemd would with its stderr connected
    /// to the journal (`JOURNAL_STREAM` names the stderr file's device and inode).
    pub fn start_full(dir: &Path, extra: &[&str], journal_stream: bool) -> Self {
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let mut cmd = Command::new(BIN);
        if journal_stream {
            use std::os::unix::fs::MetadataExt as _;
            let m = log.metadata().unwrap();
            cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
        }
        let child = cmd
            .args(["-v", "daemon", "--group", "nogroup"])
            .args(extra)
            .arg("--policy-dir")
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

    pub fn log(&self) -> String {
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
pub fn client(dir: &Path, as_user: Option<u32>, args: &[&str]) -> (Option<i32>, String) {
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

pub fn history(dir: &Path, as_user: Option<u32>) -> Vec<Value> {
    let (code, text) = client(dir, as_user, &["history", "--json", "--since", "1h"]);
    assert_eq!(code, Some(0), "{text}");
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{text}: {e}"));
    v["alerts"].as_array().cloned().unwrap_or_default()
}

impl Daemon {
    /// Floods the ring with 3,000 watched UDP connects (a copy of the probe named like a
    /// meeting app) while the daemon is stopped: with `--ring-size 4K` records are lost
    /// however fast it reads (a daemon that kept up lost none, and a loss test waited in
    /// vain once the engine got quicker).
    pub fn overflow_ring(&self) {
        let zoom = self.dir.join("zoom");
        if !zoom.exists() {
            std::fs::copy(PROBE, &zoom).unwrap();
        }
        let pid = self.child.id() as i32;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let st = Command::new(&zoom)
            .args(["--repeat", "3000", "udpconnect:127.0.0.1:9"])
            .status();
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        assert!(st.unwrap().success());
    }
}

/// A process named like a meeting app contacts the test broker, as `as_user`.
pub fn zoom_contacts_broker(dir: &Path, port: u16, as_user: Option<u32>) {
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

pub fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn lab_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bw-daemon-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies.d")).unwrap();
    // nobody must reach the socket directory and run the copied probe.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

/// A process's resident memory in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
