//! Identifiers and the forms they travel in (issue 25): a user's e-mail address, name and
//! phone number, and the machine's own identifiers, each turned into every form ad SDKs and
//! brokers use (plain, URL- and JSON-escaped, base64, MD5/SHA-1/SHA-256 of the normalised
//! value in hex and base64), searched in one multi-pattern pass per buffer.
//!
//! Values live in memory only; a match says which identifier (its kind) and in which form,
//! never the value.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use md5::Digest as _;
use serde::{Deserialize, Serialize};

/// What an identifier is (its label in findings; the value is never shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    Email,
    Name,
    Phone,
    /// `/etc/machine-id`.
    MachineId,
    HostName,
    /// A MAC address of one of the machine's interfaces.
    Mac,
    /// The login name of the process's user.
    LoginName,
}

impl IdKind {
    /// How a finding names it ("Zoom sent your e-mail address to LinkedIn").
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Email => "your e-mail address",
            Self::Name => "your name",
            Self::Phone => "your phone number",
            Self::MachineId => "the machine's identifier",
            Self::HostName => "the machine's host name",
            Self::Mac => "a network card's MAC address",
            Self::LoginName => "your login name",
        }
    }

    /// Short label for tables and JSON (`email`, `machine_id`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Name => "name",
            Self::Phone => "phone",
            Self::MachineId => "machine_id",
            Self::HostName => "host_name",
            Self::Mac => "mac",
            Self::LoginName => "login_name",
        }
    }
}

/// How an identifier was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    Plain,
    UrlEncoded,
    JsonEscaped,
    Base64,
    Md5,
    Sha1,
    Sha256,
    /// SHA-256 of the normalised value, base64 of the raw digest (Unified ID 2.0).
    Sha256Base64,
}

impl Form {
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Plain => "as written",
            Self::UrlEncoded => "URL-encoded",
            Self::JsonEscaped => "JSON-escaped",
            Self::Base64 => "base64",
            Self::Md5 => "MD5",
            Self::Sha1 => "SHA-1",
            Self::Sha256 => "SHA-256",
            Self::Sha256Base64 => "SHA-256, base64 (UID2)",
        }
    }

    /// Whether letters must match exactly (base64); the rest match in either case.
    fn case_sensitive(self) -> bool {
        matches!(self, Self::Base64 | Self::Sha256Base64)
    }
}

/// One identifier: what it is and its value (kept in memory only).
#[derive(Clone, PartialEq, Eq)]
pub struct Identifier {
    pub kind: IdKind,
    pub value: String,
}

impl std::fmt::Debug for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identifier({:?}, {} bytes)", self.kind, self.value.len())
    }
}

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "{0:?} is not an e-mail address (it needs a local part, an @ and a domain with a dot)"
    )]
    NotEmail(String),
    #[error("a name needs at least 3 letters (a shorter one would match inside other words)")]
    ShortName,
    #[error("a phone number needs at least 7 digits")]
    ShortPhone,
}

impl Identifier {
    /// A checked, normalised e-mail address (trimmed, lowercase).
    pub fn email(value: &str) -> Result<Self, IdentityError> {
        let v = value.trim().to_ascii_lowercase();
        let ok = v.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !v.contains(char::is_whitespace)
        });
        if !ok {
            return Err(IdentityError::NotEmail(value.to_owned()));
        }
        Ok(Self {
            kind: IdKind::Email,
            value: v,
        })
    }

    /// A name, whitespace collapsed.
    pub fn name(value: &str) -> Result<Self, IdentityError> {
        let v = value.split_whitespace().collect::<Vec<_>>().join(" ");
        if v.chars().filter(|c| c.is_alphabetic()).count() < 3 {
            return Err(IdentityError::ShortName);
        }
        Ok(Self {
            kind: IdKind::Name,
            value: v,
        })
    }

    /// A phone number: its digits (a leading + kept out).
    pub fn phone(value: &str) -> Result<Self, IdentityError> {
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        if digits.len() < 7 {
            return Err(IdentityError::ShortPhone);
        }
        Ok(Self {
            kind: IdKind::Phone,
            value: digits,
        })
    }

    /// The values whose hashes are searched: the normalised value, and Google's form of a
    /// Gmail address (dots before the @ removed); names also each word alone (Meta hashes
    /// first and last names apart).
    fn hash_inputs(&self) -> Vec<String> {
        let lower = self.value.trim().to_lowercase();
        let mut out = vec![lower.clone()];
        match self.kind {
            IdKind::Email => {
                if let Some((local, domain)) = lower.split_once('@') {
                    if matches!(domain, "gmail.com" | "googlemail.com") && local.contains('.') {
                        out.push(format!("{}@{domain}", local.replace('.', "")));
                    }
                }
            }
            IdKind::Name => out.extend(
                lower
                    .split(' ')
                    .filter(|w| w.chars().count() >= 3)
                    .map(str::to_owned),
            ),
            IdKind::Phone => out.push(format!("+{lower}")),
            IdKind::Mac => out.push(lower.replace(':', "")),
            _ => {}
        }
        out.dedup();
        out
    }

    /// The plain spellings searched: the value itself, and for names the words joined by
    /// `+`, `%20`, `_` as URLs and forms write them.
    fn spellings(&self) -> Vec<String> {
        let mut out = vec![self.value.clone()];
        match self.kind {
            IdKind::Mac => {
                out.push(self.value.replace(':', "-"));
                out.push(self.value.replace(':', ""));
            }
            IdKind::Phone => out.push(format!("+{}", self.value)),
            _ => {}
        }
        out
    }
}

