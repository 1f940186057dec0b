//! The process table: who each watched process is (executable, name, parent, user, cgroup,
//! app identity), kept from exec, fork, exit and cgroup records, with procfs for what the
//! records do not say.

use std::path::Path;

use serde::Serialize;

use super::{Engine, ProcSource};
use crate::{
    host::{appid::AppIdentity, procinfo::ProcSnapshot},
    kernel::wire::{CgroupRecord, ExecRecord, ExitRecord, ForkRecord},
};

/// How the engine learnt about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The kernel reported its exec.
    Exec,
    /// The kernel reported its creation (fork without exec yet).
    Fork,
    /// It was already running; procfs described it.
    Procfs,
    /// Only its socket records are known (it was gone before procfs could be read).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// The name to show: the kernel's, unless that only repeats an indirect exec path
    /// (`exe` for `/proc/self/exe`), then the executable's own name.
    pub comm: String,
    /// The kernel's name for the process right after its exec (a later different name in a
    /// socket record means the process renamed itself).
    pub exec_comm: String,
    /// The executable itself, symlinks and indirections resolved.
    pub exe: Option<String>,
    /// The path the process was started through (`/usr/bin/firefox-esr`, `/proc/self/exe`).
    pub exec_path: Option<String>,
    pub cmdline: Vec<String>,
    pub uid: u32,
    pub cgroup_id: u64,
    pub cgroup: Option<String>,
    pub app: Option<AppIdentity>,
    /// Name of the policy app / watch reason that made it watched.
    pub watch: Option<String>,
    pub origin: Origin,
    pub exited: bool,
    pub exit_code: Option<u32>,
}

impl ProcessInfo {
    /// A process known by its records alone (gone before procfs could be read).
    fn bare(
        pid: u32,
        cgroup_id: u64,
        comm: &str,
        uid: u32,
        cgroup: Option<String>,
        app: Option<AppIdentity>,
    ) -> Self {
        ProcessInfo {
            pid,
            ppid: 0,
            comm: comm.to_owned(),
            exec_comm: comm.to_owned(),
            exe: None,
            exec_path: None,
            cmdline: Vec::new(),
            uid,
            cgroup_id,
            cgroup,
            app,
            watch: None,
            origin: Origin::Unknown,
            exited: false,
            exit_code: None,
        }
    }
}

/// Paths that start a program without naming it: the kernel then names the process after
/// the path (`exe`, `3`), which says nothing.
pub fn indirect_exec(path: &str) -> bool {
    path == "/proc/self/exe"
        || path.starts_with("/dev/fd/")
        || path.starts_with("/proc/self/fd/")
        || (path.starts_with("/proc/") && (path.ends_with("/exe") || path.contains("/fd/")))
}

