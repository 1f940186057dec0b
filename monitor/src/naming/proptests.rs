//! Property tests of the naming parsers: arbitrary bytes never panic, and what a real
//! encoder writes is read back exactly.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use simple_dns::{
    rdata::{RData, A, CNAME},
    Name, Packet, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE,
};

use super::{dns, http, quic, tls};

fn label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,20}[a-z0-9]"
}

fn domain() -> impl Strategy<Value = String> {
    proptest::collection::vec(label(), 2..5).prop_map(|l| l.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_are_safe(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = dns::parse_answer(&data, false);
        let _ = dns::parse_answer(&data, true);
        let _ = tls::client_hello(&data);
        let _ = http::request_host(&data);
        let _ = quic::parse_datagram(&data, None);
        let _ = quic::CryptoStream::default().push_datagram(&data);
    }

    #[test]
    fn tls_prefixed_noise_is_safe(tail in proptest::collection::vec(any::<u8>(), 0..600), len in 0u16..1200) {
        let mut data = vec![0x16, 0x03, 0x01];
        data.extend_from_slice(&len.to_be_bytes());
        data.push(1);
        data.extend_from_slice(&tail);
        let _ = tls::client_hello(&data);
    }

    #[test]
    fn sni_round_trips_at_any_split(name in domain(), pad in 0usize..4000, split in 1usize..4000) {
        let hello = tls::tests::client_hello_bytes(&name, pad);
        let split = split.min(hello.len() - 1);
        prop_assert_eq!(tls::client_hello(&hello[..split]), tls::Hello::NeedMore);
        prop_assert_eq!(tls::client_hello(&hello), tls::Hello::ClientHello { sni: Some(name), ech: false });
    }

    #[test]
    fn dns_chains_round_trip(q in domain(), hops in proptest::collection::vec(domain(), 0..4), ip in any::<u32>(), ttl in any::<u32>()) {
        let mut p = Packet::new_reply(1);
        p.questions.push(Question::new(Name::new_unchecked(&q), QTYPE::TYPE(TYPE::A), QCLASS::CLASS(CLASS::IN), false));
        let mut expected = vec![q.clone()];
        for h in &hops {
            if !expected.contains(h) {
                expected.push(h.clone());
            }
        }
        for pair in expected.windows(2) {
            p.answers.push(ResourceRecord::new(Name::new_unchecked(&pair[0]), CLASS::IN, 60, RData::CNAME(CNAME(Name::new_unchecked(&pair[1])))));
        }
        let last = expected.last().unwrap();
        p.answers.push(ResourceRecord::new(Name::new_unchecked(last), CLASS::IN, ttl, RData::A(A { address: ip })));
        let bytes = p.build_bytes_vec().unwrap();
        let r = dns::parse_answer(&bytes, false);
        prop_assert_eq!(r.len(), 1);
        prop_assert_eq!(&r[0].chain, &expected);
        prop_assert_eq!(r[0].addr, IpAddr::V4(Ipv4Addr::from(ip)));
        prop_assert_eq!(r[0].ttl, ttl);
    }

    #[test]
    fn http_host_round_trips(host in domain(), port in proptest::option::of(1u16..65535)) {
        let h = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
        let req = format!("GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: {h}\r\n\r\n");
        prop_assert_eq!(http::request_host(req.as_bytes()), http::Head::Request { host: Some(host) });
    }
}
