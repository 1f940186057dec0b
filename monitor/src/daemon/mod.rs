//! `brokerwatch daemon`: the always-on service. Loads the policies, attaches the programs,
//! watches the chosen apps, turns flagged contacts into alerts (history on disk, and the
//! socket for desktop agents), and tells systemd when it is ready.

pub mod history;
pub mod server;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    capture::Capture,
    engine::Engine,
    policy::{LoadError, Policy, PolicySources},
    procinfo::UserNames,
    report::{self, Clock},
    sensor::{Sensor, SensorError, SensorOptions},
    watchset,
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
    pub retention: history::Retention,
    pub sensor: SensorOptions,
}

/// Tells the service manager something (`READY=1`, `WATCHDOG=1`, `STATUS=...`), if one
/// asked (`$NOTIFY_SOCKET`).
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let bytes = path.as_encoded_bytes();
    let res = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), PathBuf::from(&path))
    };
    if let Err(e) = res {
        log::debug!("sd_notify {state:?}: {e}");
    }
}

/// Replaces the policy if the files load; a broken file is logged with its position and the
/// last good policy stays in force. Alerts in flight are unaffected.
fn reload(policy: &mut Policy, sources: &PolicySources, why: &str) {
    match Policy::load(sources) {
        Ok(p) => {
            *policy = p;
            log::info!("policies reloaded ({why})");
        }
        Err(e) => log::error!("policy reload failed ({why}), keeping the last good one:\n{e}"),
    }
}

