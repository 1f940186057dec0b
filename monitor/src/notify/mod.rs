//! `brokerwatch notify`: the desktop agent. Subscribes to the daemon's alerts (its own user's
//! only, the daemon decides), folds bursts into one notification, deduplicates per (app,
//! company) within a window, rate-limits, and shows freedesktop notifications.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::protocol::{ClientError, Request};

/// How alerts become notifications.
#[derive(Debug, Clone)]
pub struct Policy {
    /// An (app, company) pair shown once per window.
    pub dedup_window: Duration,
    /// Alerts arriving within this time of the first of a burst are shown together.
    pub burst: Duration,
    /// At most this many notifications per minute.
    pub per_minute: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            dedup_window: Duration::from_secs(600),
            burst: Duration::from_millis(1500),
            per_minute: 6,
        }
    }
}

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Replaces the burst's earlier notification instead of adding one.
    pub update: bool,
    pub summary: String,
    pub body: String,
    /// `low`, `normal` or `critical`.
    pub urgency: &'static str,
    /// (app, company) pairs it covers (for Mute).
    pub pairs: Vec<(String, String)>,
    /// The first alert, for Details.
    pub details: String,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn what(category: &str) -> &'static str {
    match category {
        "data-broker" => "a data broker",
        "social-sdk" => "a social-media SDK",
        "ad-attribution" => "an ad tracker",
        "product-analytics" => "an analytics service",
        "session-replay" => "a session-replay service",
        "crash-reporting" => "a crash reporter",
        _ => "a tracker",
    }
}

fn app_name(a: &Value) -> String {
    let app = s(a, "app");
    if app.is_empty() { s(a, "comm") } else { app }.to_owned()
}

fn urgency(sev: &str) -> &'static str {
    match sev {
        "high" => "critical",
        "medium" => "normal",
        _ => "low",
    }
}

fn details(a: &Value) -> String {
    let mut d = format!(
        "{} (pid {}, {}) -> {} {}:{} {}",
        app_name(a),
        a["pid"],
        s(a, "exe"),
        s(a, "domain"),
        s(a, "dst_ip"),
        a["dst_port"],
        s(a, "proto")
    );
    if let Some(chain) = a["dns_chain"].as_array().filter(|c| !c.is_empty()) {
        let names: Vec<&str> = chain.iter().filter_map(Value::as_str).collect();
        d.push_str(&format!("\nDNS: {}", names.join(" -> ")));
    }
    if !s(a, "domain_source").is_empty() {
        d.push_str(&format!("\nName from: {}", s(a, "domain_source")));
    }
    if !s(a, "ancestry").is_empty() {
        d.push_str(&format!("\nParents: {}", s(a, "ancestry")));
    }
    d.push_str(&format!("\nSource: {}", s(a, "source")));
    d
}

/// The alert of a pair that best names its destination.
fn named<'a>(v: &[&'a Value]) -> Option<&'a Value> {
    v.iter()
        .find(|a| !s(a, "domain").is_empty())
        .or(v.first())
        .copied()
}

/// `HH:MM` in the local time zone of an epoch-milliseconds stamp.
fn local_hm(ts_ms: Option<u64>) -> String {
    let Some(ms) = ts_ms else {
        return String::new();
    };
    let secs = (ms / 1000) as libc::time_t;
    // SAFETY: zeroed tm is a valid out-parameter; localtime_r is thread-safe.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!("{:02}:{:02}", tm.tm_hour, tm.tm_min)
}

/// Dedup, burst folding and rate limit; pure, driven by the caller's clock.
#[derive(Debug)]
pub struct Throttle {
    policy: Policy,
    last_shown: HashMap<(String, String), Instant>,
    muted: HashSet<(String, String)>,
    sent: VecDeque<Instant>,
    pending: Vec<Value>,
    pending_since: Option<Instant>,
    /// Alerts of the current burst that its shown notification already covers.
    represented: usize,
    pub suppressed: u64,
}

impl Throttle {
    pub fn new(policy: Policy, muted: HashSet<(String, String)>) -> Self {
        Self {
            policy,
            last_shown: HashMap::new(),
            muted,
            sent: VecDeque::new(),
            pending: Vec::new(),
            pending_since: None,
            represented: 0,
            suppressed: 0,
        }
    }

    pub fn mute(&mut self, pair: (String, String)) {
        self.muted.insert(pair);
    }

