//! The DNS cache: which name an address was given for, and to whom. Answers are captured
//! for every socket on the machine, so a name must not be borrowed from someone else: an
//! answer names a connection only when it was received
//!
//! 1. by the connecting process itself, or
//! 2. in the connecting process's cgroup, by a socket of the same user or a system user, or
//! 3. by a system user's socket (the namespace's stub resolver: systemd-resolved, dnsmasq),
//!    or, for public addresses only, by another process of the same user;
//!
//! and always in the same network namespace (an answer whose namespace is unknown, on a
//! socket that predates brokerwatch, passes the namespace check but not the user check).
//! Other users and other network namespaces can neither plant a name nor hide one.

use std::{net::IpAddr, sync::Arc};

use super::{dns, DnsName};
use crate::{bounded::BoundedLru, defaults::SYSTEM_UID_MAX};

/// DNS answers never live shorter than this in the cache (apps cache names longer than
/// tiny TTLs, and connect after the answer expired).
pub const TTL_FLOOR_NS: u64 = 120 * 1_000_000_000;
/// Answers kept per address (from different receivers, newest first).
const PER_ADDRESS: usize = 8;

/// Who received a DNS answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receiver {
    /// The process, when the socket belongs to a watched process brokerwatch saw.
    pub pid: Option<u32>,
    /// The socket's cgroup.
    pub cgroup: u64,
    /// The socket's owner.
    pub uid: u32,
    /// The socket's network namespace cookie (0: unknown).
    pub netns: u64,
}

/// Who connects (and wants a name for the address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asker {
    pub pid: u32,
    pub cgroup: u64,
    pub uid: u32,
    pub netns: u64,
}

#[derive(Debug, Clone)]
struct Cached {
    name: Arc<DnsName>,
    expires_ns: u64,
    from: Receiver,
}

/// Address -> the names recent answers gave for it, with their receivers; names whose
/// HTTPS records offer ECH. Both bounded (LRU).
pub struct DnsCache {
    by_addr: BoundedLru<IpAddr, Vec<Cached>>,
    ech: BoundedLru<(u64, String), u64>,
    pub answers: u64,
}

impl Default for DnsCache {
    fn default() -> Self {
        Self::with_capacity(65_536)
    }
}

/// Whether an answer `answered` received may name what `asker` (a receiver of its own)
/// connects to: the rules of [`DnsCache::lookup`] without the namespace (a call's is not
/// known).
fn usable_by(answered: Receiver, asker: Receiver, addr: IpAddr) -> bool {
    let same_user = answered.uid == asker.uid || system_uid(answered.uid);
    (asker.pid.is_some() && answered.pid == asker.pid)
        || (same_user && asker.cgroup != 0 && answered.cgroup == asker.cgroup)
        || system_uid(answered.uid)
        || (answered.uid == asker.uid && !is_private(addr))
}

fn system_uid(uid: u32) -> bool {
    uid <= SYSTEM_UID_MAX
}

