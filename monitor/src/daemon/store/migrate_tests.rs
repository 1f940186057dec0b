//! Stores of earlier schemas, written as those versions wrote them, opened by this one.

use std::path::Path;

use super::{
    tests::{alert, leak, scratch},
    *,
};

/// Schema 3's connections table: each row kept its whole finding in `body`.
const V3_CONNECTIONS: &str = "
CREATE TABLE alerts (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, uid INTEGER NOT NULL,
    body TEXT NOT NULL);
CREATE INDEX alerts_ts ON alerts (ts_ms);
CREATE INDEX alerts_uid_ts ON alerts (uid, ts_ms);
CREATE TABLE connections (id INTEGER PRIMARY KEY, key INTEGER NOT NULL UNIQUE,
    first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL, uid INTEGER NOT NULL, app TEXT,
    domain TEXT, company TEXT, flagged INTEGER NOT NULL, count INTEGER NOT NULL,
    body TEXT NOT NULL, app_name TEXT, category TEXT, severity TEXT, source TEXT, dst TEXT,
    proto TEXT, named_by TEXT);
CREATE INDEX connections_last ON connections (last_ms);
CREATE INDEX connections_uid_last ON connections (uid, last_ms);
CREATE INDEX connections_app_last ON connections (app, last_ms);
";

/// A finding with every kind of field set, varied by `i`.
fn rich(i: u64, now: u64) -> Finding {
    Finding {
        first_ms: now - 1000 + i,
        last_ms: now + i,
        pid: 4000 + i as u32,
        ppid: (!i.is_multiple_of(3)).then_some(3999),
        comm: "zoom".into(),
        thread_comm: "zoom.net".into(),
        exe: Some("/opt/zoom/zoom".into()),
        cmdline: Some("/opt/zoom/zoom --url=zoommtg://x".into()),
        app: Some("Zoom".into()),
        app_id: Some("zoom".into()),
        uid: 1000 + (i % 2) as u32,
        user: Some(format!("user{}", i % 2)),
        dst_ip: std::net::Ipv4Addr::new(10, 0, 0, (i % 5) as u8).into(),
        dst_port: if i.is_multiple_of(10) { 53 } else { 443 },
        domain: (!i.is_multiple_of(10)).then(|| format!("h{}.vendor.test", i % 5)),
        domain_source: (!i.is_multiple_of(10)).then_some(crate::naming::NameSource::Sni),
        dns_chain: vec![format!("h{}.vendor.test", i % 5)],
        name_note: i.is_multiple_of(7).then(|| "a note".into()),
        sent: i.is_multiple_of(2),
        company: (i % 5 == 1).then(|| "LinkedIn".into()),
        category: (i % 5 == 1).then(|| "data-broker".into()),
        severity: (i % 5 == 1).then_some(crate::policy::Severity::High),
        flagged: i % 5 == 1,
        blocked: i % 4,
        count: 1 + i,
        socket_cookie: 77_000 + i,
        ancestry: format!("3999>1>{i}"),
        ..Finding::default()
    }
}

/// A store of schema 3 (or 2, without `sent`) written by hand, as those versions wrote it.
fn old_store(path: &Path, version: i64, findings: &[Finding]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(V3_CONNECTIONS).unwrap();
    if version >= 3 {
        db.execute_batch(
            "CREATE TABLE sent (id INTEGER PRIMARY KEY, key INTEGER NOT NULL UNIQUE,
                first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL, uid INTEGER NOT NULL,
                app TEXT, app_name TEXT, company TEXT, flagged INTEGER NOT NULL,
                requests INTEGER NOT NULL, body TEXT NOT NULL);",
        )
        .unwrap();
    }
    for (i, f) in findings.iter().enumerate() {
        db.execute(
            "INSERT INTO connections (key, first_ms, last_ms, uid, app, domain, company, flagged,
                 count, body, app_name, dst, proto)
             VALUES (?1, ?2, ?3, ?4, 'zoom', ?5, ?6, ?7, ?8, ?9, 'Zoom', ?10, 'tcp')",
            rusqlite::params![
                i as i64 * 7919,
                f.first_ms as i64,
                f.last_ms as i64,
                f.uid,
                f.domain,
                f.company,
                f.flagged,
                f.count as i64,
                f.to_compact_json(),
                f.dst_ip.to_string(),
            ],
        )
        .unwrap();
    }
    db.execute(
        "INSERT INTO alerts (ts_ms, uid, body) VALUES (?1, 1000, ?2)",
        rusqlite::params![
            findings[0].last_ms as i64,
            serde_json::to_string(&alert(findings[0].last_ms, 1, 1000)).unwrap()
        ],
    )
    .unwrap();
    db.pragma_update(None, "user_version", version).unwrap();
}

// Issue 23: the compact tables of schema 4; stores of schemas 2 and 3 are migrated in place.
#[test]
fn store_of_schema_3_or_2_is_migrated_in_place_and_keeps_every_row_and_field() {
    let now = now_ms();
    let findings: Vec<Finding> = (0..60).map(|i| rich(i, now)).collect();
    for version in [3, 2] {
        let dir = scratch(&format!("v{version}"));
        let path = dir.join(FILE_NAME);
        old_store(&path, version, &findings);
        let mut s = Store::open(&dir, Retention::default()).unwrap();
        s.record_sent("a".into(), leak(1000, 7, Some("LinkedIn"), false, 1));
        s.close();
        assert_eq!(s.status().error, None);
        let rows = read_connections(&path, 0).unwrap();
        assert_eq!(rows.len(), findings.len(), "schema {version}");
        for (row, f) in rows.iter().zip(&findings) {
            assert_eq!(&row.finding, f, "schema {version}");
            assert_eq!((row.first_ms, row.last_ms), (f.first_ms, f.last_ms));
        }
        assert_eq!(read_alerts(&path, 0, None).unwrap().len(), 1);
        assert_eq!(read_sent(&path, 0, None).unwrap().len(), 1);
        // The report reads the compact tables: every connection, the broker's flagged.
        let r = read_report(&path, 0, None, &[]).unwrap();
        let json = serde_json::to_value(&r).unwrap().to_string();
        assert!(
            json.contains("LinkedIn") && json.contains("DNS queries to 10.0.0.0"),
            "{json}"
        );
        let db = rusqlite::Connection::open(&path).unwrap();
        let v: i64 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let details: i64 = db
            .query_row("SELECT count(*) FROM details", [], |r| r.get(0))
            .unwrap();
        assert!(
            details < findings.len() as i64,
            "what repeats is kept once: {details}"
        );
        let old: i64 = db
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'connections_v3'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
    }
}
