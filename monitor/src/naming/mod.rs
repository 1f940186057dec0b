//! Naming destinations: which name an application meant when it connected to an address.
//!
//! Sources, best first: the TLS ClientHello's SNI, the QUIC Initial's SNI, the HTTP `Host`
//! header (all from the connection's own first bytes), then the DNS answers the process (or
//! its cgroup, or anyone on the machine) received for the address. Parsers are pure
//! functions over bytes in the submodules; this module keeps the bounded state.

pub mod dns;
pub mod http;
#[cfg(test)]
mod proptests;
pub mod quic;
pub mod tls;

use std::{net::IpAddr, sync::Arc};

use crate::bounded::BoundedLru;
use monitor_common::EventKind;

use crate::kernel::wire::{PacketRecord, Proto};

/// Where a name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NameSource {
    Sni,
    Quic,
    Http,
    Dns,
}

impl NameSource {
    pub fn as_str(self) -> &'static str {
        match self {
            NameSource::Sni => "sni",
            NameSource::Quic => "quic",
            NameSource::Http => "http",
            NameSource::Dns => "dns",
        }
    }
}

/// A name learned from DNS for an address: what was asked and the CNAME chain to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    pub qname: String,
    pub chain: Vec<String>,
}

/// DNS answers never live shorter than this in the cache (apps cache names longer than
/// tiny TTLs, and connect after the answer expired).
pub const TTL_FLOOR_NS: u64 = 120 * 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owner {
    Pid(u32),
    Cgroup(u64),
}

#[derive(Debug, Clone)]
struct Cached {
    name: Arc<DnsName>,
    expires_ns: u64,
}

/// Address -> name, per process, per cgroup and machine-wide; all bounded (LRU).
pub struct DnsCache {
    owned: BoundedLru<(Owner, IpAddr), Cached>,
    global: BoundedLru<IpAddr, Cached>,
    pub answers: u64,
}

impl Default for DnsCache {
    fn default() -> Self {
        Self::with_capacity(65_536)
    }
}

impl DnsCache {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            owned: BoundedLru::new(n),
            global: BoundedLru::new(n),
            answers: 0,
        }
    }

    pub fn insert(&mut self, pid: Option<u32>, cgroup: u64, r: &dns::Resolution, now_ns: u64) {
        self.answers += 1;
        let entry = Cached {
            name: Arc::new(DnsName {
                qname: r.qname.clone(),
                chain: r.chain.clone(),
            }),
            expires_ns: now_ns.saturating_add((r.ttl as u64 * 1_000_000_000).max(TTL_FLOOR_NS)),
        };
        if let Some(pid) = pid {
            self.owned.put((Owner::Pid(pid), r.addr), entry.clone());
        }
        if cgroup != 0 {
            self.owned
                .put((Owner::Cgroup(cgroup), r.addr), entry.clone());
        }
        self.global.put(r.addr, entry);
    }

    /// The freshest name for `addr` as seen by this process, else its cgroup, else anyone.
    pub fn lookup(
        &mut self,
        pid: u32,
        cgroup: u64,
        addr: IpAddr,
        now_ns: u64,
    ) -> Option<Arc<DnsName>> {
        let fresh = |c: &Cached| (c.expires_ns >= now_ns).then(|| c.name.clone());
        if let Some(n) = self.owned.get(&(Owner::Pid(pid), addr)).and_then(fresh) {
            return Some(n);
        }
        if let Some(n) = self
            .owned
            .get(&(Owner::Cgroup(cgroup), addr))
            .and_then(fresh)
        {
            return Some(n);
        }
        self.global.get(&addr).and_then(fresh)
    }
}

/// A name found in a connection's own bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireName {
    pub name: String,
    pub source: NameSource,
    /// Encrypted Client Hello: `name` is only the outer, public name.
    pub ech: bool,
}

#[derive(Debug, Default)]
struct Stream {
    buf: Vec<u8>,
    quic: Option<quic::CryptoStream>,
    done: bool,
}

/// Reassembles the first payloads of watched sockets and names them.
pub struct Namer {
    streams: BoundedLru<u64, Stream>,
    pub dns: DnsCache,
}

impl Default for Namer {
    fn default() -> Self {
        Self {
            streams: BoundedLru::new(16_384),
            dns: DnsCache::default(),
        }
    }
}

