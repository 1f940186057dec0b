//! What a contact means: one connection row of the engine, joined with its process, the
//! names it was meant for and the policy's verdict. This is the one place that decides it;
//! audit reports, daemon alerts, the history and the desktop agent all carry [`Finding`]s.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::{
    engine::{ConnAgg, ConnKey, Engine, ProcSource, Via},
    host::{clock::Clock, users::UserNames},
    kernel::wire::Proto,
    naming::{self, NameSource, DNS_QUERY_PORTS},
    policy::{Action, Category, Policy, Seen, Severity, UserBlock},
};

/// One connection row, flat so that JSON and CSV share it. Fields a later stage could not
/// fill (no name, no policy entry) are `null`. Facts are typed (severity, action, category,
/// how the name was learnt, the address, times in milliseconds); the JSON keeps the shape
/// of schema 1 (times as RFC 3339 text, addresses and enums as strings).
/// Reading, a missing field takes its default: the store keeps findings without their
/// empty fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Finding {
    /// First sighting, epoch milliseconds (`ts` in JSON, RFC 3339).
    #[serde(rename = "ts", with = "rfc3339_ms")]
    pub first_ms: u64,
    /// Last sighting, epoch milliseconds (`last_seen` in JSON, RFC 3339).
    #[serde(rename = "last_seen", with = "rfc3339_ms")]
    pub last_ms: u64,
    pub pid: u32,
    pub ppid: Option<u32>,
    pub comm: String,
    pub thread_comm: String,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    pub app: Option<String>,
    /// Policy app id (`zoom`, `teams`, ...).
    pub app_id: Option<String>,
    /// How the app was decided (executable, scope, executable name, process name, parent):
    /// a sure attribution or a name match.
    #[serde(default)]
    pub app_by: Option<crate::policy::AppBy>,
    pub watch: Option<String>,
    pub uid: u32,
    pub user: Option<String>,
    pub proto: Proto,
    pub via: Via,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    pub domain: Option<String>,
    /// How the name was learnt.
    pub domain_source: Option<NameSource>,
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
    pub category: Option<Category>,
    pub company: Option<String>,
    pub severity: Option<Severity>,
    pub action: Option<Action>,
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

impl Default for Finding {
    fn default() -> Self {
        Self {
            first_ms: 0,
            last_ms: 0,
            pid: 0,
            ppid: None,
            comm: String::new(),
            thread_comm: String::new(),
            exe: None,
            cmdline: None,
            app: None,
            app_id: None,
            app_by: None,
            watch: None,
            uid: 0,
            user: None,
            proto: Proto::default(),
            via: Via::default(),
            dst_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst_port: 0,
            domain: None,
            domain_source: None,
            dns_chain: Vec::new(),
            dns_name: None,
            dns_queries: Vec::new(),
            name_note: None,
            encrypted_dns: false,
            sent: false,
            category: None,
            company: None,
            severity: None,
            action: None,
            blocked: 0,
            block_note: None,
            destination_id: None,
            matched: None,
            rule: None,
            source: None,
            flagged: false,
            count: 0,
            socket_cookie: 0,
            ancestry: String::new(),
        }
    }
}

/// Epoch milliseconds as RFC 3339 text with milliseconds (`2026-12-02T13:58:07.123Z`), as
/// schema 1 writes times.
pub mod rfc3339_ms {
    use std::time::{Duration, UNIX_EPOCH};

    use serde::{Deserialize as _, Deserializer, Serializer};

    /// The text of `ms`.
    pub fn format(ms: u64) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    }

    /// The milliseconds of RFC 3339 text.
    pub fn parse(text: &str) -> Option<u64> {
        let t = humantime::parse_rfc3339(text).ok()?;
        Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
    }

    pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        // An empty time (a row written without one) is no time.
        if text.is_empty() {
            return Ok(0);
        }
        parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
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
    /// Blocks users asked for themselves (where the administrator lets them).
    pub user_blocks: &'a [UserBlock],
}

