//! `cargo xtask vm-test`: the kernel matrix. Boots Debian's own cloud kernels (bullseye's
//! 5.10, bookworm's 6.1, trixie's 6.12, sid's newest) in QEMU (TCG: nested KVM does not work on these machines) with an
//! initramfs holding busybox, the release `brokerwatch`, `bw-netprobe` and their libraries,
//! runs `vm/scenarios.sh` inside, and checks what it prints. The host kernel runs the same
//! scenarios directly, with the probes in a network namespace.
//!
//! Kernel packages are fetched with an apt configuration of our own under the cache
//! directory (the machine's sources stay untouched) and cached there.

mod checks;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

use crate::{cargo, is_root, root, run_cmd, setup};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kernel {
    /// Debian 11 (bullseye) cloud kernel.
    #[value(name = "5.10")]
    V5_10,
    /// Debian 12 (bookworm) cloud kernel.
    #[value(name = "6.1")]
    V6_1,
    /// Debian 13 (trixie) cloud kernel.
    #[value(name = "6.12")]
    V6_12,
    /// Debian sid's newest cloud kernel.
    Sid,
    /// The running kernel, without a VM.
    Host,
    All,
}

#[derive(Args)]
pub struct VmArgs {
    /// Which kernel(s) to test.
    #[arg(long, value_enum, default_value = "all")]
    kernel: Kernel,
}

/// A Debian kernel series: where its package comes from.
struct Series {
    name: &'static str,
    suite: &'static str,
}

const SERIES: [Series; 4] = [
    Series {
        name: "5.10",
        suite: "bullseye",
    },
    Series {
        name: "6.1",
        suite: "bookworm",
    },
    Series {
        name: "6.12",
        suite: "trixie",
    },
    Series {
        name: "sid",
        suite: "sid",
    },
];

/// How long one guest may take (TCG is slow; the scenarios take about a minute).
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);

pub fn run(args: VmArgs) -> Result<()> {
    let env = setup::all()?;
    if !is_root() {
        bail!("the kernel matrix loads eBPF programs on the host leg and fetches kernels with apt: run it as root (`sudo -E cargo xtask vm-test`)");
    }
    matrix(&env, args.kernel)
}

