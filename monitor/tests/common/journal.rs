//! A real journald for tests (the running one, or one started here) and what it holds.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const SOCKET: &str = "/run/systemd/journal/socket";

/// A journald for the test: the running one, or one started by hand (stopped on drop).
pub struct Journald(Option<Child>);

impl Journald {
    pub fn ensure() -> Self {
        // A socket file alone may be stale (a journald that ended): it must answer.
        let answers = || {
            std::os::unix::net::UnixDatagram::unbound()
                .and_then(|s| s.send_to(b"", SOCKET))
                .is_ok()
        };
        if answers() {
            return Self(None);
        }
        let child = Command::new("/lib/systemd/systemd-journald")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start /lib/systemd/systemd-journald (package systemd)");
        let start = Instant::now();
        while !answers() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "journald did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(Some(child))
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Journal entries matching `filters` (`FIELD=value`), waiting up to 20 s for one.
pub fn entries(filters: &[String]) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let out = Command::new("journalctl")
            .args(["-o", "json", "--no-pager", "--since", "-10min"])
            .args(filters)
            .output()
            .expect("journalctl");
        let found: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if !found.is_empty() || start.elapsed() > Duration::from_secs(20) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
