//! Naming connections from DNS answers: whose answer names what.

use super::{tests::*, *};

#[test]
fn engine_dns_rows_keep_the_names_asked_and_payloads_mark_rows_as_sent() {
    let mut e = Engine::with_source(NoProc);
    let Record::Sock(mut s) = connect(80, 1, 53) else {
        unreachable!()
    };
    s.proto = Proto::Udp;
    s.cookie = 500;
    e.handle(&Record::Sock(s));
    let mut q = simple_dns::Packet::new_query(1);
    q.questions.push(simple_dns::Question::new(
        simple_dns::Name::new_unchecked("graph.facebook.com"),
        simple_dns::QTYPE::TYPE(simple_dns::TYPE::A),
        simple_dns::QCLASS::CLASS(simple_dns::CLASS::IN),
        false,
    ));
    let data = q.build_bytes_vec().unwrap();
    e.handle(&Record::Packet(PacketRecord {
        header: hdr(EventKind::Payload, 0, 2),
        kind: EventKind::Payload,
        cookie: 500,
        proto: Proto::Udp,
        src: "0.0.0.0".parse().unwrap(),
        src_port: 40000,
        dst_port: 53,
        seq: 0,
        orig_len: data.len() as u32,
        netns: 0,
        data,
    }));
    let rows = e.connections();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].0.domain, None,
        "the resolver is not named after the query"
    );
    assert_eq!(rows[0].1.dns_queries, vec!["graph.facebook.com"]);
    assert!(rows[0].1.sent);
}

/// A connection to 127.0.0.3 that the process resolved as `api.vendor.test` (the DNS
/// fixture), then its ClientHello with an ECH extension naming `sni`.
fn ech_row(sni: &str, https_ech: bool) -> ConnAgg {
    let mut e = Engine::with_source(NoProc);
    e.handle(&dns_fixture_answer(7));
    if https_ech {
        let facts = crate::naming::dns::Facts {
            ech: vec![("api.vendor.test".into(), 300)],
            ..Default::default()
        };
        e.namer.dns.insert(
            Receiver {
                pid: Some(7),
                cgroup: 5,
                uid: 1000,
                netns: NS,
            },
            &facts,
            1,
        );
    }
    let Record::Sock(mut s) = connect(7, 10, 443) else {
        unreachable!()
    };
    s.cookie = 1;
    s.dst = "127.0.0.3".parse().unwrap();
    e.handle(&Record::Sock(s));
    e.name_socket(
        1,
        WireName {
            name: sni.into(),
            source: NameSource::Sni,
            ech: true,
            partial: false,
        },
    );
    e.connections()[0].1.clone()
}

#[test]
fn engine_ech_is_in_use_only_on_evidence_never_from_a_name_mismatch_alone() {
    // Issue 10: browsers send a GREASE ECH extension everywhere; with the real name as SNI
    // and no ECH offer, nothing is hidden.
    assert!(!ech_row("api.vendor.test", false).ech);
    // The name's HTTPS record offered ECH: the SNI may be the outer name.
    assert!(ech_row("api.vendor.test", true).ech);
    assert!(ech_row("public.ech-front.test", true).ech);
    // Issue 24, item 2: an SNI that differs from the name resolved proves nothing (many
    // names share an address): no ECH claimed without an offer.
    assert!(!ech_row("public.ech-front.test", false).ech);
    // A provider's known public ECH name is evidence by itself.
    assert!(ech_row("cloudflare-ech.com", false).ech);
}

// Issue 24, item 1: a process resolved two names to one address and connected with the
// first as SNI; the row told the second as its DNS name, as if DNS and SNI disagreed.
#[test]
fn engine_a_shared_address_keeps_the_dns_answer_that_named_the_connection() {
    let mut e = Engine::with_source(NoProc);
    let answer = |qname: &str| crate::naming::dns::Facts {
        resolutions: vec![crate::naming::dns::Resolution {
            qname: qname.into(),
            chain: vec![qname.into()],
            addr: "203.0.113.7".parse().unwrap(),
            ttl: 300,
        }],
        ..Default::default()
    };
    let me = Receiver {
        pid: Some(7),
        cgroup: 5,
        uid: 1000,
        netns: NS,
    };
    e.namer.dns.insert(me, &answer("tls.meetingvendor.test"), 1);
    e.namer.dns.insert(me, &answer("sales.linkedin.com"), 2);
    let Record::Sock(mut s) = connect(7, 10, 443) else {
        unreachable!()
    };
    s.cookie = 1;
    s.dst = "203.0.113.7".parse().unwrap();
    e.handle(&Record::Sock(s));
    e.name_socket(
        1,
        WireName {
            name: "tls.meetingvendor.test".into(),
            source: NameSource::Sni,
            ech: false,
            partial: false,
        },
    );
    let rows = e.connections();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (k, agg) = &rows[0];
    assert_eq!(k.domain.as_deref(), Some("tls.meetingvendor.test"));
    assert_eq!(
        agg.dns.as_ref().map(|d| d.qname.as_str()),
        Some("tls.meetingvendor.test"),
        "the answer that named it, not the latest for the address"
    );
}

