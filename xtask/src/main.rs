//! `cargo xtask`: everything a fresh machine needs, idempotently, and the project's jobs.
//!
//! * `setup`: installs Debian packages the tests use, rust-src for the nightly toolchain,
//!   bpf-linker (built against the nightly's own libLLVM) and mounts tracefs.
//! * `test`: setup, then formatting, clippy (host and BPF target) and the test tiers.
//! * `audit`: setup, build, and run `brokerwatch audit ARGS...` (as root).
//! * `bench`: setup, build, and run the benchmarks (see BENCHMARKS.md).
//! * `vm-test`: the kernel matrix (Debian's 6.1 and 6.12 in QEMU, and the host kernel).
//! * `deb`: the Debian package (`target/debian/`); built and checked in test tier 2.
//! * `fuzz`: builds and runs the libFuzzer targets in `fuzz/` (a smoke run is part of
//!   `test`).

mod bench;
mod deb;
mod fuzz;
mod setup;
mod targets;
mod test;
mod vm;

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
    /// Set up, then lint and run the test tiers: 1 pure (also as an ordinary user), 2 root
    /// tests that load programs, 3 end-to-end with real clients and servers.
    Test(test::TestArgs),
    /// Set up, build (release) and run `brokerwatch audit` with these arguments.
    Audit {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build (release) and run the benchmarks; writes bench-results/latest.json.
    Bench(bench::BenchArgs),
    /// The kernel matrix: Debian 12's 6.1 and 13's 6.12 in QEMU, and the host kernel.
    VmTest(vm::VmArgs),
    /// Build target/debian/brokerwatch_<version>_amd64.deb.
    Deb,
    /// Build and run the fuzz targets (default: 10 million executions or 30 min each).
    Fuzz(fuzz::FuzzArgs),
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
        Task::Test(args) => test::run(args),
        Task::Audit { args } => audit(&args),
        Task::Bench(args) => bench::run(args),
        Task::VmTest(args) => vm::run(args),
        Task::Fuzz(args) => fuzz::run(args),
        Task::Deb => deb::run(),
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

/// `cargo` of the nightly toolchain (through rustup) in `dir`, with bpf-linker on PATH and
/// none of the stable cargo's environment leaking in.
pub fn nightly_cargo(env: &setup::Env, dir: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(dir)
        .env("PATH", &env.path)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO")
        .args(["run", "nightly", "cargo"]);
    cmd
}

/// Builds `target/release/brokerwatch` and returns its path.
pub fn build_release_brokerwatch(env: &setup::Env) -> Result<PathBuf> {
    run_cmd(cargo(env).args([
        "build",
        "--release",
        "-p",
        "monitor",
        "--bin",
        "brokerwatch",
    ]))?;
    Ok(root().join("target/release/brokerwatch"))
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

fn audit(args: &[String]) -> Result<()> {
    let env = setup::all()?;
    let bin = build_release_brokerwatch(&env)?;
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
