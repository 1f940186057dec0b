//! The fleet report's cost (issue 26, item 4), as an IT team would see it: `brokerwatch
//! report --input FILE` run as its own process over 1,000,000 forwarded alert lines from
//! 500 desktops (the shipped rsyslog template's shape), timed from outside, with the
//! process's peak resident memory. Output JSON at `$BW_BENCH_OUT` (default
//! bench-results/fleet.json).

use std::{
    io::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");
const LINES: u64 = 1_000_000;

/// Peak resident memory of the last child that ended (`RUSAGE_CHILDREN`), KiB.
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("bw-bench-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("collector.jsonl");
    let companies = ["LinkedIn", "Meta", "Google", "Acxiom", "Oracle", "Mixpanel"];
    let apps = ["Zoom", "Teams", "Slack", "Webex"];
    let time =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() - Duration::from_secs(600))
            .to_string()
            .replace('Z', "+00:00");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..LINES {
            let company = companies[(i % 6) as usize];
            writeln!(
                w,
                r#"{{"host":"desk-{}","time":"{time}","app":"{}","company":"{company}","category":"data-broker","severity":"high","domain":"api{}.{}.example","destination":"10.0.{}.{}:443","uid":"{}","message":"{} contacted {company}"}}"#,
                i % 500,
                apps[(i % 4) as usize],
                i % 20,
                company.to_lowercase(),
                i % 250,
                (i / 250) % 250,
                1000 + i % 3,
                apps[(i % 4) as usize],
            )
            .unwrap();
        }
    }
    let bytes = std::fs::metadata(&file).unwrap().len();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new(BIN)
            .args(["report", "--since", "1d", "--json", "--input"])
            .arg(&file)
            .output()
            .unwrap();
        let s = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("\"hosts\""), "not a fleet report");
        runs.push(s);
    }
    runs.sort_by(f64::total_cmp);
    let rss = children_max_rss_kib();
    println!(
        "fleet report: {LINES} lines ({:.0} MB) in {:.2} s (median of 3, best {:.2} s), peak RSS {} MiB",
        bytes as f64 / 1e6,
        runs[1],
        runs[0],
        rss / 1024
    );
    let result = json!({
        "lines": LINES,
        "bytes": bytes,
        "hosts": 500,
        "seconds_median": runs[1],
        "seconds_best": runs[0],
        "lines_per_second": LINES as f64 / runs[1],
        "peak_rss_kib": rss,
    });
    let path = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/fleet.json".into());
    if let Some(parent) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