    /// Takes an alert. The first alert of a burst is shown at once (returned); later ones
    /// within the burst window are folded into an update of that notification at
    /// [`Throttle::flush`].
    pub fn push(&mut self, alert: Value, now: Instant) -> Option<Note> {
        let pair = (app_name(&alert), s(&alert, "company").to_owned());
        if self.muted.contains(&pair) {
            self.suppressed += 1;
            return None;
        }
        if self.pending.len() >= 10_000 {
            self.suppressed += 1;
            return None;
        }
        self.pending.push(alert);
        if self.pending_since.is_some() {
            return None;
        }
        self.pending_since = Some(now);
        let note = self.summarize(now, None);
        self.represented = if note.is_some() {
            self.pending.len()
        } else {
            0
        };
        note
    }

    /// When the current burst is due.
    pub fn due(&self) -> Option<Instant> {
        self.pending_since.map(|t| t + self.policy.burst)
    }

    /// Ends the burst: when more alerts came after its first notification, the summary
    /// that replaces it (`Note::update`); a burst whose first alerts were all deduplicated
    /// gets its one notification now if later ones are fresh.
    pub fn flush(&mut self, now: Instant) -> Option<Note> {
        let started = self.pending_since?;
        let note = if self.pending.len() > self.represented {
            self.summarize(now, (self.represented > 0).then_some(started))
        } else {
            None
        };
        self.pending_since = None;
        self.pending.clear();
        self.represented = 0;
        note
    }

    /// One note for the pending alerts. `update_of` is the start of the burst whose
    /// notification this one replaces: pairs shown since then count as fresh, and the
    /// rate limit is not charged again.
    fn summarize(&mut self, now: Instant, update_of: Option<Instant>) -> Option<Note> {
        let alerts = self.pending.clone();
        // Pairs not shown within the window.
        let mut fresh: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
        for a in &alerts {
            let pair = (app_name(a), s(a, "company").to_owned());
            let recent = self.last_shown.get(&pair).is_some_and(|t| {
                now.duration_since(*t) < self.policy.dedup_window
                    && update_of.is_none_or(|start| *t < start)
            });
            if recent {
                self.suppressed += 1;
            } else {
                fresh.entry(pair).or_default().push(a);
            }
        }
        if fresh.is_empty() {
            return None;
        }
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        if update_of.is_none() {
            if self.sent.len() >= self.policy.per_minute {
                self.suppressed += fresh.values().map(|v| v.len() as u64).sum::<u64>();
                return None;
            }
            self.sent.push_back(now);
        }
        for pair in fresh.keys() {
            self.last_shown.entry(pair.clone()).or_insert(now);
            if update_of.is_none() {
                self.last_shown.insert(pair.clone(), now);
            }
        }
        // Connections, not alerts: a connection is alerted again when it learns its name.
        let connections = fresh
            .values()
            .flatten()
            .map(|a| {
                format!(
                    "{}|{}|{}|{}",
                    a["pid"],
                    s(a, "dst_ip"),
                    a["dst_port"],
                    s(a, "proto")
                )
            })
            .collect::<HashSet<_>>()
            .len();
        // The alert that best names the destination speaks for its pair: an alert sent at
        // connect time may precede the one that learnt the name (SNI, Host).
        let first = fresh.values().next().and_then(|v| named(v))?;
        let worst = fresh
            .values()
            .flatten()
            .map(|a| s(a, "severity"))
            .max_by_key(|sev| match *sev {
                "high" => 3,
                "medium" => 2,
                "low" => 1,
                _ => 0,
            })
            .unwrap_or("low");
        let apps: Vec<&str> = {
            let mut v: Vec<&str> = fresh.keys().map(|(a, _)| a.as_str()).collect();
            v.dedup();
            v
        };
        let summary = if fresh.len() == 1 {
            format!("{} contacted {}", apps[0], what(s(first, "category")))
        } else {
            format!("{} contacted {} companies", apps.join(", "), fresh.len())
        };
        let time = local_hm(first["ts_ms"].as_u64());
        let mut body: Vec<String> = fresh
            .iter()
            .take(5)
            .map(|((_, company), v)| {
                let a = named(v).unwrap_or(v[0]);
                let dest = if s(a, "domain").is_empty() {
                    s(a, "dst_ip")
                } else {
                    s(a, "domain")
                };
                format!(
                    "{dest} ({company}, {}) at {time}",
                    s(a, "category").replace('-', " ")
                )
            })
            .collect();
        if fresh.len() > 5 {
            body.push(format!("and {} more companies", fresh.len() - 5));
        }
        if connections > 1 {
            body.push(format!("{connections} connections"));
        }
        Some(Note {
            update: update_of.is_some(),
            summary,
            body: body.join("\n"),
            urgency: urgency(worst),
            pairs: fresh.keys().cloned().collect(),
            details: details(first),
        })
    }
}

