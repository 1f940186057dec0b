//! Issue 10: the right app and the right name with the clients people run: Debian's real
//! Chromium (also laid out as an Electron meeting app), real Firefox with HTTP/3, apps that
//! start in Flatpak and Snap scopes, and names other namespaces try to plant. Everything
//! runs in network namespaces of the tests' own.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    audit::{link_tree, rows, run_in_cgroup, BackgroundAudit, Cleanup, BIN},
    lab::{Lab, HTTP_PORT, QUIC_PORT, TLS_PORT},
    require_root, PROBE,
};
use serde_json::Value;

/// Chromium's flags for a quiet, headless run that loads the lab's page; HTTP/3 is forced
/// for the two QUIC names.
fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--ignore-certificate-errors",
        "--enable-quic",
        "--origin-to-force-quic-on=quic.vendor.test:443,closed.vendor.test:443",
        "--dump-dom",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--user-data-dir={}", profile.display()),
        format!("http://page.vendor.test:{HTTP_PORT}/"),
    ])
    .collect()
}

/// `brokerwatch audit --json --output FILE -- ARGV`: the command's own output (a DOM
/// dump) stays out of the report.
fn audit_command(argv: &[String]) -> (Vec<Value>, String) {
    let report = std::env::temp_dir().join(format!(
        "bw-report-{}-{}.json",
        std::process::id(),
        argv.len()
    ));
    let out = Command::new(BIN)
        .args(["audit", "--json", "--output"])
        .arg(&report)
        .arg("--")
        .args(argv)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// What every row of a real client must be: attributed to its real executable, named
/// where it carried traffic, no false notes.
fn assert_clean_rows(lines: &[Value], exe: &str) {
    let rows = rows(lines);
    assert!(!rows.is_empty(), "no rows: {lines:#?}");
    for r in &rows {
        assert_ne!(r["comm"], "exe", "comm from /proc/self/exe: {r}");
        assert_ne!(r["exe"], "/proc/self/exe", "{r}");
        assert_eq!(r["exe"], exe, "{r}");
        let note = r["name_note"].as_str().unwrap_or("");
        assert!(
            !note.contains("Encrypted Client Hello"),
            "false ECH note (the browser's GREASE ECH is not ECH): {r}"
        );
        assert_eq!(r["encrypted_dns"], false, "false DoH/DoT: {r}");
        let port = r["dst_port"].as_u64().unwrap();
        if port == 53 {
            assert!(
                !r["dns_queries"].as_array().unwrap().is_empty() || r["sent"] == false,
                "a DNS row without the names it asked: {r}"
            );
            assert!(r["domain"].is_null(), "a resolver named after a query: {r}");
        }
    }
}

/// The row of `domain` on `port`, which must exist.
fn named<'a>(lines: &'a [Value], domain: &str, port: u64, proto: &str) -> &'a Value {
    rows(lines)
        .into_iter()
        .find(|r| r["domain"] == domain && r["dst_port"] == port && r["proto"] == proto)
        .unwrap_or_else(|| panic!("no {proto} row for {domain}:{port}: {lines:#?}"))
}

