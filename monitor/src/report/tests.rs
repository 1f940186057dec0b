use super::*;

fn contact(
    app: &str,
    company: Option<(&str, &str)>,
    dest: &str,
    count: u64,
    t: u64,
    flagged: bool,
) -> Contact {
    Contact {
        app: app.into(),
        company: company.map(|c| c.0.into()),
        category: company.map(|c| c.1.into()),
        severity: company.map(|_| {
            if flagged {
                Severity::High
            } else {
                Severity::Low
            }
        }),
        source: company.map(|_| "https://example.org/fact".into()),
        flagged,
        destination: dest.into(),
        proto: "tcp".into(),
        named_by: Some(NameSource::Sni),
        queries: Vec::new(),
        count,
        first_ms: t,
        last_ms: t + 1000,
        blocked: 0,
    }
}

fn sample() -> Report {
    build(
        vec![
            contact("Zoom", None, "zoom.us", 30, 1_000_000, false),
            contact(
                "Zoom",
                Some(("Mixpanel", "product-analytics")),
                "api.mixpanel.com",
                5,
                1_010_000,
                false,
            ),
            contact(
                "Zoom",
                Some(("LinkedIn", "data-broker")),
                "api.linkedin.com",
                2,
                1_020_000,
                true,
            ),
            contact(
                "Zoom",
                Some(("LinkedIn", "data-broker")),
                "api.linkedin.com",
                3,
                1_030_000,
                true,
            ),
            contact(
                "Slack",
                Some(("Sentry", "crash-reporting")),
                "o1.ingest.sentry.io",
                1,
                1_040_000,
                false,
            ),
        ],
        [],
        "audit",
        0,
        0,
    )
}

#[test]
fn report_groups_by_app_company_and_destination_with_flagged_first() {
    let r = sample();
    assert_eq!(r.schema, SCHEMA);
    assert_eq!(r.apps[0].app, "Zoom", "the app with flagged contacts first");
    let zoom = &r.apps[0];
    assert_eq!(zoom.connections, 40);
    assert_eq!(zoom.companies[0].company, "LinkedIn");
    assert!(zoom.companies[0].flagged);
    assert_eq!(
        zoom.companies[0].domains.len(),
        1,
        "one line per destination and protocol"
    );
    assert_eq!(zoom.companies[0].domains[0].count, 5);
    assert_eq!(zoom.companies[0].domains[0].first_ms, 1_020_000);
    assert_eq!(zoom.companies[0].domains[0].last_ms, 1_031_000);
    assert_eq!(zoom.other[0].destination, "zoom.us");
    assert_eq!(
        zoom.headline(),
        "Zoom contacted 1 data broker and 1 analytics company"
    );
    let total: u64 = r.timeline.iter().map(|b| b.connections).sum();
    let flagged: u64 = r.timeline.iter().map(|b| b.flagged).sum();
    assert_eq!((total, flagged), (41, 5));
}

#[test]
fn report_text_lists_flagged_companies_first_and_colours_only_when_asked() {
    let r = sample();
    let mut plain = Vec::new();
    text::write(&mut plain, &r, false).unwrap();
    let plain = String::from_utf8(plain).unwrap();
    assert!(!plain.contains('\x1b'), "{plain}");
    let linkedin = plain.find("LinkedIn").unwrap();
    let mixpanel = plain.find("Mixpanel").unwrap();
    assert!(linkedin < mixpanel, "{plain}");
    assert!(plain.contains("HIGH"), "{plain}");
    let mut coloured = Vec::new();
    text::write(&mut coloured, &r, true).unwrap();
    assert!(String::from_utf8(coloured).unwrap().contains("\x1b[1;31m"));
}

#[test]
fn report_html_is_self_contained_and_escapes_names_from_the_network() {
    let mut r = sample();
    r.apps[0].companies[0].domains[0].destination = "<script>alert(1)</script>.evil".into();
    r.facts
        .push(("Command".into(), "zoom --url=\"x\" & y".into()));
    let page = html::render(&r, "brokerwatch: what Zoom talked to");
    assert!(!page.contains("<script"), "a name became markup");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.evil"));
    for banned in [
        "src=", "url(", "href=", "@import", "<link", "<img", "<iframe",
    ] {
        assert!(!page.contains(banned), "{banned} would fetch something");
    }
    assert!(page.contains("default-src 'none'"));
    assert!(page.contains("Zoom contacted 1 data broker and 1 analytics company"));
    assert!(
        page.matches("<path").count() >= 3,
        "one curve per app and company"
    );
    assert!(page.contains("zoom --url=&quot;x&quot; &amp; y"));
}

