#![no_main]
//! The naming state machine across records: first payloads (TLS, QUIC reassembly, HTTP,
//! DNS queries) and DNS answers, interleaved on a few sockets in any order.
//! Each record: [kind, cookie, seq, port selector, len_lo, len_hi, bytes...].
use brokerwatch::{
    kernel::wire::{PacketRecord, Proto},
    naming::{Namer, Receiver},
};
use libfuzzer_sys::fuzz_target;
use monitor_common::{EventHeader, EventKind};

fuzz_target!(|data: &[u8]| {
    let mut namer = Namer::default();
    let mut rest = data;
    let mut ts = 1u64;
    while rest.len() >= 6 {
        let (h, tail) = rest.split_at(6);
        let len = (u16::from_le_bytes([h[4], h[5]]) as usize).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        ts += 1_000;
        let answer = h[0] & 1 == 1;
        let kind = if answer { EventKind::DnsAnswer } else { EventKind::Payload };
        let rec = PacketRecord {
            header: EventHeader {
                kind: kind as u32,
                tgid: 7,
                tid: 7,
                uid: 1000,
                ts_ns: ts,
                cgroup_id: 1,
            },
            kind,
            cookie: u64::from(h[1] % 4),
            proto: if h[0] & 2 == 0 { Proto::Tcp } else { Proto::Udp },
            src: "127.0.0.1".parse().unwrap(),
            src_port: 53,
            dst_port: [443, 80, 53, 8443][usize::from(h[3] % 4)],
            seq: u32::from(h[2] % 8),
            orig_len: len as u32,
            netns: 1,
            data: bytes.to_vec(),
        };
        if answer {
            let from = Receiver {
                pid: Some(7),
                cgroup: 1,
                uid: 1000,
                netns: 1,
            };
            let _ = namer.on_dns_answer(&rec, from);
        } else {
            let _ = namer.on_payload(&rec);
        }
    }
});
