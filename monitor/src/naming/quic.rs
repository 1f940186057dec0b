//! QUIC Initial packets (v1, RFC 9000/9001; v2, RFC 9369) to the ClientHello's SNI: derive
//! the Initial keys from the destination connection id, remove header protection, decrypt,
//! and reassemble CRYPTO frames across packets and datagrams. HKDF-SHA256 and AES come
//! from RustCrypto's crates. Pure and bounded: never panics on hostile input.

use std::collections::BTreeMap;

use aes::{
    cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit},
    Aes128,
};
use aes_gcm::{aead::Aead, Aes128Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

use super::tls::{self, Hello};

pub const VERSION_1: u32 = 0x0000_0001;
pub const VERSION_2: u32 = 0x6b33_43cf;
const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];
/// CRYPTO bytes kept per connection before giving up.
pub const MAX_CRYPTO: usize = 16 * 1024;

/// Client Initial protection keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialKeys {
    pub key: [u8; 16],
    pub iv: [u8; 12],
    pub hp: [u8; 16],
}

fn expand_label(secret: &[u8], label: &str, out: &mut [u8]) -> Option<()> {
    let hk = Hkdf::<Sha256>::from_prk(secret).ok()?;
    let full = format!("tls13 {label}");
    let mut info = Vec::with_capacity(4 + full.len());
    info.extend_from_slice(&(out.len() as u16).to_be_bytes());
    info.push(full.len() as u8);
    info.extend_from_slice(full.as_bytes());
    info.push(0);
    hk.expand(&info, out).ok()
}

/// The client's Initial keys for a destination connection id (RFC 9001 section 5.2).
pub fn client_initial_keys(version: u32, dcid: &[u8]) -> Option<InitialKeys> {
    let (salt, prefix): (&[u8], &str) = match version {
        VERSION_1 => (&SALT_V1, "quic"),
        VERSION_2 => (&SALT_V2, "quicv2"),
        _ => return None,
    };
    let (initial, _) = Hkdf::<Sha256>::extract(Some(salt), dcid);
    let mut client = [0u8; 32];
    expand_label(&initial, "client in", &mut client)?;
    let mut keys = InitialKeys {
        key: [0; 16],
        iv: [0; 12],
        hp: [0; 16],
    };
    expand_label(&client, &format!("{prefix} key"), &mut keys.key)?;
    expand_label(&client, &format!("{prefix} iv"), &mut keys.iv)?;
    expand_label(&client, &format!("{prefix} hp"), &mut keys.hp)?;
    Some(keys)
}

/// A QUIC variable-length integer at `*pos`.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *buf.get(*pos)?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(*pos..*pos + len)?;
    let mut v = (first & 0x3f) as u64;
    for b in &bytes[1..] {
        v = (v << 8) | *b as u64;
    }
    *pos += len;
    Some(v)
}

/// One decrypted client Initial packet: its DCID and CRYPTO frames (offset, data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initial {
    pub version: u32,
    pub dcid: Vec<u8>,
    pub crypto: Vec<(u64, Vec<u8>)>,
}

/// Decrypts every client Initial packet in what one capture holds: packets coalesced in a
/// datagram, and the datagrams of a UDP GSO super-packet (one buffer holding several
/// datagrams, each padded with zeros after its packets), found again by resynchronising on
/// the next long header of a known version. `dcid_hint` is the DCID of the connection's
/// first Initial (the keys stay derived from it).
pub fn parse_datagram(datagram: &[u8], dcid_hint: Option<&[u8]>) -> Vec<Initial> {
    let mut out = Vec::new();
    let mut rest = datagram;
    let mut hint = dcid_hint.map(<[u8]>::to_vec);
    for _ in 0..16 {
        if rest.is_empty() {
            break;
        }
        match parse_packet(rest, hint.as_deref()) {
            Some((initial, used)) => {
                if let Some(i) = initial {
                    hint.get_or_insert_with(|| i.dcid.clone());
                    out.push(i);
                }
                rest = &rest[used.clamp(1, rest.len())..];
            }
            None => match next_long_header(&rest[1..]) {
                Some(skip) => rest = &rest[1 + skip..],
                None => break,
            },
        }
    }
    out
}

