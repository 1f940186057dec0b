//! Issue 2: kernel capture and process attribution, with the real programs attached.
//! Run as root, one test at a time (`--test-threads=1`): they share the machine's cgroup root.

mod common;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, TcpListener, UdpSocket},
    path::PathBuf,
};

use brokerwatch::{
    engine::{Engine, Origin},
    kernel::{
        wire::{Proto, Record},
        BudgetSettings, SensorOptions,
    },
};
use common::{Harness, PROBE};
use monitor_common::{EventKind, MODE_NAMES};

fn tcp_listener(addr: &str) -> TcpListener {
    common::accepting_listener(addr).0
}

fn probe_name() -> String {
    PathBuf::from(PROBE)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

// Issue 2.
#[test]
fn capture_tcp_connect_v4_including_refused_and_nonblocking() {
    let mut h = Harness::new();
    let open = tcp_listener("127.0.0.1:0");
    let open_port = open.local_addr().unwrap().port();
    // A port with nothing listening: the connect fails, and must still be seen.
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pid = h.run_watched(&[
        &format!("tcp:127.0.0.1:{open_port}"),
        &format!("tcp:127.0.0.1:{closed_port}"),
        &format!("tcpnb:127.0.0.1:{open_port}"),
    ]);
    let socks = h.socks_of(pid);
    let ports: Vec<u16> = socks.iter().map(|s| s.port).collect();
    assert_eq!(ports, vec![open_port, closed_port, open_port], "{socks:#?}");
    for s in &socks {
        assert_eq!(s.kind, EventKind::Connect);
        assert_eq!(s.proto, Proto::Tcp);
        assert_eq!(s.dst, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(s.comm, probe_name()[..probe_name().len().min(15)]);
        assert_ne!(s.cookie, 0);
        assert!(s.header.ts_ns > 0);
        assert_ne!(s.header.cgroup_id, 0);
    }
    // Two different sockets, two cookies.
    let cookies: HashSet<u64> = socks.iter().map(|s| s.cookie).collect();
    assert_eq!(cookies.len(), 3);
}

// Issue 2.
#[test]
fn capture_tcp_connect_v6_and_v4_mapped() {
    let mut h = Harness::new();
    let l6 = tcp_listener("[::1]:0");
    let port6 = l6.local_addr().unwrap().port();
    let l4 = tcp_listener("127.0.0.1:0");
    let port4 = l4.local_addr().unwrap().port();
    let pid = h.run_watched(&[
        &format!("tcp:[::1]:{port6}"),
        &format!("tcp:[::ffff:127.0.0.1]:{port4}"),
    ]);
    let socks = h.socks_of(pid);
    assert_eq!(socks.len(), 2, "{socks:#?}");
    assert_eq!(socks[0].dst, "::1".parse::<IpAddr>().unwrap());
    assert_eq!(socks[0].port, port6);
    // A v4-mapped IPv6 destination is reported as IPv4.
    assert_eq!(socks[1].dst, "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(socks[1].port, port4);
}

// Issue 2.
#[test]
fn capture_udp_sendto_v4_and_v6_first_send_per_destination() {
    let mut h = Harness::new();
    let u4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let u6 = UdpSocket::bind("[::1]:0").unwrap();
    let p4 = u4.local_addr().unwrap().port();
    let p6 = u6.local_addr().unwrap().port();
    let before = h.counters().udp_repeats;
    // Each udp action sends twice to the same destination from one socket.
    let pid = h.run_watched(&[&format!("udp:127.0.0.1:{p4}"), &format!("udp:[::1]:{p6}")]);
    let socks = h.socks_of(pid);
    let got: Vec<(IpAddr, u16, Proto, EventKind)> = socks
        .iter()
        .map(|s| (s.dst, s.port, s.proto, s.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "127.0.0.1".parse().unwrap(),
                p4,
                Proto::Udp,
                EventKind::UdpSend
            ),
            ("::1".parse().unwrap(), p6, Proto::Udp, EventKind::UdpSend),
        ]
    );
    assert_eq!(
        h.counters().udp_repeats - before,
        2,
        "second sends are folded and counted"
    );
}

// Issue 2.
#[test]
fn capture_udp_connect_is_a_connect() {
    let mut h = Harness::new();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = u.local_addr().unwrap().port();
    let pid = h.run_watched(&[&format!("udpconnect:127.0.0.1:{port}")]);
    let socks = h.socks_of(pid);
    assert_eq!(socks.len(), 1);
    assert_eq!(
        (socks[0].kind, socks[0].proto, socks[0].port),
        (EventKind::Connect, Proto::Udp, port)
    );
}

// Issue 2.
#[test]
fn capture_grandchild_connect_is_attributed_through_the_tree() {
    let mut h = Harness::new();
    let l = tcp_listener("127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    let root = h.run_watched(&["--depth", "2", &format!("tcp:127.0.0.1:{port}")]);
    let mut engine = Engine::new();
    for r in &h.records {
        engine.handle(r);
    }
    let socks = h.socks();
    assert_eq!(socks.len(), 1, "{socks:#?}");
    let grandchild = socks[0].header.tgid;
    assert_ne!(grandchild, root);
    let chain = engine.ancestry(grandchild);
    assert!(chain.len() >= 2, "{chain:?}");
    let child = chain[0];
    assert_eq!(
        chain[1], root,
        "grandchild -> child -> audited root: {chain:?}"
    );
    for pid in [grandchild, child] {
        let p = engine.process(pid).unwrap();
        assert_eq!(p.exe.as_deref(), Some(PROBE), "{p:?}");
        assert_eq!(p.origin, Origin::Exec);
    }
}

// Issue 2.
#[test]
fn capture_500_short_lived_processes_each_attributed_with_exe_and_parent() {
    let mut h = Harness::with_options(SensorOptions {
        ring_bytes: 16 * 1024 * 1024,
        ..SensorOptions::default()
    });
    let l = tcp_listener("127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    let spawner = h.run_watched(&["--spawn", "500", &format!("tcp:127.0.0.1:{port}")]);
    assert_eq!(h.counters().lost, 0);
    let mut engine = Engine::new();
    for r in &h.records {
        engine.handle(r);
    }
    let socks = h.socks();
    assert_eq!(socks.len(), 500, "exactly one record per process");
    let pids: HashSet<u32> = socks.iter().map(|s| s.header.tgid).collect();
    assert_eq!(pids.len(), 500);
    for pid in pids {
        let p = engine
            .process(pid)
            .unwrap_or_else(|| panic!("pid {pid} unknown"));
        assert_eq!(p.exe.as_deref(), Some(PROBE));
        assert_eq!(p.ppid, spawner);
        assert!(p.exited, "exit of {pid} was reported");
    }
}

// Issue 2.
#[test]
fn capture_unwatched_process_produces_nothing() {
    let mut h = Harness::new();
    h.session.sensor.watch_name("bw-nothing-here", 99).unwrap();
    h.session.sensor.set_mode(MODE_NAMES).unwrap();
    let l = tcp_listener("127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    let before = h.counters();
    let status = std::process::Command::new(PROBE)
        .args([
            &format!("tcp:127.0.0.1:{port}"),
            &format!("udp:127.0.0.1:{port}"),
            "--depth",
            "1",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    h.settle();
    assert_eq!(
        h.counters().generated,
        before.generated,
        "no record generated"
    );
    assert!(h.records.is_empty(), "{:#?}", h.records);
}

// Issue 2.
#[test]
fn capture_watch_by_name_starts_at_exec() {
    let mut h = Harness::new();
    // A copy of the probe under a meeting-app-like name.
    let dir = tempdir();
    let zoom = dir.join("zoom");
    std::fs::copy(PROBE, &zoom).unwrap();
    h.session.sensor.watch_name("zoom", 77).unwrap();
    h.session.sensor.set_mode(MODE_NAMES).unwrap();
    let l = tcp_listener("127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    let status = std::process::Command::new(&zoom)
        .args(["--depth", "1", &format!("tcp:127.0.0.1:{port}")])
        .status()
        .unwrap();
    assert!(status.success());
    h.settle();
    let socks = h.socks();
    assert_eq!(socks.len(), 1, "{socks:#?}");
    assert_eq!(
        socks[0].watch_tag, 77,
        "the child inherits the parent's watch"
    );
    assert_eq!(socks[0].comm, "zoom");
    let execs: Vec<&Record> = h
        .records
        .iter()
        .filter(|r| r.kind() == EventKind::Exec)
        .collect();
    assert_eq!(execs.len(), 2, "parent and child execs: {execs:#?}");
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 2.
#[test]
fn capture_thread_comm_differs_from_process_comm() {
    let mut h = Harness::new();
    let l = tcp_listener("127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    let pid = h.run_watched(&["--thread", "bw-worker", &format!("tcp:127.0.0.1:{port}")]);
    let socks = h.socks_of(pid);
    assert_eq!(socks.len(), 1);
    assert_eq!(socks[0].thread_comm, "bw-worker");
    assert_eq!(socks[0].comm, probe_name()[..probe_name().len().min(15)]);
    assert_ne!(socks[0].header.tid, socks[0].header.tgid);
}

// Issue 2.
#[test]
fn capture_loss_invariant_holds_under_a_flood() {
    // A one-page ring buffer holds ~37 records: a flood must overflow it.
    let mut h = Harness::with_options(SensorOptions {
        ring_bytes: 4096,
        // The ring itself must overflow: no budget refuses the flood first.
        budget: Some(BudgetSettings::OFF),
        ..SensorOptions::default()
    });
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = u.local_addr().unwrap().port();
    let sensor = &mut h.session.sensor;
    let args = vec![
        "--repeat".to_owned(),
        "20000".to_owned(),
        format!("udpconnect:127.0.0.1:{port}"),
    ];
    let mut child =
        brokerwatch::session::launch::spawn_gated(&PathBuf::from(PROBE), &args, None, |pid| {
            sensor.watch_tgid(pid, 1)
        })
        .unwrap()
        .unwrap();
    // Do not read while it floods.
    assert!(child.wait().unwrap().success());
    h.settle();
    let k = h.counters();
    assert!(k.lost > 0, "the flood overflowed the ring: {k:?}");
    assert!(h.session.capture.delivered > 0);
    assert_eq!(
        k.generated,
        h.session.capture.delivered + k.lost,
        "generated = delivered + lost"
    );
    assert!(k.generated >= 20_000);
    let mut by_kind: HashMap<EventKind, usize> = HashMap::new();
    for r in &h.records {
        *by_kind.entry(r.kind()).or_default() += 1;
    }
    assert!(by_kind.get(&EventKind::Connect).copied().unwrap_or(0) > 0);
}

fn tempdir() -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("bw-test-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A watched process that execs from a non-leader thread: the kernel makes the old leader
/// exit first. The watch must survive, and the new program's connect be reported.
// Issue 2.
#[test]
fn capture_exec_from_a_non_leader_thread_keeps_the_watch() {
    let mut h = Harness::new();
    let l = tcp_listener("127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    let script = format!(
        "import os, threading\nt = threading.Thread(target=lambda: os.execv({PROBE:?}, [{PROBE:?}, 'tcp:127.0.0.1:{port}']))\nt.start()\nt.join()\n"
    );
    let python = std::process::Command::new("sh")
        .args(["-c", "command -v python3"])
        .output()
        .unwrap();
    let python = PathBuf::from(String::from_utf8_lossy(&python.stdout).trim().to_owned());
    let pid = h.run_watched_program(python, &["-c", &script]);
    let socks = h.socks_of(pid);
    assert_eq!(socks.len(), 1, "{:#?}", h.records);
    let exits: Vec<&Record> = h
        .records
        .iter()
        .filter(|r| r.kind() == EventKind::Exit && r.header().tgid == pid)
        .collect();
    assert_eq!(exits.len(), 1, "one exit, at the real end: {exits:#?}");
    let exit_pos = h
        .records
        .iter()
        .position(|r| r.kind() == EventKind::Exit && r.header().tgid == pid);
    let sock_pos = h
        .records
        .iter()
        .position(|r| matches!(r, Record::Sock(s) if s.header.tgid == pid));
    assert!(sock_pos < exit_pos);
}

/// The socket's cookie (`SO_COOKIE`), the number the kernel programs know it by.
fn cookie_of(fd: std::os::fd::RawFd) -> u64 {
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE: {}", std::io::Error::last_os_error());
    cookie
}

/// A fresh TCP socket whose cookie falls in `slot` (cookies count up: at most about 65,536
/// sockets are made and closed on the way), and its cookie.
fn socket_in_slot(slot: u32) -> (std::net::TcpStream, u64) {
    use std::os::fd::FromRawFd;
    for _ in 0..2_000_000 {
        // SAFETY: a new socket whose descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        let cookie = cookie_of(fd);
        if monitor_common::sock_watch_slot(cookie) == slot {
            // SAFETY: `fd` is a fresh socket nothing else owns.
            return (unsafe { std::net::TcpStream::from_raw_fd(fd) }, cookie);
        }
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
    }
    panic!("no socket's cookie fell in slot {slot}");
}

/// Connects the unconnected TCP socket `sock` to 127.0.0.1:`port`.
fn connect_loopback(sock: &std::net::TcpStream, port: u16) {
    use std::os::fd::AsRawFd;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect(2) reads `addr`, a sockaddr_in of the given length.
    let rc = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
}

// Issue 23: watched sockets are kept in a table of slots by cookie (a connect writes its
// slot in place). A watched socket that has not sent gives its slot to the next watched
// socket whose cookie falls there, and that is counted, never silent; a socket whose first
// payload was read loses nothing that names it, and is not counted.
#[test]
fn capture_socket_slot_reused_by_a_newer_watched_socket_is_counted() {
    use std::{io::Write, net::TcpStream, os::fd::AsRawFd};
    let mut h = Harness::new();
    let (_l, port) = common::accepting_listener("127.0.0.1:0");
    h.session
        .sensor
        .watch_tgid(std::process::id(), monitor_common::WATCH_TAG_CGROUP)
        .unwrap();
    let mut older = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let older_cookie = cookie_of(older.as_raw_fd());
    let slot = monitor_common::sock_watch_slot(older_cookie);
    let (mut newer, newer_cookie) = socket_in_slot(slot);
    let before = h.counters().sock_watch_replaced;
    connect_loopback(&newer, port);
    older
        .write_all(b"GET /older HTTP/1.1\r\nHost: older.test\r\n\r\n")
        .unwrap();
    newer
        .write_all(b"GET /newer HTTP/1.1\r\nHost: newer.test\r\n\r\n")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // The newer socket's first payload was read: a third socket taking the slot costs it
    // nothing that names it.
    let (mut third, third_cookie) = socket_in_slot(slot);
    connect_loopback(&third, port);
    third
        .write_all(b"GET /third HTTP/1.1\r\nHost: third.test\r\n\r\n")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    h.settle();
    assert_eq!(
        h.counters().sock_watch_replaced - before,
        1,
        "only the slot of the socket that had not sent counts"
    );
    let payloads: Vec<u64> = h
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Packet(p) if p.kind == EventKind::Payload => Some(p.cookie),
            _ => None,
        })
        .collect();
    assert!(payloads.contains(&newer_cookie), "{payloads:?}");
    assert!(payloads.contains(&third_cookie), "{payloads:?}");
    assert!(
        !payloads.contains(&older_cookie),
        "the older socket's slot went to the newer one: {payloads:?}"
    );
}
