//! `brokerwatch audit`: watch running apps, or one launched command and its descendants,
//! for a while, then report every connection they made.
//!
//! The session ([`crate::session`]) does the watching; this module decides when the audit
//! ends and what it reports. [`format`] writes the report; `live` the terminal's status
//! line.

pub mod format;
mod live;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;

use self::format::Format;
pub use crate::session::Target;
use crate::{
    finding::Finding,
    kernel::{KernelCounters, SensorOptions},
    policy::Policy,
    session::{
        launch::LaunchError, plaintext::PlaintextSettings, Blocking, HostEnv, Patience, Plan,
        Session, SessionError, Step, Watch,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("cannot write the recording to {path}: {source}")]
    Record {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub target: Target,
    /// A live status line and flagged contacts on stderr (when it is a terminal).
    pub live: bool,
    pub duration: Option<Duration>,
    pub sensor: SensorOptions,
    /// Deny what `block` rules cover (else such contacts are reported as would-be blocks).
    pub enforce: bool,
    /// Also write every kernel record, as received, to this file.
    pub record: Option<PathBuf>,
    /// Identifiers to look for in what the watched apps send (`--email`, `--name`,
    /// `--phone`); any of them, or the policy's `inspect_plaintext`, turns reading on.
    pub identities: Vec<crate::inspect::Identifier>,
}

impl AuditOptions {
    /// Whether only Ctrl-C ends this audit (no duration, no command).
    pub fn waits_for_ctrl_c(&self) -> bool {
        self.duration.is_none() && !matches!(self.target, Target::Command(_))
    }
}

/// Totals printed after the rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub duration_ms: u64,
    /// The running kernel's release.
    pub kernel: String,
    /// Programs and where they were attached.
    pub hooks: Vec<String>,
    pub processes_seen: u64,
    pub connection_rows: usize,
    pub connections: u64,
    /// Rows whose destination the policy flags (alert or block).
    pub flagged: usize,
    /// `--enforce`: the kernel denied what block rules cover.
    pub enforced: bool,
    /// Connects and sends the kernel denied.
    pub blocked_calls: u64,
    /// Rows a block rule covers that went through: would-be blocks (without `--enforce`),
    /// or contacts nothing named before the connect.
    pub not_blocked: usize,
    pub records_generated: u64,
    pub records_delivered: u64,
    pub records_lost: u64,
    /// Records the kernel refused because their user was over budget (a flood).
    pub records_over_budget: u64,
    pub records_undecodable: u64,
    pub watch_table_full: u64,
    /// Watched sockets whose first payloads went unread (their kernel slot went to a newer
    /// watched socket before they sent).
    #[serde(default)]
    pub sockets_unread: u64,
    pub udp_repeats_folded: u64,
    pub rows_dropped: u64,
    pub command: Option<String>,
    pub command_pid: Option<u32>,
    pub command_status: Option<String>,
    pub command_exit_code: Option<i32>,
    pub still_running: Vec<u32>,
    /// What was watched: app ids, groups and names, or the command.
    pub watched: Vec<String>,
    /// Things the watched apps sent (identifiers, other people's addresses) and how many
    /// of them went to destinations the policy flags; `None` when plaintext was not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_flagged: Option<usize>,
    /// What the plaintext reader read and could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<crate::inspect::InspectStats>,
    /// Watched programs whose TLS cannot be read (built in without symbols), as sentences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plaintext_not_readable: Vec<String>,
}

impl Summary {
    pub fn fill_counters(&mut self, k: &KernelCounters, delivered: u64, undecodable: u64) {
        self.records_generated = k.generated;
        self.records_lost = k.lost;
        self.records_over_budget = k.over_budget;
        self.records_delivered = delivered;
        self.records_undecodable = undecodable;
        self.watch_table_full = k.watch_table_full;
        self.sockets_unread = k.sock_watch_replaced;
        self.udp_repeats_folded = k.udp_repeats;
        self.blocked_calls = k.blocked;
    }
}