impl Namer {
    /// Feeds one first-payload capture; returns a name once the bytes give one.
    pub fn on_payload(&mut self, rec: &PacketRecord) -> Option<WireName> {
        if rec.kind != EventKind::Payload {
            return None;
        }
        let stream = self.streams.get_or_insert_mut(rec.cookie, Stream::default);
        if stream.done {
            return None;
        }
        if rec.proto == Proto::Udp {
            // Each datagram stands alone; a truncated one cannot be authenticated.
            let crypto = stream.quic.get_or_insert_with(quic::CryptoStream::default);
            return match crypto.push_datagram(&rec.data) {
                None => None,
                Some(hello) => {
                    stream.done = true;
                    stream.quic = None;
                    match hello {
                        tls::Hello::ClientHello { sni, ech } => sni.map(|name| WireName {
                            name,
                            source: NameSource::Quic,
                            ech,
                        }),
                        _ => None,
                    }
                }
            };
        }
        stream.buf.extend_from_slice(&rec.data);
        let truncated = (rec.data.len() as u32) < rec.orig_len;
        let result = name_tcp_stream(&stream.buf);
        match result {
            Parsed::Done(name) => {
                stream.done = true;
                stream.buf = Vec::new();
                name
            }
            Parsed::NeedMore if !truncated && stream.buf.len() < tls::MAX_HELLO => None,
            Parsed::NeedMore | Parsed::Nothing => {
                stream.done = true;
                stream.buf = Vec::new();
                None
            }
        }
    }

    /// Feeds a DNS answer received by socket `cookie`; `owner` is the process that used
    /// that socket, when brokerwatch saw it.
    pub fn on_dns_answer(&mut self, rec: &PacketRecord, owner: Option<u32>) -> usize {
        let resolutions = dns::parse_answer(&rec.data, rec.proto == Proto::Tcp);
        for r in &resolutions {
            self.dns
                .insert(owner, rec.header.cgroup_id, r, rec.header.ts_ns);
        }
        resolutions.len()
    }
}

enum Parsed {
    Done(Option<WireName>),
    NeedMore,
    Nothing,
}

fn name_tcp_stream(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => Parsed::NeedMore,
        Some(0x16) => match tls::client_hello(buf) {
            tls::Hello::NeedMore => Parsed::NeedMore,
            tls::Hello::NotTls => Parsed::Nothing,
            tls::Hello::ClientHello { sni, ech } => Parsed::Done(sni.map(|name| WireName {
                name,
                source: NameSource::Sni,
                ech,
            })),
        },
        Some(b) if b.is_ascii_uppercase() => match http::request_host(buf) {
            http::Head::NeedMore => Parsed::NeedMore,
            http::Head::NotHttp => Parsed::Nothing,
            http::Head::Request { host } => Parsed::Done(
                host.filter(|h| h.parse::<IpAddr>().is_err())
                    .map(|name| WireName {
                        name,
                        source: NameSource::Http,
                        ech: false,
                    }),
            ),
        },
        _ => Parsed::Nothing,
    }
}

/// Well-known DNS-over-HTTPS resolvers (addresses and names). A connection to one means the
/// app's DNS is encrypted, and its names can only come from SNI.
pub const DOH_RESOLVERS: &[&str] = &[
    "1.1.1.1",
    "1.0.0.1",
    "2606:4700:4700::1111",
    "2606:4700:4700::1001",
    "8.8.8.8",
    "8.8.4.4",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
    "9.9.9.9",
    "149.112.112.112",
    "2620:fe::fe",
    "94.140.14.14",
    "94.140.15.15",
    "208.67.222.222",
    "208.67.220.220",
    "45.90.28.0",
];

pub const DOH_NAMES: &[&str] = &[
    "cloudflare-dns.com",
    "mozilla.cloudflare-dns.com",
    "dns.google",
    "dns.quad9.net",
    "doh.opendns.com",
    "dns.adguard-dns.com",
    "dns.nextdns.io",
    "doh.cleanbrowsing.org",
];

