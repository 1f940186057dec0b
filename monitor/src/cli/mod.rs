//! The command line: argument definitions ([`Cli`]) and their conversion into the library's
//! option types (`From<...Args>`). Stage one (clap) parses without touching the system;
//! the sinks resolve what was parsed against it (the audit's plan, the daemon's sources).
//! Besides: [`load_policy`] and [`init_logging`] for `main`, and [`assets`] (man pages and
//! completions rendered from these definitions).

pub mod assets;
mod audit;
mod daemon;
pub mod policy;

use std::{path::PathBuf, time::Duration};

pub use audit::AuditArgs;
use clap::{Args, Parser, Subcommand};
pub use daemon::DaemonArgs;

/// `--attach`: where the socket and packet programs run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachArg {
    /// Where every app has a cgroup of its own (systemd), only the watched apps' cgroups;
    /// elsewhere the root.
    Auto,
    /// Every process (the cgroup v2 root): nothing a watched app does can be missed.
    Root,
    /// Only the cgroups where watched apps live, attached as they appear.
    Apps,
}

impl From<AttachArg> for crate::kernel::AttachScope {
    fn from(a: AttachArg) -> Self {
        match a {
            AttachArg::Auto => Self::Auto,
            AttachArg::Root => Self::Root,
            AttachArg::Apps => Self::Cgroups,
        }
    }
}
pub use policy::{PolicyArgs, PolicyCommand};

use crate::defaults;

#[derive(Parser)]
#[command(
    name = "brokerwatch",
    version,
    about = "See which data brokers and trackers your meeting apps contact"
)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Watch running apps (or launch one command) and report every connection they make.
    Audit(AuditArgs),
    /// Check, explain and list the policies (apps, destinations, rules).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run the always-on service (as root; systemd starts it).
    Daemon(DaemonArgs),
    /// What the daemon is doing: programs, watched apps, counters, policy sources.
    Status(ClientArgs),
    /// Alerts the daemon recorded (yours, or everyone's for root and the admin group).
    History(HistoryArgs),
    /// What apps talked to (from the daemon's store): per app, company and destination.
    Report(ReportArgs),
    /// Block an app's contacts with a company, for your own processes (where the policy
    /// has `allow_user_blocks = true`); the daemon denies them in the kernel.
    Block(BlockArgs),
    /// Lift a block you made with `block`.
    Unblock(BlockArgs),
    /// The blocks you made with `block` (everyone's for root and the admin group).
    Blocks(ClientArgs),
    /// Your own identifiers (e-mail, name, phone): the daemon reports when a watched app of
    /// yours sends one, where the administrator turned on `inspect_plaintext`. Kept by the
    /// daemon, readable by root only; never shown back.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// The desktop agent: shows the daemon's alerts about your processes as notifications.
    Notify(NotifyArgs),
    /// Print the daemon's alerts about your processes as JSON lines as they happen.
    Events(ClientArgs),
    /// Install the binary, the system service, the desktop agent's units and the groups.
    Install(InstallArgs),
    /// Remove what `install` put in place.
    Uninstall(UninstallArgs),
    /// Write the man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// Where `man1/`, `bash/`, `zsh/` and `fish/` are written.
        dir: std::path::PathBuf,
    },
}

/// `--socket`, declared once for every command that talks to the daemon (and the daemon
/// itself, which listens there).
#[derive(Args)]
pub struct SocketArg {
    /// The daemon's socket.
    #[arg(id = "socket", long = "socket", value_name = "PATH", default_value = defaults::SOCKET)]
    pub path: PathBuf,
}

#[derive(Args)]
pub struct ClientArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BlockArgs {
    /// App id or name (`brokerwatch policy list --apps`).
    pub app: String,
    /// Company, as the policy names it (e.g. "LinkedIn").
    pub company: String,
    #[command(flatten)]
    pub socket: SocketArg,
}