/// Runs the matrix for `which`; used by `cargo xtask test` too.
pub fn matrix(env: &setup::Env, which: Kernel) -> Result<()> {
    let started = Instant::now();
    let bins = build_release(env)?;
    let legs: Vec<&str> = match which {
        Kernel::V5_10 => vec!["5.10"],
        Kernel::V6_1 => vec!["6.1"],
        Kernel::V6_12 => vec!["6.12"],
        Kernel::Sid => vec!["sid"],
        Kernel::Host => vec!["host"],
        Kernel::All => vec!["5.10", "6.1", "6.12", "sid", "host"],
    };
    let mut initramfs = None;
    let mut failures = Vec::new();
    for leg in legs {
        let t = Instant::now();
        let output = if leg == "host" {
            host_leg(&bins)?
        } else {
            let series = SERIES.iter().find(|s| s.name == leg).expect("known series");
            let kernel = fetch_kernel(series)?;
            if initramfs.is_none() {
                initramfs = Some(build_initramfs(&bins)?);
            }
            let initramfs = initramfs.as_ref().expect("built above");
            let first = boot(&kernel, initramfs)?;
            // A guest that died before /init ran (TCG once panicked in the kernel's own
            // text patching at 1.6 s) is QEMU's fault: it is booted once more, and said. So
            // is a guest kernel stopped by an int3 of its own text patching outside any BPF
            // program (`checks::tcg_text_patch_oops`). Any other failure fails.
            if !first.contains("=== KERNEL ") {
                let tail: Vec<&str> = first.lines().rev().take(3).collect();
                eprintln!(
                    "xtask: the {leg} guest died before /init ran (a QEMU/TCG boot failure, last lines: {}); booting it once more",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
                boot(&kernel, initramfs)?
            } else if let Some(rip) = checks::tcg_text_patch_oops(&first) {
                eprintln!(
                    "xtask: the {leg} guest's kernel stopped on an int3 of its own text patching ({rip}): QEMU/TCG running code another vCPU was rewriting, not a program of ours; booting it once more"
                );
                boot(&kernel, initramfs)?
            } else {
                first
            }
        };
        let report = checks::check(&output);
        eprintln!(
            "xtask: kernel matrix, {leg} ({}): {} in {:.0} s",
            report.kernel.as_deref().unwrap_or("kernel unknown"),
            if report.failures.is_empty() {
                "all scenarios passed".to_owned()
            } else {
                format!("{} failed", report.failures.len())
            },
            t.elapsed().as_secs_f64()
        );
        for line in &report.notes {
            eprintln!("xtask:   {line}");
        }
        // Kept for every leg: a failure is read against a run that passed.
        let log = root().join(format!("target/vm/{leg}.log"));
        std::fs::write(&log, &output).ok();
        if !report.failures.is_empty() {
            for f in &report.failures {
                eprintln!("xtask:   FAILED {f}");
            }
            eprintln!("xtask:   full output: {}", log.display());
            failures.push(leg);
        }
    }
    eprintln!(
        "xtask: kernel matrix took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!("kernel matrix failed on {failures:?}");
    }
    Ok(())
}

/// The release binaries the scenarios run.
struct Binaries {
    brokerwatch: PathBuf,
    probe: PathBuf,
}

fn build_release(env: &setup::Env) -> Result<Binaries> {
    run_cmd(cargo(env).args([
        "build",
        "--release",
        "-p",
        "monitor",
        "--bin",
        "brokerwatch",
        "--bin",
        "bw-netprobe",
    ]))?;
    let dir = root().join("target/release");
    Ok(Binaries {
        brokerwatch: dir.join("brokerwatch"),
        probe: dir.join("bw-netprobe"),
    })
}

fn cache() -> PathBuf {
    setup::cache_dir().join("kernels")
}

/// The first Debian mirror of the machine's apt sources (deb822 or one-line format).
fn mirror() -> String {
    let deb822 = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").ok();
    let from_deb822 = deb822.as_deref().and_then(|t| {
        t.lines()
            .filter_map(|l| l.strip_prefix("URIs:"))
            .flat_map(str::split_whitespace)
            .find(|u| u.trim_end_matches('/').ends_with("/debian"))
            .map(str::to_owned)
    });
    let list = std::fs::read_to_string("/etc/apt/sources.list").ok();
    let from_list = list.as_deref().and_then(|t| {
        t.lines()
            .filter(|l| l.starts_with("deb "))
            .filter_map(|l| l.split_whitespace().find(|w| w.contains("://")))
            .find(|u| u.trim_end_matches('/').ends_with("/debian"))
            .map(str::to_owned)
    });
    from_deb822
        .or(from_list)
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned())
}

