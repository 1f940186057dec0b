//! Wire types shared by brokerwatch's kernel programs (`monitor-ebpf`) and its userspace
//! (`monitor`).
//!
//! Every record in the ring buffer is an [`Event<T>`]: a fixed [`EventHeader`] whose `kind`
//! says which payload follows. Kind numbers are grouped in ranges and never reused:
//! 1..=99 network, 100..=199 process lifecycle. Every wire struct has a compile-time size
//! assertion so that the two sides cannot silently disagree.
#![no_std]

use core::mem::size_of;

mod block;
mod budget;
mod counter;
pub mod names;
mod plain;
pub use block::*;
pub use budget::*;
pub use counter::*;
pub use plain::*;

/// Length of a kernel task name (`TASK_COMM_LEN`), NUL included.
pub const COMM_LEN: usize = 16;
/// Bytes of an executed file's path carried in an exec record (NUL included).
pub const FILENAME_LEN: usize = 256;
/// Steps of the walk up an executed file's path carried in an exec record (leaf first):
/// each a path component, or empty for a crossing into the parent mount.
pub const EXE_COMPONENTS: usize = 16;
/// Bytes of one path component (NUL included); longer names are cut.
pub const EXE_COMPONENT_LEN: usize = 64;
/// Bytes of a cgroup path carried in a cgroup record (NUL included).
pub const CGROUP_PATH_LEN: usize = 256;
/// `ExecData::exe_flags`: the walk stopped before reaching the root (deeper than
/// [`EXE_COMPONENTS`] components or mounts).
pub const EXE_TRUNCATED: u16 = 1 << 0;
/// `ExecData::exe_flags`: the file could not be read at all.
pub const EXE_UNKNOWN: u16 = 1 << 1;

/// Bytes of a packet's payload carried in a packet record: a whole QUIC Initial datagram,
/// a TLS ClientHello with post-quantum key shares, a large DNS answer.
pub const PACKET_CAPTURE: usize = 4096;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const SOCK_STREAM: u16 = 1;
pub const SOCK_DGRAM: u16 = 2;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;
/// DNS servers answer from this port (UDP and TCP).
pub const DNS_PORT: u16 = 53;

/// Entries of `WATCH_TGIDS`: processes watched at once (overflow counted in
/// [`Counter::WatchTableFull`]).
pub const MAX_WATCHED_PROCESSES: u32 = 32_768;
/// Entries of `WATCH_NAMES`: process names that start a watch at exec.
pub const MAX_WATCH_NAMES: u32 = 1_024;
/// Entries of `WATCH_CGROUPS`: watched cgroups.
pub const MAX_WATCH_CGROUPS: u32 = 1_024;
/// Slots of `WATCH_HINTS`: a byte per slot, set (never cleared while loaded) for every
/// process and cgroup ever watched, before its entry in `WATCH_TGIDS` or `WATCH_CGROUPS`.
/// An unset slot answers "not watched" with an array read that the verifier inlines, where
/// the hash tables cost a hash and a helper call each; this is every socket call of every
/// unwatched process on the machine. A set slot (watched, or sharing the slot with one
/// that is or was) is asked of the hash table.
pub const WATCH_HINT_SLOTS: u32 = 32_768;
const _: () = assert!(WATCH_HINT_SLOTS.is_power_of_two());

/// The `WATCH_HINTS` slot of process `tgid` (pids are dense: their low bits).
#[inline(always)]
pub const fn tgid_hint_slot(tgid: u32) -> u32 {
    tgid & (WATCH_HINT_SLOTS - 1)
}

/// The `WATCH_HINTS` slot of cgroup `id` (its top bits after a multiplicative hash: the
/// ids are inode numbers, with a generation in their high half).
#[inline(always)]
pub const fn cgroup_hint_slot(id: u64) -> u32 {
    (id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - WATCH_HINT_SLOTS.trailing_zeros())) as u32
}
/// Slots of `SOCK_WATCH`: sockets of watched processes whose first payloads are still to
/// be captured, one slot per socket cookie modulo this power of two (a slot empties once
/// its captures are done; a watched socket that never sent gives its slot up to the next
/// watched socket whose cookie falls there, counted in [`Counter::SockWatchReplaced`]).
pub const MAX_WATCHED_SOCKETS: u32 = 65_536;

