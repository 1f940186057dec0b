//! The `brokerwatch` command: argument parsing and error reporting only.

use std::{io::Write as _, process::ExitCode, time::Duration};

use anyhow::Context as _;
use brokerwatch::{
    audit::{self, AuditOptions, Target},
    daemon::{history::Retention, DaemonOptions},
    policy::{ImportSpec, Policy, PolicySources, SYSTEM_DIR},
    policy_cli,
    protocol::Request,
    report::Format,
    sensor::SensorOptions,
};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "brokerwatch",
    version,
    about = "See which data brokers and trackers your meeting apps contact"
)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// The desktop agent: shows the daemon's alerts about your processes as notifications.
    Notify(NotifyArgs),
    /// Print the daemon's alerts about your processes as JSON lines as they happen.
    Events(ClientArgs),
    /// Install the binary, the system service, the desktop agent's units and the groups.
    Install {
        /// Stage the files under this directory instead of `/` (packaging).
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
    },
    /// Remove what `install` put in place.
    Uninstall {
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
        /// Also delete the alert history.
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Args)]
struct NotifyArgs {
    #[arg(long, default_value = brokerwatch::protocol::DEFAULT_SOCKET)]
    socket: std::path::PathBuf,
    /// Show an (app, company) pair at most once in this window.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    dedup: Duration,
    /// At most this many notifications per minute.
    #[arg(long, default_value_t = 6)]
    per_minute: usize,
}

#[derive(Args)]
struct DaemonArgs {
    /// App id, group or process name to watch (repeatable). Default: the `meeting` group.
    #[arg(long = "app", value_name = "NAME")]
    apps: Vec<String>,
    #[arg(long, default_value = brokerwatch::protocol::DEFAULT_SOCKET)]
    socket: std::path::PathBuf,
    /// Where the alert history lives.
    #[arg(long, default_value = "/var/lib/brokerwatch")]
    state_dir: std::path::PathBuf,
    /// Group allowed to connect to the socket.
    #[arg(long, default_value = "brokerwatch")]
    group: String,
    /// Group whose members see every user's alerts.
    #[arg(long, default_value = "brokerwatch-admin")]
    admin_group: String,
    /// Days of alert history to keep.
    #[arg(long, default_value_t = 30)]
    history_days: u64,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Args)]
struct ClientArgs {
    #[arg(long, default_value = brokerwatch::protocol::DEFAULT_SOCKET)]
    socket: std::path::PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct HistoryArgs {
    /// How far back (e.g. 1h, 7d).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    since: Duration,
    #[command(flatten)]
    client: ClientArgs,
}

/// Where policies come from, for every command that uses them.
#[derive(Args, Clone)]
struct PolicyArgs {
    /// Another policy file for this run (repeatable; loaded after the system's).
    #[arg(long = "policy", value_name = "PATH", global = true)]
    policies: Vec<std::path::PathBuf>,
    /// Import a list: FORMAT:PATH[:CATEGORY] (formats: hosts, adblock, domains, disconnect,
    /// tracker-radar, ddg-app-trackers, exodus, ca-broker-csv). Repeatable.
    #[arg(long = "import", value_name = "SPEC", global = true)]
    imports: Vec<ImportSpec>,
    /// Directory of system policy files.
    #[arg(long, value_name = "DIR", default_value = SYSTEM_DIR, global = true, hide = true)]
    policy_dir: std::path::PathBuf,
}

impl PolicyArgs {
    fn sources(&self) -> PolicySources {
        PolicySources {
            system_dir: Some(self.policy_dir.clone()),
            files: self.policies.clone(),
            imports: self.imports.clone(),
        }
    }

