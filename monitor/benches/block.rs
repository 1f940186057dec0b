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

use brokerwatch::kernel::{wire::Record, BlockTables, Capture, Sensor, SensorOptions};
use monitor_common::{dest_hash, domain_hash, BLOCK_EVERY_USER, MODE_NAMES, WATCH_TAG_APP_BASE};
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

struct Watched {
    sensor: Sensor,
    capture: Capture,
    netns: u64,
}

/// The programs on the root, this process watched; blocking per `block`.
fn watching_me(block: bool) -> Watched {
    let mut sensor = Sensor::load(&SensorOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
    let mut capture = Capture::new(sensor.take_ring().unwrap()).unwrap();
    sensor.watch_tgid(std::process::id(), TAG).unwrap();
    sensor.set_mode(MODE_NAMES).unwrap();
    // This process's network namespace, as the kernel names it.
    let _ = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .connect("127.0.0.1:9");
    let mut netns = 0;
    capture.drain(|r| {
        if let Record::Sock(s) = r {
            netns = s.netns;
        }
    });
    if block {
        sensor
            .set_blocks(&tables())
            .unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: no arguments.
        let uid = unsafe { libc::getuid() };
        sensor
            .learn_block(
                netns,
                uid,
                "127.0.0.10".parse().unwrap(),
                dest_hash("dest-3"),
            )
            .unwrap();
    }
    Watched {
        sensor,
        capture,
        netns,
    }
}

/// `CALLS` UDP connects to `ip`; ns per call, and whether they were denied.
fn connects(w: &mut Watched, ip: &str) -> (f64, bool) {
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
fn kernel_ns(w: &mut Watched, ip: &str) -> f64 {
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let before = stat(w);
    let _ = connects(w, ip);
    let after = stat(w);
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let runs = (after.0 - before.0).max(1);
    (after.1 - before.1) as f64 / runs as f64
}

fn stat(w: &Watched) -> (u64, u64) {
    w.sensor
        .program_stats()
        .into_iter()
        .find(|p| p.name == "bw_connect4")
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
        let _ = w.netns;
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
    });
    let out = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/block.json".into());
    let _ = std::fs::create_dir_all(std::path::Path::new(&out).parent().unwrap());
    std::fs::write(&out, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}
