//! Issue 4: the `brokerwatch policy` commands as a user runs them.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_brokerwatch");

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--policy-dir", "/nonexistent-brokerwatch-test"])
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bw-policy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

// Issue 4.
#[test]
fn policy_check_reports_file_line_col_and_exits_2() {
    let p = temp_file(
        "bad.toml",
        "[[rule]]\nid = \"r\"\napps = \"meeting\"\ncategory = \"data-broker\"\nseverity = \"critical\"\naction = \"alert\"\n",
    );
    let (code, text) = run(&["policy", "check", p.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains(&format!("{}:5:12:", p.display())), "{text}");
    assert!(text.contains("critical"), "{text}");
}

// Issue 4.
#[test]
fn policy_check_of_the_builtin_set_passes() {
    let (code, text) = run(&["policy", "check"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("ok: "), "{text}");
}

// Issue 4.
#[test]
fn policy_explain_names_entry_company_category_severity_and_source() {
    let (code, text) = run(&["policy", "explain", "graph.facebook.com", "--app", "zoom"]);
    assert_eq!(code, Some(0), "{text}");
    for want in [
        "Meta (Facebook)",
        "social-sdk",
        "severity: high",
        "action:   alert",
        "source:",
    ] {
        assert!(text.contains(want), "{want} missing: {text}");
    }
    let (_, text) = run(&["policy", "explain", "evilfacebook.com", "--app", "zoom"]);
    assert!(text.contains("no policy entry matches"), "{text}");
}

// Issue 4.
#[test]
fn policy_explain_an_address_from_an_imported_hosts_list() {
    let hosts = temp_file("hosts", "0.0.0.0 telemetry.vendor.test\n");
    let spec = format!("hosts:{}:product-analytics", hosts.display());
    let (code, text) = run(&[
        "policy",
        "explain",
        "eu.telemetry.vendor.test",
        "--import",
        &spec,
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("product-analytics"), "{text}");
}

// Issue 4.
#[test]
fn policy_list_shows_sources_with_counts() {
    let (code, text) = run(&["policy", "list", "--category", "data-broker"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("builtin:data-brokers.toml"), "{text}");
    assert!(text.contains("ZoomInfo"), "{text}");
    assert!(!text.contains("social-sdk ("), "category filter: {text}");
}

// Issue 4.
#[test]
fn policy_broken_policy_fails_audit_before_loading_anything() {
    let p = temp_file("broken.toml", "[[destination]\n");
    let (code, text) = run(&["audit", "--policy", p.to_str().unwrap(), "--duration", "1s"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("broken.toml:1:"), "{text}");
}

// Issue 16, item 9: `policy check DIR` said "Is a directory" and a file's later errors were
// not reported.
#[test]
fn policy_check_of_a_directory_checks_every_file_and_reports_every_error() {
    let dir = std::env::temp_dir().join(format!("bw-policy-check-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("10-bad.toml"),
        "[[rule]]\nid = \"r1\"\napps = \"meeting\"\ncategory = \"data-broker\"\nseverity = \"critical\"\naction = \"alert\"\n\n[[rule]]\nid = \"r2\"\napps = \"meeting\"\ncategory = \"data-broker\"\nseverity = \"high\"\naction = \"explode\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("20-good.toml"),
        "[[destination]]\nid = \"mine\"\ncompany = \"Me\"\ncategory = \"data-broker\"\nsource = \"test\"\ndomains = [\"broker.vendor.test\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("README.txt"), "not a policy").unwrap();
    let (code, text) = run(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{text}");
    let bad = dir.join("10-bad.toml");
    assert!(text.contains(&format!("{}:5:", bad.display())), "{text}");
    assert!(
        text.contains(&format!("{}:13:10:", bad.display())),
        "{text}"
    );
    assert!(text.contains("20-good.toml: ok"), "{text}");
    assert!(!text.contains("Is a directory"), "{text}");
    assert!(!text.contains("README.txt"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

// Issue 13: app definitions are listable, and a mistyped category is an error, not an
// empty list.
#[test]
fn policy_list_apps_shows_definitions_and_an_unknown_category_is_an_error() {
    let (code, text) = run(&["policy", "list", "--apps"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("zoom (Zoom), groups: meeting"), "{text}");
    assert!(text.contains("flatpak      us.zoom.Zoom"), "{text}");
    let (code, text) = run(&["policy", "list", "--category", "brokers"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("the categories are: ") && text.contains("data-broker"),
        "{text}"
    );
    let (code, text) = run(&["policy", "list", "--category", "data-broker"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("data-broker ("), "{text}");
}
