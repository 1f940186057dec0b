//! What a watched app sent (issue 25): one row of the inspector joined with its process,
//! the destination the request named and the policy's verdict. "zoom sent your e-mail
//! address (SHA-256) in the URL to LinkedIn (sales.linkedin.com)". A finding names the
//! identifier by kind and form, never its value, and holds no byte of the request.

use serde::{Deserialize, Serialize};

use crate::{
    engine::{Engine, ProcSource},
    finding::{rfc3339_ms, Context},
    inspect::{Form, IdKind, LeakAgg, LeakKey, Place, Sent},
    policy::{Category, Seen, Severity},
};
use monitor_common::TlsLib;

/// One thing an app sent to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leak {
    #[serde(rename = "ts", with = "rfc3339_ms")]
    pub first_ms: u64,
    #[serde(rename = "last_seen", with = "rfc3339_ms")]
    pub last_ms: u64,
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub app: Option<String>,
    pub app_id: Option<String>,
    pub uid: u32,
    pub user: Option<String>,
    /// The host the request named; `None` when it named none.
    pub host: Option<String>,
    /// What named it: `host_header` (HTTP/1.1) or `authority` (HTTP/2).
    pub named_by: String,
    /// The TLS library the app wrote through.
    pub library: String,
    /// Which identifier (`None` for other people's addresses).
    pub identifier: Option<IdKind>,
    pub form: Option<Form>,
    pub place: Place,
    /// Distinct e-mail addresses that are not the user's (0 for an identifier row).
    pub other_addresses: u64,
    /// Requests that carried it.
    pub requests: u64,
    pub company: Option<String>,
    pub category: Option<Category>,
    pub severity: Option<Severity>,
    pub destination_id: Option<String>,
    /// The host is the app's own (its vendor's): reported as such, never as a leak to a
    /// third party.
    pub first_party: bool,
    /// A leak to a destination the policy flags.
    pub flagged: bool,
    /// The sentence people read.
    pub summary: String,
}

fn library_name(lib: TlsLib) -> &'static str {
    match lib {
        TlsLib::OpenSsl => "OpenSSL",
        TlsLib::GnuTls => "GnuTLS",
        TlsLib::Nspr => "NSS/NSPR",
    }
}

/// What one inspector row means.
pub fn decide<P: ProcSource>(
    engine: &Engine<P>,
    key: &LeakKey,
    agg: &LeakAgg,
    cx: &mut Context<'_>,
) -> Leak {
    let policy = cx.policy;
    let proc = engine.process(key.pid);
    let comm = proc.map(|p| p.comm.clone()).unwrap_or_default();
    let app = policy
        .app_decided(
            proc.and_then(|p| p.watch.as_deref()),
            &Seen {
                comm: &comm,
                exe: proc.and_then(|p| p.exe.as_deref()),
                exec_path: proc.and_then(|p| p.exec_path.as_deref()),
                identity: proc.and_then(|p| p.app.as_ref()),
            },
        )
        .map(|(a, _)| a);
    // The host without its port.
    let host = key.host.as_deref().map(strip_port);
    let first_party = host.is_some_and(|h| policy.is_first_party(app, h));
    let verdict = host
        .filter(|_| !first_party)
        .and_then(|h| policy.classify(app, &[h], None));
    let (identifier, form, place, others) = match key.sent {
        Sent::Identifier { kind, form, place } => (Some(kind), Some(form), place, 0),
        Sent::OtherEmails { place } => (None, None, place, agg.other_addresses() as u64),
    };
    let who = app.map(|a| a.name.clone()).unwrap_or_else(|| comm.clone());
    let mut leak = Leak {
        first_ms: cx.clock.epoch_ms(agg.first_ns),
        last_ms: cx.clock.epoch_ms(agg.last_ns),
        pid: key.pid,
        comm,
        exe: proc.and_then(|p| p.exe.clone()),
        app: app.map(|a| a.name.clone()),
        app_id: app.map(|a| a.id.clone()),
        uid: agg.uid,
        user: cx.users.name(agg.uid),
        host: host.map(str::to_owned),
        named_by: if agg.by_authority {
            "authority"
        } else {
            "host_header"
        }
        .to_owned(),
        library: library_name(agg.lib).to_owned(),
        identifier,
        form,
        place,
        other_addresses: others,
        requests: agg.requests,
        company: verdict.as_ref().map(|v| v.entry.company.clone()),
        category: verdict
            .as_ref()
            .map(|v| Category::new(v.entry.category.clone())),
        severity: verdict.as_ref().map(|v| v.severity),
        destination_id: verdict.as_ref().map(|v| v.entry.id.clone()),
        first_party,
        flagged: verdict.as_ref().is_some_and(|v| v.flagged()),
        summary: String::new(),
    };
    leak.summary = sentence(&who, &leak);
    leak
}

