//! The connections table (schema 4, issue 23): what repeats across a user's rows (the app,
//! its process's program and command line, the destination with its names, the policy's
//! verdict and notes) is kept once in `details`; a row keeps its own times, counts and
//! process ids and points at its detail. A chatty app's thirty days cost about a hundred
//! bytes a connection, not the whole finding each time.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension as _};

use super::{sql::key_hash, ConnRow, StoreError};
use crate::{
    finding::Finding,
    naming::NameSource,
    policy::{Category, Severity},
    report::Contact,
};

/// The tables (created if missing) and their indexes.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS details (
    id INTEGER PRIMARY KEY,
    hash INTEGER NOT NULL UNIQUE,
    app TEXT,
    app_name TEXT,
    domain TEXT,
    company TEXT,
    flagged INTEGER NOT NULL,
    category TEXT,
    severity TEXT,
    source TEXT,
    dst TEXT,
    proto TEXT,
    named_by TEXT,
    dns INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS connections (
    id INTEGER PRIMARY KEY,
    key INTEGER NOT NULL UNIQUE,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    detail INTEGER NOT NULL,
    count INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    ppid INTEGER,
    cookie INTEGER NOT NULL,
    blocked INTEGER NOT NULL,
    sent INTEGER NOT NULL,
    ancestry TEXT
);
CREATE INDEX IF NOT EXISTS connections_last ON connections (last_ms);
CREATE INDEX IF NOT EXISTS connections_uid_last ON connections (uid, last_ms);
";

/// Makes the connections' tables, moving the rows of an older store into them first.
pub fn prepare(db: &Connection) -> Result<(), StoreError> {
    let moved = migrate(db)?;
    if moved > 0 {
        log::info!("store: {moved} connection rows moved to the compact tables of schema 4");
    }
    db.execute_batch(SCHEMA)?;
    Ok(())
}

/// What of a finding is the row's own; the rest is its detail.
fn shape_of(f: &Finding) -> Finding {
    Finding {
        first_ms: 0,
        last_ms: 0,
        pid: 0,
        ppid: None,
        count: 0,
        socket_cookie: 0,
        ancestry: String::new(),
        blocked: 0,
        sent: false,
        ..f.clone()
    }
}

/// The id of `f`'s detail, stored now if it is new.
fn detail_id(db: &Connection, f: &Finding) -> Result<i64, StoreError> {
    let body = shape_of(f).to_compact_json();
    let hash = key_hash(&body);
    let known: Option<i64> = db
        .prepare_cached("SELECT id FROM details WHERE hash = ?1")?
        .query_row([hash], |r| r.get(0))
        .optional()?;
    if let Some(id) = known {
        return Ok(id);
    }
    db.prepare_cached(
        "INSERT INTO details (hash, app, app_name, domain, company, flagged, category, severity,
             source, dst, proto, named_by, dns, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        hash,
        f.app_id.as_deref().or(f.app.as_deref()),
        f.app.as_deref().unwrap_or(f.who()),
        f.domain,
        f.company,
        f.flagged,
        f.category.as_ref().map(|c| c.as_str()),
        f.severity.map(|s| s.as_str()),
        f.source,
        f.dst_ip.to_string(),
        f.proto.as_str(),
        f.domain_source.map(|s| s.as_str()),
        crate::naming::DNS_QUERY_PORTS.contains(&f.dst_port),
        body,
    ])?;
    Ok(db.last_insert_rowid())
}

/// Writes a connection row: updates it when it is stored already, else inserts it if
/// `admit()` lets its uid keep one more row. Returns whether it was written.
pub fn write(
    db: &Connection,
    row: &ConnRow,
    admit: impl FnOnce() -> bool,
) -> Result<bool, StoreError> {
    write_keyed(db, key_hash(&row.key), row, admit)
}

