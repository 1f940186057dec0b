//! Tests of the inspector on whole writes, as the kernel hands them over.

use std::collections::HashMap;

use monitor_common::{EventHeader, EventKind, TlsLib, PLAIN_CHUNK};
use sha2::Digest as _;

use super::*;

const ALICE: u32 = 1000;
const BOB: u32 = 1001;

fn inspector() -> Inspector {
    let mut own = HashMap::new();
    own.insert(
        ALICE,
        vec![
            Identifier::email("alice@example.test").unwrap(),
            Identifier::name("Alice Liddell").unwrap(),
        ],
    );
    own.insert(BOB, vec![Identifier::email("bob@example.test").unwrap()]);
    let machine = vec![Identifier {
        kind: IdKind::MachineId,
        value: "0123456789abcdef0123456789abcdef".into(),
    }];
    Inspector::new(machine, own)
}

/// Feeds one write as the kernel chunks it (at most 4 chunks of 4 KiB).
fn write(i: &mut Inspector, uid: u32, conn: u64, bytes: &[u8]) {
    let header = EventHeader {
        kind: EventKind::Plaintext as u32,
        tgid: 42,
        tid: 42,
        uid,
        ts_ns: 1,
        cgroup_id: 0,
    };
    for (n, chunk) in bytes.chunks(PLAIN_CHUNK).take(4).enumerate() {
        i.feed(&PlainRecord {
            header,
            lib: TlsLib::OpenSsl,
            conn,
            total: bytes.len() as u64,
            offset: (n * PLAIN_CHUNK) as u32,
            readable: true,
            data: chunk.to_vec(),
        });
    }
}

fn found(i: &Inspector) -> Vec<(Option<&str>, Sent)> {
    i.leaks()
        .into_iter()
        .map(|(k, _)| (k.host.as_deref(), k.sent))
        .collect()
}

fn ident(kind: IdKind, form: Form, place: Place) -> Sent {
    Sent::Identifier { kind, form, place }
}

