use super::*;

fn alert(ts_ms: u64, pid: u32, uid: u32) -> Alert {
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

fn scratch(name: &str) -> PathBuf {
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
