//! Issue 13: the report people read. A fake meeting app (a real client renamed `zoom`)
//! contacts a social SDK, a data broker and its own first party in a lab namespace; the
//! audit's HTML report is rendered by a real headless Chromium (in the namespace, with no
//! network beyond it) and the screenshot is kept under target/tmp/test-artifacts.

mod common;

use std::{path::PathBuf, process::Command};

use common::{
    audit::BIN,
    lab::{Lab, HTTP_PORT, TLS_PORT},
};

fn artifacts() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tmp/test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Pixels of exactly `color` (`#rrggbb`) in a PNG, by ImageMagick's histogram.
fn pixels_of(png: &std::path::Path, color: &str) -> u64 {
    let out = Command::new("convert")
        .arg(png)
        .args(["-format", "%c", "histogram:info:-"])
        .output()
        .expect("convert (imagemagick)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.to_uppercase().contains(&color.to_uppercase()))
        .filter_map(|l| l.trim().split(':').next()?.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn report_html_of_a_lab_audit_renders_companies_and_graph_in_chromium() {
    let lab = Lab::new("report");
    let zoom = lab.dir.join("zoom");
    std::fs::copy("/usr/bin/curl", &zoom).unwrap();
    let policy = lab.dir.join("broker.toml");
    std::fs::write(&policy, common::daemon::policy_text("Lab Broker Inc")).unwrap();
    let z = zoom.display();
    let script = format!(
        "for i in 1 2 3; do {z} -sk -o /dev/null https://graph.facebook.com:{TLS_PORT}/; done; \
         {z} -sk -o /dev/null https://broker.test:{TLS_PORT}/; \
         {z} -s -o /dev/null http://page.vendor.test:{HTTP_PORT}/; echo command-$((40+2))"
    );
    let html = lab.dir.join("report.html");
    let json = lab.dir.join("report.json");
    let out = Command::new(BIN)
        .args(["audit", "--json", "--output"])
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .arg("--policy")
        .arg(&policy)
        .arg("--")
        .args(lab.exec(&["sh", "-c", &script]))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "flagged: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --output keeps the command's own output out of the JSON.
    assert!(stdout.contains("command-42"), "{stdout}");
    let report_json = std::fs::read_to_string(&json).unwrap();
    assert!(!report_json.contains("command-42"));
    for l in report_json.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert_eq!(
            v["schema"],
            brokerwatch::report::SCHEMA,
            "every line says its shape: {l}"
        );
    }
    let page = std::fs::read_to_string(&html).unwrap();
    for want in [
        "Zoom contacted 1 data broker and 1 social-media SDK",
        "Lab Broker Inc",
        "Meta (Facebook)",
        "graph.facebook.com",
        "page.vendor.test",
    ] {
        assert!(
            page.contains(&crate_escape(want)),
            "{want} missing from the page"
        );
    }
    assert!(
        page.matches("<svg").count() >= 2,
        "the graph and the timeline"
    );
    // A real browser renders it (inside the namespace: nothing can be fetched anyway).
    let shot = artifacts().join("report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = lab.dir.join("chromium-profile");
    let argv = [
        "timeout",
        "60",
        "chromium",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1200,1500",
        &format!("--user-data-dir={}", profile.display()),
        &format!("--screenshot={}", shot.display()),
        &format!("file://{}", html.display()),
    ];
    let argv = lab.exec(&argv);
    let st = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    // The flagged curve, the flagged headline's bar and the data broker's colour are
    // #d7263d; the graph's app boxes are #1d232a. A blank or unstyled page has neither.
    let red = pixels_of(&shot, "#D7263D");
    let dark = pixels_of(&shot, "#1D232A");
    assert!(
        red > 500,
        "too little of the flagged colour ({red} px) in {}",
        shot.display()
    );
    assert!(
        dark > 1000,
        "no app boxes ({dark} px) in {}",
        shot.display()
    );
    std::fs::copy(&html, artifacts().join("report.html")).unwrap();
}

/// How the page writes `s` (names pass through HTML escaping).
fn crate_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
