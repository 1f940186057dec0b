//! Maps, read-only settings and the helpers every program shares.

use aya_ebpf::{
    btf_maps::SkStorage,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_probe_read_kernel},
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{
    CommKey, Config, Counter, KernelOffsets, SockState, SockWatch, UdpKey, COMM_LEN, COUNTER_SLOTS,
    MAX_UDP_DESTINATIONS, MAX_WATCHED_PROCESSES, MAX_WATCHED_SOCKETS, MAX_WATCH_CGROUPS,
    MAX_WATCH_NAMES, MODE_ALL, MODE_CGROUPS, RING_BYTES_BUILT_IN, WATCH_HINT_SLOTS, WATCH_TAG_ALL,
};

/// Records for userspace. Size is set by userspace before loading.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES_BUILT_IN, 0);

/// Per-CPU counters, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Entry 0: when this CPU last woke the reader (`CLOCK_BOOTTIME` ns).
#[map]
pub static LAST_WAKEUP: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Entry 0: until when (`CLOCK_BOOTTIME` ns) the reader passes again by itself (it is
/// draining a burst, every half [`monitor_common::WAKEUP_INTERVAL_NS`]); written by the
/// reader. A record before then needs no wakeup.
#[map]
pub static READER_AWAKE: Array<u64> = Array::with_max_entries(1, 0);

/// Entry 0: [`Config`].
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Watched processes (tgid -> watch tag). Filled by exec name matches, by inheritance at
/// fork, and by userspace (already running processes, the audited command).
#[map]
pub static WATCH_TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_WATCHED_PROCESSES, 0);

/// A byte per slot ([`monitor_common::tgid_hint_slot`], [`monitor_common::cgroup_hint_slot`]):
/// set before a process or cgroup enters `WATCH_TGIDS` or `WATCH_CGROUPS`, never cleared
/// while loaded. Unset: not watched, told by an inlined array read instead of a hash look-up.
#[map]
pub static WATCH_HINTS: Array<u8> = Array::with_max_entries(WATCH_HINT_SLOTS, 0);

/// Whether hint `slot` is set (a watched process or cgroup may be there).
#[inline(always)]
fn hinted(slot: u32) -> bool {
    WATCH_HINTS.get(slot).is_some_and(|b| *b != 0)
}

/// Process names that start a watch at exec (comm -> watch tag).
#[map]
pub static WATCH_NAMES: HashMap<CommKey, u32> = HashMap::with_max_entries(MAX_WATCH_NAMES, 0);

/// Watched cgroups (cgroup id -> watch tag).
#[map]
pub static WATCH_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_WATCH_CGROUPS, 0);

/// Watched sockets whose first payloads are still to be captured, one slot per cookie
/// modulo its size ([`monitor_common::sock_watch_slot`]), emptied once its captures are
/// done. An array, not a hash: a connect writes its slot in place (a hash map's insert,
/// LRU or not, cost about 700 ns of the connect's 1.5 us on a VM: locks, allocation), and
/// a packet reads it with no helper call. A watched socket that never sent gives its slot
/// up to the next watched socket 65,536 cookies later (counted).
#[map]
pub static SOCK_WATCH: Array<SockWatch> = Array::with_max_entries(MAX_WATCHED_SOCKETS, 0);

/// The `SOCK_WATCH` slot of `cookie`'s socket, if it watches that socket.
#[inline(always)]
pub fn sock_watch(cookie: u64) -> Option<*mut SockWatch> {
    let slot = SOCK_WATCH.get_ptr_mut(monitor_common::sock_watch_slot(cookie))?;
    (cookie != 0 && holds(slot, cookie)).then_some(slot)
}

/// Whether `slot` is `cookie`'s socket's (a connect on another CPU may have given it to
/// another socket since it was looked up).
#[inline(always)]
pub fn holds(slot: *mut SockWatch, cookie: u64) -> bool {
    // SAFETY: a slot of the array; a racing writer can only make the cookie differ.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*slot).cookie)) == cookie }
}

/// Starts capturing the first payloads of `cookie`'s socket (a watched connect or send);
/// a socket already in its slot keeps its count (it sends to several destinations).
#[inline(always)]
pub fn start_sock_watch(cookie: u64, tag: u32) {
    let Some(slot) = SOCK_WATCH.get_ptr_mut(monitor_common::sock_watch_slot(cookie)) else {
        return;
    };
    // SAFETY: a slot of the array; the fields are written before the cookie that makes
    // them the socket's, and readers check the cookie first.
    unsafe {
        let held = core::ptr::read_volatile(core::ptr::addr_of!((*slot).cookie));
        if held == cookie {
            return;
        }
        // A socket whose first payload was read, or whose captures are done, loses
        // nothing that names it; one that has not sent yet does (or it closed without
        // sending: a slot does not learn of a close, so this count is an upper bound).
        if held != 0 && core::ptr::read_volatile(core::ptr::addr_of!((*slot).captured)) == 0 {
            count(Counter::SockWatchReplaced);
        }
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).captured), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).watch_tag), tag);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).cookie), cookie);
    }
}

/// Counts one more capture of `cookie`'s socket in `slot` (read as `captured` before);
/// the last one (`limit`) empties the slot. Nothing is written once the slot went to
/// another socket.
#[inline(always)]
pub fn advance_sock_watch(slot: *mut SockWatch, cookie: u64, captured: u32, limit: u32) {
    if !holds(slot, cookie) {
        return;
    }
    // SAFETY: a slot of the array; packets of one socket are serialised by its lock on
    // egress.
    unsafe {
        if captured + 1 >= limit {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).cookie), 0);
        } else {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).captured), captured + 1);
        }
    }
}

