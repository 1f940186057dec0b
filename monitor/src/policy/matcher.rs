//! Destination matching: whole-label domain suffixes (one hash look-up per label), address
//! ranges, and regular expressions (Exodus signatures).

use std::net::IpAddr;

use ipnet::IpNet;
use regex::RegexSet;
use rustc_hash::FxHashMap;

/// Canonical form of a domain: lower case, no trailing dot, internationalised labels in
/// punycode (`xn--`). Rejects what cannot be a DNS name.
pub fn normalize_domain(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    let name = name.strip_prefix("*.").unwrap_or(name);
    if name.is_empty() {
        return Err("empty name");
    }
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name).map_err(|_| "not a valid internationalised name")?
    };
    if ascii.len() > 253 {
        return Err("longer than 253 bytes");
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' may appear in a label");
        }
    }
    Ok(ascii)
}

/// Maps domains, ranges and patterns to an entry number.
#[derive(Debug, Default)]
pub struct Matcher {
    /// FxHash: keys come from local policy files only; names from the network are only
    /// looked up, never inserted.
    domains: FxHashMap<Box<str>, u32>,
    cidrs: Vec<(IpNet, u32)>,
    regex_set: Option<RegexSet>,
    regex_entries: Vec<u32>,
    regex_sources: Vec<String>,
}

/// What matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hit {
    /// The name (or one of its parent domains) `suffix`.
    Domain {
        name: String,
        suffix: String,
    },
    Cidr(IpNet),
    Pattern(String),
}

