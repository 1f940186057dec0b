//! Issue 22, item 1: each user's record budget in the kernel. A flood costs its own user's
//! records (refused, counted, folded per process and destination), never another user's;
//! destinations that alerted always pass; subordinate uids spend their owner's budget.
//! The real programs are loaded and attached (root); traffic goes to loopback only.

mod common;

use std::{net::IpAddr, process::Command};

use brokerwatch::{
    host::users::SubUids,
    kernel::{wire::Record, BudgetSettings, SensorOptions},
};
use common::{Harness, PROBE};
use monitor_common::{EventKind, MODE_NAMES};

/// A budget small enough for a test to exhaust at once: about eight connect records a
/// second, a burst of two seconds' worth.
fn tiny_budget() -> SensorOptions {
    SensorOptions {
        budget: Some(BudgetSettings {
            bytes_per_sec: 1024,
            burst_bytes: 2048,
        }),
        ..SensorOptions::default()
    }
}

fn connects_to(h: &Harness, pid: Option<u32>, dst: &str) -> usize {
    let dst: IpAddr = dst.parse().unwrap();
    h.records
        .iter()
        .filter(|r| match r {
            Record::Sock(s) => {
                s.kind == EventKind::Connect
                    && s.dst == dst
                    && pid.is_none_or(|p| s.header.tgid == p)
            }
            _ => false,
        })
        .count()
}

/// A copy of the probe named `zoom` in a directory every user can read (the sensor watches
/// that name): the directory, to remove at the end, and the program.
fn watched_zoom(h: &mut Harness, tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("bw-budget-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let zoom = dir.join("zoom");
    std::fs::copy(PROBE, &zoom).unwrap();
    h.session.sensor.watch_name("zoom", 16).unwrap();
    h.session.sensor.set_mode(MODE_NAMES).unwrap();
    (dir, zoom)
}

#[test]
fn budget_a_flood_is_refused_and_folded_while_a_flagged_destination_always_passes() {
    let mut h = Harness::with_options(tiny_budget());
    // 127.0.0.2 alerted before: its calls pass whatever the budget.
    h.session
        .sensor
        .prioritise("127.0.0.2".parse().unwrap())
        .unwrap();
    let pid = h.run_watched(&[
        "--repeat",
        "300",
        "udpconnect:127.0.0.9:9",
        "udpconnect:127.0.0.9:10",
        "tcp:127.0.0.2:9",
    ]);
    // The books balance with the refusals in them (settle checks it).
    let k = h.counters();
    assert!(k.over_budget >= 500, "{k:?}");
    assert_eq!(
        k.generated,
        h.session.capture.delivered + k.lost + k.over_budget
    );
    assert_eq!(
        connects_to(&h, Some(pid), "127.0.0.2"),
        300,
        "every flagged call"
    );
    let flood = connects_to(&h, Some(pid), "127.0.0.9");
    assert!(flood < 60, "{flood} of 600 flood calls reported");
    // What was refused is folded per process and destination, ports aside.
    let folded = h.session.sensor.take_folded().unwrap();
    let mine = folded
        .iter()
        .find(|f| f.tgid == pid && f.dst == "127.0.0.9".parse::<IpAddr>().unwrap())
        .unwrap_or_else(|| panic!("{folded:?}"));
    assert_eq!(mine.calls + flood as u64, 600, "{mine:?}");
    assert!(mine.ports >= 2, "{mine:?}");
    assert_eq!(mine.uid, 0);
    assert!(h.session.sensor.take_folded().unwrap().is_empty(), "taken");
    let over = h.session.sensor.users_over().unwrap();
    assert!(
        over.iter().any(|u| u.uid == 0 && u.refused >= 500),
        "{over:?}"
    );
}

#[test]
fn budget_a_subordinate_uids_flood_spends_its_owners_budget_and_no_one_elses() {
    let mut h = Harness::with_options(tiny_budget());
    h.session
        .sensor
        .set_budget_owners(&SubUids::parse("4242:200000:65536\n", |_| None))
        .unwrap();
    let (dir, zoom) = watched_zoom(&mut h, "owner");
    // A subordinate uid of user 4242 floods.
    let st = Command::new("setpriv")
        .args(["--reuid=200005", "--regid=200005", "--clear-groups"])
        .arg(&zoom)
        .args(["--repeat", "500", "udpconnect:127.0.0.9:9"])
        .status()
        .unwrap();
    assert!(st.success());
    // Root's app right after: its own budget is untouched.
    let st = Command::new(&zoom).arg("tcp:127.0.0.2:9").status().unwrap();
    assert!(st.success());
    h.settle();
    assert_eq!(
        connects_to(&h, None, "127.0.0.2"),
        1,
        "root's call reported"
    );
    let over = h.session.sensor.users_over().unwrap();
    assert!(
        over.iter().any(|u| u.uid == 4242 && u.refused >= 400),
        "the owner is charged: {over:?}"
    );
    assert!(
        over.iter().all(|u| u.uid != 200_005 && u.uid != 0),
        "{over:?}"
    );
    let folded = h.session.sensor.take_folded().unwrap();
    assert!(folded.iter().any(|f| f.uid == 4242), "{folded:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn budget_two_users_whose_uids_share_a_slot_keep_budgets_of_their_own() {
    let mut h = Harness::with_options(tiny_budget());
    let (dir, zoom) = watched_zoom(&mut h, "slot");
    // 5000 and 6024 have the same low bits: the second finds the slot held.
    let first = 5000;
    let second = first + monitor_common::BUDGET_SLOT_COUNT;
    assert_eq!(
        monitor_common::budget_slot(first),
        monitor_common::budget_slot(second)
    );
    let run_as = |uid: u32, args: &[&str]| {
        let st = Command::new("setpriv")
            .args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
            ])
            .arg(&zoom)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success());
    };
    run_as(first, &["--repeat", "500", "udpconnect:127.0.0.9:9"]);
    // The slot's holder is out of budget; the other user's few calls are all reported.
    run_as(second, &["--repeat", "3", "tcp:127.0.0.3:9"]);
    run_as(second, &["--repeat", "500", "udpconnect:127.0.0.9:9"]);
    h.settle();
    assert_eq!(
        connects_to(&h, None, "127.0.0.3"),
        3,
        "the second user's calls"
    );
    let over = h.session.sensor.users_over().unwrap();
    for uid in [first, second] {
        assert!(
            over.iter().any(|u| u.uid == uid && u.refused >= 400),
            "uid {uid} charged for its own flood: {over:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
