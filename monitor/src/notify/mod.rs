//! `brokerwatch notify`: the desktop agent. Subscribes to the daemon's alerts (its own user's
//! only, the daemon decides), passes them through the [`Throttle`], and shows freedesktop
//! notifications with Details, Mute and Block actions.

pub mod actions;
pub mod digest;
mod throttle;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

pub use throttle::{Note, Throttle, ThrottleSettings};

use crate::{
    defaults,
    protocol::{Alert, ClientError, Connection, Reply, Request},
    report::html::escape,
};

/// A notification body, as the spec's markup reads it: each line escaped (names made safe
/// to show), the line breaks kept.
pub fn markup_escape(text: &str) -> String {
    text.lines().map(escape).collect::<Vec<_>>().join("\n")
}

/// Where a user's muted (app, company) pairs are kept: under `$XDG_CONFIG_HOME`, `$HOME`
/// or the home directory the user database gives, never in a shared directory. `None` when
/// the user has no home at all (mutes then last until the agent stops).
pub fn mute_file() -> Option<PathBuf> {
    Some(user_dir("XDG_CONFIG_HOME", ".config")?.join("muted.json"))
}

/// brokerwatch's directory of one kind in the user's home: under `$XDG_...` (`xdg`), else
/// `$HOME/in_home`, else the home directory the user database gives; `None` without a
/// home.
pub fn user_dir(xdg: &str, in_home: &str) -> Option<PathBuf> {
    let base = std::env::var_os(xdg)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(in_home))
        })
        .or_else(|| {
            let uid = crate::host::users::uid();
            crate::host::users::passwd(uid)
                .map(|p| p.home)
                .filter(|h| h.is_absolute() && h.is_dir())
                .map(|h| h.join(in_home))
        })?;
    Some(base.join(defaults::APP_NAME))
}

/// The muted pairs, from a file that is this user's own and that no one else can write;
/// anything else is ignored with a warning.
pub fn load_muted(path: &Path) -> HashSet<(String, String)> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return HashSet::new();
    };
    let me = crate::host::users::uid();
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        log::warn!(
            "{}: ignored (not a regular file of uid {me} that only its owner can write)",
            path.display()
        );
        return HashSet::new();
    }
    crate::host::files::read_text(path, 1 << 20)
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<(String, String)>>(&t).ok())
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

pub fn save_muted(path: &Path, muted: &HashSet<(String, String)>) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut v: Vec<&(String, String)> = muted.iter().collect();
    v.sort();
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap_or_default())
}

/// The alerts a lagging subscription dropped, recovered from the history: the oldest
/// `missed` alerts after the last one received (`last_ts`, and `seen_at_last`, those received
/// with that very timestamp).
pub fn missed_alerts(
    history: Vec<Alert>,
    last_ts: u64,
    seen_at_last: &[Alert],
    missed: u64,
) -> Vec<Alert> {
    let mut out: Vec<Alert> = history
        .into_iter()
        .filter(|a| a.ts_ms > last_ts || (a.ts_ms == last_ts && !seen_at_last.contains(a)))
        .collect();
    out.sort_by_key(|a| a.ts_ms);
    out.truncate(usize::try_from(missed).unwrap_or(usize::MAX));
    out
}

/// At most one notice about the monitor itself per this interval.
const NOTICE_EVERY: Duration = Duration::from_secs(60);

/// Shows a notice about monitoring itself (records lost, ...).
fn show_notice(n: &crate::protocol::Notice) {
    let shown = notify_rust::Notification::new()
        .appname(defaults::APP_NAME)
        .summary(match n.kind {
            crate::protocol::NoticeKind::RecordsLost => "brokerwatch: monitoring gap",
            crate::protocol::NoticeKind::StoreError => "brokerwatch: history not saved",
            crate::protocol::NoticeKind::StoreRecovered => "brokerwatch: history saved again",
            crate::protocol::NoticeKind::PolicyError => "brokerwatch: policy not loaded",
            crate::protocol::NoticeKind::OverBudget => "brokerwatch: a user's flood held back",
        })
        .body(&markup_escape(&n.message))
        .icon("dialog-warning")
        .show();
    if let Err(e) = shown {
        log::warn!("cannot show a notification: {e}");
    }
}

/// Shows what an app sent ("zoom sent your e-mail address (SHA-256) in the URL to LinkedIn
/// (sales.linkedin.com)"): each once, as the daemon tells each once.
fn show_sent(l: &crate::leak::Leak) {
    let shown = notify_rust::Notification::new()
        .appname(defaults::APP_NAME)
        .summary("brokerwatch: personal data sent")
        .body(&markup_escape(&crate::display::safe(&l.summary)))
        .icon("dialog-warning")
        .show();
    if let Err(e) = shown {
        log::warn!("cannot show a notification: {e}");
    }
}

