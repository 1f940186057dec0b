//! One pipeline for every way in: the audit, the daemon, the test harness and the benches
//! all run a [`Session`]. It loads the sensor for a [`Plan`], reads its ring, turns records
//! into connection rows ([`Engine`]), follows the watched apps ([`Watcher`]), launches an
//! audited command held at its gate, applies block plans ([`Blocking`]), reports lost
//! records one way ([`Health`]) and decides what rows mean ([`Finding`]). What to do with
//! the findings is the sinks' business.
//!
//! [`plan`] resolves what to watch against the machine; [`launch`] starts a command under
//! watch; [`blocking`] owns the policy's blocks and users' own.

pub mod blocking;
mod health;
pub mod launch;
pub mod plaintext;
pub mod plan;

use std::{
    io,
    process::ExitStatus,
    time::{Duration, Instant},
};

use monitor_common::{MODE_ALL, MODE_CGROUPS, WATCH_TAG_ALL, WATCH_TAG_CGROUP};

use self::launch::LaunchError;
pub use self::{
    blocking::Blocking,
    health::{BudgetReporter, Health, LossReporter},
    plan::{Enforce, HostEnv, Launch, Plan, Target, Watch},
};
use crate::{
    engine::{ConnAgg, ConnKey, Engine},
    finding::{self, Finding},
    host::{
        cgroup::{self, CgroupError, OwnedCgroup},
        clock::Clock,
        users::UserNames,
    },
    kernel::{wire::Record, Capture, KernelCounters, Sensor, SensorError},
    policy::{AppDef, Policy, Seen},
    protocol::Notice,
    watch::Watcher,
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Sensor(#[from] SensorError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("reading kernel records: {0}")]
    Io(#[from] io::Error),
    /// Not a `source`: its text is in the message already (said once, not twice).
    #[error("--enforce: {0}")]
    Block(crate::kernel::BlockError),
}

impl From<crate::kernel::BlockError> for SessionError {
    fn from(e: crate::kernel::BlockError) -> Self {
        Self::Block(e)
    }
}

/// What [`Session::next`] saw.
#[derive(Debug)]
pub enum Step {
    /// A batch of records was handled (how many).
    Records(usize),
    /// The launched command ended.
    Exited(io::Result<ExitStatus>),
}

/// A changed connection row, decided.
#[derive(Debug, Clone)]
pub struct Decided {
    pub finding: Finding,
    /// Kernel clock of the row's first connection.
    pub first_ns: u64,
    /// Network namespace cookie of the row's first socket.
    pub netns: u64,
}

/// Rows that changed since the store last asked, decided; and rows a rename removed.
#[derive(Debug, Default)]
pub struct Touched {
    pub rows: Vec<(ConnKey, ConnAgg, Finding)>,
    pub merged: Vec<(ConnKey, u64)>,
}

/// How long [`Session::settle`] waits for the kernel's books to balance, and how often it
/// looks.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub total: Duration,
    pub every: Duration,
}

impl Patience {
    /// An audit's end: the reader is quick, a little is enough.
    pub const REPORT: Self = Self {
        total: Duration::from_millis(500),
        every: Duration::from_millis(10),
    };
    /// A test that must see everything.
    pub const TEST: Self = Self {
        total: Duration::from_secs(5),
        every: Duration::from_millis(5),
    };
}

/// The launched command: its wait, and the cgroup brokerwatch made for it.
struct Launched {
    pid: u32,
    wait: Option<tokio::task::JoinHandle<io::Result<ExitStatus>>>,
    cgroup: Option<OwnedCgroup>,
}

/// For whom block plans are made when no [`Watcher`] says it: one app (or none) under
/// one watch tag.
struct BlockTarget {
    app: Option<String>,
    tag: u32,
}

pub struct Session {
    pub sensor: Sensor,
    pub capture: Capture,
    pub engine: Engine,
    /// The watched apps (an app watch), else `None`.
    pub watcher: Option<Watcher>,
    pub blocking: Blocking,
    pub clock: Clock,
    users: UserNames,
    target: Option<BlockTarget>,
    enforce: Enforce,
    loss: LossReporter,
    budget: BudgetReporter,
    launched: Option<Launched>,
    /// What is watched, as people read it.
    watched: Vec<String>,
    /// What watched apps send (opt-in).
    pub plaintext: Option<plaintext::Plaintext>,
}

impl Session {
    /// Loads the programs, starts watching what `plan` says and applies `blocking` (with
    /// `policy`); a command is launched last, so that its first instruction is watched and
    /// its first connection judged by the blocks in force.
    pub fn start(plan: &Plan, policy: &Policy, blocking: Blocking) -> Result<Self, SessionError> {
        Self::start_reading(plan, policy, blocking, None)
    }

    /// As [`Session::start`], and with `plaintext`, reads what the watched processes hand
    /// their TLS libraries (not with `--all`: every process on the machine would pay).
    pub fn start_reading(
        plan: &Plan,
        policy: &Policy,
        blocking: Blocking,
        plaintext: Option<plaintext::PlaintextSettings>,
    ) -> Result<Self, SessionError> {
        let cgroup = match &plan.watch {
            Watch::Command(l) if l.own_cgroup => Some(OwnedCgroup::create(
                &cgroup::cgroup2_mount()?,
                &cgroup::audit_cgroup_name(),
            )?),
            _ => None,
        };
        let mut sensor = Sensor::load(&plan.sensor)?;
        let mut capture = Capture::new(sensor.take_ring()?)?;
        capture.tell_passes_to(sensor.take_reader_awake()?);
        let mut session = Self {
            sensor,
            capture,
            engine: Engine::new(),
            watcher: None,
            blocking,
            clock: Clock::now(),
            users: UserNames::default(),
            target: None,
            enforce: plan.enforce,
            loss: LossReporter::default(),
            budget: BudgetReporter::default(),
            launched: None,
            watched: Vec::new(),
            plaintext: None,
        };
        if let Some(settings) = plaintext {
            if matches!(plan.watch, Watch::All) {
                log::warn!("plaintext is not read when watching every process: name the apps");
            } else {
                session.sensor.read_plaintext();
                session.plaintext = Some(plaintext::Plaintext::new(settings));
            }
        }
        session.watch(&plan.watch, policy, cgroup.as_ref())?;
        match (session.apply_blocks(policy), plan.enforce) {
            (Err(e), Enforce::Must) => return Err(e),
            // The reason is kept in the blocking's status; monitoring goes on.
            (Err(_), _) | (Ok(()), _) => {}
        }
        if let Watch::Command(l) = &plan.watch {
            session.launch(l, cgroup)?;
        }
        Ok(session)
    }

    /// Sets the kernel's watch tables for `watch` (the command's cgroup, if it has one).
    fn watch(
        &mut self,
        watch: &Watch,
        policy: &Policy,
        cgroup: Option<&OwnedCgroup>,
    ) -> Result<(), SessionError> {
        match watch {
            Watch::Nothing => {}
            Watch::All => {
                self.sensor.set_mode(MODE_ALL)?;
                self.target = Some(BlockTarget {
                    app: None,
                    tag: WATCH_TAG_ALL,
                });
                self.watched = vec!["every process".into()];
            }
            Watch::Apps(names) => {
                let w = Watcher::start(&mut self.sensor, &mut self.engine, &policy.apps, names)?;
                self.watched = w.labels();
                self.watcher = Some(w);
            }
            Watch::Command(l) => {
                // The command's app, if the policy defines it; else only `apps = "*"` rules
                // block for it.
                let exe = l.exe.display().to_string();
                let seen = Seen {
                    comm: &l.label,
                    exe: Some(&exe),
                    ..Default::default()
                };
                let app = policy.apps.apps.iter().find(|a| a.matches(&seen));
                self.target = Some(BlockTarget {
                    app: app.map(|a| a.id.clone()),
                    tag: WATCH_TAG_CGROUP,
                });
                self.engine
                    .name_watch_tag(WATCH_TAG_CGROUP, l.label.clone());
                if let Some(cg) = cgroup {
                    self.sensor.watch_cgroup(cg.id, WATCH_TAG_CGROUP)?;
                    self.sensor.set_mode(MODE_CGROUPS)?;
                }
                self.watched = vec![format!("the command {} and its descendants", l.argv[0])];
            }
        }
        Ok(())
    }

    /// Starts the command held at its gate: its pid is watched (and put in its cgroup)
    /// before it runs a single instruction of its own.
    fn launch(&mut self, l: &Launch, cgroup: Option<OwnedCgroup>) -> Result<(), SessionError> {
        let sensor = &mut self.sensor;
        let child = launch::spawn_gated(&l.exec_path, &l.exec_args, l.run_as.as_ref(), |pid| {
            sensor.watch_tgid(pid, WATCH_TAG_CGROUP)?;
            if let Some(cg) = &cgroup {
                cg.add_pid(pid)?;
            }
            Ok::<(), SessionError>(())
        })??;
        let pid = child.id();
        let mut child = child;
        self.launched = Some(Launched {
            pid,
            wait: Some(tokio::task::spawn_blocking(move || child.wait())),
            cgroup,
        });
        Ok(())
    }

    /// What is watched: app ids, groups and names, or the command.
    pub fn watched(&self) -> &[String] {
        &self.watched
    }

    /// The launched command's pid.
    pub fn command_pid(&self) -> Option<u32> {
        self.launched.as_ref().map(|l| l.pid)
    }

    /// Waits for records (or the launched command's end), hands them to the watcher and
    /// the engine, and lets the watcher follow the apps.
    pub async fn next(&mut self) -> Result<Step, SessionError> {
        let waiting = self.launched.as_mut().and_then(|l| l.wait.as_mut());
        let running = waiting.is_some();
        let (watcher, engine, plain) = (&mut self.watcher, &mut self.engine, &mut self.plaintext);
        let handle = |r: Record| {
            if let Some(w) = watcher.as_mut() {
                w.observe(&r);
            }
            if let Some(p) = plain.as_mut() {
                p.observe(&r);
            }
            engine.handle(&r);
        };
        let step = tokio::select! {
            n = self.capture.next_batch(handle) => Step::Records(n?),
            status = async { waiting.expect("guarded").await }, if running => {
                Step::Exited(status.map_err(io::Error::other).and_then(|s| s))
            }
        };
        match &step {
            Step::Exited(_) => {
                if let Some(l) = &mut self.launched {
                    l.wait = None;
                }
            }
            Step::Records(_) => {
                if let Some(w) = &mut self.watcher {
                    if let Err(e) = w.apply(&mut self.sensor) {
                        log::error!("cannot follow the watched apps: {e}");
                    }
                }
                if let Some(p) = &mut self.plaintext {
                    p.apply(&mut self.sensor);
                }
            }
        }
        Ok(step)
    }

    /// Runs `f` with the engine and everything a decision reads besides the row.
    fn judge<R>(
        &mut self,
        policy: &Policy,
        f: impl FnOnce(&Engine, &mut finding::Context<'_>) -> R,
    ) -> R {
        let mut cx = finding::Context {
            clock: &self.clock,
            users: &mut self.users,
            policy,
            enforcing: self.blocking.enforcing,
            user_blocks: self.blocking.user_blocks(),
        };
        f(&self.engine, &mut cx)
    }

    /// What a connection row means.
    pub fn decide(&mut self, key: &ConnKey, agg: &ConnAgg, policy: &Policy) -> Finding {
        self.judge(policy, |engine, cx| finding::decide(engine, key, agg, cx))
    }

    /// Rows created or renamed since the last call, decided. A flagged contact that a
    /// block covers but that went through has its address blocked for later.
    pub fn changes(&mut self, policy: &Policy) -> Vec<Decided> {
        let changes = self.engine.take_changes();
        let mut out = Vec::with_capacity(changes.len());
        for (key, agg) in changes {
            let finding = self.decide(&key, &agg, policy);
            if finding.flagged {
                self.blocking
                    .after_finding(&mut self.sensor, &finding, agg.netns);
                // Later calls to it are reported whatever their user's budget.
                if let Err(e) = self.sensor.prioritise(finding.dst_ip) {
                    log::debug!("cannot mark {} as always reported: {e}", finding.dst_ip);
                }
            }
            out.push(Decided {
                finding,
                first_ns: agg.first_ns,
                netns: agg.netns,
            });
        }
        out
    }

    /// Rows whose count, name or flags changed since the last call, decided (for a
    /// store), and rows a rename removed.
    pub fn touched(&mut self, policy: &Policy) -> Touched {
        let t = self.engine.take_touched();
        let rows = t
            .rows
            .into_iter()
            .map(|(k, a)| {
                let f = self.decide(&k, &a, policy);
                (k, a, f)
            })
            .collect();
        Touched {
            rows,
            merged: t.merged,
        }
    }

    /// Every connection row, decided, ordered by first sighting.
    /// What the watched apps sent, as findings (empty without plaintext inspection).
    pub fn leaks(&mut self, policy: &Policy) -> Vec<crate::leak::Leak> {
        let Some(p) = self.plaintext.take() else {
            return Vec::new();
        };
        let out = self.judge(policy, |engine, cx| {
            p.rows()
                .into_iter()
                .map(|(k, a)| crate::leak::decide(engine, k, a, cx))
                .collect()
        });
        self.plaintext = Some(p);
        out
    }

    /// Lets go of what ended processes sent, once the caller kept it (see
    /// [`plaintext::Plaintext::forget_finished`]).
    pub fn forget_finished_leaks(&mut self) -> Vec<u32> {
        self.plaintext
            .as_mut()
            .map(plaintext::Plaintext::forget_finished)
            .unwrap_or_default()
    }

    pub fn findings(&mut self, policy: &Policy) -> Vec<Finding> {
        self.judge(policy, finding::all)
    }

    /// The periodic work: detach from apps that ended, read the kernel's counters, and say
    /// when records were lost (at most every [`LossReporter::EVERY`]).
    pub fn tick(&mut self) -> Health {
        if let Some(w) = &mut self.watcher {
            if let Err(e) = w.prune(&mut self.sensor) {
                log::error!("cannot detach from ended apps: {e}");
            }
        }
        if let Some(p) = &mut self.plaintext {
            p.rescan(&mut self.sensor);
        }
        let counters = self.sensor.counters().ok();
        let loss = counters.and_then(|c| self.loss.check(c.lost));
        Health {
            counters,
            loss,
            over_budget: self.budget_notice(counters.map(|c| c.over_budget)),
        }
    }

    /// Who went over their record budget, with the calls the kernel folded (`over_budget`:
    /// the kernel's count of refusals, when read).
    fn budget_notice(&mut self, over_budget: Option<u64>) -> Option<Notice> {
        match self.sensor.take_folded() {
            Ok(folded) if !folded.is_empty() => {
                let engine = &self.engine;
                self.budget
                    .add_folded(&folded, |pid| engine.process(pid).map(|p| p.comm.clone()));
            }
            Ok(_) => {}
            Err(e) => log::debug!("cannot read the calls over budget: {e}"),
        }
        if !self.budget.wants_totals(over_budget) {
            return None;
        }
        let users = self.sensor.users_over().ok()?;
        self.budget.check(&users, over_budget)
    }

    /// Forgets rows last seen longer than `age` ago (history is the store's) and sockets
    /// older than [`crate::defaults::SOCKETS_KEPT_FOR`], and hands memory a flood took back
    /// to the system.
    pub fn forget_older_than(&mut self, age: Duration) {
        let now = crate::host::clock::boot_ns();
        self.engine.prune(now.saturating_sub(age.as_nanos() as u64));
        let sockets = crate::defaults::SOCKETS_KEPT_FOR.as_nanos() as u64;
        if self.engine.forget_sockets(now.saturating_sub(sockets)) {
            crate::host::give_back_memory();
        }
    }

    /// Takes what the kernel produced until its books balance (generated = delivered +
    /// lost + refused over budget) or `patience` runs out; `also` sees every record too.
    /// Returns whether they balanced.
    pub async fn settle(
        &mut self,
        patience: Patience,
        mut also: impl FnMut(&Record),
    ) -> Result<bool, SessionError> {
        let start = Instant::now();
        loop {
            let (watcher, engine, plain) =
                (&mut self.watcher, &mut self.engine, &mut self.plaintext);
            self.capture.drain(|r| {
                also(&r);
                if let Some(w) = watcher.as_mut() {
                    w.observe(&r);
                }
                if let Some(p) = plain.as_mut() {
                    p.observe(&r);
                }
                engine.handle(&r);
            });
            let k = self.sensor.counters()?;
            if k.generated == self.capture.delivered + k.lost + k.over_budget {
                return Ok(true);
            }
            if start.elapsed() >= patience.total {
                return Ok(false);
            }
            tokio::time::sleep(patience.every).await;
        }
    }

    /// The kernel's counters now.
    pub fn counters(&self) -> Result<KernelCounters, SessionError> {
        Ok(self.sensor.counters()?)
    }

    /// Makes the kernel deny what the policy's blocks and users' own cover for the watched
    /// apps (nothing unless the plan enforces). The reason it cannot is also kept in
    /// [`Blocking::error`].
    pub fn apply_blocks(&mut self, policy: &Policy) -> Result<(), SessionError> {
        if self.enforce == Enforce::Off {
            return Ok(());
        }
        let (apps, tags) = self.block_targets(policy);
        let applied = self.blocking.apply(
            &mut self.sensor,
            &apps,
            &tags,
            policy,
            &self.engine.namer.dns,
        );
        match (&applied, &self.blocking.error) {
            // An audit that must block says it once, as its error.
            (Err(_), Some(why)) if self.enforce != Enforce::Must => log::error!("{why}"),
            _ => {}
        }
        applied.map_err(SessionError::Block)
    }

    /// `brokerwatch block|unblock` from `peer` (see [`Blocking::user_request`]): a new block
    /// is admitted only when the kernel's tables hold it with everyone's; a change applies
    /// the blocks again. Returns what to tell the user.
    pub fn user_block_request(
        &mut self,
        policy: &Policy,
        peer: crate::protocol::Peer,
        app: &str,
        company: &str,
        unblock: bool,
    ) -> Result<String, String> {
        let (apps, tags) = self.block_targets(policy);
        let fits = |users: &[crate::policy::UserBlock]| {
            let plan = policy.block_plan(&apps, users);
            crate::kernel::block::check_sizes(&crate::watch::block_tables(&plan, &tags))
        };
        let outcome = self
            .blocking
            .user_request(policy, peer, app, company, unblock, fits)?;
        if outcome.changed {
            // A failure is kept for `status`; the block is on disk for the next start.
            let _ = self.apply_blocks(policy);
        }
        Ok(outcome.message)
    }

    /// The apps block plans are made for, with their watch tags.
    fn block_targets<'p>(&self, policy: &'p Policy) -> (Vec<Option<&'p AppDef>>, Vec<u32>) {
        if let Some(w) = &self.watcher {
            return w.block_targets(policy);
        }
        match &self.target {
            Some(t) => {
                let app = t
                    .app
                    .as_deref()
                    .and_then(|id| policy.apps.apps.iter().find(|a| a.id == id));
                (vec![app], vec![t.tag])
            }
            None => (Vec::new(), Vec::new()),
        }
    }

    /// Processes still in the launched command's cgroup (they are not killed); its cgroup
    /// goes once they are gone.
    pub fn finish(mut self) -> Vec<u32> {
        self.launched
            .take()
            .and_then(|l| l.cgroup)
            .map(|cg| cg.pids())
            .unwrap_or_default()
    }
}
