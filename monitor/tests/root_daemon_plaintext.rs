//! Issue 25 in the always-on service: users keep their own identifiers with `brokerwatch
//! identity`, the daemon (where the policy says `inspect_plaintext = true`) reads what
//! their watched apps send and tells the journal "zoom sent your e-mail address ...",
//! matching each user's processes against that user's identifiers only. Values are never
//! shown back, logged or kept outside the root-only identities file.

mod common;

use std::{os::unix::fs::PermissionsExt as _, process::Command};

use brokerwatch::daemon::journal::SENT_ID;
use common::{
    daemon::{client, lab_dir, wait_for, Daemon},
    journal::{entries, Journald},
};

const ALICE: u32 = 4242;
const BOB: u32 = 4243;
const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab");

#[test]
fn daemon_reads_a_users_watched_app_against_that_users_identifiers_only() {
    common::require_root();
    let dir = lab_dir("plain");
    std::fs::write(
        dir.join("policies.d/plain.toml"),
        "[settings]\ninspect_plaintext = true\n\n[[destination]]\nid = \"lab-broker\"\ncompany = \"Lab Broker Inc\"\ncategory = \"data-broker\"\ndomains = [\"sales.broker.test\"]\nsource = \"test fixture\"\n",
    )
    .unwrap();
    // A TLS server on loopback that reads every request.
    let (key, cert) = common::self_signed(&dir, "sales.broker.test");
    let port = common::free_port();
    let mut server = Command::new("python3")
        .arg(format!("{LAB}/https_sink.py"))
        .args(["127.0.0.1", &port.to_string()])
        .arg(&cert)
        .arg(&key)
        .spawn()
        .unwrap();
    let _journal = Journald::ensure();
    let d = Daemon::start(&dir);

    // Each user keeps their own address; nobody sees a value back.
    for (uid, addr) in [(ALICE, "alice@example.test"), (BOB, "bob@example.test")] {
        let (code, text) = client(&dir, Some(uid), &["identity", "add", "--email", addr]);
        assert_eq!(code, Some(0), "{text}");
    }
    let (code, text) = client(&dir, Some(ALICE), &["identity", "list"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("email"), "{text}");
    assert!(
        !text.contains("alice@") && !text.contains("example.test"),
        "{text}"
    );
    let (_, bad) = client(&dir, Some(ALICE), &["identity", "add", "--email", "nope"]);
    assert!(bad.contains("not an e-mail address"), "{bad}");
    let file = dir.join("state/identities.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Each user's event stream (what the desktop agent reads).
    let events = |uid: u32| {
        let out = std::fs::File::create(dir.join(format!("events-{uid}.jsonl"))).unwrap();
        Command::new("setpriv")
            .args([&format!("--reuid={uid}"), "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_brokerwatch"))
            .arg("events")
            .arg("--socket")
            .arg(dir.join("run/brokerwatch.sock"))
            .stdout(out)
            .spawn()
            .unwrap()
    };
    let (mut alice_events, mut bob_events) = (events(ALICE), events(BOB));
    std::thread::sleep(std::time::Duration::from_millis(500));

    // Alice's app (python3 started as `zoom`) posts her address and Bob's. The daemon
    // reads it from its exec record on: the client waits a second first.
    let zoom = dir.join("zoom");
    // Debian's own python3 (another user may not reach a version manager's under /root).
    let real = std::fs::canonicalize("/usr/bin/python3").expect("Debian's python3");
    std::os::unix::fs::symlink(&real, &zoom).unwrap();
    let body = dir.join("body.json");
    std::fs::write(
        &body,
        r#"{"me":"alice@example.test","attendee":"bob@example.test"}"#,
    )
    .unwrap();
    std::fs::set_permissions(&body, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = format!("https://127.0.0.1:{port}/match");
    let ran = Command::new("setpriv")
        .args([
            &format!("--reuid={ALICE}"),
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(&zoom)
        .arg(format!("{LAB}/tls_client.py"))
        .args([&url, "--sleep", "1", "--header", "Host: sales.broker.test"])
        .arg("--data")
        .arg(format!("@{}", body.display()))
        .status()
        .unwrap();
    assert!(ran.success());
    let alice_file = dir.join(format!("events-{ALICE}.jsonl"));
    wait_for(
        || {
            let text = std::fs::read_to_string(&alice_file).unwrap_or_default();
            text.contains("sent your e-mail") && text.contains("not yours")
        },
        "Alice's desktop hearing what her app sent",
    );
    for c in [&mut alice_events, &mut bob_events] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let heard = std::fs::read_to_string(&alice_file).unwrap();
    assert!(heard.contains("\"identifier\":\"email\""), "{heard}");
    assert!(
        !heard.contains("example.test\""),
        "a value reached the socket: {heard}"
    );
    let bob_heard = std::fs::read_to_string(dir.join(format!("events-{BOB}.jsonl"))).unwrap();
    assert!(
        !bob_heard.contains("sent"),
        "Bob heard of Alice's app: {bob_heard}"
    );
    let _ = server.kill();
    let _ = server.wait();
    let log = d.log();
    // Bob's identifier is his: in Alice's traffic it is only "not yours".
    assert_eq!(
        heard.matches("sent your e-mail address").count(),
        1,
        "{heard}"
    );
    assert!(
        heard.contains("1 e-mail address that is not yours"),
        "{heard}"
    );
    assert!(
        heard.contains("to Lab Broker Inc (sales.broker.test)"),
        "{heard}"
    );
    for value in ["alice@example.test", "bob@example.test", "alice@", "bob@"] {
        assert!(!log.contains(value), "{value} in the daemon's log:\n{log}");
        assert!(!heard.contains(value), "{value} on the socket:\n{heard}");
    }
    // The journal has it under its own MESSAGE_ID, by kind, form and place only.
    let told = entries(&[
        format!("MESSAGE_ID={SENT_ID}"),
        format!("_PID={}", d.child.id()),
    ]);
    assert_eq!(told.len(), 2, "the address and the other one: {told:#?}");
    for e in &told {
        assert_eq!(e["BROKERWATCH_COMPANY"], "Lab Broker Inc", "{e:#}");
        assert_eq!(e["BROKERWATCH_PLACE"], "in the body", "{e:#}");
        let text = e.to_string();
        for value in ["alice@example.test", "bob@example.test", "alice@", "bob@"] {
            assert!(!text.contains(value), "{value} in the journal: {e:#}");
        }
    }
    // The store keeps it: Alice's report says what the company received, her history
    // what her app sent; Bob's say nothing of it.
    let mut report = String::new();
    wait_for(
        || {
            report = client(&dir, Some(ALICE), &["report", "--json"]).1;
            report.contains("\"received\"")
        },
        "Alice's report saying what Lab Broker Inc received",
    );
    assert!(
        report.contains("\"what\":\"your e-mail address\""),
        "{report}"
    );
    assert!(
        report.contains("\"what\":\"1 e-mail address that is not yours\""),
        "{report}"
    );
    let (code, text) = client(&dir, Some(ALICE), &["report"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("received: your e-mail address in the body"),
        "{text}"
    );
    let (code, history) = client(&dir, Some(ALICE), &["history"]);
    assert_eq!(code, Some(0), "{history}");
    assert!(history.contains("What your apps sent:"), "{history}");
    assert!(
        history.contains("sent your e-mail address in the body to Lab Broker Inc"),
        "{history}"
    );
    for args in [&["report", "--json"][..], &["history", "--json"][..]] {
        let (_, bob_sees) = client(&dir, Some(BOB), args);
        assert!(
            !bob_sees.contains("received") && !bob_sees.contains("\"sent\""),
            "Bob sees Alice's: {bob_sees}"
        );
    }
    // Forgetting works, and says so without the value.
    let (code, text) = client(
        &dir,
        Some(ALICE),
        &["identity", "remove", "--email", "alice@example.test"],
    );
    assert_eq!(code, Some(0), "{text}");
    let (_, text) = client(&dir, Some(ALICE), &["identity", "list"]);
    assert!(text.contains("No identifiers kept"), "{text}");
    drop(d);
    // Not a byte of a value in the store (its database, journal and shared memory).
    let mut files = 0;
    for e in std::fs::read_dir(dir.join("state")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("brokerwatch.db") {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(e.path()).unwrap();
        for value in ["alice@example.test", "bob@example.test", "alice@", "bob@"] {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{value} in {name}"
            );
        }
    }
    assert!(files >= 1, "the store was written");
    std::fs::remove_dir_all(&dir).ok();
}
