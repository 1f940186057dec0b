//! A minimal TLS 1.2 ClientHello carrying a server name, as the first bytes of a connection.

fn with_len16(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// One TLS record holding a ClientHello for `sni`.
pub fn client_hello(sni: &str) -> Vec<u8> {
    // server_name extension: list of one host_name entry.
    let mut entry = vec![0u8];
    entry.extend_from_slice(&with_len16(sni.as_bytes()));
    let list = with_len16(&entry);
    let mut ext = 0u16.to_be_bytes().to_vec();
    ext.extend_from_slice(&with_len16(&list));
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
