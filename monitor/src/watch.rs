//! Which running and future processes to watch for a set of app names: the kernel's name
//! table for processes that start later, a /proc scan for those already running, and app
//! scopes (Flatpak, Snap, desktop launchers) as their cgroups appear, so that an app is
//! watched from its first instruction whatever its processes are called.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use monitor_common::{EventKind, MODE_CGROUPS, MODE_NAMES, WATCH_TAG_APP_BASE};

use crate::{
    display::safe,
    engine::Engine,
    host::{
        appid::{self, AppIdentity},
        cgroup, procinfo, resolver,
    },
    kernel::{
        wire::{comm_key, Record},
        AttachScope, BlockTables, Hooks, Sensor, SensorError,
    },
    policy::{AppDef, AppSet, BlockPlan, Policy, Seen},
};

/// The kernel's block tables for `plan`, made for `tags` (the watch tag of each app the
/// plan was made for, in the same order).
pub fn block_tables(plan: &BlockPlan, tags: &[u32]) -> BlockTables {
    use monitor_common::{dest_hash, BLOCK_EVERY_USER};
    let mut t = BlockTables::default();
    let mut hashed: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for (domain, id) in &plan.domains {
        let dest = *hashed.entry(&**id).or_insert_with(|| dest_hash(id));
        t.domains.insert(*domain, dest);
    }
    t.cidrs = plan
        .cidrs
        .iter()
        .map(|(net, id)| (*net, dest_hash(id)))
        .collect();
    for (id, app, uid) in &plan.pairs {
        if let Some(&tag) = tags.get(*app) {
            t.pairs
                .insert((dest_hash(id), tag, uid.unwrap_or(BLOCK_EVERY_USER)));
        }
    }
    t
}

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

/// What a batch of records asks of the watcher (applied after the batch, when the sensor
/// is free).
enum Pending {
    /// A cgroup appeared: maybe a watched app's scope.
    Created(u64, String),
    /// A watched process ran in a cgroup (its path, when the record had it).
    Ran(u32, u64, Option<String>),
}

/// The watched apps, steering the kernel's tables as processes and cgroups appear, and,
/// when the programs run only where watched apps live ([`AttachScope::Cgroups`]), their
/// attachments.
pub struct Watcher {
    pub watches: Vec<AppWatch>,
    cgroup_mount: Option<PathBuf>,
    per_cgroup: bool,
    pending: Vec<Pending>,
    /// cgroup ids whose processes already run the programs.
    covered: HashSet<u64>,
    /// The stub resolver's cgroups (DNS answers only).
    resolvers: Vec<PathBuf>,
}

/// Pending work kept per batch at most (a flood of execs is checked by cgroup id).
const MAX_PENDING: usize = 4096;

