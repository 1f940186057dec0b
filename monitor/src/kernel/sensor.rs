//! Loading, attaching and steering the kernel programs (the only module that talks to aya).

use std::path::{Path, PathBuf};

use aya::{
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{CgroupSkb, CgroupSockAddr, RawTracePoint},
    Ebpf, EbpfLoader,
};
use monitor_common::{
    names::{global, map, program},
    BlockPair, CommKey, Config, Counter, KernelOffsets, LearnedKey, MODE_BLOCK,
};

pub use super::error::SensorError;
use super::{
    attach::{Attachments, Hooks},
    block::{self, BlockError, BlockTables},
    btf::Btf,
    budget::BudgetSettings,
    error::map_err,
    libc_probes, preflight,
    programs::{self, Kind, OBJECT, PROGRAMS},
    tls_probes::TlsProbes,
    wire::comm_key,
};
use crate::{
    defaults,
    host::{cgroup, users::SubUids},
};

/// Where the socket and packet programs start out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachScope {
    /// The cgroup v2 root: every process runs the hooks (a map look-up for the unwatched),
    /// so no watched process can be anywhere they do not see.
    #[default]
    Root,
    /// Nowhere yet: the caller attaches to the cgroups where watched apps live
    /// ([`Sensor::attach_cgroup`]); every other process pays nothing.
    Cgroups,
    /// [`AttachScope::Cgroups`] where systemd gives every app a cgroup of its own (a
    /// desktop), [`AttachScope::Root`] where apps share one.
    Auto,
}

impl AttachScope {
    /// `Auto` decided for this machine.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto if Path::new(defaults::SYSTEMD_RUNTIME).is_dir() => Self::Cgroups,
            Self::Auto => Self::Root,
            other => other,
        }
    }
}

/// Settings fixed at load time.
#[derive(Debug, Clone)]
pub struct SensorOptions {
    /// Size of the ring buffer in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    pub attach: AttachScope,
    /// Each user's record budget; `None`: the defaults for the ring's size.
    pub budget: Option<BudgetSettings>,
}

impl Default for SensorOptions {
    fn default() -> Self {
        Self {
            ring_bytes: defaults::RING_BYTES,
            attach: AttachScope::Root,
            budget: None,
        }
    }
}

/// What a program has cost since statistics were turned on
/// (`sysctl kernel.bpf_stats_enabled=1`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProgramStats {
    pub name: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Counters read from the kernel, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelCounters {
    pub generated: u64,
    pub lost: u64,
    pub watch_table_full: u64,
    pub udp_repeats: u64,
    pub bad_packets: u64,
    /// Records that woke the reader.
    #[serde(default)]
    pub wakeups: u64,
    /// Connects and sends denied.
    #[serde(default)]
    pub blocked: u64,
    /// Addresses of blocked names learned from DNS answers in the kernel.
    #[serde(default)]
    pub block_learned: u64,
    /// DNS answers the kernel could not read for blocking.
    #[serde(default)]
    pub block_dns_unread: u64,
    /// Records refused because their user was over budget.
    #[serde(default)]
    pub over_budget: u64,
    /// Watched sockets whose first payloads went unread: their slot went to a newer
    /// watched socket first.
    #[serde(default)]
    pub sock_watch_replaced: u64,
}

/// The loaded and attached kernel programs.
pub struct Sensor {
    pub(super) ebpf: Ebpf,
    /// The running kernel (release, version, lockdown).
    pub kernel: preflight::KernelInfo,
    pub cgroup_root: PathBuf,
    /// Where the programs run: the root, or the cgroups the caller attaches to.
    pub scope: AttachScope,
    attachments: Attachments,
    /// The `MODE_*` watch bits last set.
    mode: u32,
    /// Whether the block tables hold anything (`MODE_BLOCK`).
    blocking: bool,
    /// Why blocking cannot work here (the DNS reader did not load), if so.
    block_unavailable: Option<String>,
    /// Each user's record budget.
    budget: BudgetSettings,
    /// The C library whose `getaddrinfo()` the resolver probes watch, or why they do not.
    libc_probes: Result<PathBuf, String>,
    /// The plaintext sensor's uprobes, per watched process (issue 25), when on.
    pub(super) tls: TlsProbes,
    pub(super) plaintext: bool,
}

