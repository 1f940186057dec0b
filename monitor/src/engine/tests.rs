use monitor_common::EventHeader;

use super::*;
use crate::kernel::wire::{CgroupRecord, ExecRecord, ExitRecord, ForkRecord};

#[derive(Default)]
pub(super) struct NoProc;
impl ProcSource for NoProc {
    fn snapshot(&mut self, _pid: u32) -> Option<ProcSnapshot> {
        None
    }
    fn app_of(&mut self, _pid: u32, cgroup: Option<&str>) -> Option<AppIdentity> {
        cgroup.and_then(appid::from_cgroup_path)
    }
}

pub(super) const NS: u64 = 4026531840;

pub(super) fn hdr(kind: EventKind, tgid: u32, ts: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tgid,
        tid: tgid,
        uid: 1000,
        ts_ns: ts,
        cgroup_id: 5,
    }
}

pub(super) fn connect(tgid: u32, ts: u64, port: u16) -> Record {
    Record::Sock(SockRecord {
        header: hdr(EventKind::Connect, tgid, ts),
        kind: EventKind::Connect,
        cookie: ts,
        dst: "127.0.0.1".parse().unwrap(),
        port,
        proto: Proto::Tcp,
        gid: 1000,
        watch_tag: 1,
        netns: NS,
        blocked: None,
        comm: "zoom".into(),
        thread_comm: "zoom".into(),
    })
}

/// The DNS fixture's answer (`api.vendor.test` -> 127.0.0.3) as received by `tgid`.
pub(super) fn dns_fixture_answer(tgid: u32) -> Record {
    let ans = crate::naming::dns::tests::answer_bytes();
    Record::Packet(PacketRecord {
        header: hdr(EventKind::DnsAnswer, tgid, 1),
        kind: EventKind::DnsAnswer,
        cookie: 99,
        proto: Proto::Udp,
        src: "127.0.0.1".parse().unwrap(),
        src_port: 53,
        dst_port: 5000,
        seq: 0,
        orig_len: ans.len() as u32,
        netns: NS,
        data: ans,
    })
}

#[test]
fn a_process_gone_before_procfs_keeps_exe_and_parent_from_its_exec() {
    let mut e = Engine::with_source(NoProc);
    e.name_watch_tag(1, "audit");
    e.handle(&Record::Fork(ForkRecord {
        header: hdr(EventKind::Fork, 100, 1),
        child_tgid: 101,
        watch_tag: 1,
        comm: "sh".into(),
    }));
    e.handle(&Record::Exec(ExecRecord {
        header: hdr(EventKind::Exec, 101, 2),
        ppid: 100,
        watch_tag: 1,
        comm: "zoom".into(),
        filename: "/opt/zoom/zoom".into(),
        exe: Some("/opt/zoom/zoom".into()),
        exe_truncated: false,
    }));
    e.handle(&connect(101, 3, 443));
    e.handle(&Record::Exit(ExitRecord {
        header: hdr(EventKind::Exit, 101, 4),
        exit_code: 0,
    }));
    let p = e.process(101).unwrap();
    assert_eq!(p.exe.as_deref(), Some("/opt/zoom/zoom"));
    assert_eq!((p.ppid, p.exited, p.origin), (100, true, Origin::Exec));
    assert_eq!(p.watch.as_deref(), Some("audit"));
    assert_eq!(e.ancestry(101), vec![100]);
    assert_eq!(e.connections().len(), 1);
}

#[test]
fn repeated_connections_aggregate_with_first_and_last_seen() {
    let mut e = Engine::with_source(NoProc);
    for ts in [30, 10, 20] {
        e.handle(&connect(7, ts, 443));
    }
    e.handle(&connect(7, 40, 80));
    let rows = e.connections();
    assert_eq!(rows.len(), 2);
    let (k, agg) = &rows[0];
    assert_eq!(
        (k.port, agg.count, agg.first_ns, agg.last_ns),
        (443, 3, 10, 30)
    );
    assert_eq!(rows[1].1.count, 1);
    assert_eq!(e.stats.sock_records, 4);
    // The unknown process got a bare entry from its record.
    assert_eq!(e.process(7).unwrap().origin, Origin::Unknown);
    assert_eq!(e.process(7).unwrap().comm, "zoom");
}

pub(super) fn payload_name(e: &mut Engine<NoProc>, cookie: u64, sni: &str) {
    e.name_socket(
        cookie,
        WireName {
            name: sni.into(),
            source: NameSource::Sni,
            ech: false,
            partial: false,
        },
    );
}

