//! `brokerwatch audit` arguments.

use std::time::Duration;

use clap::Args;

use super::PolicyArgs;
use crate::{
    audit::{format::Format, AuditOptions, Target},
    defaults,
    inspect::Identifier,
    kernel::{BudgetSettings, SensorOptions},
};

#[derive(Args)]
pub struct AuditArgs {
    /// How long to watch (e.g. 30s, 5m). Without it: until the command exits, or Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// App id (zoom, teams, ...), group (meeting) or process name to watch; repeatable.
    /// Default: the `meeting` group.
    #[arg(long = "app", value_name = "NAME", conflicts_with = "all")]
    pub apps: Vec<String>,
    /// Watch every process on the machine.
    #[arg(long)]
    pub all: bool,
    /// One JSON object per line.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV with a header line.
    #[arg(long)]
    pub csv: bool,
    /// Write the report to this file instead of standard output (the audited command's
    /// own output then never mixes with it). Opened before the audit starts.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// Also write the report as one self-contained HTML page (summary, app -> company
    /// graph, timeline, every contact with its source, the audit's facts).
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
    /// Deny what the policy's `block` rules cover, in the kernel, while the audit runs
    /// (without it such contacts are reported as would-be blocks).
    #[arg(long)]
    pub enforce: bool,
    /// No live status line or flagged contacts on the terminal while the audit runs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// With --app: where the socket and packet programs run (auto: only the watched apps'
    /// cgroups where systemd gives apps cgroups of their own, the root elsewhere).
    #[arg(long, value_enum, default_value = "auto")]
    pub attach: super::AttachArg,
    /// Kernel ring buffer size (power of two, e.g. 4M, 16M).
    #[arg(long, default_value = defaults::RING_SIZE_ARG, value_parser = parse_size)]
    pub ring_size: u32,
    /// Each user's record budget in the kernel, bytes a second (e.g. 1M, 512K; "off" for
    /// none): one user's flood costs that user's records, never another's.
    #[arg(long, value_name = "RATE", default_value = defaults::USER_RECORD_RATE_ARG, value_parser = parse_rate)]
    pub user_budget: u64,
    /// Also write every kernel record, as received, to FILE (for bug reports and replay
    /// tests; it holds DNS answers and the first bytes of connections).
    #[arg(long, value_name = "FILE", hide = true)]
    pub record: Option<std::path::PathBuf>,
    /// Your e-mail address: report when a watched app sends it (as written, escaped,
    /// base64 or hashed), to whom and where in the request; repeatable. Turns on reading
    /// what watched apps hand their TLS libraries to send, for this audit (the value is
    /// never written anywhere).
    #[arg(long = "email", value_name = "ADDR", value_parser = parse_email)]
    pub emails: Vec<Identifier>,
    /// Your name ("First Last"), as --email; repeatable.
    #[arg(long = "name", value_name = "NAME", value_parser = parse_name)]
    pub names: Vec<Identifier>,
    /// Your phone number, as --email; repeatable.
    #[arg(long = "phone", value_name = "NUMBER", value_parser = parse_phone)]
    pub phones: Vec<Identifier>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Command to launch and audit, with its arguments (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl AuditArgs {
    /// The `--html` file, created before the audit starts (a bad path fails at once).
    pub fn open_html(&self) -> std::io::Result<Option<Box<dyn std::io::Write>>> {
        let open = |p: &std::path::Path| crate::audit::format::open_report(Some(p));
        self.html.as_deref().map(open).transpose()
    }

    /// Colour for the table on a terminal (never in a file, never with `NO_COLOR`).
    pub fn color(&self) -> bool {
        self.output.is_none() && crate::report::text::color_for_stdout()
    }

    pub fn format(&self) -> Format {
        match (self.json, self.csv) {
            (true, _) => Format::Json,
            (_, true) => Format::Csv,
            _ => Format::Table,
        }
    }
}

impl From<&AuditArgs> for AuditOptions {
    fn from(a: &AuditArgs) -> Self {
        let target = if !a.command.is_empty() {
            Target::Command(a.command.clone())
        } else if a.all {
            Target::All
        } else if a.apps.is_empty() {
            Target::Apps(vec![defaults::APP_GROUP.into()])
        } else {
            Target::Apps(a.apps.clone())
        };
        Self {
            target,
            live: !a.quiet,
            duration: a.duration,
            enforce: a.enforce,
            record: a.record.clone(),
            identities: [&a.emails, &a.names, &a.phones]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            sensor: SensorOptions {
                ring_bytes: a.ring_size,
                attach: a.attach.into(),
                budget: Some(BudgetSettings::new(a.user_budget, a.ring_size)),
            },
        }
    }
}

fn parse_email(s: &str) -> Result<Identifier, String> {
    Identifier::email(s).map_err(|e| e.to_string())
}

fn parse_name(s: &str) -> Result<Identifier, String> {
    Identifier::name(s).map_err(|e| e.to_string())
}

fn parse_phone(s: &str) -> Result<Identifier, String> {
    Identifier::phone(s).map_err(|e| e.to_string())
}

/// A ring buffer size: a power of two between 4 KiB and 1 GiB, with an optional K or M.
pub fn parse_size(s: &str) -> Result<u32, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024u64),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s}"))?;
    let bytes = n.saturating_mul(mult);
    if !bytes.is_power_of_two() || !(4096..=(1 << 30)).contains(&bytes) {
        return Err(format!(
            "{s}: the ring buffer size must be a power of two between 4K and 1024M"
        ));
    }
    Ok(bytes as u32)
}

/// A record rate in bytes a second: `1M`, `512K`, `65536`, or `off` (0).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024u64),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("not a rate: {s} (bytes a second, e.g. 1M, or off)"))?;
    let bytes = n.saturating_mul(mult);
    if !(4096..=(1 << 30)).contains(&bytes) {
        return Err(format!(
            "{s}: a user's record budget must be between 4K and 1024M a second, or off"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_user_budgets_are_rates_or_off() {
        assert_eq!(parse_rate("1M"), Ok(1 << 20));
        assert_eq!(parse_rate("off"), Ok(0));
        assert_eq!(parse_rate("OFF"), Ok(0));
        assert_eq!(parse_rate("64k"), Ok(64 << 10));
        assert!(parse_rate("1K").is_err());
        assert!(parse_rate("2048M").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn cli_ring_sizes_are_powers_of_two_within_bounds() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("3M").is_err());
        assert!(parse_size("2K").is_err());
        assert!(parse_size("2048M").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999999999M").is_err());
    }
}
