//! Blocking: the tables that say which watched app may not reach which destination, the
//! connect/send verdict, and `bw_dns_block`, which reads DNS answers for blocked names
//! before the socket that asked can (so the first connection after an answer is denied
//! too, and a first-party name that CNAMEs to a broker counts as the broker).
//!
//! The programs here only ever deny what userspace put in the tables; with the tables
//! empty, or the daemon gone (its links die with it), nothing is denied.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_get_socket_uid, bpf_loop, bpf_skb_load_bytes},
    macros::{cgroup_skb, map},
    maps::{lpm_trie::Key, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
    programs::SkBuffContext,
    EbpfContext,
};
use monitor_common::{
    label_hash_step, suffix_hash_step, BlockPair, Counter, LearnedKey, AF_INET, BLOCK_EVERY_USER,
    BLOCK_NAME_LABELS, BLOCK_UID_SYSTEM, DNS_PORT, IPPROTO_TCP, IPPROTO_UDP, MAX_BLOCK_CIDRS,
    MAX_BLOCK_DOMAINS, MAX_BLOCK_LEARNED, MAX_BLOCK_PAIRS, MODE_BLOCK, NAME_HASH_BASIS,
    PACKET_CAPTURE, SYSTEM_UID_MAX,
};

use crate::{
    skb::{parse_l4, skb_socket},
    state::{count, mode, sock_state},
};

/// Blocked domains: [`monitor_common::domain_hash`] of the domain -> destination id hash.
#[map]
pub static BLOCK_DOMAINS: HashMap<u64, u64> =
    HashMap::with_max_entries(MAX_BLOCK_DOMAINS, BPF_F_NO_PREALLOC);

/// (destination, watch tag) pairs to deny -> unused.
#[map]
pub static BLOCK_PAIRS: HashMap<BlockPair, u32> =
    HashMap::with_max_entries(MAX_BLOCK_PAIRS, BPF_F_NO_PREALLOC);

/// Blocked address ranges (IPv4 as `::ffff:a.b.c.d`) -> destination id hash.
#[map]
pub static BLOCK_CIDRS: LpmTrie<[u8; 16], u64> = LpmTrie::with_max_entries(MAX_BLOCK_CIDRS, 0);

/// Addresses DNS answers gave for blocked names -> destination id hash. Written here from
/// answers, and by userspace for destinations only the first payload named.
#[map]
pub static BLOCK_LEARNED: LruHashMap<LearnedKey, u64> =
    LruHashMap::with_max_entries(MAX_BLOCK_LEARNED, 0);