#[test]
fn report_counts_blocked_calls_per_company_and_says_so() {
    let mut c = contact(
        "Zoom",
        Some(("LinkedIn", "social-sdk")),
        "ads.linkedin.com",
        3,
        1_000_000,
        true,
    );
    c.blocked = 2;
    let r = build(vec![c], [], "test", 0, 0);
    assert_eq!(r.apps[0].companies[0].blocked, 2);
    let mut text = Vec::new();
    text::write(&mut text, &r, false).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("(3 connections, 2 blocked)"), "{text}");
    assert!(html::render(&r, "t").contains("(blocked 2x)"));
}

#[test]
fn block_mark_says_blocked_or_why_not() {
    use crate::finding::Finding;
    let mut f = Finding::default();
    assert_eq!(text::block_mark(&f), "");
    f.block_note = Some("not blockable before connect: nothing named it".into());
    assert_eq!(
        text::block_mark(&f),
        "  NOT BLOCKED (not blockable before connect)"
    );
    f.blocked = 2;
    assert_eq!(text::block_mark(&f), "  BLOCKED");
}

fn sent(
    app: &str,
    company: Option<&str>,
    id: Option<crate::inspect::IdKind>,
    others: u64,
    requests: u64,
) -> SentContact {
    use crate::inspect::{Form, Place};
    let form = id.map(|_| Form::Sha256);
    SentContact {
        app: app.into(),
        company: company.map(str::to_owned),
        category: company.map(|_| "data-broker".into()),
        severity: company.map(|_| Severity::High),
        flagged: company.is_some(),
        received: Received {
            what: crate::leak::what_phrase(id, form, others),
            identifier: id,
            form,
            other_addresses: others,
            place: if id.is_some() {
                Place::Url
            } else {
                Place::Body
            },
            host: Some("sales.linkedin.test".into()),
            requests,
            first_ms: 1_000_000,
            last_ms: 1_001_000,
        },
    }
}

#[test]
fn report_says_what_each_company_received_merged_over_processes_in_every_format() {
    use crate::inspect::IdKind;
    let r = build(
        vec![contact("Zoom", None, "zoom.us", 30, 1_000_000, false)],
        vec![
            // Two processes of the app sent the same thing: one row, requests summed.
            sent("Zoom", Some("LinkedIn"), Some(IdKind::Email), 0, 2),
            sent("Zoom", Some("LinkedIn"), Some(IdKind::Email), 0, 3),
            // Other people's addresses: the most one process sent, not a sum.
            sent("Zoom", Some("LinkedIn"), None, 12, 1),
            sent("Zoom", Some("LinkedIn"), None, 3, 1),
            sent("Zoom", None, Some(IdKind::Name), 0, 1),
        ],
        "audit",
        0,
        0,
    );
    let zoom = &r.apps[0];
    assert_eq!(
        zoom.companies.len(),
        1,
        "a company known only from what it received is listed"
    );
    let li = &zoom.companies[0];
    assert!(li.flagged);
    assert_eq!(li.connections, 0);
    let what: Vec<(&str, u64)> = li
        .received
        .iter()
        .map(|x| (x.what.as_str(), x.requests))
        .collect();
    assert_eq!(
        what,
        [
            ("your e-mail address (SHA-256)", 5),
            ("12 e-mail addresses that are not yours", 2)
        ]
    );
    assert_eq!(zoom.sent_elsewhere.len(), 1);
    let mut text = Vec::new();
    text::write(&mut text, &r, false).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("received: 12 e-mail addresses that are not yours in the body, 2 requests (sales.linkedin.test)"),
        "{text}"
    );
    assert!(
        text.contains("sent to its own service or unlisted hosts:"),
        "{text}"
    );
    let html = html::render(&r, "t");
    assert!(html.contains("<h2>What was sent</h2>"), "{html}");
    assert!(html.contains("your e-mail address (SHA-256)"));
    let mut csv_out = Vec::new();
    csv::write_report(&mut csv_out, &r).unwrap();
    let csv_text = String::from_utf8(csv_out).unwrap();
    assert!(csv_text.lines().next().unwrap().ends_with(",received"));
    let json = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}
