use super::*;
use crate::{finding::Finding, protocol::Alert};

fn alert(app: &str, company: &str, category: &str, sev: &str, domain: &str) -> Alert {
    let some = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    Alert {
        finding: Finding {
            app: some(app),
            company: some(company),
            category: some(category).map(Into::into),
            severity: crate::policy::Severity::parse(sev),
            domain: some(domain),
            pid: 7,
            dst_ip: "192.0.2.1".parse().unwrap(),
            dst_port: 443,
            dns_chain: vec!["api.vendor.test".into(), domain.into()],
            domain_source: Some(crate::naming::NameSource::Sni),
            source: some("x"),
            ..Finding::default()
        },
        // 14:02:03 UTC (minutes are :02 in every whole-hour time zone).
        ts_ms: 1_795_442_523_000,
        connect_boot_ns: 0,
        decided_boot_ns: 0,
    }
}

#[test]
fn one_alert_one_notification_with_company_domain_and_time() {
    let mut t = Throttle::new(ThrottleSettings::default(), HashSet::new());
    let now = Instant::now();
    let meta = alert(
        "Zoom",
        "Meta (Facebook)",
        "social-sdk",
        "high",
        "graph.facebook.com",
    );
    let n = t.push(meta, now).expect("shown at once");
    assert!(!n.update);
    assert_eq!(t.flush(now), None, "nothing more in the burst");
    assert_eq!(n.summary, "Zoom contacted a social-media SDK");
    let time = n
        .body
        .strip_prefix("graph.facebook.com (Meta (Facebook), social sdk) at ")
        .unwrap_or_else(|| panic!("{}", n.body));
    assert!(
        time.len() == 5 && time.ends_with(":02"),
        "local HH:MM: {}",
        n.body
    );
    assert_eq!(n.urgency, "critical");
    assert!(n.details.contains("api.vendor.test -> graph.facebook.com"));
}

#[test]
fn a_burst_of_200_is_one_notification_and_repeats_are_deduplicated() {
    let mut t = Throttle::new(ThrottleSettings::default(), HashSet::new());
    let now = Instant::now();
    let broker = |pid: u32| {
        let mut a = alert(
            "Zoom",
            "Test Broker",
            "data-broker",
            "high",
            "x.broker.test",
        );
        a.finding.pid = pid;
        a
    };
    assert!(
        t.push(broker(0), now).is_some(),
        "the first alert is shown at once"
    );
    for pid in 1..200 {
        assert_eq!(t.push(broker(pid), now), None, "folded into the burst");
    }
    let n = t.flush(now).unwrap();
    assert!(
        n.update,
        "the burst's notification is replaced, not added to"
    );
    assert!(n.body.contains("200 connections"), "{}", n.body);
    // The same pair again within the window: nothing.
    assert_eq!(t.push(broker(1), now + Duration::from_secs(5)), None);
    assert_eq!(t.flush(now + Duration::from_secs(5)), None);
    // After the window: shown again.
    assert!(t.push(broker(1), now + Duration::from_secs(601)).is_some());
}

#[test]
fn the_named_alert_speaks_for_a_burst() {
    let mut t = Throttle::new(ThrottleSettings::default(), HashSet::new());
    let now = Instant::now();
    let mut unnamed = alert("Zoom", "Test Broker", "data-broker", "high", "");
    unnamed.finding.dst_ip = "127.0.0.2".parse().unwrap();
    assert!(t.push(unnamed, now).is_some());
    assert_eq!(
        t.push(
            alert("Zoom", "Test Broker", "data-broker", "high", "broker.test"),
            now
        ),
        None
    );
    let n = t.flush(now).unwrap();
    assert!(
        n.update && n.body.starts_with("broker.test (Test Broker"),
        "{}",
        n.body
    );
}

