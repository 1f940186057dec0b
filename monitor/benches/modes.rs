//! What watching costs, per mode users run (issue 23), measured from outside as a user would:
//! a separate C program (`outside/connloop.c`, compiled here with `cc`, named `bwconnloop`)
//! in a network namespace and a cgroup of its own.
//!
//! * Watched: 3,000 loopback TCP connects, to the loop's own listener (connect, accept,
//!   close) and to a server that is another process in a cgroup of its own (connect, close;
//!   `bwconnserve`, the same program: as an app's server is not the app), each alone, under
//!   the floor (empty programs of the hooks' types at the cgroup root), under `audit
//!   -- LOOP`, `audit --all`, `audit --app bwconnloop` (root and `--attach apps`) and the
//!   daemon watching it (`--attach root`, `--attach apps`). The kernel's statistics
//!   (`kernel.bpf_stats_enabled`, read with `bpftool prog show` before and after the loop)
//!   give every program's time per run and per connect, and what it costs above the floor;
//!   the loop gives the connect's p50 and p99 (each run is paired with a run alone, in ABBA
//!   order, and the ratio is taken pair by pair: this VM's speed drifts by more than the
//!   hooks cost, and a median of the pairs' ratios is not moved by a slow spell). The statistics
//!   cost two clock reads a program run, which no user pays: each run times the loop with
//!   them off, then runs it once more with them on for the programs' figures. On loopback
//!   both ends are local: with programs at the cgroup root the packet programs run for the
//!   server's packets too; in an app's cgroup (`--attach apps`) for the client's alone. How
//!   often the reader was woken is read from the kernel's counters; what the monitor
//!   itself spent on the loop's records (its threads' run time, as `top` sees it) per
//!   connect, from `/proc`.
//! * Unwatched: UDP `connect()` calls alone, under the floor and beside a daemon watching
//!   another app at the root; TCP connects beside a daemon that attached in another app's
//!   cgroup; `getpid()` with the daemon idle. Runs alternate between the settings.
//!
//! Output JSON at `$BW_BENCH_OUT` (default bench-results/modes.json).

use std::{collections::BTreeMap, path::Path};

use serde_json::{json, Value};

// The other benches use the rest of the shared module.
#[allow(dead_code)]
#[path = "outside/mod.rs"]
mod outside;
use outside::median;

#[path = "modes/lab.rs"]
mod lab;
use lab::{run, set_stats, Lab, Run, Setting};

const CONNECTS: usize = 3_000;
const UDP_CONNECTS: usize = 200_000;
const GETPIDS: usize = 5_000_000;
/// Pairs of runs (alone, watched) a mode.
const PAIRS: usize = 9;
/// Rounds of the unwatched loops (each setting once a round, next to the loop alone): the
/// runs of a loop spread by 2-3 % on this VM, and two of these targets are 1 %.
const UNWATCHED_ROUNDS: usize = 24;

/// The empty program of the same hook as `program` (none for tracepoints and probes).
fn floor_of(program: &str) -> Option<&'static str> {
    match program {
        "bw_connect4" => Some("bw_floor_conn4"),
        "bw_egress" => Some("bw_floor_out"),
        "bw_ingress" => Some("bw_floor_in"),
        _ => None,
    }
}

/// [`PAIRS`] pairs of a run alone and a run under `setting`, in ABBA order (alone first in
/// even pairs, watched first in odd ones), so that a machine whose speed drifts during the
/// mode moves both halves of a pair alike: the pairs' ratios (watched p50 / alone p50) and
/// the watched runs. The loop alone and the floor are paired with runs alone too.
fn pairs(lab: &mut Lab, setting: Setting, kind: &str) -> (Vec<Run>, Vec<Run>) {
    let (mut alone, mut runs) = (Vec::new(), Vec::new());
    for i in 0..PAIRS {
        let (a, w) = if i % 2 == 0 {
            let a = run(lab, Setting::Alone, kind, CONNECTS);
            (a, run(lab, setting, kind, CONNECTS))
        } else {
            let w = run(lab, setting, kind, CONNECTS);
            (run(lab, Setting::Alone, kind, CONNECTS), w)
        };
        alone.push(a);
        runs.push(w);
    }
    (alone, runs)
}

/// The quartiles' distance over the median of `v`: how far the middle half spreads.
fn iqr_of(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |f: f64| s[((s.len() - 1) as f64 * f).round() as usize];
    (q(0.75) - q(0.25)) / q(0.5)
}