impl BlockArgs {
    /// `block` (or `unblock`) through the daemon.
    pub async fn run(
        &self,
        unblock: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<(), crate::client::ClientCommandError> {
        let socket = &self.socket.path;
        crate::client::block(socket, &self.app, &self.company, unblock, out).await
    }
}

#[derive(clap::Subcommand)]
pub enum IdentityCommand {
    /// Keep one of your identifiers.
    Add(IdentityValue),
    /// Forget one of your identifiers.
    Remove(IdentityValue),
    /// Your identifiers: their kind and a fingerprint, never their values.
    List(ClientArgs),
}

/// One identifier: exactly one of `--email`, `--name`, `--phone`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("identifier").required(true).args(["email", "name", "phone"])))]
pub struct IdentityValue {
    #[arg(long, value_name = "ADDR")]
    pub email: Option<String>,
    #[arg(long, value_name = "\"FIRST LAST\"")]
    pub name: Option<String>,
    #[arg(long, value_name = "NUMBER")]
    pub phone: Option<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

impl IdentityValue {
    fn kind_value(&self) -> (crate::inspect::IdKind, String) {
        use crate::inspect::IdKind;
        match (&self.email, &self.name, &self.phone) {
            (Some(v), _, _) => (IdKind::Email, v.clone()),
            (_, Some(v), _) => (IdKind::Name, v.clone()),
            (_, _, Some(v)) => (IdKind::Phone, v.clone()),
            _ => unreachable!("clap requires one"),
        }
    }
}

impl IdentityCommand {
    /// Runs it through the daemon.
    pub async fn run(
        &self,
        out: &mut dyn std::io::Write,
    ) -> Result<(), crate::client::ClientCommandError> {
        use crate::protocol::IdentityOp;
        let (socket, op, json) = match self {
            Self::Add(v) => {
                let (kind, value) = v.kind_value();
                (&v.socket.path, IdentityOp::Add { kind, value }, false)
            }
            Self::Remove(v) => {
                let (kind, value) = v.kind_value();
                (&v.socket.path, IdentityOp::Remove { kind, value }, false)
            }
            Self::List(a) => (&a.socket.path, IdentityOp::List, a.json),
        };
        crate::client::identity(socket, op, json, out).await
    }
}

#[derive(Args)]
pub struct HistoryArgs {
    /// How far back (e.g. 1h, 7d).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub since: Duration,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct ReportArgs {
    /// How far back (e.g. 24h, 7d).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Only this app (id or name; repeatable).
    #[arg(long = "app", value_name = "ID")]
    pub apps: Vec<String>,
    /// Report on alerts forwarded by many desktops (the JSON lines of
    /// `dist/rsyslog`, as a collector writes them) in FILE or every file of a directory
    /// (repeatable), per host and app; the daemon is not asked.
    #[arg(long, value_name = "PATH", conflicts_with = "new")]
    pub input: Vec<PathBuf>,
    /// Only what is new: companies and destinations each app first contacted within
    /// `--since` and not in the `--baseline` before it.
    #[arg(long)]
    pub new: bool,
    /// With `--new`: how far before `--since` counts as already known (e.g. 30d).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration, requires = "new")]
    pub baseline: Duration,
    /// The report as one JSON object (schema-versioned).
    #[arg(long, conflicts_with_all = ["csv", "html"])]
    pub json: bool,
    /// One CSV line per app, company, destination and protocol.
    #[arg(long, conflicts_with = "html")]
    pub csv: bool,
    /// Write one self-contained HTML page (summary, graph, timeline, table) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Args)]
pub struct NotifyArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Show an (app, company) pair at most once in this window.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub dedup: Duration,
    /// At most this many notifications per minute.
    #[arg(long, default_value_t = 6)]
    pub per_minute: usize,
    /// Opt in to a digest of what is new, every PERIOD (e.g. 7d): which companies each app
    /// contacted that it had not in the 30 days before. Off unless given.
    #[arg(long, value_name = "PERIOD", value_parser = humantime::parse_duration)]
    pub digest: Option<Duration>,
}

impl From<&NotifyArgs> for crate::notify::ThrottleSettings {
    fn from(a: &NotifyArgs) -> Self {
        Self {
            dedup_window: a.dedup,
            per_minute: a.per_minute,
            ..Self::default()
        }
    }
}

#[derive(Args)]
pub struct InstallArgs {
    /// Stage the files under this directory instead of `/` (packaging).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
}

#[derive(Args)]
pub struct UninstallArgs {
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Also delete the store and the accounts `install` created.
    #[arg(long)]
    pub purge: bool,
}

impl From<&InstallArgs> for crate::install::Layout {
    fn from(a: &InstallArgs) -> Self {
        Self {
            root: a.root.clone(),
        }
    }
}

impl From<&UninstallArgs> for crate::install::Layout {
    fn from(a: &UninstallArgs) -> Self {
        Self {
            root: a.root.clone(),
        }
    }
}

impl ReportArgs {
    pub fn format(&self) -> crate::report::Format {
        use crate::report::Format;
        match (self.json, self.csv, &self.html) {
            (true, _, _) => Format::Json,
            (_, true, _) => Format::Csv,
            (_, _, Some(_)) => Format::Html,
            _ => Format::Text {
                color: self.output.is_none() && crate::report::text::color_for_stdout(),
            },
        }
    }

    /// What the report asks for.
    pub fn query(&self) -> crate::client::ReportQuery {
        crate::client::ReportQuery {
            since: self.since,
            apps: self.apps.clone(),
            baseline: self.new.then_some(self.baseline),
            input: self.input.clone(),
        }
    }

    /// Where the report goes: the `--html` file, `--output`, or standard output.
    pub fn output(&self) -> Option<PathBuf> {
        self.html.clone().or_else(|| self.output.clone())
    }
}

pub use policy::load_policy;

/// Logs at warn, info (`-v`) or debug (`-vv`); `RUST_LOG` overrides. Under systemd (stderr
/// connected to the journal) logs go to the journal with their priorities, to stderr
/// otherwise.
pub fn init_logging(verbose: u8) {
    let filter = [
        log::LevelFilter::Warn,
        log::LevelFilter::Info,
        log::LevelFilter::Debug,
    ][usize::from(verbose.min(2))];
    if !crate::daemon::journal::install_logger(filter) {
        let env = env_logger::Env::default().default_filter_or(filter.as_str());
        env_logger::Builder::from_env(env)
            .format_timestamp(None)
            .init();
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
