//! The correlation engine: turns decoded kernel records into processes (exe, parent, user,
//! app) and aggregated connections. Pure state machine: no kernel, no I/O except the
//! optional procfs look-ups done by a [`ProcSource`], so tests drive it with records.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use crate::bounded::BoundedLru;
use serde::Serialize;

use crate::{
    host::{
        appid::{self, AppIdentity},
        procinfo::{self, ProcSnapshot},
    },
    kernel::wire::{ExecRecord, ExitRecord, ForkRecord, PacketRecord, Proto, Record, SockRecord},
    naming::{DnsName, NameSource, Namer, WireName},
};
use monitor_common::EventKind;

/// Where the engine gets facts about live processes it has no record for.
pub trait ProcSource {
    fn snapshot(&mut self, pid: u32) -> Option<ProcSnapshot>;
    fn app_of(&mut self, pid: u32, cgroup_path: Option<&str>) -> Option<AppIdentity>;
}

/// The real procfs.
#[derive(Debug, Default)]
pub struct LiveProc;

impl ProcSource for LiveProc {
    fn snapshot(&mut self, pid: u32) -> Option<ProcSnapshot> {
        procinfo::snapshot(pid)
    }
    fn app_of(&mut self, pid: u32, cgroup_path: Option<&str>) -> Option<AppIdentity> {
        appid::of_process(pid, cgroup_path)
    }
}

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
    pub comm: String,
    pub exe: Option<String>,
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

/// How a connection's destination was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `connect()` (TCP, or UDP that connects first).
    #[default]
    Connect,
    /// A UDP send with an explicit destination, without `connect()`.
    Send,
}

/// Key of one aggregated connection row: connections of one process to one address and
/// port meant for one name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub pid: u32,
    pub proto: Proto,
    pub dst: IpAddr,
    pub port: u16,
    /// The name the application meant (SNI, QUIC SNI, Host, or DNS), if known.
    pub domain: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAgg {
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub first_cookie: u64,
    pub uid: u32,
    pub comm: String,
    pub thread_comm: String,
    /// How the destination was given.
    pub via: Via,
    /// Where `ConnKey::domain` came from.
    pub domain_source: Option<NameSource>,
    /// The DNS name and CNAME chain the process received for the address, if any.
    pub dns: Option<Arc<DnsName>>,
    /// The connection's own bytes carried an Encrypted Client Hello.
    pub ech: bool,
}

/// Totals for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub records: u64,
    pub sock_records: u64,
    pub processes_seen: u64,
    pub rows_dropped: u64,
}

pub struct Engine<P: ProcSource = LiveProc> {
    procs: BoundedLru<u32, ProcessInfo>,
    conns: HashMap<ConnKey, ConnAgg>,
    /// The latest connection of each socket (its row and time), for names that arrive
    /// after the connect.
    by_cookie: BoundedLru<u64, (ConnKey, u64)>,
    /// Which watched process used a socket (DNS answers on it are that process's).
    socket_owner: BoundedLru<u64, u32>,
    pub namer: Namer,
    /// Rows created or renamed since the last [`Engine::take_changes`] (for the daemon's
    /// alerts); bounded, overflow counted.
    changes: Vec<ConnKey>,
    pub changes_dropped: u64,
    max_rows: usize,
    watch_names: HashMap<u32, String>,
    source: P,
    pub stats: EngineStats,
}

/// Bounds: the process table keeps the most recent processes; connection rows are kept
/// until the report (an audit), up to `max_rows`, with overflow counted.
pub const DEFAULT_MAX_PROCS: usize = 65_536;
pub const DEFAULT_MAX_ROWS: usize = 1_000_000;
/// Sockets remembered for late names and DNS ownership.
pub const DEFAULT_MAX_SOCKETS: usize = 262_144;

impl Engine<LiveProc> {
    pub fn new() -> Self {
        Self::with_source(LiveProc)
    }
}

impl Default for Engine<LiveProc> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: ProcSource> Engine<P> {
    pub fn with_source(source: P) -> Self {
        Self {
            procs: BoundedLru::new(DEFAULT_MAX_PROCS),
            conns: HashMap::new(),
            by_cookie: BoundedLru::new(DEFAULT_MAX_SOCKETS),
            socket_owner: BoundedLru::new(DEFAULT_MAX_SOCKETS),
            namer: Namer::default(),
            changes: Vec::new(),
            changes_dropped: 0,
            max_rows: DEFAULT_MAX_ROWS,
            watch_names: HashMap::new(),
            source,
            stats: EngineStats::default(),
        }
    }

    /// Names a watch tag (shown as the process's `watch` reason).
    pub fn name_watch_tag(&mut self, tag: u32, name: impl Into<String>) {
        self.watch_names.insert(tag, name.into());
    }