#[test]
fn inspect_a_json_post_in_one_write_names_identifier_form_place_and_host() {
    let mut i = inspector();
    let body = r#"{"email":"alice@example.test","name":"Alice Liddell"}"#;
    let req = format!("POST /match HTTP/1.1\r\nHost: sales.linkedin.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    write(&mut i, ALICE, 7, req.as_bytes());
    assert_eq!(
        found(&i),
        [
            (
                Some("sales.linkedin.com"),
                ident(IdKind::Email, Form::Plain, Place::Body)
            ),
            (
                Some("sales.linkedin.com"),
                ident(IdKind::Name, Form::Plain, Place::Body)
            ),
        ]
    );
}

#[test]
fn inspect_head_and_body_in_separate_writes_are_one_request() {
    // Python's http.client writes the head, then the body.
    let mut i = inspector();
    let body = "e=alice%40example.test";
    let head = format!(
        "POST /c HTTP/1.1\r\nHost: b.example.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    write(&mut i, ALICE, 7, head.as_bytes());
    assert!(found(&i).is_empty());
    write(&mut i, ALICE, 7, body.as_bytes());
    assert_eq!(
        found(&i),
        [(
            Some("b.example.test"),
            ident(IdKind::Email, Form::UrlEncoded, Place::Body)
        )]
    );
    // The next request on the connection is read too.
    let hashed = format!("{:x}", sha2::Sha256::digest(b"alice@example.test"));
    write(
        &mut i,
        ALICE,
        7,
        format!("GET /tr?em={hashed} HTTP/1.1\r\nHost: b.example.test\r\n\r\n").as_bytes(),
    );
    assert!(found(&i).contains(&(
        Some("b.example.test"),
        ident(IdKind::Email, Form::Sha256, Place::Url)
    )));
}

#[test]
fn inspect_another_users_identifiers_are_never_matched() {
    let mut i = inspector();
    let req = "GET /?u=bob@example.test HTTP/1.1\r\nHost: x.example.test\r\n\r\n";
    write(&mut i, ALICE, 1, req.as_bytes());
    // Bob's address in Alice's traffic is someone else's address, not "yours".
    assert_eq!(
        found(&i),
        [(
            Some("x.example.test"),
            Sent::OtherEmails { place: Place::Url }
        )]
    );
    let mut i = inspector();
    write(&mut i, BOB, 1, req.as_bytes());
    assert_eq!(
        found(&i),
        [(
            Some("x.example.test"),
            ident(IdKind::Email, Form::Plain, Place::Url)
        )]
    );
}

#[test]
fn inspect_other_peoples_addresses_are_counted_not_kept() {
    let mut i = inspector();
    let body =
        r#"["carol@example.test","dan@example.test","erin@example.test","alice@example.test"]"#;
    let req = format!(
        "POST /p HTTP/1.1\r\nHost: b.example.test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    write(&mut i, ALICE, 3, req.as_bytes());
    write(&mut i, ALICE, 3, req.as_bytes());
    let rows = i.leaks();
    let others: Vec<_> = rows
        .iter()
        .filter(|(k, _)| matches!(k.sent, Sent::OtherEmails { .. }))
        .collect();
    assert_eq!(others.len(), 1);
    assert_eq!(
        others[0].1.other_addresses(),
        3,
        "three distinct addresses, the user's own aside"
    );
    assert_eq!(others[0].1.requests, 2);
    assert!(
        !format!("{:?}", i.leaks()).contains("carol"),
        "addresses are not kept"
    );
}

#[test]
fn inspect_chunked_gzip_body_is_decoded() {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"m\":\"0123456789ABCDEF0123456789ABCDEF\"}")
        .unwrap();
    let packed = gz.finish().unwrap();
    let mut req = b"POST /g HTTP/1.1\r\nHost: g.example.test\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n".to_vec();
    let (a, b) = packed.split_at(10);
    for part in [a, b] {
        req.extend(format!("{:x}\r\n", part.len()).bytes());
        req.extend_from_slice(part);
        req.extend(b"\r\n");
    }
    req.extend(b"0\r\n\r\n");
    let mut i = inspector();
    write(&mut i, ALICE, 9, &req);
    assert_eq!(
        found(&i),
        [(
            Some("g.example.test"),
            ident(IdKind::MachineId, Form::Plain, Place::Body)
        )]
    );
}

#[test]
fn inspect_websocket_messages_are_unmasked_after_the_upgrade() {
    let mut i = inspector();
    write(&mut i, ALICE, 5, b"GET /ws HTTP/1.1\r\nHost: ws.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    let msg = br#"{"who":"alice@example.test"}"#;
    let key = [9u8, 8, 7, 6];
    let mut frame = vec![0x81, 0x80 | msg.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(msg.iter().enumerate().map(|(n, b)| b ^ key[n % 4]));
    write(&mut i, ALICE, 5, &frame);
    assert_eq!(
        found(&i),
        [(
            Some("ws.example.test"),
            ident(IdKind::Email, Form::Plain, Place::WebSocket)
        )]
    );
}

#[test]
fn inspect_http2_header_is_found_through_hpack() {
    let mut enc = loona_hpack::Encoder::new();
    let hs: [(&[u8], &[u8]); 4] = [
        (b":method", b"GET"),
        (b":authority", b"h2.example.test"),
        (b":path", b"/"),
        (b"x-user-email", b"alice@example.test"),
    ];
    let block = enc.encode(hs.iter().copied());
    let mut w = http2::PREFACE.to_vec();
    w.extend(&(block.len() as u32).to_be_bytes()[1..]);
    w.extend([0x1, 0x4 | 0x1]);
    w.extend(1u32.to_be_bytes());
    w.extend(&block);
    let mut i = inspector();
    write(&mut i, ALICE, 11, &w);
    assert_eq!(
        found(&i),
        [(
            Some("h2.example.test"),
            ident(IdKind::Email, Form::Plain, Place::Header)
        )]
    );
    assert!(i.leaks()[0].1.by_authority);
}

#[test]
fn inspect_non_http_and_garbage_never_panic_or_hold_memory() {
    let mut i = inspector();
    write(
        &mut i,
        ALICE,
        1,
        b"\x16\x03\x01 not http alice@example.test",
    );
    write(&mut i, ALICE, 1, &[0u8; 9000]);
    write(
        &mut i,
        ALICE,
        2,
        b"GET / HTTP/1.1\r\nHost: a.example.test\r\nContent-Length: 99999999999\r\n\r\n",
    );
    write(&mut i, ALICE, 2, &vec![b'x'; 16 * 1024]);
    assert!(found(&i).is_empty(), "no request, no finding");
    // A stream that lost step picks up at the next request.
    write(
        &mut i,
        ALICE,
        1,
        b"GET /?e=alice@example.test HTTP/1.1\r\nHost: a.example.test\r\n\r\n",
    );
    assert_eq!(found(&i).len(), 1);
}

#[test]
fn inspect_a_write_longer_than_what_is_read_is_counted() {
    let mut i = inspector();
    let big = vec![b'a'; 20 * 1024];
    write(&mut i, ALICE, 1, &big);
    assert_eq!(i.stats.bytes_not_read, 4 * 1024);
    assert_eq!(i.stats.bytes_read, 16 * 1024);
}
