//! Decoding ring-buffer records into typed events (kind checked, size checked).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use monitor_common::{
    CgroupData, EventHeader, EventKind, ExecData, ExitData, ForkData, PacketData, PlainData,
    ResolvedData, SockData, TlsLib, AF_INET, AF_INET6, COMM_LEN, EXE_COMPONENTS, EXE_TRUNCATED,
    EXE_UNKNOWN, IPPROTO_TCP, IPPROTO_UDP, KIND_OFFSET, RESOLVED_ADDRS,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is too short to hold a kind")]
    TooShort { len: usize },
    #[error("unknown record kind {kind} ({len} bytes); the kernel programs and this binary were built from different sources")]
    UnknownKind { kind: u32, len: usize },
    #[error("record of kind {kind:?} is {len} bytes, expected {expected}; the kernel programs and this binary were built from different sources")]
    BadSize {
        kind: EventKind,
        len: usize,
        expected: usize,
    },
    #[error("unknown address family {0}")]
    BadFamily(u16),
    #[error("plaintext record names unknown TLS library {0}; the kernel programs and this binary were built from different sources")]
    BadLibrary(u32),
}

/// Protocol of a socket event.
#[derive(
    Debug,
    Default,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    #[default]
    Other,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Other => "other",
        }
    }
}

/// A decoded socket event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockRecord {
    pub header: EventHeader,
    pub kind: EventKind,
    pub cookie: u64,
    /// Destination; v4-mapped IPv6 addresses are reported as IPv4.
    pub dst: IpAddr,
    pub port: u16,
    pub proto: Proto,
    pub gid: u32,
    pub watch_tag: u32,
    /// Network namespace cookie of the socket.
    pub netns: u64,
    /// The call was denied: the blocked destination's id hash (`monitor_common::dest_hash`).
    pub blocked: Option<u64>,
    pub comm: String,
    pub thread_comm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRecord {
    pub header: EventHeader,
    pub ppid: u32,
    pub watch_tag: u32,
    pub comm: String,
    /// The path given to `execve()` (may be `/proc/self/exe`, `/dev/fd/3`, a symlink).
    pub filename: String,
    /// The executed file's own path, from the kernel's dentries (`None` when unreadable).
    pub exe: Option<String>,
    /// `exe` is only the deepest part of the path (deeper than the kernel walks).
    pub exe_truncated: bool,
}

/// A cgroup created, or a watched process moving to a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRecord {
    pub header: EventHeader,
    pub kind: EventKind,
    pub cgroup_id: u64,
    /// The process that moved (attach only).
    pub tgid: u32,
    pub watch_tag: u32,
    /// Path below the cgroup v2 mount.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkRecord {
    pub header: EventHeader,
    pub child_tgid: u32,
    pub watch_tag: u32,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRecord {
    pub header: EventHeader,
    pub exit_code: u32,
}

/// A decoded packet capture: a DNS answer (ingress) or a first payload (egress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRecord {
    pub header: EventHeader,
    pub kind: EventKind,
    pub cookie: u64,
    pub proto: Proto,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// Capture number on this socket (0 = first payload).
    pub seq: u32,
    /// Payload length in the packet (`data` may hold less).
    pub orig_len: u32,
    /// Network namespace cookie of the receiving socket (DNS answers; 0 unknown).
    pub netns: u64,
    pub data: Vec<u8>,
}

/// What one `getaddrinfo()` call of a watched process returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRecord {
    pub header: EventHeader,
    /// The name asked (not yet checked: the naming stage keeps only host names).
    pub name: String,
    /// The addresses returned, each once, in order.
    pub addrs: Vec<IpAddr>,
}

/// One chunk of what a watched process handed its TLS library to send. The bytes are
/// plaintext: they are matched in memory and dropped, never logged, recorded or kept (the
/// `Debug` form shows their length only).
#[derive(Clone, PartialEq, Eq)]
pub struct PlainRecord {
    pub header: EventHeader,
    pub lib: TlsLib,
    /// The library's handle of the connection (one per TLS connection in a process).
    pub conn: u64,
    /// Bytes the app wrote in the call (the chunks carry at most the first 16 KiB).
    pub total: u64,
    /// Where `data` starts in the write.
    pub offset: u32,
    /// Whether the app's buffer could be read (`data` is empty otherwise).
    pub readable: bool,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for PlainRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainRecord")
            .field("tgid", &self.header.tgid)
            .field("lib", &self.lib)
            .field("conn", &self.conn)
            .field("total", &self.total)
            .field("offset", &self.offset)
            .field("bytes", &self.data.len())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Sock(SockRecord),
    Resolved(ResolvedRecord),
    Plain(PlainRecord),
    Packet(PacketRecord),
    Exec(ExecRecord),
    Fork(ForkRecord),
    Exit(ExitRecord),
    Cgroup(CgroupRecord),
}