/// What a pattern stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    identifier: usize,
    form: Form,
}

/// A match: which identifier (index into the set) in which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Match {
    pub identifier: usize,
    pub kind: IdKind,
    pub form: Form,
}

/// The identifiers of one user (and the machine's), precompiled into one automaton.
#[derive(Debug)]
pub struct IdentitySet {
    identifiers: Vec<Identifier>,
    candidates: Vec<Candidate>,
    patterns: Vec<Vec<u8>>,
    automaton: Option<AhoCorasick>,
}

fn percent_encode(s: &str, space: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push_str(space),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn json_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '@' => out.push_str("\\u0040"),
            '/' => out.push_str("\\/"),
            '+' => out.push_str("\\u002b"),
            c => out.push(c),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every form of one identifier, each with its bytes.
fn forms_of(id: &Identifier) -> Vec<(Form, Vec<u8>)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut out: Vec<(Form, Vec<u8>)> = Vec::new();
    for s in id.spellings() {
        out.push((Form::Plain, s.clone().into_bytes()));
        for space in ["%20", "+"] {
            let u = percent_encode(&s, space);
            if u != s {
                out.push((Form::UrlEncoded, u.into_bytes()));
            }
        }
        let j = json_escape(&s);
        if j != s {
            out.push((Form::JsonEscaped, j.into_bytes()));
        }
        // Base64 of values short enough to be guessed by chance is not searched.
        if s.len() >= 6 {
            out.push((
                Form::Base64,
                b64.encode(&s).trim_end_matches('=').as_bytes().to_vec(),
            ));
            out.push((Form::Base64, b64url.encode(&s).into_bytes()));
        }
    }
    for v in id.hash_inputs() {
        out.push((Form::Md5, hex(&md5::Md5::digest(v.as_bytes())).into_bytes()));
        out.push((
            Form::Sha1,
            hex(&sha1::Sha1::digest(v.as_bytes())).into_bytes(),
        ));
        let sha = sha2::Sha256::digest(v.as_bytes());
        out.push((Form::Sha256, hex(&sha).into_bytes()));
        out.push((Form::Sha256Base64, b64.encode(sha).into_bytes()));
        out.push((Form::Sha256Base64, b64url.encode(sha).into_bytes()));
    }
    out.sort();
    out.dedup();
    out
}

/// Whether a byte may continue a token of this kind (a match next to one is part of a
/// longer token: another address, a longer word, a longer hash).
fn continues(form: Form, kind: IdKind, b: u8) -> bool {
    match form {
        Form::Md5 | Form::Sha1 | Form::Sha256 => b.is_ascii_hexdigit(),
        Form::Base64 | Form::Sha256Base64 => {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
        }
        _ => match kind {
            IdKind::Email => {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
            }
            IdKind::Phone => b.is_ascii_digit(),
            _ => b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80,
        },
    }
}

