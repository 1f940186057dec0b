//! Naming a QUIC socket from its sibling (issue 24, item 3).

use super::{tests::*, *};

fn udp_connect(tgid: u32, cookie: u64, ts: u64) -> Record {
    let Record::Sock(mut s) = connect(tgid, ts, 443) else {
        unreachable!()
    };
    s.cookie = cookie;
    s.proto = Proto::Udp;
    Record::Sock(s)
}

fn quic_name(e: &mut Engine<NoProc>, cookie: u64, name: &str) {
    e.name_socket(
        cookie,
        WireName {
            name: name.into(),
            source: NameSource::Quic,
            ech: false,
            partial: false,
        },
    );
}

// Issue 24, item 3.
#[test]
fn engine_a_quic_socket_whose_name_never_left_is_named_from_its_sibling() {
    let s = 1_000_000_000;
    let mut e = Engine::with_source(NoProc);
    // The first socket's Initial carried the name; the second's never left whole.
    e.handle(&udp_connect(7, 1, s));
    quic_name(&mut e, 1, "closed.vendor.test");
    e.handle(&udp_connect(7, 2, 2 * s));
    let rows = e.connections();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (k, agg) = &rows[0];
    assert_eq!(k.domain.as_deref(), Some("closed.vendor.test"));
    assert_eq!((agg.count, agg.sibling_named), (2, 1));
    // A third socket whose own Initial names it is not counted as named by a sibling.
    e.handle(&udp_connect(7, 3, 3 * s));
    quic_name(&mut e, 3, "closed.vendor.test");
    let rows = e.connections();
    assert_eq!((rows[0].1.count, rows[0].1.sibling_named), (3, 1));
    // Not another process's, not another port's, not after the window, not TCP.
    e.handle(&udp_connect(8, 4, 4 * s));
    let Record::Sock(mut other_port) = udp_connect(7, 5, 4 * s) else {
        unreachable!()
    };
    other_port.port = 8443;
    e.handle(&Record::Sock(other_port));
    e.handle(&udp_connect(7, 6, 3 * s + SIBLING_WINDOW_NS + 1));
    let Record::Sock(mut tcp) = udp_connect(7, 7, 4 * s) else {
        unreachable!()
    };
    tcp.proto = Proto::Tcp;
    e.handle(&Record::Sock(tcp));
    let unnamed = e
        .connections()
        .iter()
        .filter(|(k, _)| k.domain.is_none())
        .map(|(k, a)| (k.pid, k.proto, k.port, a.count))
        .collect::<Vec<_>>();
    assert_eq!(
        unnamed,
        [
            (7, Proto::Tcp, 443, 1),
            (7, Proto::Udp, 8443, 1),
            (8, Proto::Udp, 443, 1),
            (7, Proto::Udp, 443, 1)
        ]
    );
}

// Issue 24, item 3: a socket named from a sibling whose own bytes then name it otherwise
// moves, and its row no longer counts it as named by a sibling.
#[test]
fn engine_a_sibling_named_socket_that_names_itself_otherwise_moves_and_two_names_name_none() {
    let s = 1_000_000_000;
    let mut e = Engine::with_source(NoProc);
    e.handle(&udp_connect(7, 1, s));
    quic_name(&mut e, 1, "a.vendor.test");
    e.handle(&udp_connect(7, 2, 2 * s));
    quic_name(&mut e, 2, "b.vendor.test");
    let rows: Vec<_> = e
        .connections()
        .iter()
        .map(|(k, a)| {
            (
                k.domain.as_deref().unwrap().to_owned(),
                a.count,
                a.sibling_named,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("a.vendor.test".into(), 1, 0),
            ("b.vendor.test".into(), 1, 0)
        ]
    );
    // Two names read there a moment ago: a socket without its own could be either.
    e.handle(&udp_connect(7, 3, 3 * s));
    let unnamed = e
        .connections()
        .iter()
        .filter(|(k, _)| k.domain.is_none())
        .count();
    assert_eq!(unnamed, 1);
    // Once the mix is old, the last name stands again.
    e.handle(&udp_connect(7, 4, 3 * s + SIBLING_WINDOW_NS));
    quic_name(&mut e, 4, "b.vendor.test");
    e.handle(&udp_connect(7, 5, 3 * s + SIBLING_WINDOW_NS + 1));
    let b = e
        .connections()
        .into_iter()
        .find(|(k, _)| k.domain.as_deref() == Some("b.vendor.test"))
        .unwrap();
    assert_eq!((b.1.count, b.1.sibling_named), (3, 1));
}
