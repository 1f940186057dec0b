//! Stage one of policy loading: one file's text to validated tables, with every error at its
//! `file:line:col`. Pure: no file system, no global state.

use std::{fmt, ops::Range};

use serde::Deserialize;
use toml::Spanned;

use super::apps::AppDef;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..text.floor_char_boundary_compat(at)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// The severity `as_str` names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Alert,
    Log,
    Ignore,
    /// Alert, and deny the connection in the kernel (where brokerwatch runs with blocking).
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Log => "log",
            Action::Ignore => "ignore",
            Action::Block => "block",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    pub id: Spanned<String>,
    pub company: String,
    pub category: Spanned<String>,
    #[serde(default)]
    pub domains: Vec<Spanned<String>>,
    #[serde(default)]
    pub cidrs: Vec<Spanned<String>>,
    pub source: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: Spanned<String>,
    /// App id, group, or `*`.
    pub apps: Spanned<String>,
    /// Category or `*`.
    pub category: Spanned<String>,
    /// Only destinations of this company (case-insensitive).
    #[serde(default)]
    pub company: Option<Spanned<String>>,
    /// Only this destination (its id).
    #[serde(default)]
    pub destination: Option<Spanned<String>>,
    pub severity: Severity,
    pub action: Action,
}

/// Settings an administrator's policy may give (`[settings]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Users may block a meeting app's contacts with a company for themselves
    /// (`brokerwatch block`, the notification's Block button).
    #[serde(default)]
    pub allow_user_blocks: Option<bool>,
    /// Read what watched apps hand their TLS libraries to send and report the
    /// identifiers in it (the users' own, the machine's, other people's addresses).
    #[serde(default)]
    pub inspect_plaintext: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    pub id: Spanned<String>,
    /// App id or group.
    pub app: Spanned<String>,
    pub company: Spanned<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Formats of lists users already have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportFormat {
    Hosts,
    Adblock,
    Domains,
    Disconnect,
    TrackerRadar,
    DdgAppTrackers,
    Exodus,
    CaBrokerCsv,
}

impl ImportFormat {
    pub const NAMES: &'static [&'static str] = &[
        "hosts",
        "adblock",
        "domains",
        "disconnect",
        "tracker-radar",
        "ddg-app-trackers",
        "exodus",
        "ca-broker-csv",
    ];

    /// The name [`ImportFormat::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hosts => "hosts",
            Self::Adblock => "adblock",
            Self::Domains => "domains",
            Self::Disconnect => "disconnect",
            Self::TrackerRadar => "tracker-radar",
            Self::DdgAppTrackers => "ddg-app-trackers",
            Self::Exodus => "exodus",
            Self::CaBrokerCsv => "ca-broker-csv",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hosts" => Self::Hosts,
            "adblock" => Self::Adblock,
            "domains" => Self::Domains,
            "disconnect" => Self::Disconnect,
            "tracker-radar" => Self::TrackerRadar,
            "ddg-app-trackers" => Self::DdgAppTrackers,
            "exodus" => Self::Exodus,
            "ca-broker-csv" => Self::CaBrokerCsv,
            _ => return None,
        })
    }

    /// Whether the format carries categories of its own (so `category` is optional).
    pub fn has_categories(self) -> bool {
        matches!(
            self,
            Self::Disconnect | Self::TrackerRadar | Self::CaBrokerCsv
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImport {
    pub id: Spanned<String>,
    pub path: Spanned<String>,
    pub format: Spanned<String>,
    #[serde(default)]
    pub category: Option<Spanned<String>>,
    #[serde(default)]
    pub company: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub app: Vec<AppDef>,
    #[serde(default)]
    pub destination: Vec<RawDestination>,
    #[serde(default)]
    pub rule: Vec<RawRule>,
    #[serde(default)]
    pub allow: Vec<RawAllow>,
    #[serde(default)]
    pub import: Vec<RawImport>,
    #[serde(default)]
    pub settings: Option<RawSettings>,
}

/// The file's tables as untyped entries with their positions, to check one by one.
#[derive(Deserialize)]
struct Entries {
    #[serde(default)]
    app: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    destination: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    rule: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    allow: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    import: Vec<Spanned<toml::Value>>,
}

/// Every entry that does not deserialize, positioned at the offending name or value when the
/// message quotes it, else at the entry.
fn entry_errors(file: &str, text: &str) -> Vec<Diagnostic> {
    fn check<T: serde::de::DeserializeOwned>(
        file: &str,
        text: &str,
        table: &str,
        items: Vec<Spanned<toml::Value>>,
        out: &mut Vec<Diagnostic>,
    ) {
        for item in items {
            let span = item.span();
            // The entry's own text, parsed alone, keeps positions (and `Spanned` fields).
            let body = text.get(span.clone()).unwrap_or("");
            let body = body.strip_prefix(&format!("[[{table}]]")).unwrap_or(body);
            let offset = span.end - body.len();
            let Err(e) = toml::from_str::<T>(body) else {
                continue;
            };
            let message = e.message().trim().to_owned();
            let at = offset + e.span().map_or(0, |s| s.start);
            let (line, col) = line_col(text, at);
            out.push(Diagnostic {
                file: file.to_owned(),
                line,
                col,
                message: format!("[[{table}]]: {message}"),
                hint: None,
            });
        }
    }
    let Ok(e) = toml::from_str::<Entries>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    check::<AppDef>(file, text, "app", e.app, &mut out);
    check::<RawDestination>(file, text, "destination", e.destination, &mut out);
    check::<RawRule>(file, text, "rule", e.rule, &mut out);
    check::<RawAllow>(file, text, "allow", e.allow, &mut out);
    check::<RawImport>(file, text, "import", e.import, &mut out);
    out.sort_by_key(|d| (d.line, d.col));
    out
}

/// A parsed and validated policy file.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub name: String,
    pub raw: RawFile,
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>, hint: Option<&str>) {
        let (line, col) = line_col(self.text, span.start);
        self.diags.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            col,
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }

    fn id(&mut self, id: &Spanned<String>, what: &str) {
        let v = id.get_ref();
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            self.at(
                id.span(),
                format!("{what} id {v:?} is not valid"),
                Some("use ASCII letters, digits, '-', '_' or '.'"),
            );
        }
    }

    fn category(&mut self, c: &Spanned<String>, allow_star: bool) {
        let v = c.get_ref();
        if allow_star && v == "*" {
            return;
        }
        let ok = !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            self.at(
                c.span(),
                format!("category {v:?} is not valid"),
                Some(&format!(
                    "use one of {} or your own lower-case-with-dashes name",
                    super::category::known_ids().collect::<Vec<_>>().join(", ")
                )),
            );
        }
    }
}