impl Watcher {
    /// Registers `names` (app ids, groups, or process names) with the kernel, switches it
    /// to name and cgroup watching, and watches the matching processes (and their app
    /// scopes) that already run. When the sensor runs its programs per cgroup
    /// ([`AttachScope::Cgroups`]), they are attached to the apps' cgroups (and to the stub
    /// resolver's, for DNS answers).
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
        let mut watcher = Self {
            watches,
            cgroup_mount: cgroup::cgroup2_mount().ok(),
            per_cgroup: sensor.scope == AttachScope::Cgroups,
            pending: Vec::new(),
            covered: HashSet::new(),
            resolvers: Vec::new(),
        };
        if watcher.per_cgroup {
            watcher.attach_resolvers(sensor)?;
        }
        // Already running processes: the kernel only sees execs from now on.
        let mut adopt_left = crate::host::sockets::MAX_TOTAL;
        for pid in procinfo::all_pids() {
            let Some(snap) = procinfo::snapshot(pid) else {
                continue;
            };
            let Some(tag) = watcher
                .watches
                .iter()
                .find(|w| w.matches(&snap))
                .map(|w| w.tag)
            else {
                continue;
            };
            sensor.watch_tgid(pid, tag)?;
            if let Some(path) = snap.cgroup.as_deref() {
                watcher.watch_app_scope(sensor, path, None)?;
                watcher.cover(sensor, path)?;
            }
            let (uid, comm) = (snap.uid, snap.comm.clone());
            engine.add_snapshot(snap, Some(tag));
            let who = (pid, tag, uid, comm.as_str());
            adopt_open_sockets(sensor, engine, who, &mut adopt_left)?;
        }
        Ok(watcher)
    }

    /// The watched apps as the policy defines them now (a reload may have changed a
    /// definition; `None` for a bare process name), with their watch tags: what block
    /// plans are made for.
    pub fn block_targets<'p>(&self, policy: &'p Policy) -> (Vec<Option<&'p AppDef>>, Vec<u32>) {
        let apps = self
            .watches
            .iter()
            .map(|w| {
                w.app
                    .as_ref()
                    .and_then(|a| policy.apps.apps.iter().find(|p| p.id == a.id))
            })
            .collect();
        let tags = self.watches.iter().map(|w| w.tag).collect();
        (apps, tags)
    }

    pub fn labels(&self) -> Vec<String> {
        self.watches.iter().map(|w| w.label.clone()).collect()
    }

    /// Notes what a record asks for (see [`Watcher::apply`]).
    pub fn observe(&mut self, r: &Record) {
        if self.pending.len() >= MAX_PENDING {
            return;
        }
        match r {
            Record::Cgroup(c) if c.kind == EventKind::CgroupMkdir => self
                .pending
                .push(Pending::Created(c.cgroup_id, c.path.clone())),
            Record::Cgroup(c) if self.per_cgroup => {
                self.pending
                    .push(Pending::Ran(c.tgid, c.cgroup_id, Some(c.path.clone())))
            }
            Record::Exec(x) if self.per_cgroup && !self.covered.contains(&x.header.cgroup_id) => {
                self.pending
                    .push(Pending::Ran(x.header.tgid, x.header.cgroup_id, None))
            }
            _ => {}
        }
    }

    /// Watches new app scopes and, per cgroup, attaches where watched processes run.
    pub fn apply(&mut self, sensor: &mut Sensor) -> Result<(), SensorError> {
        for p in std::mem::take(&mut self.pending) {
            match p {
                Pending::Created(id, path) => {
                    if self.watch_app_scope(sensor, &path, Some(id))?.is_some() {
                        self.cover(sensor, &path)?;
                    }
                }
                Pending::Ran(pid, id, path) => {
                    if self.covered.contains(&id) {
                        continue;
                    }
                    let path = path.or_else(|| {
                        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                            .ok()
                            .and_then(|t| procinfo::parse_proc_cgroup(&t))
                    });
                    if let Some(path) = path {
                        self.cover(sensor, &path)?;
                        self.covered.insert(id);
                    }
                }
            }
        }
        Ok(())
    }

    /// Attaches the programs to the cgroup at `path` (below the mount) unless covered.
    fn cover(&mut self, sensor: &mut Sensor, path: &str) -> Result<(), SensorError> {
        if !self.per_cgroup {
            return Ok(());
        }
        let Some(mount) = &self.cgroup_mount else {
            return Ok(());
        };
        let dir = mount.join(path.trim_start_matches('/'));
        if sensor.attach_cgroup(&dir, Hooks::All)? {
            log::info!(
                "watched apps run in cgroup {}: its processes now run the hooks",
                safe(path)
            );
        }
        Ok(())
    }

    fn attach_resolvers(&mut self, sensor: &mut Sensor) -> Result<(), SensorError> {
        let Some(mount) = self.cgroup_mount.clone() else {
            return Ok(());
        };
        for path in resolver::stub_resolver_cgroups() {
            let dir = mount.join(path.trim_start_matches('/'));
            if sensor.attach_cgroup(&dir, Hooks::DnsAnswers)? {
                log::info!("the stub resolver runs in cgroup {path}: its DNS answers are read");
            }
            self.resolvers.push(dir);
        }
        Ok(())
    }

    /// Detaches from cgroups no process is left in (an app that ended), and retries
    /// finding the stub resolver when it was not found.
    pub fn prune(&mut self, sensor: &mut Sensor) -> Result<(), SensorError> {
        if !self.per_cgroup {
            return Ok(());
        }
        for (dir, _) in sensor.attach_points() {
            if !self.resolvers.contains(&dir) && cgroup::pids_in(&dir).is_empty() {
                sensor.detach_cgroup(&dir);
                self.covered.clear();
                let dir = dir.display().to_string();
                log::info!("no process left in cgroup {}: detached", safe(&dir));
            }
        }
        if self.resolvers.is_empty() {
            self.attach_resolvers(sensor)?;
        }
        Ok(())
    }

    /// When `path` (below the cgroup v2 mount) is a watched app's scope, every process that
    /// runs in it is watched, those already inside included. Returns the app's label.
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
            "watching cgroup {} ({}): its processes are {}",
            safe(path),
            safe(&identity.display_id()),
            w.label
        );
        Ok(Some(w.label.clone()))
    }
}

/// The connections a watched process had open before brokerwatch started (issue 24, item
/// 5): each becomes a row marked so, and its next first payloads are captured as a new
/// connection's are (a plain HTTP request then names it). A process whose sockets cannot be
/// looked at is said in the log and passed over; at most `left` connections in all.
fn adopt_open_sockets(
    sensor: &mut Sensor,
    engine: &mut Engine,
    (pid, tag, uid, comm): (u32, u32, u32, &str),
    left: &mut usize,
) -> Result<(), SensorError> {
    use crate::{
        host::{clock, sockets},
        kernel::wire::{Proto, SockRecord},
    };
    if *left == 0 {
        return Ok(());
    }
    let open = match sockets::open_sockets(pid) {
        Ok(open) => open,
        Err(e) => {
            log::info!("connections open before the start are not listed: {e}");
            return Ok(());
        }
    };
    log::debug!(
        "process {pid}: {} connections open before the start",
        open.len()
    );
    if open.len() > *left {
        log::warn!(
            "connections open before the start: {} of process {pid}'s not listed (at most {} in all)",
            open.len() - *left,
            crate::host::sockets::MAX_TOTAL
        );
    }
    let take = open.len().min(*left);
    *left -= take;
    for s in open.into_iter().take(take) {
        sensor.capture_socket(s.cookie, tag)?;
        engine.adopt_open_socket(&SockRecord {
            header: monitor_common::EventHeader {
                kind: EventKind::Connect as u32,
                tgid: pid,
                tid: pid,
                uid,
                ts_ns: clock::boot_ns(),
                cgroup_id: 0,
            },
            kind: EventKind::Connect,
            cookie: s.cookie,
            dst: s.peer.ip(),
            port: s.peer.port(),
            proto: if s.tcp { Proto::Tcp } else { Proto::Udp },
            gid: 0,
            watch_tag: tag,
            netns: s.netns,
            blocked: None,
            comm: comm.to_owned(),
            thread_comm: comm.to_owned(),
        });
    }
    Ok(())
}
