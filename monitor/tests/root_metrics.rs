//! Issue 26, item 3: the daemon's counters where monitoring systems read them. The daemon
//! writes `--metrics-file` for node_exporter's textfile collector; Debian's real
//! `prometheus-node-exporter` reads it and serves it on loopback, where the test scrapes it.

mod common;

use std::{
    io::{Read as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    process::{Command, Stdio},
};

use common::daemon::{lab_dir, policy_text, wait_for, zoom_contacts_broker, Daemon};

/// `GET /metrics` from the exporter on loopback.
fn scrape(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// The value of the sample line that starts with `prefix`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_file_is_read_by_a_real_node_exporter_with_alerts_by_category_and_no_names() {
    common::require_root();
    let dir = lab_dir("metrics");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Metrics Broker"),
    )
    .unwrap();
    let textfiles = dir.join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    let file = textfiles.join("brokerwatch.prom");
    let d = Daemon::start_with(
        &dir,
        &[
            "--metrics-file",
            file.to_str().unwrap(),
            "--metrics-every",
            "1s",
        ],
    );
    let port = common::free_port();
    let mut exporter = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!(
            "--collector.textfile.directory={}",
            textfiles.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-node-exporter (cargo xtask setup installs it)");

    let (_listener, broker) = common::accepting_listener("127.0.0.2:0");
    zoom_contacts_broker(&dir, broker, None);
    let mut text = String::new();
    wait_for(
        || {
            text = scrape(port);
            value(&text, "brokerwatch_alerts_total{category=\"data-broker\"") == Some(1.0)
        },
        "node_exporter serving the daemon's alert count",
    );
    assert_eq!(
        value(&text, "node_textfile_scrape_error"),
        Some(0.0),
        "{text}"
    );
    assert!(
        value(&text, "brokerwatch_records_generated_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "brokerwatch_contacts_total{category=\"data-broker\"").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "brokerwatch_resident_memory_bytes").unwrap_or(0.0) > 1e6,
        "{text}"
    );
    assert_eq!(value(&text, "brokerwatch_policy_error"), Some(0.0));
    // Totals only: no user, process, app or destination.
    let written = std::fs::read_to_string(&file).unwrap();
    for name in ["127.0.0.2", "zoom", "Metrics Broker", "root"] {
        assert!(
            !written.contains(name),
            "{name} in the metrics file:\n{written}"
        );
    }
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644,
        "readable by the exporter's own user"
    );
    // Only the file: no temporary one is left beside it for the collector to read.
    let names: Vec<String> = std::fs::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["brokerwatch.prom"]);
    let _ = exporter.kill();
    let _ = exporter.wait();
    drop(d);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn metrics_file_that_node_exporter_would_ignore_is_refused_at_start() {
    common::require_root();
    let dir = lab_dir("metrics-bad");
    let out = Command::new(env!("CARGO_BIN_EXE_brokerwatch"))
        .args(["daemon", "--metrics-file"])
        .arg(dir.join("brokerwatch.txt"))
        .arg("--socket")
        .arg(dir.join("run/brokerwatch.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node_exporter's textfile collector reads only files ending in .prom"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
