//! Idempotent machine set-up: every step checks first and does nothing when already done.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{is_root, run_cmd};

pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and benchmarks use (binary they provide, package).
const PACKAGES: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("ip", "iproute2"),
    ("openssl", "openssl"),
    ("pgrep", "procps"),
    ("mount", "mount"),
    ("dnsmasq", "dnsmasq-base"),
    ("dbus-daemon", "dbus"),
    ("dunst", "dunst"),
    ("Xvfb", "xvfb"),
    ("xdpyinfo", "x11-utils"),
    ("import", "imagemagick"),
    ("systemd-analyze", "systemd"),
    ("python3", "python3"),
    // Plaintext tests: a GnuTLS client, an HTTP/2 server.
    ("wget", "wget"),
    ("nghttpd", "nghttp2-server"),
    // Firefox's plaintext test: the lab's certificate in the test profile.
    ("certutil", "libnss3-tools"),
    // The metrics file's test: Debian's node_exporter reads it.
    ("prometheus-node-exporter", "prometheus-node-exporter"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("cpio", "cpio"),
    ("dpkg-deb", "dpkg"),
    ("bpftool", "bpftool"),
    ("chromium", "chromium"),
    ("firefox-esr", "firefox-esr"),
    ("setpriv", "util-linux"),
    // The package: shared-library dependencies, its checks, its man pages.
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("lintian", "lintian"),
    ("groff", "groff-base"),
    ("journalctl", "systemd"),
    // Fleet forwarding test: the journal to a collector through rsyslog's imjournal.
    ("rsyslogd", "rsyslog"),
];

/// What later commands need from set-up.
pub struct Env {
    /// PATH with bpf-linker's directory first.
    pub path: OsString,
}

pub fn all() -> Result<Env> {
    packages()?;
    systemd_resolved()?;
    python_modules()?;
    rust_src()?;
    let linker_dir = bpf_linker()?;
    tracefs()?;
    let mut path = OsString::from(linker_dir.as_os_str());
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    Ok(Env { path })
}

fn have(binary: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether `/bin/busybox` is the statically linked one the kernel matrix's initramfs needs.
fn static_busybox() -> bool {
    Command::new("ldd")
        .arg("/bin/busybox")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout) + String::from_utf8_lossy(&o.stderr);
            Path::new("/bin/busybox").is_file() && text.contains("not a dynamic executable")
        })
        .unwrap_or(false)
}

fn packages() -> Result<()> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(bin, _)| !have(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if !static_busybox() {
        missing.push("busybox-static");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}: run `sudo apt-get install -y {}` or run this task as root",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run_cmd(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    // Packages with services (rsyslog, dnsmasq) must not start them on a test machine:
    // policy-rc.d says no while apt runs (the Debian way for images and chroots).
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(
            policy,
            "#!/bin/sh\n# cargo xtask setup: no service starts\nexit 101\n",
        )?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let installed = run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    installed
}

/// Python modules the end-to-end tests use: aioquic, a real QUIC client.
const PYTHON_MODULES: &[(&str, &str)] = &[("aioquic", "aioquic==1.7.2")];

fn python_modules() -> Result<()> {
    for (module, requirement) in PYTHON_MODULES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !present {
            run_cmd(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "--quiet",
                requirement,
            ]))?;
        }
    }
    Ok(())
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("running rustc +nightly (is rustup installed?)")?;
    if !out.status.success() {
        bail!(
            "no nightly Rust toolchain: the kernel programs need one (`rustup toolchain install nightly`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn rust_src() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// systemd-resolved and its NSS module (`libnss_resolve.so.2`) for the naming lab, of the
/// installed systemd's version: unpacked into the cache, not installed (the package would
/// take over the machine's `/etc/resolv.conf`). The tests run it in a namespace of their
/// own. Unpacked again when systemd's version changes.
fn systemd_resolved() -> Result<()> {
    let dir = cache_dir().join("systemd-resolved");
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "systemd"])
        .output()
        .context("dpkg-query systemd")?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || version.is_empty() {
        bail!("systemd is not installed (dpkg-query -W systemd): the naming lab needs its version");
    }
    let marker = dir.join("VERSION");
    if std::fs::read_to_string(&marker).is_ok_and(|v| v == version)
        && dir.join("lib/systemd/systemd-resolved").is_file()
    {
        return Ok(());
    }
    let debs = cache_dir().join("systemd-resolved.debs");
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&debs)?;
    for package in ["systemd-resolved", "libnss-resolve"] {
        run_cmd(
            Command::new("apt-get")
                .args(["-q", "download", &format!("{package}={version}")])
                .current_dir(&debs),
        )
        .with_context(|| format!("{package} {version} (systemd's version) cannot be downloaded"))?;
    }
    for deb in std::fs::read_dir(&debs)?.flatten() {
        run_cmd(Command::new("dpkg-deb").arg("-x").arg(deb.path()).arg(&dir))?;
    }
    std::fs::write(&marker, &version)?;
    let _ = std::fs::remove_dir_all(&debs);
    Ok(())
}

pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("brokerwatch")
}

/// bpf-linker, built once per version against the nightly's own libLLVM (Debian 12 has no
/// LLVM 22), into a cache directory; returns the directory holding the binary.
fn bpf_linker() -> Result<PathBuf> {
    let root = cache_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}"));
    let bin_dir = root.join("bin");
    let bin = bin_dir.join("bpf-linker");
    if linker_version(&bin).as_deref() == Some(BPF_LINKER_VERSION) {
        return Ok(bin_dir);
    }
    let sysroot = nightly_sysroot()?;
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
        .with_context(|| format!("no libLLVM-*.so in {}", lib.display()))?;
    let llvm_name = llvm.trim_start_matches("lib").trim_end_matches(".so");
    let major = llvm_name
        .trim_start_matches("LLVM-")
        .split('-')
        .next()
        .unwrap_or("22");
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {llvm_name} (about a minute)"
    );
    let rustflags = format!(
        "-L {lib} -l dylib={llvm_name} -C link-arg=-Wl,-rpath,{lib}",
        lib = lib.display()
    );
    run_cmd(
        Command::new("cargo")
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{major},no-llvm-linking"))
            .arg("--root")
            .arg(&root)
            .env("RUSTFLAGS", rustflags)
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    match linker_version(&bin) {
        Some(v) if v == BPF_LINKER_VERSION => Ok(bin_dir),
        other => bail!(
            "bpf-linker at {} reports version {other:?} after the build",
            bin.display()
        ),
    }
}

fn linker_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).map(str::to_owned)
}

/// Mounts tracefs where the kernel expects it, if nothing is mounted there yet.
fn tracefs() -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted = mountinfo.lines().any(|l| {
        l.split(" - ")
            .nth(1)
            .map(|r| r.starts_with("tracefs "))
            .unwrap_or(false)
    });
    if mounted || !Path::new("/sys/kernel/tracing").is_dir() {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "xtask: tracefs is not mounted; as root: mount -t tracefs nodev /sys/kernel/tracing"
        );
        return Ok(());
    }
    run_cmd(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}
