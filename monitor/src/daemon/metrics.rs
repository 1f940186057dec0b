//! The daemon's counters for Prometheus (issue 26), where a desktop can publish them: a
//! file for node_exporter's textfile collector (`daemon --metrics-file
//! /var/lib/prometheus/node-exporter/brokerwatch.prom`), rewritten whole and renamed over
//! every `--metrics-every`. Readable by everyone (the exporter runs as its own user): it
//! holds totals by category and severity, never a user, a process or a destination.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{finding::Finding, kernel::KernelCounters, protocol::StoreStatus};

/// Where and how often the counters are written.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    pub path: PathBuf,
    pub every: Duration,
}

/// What `--metrics-file` may not be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    #[error(
        "--metrics-file {0}: node_exporter's textfile collector reads only files ending in .prom"
    )]
    NotProm(PathBuf),
    #[error("--metrics-file {0}: the directory {1} does not exist (create it, or point node_exporter's --collector.textfile.directory at one that does)")]
    NoDirectory(PathBuf, PathBuf),
}

impl MetricsOptions {
    /// Checks the path once, at start: a mistake is said then, not every few seconds.
    pub fn check(&self) -> Result<(), MetricsError> {
        if self.path.extension().is_none_or(|e| e != "prom") {
            return Err(MetricsError::NotProm(self.path.clone()));
        }
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(MetricsError::NoDirectory(self.path.clone(), dir));
        }
        Ok(())
    }
}

/// What the daemon knows at a tick, for the file.
pub struct Snapshot<'a> {
    pub counters: Option<KernelCounters>,
    pub delivered: u64,
    pub store: &'a StoreStatus,
    pub policy_error: bool,
    pub watched_apps: usize,
    pub uptime: Duration,
}

/// Counts by (category, severity) and writes the file when due.
#[derive(Debug)]
pub struct Metrics {
    opts: MetricsOptions,
    next: Instant,
    contacts: BTreeMap<(String, String), u64>,
    alerts: BTreeMap<(String, String), u64>,
    /// The last write failed (said once until one succeeds).
    failing: bool,
}

/// Labels of a finding: its category and severity, `none` where the policy lists neither.
fn labels(f: &Finding) -> (String, String) {
    (
        f.category
            .as_ref()
            .map_or("none".to_owned(), |c| c.as_str().to_owned()),
        f.severity.map_or("none", |s| s.as_str()).to_owned(),
    )
}

impl Metrics {
    /// How often the file is written.
    pub fn every(&self) -> Duration {
        self.opts.every
    }

    pub fn new(opts: MetricsOptions) -> Self {
        Self {
            opts,
            next: Instant::now(),
            contacts: BTreeMap::new(),
            alerts: BTreeMap::new(),
            failing: false,
        }
    }

    /// A new contact (a row created or renamed).
    pub fn contact(&mut self, f: &Finding) {
        // Bounded: categories come from policies, severities are four.
        if self.contacts.len() < 1024 || self.contacts.contains_key(&labels(f)) {
            *self.contacts.entry(labels(f)).or_default() += 1;
        }
    }

    pub fn alert(&mut self, f: &Finding) {
        if self.alerts.len() < 1024 || self.alerts.contains_key(&labels(f)) {
            *self.alerts.entry(labels(f)).or_default() += 1;
        }
    }

    /// Writes the file if it is due (every `every`; at once the first time).
    pub fn tick(&mut self, s: &Snapshot<'_>) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.opts.every;
        self.write(s);
    }

    /// Writes the file now (also on stop, so that the last figures are there).
    pub fn write(&mut self, s: &Snapshot<'_>) {
        let text = self.render(s, resident_bytes());
        match crate::host::files::write_atomic(&self.opts.path, text.as_bytes(), 0o644) {
            Ok(()) if self.failing => {
                self.failing = false;
                log::info!("metrics are written to {} again", self.opts.path.display());
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                log::error!(
                    "cannot write the metrics file {}: {e} (tried again every {} s)",
                    self.opts.path.display(),
                    self.opts.every.as_secs()
                );
            }
            Err(_) => {}
        }
    }

    /// The file's text, in Prometheus' text format.
    pub fn render(&self, s: &Snapshot<'_>, rss: Option<u64>) -> String {
        let mut out = String::new();
        for (name, kind, help, value) in scalars(s, rss) {
            let _ = writeln!(out, "# HELP brokerwatch_{name} {help}");
            let _ = writeln!(out, "# TYPE brokerwatch_{name} {kind}");
            let _ = writeln!(out, "brokerwatch_{name} {value}");
        }
        let by_label = [
            ("contacts_total", "New contacts of watched apps (a process's first connection to a destination) by category and severity.", &self.contacts),
            ("alerts_total", "Alerts (contacts with flagged destinations) by category and severity.", &self.alerts),
        ];
        for (name, help, map) in by_label {
            let _ = writeln!(out, "# HELP brokerwatch_{name} {help}");
            let _ = writeln!(out, "# TYPE brokerwatch_{name} counter");
            for ((category, severity), n) in map {
                let _ = writeln!(
                    out,
                    "brokerwatch_{name}{{category=\"{}\",severity=\"{}\"}} {n}",
                    escape(category),
                    escape(severity)
                );
            }
        }
        out
    }
}

