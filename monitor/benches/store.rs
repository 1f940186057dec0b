//! Store benchmarks (run by `cargo xtask bench`): how fast the writer takes a million
//! connection rows, the file's size per million rows, opening a full store, a user's
//! history query over 100,000 alerts, and a retention trim of half a million rows. Output
//! JSON at `$BW_BENCH_OUT` (default bench-results/store.json).

use std::{
    path::PathBuf,
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

fn finding(i: u64) -> Finding {
    Finding {
        pid: 1000 + (i % 5000) as u32,
        comm: "zoom".into(),
        app: Some(["Zoom", "Teams", "Slack", "Webex"][(i % 4) as usize].into()),
        app_id: Some(["zoom", "teams", "slack", "webex"][(i % 4) as usize].into()),
        uid: 1000 + (i % 4) as u32,
        dst_ip: std::net::Ipv4Addr::new(
            10,
            (i % 200) as u8,
            ((i / 200) % 250) as u8,
            (i % 250) as u8,
        )
        .into(),
        dst_port: 443,
        domain: Some(format!("host{}.vendor{}.example", i % 1000, i % 37)),
        domain_source: Some(brokerwatch::naming::NameSource::Sni),
        company: i.is_multiple_of(10).then(|| "Bench Broker".into()),
        category: i.is_multiple_of(10).then(|| "data-broker".into()),
        flagged: i.is_multiple_of(10),
        count: 1 + i % 7,
        exe: Some("/opt/zoom/zoom".into()),
        cmdline: Some("/opt/zoom/zoom --url=zoommtg://example".into()),
        ..Finding::default()
    }
}

fn wait_written(s: &Store) -> Duration {
    let t = Instant::now();
    while s.status().pending > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("bw-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let now = now_ms();
    let rows = 1_000_000u64;
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    let t0 = Instant::now();
    let mut handover = Duration::ZERO;
    for i in 0..rows {
        let row = ConnRow {
            key: format!("bench/{i}"),
            first_ms: now - (rows - i),
            last_ms: now - (rows - i),
            finding: finding(i),
        };
        let t = Instant::now();
        s.record_connection(row);
        handover += t.elapsed();
        // Hand over as fast as the writer takes them (the channel is bounded; beyond it
        // rows would be counted as dropped, which this benchmark must not do).
        if i.is_multiple_of(1024) {
            while s.status().pending > 20_000 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    wait_written(&s);
    let write_s = t0.elapsed().as_secs_f64();
    let st = s.status();
    assert_eq!(st.dropped, 0, "{st:?}");
    for i in 0..100_000u64 {
        s.record_alert(Arc::new(Alert {
            finding: finding(i),
            ts_ms: now - 100_000 + i,
            connect_boot_ns: 0,
            decided_boot_ns: 0,
        }));
        if i.is_multiple_of(1024) {
            while s.status().pending > 20_000 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    wait_written(&s);
    s.close();
    let path = dir.join(FILE_NAME);
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let bytes = size(&path) + size(&path.with_extension("db-wal"));
    assert_eq!(store::count_rows(&path, Table::Connections).unwrap(), rows);

    // Opening a full store (what a restart costs the daemon: nothing is read).
    let t = Instant::now();
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    s.record_alert(Arc::new(Alert {
        finding: finding(1),
        ts_ms: now,
        connect_boot_ns: 0,
        decided_boot_ns: 0,
    }));
    let first_write_ms = wait_written(&s).as_secs_f64() * 1e3;
    s.close();

    // One user's history (a quarter of the 100,000 alerts), and an admin's (all).
    let t = Instant::now();
    let mine = store::read_alerts(&path, 0, Some(1000)).unwrap().len();
    let user_query_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let all = store::read_alerts(&path, 0, None).unwrap().len();
    let admin_query_ms = t.elapsed().as_secs_f64() * 1e3;

    // `brokerwatch report --since 7d --app zoom` over the million rows (a quarter are
    // Zoom's), and for every app.
    let week = now.saturating_sub(7 * 24 * 3600 * 1000);
    let t = Instant::now();
    let r = store::read_report(&path, week, None, &["zoom".to_owned()]).unwrap();
    let report_app_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(r.apps.len(), 1);
    let t = Instant::now();
    let r = store::read_report(&path, week, None, &[]).unwrap();
    let report_all_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(r.apps.len(), 4);

    // Retention: keep the newest half.
    let t = Instant::now();
    let mut s = Store::open(
        &dir,
        Retention {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_rows: rows / 2,
        },
    )
    .unwrap();
    s.close();
    let trim_s = t.elapsed().as_secs_f64();
    let left = store::count_rows(&path, Table::Connections).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    let mib = bytes as f64 / 1048576.0;
    println!(
        "store: 1,000,000 connection rows written in {write_s:.2} s ({:.0} rows/s); handing them over took {:.0} ns each on the caller's thread",
        rows as f64 / write_s,
        handover.as_nanos() as f64 / rows as f64
    );
    println!("store size: {mib:.0} MiB for 1,000,000 connection rows + 100,000 alerts");
    println!(
        "opening the full store: {open_ms:.1} ms; first write after it {first_write_ms:.1} ms"
    );
    println!("history query: one user's {mine} alerts {user_query_ms:.0} ms; all {all} alerts {admin_query_ms:.0} ms");
    println!(
        "retention trim of 500,000 rows (on the writer's thread): {trim_s:.2} s ({left} rows left)"
    );
    let out = json!({
        "rows": rows,
        "write_s": write_s,
        "rows_per_s": rows as f64 / write_s,
        "handover_ns_per_row": handover.as_nanos() as f64 / rows as f64,
        "size_mib_per_million_rows_with_100k_alerts": mib,
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
