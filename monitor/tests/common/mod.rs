//! Shared harness of the root-only integration tests: real programs, loaded and attached.
//! These tests never skip: without root or BPF they fail, saying why.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use brokerwatch::{
    audit::launch,
    kernel::{
        wire::{Record, SockRecord},
        Capture, KernelCounters, Sensor, SensorOptions,
    },
};
use monitor_common::WATCH_TAG_CGROUP;

pub mod audit;
pub mod daemon;
pub mod lab;

pub const PROBE: &str = env!("CARGO_BIN_EXE_bw-netprobe");

pub struct Harness {
    pub sensor: Sensor,
    pub capture: Capture,
    pub records: Vec<Record>,
    _rt: tokio::runtime::Runtime,
}

/// A listener on `addr` that accepts (and drops) every connection, so that its backlog never
/// fills; returns it and its port.
pub fn accepting_listener(addr: &str) -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let port = l.local_addr().unwrap().port();
    let acceptor = l.try_clone().unwrap();
    std::thread::spawn(move || {
        for conn in acceptor.incoming() {
            drop(conn);
        }
    });
    (l, port)
}

pub fn require_root() {
    // SAFETY: no arguments.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load eBPF programs and must run as root (CI does): sudo -E cargo xtask test"
    );
}

impl Harness {
    pub fn new() -> Self {
        Self::with_options(SensorOptions::default())
    }

    pub fn with_options(opts: SensorOptions) -> Self {
        require_root();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let mut sensor =
            Sensor::load(&opts).unwrap_or_else(|e| panic!("loading the sensor: {e:#}"));
        let ring = sensor.take_ring().expect("ring");
        let capture = Capture::new(ring).expect("capture");
        drop(_guard);
        Self {
            sensor,
            capture,
            records: Vec::new(),
            _rt: rt,
        }
    }

    /// Runs `bw-netprobe args` watched from its first instruction (like `audit -- CMD`),
    /// waits for it, and collects records until the kernel's books balance.
    pub fn run_watched(&mut self, args: &[&str]) -> u32 {
        self.run_watched_program(PathBuf::from(PROBE), args)
    }

    pub fn run_watched_program(&mut self, program: PathBuf, args: &[&str]) -> u32 {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let sensor = &mut self.sensor;
        let mut child = launch::spawn_gated(&program, &args, None, |pid| {
            sensor.watch_tgid(pid, WATCH_TAG_CGROUP)
        })
        .expect("spawn")
        .expect("register");
        let pid = child.id();
        let status = child.wait().expect("wait");
        assert!(status.success(), "{program:?} {args:?} failed: {status}");
        self.settle();
        pid
    }

    /// Drains until generated == delivered + lost (or 5 s).
    pub fn settle(&mut self) {
        let start = Instant::now();
        loop {
            let records = &mut self.records;
            self.capture.drain(|r| records.push(r));
            let k = self.counters();
            if k.generated == self.capture.delivered + k.lost {
                // One more short wait: a record reserved but not yet committed is counted
                // as generated already, so balance means everything is in.
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "records never balanced: {k:?}, delivered {}",
                self.capture.delivered
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn counters(&self) -> KernelCounters {
        self.sensor.counters().expect("counters")
    }

    pub fn socks(&self) -> Vec<&SockRecord> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Sock(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    pub fn socks_of(&self, pid: u32) -> Vec<&SockRecord> {
        self.socks()
            .into_iter()
            .filter(|s| s.header.tgid == pid)
            .collect()
    }
}