fn write_keyed(
    db: &Connection,
    key: i64,
    row: &ConnRow,
    admit: impl FnOnce() -> bool,
) -> Result<bool, StoreError> {
    let f = &row.finding;
    let detail = detail_id(db, f)?;
    let ancestry = (!f.ancestry.is_empty()).then_some(f.ancestry.as_str());
    let values = params![
        key,
        row.first_ms as i64,
        row.last_ms as i64,
        f.uid,
        detail,
        f.count as i64,
        f.pid,
        f.ppid,
        f.socket_cookie as i64,
        f.blocked as i64,
        f.sent,
        ancestry,
    ];
    // Both statements take the same numbered values (the update leaves ?2, ?4 and ?9
    // unused, which SQLite allows).
    super::sql::upsert(
        db,
        "UPDATE connections SET last_ms = ?3, detail = ?5, count = ?6, pid = ?7, ppid = ?8,
             blocked = ?10, sent = ?11, ancestry = ?12
         WHERE key = ?1",
        "INSERT INTO connections (key, first_ms, last_ms, uid, detail, count, pid, ppid, cookie,
             blocked, sent, ancestry)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        values,
        admit,
    )
}

/// Connection rows last seen at or after `since_ms`, in the order they were first stored.
pub fn since(db: &Connection, since_ms: u64) -> Result<Vec<ConnRow>, StoreError> {
    let mut st = db.prepare_cached(
        "SELECT c.key, c.first_ms, c.last_ms, c.count, c.pid, c.ppid, c.cookie, c.blocked,
                c.sent, c.ancestry, c.detail
         FROM connections c WHERE c.last_ms >= ?1 ORDER BY c.id",
    )?;
    let mut details: HashMap<i64, Finding> = HashMap::new();
    let mut body = db.prepare_cached("SELECT body FROM details WHERE id = ?1")?;
    let mut out = Vec::new();
    let mut rows = st.query([since_ms as i64])?;
    while let Some(r) = rows.next()? {
        let detail: i64 = r.get(10)?;
        let shape = match details.get(&detail) {
            Some(f) => f.clone(),
            None => {
                let text: String = body.query_row([detail], |r| r.get(0))?;
                let f = super::sql::decode_finding(text.as_bytes())?;
                details.insert(detail, f.clone());
                f
            }
        };
        let (first, last) = (
            r.get::<_, i64>(1)?.max(0) as u64,
            r.get::<_, i64>(2)?.max(0) as u64,
        );
        let finding = Finding {
            first_ms: first,
            last_ms: last,
            count: r.get::<_, i64>(3)?.max(0) as u64,
            pid: r.get(4)?,
            ppid: r.get(5)?,
            socket_cookie: r.get::<_, i64>(6)? as u64,
            blocked: r.get::<_, i64>(7)?.max(0) as u64,
            sent: r.get(8)?,
            ancestry: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
            ..shape
        };
        out.push(ConnRow {
            key: format!("{:016x}", r.get::<_, i64>(0)?),
            first_ms: first,
            last_ms: last,
            finding,
        });
    }
    Ok(out)
}

/// What a report groups a detail under, and what it says of it.
struct Detail {
    app: Option<String>,
    app_name: String,
    company: Option<String>,
    category: Option<String>,
    severity: Option<String>,
    source: Option<String>,
    flagged: bool,
    destination: String,
    proto: String,
    named_by: Option<String>,
}

fn details(db: &Connection, ids: &HashSet<i64>) -> Result<HashMap<i64, Detail>, StoreError> {
    let mut st = db.prepare_cached(
        "SELECT id, app, coalesce(app_name, app, ''), company, category, severity, source,
                flagged,
                CASE WHEN domain IS NULL AND dns THEN 'DNS queries to ' || dst
                     ELSE coalesce(domain, dst, '') END,
                coalesce(proto, ''), named_by
         FROM details",
    )?;
    let mut out = HashMap::new();
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        if !ids.contains(&id) {
            continue;
        }
        out.insert(
            id,
            Detail {
                app: r.get(1)?,
                app_name: r.get(2)?,
                company: r.get(3)?,
                category: r.get(4)?,
                severity: r.get(5)?,
                source: r.get(6)?,
                flagged: r.get::<_, i64>(7)? != 0,
                destination: r.get(8)?,
                proto: r.get(9)?,
                named_by: r.get(10)?,
            },
        );
    }
    Ok(out)
}