/// The `SOCK_WATCH` slot of the socket whose cookie is `cookie`.
#[inline(always)]
pub const fn sock_watch_slot(cookie: u64) -> u32 {
    (cookie & (MAX_WATCHED_SOCKETS as u64 - 1)) as u32
}

const _: () = assert!(MAX_WATCHED_SOCKETS.is_power_of_two());
/// Entries of `UDP_SEEN`: (socket, destination) pairs already reported.
pub const MAX_UDP_DESTINATIONS: u32 = 16_384;
/// Ring buffer size the object is built with; userspace sets the real one before loading.
pub const RING_BYTES_BUILT_IN: u32 = 2 * 1024 * 1024;
/// A record that may lead to an alert wakes the reader at most once per this many
/// nanoseconds per CPU; the reader drains again this long after it found records, so that
/// none waits longer (see `Capture`).
pub const WAKEUP_INTERVAL_NS: u64 = 1_000_000;
/// A record within this many nanoseconds of the end of the reader's own passes
/// (`READER_AWAKE`) still wakes it: its commit may come after the last pass.
pub const READER_AWAKE_MARGIN_NS: u64 = 100_000;
/// Any record wakes the reader once the ring holds more than this share of its size
/// (1/4): a burst never waits for the reader's next pass.
pub const WAKEUP_FILL_SHIFT: u32 = 2;

/// What follows the header. `#[repr(u32)]`; numbers are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `connect()` on a TCP or UDP socket (`cgroup/connect4`, `cgroup/connect6`).
    Connect = 1,
    /// `sendto()`/`sendmsg()` with an explicit destination on a UDP socket, first time per
    /// (socket, destination) (`cgroup/sendmsg4`, `cgroup/sendmsg6`).
    UdpSend = 2,
    /// A DNS answer (UDP or TCP from port 53) received by any socket (`cgroup_skb/ingress`).
    DnsAnswer = 3,
    /// One of the first outbound payloads of a watched socket (`cgroup_skb/egress`): TLS
    /// ClientHello, HTTP request head, QUIC Initial.
    Payload = 4,
    /// A watched process's `getaddrinfo()` returned addresses for a name (a uretprobe on
    /// glibc): names where the app sees no DNS packet (`nss-resolve`, `/etc/hosts`, DNS over
    /// TLS in the resolver).
    Resolved = 5,
    /// A chunk of what a watched process handed its TLS library to send (uprobes on
    /// `SSL_write`, `gnutls_record_send`, `PR_Write`), read only when plaintext inspection
    /// is on and only in the processes it was attached for.
    Plaintext = 6,
    /// A watched process finished `execve()`.
    Exec = 100,
    /// A watched process created a new process (threads are not reported).
    Fork = 101,
    /// A watched process's leader thread exited.
    Exit = 102,
    /// A cgroup v2 directory was created (app scopes appear this way).
    CgroupMkdir = 103,
    /// A watched process, or a process joining a watched cgroup, moved to a cgroup v2
    /// cgroup.
    CgroupAttach = 104,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Connect),
            2 => Some(Self::UdpSend),
            3 => Some(Self::DnsAnswer),
            4 => Some(Self::Payload),
            5 => Some(Self::Resolved),
            6 => Some(Self::Plaintext),
            100 => Some(Self::Exec),
            101 => Some(Self::Fork),
            102 => Some(Self::Exit),
            103 => Some(Self::CgroupMkdir),
            104 => Some(Self::CgroupAttach),
            _ => None,
        }
    }

    /// Size in bytes of the whole record (header included) of this kind.
    pub const fn record_size(self) -> usize {
        match self {
            Self::Connect | Self::UdpSend => size_of::<SockEvent>(),
            Self::DnsAnswer | Self::Payload => size_of::<PacketEvent>(),
            Self::Resolved => size_of::<ResolvedEvent>(),
            Self::Plaintext => size_of::<PlainEvent>(),
            Self::Exec => size_of::<ExecEvent>(),
            Self::Fork => size_of::<ForkEvent>(),
            Self::Exit => size_of::<ExitEvent>(),
            Self::CgroupMkdir | Self::CgroupAttach => size_of::<CgroupEvent>(),
        }
    }
}

