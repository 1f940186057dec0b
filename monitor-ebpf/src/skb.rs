//! A packet's headers, as the `cgroup_skb` programs read them (the packet starts at the
//! network header): where the transport payload starts, and the socket behind it.

use aya_ebpf::{
    bindings::__sk_buff, helpers::bpf_skb_load_bytes, programs::SkBuffContext, EbpfContext,
};
use monitor_common::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};

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

/// The common headers, read in place (IPv4 without options, not a later fragment; IPv6
/// without extension headers; TCP or UDP; all in the linear part): the transport header's
/// start and the protocol. `None`: read them with [`parse_l4`].
#[inline(always)]
fn l4_in_place(ctx: &SkBuffContext) -> Option<(usize, u8)> {
    let skb = ctx.as_ptr() as *const __sk_buff;
    // SAFETY: reading fields of the context the kernel handed us.
    let (proto, data, end) = unsafe {
        (
            u16::from_be((*skb).protocol as u16) as u32,
            (*skb).data as usize,
            (*skb).data_end as usize,
        )
    };
    let (l4, protocol) = if proto == ETH_P_IP {
        if data + 20 > end {
            return None;
        }
        // SAFETY: the 20 bytes are inside the packet (checked above).
        let ip = unsafe { &*(data as *const [u8; 20]) };
        if ip[0] != 0x45 || (u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff) != 0 {
            return None;
        }
        (data + 20, ip[9])
    } else if proto == ETH_P_IPV6 {
        if data + 40 > end {
            return None;
        }
        // SAFETY: the 40 bytes are inside the packet (checked above).
        (data + 40, unsafe { *((data + 6) as *const u8) })
    } else {
        return None;
    };
    if (protocol as u16 != IPPROTO_TCP && protocol as u16 != IPPROTO_UDP) || l4 + 20 > end {
        return None;
    }
    Some((l4, protocol))
}

/// The transport source port, read in place when the headers are the common kind: the one
/// field most received packets are judged by. `None`: read the headers with [`parse_l4`].
#[inline(always)]
pub(crate) fn src_port_in_place(ctx: &SkBuffContext) -> Option<u16> {
    let (l4, _) = l4_in_place(ctx)?;
    // SAFETY: the transport header's first 20 bytes are inside the packet (checked there).
    let ports = unsafe { &*(l4 as *const [u8; 2]) };
    Some(u16::from_be_bytes(*ports))
}

/// Whether a TCP segment carries no payload (a handshake, an acknowledgement, a close),
/// read in place: most sent packets are judged by this alone. `false` when it cannot tell.
#[inline(always)]
pub(crate) fn bare_tcp_segment(ctx: &SkBuffContext) -> bool {
    let skb = ctx.as_ptr() as *const __sk_buff;
    let Some((l4, protocol)) = l4_in_place(ctx) else {
        return false;
    };
    if protocol as u16 != IPPROTO_TCP {
        return false;
    }
    // SAFETY: reading a field of the context; the transport header's first 20 bytes are
    // inside the packet (checked in `l4_in_place`).
    let (data, offset) = unsafe { ((*skb).data as usize, *((l4 + 12) as *const u8)) };
    let payload_off = (l4 - data) as u32 + ((offset >> 4) as u32) * 4;
    ctx.len() <= payload_off
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