/// Downloads (once) the series' `linux-image-cloud-amd64` and returns its vmlinuz.
fn fetch_kernel(series: &Series) -> Result<PathBuf> {
    let dir = cache().join(series.name);
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.is_file() {
        return Ok(vmlinuz);
    }
    let apt = dir.join("apt");
    for sub in ["lists/partial", "cache/archives/partial", "parts"] {
        std::fs::create_dir_all(apt.join(sub))?;
    }
    std::fs::write(
        apt.join("parts/brokerwatch.sources"),
        format!(
            "Types: deb\nURIs: {}\nSuites: {}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            mirror(),
            series.suite
        ),
    )?;
    std::fs::write(apt.join("status"), "")?;
    let opts: Vec<String> = vec![
        "-o".into(),
        "Dir::Etc::sourcelist=/dev/null".into(),
        "-o".into(),
        format!("Dir::Etc::sourceparts={}", apt.join("parts").display()),
        "-o".into(),
        format!("Dir::State::lists={}", apt.join("lists").display()),
        "-o".into(),
        format!("Dir::Cache={}", apt.join("cache").display()),
        "-o".into(),
        format!("Dir::State::status={}", apt.join("status").display()),
        "-o".into(),
        "APT::Sandbox::User=root".into(),
    ];
    eprintln!(
        "xtask: fetching Debian {}'s cloud kernel ({})",
        series.suite, series.name
    );
    run_cmd(
        Command::new("apt-get")
            .args(&opts)
            .args(["-q", "update"])
            .stdout(Stdio::null()),
    )?;
    let out = Command::new("apt-cache")
        .args(&opts)
        .args(["depends", "linux-image-cloud-amd64"])
        .output()
        .context("apt-cache depends")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let package = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| {
            format!(
                "no kernel package behind linux-image-cloud-amd64 in {}",
                series.suite
            )
        })?
        .to_owned();
    let (extract, image, debs) = unpack(&opts, &apt, &package)?;
    std::fs::copy(&image, dir.join("vmlinuz.tmp"))?;
    std::fs::rename(dir.join("vmlinuz.tmp"), &vmlinuz)?;
    std::fs::write(dir.join("package"), format!("{package}\n"))?;
    let _ = std::fs::remove_dir_all(&extract);
    for d in &debs {
        let _ = std::fs::remove_file(d);
    }
    Ok(vmlinuz)
}

/// Downloads `package` (and, in sid, the `linux-binary-VERSION` it depends on, which holds
/// the kernel), unpacks them, and returns where, the vmlinuz, and the downloaded files.
fn unpack(opts: &[String], apt: &Path, package: &str) -> Result<(PathBuf, PathBuf, Vec<PathBuf>)> {
    // In sid the image package holds no kernel: it depends on `linux-binary-VERSION`.
    let out = Command::new("apt-cache")
        .args(opts)
        .args(["depends", package])
        .output()
        .context("apt-cache depends")?;
    let mut packages = vec![package.to_owned()];
    packages.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .filter(|p| p.starts_with("linux-binary-"))
            .map(str::to_owned),
    );
    let extract = apt.join("extract");
    let _ = std::fs::remove_dir_all(&extract);
    let mut debs = Vec::new();
    for p in &packages {
        run_cmd(
            Command::new("apt-get")
                .args(opts)
                .args(["-q", "download", p])
                .current_dir(apt),
        )?;
        let deb = std::fs::read_dir(apt)?
            .flatten()
            .map(|e| e.path())
            .find(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{p}_")) && n.ends_with(".deb"))
            })
            .with_context(|| format!("{p} was not downloaded"))?;
        run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extract))?;
        debs.push(deb);
    }
    let deb = &debs[0];
    // `/boot/vmlinuz-VERSION` up to trixie; `/usr/lib/modules/VERSION/vmlinuz` in sid.
    let in_boot = std::fs::read_dir(extract.join("boot"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        });
    let in_modules = || {
        std::fs::read_dir(extract.join("usr/lib/modules"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("vmlinuz"))
            .find(|p| p.is_file())
    };
    let image = in_boot
        .or_else(in_modules)
        .with_context(|| format!("no vmlinuz in {}", deb.display()))?;
    Ok((extract, image, debs))
}

/// The shared libraries a dynamically linked binary needs (from `ldd`).
fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

fn copy_into(tree: &Path, file: &Path, dest: &str) -> Result<()> {
    let target = tree.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().expect("absolute path"))?;
    std::fs::copy(file, &target).with_context(|| format!("copying {}", file.display()))?;
    Ok(())
}

/// A self-signed certificate for the plaintext scenario's server (made once).
fn lab_certificate() -> Result<(PathBuf, PathBuf)> {
    let dir = root().join("target/vm");
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("lab-cert.pem"), dir.join("lab-key.pem"));
    if !cert.exists() || !key.exists() {
        run_cmd(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                ])
                .args(["-subj", "/CN=lab.test", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        )?;
    }
    Ok((cert, key))
}

