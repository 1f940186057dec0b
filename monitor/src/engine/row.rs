//! Connection rows: the key that aggregates a process's connections and what a row holds.

use std::{net::IpAddr, sync::Arc};

use monitor_common::EventKind;
use serde::Serialize;

use crate::{
    kernel::wire::{Proto, SockRecord},
    naming::{DnsName, NameSource},
};

/// How a connection's destination was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `connect()` (TCP, or UDP that connects first).
    #[default]
    Connect,
    /// A UDP send with an explicit destination, without `connect()`.
    Send,
}

/// Key of one aggregated connection row: connections of one process to one address and
/// port meant for one name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub pid: u32,
    pub proto: Proto,
    pub dst: IpAddr,
    pub port: u16,
    /// The name the application meant (SNI, QUIC SNI, Host, or DNS), if known.
    pub domain: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAgg {
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub first_cookie: u64,
    pub uid: u32,
    pub comm: String,
    pub thread_comm: String,
    /// How the destination was given.
    pub via: Via,
    /// Where `ConnKey::domain` came from.
    pub domain_source: Option<NameSource>,
    /// The DNS name and CNAME chain the process received for the address, if any.
    pub dns: Option<Arc<DnsName>>,
    /// Encrypted Client Hello in use: the ClientHello carried the extension and the
    /// name's HTTPS record offered ECH, or the outer SNI differs from the name resolved.
    /// (Browsers send a GREASE ECH extension on every connection: that alone is not it.)
    pub ech: bool,
    /// The name came from a ClientHello whose rest was never sent.
    pub name_partial: bool,
    /// Some connection of the row sent bytes (a first payload was captured).
    pub sent: bool,
    /// For DNS rows (ports 53 and 5353): the names the queries asked (bounded).
    pub dns_queries: Vec<String>,
    /// Network namespace cookie of the first socket.
    pub netns: u64,
    /// Calls of the row the kernel denied (blocking).
    pub blocked: u64,
    /// Connections of the row named from a sibling: an earlier UDP socket of the same
    /// process to the same address and port whose QUIC ClientHello carried the name (their
    /// own never left whole, e.g. a closed port answered the first Initial).
    pub sibling_named: u64,
    /// The connection was open before brokerwatch started (found among the process's
    /// sockets at start, not seen connecting).
    pub before_start: bool,
}

impl ConnAgg {
    /// The row a socket's first call opens: named by `dns`, else by a sibling's QUIC name
    /// (`sibling`), else unnamed.
    pub(super) fn first(
        r: &SockRecord,
        dns: Option<Arc<DnsName>>,
        sibling: bool,
        blocked: u64,
    ) -> Self {
        let ts = r.header.ts_ns;
        ConnAgg {
            count: 1,
            first_ns: ts,
            last_ns: ts,
            first_cookie: r.cookie,
            uid: r.header.uid,
            comm: r.comm.clone(),
            thread_comm: r.thread_comm.clone(),
            via: match r.kind {
                EventKind::UdpSend => Via::Send,
                _ => Via::Connect,
            },
            domain_source: match (&dns, sibling) {
                (Some(d), _) if d.from_call => Some(NameSource::Getaddrinfo),
                (Some(_), _) => Some(NameSource::Dns),
                (None, true) => Some(NameSource::Quic),
                (None, false) => None,
            },
            dns,
            ech: false,
            name_partial: false,
            sent: false,
            dns_queries: Vec::new(),
            netns: r.netns,
            blocked,
            sibling_named: u64::from(sibling),
            before_start: false,
        }
    }
}
