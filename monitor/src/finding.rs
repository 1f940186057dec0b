//! What a contact means: one connection row of the engine, joined with its process, the
//! names it was meant for and the policy's verdict. This is the one place that decides it;
//! audit reports, daemon alerts, the history and the desktop agent all carry [`Finding`]s.

use serde::{Deserialize, Serialize};

use crate::{
    engine::{ConnAgg, ConnKey, Engine, ProcSource, Via},
    host::{clock::Clock, users::UserNames},
    kernel::wire::Proto,
    naming::{self, DNS_QUERY_PORTS},
    policy::{Action, Policy, Seen},
};

/// One connection row, flat so that JSON and CSV share it. Fields a later stage could not
/// fill (no name, no policy entry) are `null`.
/// Reading, a missing field takes its default: the store keeps findings without their
/// empty fields.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Finding {
    pub ts: String,
    pub last_seen: String,
    pub pid: u32,
    pub ppid: Option<u32>,
    pub comm: String,
    pub thread_comm: String,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    pub app: Option<String>,
    /// Policy app id (`zoom`, `teams`, ...).
    pub app_id: Option<String>,
    pub watch: Option<String>,
    pub uid: u32,
    pub user: Option<String>,
    pub proto: Proto,
    pub via: Via,
    pub dst_ip: String,
    pub dst_port: u16,
    pub domain: Option<String>,
    /// `sni`, `quic`, `http` or `dns`.
    pub domain_source: Option<String>,
    /// The DNS name asked for and every CNAME after it (empty when DNS named nothing).
    pub dns_chain: Vec<String>,
    /// The DNS name, when SNI/Host named something else.
    pub dns_name: Option<String>,
    /// For DNS traffic (ports 53, 5353): the names the queries asked.
    pub dns_queries: Vec<String>,
    /// Why the name is missing or not to be trusted.
    pub name_note: Option<String>,
    /// The connection goes to an encrypted DNS resolver (DoH/DoT).
    pub encrypted_dns: bool,
    /// Bytes left on the connection (a first payload was seen); a UDP `connect()` that
    /// sent nothing is an address probe, not traffic.
    pub sent: bool,
    pub category: Option<String>,
    pub company: Option<String>,
    pub severity: Option<String>,
    /// `alert`, `log`, `ignore` or `block`.
    pub action: Option<String>,
    /// Calls of this row the kernel denied (`EPERM` to the app).
    pub blocked: u64,
    /// Why a contact a block rule covers went through anyway (or, in an audit without
    /// `--enforce`, that it would have been blocked).
    pub block_note: Option<String>,
    /// The policy destination's id.
    pub destination_id: Option<String>,
    /// The policy domain, range or pattern that matched.
    pub matched: Option<String>,
    pub rule: Option<String>,
    /// Where the destination fact comes from.
    pub source: Option<String>,
    /// An alert-worthy contact (decides exit status 1).
    pub flagged: bool,
    pub count: u64,
    pub socket_cookie: u64,
    /// Parent chain, nearest first, `>`-separated pids.
    pub ancestry: String,
}

impl Finding {
    /// JSON without the empty fields (null, false, 0, "" and []), for storage: most are
    /// empty, and reading fills a missing field with its default.
    pub fn to_compact_json(&self) -> String {
        use serde_json::Value;
        let mut v = serde_json::to_value(self).expect("findings serialize");
        if let Value::Object(m) = &mut v {
            m.retain(|_, x| match x {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Number(n) => n.as_u64() != Some(0),
                Value::Object(_) | Value::Bool(true) => true,
            });
        }
        v.to_string()
    }
}

/// Everything a decision reads besides the row itself.
pub struct Context<'a> {
    pub clock: &'a Clock,
    pub users: &'a mut UserNames,
    pub policy: &'a Policy,
    /// The kernel denies what `block` rules cover (else they are reported as would-be
    /// blocks).
    pub enforcing: bool,
}

const NO_NAME_NOTE: &str = "no DNS answer for this address was seen and the connection carried no SNI or Host: a literal IP, a name resolved over encrypted DNS, or resolved before brokerwatch started";
const ECH_NOTE: &str =
    "Encrypted Client Hello in use: the name shown is the outer, public one; the real name is hidden";
const PROBE_NOTE: &str = "a UDP connect() that sent nothing: an address probe (glibc and browsers connect UDP sockets to rank addresses), not traffic";
const NOT_BEFORE_CONNECT_NOTE: &str = "not blockable before connect: nothing named this destination before the connection (no DNS answer brokerwatch saw, no blocked address range), only its own first bytes did; its address is blocked for this app from now on";
const WOULD_BLOCK_NOTE: &str =
    "would be blocked: a block rule covers it (`brokerwatch audit --enforce` blocks it)";
const PARTIAL_NOTE: &str = "name read from the part of the QUIC ClientHello that was sent (the peer never answered, so the rest never left)";

/// Every connection row of the engine, ordered by first sighting.
pub fn all<P: ProcSource>(engine: &Engine<P>, cx: &mut Context<'_>) -> Vec<Finding> {
    engine
        .connections()
        .into_iter()
        .map(|(k, agg)| decide(engine, &k, agg, cx))
        .collect()
}

