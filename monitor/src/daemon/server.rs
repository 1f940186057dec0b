//! The daemon's unix socket: root and a group may connect; every client is identified with
//! SO_PEERCRED and sees only what it may (its own uid's alerts, unless root or admin).

use std::{
    ffi::CString,
    io,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{Arc, Mutex},
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::broadcast,
};

use super::history::History;
use crate::protocol::Request;

/// What client tasks share with the main loop.
pub struct Shared {
    pub status: Mutex<Value>,
    pub history: Mutex<History>,
    pub alerts: broadcast::Sender<Arc<Value>>,
    pub admin_gid: Option<u32>,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub admin: bool,
}

impl Peer {
    /// Whether this client may see an alert about a process of `uid`.
    pub fn may_see(&self, alert: &Value) -> bool {
        self.admin || alert["uid"].as_u64() == Some(self.uid as u64)
    }
}

/// The gid of a group by name.
pub fn group_gid(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer into static storage or null; we copy the gid out
    // at once (the daemon resolves groups on its main thread only).
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        None
    } else {
        // SAFETY: non-null group entry.
        Some(unsafe { (*gr).gr_gid })
    }
}

/// Whether `uid` is root or a member of `admin_gid`.
pub fn is_admin(uid: u32, admin_gid: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(gid) = admin_gid else { return false };
    let run = crate::launch::run_as(uid, u32::MAX);
    run.groups.contains(&gid)
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

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes()).await
}

/// Serves one client until it hangs up.
pub async fn serve(stream: UnixStream, shared: Arc<Shared>) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            admin: is_admin(c.uid(), shared.admin_gid),
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
                let _ = send(
                    &mut w,
                    &json!({"type": "error", "message": format!("bad request: {e}")}),
                )
                .await;
                return;
            }
        };
        let ok = match req {
            Request::Status => {
                let status = shared
                    .status
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or(Value::Null);
                send(&mut w, &status).await.is_ok()
            }
            Request::History { since_ms } => {
                let alerts: Vec<Value> = shared
                    .history
                    .lock()
                    .ok()
                    .and_then(|h| h.read_since(since_ms).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| peer.may_see(a))
                    .collect();
                send(&mut w, &json!({"type": "history", "alerts": alerts}))
                    .await
                    .is_ok()
            }
            Request::Subscribe => {
                subscribe(&mut w, &shared, peer).await;
                return;
            }
        };
        if !ok {
            return;
        }
    }
}

async fn subscribe(w: &mut tokio::net::unix::OwnedWriteHalf, shared: &Shared, peer: Peer) {
    let mut rx = shared.alerts.subscribe();
    if send(
        w,
        &json!({"type": "subscribed", "uid": peer.uid, "all_users": peer.admin}),
    )
    .await
    .is_err()
    {
        return;
    }
    loop {
        match rx.recv().await {
            Ok(alert) => {
                if peer.may_see(&alert)
                    && send(w, &json!({"type": "alert", "alert": *alert}))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                if send(w, &json!({"type": "lagged", "missed": n}))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_see_their_own_alerts_admins_all() {
        let alert = json!({"uid": 1000, "domain": "graph.facebook.com"});
        assert!(Peer {
            uid: 1000,
            admin: false
        }
        .may_see(&alert));
        assert!(!Peer {
            uid: 1001,
            admin: false
        }
        .may_see(&alert));
        assert!(Peer {
            uid: 0,
            admin: true
        }
        .may_see(&alert));
        assert!(!Peer {
            uid: 1001,
            admin: false
        }
        .may_see(&json!({"domain": "x"})));
        assert!(is_admin(0, None));
        assert!(!is_admin(65534, None));
    }
}
