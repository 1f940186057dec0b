//! What each kernel-matrix scenario must show, checked on the `--json` output of the audits
//! the guest (or the host leg) printed.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

pub struct Report {
    pub kernel: Option<String>,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
}

/// One scenario's output: its JSON lines, other lines, and exit status.
#[derive(Default)]
struct Section {
    json: Vec<Value>,
    text: Vec<String>,
    rc: Option<i32>,
}

impl Section {
    fn rows(&self) -> impl Iterator<Item = &Value> {
        self.json.iter().filter(|v| v["type"] == "connection")
    }

    fn summary(&self) -> Option<&Value> {
        self.json.iter().find(|v| v["type"] == "summary")
    }

    fn row(&self, proto: &str, ip: &str, port: u64) -> Option<&Value> {
        self.rows()
            .find(|r| r["proto"] == proto && r["dst_ip"] == ip && r["dst_port"] == port)
    }

    /// Why the section is unusable, if it is.
    fn broken(&self) -> Option<String> {
        if self.rc.is_none() {
            return Some("did not finish".into());
        }
        if self.summary().is_none() {
            return Some(format!(
                "no summary (exit status {:?}): {}",
                self.rc,
                self.text.join(" | ")
            ));
        }
        None
    }
}

fn sections(output: &str) -> (Option<String>, HashMap<String, Section>) {
    let mut kernel = None;
    let mut map: HashMap<String, Section> = HashMap::new();
    let mut current: Option<String> = None;
    for raw in output.lines() {
        // The serial console may end lines with \r and prefix them with escape codes.
        let line = raw.trim_end_matches('\r');
        let line = line.find("===").map(|i| &line[i..]).unwrap_or(line);
        if let Some(k) = line.strip_prefix("=== KERNEL ") {
            kernel = Some(k.trim().to_owned());
        } else if let Some(name) = line.strip_prefix("=== BEGIN ") {
            current = Some(name.trim().to_owned());
            map.entry(name.trim().to_owned()).or_default();
        } else if let Some(rest) = line.strip_prefix("=== END ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap_or("");
            let rc = parts
                .next()
                .and_then(|r| r.strip_prefix("rc="))
                .and_then(|r| r.parse().ok());
            if let Some(s) = map.get_mut(name) {
                s.rc = rc;
            }
            current = None;
        } else if let Some(name) = &current {
            let s = map.get_mut(name).expect("inserted at BEGIN");
            let trimmed = raw.trim();
            let start = trimmed.find('{');
            match start.and_then(|i| serde_json::from_str::<Value>(&trimmed[i..]).ok()) {
                Some(v) => s.json.push(v),
                None if !trimmed.is_empty() => s.text.push(trimmed.to_owned()),
                None => {}
            }
        }
    }
    (kernel, map)
}

fn exe_is_probe(r: &Value) -> bool {
    r["exe"]
        .as_str()
        .is_some_and(|e| e.ends_with("/bw-netprobe"))
}

/// The books balance: every record the kernel generated was delivered or counted lost.
fn balanced(s: &Value) -> Result<(u64, u64, u64), String> {
    let n = |k: &str| s[k].as_u64().unwrap_or(u64::MAX);
    let (g, d, l) = (
        n("records_generated"),
        n("records_delivered"),
        n("records_lost"),
    );
    let refused = s["records_over_budget"].as_u64().unwrap_or(0);
    if g == d + l + refused && s["records_undecodable"] == 0 {
        Ok((g, d, l))
    } else {
        Err(format!(
            "records do not balance: generated {g}, delivered {d}, lost {l}, over budget {refused}, undecodable {}",
            s["records_undecodable"]
        ))
    }
}

type Check = fn(&Section) -> Result<Option<String>, String>;

const CHECKS: &[(&str, Check)] = &[
    ("tcp", tcp),
    ("tcp6", tcp6),
    ("udp", udp),
    ("grandchild", grandchild),
    ("short_lived", short_lived),
    ("dns", dns),
    ("tls", tls),
    ("loss", loss),
    ("budget", budget),
    ("reexec", reexec),
    ("block", block),
    ("app_scope", app_scope),
    ("plaintext", plaintext),
];