/// Common header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// Process id (thread group id) of the task that caused the record.
    pub tgid: u32,
    /// Thread id of that task.
    pub tid: u32,
    /// Real uid of that task.
    pub uid: u32,
    /// `CLOCK_BOOTTIME` in nanoseconds (`bpf_ktime_get_boot_ns`).
    pub ts_ns: u64,
    /// cgroup v2 id of the task (the inode number of its cgroup directory).
    pub cgroup_id: u64,
}

/// One record: a header and a typed payload.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event<T> {
    pub header: EventHeader,
    pub data: T,
}

/// Payload of [`EventKind::Connect`] and [`EventKind::UdpSend`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockData {
    /// `bpf_get_socket_cookie()`: stable identity of the socket for its whole life.
    pub cookie: u64,
    /// Destination address: 4 bytes for [`AF_INET`] (rest zero), 16 for [`AF_INET6`].
    pub addr: [u8; 16],
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, ...
    pub sock_type: u16,
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, ...
    pub protocol: u16,
    pub gid: u32,
    /// Why the process is watched (see [`WATCH_TAG_ALL`] and friends).
    pub watch_tag: u32,
    /// Network namespace cookie of the socket (`bpf_get_netns_cookie`).
    pub netns: u64,
    /// Non-zero when the call was denied: the blocked destination's [`dest_hash`].
    pub blocked: u64,
    /// Name of the process (its leader thread).
    pub comm: [u8; COMM_LEN],
    /// Name of the thread that made the call.
    pub thread_comm: [u8; COMM_LEN],
}

/// Payload of [`EventKind::Exec`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecData {
    /// Parent process id (`real_parent->tgid`).
    pub ppid: u32,
    pub watch_tag: u32,
    /// Process name after the exec.
    pub comm: [u8; COMM_LEN],
    /// Bytes of `filename` in use, NUL excluded.
    pub filename_len: u32,
    /// Steps of `exe` in use.
    pub exe_depth: u16,
    /// [`EXE_TRUNCATED`], [`EXE_UNKNOWN`].
    pub exe_flags: u16,
    /// Path given to `execve()` (`linux_binprm::filename`), NUL-terminated.
    pub filename: [u8; FILENAME_LEN],
    /// The executed file itself (`linux_binprm::file`), as path components from the file
    /// up to the root of its mount namespace, leaf first, each NUL-terminated, empty where
    /// the walk crossed into a parent mount: the real executable behind `/proc/self/exe`,
    /// `/dev/fd/N`, symlinks and memfds.
    pub exe: [[u8; EXE_COMPONENT_LEN]; EXE_COMPONENTS],
}

/// Payload of [`EventKind::Fork`]. The header describes the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkData {
    pub child_tgid: u32,
    pub watch_tag: u32,
    /// Name of the new process (inherited from the forking thread).
    pub comm: [u8; COMM_LEN],
}

/// Payload of [`EventKind::Exit`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitData {
    /// `task_struct::exit_code` (wait status encoding).
    pub exit_code: u32,
    pub _pad: u32,
}

