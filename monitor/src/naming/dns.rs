//! DNS messages to what brokerwatch needs: answers (name asked, CNAME chain, address, TTL),
//! names whose HTTPS/SVCB records offer Encrypted Client Hello, and the names a query asks.
//! simple-dns does the wire format. Pure: bounded by the message, never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::{
    rdata::{RData, SVCParam},
    Packet, PacketFlag, RCODE,
};

/// One address an answer gives for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The name the client asked for.
    pub qname: String,
    /// `qname` followed by every CNAME target, in order, ending at the name that owns the
    /// address record.
    pub chain: Vec<String>,
    pub addr: IpAddr,
    pub ttl: u32,
}

/// What DNS messages (one UDP datagram, or the length-prefixed messages of a TCP segment)
/// say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Addresses answers gave.
    pub resolutions: Vec<Resolution>,
    /// Names (asked, or on the CNAME chain) whose HTTPS or SVCB record carried an `ech`
    /// parameter, with the record's TTL.
    pub ech: Vec<(String, u32)>,
    /// Names that queries (not answers) asked for.
    pub queries: Vec<String>,
}

/// Parses DNS traffic received or sent over UDP (`tcp = false`) or one TCP segment holding
/// length-prefixed messages (`tcp = true`).
pub fn parse(data: &[u8], tcp: bool) -> Facts {
    let mut facts = Facts::default();
    if !tcp {
        parse_message(data, &mut facts);
        return facts;
    }
    let mut rest = data;
    while rest.len() >= 2 {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let Some(msg) = rest.get(2..2 + len) else {
            break;
        };
        parse_message(msg, &mut facts);
        rest = &rest[2 + len..];
    }
    facts
}

/// The addresses in DNS answers (see [`parse`]).
pub fn parse_answer(data: &[u8], tcp: bool) -> Vec<Resolution> {
    parse(data, tcp).resolutions
}

fn lower(s: String) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// Follows CNAMEs from `qname`, at most 16 steps (loops end there).
fn chain_of(qname: &str, cnames: &[(String, String)]) -> Vec<String> {
    let mut chain = vec![qname.to_owned()];
    let mut cur = qname.to_owned();
    for _ in 0..16 {
        match cnames.iter().find(|(from, _)| *from == cur) {
            Some((_, to)) if !chain.contains(to) => {
                chain.push(to.clone());
                cur = to.clone();
            }
            _ => break,
        }
    }
    chain
}

fn parse_message(data: &[u8], facts: &mut Facts) {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    if !packet.has_flags(PacketFlag::RESPONSE) {
        for q in packet.questions.iter().take(8) {
            let name = lower(q.qname.to_string());
            if super::is_host_name(&name) && !facts.queries.contains(&name) {
                facts.queries.push(name);
            }
        }
        return;
    }
    if packet.rcode() != RCODE::NoError {
        return;
    }
    let Some(q) = packet.questions.first() else {
        return;
    };
    let qname = lower(q.qname.to_string());
    let mut cnames = Vec::new();
    let mut addrs = Vec::new();
    let mut ech_owners = Vec::new();
    for rr in &packet.answers {
        let owner = lower(rr.name.to_string());
        match &rr.rdata {
            RData::CNAME(target) => cnames.push((owner, lower(target.0.to_string()))),
            RData::A(a) => addrs.push((owner, IpAddr::V4(Ipv4Addr::from(a.address)), rr.ttl)),
            RData::AAAA(a) => addrs.push((owner, IpAddr::V6(Ipv6Addr::from(a.address)), rr.ttl)),
            RData::HTTPS(simple_dns::rdata::HTTPS(svcb)) | RData::SVCB(svcb)
                if svcb
                    .iter_params()
                    .any(|p| matches!(p, SVCParam::Ech(e) if !e.is_empty())) =>
            {
                ech_owners.push((owner, rr.ttl));
            }
            _ => {}
        }
    }
    let chain = chain_of(&qname, &cnames);
    // Names that are not host names are never used, nor shown: anyone can make an app ask
    // for one (a name of terminal escapes, CNAMEd to a listed domain). The chain keeps its
    // valid names, so the listed domain still names the address.
    let valid: Vec<String> = chain
        .iter()
        .filter(|n| super::is_host_name(n))
        .cloned()
        .collect();
    let Some(asked) = valid.first().cloned() else {
        return;
    };
    for (owner, ttl) in ech_owners {
        if let Some(end) = chain.iter().position(|n| *n == owner) {
            for name in chain[..=end].iter().filter(|n| valid.contains(n)) {
                facts.ech.push((name.clone(), ttl));
            }
        }
    }
    let qname = if valid.contains(&qname) { qname } else { asked };
    facts
        .resolutions
        .extend(addrs.into_iter().filter_map(|(owner, addr, ttl)| {
            // The address belongs to the end of the chain (or to a name in it).
            let end = chain.iter().position(|n| *n == owner)?;
            let chain: Vec<String> = chain[..=end]
                .iter()
                .filter(|n| valid.contains(n))
                .cloned()
                .collect();
            (!chain.is_empty()).then(|| Resolution {
                qname: qname.clone(),
                chain,
                addr,
                ttl,
            })
        }));
}

#[cfg(test)]
pub(crate) mod tests {
    use simple_dns::{
        rdata::{A, AAAA, CNAME},
        Name, Packet, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE,
    };

    use super::*;

