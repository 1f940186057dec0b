use std::os::unix::fs::MetadataExt as _;

use super::*;

pub(super) fn alert(ts_ms: u64, pid: u32, uid: u32) -> Alert {
    Alert {
        finding: Finding {
            pid,
            uid,
            flagged: true,
            ..Finding::default()
        },
        ts_ms,
        connect_boot_ns: 0,
        decided_boot_ns: 0,
    }
}

fn conn(key: &str, last_ms: u64, count: u64) -> ConnRow {
    ConnRow {
        key: key.into(),
        first_ms: last_ms,
        last_ms,
        finding: Finding {
            domain: Some(format!("{key}.example")),
            count,
            ..Finding::default()
        },
    }
}

pub(super) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bw-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn store_keeps_alerts_and_connection_updates_across_reopen_and_trims_by_age_and_size() {
    let dir = scratch("reopen");
    let now = now_ms();
    {
        let mut s = Store::open(&dir, Retention::default()).unwrap();
        s.record_alert(Arc::new(alert(now - 10_000, 1, 1000)));
        s.record_alert(Arc::new(alert(now, 2, 1001)));
        s.record_alert(Arc::new(alert(now - 40 * 24 * 3600 * 1000, 3, 1000)));
        s.record_connection(conn("a", now, 1));
        s.record_connection(conn("a", now, 5));
        s.record_connection(conn("b", now, 1));
        s.forget_connection("b".into());
        s.close();
        let st = s.status();
        assert_eq!((st.alerts_written, st.connections_written), (3, 3));
        assert_eq!((st.pending, st.dropped, st.error), (0, 0, None));
    }
    let path = dir.join(FILE_NAME);
    assert_eq!(read_alerts(&path, 0, Some(1001)).unwrap().len(), 1);
    let rows = read_connections(&path, 0).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].finding.count, 5,
        "the update replaced the first write"
    );
    let mut s = Store::open(
        &dir,
        Retention {
            max_age: Duration::from_secs(24 * 3600),
            max_rows: 1,
            ..Retention::default()
        },
    )
    .unwrap();
    s.close();
    let all = read_alerts(&path, 0, None).unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].finding.pid, 2);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn store_sets_a_corrupt_file_aside_and_starts_a_new_one() {
    let dir = scratch("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(FILE_NAME), vec![0x5a; 64 * 1024]).unwrap();
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    s.record_alert(Arc::new(alert(now_ms(), 7, 0)));
    wait_for("the alert written to a new file", || {
        s.status().alerts_written == 1
    });
    s.close();
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the broken file is kept");
    assert_eq!(
        std::fs::read(aside[0].path()).unwrap(),
        vec![0x5a; 64 * 1024]
    );
    assert_eq!(read_alerts(&dir.join(FILE_NAME), 0, None).unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn store_imports_the_json_lines_history_of_earlier_versions_once() {
    let dir = scratch("import");
    std::fs::create_dir_all(&dir).unwrap();
    let now = now_ms();
    let text = format!(
        "{}not json\n{}",
        crate::protocol::encode(&alert(now, 1, 0)),
        crate::protocol::encode(&alert(now, 2, 0))
    );
    std::fs::write(dir.join("history.jsonl"), text).unwrap();
    for _ in 0..2 {
        Store::open(&dir, Retention::default()).unwrap().close();
    }
    let got = read_alerts(&dir.join(FILE_NAME), 0, None).unwrap();
    assert_eq!(
        got.iter().map(|a| a.finding.pid).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(dir.join("history.jsonl.imported").exists());
    std::fs::remove_dir_all(&dir).ok();
}

// A 20,000-line old history held the first alerts of a new daemon until all of it was
// imported (tens of seconds under load): it is imported a chunk at a time, after what waits.
#[test]
fn store_a_long_old_history_is_imported_in_chunks_behind_new_alerts_and_once() {
    let dir = scratch("import-long");
    std::fs::create_dir_all(&dir).unwrap();
    let now = now_ms();
    let old = 5 * super::import::IMPORT_CHUNK as u32 + 7;
    let text: String = (0..old)
        .map(|i| crate::protocol::encode(&alert(now - 1000, 10_000 + i, 0)))
        .collect();
    std::fs::write(dir.join("history.jsonl"), text).unwrap();
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    s.record_alert(Arc::new(alert(now, 1, 0)));
    wait_for("the new alert", || s.status().alerts_written >= 1);
    let path = dir.join(FILE_NAME);
    // The new alert is stored while the old history is still being imported or just done.
    let first = read_alerts(&path, 0, None).unwrap();
    assert!(first.iter().any(|a| a.finding.pid == 1));
    s.close();
    // Closing finishes the import; a second start imports nothing again.
    Store::open(&dir, Retention::default()).unwrap().close();
    let got = read_alerts(&path, 0, None).unwrap();
    assert_eq!(got.len(), old as usize + 1);
    assert!(dir.join("history.jsonl.imported").exists());
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 16, item 5: trimming rewrote the whole history on the daemon's thread. Handing rows
// to the store never waits for the disk, even while the file is locked by someone else.
#[test]
fn store_handing_over_rows_never_waits_for_a_locked_file_and_nothing_is_lost() {
    let dir = scratch("locked");
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    s.record_alert(Arc::new(alert(now_ms(), 0, 0)));
    wait_for("the first write", || s.status().alerts_written == 1);
    let path = dir.join(FILE_NAME);
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for i in 0..5_000 {
        s.record_alert(Arc::new(alert(now_ms(), i, 0)));
    }
    // All handed over while the writer waits on the lock.
    let st = s.status();
    assert_eq!(st.pending + st.alerts_written - 1, 5_000, "{st:?}");
    wait_for("the lock reported", || s.status().error.is_some());
    assert!(
        s.status().error.unwrap().contains("locked"),
        "{:?}",
        s.status()
    );
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    wait_for("the waiting rows written", || s.status().pending == 0);
    s.close();
    let st = s.status();
    assert_eq!((st.alerts_written, st.dropped, st.error), (5_001, 0, None));
    assert_eq!(read_alerts(&path, 0, None).unwrap().len(), 5_001);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn store_refuses_a_newer_schema_and_says_so() {
    let dir = scratch("newer");
    std::fs::create_dir_all(&dir).unwrap();
    let db = rusqlite::Connection::open(dir.join(FILE_NAME)).unwrap();
    db.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(db);
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    s.record_alert(Arc::new(alert(now_ms(), 0, 0)));
    wait_for("the error", || s.status().error.is_some());
    assert!(s.status().error.unwrap().contains("newer brokerwatch"));
    s.close();
    assert_eq!(
        s.status().pending,
        1,
        "the alert is still waiting, not lost"
    );
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 22, item 5: one user's flood of connection rows pushed every other user's history
// out of the store (newest 5 M rows of everyone) and grew it without a per-user bound.
#[test]
fn store_quota_bounds_each_uid_and_keeps_other_users_rows() {
    let dir = scratch("quota");
    let now = now_ms();
    let retention = Retention {
        rows_per_uid: 100,
        alerts_per_uid: 10,
        ..Retention::default()
    };
    let mut s = Store::open(&dir, retention).unwrap();
    let row = |key: String, uid: u32, count: u64| {
        let mut r = conn(&key, now, count);
        r.finding.uid = uid;
        r
    };
    // The victim's rows first, then a flood from another uid, then the victim again.
    for i in 0..20 {
        s.record_connection(row(format!("victim-{i}"), 1000, 1));
    }
    for i in 0..1_000 {
        s.record_connection(row(format!("flood-{i}"), 1001, 1));
        if i < 50 {
            s.record_alert(Arc::new(alert(now, i, 1001)));
        }
    }
    for i in 20..30 {
        s.record_connection(row(format!("victim-{i}"), 1000, 1));
    }
    // A row of the flooding uid that is already stored is still updated.
    s.record_connection(row("flood-0".into(), 1001, 9));
    s.record_alert(Arc::new(alert(now, 1, 1000)));
    s.close();
    let st = s.status();
    assert_eq!(st.quota_refused, 900 + 40, "{st:?}");
    assert_eq!(st.over_quota.len(), 1, "{st:?}");
    assert_eq!(
        (st.over_quota[0].uid, st.over_quota[0].refused),
        (1001, 940)
    );
    let path = dir.join(FILE_NAME);
    let rows = read_connections(&path, 0).unwrap();
    let of = |uid: u32| rows.iter().filter(|r| r.finding.uid == uid).count();
    assert_eq!(of(1000), 30, "every victim row is kept");
    assert_eq!(of(1001), 100, "the flood is bounded");
    assert!(rows
        .iter()
        .any(|r| r.finding.uid == 1001 && r.finding.count == 9));
    assert_eq!(read_alerts(&path, 0, Some(1000)).unwrap().len(), 1);
    assert_eq!(read_alerts(&path, 0, Some(1001)).unwrap().len(), 10);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn store_trim_cuts_a_uid_over_a_lowered_quota_to_its_newest_rows() {
    let dir = scratch("quota-trim");
    let now = now_ms();
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    for i in 0..50 {
        let mut r = conn(&format!("k{i}"), now, 1);
        r.finding.uid = 1002;
        s.record_connection(r);
    }
    s.close();
    let lowered = Retention {
        rows_per_uid: 20,
        ..Retention::default()
    };
    Store::open(&dir, lowered).unwrap().close();
    let rows = read_connections(&dir.join(FILE_NAME), 0).unwrap();
    assert_eq!(rows.len(), 20);
    assert!(rows
        .iter()
        .any(|r| r.finding.domain.as_deref() == Some("k49.example")));
    let _ = std::fs::remove_dir_all(&dir);
}

// Issue 22, item 5: a flood dropped queued rows whoever they belonged to (1.1 M in 90 s).
// A uid's connection rows may take a share of what waits; another user's rows still get
// through while the disk is busy.
#[test]
fn store_a_floods_rows_wait_in_its_own_share_and_other_users_rows_get_through() {
    let dir = scratch("share");
    let retention = Retention {
        rows_per_uid: 100,
        ..Retention::default()
    };
    let mut s = Store::open(&dir, retention).unwrap();
    s.record_alert(Arc::new(alert(now_ms(), 0, 0)));
    wait_for("the first write", || s.status().alerts_written == 1);
    let path = dir.join(FILE_NAME);
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let row = |key: String, uid: u32| {
        let mut r = conn(&key, now_ms(), 1);
        r.finding.uid = uid;
        r
    };
    let flood = 30_000;
    for i in 0..flood {
        s.record_connection(row(format!("flood-{i}"), 1001));
    }
    for i in 0..10 {
        s.record_connection(row(format!("victim-{i}"), 1000));
    }
    let dropped = s.status().dropped;
    assert_eq!(dropped, (flood - SHARE_PER_UID) as u64, "{:?}", s.status());
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    wait_for("the waiting rows written", || s.status().pending == 0);
    s.close();
    let rows = read_connections(&path, 0).unwrap();
    let of = |uid: u32| rows.iter().filter(|r| r.finding.uid == uid).count();
    assert_eq!(of(1000), 10, "every victim row got through");
    assert_eq!(of(1001), 100, "the flood is bounded by its quota");
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 23: a report's severity per company was the alphabetical maximum of its rows'
// ("medium" > "low" > "info" > "high"), so a company with a high and a medium row read medium.
#[test]
fn store_report_takes_the_most_severe_row_not_the_alphabetical_maximum() {
    use crate::policy::Severity;
    let dir = scratch("severity");
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    let now = now_ms();
    for (key, severity) in [
        ("a", Severity::Medium),
        ("b", Severity::High),
        ("c", Severity::Low),
    ] {
        let mut row = conn(key, now, 1);
        row.finding.app = Some("Zoom".into());
        row.finding.company = Some("Broker".into());
        row.finding.domain = Some("broker.example".into());
        row.finding.severity = Some(severity);
        row.finding.flagged = true;
        s.record_connection(row);
    }
    wait_for("three rows", || s.status().connections_written >= 3);
    s.close();
    let report = read_report(&dir.join(FILE_NAME), 0, None, &[]).unwrap();
    let company = &report.apps[0].companies[0];
    assert_eq!(company.company, "Broker");
    assert_eq!(company.severity, Some(Severity::High), "{company:?}");
    std::fs::remove_dir_all(&dir).ok();
}

pub(super) fn leak(
    uid: u32,
    pid: u32,
    company: Option<&str>,
    first_party: bool,
    requests: u64,
) -> crate::leak::Leak {
    use crate::inspect::{Form, IdKind, Place};
    crate::leak::Leak {
        first_ms: now_ms() - 1_000,
        last_ms: now_ms(),
        pid,
        comm: "zoom".into(),
        exe: None,
        app: Some("Zoom".into()),
        app_id: Some("zoom".into()),
        uid,
        user: None,
        host: Some("sales.linkedin.test".into()),
        named_by: "host_header".into(),
        library: "OpenSSL".into(),
        identifier: Some(IdKind::Email),
        form: Some(Form::Sha256),
        place: Place::Url,
        other_addresses: 0,
        requests,
        company: company.map(str::to_owned),
        category: company.map(|_| crate::policy::Category::new("data-broker")),
        severity: None,
        destination_id: None,
        first_party,
        flagged: company.is_some() && !first_party,
        summary: "Zoom sent your e-mail address (SHA-256) in the URL to LinkedIn".into(),
    }
}

#[test]
fn store_keeps_what_apps_sent_per_user_and_the_report_says_what_each_company_received() {
    let dir = scratch("sent");
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    s.record_sent("a".into(), leak(1000, 7, Some("LinkedIn"), false, 1));
    s.record_sent("a".into(), leak(1000, 7, Some("LinkedIn"), false, 3));
    s.record_sent("b".into(), leak(1001, 8, Some("Meta"), false, 1));
    s.record_sent("c".into(), leak(1000, 7, None, true, 2));
    s.close();
    assert_eq!(s.status().sent_written, 4);
    let path = dir.join(FILE_NAME);
    let own = read_sent(&path, 0, Some(1000)).unwrap();
    assert_eq!(own.len(), 2, "{own:?}");
    assert_eq!(own[0].requests, 3, "the update replaced the first write");
    assert_eq!(read_sent(&path, 0, None).unwrap().len(), 3);
    let r = read_report(&path, 0, Some(1000), &[]).unwrap();
    assert_eq!(r.apps.len(), 1, "{r:?}");
    let zoom = &r.apps[0];
    assert_eq!(zoom.app, "Zoom");
    assert_eq!(
        zoom.companies.len(),
        1,
        "another user's Meta row is not theirs"
    );
    let linkedin = &zoom.companies[0];
    assert_eq!(linkedin.company, "LinkedIn");
    assert!(linkedin.flagged);
    assert_eq!(linkedin.received.len(), 1);
    assert_eq!(linkedin.received[0].what, "your e-mail address (SHA-256)");
    assert_eq!(linkedin.received[0].requests, 3);
    assert_eq!(
        zoom.sent_elsewhere.len(),
        1,
        "a first party is not a company that received it"
    );
    let mut text = Vec::new();
    crate::report::text::write(&mut text, &r, false).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(
            "received: your e-mail address (SHA-256) in the URL, 3 requests (sales.linkedin.test)"
        ),
        "{text}"
    );
}

#[test]
fn store_what_was_sent_is_bounded_per_uid_and_updates_go_on() {
    let dir = scratch("sent-quota");
    let now = now_ms();
    {
        let mut s = Store::open(&dir, Retention::default()).unwrap();
        for i in 0..sql::SENT_PER_UID {
            let mut l = leak(1000, 7, Some("LinkedIn"), false, 1);
            l.first_ms = now - 1_000 - i;
            s.record_sent(format!("k{i}"), l);
        }
        s.close();
        assert_eq!(s.status().sent_written, sql::SENT_PER_UID);
    }
    // Reopened: the bound is counted from what the file holds.
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    s.record_sent("one more".into(), leak(1000, 7, Some("LinkedIn"), false, 1));
    s.record_sent("k0".into(), leak(1000, 7, Some("LinkedIn"), false, 9));
    s.record_sent("other".into(), leak(1001, 8, None, false, 1));
    s.close();
    let st = s.status();
    assert_eq!(st.sent_written, 2, "the update and the other user's row");
    assert_eq!(st.quota_refused, 1, "the new row past the bound, counted");
    let path = dir.join(FILE_NAME);
    assert_eq!(
        count_rows(&path, Table::Sent).unwrap(),
        sql::SENT_PER_UID + 1
    );
    assert!(read_sent(&path, 0, Some(1000))
        .unwrap()
        .iter()
        .any(|l| l.requests == 9));
}

#[test]
fn store_report_new_lists_only_destinations_first_seen_in_the_window_not_in_the_baseline() {
    let dir = scratch("new");
    let day = 24 * 3600 * 1000;
    let now = now_ms();
    let row = |key: &str, domain: &str, first: u64, last: u64| ConnRow {
        key: key.into(),
        first_ms: first,
        last_ms: last,
        finding: Finding {
            domain: Some(domain.into()),
            app: Some("Zoom".into()),
            count: 1,
            ..Finding::default()
        },
    };
    let mut s = Store::open(&dir, Retention::default()).unwrap();
    // Known: first seen in the baseline, still contacted in the window.
    s.record_connection(row("a", "known.example", now - 10 * day, now - 3_600_000));
    // New: first seen in the window.
    s.record_connection(row(
        "b",
        "new.example",
        now - 2 * 3_600_000,
        now - 3_600_000,
    ));
    // Seen only before the baseline began, then again in the window: new.
    s.record_connection(row("c1", "again.example", now - 40 * day, now - 40 * day));
    s.record_connection(row("c2", "again.example", now - 3_600_000, now - 3_600_000));
    // Seen in the baseline only: not in the report at all.
    s.record_connection(row("d", "gone.example", now - 10 * day, now - 10 * day));
    s.close();
    let path = dir.join(FILE_NAME);
    let since = now - day;
    let r = read_new(&path, (since - 30 * day, since), None, &[]).unwrap();
    assert_eq!(r.new_since_ms, Some(since));
    let dests: Vec<&str> = r
        .apps
        .iter()
        .flat_map(|a| a.other.iter().map(|d| d.destination.as_str()))
        .collect();
    let mut sorted = dests.clone();
    sorted.sort();
    assert_eq!(sorted, ["again.example", "new.example"], "{r:#?}");
    let mut text = Vec::new();
    crate::report::text::write(&mut text, &r, false).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with("New since "), "{text}");
    // Nothing new in a window where nothing began.
    let quiet = read_new(&path, (now - 31 * day, now - 30 * 60_000), None, &[]).unwrap();
    assert!(quiet.apps.is_empty(), "{quiet:#?}");
    let mut text = Vec::new();
    crate::report::text::write(&mut text, &quiet, false).unwrap();
    assert!(String::from_utf8(text).unwrap().starts_with("Nothing new"));
}
