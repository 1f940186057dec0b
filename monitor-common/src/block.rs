//! Blocking's wire types and the name hashing kernel and userspace share: a name is hashed
//! label by label from the right, so that each of its parent domains is one look-up.

use core::mem::size_of;

/// Entries of `BLOCK_DOMAINS`: blocked domains (suffix hash -> destination id hash).
pub const MAX_BLOCK_DOMAINS: u32 = 131_072;
/// Entries of `BLOCK_PAIRS`: (destination, watch tag) pairs to deny.
pub const MAX_BLOCK_PAIRS: u32 = 65_536;
/// Entries of `BLOCK_CIDRS`: blocked address ranges.
pub const MAX_BLOCK_CIDRS: u32 = 16_384;
/// Entries of `BLOCK_LEARNED`: addresses DNS answers gave for blocked names (LRU).
pub const MAX_BLOCK_LEARNED: u32 = 16_384;
/// Labels of a name checked against the blocked domains, counted from the right: a blocked
/// domain has at most this many labels.
pub const BLOCK_NAME_LABELS: usize = 16;
/// Uids up to this one are system users (resolvers, caches); their answers count for every
/// user, as in userspace's DNS cache.
pub const SYSTEM_UID_MAX: u32 = 999;
/// `LearnedKey::uid` of an answer a system user received.
pub const BLOCK_UID_SYSTEM: u32 = u32::MAX;

/// Key of `BLOCK_PAIRS`: a destination (hash of its policy id) denied to a watch tag, for
/// one user or every user.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlockPair {
    pub dest: u64,
    pub tag: u32,
    /// The user whose processes are denied, or [`BLOCK_EVERY_USER`].
    pub uid: u32,
}

/// `BlockPair::uid` of a block for every user.
pub const BLOCK_EVERY_USER: u32 = u32::MAX;

/// Key of `BLOCK_LEARNED`: an address a DNS answer gave for a blocked name, to whom and in
/// which network namespace (a user can only make addresses blocked for their own apps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearnedKey {
    /// Network namespace cookie of the receiving socket (0: unknown).
    pub netns: u64,
    /// Address as in [`crate::SockData::addr`] (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    /// The receiving socket's owner, or [`BLOCK_UID_SYSTEM`].
    pub uid: u32,
    pub _pad: u32,
}

/// FNV-1a offset basis: the hash of an empty label, and the start of every suffix hash.
pub const NAME_HASH_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const NAME_HASH_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One byte of a label into its hash (ASCII case folded), FNV-1a.
#[inline(always)]
pub const fn label_hash_step(hash: u64, byte: u8) -> u64 {
    let b = if byte >= b'A' && byte <= b'Z' {
        byte + 32
    } else {
        byte
    };
    (hash ^ b as u64).wrapping_mul(NAME_HASH_PRIME)
}

/// The hash of a domain one label longer: `suffix` is the hash of the labels to the right
/// (or [`NAME_HASH_BASIS`]), `label` the new leftmost label's hash. Kernel and userspace
/// both hash names this way, so that a name's every parent domain is one look-up.
#[inline(always)]
pub const fn suffix_hash_step(suffix: u64, label: u64) -> u64 {
    (suffix.rotate_left(23) ^ label).wrapping_mul(NAME_HASH_PRIME) ^ (label >> 29)
}

/// The hash of a dotted domain as [`suffix_hash_step`] builds it from the right, and its
/// label count.
pub fn domain_hash(name: &str) -> (u64, usize) {
    let mut suffix = NAME_HASH_BASIS;
    let mut labels = 0;
    for label in name.trim_end_matches('.').rsplit('.') {
        let mut h = NAME_HASH_BASIS;
        for &b in label.as_bytes() {
            h = label_hash_step(h, b);
        }
        suffix = suffix_hash_step(suffix, h);
        labels += 1;
    }
    (suffix, labels)
}

/// A destination's policy id as the kernel knows it (64-bit FNV-1a of the id): stable
/// across policy reloads, so that learned addresses outlive them.
pub fn dest_hash(id: &str) -> u64 {
    let mut h = NAME_HASH_BASIS;
    for &b in id.as_bytes() {
        h = (h ^ b as u64).wrapping_mul(NAME_HASH_PRIME);
    }
    // 0 means "not blocked" on the wire.
    if h == 0 {
        1
    } else {
        h
    }
}

const _: () = assert!(size_of::<BlockPair>() == 16);
const _: () = assert!(size_of::<LearnedKey>() == 32);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: `#[repr(C)]`, `Copy`, integers and byte arrays only, no padding (sizes
    // asserted above).
    unsafe impl aya::Pod for BlockPair {}
    // SAFETY: as above.
    unsafe impl aya::Pod for LearnedKey {}
}
