//! A tiny DNS server and client for the probe: A and AAAA answers for names it is given,
//! over UDP on loopback, so that kernel programs see real DNS answers without a resolver.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

/// The question of a query: (id, name, qtype, bytes of the question section).
fn question(msg: &[u8]) -> Option<(u16, String, u16, &[u8])> {
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(msg.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    let q = msg.get(12..pos + 4)?;
    Some((
        u16::from_be_bytes([msg[0], msg[1]]),
        labels.join("."),
        qtype,
        q,
    ))
}

/// The answer to `query` from `records` (name -> addresses); `None` for what is not a query.
pub fn answer(query: &[u8], records: &HashMap<String, Vec<IpAddr>>) -> Option<Vec<u8>> {
    let (id, name, qtype, q) = question(query)?;
    let addrs: Vec<&IpAddr> = records
        .get(&name)
        .map(|v| {
            v.iter()
                .filter(|a| matches!((a, qtype), (IpAddr::V4(_), 1) | (IpAddr::V6(_), 28)))
                .collect()
        })
        .unwrap_or_default();
    let known = records.contains_key(&name);
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&id.to_be_bytes());
    // Response, recursion desired and available; NXDOMAIN for unknown names.
    out.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(q);
    for a in addrs {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&300u32.to_be_bytes());
        match a {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    Some(out)
}

/// Serves `records` on `sock` until the process ends.
pub fn serve(sock: UdpSocket, records: HashMap<String, Vec<IpAddr>>) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = answer(&buf[..n], &records) {
            let _ = sock.send_to(&reply, peer);
        }
    }
}

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Asks `server` for the A record of `name`; the first address of the answer.
pub fn resolve(server: SocketAddr, name: &str) -> Option<IpAddr> {
    let bind = if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    sock.send_to(&query(0x4242, name, 1), server).ok()?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).ok()?;
    let msg = &buf[..n];
    let (_, _, _, q) = question(msg)?;
    let mut pos = 12 + q.len();
    let ancount = u16::from_be_bytes([msg[6], msg[7]]);
    for _ in 0..ancount {
        // Name: a pointer (2 bytes) in our own answers.
        pos += 2;
        let rtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
        let rdlen = u16::from_be_bytes([*msg.get(pos + 8)?, *msg.get(pos + 9)?]) as usize;
        let rdata = msg.get(pos + 10..pos + 10 + rdlen)?;
        if rtype == 1 && rdlen == 4 {
            return Some(IpAddr::from([rdata[0], rdata[1], rdata[2], rdata[3]]));
        }
        pos += 10 + rdlen;
    }
    None
}
