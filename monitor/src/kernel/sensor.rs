//! Loading, attaching and steering the kernel programs (the only module that talks to aya).

use std::{fs::File, path::PathBuf};

use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, ProgramError,
        RawTracePoint,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use monitor_common::{CommKey, Config, Counter, KernelOffsets};

use super::{
    btf::{Btf, BtfError},
    preflight,
    wire::comm_key,
};
use crate::{
    defaults,
    host::cgroup::{self, CgroupError},
};

/// The kernel object, built by `build.rs` from `monitor-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

const SOCK_PROGRAMS: [&str; 4] = ["bw_connect4", "bw_connect6", "bw_sendmsg4", "bw_sendmsg6"];
const TRACEPOINTS: [(&str, &str); 5] = [
    ("bw_fork", "sched_process_fork"),
    ("bw_exec", "sched_process_exec"),
    ("bw_exit", "sched_process_exit"),
    ("bw_cgroup_mkdir", "cgroup_mkdir"),
    ("bw_cgroup_attach", "cgroup_attach_task"),
];

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(transparent)]
    Privileges(#[from] preflight::PrivilegeError),
    #[error(transparent)]
    Kernel(#[from] preflight::KernelError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot load brokerwatch's kernel object: {0}")]
    Load(#[source] EbpfError),
    #[error("the kernel rejected program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot attach {program} to {target}: {source}")]
    Attach {
        program: &'static str,
        target: String,
        #[source]
        source: ProgramError,
    },
    #[error("kernel map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("kernel object lacks {0}; it was built from different sources than this binary")]
    Missing(&'static str),
}

/// The program `$name` of type `$ty`, loaded into the kernel (the verifier's verdict, with
/// its log, is the error).
macro_rules! load_program {
    ($ebpf:expr, $name:expr, $ty:ty) => {{
        let prog: &mut $ty = $ebpf
            .program_mut($name)
            .ok_or(SensorError::Missing($name))?
            .try_into()
            .map_err(|source| SensorError::Program {
                program: $name,
                source,
            })?;
        prog.load().map_err(|source| SensorError::Program {
            program: $name,
            source,
        })?;
        prog
    }};
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> SensorError {
    move |source| SensorError::Map { name, source }
}

/// How to attach to the cgroup root so that systemd's and other tools' programs keep
/// working beside ours. From 5.7 aya attaches through a BPF link, which the kernel always
/// adds in multi mode (and which rejects an explicit BPF_F_ALLOW_MULTI); before that the
/// legacy attach needs BPF_F_ALLOW_MULTI spelled out.
fn cgroup_attach_mode() -> CgroupAttachMode {
    match aya::util::KernelVersion::current() {
        Ok(v) if v >= aya::util::KernelVersion::new(5, 7, 0) => CgroupAttachMode::Single,
        _ => CgroupAttachMode::AllowMultiple,
    }
}

/// Settings fixed at load time.
#[derive(Debug, Clone)]
pub struct SensorOptions {
    /// Size of the ring buffer in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// cgroup directory whose processes' sockets the socket programs see: the cgroup v2
    /// root (every process) unless set. An audited command's own cgroup here means no other
    /// process on the machine runs them at all.
    pub sock_cgroup: Option<PathBuf>,
}

impl Default for SensorOptions {
    fn default() -> Self {
        Self {
            ring_bytes: defaults::RING_BYTES,
            sock_cgroup: None,
        }
    }
}

/// Counters read from the kernel, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelCounters {
    pub generated: u64,
    pub lost: u64,
    pub watch_table_full: u64,
    pub udp_repeats: u64,
    pub bad_packets: u64,
}

/// The loaded and attached kernel programs.
pub struct Sensor {
    ebpf: Ebpf,
    /// The running kernel (release, version, lockdown).
    pub kernel: preflight::KernelInfo,
    pub cgroup_root: PathBuf,
    /// Where the socket programs are attached.
    pub sock_cgroup: PathBuf,
    pub attached: Vec<String>,
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
            .override_global("KOFFS", &offsets, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .load(OBJECT)
            .map_err(SensorError::Load)?;

        let mut attached = Vec::new();
        let sock_cgroup = opts
            .sock_cgroup
            .clone()
            .unwrap_or_else(|| cgroup_root.clone());
        let cgroup_dir = File::open(&sock_cgroup).map_err(|source| CgroupError::Read {
            path: sock_cgroup.clone(),
            source,
        })?;
        for name in SOCK_PROGRAMS {
            let prog = load_program!(ebpf, name, CgroupSockAddr);
            prog.attach(&cgroup_dir, cgroup_attach_mode())
                .map_err(|source| SensorError::Attach {
                    program: name,
                    target: sock_cgroup.display().to_string(),
                    source,
                })?;
            attached.push(format!("{name} (cgroup {})", sock_cgroup.display()));
        }
        // DNS answers of every socket (stub resolvers receive the names apps asked for);
        // payloads only of watched sockets, so on the socket programs' cgroup.
        let root_dir = File::open(&cgroup_root).map_err(|source| CgroupError::Read {
            path: cgroup_root.clone(),
            source,
        })?;
        for (name, attach, dir, path) in [
            (
                "bw_ingress",
                CgroupSkbAttachType::Ingress,
                &root_dir,
                &cgroup_root,
            ),
            (
                "bw_egress",
                CgroupSkbAttachType::Egress,
                &cgroup_dir,
                &sock_cgroup,
            ),
        ] {
            let prog = load_program!(ebpf, name, CgroupSkb);
            prog.attach(dir, attach, cgroup_attach_mode())
                .map_err(|source| SensorError::Attach {
                    program: name,
                    target: path.display().to_string(),
                    source,
                })?;
            attached.push(format!("{name} (cgroup {})", path.display()));
        }
        for (name, tp) in TRACEPOINTS {
            let prog = load_program!(ebpf, name, RawTracePoint);
            prog.attach(tp).map_err(|source| SensorError::Attach {
                program: name,
                target: tp.to_owned(),
                source,
            })?;
            attached.push(format!("{name} (raw tracepoint {tp})"));
        }
        // Parsing the kernel's BTF and the object takes tens of megabytes for a moment;
        // hand them back so that an idle daemon stays small.
        #[cfg(target_env = "gnu")]
        // SAFETY: plain allocator call.
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(Self {
            ebpf,
            kernel,
            cgroup_root,
            sock_cgroup,
            attached,
        })
    }

    /// Sets the `MODE_*` bits.
    pub fn set_mode(&mut self, mode: u32) -> Result<(), SensorError> {
        let mut cfg: Array<_, Config> = self
            .ebpf
            .map_mut("CONFIG")
            .ok_or(SensorError::Missing("CONFIG"))?
            .try_into()
            .map_err(map_err("CONFIG"))?;
        cfg.set(0, Config { mode, _pad: 0 }, 0)
            .map_err(map_err("CONFIG"))
    }

    fn hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, SensorError> {
        self.ebpf
            .map_mut(name)
            .ok_or(SensorError::Missing(name))?
            .try_into()
            .map_err(map_err(name))
    }

    pub fn watch_tgid(&mut self, tgid: u32, tag: u32) -> Result<(), SensorError> {
        self.hash::<u32, u32>("WATCH_TGIDS")?
            .insert(tgid, tag, 0)
            .map_err(map_err("WATCH_TGIDS"))
    }

    /// Watches processes that exec a file whose basename starts with `name`'s first 15
    /// bytes (the kernel's process name).
    pub fn watch_name(&mut self, name: &str, tag: u32) -> Result<(), SensorError> {
        let key = CommKey {
            comm: comm_key(name),
        };
        self.hash::<CommKey, u32>("WATCH_NAMES")?
            .insert(key, tag, 0)
            .map_err(map_err("WATCH_NAMES"))
    }

    pub fn watch_cgroup(&mut self, id: u64, tag: u32) -> Result<(), SensorError> {
        self.hash::<u64, u32>("WATCH_CGROUPS")?
            .insert(id, tag, 0)
            .map_err(map_err("WATCH_CGROUPS"))
    }

    pub fn counters(&self) -> Result<KernelCounters, SensorError> {
        let map: PerCpuArray<_, u64> = self
            .ebpf
            .map("COUNTERS")
            .ok_or(SensorError::Missing("COUNTERS"))?
            .try_into()
            .map_err(map_err("COUNTERS"))?;
        let sum = |c: Counter| -> Result<u64, SensorError> {
            Ok(map
                .get(&(c as u32), 0)
                .map_err(map_err("COUNTERS"))?
                .iter()
                .sum())
        };
        Ok(KernelCounters {
            generated: sum(Counter::Generated)?,
            lost: sum(Counter::Lost)?,
            watch_table_full: sum(Counter::WatchTableFull)?,
            udp_repeats: sum(Counter::UdpRepeat)?,
            bad_packets: sum(Counter::BadPacket)?,
        })
    }

    /// Takes the ring buffer out (once) for a reader.
    pub fn take_ring(&mut self) -> Result<RingBuf<aya::maps::MapData>, SensorError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(SensorError::Missing("EVENTS"))?;
        RingBuf::try_from(map).map_err(map_err("EVENTS"))
    }
}

impl std::fmt::Debug for Sensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sensor")
            .field("cgroup_root", &self.cgroup_root)
            .field("attached", &self.attached)
            .finish()
    }
}
