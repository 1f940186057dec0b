//! `brokerwatch daemon`: the always-on service. Loads the policies, attaches the programs,
//! watches the chosen apps, records every connection they make in the store, turns flagged
//! contacts into alerts (in the store, and on the socket for desktop agents), and tells
//! systemd when it is ready.

mod blocking;
pub mod journal;
pub mod server;
pub mod store;
pub mod systemd;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    engine::Engine,
    finding,
    host::{
        clock::{boot_ns, now_ms, Clock},
        users::{self, UserNames},
    },
    kernel::{Capture, KernelCounters, Sensor, SensorError, SensorOptions},
    policy::{last_good, LoadError, Policy, PolicySources},
    protocol::{Alert, Event, Notice, NoticeKind, PolicySource, Status},
    watch::Watcher,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Sensor(#[from] SensorError),
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
    #[error("reading kernel records: {0}")]
    Io(#[from] std::io::Error),
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
}

/// Replaces the policy if the files load (and saves it as the last good one); a broken
/// file is logged with its position and the policy in force stays. Alerts in flight are
/// unaffected. Returns what is wrong, if anything.
fn reload(
    policy: &mut Policy,
    sources: &PolicySources,
    last_good_dir: &std::path::Path,
    why: &str,
) -> Option<String> {
    match Policy::load(sources) {
        Ok(p) => {
            // Users' own blocks are not in the files: they carry over.
            let blocks = policy.user_blocks().to_vec();
            *policy = p;
            policy.set_user_blocks(blocks);
            log::info!("policies reloaded ({why})");
            save_last_good(last_good_dir, sources);
            None
        }
        Err(e) => {
            let message = format!("policy reload failed ({why}); the policy in force stays:\n{e}");
            log::error!(message_id = journal::POLICY_ERROR_ID; "{message}");
            Some(message)
        }
    }
}

fn save_last_good(dir: &std::path::Path, sources: &PolicySources) {
    if let Err(e) = last_good::save(dir, sources) {
        log::warn!("cannot keep a copy of the policy for restarts: {e}");
    }
}

/// The configured policy, or when it does not load the last good copy, with the reason.
fn initial_policy(
    sources: &PolicySources,
    last_good_dir: &std::path::Path,
) -> Result<(Policy, Option<String>), DaemonError> {
    let e = match Policy::load(sources) {
        Ok(p) => {
            save_last_good(last_good_dir, sources);
            return Ok((p, None));
        }
        Err(e) => e,
    };
    match last_good::load(last_good_dir) {
        Ok(lg) => {
            let saved = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(lg.saved_ms),
            );
            let message = format!(
                "the policy does not load, so the daemon runs on the last good policy (saved {saved}); fix the files and reload:\n{e}"
            );
            log::error!(message_id = journal::POLICY_ERROR_ID; "{message}");
            Ok((lg.policy, Some(message)))
        }
        Err(last_good::LastGoodError::Missing(_)) => Err(e.into()),
        Err(lg) => {
            log::error!("the last good policy cannot be used either: {lg}");
            Err(e.into())
        }
    }
}

fn policy_notice(message: &str) -> Notice {
    Notice {
        kind: NoticeKind::PolicyError,
        message: message.to_owned(),
        ts_ms: now_ms(),
    }
}

fn policy_summary(p: &Policy) -> Vec<PolicySource> {
    p.sources
        .iter()
        .map(|s| PolicySource {
            name: s.name.clone(),
            apps: s.apps,
            destinations: s.destinations,
            domains: s.domains,
            rules: s.rules,
        })
        .collect()
}

/// What the policy files look like on disk (paths, sizes, modification times): a change
/// means a reload.
fn policy_fingerprint(
    sources: &PolicySources,
) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut paths: Vec<PathBuf> = sources.files.clone();
    if let Some(dir) = &sources.system_dir {
        if let Ok(rd) = std::fs::read_dir(dir) {
            paths.extend(rd.flatten().map(|e| e.path()));
        }
    }
    paths.extend(sources.imports.iter().map(|i| i.path.clone()));
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let len = m.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = m.and_then(|m| m.modified().ok());
            (p, len, mtime)
        })
        .collect()
}

