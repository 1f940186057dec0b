//! `cgroup_sock_addr` programs: outbound connects and UDP sends.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_get_socket_cookie, bpf_ktime_get_boot_ns,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext,
};
use monitor_common::{
    Counter, EventKind, SockData, SockEvent, SockWatch, UdpKey, AF_INET, AF_INET6, COMM_LEN,
    SOCK_DGRAM,
};

use crate::state::{count, process_comm, watched, EVENTS, SOCK_WATCH, UDP_SEEN};

const BPF_NOEXIST: u64 = 1;

/// Allow: these programs observe, they never decide.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn bw_connect4(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, EventKind::Connect, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn bw_connect6(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, EventKind::Connect, AF_INET6);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn bw_sendmsg4(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, EventKind::UdpSend, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn bw_sendmsg6(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, EventKind::UdpSend, AF_INET6);
    ALLOW
}

#[inline(always)]
fn on_sock_addr(ctx: &SockAddrContext, kind: EventKind, family: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(tag) = watched(tgid) else {
        return;
    };

    // SAFETY: ctx.sock_addr is the context pointer the kernel handed us; these fields are
    // readable in every cgroup/connect* and cgroup/sendmsg* program.
    let sa = unsafe { &*ctx.sock_addr };
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
    // user_port holds the port in network byte order in its low 16 bits.
    let port = u16::from_be(sa.user_port as u16);
    let sock_type = sa.type_ as u16;
    let protocol = sa.protocol as u16;
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // Its first payloads name the destination (SNI, Host, QUIC); BPF_NOEXIST keeps the
    // count of a socket that sends to several destinations.
    let _ = SOCK_WATCH.insert(
        cookie,
        SockWatch {
            captured: 0,
            watch_tag: tag,
        },
        BPF_NOEXIST,
    );

    if kind == EventKind::UdpSend {
        if sock_type != SOCK_DGRAM {
            return;
        }
        let key = UdpKey {
            cookie,
            addr,
            port,
            family,
            _pad: 0,
        };
        if let Some(seen) = UDP_SEEN.get_ptr_mut(key) {
            // SAFETY: LRU value slot; a racing update can only lose an increment.
            unsafe { *seen += 1 };
            count(Counter::UdpRepeat);
            return;
        }
        let _ = UDP_SEEN.insert(key, 0, 0);
    }

    count(Counter::Generated);
    let Some(mut entry) = EVENTS.reserve::<SockEvent>(0) else {
        count(Counter::Lost);
        return;
    };
    let thread_comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
    let uid_gid = bpf_get_current_uid_gid();
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned record of the right size.
    unsafe {
        (*ev).header.kind = kind as u32;
        (*ev).header.tgid = tgid;
        (*ev).header.tid = pid_tgid as u32;
        (*ev).header.uid = uid_gid as u32;
        (*ev).header.ts_ns = bpf_ktime_get_boot_ns();
        (*ev).header.cgroup_id = aya_ebpf::helpers::bpf_get_current_cgroup_id();
        (*ev).data = SockData {
            cookie,
            addr,
            family,
            port,
            sock_type,
            protocol,
            gid: (uid_gid >> 32) as u32,
            watch_tag: tag,
            comm: process_comm(thread_comm),
            thread_comm,
        };
    }
    entry.submit(0);
}
