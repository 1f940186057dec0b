//! The kernel object and what it holds, declared once: every program with its type and
//! where it runs, and every map. Loading, attaching, `status` and the statistics read this
//! table; a test holds the built object to it.

use aya::{
    programs::{CgroupAttachMode, CgroupSkbAttachType},
    Ebpf,
};

/// Which packets a `cgroup_skb` program sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl From<Direction> for CgroupSkbAttachType {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Ingress => Self::Ingress,
            Direction::Egress => Self::Egress,
        }
    }
}
use monitor_common::{
    names::{map, program},
    TlsLib,
};

use super::error::SensorError;

/// The kernel object, built by `build.rs` from `monitor-ebpf`.
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// What kind of program, and where it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `cgroup_sock_addr` program (connect, sendmsg): attached to cgroups.
    SockAddr,
    /// A `cgroup_skb` program: attached to cgroups, on packets in or out.
    Skb(Direction),
    /// A raw tracepoint, attached once for the whole machine.
    RawTracepoint(&'static str),
    /// Never attached: another program tail-calls it.
    TailCall,
    /// A uprobe (`ret`: a uretprobe) on a function of the system's C library, attached once
    /// for the whole machine; the program checks watching.
    LibcProbe { symbol: &'static str, ret: bool },
    /// A uprobe on the write calls of a TLS library, attached per watched process when
    /// plaintext inspection is on (see `tls_probes`).
    TlsProbe {
        lib: monitor_common::TlsLib,
        symbols: &'static [&'static str],
    },
}

/// One program of the object.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    pub name: &'static str,
    pub kind: Kind,
}

const fn p(name: &'static str, kind: Kind) -> Program {
    Program { name, kind }
}

/// Every program, in the order they load.
pub const PROGRAMS: &[Program] = &[
    p(program::CONNECT4, Kind::SockAddr),
    p(program::CONNECT6, Kind::SockAddr),
    p(program::SENDMSG4, Kind::SockAddr),
    p(program::SENDMSG6, Kind::SockAddr),
    p(program::INGRESS, Kind::Skb(Direction::Ingress)),
    p(program::EGRESS, Kind::Skb(Direction::Egress)),
    p(program::DNS_BLOCK, Kind::TailCall),
    p(program::FORK, Kind::RawTracepoint("sched_process_fork")),
    p(program::EXEC, Kind::RawTracepoint("sched_process_exec")),
    p(program::EXIT, Kind::RawTracepoint("sched_process_exit")),
    p(program::CGROUP_MKDIR, Kind::RawTracepoint("cgroup_mkdir")),
    p(
        program::CGROUP_ATTACH,
        Kind::RawTracepoint("cgroup_attach_task"),
    ),
    p(
        program::GAI_ENTRY,
        Kind::LibcProbe {
            symbol: "getaddrinfo",
            ret: false,
        },
    ),
    p(
        program::GAI_RETURN,
        Kind::LibcProbe {
            symbol: "getaddrinfo",
            ret: true,
        },
    ),
    p(
        program::OPENSSL_WRITE,
        Kind::TlsProbe {
            lib: TlsLib::OpenSsl,
            symbols: &["SSL_write", "SSL_write_ex"],
        },
    ),
    p(
        program::GNUTLS_SEND,
        Kind::TlsProbe {
            lib: TlsLib::GnuTls,
            symbols: &["gnutls_record_send"],
        },
    ),
    p(
        program::NSPR_WRITE,
        Kind::TlsProbe {
            lib: TlsLib::Nspr,
            symbols: &["PR_Write", "PR_Send"],
        },
    ),
];

/// The floor: empty programs of the socket and packet hooks' types, loaded only by
/// [`super::floor::Floor`] (benchmarks), never by the sensor.
pub const FLOOR: &[Program] = &[
    p(program::FLOOR_CONNECT4, Kind::SockAddr),
    p(program::FLOOR_EGRESS, Kind::Skb(Direction::Egress)),
    p(program::FLOOR_INGRESS, Kind::Skb(Direction::Ingress)),
];

/// Every map of the object.
pub const MAPS: &[&str] = &[
    map::EVENTS,
    map::COUNTERS,
    map::LAST_WAKEUP,
    map::READER_AWAKE,
    map::CONFIG,
    map::WATCH_TGIDS,
    map::WATCH_NAMES,
    map::WATCH_CGROUPS,
    map::WATCH_HINTS,
    map::SOCK_WATCH,
    map::SOCK_STATE,
    map::UDP_SEEN,
    map::BLOCK_DOMAINS,
    map::BLOCK_PAIRS,
    map::BLOCK_CIDRS,
    map::BLOCK_LEARNED,
    map::DNS_BLOCK_PROG,
    map::DNS_SCRATCH,
    map::BUDGETS,
    map::BUDGET_SLOTS,
    map::BUDGET_OWNERS,
    map::FOLDED,
    map::PRIORITY_ADDRS,
    map::GAI_CALLS,
];

/// The programs of one kind.
pub fn of_kind(want: impl Fn(Kind) -> bool) -> impl Iterator<Item = &'static Program> {
    PROGRAMS.iter().filter(move |p| want(p.kind))
}

/// The cgroup programs: socket hooks first, then packet hooks.
pub fn cgroup_programs() -> impl Iterator<Item = &'static Program> {
    of_kind(|k| matches!(k, Kind::SockAddr | Kind::Skb(_)))
}

/// How to attach to a cgroup so that systemd's and other tools' programs keep working
/// beside ours. From 5.7 aya attaches through a BPF link, which the kernel always adds in
/// multi mode (and which rejects an explicit BPF_F_ALLOW_MULTI); before that the legacy
/// attach needs BPF_F_ALLOW_MULTI spelled out.
pub fn cgroup_attach_mode() -> CgroupAttachMode {
    match aya::util::KernelVersion::current() {
        Ok(v) if v >= aya::util::KernelVersion::new(5, 7, 0) => CgroupAttachMode::Single,
        _ => CgroupAttachMode::AllowMultiple,
    }
}

/// The loaded program `name` as type `T` (the verifier's verdict, with its log, is the
/// error).
pub fn get<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, SensorError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(SensorError::Missing(name))?
        .try_into()
        .map_err(|source| SensorError::Program {
            program: name,
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn programs_kernel_object_holds_exactly_the_declared_programs_and_maps() {
        let obj = aya_obj::Object::parse(OBJECT).expect("the built object parses");
        let declared: BTreeSet<&str> = PROGRAMS.iter().chain(FLOOR).map(|p| p.name).collect();
        let built: BTreeSet<&str> = obj.programs.keys().map(String::as_str).collect();
        assert_eq!(declared, built, "programs");
        let declared: BTreeSet<&str> = MAPS.iter().copied().collect();
        // Sections of globals (.rodata, .bss) are maps too; they are set by name.
        let built: BTreeSet<&str> = obj
            .maps
            .keys()
            .map(String::as_str)
            .filter(|m| !m.starts_with('.'))
            .collect();
        assert_eq!(declared, built, "maps");
    }
}
