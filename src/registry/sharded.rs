//! [`ShardedMap`]: a map readers never lock.
//!
//! Each shard is an immutable `HashMap` behind an `ArcSwap`: a lookup loads the
//! shard pointer (no lock, no allocation, no reference-count traffic in the
//! common case) and probes it. Writers copy one shard, change it and swap it
//! in; with 64 shards a write copies 1/64 of the table. Writes are cold
//! (admin calls) and the registry serialises them.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use arc_swap::ArcSwap;

const SHARDS: usize = 64;

pub struct ShardedMap<K, V, S = RandomState> {
    shards: Box<[ArcSwap<HashMap<K, V, S>>]>,
    hasher: S,
}

impl<K, V, S> ShardedMap<K, V, S>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher + Clone + Default,
{
    pub fn new() -> Self {
        let hasher = S::default();
        let shards = (0..SHARDS)
            .map(|_| ArcSwap::from_pointee(HashMap::with_hasher(hasher.clone())))
            .collect();
        ShardedMap { shards, hasher }
    }

    #[inline]
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &ArcSwap<HashMap<K, V, S>> {
        let h = self.hasher.hash_one(key);
        &self.shards[((h >> 32) as usize) % SHARDS]
    }

    /// Runs `f` on the value for `key` without cloning it.
    #[inline]
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(Option<&V>) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key).load();
        f(shard.get(key))
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.with(key, |v| v.cloned())
    }

    pub fn insert(&self, key: K, value: V) {
        self.shard(&key).rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(key.clone(), value.clone());
            m
        });
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(key);
            m
        });
    }

    /// Removes every entry `remove` says; copies only the shards that hold
    /// one.
    pub(crate) fn remove_where(&self, remove: impl Fn(&K, &V) -> bool) {
        for shard in self.shards.iter() {
            if shard.load().iter().any(|(k, v)| remove(k, v)) {
                shard.rcu(|m| {
                    let mut m = HashMap::clone(m);
                    m.retain(|k, v| !remove(k, v));
                    m
                });
            }
        }
    }

    /// Replaces the whole content at once (start-up): one copy per shard.
    pub fn replace_all(&self, entries: impl IntoIterator<Item = (K, V)>) {
        let mut maps: Vec<HashMap<K, V, S>> = (0..SHARDS)
            .map(|_| HashMap::with_hasher(self.hasher.clone()))
            .collect();
        for (k, v) in entries {
            let h = self.hasher.hash_one(&k);
            maps[((h >> 32) as usize) % SHARDS].insert(k, v);
        }
        for (shard, map) in self.shards.iter().zip(maps) {
            shard.store(Arc::new(map));
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.load().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn values(&self) -> Vec<V> {
        self.shards
            .iter()
            .flat_map(|s| s.load().values().cloned().collect::<Vec<_>>())
            .collect()
    }
}

impl<K, V, S> Default for ShardedMap<K, V, S>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher + Clone + Default,
{
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_replace() {
        let m: ShardedMap<String, u32> = ShardedMap::new();
        for i in 0..1000 {
            m.insert(format!("k{i}"), i);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get("k7"), Some(7));
        m.remove("k7");
        assert_eq!(m.get("k7"), None);
        m.remove_where(|_, v| *v >= 10);
        assert_eq!((m.len(), m.get("k9"), m.get("k10")), (9, Some(9), None));
        assert_eq!(m.with("k8", |v| v.copied()), Some(8));
        m.replace_all([("a".to_string(), 1)]);
        assert_eq!((m.len(), m.get("a"), m.get("k8")), (1, Some(1), None));
    }
}
