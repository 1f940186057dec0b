//! Man pages (`clap_mangen`) and shell completions (`clap_complete`) generated from the
//! same argument definitions the binary parses, for packages (`cargo xtask deb`).
//! `brokerwatch-policy(1)` also carries the policy file format (`policies/README.md`).

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::Cli;

const POLICY_FORMAT: &str = include_str!("../../../policies/README.md");

/// Writes `man1/brokerwatch.1` and `man1/brokerwatch-SUB.1` for every visible subcommand,
/// and `bash/brokerwatch`, `zsh/_brokerwatch`, `fish/brokerwatch.fish`. Returns the files.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = dir.join("man1");
    std::fs::create_dir_all(&man)?;
    let cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    written.push(write(&man.join("brokerwatch.1"), &page)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("brokerwatch-{}", sub.get_name());
        let mut page = Vec::new();
        let sub = sub.clone().name(name.clone()).display_name(name.clone());
        clap_mangen::Man::new(sub).render(&mut page)?;
        if name == "brokerwatch-policy" {
            writeln!(page, ".SH \"POLICY FILES\"")?;
            page.extend_from_slice(markdown_to_roff(POLICY_FORMAT).as_bytes());
        }
        written.push(write(&man.join(format!("{name}.1")), &page)?);
    }
    for (shell, sub, file) in [
        (Shell::Bash, "bash", "brokerwatch"),
        (Shell::Zsh, "zsh", "_brokerwatch"),
        (Shell::Fish, "fish", "brokerwatch.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "brokerwatch", &mut text);
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        written.push(write(&d.join(file), &text)?);
    }
    Ok(written)
}

/// Where `brokerwatch install` puts the generated files under `root` (the package uses
/// /usr/share instead): (generated file, installed path).
fn local_places(root: &Path) -> Vec<(PathBuf, PathBuf)> {
    let share = root.join("usr/local/share");
    let mut v = vec![
        (
            PathBuf::from("bash/brokerwatch"),
            share.join("bash-completion/completions/brokerwatch"),
        ),
        (
            PathBuf::from("zsh/_brokerwatch"),
            share.join("zsh/site-functions/_brokerwatch"),
        ),
        (
            PathBuf::from("fish/brokerwatch.fish"),
            share.join("fish/vendor_completions.d/brokerwatch.fish"),
        ),
    ];
    let cmd = Cli::command();
    let names = std::iter::once("brokerwatch".to_owned()).chain(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("brokerwatch-{}", s.get_name())),
    );
    for n in names {
        v.push((
            PathBuf::from(format!("man1/{n}.1")),
            share.join(format!("man/man1/{n}.1")),
        ));
    }
    v
}

/// `brokerwatch install`: man pages and completions under `root`/usr/local/share.
pub fn install_local(root: &Path) -> io::Result<Vec<String>> {
    let tmp = std::env::temp_dir().join(format!("brokerwatch-assets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    write_all(&tmp)?;
    let places = local_places(root);
    for (from, to) in &places {
        if let Some(d) = to.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::copy(tmp.join(from), to)?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(vec![format!(
        "installed {} man pages and bash, zsh and fish completions under {}",
        places.len() - 3,
        root.join("usr/local/share").display()
    )])
}

/// `brokerwatch uninstall`: removes what [`install_local`] wrote (and nothing else).
pub fn remove_local(root: &Path) -> Vec<String> {
    let removed = local_places(root)
        .into_iter()
        .filter(|(_, to)| std::fs::remove_file(to).is_ok())
        .count();
    vec![format!("removed {removed} man pages and completions")]
}

fn write(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    std::fs::write(path, bytes)?;
    Ok(path.to_owned())
}

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would read as a
/// request.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The policy README as man-page sections: headings, paragraphs and literal blocks (code
/// fences and tables kept as they are). Emphasis marks are dropped.
pub fn markdown_to_roff(md: &str) -> String {
    let mut out = String::new();
    let mut literal = false;
    let mut first = true;
    for line in md.lines() {
        if line.starts_with("```") {
            out.push_str(if literal {
                ".fi\n.RE\n"
            } else {
                ".PP\n.RS 4\n.nf\n"
            });
            literal = !literal;
            continue;
        }
        if literal {
            out.push_str(&roff_text(line));
            out.push('\n');
            continue;
        }
        if let Some(h) = line.strip_prefix('#') {
            let h = h.trim_start_matches('#').trim().replace('`', "");
            // The top heading is the section's own title.
            if !first {
                out.push_str(&format!(".SS \"{}\"\n", h.replace('"', "")));
            }
            first = false;
            continue;
        }
        first = false;
        if line.trim().is_empty() {
            out.push_str(".PP\n");
        } else if line.starts_with('|') {
            out.push_str(".nf\n");
            out.push_str(&roff_text(line));
            out.push_str("\n.fi\n");
        } else {
            let plain = line.replace("**", "").replace('`', "");
            out.push_str(&roff_text(plain.trim_start()));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_man_pages_and_completions_cover_every_command() {
        let dir = std::env::temp_dir().join(format!("bw-assets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = write_all(&dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "brokerwatch.1",
            "brokerwatch-audit.1",
            "brokerwatch-policy.1",
            "brokerwatch-daemon.1",
            "brokerwatch-notify.1",
            "brokerwatch",
            "_brokerwatch",
            "brokerwatch.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
        let policy = std::fs::read_to_string(dir.join("man1/brokerwatch-policy.1")).unwrap();
        assert!(policy.contains(".SH \"POLICY FILES\""));
        assert!(policy.contains("[[destination]]"));
        let top = std::fs::read_to_string(dir.join("man1/brokerwatch.1")).unwrap();
        assert!(
            top.starts_with(".ie") || top.contains(".TH brokerwatch"),
            "{top}"
        );
        let bash = std::fs::read_to_string(dir.join("bash/brokerwatch")).unwrap();
        assert!(bash.contains("audit") && bash.contains("--duration"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn assets_install_puts_man_pages_and_completions_under_usr_local_and_removes_them() {
        let root = std::env::temp_dir().join(format!("bw-assets-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        install_local(&root).unwrap();
        let share = root.join("usr/local/share");
        assert!(share.join("man/man1/brokerwatch-policy.1").is_file());
        assert!(share
            .join("bash-completion/completions/brokerwatch")
            .is_file());
        std::fs::write(share.join("man/man1/other.1"), "keep").unwrap();
        remove_local(&root);
        assert!(!share.join("man/man1/brokerwatch.1").exists());
        assert!(
            share.join("man/man1/other.1").exists(),
            "only its own files go"
        );
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn assets_roff_escapes_requests_and_backslashes() {
        let r = markdown_to_roff("# T\n.not a request\n\n```\n'quoted \\d\n```\n");
        assert!(r.contains("\\&.not a request"), "{r}");
        assert!(r.contains("\\&'quoted \\ed"), "{r}");
        assert!(
            !r.contains(".SS"),
            "the top heading is the section title: {r}"
        );
    }
}
