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
