//! The daemon's socket protocol: one JSON object per line each way, typed on both ends.
//!
//! Requests ([`Request`]) carry an `op`: `subscribe` (alerts and notices as they happen),
//! `status`, `history` (`since_ms`), `report` (`since_ms`, `apps`), `block`
//! (`app`, `company`, `unblock`) and `blocks`. Replies ([`Reply`]) carry a `type`:
//! `subscribed`, `alert`, `lagged` (a slow subscriber missed alerts), `notice` (about
//! monitoring itself), `status`, `history`, `report`, `done` (a change was made), `blocks`
//! and `error`. Who may see an alert is decided on its typed `uid` field
//! ([`Peer::may_see`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{finding::Finding, kernel::KernelCounters};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Subscribe,
    Status,
    History {
        since_ms: u64,
    },
    /// What apps talked to since `since_ms` (only these apps, when any are named).
    Report {
        since_ms: u64,
        #[serde(default)]
        apps: Vec<String>,
        /// Only what is new: contacts first seen since `since_ms` and not between this and
        /// `since_ms` (`report --new`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        baseline_ms: Option<u64>,
    },
    /// Block (or unblock) `company` for the asking user's processes of `app`, where the
    /// policy lets users block.
    Block {
        app: String,
        company: String,
        #[serde(default)]
        unblock: bool,
    },
    /// The asking user's own blocks (every user's for root and admins).
    Blocks,
    /// The asking user's own identifiers (`identity add|remove|list`, issue 25). A value
    /// travels only from the client to the daemon, never back.
    Identity(IdentityOp),
}

/// What `identity` asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum IdentityOp {
    Add {
        kind: crate::inspect::IdKind,
        value: String,
    },
    Remove {
        kind: crate::inspect::IdKind,
        value: String,
    },
    List,
}

/// One of a user's identifiers as `identity list` shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityEntry {
    pub kind: crate::inspect::IdKind,
    /// Eight hex digits that tell entries apart (a keyed hash of the value).
    pub fingerprint: String,
    /// When it was added, epoch milliseconds.
    pub added_ms: u64,
}

/// The JSON shape version every reply, audit line and report carries.
fn schema() -> u32 {
    crate::report::SCHEMA
}

/// Everything the daemon sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply {
    /// A subscription started; `all_users` when the client sees every user's alerts.
    Subscribed {
        uid: u32,
        all_users: bool,
    },
    Alert {
        /// Version of the JSON shape ([`crate::report::SCHEMA`]).
        #[serde(default = "schema")]
        schema: u32,
        alert: Box<Alert>,
    },
    /// The client was too slow and `missed` alerts were dropped for it.
    Lagged {
        missed: u64,
    },
    Status(Box<Status>),
    History {
        #[serde(default = "schema")]
        schema: u32,
        alerts: Vec<Alert>,
        /// What the user's apps sent (issue 25): kinds and forms, never a value.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sent: Vec<crate::leak::Leak>,
    },
    Report(Box<crate::report::Report>),
    /// A request that changed something was carried out.
    Done {
        message: String,
    },
    /// Users' blocks (`Request::Blocks`).
    Blocks {
        blocks: Vec<crate::policy::UserBlock>,
    },
    /// The asking user's identifiers (`identity list`), and whether the daemon reads
    /// plaintext (`[settings] inspect_plaintext`).
    Identities {
        identities: Vec<IdentityEntry>,
        inspecting: bool,
    },
    Error {
        message: String,
    },
    /// Something about monitoring itself (records lost in the kernel, ...), not about a
    /// user's processes.
    Notice(Notice),
    /// What one of the user's watched apps sent to a flagged destination: the
    /// identifier's kind and form, never its value.
    Sent {
        #[serde(default = "schema")]
        schema: u32,
        sent: Box<crate::leak::Leak>,
    },
}

/// A condition of the monitor that subscribers should know of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub message: String,
    /// Wall-clock time, epoch milliseconds.
    pub ts_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    /// Kernel records were lost: some connections were not seen. Everyone is told (it names
    /// no one's processes).
    RecordsLost,
    /// The store cannot be written (disk full, broken file): told to admins.
    StoreError,
    /// The store is written again: told to admins.
    StoreRecovered,
    /// The policy does not load; the daemon runs on the one before: told to admins.
    PolicyError,
    /// Users went over their kernel record budget (a flood): their own records were
    /// refused. Told to admins (it names uids and processes).
    OverBudget,
}

impl NoticeKind {
    /// Whether every subscriber is told, or only root and admins.
    pub fn for_everyone(self) -> bool {
        matches!(self, Self::RecordsLost)
    }
}

/// What the daemon broadcasts to its subscribers.
#[derive(Debug, Clone)]
pub enum Event {
    Alert(std::sync::Arc<Alert>),
    Notice(Notice),
    /// A watched app sent an identifier to a flagged destination (plaintext inspection).
    Sent(std::sync::Arc<crate::leak::Leak>),
}

