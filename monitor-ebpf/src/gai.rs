//! A uprobe and a uretprobe on glibc's `getaddrinfo()`: the names a watched process
//! resolved and the addresses it got, however it got them (`nss-resolve` over varlink,
//! `/etc/hosts`, a resolver speaking DNS over TLS), where no DNS packet reaches the app.
//! Attached for the whole machine; an unwatched caller costs the probe and one look-up.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use monitor_common::{
    EventKind, GaiCall, ResolvedData, AF_INET, AF_INET6, MAX_GAI_CALLS, RESOLVED_ADDRS,
};

use crate::{
    emit::{reserve, Origin},
    state::watched,
};

/// Threads of watched processes inside `getaddrinfo()` (pid_tgid -> its arguments).
#[map]
pub static GAI_CALLS: LruHashMap<u64, GaiCall> = LruHashMap::with_max_entries(MAX_GAI_CALLS, 0);

/// `struct addrinfo` on 64-bit glibc: `ai_family` at 4, `ai_addr` at 24, `ai_next` at 40.
const AI_FAMILY: u64 = 4;
const AI_ADDR: u64 = 24;
const AI_NEXT: u64 = 40;
/// `sockaddr_in::sin_addr` at 4, `sockaddr_in6::sin6_addr` at 8 (glibc allocates a
/// `sockaddr_in6`'s room after every element, so 16 bytes at either offset can be read).
const SIN_ADDR: u64 = 4;
const SIN6_ADDR: u64 = 8;

#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: the helper checks the user address; a bad one is an error.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// `int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
/// struct addrinfo **res)`: remembers `node` and `res` of a watched thread.
#[uprobe]
pub fn bw_gai_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if watched((pid_tgid >> 32) as u32).is_none() {
        return 0;
    }
    let node: u64 = ctx.arg(0).unwrap_or(0);
    let res: u64 = ctx.arg(3).unwrap_or(0);
    if node != 0 && res != 0 {
        let _ = GAI_CALLS.insert(pid_tgid, GaiCall { node, res }, 0);
    }
    0
}

/// On a successful return: the name and the addresses of the result list.
#[uretprobe]
pub fn bw_gai_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain values.
    let Some(call) = (unsafe { GAI_CALLS.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = GAI_CALLS.remove(pid_tgid);
    let rc: i32 = ctx.ret();
    if rc != 0 {
        return 0;
    }
    let Some(mut record) = reserve::<ResolvedData>(EventKind::Resolved, Origin::of(pid_tgid))
    else {
        return 0;
    };
    let data = record.data();
    // SAFETY: the payload slot of a reserved record. Userspace reads `count` entries of
    // the arrays and `name_len` bytes of the name, all written here.
    unsafe {
        (*data).count = 0;
        let dst = &mut (*data).name;
        dst[0] = 0;
        (*data).name_len = match bpf_probe_read_user_str_bytes(call.node as *const u8, dst) {
            Ok(bytes) => bytes.len() as u32,
            Err(_) => 0,
        };
    }
    // One entry per list element, in order (family 0 for one that is not an IP address):
    // the entry's index is the loop's own, so the verifier sees one state per step.
    let mut ai: u64 = read::<u64>(call.res).unwrap_or(0);
    let mut n = 0u32;
    for i in 0..RESOLVED_ADDRS {
        if ai == 0 {
            break;
        }
        let family: i32 = read(ai + AI_FAMILY).unwrap_or(0);
        let sa: u64 = read(ai + AI_ADDR).unwrap_or(0);
        let v6 = family == AF_INET6 as i32;
        let known = v6 || family == AF_INET as i32;
        // IPv4: the 4 address bytes come first (the rest is not used).
        let at = sa + if v6 { SIN6_ADDR } else { SIN_ADDR };
        let addr: [u8; 16] = read(at).unwrap_or([0; 16]);
        // SAFETY: `i` is below the arrays' length.
        unsafe {
            (*data).families[i] = if known { family as u16 } else { 0 };
            (*data).addrs[i] = addr;
        }
        n = i as u32 + 1;
        ai = read(ai + AI_NEXT).unwrap_or(0);
    }
    // SAFETY: as above.
    unsafe { (*data).count = n };
    record.submit();
    0
}
