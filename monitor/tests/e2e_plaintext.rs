//! Issue 25: what watched apps sent, read from their TLS libraries' write calls, with real
//! clients (curl and python3 over OpenSSL, wget over GnuTLS, curl over HTTP/2 to nghttpd)
//! and servers in a network namespace of the test's own. Assertions are on `brokerwatch
//! audit --json` output: the identifier's kind, form and place, the destination and its
//! company; nothing else found; no identifier value in anything brokerwatch wrote.

mod common;

use std::process::Command;

use common::lab::{Lab, H2_PORT, LAB_DIR, SINK_PORT};
use serde_json::Value;
use sha2::Digest as _;

const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");
const EMAIL: &str = "alice.lab@example.test";

struct Out {
    code: Option<i32>,
    lines: Vec<Value>,
    stdout: String,
    stderr: String,
}

fn audit(extra: &[&str], argv: Vec<String>) -> Out {
    let out = Command::new(BIN)
        .args([
            "-v",
            "audit",
            "--json",
            "--email",
            EMAIL,
            "--name",
            "Alice Liddell",
        ])
        .args(extra)
        .arg("--")
        .args(&argv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    Out {
        code: out.status.code(),
        lines,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sent(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["type"] == "sent").collect()
}

/// (identifier, form, place) of every "sent" line, in order.
fn what(lines: &[Value]) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = sent(lines)
        .iter()
        .map(|v| {
            (
                v["identifier"]
                    .as_str()
                    .unwrap_or("other_emails")
                    .to_owned(),
                v["form"].as_str().unwrap_or("-").to_owned(),
                v["place"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn t(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

fn sha256_hex(s: &str) -> String {
    format!("{:x}", sha2::Sha256::digest(s.as_bytes()))
}

/// A file in the lab's directory (bodies go through files so that no command line, which
/// the audit reports, holds an identifier).
fn file(lab: &Lab, name: &str, bytes: &[u8]) -> String {
    let p = lab.dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

/// No identifier value and no plaintext in anything the audit wrote.
fn nothing_kept(o: &Out, values: &[&str]) {
    for v in values {
        assert!(
            !o.stdout.contains(v),
            "{v:?} in the audit's output:\n{}",
            o.stdout
        );
        assert!(
            !o.stderr.contains(v),
            "{v:?} in the audit's log:\n{}",
            o.stderr
        );
    }
}

#[test]
fn plaintext_curl_json_post_to_a_broker_names_email_and_counts_other_addresses() {
    let lab = Lab::new("pa");
    let body = file(
        &lab,
        "body.json",
        format!(r#"{{"user":"{EMAIL}","attendees":["carol@example.test","dan@example.test","erin@example.test"]}}"#)
            .as_bytes(),
    );
    let url = format!("https://sales.linkedin.com:{SINK_PORT}/sales-api/match");
    let o = audit(
        &[],
        lab.exec(&[
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{body}"),
            &url,
        ]),
    );
    assert_eq!(
        o.code,
        Some(1),
        "a leak to a flagged destination: {}",
        o.stderr
    );
    assert_eq!(
        what(&o.lines),
        [t("email", "plain", "body"), t("other_emails", "-", "body")],
        "{}",
        o.stdout
    );
    for s in sent(&o.lines) {
        assert_eq!(s["host"], "sales.linkedin.com");
        assert_eq!(s["named_by"], "host_header");
        assert_eq!(s["company"], "LinkedIn (Microsoft)");
        assert_eq!(s["category"], "social-sdk");
        assert_eq!(s["library"], "OpenSSL");
        assert_eq!(s["comm"], "curl");
        assert_eq!(s["flagged"], true);
    }
    let others = sent(&o.lines)
        .into_iter()
        .find(|s| s["identifier"].is_null())
        .unwrap();
    assert_eq!(others["other_addresses"], 3);
    assert!(others["summary"]
        .as_str()
        .unwrap()
        .contains("3 e-mail addresses that are not yours"));
    nothing_kept(&o, &[EMAIL, "carol@", "dan@", "erin@", "attendees"]);
}

#[test]
fn plaintext_python_sends_hashed_email_and_machine_id_in_a_query_string() {
    let lab = Lab::new("pb");
    let machine = std::fs::read_to_string("/etc/machine-id")
        .unwrap()
        .trim()
        .to_owned();
    // Meta's Conversions API form: sha256(lower(trim(email))), lowercase hex.
    let url = format!(
        "https://sales.linkedin.com:{SINK_PORT}/tr?em={}&mid={}",
        sha256_hex(EMAIL),
        sha256_hex(&machine)
    );
    let script = file(&lab, "url.txt", url.as_bytes());
    let client = format!("{LAB_DIR}/tls_client.py");
    let o = audit(&[], lab.exec(&["python3", &client, &format!("@{script}")]));
    assert_eq!(
        what(&o.lines),
        [
            t("email", "sha256", "url"),
            t("machine_id", "sha256", "url")
        ],
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    let m = sent(&o.lines)
        .into_iter()
        .find(|s| s["identifier"] == "machine_id")
        .unwrap();
    assert!(m["summary"]
        .as_str()
        .unwrap()
        .contains("the machine's identifier (SHA-256)"));
    nothing_kept(
        &o,
        &[EMAIL, &sha256_hex(EMAIL), &machine, &sha256_hex(&machine)],
    );
}

#[test]
fn plaintext_wget_over_gnutls_sends_the_url_encoded_address() {
    let lab = Lab::new("pc");
    let url = format!(
        "https://sales.linkedin.com:{SINK_PORT}/w?e={}",
        EMAIL.replace('@', "%40")
    );
    let f = file(&lab, "url.txt", url.as_bytes());
    let o = audit(
        &[],
        lab.exec(&[
            "wget",
            "--no-check-certificate",
            "-q",
            "-O",
            "/dev/null",
            "-i",
            &f,
        ]),
    );
    assert_eq!(
        what(&o.lines),
        [t("email", "url_encoded", "url")],
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(sent(&o.lines)[0]["library"], "GnuTLS");
    nothing_kept(&o, &[EMAIL, &EMAIL.replace('@', "%40")]);
}

#[test]
fn plaintext_curl_http2_header_through_hpack_and_gzip_body() {
    let lab = Lab::new("pd");
    let header = file(&lab, "h.txt", format!("X-Account: {EMAIL}\n").as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, br#"{"name":"Alice Liddell"}"#).unwrap();
    let body = file(&lab, "body.gz", &gz.finish().unwrap());
    let url = format!("https://sales.linkedin.com:{H2_PORT}/match");
    let o = audit(
        &[],
        lab.exec(&[
            "curl",
            "-sk",
            "--http2",
            "-o",
            "/dev/null",
            "-H",
            &format!("@{header}"),
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            &format!("@{body}"),
            &url,
        ]),
    );
    assert_eq!(
        what(&o.lines),
        [t("email", "plain", "header"), t("name", "plain", "body")],
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    assert!(sent(&o.lines).iter().all(|s| s["named_by"] == "authority"));
    nothing_kept(&o, &[EMAIL, "Alice Liddell"]);
}

#[test]
fn plaintext_websocket_messages_are_unmasked() {
    let lab = Lab::new("pe");
    let msg = file(
        &lab,
        "msg.txt",
        format!(r#"{{"from":"{EMAIL}"}}"#).as_bytes(),
    );
    let client = format!("{LAB_DIR}/tls_client.py");
    let url = format!("https://sales.linkedin.com:{SINK_PORT}/socket");
    let o = audit(
        &[],
        lab.exec(&["python3", &client, &url, "--websocket", &format!("@{msg}")]),
    );
    assert_eq!(
        what(&o.lines),
        [t("email", "plain", "websocket")],
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    nothing_kept(&o, &[EMAIL]);
}

#[test]
fn plaintext_no_false_findings_other_address_partial_match_longer_word_first_party() {
    let lab = Lab::new("pf");
    // A different address (counted only as someone else's), the user's address as part of
    // a longer one, the name inside a longer word.
    let body = file(
        &lab,
        "b.json",
        format!(r#"{{"a":"x{EMAIL}","b":"{EMAIL}.evil.test","c":"Alice Liddellson"}}"#).as_bytes(),
    );
    let url = format!("https://sales.linkedin.com:{SINK_PORT}/n");
    let o = audit(
        &[],
        lab.exec(&[
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "--data-binary",
            &format!("@{body}"),
            &url,
        ]),
    );
    assert_eq!(
        what(&o.lines),
        [t("other_emails", "-", "body")],
        "{}",
        o.stdout
    );
    // The app's own service: reported as first party, never as a leak.
    let dir = std::env::temp_dir().join(format!("bw-issue25f-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("app.toml");
    std::fs::write(
        &policy,
        "[[app]]\nid = \"labmeet\"\nname = \"Lab Meet\"\nexe = [\"curl\"]\nfirst_party = [\"meetingvendor.test\"]\n\n\
         [[destination]]\nid = \"lab-broker\"\ncompany = \"Lab Broker\"\ncategory = \"data-broker\"\ndomains = [\"meetingvendor.test\"]\nsource = \"test fixture\"\n",
    )
    .unwrap();
    let body = file(
        &lab,
        "own.json",
        format!(r#"{{"email":"{EMAIL}"}}"#).as_bytes(),
    );
    let url = format!("https://tls.meetingvendor.test:{SINK_PORT}/profile");
    let o = audit(
        &["--policy", policy.to_str().unwrap()],
        lab.exec(&[
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "--data-binary",
            &format!("@{body}"),
            &url,
        ]),
    );
    std::fs::remove_dir_all(&dir).ok();
    let rows = sent(&o.lines);
    assert_eq!(rows.len(), 1, "{}", o.stdout);
    assert_eq!(rows[0]["first_party"], true);
    assert_eq!(rows[0]["flagged"], false);
    assert!(rows[0]["company"].is_null());
    assert_eq!(rows[0]["app"], "Lab Meet");
    assert!(rows[0]["summary"]
        .as_str()
        .unwrap()
        .contains("to its own service"));
}

#[test]
fn plaintext_is_off_without_identities_or_the_policy_setting() {
    let lab = Lab::new("pg");
    let url = format!("https://sales.linkedin.com:{SINK_PORT}/q?e={EMAIL}");
    let out = Command::new(BIN)
        .args(["audit", "--json", "--"])
        .args(lab.exec(&["curl", "-sk", "-o", "/dev/null", &url]))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"type\":\"connection\""), "{stdout}");
    assert!(!stdout.contains("\"type\":\"sent\""), "{stdout}");
    assert!(
        !stdout.contains("bw_openssl_write"),
        "no plaintext probe without opting in: {stdout}"
    );
}

/// A Firefox profile that trusts the lab's certificate, background traffic off.
fn firefox_profile(lab: &Lab) -> String {
    let profile = lab.dir.join("firefox");
    std::fs::create_dir_all(&profile).unwrap();
    let db = format!("sql:{}", profile.display());
    let certutil = |args: &[&str]| {
        let ok = Command::new("certutil").args(args).status().unwrap();
        assert!(ok.success(), "certutil {args:?}");
    };
    certutil(&["-N", "-d", &db, "--empty-password"]);
    certutil(&[
        "-A",
        "-d",
        &db,
        "-n",
        "lab",
        "-t",
        "P,,",
        "-i",
        lab.cert.to_str().unwrap(),
    ]);
    let prefs = [
        ("network.trr.mode", "5"),
        ("app.update.enabled", "false"),
        ("network.captive-portal-service.enabled", "false"),
        ("network.connectivity-service.enabled", "false"),
        ("browser.safebrowsing.malware.enabled", "false"),
        ("browser.safebrowsing.phishing.enabled", "false"),
        ("datareporting.policy.dataSubmissionEnabled", "false"),
    ];
    let text: String = prefs
        .iter()
        .map(|(k, v)| format!("user_pref(\"{k}\", {v});\n"))
        .collect();
    std::fs::write(profile.join("user.js"), text).unwrap();
    profile.display().to_string()
}

#[test]
fn plaintext_firefox_fetch_posts_the_name_through_nss() {
    let lab = Lab::new("ph");
    // A page whose script posts the user's name to the lab's broker over HTTPS.
    std::fs::write(
        lab.dir.join("www/leak.html"),
        format!(
            "<html><body>lab<script>fetch(\"https://sales.linkedin.com:{SINK_PORT}/sales-api/profile\", \
             {{method: \"POST\", mode: \"no-cors\", body: JSON.stringify({{name: \"Alice Liddell\"}})}});\
             </script><img src=\"https://sales.linkedin.com:{SINK_PORT}/pixel.png\"></body></html>"
        ),
    )
    .unwrap();
    let profile = firefox_profile(&lab);
    let shot = lab.dir.join("shot.png");
    let url = format!(
        "http://page.vendor.test:{}/leak.html",
        common::lab::HTTP_PORT
    );
    let o = audit(
        &[],
        lab.exec(&[
            "timeout",
            "20",
            "firefox-esr",
            "--headless",
            "--no-remote",
            "--profile",
            &profile,
            "--screenshot",
            shot.to_str().unwrap(),
            &url,
        ]),
    );
    let rows = sent(&o.lines);
    let name = rows
        .iter()
        .find(|s| s["identifier"] == "name")
        .unwrap_or_else(|| {
            panic!(
                "the name was not read from Firefox: {}\n{}",
                o.stdout, o.stderr
            )
        });
    assert_eq!(name["form"], "plain");
    assert_eq!(name["place"], "body");
    assert_eq!(name["host"], "sales.linkedin.com");
    assert_eq!(name["library"], "NSS/NSPR");
    assert_eq!(name["company"], "LinkedIn (Microsoft)");
    nothing_kept(&o, &["Alice Liddell"]);
}

/// Zoom and Webex ship their own OpenSSL beside their program, and their launch scripts
/// point `LD_LIBRARY_PATH` at it. The copy is probed when the app starts, before it is
/// loaded: here python3 (Debian's) sleeps a second, then loads `libssl.so.3` from the app's
/// directory and at once posts the address. No tick falls between the load and the write
/// (the rescan of mapped libraries would be too late): only the look beside the app finds it.
#[test]
fn plaintext_an_apps_own_libssl_copy_is_read_from_before_the_app_loads_it() {
    let lab = Lab::new("pg");
    let app = lab.dir.join("zoomapp");
    std::fs::create_dir_all(&app).unwrap();
    let system = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
    assert!(system.is_file(), "Debian's libssl3 is installed by setup");
    std::fs::copy(system, app.join("libssl.so.3")).unwrap();
    let body = file(
        &lab,
        "body.json",
        format!(r#"{{"email":"{EMAIL}"}}"#).as_bytes(),
    );
    let url = file(
        &lab,
        "url.txt",
        format!("https://sales.linkedin.com:{SINK_PORT}/match").as_bytes(),
    );
    let maps = lab.dir.join("maps.txt");
    let client = format!("{LAB_DIR}/tls_client.py");
    let wrapper = format!(
        "import time, sys, runpy\n\
         time.sleep(1)\n\
         import ssl\n\
         open({maps:?}, 'w').write(''.join(l for l in open('/proc/self/maps') if 'libssl' in l))\n\
         sys.argv = [{client:?}, '@{url}', '--data', '@{body}']\n\
         runpy.run_path({client:?})\n",
        maps = maps.display().to_string(),
    );
    let o = audit(
        &[],
        lab.exec(&[
            "env",
            &format!("LD_LIBRARY_PATH={}", app.display()),
            "/usr/bin/python3",
            "-c",
            &wrapper,
        ]),
    );
    let mapped = std::fs::read_to_string(&maps).unwrap();
    assert!(
        mapped.contains(&app.join("libssl.so.3").display().to_string())
            && !mapped.contains(&system.display().to_string()),
        "the app used its own copy: {mapped}"
    );
    assert_eq!(
        what(&o.lines),
        [t("email", "plain", "body")],
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(sent(&o.lines)[0]["library"], "OpenSSL");
    nothing_kept(&o, &[EMAIL]);
}

/// Debian's chromium links BoringSSL in, stripped: its TLS cannot be read, and the audit
/// says so per program (it must not look as if chromium sent nothing).
#[test]
fn plaintext_chromium_is_said_not_readable_per_program() {
    let lab = Lab::new("ph");
    let profile = lab.dir.join("profile");
    let script = format!(
        "exec timeout 20 chromium --headless=new --no-sandbox --disable-gpu --no-first-run \
         --disable-background-networking --disable-component-update --disable-sync \
         --ignore-certificate-errors --user-data-dir={} --dump-dom \
         https://sales.linkedin.com:{SINK_PORT}/ >/dev/null 2>&1",
        profile.display()
    );
    let o = audit(&[], lab.exec(&["sh", "-c", &script]));
    let summary = o.lines.iter().find(|l| l["type"] == "summary").unwrap();
    let said: Vec<&str> = summary["plaintext_not_readable"]
        .as_array()
        .unwrap_or_else(|| panic!("nothing said: {summary}\n{}", o.stderr))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Chromium and its crash handler (which uploads reports over TLS) both link it in.
    assert!(
        said.iter().any(|s| s.starts_with(
            "chromium (/usr/lib/chromium/chromium): TLS (BoringSSL) is built into the program without symbols"
        )),
        "{said:?}"
    );
    assert!(
        said.iter().all(|s| s.contains("(/usr/lib/chromium/")),
        "only chromium's programs: {said:?}"
    );
    assert!(
        o.lines
            .iter()
            .any(|l| l["type"] == "connection" && l["domain"] == "sales.linkedin.com"),
        "who it talked to is still seen: {}",
        o.stdout
    );
}
