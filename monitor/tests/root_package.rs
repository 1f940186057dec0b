//! Issue 14: the Debian package `cargo xtask deb` builds (test tier 2 builds it first):
//! its contents, lintian, the man pages, and an install and purge in a throwaway root.

mod common;

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use common::require_root;

fn deb() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/debian")
        .join(format!(
            "brokerwatch_{}_amd64.deb",
            env!("CARGO_PKG_VERSION")
        ));
    assert!(
        p.exists(),
        "{} is missing: `cargo xtask deb` builds it (`cargo xtask test` does before tier 2)",
        p.display()
    );
    p
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn package_holds_the_binary_units_accounts_man_pages_and_completions() {
    let (ok, list) = output(Command::new("dpkg-deb").arg("-c").arg(deb()));
    assert!(ok, "{list}");
    for path in [
        "./usr/bin/brokerwatch",
        "./usr/lib/systemd/system/brokerwatch.service",
        "./usr/lib/systemd/user/brokerwatch-notify.service",
        "./etc/xdg/autostart/brokerwatch-notify.desktop",
        "./usr/lib/sysusers.d/brokerwatch.conf",
        "./usr/lib/tmpfiles.d/brokerwatch.conf",
        "./usr/share/doc/brokerwatch/policies.md",
        "./usr/share/doc/brokerwatch/copyright",
        "./usr/share/doc/brokerwatch/examples/60-brokerwatch-forward.conf",
        "./usr/share/man/man1/brokerwatch.1.gz",
        "./usr/share/man/man1/brokerwatch-policy.1.gz",
        "./usr/share/man/man1/brokerwatch-audit.1.gz",
        "./usr/share/man/man1/brokerwatch-daemon.1.gz",
        "./usr/share/bash-completion/completions/brokerwatch",
        "./usr/share/zsh/vendor-completions/_brokerwatch",
        "./usr/share/fish/vendor_completions.d/brokerwatch.fish",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(path)),
            "{path} missing from the package:\n{list}"
        );
    }
}

#[test]
fn package_has_no_lintian_errors() {
    let (_, text) = output(
        Command::new("lintian")
            .args(["--allow-root", "--tag-display-limit", "0"])
            .arg(deb()),
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{text}");
}

#[test]
fn package_man_pages_render_without_warnings_and_completions_parse() {
    let dir = std::env::temp_dir().join(format!("bw-deb-x-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, text) = output(Command::new("dpkg-deb").arg("-x").arg(deb()).arg(&dir));
    assert!(ok, "{text}");
    let man = dir.join("usr/share/man/man1");
    for e in std::fs::read_dir(&man).unwrap() {
        let page = e.unwrap().path();
        let (ok, text) = output(Command::new("sh").arg("-c").arg(format!(
            "zcat '{}' | groff -man -Tutf8 -ww -z",
            page.display()
        )));
        assert!(ok && text.trim().is_empty(), "{}: {text}", page.display());
    }
    let (ok, text) = output(
        Command::new("bash")
            .arg("-n")
            .arg(dir.join("usr/share/bash-completion/completions/brokerwatch")),
    );
    assert!(ok, "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn package_installs_and_purges_cleanly_in_a_throwaway_root() {
    require_root();
    let root = std::env::temp_dir().join(format!("bw-dpkg-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "etc",
        "usr/lib",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(f), "").unwrap();
    }
    let dpkg = |args: &[&str]| {
        output(
            Command::new("dpkg")
                .arg(format!("--root={}", root.display()))
                .args(["--force-script-chrootless", "--force-depends"])
                .args(args),
        )
    };
    let (ok, text) = dpkg(&["-i", deb().to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(root.join("usr/bin/brokerwatch").exists());
    // Accounts and directories from sysusers.d and tmpfiles.d, nothing enabled.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let uid: u32 = passwd
        .lines()
        .find_map(|l| l.strip_prefix("brokerwatch:x:"))
        .and_then(|r| r.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no brokerwatch user: {passwd}"));
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    for g in ["brokerwatch:", "brokerwatch-users:", "brokerwatch-admin:"] {
        assert!(
            group.lines().any(|l| l.starts_with(g)),
            "{g} missing: {group}"
        );
    }
    let state = std::fs::metadata(root.join("var/lib/brokerwatch")).unwrap();
    assert_eq!((state.mode() & 0o777, state.uid()), (0o700, uid));
    assert!(root.join("etc/brokerwatch/policies.d").is_dir());
    assert!(!root
        .join("etc/systemd/system/multi-user.target.wants")
        .exists());
    // Purge: every file of the package, the store and the empty policy directory go.
    std::fs::write(root.join("var/lib/brokerwatch/brokerwatch.db"), "x").unwrap();
    let (ok, text) = dpkg(&["--purge", "brokerwatch"]);
    assert!(ok, "{text}");
    let mut left = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("var/lib/dpkg") || rel.starts_with("etc") {
                // dpkg's database, and the accounts (kept, as Debian does).
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else {
                left.push(rel);
            }
        }
    }
    assert!(left.is_empty(), "left after purge: {left:?}");
    assert!(!root.join("var/lib/brokerwatch").exists());
    assert!(!root.join("etc/brokerwatch").exists());
    std::fs::remove_dir_all(&root).ok();
}
