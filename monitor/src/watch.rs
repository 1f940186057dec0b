//! Which running and future processes to watch for a set of app names: the kernel's name
//! table for processes that start later, and a /proc scan for those already running.

use std::path::Path;

use monitor_common::{MODE_NAMES, WATCH_TAG_APP_BASE};

use crate::{
    engine::Engine,
    host::{appid, procinfo},
    kernel::{wire::comm_key, Sensor, SensorError},
    policy::{AppDef, AppSet},
};

/// The watch set for running apps: (tag, label, kernel names, matcher).
pub struct AppWatch {
    pub tag: u32,
    pub label: String,
    pub app: Option<AppDef>,
    pub names: Vec<String>,
}

pub fn resolve_apps(set: &AppSet, names: &[String]) -> Vec<AppWatch> {
    let mut out = Vec::new();
    for name in names {
        match set.select(std::slice::from_ref(name)) {
            Ok(apps) => {
                for app in apps {
                    if out.iter().any(|w: &AppWatch| w.label == app.id) {
                        continue;
                    }
                    out.push(AppWatch {
                        tag: WATCH_TAG_APP_BASE + out.len() as u32,
                        label: app.id.clone(),
                        names: app.kernel_names(),
                        app: Some(app.clone()),
                    });
                }
            }
            Err(_) => {
                // Not an app id or group: a process name, as `pgrep` would take it.
                log::info!(
                    "{name:?} is not a known app or group; watching processes named {name:?}"
                );
                out.push(AppWatch {
                    tag: WATCH_TAG_APP_BASE + out.len() as u32,
                    label: name.clone(),
                    names: vec![Path::new(name)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or(name)
                        .to_owned()],
                    app: None,
                });
            }
        }
    }
    out
}

impl AppWatch {
    pub fn matches(&self, snap: &procinfo::ProcSnapshot) -> bool {
        let exe = snap.exe.as_ref().map(|p| p.display().to_string());
        match &self.app {
            Some(app) => {
                let identity = appid::of_process(snap.pid, snap.cgroup.as_deref());
                app.matches(&snap.comm, exe.as_deref(), identity.as_ref())
            }
            None => self.names.iter().any(|n| {
                comm_key(n) == comm_key(&snap.comm)
                    || exe
                        .as_deref()
                        .and_then(|e| Path::new(e).file_name())
                        .and_then(|b| b.to_str())
                        == Some(n.as_str())
            }),
        }
    }
}

/// Registers `names` (app ids, groups, or process names) with the kernel, switches it to
/// name watching, and watches the matching processes that already run.
pub fn watch_apps(
    sensor: &mut Sensor,
    engine: &mut Engine,
    set: &AppSet,
    names: &[String],
) -> Result<Vec<AppWatch>, SensorError> {
    let watches = resolve_apps(set, names);
    for w in &watches {
        engine.name_watch_tag(w.tag, w.label.clone());
        for n in &w.names {
            sensor.watch_name(n, w.tag)?;
        }
    }
    sensor.set_mode(MODE_NAMES)?;
    // Already running processes: the kernel only sees execs from now on.
    for pid in procinfo::all_pids() {
        let Some(snap) = procinfo::snapshot(pid) else {
            continue;
        };
        if let Some(w) = watches.iter().find(|w| w.matches(&snap)) {
            sensor.watch_tgid(pid, w.tag)?;
            engine.add_snapshot(snap, Some(w.tag));
        }
    }
    Ok(watches)
}