// The daemon's store keeps every connection: repeats, renames and rows a rename emptied
// must all reach it.

#[test]
fn engine_getaddrinfo_results_name_connections_without_hiding_dns_answers() {
    use crate::kernel::wire::ResolvedRecord;
    let resolved = |tgid: u32, name: &str, addr: &str| {
        Record::Resolved(ResolvedRecord {
            header: hdr(EventKind::Resolved, tgid, 5),
            name: name.into(),
            addrs: vec![addr.parse().unwrap()],
        })
    };
    let connect_to = |e: &mut Engine<NoProc>, tgid: u32, cookie: u64, dst: &str| {
        let Record::Sock(mut s) = connect(tgid, 10, 443) else {
            unreachable!()
        };
        s.cookie = cookie;
        s.dst = dst.parse().unwrap();
        e.handle(&Record::Sock(s));
    };
    let mut e = Engine::with_source(NoProc);
    e.handle(&resolved(7, "hosts.only.test", "127.0.0.11"));
    e.handle(&resolved(7, "127.0.0.12", "127.0.0.12"));
    connect_to(&mut e, 7, 1, "127.0.0.11");
    connect_to(&mut e, 7, 2, "127.0.0.12");
    // The DNS fixture: api.vendor.test -> CNAME edge.tracker.test -> 127.0.0.3; then the
    // same name from getaddrinfo, which must not shadow the chain.
    e.handle(&dns_fixture_answer(7));
    e.handle(&resolved(7, "api.vendor.test", "127.0.0.3"));
    connect_to(&mut e, 7, 3, "127.0.0.3");
    let rows = e.connections();
    let row = |dst: &str| {
        rows.iter()
            .find(|(k, _)| k.dst == dst.parse::<IpAddr>().unwrap())
            .unwrap()
    };
    let (k, a) = row("127.0.0.11");
    assert_eq!(k.domain.as_deref(), Some("hosts.only.test"));
    assert_eq!(a.domain_source, Some(NameSource::Getaddrinfo));
    assert_eq!(row("127.0.0.12").0.domain, None, "a literal names nothing");
    let (k, a) = row("127.0.0.3");
    assert_eq!(k.domain.as_deref(), Some("api.vendor.test"));
    assert_eq!(a.domain_source, Some(NameSource::Dns));
    let chain = &a.dns.as_ref().unwrap().chain;
    assert!(
        chain.len() > 1,
        "the answer's CNAME chain is kept: {chain:?}"
    );
}

// A DNS answer is read where the packet arrives (any process may be current then): it
// belongs to the process whose socket asked, and names that process's connections only.
#[test]
fn engine_a_dns_answer_names_the_connections_of_the_process_whose_socket_asked() {
    let mut e = Engine::with_source(NoProc);
    let on = |pid: u32, cookie: u64, ts: u64, dst: &str, port: u16| {
        let Record::Sock(mut s) = connect(pid, ts, port) else {
            unreachable!()
        };
        s.cookie = cookie;
        s.dst = dst.parse().unwrap();
        Record::Sock(s)
    };
    // Process 100 asks the resolver on socket 99; a process of another cgroup is current
    // when the answer arrives.
    e.handle(&on(100, 99, 5, "127.0.0.53", 53));
    let Record::Packet(mut answer) = dns_fixture_answer(777) else {
        unreachable!()
    };
    answer.header.cgroup_id = 6;
    e.handle(&Record::Packet(answer));
    e.handle(&on(100, 1, 10, "127.0.0.3", 443));
    // Process 200 (same user and cgroup, no question of its own) connects there too.
    e.handle(&on(200, 2, 20, "127.0.0.3", 443));
    let domain_of = |pid: u32| {
        e.connections()
            .into_iter()
            .find(|(k, _)| k.pid == pid && k.port == 443)
            .map(|(k, _)| k.domain.as_deref().map(str::to_owned))
    };
    assert_eq!(domain_of(100), Some(Some("api.vendor.test".into())));
    assert_eq!(domain_of(200), Some(None));
}
