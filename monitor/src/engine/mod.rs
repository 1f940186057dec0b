//! The correlation engine: turns decoded kernel records into processes (exe, parent, user,
//! app) and aggregated connections. Pure state machine: no kernel, no I/O except the
//! optional procfs look-ups done by a [`ProcSource`], so tests drive it with records.

mod process;
mod row;
mod sibling;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

/// The hasher of the tables a record looks up (the rows, the rows touched): seeded at
/// random per table, as std's is, and faster on these keys than std's SipHash.
type Keyed = foldhash::quality::RandomState;

pub use process::{display_comm, indirect_exec, kernel_name, Origin, ProcessInfo};
pub use row::{ConnAgg, ConnKey, Via};
use serde::Serialize;
pub use sibling::SIBLING_WINDOW_NS;

use crate::{
    bounded::BoundedLru,
    host::{
        appid::{self, AppIdentity},
        procinfo::{self, ProcSnapshot},
    },
    kernel::wire::{PacketRecord, Proto, Record, ResolvedRecord, SockRecord},
    naming::{Asker, DnsName, NameSource, Named, Namer, Receiver, WireName, DNS_QUERY_PORTS},
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

/// Rows of one process to one address on distinct ports; calls to further ports of it go
/// to one row with port [`FOLDED_PORT`] (a flood across ports costs one row, not
/// thousands, in memory and in the store).
pub const MAX_PORTS_PER_DEST: u32 = 32;
/// The port of the row that holds a process's calls to more than [`MAX_PORTS_PER_DEST`]
/// ports of one address.
pub const FOLDED_PORT: u16 = 0;

/// Names kept per DNS row.
const MAX_QUERIES_PER_ROW: usize = 32;

/// Totals for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub records: u64,
    pub sock_records: u64,
    pub processes_seen: u64,
    pub rows_dropped: u64,
}

/// What changed for the daemon's store since the last [`Engine::take_touched`].
#[derive(Debug, Default)]
pub struct Touched {
    /// Rows with their current state.
    pub rows: Vec<(ConnKey, ConnAgg)>,
    /// Rows a rename emptied and removed, with their first socket.
    pub merged: Vec<(ConnKey, u64)>,
}