/// The result of an audit: rows and summary, ready to print.
#[derive(Debug)]
pub struct AuditOutcome {
    pub rows: Vec<Finding>,
    /// What the watched apps sent (with plaintext inspection).
    pub leaks: Vec<crate::leak::Leak>,
    pub summary: Summary,
}

impl AuditOutcome {
    /// Whether the audit saw what brokerwatch exists to report: a contact the policy flags,
    /// or an identifier sent to such a destination (exit status 1).
    pub fn flagged(&self) -> bool {
        self.summary.flagged > 0 || self.summary.sent_flagged.is_some_and(|n| n > 0)
    }

    /// Writes the report; `color` for a terminal (the table only).
    pub fn write(
        &self,
        out: &mut dyn std::io::Write,
        format: Format,
        color: bool,
    ) -> std::io::Result<()> {
        match format {
            Format::Table => {
                format::write_text(out, &self.report(), &self.leaks, &self.summary, color)
            }
            _ => format::write(out, format, &self.rows, &self.leaks, &self.summary),
        }
    }

    /// The report as one HTML page.
    pub fn write_html(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let report = self.report();
        let apps: Vec<&str> = report.apps.iter().map(|a| a.app.as_str()).collect();
        let title = match apps.len() {
            0 => "brokerwatch audit: no connections".to_owned(),
            1..=3 => format!("brokerwatch audit: what {} talked to", apps.join(", ")),
            n => format!("brokerwatch audit: what {n} apps talked to"),
        };
        out.write_all(crate::report::html::render(&report, &title).as_bytes())?;
        out.flush()
    }

    /// The audit as a report (app -> company -> destination) with the audit's facts.
    pub fn report(&self) -> crate::report::Report {
        let contacts = self
            .rows
            .iter()
            .map(|f| crate::report::Contact::of(f, f.first_ms, f.last_ms));
        let sent = self.leaks.iter().map(crate::report::SentContact::of);
        let mut r = crate::report::build(contacts, sent, "audit", 0, 0);
        let s = &self.summary;
        let mut facts = vec![("Watched".to_owned(), s.watched.join(", "))];
        if let Some(cmd) = &s.command {
            facts.push(("Command".into(), cmd.clone()));
            let status = s
                .command_status
                .clone()
                .unwrap_or_else(|| "still running".into());
            facts.push(("Command status".into(), status));
        }
        facts.extend([
            (
                "Duration".to_owned(),
                format!("{:.1} s", s.duration_ms as f64 / 1000.0),
            ),
            ("Kernel".to_owned(), s.kernel.clone()),
            ("Processes seen".to_owned(), s.processes_seen.to_string()),
            ("Connections".to_owned(), s.connections.to_string()),
            (
                "Kernel records".to_owned(),
                format!(
                    "{} generated, {} delivered, {} lost, {} over a user's budget",
                    s.records_generated, s.records_delivered, s.records_lost, s.records_over_budget
                ),
            ),
            ("Programs".to_owned(), s.hooks.join("; ")),
        ]);
        r.facts = facts;
        r
    }
}

/// Runs an audit to completion (command exit, duration, or Ctrl-C).
pub async fn run(opts: AuditOptions, policy: &Policy) -> Result<AuditOutcome, AuditError> {
    let started = Instant::now();
    let plan = Plan::resolve(
        &opts.target,
        opts.sensor.clone(),
        opts.enforce,
        &HostEnv::current(),
    )?;
    let plaintext = (!opts.identities.is_empty() || policy.inspect_plaintext).then(|| {
        let mut everyone = crate::inspect::machine::machine_identifiers();
        everyone.extend(opts.identities.iter().cloned());
        PlaintextSettings {
            machine: everyone,
            own: Default::default(),
        }
    });
    let mut session = Session::start_reading(&plan, policy, Blocking::new(), plaintext)?;
    if let Some(path) = &opts.record {
        let file = std::fs::File::create(path).map_err(|source| AuditError::Record {
            path: path.clone(),
            source,
        })?;
        session.capture.record_to(file);
    }
    if let Watch::Apps(_) = &plan.watch {
        eprintln!("brokerwatch: watching {}", session.watched().join(", "));
    }
    let mut summary = Summary {
        watched: session.watched().to_vec(),
        command: opts.target.command().map(|argv| argv.join(" ")),
        command_pid: session.command_pid(),
        enforced: opts.enforce,
        ..Summary::default()
    };
    watch_until_done(&mut session, &opts, policy, &mut summary).await?;
    // Everything the kernel produced before we stopped: drain until the books balance.
    session.settle(Patience::REPORT, |_| {}).await?;
    let (rows, leaks) = finish(session, policy, &mut summary)?;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Ok(AuditOutcome {
        rows,
        leaks,
        summary,
    })
}

