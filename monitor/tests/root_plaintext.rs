//! Issue 25: the plaintext probes are bound to the watched process. A watched and an
//! unwatched client use the same system libssl at the same time; only the watched one's
//! writes reach the ring buffer (the other is never even trapped: its probes are not
//! installed in its memory).

mod common;

use std::{path::PathBuf, process::Command};

use brokerwatch::kernel::wire::Record;
use common::Harness;

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab");

/// The real python3 binary (not a version manager's shell shim).
fn python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn plaintext_is_read_only_from_the_watched_process_never_from_another_using_the_same_libssl() {
    let dir = std::env::temp_dir().join(format!("bw-root-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = common::self_signed(&dir, "lab.test");
    let port = common::free_port();
    let mut server = Command::new(python())
        .arg(format!("{LAB}/https_sink.py"))
        .args(["127.0.0.1", &port.to_string()])
        .arg(&cert)
        .arg(&key)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));

    // Run counts of the programs: the probe must run for the watched writes only.
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats).unwrap();
    std::fs::write(stats, "1").unwrap();
    let mut h = Harness::new();
    h.session.sensor.read_plaintext();
    let url = format!("https://127.0.0.1:{port}/p?who=unwatched");
    let client = format!("{LAB}/tls_client.py");
    // The unwatched client writes while the watched one runs.
    let mut unwatched = Command::new(python())
        .args([&client, &url, "--sleep", "0.5", "--data", "unwatched-body"])
        .spawn()
        .unwrap();
    let watched_url = format!("https://127.0.0.1:{port}/p?who=watched");
    let watched = h.run_watched_program(
        python(),
        &[
            &client,
            &watched_url,
            "--sleep",
            "1.0",
            "--data",
            "watched-body",
        ],
    );
    assert!(unwatched.wait().unwrap().success());
    h.settle();
    let runs: u64 = h
        .session
        .sensor
        .program_stats()
        .iter()
        .filter(|p| p.name == monitor_common::names::program::OPENSSL_WRITE)
        .map(|p| p.run_count)
        .sum();
    std::fs::write(stats, stats_before.trim()).unwrap();
    let _ = server.kill();
    let _ = server.wait();
    std::fs::remove_dir_all(&dir).ok();

    let plain: Vec<_> = h
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Plain(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(
        plain
            .iter()
            .any(|p| p.header.tgid == watched && p.data.windows(12).any(|w| w == b"watched-body")),
        "the watched client's body was not read: {plain:?}"
    );
    let strays: Vec<_> = plain.iter().filter(|p| p.header.tgid != watched).collect();
    assert!(
        strays.is_empty(),
        "records of unwatched processes: {strays:?}"
    );
    // Not even trapped: the probe ran once per write of the watched process, never for
    // the other one (whose writes through the same libssl were as many).
    let writes = plain.iter().filter(|p| p.offset == 0).count() as u64;
    assert!(writes >= 2, "head and body: {plain:?}");
    assert_eq!(runs, writes, "the probe ran for another process's writes");
}
