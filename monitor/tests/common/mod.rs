//! Shared harness of the root-only integration tests: real programs, loaded and attached.
//! These tests never skip: without root or BPF they fail, saying why.
#![allow(dead_code)]

use std::path::PathBuf;

use brokerwatch::{
    kernel::{
        wire::{Record, SockRecord},
        KernelCounters, SensorOptions,
    },
    policy::Policy,
    session::{launch, Blocking, Patience, Plan, Session},
};
use monitor_common::WATCH_TAG_CGROUP;

pub mod audit;
pub mod daemon;
pub mod journal;
pub mod lab;
pub mod resolved;

pub const PROBE: &str = env!("CARGO_BIN_EXE_bw-netprobe");

/// A session that watches nothing by itself (the test names what to watch), with every
/// record it took kept for the test to look at.
pub struct Harness {
    pub session: Session,
    pub records: Vec<Record>,
    rt: tokio::runtime::Runtime,
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

/// A self-signed certificate for `cn` in `dir`: (key, cert).
pub fn self_signed(dir: &std::path::Path, cn: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (key, cert)
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
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
        let session = Session::start(&Plan::bare(opts), &Policy::default(), Blocking::new())
            .unwrap_or_else(|e| panic!("loading the sensor: {e:#}"));
        drop(_guard);
        Self {
            session,
            records: Vec::new(),
            rt,
        }
    }

    /// Runs `bw-netprobe args` watched from its first instruction (like `audit -- CMD`),
    /// waits for it, and collects records until the kernel's books balance.
    pub fn run_watched(&mut self, args: &[&str]) -> u32 {
        self.run_watched_program(PathBuf::from(PROBE), args)
    }

    pub fn run_watched_program(&mut self, program: PathBuf, args: &[&str]) -> u32 {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let sensor = &mut self.session.sensor;
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
        let records = &mut self.records;
        let session = &mut self.session;
        let balanced = self
            .rt
            .block_on(session.settle(Patience::TEST, |r| records.push(r.clone())))
            .expect("settling");
        assert!(
            balanced,
            "records never balanced: {:?}, delivered {}",
            self.counters(),
            self.session.capture.delivered
        );
    }

    pub fn counters(&self) -> KernelCounters {
        self.session.counters().expect("counters")
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
