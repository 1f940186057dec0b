//! `cargo xtask`: everything a fresh machine needs, idempotently, and the project's jobs.
//!
//! * `setup`: installs Debian packages the tests use, rust-src for the nightly toolchain,
//!   bpf-linker (built against the nightly's own libLLVM) and mounts tracefs.
//! * `test`: setup, then formatting, clippy (host and BPF target) and the whole test suite.
//! * `audit`: setup, build, and run `brokerwatch audit ARGS...` (as root).
//! * `bench`: setup, build, and run the benchmarks (see BENCHMARKS.md).

mod bench;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "brokerwatch's build, test and benchmark tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Set up, then run fmt, clippy and every test (unit, integration as root, end-to-end).
    Test {
        /// Skip rustfmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (after --).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build (release) and run `brokerwatch audit` with these arguments.
    Audit {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build (release) and run the benchmarks; writes bench-results/latest.json.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::all().map(|_| ()),
        Task::Test { no_lint, args } => test(no_lint, &args),
        Task::Audit { args } => audit(&args),
        Task::Bench(args) => bench::run(args),
    }
}

/// The workspace root (xtask's parent directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// A `cargo` command in the workspace with bpf-linker on PATH.
pub fn cargo(env: &setup::Env) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).env("PATH", &env.path);
    cmd
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `cmd` as root: directly when we are root, else through sudo (keeping PATH).
pub fn as_root(program: &Path, args: &[String], env: &setup::Env) -> Command {
    if is_root() {
        let mut c = Command::new(program);
        c.args(args).env("PATH", &env.path);
        c
    } else {
        let mut c = Command::new("sudo");
        c.arg("--preserve-env=PATH,RUST_LOG,RUST_BACKTRACE")
            .arg(program)
            .args(args)
            .env("PATH", &env.path);
        c
    }
}

fn test(no_lint: bool, extra: &[String]) -> Result<()> {
    let env = setup::all()?;
    if !is_root() {
        bail!("the test suite loads eBPF programs and must run as root: run `sudo -E cargo xtask test` (CI runs as root)");
    }
    if !no_lint {
        run_cmd(cargo(&env).args(["fmt", "--all", "--", "--check"]))?;
        run_cmd(cargo(&env).args([
            "clippy",
            "--workspace",
            "--exclude",
            "monitor-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        // The kernel programs, linted for their own target with the nightly toolchain.
        run_cmd(
            Command::new("rustup")
                .current_dir(root().join("monitor-ebpf"))
                .env("PATH", &env.path)
                .env_remove("RUSTC")
                .env_remove("RUSTC_WORKSPACE_WRAPPER")
                .env_remove("CARGO")
                .args([
                    "run",
                    "nightly",
                    "cargo",
                    "clippy",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--release",
                    "--target-dir",
                ])
                .arg(root().join("target").join("bpf-clippy"))
                .args(["--", "-D", "warnings"]),
        )?;
    }
    // Integration tests share the machine's cgroup root and ring-buffer pressure: one at
    // a time. cargo-nextest (on every machine of this project) prints one closing summary
    // of every test; plain `cargo test` is the fallback.
    let mut cmd = cargo(&env);
    if have_nextest(&env) {
        cmd.args([
            "nextest",
            "run",
            "--workspace",
            "--exclude",
            "monitor-ebpf",
            "--test-threads=1",
            "--no-fail-fast",
        ])
        .args(extra);
    } else {
        cmd.args(["test", "--workspace", "--exclude", "monitor-ebpf", "--"])
            .arg("--test-threads=1")
            .args(extra);
    }
    run_cmd(&mut cmd)
}

fn have_nextest(env: &setup::Env) -> bool {
    cargo(env)
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn audit(args: &[String]) -> Result<()> {
    let env = setup::all()?;
    run_cmd(cargo(&env).args([
        "build",
        "--release",
        "-p",
        "monitor",
        "--bin",
        "brokerwatch",
    ]))?;
    let bin = root().join("target/release/brokerwatch");
    let mut args = args.to_vec();
    if args.first().map(String::as_str) == Some("--") {
        args.remove(0);
    }
    let mut full = vec!["audit".to_owned()];
    full.extend(args);
    let status = as_root(&bin, &full, &env)
        .status()
        .context("starting brokerwatch")?;
    // brokerwatch's own exit status (1 = flagged destinations) is the result.
    std::process::exit(status.code().unwrap_or(2));
}
