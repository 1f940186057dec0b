//! Naming destinations: which name an application meant when it connected to an address.
//!
//! Sources, best first: the TLS ClientHello's SNI, the QUIC Initial's SNI, the HTTP `Host`
//! header (all from the connection's own first bytes), then the DNS answers the process (or
//! its cgroup, or anyone on the machine) received for the address. Parsers are pure
//! functions over bytes in the submodules; this module keeps the bounded state.

mod cache;
pub mod dns;
pub mod http;
#[cfg(test)]
mod proptests;
pub mod quic;
mod resolvers;
pub mod tls;

use std::net::IpAddr;

pub use cache::{is_private, Asker, DnsCache, Receiver, TTL_FLOOR_NS};
use monitor_common::EventKind;
pub use resolvers::{encrypted_dns, DOH_NAMES, DOH_RESOLVERS};

use crate::{
    bounded::BoundedLru,
    kernel::wire::{PacketRecord, Proto},
};

/// Ports of plain DNS (and multicast DNS): their first payloads are queries, and their
/// rows are named by what they asked.
pub const DNS_QUERY_PORTS: [u16; 2] = [53, 5353];

/// Whether `name` looks like a DNS host name: letters, digits, `-` and `_` in labels of 1
/// to 63 bytes, dots between labels (one trailing dot allowed), at most 253 bytes. Names
/// from DNS answers, SNI and Host headers that are not are never used: anyone can make a
/// watched app ask for one, and they are shown to administrators.
pub fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

/// Public names that providers put in their ECH configurations (the outer SNI of every
/// ECH connection to them): an ECH extension with one of these as SNI is real ECH.
pub const KNOWN_ECH_FRONTS: &[&str] = &["cloudflare-ech.com"];

/// Whether `name` is a provider's known public ECH name ([`KNOWN_ECH_FRONTS`]).
pub fn is_known_ech_front(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    KNOWN_ECH_FRONTS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
}

/// Where a name came from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NameSource {
    Sni,
    Quic,
    Http,
    Dns,
    /// The app's own `getaddrinfo()` call (no DNS packet reached it: `nss-resolve`,
    /// `/etc/hosts`, a resolver speaking DNS over TLS).
    Getaddrinfo,
}

impl NameSource {
    /// The source `as_str` names.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Sni,
            Self::Quic,
            Self::Http,
            Self::Dns,
            Self::Getaddrinfo,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NameSource::Sni => "sni",
            NameSource::Quic => "quic",
            NameSource::Http => "http",
            NameSource::Dns => "dns",
            NameSource::Getaddrinfo => "getaddrinfo",
        }
    }
}

/// A name learned from DNS for an address: what was asked and the CNAME chain to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    pub qname: String,
    pub chain: Vec<String>,
    /// Learned from the app's own `getaddrinfo()` call rather than a DNS answer.
    pub from_call: bool,
}

/// A name found in a connection's own bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireName {
    pub name: String,
    pub source: NameSource,
    /// The ClientHello carried an Encrypted Client Hello extension (real, or the GREASE
    /// one browsers always send): `name` may be only the outer, public name.
    pub ech: bool,
    /// Found whole inside a ClientHello whose rest was never sent.
    pub partial: bool,
}

/// What a captured payload tells about its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// The name the connection was meant for.
    Wire(WireName),
    /// The names a DNS query asked.
    Queries(Vec<String>),
}

#[derive(Debug, Default)]
struct Stream {
    buf: Vec<u8>,
    quic: Option<quic::CryptoStream>,
    /// A partial QUIC server name was reported already.
    partial_sent: bool,
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
    /// Feeds one first-payload capture; returns what the bytes say once they say it.
    pub fn on_payload(&mut self, rec: &PacketRecord) -> Option<Named> {
        if rec.kind != EventKind::Payload {
            return None;
        }
        if DNS_QUERY_PORTS.contains(&rec.dst_port) {
            let queries = dns::parse(&rec.data, rec.proto == Proto::Tcp).queries;
            return (!queries.is_empty()).then_some(Named::Queries(queries));
        }
        let stream = self.streams.get_or_insert_mut(rec.cookie, Stream::default);
        if stream.done {
            return None;
        }
        if rec.proto == Proto::Udp {
            // Each datagram stands alone; a truncated one cannot be authenticated.
            let crypto = stream.quic.get_or_insert_with(quic::CryptoStream::default);
            let Some(hello) = crypto.push_datagram(&rec.data) else {
                // Not complete (yet): a server name already whole in what came is partial.
                if stream.partial_sent {
                    return None;
                }
                let name = crypto.partial_server_name()?;
                stream.partial_sent = true;
                return Some(Named::Wire(WireName {
                    name,
                    source: NameSource::Quic,
                    ech: false,
                    partial: true,
                }));
            };
            stream.done = true;
            stream.quic = None;
            return match hello {
                tls::Hello::ClientHello { sni, ech } => sni.map(|name| {
                    Named::Wire(WireName {
                        name,
                        source: NameSource::Quic,
                        ech,
                        partial: false,
                    })
                }),
                _ => None,
            };
        }
        stream.buf.extend_from_slice(&rec.data);
        let truncated = (rec.data.len() as u32) < rec.orig_len;
        let result = name_tcp_stream(&stream.buf);
        match result {
            Parsed::Done(name) => {
                stream.done = true;
                stream.buf = Vec::new();
                name.map(Named::Wire)
            }
            Parsed::NeedMore if !truncated && stream.buf.len() < tls::MAX_HELLO => None,
            Parsed::NeedMore | Parsed::Nothing => {
                stream.done = true;
                stream.buf = Vec::new();
                None
            }
        }
    }

