//! A minimal TLS 1.2 ClientHello carrying a server name, as the first bytes of a connection.

fn with_len16(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// One TLS record holding a ClientHello for `sni`.
pub fn client_hello(sni: &str) -> Vec<u8> {
    hello_record(sni, false)
}

/// The same with an Encrypted Client Hello extension (0xfe0d, outer type, GREASE-like
/// contents), as browsers send on every connection.
pub fn client_hello_with_ech(sni: &str) -> Vec<u8> {
    hello_record(sni, true)
}

fn hello_record(sni: &str, ech: bool) -> Vec<u8> {
    // server_name extension: list of one host_name entry.
    let mut entry = vec![0u8];
    entry.extend_from_slice(&with_len16(sni.as_bytes()));
    let list = with_len16(&entry);
    let mut ext = 0u16.to_be_bytes().to_vec();
    ext.extend_from_slice(&with_len16(&list));
    if ech {
        // ECHClientHello: outer (0), cipher suite, config id, enc, payload.
        let mut body = vec![0u8, 0x00, 0x01, 0x00, 0x01, 0x2a];
        body.extend_from_slice(&with_len16(&[0x11; 32]));
        body.extend_from_slice(&with_len16(&[0x22; 64]));
        ext.extend_from_slice(&0xfe0du16.to_be_bytes());
        ext.extend_from_slice(&with_len16(&body));
    }
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x42; 32]);
    hello.push(0);
    hello.extend_from_slice(&with_len16(&[0x13, 0x01, 0xc0, 0x2f]));
    hello.extend_from_slice(&[1, 0]);
    hello.extend_from_slice(&with_len16(&ext));
    let mut handshake = vec![1u8];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&with_len16(&handshake));
    record
}
