//! TLS ClientHello server name (SNI), reassembled across records and TCP segments;
//! tls-parser reads the handshake. Pure and bounded.

use tls_parser::{
    parse_tls_extensions, parse_tls_message_handshake, SNIType, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};

/// Most bytes a ClientHello may take before brokerwatch gives up on it.
pub const MAX_HELLO: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed (the hello continues in later segments).
    NeedMore,
    /// Not a TLS handshake.
    NotTls,
    /// A ClientHello; `sni` is the server name, `ech` whether Encrypted Client Hello hides
    /// the real one (then `sni` is only the outer, public name).
    ClientHello { sni: Option<String>, ech: bool },
}

const ECH_EXTENSION: u16 = 0xfe0d;

/// Looks at the first bytes a client sent on a connection.
pub fn client_hello(stream: &[u8]) -> Hello {
    // Records: type(1) version(2) length(2) fragment.
    let mut handshake = Vec::new();
    let mut rest = stream;
    loop {
        if rest.len() < 5 {
            return if rest.is_empty() || rest[0] == 0x16 {
                Hello::NeedMore
            } else {
                Hello::NotTls
            };
        }
        if rest[0] != 0x16 || rest[1] != 0x03 {
            return Hello::NotTls;
        }
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if len == 0 || len > 16384 + 2048 {
            return Hello::NotTls;
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            handshake.extend_from_slice(&rest[5..]);
            return partial(&handshake);
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            let need =
                4 + u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
            if handshake.len() >= need {
                return parse_hello(&handshake[..need]);
            }
            if need > MAX_HELLO {
                return Hello::NotTls;
            }
        }
    }
}

fn partial(handshake: &[u8]) -> Hello {
    if handshake.first().is_some_and(|&t| t != 1) {
        Hello::NotTls
    } else {
        Hello::NeedMore
    }
}

fn parse_hello(handshake: &[u8]) -> Hello {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) =
        parse_tls_message_handshake(handshake)
    else {
        return Hello::NotTls;
    };
    let mut sni = None;
    let mut ech = false;
    if let Some(ext) = ch.ext {
        if let Ok((_, exts)) = parse_tls_extensions(ext) {
            for e in exts {
                match e {
                    TlsExtension::SNI(names) => {
                        sni = names
                            .iter()
                            .find(|(t, _)| *t == SNIType::HostName)
                            .and_then(|(_, n)| std::str::from_utf8(n).ok())
                            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
                    }
                    TlsExtension::Unknown(t, _) if t.0 == ECH_EXTENSION => ech = true,
                    _ => {}
                }
            }
        }
    }
    Hello::ClientHello { sni, ech }
}

/// Whether `name` looks like a DNS host name (see [`super::is_host_name`]).
fn hostname_like(name: &[u8]) -> bool {
    std::str::from_utf8(name).is_ok_and(super::is_host_name)
}

/// A `server_name` extension found whole inside a fragment of a ClientHello that cannot be
/// reassembled (the rest was never sent): type 0, a list length that matches the extension
/// length, one `host_name` entry whose length matches the list, and a host-name-like value.
pub fn find_server_name(fragment: &[u8]) -> Option<String> {
    let be16 = |i: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*fragment.get(i)?, *fragment.get(i + 1)?]) as usize)
    };
    for i in 0..fragment.len().saturating_sub(9) {
        if fragment[i] != 0 || fragment[i + 1] != 0 {
            continue;
        }
        let (Some(ext_len), Some(list_len)) = (be16(i + 2), be16(i + 4)) else {
            continue;
        };
        if list_len + 2 != ext_len || fragment[i + 6] != 0 {
            continue;
        }
        let Some(name_len) = be16(i + 7) else {
            continue;
        };
        if name_len + 3 != list_len {
            continue;
        }
        let Some(name) = fragment.get(i + 9..i + 9 + name_len) else {
            continue;
        };
        if hostname_like(name) {
            return std::str::from_utf8(name)
                .ok()
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal but real-format TLS 1.2/1.3 ClientHello record with `server_name`.
    pub(crate) fn client_hello_bytes(sni: &str, pad_to: usize) -> Vec<u8> {
        let mut ext = Vec::new();
        // server_name
        let name = sni.as_bytes();
        let mut list = vec![0u8];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
        let mut sn = (list.len() as u16).to_be_bytes().to_vec();
        sn.extend_from_slice(&list);
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(sn.len() as u16).to_be_bytes());
        ext.extend_from_slice(&sn);
        // padding extension (21) to make the hello big enough to span segments
        let pad = pad_to.saturating_sub(ext.len());
        ext.extend_from_slice(&21u16.to_be_bytes());
        ext.extend_from_slice(&(pad as u16).to_be_bytes());
        ext.extend(std::iter::repeat_n(0u8, pad));
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&2u16.to_be_bytes());
        body.extend_from_slice(&[0x13, 0x01]); // TLS_AES_128_GCM_SHA256
        body.extend_from_slice(&[1, 0]); // compression: null
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1u8];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn tls_server_name_is_found_in_a_fragment_of_a_hello() {
        let hello = client_hello_bytes("graph.facebook.com", 600);
        // Any window that holds the whole extension finds it; the record header is gone.
        let at = hello
            .windows(18)
            .position(|w| w == b"graph.facebook.com")
            .unwrap();
        assert_eq!(
            find_server_name(&hello[at - 12..at + 40]).as_deref(),
            Some("graph.facebook.com")
        );
        // Cut inside the name: nothing, rather than half a name.
        assert_eq!(find_server_name(&hello[at - 12..at + 10]), None);
        assert_eq!(find_server_name(&[0u8; 64]), None);
        assert_eq!(find_server_name(&[]), None);
    }

    #[test]
    fn sni_from_one_segment() {
        let hello = client_hello_bytes("Graph.Facebook.com", 100);
        assert_eq!(
            client_hello(&hello),
            Hello::ClientHello {
                sni: Some("graph.facebook.com".into()),
                ech: false
            }
        );
    }

    #[test]
    fn split_over_segments_needs_more_then_completes() {
        let hello = client_hello_bytes("api.vendor.test", 3000);
        for cut in [1, 4, 5, 100, 1448, 2896] {
            assert_eq!(client_hello(&hello[..cut]), Hello::NeedMore, "cut {cut}");
        }
        assert!(
            matches!(client_hello(&hello), Hello::ClientHello { sni: Some(ref s), .. } if s == "api.vendor.test")
        );
    }

    #[test]
    fn hello_split_over_two_records() {
        let one = client_hello_bytes("two.records.test", 600);
        let hs = &one[5..];
        let (a, b) = hs.split_at(300);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 0x03, 0x01]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert!(
            matches!(client_hello(&two), Hello::ClientHello { sni: Some(ref s), .. } if s == "two.records.test")
        );
    }

    #[test]
    fn not_tls_and_garbage() {
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(client_hello(&[0x16, 0x03, 0x01, 0, 0]), Hello::NotTls);
        let hello = client_hello_bytes("x.test", 50);
        let mut bad = hello.clone();
        bad[5] = 2; // ServerHello type
        assert_eq!(client_hello(&bad), Hello::NotTls);
        for i in 0..hello.len() {
            let mut m = hello.clone();
            m[i] ^= 0xff;
            let _ = client_hello(&m);
        }
    }
}