    fn tag_name(&self, tag: u32) -> Option<String> {
        self.watch_names.get(&tag).cloned()
    }

    /// Records a process that was already running (from a procfs scan).
    pub fn add_snapshot(&mut self, snap: ProcSnapshot, watch_tag: Option<u32>) {
        let app = self.source.app_of(snap.pid, snap.cgroup.as_deref());
        let info = ProcessInfo {
            pid: snap.pid,
            ppid: snap.ppid,
            comm: snap.comm,
            exe: snap.exe.map(|p| p.display().to_string()),
            cmdline: snap.cmdline,
            uid: snap.uid,
            cgroup_id: 0,
            cgroup: snap.cgroup,
            app,
            watch: watch_tag.and_then(|t| self.tag_name(t)),
            origin: Origin::Procfs,
            exited: false,
            exit_code: None,
        };
        self.insert_proc(info);
    }

    fn insert_proc(&mut self, info: ProcessInfo) {
        if self.procs.put(info.pid, info).is_none() {
            self.stats.processes_seen += 1;
        }
    }

    pub fn process(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.peek(&pid)
    }

    pub fn processes(&self) -> impl Iterator<Item = &ProcessInfo> {
        self.procs.iter().map(|(_, p)| p)
    }

    pub fn handle(&mut self, record: &Record) {
        self.stats.records += 1;
        if log::log_enabled!(log::Level::Trace) {
            match record {
                Record::Packet(p) => log::trace!(
                    "{:?} cookie {} {}:{} -> :{} seq {} {} bytes",
                    p.kind,
                    p.cookie,
                    p.src,
                    p.src_port,
                    p.dst_port,
                    p.seq,
                    p.data.len()
                ),
                other => log::trace!("{other:?}"),
            }
        }
        match record {
            Record::Sock(r) => self.on_sock(r),
            Record::Exec(r) => self.on_exec(r),
            Record::Fork(r) => self.on_fork(r),
            Record::Exit(r) => self.on_exit(r),
            Record::Packet(r) => self.on_packet(r),
        }
    }