/// Whether a connection is encrypted DNS (DoT on 853, or a known DoH resolver on 443).
pub fn encrypted_dns(addr: IpAddr, port: u16, name: Option<&str>) -> Option<&'static str> {
    if port == 853 {
        return Some("DNS-over-TLS (port 853): this app's DNS lookups are encrypted and invisible");
    }
    let doh_name = name.is_some_and(|n| {
        DOH_NAMES
            .iter()
            .any(|d| n == *d || n.ends_with(&format!(".{d}")))
    });
    let doh_addr = DOH_RESOLVERS
        .iter()
        .any(|a| a.parse::<IpAddr>().ok() == Some(addr));
    ((port == 443 || port == 8443) && (doh_name || doh_addr))
        .then_some("DNS-over-HTTPS resolver: this app's DNS lookups are encrypted and invisible")
}

#[cfg(test)]
mod tests {
    use monitor_common::EventHeader;

    use super::*;

    fn packet(
        kind: EventKind,
        proto: Proto,
        cookie: u64,
        data: &[u8],
        orig_len: u32,
    ) -> PacketRecord {
        PacketRecord {
            header: EventHeader {
                kind: kind as u32,
                tgid: 1,
                tid: 1,
                uid: 0,
                ts_ns: 1_000,
                cgroup_id: 7,
            },
            kind,
            cookie,
            proto,
            src: "127.0.0.1".parse().unwrap(),
            src_port: 53,
            dst_port: 443,
            seq: 0,
            orig_len,
            data: data.to_vec(),
        }
    }

    #[test]
    fn sni_across_two_captures() {
        let hello = tls::tests::client_hello_bytes("split.vendor.test", 3000);
        let mut n = Namer::default();
        let (a, b) = hello.split_at(1500);
        assert_eq!(
            n.on_payload(&packet(
                EventKind::Payload,
                Proto::Tcp,
                9,
                a,
                a.len() as u32
            )),
            None
        );
        let got = n
            .on_payload(&packet(
                EventKind::Payload,
                Proto::Tcp,
                9,
                b,
                b.len() as u32,
            ))
            .unwrap();
        assert_eq!(
            (got.name.as_str(), got.source),
            ("split.vendor.test", NameSource::Sni)
        );
        // Later segments of the same socket are ignored.
        assert_eq!(
            n.on_payload(&packet(
                EventKind::Payload,
                Proto::Tcp,
                9,
                b,
                b.len() as u32
            )),
            None
        );
    }

    #[test]
    fn http_host_but_not_a_literal_ip() {
        let mut n = Namer::default();
        let req = b"GET / HTTP/1.1\r\nHost: plain.vendor.test\r\n\r\n";
        let got = n
            .on_payload(&packet(
                EventKind::Payload,
                Proto::Tcp,
                1,
                req,
                req.len() as u32,
            ))
            .unwrap();
        assert_eq!(got.source, NameSource::Http);
        let req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
        assert_eq!(
            n.on_payload(&packet(
                EventKind::Payload,
                Proto::Tcp,
                2,
                req,
                req.len() as u32
            )),
            None
        );
    }

    #[test]
    fn dns_cache_per_process_then_cgroup_then_global_with_ttl_floor() {
        let mut n = Namer::default();
        let ans = dns::tests::answer_bytes();
        let rec = packet(EventKind::DnsAnswer, Proto::Udp, 5, &ans, ans.len() as u32);
        assert_eq!(n.on_dns_answer(&rec, Some(42)), 2);
        let ip: IpAddr = "127.0.0.3".parse().unwrap();
        let name = n.dns.lookup(42, 7, ip, 2_000).unwrap();
        assert_eq!(name.qname, "api.vendor.test");
        assert_eq!(name.chain.len(), 3);
        // Another process in another cgroup still gets the machine-wide answer.
        assert!(n.dns.lookup(43, 8, ip, 2_000).is_some());
        // TTL 300 s: gone after it.
        assert!(n
            .dns
            .lookup(42, 7, ip, 1_000 + 301 * 1_000_000_000)
            .is_none());
    }

    #[test]
    fn encrypted_dns_is_recognised() {
        let ip: IpAddr = "1.1.1.1".parse().unwrap();
        assert!(encrypted_dns(ip, 443, None).is_some());
        assert!(encrypted_dns("127.0.0.1".parse().unwrap(), 853, None).is_some());
        assert!(encrypted_dns("127.0.0.1".parse().unwrap(), 443, Some("dns.google")).is_some());
        assert!(encrypted_dns("127.0.0.1".parse().unwrap(), 443, Some("example.org")).is_none());
    }
}
