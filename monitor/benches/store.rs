//! Store benchmarks (run by `cargo xtask bench`): how fast the writer takes a million
//! connection rows, the file's size per million rows, opening a full store, a user's
//! history query over 100,000 alerts, and a retention trim of half a million rows. Output
//! JSON at `$BW_BENCH_OUT` (default bench-results/store.json).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use brokerwatch::{
    daemon::store::{self, ConnRow, Retention, Store, Table, FILE_NAME},
    finding::Finding,
    host::clock::now_ms,
    protocol::Alert,
};
use serde_json::json;

/// Row `i` of a month of four chatty apps: 2,000 destinations (names, addresses, verdicts)
/// that repeat, as a desktop's do, from processes that come and go.
fn finding(i: u64) -> Finding {
    let d = i % 2000;
    Finding {
        pid: 1000 + ((i / 5000) % 200) as u32,
        ppid: Some(900),
        comm: "zoom".into(),
        app: Some(["Zoom", "Teams", "Slack", "Webex"][(i % 4) as usize].into()),
        app_id: Some(["zoom", "teams", "slack", "webex"][(i % 4) as usize].into()),
        uid: 1000 + (i % 4) as u32,
        dst_ip: std::net::Ipv4Addr::new(10, (d % 200) as u8, (d / 200) as u8, 7).into(),
        dst_port: 443,
        domain: Some(format!("host{d}.vendor{}.example", d % 37)),
        domain_source: Some(brokerwatch::naming::NameSource::Sni),
        dns_chain: vec![format!("host{d}.vendor{}.example", d % 37)],
        company: d.is_multiple_of(10).then(|| "Bench Broker".into()),
        category: d.is_multiple_of(10).then(|| "data-broker".into()),
        flagged: d.is_multiple_of(10),
        sent: true,
        count: 1 + i % 7,
        socket_cookie: 1_000_000 + i,
        ancestry: "900>1".into(),
        exe: Some("/opt/zoom/zoom".into()),
        cmdline: Some("/opt/zoom/zoom --url=zoommtg://example".into()),
        ..Finding::default()
    }
}

/// Rows in the full store.
const ROWS: u64 = 1_000_000;

fn wait_written(s: &Store) -> Duration {
    let t = Instant::now();
    while s.status().pending > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed()
}