    /// A real-format answer: `api.vendor.test` CNAME `edge.cdn.test` CNAME
    /// `graph.facebook.com` A 127.0.0.3, AAAA ::1.
    pub(crate) fn answer_bytes() -> Vec<u8> {
        let mut p = Packet::new_reply(0x1234);
        p.questions.push(Question::new(
            Name::new_unchecked("api.vendor.test"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("api.vendor.test"),
            CLASS::IN,
            60,
            RData::CNAME(CNAME(Name::new_unchecked("edge.cdn.test"))),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("edge.cdn.test"),
            CLASS::IN,
            60,
            RData::CNAME(CNAME(Name::new_unchecked("Graph.Facebook.com"))),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("graph.facebook.com"),
            CLASS::IN,
            300,
            RData::A(A {
                address: u32::from(Ipv4Addr::new(127, 0, 0, 3)),
            }),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("graph.facebook.com"),
            CLASS::IN,
            300,
            RData::AAAA(AAAA {
                address: u128::from(Ipv6Addr::LOCALHOST),
            }),
        ));
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn cname_chain_to_addresses() {
        let r = parse_answer(&answer_bytes(), false);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].qname, "api.vendor.test");
        assert_eq!(
            r[0].chain,
            vec!["api.vendor.test", "edge.cdn.test", "graph.facebook.com"]
        );
        assert_eq!(r[0].addr, "127.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(r[0].ttl, 300);
        assert_eq!(r[1].addr, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn tcp_framing_with_two_messages() {
        let msg = answer_bytes();
        let mut tcp = Vec::new();
        for _ in 0..2 {
            tcp.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            tcp.extend_from_slice(&msg);
        }
        assert_eq!(parse_answer(&tcp, true).len(), 4);
        // A truncated second message yields the first only.
        assert_eq!(parse_answer(&tcp[..tcp.len() - 5], true).len(), 2);
    }

    #[test]
    fn queries_errors_and_garbage_give_nothing() {
        let mut query = Packet::new_query(1);
        query.questions.push(Question::new(
            Name::new_unchecked("a.test"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        assert!(parse_answer(&query.build_bytes_vec().unwrap(), false).is_empty());
        let bytes = answer_bytes();
        for cut in 0..bytes.len() {
            let _ = parse_answer(&bytes[..cut], false);
            let _ = parse_answer(&bytes[..cut], true);
        }
        assert!(parse_answer(&[0xff; 64], false).is_empty());
    }

    /// dnsmasq's answer for `api.vendor.test` (CNAME to `edge.tracker.test`, A 127.0.0.3,
    /// TTL 0), captured in the test lab: compressed names.
    #[test]
    fn dnsmasq_answer_with_compression() {
        let hex = "123485800001000200000000036170690676656e646f7204746573740000010001c00c00050001000000000013046564676507747261636b6572047465737400c02d000100010000000000047f000003";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let r = parse_answer(&bytes, false);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].chain, vec!["api.vendor.test", "edge.tracker.test"]);
        assert_eq!(r[0].addr, "127.0.0.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn dns_queries_give_their_names_and_https_records_their_ech() {
        let mut query = Packet::new_query(7);
        query.questions.push(Question::new(
            Name::new_unchecked("Graph.Facebook.com"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        let facts = parse(&query.build_bytes_vec().unwrap(), false);
        assert_eq!(facts.queries, vec!["graph.facebook.com"]);
        assert!(facts.resolutions.is_empty());

        let https = |ech: &[u8]| {
            let mut p = Packet::new_reply(9);
            p.questions.push(Question::new(
                Name::new_unchecked("meet.vendor.test"),
                QTYPE::TYPE(TYPE::HTTPS),
                QCLASS::CLASS(CLASS::IN),
                false,
            ));
            let mut svcb = simple_dns::rdata::SVCB::new(1, Name::new_unchecked("."));
            svcb.set_alpn(&["h3".try_into().unwrap()]);
            if !ech.is_empty() {
                svcb.set_param(SVCParam::Ech(ech.to_vec().into()));
            }
            p.answers.push(ResourceRecord::new(
                Name::new_unchecked("meet.vendor.test"),
                CLASS::IN,
                120,
                RData::HTTPS(simple_dns::rdata::HTTPS(svcb)),
            ));
            parse(&p.build_bytes_vec().unwrap(), false)
        };
        assert_eq!(
            https(&[0, 4, 1, 2, 3, 4]).ech,
            vec![("meet.vendor.test".to_owned(), 120)]
        );
        assert!(
            https(&[]).ech.is_empty(),
            "an HTTPS record without ech offers none"
        );
    }

    // Issue 22, item 2: a watched process asked its own DNS server for a name of terminal
    // escapes (clear screen, an OSC title, hidden text) CNAMEd to a listed domain; the
    // name reached `history` and `report` raw.
    #[test]
    fn names_that_are_not_host_names_are_dropped_and_the_chain_keeps_the_listed_one() {
        let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{1b}[8m.evil.test";
        let mut p = Packet::new_reply(7);
        p.questions.push(Question::new(
            Name::new_unchecked(evil),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked(evil),
            CLASS::IN,
            60,
            RData::CNAME(CNAME(Name::new_unchecked("x.rlcdn.com"))),
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked("x.rlcdn.com"),
            CLASS::IN,
            60,
            RData::A(A {
                address: u32::from(Ipv4Addr::new(127, 0, 0, 4)),
            }),
        ));
        let r = parse_answer(&p.build_bytes_vec().unwrap(), false);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].qname, "x.rlcdn.com");
        assert_eq!(r[0].chain, ["x.rlcdn.com"]);
        // A query for such a name names nothing either.
        let mut q = Packet::new_query(8);
        q.questions.push(Question::new(
            Name::new_unchecked(evil),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        assert!(parse(&q.build_bytes_vec().unwrap(), false)
            .queries
            .is_empty());
    }

    #[test]
    fn cname_loops_end() {
        let cn = vec![
            ("a".to_owned(), "b".to_owned()),
            ("b".to_owned(), "a".to_owned()),
        ];
        assert_eq!(chain_of("a", &cn), vec!["a", "b"]);
    }
}
