//! `cargo xtask bench`: runs every benchmark with the monitor off and on in the same run and
//! writes `bench-results/latest.json` (machine, kernel, commit, figures).

use std::process::Command;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::{cargo, is_root, root, run_cmd, setup};

#[derive(Args)]
pub struct BenchArgs {
    /// Where to write the combined JSON.
    #[arg(long, default_value = "bench-results/latest.json")]
    out: String,
}

fn text_of(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    json!({
        "cpu": cpu,
        "cores": cores,
        "memory_gib": mem_kb.map(|k| (k as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0),
        "kernel": text_of(Command::new("uname").arg("-r")),
        "commit": text_of(Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(root())),
        "dirty": !text_of(Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]).current_dir(root())).is_empty(),
        "date": text_of(Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ")),
    })
}

pub fn run(args: BenchArgs) -> Result<()> {
    let env = setup::all()?;
    if !is_root() {
        bail!("the benchmarks load eBPF programs: run `sudo -E cargo xtask bench`");
    }
    let dir = root().join("bench-results");
    std::fs::create_dir_all(&dir).context("creating bench-results/")?;
    let mut all = serde_json::Map::new();
    all.insert("machine".into(), machine());
    for bench in [
        "capture",
        "policy",
        "daemon",
        "store",
        "block",
        "soak",
        "plaintext",
        "fleet",
        "gai",
        "modes",
    ] {
        let out = dir.join(format!("{bench}.json"));
        run_cmd(
            cargo(&env)
                .args(["bench", "-p", "monitor", "--bench", bench])
                .env("BW_BENCH_OUT", &out),
        )?;
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?,
        )?;
        all.insert(bench.into(), v);
    }
    let targets = crate::targets::of(&Value::Object(all.clone()));
    crate::targets::print(&targets);
    all.insert("targets".into(), targets.into());
    let all = Value::Object(all);
    let out = root().join(&args.out);
    std::fs::write(&out, serde_json::to_string_pretty(&all)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}