pub fn check(output: &str) -> Report {
    let (kernel, sections) = sections(output);
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    if !output.contains("=== DONE") {
        failures.push("the scenarios did not run to the end".to_owned());
    }
    match sections.get("version") {
        Some(s) if s.text.iter().any(|l| l.starts_with("brokerwatch ")) => {}
        _ => failures.push("version: brokerwatch did not start".to_owned()),
    }
    // Before 5.17 (no bpf_loop) blocking is refused, in one sentence, with status 2.
    let no_bpf_loop = kernel
        .as_deref()
        .and_then(kernel_version)
        .is_some_and(|v| v < (5, 17));
    for (name, check) in CHECKS {
        let Some(section) = sections.get(*name) else {
            failures.push(format!("{name}: missing from the output"));
            continue;
        };
        if *name == "block" && no_bpf_loop {
            match block_refused(section) {
                Ok(note) => notes.push(format!("{name}: {note}")),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
            continue;
        }
        if let Some(why) = section.broken() {
            failures.push(format!("{name}: {why}"));
            continue;
        }
        let books = balanced(section.summary().expect("checked by broken()"));
        match (check(section), books) {
            (Ok(note), Ok(_)) => notes.extend(note.map(|n| format!("{name}: {n}"))),
            (Err(e), _) | (Ok(_), Err(e)) => failures.push(format!("{name}: {e}")),
        }
    }
    Report {
        kernel,
        failures,
        notes,
    }
}

/// `major.minor` of a kernel release (`5.10.0-32-cloud-amd64`).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// `audit --enforce` on a kernel without bpf_loop: refused in one clear sentence (said
/// once, no verifier statistics), exit status 2.
fn block_refused(s: &Section) -> Result<String, String> {
    let said: Vec<&String> = s
        .text
        .iter()
        .filter(|l| l.contains("blocking needs Linux 5.17 or newer"))
        .collect();
    let error = said
        .iter()
        .find(|l| l.contains("error: --enforce: "))
        .ok_or_else(|| format!("no refusal: {}", s.text.join(" | ")))?;
    if s.rc != Some(2)
        || error.matches("5.17").count() != 1
        || s.text.iter().any(|l| l.contains("verification time"))
        || !error.contains("watches and reports on this kernel, but denies nothing")
    {
        return Err(format!(
            "the refusal is not one clear sentence with status 2 (status {:?}): {}",
            s.rc,
            s.text.join(" | ")
        ));
    }
    Ok("refused: no bpf_loop before 5.17 (status 2, one sentence)".to_owned())
}

fn tcp(s: &Section) -> Result<Option<String>, String> {
    let r = s
        .row("tcp", "127.0.0.1", 4433)
        .ok_or("no row for the TCP connect to 127.0.0.1:4433")?;
    if !exe_is_probe(r) || r["ppid"].is_null() {
        return Err(format!("row lacks exe or parent: {r}"));
    }
    s.row("tcp", "127.0.0.1", 1)
        .ok_or("no row for the refused non-blocking connect to 127.0.0.1:1")?;
    Ok(None)
}

fn tcp6(s: &Section) -> Result<Option<String>, String> {
    s.row("tcp", "::1", 4433)
        .ok_or("no row for the TCP connect to [::1]:4433")?;
    Ok(None)
}

fn udp(s: &Section) -> Result<Option<String>, String> {
    let send = s
        .row("udp", "127.0.0.1", 9)
        .ok_or("no row for the UDP send to 127.0.0.1:9")?;
    if send["via"] != "send" {
        return Err(format!("sendto reported as {}", send["via"]));
    }
    let conn = s
        .row("udp", "::1", 9)
        .ok_or("no row for the UDP connect to [::1]:9")?;
    if conn["via"] != "connect" {
        return Err(format!("UDP connect reported as {}", conn["via"]));
    }
    Ok(None)
}

fn grandchild(s: &Section) -> Result<Option<String>, String> {
    let cmd = s
        .summary()
        .and_then(|v| v["command_pid"].as_u64())
        .ok_or("no command pid")?;
    let r = s
        .row("tcp", "127.0.0.1", 4433)
        .ok_or("no row for the grandchild's connect")?;
    let pid = r["pid"].as_u64().unwrap_or(0);
    let ancestry: Vec<u64> = r["ancestry"]
        .as_str()
        .unwrap_or("")
        .split('>')
        .filter_map(|p| p.parse().ok())
        .collect();
    if pid == cmd || ancestry.len() < 2 || !ancestry.contains(&cmd) || !exe_is_probe(r) {
        return Err(format!(
            "the connect is not attributed to a grandchild of {cmd}: {r}"
        ));
    }
    Ok(None)
}

fn short_lived(s: &Section) -> Result<Option<String>, String> {
    let cmd = s
        .summary()
        .and_then(|v| v["command_pid"].as_u64())
        .ok_or("no command pid")?;
    let pids: BTreeSet<u64> = s
        .rows()
        .filter(|r| r["dst_port"] == 4433 && exe_is_probe(r) && r["ppid"].as_u64() == Some(cmd))
        .filter_map(|r| r["pid"].as_u64())
        .collect();
    if pids.len() < 50 {
        return Err(format!(
            "{} of 50 short-lived children attributed with exe and parent",
            pids.len()
        ));
    }
    Ok(Some(format!("{} of 50 children attributed", pids.len())))
}

fn dns(s: &Section) -> Result<Option<String>, String> {
    let r = s
        .row("tcp", "127.0.0.5", 4433)
        .ok_or("no row for the connect to the resolved address")?;
    if r["domain"] != "vm.tracker.test" || r["domain_source"] != "dns" {
        return Err(format!("the DNS answer did not name the connection: {r}"));
    }
    Ok(None)
}

fn tls(s: &Section) -> Result<Option<String>, String> {
    let r = s
        .row("tcp", "127.0.0.6", 4433)
        .ok_or("no row for the TLS connection")?;
    if r["domain"] != "sni.vm.test" || r["domain_source"] != "sni" {
        return Err(format!("the ClientHello did not name the connection: {r}"));
    }
    Ok(None)
}

fn block(s: &Section) -> Result<Option<String>, String> {
    let denied = s
        .row("tcp", "127.0.0.5", 4433)
        .ok_or("no row for the connect to the blocked name's address")?;
    if denied["blocked"].as_u64().unwrap_or(0) == 0 || denied["action"] != "block" {
        return Err(format!(
            "the first connect after the answer was not denied: {denied}"
        ));
    }
    let allowed = s
        .row("tcp", "127.0.0.6", 4433)
        .ok_or("no row for the connect that is not blocked")?;
    if allowed["blocked"].as_u64().unwrap_or(0) != 0 {
        return Err(format!(
            "a destination no rule blocks was denied: {allowed}"
        ));
    }
    let calls = s.summary().map(|v| v["blocked_calls"].clone());
    Ok(Some(format!(
        "blocked calls: {}",
        calls.unwrap_or_default()
    )))
}

fn reexec(s: &Section) -> Result<Option<String>, String> {
    let r = s
        .row("tcp", "127.0.0.1", 4433)
        .ok_or("no row for the connect after exec'ing /proc/self/exe")?;
    if !exe_is_probe(r) || r["comm"] != "bw-netprobe" {
        return Err(format!(
            "the executable behind /proc/self/exe was not resolved: {r}"
        ));
    }
    Ok(None)
}

fn app_scope(s: &Section) -> Result<Option<String>, String> {
    let r = s
        .row("tcp", "127.0.0.1", 9)
        .ok_or("no row for the process started in the new scope")?;
    if r["app"] != "Zoom" || r["comm"] != "bw-netprobe" {
        return Err(format!("the scope's process is not Zoom: {r}"));
    }
    Ok(None)
}

fn plaintext(s: &Section) -> Result<Option<String>, String> {
    let sent: Vec<&Value> = s.json.iter().filter(|v| v["type"] == "sent").collect();
    let hit = sent.iter().find(|v| {
        v["identifier"] == "email"
            && v["form"] == "plain"
            && v["place"] == "body"
            && v["host"] == "sales.linkedin.com"
    });
    match hit {
        Some(v) if v["library"] == "OpenSSL" && v["flagged"] == true => Ok(Some(format!(
            "{} (of {} sent rows)",
            v["summary"].as_str().unwrap_or(""),
            sent.len()
        ))),
        _ => Err(format!(
            "no e-mail address read from openssl s_client's SSL_write: {sent:?} {}",
            s.text.join(" | ")
        )),
    }
}

fn loss(s: &Section) -> Result<Option<String>, String> {
    let summary = s.summary().ok_or("no summary")?;
    let (g, d, l) = balanced(summary)?;
    if g < 3000 {
        return Err(format!("only {g} records generated for 3,000 connects"));
    }
    Ok(Some(format!(
        "one-page ring: {g} generated = {d} delivered + {l} lost"
    )))
}

fn budget(s: &Section) -> Result<Option<String>, String> {
    let summary = s.summary().ok_or("no summary")?;
    let (g, d, l) = balanced(summary)?;
    let refused = summary["records_over_budget"].as_u64().unwrap_or(0);
    if g < 3000 || refused == 0 {
        return Err(format!(
            "a 3,000-connect flood over a 4K/s budget (16K burst): {g} generated, {refused} refused"
        ));
    }
    Ok(Some(format!(
        "user budget: {g} generated = {d} delivered + {l} lost + {refused} refused"
    )))
}

/// The `RIP:` line of a guest kernel's "Oops: int3" whose instruction pointer is in the
/// kernel's own text, not in a BPF program: the int3 that text patching (static keys,
/// alternatives) plants while it rewrites an instruction, hit by another vCPU. On real
/// hardware the patcher's handler covers it; under QEMU's TCG a vCPU can run the
/// half-written code (seen in `__schedule` of an idle task on sid's 7.2.13). `None` for any
/// other output, and for an int3 in a BPF program (`bpf_prog_`), which is ours to answer for.
pub fn tcg_text_patch_oops(output: &str) -> Option<String> {
    let mut lines = output.lines().skip_while(|l| !l.contains("Oops: int3"));
    lines.next()?;
    let rip = lines.take(8).find(|l| l.contains("RIP: "))?.trim();
    if rip.contains("bpf_prog_") || rip.contains("bpf_trampoline") {
        return None;
    }
    let at = rip.find("RIP: ").map_or(rip, |i| &rip[i..]);
    Some(at.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_an_int3_of_text_patching_is_told_apart_from_one_in_a_bpf_program() {
        let tcg = "=== BEGIN plaintext\r\n[   32.435380] Oops: int3: 0000 [#1] SMP NOPTI\r\n[   32.436556] CPU: 1 UID: 0 PID: 0 Comm: swapper/1\r\n[   32.437130] RIP: 0010:__schedule+0x38a/0x1070\r\n";
        assert_eq!(
            tcg_text_patch_oops(tcg).as_deref(),
            Some("RIP: 0010:__schedule+0x38a/0x1070")
        );
        let ours = tcg.replace(
            "__schedule+0x38a/0x1070",
            "bpf_prog_6deef7357e7b4530_bw_connect4+0x1c/0x2a0",
        );
        assert_eq!(tcg_text_patch_oops(&ours), None);
        let other = tcg.replace("Oops: int3", "Oops: general protection fault");
        assert_eq!(tcg_text_patch_oops(&other), None);
        assert_eq!(
            tcg_text_patch_oops("=== KERNEL 7.2\n=== END dns rc=0\n"),
            None
        );
    }

    #[test]
    fn vm_sections_parse_serial_noise_and_a_missing_end_fails() {
        let out = "junk\r\n\x1b[2J=== KERNEL 6.1.0-56-cloud-amd64\r\n=== BEGIN dns\r\n{\"type\":\"connection\",\"proto\":\"tcp\",\"dst_ip\":\"127.0.0.5\",\"dst_port\":4433,\"domain\":\"vm.tracker.test\",\"domain_source\":\"dns\"}\r\n{\"type\":\"summary\",\"records_generated\":3,\"records_delivered\":3,\"records_lost\":0,\"records_undecodable\":0}\r\n=== END dns rc=0\r\n=== BEGIN tls\r\n";
        let (kernel, sections) = sections(out);
        assert_eq!(kernel.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert!(dns(&sections["dns"]).is_ok());
        assert!(sections["tls"].broken().is_some());
        let report = check(out);
        assert!(report.failures.iter().any(|f| f.starts_with("tls:")));
        assert!(report
            .failures
            .iter()
            .any(|f| f.contains("did not run to the end")));
    }

    #[test]
    fn vm_unbalanced_books_fail() {
        let s: Value = serde_json::json!({"records_generated": 10, "records_delivered": 8, "records_lost": 1, "records_undecodable": 0});
        assert!(balanced(&s).is_err());
    }
}