/// Sums of one detail's rows in a report's window.
#[derive(Default)]
struct Sums {
    count: u64,
    first_ms: u64,
    last_ms: u64,
    blocked: u64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.first_ms = self.first_ms.min(o.first_ms);
        self.count += o.count;
        self.last_ms = self.last_ms.max(o.last_ms);
        self.blocked += o.blocked;
    }
}

fn rank(severity: Option<&str>) -> u8 {
    match severity {
        Some("high") => 4,
        Some("medium") => 3,
        Some("low") => 2,
        Some("info") => 1,
        _ => 0,
    }
}

/// Each detail's rows last seen at or after `since_ms` (only `uid`'s unless `None`), summed
/// as they are read: one pass, no sort.
fn sums_per_detail(
    db: &Connection,
    since_ms: u64,
    uid: Option<u32>,
) -> Result<HashMap<i64, Sums>, StoreError> {
    let mut per: HashMap<i64, Sums> = HashMap::new();
    let mut read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<()> {
        let s = Sums {
            count: r.get::<_, i64>(1)?.max(0) as u64,
            first_ms: r.get::<_, i64>(2)?.max(0) as u64,
            last_ms: r.get::<_, i64>(3)?.max(0) as u64,
            blocked: r.get::<_, i64>(4)?.max(0) as u64,
        };
        per.entry(r.get(0)?)
            .and_modify(|a: &mut Sums| a.add(&s))
            .or_insert(s);
        Ok(())
    };
    const COLUMNS: &str = "SELECT detail, count, first_ms, last_ms, blocked FROM connections";
    match uid {
        Some(uid) => {
            let mut st =
                db.prepare_cached(&format!("{COLUMNS} WHERE uid = ?1 AND last_ms >= ?2"))?;
            let mut rows = st.query(params![uid, since_ms as i64])?;
            while let Some(r) = rows.next()? {
                read(r)?;
            }
        }
        None => {
            let mut st = db.prepare_cached(&format!("{COLUMNS} WHERE last_ms >= ?1"))?;
            let mut rows = st.query([since_ms as i64])?;
            while let Some(r) = rows.next()? {
                read(r)?;
            }
        }
    }
    Ok(per)
}

/// A report's contact for a detail, before its rows are added.
fn contact_of(d: &Detail, first_ms: u64) -> Contact {
    Contact {
        app: d.app_name.clone(),
        company: d.company.clone(),
        category: None,
        severity: None,
        source: None,
        flagged: d.flagged,
        destination: d.destination.clone(),
        proto: d.proto.clone(),
        named_by: None,
        count: 0,
        first_ms,
        last_ms: 0,
        blocked: 0,
        queries: Vec::new(),
    }
}

/// Adds one detail's sums to its group's contact (`best`: the group's severity rank so far).
fn add_to(c: &mut Contact, best: &mut u8, d: &Detail, sums: &Sums) {
    c.count += sums.count;
    c.first_ms = c.first_ms.min(sums.first_ms);
    c.last_ms = c.last_ms.max(sums.last_ms);
    c.blocked += sums.blocked;
    if c.category.is_none() {
        c.category = d.category.clone().map(Category::from);
    }
    if rank(d.severity.as_deref()) > *best {
        *best = rank(d.severity.as_deref());
        c.severity = d.severity.as_deref().and_then(Severity::parse);
    }
    if d.source > c.source {
        c.source = d.source.clone();
    }
    let named = d.named_by.as_deref().and_then(NameSource::parse);
    if named.map(NameSource::as_str) > c.named_by.map(NameSource::as_str) {
        c.named_by = named;
    }
}