/// A watched mode's figures over [`PAIRS`] runs (medians): p50, p99 and their ratio to the
/// run alone of each pair, every program per run and per connect; with `floor` (the floor
/// mode's programs), the time above it.
fn watched(
    lab: &mut Lab,
    (name, setting): (&str, Setting),
    kind: &str,
    floor: Option<&Value>,
) -> Value {
    // A busy host (the VM's neighbours) moves a run's p50 by more than the hooks cost; a
    // median of ratios taken pair by pair is not moved by a slow spell that spans a pair,
    // nor by a few pairs that a spell splits.
    let (alone, runs) = pairs(lab, setting, kind);
    let of = |runs: &[Run], f: &str| -> Vec<f64> {
        runs.iter()
            .map(|r| r.figures[f].as_f64().unwrap())
            .collect()
    };
    let ratios = |f: &str| -> Vec<f64> {
        let (w, a) = (of(&runs, f), of(&alone, f));
        w.iter().zip(&a).map(|(w, a)| w / a).collect()
    };
    let (p50_ratios, p99_ratios) = (ratios("p50_ns"), ratios("p99_ns"));
    let (p50_ratio, p99_ratio) = (median(p50_ratios.clone()), median(p99_ratios));
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let fig = |f: &str| median(of(&runs, f));
    let mut programs = serde_json::Map::new();
    let (mut total, mut above) = (0.0, 0.0);
    let names: std::collections::BTreeSet<&String> =
        runs.iter().flat_map(|r| r.programs.keys()).collect();
    for p in names {
        let of = |f: &dyn Fn(u64, u64) -> f64| {
            median(
                runs.iter()
                    .map(|r| r.programs.get(p).map_or(0.0, |(t, c)| f(*t, *c)))
                    .collect(),
            )
        };
        let per_run = of(&|t, c| t as f64 / c.max(1) as f64);
        let runs_per_connect = of(&|_, c| c as f64 / CONNECTS as f64);
        let per_connect = of(&|t, _| t as f64 / CONNECTS as f64);
        let floor_run = floor_of(p)
            .and_then(|f| floor?["programs"][f]["ns_per_run"].as_f64())
            .unwrap_or(0.0);
        total += per_connect;
        above += (per_connect - floor_run * runs_per_connect).max(0.0);
        programs.insert(
            p.clone(),
            json!({"ns_per_run": per_run.round(), "runs_per_connect": (runs_per_connect * 10.0).round() / 10.0, "ns_per_connect": per_connect.round()}),
        );
    }
    let woke = median(runs.iter().map(|r| r.wakeups as f64).collect());
    let monitor_ns: Vec<f64> = runs
        .iter()
        .filter_map(|r| Some(r.monitor_ns? as f64 / CONNECTS as f64))
        .collect();
    let monitor = (!monitor_ns.is_empty()).then(|| median(monitor_ns).round());
    eprintln!(
        "modes: {name} ({kind}): connect p50 {:.1} us, {:.3}x the run alone of its pair (median of {PAIRS} pairs; the pairs: {:?}, the middle half spreading {:.1} %), p99 {:.1} us ({:.3}x); in-kernel {total:.0} ns a connect ({above:.0} above the floor), reader woken {woke} times in {CONNECTS}, the monitor's CPU {monitor:?} ns a connect, {programs:?}",
        fig("p50_ns") / 1e3,
        p50_ratio,
        p50_ratios.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
        iqr_of(&p50_ratios) * 100.0,
        fig("p99_ns") / 1e3,
        p99_ratio,
    );
    json!({"connect_p50_ns": fig("p50_ns"), "connect_p99_ns": fig("p99_ns"), "reader_wakeups": woke,
        "alone_p50_ns": median(of(&alone, "p50_ns")), "alone_p99_ns": median(of(&alone, "p99_ns")),
        "connect_p50_ratio": round3(p50_ratio),
        "connect_p99_ratio": round3(p99_ratio),
        "p50_ratio_of_pairs": p50_ratios.iter().map(|r| round3(*r)).collect::<Vec<_>>(),
        "p50_ratio_iqr": round3(iqr_of(&p50_ratios)),
        "p50_ns_of_runs": of(&runs, "p50_ns"), "alone_p50_ns_of_runs": of(&alone, "p50_ns"),
        "kernel_ns_per_connect": total.round(), "above_floor_ns_per_connect": above.round(),
        "programs": programs, "monitor_cpu_ns_per_connect": monitor})
}