/// A flagged contact, as the daemon announced and recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(flatten)]
    pub finding: Finding,
    /// Wall-clock time of the decision, epoch milliseconds.
    pub ts_ms: u64,
    /// Kernel clock (`CLOCK_BOOTTIME`) of the connect and of the decision, for latency
    /// figures.
    pub connect_boot_ns: u64,
    pub decided_boot_ns: u64,
}

/// One policy source and what it contributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySource {
    pub name: String,
    pub apps: usize,
    pub destinations: usize,
    pub domains: usize,
    pub rules: usize,
}

/// What the daemon is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub uptime_s: u64,
    /// The running kernel's release.
    pub kernel: String,
    /// Where the socket and packet programs run: `root`, or `cgroups` of watched apps.
    pub attach: crate::kernel::AttachScope,
    /// Programs and where they are attached.
    pub attached: Vec<String>,
    pub watched_apps: Vec<String>,
    pub counters: Option<KernelCounters>,
    pub records_delivered: u64,
    pub alerts: u64,
    pub policy_sources: Vec<PolicySource>,
    pub socket: PathBuf,
    pub store: StoreStatus,
    /// Why the policy in force is not the configured one (a file does not load).
    pub policy_error: Option<String>,
    /// The kernel denies what the policy's `block` rules cover.
    #[serde(default)]
    pub blocking: bool,
    /// Why the policy's blocks are not in force, when they are not.
    #[serde(default)]
    pub block_error: Option<String>,
    /// Whose figures these are: the whole machine's (root and admins), or only the asking
    /// user's (`alerts` then counts their alerts; the machine's counters are left out).
    #[serde(default)]
    pub all_users: bool,
}

impl Status {
    /// The status as `peer` may see it: an admin sees the machine's figures; anyone else
    /// their own alerts (`own_alerts`) and none of the counters that tell when someone
    /// else's app made a connection or contacted a listed company.
    pub fn as_seen_by(&self, peer: Peer, own_alerts: u64) -> Self {
        let mut s = self.clone();
        s.all_users = peer.admin;
        if !peer.admin {
            s.alerts = own_alerts;
            s.counters = None;
            s.records_delivered = 0;
            s.store.alerts_written = 0;
            s.store.connections_written = 0;
            s.store.quota_refused = 0;
            s.store.over_quota.clear();
        }
        s
    }
}

/// What `status` shows of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub path: PathBuf,
    /// Alerts and connection updates written since the daemon started.
    pub alerts_written: u64,
    pub connections_written: u64,
    /// Rows of what apps sent written (issue 25).
    #[serde(default)]
    pub sent_written: u64,
    /// Waiting to be written (the disk is slow, full or the file broken).
    pub pending: u64,
    /// Given up on: more than the store's limit were waiting.
    pub dropped: u64,
    /// Why the last write failed; `None` once writes succeed again.
    pub error: Option<String>,
    /// Rows refused because their uid reached its store quota.
    #[serde(default)]
    pub quota_refused: u64,
    /// The uids that reached their quota, the most refused first (admins only).
    #[serde(default)]
    pub over_quota: Vec<UidQuota>,
}

/// A uid that reached its store quota, and how many of its rows were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidQuota {
    pub uid: u32,
    pub refused: u64,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// Root or a member of the admin group: sees every user's alerts.
    pub admin: bool,
}

impl Peer {
    /// Whether this client may see `alert` (about a process of `alert.finding.uid`).
    pub fn may_see(&self, alert: &Alert) -> bool {
        self.admin || alert.finding.uid == self.uid
    }

