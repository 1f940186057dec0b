//! Issue 5: alerts reach a real desktop. A session of user `nobody` (Xvfb, a session D-Bus,
//! dunst as the notification server) runs `brokerwatch notify`; a process of that user named
//! like a meeting app contacts a test data broker in a burst. One notification appears,
//! naming the company and the destination; another user's subscription receives nothing.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{
    daemon::{lab_dir, policy_text, wait_for, Daemon, BIN},
    require_root, PROBE,
};

const NOBODY: &str = "--reuid=65534";

/// Processes of a desktop session, killed on drop.
struct Session {
    children: Vec<Child>,
    env: Vec<(String, String)>,
}

impl Session {
    fn start(dir: &Path, display: u32) -> Self {
        let bus_dir = dir.join("bus");
        std::fs::create_dir_all(&bus_dir).unwrap();
        std::os::unix::fs::chown(&bus_dir, Some(65534), Some(65534)).unwrap();
        let env = vec![
            ("DISPLAY".to_owned(), format!(":{display}")),
            (
                "DBUS_SESSION_BUS_ADDRESS".to_owned(),
                format!("unix:path={}/bus", bus_dir.display()),
            ),
            ("HOME".to_owned(), dir.display().to_string()),
            (
                "XDG_CONFIG_HOME".to_owned(),
                dir.join("config").display().to_string(),
            ),
        ];
        let mut s = Session {
            children: Vec::new(),
            env,
        };
        s.spawn(&[
            "Xvfb",
            &format!(":{display}"),
            "-screen",
            "0",
            "1024x768x24",
            "-nolisten",
            "tcp",
        ]);
        s.spawn(&[
            "dbus-daemon",
            "--session",
            "--nofork",
            "--nopidfile",
            &format!("--address=unix:path={}/bus", bus_dir.display()),
        ]);
        wait_for(|| bus_dir.join("bus").exists(), "the session bus");
        wait_for(
            || {
                Command::new("xdpyinfo")
                    .args(["-display", &format!(":{display}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            },
            "Xvfb",
        );
        s.spawn(&["dunst"]);
        wait_for(|| s.dunstctl(&["count", "displayed"]).is_some(), "dunst");
        s
    }

    fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args([NOBODY, "--regid=65534", "--clear-groups"])
            .args(argv);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn spawn(&mut self, argv: &[&str]) {
        let child = self
            .command(argv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        self.children.push(child);
    }

    /// Like `spawn`, its standard error kept in `log` (for a failure's message).
    fn spawn_logged(&mut self, argv: &[&str], log: &Path) {
        let child = self
            .command(argv)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        self.children.push(child);
    }

    fn dunstctl(&self, args: &[&str]) -> Option<String> {
        let mut argv = vec!["dunstctl"];
        argv.extend_from_slice(args);
        let out = self.command(&argv).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn notifications(&self) -> usize {
        let n = |what: &str| {
            self.dunstctl(&["count", what])
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0)
        };
        n("displayed") + n("history") + n("waiting")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// Issue 5.
#[test]
fn notify_a_burst_of_alerts_is_one_desktop_notification_for_its_user_only() {
    require_root();
    let dir = lab_dir("notify");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Test Data Broker Inc."),
    )
    .unwrap();
    let (_l, port) = common::accepting_listener("127.0.0.2:0");
    let daemon = Daemon::start(&dir);
    let session = Session::start(&dir, 93);
    let socket = dir.join("run/brokerwatch.sock");
    let mut session = session;
    session.spawn(&[BIN, "-v", "notify", "--socket", socket.to_str().unwrap()]);
    // Another user's subscription, to prove it receives nothing of nobody's.
    let other_out = dir.join("other-events.jsonl");
    let other = Command::new("setpriv")
        .args([
            "--reuid=65533",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "events",
            "--socket",
        ])
        .arg(&socket)
        .stdout(std::fs::File::create(&other_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));

    // A burst: 20 short-lived processes of nobody, a copy of curl named like Zoom, each
    // asking the broker's host for a page (the name comes from the Host header).
    let zoom = dir.join("zoom");
    let curl = Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .unwrap();
    std::fs::copy(String::from_utf8_lossy(&curl.stdout).trim(), &zoom).unwrap();
    let burst = format!(
        "for i in $(seq 20); do {} -s -o /dev/null -m 2 --resolve broker.test:{port}:127.0.0.2 http://broker.test:{port}/; done; true",
        zoom.display()
    );
    assert!(session
        .command(&["sh", "-c", &burst])
        .status()
        .unwrap()
        .success());
    wait_for(|| session.notifications() >= 1, "a notification");
    std::thread::sleep(Duration::from_secs(3));
    let shot = artifacts().join("issue5-notification.png");
    let _ = Command::new("import")
        .args(["-window", "root", "-display", ":93"])
        .arg(&shot)
        .status();
    assert_eq!(
        session.notifications(),
        1,
        "one notification for the burst; daemon log:\n{}",
        daemon.log()
    );
    // Displayed notifications reach dunst's history once closed.
    let _ = session.dunstctl(&["close-all"]);
    let text = session.dunstctl(&["history"]).unwrap_or_default();
    assert!(text.contains("Zoom contacted a data broker"), "{text}");
    assert!(text.contains("Test Data Broker Inc."), "{text}");
    assert!(text.contains("broker.test"), "the domain is named: {text}");
    // The daemon dies (SIGKILL) and comes back: the agent reconnects by itself and the next
    // alert (another company, so not deduplicated) is shown.
    let mut daemon = daemon;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    drop(daemon);
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Another Broker LLC"),
    )
    .unwrap();
    let daemon = Daemon::start(&dir);
    std::thread::sleep(Duration::from_secs(6));
    std::fs::create_dir_all(dir.join("probe")).unwrap();
    let probe = dir.join("probe/zoom");
    std::fs::copy(PROBE, &probe).unwrap();
    let status = session
        .command(&[probe.to_str().unwrap(), &format!("tcp:127.0.0.2:{port}")])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(
        || session.notifications() >= 2,
        "a notification after the daemon restarted",
    );
    let _ = session.dunstctl(&["close-all"]);
    let text = session.dunstctl(&["history"]).unwrap_or_default();
    assert!(text.contains("Another Broker LLC"), "{text}");
    let mut other = other;
    let _ = other.kill();
    let _ = other.wait();
    let other_events = std::fs::read_to_string(&other_out).unwrap_or_default();
    assert!(
        other_events.trim().is_empty(),
        "another user saw: {other_events}"
    );
    drop(session);
    drop(daemon);
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 15: the notification's Block button (the server's ActionInvoked signal, as dunst
// sends it when the user picks the action) blocks the pair for that user.
#[test]
fn notify_block_button_blocks_the_app_and_company_for_that_user() {
    require_root();
    let dir = lab_dir("notify-block");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        format!(
            "{}\n[settings]\nallow_user_blocks = true\n",
            policy_text("Test Data Broker Inc.")
        ),
    )
    .unwrap();
    let (_l, port) = common::accepting_listener("127.0.0.2:0");
    let daemon = Daemon::start(&dir);
    let mut session = Session::start(&dir, 94);
    let socket = dir.join("run/brokerwatch.sock");
    let agent_log = dir.join("agent.log");
    session.spawn_logged(
        &[BIN, "-v", "notify", "--socket", socket.to_str().unwrap()],
        &agent_log,
    );
    let logs = || {
        format!(
            "daemon:\n{}\nagent:\n{}",
            daemon.log(),
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        )
    };
    std::thread::sleep(Duration::from_millis(800));
    std::fs::create_dir_all(dir.join("probe")).unwrap();
    let zoom = dir.join("probe/zoom");
    std::fs::copy(PROBE, &zoom).unwrap();
    let out = dir.join("probe/out");
    let contact = || {
        std::fs::write(&out, "").unwrap();
        std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let st = session
            .command(&[
                zoom.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                &format!("tcp:127.0.0.2:{port}"),
            ])
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read_to_string(&out).unwrap_or_default()
    };
    assert!(
        contact().ends_with(" ok\n"),
        "the first contact goes through"
    );
    wait_for(|| session.notifications() >= 1, "the alert");
    // The user reads it (and its burst ends) before picking an action.
    std::thread::sleep(Duration::from_secs(2));
    // The user picks Block on it: the server says so on the bus, naming the notification
    // the agent says it showed with buttons.
    let agent_text = std::fs::read_to_string(&agent_log).unwrap_or_default();
    let ids: Vec<&str> = agent_text
        .lines()
        .filter_map(|l| {
            l.split("notification ")
                .nth(1)?
                .strip_suffix(" shown with buttons")
        })
        .collect();
    assert!(!ids.is_empty(), "no notification with buttons; {}", logs());
    for id in ids {
        let sent = session
            .command(&[
                "dbus-send",
                "--session",
                "--type=signal",
                "/org/freedesktop/Notifications",
                "org.freedesktop.Notifications.ActionInvoked",
                &format!("uint32:{id}"),
                "string:block",
            ])
            .status()
            .unwrap();
        assert!(sent.success());
    }
    let start = std::time::Instant::now();
    while !daemon
        .log()
        .contains("asked to block Zoom -> Test Data Broker Inc.: Ok(")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no block request from the agent; {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The next contact is denied, and the agent says what happened.
    wait_for(|| contact().ends_with(" denied\n"), "the contact denied");
    let start = std::time::Instant::now();
    while session.notifications() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no answer and Blocked note: {} notifications; {}",
            session.notifications(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = session.dunstctl(&["close-all"]);
    let text = session.dunstctl(&["history"]).unwrap_or_default();
    assert!(text.contains("blocked for you"), "{text}");
    assert!(
        text.contains("Blocked: Zoom -> Test Data Broker Inc."),
        "{text}"
    );
    // Root's processes are not bound by nobody's block.
    let root_out = dir.join("probe/root-out");
    let st = Command::new(&zoom)
        .arg("--out")
        .arg(&root_out)
        .arg(format!("tcp:127.0.0.2:{port}"))
        .status()
        .unwrap();
    assert!(st.success());
    let root_seen = std::fs::read_to_string(&root_out).unwrap_or_default();
    assert!(root_seen.ends_with(" ok\n"), "{root_seen}");
    drop(session);
    drop(daemon);
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 26, item 2: the opt-in digest of what is new. The agent runs with `--digest 4s`;
// the user's app contacts a broker for the first time; the digest names it.
#[test]
fn notify_digest_names_the_companies_an_app_contacted_for_the_first_time() {
    require_root();
    let dir = lab_dir("notify-digest");
    std::fs::write(
        dir.join("policies.d/test.toml"),
        policy_text("Digest Broker Ltd"),
    )
    .unwrap();
    let (_l, port) = common::accepting_listener("127.0.0.2:0");
    let daemon = Daemon::start(&dir);
    let mut session = Session::start(&dir, 96);
    let state = dir.join("state-of-nobody");
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let socket = dir.join("run/brokerwatch.sock");
    let agent = session
        .command(&[
            BIN,
            "-v",
            "notify",
            "--socket",
            socket.to_str().unwrap(),
            "--digest",
            "4s",
        ])
        .env("XDG_STATE_HOME", &state)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("notify.log")).unwrap())
        .spawn()
        .unwrap();
    session.children.push(agent);
    std::thread::sleep(Duration::from_millis(800));
    std::fs::create_dir_all(dir.join("probe")).unwrap();
    let probe = dir.join("probe/zoom");
    std::fs::copy(PROBE, &probe).unwrap();
    let status = session
        .command(&[probe.to_str().unwrap(), &format!("tcp:127.0.0.2:{port}")])
        .status()
        .unwrap();
    assert!(status.success());
    let mut text = String::new();
    wait_for(
        || {
            let _ = session.dunstctl(&["close-all"]);
            text = session.dunstctl(&["history"]).unwrap_or_default();
            text.contains("never contacted before")
        },
        "the digest",
    );
    assert!(
        text.contains(
            "In the last 4 seconds: Zoom contacted 1 company it never contacted before: Digest Broker Ltd."
        ),
        "{text}\nagent: {}\ndaemon: {}",
        std::fs::read_to_string(dir.join("notify.log")).unwrap_or_default(),
        daemon.log()
    );
    assert!(
        state.join("brokerwatch/digest-last").is_file(),
        "the digest's time is kept for the next login"
    );
    drop(session);
    drop(daemon);
    std::fs::remove_dir_all(&dir).ok();
}