/// Unwatched loops: settings alternate within each of [`UNWATCHED_ROUNDS`] rounds (in
/// reverse every other round); medians of the loops' mean ns per call (TCP: p50), and the
/// median of each round's ratio.
fn unwatched(lab: &mut Lab) -> Value {
    let root: &[&str] = &["--app", "zoom", "--attach", "root"];
    let apps: &[&str] = &["--app", "zoom", "--attach", "apps"];
    let cases: [(&str, &str, usize, Setting); 7] = [
        ("udp alone", "udp", UDP_CONNECTS, Setting::Alone),
        ("udp floor", "udp", UDP_CONNECTS, Setting::Floor),
        (
            "udp daemon --attach root",
            "udp",
            UDP_CONNECTS,
            Setting::Daemon(root),
        ),
        ("tcp alone", "tcp", CONNECTS, Setting::Alone),
        (
            "tcp daemon --attach apps",
            "tcp",
            CONNECTS,
            Setting::Daemon(apps),
        ),
        ("getpid alone", "getpid", GETPIDS, Setting::Alone),
        (
            "getpid daemon --attach root",
            "getpid",
            GETPIDS,
            Setting::Daemon(root),
        ),
    ];
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..UNWATCHED_ROUNDS {
        // ABBA: the settings in reverse in every other round, so that a drift within a
        // round favours none of them.
        let order: Vec<_> = if round % 2 == 0 {
            cases.to_vec()
        } else {
            cases.iter().rev().copied().collect()
        };
        for (name, kind, n, setting) in order {
            let r = run(lab, setting, kind, n);
            let field = if kind == "tcp" { "p50_ns" } else { "mean_ns" };
            samples
                .entry(name)
                .or_default()
                .push(r.figures[field].as_f64().unwrap());
        }
    }
    let m: BTreeMap<&str, f64> = samples
        .iter()
        .map(|(k, v)| (*k, median(v.clone())))
        .collect();
    // Each round's ratio (the two settings ran next to each other), then their median.
    let of_rounds = |a: &str, b: &str| -> Vec<f64> {
        let per_round = samples[a].iter().zip(&samples[b]);
        per_round
            .map(|(a, b)| (a / b * 1000.0).round() / 1000.0)
            .collect()
    };
    let ratio = |a: &str, b: &str| (median(of_rounds(a, b)) * 1000.0).round() / 1000.0;
    let out = json!({
        "ns": m,
        "rounds": UNWATCHED_ROUNDS,
        "spread_ns": samples.iter().map(|(k, v)| (*k, (v.iter().cloned().fold(f64::MAX, f64::min), v.iter().cloned().fold(0.0, f64::max)))).collect::<BTreeMap<_, _>>(),
        "udp_connect_vs_floor": ratio("udp daemon --attach root", "udp floor"),
        "udp_floor_vs_alone": ratio("udp floor", "udp alone"),
        "tcp_connect_apps_vs_alone": ratio("tcp daemon --attach apps", "tcp alone"),
        "getpid_daemon_vs_alone": ratio("getpid daemon --attach root", "getpid alone"),
        "ratios_of_rounds": {
            "udp_connect_vs_floor": of_rounds("udp daemon --attach root", "udp floor"),
            "tcp_connect_apps_vs_alone": of_rounds("tcp daemon --attach apps", "tcp alone"),
            "getpid_daemon_vs_alone": of_rounds("getpid daemon --attach root", "getpid alone"),
        },
    });
    eprintln!("modes: unwatched: {out}");
    out
}

fn main() {
    if !outside::should_run("the modes benchmark") {
        return;
    }
    let mut lab = Lab::new();
    let mut out = serde_json::Map::new();
    for (kind, loop_name) in LOOPS {
        out.insert(loop_name.into(), watched_modes(&mut lab, kind).into());
    }
    let unwatched = unwatched(&mut lab);
    set_stats(false);
    let out = json!({
        "method": format!("a separate C program (benches/outside/connloop.c, named bwconnloop) in its own network namespace and cgroup: 3,000 loopback TCP connects, either to its own listener (connect, accept, close: both ends in the loop's cgroup) or to a server that is another process in a cgroup of its own (connect, close), {PAIRS} pairs of a run alone and a run watched per mode in ABBA order, the ratios (p50, p99) taken pair by pair and their median reported; connect times with bpf_stats off, then in-kernel time from a second pass of the same loop with bpf_stats on (bpftool before and after); the monitor's CPU per connect: its threads' run time (/proc/PID/task/*/schedstat) over the timed pass and the moment after it; the floor: empty programs of the hooks' types at the cgroup root; unwatched loops alternate between settings, in reverse every other round, {UNWATCHED_ROUNDS} rounds, each ratio the median of the rounds' ratios"),
        "watched": out,
        "unwatched": unwatched,
    });
    let path = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/modes.json".into());
    if let Some(dir) = Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
}

/// The watched loops: (the loop's kind, its name in the output).
const LOOPS: [(&str, &str); 2] = [
    ("tcp", "own listener (both ends in the loop's cgroup)"),
    (
        "client",
        "server elsewhere (another process, another cgroup)",
    ),
];

/// Every watched mode (and the loop alone, and the floor) with the loop `kind`.
fn watched_modes(lab: &mut Lab, kind: &str) -> serde_json::Map<String, Value> {
    let alone = watched(lab, ("alone", Setting::Alone), kind, None);
    let floor = watched(lab, ("floor", Setting::Floor), kind, None);
    let modes: [(&str, Setting); 7] = [
        ("audit -- LOOP", Setting::Audit(&[])),
        ("audit --all", Setting::Audit(&["--all"])),
        (
            "audit --app (root)",
            Setting::Audit(&["--app", "bwconnloop", "--attach", "root"]),
        ),
        (
            "audit --app --attach apps",
            Setting::Audit(&["--app", "bwconnloop", "--attach", "apps"]),
        ),
        (
            "daemon --attach root",
            Setting::Daemon(&["--app", "bwconnloop", "--attach", "root"]),
        ),
        (
            "daemon --attach apps",
            Setting::Daemon(&["--app", "bwconnloop", "--attach", "apps"]),
        ),
        ("floor", Setting::Floor),
    ];
    let mut out = serde_json::Map::new();
    for (name, setting) in modes {
        let v = if name == "floor" {
            floor.clone()
        } else {
            watched(lab, (name, setting), kind, Some(&floor))
        };
        out.insert(name.into(), v);
    }
    out.insert("alone".into(), alone);
    out
}