/// Payload of [`EventKind::DnsAnswer`] and [`EventKind::Payload`]. Packets are not tied to
/// a task: the header's `cgroup_id` is the socket's cgroup, `uid` the socket's owner, and
/// `tgid`/`tid` are 0 (userspace finds the process by the socket's cookie).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PacketData {
    /// Cookie of the socket that receives (ingress) or sends (egress) the packet.
    pub cookie: u64,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u16,
    pub src_port: u16,
    pub dst_port: u16,
    /// Sequence number of this capture on its socket (0 for the first payload).
    pub seq: u32,
    /// Bytes of `data` in use.
    pub len: u32,
    /// Payload length in the packet (may exceed `len`).
    pub orig_len: u32,
    pub _pad: u32,
    /// Network namespace cookie of the socket (`bpf_get_netns_cookie`), recorded when the
    /// socket sent to port 53 through brokerwatch's hooks; 0 unknown.
    pub netns: u64,
    /// Source address (ingress: the DNS server; egress: unused, zero).
    pub src_addr: [u8; 16],
    pub data: [u8; PACKET_CAPTURE],
}

/// Addresses carried in a [`ResolvedData`] record (glibc returns each address once per
/// socket type: three entries each without hints).
pub const RESOLVED_ADDRS: usize = 16;
/// Bytes of the name carried in a [`ResolvedData`] record (NUL included).
pub const RESOLVED_NAME_LEN: usize = 256;

/// Payload of [`EventKind::Resolved`]: what one `getaddrinfo(name, ...)` call returned.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ResolvedData {
    /// Bytes of `name` in use, NUL excluded.
    pub name_len: u32,
    /// Entries of `addrs`/`families` in use.
    pub count: u32,
    /// [`AF_INET`] or [`AF_INET6`] per entry; 0 for a list element that is not an IP
    /// address.
    pub families: [u16; RESOLVED_ADDRS],
    /// 4 bytes for [`AF_INET`] (rest zero), 16 for [`AF_INET6`].
    pub addrs: [[u8; 16]; RESOLVED_ADDRS],
    /// The name asked, NUL-terminated.
    pub name: [u8; RESOLVED_NAME_LEN],
}

/// A `getaddrinfo()` call under way (value of the per-thread `GAI_CALLS` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GaiCall {
    /// `const char *node`.
    pub node: u64,
    /// `struct addrinfo **res`.
    pub res: u64,
}

/// Entries of `GAI_CALLS`: threads of watched processes inside `getaddrinfo()` at once.
pub const MAX_GAI_CALLS: u32 = 4_096;

/// Per-socket state in socket-local storage (`SOCK_STATE`), created by the connect and
/// send hooks for sockets that talk to a DNS server, freed by the kernel with the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// Network namespace cookie of the socket.
    pub netns: u64,
    /// Payloads captured so far (watched sockets).
    pub captured: u32,
    pub watch_tag: u32,
    /// [`SOCK_DNS`].
    pub flags: u32,
    pub _pad: u32,
}

/// `SockState::flags`: the socket sent to port 53; the answers it receives belong to
/// `SockState::netns`.
pub const SOCK_DNS: u32 = 1 << 1;

/// A watched socket whose first payloads are being captured (a slot of `SOCK_WATCH`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockWatch {
    /// The socket's cookie; 0: the slot is free.
    pub cookie: u64,
    /// Payloads captured so far.
    pub captured: u32,
    pub watch_tag: u32,
}

/// Payloads captured per TCP socket (a ClientHello split over segments, an HTTP head).
pub const TCP_CAPTURES: u32 = 4;
/// Datagrams captured per UDP socket (QUIC Initials; a split ClientHello takes two).
pub const UDP_CAPTURES: u32 = 3;

/// Payload of [`EventKind::CgroupMkdir`] and [`EventKind::CgroupAttach`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupData {
    /// The cgroup (created, or joined).
    pub cgroup_id: u64,
    /// The process that moved ([`EventKind::CgroupAttach`]); 0 for a mkdir.
    pub tgid: u32,
    /// Watch tag of the moved process.
    pub watch_tag: u32,
    /// Bytes of `path` in use, NUL excluded.
    pub path_len: u32,
    pub _pad: u32,
    /// The cgroup's path below the cgroup v2 mount (`/user.slice/.../app-x.scope`).
    pub path: [u8; CGROUP_PATH_LEN],
}