pub struct Engine<P: ProcSource = LiveProc> {
    procs: BoundedLru<u32, ProcessInfo>,
    /// cgroup id -> path, from cgroup records.
    cgroups: BoundedLru<u64, String>,
    conns: HashMap<ConnKey, ConnAgg, Keyed>,
    /// The latest connection of each socket (its row and time), for names that arrive
    /// after the connect.
    by_cookie: BoundedLru<u64, (ConnKey, u64)>,
    /// Which watched process asked DNS on a socket (answers on it are that process's).
    socket_owner: BoundedLru<u64, (u32, u64)>,
    /// QUIC names read per (process, address, port), for sockets whose own never left.
    siblings: sibling::Siblings,
    pub namer: Namer,
    /// Rows created or renamed since the last [`Engine::take_changes`] (for the daemon's
    /// alerts); bounded, overflow counted.
    changes: Vec<ConnKey>,
    pub changes_dropped: u64,
    /// Rows whose count, name or flags changed since the last [`Engine::take_touched`]
    /// (for the daemon's store); bounded, overflow counted.
    touched: HashSet<ConnKey, Keyed>,
    pub touched_dropped: u64,
    /// Rows a rename emptied and removed, with their first socket, since the last
    /// [`Engine::take_touched`].
    merged: Vec<(ConnKey, u64)>,
    max_rows: usize,
    /// Rows per (process, protocol, address), for [`MAX_PORTS_PER_DEST`].
    dest_ports: HashMap<(u32, Proto, IpAddr), u32>,
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
/// cgroup paths remembered.
pub const DEFAULT_MAX_CGROUPS: usize = 16_384;

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
            cgroups: BoundedLru::new(DEFAULT_MAX_CGROUPS),
            conns: HashMap::default(),
            by_cookie: BoundedLru::new(DEFAULT_MAX_SOCKETS),
            socket_owner: BoundedLru::new(DEFAULT_MAX_SOCKETS),
            siblings: sibling::Siblings::new(DEFAULT_MAX_SOCKETS / 16),
            namer: Namer::default(),
            changes: Vec::new(),
            changes_dropped: 0,
            touched: HashSet::default(),
            touched_dropped: 0,
            merged: Vec::new(),
            max_rows: DEFAULT_MAX_ROWS,
            dest_ports: HashMap::new(),
            watch_names: HashMap::new(),
            source,
            stats: EngineStats::default(),
        }
    }

    /// Names a watch tag (shown as the process's `watch` reason).
    pub fn name_watch_tag(&mut self, tag: u32, name: impl Into<String>) {
        self.watch_names.insert(tag, name.into());
    }

    pub(crate) fn tag_name(&self, tag: u32) -> Option<String> {
        self.watch_names.get(&tag).cloned()
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
            Record::Cgroup(r) => self.on_cgroup(r),
            Record::Resolved(r) => self.on_resolved(r),
            // What apps sent is the inspector's (the session hands it over).
            Record::Plain(_) => {}
        }
    }

    fn on_sock(&mut self, r: &SockRecord) {
        self.stats.sock_records += 1;
        let pid = r.header.tgid;
        let unwatched = self
            .known_process(pid, r.header.cgroup_id, &r.comm, r.header.uid)
            .watch
            .is_none();
        self.refresh_comm(pid, &r.comm);
        if unwatched {
            if let Some(name) = self.tag_name(r.watch_tag) {
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.watch = Some(name);
                }
            }
        }
        // Answers come back to the sockets that asked: only theirs are kept (every
        // connect's socket doubled the daemon's table work in a connect flood).
        if DNS_QUERY_PORTS.contains(&r.port) {
            self.socket_owner.put(r.cookie, (pid, r.header.ts_ns));
        }
        let asker = Asker {
            pid,
            cgroup: r.header.cgroup_id,
            uid: r.header.uid,
            netns: r.netns,
        };
        // DNS queries are named by what they ask, not by the resolver's own name.
        let dns = (!DNS_QUERY_PORTS.contains(&r.port))
            .then(|| self.namer.dns.lookup(asker, r.dst, r.header.ts_ns))
            .flatten();
        log::trace!(
            "socket {} to {}: DNS name {:?}",
            r.cookie,
            r.dst,
            dns.as_ref().map(|d| &d.qname)
        );
        // No answer for it: a sibling's QUIC name, if one was read a moment ago.
        let sibling =
            (dns.is_none() && r.proto == Proto::Udp && !DNS_QUERY_PORTS.contains(&r.port))
                .then(|| {
                    let ts = r.header.ts_ns;
                    self.siblings.name_for(r.cookie, pid, r.dst, r.port, ts)
                })
                .flatten();
        let mut key = ConnKey {
            pid,
            proto: r.proto,
            dst: r.dst,
            port: r.port,
            domain: dns
                .as_ref()
                .map(|d| Arc::from(d.qname.as_str()))
                .or_else(|| sibling.clone()),
        };
        let spread = (pid, r.proto, r.dst);
        if !self.conns.contains_key(&key)
            && self.dest_ports.get(&spread).copied().unwrap_or(0) >= MAX_PORTS_PER_DEST
        {
            key.port = FOLDED_PORT;
        }
        let ts = r.header.ts_ns;
        let blocked = u64::from(r.blocked.is_some());
        if let Some(agg) = self.conns.get_mut(&key) {
            agg.count += 1;
            agg.first_ns = agg.first_ns.min(ts);
            agg.last_ns = agg.last_ns.max(ts);
            // The first denial of a row is news (an alert says it was blocked).
            let newly_blocked = agg.blocked == 0 && blocked > 0;
            agg.blocked += blocked;
            agg.sibling_named += u64::from(sibling.is_some());
            self.by_cookie.put(r.cookie, (key.clone(), ts));
            if newly_blocked {
                self.changed(key.clone());
            }
            self.touch(key);
            return;
        }
        if self.conns.len() >= self.max_rows {
            self.stats.rows_dropped += 1;
            return;
        }
        if key.port != FOLDED_PORT {
            *self.dest_ports.entry(spread).or_default() += 1;
        }
        self.by_cookie.put(r.cookie, (key.clone(), ts));
        self.changed(key.clone());
        self.touch(key.clone());
        let row = ConnAgg::first(r, dns, sibling.is_some(), blocked);
        self.conns.insert(key, row);
    }

    /// A connection open before brokerwatch started (found among a watched process's
    /// sockets at start): a row as its connect would have made, marked so; its later first
    /// payloads name it (`sent` then says it was used).
    pub fn adopt_open_socket(&mut self, r: &SockRecord) {
        self.on_sock(r);
        self.with_row(r.cookie, |agg| agg.before_start = true);
    }

    /// A watched process's own `getaddrinfo()` result names its later connections (host
    /// names only: anyone can make an app ask for anything).
    fn on_resolved(&mut self, r: &ResolvedRecord) {
        // A literal address "resolved" names nothing.
        let literal = r.name.parse::<IpAddr>().is_ok();
        if literal || !crate::naming::is_host_name(&r.name) || r.addrs.is_empty() {
            return;
        }
        let from = Receiver {
            pid: Some(r.header.tgid),
            cgroup: r.header.cgroup_id,
            uid: r.header.uid,
            netns: 0,
        };
        let name = r.name.trim_end_matches('.').to_ascii_lowercase();
        self.namer
            .dns
            .insert_call(from, &name, &r.addrs, r.header.ts_ns);
    }

    fn on_packet(&mut self, r: &PacketRecord) {
        match r.kind {
            EventKind::DnsAnswer => {
                let from = Receiver {
                    pid: self.socket_owner.get(&r.cookie).map(|o| o.0),
                    cgroup: r.header.cgroup_id,
                    uid: r.header.uid,
                    netns: r.netns,
                };
                let n = self.namer.on_dns_answer(r, from);
                log::trace!(
                    "DNS answer on socket {} ({from:?}): {n} addresses",
                    r.cookie
                );
            }
            EventKind::Payload => {
                self.with_row(r.cookie, |agg| agg.sent = true);
                match self.namer.on_payload(r) {
                    Some(Named::Wire(name)) => {
                        log::trace!("socket {} named {name:?}", r.cookie);
                        self.name_socket(r.cookie, name)
                    }
                    Some(Named::Queries(names)) => self.with_row(r.cookie, |agg| {
                        for n in names {
                            if agg.dns_queries.len() < MAX_QUERIES_PER_ROW
                                && !agg.dns_queries.contains(&n)
                            {
                                agg.dns_queries.push(n);
                            }
                        }
                    }),
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// Applies `f` to the row of socket `cookie`'s latest connection.
    fn with_row(&mut self, cookie: u64, f: impl FnOnce(&mut ConnAgg)) {
        if let Some((key, _)) = self.by_cookie.get(&cookie).cloned() {
            if let Some(agg) = self.conns.get_mut(&key) {
                f(agg);
                self.touch(key);
            }
        }
    }

    /// Whether the connection really uses Encrypted Client Hello (see [`ConnAgg::ech`]):
    /// only on evidence. The ClientHello carried the extension (browsers send a GREASE one
    /// everywhere) and an HTTPS/SVCB answer offered ECH for the name it carried or the
    /// name resolved, or the name is a provider's known public ECH name. A name that differs
    /// from the one resolved proves nothing: many names share an address.
    fn ech_in_use(&mut self, agg: &ConnAgg, name: &WireName, ts: u64) -> bool {
        if !name.ech {
            return false;
        }
        let resolved = agg.dns.as_ref().map(|d| d.qname.as_str());
        crate::naming::is_known_ech_front(&name.name)
            || self.namer.dns.ech_offered(agg.netns, &name.name, ts)
            || resolved.is_some_and(|q| self.namer.dns.ech_offered(agg.netns, q, ts))
    }

    /// The DNS answer behind a connection that its own bytes named `name`: on an address
    /// many names share, the one that named it, not the latest (`None`: keep what it had).
    fn dns_for_name(
        &mut self,
        key: &ConnKey,
        agg: &ConnAgg,
        name: &str,
        ts: u64,
    ) -> Option<Arc<DnsName>> {
        let asker = Asker {
            pid: key.pid,
            cgroup: self.procs.peek(&key.pid).map_or(0, |p| p.cgroup_id),
            uid: agg.uid,
            netns: agg.netns,
        };
        self.namer.dns.lookup_named(asker, key.dst, ts, name)
    }

    /// A name from the connection's own bytes: it beats DNS. When it differs from the DNS
    /// name the connection moves to a row of its own, remembering both.
    fn name_socket(&mut self, cookie: u64, name: WireName) {
        let Some((old_key, ts)) = self.by_cookie.get(&cookie).cloned() else {
            return;
        };
        let Some(old) = self.conns.get(&old_key).cloned() else {
            return;
        };
        if name.source == NameSource::Quic {
            let (pid, dst, port) = (old_key.pid, old_key.dst, old_key.port);
            self.siblings.read(pid, dst, port, &name.name, ts);
        }
        // Its own bytes name it now: no longer named from a sibling.
        if self.siblings.names_itself(cookie) {
            if let Some(agg) = self.conns.get_mut(&old_key) {
                agg.sibling_named = agg.sibling_named.saturating_sub(1);
            }
        }
        // The answer that named this connection, where its address has several.
        let dns = self
            .dns_for_name(&old_key, &old, &name.name, ts)
            .or_else(|| old.dns.clone());
        let seen = ConnAgg {
            dns: dns.clone(),
            ..old
        };
        let ech = self.ech_in_use(&seen, &name, ts);
        if old_key.domain.as_deref() == Some(name.name.as_str()) {
            if let Some(agg) = self.conns.get_mut(&old_key) {
                agg.domain_source = Some(name.source);
                agg.ech |= ech;
                agg.name_partial = name.partial;
            }
            self.touch(old_key);
            return;
        }
        let old = self.conns.get_mut(&old_key).expect("cloned above");
        old.count -= 1;
        let mut template = old.clone();
        if old.count == 0 {
            self.merged.push((old_key.clone(), old.first_cookie));
            self.conns.remove(&old_key);
        } else {
            self.touch(old_key.clone());
        }
        let new_key = ConnKey {
            domain: Some(Arc::from(name.name.as_str())),
            ..old_key
        };
        template.count = 0;
        template.sibling_named = 0;
        template.dns = dns;
        template.first_cookie = cookie;
        template.first_ns = ts;
        template.last_ns = ts;
        template.domain_source = Some(name.source);
        template.ech = ech;
        template.name_partial = name.partial;
        let agg = self.conns.entry(new_key.clone()).or_insert(template);
        agg.count += 1;
        agg.first_ns = agg.first_ns.min(ts);
        agg.last_ns = agg.last_ns.max(ts);
        self.by_cookie.put(cookie, (new_key.clone(), ts));
        self.touch(new_key.clone());
        self.changed(new_key);
    }

    fn changed(&mut self, key: ConnKey) {
        if self.changes.len() < 65_536 {
            self.changes.push(key);
        } else {
            self.changes_dropped += 1;
        }
    }

    fn touch(&mut self, key: ConnKey) {
        if self.touched.len() < DEFAULT_MAX_SOCKETS || self.touched.contains(&key) {
            self.touched.insert(key);
        } else {
            self.touched_dropped += 1;
        }
    }

    /// Rows that changed since the last call, with their current state, and the rows a
    /// rename emptied (key and first socket): what the daemon's store must update.
    pub fn take_touched(&mut self) -> Touched {
        let keys = std::mem::take(&mut self.touched);
        let rows = keys
            .into_iter()
            .filter_map(|k| self.conns.get(&k).cloned().map(|a| (k, a)))
            .collect();
        Touched {
            rows,
            merged: std::mem::take(&mut self.merged),
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
    /// Forgets sockets whose last connect or send was before `before_ns` (names for them
    /// arrive within moments: their first payloads, their DNS answers) and gives the
    /// tables' memory back after a flood. Returns whether any table gave memory back.
    pub fn forget_sockets(&mut self, before_ns: u64) -> bool {
        let a = self.by_cookie.forget_while(|(_, ts)| *ts < before_ns);
        let b = self.socket_owner.forget_while(|(_, ts)| *ts < before_ns);
        let c = self.siblings.forget(before_ns);
        a || b || c
    }

    pub fn prune(&mut self, before_ns: u64) {
        self.conns.retain(|_, a| a.last_ns >= before_ns);
        self.dest_ports.clear();
        for k in self.conns.keys().filter(|k| k.port != FOLDED_PORT) {
            *self.dest_ports.entry((k.pid, k.proto, k.dst)).or_default() += 1;
        }
    }

    /// Connection rows, ordered by first sighting.
    pub fn connections(&self) -> Vec<(ConnKey, &ConnAgg)> {
        let mut rows: Vec<_> = self.conns.iter().map(|(k, v)| (k.clone(), v)).collect();
        rows.sort_by(|(ka, va), (kb, vb)| (va.first_ns, ka).cmp(&(vb.first_ns, kb)));
        rows
    }
}

#[cfg(test)]
mod dns_tests;
#[cfg(test)]
mod sibling_tests;
#[cfg(test)]
mod tests;
