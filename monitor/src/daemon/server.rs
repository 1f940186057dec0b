//! The daemon's unix socket: root and a group may connect; every client is identified with
//! SO_PEERCRED and sees only what it may (its own uid's alerts, unless root or admin).

use std::{
    collections::HashMap,
    io,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::broadcast,
};

/// Longest request line accepted (requests are a few dozen bytes).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Connections one uid may hold open at once (root and admins included): a desktop agent
/// needs one, `status` and `history` one each while they run.
pub const MAX_CONNECTIONS_PER_UID: usize = 16;
/// How long a client may take to send a request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to a client may block (a subscriber that stopped reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

use crate::{
    host::users,
    protocol::{self, Alert, Event, Peer, Reply, Request, Status},
};

/// What client tasks share with the main loop.
pub struct Shared {
    pub status: Mutex<Option<Status>>,
    /// Alerts since start per uid of the process (what a user's `status` counts).
    pub alerts_by_uid: Mutex<HashMap<u32, u64>>,
    /// Open connections per uid.
    pub connections: Mutex<HashMap<u32, usize>>,
    pub alerts: broadcast::Sender<Event>,
    /// Faults that hold now (a broken policy, an unwritable store): told to admins when
    /// they subscribe.
    pub standing: Mutex<Vec<crate::protocol::Notice>>,
    /// The store, read by queries off the daemon's thread (the writer has its own).
    pub store_path: std::path::PathBuf,
    /// Queries reading the store at once (more wait their turn).
    pub queries: tokio::sync::Semaphore,
    pub admin_gid: Option<u32>,
    /// Requests only the main loop can answer.
    pub commands: tokio::sync::mpsc::Sender<Command>,
    /// When each uid's recent commands came (at most [`COMMANDS_PER_MINUTE`] a minute).
    pub recent_commands: Mutex<HashMap<u32, std::collections::VecDeque<std::time::Instant>>>,
    /// When the daemon started. A status's uptime and store figures are read when it is
    /// asked for: the main loop fills the rest on its ticks, seconds apart when idle.
    pub started: std::time::Instant,
    pub store: super::store::Gauge,
}

impl Shared {
    /// Counts a command of `uid`; `false` past its allowance.
    fn within_rate(&self, uid: u32) -> bool {
        let Ok(mut recent) = self.recent_commands.lock() else {
            return false;
        };
        if recent.len() > 10_000 {
            recent.retain(|_, q| {
                q.back()
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
            });
        }
        let q = recent.entry(uid).or_default();
        while q
            .front()
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(60))
        {
            q.pop_front();
        }
        if q.len() >= COMMANDS_PER_MINUTE {
            return false;
        }
        q.push_back(std::time::Instant::now());
        true
    }
}

/// A request only the main loop can carry out: it owns the policy, users' blocks and the
/// kernel tables.
pub enum Command {
    /// `brokerwatch block|unblock`.
    Block {
        peer: Peer,
        app: String,
        company: String,
        unblock: bool,
        /// What to tell the client.
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// `brokerwatch blocks`: the blocks `peer` may see.
    Blocks {
        peer: Peer,
        reply: tokio::sync::oneshot::Sender<Vec<crate::policy::UserBlock>>,
    },
    /// `brokerwatch identity add|remove|list`: `peer`'s own identifiers.
    Identity {
        peer: Peer,
        op: crate::protocol::IdentityOp,
        reply: tokio::sync::oneshot::Sender<Result<Reply, String>>,
    },
}

/// Binds the socket: a stale socket file is replaced, anything else at the path is an
/// error; mode 0660 and group `gid` (0600 root-only when there is no such group).
pub fn bind(path: &Path, gid: Option<u32>) -> io::Result<UnixListener> {
    // A missing parent is created (0755, so that group members can reach the socket); an
    // existing one is left exactly as it is (it may be a shared 1777 directory).
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    // Under systemd (User=/Group=brokerwatch) the socket is created with the right group
    // already; change it only when it differs (that needs CAP_CHOWN, which root has).
    if let Some(gid) = gid {
        let meta = std::fs::metadata(path)?;
        if std::os::unix::fs::MetadataExt::gid(&meta) != gid {
            std::os::unix::fs::chown(path, None, Some(gid))?;
        }
    }
    Ok(listener)
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let bytes = protocol::encode(reply);
    match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(bytes.as_bytes())).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client stopped reading",
        )),
    }
}

/// Counts a connection of `uid` while it lives.
struct Slot {
    shared: Arc<Shared>,
    uid: u32,
}