/// Entry 0: `bw_dns_block`, set by userspace once it loaded (it needs `bpf_loop`, Linux
/// 5.17; without it blocking is refused and monitoring goes on).
#[map]
static DNS_BLOCK_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Hands a DNS answer on to `bw_dns_block` while blocking is on (`bw_ingress`'s last step:
/// a tail call does not come back).
#[inline(always)]
pub fn read_answer_for_blocking(ctx: &SkBuffContext) {
    if mode() & MODE_BLOCK != 0 {
        // SAFETY: the context is the program's own; an empty slot makes the call fail.
        unsafe { DNS_BLOCK_PROG.tail_call(ctx, 0) };
    }
}

/// Room to read one DNS answer: the message, the label hashes of the name being read, and
/// the state of both walks. The walks keep their state here, not on the stack: a value read
/// from a map is unknown to the verifier, so every step of a walk verifies as one.
#[repr(C)]
pub struct DnsScratch {
    buf: [u8; PACKET_CAPTURE],
    labels: [u64; BLOCK_NAME_LABELS],
    name: NameScan,
    answer: AnswerScan,
}

#[map]
static DNS_SCRATCH: PerCpuArray<DnsScratch> = PerCpuArray::with_max_entries(1, 0);

const BUF_MASK: u32 = PACKET_CAPTURE as u32 - 1;
const LABEL_MASK: u32 = BLOCK_NAME_LABELS as u32 - 1;
/// Bytes and pointers one name may take to read (a name is at most 255 bytes).
const NAME_STEPS: u32 = 320;
/// Compression pointers followed per name.
const NAME_HOPS: u32 = 8;
/// Resource records of an answer read.
const MAX_RECORDS: u32 = 24;
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const PASS: i32 = 1;

/// The destination a watched process with `tag` may not reach at `addr` (as in
/// `SockData::addr`), or 0. Checks the addresses learned for this user and for system
/// resolvers, in this namespace or an unknown one, then the blocked ranges.
#[inline(always)]
pub fn verdict(tag: u32, netns: u64, uid: u32, family: u16, addr: &[u8; 16]) -> u64 {
    if mode() & MODE_BLOCK == 0 {
        return 0;
    }
    let mut plain = *addr;
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    let v4 = if family == AF_INET {
        true
    } else {
        // A v4-mapped IPv6 destination is its IPv4 address.
        let is_mapped = addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff;
        if is_mapped {
            plain = [0u8; 16];
            plain[..4].copy_from_slice(&addr[12..16]);
        }
        is_mapped
    };
    if v4 {
        mapped[12..16].copy_from_slice(&plain[..4]);
    } else {
        mapped = plain;
    }
    let uids = [
        if uid <= SYSTEM_UID_MAX {
            BLOCK_UID_SYSTEM
        } else {
            uid
        },
        BLOCK_UID_SYSTEM,
    ];
    for ns in [netns, 0] {
        for u in uids {
            let key = LearnedKey {
                netns: ns,
                addr: plain,
                uid: u,
                _pad: 0,
            };
            if let Some(dest) = BLOCK_LEARNED.get_ptr(key) {
                // SAFETY: an LRU value slot; a racing update gives another valid hash.
                let dest = unsafe { *dest };
                if denied(dest, tag, uid) {
                    return dest;
                }
            }
        }
    }
    if let Some(dest) = BLOCK_CIDRS.get(Key::new(128, mapped)) {
        let dest = *dest;
        if denied(dest, tag, uid) {
            return dest;
        }
    }
    0
}

/// Whether `dest` is denied to `tag`, for every user or for `uid`.
#[inline(always)]
fn denied(dest: u64, tag: u32, uid: u32) -> bool {
    if dest == 0 {
        return false;
    }
    for u in [BLOCK_EVERY_USER, uid] {
        let pair = BlockPair { dest, tag, uid: u };
        // SAFETY: only the key's presence is read.
        if unsafe { BLOCK_PAIRS.get(pair) }.is_some() {
            return true;
        }
    }
    false
}

/// The state of one name being read.
#[repr(C)]
struct NameScan {
    /// Bytes of the message in the scratch buffer.
    len: u32,
    /// The next byte to read.
    pos: u32,
    /// Where the name ends in place (after its first pointer or its root label); 0 until
    /// known.
    end: u32,
    /// Bytes left in the current label.
    remaining: u32,
    labels: u32,
    hops: u32,
    /// 1 once the root label was reached.
    done: u32,
    _pad: u32,
    /// Hash of the current label.
    hash: u64,
}

/// The state of the walk over an answer's records.
#[repr(C)]
struct AnswerScan {
    len: u32,
    /// Start of the next record.
    pos: u32,
    /// Records in the answer section, and how many were read.
    answers: u32,
    read: u32,
    /// 1 when a record could not be read.
    failed: u32,
    /// Who received the answer (`LearnedKey::uid`).
    uid: u32,
    netns: u64,
    /// The blocked destination the names read so far belong to (0: none yet).
    dest: u64,
}

#[inline(always)]
fn scratch() -> Option<*mut DnsScratch> {
    DNS_SCRATCH.get_ptr_mut(0)
}

/// One step of reading a name: a label byte, a length byte, or a compression pointer.
/// Returns 1 to stop (done or malformed), 0 to go on.
extern "C" fn name_step(_index: u32, _ctx: *mut c_void) -> i64 {
    let Some(sc) = scratch() else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot, used by one program run at a time.
    let s = unsafe { &mut (*sc).name };
    if s.pos >= s.len {
        return 1;
    }
    let c = byte_at(sc, s.pos);
    if s.remaining > 0 {
        s.hash = label_hash_step(s.hash, c);
        s.remaining -= 1;
        s.pos += 1;
        if s.remaining == 0 {
            let slot = (s.labels.wrapping_sub(1) & LABEL_MASK) as usize;
            // SAFETY: as above; the index is masked into the array.
            unsafe { (*sc).labels[slot] = s.hash };
        }
        return 0;
    }
    if c == 0 {
        if s.end == 0 {
            s.end = s.pos + 1;
        }
        s.done = 1;
        return 1;
    }
    if c & 0xc0 == 0xc0 {
        if s.pos + 1 >= s.len || s.hops >= NAME_HOPS {
            return 1;
        }
        let lo = byte_at(sc, s.pos + 1);
        let target = (((c & 0x3f) as u32) << 8) | lo as u32;
        // Pointers go backwards only: no loops.
        if target >= s.pos {
            return 1;
        }
        if s.end == 0 {
            s.end = s.pos + 2;
        }
        s.pos = target;
        s.hops += 1;
        return 0;
    }
    if c & 0xc0 != 0 {
        return 1;
    }
    s.remaining = c as u32;
    s.hash = NAME_HASH_BASIS;
    s.labels += 1;
    s.pos += 1;
    0
}

/// Reads the name at `pos`: where it ends in place, and the blocked destination it or one
/// of its parent domains is (0 for none). `None` when the name is malformed.
#[inline(always)]
fn read_name(sc: *mut DnsScratch, len: u32, pos: u32) -> Option<(u32, u64)> {
    // SAFETY: this CPU's scratch slot.
    unsafe {
        (*sc).name = NameScan {
            len,
            pos,
            end: 0,
            remaining: 0,
            labels: 0,
            hops: 0,
            done: 0,
            _pad: 0,
            hash: 0,
        };
    }
    let step = name_step as extern "C" fn(u32, *mut c_void) -> i64;
    // SAFETY: the callback keeps its state in the scratch slot; the helper bounds the loop.
    unsafe { bpf_loop(NAME_STEPS, step as *mut c_void, core::ptr::null_mut(), 0) };
    // SAFETY: as above.
    let (done, end, labels) = unsafe { ((*sc).name.done, (*sc).name.end, (*sc).name.labels) };
    if done == 0 {
        return None;
    }
    // Every parent domain, from the top-level one down; the most specific match wins.
    let mut suffix = NAME_HASH_BASIS;
    let mut found = 0u64;
    let mut i = 0u32;
    while i < BLOCK_NAME_LABELS as u32 {
        if i >= labels {
            break;
        }
        let slot = (labels.wrapping_sub(1 + i) & LABEL_MASK) as usize;
        // SAFETY: this CPU's scratch slot; the index is masked into the array.
        suffix = suffix_hash_step(suffix, unsafe { (*sc).labels[slot] });
        // SAFETY: plain u64 values.
        if let Some(dest) = unsafe { BLOCK_DOMAINS.get(suffix) } {
            found = *dest;
        }
        i += 1;
    }
    Some((end, found))
}

/// Marks the walk over the answer as failed, and stops it.
#[inline(always)]
fn fail(sc: *mut DnsScratch) -> i64 {
    // SAFETY: this CPU's scratch slot.
    unsafe { (*sc).answer.failed = 1 };
    1
}

/// One record of the answer section: its owner name and, for a CNAME, its target may be
/// blocked names; an A or AAAA record after one gives an address to deny.
extern "C" fn record_step(_index: u32, _ctx: *mut c_void) -> i64 {
    let Some(sc) = scratch() else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot.
    let (len, pos, answers, read) = unsafe {
        let a = &(*sc).answer;
        (a.len, a.pos, a.answers, a.read)
    };
    if read >= answers {
        return 1;
    }
    let Some((end, owner)) = read_name(sc, len, pos) else {
        return fail(sc);
    };
    if end + 10 > len {
        return fail(sc);
    }
    let rtype = be16_at(sc, end);
    let rdlen = be16_at(sc, end + 8) as u32;
    let rdata = end + 10;
    if rdata + rdlen > len {
        return fail(sc);
    }
    // SAFETY: as above.
    let a = unsafe { &mut (*sc).answer };
    if owner != 0 {
        a.dest = owner;
    }
    match rtype {
        TYPE_CNAME => {
            let Some((_, target)) = read_name(sc, len, rdata) else {
                return fail(sc);
            };
            // SAFETY: as above (read_name does not touch the answer state).
            let a = unsafe { &mut (*sc).answer };
            if target != 0 {
                a.dest = target;
            }
        }
        TYPE_A if rdlen == 4 && a.dest != 0 => learn(sc, rdata, 4, a.netns, a.uid, a.dest),
        TYPE_AAAA if rdlen == 16 && a.dest != 0 => learn(sc, rdata, 16, a.netns, a.uid, a.dest),
        _ => {}
    }
    // SAFETY: as above.
    let a = unsafe { &mut (*sc).answer };
    a.pos = rdata + rdlen;
    a.read += 1;
    0
}

#[inline(always)]
fn byte_at(scratch: *mut DnsScratch, pos: u32) -> u8 {
    // SAFETY: this CPU's scratch slot; the index is masked into the buffer.
    unsafe { (*scratch).buf[(pos & BUF_MASK) as usize] }
}

#[inline(always)]
fn be16_at(scratch: *mut DnsScratch, pos: u32) -> u16 {
    u16::from_be_bytes([byte_at(scratch, pos), byte_at(scratch, pos + 1)])
}

/// Remembers `addr` (from an answer's A or AAAA record at `rdata`) as `dest`'s.
#[inline(always)]
fn learn(scratch: *mut DnsScratch, rdata: u32, n: u32, netns: u64, uid: u32, dest: u64) {
    let mut addr = [0u8; 16];
    let mut i = 0u32;
    while i < 16 {
        if i >= n {
            break;
        }
        addr[i as usize] = byte_at(scratch, rdata + i);
        i += 1;
    }
    let key = LearnedKey {
        netns,
        addr,
        uid,
        _pad: 0,
    };
    if BLOCK_LEARNED.insert(key, dest, 0).is_ok() {
        count(Counter::BlockLearned);
    }
}

/// Every DNS answer received by any socket, while blocking is on (tail-called by
/// `bw_ingress`, never attached): the addresses given for blocked names (the name asked,
/// or any name of its CNAME chain) go into `BLOCK_LEARNED` before the socket can read the
/// answer.
#[cgroup_skb(ingress)]
pub fn bw_dns_block(ctx: SkBuffContext) -> i32 {
    let Some(l4) = parse_l4(&ctx) else {
        return PASS;
    };
    if l4.src_port != DNS_PORT || (l4.protocol != IPPROTO_UDP && l4.protocol != IPPROTO_TCP) {
        return PASS;
    }
    // DNS over TCP: a two-byte length, then the message (a segment that starts one).
    let start = if l4.protocol == IPPROTO_TCP {
        l4.payload_off + 2
    } else {
        l4.payload_off
    };
    if read_answer(&ctx, start).is_none() {
        count(Counter::BlockDnsUnread);
    }
    PASS
}

#[inline(always)]
fn read_answer(ctx: &SkBuffContext, start: u32) -> Option<()> {
    let skb_len = ctx.len();
    if skb_len < start + 12 {
        return Some(());
    }
    let sc = scratch()?;
    let total = skb_len - start;
    let m = if total as usize > PACKET_CAPTURE {
        PACKET_CAPTURE as u32
    } else {
        total
    };
    // SAFETY: reading a local (hides m's range so that the mask below stays; see
    // packet::capture).
    let m = unsafe { core::ptr::read_volatile(&m) };
    let n = ((m.wrapping_sub(1)) & BUF_MASK) + 1;
    // SAFETY: n is in 1..=PACKET_CAPTURE, the scratch buffer's size.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr() as *const _,
            start,
            core::ptr::addr_of_mut!((*sc).buf) as *mut _,
            n,
        )
    };
    if rc != 0 {
        return None;
    }
    // An answer (QR), no error, one question, some records.
    if byte_at(sc, 2) & 0x80 == 0 || byte_at(sc, 3) & 0x0f != 0 {
        return Some(());
    }
    let answers = be16_at(sc, 6) as u32;
    if be16_at(sc, 4) != 1 || answers == 0 {
        return Some(());
    }
    let (qend, dest) = read_name(sc, n, 12)?;
    // SAFETY: the helpers take the program's own context.
    let owner = unsafe { bpf_get_socket_uid(ctx.as_ptr() as *mut _) };
    let netns = match sock_state(skb_socket(ctx)) {
        // SAFETY: this socket's storage slot.
        Some(state) => unsafe { (*state).netns },
        None => 0,
    };
    // SAFETY: this CPU's scratch slot.
    unsafe {
        (*sc).answer = AnswerScan {
            len: n,
            pos: qend + 4,
            answers,
            read: 0,
            failed: 0,
            uid: if owner <= SYSTEM_UID_MAX {
                BLOCK_UID_SYSTEM
            } else {
                owner
            },
            netns,
            dest,
        };
    }
    let step = record_step as extern "C" fn(u32, *mut c_void) -> i64;
    // SAFETY: the callback keeps its state in the scratch slot; the helper bounds the loop.
    unsafe { bpf_loop(MAX_RECORDS, step as *mut c_void, core::ptr::null_mut(), 0) };
    // SAFETY: as above.
    if unsafe { (*sc).answer.failed } != 0 {
        return None;
    }
    Some(())
}
