//! `cargo xtask deb`: `target/debian/brokerwatch_<version>_amd64.deb`, built with dpkg-deb
//! from a staged tree: the binary, the unit files `install` also uses, sysusers.d and
//! tmpfiles.d entries, man pages and completions generated from the CLI, the policy
//! documentation. The maintainer scripts create the accounts and directories and enable
//! nothing.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{root, run_cmd, setup};

const MAINTAINER: &str = "brokerwatch developers <brokerwatch@example.org>";

const SYSUSERS: &str = "\
# The service's account and groups (brokerwatch(1)).
g brokerwatch - -
g brokerwatch-users - -
g brokerwatch-admin - -
u brokerwatch -:brokerwatch \"brokerwatch daemon\" /nonexistent /usr/sbin/nologin
";

const TMPFILES: &str = "\
# Policy directory for administrators; the service's state (its store) is private.
d /etc/brokerwatch/policies.d 0755 root root -
d /var/lib/brokerwatch 0700 brokerwatch brokerwatch -
";

const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = "configure" ]; then
    root_opt=""
    [ -n "$DPKG_ROOT" ] && root_opt="--root=$DPKG_ROOT"
    systemd-sysusers $root_opt brokerwatch.conf
    systemd-tmpfiles $root_opt --create brokerwatch.conf
    if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
fi
# Nothing is enabled or started: `systemctl enable --now brokerwatch.service` does that.
exit 0
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = "remove" ] && [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop brokerwatch.service >/dev/null 2>&1 || true
fi
exit 0
"#;

const POSTRM: &str = r#"#!/bin/sh
set -e
if [ "$1" = "purge" ]; then
    # The store (every user's connections) goes with the package; accounts stay, as
    # Debian does for system users.
    rm -rf "$DPKG_ROOT/var/lib/brokerwatch"
    # The policy directory goes if the administrator left nothing in it.
    rmdir --ignore-fail-on-non-empty "$DPKG_ROOT/etc/brokerwatch/policies.d" \
        "$DPKG_ROOT/etc/brokerwatch" 2>/dev/null || true
fi
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
exit 0
"#;

/// The package's path, once built.
pub fn path() -> PathBuf {
    root()
        .join("target/debian")
        .join(format!("brokerwatch_{}_amd64.deb", version()))
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

pub fn run() -> Result<()> {
    let env = setup::all()?;
    build(&env)?;
    println!("{}", path().display());
    Ok(())
}

/// Builds the release binary and the package.
pub fn build(env: &setup::Env) -> Result<()> {
    let built = crate::build_release_brokerwatch(env)?;
    let stage = Stage(root().join("target/debian/stage"));
    let _ = std::fs::remove_dir_all(&stage.0);
    let bin_path = stage.binary(&built)?;
    stage.system_files()?;
    stage.docs()?;
    stage.assets(&bin_path)?;
    stage.maintainer_files(&bin_path)?;
    stage.directories_0755()?;
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage.0)
            .arg(path()),
    )?;
    Ok(())
}

/// The package's tree as it is staged.
struct Stage(PathBuf);

