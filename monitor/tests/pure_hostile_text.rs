//! Issue 22, items 2, 3 and 7: names anyone can choose (a process's own name, a Host
//! header, a DNS name) never act on the administrator's terminal, spreadsheet or page.
//! Every text sink is fed a finding whose names carry terminal escapes, a C1 control,
//! a bidi override, zero-width characters and a formula.

use brokerwatch::{
    audit::{format::Format, AuditOutcome, Summary},
    finding::Finding,
    inspect::{Form, IdKind, Place},
    leak::Leak,
    policy::{Category, Severity},
    report,
};

/// Clear screen, an OSC window title, hidden text, CSI as one C1 byte, a right-to-left
/// override and a zero-width space.
const HOSTILE: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{1b}[8m\u{9b}31m\u{202e}moc.evil\u{200b}";
/// Characters that must never reach a sink as themselves.
const FORBIDDEN: [char; 6] = ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}', '\u{200b}', '\u{0}'];

fn hostile_finding() -> Finding {
    Finding {
        first_ms: 1_796_212_800_000,
        last_ms: 1_796_212_801_000,
        pid: 4242,
        comm: HOSTILE.into(),
        thread_comm: HOSTILE.into(),
        exe: Some(format!("/home/mallory/{HOSTILE}")),
        domain: Some(format!("{HOSTILE}.test")),
        dst_ip: "127.0.0.4".parse().unwrap(),
        dst_port: 443,
        category: Some(Category::from("data-broker")),
        company: Some(format!("=cmd|' /C calc'!A0{HOSTILE}")),
        severity: Some(Severity::High),
        source: Some(HOSTILE.into()),
        flagged: true,
        count: 1,
        ..Finding::default()
    }
}

/// What an app sent, to a host its own request named (issue 25: the Host header is the
/// app's to choose, or a hostile page's).
fn hostile_leak() -> Leak {
    let mut l = Leak {
        first_ms: 1_796_212_800_000,
        last_ms: 1_796_212_800_000,
        pid: 4242,
        comm: HOSTILE.into(),
        exe: None,
        app: None,
        app_id: None,
        uid: 1000,
        user: None,
        host: Some(format!("{HOSTILE}.test")),
        named_by: "host_header".into(),
        library: "OpenSSL".into(),
        identifier: Some(IdKind::Email),
        form: Some(Form::Sha256),
        place: Place::Url,
        other_addresses: 0,
        requests: 1,
        company: None,
        category: None,
        severity: None,
        destination_id: None,
        first_party: false,
        flagged: false,
        summary: String::new(),
    };
    l.summary = brokerwatch::leak::sentence(HOSTILE, &l);
    l
}

fn outcome() -> AuditOutcome {
    AuditOutcome {
        rows: vec![hostile_finding()],
        leaks: vec![hostile_leak()],
        summary: Summary {
            connection_rows: 1,
            connections: 1,
            flagged: 1,
            plaintext: Some(Default::default()),
            sent: Some(1),
            ..Summary::default()
        },
    }
}

fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    String::from_utf8(out).unwrap()
}

fn assert_inert(sink: &str, text: &str) {
    for c in FORBIDDEN {
        assert!(
            !text.contains(c),
            "{sink} passes U+{:04X} through:\n{text:?}",
            c as u32
        );
    }
}

#[test]
fn hostile_names_are_inert_in_the_audit_table_and_the_report_text() {
    let o = outcome();
    let table = written(|w| o.write(w, Format::Table, false).unwrap());
    assert_inert("audit table", &table);
    // What was sent is still shown, written out.
    assert!(table.contains("\\u{001B}[2J"), "{table}");
    assert!(table.contains("\\u{202E}moc.evil"), "{table}");
    assert!(table.contains("What the watched apps sent:"), "{table}");
    let r = o.report();
    for color in [false, true] {
        let text = written(|w| report::text::write(w, &r, color).unwrap());
        // brokerwatch's own colours are the only escapes left.
        let text = ["\u{1b}[1;31m", "\u{1b}[2m", "\u{1b}[0m"]
            .iter()
            .fold(text, |t, code| t.replace(code, ""));
        assert_inert("report text", &text);
    }
}

#[test]
fn hostile_names_are_inert_in_the_html_page() {
    let html = written(|w| outcome().write_html(w).unwrap());
    assert_inert("html report", &html);
    assert!(
        html.contains("\\u{202E}moc.evil"),
        "the override is shown, not obeyed"
    );
}

#[test]
fn csv_cells_that_would_be_formulas_are_neutralised_in_both_writers() {
    let o = outcome();
    let rows = written(|w| o.write(w, Format::Csv, false).unwrap());
    assert_inert("audit csv", &rows);
    assert!(rows.contains("'=cmd|"), "{rows}");
    assert!(!rows.contains(",=cmd"), "{rows}");
    let r = o.report();
    let csv = written(|w| report::write(w, &r, report::Format::Csv, "").unwrap());
    assert_inert("report csv", &csv);
    assert!(csv.contains("'=cmd|"), "{csv}");
    assert!(!csv.contains(",=cmd"), "{csv}");
}

#[test]
fn json_keeps_what_was_sent_escaped_by_json_itself() {
    // JSON is for tools: what was sent is kept, C0 controls escaped by JSON itself.
    let o = outcome();
    let json = written(|w| o.write(w, Format::Json, false).unwrap());
    assert!(!json.contains('\u{1b}'), "{json}");
    let row: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(row["comm"], HOSTILE);
}
