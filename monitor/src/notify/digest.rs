//! The opt-in digest of what is new (issue 26, item 2): `brokerwatch notify --digest 7d`
//! asks the daemon, once a period, for the user's `report --new` and shows one notification
//! ("In the last 7 days: Zoom contacted 2 companies it never contacted before: LinkedIn,
//! Acxiom"). Nothing new, nothing shown. When the last digest was is kept in the user's
//! state directory, so that a daily login does not bring a digest every day.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    defaults,
    protocol::{Reply, Request},
    report::Report,
};

/// What counts as known before a digest's period.
pub const BASELINE: Duration = Duration::from_secs(30 * 24 * 3600);
/// After a digest could not be asked for (the daemon is away), the next try.
const RETRY: Duration = Duration::from_secs(60);

/// When the next digest is due, and where the last one's time is kept.
#[derive(Debug)]
pub struct Digest {
    every: Duration,
    state: Option<PathBuf>,
    pub next: Instant,
}

/// `$XDG_STATE_HOME/brokerwatch/digest-last` (or `~/.local/state/...`).
fn state_file() -> Option<PathBuf> {
    Some(super::user_dir("XDG_STATE_HOME", ".local/state")?.join("digest-last"))
}

impl Digest {
    /// A digest every `every`, the first one period after the last one shown (or after now).
    pub fn new(every: Duration) -> Self {
        let state = state_file();
        let now_ms = crate::host::clock::now_ms();
        let last_ms = state
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|t| *t <= now_ms)
            .unwrap_or(now_ms);
        let wait =
            Duration::from_millis((last_ms + every.as_millis() as u64).saturating_sub(now_ms));
        Self {
            every,
            state,
            next: Instant::now() + wait,
        }
    }

    /// Asks for what is new over the last period and shows it; then waits a period.
    pub async fn run(&mut self, socket: &std::path::Path) {
        let now_ms = crate::host::clock::now_ms();
        let since_ms = now_ms.saturating_sub(self.every.as_millis() as u64);
        let req = Request::Report {
            since_ms,
            apps: Vec::new(),
            baseline_ms: Some(since_ms.saturating_sub(BASELINE.as_millis() as u64)),
        };
        match crate::protocol::request(socket, &req).await {
            Ok(Reply::Report(r)) => {
                if let Some(text) = sentence(&r, self.every) {
                    tokio::task::spawn_blocking(move || show(&text));
                }
                self.next = Instant::now() + self.every;
                if let Some(p) = &self.state {
                    let kept = p
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(p, now_ms.to_string()));
                    if let Err(e) = kept {
                        log::warn!("cannot keep the digest's time in {}: {e}", p.display());
                    }
                }
            }
            other => {
                log::warn!("cannot ask for the digest ({other:?}); trying again in a minute");
                self.next = Instant::now() + RETRY;
            }
        }
    }
}

/// "In the last 7 days: Zoom contacted 2 companies it never contacted before: LinkedIn,
/// Acxiom." One clause per app with new companies; `None` when none has.
pub fn sentence(r: &Report, every: Duration) -> Option<String> {
    let clauses: Vec<String> = r
        .apps
        .iter()
        .filter(|a| !a.companies.is_empty())
        .map(|a| {
            let names: Vec<String> = a
                .companies
                .iter()
                .map(|c| crate::display::safe(&c.company).into_owned())
                .collect();
            let n = names.len();
            format!(
                "{} contacted {} it never contacted before: {}",
                crate::display::safe(&a.app),
                match n {
                    1 => "1 company".to_owned(),
                    n => format!("{n} companies"),
                },
                names.join(", ")
            )
        })
        .collect();
    if clauses.is_empty() {
        return None;
    }
    Some(format!(
        "In the last {}: {}.",
        period_words(every),
        clauses.join("; ")
    ))
}

/// "7 days", "1 day", "12 hours", "30 seconds".
fn period_words(d: Duration) -> String {
    let s = d.as_secs().max(1);
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(u, _)| s.is_multiple_of(*u))
        .map_or((s, "second"), |(u, name)| (s / u, name));
    match n {
        1 => format!("1 {unit}"),
        n => format!("{n} {unit}s"),
    }
}

fn show(text: &str) {
    let shown = notify_rust::Notification::new()
        .appname(defaults::APP_NAME)
        .summary("brokerwatch: what is new")
        .body(&super::markup_escape(text))
        .icon("dialog-information")
        .show();
    if let Err(e) = shown {
        log::warn!("cannot show a notification: {e}");
    }
}
