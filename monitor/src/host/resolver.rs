//! Where the machine's stub DNS resolver lives: the process listening on a loopback
//! nameserver of `/etc/resolv.conf` (systemd-resolved on 127.0.0.53, dnsmasq, ...). Its
//! cgroup receives the DNS answers of apps that resolve through it without sending DNS
//! packets themselves (glibc's nss-resolve).

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::procinfo::parse_proc_cgroup;

/// Loopback nameservers of a `resolv.conf` text.
pub fn loopback_nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().parse::<IpAddr>().ok())
        .filter(|a| a.is_loopback())
        .collect()
}

/// Socket inodes bound to `addr`:53 in the text of `/proc/net/udp` or `/proc/net/udp6`.
pub fn dns_socket_inodes(proc_net_udp: &str, addr: IpAddr) -> Vec<u64> {
    proc_net_udp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, inode) = (fields.get(1)?, fields.get(9)?);
            let (ip_hex, port_hex) = local.split_once(':')?;
            if u16::from_str_radix(port_hex, 16).ok()? != 53 {
                return None;
            }
            let ip = parse_hex_addr(ip_hex)?;
            (ip == addr || ip.is_unspecified()).then(|| inode.parse().ok())?
        })
        .collect()
}

/// The kernel prints addresses in /proc/net/udp as host-order 32-bit words in hex.
fn parse_hex_addr(hex: &str) -> Option<IpAddr> {
    // Hex digits only: slicing by bytes below must never split a character (found by
    // fuzzing: a multibyte character in the address field panicked).
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    match words.as_slice() {
        [w] => Some(IpAddr::V4(Ipv4Addr::from(w.to_le_bytes()))),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// The cgroup paths (below the cgroup v2 mount) of the processes that serve DNS on a
/// loopback nameserver of `/etc/resolv.conf`; empty when it names no local resolver.
pub fn stub_resolver_cgroups() -> Vec<String> {
    let conf = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers = loopback_nameservers(&conf);
    if servers.is_empty() {
        return Vec::new();
    }
    let tables = [
        fs::read_to_string("/proc/net/udp").unwrap_or_default(),
        fs::read_to_string("/proc/net/udp6").unwrap_or_default(),
    ];
    let inodes: Vec<u64> = servers
        .iter()
        .flat_map(|s| tables.iter().flat_map(move |t| dns_socket_inodes(t, *s)))
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut out = Vec::new();
    for pid in super::procinfo::all_pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .ok()
                .and_then(|t| t.to_str().map(|t| wanted.iter().any(|w| w == t)))
                .unwrap_or(false)
        });
        if owns {
            if let Some(cg) = fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .ok()
                .and_then(|t| parse_proc_cgroup(&t))
            {
                if !out.contains(&cg) {
                    out.push(cg);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_loopback_nameservers_and_their_sockets() {
        let conf = "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1\noptions edns0\nnameserver ::1\n";
        assert_eq!(
            loopback_nameservers(conf),
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        // systemd-resolved's stub on 127.0.0.53:53 (0x35), and an unrelated socket.
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  110: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   991        0 23456 2 0000000000000000 0\n\
  111: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0\n";
        assert_eq!(
            dns_socket_inodes(udp, "127.0.0.53".parse().unwrap()),
            vec![23456]
        );
        assert!(dns_socket_inodes(udp, "127.0.0.1".parse().unwrap()).is_empty());
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
   5: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0\n";
        assert_eq!(dns_socket_inodes(udp6, "::1".parse().unwrap()), vec![4242]);
        assert_eq!(
            dns_socket_inodes("garbage\nmore garbage here", "::1".parse().unwrap()),
            Vec::<u64>::new()
        );
    }

    // Found by fuzzing.
    #[test]
    fn resolver_proc_net_udp_with_a_multibyte_address_is_skipped_not_a_panic() {
        let text = "header\n 0: 0100\u{e9}7F:0035 00000000:0000 07 0 0 0 0 0 4242\n";
        assert!(dns_socket_inodes(text, "127.0.0.1".parse().unwrap()).is_empty());
        assert_eq!(parse_hex_addr("0100007\u{e9}"), None);
    }
}