impl Record {
    pub fn kind(&self) -> EventKind {
        match self {
            Record::Sock(r) => r.kind,
            Record::Resolved(_) => EventKind::Resolved,
            Record::Plain(_) => EventKind::Plaintext,
            Record::Packet(r) => r.kind,
            Record::Exec(_) => EventKind::Exec,
            Record::Fork(_) => EventKind::Fork,
            Record::Exit(_) => EventKind::Exit,
            Record::Cgroup(r) => r.kind,
        }
    }

    pub fn header(&self) -> &EventHeader {
        match self {
            Record::Sock(r) => &r.header,
            Record::Resolved(r) => &r.header,
            Record::Plain(r) => &r.header,
            Record::Packet(r) => &r.header,
            Record::Exec(r) => &r.header,
            Record::Fork(r) => &r.header,
            Record::Exit(r) => &r.header,
            Record::Cgroup(r) => &r.header,
        }
    }
}

/// Text of a NUL-padded kernel string.
pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Copies a `#[repr(C)]` plain-data value out of `bytes` (caller checked the length).
fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>());
    // SAFETY: length checked above; every T used here is plain data valid for any bits.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// Turns the kernel's address bytes into an [`IpAddr`], unmapping v4-mapped IPv6.
pub fn decode_addr(family: u16, addr: &[u8; 16]) -> Result<IpAddr, DecodeError> {
    match family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            Ok(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        other => Err(DecodeError::BadFamily(other)),
    }
}