/// Where a user's muted (app, company) pairs are kept.
pub fn mute_file() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("brokerwatch").join("muted.json")
}

pub fn load_muted(path: &Path) -> HashSet<(String, String)> {
    std::fs::read_to_string(path)
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

/// Shows a note through the desktop's notification server; offers Details and Mute where
/// the server supports actions.
fn show(note: &Note, throttle: &Arc<Mutex<Throttle>>, mute_path: &Path, last_id: &AtomicU32) {
    use notify_rust::{Notification, Urgency};
    let actions = notify_rust::get_capabilities()
        .map(|c| c.iter().any(|c| c == "actions"))
        .unwrap_or(false);
    let mut n = Notification::new();
    n.appname("brokerwatch")
        .summary(&note.summary)
        .body(&note.body)
        .icon("security-medium")
        .urgency(match note.urgency {
            "critical" => Urgency::Critical,
            "normal" => Urgency::Normal,
            _ => Urgency::Low,
        });
    if actions {
        n.action("details", "Details").action("mute", "Mute");
    }
    if note.update {
        // Replace the burst's first notification (same id) instead of adding one.
        let id = last_id.load(Ordering::SeqCst);
        if id != 0 {
            n.id(id);
        }
    }
    let shown = n.show();
    if let Ok(handle) = &shown {
        last_id.store(handle.id(), Ordering::SeqCst);
    }
    match shown {
        Ok(handle) if actions => {
            let note = note.clone();
            let throttle = throttle.clone();
            let mute_path = mute_path.to_owned();
            std::thread::spawn(move || {
                handle.wait_for_action(|action| match action {
                    "details" => {
                        let _ = Notification::new()
                            .appname("brokerwatch")
                            .summary(&format!("{}: details", note.summary))
                            .body(&note.details)
                            .show();
                    }
                    "mute" => {
                        if let Ok(mut t) = throttle.lock() {
                            for p in &note.pairs {
                                t.mute(p.clone());
                            }
                            if let Err(e) = save_muted(&mute_path, &t.muted) {
                                log::warn!("cannot save muted apps: {e}");
                            }
                        }
                    }
                    _ => {}
                });
            });
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot show a notification (is a notification server running?): {e}"),
    }
}

/// Runs the agent until Ctrl-C; reconnects by itself when the daemon restarts.
pub async fn run(socket: &Path, policy: Policy) -> Result<(), ClientError> {
    let mute_path = mute_file();
    let throttle = Arc::new(Mutex::new(Throttle::new(policy, load_muted(&mute_path))));
    let last_id = Arc::new(AtomicU32::new(0));
    let mut backoff = Duration::from_millis(250);
    loop {
        match tokio::net::UnixStream::connect(socket).await {
            Ok(stream) => {
                backoff = Duration::from_millis(250);
                log::info!("connected to {}", socket.display());
                let (r, mut w) = stream.into_split();
                let mut req = serde_json::to_string(&Request::Subscribe).unwrap_or_default();
                req.push('\n');
                if w.write_all(req.as_bytes()).await.is_err() {
                    continue;
                }
                let mut lines = BufReader::new(r).lines();
                let display = |note: Note| {
                    let (t2, p2, id) = (throttle.clone(), mute_path.clone(), last_id.clone());
                    tokio::task::spawn_blocking(move || show(&note, &t2, &p2, &id));
                };
                loop {
                    let due = throttle.lock().ok().and_then(|t| t.due());
                    let sleep = async {
                        match due {
                            Some(d) => tokio::time::sleep_until(d.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        line = lines.next_line() => match line {
                            Ok(Some(line)) => {
                                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                                if v["type"] == "alert" {
                                    let note = throttle
                                        .lock()
                                        .ok()
                                        .and_then(|mut t| t.push(v["alert"].clone(), Instant::now()));
                                    if let Some(note) = note {
                                        display(note);
                                    }
                                }
                            }
                            _ => break,
                        },
                        _ = sleep => {
                            let note = throttle.lock().ok().and_then(|mut t| t.flush(Instant::now()));
                            if let Some(note) = note {
                                display(note);
                            }
                        }
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                    }
                }
                log::warn!("the daemon went away; reconnecting");
            }
            Err(e) => log::debug!("daemon not reachable at {}: {e}", socket.display()),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests;