/// Says when kernel records were lost, at most once per [`LossReporter::EVERY`], with the
/// number lost since it last spoke.
#[derive(Debug, Default)]
pub struct LossReporter {
    reported: u64,
    last: Option<Instant>,
}

impl LossReporter {
    pub const EVERY: Duration = Duration::from_secs(10);

    /// A notice if `lost` (the kernel's running total) grew and the last one is old enough.
    pub fn check(&mut self, lost: u64) -> Option<Notice> {
        if lost <= self.reported || self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return None;
        }
        let new = lost - self.reported;
        self.reported = lost;
        self.last = Some(Instant::now());
        Some(Notice {
            kind: NoticeKind::RecordsLost,
            message: format!(
                "{new} kernel records lost ({lost} since start): some connections of watched apps were not seen; the ring buffer is too small for this load (--ring-size)"
            ),
            ts_ms: now_ms(),
        })
    }
}

/// Hands the engine rows that changed since the last call to the store, decided as alerts
/// are (so the store knows which were flagged), and forgets rows a rename merged away.
fn store_touched(
    engine: &mut Engine,
    store: &store::Store,
    boot_id: &str,
    cx: &mut finding::Context<'_>,
) {
    let crate::engine::Touched { rows, merged } = engine.take_touched();
    for (key, agg) in rows {
        let finding = finding::decide(engine, &key, &agg, cx);
        store.record_connection(store::ConnRow {
            key: row_key(boot_id, &key, agg.first_cookie),
            first_ms: cx.clock.epoch_ms(agg.first_ns),
            last_ms: cx.clock.epoch_ms(agg.last_ns),
            finding,
        });
    }
    for (key, first_cookie) in merged {
        store.forget_connection(row_key(boot_id, &key, first_cookie));
    }
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

/// A notice (and a log line) when the store starts failing, fails differently, or recovers.
fn store_notice(last: &mut Option<String>, status: crate::protocol::StoreStatus) -> Option<Notice> {
    if status.error == *last {
        return None;
    }
    let notice = match &status.error {
        Some(e) => {
            log::error!(
                message_id = journal::STORE_ERROR_ID;
                "{e}; alerts still reach agents and the journal, {} rows wait in memory",
                status.pending
            );
            Notice {
                kind: NoticeKind::StoreError,
                message: format!("the connection store cannot be written: {e}; alerts are still shown, and {} rows wait in memory until it can", status.pending),
                ts_ms: now_ms(),
            }
        }
        None => {
            log::info!("the store is written again");
            Notice {
                kind: NoticeKind::StoreRecovered,
                message: "the connection store is written again; rows that waited were saved"
                    .into(),
                ts_ms: now_ms(),
            }
        }
    };
    *last = status.error;
    Some(notice)
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    let started = Instant::now();
    let mut store = store::Store::open(&opts.state_dir, opts.retention).map_err(|source| {
        DaemonError::State {
            path: opts.state_dir.clone(),
            source,
        }
    })?;
    let last_good_dir = opts.state_dir.join(store::LAST_GOOD_POLICY);
    let (mut policy, mut policy_error) = initial_policy(&opts.policy, &last_good_dir)?;
    let mut sensor = Sensor::load(&opts.sensor)?;
    let mut capture = Capture::new(sensor.take_ring()?)?;
    let mut engine = Engine::new();
    let mut watcher = Watcher::start(&mut sensor, &mut engine, &policy.apps, &opts.apps)?;
    let mut blocking = blocking::Blocking::open(&opts.state_dir, &mut policy);
    blocking.apply(&mut sensor, &watcher, &policy, &engine.namer.dns);
    let (commands, mut command_rx) = tokio::sync::mpsc::channel::<server::Command>(64);
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let gid = users::group_gid(&opts.group);
    if gid.is_none() {
        log::warn!(
            "group {:?} does not exist: only root can use the socket (create it with `groupadd --system {}`)",
            opts.group,
            opts.group
        );
    }
    let listener = server::bind(&opts.socket, gid).map_err(|source| DaemonError::Socket {
        path: opts.socket.clone(),
        source,
    })?;
    // Room for a burst; a subscriber that still falls behind is told how many it missed
    // (and the agent fetches them from the history).
    let (tx, _) = tokio::sync::broadcast::channel(4096);
    let shared = Arc::new(server::Shared {
        status: Mutex::new(None),
        connections: Mutex::new(Default::default()),
        store_path: store.path().to_owned(),
        queries: tokio::sync::Semaphore::new(2),
        alerts: tx,
        standing: Mutex::new(Vec::new()),
        admin_gid: users::group_gid(&opts.admin_group),
        commands,
        user_blocks_path: opts.state_dir.join(blocking::USER_BLOCKS_FILE),
    });
    let journal = journal::Journal::open();
    let clock = Clock::now();
    let mut users = UserNames::default();
    let mut alerts_total = 0u64;
    let watched = watcher.labels();
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let watchdog = systemd::watchdog_interval();
    let mut last_watchdog = Instant::now();
    // After an accept error (out of descriptors), accepting pauses briefly instead of
    // spinning; the ring keeps being read meanwhile.
    let mut accept_paused_until: Option<tokio::time::Instant> = None;
    let mut accept_errors = 0u64;
    let mut loss = LossReporter::default();
    let mut store_error: Option<String> = None;
    let update_status = |sensor: &Sensor,
                         store: &store::Store,
                         counters: Option<KernelCounters>,
                         capture: &Capture,
                         policy: &Policy,
                         policy_error: &Option<String>,
                         blocking: &blocking::Blocking,
                         alerts: u64| {
        let status = Status {
            pid: std::process::id(),
            uptime_s: started.elapsed().as_secs(),
            kernel: sensor.kernel.release.clone(),
            attach: sensor.scope,
            attached: sensor.hooks(),
            watched_apps: watched.clone(),
            counters,
            records_delivered: capture.delivered,
            alerts,
            policy_sources: policy_summary(policy),
            socket: opts.socket.clone(),
            store: store.status(),
            policy_error: policy_error.clone(),
            blocking: blocking.enforcing,
            block_error: blocking.error.clone(),
        };
        if let Ok(mut s) = shared.status.lock() {
            *s = Some(status);
        }
    };
    update_status(
        &sensor,
        &store,
        sensor.counters().ok(),
        &capture,
        &policy,
        &policy_error,
        &blocking,
        0,
    );
    let mut fingerprint = policy_fingerprint(&opts.policy);
    systemd::notify("READY=1\nSTATUS=watching");
    log::info!(
        "ready: watching {} app(s), socket {}",
        watched.len(),
        opts.socket.display()
    );
    loop {
        tokio::select! {
            res = capture.next_batch(|r| {
                watcher.observe(&r);
                engine.handle(&r);
            }) => {
                res?;
                if let Err(e) = watcher.apply(&mut sensor) {
                    log::error!("cannot follow the watched apps: {e}");
                }
                let before = alerts_total;
                for (key, agg) in engine.take_changes() {
                    let mut cx = finding::Context { clock: &clock, users: &mut users, policy: &policy, enforcing: blocking.enforcing };
                    let finding = finding::decide(&engine, &key, &agg, &mut cx);
                    if !finding.flagged {
                        continue;
                    }
                    blocking.after_finding(&mut sensor, &finding, agg.netns);
                    journal.alert(&finding);
                    let alert = Alert {
                        finding,
                        ts_ms: now_ms(),
                        connect_boot_ns: agg.first_ns,
                        decided_boot_ns: boot_ns(),
                    };
                    let alert = Arc::new(alert);
                    store.record_alert(alert.clone());
                    alerts_total += 1;
                    let _ = shared.alerts.send(Event::Alert(alert));
                }
                if alerts_total != before {
                    update_status(&sensor, &store, sensor.counters().ok(), &capture, &policy, &policy_error, &blocking, alerts_total);
                }
            }
            conn = listener.accept(), if accept_paused_until.is_none() => match conn {
                Ok((stream, _)) => {
                    tokio::spawn(server::serve(stream, shared.clone()));
                }
                Err(e) => {
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        log::error!(
                            "cannot accept clients: {e} ({accept_errors} times so far); pausing 100 ms (raise LimitNOFILE if this is EMFILE)"
                        );
                    }
                    accept_paused_until =
                        Some(tokio::time::Instant::now() + Duration::from_millis(100));
                }
            },
            _ = async { tokio::time::sleep_until(accept_paused_until.unwrap_or_else(tokio::time::Instant::now)).await }, if accept_paused_until.is_some() => {
                accept_paused_until = None;
            }
            _ = hup.recv() => {
                policy_error = reload(&mut policy, &opts.policy, &last_good_dir, "SIGHUP");
                if let Some(m) = &policy_error {
                    let _ = shared.alerts.send(Event::Notice(policy_notice(m)));
                }
                blocking.apply(&mut sensor, &watcher, &policy, &engine.namer.dns);
            }
            Some(cmd) = command_rx.recv() => {
                let before = policy.user_blocks().len();
                let outcome = blocking.user_request(&mut policy, cmd.peer, &cmd.app, &cmd.company, cmd.unblock);
                // Only a request that added or removed a block needs new tables.
                if policy.user_blocks().len() != before {
                    blocking.apply(&mut sensor, &watcher, &policy, &engine.namer.dns);
                }
                log::info!("uid {} asked to {} {} -> {}: {outcome:?}", cmd.peer.uid, if cmd.unblock { "unblock" } else { "block" }, cmd.app, cmd.company);
                let _ = cmd.reply.send(outcome);
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let now = policy_fingerprint(&opts.policy);
                if now != fingerprint {
                    fingerprint = now;
                    policy_error = reload(&mut policy, &opts.policy, &last_good_dir, "a policy file changed");
                    if let Some(m) = &policy_error {
                        let _ = shared.alerts.send(Event::Notice(policy_notice(m)));
                    }
                    blocking.apply(&mut sensor, &watcher, &policy, &engine.namer.dns);
                }
                if let Err(e) = watcher.prune(&mut sensor) {
                    log::error!("cannot detach from ended apps: {e}");
                }
                // One read of the kernel counters a tick, for the status and the loss notice.
                let counters = sensor.counters().ok();
                store_touched(&mut engine, &store, &boot_id, &mut finding::Context { clock: &clock, users: &mut users, policy: &policy, enforcing: blocking.enforcing });
                update_status(&sensor, &store, counters, &capture, &policy, &policy_error, &blocking, alerts_total);
                // What holds now, for admins who subscribe later.
                let standing: Vec<Notice> = policy_error
                    .iter()
                    .map(|m| policy_notice(m))
                    .chain(store_error.iter().map(|e| Notice {
                        kind: NoticeKind::StoreError,
                        message: e.clone(),
                        ts_ms: now_ms(),
                    }))
                    .collect();
                if let Ok(mut s) = shared.standing.lock() {
                    *s = standing;
                }
                if let Some(notice) = counters.and_then(|c| loss.check(c.lost)) {
                    log::warn!(message_id = journal::LOSS_ID; "{}", notice.message);
                    let _ = shared.alerts.send(Event::Notice(notice));
                }
                if let Some(notice) = store_notice(&mut store_error, store.status()) {
                    let _ = shared.alerts.send(Event::Notice(notice));
                }
                // Rows only feed alerts; history is on disk.
                engine.prune(boot_ns().saturating_sub(600 * 1_000_000_000));
                if let Some(every) = watchdog {
                    if last_watchdog.elapsed() >= every {
                        systemd::notify("WATCHDOG=1");
                        last_watchdog = Instant::now();
                    }
                }
            }
        }
    }
    systemd::notify("STOPPING=1");
    store_touched(
        &mut engine,
        &store,
        &boot_id,
        &mut finding::Context {
            clock: &clock,
            users: &mut users,
            policy: &policy,
            enforcing: blocking.enforcing,
        },
    );
    store.close();
    let _ = std::fs::remove_file(&opts.socket);
    Ok(())
}
