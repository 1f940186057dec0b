//! `cgroup_sock_addr` programs: outbound connects and UDP sends.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_get_netns_cookie,
        bpf_get_socket_cookie, generated,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext,
};
use monitor_common::{
    Counter, EventKind, SockData, SockState, UdpKey, AF_INET, AF_INET6, COMM_LEN, DNS_PORT,
    SOCK_DGRAM, SOCK_DNS,
};

use crate::{
    block, budget,
    emit::{admit_or, reserve_admitted, Origin},
    state::{count, process_comm, start_sock_watch, watch_of, SOCK_STATE, UDP_SEEN},
};

/// Allow the call; anything else makes it fail with `EPERM`.
const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn bw_connect4(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, EventKind::Connect, AF_INET)
}

#[cgroup_sock_addr(connect6)]
pub fn bw_connect6(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, EventKind::Connect, AF_INET6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn bw_sendmsg4(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, EventKind::UdpSend, AF_INET)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn bw_sendmsg6(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, EventKind::UdpSend, AF_INET6)
}

/// Marks a socket that talks to DNS in its local storage: the answers it receives belong
/// to `netns`.
#[inline(always)]
fn mark_dns_socket(ctx: &SockAddrContext, netns: u64) {
    let mut fresh = SockState {
        netns,
        captured: 0,
        watch_tag: 0,
        flags: SOCK_DNS,
        _pad: 0,
    };
    // SAFETY: the map helper takes the context's own socket; the returned slot belongs to
    // this socket's storage, which only hooks of this socket write.
    unsafe {
        let slot = SOCK_STATE.get_or_insert_ptr_mut(ctx, Some(&mut fresh));
        if !slot.is_null() {
            (*slot).netns = netns;
        }
    }
}

/// The destination address of the call, as 16 bytes (IPv4 in the first four).
#[inline(always)]
fn user_addr(sa: &aya_ebpf::bindings::bpf_sock_addr, family: u16) -> [u8; 16] {
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        let words = [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ];
        addr[0..4].copy_from_slice(&words[0].to_ne_bytes());
        addr[4..8].copy_from_slice(&words[1].to_ne_bytes());
        addr[8..12].copy_from_slice(&words[2].to_ne_bytes());
        addr[12..16].copy_from_slice(&words[3].to_ne_bytes());
    }
    addr
}

/// Whether this socket already sent to this destination (then the send is folded into a
/// count instead of a record).
#[inline(always)]
fn repeated(key: &UdpKey) -> bool {
    if let Some(seen) = UDP_SEEN.get_ptr_mut(key) {
        // SAFETY: LRU value slot; a racing update can only lose an increment.
        unsafe { *seen += 1 };
        count(Counter::UdpRepeat);
        return true;
    }
    false
}

/// Reports the call of a watched process and decides it (allowed unless the block tables
/// deny this process's app the destination).
#[inline(always)]
fn on_sock_addr(ctx: &SockAddrContext, kind: EventKind, family: u16) -> i32 {
    // SAFETY: ctx.sock_addr is the context pointer the kernel handed us; these fields are
    // readable in every cgroup/connect* and cgroup/sendmsg* program.
    let sa = unsafe { &*ctx.sock_addr };
    // user_port holds the port in network byte order in its low 16 bits.
    let port = u16::from_be(sa.user_port as u16);
    // An unwatched process costs this and a look-up or two.
    let pid_tgid = bpf_get_current_pid_tgid();
    let watch = watch_of((pid_tgid >> 32) as u32);
    if watch.is_none() && port != DNS_PORT {
        return ALLOW;
    }
    // SAFETY: the helper takes the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    if port == DNS_PORT {
        mark_dns_socket(ctx, netns);
    }
    let Some(watch) = watch else {
        return ALLOW;
    };
    let tag = watch.tag;
    let uid_gid = bpf_get_current_uid_gid();
    let origin = Origin::of_ids_in(pid_tgid, uid_gid, watch.cgroup_id);
    let addr = user_addr(sa, family);
    // DNS itself is never blocked: names are how blocking knows what to deny.
    let uid = uid_gid as u32;
    let blocked = if port == DNS_PORT {
        0
    } else {
        block::verdict(tag, netns, uid, family, &addr)
    };
    let verdict = if blocked != 0 {
        count(Counter::Blocked);
        DENY
    } else {
        ALLOW
    };
    let sock_type = sa.type_ as u16;
    let protocol = sa.protocol as u16;
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // Built only for sends: a connect does not pay for the key.
    let udp_key = || UdpKey {
        cookie,
        addr,
        port,
        family,
        _pad: 0,
    };
    if kind == EventKind::UdpSend && (sock_type != SOCK_DGRAM || repeated(&udp_key())) {
        return verdict;
    }
    // The user's budget: a call over it is folded into a count for its process and
    // destination; destinations that may alert and denied calls always pass (looked up
    // only when the budget refuses).
    let Some(ticket) = admit_or::<SockData>(kind, &origin, || {
        blocked != 0 || budget::priority(family, &addr)
    }) else {
        budget::fold(origin.tgid, uid, family, &addr, port);
        return verdict;
    };
    if kind == EventKind::UdpSend {
        // The first send is remembered only once it is reported.
        let _ = UDP_SEEN.insert(udp_key(), 0, 0);
    }
    // Its first payloads name the destination (SNI, Host, QUIC).
    if blocked == 0 {
        start_sock_watch(cookie, tag);
    }

    // The payload is written where it goes, in the ring (no copy through the stack).
    let Some(mut record) = reserve_admitted::<SockData>(ticket, kind, origin) else {
        return verdict;
    };
    let data = record.data();
    // SAFETY: the payload slot of a reserved record, written field by field; the comm
    // helper writes its 16 bytes into the record's own array.
    unsafe {
        (*data).cookie = cookie;
        (*data).addr = addr;
        (*data).family = family;
        (*data).port = port;
        (*data).sock_type = sock_type;
        (*data).protocol = protocol;
        (*data).gid = (uid_gid >> 32) as u32; // the uid is in the header
        (*data).watch_tag = tag;
        (*data).netns = netns;
        (*data).blocked = blocked;
        let thread_comm = &mut (*data).thread_comm;
        if generated::bpf_get_current_comm(thread_comm.as_mut_ptr().cast(), COMM_LEN as u32) != 0 {
            *thread_comm = [0u8; COMM_LEN];
        }
        (*data).comm = process_comm(*thread_comm, origin.tid == origin.tgid);
    }
    record.submit_urgent();
    verdict
}
