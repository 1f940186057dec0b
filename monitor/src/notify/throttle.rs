//! Which alerts become notifications: bursts folded into one, an (app, company) pair shown
//! once per window, a rate limit, muted pairs. Pure, driven by the caller's clock.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use crate::{
    host::clock::local_hm_of_ms,
    policy::{Category, Severity},
    protocol::Alert,
};

/// How alerts become notifications: the agent's throttle settings.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// An (app, company) pair shown once per window.
    pub dedup_window: Duration,
    /// Alerts arriving within this time of the first of a burst are shown together.
    pub burst: Duration,
    /// At most this many notifications per minute.
    pub per_minute: usize,
}

impl Default for ThrottleSettings {
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
    /// (app, company) pairs it covers (for Mute and Block).
    pub pairs: Vec<(String, String)>,
    /// Every contact it tells of was blocked (no Block button then).
    pub blocked: bool,
    /// The first alert, for Details.
    pub details: String,
}

fn app_name(a: &Alert) -> String {
    a.finding.who().to_owned()
}

/// A blocked contact is news of its own: an (app, company) pair shown as an alert is
/// still shown once as blocked.
fn dedup_key(a: &Alert) -> (String, String, bool) {
    (app_name(a), company(a).to_owned(), a.finding.blocked > 0)
}

fn company(a: &Alert) -> &str {
    a.finding.company.as_deref().unwrap_or("")
}

fn category(a: &Alert) -> Category {
    a.finding.category.clone().unwrap_or_default()
}

fn named_domain(a: &Alert) -> Option<&str> {
    a.finding.domain.as_deref().filter(|d| !d.is_empty())
}

fn urgency(sev: Option<Severity>) -> &'static str {
    match sev {
        Some(Severity::High) => "critical",
        Some(Severity::Medium) => "normal",
        Some(Severity::Low | Severity::Info) | None => "low",
    }
}

fn details(a: &Alert) -> String {
    let f = &a.finding;
    let mut d = format!(
        "{} (pid {}, {}) -> {} {}:{} {}",
        f.who(),
        f.pid,
        f.exe.as_deref().unwrap_or(""),
        f.domain.as_deref().unwrap_or(""),
        f.dst_ip,
        f.dst_port,
        f.proto.as_str()
    );
    if !f.dns_chain.is_empty() {
        d.push_str(&format!("\nDNS: {}", f.dns_chain.join(" -> ")));
    }
    if let Some(src) = &f.domain_source {
        d.push_str(&format!("\nName from: {}", src.as_str()));
    }
    if !f.ancestry.is_empty() {
        d.push_str(&format!("\nParents: {}", f.ancestry));
    }
    d.push_str(&format!("\nSource: {}", f.source.as_deref().unwrap_or("")));
    d
}

/// The alert of a pair that best names its destination.
fn named<'a>(v: &[&'a Alert]) -> Option<&'a Alert> {
    v.iter()
        .find(|a| named_domain(a).is_some())
        .or(v.first())
        .copied()
}

/// Dedup, burst folding and rate limit; pure, driven by the caller's clock.
#[derive(Debug)]
pub struct Throttle {
    settings: ThrottleSettings,
    last_shown: HashMap<(String, String, bool), Instant>,
    pub(super) muted: HashSet<(String, String)>,
    pub(super) sent: VecDeque<Instant>,
    pending: Vec<Alert>,
    pending_since: Option<Instant>,
    /// Alerts of the current burst that its shown notification already covers.
    represented: usize,
    pub suppressed: u64,
}

impl Throttle {
    pub fn new(settings: ThrottleSettings, muted: HashSet<(String, String)>) -> Self {
        Self {
            settings,
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
    pub fn push(&mut self, alert: Alert, now: Instant) -> Option<Note> {
        let pair = (app_name(&alert), company(&alert).to_owned());
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
        self.pending_since.map(|t| t + self.settings.burst)
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
        // Pairs not shown within the window; a block is told once for as long as the agent
        // runs.
        let mut fresh: BTreeMap<(String, String, bool), Vec<&Alert>> = BTreeMap::new();
        for a in &alerts {
            let pair = dedup_key(a);
            let recent = self.last_shown.get(&pair).is_some_and(|t| {
                (pair.2 || now.duration_since(*t) < self.settings.dedup_window)
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
            if self.sent.len() >= self.settings.per_minute {
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
        compose(&fresh, update_of.is_some())
    }
}

/// Pending alerts of fresh (app, company, blocked) pairs.
type Fresh<'a> = BTreeMap<(String, String, bool), Vec<&'a Alert>>;

/// The note for `fresh` pairs (`update`: it replaces the burst's first one).
fn compose(fresh: &Fresh<'_>, update: bool) -> Option<Note> {
    // Connections, not alerts: a connection is alerted again when it learns its name.
    let connections = fresh
        .values()
        .flatten()
        .map(|a| {
            let f = &a.finding;
            (f.pid, f.dst_ip, f.dst_port, f.proto)
        })
        .collect::<HashSet<_>>()
        .len();
    // The alert that best names the destination speaks for its pair: an alert sent at
    // connect time may precede the one that learnt the name (SNI, Host).
    let first = fresh.values().next().and_then(|v| named(v))?;
    let worst = fresh
        .values()
        .flatten()
        .filter_map(|a| a.finding.severity)
        .max();
    let apps: Vec<&str> = {
        let mut v: Vec<&str> = fresh.keys().map(|(a, _, _)| a.as_str()).collect();
        v.dedup();
        v
    };
    // A pair seen allowed and then blocked in one burst is one company.
    let pairs: BTreeSet<(&str, &str)> = fresh
        .keys()
        .map(|(a, c, _)| (a.as_str(), c.as_str()))
        .collect();
    let all_blocked = fresh.keys().all(|(_, _, b)| *b);
    let any_blocked = fresh.keys().any(|(_, _, b)| *b);
    let summary = match (pairs.len(), any_blocked, all_blocked) {
        (1, true, _) => format!("Blocked: {} -> {}", apps[0], company(first)),
        (1, false, _) => format!("{} contacted {}", apps[0], category(first).phrase()),
        (n, _, true) => format!("Blocked: {} -> {n} companies", apps.join(", ")),
        (n, _, false) => format!("{} contacted {n} companies", apps.join(", ")),
    };
    let time = local_hm_of_ms(first.ts_ms);
    let mut body: Vec<String> = fresh
        .iter()
        .take(5)
        .map(|((_, company, blocked), v)| {
            let a = named(v).unwrap_or(v[0]);
            let dest = named_domain(a)
                .map(str::to_owned)
                .unwrap_or_else(|| a.finding.dst_ip.to_string());
            format!(
                "{dest} ({company}, {}) {}at {time}",
                category(a).words(),
                if *blocked { "blocked " } else { "" }
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
        update,
        summary,
        body: body.join("\n"),
        urgency: urgency(worst),
        pairs: {
            let mut p: Vec<(String, String)> = fresh
                .keys()
                .map(|(a, c, _)| (a.clone(), c.clone()))
                .collect();
            p.dedup();
            p
        },
        blocked: all_blocked,
        details: details(first),
    })
}
