//! An LRU map that grows with use up to its bound (the `lru` crate's bounded constructor
//! allocates the whole bound at once, which costs an idle daemon megabytes).

use std::{
    hash::Hash,
    ops::{Deref, DerefMut},
};

use lru::LruCache;

pub struct BoundedLru<K: Hash + Eq, V> {
    inner: LruCache<K, V>,
    cap: usize,
    /// The most entries held since the table was last rebuilt (its allocation's size).
    peak: usize,
}

/// Below this many entries a table is never rebuilt to give memory back.
const SHRINK_FLOOR: usize = 4096;

impl<K: Hash + Eq, V> BoundedLru<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            inner: LruCache::unbounded(),
            cap: cap.max(1),
            peak: 0,
        }
    }

    /// Drops entries from the least recently used end while `old` says so (stops at the
    /// first that is not), then gives the table's memory back when it holds under a quarter
    /// of what it once did (a flood's entries gone). Returns whether it rebuilt the table.
    pub fn forget_while(&mut self, mut old: impl FnMut(&V) -> bool) -> bool {
        while self.inner.peek_lru().is_some_and(|(_, v)| old(v)) {
            self.inner.pop_lru();
        }
        let len = self.inner.len();
        if self.peak <= SHRINK_FLOOR || len * 4 >= self.peak {
            return false;
        }
        let mut fresh = LruCache::unbounded();
        while let Some((k, v)) = self.inner.pop_lru() {
            fresh.put(k, v);
        }
        self.inner = fresh;
        self.peak = len;
        true
    }

    /// Evicts from the least recently used end when full and `k` is new (asked only then:
    /// a hash fewer on every insert below the bound).
    fn make_room_for(&mut self, k: &K) {
        if self.inner.len() >= self.cap && !self.inner.contains(k) {
            while self.inner.len() >= self.cap {
                self.inner.pop_lru();
            }
        }
    }

    /// Inserts, evicting the least recently used entry when full; returns the old value.
    pub fn put(&mut self, k: K, v: V) -> Option<V> {
        self.make_room_for(&k);
        let old = self.inner.put(k, v);
        self.peak = self.peak.max(self.inner.len());
        old
    }

    pub fn get_or_insert_mut(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        self.make_room_for(&k);
        self.peak = self.peak.max(self.inner.len() + 1);
        self.inner.get_or_insert_mut(k, f)
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }
}

impl<K: Hash + Eq, V> Deref for BoundedLru<K, V> {
    type Target = LruCache<K, V>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<K: Hash + Eq, V> DerefMut for BoundedLru<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_at_the_bound() {
        let mut m = BoundedLru::new(2);
        m.put(1, "a");
        m.put(2, "b");
        assert_eq!(m.get(&1), Some(&"a"));
        m.put(3, "c");
        assert_eq!(m.len(), 2);
        assert!(m.peek(&2).is_none(), "2 was least recently used");
        *m.get_or_insert_mut(4, || "d") = "e";
        assert_eq!(m.len(), 2);
        assert_eq!(m.peek(&4), Some(&"e"));
        m.put(4, "f");
        assert_eq!(m.len(), 2, "replacing does not evict");
        assert_eq!(m.capacity(), 2);
    }

    #[test]
    fn forgetting_old_entries_keeps_recent_order_and_gives_back_a_floods_table() {
        let mut m = BoundedLru::new(100_000);
        for i in 0..20_000u32 {
            m.put(i, i);
        }
        // Entries below 19,000 are old; the newest 1,000 stay, in order.
        assert!(m.forget_while(|v| *v < 19_000), "rebuilt");
        assert_eq!(m.len(), 1_000);
        assert_eq!(m.peek_lru(), Some((&19_000, &19_000)));
        assert_eq!(
            m.iter().next(),
            Some((&19_999, &19_999)),
            "most recent first"
        );
        // Nothing more to give back: no second rebuild.
        assert!(!m.forget_while(|v| *v < 19_500));
        assert_eq!(m.len(), 500);
        // Small tables are never rebuilt.
        let mut small = BoundedLru::new(10);
        small.put(1, 1);
        assert!(!small.forget_while(|_| true));
        assert!(small.is_empty());
    }
}