fn policy_summary(p: &Policy) -> Value {
    json!(p
        .sources
        .iter()
        .map(|s| json!({"name": s.name, "apps": s.apps, "destinations": s.destinations, "domains": s.domains, "rules": s.rules}))
        .collect::<Vec<_>>())
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

/// Sends a structured entry to the systemd journal when running under it (fields
/// `BW_APP`, `BW_PID`, ...); plain logging otherwise.
fn journal_alert(row: &crate::report::Row) {
    let message = format!(
        "{} (pid {}) contacted {} ({}, {}) severity {}",
        row.app.as_deref().unwrap_or(&row.comm),
        row.pid,
        row.domain.as_deref().unwrap_or(&row.dst_ip),
        row.company.as_deref().unwrap_or("?"),
        row.category.as_deref().unwrap_or("?"),
        row.severity.as_deref().unwrap_or("?"),
    );
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let clean = |s: &str| s.replace('\n', " ");
        let fields = [
            ("MESSAGE", message.clone()),
            ("PRIORITY", "4".to_owned()),
            ("SYSLOG_IDENTIFIER", "brokerwatch".to_owned()),
            (
                "BW_APP",
                row.app.clone().unwrap_or_else(|| row.comm.clone()),
            ),
            ("BW_PID", row.pid.to_string()),
            ("BW_UID", row.uid.to_string()),
            ("BW_DOMAIN", row.domain.clone().unwrap_or_default()),
            ("BW_DST", format!("{}:{}", row.dst_ip, row.dst_port)),
            ("BW_COMPANY", row.company.clone().unwrap_or_default()),
            ("BW_CATEGORY", row.category.clone().unwrap_or_default()),
            ("BW_SEVERITY", row.severity.clone().unwrap_or_default()),
        ];
        let payload: String = fields
            .iter()
            .map(|(k, v)| format!("{k}={}\n", clean(v)))
            .collect();
        if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
            if sock
                .send_to(payload.as_bytes(), "/run/systemd/journal/socket")
                .is_ok()
            {
                return;
            }
        }
    }
    log::warn!("alert: {message}");
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    let started = Instant::now();
    let mut policy = Policy::load(&opts.policy)?;
    let mut sensor = Sensor::load(&opts.sensor)?;
    let mut capture = Capture::new(sensor.take_ring()?)?;
    let mut engine = Engine::new();
    let watches = watchset::watch_apps(&mut sensor, &mut engine, &policy.apps, &opts.apps)?;
    let history = history::History::open(&opts.state_dir, opts.retention).map_err(|source| {
        DaemonError::State {
            path: opts.state_dir.clone(),
            source,
        }
    })?;
    let gid = server::group_gid(&opts.group);
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
    let (tx, _) = tokio::sync::broadcast::channel(1024);
    let shared = Arc::new(server::Shared {
        status: Mutex::new(Value::Null),
        history: Mutex::new(history),
        alerts: tx,
        admin_gid: server::group_gid(&opts.admin_group),
    });
    let clock = Clock::now();
    let mut users = UserNames::default();
    let mut alerts_total = 0u64;
    let watched: Vec<String> = watches.iter().map(|w| w.label.clone()).collect();
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let watchdog = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|us| Duration::from_micros(us / 2));
    let mut last_watchdog = Instant::now();
    let update_status = |sensor: &Sensor, capture: &Capture, policy: &Policy, alerts: u64| {
        let counters = sensor.counters().ok();
        let status = json!({
            "type": "status",
            "pid": std::process::id(),
            "uptime_s": started.elapsed().as_secs(),
            "attached": sensor.attached,
            "watched_apps": watched,
            "counters": counters,
            "records_delivered": capture.delivered,
            "alerts": alerts,
            "policy_sources": policy_summary(policy),
            "socket": opts.socket,
            "history": opts.state_dir.join("history.jsonl"),
        });
        if let Ok(mut s) = shared.status.lock() {
            *s = status;
        }
    };
    update_status(&sensor, &capture, &policy, 0);
    let mut fingerprint = policy_fingerprint(&opts.policy);
    sd_notify("READY=1\nSTATUS=watching");
    log::info!(
        "ready: watching {} app(s), socket {}",
        watches.len(),
        opts.socket.display()
    );
    loop {
        tokio::select! {
            res = capture.next_batch(|r| engine.handle(&r)) => {
                res?;
                let before = alerts_total;
                for (key, agg) in engine.take_changes() {
                    let row = report::row(&engine, &key, &agg, &clock, &mut users, &policy);
                    if !row.flagged {
                        continue;
                    }
                    let mut alert = serde_json::to_value(&row).unwrap_or(Value::Null);
                    alert["ts_ms"] = json!(history::now_ms());
                    // Kernel clock of the connect and of this decision (for latency figures).
                    alert["connect_boot_ns"] = json!(agg.first_ns);
                    alert["decided_boot_ns"] = json!(crate::report::boot_ns());
                    journal_alert(&row);
                    if let Ok(mut h) = shared.history.lock() {
                        if let Err(e) = h.append(&alert) {
                            log::error!("cannot write the alert history: {e}");
                        }
                    }
                    alerts_total += 1;
                    let _ = shared.alerts.send(Arc::new(alert));
                }
                if alerts_total != before {
                    update_status(&sensor, &capture, &policy, alerts_total);
                }
            }
            conn = listener.accept() => {
                if let Ok((stream, _)) = conn {
                    tokio::spawn(server::serve(stream, shared.clone()));
                }
            }
            _ = hup.recv() => reload(&mut policy, &opts.policy, "SIGHUP"),
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let now = policy_fingerprint(&opts.policy);
                if now != fingerprint {
                    fingerprint = now;
                    reload(&mut policy, &opts.policy, "a policy file changed");
                }
                update_status(&sensor, &capture, &policy, alerts_total);
                // Rows only feed alerts; history is on disk.
                engine.prune(crate::report::boot_ns().saturating_sub(600 * 1_000_000_000));
                if let Some(every) = watchdog {
                    if last_watchdog.elapsed() >= every {
                        sd_notify("WATCHDOG=1");
                        last_watchdog = Instant::now();
                    }
                }
            }
        }
    }
    sd_notify("STOPPING=1");
    let _ = std::fs::remove_file(&opts.socket);
    Ok(())
}