pub type CgroupEvent = Event<CgroupData>;
pub type SockEvent = Event<SockData>;
pub type PacketEvent = Event<PacketData>;
pub type ExecEvent = Event<ExecData>;
pub type ForkEvent = Event<ForkData>;
pub type ExitEvent = Event<ExitData>;
pub type ResolvedEvent = Event<ResolvedData>;
pub type PlainEvent = Event<PlainData>;

/// Watch tag of every process when watching `all`.
pub const WATCH_TAG_ALL: u32 = 0;
/// Watch tag of processes in a watched cgroup (the launched command of an audit).
pub const WATCH_TAG_CGROUP: u32 = 1;
/// First tag of policy apps: app number `n` has tag `WATCH_TAG_APP_BASE + n`.
pub const WATCH_TAG_APP_BASE: u32 = 16;

/// Watch everything.
pub const MODE_ALL: u32 = 1 << 0;
/// Watch processes whose name (15-byte basename of the executed file) is in `WATCH_NAMES`.
pub const MODE_NAMES: u32 = 1 << 1;
/// Watch processes whose cgroup id is in `WATCH_CGROUPS`.
pub const MODE_CGROUPS: u32 = 1 << 2;
/// Deny watched processes' connects and sends to the destinations the block tables name.
pub const MODE_BLOCK: u32 = 1 << 3;

/// Runtime settings, entry 0 of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `MODE_*` bits.
    pub mode: u32,
    /// Each user's record budget: nanoseconds of credit a KiB of records costs (the
    /// sustained rate is 1024 * 10^9 / this bytes a second); 0 turns budgets off.
    pub budget_ns_per_kib: u32,
    /// How far ahead of now a user's credit may run (the burst a user may send at once,
    /// in nanoseconds of credit).
    pub budget_burst_ns: u64,
}

/// Key of `WATCH_NAMES`: a process name as the kernel stores it (zero padded).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommKey {
    pub comm: [u8; COMM_LEN],
}

/// Key of the UDP first-send dedup map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpKey {
    pub cookie: u64,
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub _pad: u32,
}

/// Byte offsets into kernel structures, read from the kernel's BTF by userspace and written
/// into the programs' read-only data before loading (see `monitor::btf`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub task_exit_code: u32,
    pub binprm_filename: u32,
    /// `task_struct::signal` (shared by the threads of a process).
    pub task_signal: u32,
    /// `signal_struct::live`: threads still running; 0 once the whole process is exiting.
    pub signal_live: u32,
    /// `linux_binprm::file`: the file being executed.
    pub binprm_file: u32,
    /// `file::f_path.dentry` and `file::f_path.mnt`.
    pub file_dentry: u32,
    pub file_mnt: u32,
    /// `dentry::d_name.name` (a `const unsigned char *`) and `dentry::d_parent`.
    pub dentry_name: u32,
    pub dentry_parent: u32,
    /// `mount::mnt` (the embedded `vfsmount`), `mount::mnt_parent`, `mount::mnt_mountpoint`.
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    /// `vfsmount::mnt_root`.
    pub vfsmount_root: u32,
    /// `sock::__sk_common.skc_net.net` and `net::ns.inum` (the network namespace's inode).
    pub sock_net: u32,
    pub net_inum: u32,
    /// `cgroup::kn`, `kernfs_node::id` (the cgroup id), `cgroup::root`,
    /// `cgroup_root::hierarchy_id` (0 for the cgroup v2 hierarchy).
    pub cgroup_kn: u32,
    pub kernfs_id: u32,
    pub cgroup_root: u32,
    pub root_hierarchy_id: u32,
    /// Non-zero once userspace has filled the table.
    pub valid: u32,
}

