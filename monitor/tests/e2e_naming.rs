//! Issue 3: every connection named, with real clients and servers (curl, openssl s_client,
//! dnsmasq with a CNAME chain, openssl s_server, an HTTP server) in a network namespace of
//! the test's own. Assertions are on `brokerwatch audit --json` output.

mod common;

use std::process::Command;

use common::{
    audit::rows,
    lab::{Lab, HTTP_PORT, QUIC_PORT, TLS_PORT},
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");

fn audit(extra: &[&str], argv: Vec<String>) -> (Option<i32>, Vec<Value>, String) {
    let out = Command::new(BIN)
        .args(["audit", "--json"])
        .args(extra)
        .arg("--")
        .args(&argv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (
        out.status.code(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// TCP connection rows to `ip:port` (getaddrinfo's UDP probes for address sorting are
/// rows of their own, named from DNS, and not what these tests are about).
fn rows_to<'a>(lines: &'a [Value], ip: &str, port: u16) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| {
            v["type"] == "connection"
                && v["proto"] == "tcp"
                && v["dst_ip"] == ip
                && v["dst_port"] == port
        })
        .collect()
}

fn chain(v: &Value) -> Vec<&str> {
    v["dns_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

// Issue 3.
#[test]
fn naming_dns_cname_chain_and_sni_over_v4_and_v6_with_curl_and_openssl() {
    let lab = Lab::new("n");
    let url = format!("https://api.vendor.test:{TLS_PORT}/");
    let script = format!(
        "curl -4 -sk -o /dev/null {url}; curl -6 -sk -o /dev/null {url}; \
         echo | openssl s_client -connect api.vendor.test:{TLS_PORT} -servername api.vendor.test -4 >/dev/null 2>&1; true"
    );
    let (code, lines, err) = audit(&[], lab.exec(&["sh", "-c", &script]));
    assert_eq!(code, Some(0), "{err}\n{lines:#?}");
    let v4 = rows_to(&lines, "127.0.0.3", TLS_PORT);
    assert_eq!(v4.len(), 2, "curl and openssl over IPv4: {lines:#?} {err}");
    for row in &v4 {
        assert_eq!(row["domain"], "api.vendor.test", "{row}");
        assert_eq!(row["domain_source"], "sni", "{row}");
        assert_eq!(
            chain(row),
            vec!["api.vendor.test", "edge.tracker.test"],
            "{row} {err}"
        );
        assert!(row["dns_name"].is_null(), "DNS and SNI agree: {row}");
    }
    let v6 = rows_to(&lines, "::1", TLS_PORT);
    assert_eq!(v6.len(), 1, "{lines:#?}");
    assert_eq!(v6[0]["domain"], "api.vendor.test");
    assert_eq!(chain(v6[0]), vec!["api.vendor.test", "edge.tracker.test"]);
    // Every connection to the servers was named: none left without a domain.
    for row in lines
        .iter()
        .filter(|v| v["type"] == "connection" && v["dst_port"] == TLS_PORT)
    {
        assert!(row["domain"].is_string(), "unnamed: {row}");
    }
}

// Issue 3.
#[test]
fn naming_sni_names_a_connection_that_bypassed_dns_and_disagreement_keeps_both() {
    let lab = Lab::new("s");
    let script = format!(
        "curl -4 -sk -o /dev/null https://api.vendor.test:{TLS_PORT}/; \
         curl -sk -o /dev/null --resolve sni.only.test:{TLS_PORT}:127.0.0.4 https://sni.only.test:{TLS_PORT}/; \
         curl -sk -o /dev/null --resolve other.name.test:{TLS_PORT}:127.0.0.3 https://other.name.test:{TLS_PORT}/"
    );
    // A policy naming the tracker behind api.vendor.test's CNAME: it must judge the
    // connections that went to api.vendor.test, not one whose own SNI named another host.
    let dir = std::env::temp_dir().join(format!("bw-issue3s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("tracker.toml");
    std::fs::write(
        &policy,
        "[[destination]]\nid = \"lab-tracker\"\ncompany = \"Lab Tracker Ltd\"\ncategory = \"data-broker\"\ndomains = [\"tracker.test\"]\nsource = \"test fixture\"\n",
    )
    .unwrap();
    let (code, lines, err) = audit(
        &["--policy", policy.to_str().unwrap()],
        lab.exec(&["sh", "-c", &script]),
    );
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, Some(1), "{err}");
    let bypass = rows_to(&lines, "127.0.0.4", TLS_PORT);
    assert_eq!(bypass.len(), 1, "{lines:#?}");
    assert_eq!(bypass[0]["domain"], "sni.only.test");
    assert_eq!(bypass[0]["domain_source"], "sni");
    assert!(chain(bypass[0]).is_empty());
    // 127.0.0.3 was learnt from DNS as api.vendor.test; this connection's SNI says other.
    let other: Vec<&Value> = rows_to(&lines, "127.0.0.3", TLS_PORT)
        .into_iter()
        .filter(|r| r["domain"] == "other.name.test")
        .collect();
    assert_eq!(other.len(), 1, "{lines:#?}");
    assert_eq!(other[0]["domain_source"], "sni");
    assert_eq!(
        other[0]["dns_name"], "api.vendor.test",
        "both names kept: {}",
        other[0]
    );
}

// Issue 3.
#[test]
fn naming_plain_http_host_and_a_tracker_behind_a_first_party_cname() {
    let lab = Lab::new("h");
    let dir = std::env::temp_dir().join(format!("bw-issue3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("tracker.toml");
    std::fs::write(
        &policy,
        "[[destination]]\nid = \"lab-tracker\"\ncompany = \"Lab Tracker Ltd\"\ncategory = \"data-broker\"\ndomains = [\"tracker.test\"]\nsource = \"test fixture\"\n",
    )
    .unwrap();
    let script = format!(
        "curl -s -o /dev/null http://broker.test:{HTTP_PORT}/; curl -4 -sk -o /dev/null https://api.vendor.test:{TLS_PORT}/"
    );
    let (code, lines, err) = audit(
        &["--policy", policy.to_str().unwrap()],
        lab.exec(&["sh", "-c", &script]),
    );
    std::fs::remove_dir_all(&dir).ok();
    let http = rows_to(&lines, "127.0.0.2", HTTP_PORT);
    assert_eq!(http.len(), 1, "{err}\n{lines:#?}");
    assert_eq!(http[0]["domain"], "broker.test");
    assert_eq!(http[0]["domain_source"], "http");
    // api.vendor.test is a CNAME to edge.tracker.test: the policy matches inside the chain.
    let tls = rows_to(&lines, "127.0.0.3", TLS_PORT);
    assert_eq!(tls[0]["company"], "Lab Tracker Ltd", "{}", tls[0]);
    assert_eq!(tls[0]["matched"], "tracker.test");
    assert_eq!(code, Some(1), "a flagged contact: {err}");
}

// Issue 3.
#[test]
fn naming_quic_initial_sni_from_a_real_quic_client() {
    let lab = Lab::new("q");
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/quic_client.py");
    let script = format!(
        "python3 {client} 127.0.0.3 {TLS_PORT} quic.vendor.test && python3 {client} ::1 {TLS_PORT} quic6.vendor.test"
    );
    let (code, lines, err) = audit(&[], lab.exec(&["sh", "-c", &script]));
    assert_eq!(code, Some(0), "{err}");
    for (ip, name) in [
        ("127.0.0.3", "quic.vendor.test"),
        ("::1", "quic6.vendor.test"),
    ] {
        let rows: Vec<&Value> = lines
            .iter()
            .filter(|v| v["type"] == "connection" && v["proto"] == "udp" && v["dst_ip"] == ip)
            .collect();
        assert_eq!(rows.len(), 1, "{lines:#?}");
        assert_eq!(rows[0]["domain"], name, "{}", rows[0]);
        assert_eq!(rows[0]["domain_source"], "quic", "{}", rows[0]);
        assert_eq!(rows[0]["via"], "send");
    }
}

/// UDP rows of the audit to `ip`.
fn udp_rows_to<'a>(lines: &'a [Value], ip: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "connection" && v["proto"] == "udp" && v["dst_ip"] == ip)
        .collect()
}

// Issue 24, item 3: a QUIC socket whose first Initial left without the name (the peer's
// port is closed; no DNS answer names the address) takes the name its sibling's Initial
// carried a moment earlier, and says so; where two names were read there, it takes none.
#[test]
fn naming_a_quic_socket_whose_name_never_left_is_named_from_its_sibling() {
    let lab = Lab::new("qs");
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/quic_client.py");
    let script = format!(
        "python3 {client} 127.0.0.9 {QUIC_PORT} closed.vendor.test - && \
         python3 {client} 127.0.0.10 {QUIC_PORT} a.vendor.test b.vendor.test -"
    );
    let (code, lines, err) = audit(&[], lab.exec(&["sh", "-c", &script]));
    assert_eq!(code, Some(0), "{err}");
    let rows = udp_rows_to(&lines, "127.0.0.9");
    assert_eq!(rows.len(), 1, "both sockets in one named row: {lines:#?}");
    let row = rows[0];
    assert_eq!(
        (&row["domain"], &row["domain_source"], &row["count"]),
        (&"closed.vendor.test".into(), &"quic".into(), &2.into()),
        "{row}"
    );
    let note = row["name_note"].as_str().unwrap_or_else(|| panic!("{row}"));
    assert!(
        note.starts_with(
            "1 of its 2 connections: named from an earlier socket of the same process"
        ),
        "{note}"
    );
    // Two names on one address: the socket without its own stays unnamed.
    let mut named: Vec<String> = udp_rows_to(&lines, "127.0.0.10")
        .iter()
        .map(|r| r["domain"].as_str().unwrap_or("(none)").to_owned())
        .collect();
    named.sort();
    assert_eq!(
        named,
        ["(none)", "a.vendor.test", "b.vendor.test"],
        "{lines:#?}"
    );
}

/// DNS over TCP: a resolver that asks over TCP (as glibc does for truncated answers), then
/// connects to the answer.
// Issue 3.
#[test]
fn naming_dns_answer_over_tcp_names_the_connection() {
    let lab = Lab::new("t");
    let script = format!(
        r#"
import socket, struct
q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x06broker\x04test\x00" + struct.pack(">HH", 1, 1)
s = socket.create_connection(("127.0.0.1", 53))
s.sendall(struct.pack(">H", len(q)) + q)
n = struct.unpack(">H", s.recv(2))[0]
ans = b""
while len(ans) < n:
    ans += s.recv(n - len(ans))
ip = socket.inet_ntoa(ans[-4:])
socket.create_connection((ip, {HTTP_PORT})).close()
"#
    );
    let (code, lines, err) = audit(&[], lab.exec(&["python3", "-c", &script]));
    assert_eq!(code, Some(0), "{err}");
    let rows = rows_to(&lines, "127.0.0.2", HTTP_PORT);
    assert_eq!(rows.len(), 1, "{lines:#?}");
    assert_eq!(rows[0]["domain"], "broker.test", "{}", rows[0]);
    assert_eq!(rows[0]["domain_source"], "dns");
}

// Issue 24, items 1 and 2: many names share one address. One process resolves a meeting
// vendor's name and then a broker's, both to 127.0.0.10, and connects with the vendor's
// name as SNI: its DNS chain is the vendor's, not the last answer for the address. Another
// process, which resolved nothing, connects there with a browser-like (GREASE) ECH
// extension and the vendor's name: no Encrypted Client Hello is claimed from the mismatch
// with the broker's name that the address was last given.
#[test]
fn naming_a_shared_address_tells_the_answer_that_named_each_connection_and_no_false_ech() {
    let lab = Lab::new("shared");
    let probe = common::PROBE;
    let script = format!(
        "{probe} resolve:tls.meetingvendor.test:9 resolve:sales.linkedin.com:9 \
         tls:tls.meetingvendor.test@127.0.0.10:{TLS_PORT}; \
         {probe} tlsech:tls.meetingvendor.test@127.0.0.10:{TLS_PORT}; true"
    );
    let (_, lines, err) = audit(&[], lab.exec(&["sh", "-c", &script]));
    let named: Vec<&Value> = rows_to(&lines, "127.0.0.10", TLS_PORT)
        .into_iter()
        .filter(|r| r["domain"] == "tls.meetingvendor.test" && r["domain_source"] == "sni")
        .collect();
    assert_eq!(named.len(), 2, "both TLS connections: {lines:#?}\n{err}");
    let resolved_by_itself = named
        .iter()
        .find(|r| !chain(r).is_empty())
        .unwrap_or_else(|| panic!("the first process's row has its DNS chain: {named:#?}"));
    assert_eq!(
        chain(resolved_by_itself),
        vec!["tls.meetingvendor.test"],
        "{resolved_by_itself}"
    );
    assert!(
        resolved_by_itself["dns_name"].is_null(),
        "DNS and SNI agree: {resolved_by_itself}"
    );
    for r in &named {
        let note = r["name_note"].as_str().unwrap_or("");
        assert!(
            !note.contains("Encrypted Client Hello"),
            "no ECH claimed from a shared address: {r}"
        );
    }
    // The broker's name still names the connection made to it by name (the resolving
    // connects go to a closed port, apart from the TLS ones).
    assert!(
        rows_to(&lines, "127.0.0.10", 9)
            .iter()
            .any(|r| r["domain"] == "sales.linkedin.com"),
        "{lines:#?}"
    );
}

// Issue 24, item 4: a name only in the hosts file reaches the app without a DNS packet;
// the app's own getaddrinfo() call (a uretprobe on glibc) names its connection.
#[test]
fn naming_a_hosts_file_name_is_named_from_the_apps_own_getaddrinfo_call() {
    let lab = Lab::new("hosts");
    let (_, lines, err) = audit(
        &[],
        lab.exec(&[
            "sh",
            "-c",
            "curl -s -m 2 -o /dev/null http://hosts.only.test:9/; true",
        ]),
    );
    let rows = rows_to(&lines, "127.0.0.11", 9);
    assert_eq!(rows.len(), 1, "{lines:#?}\n{err}");
    assert_eq!(rows[0]["domain"], "hosts.only.test", "{}", rows[0]);
    assert_eq!(rows[0]["domain_source"], "getaddrinfo", "{}", rows[0]);
    let summary = lines.iter().find(|l| l["type"] == "summary").unwrap();
    assert!(
        summary["hooks"]
            .to_string()
            .contains("uretprobe getaddrinfo"),
        "{summary}"
    );
}

// Issue 24, item 4: an app resolving through a real systemd-resolved (nss-resolve over
// varlink) receives no DNS packet; its getaddrinfo() call names its connection. resolved runs
// as `nobody` here, whose DNS answers are not shared with other users (a system user's
// are): as when it forwards over DNS over TLS, only the app's own call can name it. (This
// found a bug: the call was dropped because an answer the app may not use existed.)
#[test]
fn naming_an_app_resolving_through_systemd_resolved_is_named_from_its_getaddrinfo_call() {
    let lab = Lab::new("rsv");
    let resolved = common::resolved::Resolved::start(&lab);
    let (_, lines, err) = audit(
        &[],
        resolved.exec(&[
            "sh",
            "-c",
            "getent hosts broker.test >/dev/null && curl -s -m 2 -o /dev/null http://broker.test:9/; true",
        ]),
    );
    // Port 9 refuses: the connection carries no bytes that could name it.
    let rows = rows_to(&lines, "127.0.0.2", 9);
    assert_eq!(rows.len(), 1, "{lines:#?}\n{err}");
    assert_eq!(
        (&rows[0]["domain"], &rows[0]["domain_source"]),
        (&"broker.test".into(), &"getaddrinfo".into()),
        "{}\n{err}",
        rows[0]
    );
    // The app itself sent no DNS query: resolved did, outside the audit.
    let dns = lines
        .iter()
        .filter(|v| v["type"] == "connection" && v["dst_port"] == 53)
        .count();
    assert_eq!(dns, 0, "{lines:#?}");
}

/// A server that accepts and reads, never answering (a connection stays open).
const QUIET_SERVER: &str = "import socket, threading
s = socket.create_server(('127.0.0.1', 8099))
def drain(c):
    while c.recv(65536):
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
";

/// The app: opens a plain TCP connection (its first request names nothing, a bare
/// address) and a TLS one (SNI graph.facebook.com), says it is ready, waits for `go`, then
/// sends an HTTP request with its Host on the first and a request on the second.
const KEEPALIVE_APP: &str = "import socket, ssl, sys, time, os
d = sys.argv[1]
for _ in range(100):
    try:
        h = socket.create_connection(('127.0.0.1', 8099))
        break
    except OSError:
        time.sleep(0.05)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(socket.create_connection(('127.0.0.1', 4433)), server_hostname='graph.facebook.com')
h.sendall(b'x')
open(d + '/ready', 'w').close()
while not os.path.exists(d + '/go'):
    time.sleep(0.05)
h.sendall(b'GET /sync HTTP/1.1\\r\\nHost: api.vendor.test\\r\\n\\r\\n')
t.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')
time.sleep(30)
";

// Issue 24, item 5: `audit --app` started while the app runs sees the connections it
// opened before, says so, names them from what they send afterwards, and counts their use.
#[test]
fn naming_connections_open_before_the_audit_are_reported_and_named_from_later_bytes() {
    use common::audit::BackgroundAudit;
    let lab = Lab::new("ob");
    let app = lab.dir.join("bwkeepalive");
    std::os::unix::fs::symlink("/usr/bin/python3", &app).unwrap();
    let script = format!(
        "python3 -c \"$1\" & exec {} -c \"$2\" {}",
        app.display(),
        lab.dir.display()
    );
    let argv = lab.exec(&["sh", "-c", &script, "sh", QUIET_SERVER, KEEPALIVE_APP]);
    let mut child = Command::new(&argv[0]).args(&argv[1..]).spawn().unwrap();
    let ready = lab.dir.join("ready");
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(start.elapsed().as_secs() < 20, "the app never got ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let audit = BackgroundAudit::start(&["--app", "bwkeepalive"]);
    std::fs::write(lab.dir.join("go"), "").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (lines, err) = audit.finish();
    let _ = child.kill();
    let _ = Command::new("pkill")
        .args(["-f", "create_server\\(\\('127.0.0.1', 8099"])
        .status();
    let _ = child.wait();
    let http = rows_to(&lines, "127.0.0.1", 8099);
    assert_eq!(http.len(), 1, "{lines:#?}\n{err}");
    let note = |r: &Value| r["name_note"].as_str().unwrap_or("").to_owned();
    assert_eq!(
        (
            &http[0]["domain"],
            &http[0]["domain_source"],
            &http[0]["sent"]
        ),
        (&"api.vendor.test".into(), &"http".into(), &true.into()),
        "{}",
        http[0]
    );
    assert!(
        note(http[0]).starts_with("open before brokerwatch started"),
        "{}",
        http[0]
    );
    let tls = rows_to(&lines, "127.0.0.1", TLS_PORT);
    assert_eq!(tls.len(), 1, "{lines:#?}");
    assert_eq!(
        (&tls[0]["domain"], &tls[0]["sent"]),
        (&Value::Null, &true.into())
    );
    assert!(
        note(tls[0]).starts_with("open before brokerwatch started")
            && note(tls[0]).contains("nothing it sent since named it"),
        "{}",
        tls[0]
    );
    // Only the app's own connections: not the server's side, not the quiet server.
    assert!(
        rows(&lines).iter().all(|r| r["comm"] == "bwkeepalive"),
        "{lines:#?}"
    );
}
