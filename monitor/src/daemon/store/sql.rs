//! The store's tables and the statements that read and write them. Alerts and what was sent
//! keep the whole alert or leak as JSON in `body` beside the columns the queries filter on;
//! connections are in [`super::conns`].

use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _};

use super::StoreError;
use crate::protocol::Alert;

/// Bumped when the tables change; a store written by a newer brokerwatch is refused.
pub const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts_ms);
CREATE INDEX IF NOT EXISTS alerts_uid_ts ON alerts (uid, ts_ms);
CREATE TABLE IF NOT EXISTS sent (
    id INTEGER PRIMARY KEY,
    key INTEGER NOT NULL UNIQUE,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    app TEXT,
    app_name TEXT,
    company TEXT,
    flagged INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_last ON sent (last_ms);
CREATE INDEX IF NOT EXISTS sent_uid_last ON sent (uid, last_ms);
";

/// What-was-sent rows one uid may keep (issue 25; new ones past it are refused and counted).
pub const SENT_PER_UID: u64 = 10_000;

/// Opens (creating) the store for writing: WAL, so that readers never wait for the writer.
/// The alerts' and what-was-sent tables are made here; the connections' are
/// [`super::conns::prepare`]'s; then [`set_version`].
pub fn open_rw(path: &std::path::Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NOFOLLOW
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(path, flags)?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    // The first statement reads the header: a file that is not a database fails here.
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Newer { version });
    }
    db.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    db.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    // The WAL is truncated back to this after checkpoints (a burst must not leave it huge).
    db.pragma_update(None, "journal_size_limit", 64 << 20)?;
    if version == 1 {
        // Version 1 lacked the report's columns; old rows keep them empty.
        db.execute_batch(
            "ALTER TABLE connections ADD COLUMN app_name TEXT;
             ALTER TABLE connections ADD COLUMN category TEXT;
             ALTER TABLE connections ADD COLUMN severity TEXT;
             ALTER TABLE connections ADD COLUMN source TEXT;
             ALTER TABLE connections ADD COLUMN dst TEXT;
             ALTER TABLE connections ADD COLUMN proto TEXT;
             ALTER TABLE connections ADD COLUMN named_by TEXT;",
        )?;
    }
    db.execute_batch(SCHEMA)?;
    Ok(db)
}