/// A process name as the kernel keeps it: at most 15 bytes (cut on a character boundary).
pub fn kernel_name(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

fn basename(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

/// The name to show for a process the kernel calls `kernel_comm` after exec'ing `filename`.
pub fn display_comm(kernel_comm: &str, filename: &str, exe: Option<&str>) -> String {
    match exe {
        Some(exe) if indirect_exec(filename) && kernel_comm == kernel_name(basename(filename)) => {
            kernel_name(basename(exe))
        }
        _ => kernel_comm.to_owned(),
    }
}

impl<P: ProcSource> Engine<P> {
    /// Records a process that was already running (from a procfs scan).
    pub fn add_snapshot(&mut self, snap: ProcSnapshot, watch_tag: Option<u32>) {
        let pid = snap.pid;
        let mut info = self.process_from_snapshot(pid, 0, snap);
        info.watch = watch_tag.and_then(|t| self.tag_name(t));
        self.insert_proc(info);
    }

    /// A process table entry for a process procfs showed us.
    fn process_from_snapshot(
        &mut self,
        pid: u32,
        cgroup_id: u64,
        snap: ProcSnapshot,
    ) -> ProcessInfo {
        let app = self.source.app_of(pid, snap.cgroup.as_deref());
        let exe = snap.exe.map(|p| p.display().to_string());
        ProcessInfo {
            pid,
            ppid: snap.ppid,
            comm: snap.comm.clone(),
            exec_comm: snap.comm,
            exec_path: exe.clone(),
            exe,
            cmdline: snap.cmdline,
            uid: snap.uid,
            cgroup_id,
            cgroup: snap.cgroup,
            app,
            watch: None,
            origin: Origin::Procfs,
            exited: false,
            exit_code: None,
        }
    }

    pub(super) fn insert_proc(&mut self, info: ProcessInfo) {
        if self.procs.put(info.pid, info).is_none() {
            self.stats.processes_seen += 1;
        }
    }

    /// The cgroup path of a cgroup id, from cgroup records.
    fn cgroup_path(&self, id: u64) -> Option<String> {
        self.cgroups.peek(&id).cloned()
    }

    pub(super) fn on_exec(&mut self, r: &ExecRecord) {
        let pid = r.header.tgid;
        // The live process may already be something else if it exec'd again; take procfs's
        // word only when it agrees on the name.
        let snap = self.source.snapshot(pid).filter(|s| s.comm == r.comm);
        let from_proc = snap
            .as_ref()
            .and_then(|s| s.exe.as_ref())
            .map(|p| p.display().to_string());
        let from_path = (r.filename.starts_with('/') && !indirect_exec(&r.filename))
            .then(|| r.filename.clone());
        let exe = from_proc
            .or_else(|| {
                r.exe
                    .clone()
                    .filter(|_| !r.exe_truncated || from_path.is_none())
            })
            .or(from_path);
        let cgroup = snap
            .as_ref()
            .and_then(|s| s.cgroup.clone())
            .or_else(|| self.cgroup_path(r.header.cgroup_id));
        let app = self.source.app_of(pid, cgroup.as_deref());
        let info = ProcessInfo {
            pid,
            ppid: r.ppid,
            comm: display_comm(&r.comm, &r.filename, exe.as_deref()),
            exec_comm: r.comm.clone(),
            exec_path: Some(r.filename.clone()).filter(|f| !f.is_empty()),
            exe,
            cmdline: snap.map(|s| s.cmdline).unwrap_or_default(),
            uid: r.header.uid,
            cgroup_id: r.header.cgroup_id,
            cgroup,
            app,
            watch: self.tag_name(r.watch_tag),
            origin: Origin::Exec,
            exited: false,
            exit_code: None,
        };
        self.insert_proc(info);
    }

    pub(super) fn on_fork(&mut self, r: &ForkRecord) {
        let parent = self
            .known_process(r.header.tgid, r.header.cgroup_id, &r.comm, r.header.uid)
            .clone();
        // The child is named like its parent; a name the parent only has from an indirect
        // exec stays replaced.
        let comm = if r.comm == parent.exec_comm {
            parent.comm.clone()
        } else {
            r.comm.clone()
        };
        let info = ProcessInfo {
            pid: r.child_tgid,
            ppid: r.header.tgid,
            comm,
            exec_comm: r.comm.clone(),
            exe: parent.exe,
            exec_path: parent.exec_path,
            cmdline: parent.cmdline,
            uid: r.header.uid,
            cgroup_id: r.header.cgroup_id,
            cgroup: parent.cgroup,
            app: parent.app,
            watch: self.tag_name(r.watch_tag).or(parent.watch),
            origin: Origin::Fork,
            exited: false,
            exit_code: None,
        };
        self.insert_proc(info);
    }

    pub(super) fn on_exit(&mut self, r: &ExitRecord) {
        if let Some(p) = self.procs.get_mut(&r.header.tgid) {
            p.exited = true;
            p.exit_code = Some(r.exit_code);
        }
    }

    /// A new cgroup (its path, for identities later), or a watched process moving to one:
    /// its cgroup and app identity follow.
    pub(super) fn on_cgroup(&mut self, r: &CgroupRecord) {
        self.cgroups.put(r.cgroup_id, r.path.clone());
        if r.tgid == 0 {
            return;
        }
        let known_app = self
            .known_process(r.tgid, r.cgroup_id, "", r.header.uid)
            .app
            .clone();
        let app = self.source.app_of(r.tgid, Some(&r.path));
        let watch = self.tag_name(r.watch_tag);
        if let Some(p) = self.procs.get_mut(&r.tgid) {
            p.cgroup_id = r.cgroup_id;
            p.cgroup = Some(r.path.clone());
            p.app = app.or(known_app);
            if p.watch.is_none() {
                p.watch = watch;
            }
        }
    }

    /// A socket record names the process as it is now: a process that renamed itself
    /// (`prctl(PR_SET_NAME)`) is shown by its new name.
    pub(super) fn refresh_comm(&mut self, pid: u32, comm: &str) {
        if let Some(p) = self.procs.get_mut(&pid) {
            if !comm.is_empty() && comm != p.exec_comm && comm != p.comm {
                p.comm = comm.to_owned();
            }
        }
    }

    /// The process with `pid`, from the table or procfs, or a bare entry (a reference: a
    /// watched app's every record asks, and a copy of its command line each time showed in
    /// the daemon's profile).
    pub(super) fn known_process(
        &mut self,
        pid: u32,
        cgroup_id: u64,
        comm: &str,
        uid: u32,
    ) -> &ProcessInfo {
        if !self.procs.contains(&pid) {
            let info = self.look_up_process(pid, cgroup_id, comm, uid);
            self.insert_proc(info);
        }
        // Inserted just above: the closure is only there to need no unwrap.
        self.procs.get_or_insert_mut(pid, || {
            ProcessInfo::bare(pid, cgroup_id, comm, uid, None, None)
        })
    }

    /// A process the table does not hold: from procfs, or a bare entry.
    fn look_up_process(&mut self, pid: u32, cgroup_id: u64, comm: &str, uid: u32) -> ProcessInfo {
        match self.source.snapshot(pid) {
            Some(snap) => self.process_from_snapshot(pid, cgroup_id, snap),
            None => {
                let cgroup = self.cgroup_path(cgroup_id);
                let app = self.source.app_of(pid, cgroup.as_deref());
                ProcessInfo::bare(pid, cgroup_id, comm, uid, cgroup, app)
            }
        }
    }

    pub fn process(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.peek(&pid)
    }

    pub fn processes(&self) -> impl Iterator<Item = &ProcessInfo> {
        self.procs.iter().map(|(_, p)| p)
    }

    /// The chain of parents of `pid` known to the engine, nearest first (bounded).
    pub fn ancestry(&self, pid: u32) -> Vec<u32> {
        let mut chain = Vec::new();
        let mut cur = pid;
        while let Some(p) = self.procs.peek(&cur) {
            if p.ppid == 0 || chain.len() >= 32 || chain.contains(&p.ppid) {
                break;
            }
            chain.push(p.ppid);
            cur = p.ppid;
        }
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_indirect_execs_are_named_after_their_executable() {
        // Issue 10: Chromium's helpers exec /proc/self/exe and the kernel calls them "exe".
        assert_eq!(
            display_comm("exe", "/proc/self/exe", Some("/usr/lib/chromium/chromium")),
            "chromium"
        );
        assert_eq!(
            display_comm("3", "/dev/fd/3", Some("/opt/teams/teams-for-linux")),
            "teams-for-linux"
        );
        // A program that renamed itself, or a plain exec: the kernel's name stands.
        assert_eq!(
            display_comm("ThreadPool", "/proc/self/exe", Some("/usr/lib/x")),
            "ThreadPool"
        );
        assert_eq!(
            display_comm(
                "firefox-esr",
                "/usr/bin/firefox-esr",
                Some("/usr/lib/firefox-esr/firefox-esr")
            ),
            "firefox-esr"
        );
        assert!(indirect_exec("/proc/1234/exe") && indirect_exec("/proc/self/fd/7"));
        assert!(!indirect_exec("/usr/bin/zoom"));
        assert_eq!(kernel_name("CiscoCollabHostCefWM"), "CiscoCollabHost");
    }
}