/// Loopback, private, link-local and unique-local addresses: names for them must come from
/// the asker's own resolution (anyone can run a DNS server that answers 127.0.0.1).
pub fn is_private(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || (a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64)
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

impl DnsCache {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            by_addr: BoundedLru::new(n),
            ech: BoundedLru::new(n / 4),
            answers: 0,
        }
    }

    fn expiry(now_ns: u64, ttl: u32) -> u64 {
        now_ns.saturating_add((ttl as u64 * 1_000_000_000).max(TTL_FLOOR_NS))
    }

    /// Records what one DNS message received by `from` said.
    pub fn insert(&mut self, from: Receiver, facts: &dns::Facts, now_ns: u64) {
        for r in &facts.resolutions {
            self.answers += 1;
            let name = DnsName {
                qname: r.qname.clone(),
                chain: r.chain.clone(),
                from_call: false,
            };
            self.put(r.addr, from, name, Self::expiry(now_ns, r.ttl), now_ns);
        }
        for (name, ttl) in &facts.ech {
            self.ech
                .put((from.netns, name.clone()), Self::expiry(now_ns, *ttl));
        }
    }

    /// Files `name` for `addr` as received by `from`, newest first. One entry per
    /// (receiver, name): many names share an address (every CDN), and the name a connection
    /// meant must still be there when its SNI says which.
    fn put(&mut self, addr: IpAddr, from: Receiver, name: DnsName, expires_ns: u64, now_ns: u64) {
        let list = self.by_addr.get_or_insert_mut(addr, Vec::new);
        list.retain(|c| !(c.from == from && c.name.qname == name.qname) && c.expires_ns >= now_ns);
        list.insert(
            0,
            Cached {
                name: Arc::new(name),
                expires_ns,
                from,
            },
        );
        list.truncate(PER_ADDRESS);
    }

    /// Records what a `getaddrinfo(name)` call of process `from` returned (its own
    /// resolution, whatever the resolver behind it did; kept like an answer of
    /// [`TTL_FLOOR_NS`]).
    /// A DNS answer that gave the name already says more (its CNAME chain): the call adds
    /// nothing then.
    pub fn insert_call(&mut self, from: Receiver, name: &str, addrs: &[IpAddr], now_ns: u64) {
        for addr in addrs {
            // Only an answer this process may use stands for its call: another user's
            // answer for the same name must not leave it unnamed.
            let answered = self.by_addr.peek(addr).is_some_and(|list| {
                list.iter().any(|c| {
                    !c.name.from_call
                        && c.expires_ns >= now_ns
                        && c.name.chain.iter().any(|n| n.eq_ignore_ascii_case(name))
                        && usable_by(c.from, from, *addr)
                })
            });
            if answered {
                continue;
            }
            self.answers += 1;
            let resolved = DnsName {
                qname: name.to_owned(),
                chain: vec![name.to_owned()],
                from_call: true,
            };
            self.put(*addr, from, resolved, Self::expiry(now_ns, 0), now_ns);
        }
    }

    /// The freshest name for `addr` that `asker` may use (see the module's rules).
    pub fn lookup(&mut self, asker: Asker, addr: IpAddr, now_ns: u64) -> Option<Arc<DnsName>> {
        self.lookup_where(asker, addr, now_ns, |_| true)
    }

    /// The freshest name for `addr` that `asker` may use and whose chain holds `name` (the
    /// name the connection itself carried): on a shared address, the answer that led to
    /// this connection rather than the latest one for the address.
    pub fn lookup_named(
        &mut self,
        asker: Asker,
        addr: IpAddr,
        now_ns: u64,
        name: &str,
    ) -> Option<Arc<DnsName>> {
        self.lookup_where(asker, addr, now_ns, |d| {
            d.qname.eq_ignore_ascii_case(name)
                || d.chain.iter().any(|c| c.eq_ignore_ascii_case(name))
        })
    }

    fn lookup_where(
        &mut self,
        asker: Asker,
        addr: IpAddr,
        now_ns: u64,
        want: impl Fn(&DnsName) -> bool,
    ) -> Option<Arc<DnsName>> {
        let list = self.by_addr.get(&addr)?;
        let fresh = || {
            list.iter()
                .filter(|c| c.expires_ns >= now_ns && want(&c.name))
        };
        let same_ns = |c: &&Cached| c.from.netns == asker.netns || c.from.netns == 0;
        let user_ok = |c: &&Cached| c.from.uid == asker.uid || system_uid(c.from.uid);
        let own = fresh()
            .filter(same_ns)
            .find(|c| c.from.pid == Some(asker.pid));
        let cgroup = || {
            fresh()
                .filter(same_ns)
                .filter(user_ok)
                .find(|c| c.from.cgroup == asker.cgroup && asker.cgroup != 0)
        };
        let resolver = || {
            fresh()
                .filter(same_ns)
                .find(|c| system_uid(c.from.uid) || (c.from.uid == asker.uid && !is_private(addr)))
        };
        own.or_else(cgroup)
            .or_else(resolver)
            .map(|c| c.name.clone())
    }

    /// Every answer still fresh at `now_ns`: address, names, receiver (for blocking to
    /// learn addresses of names it started to block after they were resolved).
    pub fn answers(&self, now_ns: u64) -> impl Iterator<Item = (IpAddr, &DnsName, Receiver)> {
        self.by_addr.iter().flat_map(move |(addr, list)| {
            list.iter()
                .filter(move |c| c.expires_ns >= now_ns)
                .map(move |c| (*addr, &*c.name, c.from))
        })
    }

    /// Whether an HTTPS/SVCB answer in `netns` offered ECH for `name`.
    pub fn ech_offered(&mut self, netns: u64, name: &str, now_ns: u64) -> bool {
        [netns, 0].iter().any(|ns| {
            self.ech
                .get(&(*ns, name.to_owned()))
                .is_some_and(|&exp| exp >= now_ns)
        })
    }
}