impl Sensor {
    /// Checks privileges and kernel support, loads every program and attaches it. Nothing is
    /// watched until [`Sensor::set_mode`] and the `watch_*` calls say so.
    pub fn load(opts: &SensorOptions) -> Result<Self, SensorError> {
        preflight::check_privileges()?;
        let kernel = preflight::check_kernel()?;
        let offsets: KernelOffsets = Btf::from_sys_fs()?.kernel_offsets()?;
        let cgroup_root = cgroup::cgroup2_mount()?;
        preflight::raise_memlock_limit();

        let mut ebpf = EbpfLoader::new()
            .override_global(global::KOFFS, &offsets, true)
            .override_global(global::RING_BYTES, &(opts.ring_bytes as u64), true)
            .map_max_entries(map::EVENTS, opts.ring_bytes)
            .load(OBJECT)
            .map_err(SensorError::Load)?;
        let block_unavailable =
            load_programs(&mut ebpf)?.map(|refused| block::why_not(&kernel, &refused));
        let libc_probes = libc_probes::attach(&mut ebpf);
        if let Err(why) = &libc_probes {
            log::warn!("names from apps' own getaddrinfo() calls are not available: {why}");
        }
        // Parsing the kernel's BTF and the object takes tens of megabytes for a moment;
        // hand them back so that an idle daemon stays small.
        crate::host::give_back_memory();
        let mut sensor = Self {
            ebpf,
            kernel,
            cgroup_root,
            scope: opts.attach.resolve(),
            attachments: Attachments::default(),
            mode: 0,
            blocking: false,
            block_unavailable,
            budget: opts
                .budget
                .unwrap_or_else(|| BudgetSettings::for_ring(opts.ring_bytes)),
            libc_probes,
            tls: TlsProbes::default(),
            plaintext: false,
        };
        sensor.write_config()?;
        sensor.set_budget_owners(&SubUids::load())?;
        if sensor.scope == AttachScope::Root {
            let root = sensor.cgroup_root.clone();
            sensor.attach_cgroup(&root, Hooks::All)?;
        }
        Ok(sensor)
    }

    /// Runs `hooks` for the processes of cgroup directory `dir` and below (see
    /// [`Attachments::attach`]); `false` when they already ran there.
    pub fn attach_cgroup(&mut self, dir: &Path, hooks: Hooks) -> Result<bool, SensorError> {
        self.attachments.attach(&mut self.ebpf, dir, hooks)
    }

    /// Stops running the hooks attached to `dir` exactly.
    pub fn detach_cgroup(&mut self, dir: &Path) -> bool {
        self.attachments.detach(dir)
    }

    /// Whether the processes of `dir` run `hooks`.
    pub fn covers(&self, dir: &Path, hooks: Hooks) -> bool {
        self.attachments.covers(dir, hooks)
    }

    /// The cgroups the socket and packet programs are attached to.
    pub fn attach_points(&self) -> Vec<(PathBuf, Hooks)> {
        self.attachments.points()
    }

