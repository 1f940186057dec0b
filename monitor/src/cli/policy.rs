//! Where policies come from, for every command that uses them, and `brokerwatch policy`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::policy::{ImportSpec, PolicySources, SYSTEM_DIR};

#[derive(Args, Clone)]
pub struct PolicyArgs {
    /// Another policy file for this run (repeatable; loaded after the system's).
    #[arg(long = "policy", value_name = "PATH", global = true)]
    pub policies: Vec<PathBuf>,
    /// Import a list: FORMAT:PATH[:CATEGORY] (formats: hosts, adblock, domains, disconnect,
    /// tracker-radar, ddg-app-trackers, exodus, ca-broker-csv). Repeatable.
    #[arg(long = "import", value_name = "SPEC", global = true)]
    pub imports: Vec<ImportSpec>,
    /// Directory of system policy files.
    #[arg(long, value_name = "DIR", default_value = SYSTEM_DIR, global = true, hide = true)]
    pub policy_dir: PathBuf,
}

impl From<&PolicyArgs> for PolicySources {
    fn from(a: &PolicyArgs) -> Self {
        Self {
            system_dir: Some(a.policy_dir.clone()),
            files: a.policies.clone(),
            imports: a.imports.clone(),
        }
    }
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files (the given ones, or everything configured); exit 2 on errors.
    Check {
        paths: Vec<PathBuf>,
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
        /// Only destinations of this category (an unknown one is an error).
        #[arg(long)]
        category: Option<String>,
        /// The app definitions instead: ids, names, groups and how each is recognised.
        #[arg(long, conflicts_with = "category")]
        apps: bool,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

/// Policies for a command; an error names `policy check`.
pub fn load_policy(sources: &PolicySources) -> anyhow::Result<crate::policy::Policy> {
    use anyhow::Context as _;
    crate::policy::Policy::load(sources)
        .context("loading policies (check them with `brokerwatch policy check`)")
}

/// `brokerwatch policy ...`; `false` when `check` found errors.
pub fn run(cmd: PolicyCommand, out: &mut dyn std::io::Write) -> anyhow::Result<bool> {
    use crate::policy::show;
    let ok = match cmd {
        PolicyCommand::Check { paths, policy } => show::check(out, &(&policy).into(), &paths)?,
        PolicyCommand::Explain {
            target,
            app,
            policy,
        } => show::explain(
            out,
            &load_policy(&(&policy).into())?,
            &target,
            app.as_deref(),
        )?,
        PolicyCommand::List {
            category,
            apps,
            policy,
        } => {
            let p = load_policy(&(&policy).into())?;
            match apps {
                true => show::list_apps(out, &p)?,
                false => show::list(out, &p, category.as_deref())?,
            }
            true
        }
    };
    out.flush()?;
    Ok(ok)
}