/// A raw record's kind number, if it has one.
fn raw_kind_of(bytes: &[u8]) -> Option<u32> {
    let b = bytes.get(KIND_OFFSET..KIND_OFFSET + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// A raw record's kind, if it names a known one (the record is not decoded).
pub fn kind_of(bytes: &[u8]) -> Option<EventKind> {
    EventKind::from_u32(raw_kind_of(bytes)?)
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let len = bytes.len();
    let raw_kind = raw_kind_of(bytes).ok_or(DecodeError::TooShort { len })?;
    let kind = EventKind::from_u32(raw_kind).ok_or(DecodeError::UnknownKind {
        kind: raw_kind,
        len,
    })?;
    let expected = kind.record_size();
    if len < expected {
        return Err(DecodeError::BadSize {
            kind,
            len,
            expected,
        });
    }
    let header: EventHeader = read(bytes);
    let payload = &bytes[std::mem::size_of::<EventHeader>()..];
    Ok(match kind {
        EventKind::Connect | EventKind::UdpSend => Record::Sock(sock(header, kind, payload)?),
        EventKind::DnsAnswer | EventKind::Payload => Record::Packet(packet(header, kind, payload)?),
        EventKind::Resolved => {
            let d: ResolvedData = read(payload);
            let n = (d.name_len as usize).min(d.name.len());
            let mut addrs: Vec<IpAddr> = Vec::new();
            for i in 0..(d.count as usize).min(RESOLVED_ADDRS) {
                // Family 0: an element that is not an IP address.
                let Ok(a) = decode_addr(d.families[i], &d.addrs[i]) else {
                    continue;
                };
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            Record::Resolved(ResolvedRecord {
                header,
                name: cstr(&d.name[..n]),
                addrs,
            })
        }
        EventKind::Plaintext => {
            let d: PlainData = read(payload);
            let Some(lib) = TlsLib::from_u32(d.lib) else {
                return Err(DecodeError::BadLibrary(d.lib));
            };
            let n = (d.len as usize).min(d.data.len());
            Record::Plain(PlainRecord {
                header,
                lib,
                conn: d.conn,
                total: d.total,
                offset: d.offset,
                readable: d.len > 0,
                data: d.data[..n].to_vec(),
            })
        }
        EventKind::Exec => {
            let d: ExecData = read(payload);
            let n = (d.filename_len as usize).min(d.filename.len());
            Record::Exec(ExecRecord {
                header,
                ppid: d.ppid,
                watch_tag: d.watch_tag,
                comm: cstr(&d.comm),
                filename: cstr(&d.filename[..n]),
                exe: exe_path(&d),
                exe_truncated: d.exe_flags & EXE_TRUNCATED != 0,
            })
        }
        EventKind::Fork => {
            let d: ForkData = read(payload);
            Record::Fork(ForkRecord {
                header,
                child_tgid: d.child_tgid,
                watch_tag: d.watch_tag,
                comm: cstr(&d.comm),
            })
        }
        EventKind::Exit => {
            let d: ExitData = read(payload);
            Record::Exit(ExitRecord {
                header,
                exit_code: d.exit_code,
            })
        }
        EventKind::CgroupMkdir | EventKind::CgroupAttach => {
            let d: CgroupData = read(payload);
            let n = (d.path_len as usize).min(d.path.len());
            Record::Cgroup(CgroupRecord {
                header,
                kind,
                cgroup_id: d.cgroup_id,
                tgid: d.tgid,
                watch_tag: d.watch_tag,
                path: cstr(&d.path[..n]),
            })
        }
    })
}

/// A connect or UDP send.
fn sock(header: EventHeader, kind: EventKind, payload: &[u8]) -> Result<SockRecord, DecodeError> {
    let d: SockData = read(payload);
    let proto = match d.protocol {
        IPPROTO_TCP => Proto::Tcp,
        IPPROTO_UDP => Proto::Udp,
        _ => match d.sock_type {
            monitor_common::SOCK_STREAM => Proto::Tcp,
            monitor_common::SOCK_DGRAM => Proto::Udp,
            _ => Proto::Other,
        },
    };
    Ok(SockRecord {
        header,
        kind,
        cookie: d.cookie,
        dst: decode_addr(d.family, &d.addr)?,
        port: d.port,
        proto,
        gid: d.gid,
        watch_tag: d.watch_tag,
        netns: d.netns,
        blocked: (d.blocked != 0).then_some(d.blocked),
        comm: cstr(&d.comm),
        thread_comm: cstr(&d.thread_comm),
    })
}

/// A DNS answer or a socket's first payload.
fn packet(
    header: EventHeader,
    kind: EventKind,
    payload: &[u8],
) -> Result<PacketRecord, DecodeError> {
    let d: PacketData = read(payload);
    let n = (d.len as usize).min(d.data.len());
    Ok(PacketRecord {
        header,
        kind,
        cookie: d.cookie,
        proto: match d.protocol {
            IPPROTO_TCP => Proto::Tcp,
            IPPROTO_UDP => Proto::Udp,
            _ => Proto::Other,
        },
        src: decode_addr(d.family, &d.src_addr)?,
        src_port: d.src_port,
        dst_port: d.dst_port,
        seq: d.seq,
        orig_len: d.orig_len,
        netns: d.netns,
        data: d.data[..n].to_vec(),
    })
}

/// The executed file's path from the exec record's components (leaf first): `/a/b/c`, or
/// `…/b/c` when the kernel's walk stopped short of the root.
fn exe_path(d: &ExecData) -> Option<String> {
    let depth = (d.exe_depth as usize).min(EXE_COMPONENTS);
    if d.exe_flags & EXE_UNKNOWN != 0 || depth == 0 {
        return None;
    }
    // Empty steps are mount crossings.
    let parts: Vec<String> = d.exe[..depth]
        .iter()
        .rev()
        .map(|c| cstr(c))
        .filter(|c| !c.is_empty())
        .collect();
    if parts.is_empty() || parts.iter().any(|p| p.contains('/')) {
        return None;
    }
    let prefix = if d.exe_flags & EXE_TRUNCATED != 0 {
        "…/"
    } else {
        "/"
    };
    Some(format!("{prefix}{}", parts.join("/")))
}

/// A process name as the kernel keys it: at most 15 bytes, zero padded.
pub fn comm_key(name: &str) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let bytes = name.as_bytes();
    let n = bytes.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

#[cfg(test)]
mod tests {
    use monitor_common::{Event, SockEvent};

    use super::*;

    fn as_bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of plain data.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
                .to_vec()
        }
    }

    fn sock_event(family: u16, addr: [u8; 16]) -> SockEvent {
        Event {
            header: EventHeader {
                kind: EventKind::Connect as u32,
                tgid: 42,
                tid: 43,
                uid: 1000,
                ts_ns: 7,
                cgroup_id: 9,
            },
            data: SockData {
                cookie: 5,
                addr,
                family,
                port: 443,
                sock_type: 1,
                protocol: 6,
                gid: 100,
                watch_tag: 3,
                netns: 4026531840,
                blocked: 0,
                comm: comm_key("zoom"),
                thread_comm: comm_key("worker"),
            },
        }
    }

    #[test]
    fn decodes_a_connect_record() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let rec = decode(&as_bytes(&sock_event(AF_INET, addr))).unwrap();
        let Record::Sock(s) = rec else { panic!() };
        assert_eq!(s.dst, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((s.port, s.proto, s.cookie), (443, Proto::Tcp, 5));
        assert_eq!((s.header.tgid, s.header.tid), (42, 43));
        assert_eq!(
            (s.comm.as_str(), s.thread_comm.as_str()),
            ("zoom", "worker")
        );
    }

    #[test]
    fn v4_mapped_v6_is_reported_as_v4() {
        let mapped: Ipv6Addr = "::ffff:10.1.2.3".parse().unwrap();
        let rec = decode(&as_bytes(&sock_event(AF_INET6, mapped.octets()))).unwrap();
        let Record::Sock(s) = rec else { panic!() };
        assert_eq!(s.dst, "10.1.2.3".parse::<IpAddr>().unwrap());
        let v6: Ipv6Addr = "::1".parse().unwrap();
        let Record::Sock(s) = decode(&as_bytes(&sock_event(AF_INET6, v6.octets()))).unwrap() else {
            panic!()
        };
        assert_eq!(s.dst, IpAddr::V6(v6));
    }

    #[test]
    fn rejects_short_unknown_and_mis_sized_records() {
        assert_eq!(decode(&[1, 0]), Err(DecodeError::TooShort { len: 2 }));
        let mut bytes = as_bytes(&sock_event(AF_INET, [0; 16]));
        assert!(matches!(
            decode(&bytes[..50]),
            Err(DecodeError::BadSize { expected: 120, .. })
        ));
        bytes[0] = 77;
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::UnknownKind { kind: 77, .. })
        ));
        let bad_family = as_bytes(&sock_event(99, [0; 16]));
        assert_eq!(decode(&bad_family), Err(DecodeError::BadFamily(99)));
    }

    #[test]
    fn wire_exec_records_carry_the_executed_files_path() {
        let mut d = ExecData {
            ppid: 1,
            watch_tag: 0,
            comm: comm_key("exe"),
            filename_len: 14,
            exe_depth: 4,
            exe_flags: 0,
            filename: [0; monitor_common::FILENAME_LEN],
            exe: [[0; monitor_common::EXE_COMPONENT_LEN]; EXE_COMPONENTS],
        };
        d.filename[..14].copy_from_slice(b"/proc/self/exe");
        for (i, c) in ["chromium", "chromium", "lib", "usr"].iter().enumerate() {
            d.exe[i][..c.len()].copy_from_slice(c.as_bytes());
        }
        assert_eq!(exe_path(&d).as_deref(), Some("/usr/lib/chromium/chromium"));
        d.exe_flags = EXE_TRUNCATED;
        assert_eq!(exe_path(&d).as_deref(), Some("…/usr/lib/chromium/chromium"));
        d.exe_flags = EXE_UNKNOWN;
        assert_eq!(exe_path(&d), None);
        d.exe_flags = 0;
        // A mount crossing between `lib` and `usr`: an empty step.
        d.exe[4] = d.exe[3];
        d.exe[3] = [0; monitor_common::EXE_COMPONENT_LEN];
        d.exe_depth = 5;
        assert_eq!(exe_path(&d).as_deref(), Some("/usr/lib/chromium/chromium"));
        d.exe[0][1] = b'/';
        assert_eq!(exe_path(&d), None, "a component with a slash is not one");
        d.exe_depth = 200;
        assert_eq!(exe_path(&d), None, "depth is bounded by the array");
    }

    #[test]
    fn every_prefix_of_every_record_decodes_or_errors_without_panic() {
        let bytes = as_bytes(&sock_event(AF_INET6, [1; 16]));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn comm_keys_are_truncated_like_the_kernel() {
        assert_eq!(&comm_key("CiscoCollabHostCefWM")[..], b"CiscoCollabHost\0");
        assert_eq!(cstr(&comm_key("zoom")), "zoom");
    }
}
