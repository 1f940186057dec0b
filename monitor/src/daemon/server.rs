//! The daemon's unix socket: root and a group may connect; every client is identified with
//! SO_PEERCRED and sees only what it may (its own uid's alerts, unless root or admin).

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::broadcast,
};

use super::history::History;
use crate::{
    host::users,
    protocol::{self, Alert, Peer, Reply, Request, Status},
};

/// What client tasks share with the main loop.
pub struct Shared {
    pub status: Mutex<Option<Status>>,
    pub history: Mutex<History>,
    pub alerts: broadcast::Sender<Arc<Alert>>,
    pub admin_gid: Option<u32>,
}

/// Binds the socket: a stale socket file is replaced, anything else at the path is an
/// error; mode 0660 and group `gid` (0600 root-only when there is no such group).
pub fn bind(path: &Path, gid: Option<u32>) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
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
    w.write_all(protocol::encode(reply).as_bytes()).await
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
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let message = format!("bad request: {e}");
                let _ = send(&mut w, &Reply::Error { message }).await;
                return;
            }
        };
        let reply = match req {
            Request::Status => match shared.status.lock().ok().and_then(|s| s.clone()) {
                Some(status) => Reply::Status(Box::new(status)),
                None => Reply::Error {
                    message: "the daemon is starting".into(),
                },
            },
            Request::History { since_ms } => {
                let alerts: Vec<Alert> = shared
                    .history
                    .lock()
                    .ok()
                    .and_then(|h| h.read_since(since_ms).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| peer.may_see(a))
                    .collect();
                Reply::History { alerts }
            }
            Request::Subscribe => {
                subscribe(&mut w, &shared, peer).await;
                return;
            }
        };
        if send(&mut w, &reply).await.is_err() {
            return;
        }
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
    loop {
        let reply = match rx.recv().await {
            Ok(alert) if peer.may_see(&alert) => Reply::Alert {
                alert: Box::new((*alert).clone()),
            },
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => Reply::Lagged { missed },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if send(w, &reply).await.is_err() {
            return;
        }
    }
}
