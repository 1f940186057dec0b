//! `cargo xtask fuzz`: builds the libFuzzer targets in `fuzz/` with the coverage
//! instrumentation cargo-fuzz would add (nightly; no cargo-fuzz needed), seeds each corpus
//! from `fuzz/corpus/` and the fixtures, runs every target and prints a table. A crash
//! fails the task and leaves its input under `target/fuzz/artifacts/TARGET/`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{root, run_cmd, setup};

#[derive(Args)]
pub struct FuzzArgs {
    /// Executions per target (a target stops earlier at --max-time).
    #[arg(long, default_value_t = 10_000_000)]
    runs: u64,
    /// Seconds per target at most.
    #[arg(long, default_value_t = 1800)]
    max_time: u64,
    /// A short run of every target, as the test command does (20,000 executions or 5 s).
    #[arg(long)]
    smoke: bool,
    /// Targets to run (default: all in fuzz/Cargo.toml).
    targets: Vec<String>,
}

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// The flags cargo-fuzz passes: libFuzzer's inline 8-bit counters, PC table and compare
/// tracing, with debug assertions and overflow checks on.
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

impl FuzzArgs {
    /// Every target, briefly (the test command's smoke run).
    pub fn smoke() -> Self {
        Self {
            runs: 0,
            max_time: 0,
            smoke: true,
            targets: Vec::new(),
        }
    }
}

pub fn run(args: FuzzArgs) -> Result<()> {
    let env = setup::all()?;
    run_targets(&env, args)
}

/// Builds and runs the targets (setup already done).
pub fn run_targets(env: &setup::Env, mut args: FuzzArgs) -> Result<()> {
    if args.smoke {
        args.runs = 20_000;
        args.max_time = 5;
    }
    let fuzz = root().join("fuzz");
    let all = targets(&fuzz)?;
    let chosen: Vec<String> = if args.targets.is_empty() {
        all.clone()
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; there are: {}", all.join(", "));
            }
        }
        args.targets.clone()
    };
    let target_dir = root().join("target/fuzz");
    run_cmd(
        crate::nightly_cargo(env, &fuzz)
            .env("RUSTFLAGS", RUSTFLAGS)
            .args(["build", "--release", "--target", TRIPLE])
            .arg("--target-dir")
            .arg(&target_dir),
    )?;
    let mut table = String::from(
        "| target | executions | seconds | exec/s | result |\n|---|---:|---:|---:|---|\n",
    );
    let mut crashed = Vec::new();
    for t in &chosen {
        let corpus = target_dir.join("corpus").join(t);
        seed(t, &corpus)?;
        let artifacts = target_dir.join("artifacts").join(t);
        std::fs::create_dir_all(&artifacts)?;
        let bin = target_dir.join(TRIPLE).join("release").join(t);
        let start = std::time::Instant::now();
        let out = Command::new(&bin)
            .arg(&corpus)
            .arg(format!("-runs={}", args.runs))
            .arg(format!("-max_total_time={}", args.max_time))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048"])
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let secs = start.elapsed().as_secs_f64();
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |name: &str| -> u64 {
            log.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_start_matches(':').trim().parse().ok())
                .unwrap_or(0)
        };
        let execs = stat("stat::number_of_executed_units");
        let result = if out.status.success() {
            "no crash".to_owned()
        } else {
            crashed.push(t.clone());
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            format!("CRASH (input in {})", artifacts.display())
        };
        let _ = writeln!(
            table,
            "| {t} | {execs} | {secs:.0} | {} | {result} |",
            (execs as f64 / secs.max(0.001)) as u64
        );
        eprintln!("xtask: fuzz {t}: {execs} executions in {secs:.0} s, {result}");
    }
    println!("{table}");
    std::fs::write(target_dir.join("results.md"), &table)?;
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {}", crashed.join(", "));
    }
    Ok(())
}

/// The `[[bin]]` names in fuzz/Cargo.toml.
fn targets(fuzz: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(fuzz.join("Cargo.toml"))?;
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(v) = line.strip_prefix("name = ").filter(|_| in_bin) {
            out.push(v.trim_matches('"').to_owned());
        }
    }
    Ok(out)
}

/// Fills `corpus` with the target's committed seeds and the fixtures that fit it.
fn seed(target: &str, corpus: &Path) -> Result<()> {
    std::fs::create_dir_all(corpus)?;
    let committed = root().join("fuzz/corpus").join(target);
    let mut files = read_dir_files(&committed);
    match target {
        "policy_toml" => files.extend(read_dir_files(&root().join("policies"))),
        "proc_parsers" => {
            for p in [
                "/proc/self/stat",
                "/proc/self/cgroup",
                "/proc/self/mountinfo",
                "/etc/resolv.conf",
                "/proc/net/udp",
            ] {
                if let Ok(b) = std::fs::read(p) {
                    files.push((p.replace('/', "_"), b));
                }
            }
        }
        "namer" => {
            // Captures as the naming tests see them, behind the target's 6-byte header.
            for (src, kind, port) in [
                ("quic_initial", 2u8, 0u8),
                ("tls_client_hello", 0, 0),
                ("http_head", 0, 1),
                ("dns_answer", 3, 2),
            ] {
                for (name, bytes) in read_dir_files(&root().join("fuzz/corpus").join(src)) {
                    let len = (bytes.len().min(u16::MAX as usize) as u16).to_le_bytes();
                    let mut rec = vec![kind, 0, 0, port, len[0], len[1]];
                    rec.extend_from_slice(&bytes);
                    files.push((format!("{src}-{name}"), rec));
                }
            }
            let fixtures = root().join("monitor/tests/fixtures");
            for (name, bytes) in read_dir_files(&fixtures) {
                if name.ends_with(".bin") {
                    let len = (bytes.len().min(u16::MAX as usize) as u16).to_le_bytes();
                    let mut rec = vec![2, 0, 0, 0, len[0], len[1]];
                    rec.extend_from_slice(&bytes);
                    files.push((name, rec));
                }
            }
        }
        _ => {}
    }
    for (name, bytes) in files {
        std::fs::write(corpus.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}

fn read_dir_files(dir: &PathBuf) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), bytes))
        })
        .collect()
}