/// Shows a note through the desktop's notification server; offers Details, Mute and Block
/// where the server supports actions and the [`actions::Listener`] hears them.
fn show(note: &Note, last_id: &AtomicU32, listener: Option<&actions::Listener>) {
    use notify_rust::{Notification, Urgency};
    let actions = listener.is_some()
        && notify_rust::get_capabilities()
            .map(|c| c.iter().any(|c| c == "actions"))
            .unwrap_or(false);
    let mut n = Notification::new();
    n.appname(defaults::APP_NAME)
        .summary(&note.summary)
        .body(&markup_escape(&note.body))
        .icon("security-medium")
        .urgency(match note.urgency {
            "critical" => Urgency::Critical,
            "normal" => Urgency::Normal,
            _ => Urgency::Low,
        });
    if actions {
        use actions::Action;
        n.action(Action::Details.key(), "Details")
            .action(Action::Mute.key(), "Mute");
        if !note.blocked {
            n.action(Action::Block.key(), "Block");
        }
    }
    if note.update {
        // Replace the burst's first notification (same id) instead of adding one.
        let id = last_id.load(Ordering::SeqCst);
        if id != 0 {
            n.id(id);
        }
    }
    match n.show() {
        Ok(handle) => {
            let id = handle.id();
            last_id.store(id, Ordering::SeqCst);
            if let (true, Some(l)) = (actions, listener) {
                l.offer(id, note.clone());
            }
            log::info!(
                "notification {id} shown{}",
                if actions { " with buttons" } else { "" }
            );
        }
        Err(e) => log::warn!("cannot show a notification (is a notification server running?): {e}"),
    }
}

/// Does what the user picked on a notification.
fn act(
    note: &Note,
    action: actions::Action,
    throttle: &Mutex<Throttle>,
    mute_path: Option<&Path>,
    socket: &Path,
) {
    use notify_rust::Notification;
    match action {
        actions::Action::Details => {
            let _ = Notification::new()
                .appname(defaults::APP_NAME)
                .summary(&format!("{}: details", note.summary))
                .body(&markup_escape(&note.details))
                .show();
        }
        actions::Action::Block => {
            let answer = block_pairs(socket, &note.pairs);
            let _ = Notification::new()
                .appname(defaults::APP_NAME)
                .summary("brokerwatch")
                .body(&markup_escape(&answer))
                .show();
        }
        actions::Action::Mute => {
            if let Ok(mut t) = throttle.lock() {
                for p in &note.pairs {
                    t.mute(p.clone());
                }
                match mute_path {
                    Some(p) => {
                        if let Err(e) = save_muted(p, &t.muted) {
                            log::warn!("cannot save muted apps: {e}");
                        }
                    }
                    None => log::warn!("no home directory: the mute lasts until the agent stops"),
                }
            }
        }
    }
}

