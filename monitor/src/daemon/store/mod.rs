//! The daemon's store: every connection of watched apps and every alert, in SQLite
//! (`brokerwatch.db` in the state directory, WAL), written by a thread of its own.
//!
//! The daemon's thread only hands rows over ([`Store::record_alert`],
//! [`Store::record_connection`]); that never blocks. The writer batches them into
//! transactions, trims by age and size on a timer, and when the disk is full or the file
//! broken it keeps the rows it could not write (up to [`MAX_PENDING`], then counts what it
//! drops), reports the fault in [`Store::status`] and tries again every second. Queries open
//! their own read-only connection ([`read_alerts`]) and never wait for the writer.

mod conns;
mod files;
mod gauge;
mod import;
#[cfg(test)]
mod migrate_tests;
mod query;
mod quota;
mod sql;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc, Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use self::files::{create_private, private_dir};
pub use self::gauge::Gauge;
pub use self::query::{
    count_rows, read_alerts, read_connections, read_new, read_report, read_sent,
};
pub use sql::{decode_alert, decode_finding, Table, SCHEMA_VERSION};

use crate::{
    finding::Finding,
    host::clock::now_ms,
    protocol::{Alert, StoreStatus},
};

/// The database's file name in the state directory.
pub const FILE_NAME: &str = crate::defaults::STORE_FILE;
/// Where the last policy that loaded is kept (see [`crate::policy::last_good`]).
pub const LAST_GOOD_POLICY: &str = crate::defaults::LAST_GOOD_POLICY;
/// Rows the writer keeps waiting while it cannot write (disk full, broken file) before
/// the oldest are dropped and counted.
pub const MAX_PENDING: usize = 50_000;
/// Rows in flight from the daemon's thread to the writer.
const CHANNEL: usize = 65_536;
/// Connection rows one uid may have in flight (a quarter of the channel).
const SHARE_PER_UID: usize = CHANNEL / 4;
/// Rows per transaction.
const BATCH: usize = 8_192;
/// How often the writer trims by age and size.
const TRIM_EVERY: Duration = Duration::from_secs(600);
/// How long the writer waits after a failed write before trying again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the store was written by a newer brokerwatch (schema {version}, this one knows {SCHEMA_VERSION}); upgrade, or move the file aside")]
    Newer { version: i64 },
    #[error("unreadable row: {0}")]
    Row(String),
}

impl StoreError {
    /// The file is not a database any more: it is set aside and a new one started.
    fn is_corrupt(&self) -> bool {
        matches!(self, Self::Sql(rusqlite::Error::SqliteFailure(e, _))
            if matches!(e.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
    }
}

/// Bounds of what the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    /// Rows kept per table (alerts, connections).
    pub max_rows: u64,
    /// Connection rows one uid may keep (its new rows are refused past it).
    pub rows_per_uid: u64,
    /// Alerts one uid may keep.
    pub alerts_per_uid: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_rows: 5_000_000,
            rows_per_uid: 1_000_000,
            alerts_per_uid: 200_000,
        }
    }
}

/// One connection row of a watched app as the engine aggregates it: a socket's destination
/// and name with its count and first/last sighting. `key` identifies the row across updates
/// (rows read back carry the hash the store keeps instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRow {
    pub key: String,
    pub first_ms: u64,
    pub last_ms: u64,
    pub finding: Finding,
}

enum Op {
    Alert(Arc<Alert>),
    Connection(Box<ConnRow>),
    Forget(String),
    /// What an app sent (issue 25), under its row's key.
    Sent(Box<(String, crate::leak::Leak)>),
}

impl Op {
    /// Whose row it is (`None` for a row removal, which names no one).
    fn uid(&self) -> Option<u32> {
        match self {
            Op::Alert(a) => Some(a.finding.uid),
            Op::Connection(row) => Some(row.finding.uid),
            Op::Forget(_) => None,
            Op::Sent(s) => Some(s.1.uid),
        }
    }
}

/// What the writer has done, shared with the daemon's status.
#[derive(Debug, Default)]
struct Health {
    alerts: AtomicU64,
    connections: AtomicU64,
    sent: AtomicU64,
    /// Rows handed over and not yet written.
    pending: AtomicU64,
    dropped: AtomicU64,
    error: Mutex<Option<String>>,
    /// Rows refused because their uid reached its quota, and who.
    refused: AtomicU64,
    over_quota: Mutex<Vec<crate::protocol::UidQuota>>,
    /// Connection rows handed over and not yet written (or dropped), per uid.
    inflight: Mutex<HashMap<u32, usize>>,
    /// Subordinate uids count as their owner's for every per-user bound.
    subuids: crate::host::users::SubUids,
}