/// Offset of the next byte that starts a long header of a version brokerwatch decrypts.
fn next_long_header(buf: &[u8]) -> Option<usize> {
    (0..buf.len().saturating_sub(6)).find(|&i| {
        buf[i] & 0xc0 == 0xc0
            && matches!(
                u32::from_be_bytes([buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]]),
                VERSION_1 | VERSION_2
            )
            && buf[i + 5] <= 20
    })
}

/// Parses one long-header packet; returns the Initial (if it is one) and its length.
fn parse_packet(pkt: &[u8], dcid_hint: Option<&[u8]>) -> Option<(Option<Initial>, usize)> {
    let first = *pkt.first()?;
    if first & 0x80 == 0 || first & 0x40 == 0 {
        return None; // short header or not QUIC
    }
    let version = u32::from_be_bytes(pkt.get(1..5)?.try_into().ok()?);
    let ptype = (first >> 4) & 0x03;
    let is_initial = match version {
        VERSION_1 => ptype == 0,
        VERSION_2 => ptype == 1,
        _ => return None,
    };
    let mut pos = 5;
    let dcid_len = *pkt.get(pos)? as usize;
    pos += 1;
    let dcid = pkt.get(pos..pos + dcid_len)?.to_vec();
    pos += dcid_len;
    let scid_len = *pkt.get(pos)? as usize;
    pos += 1 + scid_len;
    if is_initial {
        let token_len = varint(pkt, &mut pos)? as usize;
        pos = pos.checked_add(token_len)?;
    }
    let length = varint(pkt, &mut pos)? as usize;
    let pn_offset = pos;
    let end = pn_offset.checked_add(length)?;
    if end > pkt.len() || !is_initial {
        return Some((None, end.min(pkt.len()).max(pn_offset)));
    }
    let keys = client_initial_keys(version, dcid_hint.unwrap_or(&dcid))?;
    // Header protection: a 16-byte sample 4 bytes after the packet number's start.
    let sample = pkt.get(pn_offset + 4..pn_offset + 20)?;
    let mut block = GenericArray::clone_from_slice(sample);
    Aes128::new(GenericArray::from_slice(&keys.hp)).encrypt_block(&mut block);
    let mask = block;
    let first_plain = first ^ (mask[0] & 0x0f);
    let pn_len = (first_plain & 0x03) as usize + 1;
    let mut header = pkt.get(..pn_offset + pn_len)?.to_vec();
    header[0] = first_plain;
    let mut pn: u64 = 0;
    for i in 0..pn_len {
        header[pn_offset + i] ^= mask[1 + i];
        pn = (pn << 8) | header[pn_offset + i] as u64;
    }
    let mut nonce = keys.iv;
    for (i, b) in pn.to_be_bytes().iter().enumerate() {
        nonce[4 + i] ^= b;
    }
    let ciphertext = pkt.get(pn_offset + pn_len..end)?;
    let cipher = Aes128Gcm::new(GenericArray::from_slice(&keys.key));
    let plain = cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            aes_gcm::aead::Payload {
                msg: ciphertext,
                aad: &header,
            },
        )
        .ok()?;
    Some((
        Some(Initial {
            version,
            dcid,
            crypto: crypto_frames(&plain),
        }),
        end,
    ))
}

/// CRYPTO frames of a decrypted Initial payload (the frames allowed there are PADDING,
/// PING, ACK, CRYPTO and CONNECTION_CLOSE; anything else ends the walk).
fn crypto_frames(p: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < p.len() {
        let Some(t) = varint(p, &mut pos) else { break };
        match t {
            0x00 | 0x01 => {}
            0x02 | 0x03 => {
                // ACK: largest, delay, range count, first range, ranges, [ECN counts].
                let (Some(_), Some(_), Some(count), Some(_)) = (
                    varint(p, &mut pos),
                    varint(p, &mut pos),
                    varint(p, &mut pos),
                    varint(p, &mut pos),
                ) else {
                    break;
                };
                for _ in 0..count.min(256) * 2 {
                    if varint(p, &mut pos).is_none() {
                        return out;
                    }
                }
                if t == 0x03 {
                    for _ in 0..3 {
                        if varint(p, &mut pos).is_none() {
                            return out;
                        }
                    }
                }
            }
            0x06 => {
                let (Some(off), Some(len)) = (varint(p, &mut pos), varint(p, &mut pos)) else {
                    break;
                };
                let Some(data) = p.get(pos..pos.saturating_add(len as usize)) else {
                    break;
                };
                out.push((off, data.to_vec()));
                pos += len as usize;
            }
            _ => break,
        }
    }
    out
}