/// Marks the store as of this version, once every table is (see [`open_rw`]).
pub fn set_version(db: &Connection) -> Result<(), StoreError> {
    db.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

/// Opens the store for a query (never creates it, never writes).
pub fn open_ro(path: &std::path::Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NOFOLLOW
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(path, flags)?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(db)
}

/// A row's key as stored: the first 8 bytes of its SHA-256 (keys are long texts; a
/// collision among a few million rows has odds below 1 in 10^6).
pub(super) fn key_hash(key: &str) -> i64 {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(key.as_bytes());
    i64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

pub fn insert_alert(db: &Connection, a: &Alert) -> Result<(), StoreError> {
    db.prepare_cached("INSERT INTO alerts (ts_ms, uid, body) VALUES (?1, ?2, ?3)")?
        .execute(params![
            a.ts_ms as i64,
            a.finding.uid,
            serde_json::to_string(a).expect("alerts serialize")
        ])?;
    Ok(())
}

/// Updates a row by `?1` (its key) with `update`, else inserts it with `insert` if
/// `admit()` lets its owner keep one more; both take the same numbered `values`. Returns
/// whether it was written.
pub(super) fn upsert(
    db: &Connection,
    update: &str,
    insert: &str,
    values: &[&dyn rusqlite::ToSql],
    admit: impl FnOnce() -> bool,
) -> Result<bool, StoreError> {
    if db.prepare_cached(update)?.execute(values)? > 0 {
        return Ok(true);
    }
    if !admit() {
        return Ok(false);
    }
    db.prepare_cached(insert)?.execute(values)?;
    Ok(true)
}

/// Deletes `uid`'s oldest rows of `table` (`connections` or `alerts`) beyond the newest
/// `keep`; returns how many went.
pub fn trim_uid(db: &Connection, table: &str, uid: u32, keep: u64) -> Result<usize, StoreError> {
    let table = match table {
        "alerts" => "alerts",
        _ => "connections",
    };
    Ok(db.execute(
        &format!(
            "DELETE FROM {table} WHERE uid = ?1 AND id <= (SELECT id FROM {table} WHERE uid = ?1
                 ORDER BY id DESC LIMIT 1 OFFSET ?2)"
        ),
        params![uid, keep as i64],
    )?)
}

pub fn forget_connection(db: &Connection, key: &str) -> Result<(), StoreError> {
    db.prepare_cached("DELETE FROM connections WHERE key = ?1")?
        .execute([key_hash(key)])?;
    Ok(())
}

/// Deletes rows older than `oldest_ms` and beyond the newest `max_rows` of each table;
/// returns how many went.
pub fn trim(db: &Connection, oldest_ms: u64, max_rows: u64) -> Result<usize, StoreError> {
    let mut n = db.execute("DELETE FROM alerts WHERE ts_ms < ?1", [oldest_ms as i64])?;
    n += db.execute(
        "DELETE FROM alerts WHERE id <= (SELECT max(id) FROM alerts) - ?1",
        [max_rows as i64],
    )?;
    n += db.execute(
        "DELETE FROM connections WHERE last_ms < ?1",
        [oldest_ms as i64],
    )?;
    n += db.execute("DELETE FROM sent WHERE last_ms < ?1", [oldest_ms as i64])?;
    n += db.execute(
        "DELETE FROM connections WHERE id <= (SELECT max(id) FROM connections) - ?1",
        [max_rows as i64],
    )?;
    if n > 0 {
        db.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")?;
    }
    Ok(n)
}

/// Alerts since `since_ms`, oldest first; only those of `uid` unless `None` (everyone's).
pub fn alerts_since(
    db: &Connection,
    since_ms: u64,
    uid: Option<u32>,
) -> Result<Vec<Alert>, StoreError> {
    let mut out = Vec::new();
    let mut push = |body: String| match decode_alert(body.as_bytes()) {
        Ok(a) => out.push(a),
        Err(e) => log::warn!("skipping an unreadable alert in the store: {e}"),
    };
    match uid {
        Some(uid) => {
            let mut st = db.prepare_cached(
                "SELECT body FROM alerts WHERE uid = ?1 AND ts_ms >= ?2 ORDER BY id",
            )?;
            for body in st.query_map(params![uid, since_ms as i64], |r| r.get(0))? {
                push(body?);
            }
        }
        None => {
            let mut st =
                db.prepare_cached("SELECT body FROM alerts WHERE ts_ms >= ?1 ORDER BY id")?;
            for body in st.query_map([since_ms as i64], |r| r.get(0))? {
                push(body?);
            }
        }
    }
    Ok(out)
}

/// The values of a query whose text ends `WHERE last_ms >= ?1`, narrowed to `uid`'s rows
/// unless `None` and to `apps` (ids or names) unless empty: the clauses are added to `sql`.
fn narrow(
    sql: &mut String,
    since_ms: u64,
    uid: Option<u32>,
    apps: &[String],
) -> Vec<rusqlite::types::Value> {
    let mut args: Vec<rusqlite::types::Value> = vec![(since_ms as i64).into()];
    if let Some(uid) = uid {
        args.push(i64::from(uid).into());
        sql.push_str(&format!(" AND uid = ?{}", args.len()));
    }
    if !apps.is_empty() {
        let mut marks = Vec::new();
        for a in apps {
            args.push(a.clone().into());
            marks.push(format!("?{}", args.len()));
        }
        let list = marks.join(",");
        sql.push_str(&format!(" AND (app IN ({list}) OR app_name IN ({list}))"));
    }
    args
}

/// The number of rows in `table` (`alerts` or `connections`).
pub fn count(db: &Connection, table: Table) -> Result<u64, StoreError> {
    let sql = match table {
        Table::Alerts => "SELECT count(*) FROM alerts",
        Table::Connections => "SELECT count(*) FROM connections",
        Table::Sent => "SELECT count(*) FROM sent",
    };
    let n: Option<i64> = db.query_row(sql, [], |r| r.get(0)).optional()?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// Writes what an app sent (a leak finding: kinds, forms, places, never a value): updates
/// its row, else inserts it if `admit()` lets its uid keep one more (at most
/// [`SENT_PER_UID`]). Returns whether it was written.
pub fn write_sent(
    db: &Connection,
    key: &str,
    l: &crate::leak::Leak,
    admit: impl FnOnce() -> bool,
) -> Result<bool, StoreError> {
    let body = serde_json::to_string(l).expect("leaks serialize");
    let values = params![
        key_hash(key),
        l.first_ms as i64,
        l.last_ms as i64,
        l.uid,
        l.app_id.as_deref().or(l.app.as_deref()),
        l.app.as_deref().unwrap_or(&l.comm),
        l.company,
        l.flagged,
        l.requests as i64,
        body,
    ];
    upsert(
        db,
        "UPDATE sent SET last_ms = ?3, app = ?5, app_name = ?6, company = ?7, flagged = ?8,
             requests = ?9, body = ?10 WHERE key = ?1",
        "INSERT INTO sent (key, first_ms, last_ms, uid, app, app_name, company, flagged, requests, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        values,
        admit,
    )
}

/// What apps sent, last seen at or after `since_ms`, oldest first: `uid`'s only unless
/// `None`; only `apps` (ids or names) unless empty.
pub fn sent_since(
    db: &Connection,
    since_ms: u64,
    uid: Option<u32>,
    apps: &[String],
) -> Result<Vec<crate::leak::Leak>, StoreError> {
    let mut sql = String::from("SELECT body FROM sent WHERE last_ms >= ?1");
    let args = narrow(&mut sql, since_ms, uid, apps);
    sql.push_str(" ORDER BY first_ms, id");
    let mut st = db.prepare(&sql)?;
    let mut out = Vec::new();
    for body in st.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(0))? {
        match serde_json::from_str(&body?) {
            Ok(l) => out.push(l),
            Err(e) => log::warn!("skipping an unreadable row of what was sent: {e}"),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
pub enum Table {
    Alerts,
    Connections,
    Sent,
}

/// Decodes an `alerts.body`.
pub fn decode_alert(body: &[u8]) -> Result<Alert, StoreError> {
    serde_json::from_slice(body).map_err(|e| StoreError::Row(e.to_string()))
}

/// Decodes a `connections.body`.
pub fn decode_finding(body: &[u8]) -> Result<crate::finding::Finding, StoreError> {
    serde_json::from_slice(body).map_err(|e| StoreError::Row(e.to_string()))
}
