//! Encrypted DNS resolvers: a connection to one means the app's DNS lookups are encrypted,
//! so its names can only come from SNI.

use std::net::IpAddr;

/// Well-known DNS-over-HTTPS resolvers (addresses and names). A connection to one means the
/// app's DNS is encrypted, and its names can only come from SNI.
pub const DOH_RESOLVERS: &[&str] = &[
    "1.1.1.1",
    "1.0.0.1",
    "2606:4700:4700::1111",
    "2606:4700:4700::1001",
    "8.8.8.8",
    "8.8.4.4",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
    "9.9.9.9",
    "149.112.112.112",
    "2620:fe::fe",
    "94.140.14.14",
    "94.140.15.15",
    "208.67.222.222",
    "208.67.220.220",
    "45.90.28.0",
];

pub const DOH_NAMES: &[&str] = &[
    "cloudflare-dns.com",
    "mozilla.cloudflare-dns.com",
    "dns.google",
    "dns.quad9.net",
    "doh.opendns.com",
    "dns.adguard-dns.com",
    "dns.nextdns.io",
    "doh.cleanbrowsing.org",
];

/// Whether a connection is encrypted DNS (DoT on 853, or a known DoH resolver on 443). Only
/// a connection that sent bytes counts: a browser's probe that failed to connect does not.
pub fn encrypted_dns(addr: IpAddr, port: u16, name: Option<&str>) -> Option<&'static str> {
    if port == 853 {
        return Some("DNS-over-TLS (port 853): this app's DNS lookups are encrypted and invisible");
    }
    let doh_name = name.is_some_and(|n| {
        DOH_NAMES
            .iter()
            .any(|d| n == *d || n.ends_with(&format!(".{d}")))
    });
    let doh_addr = DOH_RESOLVERS
        .iter()
        .any(|a| a.parse::<IpAddr>().ok() == Some(addr));
    ((port == 443 || port == 8443) && (doh_name || doh_addr))
        .then_some("DNS-over-HTTPS resolver: this app's DNS lookups are encrypted and invisible")
}