impl IdentitySet {
    pub fn new(identifiers: Vec<Identifier>) -> Self {
        let mut candidates = Vec::new();
        let mut patterns = Vec::new();
        for (i, id) in identifiers.iter().enumerate() {
            for (form, bytes) in forms_of(id) {
                candidates.push(Candidate {
                    identifier: i,
                    form,
                });
                patterns.push(bytes);
            }
        }
        let automaton = (!patterns.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&patterns)
                .expect("identifier patterns build")
        });
        Self {
            identifiers,
            candidates,
            patterns,
            automaton,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.identifiers.is_empty()
    }

    pub fn identifiers(&self) -> &[Identifier] {
        &self.identifiers
    }

    /// Every identifier found in `text`, each (identifier, form) once. A match must stand
    /// alone (no letter, digit or address character right before or after it) and
    /// base64 forms must match letter case exactly.
    pub fn find(&self, text: &[u8]) -> Vec<Match> {
        let Some(ac) = &self.automaton else {
            return Vec::new();
        };
        let mut out: Vec<Match> = Vec::new();
        for m in ac.find_overlapping_iter(text) {
            let c = self.candidates[m.pattern().as_usize()];
            let kind = self.identifiers[c.identifier].kind;
            let found = &text[m.start()..m.end()];
            if c.form.case_sensitive() && found != self.patterns[m.pattern().as_usize()].as_slice()
            {
                continue;
            }
            let before = m.start().checked_sub(1).map(|i| text[i]);
            let after = text.get(m.end()).copied();
            if before.is_some_and(|b| continues(c.form, kind, b)) {
                continue;
            }
            // A trailing dot ends a sentence; a dot followed by more of a name continues it.
            let after_dot = after == Some(b'.')
                && text
                    .get(m.end() + 1)
                    .is_some_and(|b| b.is_ascii_alphanumeric());
            if after.is_some_and(|b| b != b'.' && continues(c.form, kind, b)) || after_dot {
                continue;
            }
            let hit = Match {
                identifier: c.identifier,
                kind,
                form: c.form,
            };
            if !out.contains(&hit) {
                out.push(hit);
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> IdentitySet {
        IdentitySet::new(vec![
            Identifier::email(" Alice.Example@Gmail.com ").unwrap(),
            Identifier::name("Alice  Liddell").unwrap(),
        ])
    }

    fn forms(text: &str) -> Vec<(IdKind, Form)> {
        set()
            .find(text.as_bytes())
            .into_iter()
            .map(|m| (m.kind, m.form))
            .collect()
    }

    fn sha256_hex(s: &str) -> String {
        hex(&sha2::Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn identity_plain_escaped_and_encoded_forms_are_found() {
        assert_eq!(
            forms(r#"{"email":"alice.example@gmail.com"}"#),
            [(IdKind::Email, Form::Plain)]
        );
        assert_eq!(
            forms("e=ALICE.EXAMPLE%40GMAIL.COM&x=1"),
            [(IdKind::Email, Form::UrlEncoded)]
        );
        assert_eq!(
            forms(r#"{"e":"alice.example\u0040gmail.com"}"#),
            [(IdKind::Email, Form::JsonEscaped)]
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice.example@gmail.com");
        assert_eq!(forms(&format!("u={b64}")), [(IdKind::Email, Form::Base64)]);
        assert_eq!(
            forms("name=Alice+Liddell"),
            [(IdKind::Name, Form::UrlEncoded)]
        );
        assert_eq!(
            forms("Hello, alice liddell."),
            [(IdKind::Name, Form::Plain)]
        );
    }

    #[test]
    fn identity_hashes_of_the_normalised_value_are_found_in_both_cases() {
        let h = sha256_hex("alice.example@gmail.com");
        assert_eq!(forms(&format!("em={h}")), [(IdKind::Email, Form::Sha256)]);
        assert_eq!(
            forms(&format!("em={}", h.to_uppercase())),
            [(IdKind::Email, Form::Sha256)]
        );
        // Google's normalisation: the dots of a Gmail address removed.
        let g = sha256_hex("aliceexample@gmail.com");
        assert_eq!(forms(&format!("em={g}")), [(IdKind::Email, Form::Sha256)]);
        let md5 = hex(&md5::Md5::digest(b"alice.example@gmail.com"));
        assert_eq!(forms(&md5), [(IdKind::Email, Form::Md5)]);
        let sha1 = hex(&sha1::Sha1::digest(b"alice.example@gmail.com"));
        assert_eq!(forms(&sha1), [(IdKind::Email, Form::Sha1)]);
        let uid2 = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(b"alice.example@gmail.com"));
        assert_eq!(
            forms(&format!("\"{uid2}\"")),
            [(IdKind::Email, Form::Sha256Base64)]
        );
        // Meta hashes first and last names apart.
        assert_eq!(
            forms(&format!("fn={}", sha256_hex("alice"))),
            [(IdKind::Name, Form::Sha256)]
        );
    }

    #[test]
    fn identity_other_addresses_partial_matches_and_longer_words_are_not_the_user() {
        assert!(
            forms("xalice.example@gmail.com").is_empty(),
            "another address"
        );
        assert!(
            forms("alice.example@gmail.com.evil.test").is_empty(),
            "another domain"
        );
        assert!(
            forms("alice.example@gmail.co").is_empty(),
            "a partial address"
        );
        assert!(
            forms("Alice Liddellson").is_empty(),
            "a name inside a longer word"
        );
        assert!(
            forms("MyAlice Liddell").is_empty(),
            "a name inside a longer word"
        );
        let h = sha256_hex("alice.example@gmail.com");
        assert!(forms(&format!("{h}00")).is_empty(), "a longer hex string");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice.example@gmail.com");
        assert!(
            forms(&b64.to_lowercase()).is_empty(),
            "base64 is case-sensitive"
        );
    }

    #[test]
    fn identity_inputs_are_checked() {
        assert!(Identifier::email("not-an-address").is_err());
        assert!(Identifier::email("a@b").is_err());
        assert!(Identifier::name("Al").is_err());
        assert!(Identifier::phone("12-34").is_err());
        assert_eq!(
            Identifier::phone("+44 20 7946 0000").unwrap().value,
            "442079460000"
        );
        assert!(!format!("{:?}", Identifier::email("a@b.test").unwrap()).contains("a@b"));
    }
}