fn build_initramfs(bins: &Binaries) -> Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    let ldd = Command::new("ldd").arg(busybox).output()?;
    if ldd.status.success() && !String::from_utf8_lossy(&ldd.stdout).contains("not a dynamic") {
        bail!(
            "/bin/busybox is linked dynamically: install busybox-static (`cargo xtask setup` does)"
        );
    }
    let work = root().join("target/vm");
    let tree = work.join("initramfs");
    let _ = std::fs::remove_dir_all(&tree);
    for d in ["bin", "proc", "sys", "dev", "tmp", "run", "etc"] {
        std::fs::create_dir_all(tree.join(d))?;
    }
    copy_into(&tree, busybox, "/bin/busybox")?;
    copy_into(&tree, &bins.brokerwatch, "/usr/bin/brokerwatch")?;
    copy_into(&tree, &bins.probe, "/usr/bin/bw-netprobe")?;
    // The plaintext scenario's TLS client and server (OpenSSL's), with a certificate.
    let openssl = Path::new("/usr/bin/openssl");
    copy_into(&tree, openssl, "/usr/bin/openssl")?;
    let (cert, key) = lab_certificate()?;
    copy_into(&tree, &cert, "/etc/bw-cert.pem")?;
    copy_into(&tree, &key, "/etc/bw-key.pem")?;
    for bin in [&bins.brokerwatch, &bins.probe, &openssl.to_path_buf()] {
        for lib in libraries(bin)? {
            copy_into(&tree, &lib, &lib.display().to_string())?;
        }
    }
    let vm = root().join("xtask/vm");
    copy_into(&tree, &vm.join("init"), "/init")?;
    copy_into(&tree, &vm.join("scenarios.sh"), "/scenarios.sh")?;
    std::fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(tree.join("init"), std::fs::Permissions::from_mode(0o755))?;
    let image = work.join("initramfs.cpio.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            tree.display(),
            image.display()
        ))
        .status()?;
    if !status.success() {
        bail!("building the initramfs failed");
    }
    Ok(image)
}

/// Output of `cmd` (stdout and stderr together), killed after `timeout`.
fn output_within(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut text = out.join().unwrap_or_default();
    text.push_str(&err.join().unwrap_or_default());
    Ok(text)
}

fn boot(kernel: &Path, initramfs: &Path) -> Result<String> {
    output_within(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024"])
            .args(["-nographic", "-no-reboot", "-kernel"])
            .arg(kernel)
            .arg("-initrd")
            .arg(initramfs)
            .args(["-append", "console=ttyS0 panic=-1 quiet"]),
        GUEST_TIMEOUT,
    )
}

/// Where the host mounts the cgroup v2 hierarchy.
fn cgroup2_mount() -> Result<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    text.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(str::to_owned))
                .flatten()
        })
        .context("no cgroup2 mount on this machine")
}

/// The scenarios on the running kernel: brokerwatch on the host, the probes in a network
/// namespace of their own (loopback only).
fn host_leg(bins: &Binaries) -> Result<String> {
    let ns = format!("bwvm{}", std::process::id());
    run_cmd(Command::new("ip").args(["netns", "add", &ns]))?;
    let result = (|| {
        run_cmd(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]))?;
        let kernel = String::from_utf8_lossy(&Command::new("uname").arg("-r").output()?.stdout)
            .trim()
            .to_owned();
        let out = output_within(
            Command::new("sh")
                .arg(root().join("xtask/vm/scenarios.sh"))
                .env("BW", &bins.brokerwatch)
                .env("PROBE", &bins.probe)
                .env("IN", format!("ip netns exec {ns}"))
                .env("CGROUP2", cgroup2_mount()?)
                .env("BW_CERT", lab_certificate()?.0)
                .env("BW_KEY", lab_certificate()?.1),
            GUEST_TIMEOUT,
        )?;
        Ok(format!("=== KERNEL {kernel}\n{out}=== DONE\n"))
    })();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    result
}
