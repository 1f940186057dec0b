//! `brokerwatch audit` run in the background while a test starts clients, read back as
//! JSON rows once it ends.
#![allow(dead_code)]

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");

pub struct BackgroundAudit {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl BackgroundAudit {
    /// Starts `brokerwatch -v audit --json ARGS` and waits until it watches.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["-v", "audit", "--json", "--duration", "120s"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let a = BackgroundAudit { child, stderr };
        a.wait_for_log("brokerwatch: watching");
        a
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (up to 20 s) until the audit's stderr holds `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the audit never said {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ends the audit with SIGINT, as Ctrl-C would, and returns its JSON lines.
    pub fn finish(self) -> (Vec<Value>, String) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = self.child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        (lines, self.stderr.lock().unwrap().clone())
    }
}

/// Connection rows of an audit's JSON output.
pub fn rows(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["type"] == "connection").collect()
}

/// A file whose removal the test cannot forget (a cgroup, an install tree).
pub struct Cleanup(pub Vec<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            if p.is_dir() && p.starts_with("/sys") {
                let _ = std::fs::remove_dir(p);
            } else if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Copies `src` to `dst` as hard links where possible (same file system), recursively.
pub fn link_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            link_tree(&e.path(), &to);
        } else if ty.is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            std::os::unix::fs::symlink(target, &to).unwrap();
        } else if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Runs `program args` after moving the shell into `cgroup` (as `flatpak run` and
/// systemd do before the app starts).
pub fn run_in_cgroup(cgroup: &Path, program: &Path, args: &[&str]) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}/cgroup.procs' && exec \"$0\" \"$@\"",
            cgroup.display()
        ))
        .arg(program)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
}