/// One sample without labels: name (after `brokerwatch_`), type, help, value.
type Scalar = (&'static str, &'static str, &'static str, u64);

/// The samples without labels, in the file's order: the daemon's, then the store's.
fn scalars(s: &Snapshot<'_>, rss: Option<u64>) -> Vec<Scalar> {
    let k = s.counters.unwrap_or_default();
    let mut v: Vec<Scalar> = vec![
        (
            "records_generated_total",
            "counter",
            "Records the kernel programs generated.",
            k.generated,
        ),
        (
            "records_delivered_total",
            "counter",
            "Records the daemon read from the ring.",
            s.delivered,
        ),
        (
            "records_lost_total",
            "counter",
            "Records lost because the ring was full.",
            k.lost,
        ),
        (
            "sockets_unread_total",
            "counter",
            "Watched sockets whose first payloads went unread (their kernel slot was reused).",
            k.sock_watch_replaced,
        ),
        (
            "records_over_budget_total",
            "counter",
            "Records refused by a user's budget (counted and folded, not lost silently).",
            k.over_budget,
        ),
        (
            "blocked_calls_total",
            "counter",
            "Connects and sends the kernel denied (blocking).",
            k.blocked,
        ),
        (
            "policy_error",
            "gauge",
            "1 while the policy files do not load (the last good policy is in force).",
            u64::from(s.policy_error),
        ),
        (
            "watched_apps",
            "gauge",
            "Apps the daemon watches.",
            s.watched_apps as u64,
        ),
        (
            "uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            s.uptime.as_secs(),
        ),
    ];
    if let Some(rss) = rss {
        v.push((
            "resident_memory_bytes",
            "gauge",
            "The daemon's resident memory.",
            rss,
        ));
    }
    v.extend(store_scalars(s.store));
    v
}

/// The store's samples.
fn store_scalars(st: &StoreStatus) -> Vec<Scalar> {
    vec![
        (
            "store_connection_rows_written_total",
            "counter",
            "Connection row updates written to the store.",
            st.connections_written,
        ),
        (
            "store_alerts_written_total",
            "counter",
            "Alerts written to the store.",
            st.alerts_written,
        ),
        (
            "store_sent_rows_written_total",
            "counter",
            "Rows of what apps sent written to the store.",
            st.sent_written,
        ),
        (
            "store_pending",
            "gauge",
            "Rows waiting to be written to the store.",
            st.pending,
        ),
        (
            "store_dropped_total",
            "counter",
            "Rows the store gave up on.",
            st.dropped,
        ),
        (
            "store_quota_refused_total",
            "counter",
            "Rows refused by users' store quotas.",
            st.quota_refused,
        ),
        (
            "store_error",
            "gauge",
            "1 while the store cannot be written.",
            u64::from(st.error.is_some()),
        ),
    ]
}

/// A label value as Prometheus reads it (backslash, quote and newline escaped).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// This process's resident memory, from `/proc/self/statm` (pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(category: Option<&str>, severity: Option<crate::policy::Severity>) -> Finding {
        Finding {
            category: category.map(crate::policy::Category::new),
            severity,
            ..Finding::default()
        }
    }

    #[test]
    fn metrics_text_has_every_counter_with_help_type_and_escaped_labels() {
        use crate::policy::Severity;
        let mut m = Metrics::new(MetricsOptions {
            path: "/nonexistent/x.prom".into(),
            every: Duration::from_secs(15),
        });
        m.contact(&finding(Some("data-broker"), Some(Severity::High)));
        m.contact(&finding(Some("data-broker"), Some(Severity::High)));
        m.contact(&finding(None, None));
        m.alert(&finding(Some("odd\"one\\"), Some(Severity::Low)));
        let store = StoreStatus {
            connections_written: 7,
            pending: 2,
            ..StoreStatus::default()
        };
        let text = m.render(
            &Snapshot {
                counters: Some(KernelCounters {
                    generated: 100,
                    lost: 3,
                    ..KernelCounters::default()
                }),
                delivered: 97,
                store: &store,
                policy_error: true,
                watched_apps: 4,
                uptime: Duration::from_secs(60),
            },
            Some(4096),
        );
        for line in [
            "brokerwatch_records_generated_total 100",
            "brokerwatch_records_delivered_total 97",
            "brokerwatch_records_lost_total 3",
            "brokerwatch_sockets_unread_total 0",
            "brokerwatch_store_connection_rows_written_total 7",
            "brokerwatch_store_pending 2",
            "brokerwatch_policy_error 1",
            "brokerwatch_watched_apps 4",
            "brokerwatch_resident_memory_bytes 4096",
            "brokerwatch_contacts_total{category=\"data-broker\",severity=\"high\"} 2",
            "brokerwatch_contacts_total{category=\"none\",severity=\"none\"} 1",
            "brokerwatch_alerts_total{category=\"odd\\\"one\\\\\",severity=\"low\"} 1",
            "# TYPE brokerwatch_records_lost_total counter",
            "# TYPE brokerwatch_store_pending gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        // Every sample has its HELP and TYPE before it.
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(helps, types);
        assert_eq!(helps, 19);
    }

    #[test]
    fn metrics_path_must_end_in_prom_and_its_directory_exist() {
        let opts = |p: &str| MetricsOptions {
            path: p.into(),
            every: Duration::from_secs(1),
        };
        assert!(matches!(
            opts("/tmp/x.txt").check(),
            Err(MetricsError::NotProm(_))
        ));
        assert!(matches!(
            opts("/nonexistent-dir/x.prom").check(),
            Err(MetricsError::NoDirectory(..))
        ));
        assert_eq!(opts("/tmp/x.prom").check(), Ok(()));
    }
}