/// Watches until the command exits, the duration passes or Ctrl-C; on a terminal, shows
/// the live view meanwhile.
async fn watch_until_done(
    session: &mut Session,
    opts: &AuditOptions,
    policy: &Policy,
    summary: &mut Summary,
) -> Result<(), AuditError> {
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let sleep_until = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut ticker = tokio::time::interval(crate::defaults::AUDIT_TICK);
    let mut live = live::Live::new(opts.live);
    loop {
        tokio::select! {
            step = session.next() => match step? {
                Step::Records(_) => {
                    // Deciding costs: only for the live view, and for blocks that follow
                    // contacts nothing named before their connect.
                    if live.on() || session.blocking.enforcing {
                        for d in session.changes(policy) {
                            live.contact(&d.finding);
                        }
                    }
                }
                Step::Exited(status) => {
                    summary.command_exit(status);
                    break;
                }
            },
            _ = &mut sleep_until => break,
            _ = &mut ctrl_c => {
                log::info!("interrupted; writing the report");
                break;
            }
            _ = ticker.tick() => {
                let health = session.tick();
                let stats = session.engine.stats;
                live.status(stats.processes_seen, stats.sock_records);
                for notice in [health.loss, health.over_budget].into_iter().flatten() {
                    log::warn!("{}", notice.message);
                }
            }
        }
    }
    live.finish();
    Ok(())
}

/// The audit's rows, and the summary's figures from the session.
fn finish(
    mut session: Session,
    policy: &Policy,
    summary: &mut Summary,
) -> Result<(Vec<Finding>, Vec<crate::leak::Leak>), AuditError> {
    let counters = session.counters()?;
    summary.kernel = session.sensor.kernel.release.clone();
    summary.hooks = session.sensor.hooks();
    let capture = &session.capture;
    summary.fill_counters(&counters, capture.delivered, capture.undecodable);
    if let Some(e) = &capture.first_decode_error {
        log::warn!(
            "{} records could not be decoded, first: {e}",
            capture.undecodable
        );
    }
    let rows = session.findings(policy);
    let leaks = session.leaks(policy);
    if let Some(p) = &session.plaintext {
        summary.plaintext = Some(p.stats());
        summary.plaintext_not_readable = p.not_readable.clone();
        summary.sent = Some(leaks.len());
        summary.sent_flagged = Some(leaks.iter().filter(|l| l.flagged).count());
    }
    let stats = session.engine.stats;
    summary.processes_seen = stats.processes_seen;
    summary.rows_dropped = stats.rows_dropped;
    summary.not_blocked = rows.iter().filter(|r| r.block_note.is_some()).count();
    summary.connection_rows = rows.len();
    summary.connections = rows.iter().map(|r| r.count).sum();
    summary.flagged = rows.iter().filter(|r| r.flagged).count();
    summary.still_running = session.finish();
    Ok((rows, leaks))
}

impl Summary {
    /// The launched command ended with `status`.
    fn command_exit(&mut self, status: std::io::Result<std::process::ExitStatus>) {
        match status {
            Ok(st) => {
                self.command_exit_code = st.code();
                self.command_status = Some(describe_status(st));
            }
            Err(e) => self.command_status = Some(format!("unknown ({e})")),
        }
    }
}

fn describe_status(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (st.code(), st.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended".to_owned(),
    }
}
