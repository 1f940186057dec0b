//! `cgroup_skb` programs: DNS answers received by any socket (names for addresses), and the
//! first payloads of watched sockets (TLS SNI, QUIC SNI, HTTP Host). Both always return 1
//! ("pass"): they observe, never drop.
//!
//! In a `cgroup_skb` program the packet starts at the network header.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_get_socket_cookie, bpf_get_socket_uid, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
    EbpfContext,
};
use monitor_common::{
    Counter, EventKind, PacketData, AF_INET, AF_INET6, DNS_PORT, IPPROTO_TCP, IPPROTO_UDP,
    PACKET_CAPTURE, TCP_CAPTURES, UDP_CAPTURES,
};

use crate::{
    emit::{reserve, Origin},
    state::{count, sock_state, SOCK_WATCH},
};

const PASS: i32 = 1;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86DD;

/// Where the transport payload starts, and what carries it.
pub(crate) struct L4 {
    pub(crate) family: u16,
    pub(crate) protocol: u16,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) payload_off: u32,
    pub(crate) src_addr: [u8; 16],
}

#[inline(always)]
fn load<const N: usize>(ctx: &SkBuffContext, off: u32) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // SAFETY: N-byte stack buffer, the helper bounds-checks against the packet.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr() as *const _,
            off,
            buf.as_mut_ptr() as *mut _,
            N as u32,
        )
    };
    (rc == 0).then_some(buf)
}

/// Network and transport headers, read in place from the packet's linear data (direct
/// packet access: no helper call) for the common cases: IPv4 without options, IPv6 without
/// extension headers, headers in the linear part. `None` for anything else.
#[inline(always)]
fn parse_l4_direct(ctx: &SkBuffContext, proto: u32) -> Option<L4> {
    let skb = ctx.as_ptr() as *const __sk_buff;
    // SAFETY: reading fields of the context the kernel handed us.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let mut src_addr = [0u8; 16];
    let (family, protocol, l4) = if proto == ETH_P_IP {
        if data + 20 > end {
            return None;
        }
        // SAFETY: the 20 bytes are inside the packet (checked above).
        let ip = unsafe { &*(data as *const [u8; 20]) };
        if ip[0] != 0x45 || (u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff) != 0 {
            return None;
        }
        src_addr[..4].copy_from_slice(&ip[12..16]);
        (AF_INET, ip[9] as u16, data + 20)
    } else {
        if data + 40 > end {
            return None;
        }
        // SAFETY: the 40 bytes are inside the packet (checked above).
        let ip = unsafe { &*(data as *const [u8; 40]) };
        src_addr.copy_from_slice(&ip[8..24]);
        (AF_INET6, ip[6] as u16, data + 40)
    };
    let payload = match protocol {
        IPPROTO_UDP => {
            if l4 + 8 > end {
                return None;
            }
            8
        }
        IPPROTO_TCP => {
            if l4 + 20 > end {
                return None;
            }
            // SAFETY: inside the packet (checked above).
            let off = unsafe { *((l4 + 12) as *const u8) };
            ((off >> 4) as usize) * 4
        }
        _ => return None,
    };
    // SAFETY: the first four transport bytes are inside the packet (checked above).
    let ports = unsafe { &*(l4 as *const [u8; 4]) };
    Some(L4 {
        family,
        protocol,
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
        payload_off: (l4 - data + payload) as u32,
        src_addr,
    })
}

/// Network and transport headers, through the helper (options, extension headers, headers
/// outside the linear part).
#[inline(always)]
fn parse_l4_copied(ctx: &SkBuffContext, proto: u32) -> Option<L4> {
    let mut src_addr = [0u8; 16];
    let (family, protocol, l4_off) = if proto == ETH_P_IP {
        let ip: [u8; 20] = load(ctx, 0)?;
        let ihl = ((ip[0] & 0x0f) as u32) * 4;
        // Fragments other than the first carry no transport header.
        if (u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff) != 0 || ihl < 20 {
            return None;
        }
        src_addr[..4].copy_from_slice(&ip[12..16]);
        (AF_INET, ip[9] as u16, ihl)
    } else {
        let ip: [u8; 40] = load(ctx, 0)?;
        src_addr.copy_from_slice(&ip[8..24]);
        (AF_INET6, ip[6] as u16, 40)
    };
    let ports: [u8; 4] = load(ctx, l4_off)?;
    let src_port = u16::from_be_bytes([ports[0], ports[1]]);
    let dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    let payload_off = match protocol {
        IPPROTO_UDP => l4_off + 8,
        IPPROTO_TCP => {
            let off: [u8; 1] = load(ctx, l4_off + 12)?;
            l4_off + ((off[0] >> 4) as u32) * 4
        }
        _ => return None,
    };
    Some(L4 {
        family,
        protocol,
        src_port,
        dst_port,
        payload_off,
        src_addr,
    })
}

#[inline(always)]
pub(crate) fn parse_l4(ctx: &SkBuffContext) -> Option<L4> {
    let skb = ctx.as_ptr() as *const __sk_buff;
    // SAFETY: reading a field of the context the kernel handed us.
    let proto = u16::from_be(unsafe { (*skb).protocol } as u16) as u32;
    if proto != ETH_P_IP && proto != ETH_P_IPV6 {
        return None;
    }
    parse_l4_direct(ctx, proto).or_else(|| parse_l4_copied(ctx, proto))
}

/// The socket behind the packet (`__sk_buff::sk`).
#[inline(always)]
pub(crate) fn skb_socket(ctx: &SkBuffContext) -> *mut aya_ebpf::bindings::bpf_sock {
    let skb = ctx.as_ptr() as *const __sk_buff;
    // SAFETY: reading a field of the context the kernel handed us.
    unsafe { (*skb).__bindgen_anon_2.sk }
}

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
#[cgroup_skb(egress)]
pub fn bw_egress(ctx: SkBuffContext) -> i32 {
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // An unwatched socket costs one look-up.
    let Some(state) = SOCK_WATCH.get_ptr_mut(cookie) else {
        return PASS;
    };
    // SAFETY: the socket's slot; packets of one socket are serialised by its lock on
    // egress.
    let captured = unsafe { (*state).captured };
    let Some(l4) = parse_l4(&ctx) else {
        count(Counter::BadPacket);
        return PASS;
    };
    let limit = if l4.protocol == IPPROTO_TCP {
        TCP_CAPTURES
    } else {
        UDP_CAPTURES
    };
    if ctx.len() <= l4.payload_off {
        return PASS;
    }
    if captured + 1 >= limit {
        // The last capture of this socket: its entry goes, the map stays small.
        let _ = SOCK_WATCH.remove(cookie);
    } else {
        // SAFETY: as above.
        unsafe { (*state).captured = captured + 1 };
    }
    capture(&ctx, EventKind::Payload, &l4, cookie, captured, 0);
    PASS
}