/// Reassembly of one connection's Initial CRYPTO stream.
#[derive(Debug, Default)]
pub struct CryptoStream {
    dcid: Option<Vec<u8>>,
    parts: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl CryptoStream {
    /// A server name found whole in the CRYPTO data so far, when the ClientHello itself
    /// cannot be completed yet (a browser spreads a large, shuffled ClientHello over two
    /// Initials, and sends only the first when the peer's port is closed).
    pub fn partial_server_name(&self) -> Option<String> {
        // Contiguous runs of the CRYPTO data.
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        for (off, data) in &self.parts {
            match runs.last_mut() {
                Some((start, run)) if *start + run.len() as u64 >= *off => {
                    let have = (*start + run.len() as u64 - off) as usize;
                    if have < data.len() {
                        run.extend_from_slice(&data[have..]);
                    }
                }
                _ => runs.push((*off, data.clone())),
            }
        }
        runs.iter().find_map(|(_, run)| tls::find_server_name(run))
    }

    /// Adds a datagram; returns the ClientHello verdict once the stream has one.
    pub fn push_datagram(&mut self, datagram: &[u8]) -> Option<Hello> {
        for initial in parse_datagram(datagram, self.dcid.as_deref()) {
            if self.dcid.is_none() {
                self.dcid = Some(initial.dcid.clone());
            }
            for (off, data) in initial.crypto {
                if self.bytes + data.len() > MAX_CRYPTO || off > MAX_CRYPTO as u64 {
                    return Some(Hello::NotTls);
                }
                self.bytes += data.len();
                self.parts.insert(off, data);
            }
        }
        // The contiguous prefix from offset 0 is the handshake so far.
        let mut hs = Vec::new();
        for (off, data) in &self.parts {
            let off = *off as usize;
            if off > hs.len() {
                break;
            }
            if off + data.len() > hs.len() {
                hs.extend_from_slice(&data[hs.len() - off..]);
            }
        }
        if hs.len() < 4 {
            return None;
        }
        let need = 4 + u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize;
        if hs[0] != 1 || need > MAX_CRYPTO {
            return Some(Hello::NotTls);
        }
        if hs.len() < need {
            return None;
        }
        // Wrap the handshake in one TLS record for the shared ClientHello reader.
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(need as u16).to_be_bytes());
        record.extend_from_slice(&hs[..need]);
        Some(tls::client_hello(&record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 9001 Appendix A.1: keys for DCID 0x8394c8f03e515708.
    #[test]
    fn rfc9001_initial_keys() {
        let k = client_initial_keys(VERSION_1, &unhex("8394c8f03e515708")).unwrap();
        assert_eq!(k.key.to_vec(), unhex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(k.iv.to_vec(), unhex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(k.hp.to_vec(), unhex("9f50449e04a0e810283a1e9933adedd2"));
    }

    /// RFC 9369 Appendix A.1: QUIC v2 keys for the same DCID.
    #[test]
    fn rfc9369_v2_initial_keys() {
        let k = client_initial_keys(VERSION_2, &unhex("8394c8f03e515708")).unwrap();
        assert_eq!(k.key.to_vec(), unhex("8b1a0bc121284290a29e0971b5cd045d"));
        assert_eq!(k.iv.to_vec(), unhex("91f73e2351d8fa91660e909f"));
        assert_eq!(k.hp.to_vec(), unhex("45b95e15235d6f45a6b19cbcb0294ba9"));
    }

    #[test]
    fn varints() {
        let mut p = 0;
        assert_eq!(
            varint(&unhex("c2197c5eff14e88c"), &mut p),
            Some(151_288_809_941_952_652)
        );
        let mut p = 0;
        assert_eq!(varint(&unhex("9d7f3e7d"), &mut p), Some(494_878_333));
        let mut p = 0;
        assert_eq!(varint(&unhex("7bbd"), &mut p), Some(15_293));
        let mut p = 0;
        assert_eq!(varint(&unhex("25"), &mut p), Some(37));
        let mut p = 0;
        assert_eq!(varint(&unhex("c2"), &mut p), None);
    }

    /// A client Initial datagram from a real client (aioquic 1.7.2) for
    /// `quic.vendor.test`, recorded by `tests/quic_client.py --dump`.
    #[test]
    fn sni_from_a_real_client_initial() {
        let hex = include_str!("../../tests/fixtures/quic-initial-aioquic.hex");
        let datagram = unhex(hex);
        let initials = parse_datagram(&datagram, None);
        assert_eq!(initials.len(), 1);
        assert!(!initials[0].crypto.is_empty());
        let mut s = CryptoStream::default();
        assert_eq!(
            s.push_datagram(&datagram),
            Some(Hello::ClientHello {
                sni: Some("quic.vendor.test".into()),
                ech: false
            })
        );
        // Any flipped byte fails authentication (or the header), never panics.
        for i in (0..datagram.len()).step_by(7) {
            let mut m = datagram.clone();
            m[i] ^= 0x55;
            let _ = CryptoStream::default().push_datagram(&m);
        }
    }

    /// Chromium 156's first flight to a peer that never answers: two Initials of one
    /// connection (X25519MLKEM768 key share, GREASE ECH, shuffled CRYPTO frames), and the
    /// only Initial it sent to a closed port. Captured in the test lab.
    const CHROMIUM_1: &[u8] = include_bytes!("../../tests/fixtures/chromium-quic-initial-1.bin");
    const CHROMIUM_2: &[u8] = include_bytes!("../../tests/fixtures/chromium-quic-initial-2.bin");
    const CHROMIUM_ALONE: &[u8] =
        include_bytes!("../../tests/fixtures/chromium-quic-first-initial.bin");

    fn hello_of(datagrams: &[&[u8]]) -> (Option<Hello>, Option<String>) {
        let mut s = CryptoStream::default();
        let mut hello = None;
        for d in datagrams {
            hello = hello.or(s.push_datagram(d));
        }
        (hello, s.partial_server_name())
    }

    #[test]
    fn quic_chromium_hello_spread_over_two_initials_is_reassembled() {
        // Issue 10.
        let (hello, _) = hello_of(&[CHROMIUM_1, CHROMIUM_2]);
        assert_eq!(
            hello,
            Some(Hello::ClientHello {
                sni: Some("quic.vendor.test".into()),
                ech: true
            }),
            "complete, with Chromium's GREASE ECH extension"
        );
        // Either Initial alone is not a complete hello.
        assert_eq!(hello_of(&[CHROMIUM_2]).0, None);
    }

    #[test]
    fn quic_a_lone_first_initial_names_its_connection_partially() {
        // Issue 10: the peer's port is closed, so only the first Initial left.
        let (hello, partial) = hello_of(&[CHROMIUM_ALONE]);
        assert_eq!(hello, None);
        assert_eq!(partial.as_deref(), Some("closed.vendor.test"));
    }

    #[test]
    fn quic_gso_super_packets_with_zero_padding_split_into_datagrams() {
        // Issue 10: Firefox sends its first flight as one UDP GSO buffer: two datagrams,
        // the first padded with zeros after its packet.
        let mut gso = CHROMIUM_1.to_vec();
        gso.extend_from_slice(&[0u8; 254]);
        gso.extend_from_slice(CHROMIUM_2);
        assert_eq!(parse_datagram(&gso, None).len(), 2);
        let (hello, _) = hello_of(&[&gso]);
        assert!(matches!(
            hello,
            Some(Hello::ClientHello { sni: Some(ref s), .. }) if s == "quic.vendor.test"
        ));
    }

    #[test]
    fn garbage_and_truncation_never_panic() {
        let mut junk = vec![0xc0u8, 0, 0, 0, 1, 8];
        junk.extend_from_slice(&[1; 8]);
        junk.extend_from_slice(&[0, 0, 0x44, 0xff]);
        junk.extend(std::iter::repeat_n(0xaa, 1200));
        for cut in 0..junk.len() {
            let _ = parse_datagram(&junk[..cut], None);
        }
        assert!(
            parse_datagram(&junk, None).is_empty(),
            "authentication fails on junk"
        );
        assert!(parse_datagram(b"not quic", None).is_empty());
    }
}