/// Addresses for tests of the rules.
#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, addr: &str) -> dns::Facts {
        dns::Facts {
            resolutions: vec![dns::Resolution {
                qname: name.into(),
                chain: vec![name.into()],
                addr: addr.parse().unwrap(),
                ttl: 300,
            }],
            ..dns::Facts::default()
        }
    }

    const NS: u64 = 4026531840;
    const OTHER_NS: u64 = 4026532999;

    fn asker() -> Asker {
        Asker {
            pid: 100,
            cgroup: 7,
            uid: 1000,
            netns: NS,
        }
    }

    #[test]
    fn dns_names_for_loopback_are_not_borrowed_from_other_namespaces_or_users() {
        let mut c = DnsCache::default();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        // Issue 10: root in another network namespace resolves a tracker to 127.0.0.1.
        c.insert(
            Receiver {
                pid: None,
                cgroup: 1,
                uid: 0,
                netns: OTHER_NS,
            },
            &facts("api.segment.io", "127.0.0.1"),
            0,
        );
        // Another user in the same namespace and cgroup does the same.
        c.insert(
            Receiver {
                pid: None,
                cgroup: 7,
                uid: 1001,
                netns: NS,
            },
            &facts("api.segment.io", "127.0.0.1"),
            0,
        );
        // The same user's other process, loopback: not the stub resolver either.
        c.insert(
            Receiver {
                pid: Some(555),
                cgroup: 9,
                uid: 1000,
                netns: NS,
            },
            &facts("api.segment.io", "127.0.0.1"),
            0,
        );
        assert_eq!(c.lookup(asker(), lo, 1), None);
        // The namespace's resolver (a system user) may name it.
        c.insert(
            Receiver {
                pid: None,
                cgroup: 3,
                uid: 102,
                netns: NS,
            },
            &facts("meet.vendor.test", "127.0.0.1"),
            0,
        );
        assert_eq!(c.lookup(asker(), lo, 1).unwrap().qname, "meet.vendor.test");
        // And the asker's own answer wins over it.
        c.insert(
            Receiver {
                pid: Some(100),
                cgroup: 7,
                uid: 1000,
                netns: NS,
            },
            &facts("own.vendor.test", "127.0.0.1"),
            0,
        );
        assert_eq!(c.lookup(asker(), lo, 1).unwrap().qname, "own.vendor.test");
    }

    #[test]
    fn dns_public_names_come_from_the_same_user_or_the_resolver_and_expire() {
        let mut c = DnsCache::default();
        let public: IpAddr = "203.0.113.9".parse().unwrap();
        c.insert(
            Receiver {
                pid: None,
                cgroup: 9,
                uid: 1001,
                netns: NS,
            },
            &facts("zoom.us", "203.0.113.9"),
            0,
        );
        assert_eq!(
            c.lookup(asker(), public, 1),
            None,
            "another user hides nothing"
        );
        c.insert(
            Receiver {
                pid: Some(555),
                cgroup: 9,
                uid: 1000,
                netns: NS,
            },
            &facts("graph.facebook.com", "203.0.113.9"),
            0,
        );
        assert_eq!(
            c.lookup(asker(), public, 1).unwrap().qname,
            "graph.facebook.com"
        );
        assert_eq!(c.lookup(asker(), public, 301 * 1_000_000_000), None);
    }

    // Issue 24, item 1: one answer per (address, receiver) kept only the last name, so a
    // connection whose SNI named the first was told the second.
    #[test]
    fn dns_a_shared_address_keeps_every_name_its_receiver_was_given() {
        let mut c = DnsCache::default();
        let me = Receiver {
            pid: Some(100),
            cgroup: 7,
            uid: 1000,
            netns: NS,
        };
        let shared: IpAddr = "203.0.113.7".parse().unwrap();
        c.insert(me, &facts("tls.meetingvendor.test", "203.0.113.7"), 0);
        c.insert(me, &facts("sales.linkedin.com", "203.0.113.7"), 1);
        // Without a name from the connection: the freshest.
        assert_eq!(
            c.lookup(asker(), shared, 2).unwrap().qname,
            "sales.linkedin.com"
        );
        // With the SNI: the answer that named it.
        let named = c.lookup_named(asker(), shared, 2, "TLS.meetingvendor.test");
        assert_eq!(named.unwrap().qname, "tls.meetingvendor.test");
        // A name nobody resolved here is not invented, and trust rules still hold.
        assert!(c.lookup_named(asker(), shared, 2, "other.test").is_none());
        let stranger = Asker {
            pid: 9,
            cgroup: 9,
            uid: 1001,
            netns: NS,
        };
        assert!(c
            .lookup_named(stranger, shared, 2, "tls.meetingvendor.test")
            .is_none());
        // The same name again replaces its own entry, not the other name's.
        c.insert(me, &facts("tls.meetingvendor.test", "203.0.113.7"), 3);
        assert_eq!(
            c.lookup(asker(), shared, 4).unwrap().qname,
            "tls.meetingvendor.test"
        );
        assert!(c
            .lookup_named(asker(), shared, 4, "sales.linkedin.com")
            .is_some());
    }

    #[test]
    fn dns_ech_offers_are_per_namespace() {
        let mut c = DnsCache::default();
        let f = dns::Facts {
            ech: vec![("meet.vendor.test".into(), 60)],
            ..dns::Facts::default()
        };
        c.insert(
            Receiver {
                pid: None,
                cgroup: 1,
                uid: 0,
                netns: NS,
            },
            &f,
            0,
        );
        assert!(c.ech_offered(NS, "meet.vendor.test", 1));
        assert!(!c.ech_offered(OTHER_NS, "meet.vendor.test", 1));
        assert!(!c.ech_offered(NS, "other.test", 1));
    }

    #[test]
    fn dns_private_ranges() {
        for a in [
            "127.0.0.3",
            "10.1.2.3",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "2001:db8::1", "100.128.0.1"] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }

    // Issue 24, item 4: a resolver running as an ordinary user (its answers are not shared)
    // received the DNS answer; the app's own getaddrinfo() result must still name it.
    #[test]
    fn dns_an_apps_call_is_kept_when_the_only_answer_is_one_it_may_not_use() {
        let mut c = DnsCache::default();
        let resolver = Receiver {
            pid: None,
            cgroup: 3,
            uid: 65534,
            netns: NS,
        };
        c.insert(resolver, &facts("broker.test", "127.0.0.2"), 0);
        let app = Receiver {
            pid: Some(100),
            cgroup: 7,
            uid: 1000,
            netns: 0,
        };
        let addr: IpAddr = "127.0.0.2".parse().unwrap();
        c.insert_call(app, "broker.test", &[addr], 1);
        let named = c.lookup(asker(), addr, 2).expect("named from the call");
        assert!(named.from_call, "{named:?}");
        // The app's own DNS answer, with its chain, stands for the call (never replaced).
        let mut c = DnsCache::default();
        let own = Receiver {
            pid: Some(100),
            ..resolver
        };
        c.insert(own, &facts("broker.test", "127.0.0.2"), 0);
        c.insert_call(app, "broker.test", &[addr], 1);
        assert!(!c.lookup(asker(), addr, 2).unwrap().from_call);
    }
}
