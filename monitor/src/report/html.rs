//! The report as one self-contained HTML file: inline CSS and SVG, no scripts, no fonts, no
//! images, nothing fetched (a Content-Security-Policy forbids it too), so that it opens on an
//! air-gapped machine and tells nobody it was opened. Every name in it came from the network
//! (DNS, SNI) and is escaped.

use std::fmt::Write as _;

use super::{text::when, Report};
use crate::policy::Category;

/// Flagged contacts.
const ALERT: &str = "#d7263d";
/// Contacts that are not flagged.
const QUIET: &str = "#9aa0a8";

/// Escapes text for HTML and for notification-body markup (the Desktop Notifications
/// spec's subset): names come from DNS answers and TLS ClientHellos, which anyone can
/// choose. Controls, bidi overrides and invisible characters are written out
/// (`\u{202E}`), never obeyed ([`crate::display`]).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Controls, bidi overrides and invisible characters are shown, not obeyed.
            c if crate::display::is_unsafe(c) => {
                out.push_str(&crate::display::safe(c.encode_utf8(&mut [0; 4])))
            }
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;border-bottom:1px solid #d8dce1;padding-bottom:4px}
.meta{color:#5b6470;margin:0 0 18px}
.headline{font-size:18px;margin:6px 0;padding:10px 14px;background:#fff;border-left:5px solid #9aa0a8;border-radius:4px}
.headline.flagged{border-left-color:#d7263d}
.card{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;width:100%;font-size:14px;background:#fff}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e9ed;vertical-align:top}
th{background:#eef0f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.sev-flagged{color:#d7263d;font-weight:700;text-transform:uppercase}
.src{color:#5b6470;font-size:12px;word-break:break-all}
.dom{font-family:ui-monospace,monospace;font-size:13px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;background:#fff;padding:12px 16px;border-radius:6px}
dt{color:#5b6470}dd{margin:0;font-family:ui-monospace,monospace;font-size:13px;word-break:break-all}
svg text{font:13px system-ui,sans-serif}
";

/// The whole page.
pub fn render(r: &Report, title: &str) -> String {
    let mut h = String::new();
    let long = r.until_ms.saturating_sub(r.since_ms) > 86_400_000;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head><body><main>\n",
        escape(title)
    );
    let _ = writeln!(
        h,
        "<h1>{}</h1><p class=\"meta\">{} &ndash; {} &middot; {} &middot; report schema {}</p>",
        escape(title),
        escape(&when(r.since_ms, true)),
        escape(&when(r.until_ms, true)),
        if r.scope == "audit" {
            "one audit"
        } else {
            "the brokerwatch service's record"
        },
        r.schema
    );
    h.push_str("<section id=\"summary\">");
    if r.apps.is_empty() {
        h.push_str("<p class=\"headline\">No connections by watched apps in this period.</p>");
    }
    for a in &r.apps {
        let flagged = a.companies.iter().any(|c| c.flagged);
        let _ = write!(
            h,
            "<p class=\"headline{}\">{}</p>",
            if flagged { " flagged" } else { "" },
            escape(&a.headline())
        );
    }
    h.push_str("</section>\n<h2>Who talked to whom</h2><div class=\"card\">");
    graph(&mut h, r);
    h.push_str("</div>\n<h2>When</h2><div class=\"card\">");
    timeline(&mut h, r, long);
    h.push_str("</div>\n");
    received_table(&mut h, r, long);
    h.push_str("<h2>Every contact</h2>");
    table(&mut h, r, long);
    if !r.facts.is_empty() {
        h.push_str("<h2>How this was gathered</h2><dl>");
        for (k, v) in &r.facts {
            let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
        }
        h.push_str("</dl>");
    }
    h.push_str("\n</main></body></html>\n");
    h
}

/// Apps on the left, companies on the right, one curve per (app, company), as thick as the
/// number of connections, red when the policy flags it.
fn graph(h: &mut String, r: &Report) {
    let mut companies: Vec<(&str, &Category, bool)> = Vec::new();
    for a in &r.apps {
        for c in &a.companies {
            match companies.iter_mut().find(|x| x.0 == c.company) {
                Some(x) => x.2 |= c.flagged,
                None => companies.push((&c.company, &c.category, c.flagged)),
            }
        }
    }
    companies.sort_by(|a, b| (b.2, a.1, a.0).cmp(&(a.2, b.1, b.0)));
    let rows = r.apps.len().max(companies.len()).max(1);
    let (width, row_h, top) = (1000.0, 38.0, 16.0);
    let height = top * 2.0 + rows as f64 * row_h;
    let y_of = |i: usize, n: usize| top + (i as f64 + 0.5) * (rows as f64 * row_h) / n as f64;
    let (app_x, app_w, co_x, co_w) = (10.0, 220.0, 640.0, 350.0);
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"apps and the companies they contacted\" viewBox=\"0 0 {width} {height}\" width=\"100%\">"
    );
    let max = r
        .apps
        .iter()
        .flat_map(|a| a.companies.iter().map(|c| c.connections))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    for (ai, a) in r.apps.iter().enumerate() {
        let y1 = y_of(ai, r.apps.len());
        for c in &a.companies {
            let ci = companies.iter().position(|x| x.0 == c.company).unwrap_or(0);
            let y2 = y_of(ci, companies.len());
            let w = 1.5 + 8.0 * ((c.connections as f64).ln_1p() / max.ln_1p());
            let (x1, x2) = (app_x + app_w, co_x);
            let _ = write!(
                h,
                "<path d=\"M{x1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2},{y2:.1}\" fill=\"none\" stroke=\"{}\" stroke-opacity=\"0.75\" stroke-width=\"{w:.1}\"><title>{} &#8594; {}: {} connections</title></path>",
                x1 + 160.0,
                x2 - 160.0,
                if c.flagged { ALERT } else { QUIET },
                escape(&a.app),
                escape(&c.company),
                c.connections
            );
        }
    }
    for (ai, a) in r.apps.iter().enumerate() {
        let y = y_of(ai, r.apps.len());
        let _ = write!(
            h,
            "<rect x=\"{app_x}\" y=\"{:.1}\" width=\"{app_w}\" height=\"28\" rx=\"5\" fill=\"#1d232a\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#fff\">{} ({})</text>",
            y - 14.0,
            app_x + 10.0,
            y + 5.0,
            escape(&a.app),
            a.connections
        );
    }
    for (ci, (name, category, flagged)) in companies.iter().enumerate() {
        let y = y_of(ci, companies.len());
        let _ = write!(
            h,
            "<rect x=\"{co_x}\" y=\"{:.1}\" width=\"{co_w}\" height=\"28\" rx=\"5\" fill=\"#fff\" stroke=\"{}\" stroke-width=\"{}\"/><rect x=\"{co_x}\" y=\"{:.1}\" width=\"8\" height=\"28\" rx=\"3\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{} <tspan fill=\"#5b6470\">{}</tspan></text>",
            y - 14.0,
            if *flagged { ALERT } else { "#c5cad1" },
            if *flagged { 2.5 } else { 1.0 },
            y - 14.0,
            category.colour(),
            co_x + 16.0,
            y + 5.0,
            escape(name),
            escape(category.as_str())
        );
    }
    h.push_str("</svg>");
}

/// Connections per bucket by first sighting: grey all, red flagged.
fn timeline(h: &mut String, r: &Report, long: bool) {
    let (width, height, pad) = (1000.0, 140.0, 24.0);
    let n = r.timeline.len().max(1);
    let max = r
        .timeline
        .iter()
        .map(|b| b.connections)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let bw = (width - 2.0 * pad) / n as f64;
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"connections over time\" viewBox=\"0 0 {width} {height}\" width=\"100%\">"
    );
    let base = height - pad;
    for (i, b) in r.timeline.iter().enumerate() {
        let x = pad + i as f64 * bw;
        let all = (b.connections as f64 / max) * (height - 2.0 * pad);
        let red = (b.flagged as f64 / max) * (height - 2.0 * pad);
        let _ = write!(
            h,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{all:.1}\" fill=\"{QUIET}\"/><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{red:.1}\" fill=\"{ALERT}\"/>",
            base - all,
            (bw - 1.0).max(0.5),
            base - red,
            (bw - 1.0).max(0.5)
        );
    }
    let _ = write!(
        h,
        "<line x1=\"{pad}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#5b6470\"/><text x=\"{pad}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><text x=\"{pad}\" y=\"14\" fill=\"#5b6470\">{} connections at most per {} s; red: flagged</text></svg>",
        width - pad,
        height - 6.0,
        escape(&when(r.since_ms, long)),
        width - pad,
        height - 6.0,
        escape(&when(r.until_ms, long)),
        max as u64,
        r.bucket_ms / 1000
    );
}

fn table(h: &mut String, r: &Report, long: bool) {
    h.push_str("<table><tr><th>App</th><th>Company</th><th>Category</th><th>Severity</th><th>Destination</th><th>Proto</th><th>Count</th><th>First</th><th>Last</th><th>Named by</th></tr>");
    for a in &r.apps {
        let rows = a
            .companies
            .iter()
            .flat_map(|c| c.domains.iter().map(move |d| (Some(c), d)))
            .chain(a.other.iter().map(|d| (None, d)));
        for (c, d) in rows {
            let (company, category, sev, flagged, source) = match c {
                Some(c) => (
                    c.company.as_str(),
                    c.category.as_str(),
                    if c.blocked > 0 {
                        format!(
                            "{} (blocked {}x)",
                            c.severity.map_or("", |s| s.as_str()),
                            c.blocked
                        )
                    } else {
                        c.severity.map_or("", |s| s.as_str()).to_owned()
                    },
                    c.flagged,
                    c.source.as_deref().unwrap_or(""),
                ),
                None => ("(not listed)", "", String::new(), false, ""),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}<div class=\"src\">{}</div></td><td>{}</td><td class=\"{}\">{}</td><td class=\"dom\">{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&a.app),
                escape(company),
                escape(source),
                escape(category),
                if flagged { "sev-flagged" } else { "" },
                escape(&sev),
                escape(&d.destination),
                escape(&d.proto),
                d.count,
                escape(&when(d.first_ms, long)),
                escape(&when(d.last_ms, long)),
                escape(d.named_by.map_or("-", |n| n.as_str()))
            );
        }
    }
    h.push_str("</table>");
}

/// What companies (and unlisted hosts) received from each app: identifiers by kind and form,
/// never a value. Nothing when no plaintext was read or nothing was found.
fn received_table(h: &mut String, r: &Report, long: bool) {
    let rows: Vec<(&str, Option<&super::CompanyReport>, &super::Received)> =
        r.apps
            .iter()
            .flat_map(|a| {
                let listed = a.companies.iter().flat_map(move |c| {
                    c.received.iter().map(move |x| (a.app.as_str(), Some(c), x))
                });
                listed.chain(
                    a.sent_elsewhere
                        .iter()
                        .map(move |x| (a.app.as_str(), None, x)),
                )
            })
            .collect();
    if rows.is_empty() {
        return;
    }
    h.push_str("<h2>What was sent</h2><table><tr><th>App</th><th>Received by</th><th>What</th><th>Where</th><th>Host</th><th>Requests</th><th>First</th><th>Last</th></tr>");
    for (app, c, x) in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td class=\"dom\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(app),
            if c.is_some_and(|c| c.flagged) { "sev-flagged" } else { "" },
            escape(c.map_or("(its own service or an unlisted host)", |c| c.company.as_str())),
            escape(&x.what),
            escape(x.place.phrase()),
            escape(x.host.as_deref().unwrap_or("-")),
            x.requests,
            escape(&when(x.first_ms, long)),
            escape(&when(x.last_ms, long)),
        );
    }
    h.push_str("</table>");
}