const NO_NAME_NOTE: &str = "no DNS answer for this address was seen and the connection carried no SNI or Host: a literal IP, a name resolved over encrypted DNS, or resolved before brokerwatch started";
const ECH_NOTE: &str =
    "Encrypted Client Hello in use: the name shown is the outer, public one; the real name is hidden";
const PROBE_NOTE: &str = "a UDP connect() that sent nothing: an address probe (glibc and browsers connect UDP sockets to rank addresses), not traffic";
const NOT_BEFORE_CONNECT_NOTE: &str = "not blockable before connect: nothing named this destination before the connection (no DNS answer brokerwatch saw, no blocked address range), only its own first bytes did; its address is blocked for this app from now on";
const WOULD_BLOCK_NOTE: &str =
    "would be blocked: a block rule covers it (`brokerwatch audit --enforce` blocks it)";
const FOLDED_NOTE: &str = "this process called more than 32 ports of this address: the calls to the other ports are counted in this one row (port 0)";
const BEFORE_START_NOTE: &str = "open before brokerwatch started: found among the app's connections at the start, named from what it sent after";
const BEFORE_START_UNNAMED_NOTE: &str = "open before brokerwatch started: found among the app's connections at the start; its name was looked up before then, and nothing it sent since named it (TLS does not repeat the name)";
const SIBLING_NOTE: &str = "named from an earlier socket of the same process to the same address and port, whose QUIC ClientHello carried the name (this one's never left whole: the peer did not answer its first Initial)";
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
    let decided = policy.app_decided(
        proc.and_then(|p| p.watch.as_deref()),
        &Seen {
            comm,
            exe: proc.and_then(|p| p.exe.as_deref()),
            exec_path: proc.and_then(|p| p.exec_path.as_deref()),
            identity: proc.and_then(|p| p.app.as_ref()),
        },
    );
    let app = decided.map(|(a, _)| a);
    let names = Names::of(k, agg);
    let verdict = judge(cx, app, k, agg, &names);
    let dns_traffic = DNS_QUERY_PORTS.contains(&k.port);
    // Encrypted DNS only once bytes went to the resolver: a probe that never connected
    // (a browser trying a public resolver) is not.
    let encrypted =
        naming::encrypted_dns(k.dst, k.port, names.domain.as_deref()).filter(|_| agg.sent);
    let mut f = Finding {
        first_ms: cx.clock.epoch_ms(agg.first_ns),
        last_ms: cx.clock.epoch_ms(agg.last_ns),
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
        app_by: decided.map(|(_, by)| by),
        watch: proc.and_then(|p| p.watch.clone()),
        uid: agg.uid,
        user: cx.users.name(agg.uid),
        proto: k.proto,
        via: agg.via,
        dst_ip: k.dst,
        dst_port: k.port,
        name_note: name_note(k, agg, names.domain.is_none(), dns_traffic, encrypted),
        domain: names.domain,
        domain_source: agg.domain_source,
        dns_chain: names.dns_chain,
        dns_name: names.dns_name,
        dns_queries: agg.dns_queries.clone(),
        encrypted_dns: encrypted.is_some(),
        sent: agg.sent,
        blocked: agg.blocked,
        count: agg.count,
        socket_cookie: agg.first_cookie,
        ancestry: engine
            .ancestry(k.pid)
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(">"),
        ..Finding::default()
    };
    if let Some(v) = verdict {
        f.set_verdict(v, cx.enforcing);
    }
    f
}

/// The names a connection row carries.
struct Names {
    /// From its own bytes (SNI, Host), else DNS.
    domain: Option<String>,
    /// The DNS name asked for and every CNAME after it.
    dns_chain: Vec<String>,
    /// The DNS name, when the connection's own bytes named something else.
    dns_name: Option<String>,
}

impl Names {
    fn of(k: &ConnKey, agg: &ConnAgg) -> Self {
        let domain = k.domain.as_deref().map(str::to_owned);
        let dns_chain = agg
            .dns
            .as_ref()
            .map(|d| d.chain.clone())
            .unwrap_or_default();
        let dns_name = agg
            .dns
            .as_ref()
            .map(|d| d.qname.clone())
            .filter(|q| Some(q) != domain.as_ref());
        Self {
            domain,
            dns_chain,
            dns_name,
        }
    }