#[test]
fn a_late_sni_moves_one_connection_with_its_own_time() {
    let mut e = Engine::with_source(NoProc);
    e.handle(&dns_fixture_answer(7));
    let mut c = |cookie: u64, ts: u64| {
        let Record::Sock(mut s) = connect(7, ts, 443) else {
            unreachable!()
        };
        s.cookie = cookie;
        s.dst = "127.0.0.3".parse().unwrap();
        e.handle(&Record::Sock(s));
    };
    c(1, 10);
    c(2, 20);
    c(3, 30);
    let rows = e.connections();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0.domain.as_deref(), Some("api.vendor.test"));
    assert_eq!(rows[0].1.count, 3);
    // Socket 2 said otherwise in its ClientHello.
    payload_name(&mut e, 2, "other.example");
    payload_name(&mut e, 2, "other.example");
    // Socket 1 agrees with DNS: the row just learns the better source.
    payload_name(&mut e, 1, "api.vendor.test");
    let rows = e.connections();
    assert_eq!(rows.len(), 2);
    let dns_row = rows
        .iter()
        .find(|(k, _)| k.domain.as_deref() == Some("api.vendor.test"))
        .unwrap();
    assert_eq!(
        (dns_row.1.count, dns_row.1.domain_source),
        (2, Some(NameSource::Sni))
    );
    let moved = rows
        .iter()
        .find(|(k, _)| k.domain.as_deref() == Some("other.example"))
        .unwrap();
    assert_eq!(moved.1.count, 1, "one connection moved, once");
    assert_eq!(
        (moved.1.first_ns, moved.1.last_ns),
        (20, 20),
        "its own time"
    );
    assert_eq!(
        moved.1.dns.as_ref().unwrap().qname,
        "api.vendor.test",
        "DNS name kept"
    );
}

#[test]
fn row_overflow_is_counted_not_silent() {
    let mut e = Engine::with_source(NoProc);
    e.max_rows = 2;
    for port in 1..=5 {
        e.handle(&connect(7, port as u64, port));
    }
    assert_eq!(e.connections().len(), 2);
    assert_eq!(e.stats.rows_dropped, 3);
}

#[test]
fn forked_child_inherits_exe_and_app() {
    let mut e = Engine::with_source(NoProc);
    e.add_snapshot(
        ProcSnapshot {
            pid: 50,
            ppid: 1,
            comm: "zoom".into(),
            exe: Some("/opt/zoom/zoom".into()),
            cmdline: vec!["zoom".into()],
            uid: 1000,
            cgroup: Some("/user.slice/user-1000.slice/user@1000.service/app.slice/app-flatpak-us.zoom.Zoom-9.scope".into()),
        },
        None,
    );
    e.handle(&Record::Fork(ForkRecord {
        header: hdr(EventKind::Fork, 50, 1),
        child_tgid: 51,
        watch_tag: 1,
        comm: "zoom".into(),
    }));
    let child = e.process(51).unwrap();
    assert_eq!(child.exe.as_deref(), Some("/opt/zoom/zoom"));
    assert_eq!(
        child.app,
        Some(AppIdentity::Flatpak {
            id: "us.zoom.Zoom".into()
        })
    );
}

fn exec(tgid: u32, comm: &str, filename: &str, exe: Option<&str>) -> Record {
    Record::Exec(ExecRecord {
        header: hdr(EventKind::Exec, tgid, 2),
        ppid: 1,
        watch_tag: 1,
        comm: comm.into(),
        filename: filename.into(),
        exe: exe.map(Into::into),
        exe_truncated: false,
    })
}

#[test]
fn engine_proc_self_exe_helpers_get_their_real_exe_and_name() {
    // Issue 10: Chromium's network service is started as /proc/self/exe.
    let mut e = Engine::with_source(NoProc);
    e.handle(&exec(
        60,
        "exe",
        "/proc/self/exe",
        Some("/usr/lib/chromium/chromium"),
    ));
    let p = e.process(60).unwrap();
    assert_eq!(p.exe.as_deref(), Some("/usr/lib/chromium/chromium"));
    assert_eq!(p.comm, "chromium");
    assert_eq!(p.exec_path.as_deref(), Some("/proc/self/exe"));
    // A socket record with the kernel's stale name changes nothing; a new name (the
    // process renamed itself) replaces it.
    let Record::Sock(mut s) = connect(60, 3, 443) else {
        unreachable!()
    };
    s.comm = "exe".into();
    e.handle(&Record::Sock(s.clone()));
    assert_eq!(e.process(60).unwrap().comm, "chromium");
    s.comm = "NetworkService".into();
    s.cookie = 4;
    e.handle(&Record::Sock(s));
    assert_eq!(e.process(60).unwrap().comm, "NetworkService");
}