/// Connections last seen at or after `since_ms`, summed per (app, company, destination,
/// protocol, flagged): what a report is built from. Only `uid`'s unless `None`; only `apps`
/// (ids or names) unless empty. A group's severity is its most severe row's.
pub fn report_contacts(
    db: &Connection,
    since_ms: u64,
    uid: Option<u32>,
    apps: &[String],
) -> Result<Vec<Contact>, StoreError> {
    let per = sums_per_detail(db, since_ms, uid)?;
    let ids: HashSet<i64> = per.keys().copied().collect();
    let details = details(db, &ids)?;
    type Group = (String, Option<String>, String, String, bool);
    let mut groups: HashMap<Group, (Contact, u8)> = HashMap::new();
    for (id, sums) in per {
        let Some(d) = details.get(&id) else {
            continue;
        };
        let wanted = apps.is_empty()
            || apps
                .iter()
                .any(|a| d.app.as_deref() == Some(a.as_str()) || d.app_name == *a);
        if !wanted {
            continue;
        }
        let key = (
            d.app_name.clone(),
            d.company.clone(),
            d.destination.clone(),
            d.proto.clone(),
            d.flagged,
        );
        let (c, best) = groups
            .entry(key)
            .or_insert_with(|| (contact_of(d, sums.first_ms), 0));
        add_to(c, best, d, &sums);
    }
    let mut out: Vec<Contact> = groups.into_values().map(|(c, _)| c).collect();
    out.sort_by(|a, b| {
        (&a.app, &a.company, &a.destination, &a.proto, a.flagged).cmp(&(
            &b.app,
            &b.company,
            &b.destination,
            &b.proto,
            b.flagged,
        ))
    });
    Ok(out)
}

/// Forgets details no row points at any more (after a trim); returns how many went.
pub fn forget_unused_details(db: &Connection) -> Result<usize, StoreError> {
    let mut used = HashSet::new();
    {
        let mut st = db.prepare_cached("SELECT detail FROM connections")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            used.insert(r.get::<_, i64>(0)?);
        }
    }
    let all: Vec<i64> = db
        .prepare_cached("SELECT id FROM details")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut gone = 0;
    let mut del = db.prepare_cached("DELETE FROM details WHERE id = ?1")?;
    for id in all.into_iter().filter(|id| !used.contains(id)) {
        gone += del.execute([id])?;
    }
    Ok(gone)
}

/// Whether the store's connections are of schema 3 or older (each row keeping the whole
/// finding in `body`).
fn is_old(db: &Connection) -> Result<bool, StoreError> {
    let mut st = db.prepare("SELECT name FROM pragma_table_info('connections')")?;
    let columns: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(columns.iter().any(|c| c == "body"))
}

/// Moves the rows of a store of schema 3 or older into the tables of schema 4, in place
/// and in one transaction (nothing is lost if it is cut short: it is done again at the next
/// start). Returns how many rows moved.
fn migrate(db: &Connection) -> Result<u64, StoreError> {
    if !is_old(db)? {
        return Ok(0);
    }
    let tx = db.unchecked_transaction()?;
    // The old indexes go with their names, which the new ones take.
    tx.execute_batch(
        "DROP INDEX IF EXISTS connections_last;
         DROP INDEX IF EXISTS connections_uid_last;
         DROP INDEX IF EXISTS connections_app_last;
         ALTER TABLE connections RENAME TO connections_v3;",
    )?;
    tx.execute_batch(SCHEMA)?;
    let mut moved = 0;
    {
        let mut st =
            tx.prepare("SELECT key, first_ms, last_ms, body FROM connections_v3 ORDER BY id")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let body: String = r.get(3)?;
            let finding = match super::sql::decode_finding(body.as_bytes()) {
                Ok(f) => f,
                Err(e) => {
                    log::warn!("store: an unreadable connection row was not migrated: {e}");
                    continue;
                }
            };
            let row = ConnRow {
                key: String::new(),
                first_ms: r.get::<_, i64>(1)?.max(0) as u64,
                last_ms: r.get::<_, i64>(2)?.max(0) as u64,
                finding,
            };
            write_keyed(&tx, r.get(0)?, &row, || true)?;
            moved += 1;
        }
    }
    tx.execute_batch("DROP TABLE connections_v3;")?;
    tx.commit()?;
    Ok(moved)
}
