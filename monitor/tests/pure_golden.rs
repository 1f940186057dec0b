//! The JSON (and text) that audits, `history` and `report` print keep their shape: a
//! recorded audit (`audit --app zoom --record`, a lab namespace where a program named
//! `zoom` ran curl against a social SDK, a CNAME-cloaked data broker, an analytics host
//! over plain HTTP, its own first party, a literal address, an address probe and a crash
//! reporter) is replayed through the engine and the findings, and every output is compared
//! with the one brokerwatch printed when the recording was made. Schema 1 must not change
//! without its number going up (`BW_GOLDEN_UPDATE=1` rewrites the files, for that).

use std::{
    path::{Path, PathBuf},
    time::{Duration, UNIX_EPOCH},
};

use brokerwatch::{
    audit::{format, AuditOutcome, Summary},
    engine::{Engine, ProcSource},
    finding::{self, Finding},
    host::{appid::AppIdentity, clock::Clock, procinfo::ProcSnapshot, users::UserNames},
    kernel::{capture::read_recording, wire},
    policy::Policy,
    protocol::{self, Alert, Reply},
    report,
};

/// A replay knows nothing of processes but what the records say.
struct Recorded;

impl ProcSource for Recorded {
    fn snapshot(&mut self, _pid: u32) -> Option<ProcSnapshot> {
        None
    }
    fn app_of(&mut self, _pid: u32, _cgroup: Option<&str>) -> Option<AppIdentity> {
        None
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Boot time of the machine the recording was made on, fixed so that times replay alike.
const BOOT_EPOCH_MS: u64 = 1_796_212_800_000;

fn replay() -> (Vec<Finding>, Summary) {
    // Times are shown in local time: the golden files are UTC.
    std::env::set_var("TZ", "UTC");
    let bytes = std::fs::read(fixtures().join("audit-zoom-lab.bwrec")).unwrap();
    let records = read_recording(&bytes).unwrap();
    let mut engine = Engine::with_source(Recorded);
    engine.name_watch_tag(monitor_common::WATCH_TAG_APP_BASE, "zoom");
    for r in &records {
        engine.handle(&wire::decode(r).unwrap());
    }
    let policy = Policy::builtin();
    let clock = Clock::booted_at(UNIX_EPOCH + Duration::from_millis(BOOT_EPOCH_MS));
    let mut users = UserNames::default();
    let mut cx = finding::Context {
        clock: &clock,
        users: &mut users,
        policy: &policy,
        enforcing: false,
        user_blocks: &[],
    };
    let rows = finding::all(&engine, &mut cx);
    let summary = Summary {
        duration_ms: 4_167,
        kernel: "6.18.44".into(),
        hooks: vec!["bw_connect4 (cgroup /sys/fs/cgroup/unified)".into()],
        processes_seen: engine.stats.processes_seen,
        connection_rows: rows.len(),
        connections: rows.iter().map(|r| r.count).sum(),
        flagged: rows.iter().filter(|r| r.flagged).count(),
        records_generated: records.len() as u64,
        records_delivered: records.len() as u64,
        watched: vec!["zoom".into()],
        ..Summary::default()
    };
    (rows, summary)
}

/// Compares `got` with the golden file `name` (or writes it when asked to).
fn golden(name: &str, got: &str) {
    let path = fixtures().join("golden").join(name);
    if std::env::var_os("BW_GOLDEN_UPDATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (BW_GOLDEN_UPDATE=1 writes it)", path.display()));
    if want != got {
        let line = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{name} changed at line {}:\nwas: {:?}\nnow: {:?}",
            line + 1,
            want.lines().nth(line),
            got.lines().nth(line)
        );
    }
}

fn write(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn golden_audit_json_csv_and_table_of_a_recorded_audit_are_unchanged() {
    let (rows, summary) = replay();
    assert_eq!(rows.len(), 17, "the recording's rows");
    assert_eq!(rows.iter().filter(|r| r.flagged).count(), 8);
    let outcome = AuditOutcome {
        rows,
        leaks: Vec::new(),
        summary,
    };
    for (name, fmt) in [
        ("audit.jsonl", format::Format::Json),
        ("audit.csv", format::Format::Csv),
        ("audit.txt", format::Format::Table),
    ] {
        golden(name, &write(|o| outcome.write(o, fmt, false).unwrap()));
    }
}

#[test]
fn golden_history_and_report_json_of_a_recorded_audit_are_unchanged() {
    let (rows, summary) = replay();
    // The alerts a daemon would have sent, one per flagged row, as `history` returns them.
    let alerts: Vec<Alert> = rows
        .iter()
        .filter(|f| f.flagged)
        .enumerate()
        .map(|(i, f)| Alert {
            finding: f.clone(),
            ts_ms: BOOT_EPOCH_MS + 1_000 + i as u64,
            connect_boot_ns: 10 + i as u64,
            decided_boot_ns: 20 + i as u64,
        })
        .collect();
    let history = Reply::History {
        schema: report::SCHEMA,
        alerts,
        sent: Vec::new(),
    };
    golden("history.json", &protocol::encode(&history));
    let outcome = AuditOutcome {
        rows,
        leaks: Vec::new(),
        summary,
    };
    let r = outcome.report();
    golden(
        "report.json",
        &protocol::encode(&Reply::Report(Box::new(r.clone()))),
    );
    golden(
        "report.txt",
        &write(|o| report::text::write(o, &r, false).unwrap()),
    );
}