    /// Every program and where it runs, for `status` and reports.
    pub fn hooks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (dir, hooks) in self.attachments.points() {
            let progs: Vec<&str> = hooks.programs().collect();
            out.push(format!("{} (cgroup {})", progs.join(", "), dir.display()));
        }
        for p in PROGRAMS {
            match (p.kind, &self.libc_probes) {
                (Kind::RawTracepoint(tp), _) => {
                    out.push(format!("{} (raw tracepoint {tp})", p.name))
                }
                (Kind::LibcProbe { symbol, ret }, Ok(lib)) => out.push(format!(
                    "{} ({} {symbol} in {})",
                    p.name,
                    if ret { "uretprobe" } else { "uprobe" },
                    lib.display()
                )),
                (Kind::TlsProbe { symbols, .. }, _) if self.tls.processes() > 0 => {
                    out.push(format!(
                        "{} (uprobe {} in {} processes)",
                        p.name,
                        symbols.join(", "),
                        self.tls.processes()
                    ))
                }
                _ => {}
            }
        }
        out
    }

    /// Run counts and in-kernel time of every program (zero unless
    /// `kernel.bpf_stats_enabled` is on).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        PROGRAMS
            .iter()
            .map(|p| p.name)
            .filter_map(|name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some(ProgramStats {
                    name,
                    run_count: info.run_count(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                })
            })
            .collect()
    }

    /// Sets the `MODE_*` bits.
    pub fn set_mode(&mut self, mode: u32) -> Result<(), SensorError> {
        self.mode = mode & !MODE_BLOCK;
        self.write_config()
    }

    fn write_config(&mut self) -> Result<(), SensorError> {
        let mode = self.mode | if self.blocking { MODE_BLOCK } else { 0 };
        let mut cfg: Array<_, Config> = self
            .ebpf
            .map_mut(map::CONFIG)
            .ok_or(SensorError::Missing(map::CONFIG))?
            .try_into()
            .map_err(map_err(map::CONFIG))?;
        let (budget_ns_per_kib, budget_burst_ns) = self.budget.kernel_terms();
        let config = Config {
            mode,
            budget_ns_per_kib,
            budget_burst_ns,
        };
        cfg.set(0, config, 0).map_err(map_err(map::CONFIG))
    }

    /// A map by name, to change.
    pub(super) fn map_mut(
        &mut self,
        name: &'static str,
    ) -> Result<&mut aya::maps::Map, SensorError> {
        self.ebpf.map_mut(name).ok_or(SensorError::Missing(name))
    }

    /// A map by name, to read.
    pub(super) fn map(&self, name: &'static str) -> Result<&aya::maps::Map, SensorError> {
        self.ebpf.map(name).ok_or(SensorError::Missing(name))
    }

    pub(super) fn hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, SensorError> {
        self.ebpf
            .map_mut(name)
            .ok_or(SensorError::Missing(name))?
            .try_into()
            .map_err(map_err(name))
    }

    fn array<V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<aya::maps::Array<&mut MapData, V>, SensorError> {
        self.ebpf
            .map_mut(name)
            .ok_or(SensorError::Missing(name))?
            .try_into()
            .map_err(map_err(name))
    }

    /// Sets `slot` of `WATCH_HINTS` (before the entry it hints at is inserted).
    fn hint(&mut self, slot: u32) -> Result<(), SensorError> {
        self.array::<u8>(map::WATCH_HINTS)?
            .set(slot, 1, 0)
            .map_err(map_err(map::WATCH_HINTS))
    }

    pub fn watch_tgid(&mut self, tgid: u32, tag: u32) -> Result<(), SensorError> {
        self.hint(monitor_common::tgid_hint_slot(tgid))?;
        self.hash::<u32, u32>(map::WATCH_TGIDS)?
            .insert(tgid, tag, 0)
            .map_err(map_err(map::WATCH_TGIDS))?;
        if self.plaintext && !self.tls.reads(tgid) {
            if let Err(why) = self.tls.attach(&mut self.ebpf, tgid, false) {
                log::warn!("cannot read what process {tgid} sends: {why}");
            }
        }
        Ok(())
    }

    /// Watches processes that exec a file whose basename starts with `name`'s first 15
    /// bytes (the kernel's process name).
    pub fn watch_name(&mut self, name: &str, tag: u32) -> Result<(), SensorError> {
        let key = CommKey {
            comm: comm_key(name),
        };
        self.hash::<CommKey, u32>(map::WATCH_NAMES)?
            .insert(key, tag, 0)
            .map_err(map_err(map::WATCH_NAMES))
    }

    /// Captures the next first payloads of an already open socket (one a watched process
    /// opened before brokerwatch started), as if it had just connected.
    pub fn capture_socket(&mut self, cookie: u64, tag: u32) -> Result<(), SensorError> {
        let watch = monitor_common::SockWatch {
            cookie,
            captured: 0,
            watch_tag: tag,
        };
        self.array::<monitor_common::SockWatch>(map::SOCK_WATCH)?
            .set(monitor_common::sock_watch_slot(cookie), watch, 0)
            .map_err(map_err(map::SOCK_WATCH))
    }

    pub fn watch_cgroup(&mut self, id: u64, tag: u32) -> Result<(), SensorError> {
        self.hint(monitor_common::cgroup_hint_slot(id))?;
        self.hash::<u64, u32>(map::WATCH_CGROUPS)?
            .insert(id, tag, 0)
            .map_err(map_err(map::WATCH_CGROUPS))
    }

    /// One counter summed over the CPUs.
    fn counter(&self, c: Counter) -> Result<u64, SensorError> {
        let map: PerCpuArray<_, u64> = self
            .ebpf
            .map(map::COUNTERS)
            .ok_or(SensorError::Missing(map::COUNTERS))?
            .try_into()
            .map_err(map_err(map::COUNTERS))?;
        Ok(map
            .get(&(c as u32), 0)
            .map_err(map_err(map::COUNTERS))?
            .iter()
            .sum())
    }

    /// Records the programs generated since loading (admitted or not): one look-up, where
    /// [`Self::counters`] makes one a counter. Every record counts here first, so a tick
    /// that finds it unchanged has nothing new to read.
    pub fn generated(&self) -> Result<u64, SensorError> {
        self.counter(Counter::Generated)
    }

    pub fn counters(&self) -> Result<KernelCounters, SensorError> {
        let sum = |c: Counter| self.counter(c);
        Ok(KernelCounters {
            generated: sum(Counter::Generated)?,
            lost: sum(Counter::Lost)?,
            watch_table_full: sum(Counter::WatchTableFull)?,
            udp_repeats: sum(Counter::UdpRepeat)?,
            bad_packets: sum(Counter::BadPacket)?,
            wakeups: sum(Counter::Wakeups)?,
            blocked: sum(Counter::Blocked)?,
            block_learned: sum(Counter::BlockLearned)?,
            block_dns_unread: sum(Counter::BlockDnsUnread)?,
            over_budget: sum(Counter::OverBudget)?,
            sock_watch_replaced: sum(Counter::SockWatchReplaced)?,
        })
    }

    /// Why blocking cannot work on this kernel, if it cannot.
    pub fn block_unavailable(&self) -> Option<&str> {
        self.block_unavailable.as_deref()
    }

    /// Whether connects and sends are being denied.
    pub fn blocking(&self) -> bool {
        self.blocking
    }

    /// Makes the kernel deny exactly what `tables` say (nothing when they are empty).
    /// Addresses learned earlier stay: they name destinations by their policy id, so a
    /// reload that keeps a block keeps them, and one that drops it no longer denies them.
    pub fn set_blocks(&mut self, tables: &BlockTables) -> Result<(), BlockError> {
        if !tables.is_empty() {
            if let Some(why) = &self.block_unavailable {
                return Err(BlockError::Unavailable(why.clone()));
            }
            block::check_sizes(tables)?;
        }
        // Lifting: off first, then the tables emptied. Blocking: tables first, then on.
        if tables.is_empty() && self.blocking {
            self.blocking = false;
            self.write_config().map_err(block_map_err)?;
        }
        let mut domains: HashMap<_, u64, u64> =
            self.hash(map::BLOCK_DOMAINS).map_err(block_map_err)?;
        block::sync_hash(&mut domains, map::BLOCK_DOMAINS, &tables.domains)?;
        let mut cidrs: LpmTrie<_, [u8; 16], u64> = self
            .ebpf
            .map_mut(map::BLOCK_CIDRS)
            .ok_or(SensorError::Missing(map::BLOCK_CIDRS))
            .map_err(block_map_err)?
            .try_into()
            .map_err(|source| BlockError::Map {
                name: map::BLOCK_CIDRS,
                source,
            })?;
        block::sync_cidrs(&mut cidrs, &tables.cidrs)?;
        let mut pairs: HashMap<_, BlockPair, u32> =
            self.hash(map::BLOCK_PAIRS).map_err(block_map_err)?;
        block::sync_pairs(&mut pairs, &tables.pairs)?;
        if !tables.is_empty() && !self.blocking {
            self.blocking = true;
            self.write_config().map_err(block_map_err)?;
        }
        Ok(())
    }

    /// Denies `addr` to the blocked apps of `uid` in `netns` as destination `dest` (one
    /// that only a first payload named, after its first connection went through).
    pub fn learn_block(
        &mut self,
        netns: u64,
        uid: u32,
        addr: std::net::IpAddr,
        dest: u64,
    ) -> Result<(), BlockError> {
        let mut learned: HashMap<_, LearnedKey, u64> =
            self.hash(map::BLOCK_LEARNED).map_err(block_map_err)?;
        block::learn(&mut learned, netns, uid, addr, dest)
    }

    /// Takes out (once) the map where the reader says until when it passes by itself.
    pub fn take_reader_awake(&mut self) -> Result<Array<aya::maps::MapData, u64>, SensorError> {
        let map = self
            .ebpf
            .take_map(map::READER_AWAKE)
            .ok_or(SensorError::Missing(map::READER_AWAKE))?;
        Array::try_from(map).map_err(map_err(map::READER_AWAKE))
    }

    /// Takes the ring buffer out (once) for a reader.
    pub fn take_ring(&mut self) -> Result<RingBuf<aya::maps::MapData>, SensorError> {
        let map = self
            .ebpf
            .take_map(map::EVENTS)
            .ok_or(SensorError::Missing(map::EVENTS))?;
        RingBuf::try_from(map).map_err(map_err(map::EVENTS))
    }
}