/// What one connection row means.
pub fn decide<P: ProcSource>(
    engine: &Engine<P>,
    k: &ConnKey,
    agg: &ConnAgg,
    cx: &mut Context<'_>,
) -> Finding {
    let policy = cx.policy;
    let proc = engine.process(k.pid);
    let comm = proc.map(|p| p.comm.as_str()).unwrap_or(agg.comm.as_str());
    let app = policy.app_of(
        proc.and_then(|p| p.watch.as_deref()),
        &Seen {
            comm,
            exe: proc.and_then(|p| p.exe.as_deref()),
            exec_path: proc.and_then(|p| p.exec_path.as_deref()),
            identity: proc.and_then(|p| p.app.as_ref()),
        },
    );
    let domain = k.domain.as_deref().map(str::to_owned);
    let dns_chain: Vec<String> = agg
        .dns
        .as_ref()
        .map(|d| d.chain.clone())
        .unwrap_or_default();
    // The DNS name, when the connection's own bytes named something else.
    let dns_name = agg
        .dns
        .as_ref()
        .map(|d| d.qname.clone())
        .filter(|q| Some(q) != domain.as_ref());
    // The DNS chain speaks for the connection only when its own bytes did not name
    // something else: an address can serve many names (CDNs), and the cache may hold
    // another process's answer.
    let mut names: Vec<&str> = Vec::new();
    names.extend(domain.as_deref());
    if dns_name.is_none() {
        names.extend(dns_chain.iter().map(String::as_str));
    }
    let dns_traffic = DNS_QUERY_PORTS.contains(&k.port);
    // A resolver is not the names it was asked about: DNS rows are judged by address only.
    let verdict = if dns_traffic {
        policy.classify(app, &[], Some(k.dst))
    } else {
        policy.classify(app, &names, Some(k.dst))
    };
    // What the user asked to block for themselves (where the administrator lets them).
    let verdict = verdict.map(|mut v| {
        if v.action != Action::Block {
            if let Some(b) = policy.user_block(agg.uid, app, &v.entry.company) {
                v.action = Action::Block;
                v.rule = Some(format!("user-block:{}", b.app));
            }
        }
        v
    });
    let block_note = match &verdict {
        Some(v) if v.action == Action::Block && agg.blocked == 0 => Some(
            if cx.enforcing {
                NOT_BEFORE_CONNECT_NOTE
            } else {
                WOULD_BLOCK_NOTE
            }
            .to_owned(),
        ),
        _ => None,
    };
    // Encrypted DNS only once bytes went to the resolver: a probe that never connected
    // (a browser trying a public resolver) is not.
    let encrypted = naming::encrypted_dns(k.dst, k.port, domain.as_deref()).filter(|_| agg.sent);
    let name_note = if agg.ech {
        Some(ECH_NOTE.to_owned())
    } else if agg.name_partial {
        Some(PARTIAL_NOTE.to_owned())
    } else if dns_traffic {
        None
    } else if domain.is_none() && k.proto == Proto::Udp && agg.via == Via::Connect && !agg.sent {
        Some(PROBE_NOTE.to_owned())
    } else if domain.is_none() {
        Some(encrypted.unwrap_or(NO_NAME_NOTE).to_owned())
    } else {
        encrypted.map(str::to_owned)
    };
    let ancestry = engine
        .ancestry(k.pid)
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(">");
    let v = verdict.as_ref();
    Finding {
        ts: cx.clock.rfc3339(agg.first_ns),
        last_seen: cx.clock.rfc3339(agg.last_ns),
        pid: k.pid,
        ppid: proc.map(|p| p.ppid).filter(|&p| p != 0),
        comm: comm.to_owned(),
        thread_comm: agg.thread_comm.clone(),
        exe: proc.and_then(|p| p.exe.clone()),
        cmdline: proc.map(|p| p.cmdline.join(" ")).filter(|c| !c.is_empty()),
        app: app
            .map(|a| a.name.clone())
            .or_else(|| proc.and_then(|p| p.app.as_ref().map(|a| a.display_id()))),
        app_id: app.map(|a| a.id.clone()),
        watch: proc.and_then(|p| p.watch.clone()),
        uid: agg.uid,
        user: cx.users.name(agg.uid),
        proto: k.proto,
        via: agg.via,
        dst_ip: k.dst.to_string(),
        dst_port: k.port,
        domain,
        domain_source: agg.domain_source.map(|s| s.as_str().to_owned()),
        dns_chain,
        dns_name,
        dns_queries: agg.dns_queries.clone(),
        name_note,
        encrypted_dns: encrypted.is_some(),
        sent: agg.sent,
        category: v.map(|v| v.entry.category.clone()),
        company: v.map(|v| v.entry.company.clone()),
        severity: v.map(|v| v.severity.as_str().to_owned()),
        action: v.map(|v| v.action.as_str().to_owned()),
        blocked: agg.blocked,
        block_note,
        destination_id: v.map(|v| v.entry.id.clone()),
        matched: v.map(|v| v.matched.clone()),
        rule: v.and_then(|v| v.rule.clone()),
        source: v.map(|v| v.entry.source.clone()),
        flagged: v.is_some_and(|v| v.flagged()),
        count: agg.count,
        socket_cookie: agg.first_cookie,
        ancestry,
    }
}

impl Finding {
    /// The app's name, else the process's.
    pub fn who(&self) -> &str {
        self.app.as_deref().unwrap_or(&self.comm)
    }

    /// The destination's name, else its address.
    pub fn destination(&self) -> &str {
        self.domain.as_deref().unwrap_or(&self.dst_ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_compact_json_drops_empty_fields_and_reads_back_the_same() {
        let f = Finding {
            pid: 7,
            comm: "zoom".into(),
            domain: Some("a.example".into()),
            dns_chain: vec!["a.example".into(), "b.example".into()],
            flagged: true,
            count: 3,
            ..Finding::default()
        };
        let text = f.to_compact_json();
        assert!(!text.contains("null") && !text.contains("false"), "{text}");
        assert_eq!(serde_json::from_str::<Finding>(&text).unwrap(), f);
        let empty = Finding::default().to_compact_json();
        assert_eq!(
            serde_json::from_str::<Finding>(&empty).unwrap(),
            Finding::default()
        );
    }
}