impl Checker<'_> {
    fn destination(&mut self, d: &RawDestination) {
        self.id(&d.id, "destination");
        self.category(&d.category, false);
        if d.domains.is_empty() && d.cidrs.is_empty() {
            self.at(
                d.id.span(),
                format!("destination {:?} matches nothing", d.id.get_ref()),
                Some("give domains = [...] or cidrs = [...]"),
            );
        }
        for dom in &d.domains {
            if let Err(why) = super::matcher::normalize_domain(dom.get_ref()) {
                self.at(
                    dom.span(),
                    format!("domain {:?}: {why}", dom.get_ref()),
                    None,
                );
            }
        }
        for cidr in &d.cidrs {
            if cidr.get_ref().parse::<ipnet::IpNet>().is_err()
                && cidr.get_ref().parse::<std::net::IpAddr>().is_err()
            {
                self.at(
                    cidr.span(),
                    format!("{:?} is not an address range", cidr.get_ref()),
                    Some("write e.g. 192.0.2.0/24 or 2001:db8::/32"),
                );
            }
        }
        if d.source.get_ref().trim().is_empty() {
            self.at(
                d.source.span(),
                "source is empty",
                Some("say where the fact comes from (a URL or a document)"),
            );
        }
    }

    fn rule(&mut self, r: &RawRule) {
        self.id(&r.id, "rule");
        self.category(&r.category, true);
        for (what, v) in [("company", &r.company), ("destination", &r.destination)] {
            if let Some(v) = v.as_ref().filter(|v| v.get_ref().trim().is_empty()) {
                self.at(
                    v.span(),
                    format!("rule {:?}: {what} is empty", r.id.get_ref()),
                    Some("leave it out to cover every one"),
                );
            }
        }
    }

    fn import(&mut self, i: &RawImport) {
        self.id(&i.id, "import");
        match ImportFormat::parse(i.format.get_ref()) {
            None => self.at(
                i.format.span(),
                format!("unknown import format {:?}", i.format.get_ref()),
                Some(&format!("use one of {}", ImportFormat::NAMES.join(", "))),
            ),
            Some(fmt) => {
                if let Some(cat) = &i.category {
                    self.category(cat, false);
                } else if !fmt.has_categories() {
                    self.at(
                        i.id.span(),
                        format!(
                            "import {:?} needs a category: {} lists do not carry one",
                            i.id.get_ref(),
                            i.format.get_ref()
                        ),
                        Some("add category = \"product-analytics\" (or another)"),
                    );
                }
            }
        }
    }
}