impl Matcher {
    /// Adds a domain; a later entry for the same domain replaces the earlier one.
    pub fn add_domain(&mut self, domain: &str, entry: u32) -> Result<(), &'static str> {
        let d = normalize_domain(domain)?;
        self.domains.insert(d.into_boxed_str(), entry);
        Ok(())
    }

    /// Room for `n` more domains.
    pub fn reserve(&mut self, n: usize) {
        self.domains.reserve(n);
    }

    /// Adds an already normalised domain (import fast path).
    pub fn add_normalized(&mut self, domain: String, entry: u32) {
        self.domains.insert(domain.into_boxed_str(), entry);
    }

    pub fn add_cidr(&mut self, cidr: &str, entry: u32) -> Result<(), String> {
        let net: IpNet = match cidr.parse() {
            Ok(n) => n,
            Err(_) => IpNet::from(cidr.parse::<IpAddr>().map_err(|e| format!("{cidr}: {e}"))?),
        };
        self.cidrs.push((net.trunc(), entry));
        Ok(())
    }

    /// Adds regular expressions (matched against whole normalised names).
    pub fn set_patterns(&mut self, patterns: Vec<(String, u32)>) -> Result<(), regex::Error> {
        if patterns.is_empty() {
            return Ok(());
        }
        let set = RegexSet::new(patterns.iter().map(|(p, _)| p.as_str()))?;
        self.regex_set = Some(set);
        self.regex_entries = patterns.iter().map(|(_, e)| *e).collect();
        self.regex_sources = patterns.into_iter().map(|(p, _)| p).collect();
        Ok(())
    }

    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    pub fn cidr_count(&self) -> usize {
        self.cidrs.len()
    }

    pub fn pattern_count(&self) -> usize {
        self.regex_entries.len()
    }

    /// Every domain and its entry.
    pub fn domains(&self) -> impl Iterator<Item = (&str, u32)> {
        self.domains.iter().map(|(d, e)| (&**d, *e))
    }

    /// Every range and its entry.
    pub fn cidrs(&self) -> impl Iterator<Item = (IpNet, u32)> + '_ {
        self.cidrs.iter().copied()
    }

    /// The entry of every pattern.
    pub fn pattern_entries(&self) -> impl Iterator<Item = u32> + '_ {
        self.regex_entries.iter().copied()
    }

    /// The most specific domain entry for `name`: the name itself, then each parent domain
    /// (whole labels only, so `evilfacebook.com` never matches `facebook.com`).
    pub fn lookup_name(&self, name: &str) -> Option<(u32, Hit)> {
        let owned;
        let name = if name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'
        }) && !name.ends_with('.')
        {
            name
        } else {
            owned = normalize_domain(name).ok()?;
            owned.as_str()
        };
        let mut rest = name;
        loop {
            if let Some(&entry) = self.domains.get(rest) {
                return Some((
                    entry,
                    Hit::Domain {
                        name: name.to_owned(),
                        suffix: rest.to_owned(),
                    },
                ));
            }
            match rest.find('.') {
                Some(dot) => rest = &rest[dot + 1..],
                None => break,
            }
        }
        if let Some(set) = &self.regex_set {
            if let Some(i) = set.matches(name).iter().next() {
                return Some((
                    self.regex_entries[i],
                    Hit::Pattern(self.regex_sources[i].clone()),
                ));
            }
        }
        None
    }

    /// The narrowest range containing `ip`.
    pub fn lookup_ip(&self, ip: IpAddr) -> Option<(u32, Hit)> {
        self.cidrs
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(net, e)| (*e, Hit::Cidr(*net)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Matcher {
        let mut m = Matcher::default();
        m.add_domain("facebook.com", 1).unwrap();
        m.add_domain("graph.facebook.com", 2).unwrap();
        m.add_domain("bücher.example", 3).unwrap();
        m.add_cidr("192.0.2.0/24", 4).unwrap();
        m.add_cidr("192.0.2.128/25", 5).unwrap();
        m.add_cidr("2001:db8::1", 6).unwrap();
        m
    }

    #[test]
    fn whole_label_suffixes_only() {
        let m = m();
        assert_eq!(m.lookup_name("facebook.com").unwrap().0, 1);
        assert_eq!(m.lookup_name("www.facebook.com").unwrap().0, 1);
        assert_eq!(m.lookup_name("evilfacebook.com"), None);
        assert_eq!(m.lookup_name("facebook.com.evil.net"), None);
        assert_eq!(m.lookup_name("com"), None);
    }

    #[test]
    fn most_specific_entry_wins() {
        let m = m();
        let (e, hit) = m.lookup_name("a.graph.facebook.com").unwrap();
        assert_eq!(e, 2);
        assert_eq!(
            hit,
            Hit::Domain {
                name: "a.graph.facebook.com".into(),
                suffix: "graph.facebook.com".into()
            }
        );
    }

    #[test]
    fn case_trailing_dot_and_idn() {
        let m = m();
        assert_eq!(m.lookup_name("GRAPH.Facebook.COM.").unwrap().0, 2);
        assert_eq!(m.lookup_name("shop.xn--bcher-kva.example").unwrap().0, 3);
        assert_eq!(m.lookup_name("shop.BÜCHER.example").unwrap().0, 3);
    }

    #[test]
    fn ranges_narrowest_first() {
        let m = m();
        assert_eq!(m.lookup_ip("192.0.2.1".parse().unwrap()).unwrap().0, 4);
        assert_eq!(m.lookup_ip("192.0.2.200".parse().unwrap()).unwrap().0, 5);
        assert_eq!(m.lookup_ip("2001:db8::1".parse().unwrap()).unwrap().0, 6);
        assert_eq!(m.lookup_ip("198.51.100.1".parse().unwrap()), None);
    }

    #[test]
    fn patterns_after_domains() {
        let mut m = m();
        m.set_patterns(vec![(r"(^|\.)branch\.io$".into(), 9)])
            .unwrap();
        assert_eq!(m.lookup_name("api2.branch.io").unwrap().0, 9);
        assert_eq!(m.lookup_name("notbranch.io"), None);
    }

    #[test]
    fn normalization_rejects_junk() {
        assert!(normalize_domain("bad domain").is_err());
        assert!(normalize_domain("a..b").is_err());
        assert!(normalize_domain("").is_err());
        assert_eq!(normalize_domain("*.Example.COM.").unwrap(), "example.com");
    }
}