// Issue 10.
#[test]
fn clients_chromium_rows_are_named_with_their_source_and_its_real_exe() {
    let lab = Lab::new("cr");
    let mut argv = vec!["timeout".to_owned(), "25".to_owned(), "chromium".to_owned()];
    argv.extend(chromium_args(&lab.dir.join("profile")));
    let (lines, err) =
        audit_command(&lab.exec(&argv.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_clean_rows(&lines, "/usr/lib/chromium/chromium");
    assert_eq!(
        named(&lines, "page.vendor.test", HTTP_PORT as u64, "tcp")["domain_source"],
        "http"
    );
    assert_eq!(
        named(&lines, "graph.facebook.com", TLS_PORT as u64, "tcp")["domain_source"],
        "sni"
    );
    // The whole first flight reached a peer that never answers: the QUIC ClientHello.
    let quic = named(&lines, "quic.vendor.test", QUIC_PORT as u64, "udp");
    assert_eq!(quic["domain_source"], "quic", "{quic} {err}");
    // Only the first Initial left for a closed port: named from the part that was sent
    // when the name was in it, from DNS otherwise.
    let closed = named(&lines, "closed.vendor.test", QUIC_PORT as u64, "udp");
    assert!(
        closed["domain_source"] == "quic" || closed["domain_source"] == "dns",
        "{closed}"
    );
    if closed["domain_source"] == "quic" {
        assert!(closed["name_note"]
            .as_str()
            .unwrap()
            .contains("part of the QUIC ClientHello"));
    }
    // Every connection that carried traffic to the lab is named. (Chromium's UDP probes
    // of public resolvers send nothing and are marked so.)
    for r in rows(&lines) {
        let port = r["dst_port"].as_u64().unwrap();
        if r["sent"] == true
            && [HTTP_PORT as u64, TLS_PORT as u64, QUIC_PORT as u64].contains(&port)
        {
            assert!(r["domain"].is_string(), "unnamed: {r}");
        }
        if r["sent"] == false && r["proto"] == "udp" && port != 53 {
            assert!(
                r["name_note"].as_str().unwrap().contains("address probe"),
                "{r}"
            );
        }
    }
}

/// Chromium laid out as Slack's Electron build (`/usr/lib/slack/slack`), hard links of
/// Debian's own files; removed again on drop.
fn electron_slack() -> Cleanup {
    let dir = PathBuf::from("/usr/lib/slack");
    assert!(
        !dir.exists() || dir.join(".brokerwatch-test").exists(),
        "{} exists and is not the test's: refusing to touch a real Slack",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    link_tree(Path::new("/usr/lib/chromium"), &dir);
    std::fs::rename(dir.join("chromium"), dir.join("slack")).unwrap();
    std::fs::write(dir.join(".brokerwatch-test"), "").unwrap();
    Cleanup(vec![dir])
}

// Issue 10.
#[test]
fn clients_an_electron_meeting_apps_network_service_is_the_app_with_high_severity() {
    require_root();
    let lab = Lab::new("el");
    let _slack = electron_slack();
    let audit = BackgroundAudit::start(&["--app", "slack"]);
    let mut argv = vec!["/usr/lib/slack/slack".to_owned()];
    argv.extend(chromium_args(&lab.dir.join("profile")));
    let status = Command::new("timeout")
        .arg("25")
        .args(lab.exec(&argv.iter().map(String::as_str).collect::<Vec<_>>()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success() || status.code() == Some(124), "{status}");
    let (lines, log) = audit.finish();
    assert_clean_rows(&lines, "/usr/lib/slack/slack");
    let meta = named(&lines, "graph.facebook.com", TLS_PORT as u64, "tcp");
    assert_eq!(meta["app"], "Slack", "{meta}\n{log}");
    assert_eq!(meta["app_id"], "slack");
    assert_eq!(meta["comm"], "slack");
    assert_eq!(
        meta["severity"], "high",
        "the meeting rule, not the generic one: {meta}"
    );
    assert_eq!(meta["rule"], "meeting-social-sdk");
    assert_eq!(meta["flagged"], true);
    // The connection came from a helper (the network service), not the browser process.
    let helper = meta["pid"].as_u64().unwrap();
    let browser = rows(&lines)
        .iter()
        .find(|r| r["dst_port"] == HTTP_PORT)
        .map(|r| r["pid"].as_u64().unwrap());
    assert!(
        meta["ancestry"].as_str().unwrap().contains('>') || browser != Some(helper),
        "expected a helper process: {meta}"
    );
}

/// A Firefox profile with HTTP/3 forced for `quic.vendor.test` and background traffic off.
fn firefox_profile(dir: &Path) -> PathBuf {
    let profile = dir.join("firefox");
    std::fs::create_dir_all(&profile).unwrap();
    let prefs = [
        ("network.http.http3.enable", "true"),
        (
            "network.http.http3.alt-svc-mapping-for-testing",
            "\"quic.vendor.test;h3=:443\"",
        ),
        ("network.trr.mode", "5"),
        ("network.captive-portal-service.enabled", "false"),
        ("network.connectivity-service.enabled", "false"),
        ("browser.safebrowsing.malware.enabled", "false"),
        ("browser.safebrowsing.phishing.enabled", "false"),
        ("app.update.enabled", "false"),
        ("toolkit.telemetry.enabled", "false"),
        ("datareporting.policy.dataSubmissionEnabled", "false"),
        ("network.dns.disablePrefetch", "true"),
        ("network.prefetch-next", "false"),
    ];
    let text: String = prefs
        .iter()
        .map(|(k, v)| format!("user_pref(\"{k}\", {v});\n"))
        .collect();
    std::fs::write(profile.join("user.js"), text).unwrap();
    profile
}

// Issue 10.
#[test]
fn clients_firefox_tls_and_http3_rows_are_named_and_its_exe_resolved() {
    let lab = Lab::new("ff");
    let profile = firefox_profile(&lab.dir);
    let shot = lab.dir.join("shot.png");
    let url = format!("http://page.vendor.test:{HTTP_PORT}/");
    let argv = [
        "timeout",
        "15",
        "firefox-esr",
        "--headless",
        "--no-remote",
        "--profile",
        profile.to_str().unwrap(),
        "--screenshot",
        shot.to_str().unwrap(),
        &url,
    ];
    let (lines, err) = audit_command(&lab.exec(&argv));
    // Started as /usr/bin/firefox-esr, a symlink: the real executable is reported.
    assert_clean_rows(&lines, "/usr/lib/firefox-esr/firefox-esr");
    assert_eq!(
        named(&lines, "graph.facebook.com", TLS_PORT as u64, "tcp")["domain_source"],
        "sni"
    );
    let h3 = named(&lines, "quic.vendor.test", QUIC_PORT as u64, "udp");
    assert_eq!(h3["domain_source"], "quic", "{h3}\n{err}");
    assert_eq!(h3["sent"], true);
}

/// A process that is none of Zoom's executables: a copy of the probe.
fn stranger(dir: &Path) -> PathBuf {
    let p = dir.join("bw-helper");
    std::fs::copy(PROBE, &p).unwrap();
    p
}

fn broker_policy(dir: &Path) -> PathBuf {
    let p = dir.join("broker.toml");
    std::fs::write(&p, common::daemon::policy_text("Lab Broker Inc")).unwrap();
    p
}

// Issue 10.
#[test]
fn clients_flatpak_and_snap_scopes_created_later_are_watched_as_their_app() {
    require_root();
    let dir = std::env::temp_dir().join(format!("bw-scopes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = Cleanup(vec![dir.clone()]);
    let helper = stranger(&dir);
    let policy = broker_policy(&dir);
    let (listener, port) = common::accepting_listener("127.0.0.2:0");
    let mount = brokerwatch::host::cgroup::cgroup2_mount().unwrap();
    let base = mount.join(format!("bwtest-{}", std::process::id()));
    let flatpak = base.join("app-flatpak-us.zoom.Zoom-4242.scope");
    let snap = base.join("snap.zoom-client.zoom-client-5c1e1f46-7c3b-4b6e-9d8b-2f6e3c1a9e11.scope");
    let _cgroups = Cleanup(vec![base.clone(), flatpak.clone(), snap.clone()]);
    let audit = BackgroundAudit::start(&["--app", "zoom", "--policy", policy.to_str().unwrap()]);
    for scope in [&flatpak, &snap] {
        std::fs::create_dir_all(scope).unwrap();
        let name = scope.file_name().unwrap().to_str().unwrap();
        audit.wait_for_log(&format!("{name} ("));
        run_in_cgroup(scope, &helper, &[&format!("tcp:127.0.0.2:{port}")]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let (lines, log) = audit.finish();
    drop(listener);
    let contacts: Vec<&Value> = rows(&lines)
        .into_iter()
        .filter(|r| r["dst_port"] == port)
        .collect();
    assert_eq!(contacts.len(), 2, "one from each scope: {lines:#?}\n{log}");
    for r in contacts {
        assert_eq!(r["app"], "Zoom", "{r}");
        assert_eq!(r["comm"], "bw-helper");
        assert_eq!(r["company"], "Lab Broker Inc");
        assert_eq!(r["severity"], "high", "{r}");
    }
}

// Issue 10.
#[test]
fn clients_audit_follows_its_command_into_another_cgroup() {
    require_root();
    let mount = brokerwatch::host::cgroup::cgroup2_mount().unwrap();
    let elsewhere = mount.join(format!("bwmoved-{}", std::process::id()));
    std::fs::create_dir_all(&elsewhere).unwrap();
    let _cg = Cleanup(vec![elsewhere.clone()]);
    let (listener, port) = common::accepting_listener("127.0.0.1:0");
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec '{PROBE}' tcp:127.0.0.1:{port}",
        elsewhere.display()
    );
    let (lines, err) = audit_command(&["sh".into(), "-c".into(), script]);
    drop(listener);
    let moved = rows(&lines)
        .into_iter()
        .find(|r| r["dst_port"] == port)
        .unwrap_or_else(|| panic!("the connect after the move is missing: {lines:#?}\n{err}"));
    assert!(
        moved["exe"].as_str().unwrap().ends_with("bw-netprobe"),
        "{moved}"
    );
}

// Issue 10.
#[test]
fn clients_names_planted_in_another_namespace_or_by_another_user_are_not_borrowed() {
    let lab = Lab::new("bo");
    let dir = lab.dir.clone();
    // The watched app: a copy of the probe named like Zoom, in the lab's namespace.
    let zoom = dir.join("zoom");
    std::fs::copy(PROBE, &zoom).unwrap();
    // A second namespace with a DNS server of its own that says a tracker is 127.0.0.1.
    let other = format!("{}x", lab.netns);
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("ip").args(["netns", "add", &other]));
    let _ns = NetnsGuard(other.clone());
    ok(Command::new("ip").args(["-n", &other, "link", "set", "lo", "up"]));
    let mut planter = Command::new("ip")
        .args([
            "netns",
            "exec",
            &other,
            PROBE,
            "serve",
            "--dns",
            "127.0.0.1:53",
        ])
        .args([
            "--record",
            "api.segment.io=127.0.0.1",
            "--tcp",
            "127.0.0.1:9",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let audit = BackgroundAudit::start(&["--app", "zoom"]);
    // Root in the other namespace, and nobody there, resolve it (their answers pass the
    // kernel's DNS capture like every answer).
    for user in [None, Some("65534")] {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &other]);
        if let Some(uid) = user {
            c.args([
                "setpriv",
                &format!("--reuid={uid}"),
                "--regid=65534",
                "--clear-groups",
            ]);
        }
        ok(c.args([PROBE, "resolve:api.segment.io:9"]));
    }
    // The watched app connects to 127.0.0.1 in its own namespace.
    let (listener_port, _server) = lab_listener(&lab);
    ok(Command::new("ip")
        .args(["netns", "exec", &lab.netns])
        .arg(&zoom)
        .arg(format!("tcp:127.0.0.1:{listener_port}")));
    std::thread::sleep(Duration::from_millis(200));
    let (lines, log) = audit.finish();
    let _ = planter.kill();
    let _ = planter.wait();
    let row = rows(&lines)
        .into_iter()
        .find(|r| r["dst_port"] == listener_port)
        .unwrap_or_else(|| panic!("no row for the app's connect: {lines:#?}\n{log}"));
    assert_eq!(row["app"], "Zoom");
    assert!(row["domain"].is_null(), "a borrowed name: {row}");
    assert!(row["company"].is_null(), "judged by a borrowed name: {row}");
}

/// A TCP listener inside the lab's namespace (the probe's sink); returns its port.
fn lab_listener(lab: &Lab) -> (u16, ChildGuard) {
    let port = 4499;
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.netns, PROBE, "serve", "--tcp"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let mut ready = String::new();
    use std::io::BufRead as _;
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    (port, child)
}

struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
