//! `brokerwatch daemon` arguments.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::PolicyArgs;
use crate::{
    daemon::DaemonOptions,
    defaults,
    kernel::{BudgetSettings, SensorOptions},
};

#[derive(Args)]
pub struct DaemonArgs {
    /// App id, group or process name to watch (repeatable). Default: the `meeting` group.
    #[arg(long = "app", value_name = "NAME")]
    pub apps: Vec<String>,
    #[command(flatten)]
    pub socket: super::SocketArg,
    /// Where the store of connections and alerts lives.
    #[arg(long, default_value = defaults::STATE_DIR)]
    pub state_dir: PathBuf,
    /// Group allowed to connect to the socket.
    #[arg(long, default_value = defaults::SOCKET_GROUP)]
    pub group: String,
    /// Group whose members see every user's alerts.
    #[arg(long, default_value = defaults::ADMIN_GROUP)]
    pub admin_group: String,
    /// Days of connections and alerts to keep.
    #[arg(long, default_value_t = defaults::HISTORY_DAYS)]
    pub history_days: u64,
    /// Where the socket and packet programs run (auto: only the watched apps' cgroups
    /// where systemd gives apps cgroups of their own, the root elsewhere).
    #[arg(long, value_enum, default_value = "auto")]
    pub attach: super::AttachArg,
    /// Kernel ring buffer size (power of two, e.g. 4M, 16M): raise it when `status` or
    /// the log report lost records.
    #[arg(long, default_value = defaults::RING_SIZE_ARG, value_parser = super::audit::parse_size)]
    pub ring_size: u32,
    /// Each user's record budget in the kernel, bytes a second (e.g. 1M, 512K; "off" for
    /// none): one user's flood costs that user's records, never another's.
    #[arg(long, value_name = "RATE", default_value = defaults::USER_RECORD_RATE_ARG, value_parser = super::audit::parse_rate)]
    pub user_budget: u64,
    /// Also write counters for Prometheus' node_exporter to this file (textfile
    /// collector: a `.prom` file in its `--collector.textfile.directory`), rewritten whole
    /// every `--metrics-every`.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// How often the metrics file is rewritten.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration, requires = "metrics_file")]
    pub metrics_every: Duration,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

impl From<DaemonArgs> for DaemonOptions {
    fn from(a: DaemonArgs) -> Self {
        Self {
            policy: (&a.policy).into(),
            socket: a.socket.path,
            state_dir: a.state_dir,
            apps: if a.apps.is_empty() {
                vec![defaults::APP_GROUP.into()]
            } else {
                a.apps
            },
            group: a.group,
            admin_group: a.admin_group,
            retention: crate::daemon::store::Retention {
                max_age: Duration::from_secs(a.history_days * 24 * 3600),
                ..Default::default()
            },
            sensor: SensorOptions {
                attach: a.attach.into(),
                ring_bytes: a.ring_size,
                budget: Some(BudgetSettings::new(a.user_budget, a.ring_size)),
            },
            metrics: a
                .metrics_file
                .map(|path| crate::daemon::metrics::MetricsOptions {
                    path,
                    every: a.metrics_every.max(Duration::from_secs(1)),
                }),
        }
    }
}
