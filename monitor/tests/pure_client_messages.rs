//! Issue 24, item 6: what the clients say when the daemon cannot be reached, as a user
//! reads it (no privileges, no daemon).

use std::{
    process::{Command, Stdio},
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");

fn missing_socket() -> String {
    std::env::temp_dir()
        .join(format!("bw-no-daemon-{}.sock", std::process::id()))
        .display()
        .to_string()
}

#[test]
fn client_status_without_a_daemon_says_the_os_error_once() {
    let out = Command::new(BIN)
        .args(["status", "--socket", &missing_socket()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the brokerwatch daemon"),
        "{err}"
    );
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the OS error, once: {err}"
    );
    assert!(err.contains("brokerwatch-users"), "{err}");
}

#[test]
fn client_the_agent_says_once_why_it_cannot_reach_the_daemon_and_keeps_trying() {
    let mut child = Command::new(BIN)
        .args(["notify", "--socket", &missing_socket()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Several attempts (250 ms, 500 ms, 1 s backoff).
    std::thread::sleep(Duration::from_millis(2500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("cannot connect to the brokerwatch daemon")
            .count(),
        1,
        "said once, not per attempt: {err}"
    );
    assert!(err.contains("keeps trying"), "{err}");
}