    fn on_exec(&mut self, r: &ExecRecord) {
        let pid = r.header.tgid;
        // The live process may already be something else if it exec'd again; take the
        // command line and cgroup only when procfs agrees on the name.
        let snap = self.source.snapshot(pid).filter(|s| s.comm == r.comm);
        let exe = if r.filename.starts_with('/') || snap.is_none() {
            Some(r.filename.clone()).filter(|f| !f.is_empty())
        } else {
            snap.as_ref()
                .and_then(|s| s.exe.as_ref())
                .map(|p| p.display().to_string())
                .or_else(|| Some(r.filename.clone()))
        };
        let cgroup = snap.as_ref().and_then(|s| s.cgroup.clone());
        let app = self.source.app_of(pid, cgroup.as_deref());
        let info = ProcessInfo {
            pid,
            ppid: r.ppid,
            comm: r.comm.clone(),
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

    fn on_fork(&mut self, r: &ForkRecord) {
        let parent = self.known_process(r.header.tgid, r.header.cgroup_id, &r.comm, r.header.uid);
        let info = ProcessInfo {
            pid: r.child_tgid,
            ppid: r.header.tgid,
            comm: r.comm.clone(),
            exe: parent.exe,
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

    fn on_exit(&mut self, r: &ExitRecord) {
        if let Some(p) = self.procs.get_mut(&r.header.tgid) {
            p.exited = true;
            p.exit_code = Some(r.exit_code);
        }
    }

    /// The process with `pid`, from the table or procfs, or a bare entry.
    fn known_process(&mut self, pid: u32, cgroup_id: u64, comm: &str, uid: u32) -> ProcessInfo {
        if let Some(p) = self.procs.get(&pid) {
            return p.clone();
        }
        let info = match self.source.snapshot(pid) {
            Some(snap) => {
                let app = self.source.app_of(pid, snap.cgroup.as_deref());
                ProcessInfo {
                    pid,
                    ppid: snap.ppid,
                    comm: snap.comm,
                    exe: snap.exe.map(|p| p.display().to_string()),
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
            None => ProcessInfo {
                pid,
                ppid: 0,
                comm: comm.to_owned(),
                exe: None,
                cmdline: Vec::new(),
                uid,
                cgroup_id,
                cgroup: None,
                app: None,
                watch: None,
                origin: Origin::Unknown,
                exited: false,
                exit_code: None,
            },
        };
        self.insert_proc(info.clone());
        info
    }

    fn on_sock(&mut self, r: &SockRecord) {
        self.stats.sock_records += 1;
        let pid = r.header.tgid;
        let known = self.known_process(pid, r.header.cgroup_id, &r.comm, r.header.uid);
        if known.watch.is_none() {
            if let Some(name) = self.tag_name(r.watch_tag) {
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.watch = Some(name);
                }
            }
        }
        self.socket_owner.put(r.cookie, pid);
        let dns = self
            .namer
            .dns
            .lookup(pid, r.header.cgroup_id, r.dst, r.header.ts_ns);
        log::trace!(
            "socket {} to {}: DNS name {:?}",
            r.cookie,
            r.dst,
            dns.as_ref().map(|d| &d.qname)
        );
        let key = ConnKey {
            pid,
            proto: r.proto,
            dst: r.dst,
            port: r.port,
            domain: dns.as_ref().map(|d| Arc::from(d.qname.as_str())),
        };
        let ts = r.header.ts_ns;
        if let Some(agg) = self.conns.get_mut(&key) {
            agg.count += 1;
            agg.first_ns = agg.first_ns.min(ts);
            agg.last_ns = agg.last_ns.max(ts);
            self.by_cookie.put(r.cookie, (key, ts));
            return;
        }
        if self.conns.len() >= self.max_rows {
            self.stats.rows_dropped += 1;
            return;
        }
        self.by_cookie.put(r.cookie, (key.clone(), ts));
        self.changed(key.clone());
        self.conns.insert(
            key,
            ConnAgg {
                count: 1,
                first_ns: ts,
                last_ns: ts,
                first_cookie: r.cookie,
                uid: r.header.uid,
                comm: r.comm.clone(),
                thread_comm: r.thread_comm.clone(),
                via: match r.kind {
                    EventKind::UdpSend => Via::Send,
                    _ => Via::Connect,
                },
                domain_source: dns.is_some().then_some(NameSource::Dns),
                dns,
                ech: false,
            },
        );
    }

    fn on_packet(&mut self, r: &PacketRecord) {
        match r.kind {
            EventKind::DnsAnswer => {
                let owner = self.socket_owner.get(&r.cookie).copied();
                let n = self.namer.on_dns_answer(r, owner);
                log::trace!(
                    "DNS answer on socket {} (owner {owner:?}): {n} addresses",
                    r.cookie
                );
            }
            EventKind::Payload => {
                if let Some(name) = self.namer.on_payload(r) {
                    self.name_socket(r.cookie, name);
                }
            }
            _ => {}
        }
    }

    /// A name from the connection's own bytes: it beats DNS. When it differs from the DNS
    /// name the connection moves to a row of its own, remembering both.
    fn name_socket(&mut self, cookie: u64, name: WireName) {
        let Some((old_key, ts)) = self.by_cookie.get(&cookie).cloned() else {
            return;
        };
        if old_key.domain.as_deref() == Some(name.name.as_str()) {
            if let Some(agg) = self.conns.get_mut(&old_key) {
                agg.domain_source = Some(name.source);
                agg.ech |= name.ech;
            }
            return;
        }
        let Some(old) = self.conns.get_mut(&old_key) else {
            return;
        };
        old.count -= 1;
        let mut template = old.clone();
        if old.count == 0 {
            self.conns.remove(&old_key);
        }
        let new_key = ConnKey {
            domain: Some(Arc::from(name.name.as_str())),
            ..old_key
        };
        template.count = 0;
        template.first_cookie = cookie;
        template.first_ns = ts;
        template.last_ns = ts;
        template.domain_source = Some(name.source);
        template.ech = name.ech;
        let agg = self.conns.entry(new_key.clone()).or_insert(template);
        agg.count += 1;
        agg.first_ns = agg.first_ns.min(ts);
        agg.last_ns = agg.last_ns.max(ts);
        self.by_cookie.put(cookie, (new_key.clone(), ts));
        self.changed(new_key);
    }

    fn changed(&mut self, key: ConnKey) {
        if self.changes.len() < 65_536 {
            self.changes.push(key);
        } else {
            self.changes_dropped += 1;
        }
    }

    /// Rows created or renamed since the last call, with their current state.
    pub fn take_changes(&mut self) -> Vec<(ConnKey, ConnAgg)> {
        let keys = std::mem::take(&mut self.changes);
        keys.into_iter()
            .filter_map(|k| self.conns.get(&k).cloned().map(|a| (k, a)))
            .collect()
    }

    /// Forgets connection rows last seen before `before_ns` (a long-running daemon keeps
    /// history on disk, not in memory).
    pub fn prune(&mut self, before_ns: u64) {
        self.conns.retain(|_, a| a.last_ns >= before_ns);
    }

    /// Connection rows, ordered by first sighting.
    pub fn connections(&self) -> Vec<(ConnKey, &ConnAgg)> {
        let mut rows: Vec<_> = self.conns.iter().map(|(k, v)| (k.clone(), v)).collect();
        rows.sort_by(|(ka, va), (kb, vb)| (va.first_ns, ka).cmp(&(vb.first_ns, kb)));
        rows
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
mod tests;