/// Parses and validates one policy file's text (stage one).
pub fn parse(file: &str, text: &str) -> Result<PolicyFile, Vec<Diagnostic>> {
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            let mut diags = vec![Diagnostic {
                file: file.to_owned(),
                line,
                col,
                message: e.message().trim().to_owned(),
                hint: Some(
                    "tables are [[app]], [[destination]], [[rule]], [[allow]], [[import]] and [settings]; see `man brokerwatch-policy`"
                        .to_owned(),
                ),
            }];
            // Serde stops at the first bad value; look at every entry on its own so that
            // one run shows every entry that needs fixing.
            diags.extend(
                entry_errors(file, text)
                    .into_iter()
                    .filter(|d| d.line != line),
            );
            return Err(diags);
        }
    };
    let mut c = Checker {
        file,
        text,
        diags: Vec::new(),
    };
    for d in &raw.destination {
        c.destination(d);
    }
    for r in &raw.rule {
        c.rule(r);
    }
    for a in &raw.allow {
        c.id(&a.id, "allow");
    }
    for i in &raw.import {
        c.import(i);
    }
    for app in &raw.app {
        if let Err(message) = super::apps::validate_app(app) {
            // Apps carry no spans; point at the id's first occurrence in the text.
            let at = text.find(&format!("\"{}\"", app.id)).unwrap_or(0);
            c.at(at..at, format!("app {:?}: {message}", app.id), None);
        }
    }
    if c.diags.is_empty() {
        Ok(PolicyFile {
            name: file.to_owned(),
            raw,
        })
    } else {
        Err(c.diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_have_exact_positions() {
        let text = "[[destination]]\nid = \"x\"\ncompany = \"X\"\ncategory = = \"data-broker\"\n";
        let d = parse("t.toml", text).unwrap_err();
        assert_eq!((d[0].line, d[0].col), (4, 12), "{}", d[0]);
        assert_eq!(d[0].file, "t.toml");
    }

    #[test]
    fn unknown_fields_are_pointed_at() {
        let text = "[[rule]]\nid = \"r\"\napps = \"*\"\ncategory = \"*\"\nseverity = \"high\"\naction = \"alert\"\ncolour = \"red\"\n";
        let d = parse("t.toml", text).unwrap_err();
        assert_eq!(d[0].line, 7, "{}", d[0]);
        assert!(d[0].message.contains("colour"), "{}", d[0]);
    }

    #[test]
    fn bad_values_are_reported_where_they_are() {
        let text = r#"[[destination]]
id = "acme"
company = "Acme"
category = "Data Broker"
domains = ["acme.example", "bad domain"]
cidrs = ["10.0.0.0/33"]
source = "test"
"#;
        let d = parse("t.toml", text).unwrap_err();
        let at: Vec<(usize, usize)> = d.iter().map(|d| (d.line, d.col)).collect();
        assert_eq!(at, vec![(4, 12), (5, 28), (6, 10)], "{d:#?}");
        assert!(d[0].hint.as_deref().unwrap().contains("data-broker"));
    }

    #[test]
    fn bad_severity_and_import_format() {
        let text = "[[rule]]\nid = \"r\"\napps = \"*\"\ncategory = \"*\"\nseverity = \"urgent\"\naction = \"alert\"\n";
        let d = parse("t.toml", text).unwrap_err();
        assert_eq!(d[0].line, 5, "{}", d[0]);
        let text =
            "[[import]]\nid = \"i\"\npath = \"/x\"\nformat = \"yaml\"\ncategory = \"social-sdk\"\n";
        let d = parse("t.toml", text).unwrap_err();
        assert_eq!((d[0].line, d[0].col), (4, 10), "{}", d[0]);
        let text = "[[import]]\nid = \"i\"\npath = \"/x\"\nformat = \"hosts\"\n";
        let d = parse("t.toml", text).unwrap_err();
        assert!(d[0].message.contains("needs a category"), "{}", d[0]);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé", 5), (2, 3));
        assert_eq!(line_col("", 10), (1, 1));
    }
}
