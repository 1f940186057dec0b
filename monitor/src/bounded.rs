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
}

impl<K: Hash + Eq, V> BoundedLru<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            inner: LruCache::unbounded(),
            cap: cap.max(1),
        }
    }

    fn make_room(&mut self) {
        while self.inner.len() >= self.cap {
            self.inner.pop_lru();
        }
    }

    /// Inserts, evicting the least recently used entry when full; returns the old value.
    pub fn put(&mut self, k: K, v: V) -> Option<V> {
        if !self.inner.contains(&k) {
            self.make_room();
        }
        self.inner.put(k, v)
    }

    pub fn get_or_insert_mut(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        if !self.inner.contains(&k) {
            self.make_room();
        }
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
}
