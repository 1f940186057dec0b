//! Issue 12: with `--attach apps` the socket and packet programs run only in the cgroups
//! where watched apps live: attached when a watched app appears (at its scope's creation,
//! or at its exec), detached when its cgroup empties; every other process pays nothing.

mod common;

use std::{path::Path, time::Duration};

use common::{
    audit::{rows, run_in_cgroup, BackgroundAudit, Cleanup},
    require_root, PROBE,
};
use serde_json::Value;

fn summary(lines: &[Value]) -> &Value {
    lines.iter().find(|v| v["type"] == "summary").unwrap()
}

// Issue 12.
#[test]
fn attach_apps_runs_hooks_only_where_watched_apps_live() {
    require_root();
    let dir = std::env::temp_dir().join(format!("bw-attach-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = Cleanup(vec![dir.clone()]);
    let zoom = dir.join("zoom");
    std::fs::copy(PROBE, &zoom).unwrap();
    let other = dir.join("other-app");
    std::fs::copy(PROBE, &other).unwrap();
    let mount = brokerwatch::host::cgroup::cgroup2_mount().unwrap();
    let base = mount.join(format!("bwattach-{}", std::process::id()));
    let app = base.join("zoom-session");
    let elsewhere = base.join("elsewhere");
    let scope = base.join("app-flatpak-us.zoom.Zoom-9.scope");
    let _cg = Cleanup(vec![
        base.clone(),
        app.clone(),
        elsewhere.clone(),
        scope.clone(),
    ]);
    for d in [&app, &elsewhere] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (_l, port) = common::accepting_listener("127.0.0.1:0");
    let audit = BackgroundAudit::start(&["--app", "zoom", "--attach", "apps"]);
    // Nothing watched runs yet: nothing is attached.
    // A watched app appears in a cgroup of its own (exec'd there): the hooks follow it.
    // It goes online a moment after it starts, as apps do.
    run_in_cgroup(
        &app,
        &zoom,
        &["sleep:300", &format!("tcp:127.0.0.1:{port}")],
    );
    audit.wait_for_log("zoom-session: its processes now run the hooks");
    // An app scope created while watching is covered before anything runs in it.
    std::fs::create_dir_all(&scope).unwrap();
    audit.wait_for_log("app-flatpak-us.zoom.Zoom-9.scope: its processes now run the hooks");
    let helper = dir.join("bw-helper");
    std::fs::copy(PROBE, &helper).unwrap();
    run_in_cgroup(&scope, &helper, &[&format!("tcp:127.0.0.1:{port}")]);
    // An unwatched process elsewhere: its cgroup never runs the hooks.
    run_in_cgroup(&elsewhere, &other, &[&format!("tcp:127.0.0.1:{port}")]);
    // The watched app's cgroup empties: detached within a tick.
    audit.wait_for_log("zoom-session: detached");
    std::thread::sleep(Duration::from_millis(100));
    let (lines, log) = audit.finish();
    let contacts: Vec<&Value> = rows(&lines)
        .into_iter()
        .filter(|r| r["dst_port"] == port)
        .collect();
    let comms: Vec<&str> = contacts
        .iter()
        .map(|r| r["comm"].as_str().unwrap())
        .collect();
    assert!(comms.contains(&"zoom"), "{comms:?}\n{log}");
    assert!(comms.contains(&"bw-helper"), "{comms:?}\n{log}");
    assert!(
        !comms.contains(&"other-app"),
        "an unwatched process was seen: {comms:?}"
    );
    for r in &contacts {
        assert_eq!(r["app"], "Zoom", "{r}");
    }
    let hooks = summary(&lines)["hooks"].to_string();
    let root = format!("(cgroup {})\"", mount.display());
    assert!(!hooks.contains(&root), "attached at the root: {hooks}");
    assert!(!hooks.contains("elsewhere"), "{hooks}");
    assert!(Path::new(&scope).exists());
}

/// The programs `bpftool` lists as attached to the cgroup `dir` itself.
fn attached_to(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(dir)
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool cgroup show failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut names: Vec<String> = list
        .iter()
        .map(|p| p["name"].as_str().unwrap_or("").to_owned())
        .collect();
    names.sort();
    names
}

// Issue 23: the benchmarks' floor goes through the sensor's own attach step.
#[test]
fn floor_attaches_its_empty_programs_to_one_cgroup_and_detaches_them_when_dropped() {
    require_root();
    let mount = brokerwatch::host::cgroup::cgroup2_mount().unwrap();
    let dir = mount.join(format!("bwfloor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cg = Cleanup(vec![dir.clone()]);
    assert!(attached_to(&dir).is_empty());
    let floor = brokerwatch::kernel::floor::Floor::attach(&dir).unwrap();
    assert_eq!(
        attached_to(&dir),
        ["bw_floor_conn4", "bw_floor_in", "bw_floor_out"]
    );
    drop(floor);
    assert!(attached_to(&dir).is_empty());
}