    fn load(&self) -> anyhow::Result<Policy> {
        Policy::load(&self.sources())
            .context("loading policies (check them with `brokerwatch policy check`)")
    }
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files (the given ones, or everything configured); exit 2 on errors.
    Check {
        paths: Vec<std::path::PathBuf>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Which entry matches a name or address, and what it means for an app.
    Explain {
        #[arg(value_name = "NAME-OR-IP")]
        target: String,
        /// App id (zoom, teams, ...) to evaluate the rules for.
        #[arg(long)]
        app: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// What is loaded, from where, with counts.
    List {
        #[arg(long)]
        category: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

#[derive(Args)]
struct AuditArgs {
    /// How long to watch (e.g. 30s, 5m). Without it: until the command exits, or Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// App id (zoom, teams, ...), group (meeting) or process name to watch; repeatable.
    /// Default: the `meeting` group.
    #[arg(long = "app", value_name = "NAME", conflicts_with = "all")]
    apps: Vec<String>,
    /// Watch every process on the machine.
    #[arg(long)]
    all: bool,
    /// One JSON object per line.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV with a header line.
    #[arg(long)]
    csv: bool,
    /// Kernel ring buffer size (power of two, e.g. 4M, 16M).
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    ring_size: u32,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Command to launch and audit, with its arguments (after `--`).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn parse_size(s: &str) -> Result<u32, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024u64),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s}"))?;
    let bytes = n * mult;
    if !bytes.is_power_of_two() || !(4096..=(1 << 30)).contains(&bytes) {
        return Err(format!(
            "{s}: the ring buffer size must be a power of two between 4K and 1024M"
        ));
    }
    Ok(bytes as u32)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("brokerwatch: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    match cli.command {
        Command::Audit(args) => audit_main(args),
        Command::Policy(cmd) => policy_main(cmd),
        Command::Daemon(args) => daemon_main(args),
        Command::Install { root } => {
            for line in brokerwatch::install::install(&brokerwatch::install::Layout { root })? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Uninstall { root, purge } => {
            for line in
                brokerwatch::install::uninstall(&brokerwatch::install::Layout { root }, purge)?
            {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Events(args) => {
            let rt = runtime()?;
            let res = rt.block_on(async {
                tokio::select! {
                    r = brokerwatch::protocol::subscribe(&args.socket, |v| {
                        if v["type"] == "alert" || v["type"] == "lagged" {
                            println!("{v}");
                        }
                    }) => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            });
            rt.shutdown_background();
            res?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Notify(args) => {
            let rt = runtime()?;
            let policy = brokerwatch::notify::Policy {
                dedup_window: args.dedup,
                per_minute: args.per_minute,
                ..Default::default()
            };
            let res = rt.block_on(brokerwatch::notify::run(&args.socket, policy));
            rt.shutdown_background();
            res?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => client_main(&args, Request::Status, None),
        Command::History(args) => {
            let since_ms = brokerwatch::daemon::history::now_ms()
                .saturating_sub(args.since.as_millis() as u64);
            client_main(
                &args.client,
                Request::History { since_ms },
                Some(args.since),
            )
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")
}

fn daemon_main(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let opts = DaemonOptions {
        socket: args.socket,
        state_dir: args.state_dir,
        apps: if args.apps.is_empty() {
            vec!["meeting".into()]
        } else {
            args.apps
        },
        policy: args.policy.sources(),
        group: args.group,
        admin_group: args.admin_group,
        retention: Retention {
            max_age: Duration::from_secs(args.history_days * 24 * 3600),
            ..Retention::default()
        },
        sensor: SensorOptions::default(),
    };
    let rt = runtime()?;
    let res = rt.block_on(brokerwatch::daemon::run(opts));
    rt.shutdown_background();
    res?;
    Ok(ExitCode::SUCCESS)
}

fn client_main(
    args: &ClientArgs,
    req: Request,
    since: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let reply = rt.block_on(brokerwatch::protocol::request(&args.socket, &req))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        writeln!(out, "{reply}")?;
    } else if let Some(since) = since {
        let alerts = reply["alerts"].as_array().cloned().unwrap_or_default();
        if alerts.is_empty() {
            writeln!(
                out,
                "No alerts in the last {}.",
                humantime::format_duration(since)
            )?;
        }
        for a in alerts {
            writeln!(
                out,
                "{}  {}[{}] -> {} ({}:{})  {} {}: {}",
                a["ts"].as_str().unwrap_or("?"),
                a["app"].as_str().or(a["comm"].as_str()).unwrap_or("?"),
                a["pid"],
                a["domain"].as_str().unwrap_or("-"),
                a["dst_ip"].as_str().unwrap_or("?"),
                a["dst_port"],
                a["severity"].as_str().unwrap_or("?").to_uppercase(),
                a["category"].as_str().unwrap_or("?"),
                a["company"].as_str().unwrap_or("?"),
            )?;
        }
    } else {
        writeln!(
            out,
            "brokerwatch daemon, pid {}, up {}s",
            reply["pid"], reply["uptime_s"]
        )?;
        writeln!(out, "Watched apps: {}", reply["watched_apps"])?;
        writeln!(out, "Kernel counters: {}", reply["counters"])?;
        writeln!(
            out,
            "Records delivered: {}; alerts: {}",
            reply["records_delivered"], reply["alerts"]
        )?;
        writeln!(out, "Programs:")?;
        for p in reply["attached"].as_array().into_iter().flatten() {
            writeln!(out, "  {}", p.as_str().unwrap_or("?"))?;
        }
        writeln!(out, "Policy sources:")?;
        for p in reply["policy_sources"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  {} ({} destinations, {} domains)",
                p["name"].as_str().unwrap_or("?"),
                p["destinations"],
                p["domains"]
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn policy_main(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = match cmd {
        PolicyCommand::Check { paths, policy } => {
            if policy_cli::check(&mut out, &policy.sources(), &paths)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        PolicyCommand::Explain {
            target,
            app,
            policy,
        } => {
            if policy_cli::explain(&mut out, &policy.load()?, &target, app.as_deref())? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        PolicyCommand::List { category, policy } => {
            policy_cli::list(&mut out, &policy.load()?, category.as_deref())?;
            ExitCode::SUCCESS
        }
    };
    out.flush()?;
    Ok(code)
}

fn audit_main(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let args_policy = args.policy.clone();
    let target = if !args.command.is_empty() {
        Target::Command(args.command)
    } else if args.all {
        Target::All
    } else if args.apps.is_empty() {
        Target::Apps(vec!["meeting".into()])
    } else {
        Target::Apps(args.apps)
    };
    let format = match (args.json, args.csv) {
        (true, _) => Format::Json,
        (_, true) => Format::Csv,
        _ => Format::Table,
    };
    let opts = AuditOptions {
        target,
        duration: args.duration,
        sensor: SensorOptions {
            ring_bytes: args.ring_size,
            ..SensorOptions::default()
        },
    };
    let policy = args_policy.load()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    if opts.duration.is_none() && !matches!(opts.target, Target::Command(_)) {
        eprintln!("brokerwatch: watching until Ctrl-C (use --duration to stop by itself)");
    }
    let outcome = runtime.block_on(audit::run(opts, &policy));
    // The audited command may outlive the audit (--duration, Ctrl-C): its waiter runs on a
    // blocking thread that must not hold the exit back.
    runtime.shutdown_background();
    let outcome = outcome?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    outcome.write(&mut out, format)?;
    out.flush()?;
    Ok(if outcome.summary.flagged > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