/// "zoom sent your e-mail address (SHA-256) in the URL to LinkedIn (sales.linkedin.com)".
pub fn sentence(who: &str, l: &Leak) -> String {
    let what = what_phrase(l.identifier, l.form, l.other_addresses);
    let host = l
        .host
        .as_deref()
        .unwrap_or("a host the request did not name");
    let whom = match (&l.company, l.first_party) {
        (_, true) => format!("its own service ({host})"),
        (Some(c), _) => format!("{c} ({host})"),
        (None, _) => host.to_owned(),
    };
    format!("{who} sent {what} {} to {whom}", l.place.phrase())
}

/// What was sent, as people read it: "your e-mail address (SHA-256)", "3 e-mail addresses
/// that are not yours" (`others` counts only when no identifier is named).
pub fn what_phrase(identifier: Option<IdKind>, form: Option<Form>, others: u64) -> String {
    match (identifier, form) {
        (Some(kind), Some(Form::Plain) | None) => kind.phrase().to_owned(),
        (Some(kind), Some(form)) => format!("{} ({})", kind.phrase(), form.phrase()),
        _ => match others {
            1 => "1 e-mail address that is not yours".to_owned(),
            n => format!("{n} e-mail addresses that are not yours"),
        },
    }
}

fn strip_port(host: &str) -> &str {
    // `[v6]:port`, `name:port`; a bare IPv6 address has more than one colon.
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_hosts_lose_their_port_only() {
        assert_eq!(strip_port("sales.linkedin.com:443"), "sales.linkedin.com");
        assert_eq!(strip_port("[::1]:8443"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a.test"), "a.test");
    }

    #[test]
    fn leak_sentences_name_kind_form_place_and_company_never_a_value() {
        let mut l = Leak {
            first_ms: 0,
            last_ms: 0,
            pid: 1,
            comm: "zoom".into(),
            exe: None,
            app: None,
            app_id: None,
            uid: 1000,
            user: None,
            host: Some("sales.linkedin.com".into()),
            named_by: "host_header".into(),
            library: "OpenSSL".into(),
            identifier: Some(IdKind::Email),
            form: Some(Form::Sha256),
            place: Place::Url,
            other_addresses: 0,
            requests: 1,
            company: Some("LinkedIn".into()),
            category: None,
            severity: None,
            destination_id: None,
            first_party: false,
            flagged: true,
            summary: String::new(),
        };
        assert_eq!(
            sentence("Zoom", &l),
            "Zoom sent your e-mail address (SHA-256) in the URL to LinkedIn (sales.linkedin.com)"
        );
        l.identifier = None;
        l.form = None;
        l.other_addresses = 12;
        l.place = Place::Body;
        assert_eq!(
            sentence("Zoom", &l),
            "Zoom sent 12 e-mail addresses that are not yours in the body to LinkedIn (sales.linkedin.com)"
        );
        l.first_party = true;
        assert!(sentence("Zoom", &l).ends_with("to its own service (sales.linkedin.com)"));
    }
}
