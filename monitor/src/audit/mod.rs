//! `brokerwatch audit`: watch running apps, or one launched command and its descendants,
//! for a while, then report every connection they made.
//!
//! [`launch`] starts the audited command held at a gate; [`format`] writes the report.

pub mod format;
pub mod launch;
mod live;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use monitor_common::{MODE_ALL, MODE_CGROUPS, WATCH_TAG_ALL, WATCH_TAG_CGROUP};

use serde::Serialize;

use self::{
    format::Format,
    launch::{LaunchError, RunAs},
};
use crate::{
    defaults,
    engine::Engine,
    finding::{self, Finding},
    host::{
        cgroup::{self, CgroupError, OwnedCgroup},
        clock::Clock,
        users::UserNames,
    },
    kernel::{AttachScope, Capture, KernelCounters, Sensor, SensorError, SensorOptions},
    policy::{Policy, PolicyError},
    watch::{self, Watcher},
};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Sensor(#[from] SensorError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("reading kernel records: {0}")]
    Io(#[from] std::io::Error),
    #[error("--enforce: {0}")]
    Block(#[from] crate::kernel::BlockError),
}

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every process.
    All,
    /// Apps by policy id / group, or bare process names.
    Apps(Vec<String>),
    /// Launch this command and watch its process tree.
    Command(Vec<String>),
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
    pub records_undecodable: u64,
    pub watch_table_full: u64,
    pub udp_repeats_folded: u64,
    pub rows_dropped: u64,
    pub command: Option<String>,
    pub command_pid: Option<u32>,
    pub command_status: Option<String>,
    pub command_exit_code: Option<i32>,
    pub still_running: Vec<u32>,
    /// What was watched: app ids, groups and names, or the command.
    pub watched: Vec<String>,
}

impl Summary {
    pub fn fill_counters(&mut self, k: &KernelCounters, delivered: u64, undecodable: u64) {
        self.records_generated = k.generated;
        self.records_lost = k.lost;
        self.records_delivered = delivered;
        self.records_undecodable = undecodable;
        self.watch_table_full = k.watch_table_full;
        self.udp_repeats_folded = k.udp_repeats;
        self.blocked_calls = k.blocked;
    }
}

/// The result of an audit: rows and summary, ready to print.
#[derive(Debug)]
pub struct AuditOutcome {
    pub rows: Vec<Finding>,
    pub summary: Summary,
}

impl AuditOutcome {
    /// Writes the report; `color` for a terminal (the table only).
    pub fn write(
        &self,
        out: &mut dyn std::io::Write,
        format: Format,
        color: bool,
    ) -> std::io::Result<()> {
        match format {
            Format::Table => format::write_text(out, &self.report(), &self.summary, color),
            _ => format::write(out, format, &self.rows, &self.summary),
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
        let ms = |s: &str| {
            humantime::parse_rfc3339(s)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        };
        let contacts = self
            .rows
            .iter()
            .map(|f| crate::report::Contact::of(f, ms(&f.ts), ms(&f.last_seen)));
        let mut r = crate::report::build(contacts, "audit", 0, 0);
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
                    "{} generated, {} delivered, {} lost",
                    s.records_generated, s.records_delivered, s.records_lost
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
    let clock = Clock::now();
    // An audited command gets a cgroup of its own (unless systemd makes a scope for it),
    // which tells what still runs at the end. The socket programs sit on the cgroup root:
    // the command's processes stay watched wherever they move (`flatpak run` and
    // `systemd-run --scope` move them), and everyone else pays one map look-up per connect
    // while the audit runs.
    let mut owned_cgroup: Option<OwnedCgroup> = None;
    if let Target::Command(_) = &opts.target {
        if !systemd_manages_cgroups() {
            let mount = cgroup::cgroup2_mount()?;
            let cg = OwnedCgroup::create(&mount, &crate::host::cgroup::audit_cgroup_name())?;
            owned_cgroup = Some(cg);
        }
    }
    // Only an app watch may run its programs where the apps live; `--all` and a launched
    // command need them everywhere.
    let mut sensor_opts = opts.sensor.clone();
    if !matches!(opts.target, Target::Apps(_)) {
        sensor_opts.attach = AttachScope::Root;
    }
    let mut sensor = Sensor::load(&sensor_opts)?;
    let mut capture = Capture::new(sensor.take_ring()?)?;
    if let Some(path) = &opts.record {
        capture.record_to(std::fs::File::create(path)?);
    }
    let mut engine = Engine::new();
    let mut summary = Summary::default();

    let mut gated = None;
    let mut watcher = None;
    match &opts.target {
        Target::All => {
            if opts.enforce {
                let plan = policy.block_plan(&[None], false);
                sensor.set_blocks(&watch::block_tables(&plan, &[WATCH_TAG_ALL]))?;
            }
            sensor.set_mode(MODE_ALL)?;
            summary.watched = vec!["every process".into()];
        }
        Target::Apps(names) => {
            let w = Watcher::start(&mut sensor, &mut engine, &policy.apps, names)?;
            if opts.enforce {
                sensor.set_blocks(&w.block_plan(policy, false).1)?;
            }
            eprintln!("brokerwatch: watching {}", w.labels().join(", "));
            summary.watched = w.labels();
            watcher = Some(w);
        }
        Target::Command(argv) => {
            let (program, args) = argv.split_first().expect("clap requires a command");
            let path_var = std::env::var_os("PATH");
            let resolved = launch::resolve_command(program, path_var.as_ref())?;
            let run_as: Option<RunAs> = launch::sudo_user(
                std::env::var("SUDO_UID").ok().as_deref(),
                std::env::var("SUDO_GID").ok().as_deref(),
            )?
            .map(|(uid, gid)| launch::run_as(uid, gid));
            let label = Path::new(program)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(program)
                .to_owned();
            if opts.enforce {
                // The command's app, if the policy defines it; else only `apps = "*"`
                // rules apply to it.
                let exe = resolved.display().to_string();
                let app = policy.apps.apps.iter().find(|a| {
                    a.matches(&crate::policy::Seen {
                        comm: &label,
                        exe: Some(&exe),
                        ..Default::default()
                    })
                });
                let plan = policy.block_plan(&[app], false);
                sensor.set_blocks(&watch::block_tables(&plan, &[WATCH_TAG_CGROUP]))?;
            }
            engine.name_watch_tag(WATCH_TAG_CGROUP, label);
            let (exec_path, exec_args, run_as) = systemd_scope_wrapper(&resolved, args, run_as);
            if let Some(cg) = &owned_cgroup {
                sensor.watch_cgroup(cg.id, WATCH_TAG_CGROUP)?;
                sensor.set_mode(MODE_CGROUPS)?;
            }
            // Registered before the command runs a single instruction of its own.
            let child = launch::spawn_gated(&exec_path, &exec_args, run_as.as_ref(), |pid| {
                sensor.watch_tgid(pid, WATCH_TAG_CGROUP)?;
                if let Some(cg) = &owned_cgroup {
                    cg.add_pid(pid)?;
                }
                Ok::<(), AuditError>(())
            })??;
            summary.command = Some(argv.join(" "));
            summary.watched = vec![format!("the command {} and its descendants", argv[0])];
            summary.command_pid = Some(child.id());
            let mut child = child;
            gated = Some(tokio::task::spawn_blocking(move || child.wait()));
        }
    }

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
    let mut child_done = gated.is_none();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut live = live::Live::new(opts.live);
    let mut live_users = UserNames::default();
    let mut lost_seen = 0u64;
    loop {
        tokio::select! {
            res = capture.next_batch(|r| {
                if let Some(w) = &mut watcher {
                    w.observe(&r);
                }
                engine.handle(&r);
            }) => {
                res?;
                if let Some(w) = &mut watcher {
                    w.apply(&mut sensor)?;
                }
                if live.on() {
                    for (key, agg) in engine.take_changes() {
                        let mut cx = finding::Context { clock: &clock, users: &mut live_users, policy, enforcing: opts.enforce };
                        live.contact(&finding::decide(&engine, &key, &agg, &mut cx));
                    }
                }
            }
            status = async { gated.as_mut().expect("guarded").await }, if !child_done => {
                child_done = true;
                match status.map_err(std::io::Error::other).and_then(|s| s) {
                    Ok(st) => {
                        summary.command_exit_code = st.code();
                        summary.command_status = Some(describe_status(st));
                    }
                    Err(e) => summary.command_status = Some(format!("unknown ({e})")),
                }
                if gated.is_some() {
                    break;
                }
            }
            _ = &mut sleep_until => break,
            _ = &mut ctrl_c => {
                log::info!("interrupted; writing the report");
                break;
            }
            _ = ticker.tick() => {
                if let Some(w) = &mut watcher {
                    w.prune(&mut sensor)?;
                }
                let k = sensor.counters()?;
                live.status(engine.stats.processes_seen, engine.stats.sock_records);
                if k.lost > lost_seen {
                    log::warn!("{} kernel records lost so far: the ring buffer was full (raise --ring-size)", k.lost);
                    lost_seen = k.lost;
                }
            }
        }
    }

    live.finish();
    // Everything the kernel produced before we stopped: drain until the books balance.
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        capture.drain(|r| engine.handle(&r));
        let k = sensor.counters()?;
        if k.generated == capture.delivered + k.lost
            || settle.elapsed() > Duration::from_millis(500)
        {
            break;
        }
    }
    let counters = sensor.counters()?;
    summary.kernel = sensor.kernel.release.clone();
    summary.hooks = sensor.hooks();
    summary.fill_counters(&counters, capture.delivered, capture.undecodable);
    if let Some(e) = &capture.first_decode_error {
        log::warn!(
            "{} records could not be decoded, first: {e}",
            capture.undecodable
        );
    }
    if let Some(cg) = &owned_cgroup {
        summary.still_running = cg.pids();
    }
    drop(owned_cgroup);

    let mut users = UserNames::default();
    let rows = finding::all(
        &engine,
        &mut finding::Context {
            clock: &clock,
            users: &mut users,
            policy,
            enforcing: opts.enforce,
        },
    );
    summary.enforced = opts.enforce;
    summary.not_blocked = rows.iter().filter(|r| r.block_note.is_some()).count();
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary.processes_seen = engine.stats.processes_seen;
    summary.connection_rows = rows.len();
    summary.connections = rows.iter().map(|r| r.count).sum();
    summary.rows_dropped = engine.stats.rows_dropped;
    summary.flagged = rows.iter().filter(|r| r.flagged).count();
    Ok(AuditOutcome { rows, summary })
}

/// Where systemd manages cgroups, the command runs in a transient scope of its own
/// (`systemd-run --scope`, which execs the command in place, keeping the watched pid);
/// elsewhere brokerwatch makes a child of the cgroup v2 root.
fn systemd_scope_wrapper(
    program: &Path,
    args: &[String],
    run_as: Option<RunAs>,
) -> (PathBuf, Vec<String>, Option<RunAs>) {
    let systemd_run = launch::resolve_command("systemd-run", std::env::var_os("PATH").as_ref());
    match (systemd_manages_cgroups(), systemd_run) {
        (true, Ok(systemd_run)) => {
            let mut a = vec![
                "--scope".to_owned(),
                "--quiet".to_owned(),
                "--collect".to_owned(),
                format!("--unit=brokerwatch-audit-{}", std::process::id()),
            ];
            // systemd-run needs root to create the scope; it drops to the user itself.
            if let Some(r) = &run_as {
                a.push(format!("--uid={}", r.uid));
                a.push(format!("--gid={}", r.gid));
            }
            a.extend(["--".to_owned(), program.display().to_string()]);
            a.extend(args.iter().cloned());
            (systemd_run, a, None)
        }
        _ => (program.to_owned(), args.to_vec(), run_as),
    }
}

fn systemd_manages_cgroups() -> bool {
    Path::new(defaults::SYSTEMD_RUNTIME).is_dir()
}

fn describe_status(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (st.code(), st.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended".to_owned(),
    }
}
