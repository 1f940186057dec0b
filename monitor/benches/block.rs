//! Blocking's cost (run by `cargo xtask bench`, as root): a watched process's `connect()`
//! with monitoring alone, with blocking on and the destination allowed, and with the
//! destination blocked (by range, and by an address a DNS answer gave), on UDP sockets to
//! loopback. Wall-clock time per call (median of alternating rounds) and the connect
//! program's own in-kernel time per run (`kernel.bpf_stats_enabled`).
//!
//! The block tables are full-sized for a large policy: 20,000 blocked domains, 2,000
//! (destination, app) pairs, 500 ranges.
//!
//! Output: a table on stdout and JSON at `$BW_BENCH_OUT` (default bench-results/block.json).

use std::{net::UdpSocket, time::Instant};

use brokerwatch::{
    kernel::{wire::Record, BlockTables, SensorOptions},
    policy::Policy,
    session::{Blocking, Plan, Session},
};
use monitor_common::{
    dest_hash, domain_hash, names::program, BLOCK_EVERY_USER, MODE_NAMES, WATCH_TAG_APP_BASE,
};
use serde_json::json;

const ROUNDS: usize = 7;
const CALLS: u32 = 10_000;
const TAG: u32 = WATCH_TAG_APP_BASE;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A large policy's tables: the blocked range 127.0.0.9/32 and a learned 127.0.0.10 among
/// many others.
fn tables() -> BlockTables {
    let mut t = BlockTables::default();
    for i in 0..20_000 {
        let dest = dest_hash(&format!("dest-{}", i % 2_000));
        t.domains
            .insert(domain_hash(&format!("d{i}.tracker{i}.example")).0, dest);
    }
    for i in 0..2_000 {
        t.pairs
            .insert((dest_hash(&format!("dest-{i}")), TAG, BLOCK_EVERY_USER));
    }
    for i in 0..500u32 {
        let net = format!("10.{}.{}.0/24", i / 256, i % 256);
        t.cidrs.push((net.parse().unwrap(), dest_hash("dest-1")));
    }
    t.cidrs
        .push(("127.0.0.9/32".parse().unwrap(), dest_hash("dest-7")));
    t
}

/// A session with the programs on the root, this process watched; blocking per `block`
/// (needs the runtime `main` entered: the ring's reader registers with it).
fn watching_me(block: bool) -> Session {
    let mut w = Session::start(
        &Plan::bare(SensorOptions::default()),
        &Policy::default(),
        Blocking::new(),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    w.sensor.watch_tgid(std::process::id(), TAG).unwrap();
    w.sensor.set_mode(MODE_NAMES).unwrap();
    // This process's network namespace, as the kernel names it.
    let _ = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .connect("127.0.0.1:9");
    let mut netns = 0;
    w.capture.drain(|r| {
        if let Record::Sock(s) = r {
            netns = s.netns;
        }
    });
    if block {
        w.sensor
            .set_blocks(&tables())
            .unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: no arguments.
        let uid = unsafe { libc::getuid() };
        w.sensor
            .learn_block(
                netns,
                uid,
                "127.0.0.10".parse().unwrap(),
                dest_hash("dest-3"),
            )
            .unwrap();
    }
    w
}

/// `CALLS` UDP connects to `ip`; ns per call, and whether they were denied.
fn connects(w: &mut Session, ip: &str) -> (f64, bool) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dst = format!("{ip}:9");
    let mut denied = false;
    let start = Instant::now();
    for _ in 0..CALLS {
        denied = sock.connect(&dst).is_err();
    }
    let ns = start.elapsed().as_nanos() as f64 / CALLS as f64;
    w.capture.drain(|_| {});
    (ns, denied)
}

/// ns per run of `bw_connect4` over `CALLS` connects to `ip`.
fn kernel_ns(w: &mut Session, ip: &str) -> f64 {
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let before = stat(w);
    let _ = connects(w, ip);
    let after = stat(w);
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let runs = (after.0 - before.0).max(1);
    (after.1 - before.1) as f64 / runs as f64
}

fn stat(w: &Session) -> (u64, u64) {
    prog_stat(w, program::CONNECT4)
}

/// A DNS answer for `id`'s query: `cdn.vendor5.example` CNAME `edge.tracker5.example`
/// (a blocked name) A 127.0.0.11, names compressed as servers send them.
fn cname_answer(query: &[u8]) -> Vec<u8> {
    let mut a = query.to_vec();
    a[2] = 0x81; // QR, RD
    a[3] = 0x80; // RA, no error
    a[6..8].copy_from_slice(&2u16.to_be_bytes()); // two answers
                                                  // CNAME: owner = the question (offset 12), target = edge.tracker5.example.
    a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60]);
    let target = b"\x04edge\x08tracker5\x07example\x00";
    a.extend_from_slice(&(target.len() as u16).to_be_bytes());
    let target_at = a.len() as u8;
    a.extend_from_slice(target);
    // A: owner = the CNAME target.
    a.extend_from_slice(&[
        0xc0, target_at, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 11,
    ]);
    a
}