/// Hands over as fast as the writer takes them (the channel is bounded; beyond it rows
/// would be counted as dropped, which this benchmark must not do).
fn keep_pace(s: &Store, i: u64) {
    if i.is_multiple_of(1024) {
        while s.status().pending > 20_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The store filled: how long the million connection rows took, and its size on disk.
struct Filled {
    /// From the first row handed over to the last one written.
    write_s: f64,
    /// Time spent handing the rows over, on the caller's thread.
    handover: Duration,
    /// The database and its write-ahead log, with the 100,000 alerts too.
    bytes: u64,
    /// Bytes in use per connection row (every page of the file, the details and indexes
    /// included, over the rows), before the alerts were added.
    bytes_per_row: f64,
}

/// Bytes of the store's pages in use (its write-ahead log checkpointed into it).
fn used_bytes(path: &Path) -> u64 {
    let db = rusqlite::Connection::open(path).unwrap();
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let pragma = |name: &str| -> u64 {
        db.pragma_query_value(None, name, |r| r.get::<_, i64>(0))
            .unwrap() as u64
    };
    (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")
}

/// Writes [`ROWS`] connection rows to a fresh store in `dir` (timed), then 100,000 alerts
/// (not timed), and measures the file.
fn fill(dir: &Path, now: u64) -> Filled {
    let mut s = Store::open(dir, Retention::default()).unwrap();
    let t0 = Instant::now();
    let mut handover = Duration::ZERO;
    for i in 0..ROWS {
        let row = ConnRow {
            key: format!("bench/{i}"),
            first_ms: now - (ROWS - i),
            last_ms: now - (ROWS - i),
            finding: finding(i),
        };
        let t = Instant::now();
        s.record_connection(row);
        handover += t.elapsed();
        keep_pace(&s, i);
    }
    wait_written(&s);
    let write_s = t0.elapsed().as_secs_f64();
    let st = s.status();
    assert_eq!(st.dropped, 0, "{st:?}");
    s.close();
    let bytes_per_row = used_bytes(&dir.join(FILE_NAME)) as f64 / ROWS as f64;
    let mut s = Store::open(dir, Retention::default()).unwrap();
    for i in 0..100_000u64 {
        s.record_alert(Arc::new(Alert {
            finding: finding(i),
            ts_ms: now - 100_000 + i,
            connect_boot_ns: 0,
            decided_boot_ns: 0,
        }));
        keep_pace(&s, i);
    }
    wait_written(&s);
    s.close();
    let path = dir.join(FILE_NAME);
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let bytes = size(&path) + size(&path.with_extension("db-wal"));
    assert_eq!(store::count_rows(&path, Table::Connections).unwrap(), ROWS);
    Filled {
        write_s,
        handover,
        bytes,
        bytes_per_row,
    }
}

/// What a restart costs the daemon with a full store.
struct Reopened {
    open_ms: f64,
    first_write_ms: f64,
}

/// Opens the full store (nothing is read) and times it and the first write after it.
fn reopen(dir: &Path, now: u64) -> Reopened {
    let t = Instant::now();
    let mut s = Store::open(dir, Retention::default()).unwrap();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    s.record_alert(Arc::new(Alert {
        finding: finding(1),
        ts_ms: now,
        connect_boot_ns: 0,
        decided_boot_ns: 0,
    }));
    let first_write_ms = wait_written(&s).as_secs_f64() * 1e3;
    s.close();
    Reopened {
        open_ms,
        first_write_ms,
    }
}

/// History queries: how many alerts each returned and how long it took.
struct History {
    mine: usize,
    user_query_ms: f64,
    all: usize,
    admin_query_ms: f64,
}

/// One user's history (a quarter of the 100,000 alerts), and an admin's (all).
fn history(path: &Path) -> History {
    let t = Instant::now();
    let mine = store::read_alerts(path, 0, Some(1000)).unwrap().len();
    let user_query_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let all = store::read_alerts(path, 0, None).unwrap().len();
    let admin_query_ms = t.elapsed().as_secs_f64() * 1e3;
    History {
        mine,
        user_query_ms,
        all,
        admin_query_ms,
    }
}

/// Report queries over the last seven days.
struct Reports {
    one_app_ms: f64,
    all_apps_ms: f64,
}

/// `brokerwatch report --since 7d --app zoom` over the million rows (a quarter are
/// Zoom's), and for every app.
fn reports(path: &Path, now: u64) -> Reports {
    let week = now.saturating_sub(7 * 24 * 3600 * 1000);
    let t = Instant::now();
    let r = store::read_report(path, week, None, &["zoom".to_owned()]).unwrap();
    let one_app_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(r.apps.len(), 1);
    let t = Instant::now();
    let r = store::read_report(path, week, None, &[]).unwrap();
    let all_apps_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(r.apps.len(), 4);
    Reports {
        one_app_ms,
        all_apps_ms,
    }
}

/// A retention trim: how long it took and the rows left.
struct Trimmed {
    trim_s: f64,
    left: u64,
}

/// Retention: opens the store keeping the newest half, and times it until closed.
fn trim(dir: &Path) -> Trimmed {
    let t = Instant::now();
    let mut s = Store::open(
        dir,
        Retention {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_rows: ROWS / 2,
            ..Retention::default()
        },
    )
    .unwrap();
    s.close();
    let trim_s = t.elapsed().as_secs_f64();
    let left = store::count_rows(&dir.join(FILE_NAME), Table::Connections).unwrap();
    Trimmed { trim_s, left }
}

/// Everything measured.
struct Results {
    filled: Filled,
    reopened: Reopened,
    history: History,
    reports: Reports,
    trimmed: Trimmed,
}

/// Prints the results and writes them as JSON to `$BW_BENCH_OUT`.
fn report(r: &Results) {
    let Filled {
        write_s,
        handover,
        bytes,
        bytes_per_row,
    } = r.filled;
    let Reopened {
        open_ms,
        first_write_ms,
    } = r.reopened;
    let History {
        mine,
        user_query_ms,
        all,
        admin_query_ms,
    } = r.history;
    let (report_app_ms, report_all_ms) = (r.reports.one_app_ms, r.reports.all_apps_ms);
    let Trimmed { trim_s, left } = r.trimmed;
    let mib = bytes as f64 / 1048576.0;
    println!(
        "store: 1,000,000 connection rows written in {write_s:.2} s ({:.0} rows/s); handing them over took {:.0} ns each on the caller's thread",
        ROWS as f64 / write_s,
        handover.as_nanos() as f64 / ROWS as f64
    );
    println!("store size: {bytes_per_row:.0} bytes per connection row (target <= 150); {mib:.0} MiB for 1,000,000 connection rows + 100,000 alerts");
    println!(
        "opening the full store: {open_ms:.1} ms; first write after it {first_write_ms:.1} ms"
    );
    println!("history query: one user's {mine} alerts {user_query_ms:.0} ms; all {all} alerts {admin_query_ms:.0} ms");
    println!(
        "retention trim of 500,000 rows (on the writer's thread): {trim_s:.2} s ({left} rows left)"
    );
    let out = json!({
        "rows": ROWS,
        "write_s": write_s,
        "rows_per_s": ROWS as f64 / write_s,
        "handover_ns_per_row": handover.as_nanos() as f64 / ROWS as f64,
        "size_mib_per_million_rows_with_100k_alerts": mib,
        "bytes_per_connection_row": bytes_per_row,
        "bytes_per_connection_row_target": 150,
        "open_full_ms": open_ms,
        "first_write_after_open_ms": first_write_ms,
        "user_history_query_ms": user_query_ms, "user_history_alerts": mine,
        "admin_history_query_ms": admin_query_ms, "admin_history_alerts": all,
        "trim_500k_s": trim_s,
        "report_7d_one_app_ms": report_app_ms,
        "report_7d_all_apps_ms": report_all_ms,
        "report_target_ms": 1000,
    });
    let path = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/store.json".into());
    if let Some(p) = PathBuf::from(&path).parent() {
        let _ = std::fs::create_dir_all(p);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!(
        "report over 1,000,000 stored connections, 7 days: one app {report_app_ms:.0} ms, all four apps {report_all_ms:.0} ms (target for one app < 1 s)"
    );
    println!("wrote {path}");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("bw-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let now = now_ms();
    let filled = fill(&dir, now);
    let reopened = reopen(&dir, now);
    let path = dir.join(FILE_NAME);
    let history = history(&path);
    let reports = reports(&path, now);
    let trimmed = trim(&dir);
    std::fs::remove_dir_all(&dir).ok();
    report(&Results {
        filled,
        reopened,
        history,
        reports,
        trimmed,
    });
}