    /// Whether this peer may hear what `uid`'s app sent.
    pub fn may_see_uid(&self, uid: u32) -> bool {
        self.admin || uid == self.uid
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The OS error is said once, in this message (not also as its cause: `{:#}` would
    /// repeat it).
    #[error("cannot connect to the brokerwatch daemon at {path}: {reason}; is it running? (`systemctl status brokerwatch`; your user must be in the `brokerwatch-users` group)")]
    Connect {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon sent something that is not brokerwatch's protocol: {0}")]
    Protocol(String),
    #[error("the daemon refused: {0}")]
    Refused(String),
    #[error("the daemon closed the connection without answering")]
    NoReply,
}

/// One line of the protocol, as sent (with its newline).
pub fn encode<T: Serialize>(msg: &T) -> String {
    let mut line = serde_json::to_string(msg).expect("protocol messages always serialize");
    line.push('\n');
    line
}

/// One received line.
pub fn decode_reply(line: &str) -> Result<Reply, ClientError> {
    serde_json::from_str(line).map_err(|e| ClientError::Protocol(format!("{e}: {line:?}")))
}

type Replies = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

/// A connection with one request sent; the write half stays open while replies are read
/// (closing it ends the request).
pub struct Connection {
    lines: Replies,
    _write: tokio::net::unix::OwnedWriteHalf,
}

impl Connection {
    pub async fn open(socket: &Path, req: &Request) -> Result<Self, ClientError> {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|reason| ClientError::Connect {
                path: socket.to_owned(),
                reason,
            })?;
        let (r, mut w) = stream.into_split();
        w.write_all(encode(req).as_bytes()).await?;
        Ok(Self {
            lines: BufReader::new(r).lines(),
            _write: w,
        })
    }

    /// The next reply, `None` when the daemon hung up.
    pub async fn next(&mut self) -> Result<Option<Reply>, ClientError> {
        match self.lines.next_line().await? {
            Some(line) => decode_reply(&line).map(Some),
            None => Ok(None),
        }
    }
}

/// Sends one request and returns its reply (for `status` and `history`).
pub async fn request(socket: &Path, req: &Request) -> Result<Reply, ClientError> {
    let mut conn = Connection::open(socket, req).await?;
    match conn.next().await? {
        Some(Reply::Error { message }) => Err(ClientError::Refused(message)),
        Some(reply) => Ok(reply),
        None => Err(ClientError::NoReply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_requests_round_trip_and_unknown_ops_fail() {
        for (req, text) in [
            (Request::Subscribe, r#"{"op":"subscribe"}"#),
            (Request::Status, r#"{"op":"status"}"#),
            (
                Request::History { since_ms: 5 },
                r#"{"op":"history","since_ms":5}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&req).unwrap(), text);
            assert_eq!(serde_json::from_str::<Request>(text).unwrap(), req);
        }
        assert!(serde_json::from_str::<Request>(r#"{"op":"reload"}"#).is_err());
    }

    fn alert(uid: u32) -> Alert {
        Alert {
            finding: Finding {
                uid,
                domain: Some("graph.facebook.com".into()),
                ..Finding::default()
            },
            ts_ms: 1,
            connect_boot_ns: 2,
            decided_boot_ns: 3,
        }
    }

    #[test]
    fn protocol_alert_replies_are_flat_findings_and_round_trip() {
        let reply = Reply::Alert {
            schema: crate::report::SCHEMA,
            alert: Box::new(alert(1000)),
        };
        let line = encode(&reply);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "alert");
        assert_eq!(v["schema"], crate::report::SCHEMA);
        assert_eq!(v["alert"]["uid"], 1000, "finding fields sit beside ts_ms");
        assert_eq!(v["alert"]["domain"], "graph.facebook.com");
        assert_eq!(v["alert"]["ts_ms"], 1);
        assert_eq!(decode_reply(line.trim_end()).unwrap(), reply);
        assert!(matches!(
            decode_reply(r#"{"type":"alert"}"#),
            Err(ClientError::Protocol(_))
        ));
    }

    // Issue 22, item 6: any socket user saw everyone's alert and connection totals, and by
    // polling them learnt when anyone's app contacted a flagged company.
    #[test]
    fn protocol_status_shows_non_admins_their_own_figures_only() {
        let status = Status {
            pid: 1,
            uptime_s: 2,
            kernel: "6.18".into(),
            attach: crate::kernel::AttachScope::Root,
            attached: Vec::new(),
            watched_apps: vec!["zoom".into()],
            counters: Some(KernelCounters {
                generated: 100,
                ..KernelCounters::default()
            }),
            records_delivered: 100,
            alerts: 40,
            policy_sources: Vec::new(),
            socket: "/run/x".into(),
            store: StoreStatus {
                alerts_written: 40,
                connections_written: 90,
                ..StoreStatus::default()
            },
            policy_error: None,
            blocking: false,
            block_error: None,
            all_users: false,
        };
        let user = Peer {
            uid: 1000,
            admin: false,
        };
        let mine = status.as_seen_by(user, 3);
        assert_eq!(mine.alerts, 3);
        assert!(!mine.all_users);
        assert_eq!(mine.counters, None);
        assert_eq!(
            (
                mine.records_delivered,
                mine.store.alerts_written,
                mine.store.connections_written
            ),
            (0, 0, 0)
        );
        let admin = Peer {
            uid: 0,
            admin: true,
        };
        let all = status.as_seen_by(admin, 3);
        assert_eq!((all.alerts, all.all_users), (40, true));
        assert_eq!(all.counters, status.counters);
    }

    #[test]
    fn protocol_peers_see_their_own_alerts_admins_all() {
        let a = alert(1000);
        assert!(Peer {
            uid: 1000,
            admin: false
        }
        .may_see(&a));
        assert!(!Peer {
            uid: 1001,
            admin: false
        }
        .may_see(&a));
        assert!(Peer {
            uid: 0,
            admin: true
        }
        .may_see(&a));
    }
}