/// `n` DNS exchanges with a local server on 127.0.0.1:53 that answers with a CNAME chain
/// ending in a blocked name, with blocking off and on: `bw_ingress`'s in-kernel time per
/// packet (the kernel's statistics count a tail-called program in its caller), and
/// whether the first connect after the last answer was denied.
fn dns_walk(n: u32) -> (f64, f64, bool) {
    let server = UdpSocket::bind("127.0.0.1:53").expect("port 53 on 127.0.0.1 must be free");
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        for _ in 0..2 * n {
            let Ok((len, from)) = server.recv_from(&mut buf) else {
                return;
            };
            let _ = server.send_to(&cname_answer(&buf[..len]), from);
        }
    });
    let mut t = tables();
    t.domains
        .insert(domain_hash("tracker5.example").0, dest_hash("dest-5"));
    let mut w = watching_me(false);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect("127.0.0.1:53").unwrap();
    let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x03cdn\x07vendor5\x07example\x00\x00\x01\x00\x01");
    let exchange = |w: &mut Session| {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
        let before = prog_stat(w, program::INGRESS);
        let mut buf = [0u8; 512];
        for i in 0..n {
            client.send(&query).unwrap();
            let _ = client.recv(&mut buf);
            if i % 1000 == 999 {
                w.capture.drain(|_| {});
            }
        }
        let after = prog_stat(w, program::INGRESS);
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
        w.capture.drain(|_| {});
        (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64
    };
    let off = exchange(&mut w);
    w.sensor.set_blocks(&t).unwrap();
    let on = exchange(&mut w);
    responder.join().unwrap();
    let denied = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .connect("127.0.0.11:9")
        .is_err();
    (off, on, denied)
}

fn prog_stat(w: &Session, name: &str) -> (u64, u64) {
    w.sensor
        .program_stats()
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| (p.run_count, p.run_time_ns))
        .unwrap_or_default()
}

fn main() {
    // SAFETY: no arguments.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "run as root (cargo xtask bench)");
    // The ring's reader registers with an event loop (drained by hand here).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    let scenarios: [(&str, bool, &str); 4] = [
        ("monitoring alone", false, "127.0.0.8"),
        ("blocking on, destination allowed", true, "127.0.0.8"),
        ("blocked by range", true, "127.0.0.9"),
        ("blocked by DNS-learned address", true, "127.0.0.10"),
    ];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    let mut denied = vec![false; scenarios.len()];
    for _ in 0..ROUNDS {
        for (i, (_, block, ip)) in scenarios.iter().enumerate() {
            let mut w = watching_me(*block);
            let _ = connects(&mut w, ip); // warm-up
            let (ns, d) = connects(&mut w, ip);
            wall[i].push(ns);
            denied[i] = d;
        }
    }
    let mut kernel = Vec::new();
    for (_, block, ip) in &scenarios {
        let mut w = watching_me(*block);
        let _ = connects(&mut w, ip);
        kernel.push(kernel_ns(&mut w, ip));
    }
    let wall: Vec<f64> = wall.into_iter().map(median).collect();
    println!(
        "{:<36}{:>14}{:>16}{:>10}",
        "watched UDP connect()", "ns per call", "bw_connect4 ns", "denied"
    );
    for (i, (label, _, _)) in scenarios.iter().enumerate() {
        println!(
            "{label:<36}{:>14.0}{:>16.0}{:>10}",
            wall[i], kernel[i], denied[i]
        );
    }
    let added = |i: usize| wall[i] - wall[0];
    println!(
        "added to a watched connect: allowed {:+.0} ns, blocked by range {:+.0} ns, blocked by learned address {:+.0} ns (target: within 1,000 ns)",
        added(1),
        added(2),
        added(3)
    );
    assert!(
        !denied[0] && !denied[1] && denied[2] && denied[3],
        "{denied:?}"
    );
    let (ingress_off, ingress_on, first_denied) = dns_walk(5_000);
    println!(
        "DNS answers (CNAME chain to a blocked name), bw_ingress per packet: blocking off {ingress_off:.0} ns, on {ingress_on:.0} ns (the in-kernel walk: {:+.0} ns per packet, half of them answers); first connect after the answer denied: {first_denied}",
        ingress_on - ingress_off
    );
    assert!(
        first_denied,
        "the first connect after the answer went through"
    );
    let v = json!({
        "rounds": ROUNDS,
        "calls_per_round": CALLS,
        "scenarios": scenarios.iter().enumerate().map(|(i, (label, _, _))| json!({
            "name": label,
            "wall_ns_per_call": wall[i],
            "bw_connect4_ns_per_run": kernel[i],
            "denied": denied[i],
        })).collect::<Vec<_>>(),
        "added_ns": {"allowed": added(1), "blocked_range": added(2), "blocked_learned": added(3)},
        "dns_answers": {"bw_ingress_ns_blocking_off": ingress_off, "bw_ingress_ns_blocking_on": ingress_on, "first_connect_denied": first_denied},
    });
    let out = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/block.json".into());
    let _ = std::fs::create_dir_all(std::path::Path::new(&out).parent().unwrap());
    std::fs::write(&out, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}