impl Slot {
    fn take(shared: &Arc<Shared>, uid: u32) -> Option<Self> {
        let mut c = shared.connections.lock().ok()?;
        let n = c.entry(uid).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_UID {
            return None;
        }
        *n += 1;
        Some(Self {
            shared: shared.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.shared.connections.lock() {
            if let Some(n) = c.get_mut(&self.uid) {
                *n -= 1;
                if *n == 0 {
                    c.remove(&self.uid);
                }
            }
        }
    }
}

/// One request line, at most [`MAX_REQUEST_BYTES`], within [`REQUEST_TIMEOUT`]. `Ok(None)`
/// when the client hung up.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<()>, String> {
    buf.clear();
    let mut limited = (&mut *r).take(MAX_REQUEST_BYTES as u64 + 1);
    let read = limited.read_until(b'\n', buf);
    match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Err(_) => Err(format!(
            "no complete request within {} s",
            REQUEST_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(0)) => Ok(None),
        Ok(Ok(_)) if buf.ends_with(b"\n") => Ok(Some(())),
        Ok(Ok(_)) if buf.len() > MAX_REQUEST_BYTES => Err(format!(
            "request longer than {} KiB",
            MAX_REQUEST_BYTES / 1024
        )),
        // The client hung up in the middle of a line.
        Ok(Ok(_)) => Ok(None),
    }
}

/// Serves one client until it hangs up.
pub async fn serve(stream: UnixStream, shared: Arc<Shared>) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            admin: users::in_group(c.uid(), shared.admin_gid),
        },
        Err(e) => {
            log::warn!("client without credentials refused: {e}");
            return;
        }
    };
    let (r, mut w) = stream.into_split();
    let Some(_slot) = Slot::take(&shared, peer.uid) else {
        let message = format!(
            "too many connections from uid {} (at most {MAX_CONNECTIONS_PER_UID})",
            peer.uid
        );
        let _ = send(&mut w, &Reply::Error { message }).await;
        return;
    };
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        let req = match read_request(&mut reader, &mut buf).await.and_then(|got| {
            got.map(|()| serde_json::from_slice::<Request>(&buf))
                .transpose()
                .map_err(|e| format!("bad request: {e}"))
        }) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(message) => {
                let _ = send(&mut w, &Reply::Error { message }).await;
                return;
            }
        };
        let reply = match req {
            Request::Subscribe => return subscribe(&mut w, &shared, peer).await,
            // Sent as encoded, without a copy through a reply value.
            Request::History { since_ms } => match history(&shared, peer, since_ms).await {
                Some(encoded) => {
                    let write = w.write_all(encoded.as_bytes());
                    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                        Ok(Ok(())) => continue,
                        _ => return,
                    }
                }
                None => return,
            },
            Request::Status => status(&shared, peer),
            Request::Report {
                since_ms,
                apps,
                baseline_ms,
            } => match report(&shared, peer, (since_ms, baseline_ms), apps).await {
                Some(reply) => reply,
                None => return,
            },
            Request::Blocks => blocks(&shared, peer).await,
            Request::Block {
                app,
                company,
                unblock,
            } => block(&shared, peer, app, company, unblock).await,
            Request::Identity(op) => identity(&shared, peer, op).await,
        };
        if send(&mut w, &reply).await.is_err() {
            return;
        }
    }
}

/// The status as `peer` may see it (their own figures unless an admin).
fn status(shared: &Shared, peer: Peer) -> Reply {
    let own = shared
        .alerts_by_uid
        .lock()
        .ok()
        .and_then(|m| m.get(&peer.uid).copied())
        .unwrap_or(0);
    match shared.status.lock().ok().and_then(|s| s.clone()) {
        Some(mut status) => {
            status.uptime_s = shared.started.elapsed().as_secs();
            status.store = shared.store.status();
            Reply::Status(Box::new(status.as_seen_by(peer, own)))
        }
        None => Reply::Error {
            message: "the daemon is starting".into(),
        },
    }
}

/// `peer`'s alerts since `since_ms`, encoded. Read, filtered and encoded on a blocking
/// thread, a few at a time: the thread that drains the kernel ring and decides alerts
/// never waits for it. `None` when the daemon is stopping.
async fn history(shared: &Shared, peer: Peer, since_ms: u64) -> Option<String> {
    let _permit = shared.queries.acquire().await.ok()?;
    let path = shared.store_path.clone();
    tokio::task::spawn_blocking(move || {
        let only = (!peer.admin).then_some(peer.uid);
        let read = super::store::read_alerts(&path, since_ms, only)
            .and_then(|alerts| Ok((alerts, super::store::read_sent(&path, since_ms, only)?)));
        match read {
            Ok((alerts, sent)) => {
                let alerts: Vec<Alert> = alerts.into_iter().filter(|a| peer.may_see(a)).collect();
                let sent = sent
                    .into_iter()
                    .filter(|l| peer.may_see_uid(l.uid))
                    .collect();
                protocol::encode(&Reply::History {
                    schema: crate::report::SCHEMA,
                    alerts,
                    sent,
                })
            }
            Err(e) => protocol::encode(&Reply::Error {
                message: format!("cannot read the store: {e}"),
            }),
        }
    })
    .await
    .ok()
}

