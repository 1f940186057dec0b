//! Queries of the store, each on a read-only connection of its own: they never wait for
//! the writer, nor the writer for them.

use std::path::Path;

use super::{conns, sql, ConnRow, StoreError, Table};
use crate::{host::clock::now_ms, protocol::Alert};

/// Alerts since `since_ms` from the store at `path`, oldest first: `uid`'s only, or
/// everyone's with `None`. A store not yet created has none.
pub fn read_alerts(path: &Path, since_ms: u64, uid: Option<u32>) -> Result<Vec<Alert>, StoreError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    sql::alerts_since(&sql::open_ro(path)?, since_ms, uid)
}

/// Connection rows last seen at or after `since_ms` (everyone's).
pub fn read_connections(path: &Path, since_ms: u64) -> Result<Vec<ConnRow>, StoreError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    conns::since(&sql::open_ro(path)?, since_ms)
}

/// A report of the connections last seen since `since_ms` (see [`conns::report_contacts`]).
pub fn read_report(
    path: &Path,
    since_ms: u64,
    uid: Option<u32>,
    apps: &[String],
) -> Result<crate::report::Report, StoreError> {
    let (contacts, sent) = match path.exists() {
        true => {
            let db = sql::open_ro(path)?;
            (
                conns::report_contacts(&db, since_ms, uid, apps)?,
                sql::sent_since(&db, since_ms, uid, apps)?,
            )
        }
        false => (Vec::new(), Vec::new()),
    };
    let sent = sent.iter().map(crate::report::SentContact::of);
    Ok(crate::report::build(
        contacts,
        sent,
        "store",
        since_ms,
        now_ms(),
    ))
}

/// Only what is new (`report --new`): contacts first seen at or after `since_ms` whose
/// (app, company, destination) was not seen between `baseline_ms` and `since_ms`.
pub fn read_new(
    path: &Path,
    (baseline_ms, since_ms): (u64, u64),
    uid: Option<u32>,
    apps: &[String],
) -> Result<crate::report::Report, StoreError> {
    let all = match path.exists() {
        true => conns::report_contacts(&sql::open_ro(path)?, baseline_ms, uid, apps)?,
        false => Vec::new(),
    };
    let key =
        |c: &crate::report::Contact| (c.app.clone(), c.company.clone(), c.destination.clone());
    let mut first: std::collections::HashMap<_, u64> = std::collections::HashMap::new();
    for c in &all {
        let f = first.entry(key(c)).or_insert(c.first_ms);
        *f = (*f).min(c.first_ms);
    }
    let new = all
        .into_iter()
        .filter(|c| first.get(&key(c)).is_some_and(|f| *f >= since_ms));
    let mut r = crate::report::build(new, [], "store", since_ms, now_ms());
    r.new_since_ms = Some(since_ms);
    r.facts.push((
        "Only what is new".to_owned(),
        format!(
            "first contacted since {} and not in the {} before",
            crate::report::text::when(since_ms, true),
            humantime::format_duration(std::time::Duration::from_secs(
                since_ms.saturating_sub(baseline_ms) / 1000
            ))
        ),
    ));
    Ok(r)
}

/// What apps sent (leak findings) last seen since `since_ms`, oldest first: `uid`'s only,
/// or everyone's with `None`.
pub fn read_sent(
    path: &Path,
    since_ms: u64,
    uid: Option<u32>,
) -> Result<Vec<crate::leak::Leak>, StoreError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    sql::sent_since(&sql::open_ro(path)?, since_ms, uid, &[])
}

/// Rows in one table of the store at `path`.
pub fn count_rows(path: &Path, table: Table) -> Result<u64, StoreError> {
    sql::count(&sql::open_ro(path)?, table)
}
