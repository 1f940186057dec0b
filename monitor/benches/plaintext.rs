//! Plaintext sensor benchmarks (run by `cargo xtask bench`, issue 25), measured from a
//! separate process as users would see them:
//!
//! * what a watched process pays per `SSL_write` (a Python client writing N records of
//!   100 B, 1 KiB, 4 KiB and 16 KiB over TLS on loopback), with no monitor, and under
//!   `brokerwatch audit --email ... -- CLIENT` (probes, ring, decoding and matching);
//! * what an unwatched process using the same libssl pays while `brokerwatch audit` reads
//!   another process;
//! * the inspector's matching throughput (MB/s on one core), in process.
//!
//! Output JSON at `$BW_BENCH_OUT` (default bench-results/plaintext.json).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use brokerwatch::{
    inspect::{Identifier, Inspector},
    kernel::wire::PlainRecord,
};
use monitor_common::{EventHeader, EventKind, TlsLib, PLAIN_CHUNK};
use serde_json::{json, Value};

#[path = "outside/mod.rs"]
mod outside;
use outside::{beside_an_audit, median, ns_per_call, off, BIN};
const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab");
const CALLS: usize = 20_000;
const SIZES: [usize; 4] = [100, 1024, 4096, 16384];
const RUNS: usize = 3;

fn python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=bench.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    (key, cert)
}

/// The client's argv for `size`-byte writes.
fn client(size: usize, key: &Path, cert: &Path) -> Vec<String> {
    vec![
        python().display().to_string(),
        format!("{LAB}/write_bench.py"),
        CALLS.to_string(),
        size.to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    ]
}

/// The client as the audited command, its plaintext read and searched.
fn watched(argv: &[String]) -> f64 {
    let dir = std::env::temp_dir().join(format!("bw-bench-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("audit.json");
    let out = Command::new(BIN)
        .args([
            "audit",
            "--json",
            "--quiet",
            "--email",
            "bench@example.test",
            "-o",
        ])
        .arg(&report)
        .arg("--")
        .args(argv)
        .output()
        .unwrap();
    let summary = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(
        summary.contains("\"plaintext\""),
        "the audit did not read plaintext: {summary}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ns_per_call(&out.stdout)
}

/// The inspector's throughput on HTTP/1.1 writes (JSON bodies, one in 100 carrying the
/// user's address hashed), MB/s on one core.
fn matching_throughput() -> Value {
    let mut i = Inspector::new(
        Vec::new(),
        [(
            1000u32,
            vec![
                Identifier::email("bench@example.test").unwrap(),
                Identifier::name("Bench Marker").unwrap(),
            ],
        )]
        .into_iter()
        .collect(),
    );
    let body: String = (0..60)
        .map(|n| format!("\"field{n}\":\"value {n} of the form\","))
        .collect();
    let write = |n: usize| {
        let extra = if n.is_multiple_of(100) {
            "\"em\":\"bench@example.test\","
        } else {
            ""
        };
        let b = format!("{{{extra}{body}\"end\":1}}");
        format!("POST /collect?n={n} HTTP/1.1\r\nHost: sales.example.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len())
    };
    let writes: Vec<String> = (0..2_000).map(write).collect();
    let header = EventHeader {
        kind: EventKind::Plaintext as u32,
        tgid: 42,
        tid: 42,
        uid: 1000,
        ts_ns: 1,
        cgroup_id: 0,
    };
    let mut bytes = 0u64;
    let start = Instant::now();
    for round in 0..20u64 {
        for (n, w) in writes.iter().enumerate() {
            for (c, chunk) in w.as_bytes().chunks(PLAIN_CHUNK).enumerate() {
                i.feed(&PlainRecord {
                    header,
                    lib: TlsLib::OpenSsl,
                    conn: round * 10_000 + (n as u64 % 16),
                    total: w.len() as u64,
                    offset: (c * PLAIN_CHUNK) as u32,
                    readable: true,
                    data: chunk.to_vec(),
                });
                bytes += chunk.len() as u64;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    json!({
        "bytes": bytes,
        "requests": i.stats.requests,
        "mb_per_s_one_core": (bytes as f64 / 1e6 / secs * 10.0).round() / 10.0,
        "rows_found": i.leaks().len(),
    })
}

fn main() {
    if !outside::should_run("the plaintext benchmarks") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("bw-bench-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = cert(&dir);
    let mut per_size = Vec::new();
    for size in SIZES {
        let argv = client(size, &key, &cert);
        let base = median((0..RUNS).map(|_| off(&argv)).collect());
        let read = median((0..RUNS).map(|_| watched(&argv)).collect());
        let other = median(
            (0..RUNS)
                .map(|_| beside_an_audit(&argv, &["--email", "bench@example.test"]))
                .collect(),
        );
        let added = read - base;
        eprintln!(
            "plaintext: {size} B writes: {base:.0} ns alone, {read:.0} ns watched (+{added:.0} ns), {other:.0} ns unwatched while another process is read"
        );
        per_size.push(json!({
            "write_bytes": size,
            "ns_per_write_alone": base.round(),
            "ns_per_write_watched": read.round(),
            "added_ns_per_write": added.round(),
            "added_ns_per_kib": (added / (size as f64 / 1024.0)).round(),
            "ns_per_write_unwatched_while_another_is_read": other.round(),
            "unwatched_ratio": (other / base * 1000.0).round() / 1000.0,
        }));
    }
    let matching = matching_throughput();
    eprintln!("plaintext: matching {matching}");
    std::fs::remove_dir_all(&dir).ok();
    let out = json!({
        "method": "a Python client (OpenSSL SSL_write_ex) writing 20,000 records of each size to a TLS server thread on loopback; median of 3 runs per mode; 'watched' runs under `brokerwatch audit --email ... -- CLIENT`, 'unwatched' runs beside `brokerwatch audit --email ... -- sleep 600`",
        "writes": per_size,
        "matching": matching,
    });
    let path =
        std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/plaintext.json".into());
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
}