/// What `peer`'s apps talked to since `since_ms`: like history, per user, on a blocking
/// thread, a few at a time. `None` when the daemon is stopping.
async fn report(
    shared: &Shared,
    peer: Peer,
    (since_ms, baseline_ms): (u64, Option<u64>),
    apps: Vec<String>,
) -> Option<Reply> {
    let _permit = shared.queries.acquire().await.ok()?;
    let path = shared.store_path.clone();
    let only = (!peer.admin).then_some(peer.uid);
    let built = tokio::task::spawn_blocking(move || match baseline_ms {
        Some(b) => super::store::read_new(&path, (b, since_ms), only, &apps),
        None => super::store::read_report(&path, since_ms, only, &apps),
    })
    .await
    .ok()?;
    Some(match built {
        Ok(r) => Reply::Report(Box::new(r)),
        Err(e) => Reply::Error {
            message: format!("cannot read the store: {e}"),
        },
    })
}

async fn blocks(shared: &Shared, peer: Peer) -> Reply {
    let (reply, rx) = tokio::sync::oneshot::channel();
    match ask(shared, Command::Blocks { peer, reply }, rx).await {
        Ok(blocks) => Reply::Blocks { blocks },
        Err(message) => Reply::Error { message },
    }
}

async fn block(shared: &Shared, peer: Peer, app: String, company: String, unblock: bool) -> Reply {
    let (reply, rx) = tokio::sync::oneshot::channel();
    let cmd = Command::Block {
        peer,
        app,
        company,
        unblock,
        reply,
    };
    match ask(shared, cmd, rx).await.and_then(|r| r) {
        Ok(message) => Reply::Done { message },
        Err(message) => Reply::Error { message },
    }
}

async fn identity(shared: &Shared, peer: Peer, op: crate::protocol::IdentityOp) -> Reply {
    let (reply, rx) = tokio::sync::oneshot::channel();
    match ask(shared, Command::Identity { peer, op, reply }, rx)
        .await
        .and_then(|r| r)
    {
        Ok(reply) => reply,
        Err(message) => Reply::Error { message },
    }
}

/// Requests one uid may hand to the main loop per minute (blocks, block, unblock), whether
/// they change anything or not.
pub const COMMANDS_PER_MINUTE: usize = 120;

/// Hands `cmd` to the main loop and waits for its answer. A full queue is a flood: the
/// client is told to retry; so is a uid past [`COMMANDS_PER_MINUTE`].
async fn ask<T>(
    shared: &Shared,
    cmd: Command,
    answer: tokio::sync::oneshot::Receiver<T>,
) -> Result<T, String> {
    let uid = match &cmd {
        Command::Block { peer, .. }
        | Command::Blocks { peer, .. }
        | Command::Identity { peer, .. } => peer.uid,
    };
    if !shared.within_rate(uid) {
        return Err(format!(
            "too many requests (at most {COMMANDS_PER_MINUTE} a minute); try again in a minute"
        ));
    }
    match shared.commands.try_send(cmd) {
        Ok(()) => answer.await.map_err(|_| "the daemon is stopping".into()),
        Err(_) => Err("the daemon is busy; try again".into()),
    }
}

async fn subscribe(w: &mut tokio::net::unix::OwnedWriteHalf, shared: &Shared, peer: Peer) {
    let mut rx = shared.alerts.subscribe();
    let hello = Reply::Subscribed {
        uid: peer.uid,
        all_users: peer.admin,
    };
    if send(w, &hello).await.is_err() {
        return;
    }
    let standing = match peer.admin {
        true => shared
            .standing
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default(),
        false => Vec::new(),
    };
    for n in standing {
        if send(w, &Reply::Notice(n)).await.is_err() {
            return;
        }
    }
    loop {
        let reply = match rx.recv().await {
            Ok(Event::Alert(alert)) if peer.may_see(&alert) => Reply::Alert {
                schema: crate::report::SCHEMA,
                alert: Box::new((*alert).clone()),
            },
            Ok(Event::Alert(_)) => continue,
            Ok(Event::Notice(n)) if n.kind.for_everyone() || peer.admin => Reply::Notice(n),
            Ok(Event::Notice(_)) => continue,
            Ok(Event::Sent(l)) if peer.may_see_uid(l.uid) => Reply::Sent {
                schema: crate::report::SCHEMA,
                sent: Box::new((*l).clone()),
            },
            Ok(Event::Sent(_)) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => Reply::Lagged { missed },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if send(w, &reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 22: requests that changed nothing were neither limited nor cheap to log
    // (1.47 M lines in 20 s at -v).
    #[test]
    fn server_commands_are_limited_per_uid_whatever_they_change() {
        let (commands, _rx) = tokio::sync::mpsc::channel(1);
        let shared = Shared {
            status: Mutex::new(None),
            alerts_by_uid: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            alerts: broadcast::channel(1).0,
            standing: Mutex::new(Vec::new()),
            store_path: "/nonexistent".into(),
            queries: tokio::sync::Semaphore::new(1),
            admin_gid: None,
            commands,
            recent_commands: Mutex::new(HashMap::new()),
            started: std::time::Instant::now(),
            store: Default::default(),
        };
        for _ in 0..COMMANDS_PER_MINUTE {
            assert!(shared.within_rate(1001));
        }
        assert!(!shared.within_rate(1001), "past the allowance");
        assert!(shared.within_rate(1002), "another uid is not affected");
    }
}