fn block_map_err(e: SensorError) -> BlockError {
    BlockError::Unavailable(e.to_string())
}

/// Loads every program of the table and attaches the raw tracepoints (cgroup programs are
/// attached where the session asks). Returns why blocking cannot work here, if it cannot:
/// the DNS reader it needs may be refused (no `bpf_loop` before Linux 5.17), and
/// monitoring does not need it.
fn load_programs(ebpf: &mut Ebpf) -> Result<Option<String>, SensorError> {
    let mut block_unavailable = None;
    for p in PROGRAMS {
        let name = p.name;
        match p.kind {
            Kind::SockAddr => programs::get::<CgroupSockAddr>(ebpf, name)?
                .load()
                .map_err(|source| SensorError::Program {
                    program: name,
                    source,
                })?,
            Kind::Skb(_) => programs::get::<CgroupSkb>(ebpf, name)?
                .load()
                .map_err(|source| SensorError::Program {
                    program: name,
                    source,
                })?,
            Kind::TailCall => block_unavailable = load_dns_block(ebpf).err(),
            // Loaded and attached apart: the machine may have no C library to probe.
            Kind::LibcProbe { .. } | Kind::TlsProbe { .. } => {}
            Kind::RawTracepoint(tp) => {
                let prog = programs::get::<RawTracePoint>(ebpf, name)?;
                prog.load().map_err(|source| SensorError::Program {
                    program: name,
                    source,
                })?;
                prog.attach(tp).map_err(|source| SensorError::Attach {
                    program: name,
                    target: tp.to_owned(),
                    source,
                })?;
            }
        }
    }
    Ok(block_unavailable)
}

