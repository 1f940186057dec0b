//! `brokerwatch daemon`: the always-on service. Loads the policies, runs a session that
//! watches the chosen apps, records every connection they make in the store, turns flagged
//! contacts into alerts (in the store, the journal, and on the socket for desktop agents),
//! and tells systemd when it is ready.
//!
//! [`Daemon`] is a state machine with one method per event: records from the kernel
//! ([`Daemon::on_records`]), the periodic tick ([`Daemon::on_tick`]), a reload and its
//! reason ([`Daemon::reload`]), a client's command ([`Daemon::on_command`]) and a client
//! connecting ([`Daemon::on_accept`]). [`run`] only dispatches.

mod identities;
pub mod journal;
pub mod metrics;
mod policy;
mod policy_watch;
mod sent;
pub mod server;
pub mod store;
pub mod systemd;
mod tick;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::{
    net::{UnixListener, UnixStream},
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use self::policy::{PolicyState, Reload};
use crate::{
    defaults,
    host::{
        clock::{boot_ns, now_ms},
        users,
    },
    kernel::{SensorError, SensorOptions},
    policy::{LoadError, PolicySources},
    protocol::{Alert, Event, IdentityOp, Reply},
    session::{
        plaintext::PlaintextSettings, Blocking, Decided, Enforce, Plan, Session, SessionError,
        Step, Watch,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Policy(#[from] LoadError),
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
}

impl From<SensorError> for DaemonError {
    fn from(e: SensorError) -> Self {
        Self::Session(e.into())
    }
}

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// App ids, groups or process names to watch.
    pub apps: Vec<String>,
    pub policy: PolicySources,
    /// Group whose members may connect (socket mode 0660).
    pub group: String,
    /// Group whose members see every user's alerts.
    pub admin_group: String,
    pub retention: store::Retention,
    pub sensor: SensorOptions,
    /// Counters for node_exporter's textfile collector (`--metrics-file`).
    pub metrics: Option<metrics::MetricsOptions>,
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    let (mut d, listener, mut commands) = Daemon::start(opts)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut next_tick = tokio::time::Instant::now() + defaults::DAEMON_TICK;
    loop {
        let resume = d.accept_paused_until;
        let policy_due = d.policy_due;
        tokio::select! {
            step = d.session.next() => {
                d.on_records(step?);
                // The first records after a quiet spell: tick now (plaintext probes for
                // libraries loaded since, the store, the status), then every second.
                next_tick = next_tick.min(tokio::time::Instant::now() + defaults::DAEMON_TICK);
                if d.idle {
                    next_tick = tokio::time::Instant::now();
                }
            }
            conn = listener.accept(), if resume.is_none() => d.on_accept(conn),
            _ = sleep_until(resume), if resume.is_some() => d.accept_paused_until = None,
            _ = hup.recv() => d.reload(Reload::Signal),
            _ = d.policy_watch.changed(), if policy_due.is_none() => {
                d.policy_due = Some(tokio::time::Instant::now() + defaults::POLICY_SETTLE);
            }
            _ = sleep_until(policy_due), if policy_due.is_some() => d.on_policy_event(),
            Some(cmd) = commands.recv() => d.on_command(cmd),
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep_until(next_tick) => {
                let every = d.on_tick();
                next_tick = tokio::time::Instant::now() + every;
            }
        }
    }
    d.stop();
    Ok(())
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    tokio::time::sleep_until(t.unwrap_or_else(tokio::time::Instant::now)).await
}

/// The daemon's state between events.
pub struct Daemon {
    opts: DaemonOptions,
    started: Instant,
    pub session: Session,
    policy: PolicyState,
    store: store::Store,
    shared: Arc<server::Shared>,
    journal: journal::Journal,
    /// This boot's id: connection rows are keyed by it (socket cookies are per boot).
    boot_id: String,
    alerts_total: u64,
    /// The store's last write error, to tell when it changes.
    store_error: Option<String>,
    watchdog: Option<std::time::Duration>,
    last_watchdog: Instant,
    /// After an accept error (out of descriptors), accepting pauses until then instead of
    /// spinning; the ring keeps being read meanwhile.
    accept_paused_until: Option<tokio::time::Instant>,
    accept_errors: u64,
    /// Wakes the loop when a policy file may have changed.
    policy_watch: policy_watch::PolicyWatch,
    /// When to look at the policy files after a watch event (a burst settles first).
    policy_due: Option<tokio::time::Instant>,
    /// When the daemon last looked at the policy files.
    last_policy_look: Instant,
    /// The last tick found nothing new: the next comes after [`defaults::DAEMON_IDLE_TICK`].
    idle: bool,
    /// Records delivered and generated at the last tick (what "nothing new" compares).
    last_books: (u64, Option<u64>),
    /// The store's figures in the status shown now.
    status_store: Option<crate::protocol::StoreStatus>,
    /// Users' own identifiers (`identity add`), for plaintext inspection.
    identities: identities::Identities,
    /// What watched apps sent that was told and stored already.
    sent: sent::SentBook,
    metrics: Option<metrics::Metrics>,
}

impl Daemon {
    /// Opens the store, loads the policy (or the last good one), starts the session and
    /// binds the socket. Returns the daemon, its listener and the queue of commands that
    /// clients send for the main loop.
    pub fn start(
        opts: DaemonOptions,
    ) -> Result<(Self, UnixListener, mpsc::Receiver<server::Command>), DaemonError> {
        let state_err = |source| DaemonError::State {
            path: opts.state_dir.clone(),
            source,
        };
        if let Some(m) = &opts.metrics {
            m.check()?;
        }
        let store = store::Store::open(&opts.state_dir, opts.retention).map_err(state_err)?;
        let policy =
            PolicyState::load(&opts.policy, &opts.state_dir.join(store::LAST_GOOD_POLICY))?;
        let plan = Plan {
            watch: Watch::Apps(opts.apps.clone()),
            sensor: opts.sensor.clone(),
            enforce: Enforce::Try,
        };
        let identities = identities::Identities::open(&opts.state_dir);
        // Plaintext is read only where the administrator's policy says so.
        let plaintext = policy.policy.inspect_plaintext.then(|| PlaintextSettings {
            machine: crate::inspect::machine::machine_identifiers(),
            own: identities.all(),
        });
        let blocking = Blocking::open(&opts.state_dir);
        let session = Session::start_reading(&plan, &policy.policy, blocking, plaintext)?;
        let (commands, command_rx) = mpsc::channel(defaults::COMMAND_QUEUE);
        let listener = bind(&opts)?;
        let shared = Arc::new(server::Shared {
            status: Mutex::new(None),
            alerts_by_uid: Mutex::new(Default::default()),
            connections: Mutex::new(Default::default()),
            store_path: store.path().to_owned(),
            queries: tokio::sync::Semaphore::new(defaults::STORE_QUERIES),
            alerts: tokio::sync::broadcast::channel(defaults::SUBSCRIBER_BACKLOG).0,
            standing: Mutex::new(Vec::new()),
            admin_gid: users::group_gid(&opts.admin_group),
            commands,
            recent_commands: Mutex::new(Default::default()),
            started: Instant::now(),
            store: store.gauge(),
        });
        let mut d = Self {
            started: Instant::now(),
            session,
            policy,
            store,
            shared,
            journal: journal::Journal::open(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            alerts_total: 0,
            store_error: None,
            watchdog: systemd::watchdog_interval(),
            last_watchdog: Instant::now(),
            accept_paused_until: None,
            accept_errors: 0,
            identities,
            sent: Default::default(),
            metrics: opts.metrics.clone().map(metrics::Metrics::new),
            policy_watch: policy_watch::PolicyWatch::new(&opts.policy),
            policy_due: None,
            last_policy_look: Instant::now(),
            idle: false,
            last_books: (0, None),
            status_store: None,
            opts,
        };
        // Connections the watched apps had open before the start are rows already.
        d.decide_changes();
        d.update_status(d.session.counters().ok());
        // What holds from the start (a policy that did not load) is told to admins who
        // subscribe; a reload or the store's state changes it later.
        d.update_standing();
        systemd::notify("READY=1\nSTATUS=watching");
        log::info!(
            "ready: watching {} app(s), socket {}",
            d.session.watched().len(),
            d.opts.socket.display()
        );
        Ok((d, listener, command_rx))
    }

    /// A batch of records was handled: every changed row that is flagged becomes an alert.
    pub fn on_records(&mut self, _step: Step) {
        self.decide_changes();
    }

    /// Decides the rows that changed (records, or connections found open at the start).
    fn decide_changes(&mut self) {
        let before = self.alerts_total;
        for decided in self.session.changes(&self.policy.policy) {
            if let Some(m) = &mut self.metrics {
                m.contact(&decided.finding);
            }
            if decided.finding.flagged {
                self.alert(decided);
            }
        }
        if self.alerts_total != before {
            self.update_status(self.session.counters().ok());
        }
    }

    /// A flagged contact: to the journal, the store and every subscriber who may see it.
    fn alert(&mut self, d: Decided) {
        self.journal.alert(&d.finding);
        if let Some(m) = &mut self.metrics {
            m.alert(&d.finding);
        }
        let alert = Arc::new(Alert {
            finding: d.finding,
            ts_ms: now_ms(),
            connect_boot_ns: d.first_ns,
            decided_boot_ns: boot_ns(),
        });
        self.store.record_alert(alert.clone());
        self.alerts_total += 1;
        if let Ok(mut by_uid) = self.shared.alerts_by_uid.lock() {
            // Bounded: a user with many subordinate uids cannot grow it without end.
            let uid = alert.finding.uid;
            if by_uid.len() < defaults::MAX_UIDS_TRACKED || by_uid.contains_key(&uid) {
                *by_uid.entry(uid).or_default() += 1;
            }
        }
        let _ = self.shared.alerts.send(Event::Alert(alert));
    }

    /// A client connected: it is served on a task of its own.
    pub fn on_accept(&mut self, conn: std::io::Result<(UnixStream, tokio::net::unix::SocketAddr)>) {
        match conn {
            Ok((stream, _)) => {
                tokio::spawn(server::serve(stream, self.shared.clone()));
            }
            Err(e) => {
                self.accept_errors += 1;
                if self.accept_errors.is_power_of_two() {
                    log::error!(
                        "cannot accept clients: {e} ({} times so far); pausing {} ms (raise LimitNOFILE if this is EMFILE)",
                        self.accept_errors,
                        defaults::ACCEPT_PAUSE.as_millis()
                    );
                }
                self.accept_paused_until =
                    Some(tokio::time::Instant::now() + defaults::ACCEPT_PAUSE);
            }
        }
    }

    /// Reloads the policy (a broken file keeps the one in force, and admins are told) and
    /// makes the kernel block what the policy in force blocks.
    pub fn reload(&mut self, why: Reload) {
        if let Some(notice) = self.policy.reload(why) {
            let _ = self.shared.alerts.send(Event::Notice(notice));
        }
        // A failure is kept for `status` by the session's blocking.
        let _ = self.session.apply_blocks(&self.policy.policy);
        // The files may be others now (a new link in the directory).
        self.policy_watch = policy_watch::PolicyWatch::new(self.policy.sources());
        self.update_standing();
        self.update_status(self.session.counters().ok());
    }

    /// A watched policy directory changed and settled: reload if a policy file did.
    pub fn on_policy_event(&mut self) {
        self.policy_due = None;
        self.look_at_policy_files();
    }

    fn look_at_policy_files(&mut self) {
        self.last_policy_look = Instant::now();
        if self.policy.files_changed() {
            self.reload(Reload::FileChanged);
        }
    }

    /// A request only the main loop can carry out.
    pub fn on_command(&mut self, cmd: server::Command) {
        match cmd {
            server::Command::Block {
                peer,
                app,
                company,
                unblock,
                reply,
            } => {
                let policy = &self.policy.policy;
                let before = self.session.blocking.user_blocks().len();
                let outcome = self
                    .session
                    .user_block_request(policy, peer, &app, &company, unblock);
                let verb = if unblock { "unblock" } else { "block" };
                // Requests that change nothing are logged at debug only: a user repeating
                // one must not fill the log.
                let level = match self.session.blocking.user_blocks().len() != before {
                    true => log::Level::Info,
                    false => log::Level::Debug,
                };
                log::log!(
                    level,
                    "uid {} asked to {verb} {} -> {}: {outcome:?}",
                    peer.uid,
                    crate::display::safe(&app),
                    crate::display::safe(&company)
                );
                let _ = reply.send(outcome);
                if level == log::Level::Info {
                    self.update_status(self.session.counters().ok());
                }
            }
            server::Command::Blocks { peer, reply } => {
                let _ = reply.send(self.session.blocking.visible_to(peer));
            }
            server::Command::Identity { peer, op, reply } => {
                let _ = reply.send(self.identity(peer.uid, op));
            }
        }
    }

    /// `identity add|remove|list` for `uid`'s own identifiers; values are never logged.
    fn identity(&mut self, uid: u32, op: IdentityOp) -> Result<Reply, String> {
        let done = |message: String| Reply::Done { message };
        let outcome = match op {
            IdentityOp::List => {
                return Ok(Reply::Identities {
                    identities: self.identities.list(uid),
                    inspecting: self.session.plaintext.is_some(),
                })
            }
            IdentityOp::Add { kind, value } => {
                let now = crate::host::clock::now_ms();
                self.identities.add(uid, kind, &value, now).map(done)
            }
            IdentityOp::Remove { kind, value } => {
                self.identities.remove(uid, kind, &value).map(done)
            }
        };
        if outcome.is_ok() {
            log::info!("uid {uid} changed their identifiers");
        }
        if let Some(p) = &mut self.session.plaintext {
            p.inspector.set_own(uid, self.identities.of(uid));
        }
        outcome
    }

    /// Hands the rows that changed since the last call to the store, decided as alerts
    /// are (so the store knows which were flagged), and forgets rows a rename merged away.
    fn store_touched(&mut self) {
        let touched = self.session.touched(&self.policy.policy);
        for (key, agg, finding) in touched.rows {
            let clock = &self.session.clock;
            self.store.record_connection(store::ConnRow {
                key: row_key(&self.boot_id, &key, agg.first_cookie),
                first_ms: clock.epoch_ms(agg.first_ns),
                last_ms: clock.epoch_ms(agg.last_ns),
                finding,
            });
        }
        for (key, first_cookie) in touched.merged {
            self.store
                .forget_connection(row_key(&self.boot_id, &key, first_cookie));
        }
    }

    /// Stops: the last rows go to the store, the socket file goes.
    pub fn stop(mut self) {
        systemd::notify("STOPPING=1");
        self.store_touched();
        self.store.close();
        self.write_metrics(true);
        let _ = std::fs::remove_file(&self.opts.socket);
    }
}

/// The socket, for root and the socket group (root alone when the group is missing).
fn bind(opts: &DaemonOptions) -> Result<UnixListener, DaemonError> {
    let gid = users::group_gid(&opts.group);
    if gid.is_none() {
        log::warn!(
            "group {:?} does not exist: only root can use the socket (create it with `groupadd --system {}`)",
            opts.group,
            opts.group
        );
    }
    server::bind(&opts.socket, gid).map_err(|source| DaemonError::Socket {
        path: opts.socket.clone(),
        source,
    })
}

/// A connection row's identity in the store: socket cookies are unique within a boot, and
/// one socket may reach several destinations or carry several names.
fn row_key(boot_id: &str, key: &crate::engine::ConnKey, first_cookie: u64) -> String {
    format!(
        "{boot_id}/{first_cookie}/{}/{:?}/{}/{}/{}",
        key.pid,
        key.proto,
        key.dst,
        key.port,
        key.domain.as_deref().unwrap_or("")
    )
}