#[test]
fn several_companies_are_summarised_and_the_rate_is_limited() {
    let mut t = Throttle::new(
        ThrottleSettings {
            per_minute: 2,
            ..ThrottleSettings::default()
        },
        HashSet::new(),
    );
    let now = Instant::now();
    assert!(t
        .push(alert("Zoom", "A", "data-broker", "low", "a.test"), now)
        .is_some());
    assert_eq!(
        t.push(
            alert("Zoom", "B", "ad-attribution", "medium", "b.test"),
            now
        ),
        None
    );
    let n = t.flush(now).unwrap();
    assert_eq!(n.summary, "Zoom contacted 2 companies");
    assert_eq!(n.urgency, "normal");
    let mut shown = 0;
    for c in ["C", "D", "E"] {
        shown += t
            .push(alert("Slack", c, "data-broker", "low", "c.test"), now)
            .is_some() as usize;
        shown += t.flush(now).is_some() as usize;
    }
    assert_eq!(shown, 1, "two notifications per minute in all");
    assert_eq!(t.sent.len(), 2);
    assert!(t.suppressed >= 2);
}

#[test]
fn muted_pairs_stay_muted_across_restarts() {
    let dir = std::env::temp_dir().join(format!("bw-mute-{}", std::process::id()));
    let path = dir.join("muted.json");
    let mut muted = HashSet::new();
    muted.insert(("Zoom".to_owned(), "Sentry".to_owned()));
    save_muted(&path, &muted).unwrap();
    let mut t = Throttle::new(ThrottleSettings::default(), load_muted(&path));
    let now = Instant::now();
    t.push(
        alert("Zoom", "Sentry", "crash-reporting", "info", "sentry.io"),
        now,
    );
    assert_eq!(t.flush(now), None);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn notification_body_escapes_names_chosen_by_whoever_answers_dns() {
    // Issue 16: DNS/SNI names reach the body, which notification servers read as markup.
    let mut t = Throttle::new(ThrottleSettings::default(), HashSet::new());
    let evil = "<a href=\"https://x.test\">click</a>&amp;.vendor.test";
    let note = t
        .push(
            alert("Zoom", "Broker", "data-broker", "high", evil),
            Instant::now(),
        )
        .unwrap();
    assert!(
        note.body.contains(evil) || note.details.contains(evil),
        "{note:?}"
    );
    for text in [markup_escape(&note.body), markup_escape(&note.details)] {
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert!(!text.contains("&amp;.vendor"), "{text}");
    }
    assert_eq!(
        markup_escape("<b>&'\"</b>"),
        "&lt;b&gt;&amp;&apos;&quot;&lt;/b&gt;"
    );
    // Issue 22, item 7: a bidi override or a terminal escape is shown, not obeyed; the
    // body's own line breaks stay line breaks (issue 24, item 6: they were U+FFFD).
    let body = markup_escape("a.test (X, data broker) at 14:02\n\u{202e}moc.evil\u{1b}[2J");
    assert_eq!(body.lines().count(), 2, "{body:?}");
    assert!(
        !body.contains('\u{fffd}') && !body.contains('\u{202e}'),
        "{body:?}"
    );
    assert!(body.contains("\\u{202E}moc.evil"), "{body}");
}

#[test]
fn mute_file_is_never_in_a_shared_directory_and_foreign_files_are_ignored() {
    // Issue 16, item 13: with no HOME the agent read /tmp/brokerwatch/muted.json, which
    // anyone could have written.
    if let Some(p) = mute_file() {
        assert!(!p.starts_with("/tmp"), "{}", p.display());
    }
    let dir = std::env::temp_dir().join(format!("bw-mute-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("muted.json");
    std::fs::write(&p, r#"[["Zoom","Broker"]]"#).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_eq!(load_muted(&p).len(), 1);
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    assert!(
        load_muted(&p).is_empty(),
        "a file anyone can write was trusted"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn agent_recovers_alerts_a_lagged_subscription_dropped_from_the_history() {
    // Issue 16, item 13: 5,000 alerts in a burst, 1,280 shown, the lag notice ignored.
    let at = |ts: u64, pid: u32| {
        let mut a = alert("Zoom", "Broker", "data-broker", "high", "b.vendor.test");
        a.ts_ms = ts;
        a.finding.pid = pid;
        a
    };
    let history: Vec<Alert> = (0..10).map(|i| at(100 + i / 2, i as u32)).collect();
    // Received up to ts 102 (pids 4 and 5 share it; only 4 was received), then 3 missed.
    let got = missed_alerts(history.clone(), 102, &[at(102, 4)], 3);
    let pids: Vec<u32> = got.iter().map(|a| a.finding.pid).collect();
    assert_eq!(pids, vec![5, 6, 7]);
    assert!(missed_alerts(history, 200, &[], 5).is_empty());
}

#[test]
fn a_block_is_told_once_as_blocked_even_after_its_alert_and_offers_no_block_button() {
    let mut t = Throttle::new(ThrottleSettings::default(), HashSet::new());
    let now = Instant::now();
    let contact = || alert("Zoom", "LinkedIn", "social-sdk", "high", "ads.linkedin.com");
    // First it went through (only its SNI named it): an ordinary alert, with Block offered.
    let n = t.push(contact(), now).expect("the alert");
    assert_eq!(n.summary, "Zoom contacted a social-media SDK");
    assert!(!n.blocked);
    assert_eq!(t.flush(now), None);
    // Then the kernel denied it: told once as blocked, though the pair was just shown.
    let mut blocked = contact();
    blocked.finding.blocked = 1;
    let later = now + Duration::from_secs(5);
    let n = t.push(blocked.clone(), later).expect("the block");
    assert_eq!(n.summary, "Blocked: Zoom -> LinkedIn");
    assert!(n.blocked);
    assert!(
        n.body
            .contains("ads.linkedin.com (LinkedIn, social sdk) blocked at "),
        "{}",
        n.body
    );
    assert_eq!(n.pairs, vec![("Zoom".to_owned(), "LinkedIn".to_owned())]);
    assert_eq!(t.flush(later), None);
    // Never again while the agent runs, even after the dedup window.
    let much_later = now + Duration::from_secs(3600);
    assert_eq!(t.push(blocked, much_later), None);
}

#[test]
fn a_pair_allowed_then_blocked_in_one_burst_is_one_company() {
    let mut t = Throttle::new(ThrottleSettings::default(), HashSet::new());
    let now = Instant::now();
    let contact = || alert("Zoom", "LinkedIn", "social-sdk", "high", "ads.linkedin.com");
    assert!(t.push(contact(), now).is_some());
    let mut blocked = contact();
    blocked.finding.blocked = 1;
    assert_eq!(t.push(blocked, now + Duration::from_millis(300)), None);
    let n = t
        .flush(now + Duration::from_secs(2))
        .expect("the burst's update");
    assert!(n.update);
    assert_eq!(n.summary, "Blocked: Zoom -> LinkedIn");
    assert_eq!(n.pairs.len(), 1);
}

#[test]
fn digest_sentence_names_each_apps_new_companies_and_nothing_when_none() {
    use crate::report::{build, Contact};
    let contact = |app: &str, company: Option<&str>| Contact {
        app: app.into(),
        company: company.map(str::to_owned),
        category: company.map(|_| "data-broker".into()),
        severity: None,
        source: None,
        flagged: true,
        destination: "x.test".into(),
        proto: "tcp".into(),
        named_by: None,
        count: 1,
        first_ms: 1,
        last_ms: 1,
        blocked: 0,
        queries: Vec::new(),
    };
    let week = Duration::from_secs(7 * 24 * 3600);
    let r = build(
        vec![
            contact("Zoom", Some("LinkedIn")),
            contact("Zoom", Some("Acxiom")),
            contact("Slack", None),
        ],
        [],
        "store",
        0,
        0,
    );
    assert_eq!(
        super::digest::sentence(&r, week).as_deref(),
        Some("In the last 7 days: Zoom contacted 2 companies it never contacted before: Acxiom, LinkedIn.")
    );
    let quiet = build(vec![contact("Slack", None)], [], "store", 0, 0);
    assert_eq!(super::digest::sentence(&quiet, week), None);
}
