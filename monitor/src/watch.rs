//! Which running and future processes to watch for a set of app names: the kernel's name
//! table for processes that start later, a /proc scan for those already running, and app
//! scopes (Flatpak, Snap, desktop launchers) as their cgroups appear, so that an app is
//! watched from its first instruction whatever its processes are called.

use std::path::{Path, PathBuf};

use monitor_common::{MODE_CGROUPS, MODE_NAMES, WATCH_TAG_APP_BASE};

use crate::{
    engine::Engine,
    host::{
        appid::{self, AppIdentity},
        cgroup, procinfo,
    },
    kernel::{wire::comm_key, Sensor, SensorError},
    policy::{AppDef, AppSet, Seen},
};

/// One watched app (or bare process name): its kernel tag, label and names.
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
                app.matches(&Seen {
                    comm: &snap.comm,
                    exe: exe.as_deref(),
                    exec_path: None,
                    identity: identity.as_ref(),
                })
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

    /// Whether a cgroup with this app identity is this app's.
    fn owns(&self, identity: &AppIdentity) -> bool {
        self.app.as_ref().is_some_and(|app| {
            app.matches(&Seen {
                identity: Some(identity),
                ..Seen::default()
            })
        })
    }
}

/// The watched apps, steering the kernel's tables as processes and cgroups appear.
pub struct Watcher {
    pub watches: Vec<AppWatch>,
    cgroup_mount: Option<PathBuf>,
}

impl Watcher {
    /// Registers `names` (app ids, groups, or process names) with the kernel, switches it
    /// to name and cgroup watching, and watches the matching processes (and their app
    /// scopes) that already run.
    pub fn start(
        sensor: &mut Sensor,
        engine: &mut Engine,
        set: &AppSet,
        names: &[String],
    ) -> Result<Self, SensorError> {
        let watches = resolve_apps(set, names);
        for w in &watches {
            engine.name_watch_tag(w.tag, w.label.clone());
            for n in &w.names {
                sensor.watch_name(n, w.tag)?;
            }
        }
        sensor.set_mode(MODE_NAMES | MODE_CGROUPS)?;
        let watcher = Self {
            watches,
            cgroup_mount: cgroup::cgroup2_mount().ok(),
        };
        // Already running processes: the kernel only sees execs from now on.
        for pid in procinfo::all_pids() {
            let Some(snap) = procinfo::snapshot(pid) else {
                continue;
            };
            if let Some(w) = watcher.watches.iter().find(|w| w.matches(&snap)) {
                sensor.watch_tgid(pid, w.tag)?;
                if let Some(path) = snap.cgroup.as_deref() {
                    watcher.watch_app_scope(sensor, path, None)?;
                }
                engine.add_snapshot(snap, Some(w.tag));
            }
        }
        Ok(watcher)
    }

    pub fn labels(&self) -> Vec<String> {
        self.watches.iter().map(|w| w.label.clone()).collect()
    }

    /// A cgroup appeared (`id` at `path` below the cgroup v2 mount): when its name is a
    /// watched app's scope, every process that runs in it is watched, those already
    /// inside included. Returns the app's label.
    pub fn on_cgroup_created(
        &self,
        sensor: &mut Sensor,
        id: u64,
        path: &str,
    ) -> Result<Option<String>, SensorError> {
        self.watch_app_scope(sensor, path, Some(id))
    }

    fn watch_app_scope(
        &self,
        sensor: &mut Sensor,
        path: &str,
        id: Option<u64>,
    ) -> Result<Option<String>, SensorError> {
        let Some(identity) = appid::from_cgroup_path(path) else {
            return Ok(None);
        };
        let Some(w) = self.watches.iter().find(|w| w.owns(&identity)) else {
            return Ok(None);
        };
        let dir = self
            .cgroup_mount
            .as_ref()
            .map(|m| m.join(path.trim_start_matches('/')));
        let id = match (id, &dir) {
            (Some(id), _) => id,
            (None, Some(dir)) => match cgroup::cgroup_id(dir) {
                Ok(id) => id,
                Err(_) => return Ok(None),
            },
            (None, None) => return Ok(None),
        };
        sensor.watch_cgroup(id, w.tag)?;
        // Processes that moved in before the kernel knew the cgroup.
        if let Some(dir) = &dir {
            for pid in cgroup::pids_in(dir) {
                sensor.watch_tgid(pid, w.tag)?;
            }
        }
        log::info!(
            "watching cgroup {path} ({}): its processes are {}",
            identity.display_id(),
            w.label
        );
        Ok(Some(w.label.clone()))
    }
}