impl Stage {
    /// Writes `bytes` to `rel` in the stage with `mode`.
    fn put(&self, rel: &str, bytes: &[u8], mode: u32) -> Result<PathBuf> {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().expect("relative paths have parents"))?;
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(p)
    }

    /// The stripped binary.
    fn binary(&self, built: &Path) -> Result<PathBuf> {
        let bin_path = self.put("usr/bin/brokerwatch", &std::fs::read(built)?, 0o755)?;
        run_cmd(
            Command::new("strip")
                .args([
                    "--strip-unneeded",
                    "--remove-section=.comment",
                    "--remove-section=.note",
                ])
                .arg(&bin_path),
        )?;
        Ok(bin_path)
    }

    /// Unit files, the autostart entry, sysusers.d and tmpfiles.d.
    fn system_files(&self) -> Result<()> {
        let dist = root().join("dist");
        for (from, to) in [
            (
                "systemd/brokerwatch.service",
                "usr/lib/systemd/system/brokerwatch.service",
            ),
            (
                "systemd/brokerwatch-notify.service",
                "usr/lib/systemd/user/brokerwatch-notify.service",
            ),
            (
                "autostart/brokerwatch-notify.desktop",
                "etc/xdg/autostart/brokerwatch-notify.desktop",
            ),
        ] {
            self.put(to, &std::fs::read(dist.join(from))?, 0o644)?;
        }
        self.put(
            "usr/lib/sysusers.d/brokerwatch.conf",
            SYSUSERS.as_bytes(),
            0o644,
        )?;
        self.put(
            "usr/lib/tmpfiles.d/brokerwatch.conf",
            TMPFILES.as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    /// The policy documentation and the built-in policies (compiled in) as reference for
    /// administrators' own files, the copyright, the rsyslog example, the changelog.
    fn docs(&self) -> Result<()> {
        let doc = "usr/share/doc/brokerwatch";
        self.put(
            &format!("{doc}/policies.md"),
            &std::fs::read(root().join("policies/README.md"))?,
            0o644,
        )?;
        for e in std::fs::read_dir(root().join("policies"))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "toml") {
                let name = p
                    .file_name()
                    .expect("a file")
                    .to_string_lossy()
                    .into_owned();
                self.put(
                    &format!("{doc}/policies/{name}"),
                    &std::fs::read(&p)?,
                    0o644,
                )?;
            }
        }
        self.put(&format!("{doc}/copyright"), copyright().as_bytes(), 0o644)?;
        self.put(
            &format!("{doc}/examples/60-brokerwatch-forward.conf"),
            &std::fs::read(root().join("dist/rsyslog/60-brokerwatch-forward.conf"))?,
            0o644,
        )?;
        let changelog = format!(
            "brokerwatch ({v}) unstable; urgency=medium\n\n  * Built by `cargo xtask deb`; see brokerwatch(1).\n\n -- {MAINTAINER}  {date}\n",
            v = version(),
            date = text_of(Command::new("date").args(["-u", "-R"]))?
        );
        self.put(
            &format!("{doc}/changelog.gz"),
            &gzip(changelog.as_bytes())?,
            0o644,
        )?;
        Ok(())
    }

    /// Man pages and completions from the binary's own argument definitions.
    fn assets(&self, bin_path: &Path) -> Result<()> {
        let assets = root().join("target/debian/assets");
        let _ = std::fs::remove_dir_all(&assets);
        run_cmd(Command::new(bin_path).arg("generate-assets").arg(&assets))?;
        for e in std::fs::read_dir(assets.join("man1"))? {
            let e = e?;
            let name = format!("usr/share/man/man1/{}.gz", e.file_name().to_string_lossy());
            self.put(&name, &gzip(&std::fs::read(e.path())?)?, 0o644)?;
        }
        for (from, to) in [
            (
                "bash/brokerwatch",
                "usr/share/bash-completion/completions/brokerwatch",
            ),
            (
                "zsh/_brokerwatch",
                "usr/share/zsh/vendor-completions/_brokerwatch",
            ),
            (
                "fish/brokerwatch.fish",
                "usr/share/fish/vendor_completions.d/brokerwatch.fish",
            ),
        ] {
            self.put(to, &std::fs::read(assets.join(from))?, 0o644)?;
        }
        Ok(())
    }

    /// Maintainer scripts, conffiles, md5sums and control (last: they cover the rest).
    fn maintainer_files(&self, bin_path: &Path) -> Result<()> {
        self.put("DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
        self.put("DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
        self.put("DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
        self.put(
            "DEBIAN/conffiles",
            b"/etc/xdg/autostart/brokerwatch-notify.desktop\n",
            0o644,
        )?;
        self.put("DEBIAN/md5sums", md5sums(&self.0)?.as_bytes(), 0o644)?;
        self.put(
            "DEBIAN/control",
            control(&self.0, bin_path)?.as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    /// Directories 0755 whatever the umask.
    fn directories_0755(&self) -> Result<()> {
        let mut dirs = vec![self.0.clone()];
        while let Some(d) = dirs.pop() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
            for e in std::fs::read_dir(&d)? {
                let e = e?;
                if e.file_type()?.is_dir() {
                    dirs.push(e.path());
                }
            }
        }
        Ok(())
    }
}

fn text_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("gzip")?;
    child.stdin.take().expect("piped").write_all(bytes)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

/// `md5sum` of every file outside DEBIAN/, paths relative to the root.
fn md5sums(stage: &Path) -> Result<String> {
    let mut files = Vec::new();
    let mut dirs = vec![stage.to_owned()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                if p != stage.join("DEBIAN") {
                    dirs.push(p);
                }
            } else {
                files.push(p.strip_prefix(stage)?.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    text_of(Command::new("md5sum").current_dir(stage).args(&files)).map(|t| t + "\n")
}

/// The control file: shared-library dependencies from dpkg-shlibdeps, size from the tree.
fn control(stage: &Path, bin: &Path) -> Result<String> {
    // dpkg-shlibdeps wants a source tree's debian/control; a scratch one will do.
    let scratch = root().join("target/debian/shlibdeps");
    std::fs::create_dir_all(scratch.join("debian"))?;
    std::fs::write(
        scratch.join("debian/control"),
        "Source: brokerwatch\n\nPackage: brokerwatch\nArchitecture: amd64\n",
    )?;
    let deps = text_of(
        Command::new("dpkg-shlibdeps")
            .current_dir(&scratch)
            .args(["-O", "-e"])
            .arg(bin),
    )?;
    let depends = deps
        .strip_prefix("shlibs:Depends=")
        .context("dpkg-shlibdeps printed no Depends")?
        .to_owned();
    let kib: u64 = text_of(
        Command::new("du")
            .args(["-sk", "--exclude=DEBIAN"])
            .arg(stage),
    )?
    .split_whitespace()
    .next()
    .and_then(|n| n.parse().ok())
    .unwrap_or(0);
    let mut c = String::new();
    let _ = write!(
        c,
        "Package: brokerwatch\nVersion: {v}\nArchitecture: amd64\nMaintainer: {MAINTAINER}\nInstalled-Size: {kib}\nDepends: {depends}, systemd | systemd-standalone-sysusers\nSection: net\nPriority: optional\nHomepage: https://example.org/brokerwatch\nDescription: see which data brokers and trackers meeting apps contact\n eBPF programs watch the connections of chosen apps (Zoom, Teams, Slack and\n other meeting apps first); brokerwatch names each destination (DNS, TLS and\n QUIC SNI, HTTP Host) and checks it against curated lists of data brokers and\n ad, analytics and social-SDK companies. A system service keeps a store of\n every connection and alerts; a desktop agent shows notifications; `brokerwatch\n audit` runs one app under watch. Nothing is enabled on installation.\n",
        v = version()
    );
    Ok(c)
}

fn copyright() -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: brokerwatch\nSource: https://example.org/brokerwatch\n\nFiles: *\nCopyright: 2026 {MAINTAINER}\nLicense: MIT or Apache-2.0\n The MIT license or the Apache License 2.0, at your option.\n .\n On Debian systems the Apache License 2.0 is in\n /usr/share/common-licenses/Apache-2.0.\n"
    )
}
