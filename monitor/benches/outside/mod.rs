//! Loops measured from outside, shared by the benches that time a separate process: the
//! loop prints one JSON line `{"calls": N, "ns_per_call": X}`; it runs alone, or beside an
//! audit of another process.

use std::process::{Command, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");

/// ns per call, from the loop's own JSON line in `stdout`.
pub fn ns_per_call(stdout: &[u8]) -> f64 {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("{\"calls\""))
        .unwrap_or_else(|| panic!("no figures from the loop: {text}"));
    serde_json::from_str::<Value>(line).unwrap()["ns_per_call"]
        .as_f64()
        .unwrap()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The loop alone.
pub fn off(argv: &[String]) -> f64 {
    let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    assert!(out.status.success());
    ns_per_call(&out.stdout)
}

/// The loop unwatched while `brokerwatch audit AUDIT_ARGS -- sleep 600` watches another
/// process.
pub fn beside_an_audit(argv: &[String], audit_args: &[&str]) -> f64 {
    let mut audit = Command::new(BIN)
        .args(["audit", "--quiet", "--duration", "600s"])
        .args(audit_args)
        .args(["--", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Loading takes a moment: wait until the audit watches.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let ns = off(argv);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(audit.id() as i32, libc::SIGINT) };
    let _ = audit.wait();
    ns
}

/// Whether the bench should run: not for `cargo bench -- --list`; as root only (it loads
/// eBPF programs), else it says so and exits 2.
pub fn should_run(what: &str) -> bool {
    if std::env::args().any(|a| a == "--list") {
        return false;
    }
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{what} load eBPF programs: run as root (cargo xtask bench does)");
        std::process::exit(2);
    }
    true
}