    /// Feeds a DNS answer received by `from`; returns how many addresses it named.
    pub fn on_dns_answer(&mut self, rec: &PacketRecord, from: Receiver) -> usize {
        let facts = dns::parse(&rec.data, rec.proto == Proto::Tcp);
        self.dns.insert(from, &facts, rec.header.ts_ns);
        facts.resolutions.len()
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
                partial: false,
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
                        partial: false,
                    }),
            ),
        },
        _ => Parsed::Nothing,
    }
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
            netns: 1,
            data: data.to_vec(),
        }
    }

    fn payload(proto: Proto, cookie: u64, data: &[u8]) -> PacketRecord {
        packet(EventKind::Payload, proto, cookie, data, data.len() as u32)
    }

    fn wire(named: Option<Named>) -> Option<WireName> {
        match named {
            Some(Named::Wire(w)) => Some(w),
            _ => None,
        }
    }

    #[test]
    fn sni_across_two_captures() {
        let hello = tls::tests::client_hello_bytes("split.vendor.test", 3000);
        let mut n = Namer::default();
        let (a, b) = hello.split_at(1500);
        assert_eq!(n.on_payload(&payload(Proto::Tcp, 9, a)), None);
        let got = wire(n.on_payload(&payload(Proto::Tcp, 9, b))).unwrap();
        assert_eq!(
            (got.name.as_str(), got.source, got.partial),
            ("split.vendor.test", NameSource::Sni, false)
        );
        // Later segments of the same socket are ignored.
        assert_eq!(n.on_payload(&payload(Proto::Tcp, 9, b)), None);
    }

    #[test]
    fn http_host_but_not_a_literal_ip() {
        let mut n = Namer::default();
        let req = b"GET / HTTP/1.1\r\nHost: plain.vendor.test\r\n\r\n";
        let got = wire(n.on_payload(&payload(Proto::Tcp, 1, req))).unwrap();
        assert_eq!(got.source, NameSource::Http);
        let req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
        assert_eq!(n.on_payload(&payload(Proto::Tcp, 2, req)), None);
    }

    #[test]
    fn naming_dns_queries_name_resolver_rows_by_what_they_asked() {
        // Issue 10: a DNS query is named by its questions, never left unnamed.
        let mut q = simple_dns::Packet::new_query(3);
        q.questions.push(simple_dns::Question::new(
            simple_dns::Name::new_unchecked("graph.facebook.com"),
            simple_dns::QTYPE::TYPE(simple_dns::TYPE::AAAA),
            simple_dns::QCLASS::CLASS(simple_dns::CLASS::IN),
            false,
        ));
        let bytes = q.build_bytes_vec().unwrap();
        let mut rec = payload(Proto::Udp, 4, &bytes);
        rec.dst_port = 53;
        let mut n = Namer::default();
        assert_eq!(
            n.on_payload(&rec),
            Some(Named::Queries(vec!["graph.facebook.com".into()]))
        );
    }

    #[test]
    fn dns_answers_name_addresses_for_their_receiver() {
        let mut n = Namer::default();
        let ans = dns::tests::answer_bytes();
        let rec = packet(EventKind::DnsAnswer, Proto::Udp, 5, &ans, ans.len() as u32);
        let from = Receiver {
            pid: Some(42),
            cgroup: 7,
            uid: 1000,
            netns: 1,
        };
        assert_eq!(n.on_dns_answer(&rec, from), 2);
        let ip: IpAddr = "127.0.0.3".parse().unwrap();
        let asker = Asker {
            pid: 42,
            cgroup: 7,
            uid: 1000,
            netns: 1,
        };
        let name = n.dns.lookup(asker, ip, 2_000).unwrap();
        assert_eq!(name.qname, "api.vendor.test");
        assert_eq!(name.chain.len(), 3);
        // TTL 300 s: gone after it.
        assert!(n
            .dns
            .lookup(asker, ip, 1_000 + 301 * 1_000_000_000)
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
