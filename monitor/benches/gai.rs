//! What the naming probes on glibc's `getaddrinfo()` cost (issue 24, item 4), measured from
//! a separate process as users would see it: a Python loop resolving `localhost` (the hosts
//! file: no packet leaves) 20,000 times, alone, as the command of `brokerwatch audit` (its
//! calls read and named), and beside an audit of another process (the probes are on glibc
//! for every process; an unwatched one leaves at the first instruction of the program).
//!
//! Output JSON at `$BW_BENCH_OUT` (default bench-results/gai.json).

use std::process::Command;

use serde_json::json;

#[path = "outside/mod.rs"]
mod outside;
use outside::{beside_an_audit, median, ns_per_call, off, BIN};
const CALLS: usize = 20_000;
const RUNS: usize = 5;

const LOOP: &str = "import socket, sys, time, json
n = int(sys.argv[1])
for _ in range(500):
    socket.getaddrinfo('localhost', 80, type=socket.SOCK_STREAM)
t = time.perf_counter_ns()
for _ in range(n):
    socket.getaddrinfo('localhost', 80, type=socket.SOCK_STREAM)
print(json.dumps({'calls': n, 'ns_per_call': (time.perf_counter_ns() - t) / n}))
";

fn client() -> Vec<String> {
    ["python3", "-c", LOOP, &CALLS.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The loop as the audited command: every call read and its names kept.
fn watched(argv: &[String]) -> f64 {
    let report = std::env::temp_dir().join(format!("bw-bench-gai-{}.json", std::process::id()));
    let out = Command::new(BIN)
        .args(["audit", "--json", "--quiet", "-o"])
        .arg(&report)
        .arg("--")
        .args(argv)
        .output()
        .unwrap();
    let summary = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    assert!(
        summary.contains("uretprobe getaddrinfo"),
        "the audit did not probe getaddrinfo: {summary}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ns_per_call(&out.stdout)
}

fn main() {
    if !outside::should_run("the getaddrinfo benchmark and its audits") {
        return;
    }
    let argv = client();
    // Interleaved, so that a slow moment of the machine falls on every mode alike.
    let (mut a, mut w, mut u) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        a.push(off(&argv));
        w.push(watched(&argv));
        u.push(beside_an_audit(&argv, &[]));
    }
    let (alone, read, other) = (median(a), median(w), median(u));
    eprintln!(
        "gai: {alone:.0} ns a call alone, {read:.0} ns watched (+{:.0} ns), {other:.0} ns unwatched beside an audit (+{:.0} ns)",
        read - alone,
        other - alone
    );
    let out = json!({
        "method": "a Python loop calling getaddrinfo('localhost') 20,000 times (hosts file, no packet), median of 5 interleaved runs per mode; 'watched' under `brokerwatch audit -- LOOP`, 'unwatched' beside `brokerwatch audit -- sleep 600`",
        "ns_per_call_alone": alone.round(),
        "ns_per_call_watched": read.round(),
        "added_ns_watched": (read - alone).round(),
        "ns_per_call_unwatched_beside_an_audit": other.round(),
        "added_ns_unwatched": (other - alone).round(),
        "watched_ratio": (read / alone * 1000.0).round() / 1000.0,
        "unwatched_ratio": (other / alone * 1000.0).round() / 1000.0,
    });
    let path = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/gai.json".into());
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
}
