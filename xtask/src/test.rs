//! `cargo xtask test`: lint, then the three test tiers.
//!
//! 1. Pure tests: no root, no kernel programs (library tests, `tests/pure_*`). They run as
//!    an ordinary user (`nobody`) through a cargo target runner, so that one that quietly
//!    needs privileges fails here. Then a smoke run of every fuzz target.
//! 2. Root tests that load and attach the kernel programs (`tests/root_*`), then the kernel
//!    matrix (`vm-test`: Debian's 6.1 and 6.12 in QEMU, and the host kernel).
//! 3. End-to-end tests with real clients and servers in network namespaces of their own
//!    (`tests/e2e_*`).
//!
//! Test binaries are named by tier; nextest filtersets pick them.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Result};
use clap::Args;

use crate::{cargo, is_root, root, run_cmd, setup};

#[derive(Args)]
pub struct TestArgs {
    /// Run only this tier (1 pure, 2 root, 3 end-to-end); default: all.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    tier: Option<u8>,
    /// Skip rustfmt and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Skip the kernel matrix (QEMU) in tier 2.
    #[arg(long)]
    no_vm: bool,
    /// Extra arguments for `cargo nextest run` (after --), e.g. a test name filter.
    #[arg(last = true)]
    args: Vec<String>,
}

const TIER1: &str = "not (binary(/^root_/) | binary(/^e2e_/))";
const TIER2: &str = "binary(/^root_/)";
const TIER3: &str = "binary(/^e2e_/)";

/// uid and gid of `nobody`.
const NOBODY: u32 = 65534;

pub fn run(args: TestArgs) -> Result<()> {
    let env = setup::all()?;
    let tiers: Vec<u8> = match args.tier {
        Some(t) => vec![t],
        None => vec![1, 2, 3],
    };
    if tiers.iter().any(|&t| t > 1) && !is_root() {
        bail!("test tiers 2 and 3 load eBPF programs and must run as root: run `sudo -E cargo xtask test` (CI runs as root), or `cargo xtask test --tier 1` for the pure tests");
    }
    if !args.no_lint {
        lint(&env)?;
    }
    if !have_nextest(&env) {
        bail!("cargo-nextest is missing: `cargo install cargo-nextest --locked`");
    }
    let mut failed = Vec::new();
    for tier in tiers {
        let (filter, as_user) = match tier {
            1 => (TIER1, true),
            2 => (TIER2, false),
            _ => (TIER3, false),
        };
        let mut cmd = cargo(&env);
        cmd.args(["nextest", "run", "--workspace", "--exclude", "monitor-ebpf"])
            // Root tests share the machine's cgroup root and ring-buffer pressure.
            .args(["--test-threads=1", "--no-fail-fast", "-E", filter])
            .args(&args.args);
        if as_user && is_root() {
            as_ordinary_user(&mut cmd);
        }
        if tier == 2 {
            // The package tests (tests/root_package.rs) check what this builds.
            crate::deb::build(&env)?;
        }
        eprintln!("xtask: test tier {tier} ({filter})");
        let mut result = run_cmd(&mut cmd);
        if tier == 1 {
            // Every fuzz target briefly: they build, and the seeds do not crash them.
            result = result.and(crate::fuzz::run_targets(
                &env,
                crate::fuzz::FuzzArgs::smoke(),
            ));
        }
        if tier == 2 && !args.no_vm {
            result = result.and(crate::vm::matrix(&env, crate::vm::Kernel::All));
        }
        if let Err(e) = result {
            eprintln!("xtask: tier {tier} failed: {e:#}");
            failed.push(tier);
        }
    }
    if !failed.is_empty() {
        bail!("test tiers {failed:?} failed (see above)");
    }
    Ok(())
}

/// Runs the test binaries (not cargo) as `nobody`, through a cargo target runner. Where
/// `nobody` cannot reach the checkout (a clone under /root), the binaries run as root with
/// every capability dropped instead: still without the privileges the pure tier must not
/// need.
fn as_ordinary_user(cmd: &mut Command) {
    let runner = if reachable_by_others(&root()) {
        format!("setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups --")
    } else {
        eprintln!(
            "xtask: {} is not reachable by other users: tier 1 runs as root without capabilities",
            root().display()
        );
        "setpriv --inh-caps=-all --bounding-set=-all --no-new-privs --".to_owned()
    };
    cmd.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", runner)
        .env("BW_TEST_UNPRIVILEGED", "1");
}

/// Whether every directory from `/` to `path` lets others through, and `path` lets them read.
fn reachable_by_others(path: &Path) -> bool {
    let mut p = Some(path);
    while let Some(dir) = p {
        match std::fs::metadata(dir) {
            Ok(m) if m.permissions().mode() & 0o005 == 0o005 => {}
            _ => return false,
        }
        p = dir.parent();
    }
    true
}

fn lint(env: &setup::Env) -> Result<()> {
    run_cmd(cargo(env).args(["fmt", "--all", "--", "--check"]))?;
    run_cmd(cargo(env).args([
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
        crate::nightly_cargo(env, &root().join("monitor-ebpf"))
            .args([
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
    )
}

fn have_nextest(env: &setup::Env) -> bool {
    cargo(env)
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