impl Health {
    /// A connection row of `uid` left the pipeline (written, refused or dropped).
    fn landed(&self, uid: u32) {
        let uid = self.subuids.owner(uid);
        if let Ok(mut inflight) = self.inflight.lock() {
            if let Some(n) = inflight.get_mut(&uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    inflight.remove(&uid);
                }
            }
        }
    }
}

pub struct Store {
    path: PathBuf,
    tx: Option<mpsc::SyncSender<Op>>,
    health: Arc<Health>,
    writer: Option<JoinHandle<()>>,
}

impl Store {
    /// Starts the writer for `dir/brokerwatch.db`. The directory must be ours (it is made
    /// 0700; the file is 0600): the store holds every user's connections and command lines.
    /// A file that cannot be opened is not an error here: the writer reports it and retries.
    pub fn open(dir: &Path, retention: Retention) -> io::Result<Self> {
        private_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let (tx, rx) = mpsc::sync_channel(CHANNEL);
        let health = Arc::new(Health {
            subuids: crate::host::users::SubUids::load(),
            ..Health::default()
        });
        let writer = {
            let (path, health) = (path.clone(), health.clone());
            std::thread::Builder::new()
                .name("bw-store".into())
                .spawn(move || Writer::new(path, retention, health).run(rx))?
        };
        Ok(Self {
            path,
            tx: Some(tx),
            health,
            writer: Some(writer),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record_alert(&self, alert: Arc<Alert>) {
        self.send(Op::Alert(alert));
    }

    pub fn record_connection(&self, row: ConnRow) {
        self.send(Op::Connection(Box::new(row)));
    }

    /// What an app sent (a leak finding, never a value), under `key`: the same key updates
    /// the same row.
    pub fn record_sent(&self, key: String, leak: crate::leak::Leak) {
        self.send(Op::Sent(Box::new((key, leak))));
    }

    /// A row the engine merged into another (it was renamed before its first update).
    pub fn forget_connection(&self, key: String) {
        self.send(Op::Forget(key));
    }

    /// Hands `op` to the writer. A uid may have at most [`SHARE_PER_UID`] rows in flight
    /// (alerts excepted): one user's flood fills its own share, never the whole channel.
    fn send(&self, op: Op) {
        let uid = op
            .uid()
            .filter(|_| !matches!(op, Op::Alert(_) | Op::Sent(_)))
            .map(|u| self.health.subuids.owner(u));
        if let Some(uid) = uid {
            let Ok(mut inflight) = self.health.inflight.lock() else {
                return;
            };
            let n = inflight.entry(uid).or_default();
            if *n >= SHARE_PER_UID {
                self.health.dropped.fetch_add(1, Relaxed);
                return;
            }
            *n += 1;
        }
        let sent = self.tx.as_ref().is_some_and(|tx| tx.try_send(op).is_ok());
        if sent {
            self.health.pending.fetch_add(1, Relaxed);
        } else {
            if let Some(uid) = uid {
                self.health.landed(uid);
            }
            self.health.dropped.fetch_add(1, Relaxed);
        }
    }

    pub fn status(&self) -> StoreStatus {
        self.gauge().status()
    }

    /// The store's figures as the writer keeps them, for a client's `status` on another
    /// task (they move while the main loop sleeps between idle ticks).
    pub fn gauge(&self) -> Gauge {
        Gauge {
            path: self.path.clone(),
            health: self.health.clone(),
        }
    }
}

impl Store {
    /// Writes what is waiting and stops the writer (also done on drop).
    pub fn close(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    path: PathBuf,
    retention: Retention,
    health: Arc<Health>,
    db: Option<rusqlite::Connection>,
    queue: VecDeque<Op>,
    /// Ops waiting per uid: when the queue is full, the uid with the most waiting loses.
    queued: HashMap<Option<u32>, usize>,
    usage: quota::Usage,
    retry_at: Option<Instant>,
    trim_at: Instant,
    /// The old JSON-lines history, imported a chunk per pass.
    import: Option<import::JsonlImport>,
}

impl Writer {
    fn new(path: PathBuf, retention: Retention, health: Arc<Health>) -> Self {
        Self {
            path,
            retention,
            health,
            db: None,
            queue: VecDeque::new(),
            queued: HashMap::new(),
            usage: quota::Usage::default(),
            retry_at: None,
            trim_at: Instant::now(),
            import: None,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Op>) {
        self.connect();
        loop {
            let wait = match self.retry_at {
                Some(t) => t.saturating_duration_since(Instant::now()),
                None if self.import.is_some() => Duration::ZERO,
                None => self.trim_at.saturating_duration_since(Instant::now()),
            };
            match rx.recv_timeout(wait) {
                Ok(op) => self.push(op),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if self.connect() {
                        self.flush();
                        // A half-done import would be done again (twice) at the next start.
                        while self.import.is_some() {
                            self.import_step();
                        }
                        if Instant::now() >= self.trim_at {
                            self.trim();
                        }
                    }
                    return;
                }
            }
            // Everything waiting, so that the channel empties while the disk is busy.
            while self.queue.len() < MAX_PENDING {
                match rx.try_recv() {
                    Ok(op) => self.push(op),
                    Err(_) => break,
                }
            }
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            self.retry_at = None;
            if self.connect() {
                self.flush();
                self.import_step();
            }
            if Instant::now() >= self.trim_at && self.retry_at.is_none() {
                self.trim();
            }
        }
    }

    /// Queues `op`; past [`MAX_PENDING`] a row of the uid with the most rows waiting is
    /// dropped and counted (its newest when `op` is its own, else its oldest): one user's
    /// flood costs that user's rows, not everyone's.
    fn push(&mut self, op: Op) {
        *self.queued.entry(op.uid()).or_default() += 1;
        self.queue.push_back(op);
        if self.queue.len() <= MAX_PENDING {
            return;
        }
        let top = self
            .queued
            .iter()
            .max_by_key(|(_, n)| **n)
            .and_then(|(uid, _)| *uid);
        let last = self.queue.back().and_then(Op::uid);
        let at = if last == top {
            self.queue.len() - 1
        } else {
            self.queue.iter().position(|o| o.uid() == top).unwrap_or(0)
        };
        if let Some(dropped) = self.queue.remove(at) {
            self.unqueue(&dropped);
        }
        self.health.pending.fetch_sub(1, Relaxed);
        self.health.dropped.fetch_add(1, Relaxed);
    }

    fn unqueue(&mut self, op: &Op) {
        if let (Op::Connection(_), Some(uid)) = (op, op.uid()) {
            self.health.landed(uid);
        }
        let uid = op.uid();
        if let Some(n) = self.queued.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                self.queued.remove(&uid);
            }
        }
    }

    fn fail(&mut self, what: &str, e: StoreError) {
        let message = format!("{what} {}: {e}", self.path.display());
        if let Ok(mut slot) = self.health.error.lock() {
            *slot = Some(message);
        }
        if e.is_corrupt() {
            self.set_aside();
        }
        self.retry_at = Some(Instant::now() + RETRY_EVERY);
    }

    /// One chunk of the old history's import, after what was waiting.
    fn import_step(&mut self) {
        let (Some(imp), Some(db)) = (self.import.as_mut(), self.db.as_mut()) else {
            return;
        };
        match imp.step(db) {
            Ok(false) => {}
            Ok(true) => self.import = None,
            Err(e) => {
                log::error!("cannot import the old history: {e}");
                self.import = None;
            }
        }
    }

    fn connect(&mut self) -> bool {
        if self.db.is_some() {
            return true;
        }
        match create_private(&self.path)
            .map_err(StoreError::from)
            .and_then(|()| sql::open_rw(&self.path))
            .and_then(|db| {
                conns::prepare(&db)?;
                sql::set_version(&db)?;
                Ok(db)
            }) {
            Ok(db) => {
                let subuids = &self.health.subuids;
                match quota::Usage::load(&db, |u| subuids.owner(u)) {
                    Ok(u) => self.usage = u,
                    Err(e) => log::warn!("cannot count the store's rows per user: {e}"),
                }
                self.db = Some(db);
                if self.import.is_none() {
                    self.import = import::JsonlImport::find(&self.path);
                }
                true
            }
            Err(e) => {
                self.fail("cannot open the store", e);
                false
            }
        }
    }

    /// A broken database file is renamed `brokerwatch.db.corrupt-<ms>` (kept for whoever
    /// wants to recover it) and a new one is started at the next attempt.
    fn set_aside(&mut self) {
        self.db = None;
        let aside = self.path.with_extension(format!("db.corrupt-{}", now_ms()));
        match std::fs::rename(&self.path, &aside) {
            Ok(()) => {
                for ext in ["db-wal", "db-shm"] {
                    let _ = std::fs::remove_file(self.path.with_extension(ext));
                }
                log::error!(
                    "the store {} was corrupt: kept it as {} and started a new one",
                    self.path.display(),
                    aside.display()
                );
            }
            Err(e) => log::error!("cannot set the corrupt store aside: {e}"),
        }
    }

    /// Writes the queue in transactions of [`BATCH`]; on failure the rows stay queued.
    fn flush(&mut self) {
        while !self.queue.is_empty() {
            if !self.connect() {
                return;
            }
            let n = self.queue.len().min(BATCH);
            let db = self.db.as_mut().expect("connected above");
            let (retention, usage) = (self.retention, &mut self.usage);
            let owner = |uid: u32| self.health.subuids.owner(uid);
            let res = (|| -> Result<(u64, u64, u64), StoreError> {
                let tx = db.transaction()?;
                let (mut alerts, mut conns, mut sent) = (0, 0, 0);
                for op in self.queue.iter().take(n) {
                    match op {
                        Op::Alert(a) => {
                            if usage.admit_alert(owner(a.finding.uid), retention.alerts_per_uid) {
                                sql::insert_alert(&tx, a)?;
                                alerts += 1;
                            }
                        }
                        Op::Connection(row) => {
                            // Updates of a uid's rows go on; new rows within its quota.
                            let uid = owner(row.finding.uid);
                            if conns::write(&tx, row, || {
                                usage.admit_row(uid, retention.rows_per_uid)
                            })? {
                                conns += 1;
                            }
                        }
                        Op::Forget(key) => sql::forget_connection(&tx, key)?,
                        Op::Sent(s) => {
                            let uid = owner(s.1.uid);
                            if sql::write_sent(&tx, &s.0, &s.1, || {
                                usage.admit_sent(uid, sql::SENT_PER_UID)
                            })? {
                                sent += 1;
                            }
                        }
                    }
                }
                tx.commit()?;
                Ok((alerts, conns, sent))
            })();
            self.publish_quota();
            match res {
                Ok((alerts, conns, sent)) => {
                    let written: Vec<Op> = self.queue.drain(..n).collect();
                    for op in &written {
                        self.unqueue(op);
                    }
                    let h = &self.health;
                    h.pending.fetch_sub(n as u64, Relaxed);
                    h.alerts.fetch_add(alerts, Relaxed);
                    h.connections.fetch_add(conns, Relaxed);
                    h.sent.fetch_add(sent, Relaxed);
                    if let Ok(mut e) = h.error.lock() {
                        if e.take().is_some() {
                            log::info!("the store {} is written again", self.path.display());
                        }
                    }
                }
                Err(e) => {
                    self.fail("cannot write to the store", e);
                    return;
                }
            }
        }
    }

    /// What the quota refused, for `status`.
    fn publish_quota(&self) {
        self.health
            .refused
            .store(self.usage.refused_total(), Relaxed);
        if let Ok(mut q) = self.health.over_quota.lock() {
            *q = self.usage.over_quota();
        }
    }

    fn trim(&mut self) {
        self.trim_at = Instant::now() + TRIM_EVERY;
        let Some(db) = &self.db else { return };
        let r = self.retention;
        let oldest = now_ms().saturating_sub(r.max_age.as_millis() as u64);
        let res = (|| -> Result<usize, StoreError> {
            let mut n = sql::trim(db, oldest, r.max_rows)?;
            // A uid over its quota (the quota was lowered) keeps its newest rows.
            for (table, uid, keep) in self.usage.over(r.rows_per_uid, r.alerts_per_uid) {
                n += sql::trim_uid(db, table, uid, keep)?;
            }
            if n > 0 {
                // What only the removed rows pointed at goes with them.
                conns::forget_unused_details(db)?;
            }
            let subuids = &self.health.subuids;
            self.usage.reload(db, |u| subuids.owner(u))?;
            Ok(n)
        })();
        match res {
            Ok(0) => {}
            Ok(n) => log::info!("store: {n} rows past the retention limits removed"),
            Err(e) => self.fail("cannot trim the store", e),
        }
    }
}