    /// The names the policy judges. The DNS chain speaks for the connection only when its
    /// own bytes did not name something else: an address can serve many names (CDNs), and
    /// the cache may hold another process's answer.
    fn judged(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.domain.iter().map(String::as_str).collect();
        if self.dns_name.is_none() {
            names.extend(self.dns_chain.iter().map(String::as_str));
        }
        names
    }
}

/// The policy's verdict on a row, with the user's own blocks (where the administrator
/// lets users block).
fn judge(
    cx: &Context<'_>,
    app: Option<&crate::policy::AppDef>,
    k: &ConnKey,
    agg: &ConnAgg,
    names: &Names,
) -> Option<crate::policy::Verdict> {
    let policy = cx.policy;
    // A resolver is not the names it was asked about: DNS rows are judged by address only.
    let verdict = if DNS_QUERY_PORTS.contains(&k.port) {
        policy.classify(app, &[], Some(k.dst))
    } else {
        policy.classify(app, &names.judged(), Some(k.dst))
    };
    verdict.map(|mut v| {
        if v.action != Action::Block {
            if let Some(b) = policy.user_block(cx.user_blocks, agg.uid, app, &v.entry.company) {
                v.action = Action::Block;
                v.rule = Some(format!("user-block:{}", b.app));
            }
        }
        v
    })
}

/// Why a row's name is missing, partial, or not to be trusted.
fn name_note(
    k: &ConnKey,
    agg: &ConnAgg,
    unnamed: bool,
    dns_traffic: bool,
    encrypted: Option<&'static str>,
) -> Option<String> {
    let note = if k.port == crate::engine::FOLDED_PORT {
        FOLDED_NOTE
    } else if agg.before_start && unnamed {
        BEFORE_START_UNNAMED_NOTE
    } else if agg.before_start {
        BEFORE_START_NOTE
    } else if agg.ech {
        ECH_NOTE
    } else if agg.name_partial {
        PARTIAL_NOTE
    } else if agg.sibling_named > 0 {
        if agg.sibling_named < agg.count {
            return Some(format!(
                "{} of its {} connections: {SIBLING_NOTE}",
                agg.sibling_named, agg.count
            ));
        }
        SIBLING_NOTE
    } else if dns_traffic {
        return None;
    } else if unnamed && k.proto == Proto::Udp && agg.via == Via::Connect && !agg.sent {
        PROBE_NOTE
    } else if unnamed {
        encrypted.unwrap_or(NO_NAME_NOTE)
    } else {
        encrypted?
    };
    Some(note.to_owned())
}

impl Finding {
    /// Fills in the policy's verdict; a contact a block covers that went through says why
    /// (`enforcing`: nothing named it before the connect; else it would have been blocked).
    fn set_verdict(&mut self, v: crate::policy::Verdict, enforcing: bool) {
        if v.action == Action::Block && self.blocked == 0 {
            let note = if enforcing {
                NOT_BEFORE_CONNECT_NOTE
            } else {
                WOULD_BLOCK_NOTE
            };
            self.block_note = Some(note.to_owned());
        }
        self.flagged = v.flagged();
        self.category = Some(Category::new(v.entry.category));
        self.company = Some(v.entry.company);
        self.severity = Some(v.severity);
        self.action = Some(v.action);
        self.destination_id = Some(v.entry.id);
        self.matched = Some(v.matched);
        self.rule = v.rule;
        self.source = Some(v.entry.source);
    }
}

impl Finding {
    /// The app's name, else the process's.
    pub fn who(&self) -> &str {
        self.app.as_deref().unwrap_or(&self.comm)
    }

    /// The destination's name, else its address.
    pub fn destination(&self) -> String {
        self.domain
            .clone()
            .unwrap_or_else(|| self.dst_ip.to_string())
    }

    /// The first sighting as RFC 3339 text.
    pub fn ts(&self) -> String {
        rfc3339_ms::format(self.first_ms)
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
