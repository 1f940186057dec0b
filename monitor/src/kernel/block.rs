//! The kernel's block tables, as userspace fills them: which destinations (by name hash and
//! address range) each watch tag may not reach. Filled by difference, so that a reload
//! never leaves a moment with nothing blocked, and emptied (with the `MODE_BLOCK` bit off)
//! when no rule blocks.

use std::{
    collections::{HashMap as StdMap, HashSet},
    net::IpAddr,
};

use aya::maps::{lpm_trie::Key, HashMap, LpmTrie, MapData, MapError};
use ipnet::IpNet;
use monitor_common::{
    BlockPair, LearnedKey, BLOCK_UID_SYSTEM, MAX_BLOCK_CIDRS, MAX_BLOCK_DOMAINS, MAX_BLOCK_PAIRS,
    SYSTEM_UID_MAX,
};

/// What the kernel is to deny.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockTables {
    /// `monitor_common::domain_hash` of a blocked domain -> its destination's id hash.
    pub domains: StdMap<u64, u64>,
    /// Blocked address ranges -> destination id hash.
    pub cidrs: Vec<(IpNet, u64)>,
    /// (destination id hash, watch tag, uid or `BLOCK_EVERY_USER`) to deny.
    pub pairs: HashSet<(u64, u32, u32)>,
}

impl BlockTables {
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Why this kernel cannot block (see [`super::sensor`]'s reasons).
    #[error("{0}: brokerwatch watches and reports on this kernel, but denies nothing")]
    Unavailable(String),
    #[error("the policy blocks {need} {what}, more than the kernel table holds ({max}); narrow the block rules (by company or destination instead of a whole category)")]
    TooMany {
        what: &'static str,
        need: usize,
        max: u32,
    },
    #[error("kernel map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// Why blocking cannot work, from the DNS reader's refusal: before 5.17 the kernel has no
/// `bpf_loop` (distributions that backport it load the reader and never get here), and the
/// verifier's statistics say nothing a user can act on.
pub fn why_not(kernel: &super::preflight::KernelInfo, refused: &str) -> String {
    if kernel.version < (5, 17, 0) {
        format!(
            "blocking needs Linux 5.17 or newer (the kernel's bpf_loop, for the DNS reader); this is {}",
            kernel.release
        )
    } else {
        format!("the kernel refused brokerwatch's DNS reader, which blocking needs ({refused})")
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> BlockError {
    move |source| BlockError::Map { name, source }
}

/// `::ffff:a.b.c.d` for IPv4, as the range table keys addresses; the prefix grows by 96.
pub fn lpm_key(net: &IpNet) -> Key<[u8; 16]> {
    match net {
        IpNet::V4(n) => Key::new(
            96 + n.prefix_len() as u32,
            n.network().to_ipv6_mapped().octets(),
        ),
        IpNet::V6(n) => Key::new(n.prefix_len() as u32, n.network().octets()),
    }
}

/// An address as `SockData::addr` and `LearnedKey::addr` hold it.
pub fn wire_addr(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

/// Whether `t` fits the kernel's tables (else which table overflows, by how much).
pub fn check_sizes(t: &BlockTables) -> Result<(), BlockError> {
    for (what, need, max) in [
        ("domains", t.domains.len(), MAX_BLOCK_DOMAINS),
        ("(app, destination) pairs", t.pairs.len(), MAX_BLOCK_PAIRS),
        ("address ranges", t.cidrs.len(), MAX_BLOCK_CIDRS),
    ] {
        if need > max as usize {
            return Err(BlockError::TooMany { what, need, max });
        }
    }
    Ok(())
}

/// Makes the hash map `map` hold exactly `want`: new and changed keys first, then the
/// removal of those no longer wanted.
pub(super) fn sync_hash<K, V>(
    map: &mut HashMap<&mut MapData, K, V>,
    name: &'static str,
    want: &StdMap<K, V>,
) -> Result<(), BlockError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod + PartialEq,
{
    for (k, v) in want {
        map.insert(k, v, 0).map_err(map_err(name))?;
    }
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in stale {
        // Gone already (a racing delete) is what we wanted.
        let _ = map.remove(&k);
    }
    Ok(())
}

pub(super) fn sync_pairs(
    map: &mut HashMap<&mut MapData, BlockPair, u32>,
    pairs: &HashSet<(u64, u32, u32)>,
) -> Result<(), BlockError> {
    let want: StdMap<BlockPair, u32> = pairs
        .iter()
        .map(|&(dest, tag, uid)| (BlockPair { dest, tag, uid }, 1))
        .collect();
    sync_hash(map, "BLOCK_PAIRS", &want)
}

pub(super) fn sync_cidrs(
    map: &mut LpmTrie<&mut MapData, [u8; 16], u64>,
    cidrs: &[(IpNet, u64)],
) -> Result<(), BlockError> {
    let want: StdMap<(u32, [u8; 16]), u64> = cidrs
        .iter()
        .map(|(net, dest)| {
            let k = lpm_key(&net.trunc());
            ((k.prefix_len(), k.data()), *dest)
        })
        .collect();
    for (&(prefix, data), dest) in &want {
        map.insert(&Key::new(prefix, data), dest, 0)
            .map_err(map_err("BLOCK_CIDRS"))?;
    }
    let stale: Vec<Key<[u8; 16]>> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains_key(&(k.prefix_len(), k.data())))
        .collect();
    for k in stale {
        let _ = map.remove(&k);
    }
    Ok(())
}

/// Remembers that `addr` is `dest`'s for sockets of `uid` in `netns` (a destination that
/// only a first payload named: its later connections are denied before they start).
pub(super) fn learn(
    map: &mut HashMap<&mut MapData, LearnedKey, u64>,
    netns: u64,
    uid: u32,
    addr: IpAddr,
    dest: u64,
) -> Result<(), BlockError> {
    // As the kernel files answers: system users' under one key.
    let uid = if uid <= SYSTEM_UID_MAX {
        BLOCK_UID_SYSTEM
    } else {
        uid
    };
    let key = LearnedKey {
        netns,
        addr: wire_addr(addr),
        uid,
        _pad: 0,
    };
    map.insert(key, dest, 0).map_err(map_err("BLOCK_LEARNED"))
}