/// Asks the daemon to block each (app, company) pair for this user; what it said, a line
/// per pair.
fn block_pairs(socket: &Path, pairs: &[(String, String)]) -> String {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return "cannot ask the daemon (no event loop)".into();
    };
    pairs
        .iter()
        .map(|(app, company)| {
            let req = Request::Block {
                app: app.clone(),
                company: company.clone(),
                unblock: false,
            };
            match rt.block_on(crate::protocol::request(socket, &req)) {
                Ok(Reply::Done { message }) => message,
                Ok(_) => format!("{app} -> {company}: the daemon answered something else"),
                Err(e) => format!("{app} -> {company}: not blocked: {e}"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Shows the daemon's alerts as notifications until Ctrl-C, reconnecting (with backoff)
/// whenever the daemon goes away.
pub async fn run(
    socket: &Path,
    settings: ThrottleSettings,
    digest: Option<Duration>,
) -> Result<(), ClientError> {
    let mute_path = mute_file();
    let muted = mute_path.as_deref().map(load_muted).unwrap_or_default();
    let throttle = Arc::new(Mutex::new(Throttle::new(settings, muted)));
    let listener = {
        let (throttle, mute_path, socket) =
            (throttle.clone(), mute_path.clone(), socket.to_owned());
        actions::Listener::start(move |note, action| {
            act(&note, action, &throttle, mute_path.as_deref(), &socket);
        })
    };
    let listener = match listener {
        Ok(l) => Some(Arc::new(l)),
        Err(e) => {
            log::warn!("{e}");
            None
        }
    };
    let mut agent = Agent {
        socket: socket.to_owned(),
        throttle,
        listener,
        last_id: Arc::new(AtomicU32::new(0)),
        last_ts: 0,
        seen_at_last: Vec::new(),
        last_notice: None,
        digest: digest.map(digest::Digest::new),
    };
    let mut backoff = Duration::from_millis(250);
    // Why the daemon cannot be reached, said once (again only when the reason changes).
    let mut told: Option<String> = None;
    loop {
        match Connection::open(socket, &Request::Subscribe).await {
            Ok(conn) => {
                backoff = Duration::from_millis(250);
                told = None;
                log::info!("connected to {}", socket.display());
                if agent.follow(conn).await == Ended::Interrupted {
                    return Ok(());
                }
                log::warn!("the daemon went away; reconnecting");
            }
            Err(e) => {
                let why = e.to_string();
                if told.as_deref() != Some(why.as_str()) {
                    log::warn!("{why}. brokerwatch notify keeps trying every few seconds");
                    told = Some(why);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How following the daemon ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The daemon hung up (or the connection broke): reconnect.
    Disconnected,
    /// Ctrl-C.
    Interrupted,
}

/// The agent's state across connections.
struct Agent {
    socket: PathBuf,
    throttle: Arc<Mutex<Throttle>>,
    /// Hears the notifications' buttons (`None` without a session bus).
    listener: Option<Arc<actions::Listener>>,
    /// The last notification shown (Block and Mute answer it).
    last_id: Arc<AtomicU32>,
    /// The newest alert's time, and the alerts of that millisecond: what a lag recovers
    /// from the history starts there.
    last_ts: u64,
    seen_at_last: Vec<Alert>,
    last_notice: Option<Instant>,
    /// The opt-in digest of what is new (`--digest`).
    digest: Option<digest::Digest>,
}

impl Agent {
    /// Shows what one connection brings until it ends.
    async fn follow(&mut self, mut conn: Connection) -> Ended {
        self.last_ts = crate::host::clock::now_ms();
        self.seen_at_last.clear();
        loop {
            let due = self.throttle.lock().ok().and_then(|t| t.due());
            let sleep = async {
                match due {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let digest_due = self.digest.as_ref().map(|d| d.next);
            let digest = async {
                match digest_due {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                reply = conn.next() => match reply {
                    Ok(Some(Reply::Alert { alert, .. })) => self.on_alert(*alert),
                    Ok(Some(Reply::Lagged { missed })) => self.on_lagged(missed).await,
                    Ok(Some(Reply::Notice(n))) => self.on_notice(n),
                    Ok(Some(Reply::Sent { sent, .. })) => {
                        tokio::task::spawn_blocking(move || show_sent(&sent));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Ended::Disconnected,
                    Err(e) => {
                        log::warn!("{e}");
                        return Ended::Disconnected;
                    }
                },
                _ = sleep => {
                    let note = self.throttle.lock().ok().and_then(|mut t| t.flush(Instant::now()));
                    self.display(note);
                }
                _ = digest => {
                    if let Some(d) = &mut self.digest {
                        d.run(&self.socket).await;
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ended::Interrupted,
            }
        }
    }

    fn on_alert(&mut self, alert: Alert) {
        if alert.ts_ms > self.last_ts {
            self.last_ts = alert.ts_ms;
            self.seen_at_last.clear();
        }
        if alert.ts_ms == self.last_ts {
            self.seen_at_last.push(alert.clone());
        }
        let note = self
            .throttle
            .lock()
            .ok()
            .and_then(|mut t| t.push(alert, Instant::now()));
        self.display(note);
    }

    /// A burst outran this agent: fetch what it missed from the history instead of
    /// silently showing less.
    async fn on_lagged(&mut self, missed: u64) {
        let req = Request::History {
            since_ms: self.last_ts,
        };
        let recovered = match crate::protocol::request(&self.socket, &req).await {
            Ok(Reply::History { alerts, .. }) => {
                missed_alerts(alerts, self.last_ts, &self.seen_at_last, missed)
            }
            _ => Vec::new(),
        };
        log::warn!(
            "{missed} alerts arrived faster than this agent read them; {} recovered from the history",
            recovered.len()
        );
        let now = Instant::now();
        let notes: Vec<Note> = self
            .throttle
            .lock()
            .map(|mut t| {
                recovered
                    .into_iter()
                    .filter_map(|a| t.push(a, now))
                    .collect()
            })
            .unwrap_or_default();
        for note in notes {
            self.display(Some(note));
        }
    }

    /// Something about monitoring itself: logged, and shown at most every
    /// [`NOTICE_EVERY`].
    fn on_notice(&mut self, n: crate::protocol::Notice) {
        log::warn!("{}", n.message);
        if self
            .last_notice
            .is_none_or(|t: Instant| t.elapsed() >= NOTICE_EVERY)
        {
            self.last_notice = Some(Instant::now());
            tokio::task::spawn_blocking(move || show_notice(&n));
        }
    }

    /// Shows a note on a blocking thread (the notification server may be slow).
    fn display(&self, note: Option<Note>) {
        let Some(note) = note else { return };
        let (id, listener) = (self.last_id.clone(), self.listener.clone());
        tokio::task::spawn_blocking(move || show(&note, &id, listener.as_deref()));
    }
}

#[cfg(test)]
mod tests;