/// Per-socket state ([`SockState`]) of sockets that talk to DNS servers (their namespace,
/// for the answers they receive). Socket-local storage: a pointer away from the socket,
/// and gone with it.
#[btf_map]
pub static SOCK_STATE: SkStorage<SockState> = SkStorage::new();

/// The state of the full socket behind `sk` (a context's `struct bpf_sock *`), if any.
#[inline(always)]
pub fn sock_state(sk: *mut aya_ebpf::bindings::bpf_sock) -> Option<*mut SockState> {
    if sk.is_null() {
        return None;
    }
    // SAFETY: the helper checks the socket pointer it is given.
    let full = unsafe { aya_ebpf::helpers::bpf_sk_fullsock(sk) };
    if full.is_null() {
        return None;
    }
    let map = core::ptr::addr_of!(SOCK_STATE) as *mut core::ffi::c_void;
    // SAFETY: a look-up (no create) in socket storage for a full socket.
    let slot = unsafe {
        aya_ebpf::helpers::bpf_sk_storage_get(map, full as *mut _, core::ptr::null_mut(), 0)
    };
    (!slot.is_null()).then_some(slot as *mut SockState)
}

/// UDP (socket, destination) pairs already reported -> sends folded into that report.
#[map]
pub static UDP_SEEN: LruHashMap<UdpKey, u64> =
    LruHashMap::with_max_entries(MAX_UDP_DESTINATIONS, 0);

/// Field offsets of kernel structures, from the running kernel's BTF (set by userspace).
#[unsafe(no_mangle)]
pub(crate) static KOFFS: KernelOffsets = KernelOffsets::UNSET;

/// One offset of [`KOFFS`], read so that the compiler cannot fold the zero initialiser
/// (userspace rewrites the read-only data before loading).
macro_rules! koff {
    ($field:ident) => {
        // SAFETY: a plain volatile read of a field of a read-only global.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::state::KOFFS.$field)) }
    };
}
pub(crate) use koff;

/// Whether userspace filled the offsets (the programs do nothing that needs one until then).
#[inline(always)]
pub fn offsets_valid() -> bool {
    koff!(valid) != 0
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn mode() -> u32 {
    match CONFIG.get(0) {
        Some(cfg) => cfg.mode,
        None => 0,
    }
}

/// The watch tag of the current process, or `None` when it is not watched.
#[inline(always)]
pub fn watched(tgid: u32) -> Option<u32> {
    watch_of(tgid).map(|w| w.tag)
}

/// Why the current process is watched: its tag, and its cgroup's id when that had to be
/// read to tell (a record's header needs it too: each helper call counts on a connect).
/// A plain id, 0 when not read: an `Option`'s payload is left undefined when `None`, and
/// LLVM may then spill a register the verifier has never seen written.
#[derive(Clone, Copy)]
pub struct Watch {
    pub tag: u32,
    pub cgroup_id: u64,
}

/// [`watched`], keeping the cgroup id it read.
#[inline(always)]
pub fn watch_of(tgid: u32) -> Option<Watch> {
    let mode = mode();
    if mode & MODE_ALL != 0 {
        return Some(Watch {
            tag: WATCH_TAG_ALL,
            cgroup_id: 0,
        });
    }
    if hinted(monitor_common::tgid_hint_slot(tgid)) {
        // SAFETY: values are plain u32s; a concurrent update can only give another valid tag.
        if let Some(tag) = unsafe { WATCH_TGIDS.get(tgid) } {
            return Some(Watch {
                tag: *tag,
                cgroup_id: 0,
            });
        }
    }
    if mode & MODE_CGROUPS != 0 {
        // SAFETY: no pointer arguments.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        if !hinted(monitor_common::cgroup_hint_slot(cgroup)) {
            return None;
        }
        // SAFETY: plain u32 values; a concurrent update can only give another valid tag.
        if let Some(tag) = unsafe { WATCH_CGROUPS.get(cgroup) } {
            return Some(Watch {
                tag: *tag,
                cgroup_id: cgroup,
            });
        }
    }
    None
}

/// Marks `tgid` as watched with `tag`, counting a full table.
#[inline(always)]
pub fn watch(tgid: u32, tag: u32) {
    // The hint first: a look-up that finds it set asks the table, which may not have the
    // entry yet, never the other way round.
    if let Some(hint) = WATCH_HINTS.get_ptr_mut(monitor_common::tgid_hint_slot(tgid)) {
        // SAFETY: a byte of the array; concurrent writers only ever write 1.
        unsafe { core::ptr::write_volatile(hint, 1) };
    }
    if WATCH_TGIDS.insert(tgid, tag, 0).is_err() {
        count(Counter::WatchTableFull);
    }
}

/// Reads `*(base + off)` from kernel memory.
#[inline(always)]
pub fn read_field<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// Name of the current process (its leader thread), falling back to `thread_comm`; no
/// kernel read when the caller is the leader itself.
#[inline(always)]
pub fn process_comm(thread_comm: [u8; COMM_LEN], is_leader: bool) -> [u8; COMM_LEN] {
    if is_leader || !offsets_valid() {
        return thread_comm;
    }
    // SAFETY: returns a pointer value only; it is dereferenced through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let leader: u64 = match read_field(task, koff!(task_group_leader)) {
        Some(leader) => leader,
        None => return thread_comm,
    };
    if leader == task {
        return thread_comm;
    }
    read_field(leader, koff!(task_comm)).unwrap_or(thread_comm)
}