#[test]
fn engine_a_symlinked_exec_keeps_both_paths() {
    let mut e = Engine::with_source(NoProc);
    e.handle(&exec(
        61,
        "firefox-esr",
        "/usr/bin/firefox-esr",
        Some("/usr/lib/firefox-esr/firefox-esr"),
    ));
    let p = e.process(61).unwrap();
    assert_eq!(p.exe.as_deref(), Some("/usr/lib/firefox-esr/firefox-esr"));
    assert_eq!(p.exec_path.as_deref(), Some("/usr/bin/firefox-esr"));
}

#[test]
fn engine_a_process_moving_to_an_app_scope_takes_its_identity() {
    // Issue 10: `flatpak run` moves itself into a new scope before the app starts.
    let mut e = Engine::with_source(NoProc);
    e.handle(&connect(70, 1, 443));
    assert_eq!(e.process(70).unwrap().app, None);
    e.handle(&Record::Cgroup(CgroupRecord {
        header: hdr(EventKind::CgroupAttach, 70, 2),
        kind: EventKind::CgroupAttach,
        cgroup_id: 9001,
        tgid: 70,
        watch_tag: 1,
        path: "/user.slice/user-1000.slice/user@1000.service/app.slice/app-flatpak-us.zoom.Zoom-77.scope".into(),
    }));
    let p = e.process(70).unwrap();
    assert_eq!(p.cgroup_id, 9001);
    assert_eq!(
        p.app,
        Some(AppIdentity::Flatpak {
            id: "us.zoom.Zoom".into()
        })
    );
    // A process exec'd later in a known cgroup gets the identity from the cgroup's path.
    let Record::Exec(mut x) = exec(71, "helper", "/app/bin/helper", None) else {
        unreachable!()
    };
    x.header.cgroup_id = 9001;
    e.handle(&Record::Exec(x));
    assert!(matches!(
        e.process(71).unwrap().app,
        Some(AppIdentity::Flatpak { .. })
    ));
}

#[test]
fn engine_touched_rows_cover_repeats_renames_and_rows_a_rename_emptied() {
    let mut e = Engine::with_source(NoProc);
    let c = |e: &mut Engine<NoProc>, cookie: u64, ts: u64| {
        let Record::Sock(mut s) = connect(7, ts, 443) else {
            unreachable!()
        };
        s.cookie = cookie;
        s.dst = "127.0.0.3".parse().unwrap();
        e.handle(&Record::Sock(s));
    };
    c(&mut e, 1, 10);
    let t = e.take_touched();
    assert_eq!((t.rows.len(), t.merged.len()), (1, 0));
    assert!(e.take_touched().rows.is_empty(), "taken once");
    c(&mut e, 2, 20);
    let rows = e.take_touched().rows;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.count, 2, "a repeat updates the row");
    // Both sockets name the same host: the unnamed row empties into the named one.
    payload_name(&mut e, 1, "other.example");
    payload_name(&mut e, 2, "other.example");
    let super::Touched { rows, merged } = e.take_touched();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0.domain.as_deref(), Some("other.example"));
    assert_eq!(rows[0].1.count, 2);
    assert_eq!(merged.len(), 1, "the emptied row is forgotten");
    assert_eq!((merged[0].0.domain.as_deref(), merged[0].1), (None, 1));
}

#[test]
fn engine_a_flood_across_ports_of_one_address_costs_one_row_beyond_the_first_ports() {
    let mut e = Engine::with_source(NoProc);
    for i in 0..5_000u16 {
        e.handle(&connect(7, 10 + u64::from(i), 1_000 + i));
    }
    // Another process and another address keep rows of their own.
    e.handle(&connect(8, 9_000, 1_000));
    let rows = e.connections();
    assert_eq!(
        rows.len(),
        MAX_PORTS_PER_DEST as usize + 2,
        "{}",
        rows.len()
    );
    let folded: Vec<_> = rows
        .iter()
        .filter(|(k, _)| k.pid == 7 && k.port == FOLDED_PORT)
        .collect();
    assert_eq!(folded.len(), 1);
    assert_eq!(folded[0].1.count, 5_000 - u64::from(MAX_PORTS_PER_DEST));
    // A port already seen keeps its own row.
    e.handle(&connect(7, 20_000, 1_000));
    let again = e.connections();
    let own = again
        .iter()
        .find(|(k, _)| k.pid == 7 && k.port == 1_000)
        .unwrap();
    assert_eq!(own.1.count, 2);
    // Once the old rows are gone, new ports get rows of their own again.
    e.prune(15_000);
    e.handle(&connect(7, 30_000, 2));
    assert!(e
        .connections()
        .iter()
        .any(|(k, _)| k.pid == 7 && k.port == 2));
}

// Issue 24, item 4: the app's own getaddrinfo() result names its connections where no DNS
// packet reached it; it never hides a DNS answer's CNAME chain, and literal addresses name
// nothing.
