//! The `brokerwatch` command: parse, set up logging, dispatch, and turn the outcome into an
//! exit status. Everything else lives in the library.

use std::{future::Future, io::Write as _, process::ExitCode};

use anyhow::Context as _;
use brokerwatch::{
    audit::{self, AuditOptions},
    cli::{self, Cli, Command},
    client, daemon, install, notify,
};
use clap::Parser as _;

/// Everything went as asked.
const EXIT_OK: u8 = 0;
/// An audit saw a contact the policy alerts on.
const EXIT_FLAGGED: u8 = 1;
/// brokerwatch could not do what was asked (the error says why).
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("brokerwatch: error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A reader that went away (`brokerwatch history | head`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run() -> anyhow::Result<u8> {
    let cli = Cli::parse();
    brokerwatch::cli::init_logging(cli.verbose);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Audit(args) => {
            let policy = cli::load_policy(&(&args.policy).into())?;
            let opts = AuditOptions::from(&args);
            if opts.waits_for_ctrl_c() {
                eprintln!("brokerwatch: watching until Ctrl-C (use --duration to stop by itself)");
            }
            // Opened first: a path that cannot be written fails before the audit runs.
            let mut report = audit::format::open_report(args.output.as_deref())?;
            let mut html = args.open_html()?;
            let outcome = block_on(audit::run(opts, &policy))??;
            outcome.write(&mut report, args.format(), args.color())?;
            report.flush()?;
            if let Some(h) = html.as_mut() {
                outcome.write_html(h)?;
            }
            Ok([EXIT_OK, EXIT_FLAGGED][usize::from(outcome.flagged())])
        }
        Command::Policy(cmd) => {
            Ok([EXIT_ERROR, EXIT_OK][usize::from(cli::policy::run(cmd, &mut out)?)])
        }
        Command::Daemon(args) => done(block_on(daemon::run(args.into()))?),
        Command::Status(args) => done(block_on(client::status(
            &args.socket.path,
            args.json,
            &mut out,
        ))?),
        Command::History(a) => done(block_on(client::history(
            &a.client.socket.path,
            a.since,
            a.client.json,
            &mut out,
        ))?),
        Command::Events(args) => {
            block_on(async {
                tokio::select! {
                    r = client::events(&args.socket.path, &mut out) => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })??;
            Ok(EXIT_OK)
        }
        Command::Report(args) => {
            let mut out = audit::format::open_report(args.output().as_deref())?;
            let (query, format) = (args.query(), args.format());
            done(block_on(client::report(
                &args.socket.path,
                query,
                format,
                &mut out,
            ))?)
        }
        Command::Block(a) => done(block_on(a.run(false, &mut out))?),
        Command::Blocks(a) => done(block_on(client::blocks(&a.socket.path, a.json, &mut out))?),
        Command::Unblock(a) => done(block_on(a.run(true, &mut out))?),
        Command::Identity(c) => done(block_on(c.run(&mut out))?),
        Command::Notify(args) => {
            let digest = args
                .digest
                .map(|d| d.max(std::time::Duration::from_secs(1)));
            done(block_on(notify::run(
                &args.socket.path,
                (&args).into(),
                digest,
            ))?)
        }
        Command::Install(args) => {
            // Root is checked first: an ordinary user gets that message, not EACCES.
            let mut lines = install::install(&(&args).into())?;
            lines.extend(cli::assets::install_local(&args.root)?);
            print_lines(&mut out, lines)
        }
        Command::Uninstall(args) => {
            let mut lines = install::uninstall(&(&args).into(), args.purge)?;
            lines.extend(cli::assets::remove_local(&args.root));
            print_lines(&mut out, lines)
        }
        Command::GenerateAssets { dir } => Ok(cli::assets::write_all(&dir).map(|_| EXIT_OK)?),
    }
}

/// Runs `fut` on a single-threaded event loop. Work still pending when it finishes (an
/// audited command that outlives the audit) does not hold the exit back.
fn block_on<F: Future>(fut: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let out = rt.block_on(fut);
    rt.shutdown_background();
    Ok(out)
}

/// A command's own result: success is exit status 0.
fn done<E: Into<anyhow::Error>>(r: Result<(), E>) -> anyhow::Result<u8> {
    r.map_err(Into::into).map(|()| EXIT_OK)
}

fn print_lines(out: &mut dyn std::io::Write, lines: Vec<String>) -> anyhow::Result<u8> {
    lines.iter().try_for_each(|l| writeln!(out, "{l}"))?;
    Ok(EXIT_OK)
}
