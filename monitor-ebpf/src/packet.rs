//! `cgroup_skb` programs: DNS answers received by any socket (names for addresses), and the
//! first payloads of watched sockets (TLS SNI, QUIC SNI, HTTP Host). Both always return 1
//! ("pass"): they observe, never drop.
//!
//! In a `cgroup_skb` program the packet starts at the network header.

use aya_ebpf::{
    helpers::{bpf_get_socket_cookie, bpf_get_socket_uid, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
    EbpfContext,
};
use monitor_common::{
    Counter, EventKind, PacketData, SockWatch, DNS_PORT, IPPROTO_TCP, PACKET_CAPTURE, TCP_CAPTURES,
    UDP_CAPTURES,
};

use crate::{
    emit::{reserve, Origin},
    skb::{bare_tcp_segment, parse_l4, skb_socket, src_port_in_place, L4},
    state::{advance_sock_watch, count, sock_state, sock_watch},
};

const PASS: i32 = 1;
/// Copies up to `PACKET_CAPTURE` payload bytes into a ring-buffer record.
#[inline(always)]
fn capture(ctx: &SkBuffContext, kind: EventKind, l4: &L4, cookie: u64, seq: u32, netns: u64) {
    let skb_len = ctx.len();
    if skb_len <= l4.payload_off {
        return;
    }
    let orig_len = skb_len - l4.payload_off;
    let m = if orig_len as usize > PACKET_CAPTURE {
        PACKET_CAPTURE as u32
    } else {
        orig_len
    };
    // The verifier must see 1 <= n <= PACKET_CAPTURE at the helper call. The volatile read
    // hides m's range from LLVM so that it keeps the mask, which proves the bound to the
    // verifier (for m in 1..=PACKET_CAPTURE the expression is m itself).
    // SAFETY: reading a local.
    let m = unsafe { core::ptr::read_volatile(&m) };
    let n = ((m.wrapping_sub(1)) & (PACKET_CAPTURE as u32 - 1)) + 1;
    // Packets are not tied to a task (softirq, another process): the socket's owner uid and
    // cgroup identify them; userspace joins the process by socket cookie.
    let origin = Origin {
        tgid: 0,
        tid: 0,
        // SAFETY: the helpers take the program's own context.
        uid: unsafe { bpf_get_socket_uid(ctx.as_ptr() as *mut _) },
        // SAFETY: as above.
        cgroup_id: unsafe { bpf_skb_cgroup_id(ctx.as_ptr() as *mut _) },
    };
    let Some(mut record) = reserve::<PacketData>(kind, origin) else {
        return;
    };
    let data = record.data();
    // SAFETY: the payload slot of a reserved record; the load writes at most
    // PACKET_CAPTURE bytes into its own data array (n is in 1..=PACKET_CAPTURE).
    unsafe {
        (*data).cookie = cookie;
        (*data).family = l4.family;
        (*data).protocol = l4.protocol;
        (*data).src_port = l4.src_port;
        (*data).dst_port = l4.dst_port;
        (*data).seq = seq;
        (*data).orig_len = orig_len;
        (*data)._pad = 0;
        (*data).netns = netns;
        (*data).src_addr = l4.src_addr;
        let dst = core::ptr::addr_of_mut!((*data).data) as *mut u8;
        let rc = bpf_skb_load_bytes(ctx.as_ptr() as *const _, l4.payload_off, dst as *mut _, n);
        (*data).len = if rc == 0 { n } else { 0 };
    }
    // The first payload of a socket may name it (and so alert): the reader comes soon.
    if kind == EventKind::Payload && seq == 0 {
        record.submit_urgent();
    } else {
        record.submit();
    }
}

/// Every DNS answer received by any socket on the machine: the only payload captured for
/// unwatched processes, because a stub resolver receives the names apps asked for.
#[cgroup_skb(ingress)]
pub fn bw_ingress(ctx: SkBuffContext) -> i32 {
    // Nearly every packet is judged by its source port alone.
    if src_port_in_place(&ctx).is_some_and(|port| port != DNS_PORT) {
        return PASS;
    }
    let Some(l4) = parse_l4(&ctx) else {
        return PASS;
    };
    if l4.src_port != DNS_PORT {
        return PASS;
    }
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // The namespace the socket's DNS query was sent in (0 when brokerwatch did not see it).
    let netns = match sock_state(skb_socket(&ctx)) {
        // SAFETY: this socket's storage slot.
        Some(state) => unsafe { (*state).netns },
        None => 0,
    };
    capture(&ctx, EventKind::DnsAnswer, &l4, cookie, 0, netns);
    crate::block::read_answer_for_blocking(&ctx);
    PASS
}

/// The first payloads of sockets that watched processes connected or sent from.
///
/// Most packets carry no payload (handshakes, acknowledgements, closes, a download's whole
/// egress): they leave after their headers are read in place, before the socket's cookie
/// is asked for (the kernel makes one for every socket asked about, from a shared counter).
#[cgroup_skb(egress)]
pub fn bw_egress(ctx: SkBuffContext) -> i32 {
    if bare_tcp_segment(&ctx) {
        return PASS;
    }
    let Some(l4) = parse_l4(&ctx) else {
        // Not TCP or UDP over IP, or a later fragment: none of a watched socket's first
        // payloads (it connected or sent over TCP or UDP); counted if the socket is watched.
        if watched_socket(&ctx).is_some() {
            count(Counter::BadPacket);
        }
        return PASS;
    };
    if ctx.len() <= l4.payload_off {
        return PASS;
    }
    // An unwatched socket's payload costs one look-up.
    let Some((cookie, state)) = watched_socket(&ctx) else {
        return PASS;
    };
    // SAFETY: the socket's slot; packets of one socket are serialised by its lock on
    // egress.
    let captured = unsafe { (*state).captured };
    let limit = if l4.protocol == IPPROTO_TCP {
        TCP_CAPTURES
    } else {
        UDP_CAPTURES
    };
    // The last capture of this socket empties its slot.
    advance_sock_watch(state, cookie, captured, limit);
    capture(&ctx, EventKind::Payload, &l4, cookie, captured, 0);
    PASS
}

/// The socket behind the packet, if its first payloads are being captured: its cookie and
/// its `SOCK_WATCH` slot.
#[inline(always)]
fn watched_socket(ctx: &SkBuffContext) -> Option<(u64, *mut SockWatch)> {
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    sock_watch(cookie).map(|s| (cookie, s))
}