/// Loads `bw_dns_block` and puts it where `bw_ingress` tail-calls it. The error says why
/// blocking cannot work here.
fn load_dns_block(ebpf: &mut Ebpf) -> Result<(), String> {
    let load = |ebpf: &mut Ebpf| -> Result<aya::programs::ProgramFd, SensorError> {
        let name = program::DNS_BLOCK;
        let prog = programs::get::<CgroupSkb>(ebpf, name)?;
        prog.load().map_err(|source| SensorError::Program {
            program: name,
            source,
        })?;
        prog.fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .map_err(|source| SensorError::Program {
                program: name,
                source,
            })
    };
    let fd = load(ebpf).map_err(|e| {
        // The verifier's log can run to pages: its last lines say why.
        let text = format!("{e:#}");
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
    })?;
    let mut slots: ProgramArray<_> = ebpf
        .map_mut(map::DNS_BLOCK_PROG)
        .ok_or("kernel object lacks DNS_BLOCK_PROG")?
        .try_into()
        .map_err(|e: aya::maps::MapError| e.to_string())?;
    slots.set(0, &fd, 0).map_err(|e| e.to_string())
}

impl std::fmt::Debug for Sensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sensor")
            .field("cgroup_root", &self.cgroup_root)
            .field("attached", &self.attachments.points())
            .finish()
    }
}