impl KernelOffsets {
    /// Nothing known yet: the programs do nothing that needs an offset.
    pub const UNSET: Self = Self {
        task_pid: 0,
        task_tgid: 0,
        task_real_parent: 0,
        task_group_leader: 0,
        task_comm: 0,
        task_exit_code: 0,
        binprm_filename: 0,
        task_signal: 0,
        signal_live: 0,
        binprm_file: 0,
        file_dentry: 0,
        file_mnt: 0,
        dentry_name: 0,
        dentry_parent: 0,
        mount_mnt: 0,
        mount_parent: 0,
        mount_mountpoint: 0,
        vfsmount_root: 0,
        sock_net: 0,
        net_inum: 0,
        cgroup_kn: 0,
        kernfs_id: 0,
        cgroup_root: 0,
        root_hierarchy_id: 0,
        valid: 0,
    };
}

// The kernel's capture length is `((n - 1) & (PACKET_CAPTURE - 1)) + 1`, which the verifier
// can bound only when PACKET_CAPTURE is a power of two.
const _: () = assert!(PACKET_CAPTURE.is_power_of_two());
const _: () = assert!(size_of::<EventHeader>() == 32);
const _: () = assert!(size_of::<SockData>() == 88);
const _: () = assert!(size_of::<ExecData>() == 288 + EXE_COMPONENTS * EXE_COMPONENT_LEN);
const _: () = assert!(size_of::<CgroupData>() == 24 + CGROUP_PATH_LEN);
const _: () = assert!(size_of::<CgroupEvent>() == 56 + CGROUP_PATH_LEN);
const _: () = assert!(size_of::<ForkData>() == 24);
const _: () = assert!(size_of::<ExitData>() == 8);
const _: () = assert!(size_of::<SockEvent>() == 120);
const _: () = assert!(size_of::<ExecEvent>() == 320 + EXE_COMPONENTS * EXE_COMPONENT_LEN);
const _: () = assert!(size_of::<ForkEvent>() == 56);
const _: () = assert!(size_of::<ExitEvent>() == 40);
const _: () = assert!(size_of::<PacketData>() == 56 + PACKET_CAPTURE);
const _: () = assert!(size_of::<PacketEvent>() == 88 + PACKET_CAPTURE);
const _: () = assert!(size_of::<SockState>() == 24);
const _: () = assert!(size_of::<ResolvedData>() == 8 + RESOLVED_ADDRS * 18 + RESOLVED_NAME_LEN);
const _: () = assert!(size_of::<ResolvedEvent>() == 32 + size_of::<ResolvedData>());
const _: () = assert!(size_of::<GaiCall>() == 16);
const _: () = assert!(size_of::<SockWatch>() == 16);
const _: () = assert!(size_of::<Config>() == 16);
const _: () = assert!(size_of::<CommKey>() == 16);
const _: () = assert!(size_of::<UdpKey>() == 32);
const _: () = assert!(size_of::<KernelOffsets>() == 100);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, made only of integers and byte arrays,
    // with no padding the compiler could leave uninitialised (sizes asserted above).
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CommKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for UdpKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SockState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SockWatch {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GaiCall {}
}

/// Byte offset of `kind` inside every record, for decoders.
pub const KIND_OFFSET: usize = core::mem::offset_of!(EventHeader, kind);

#[cfg(test)]
mod hint_tests {
    use super::*;

    #[test]
    fn watch_hint_slots_stay_in_the_array_and_spread_cgroup_ids() {
        for tgid in [0, 1, WATCH_HINT_SLOTS - 1, WATCH_HINT_SLOTS, u32::MAX] {
            assert!(tgid_hint_slot(tgid) < WATCH_HINT_SLOTS);
        }
        for id in [0, 1, u32::MAX as u64, u64::MAX] {
            assert!(cgroup_hint_slot(id) < WATCH_HINT_SLOTS);
        }
        // Consecutive inode numbers (sibling cgroups) land in different slots.
        let mut slots = [0u32; 64];
        for (i, s) in slots.iter_mut().enumerate() {
            *s = cgroup_hint_slot(1_000 + i as u64);
        }
        slots.sort_unstable();
        assert!(slots.windows(2).all(|w| w[0] != w[1]), "{slots:?}");
    }
}
