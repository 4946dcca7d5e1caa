//! The open-addressing hash table behind [`NamespaceIndex`](crate::NamespaceIndex):
//! 4-byte buckets holding an entry id and a fingerprint, linear probing, tombstones.
//!
//! The table holds no keys: the caller passes the key's 64-bit hash and an equality test
//! on entry ids, and gives the hash of an id back when the table is rebuilt. So a bucket
//! is only 4 bytes:
//!
//! ```text
//!   bucket = fingerprint << id_bits | (id + 2)      0 = empty, 1 = tombstone
//! ```
//!
//! * the home bucket is `(low 32 bits of hash) * capacity >> 32` (any capacity, not only
//!   powers of two); the table is rebuilt when live entries and tombstones pass 7/8 of
//!   it, to twice the live entries' need on growth (a rebuild rehashes every name, so it
//!   must be rare: each entry is rehashed about once over the whole growth), or to 70%
//!   when tombstones or shrinkage caused it;
//! * the fingerprint is hash bits 32 and up, as many as `32 - id_bits` allow; probes skip
//!   a non-matching fingerprint without touching the entry, so a probe sequence reads
//!   consecutive 4-byte words and rarely anything else;
//! * neither uses the top bits that pick the hash *range*, so an index that holds only a
//!   few ranges still spreads over the whole table;
//! * a removal leaves a tombstone, unless the next bucket is empty: then the bucket and
//!   the tombstones before it become empty. Backward-shift deletion (no tombstones at
//!   all) would need the home bucket of each entry after the hole, which a 4-byte bucket
//!   has no room to hold (its fingerprint has fewer bits than a bucket position), and
//!   finding it by rehashing each neighbour's name would read that neighbour's slot and
//!   name: two more cache misses per removal than the tombstone costs;
//! * the table shrinks (a rebuild) when under 1/16 full, so a mass removal rehashes
//!   about a sixth of what it removes.

/// Empty bucket.
const EMPTY: u32 = 0;
/// Deleted bucket: probes go on past it, inserts may reuse it.
const TOMBSTONE: u32 = 1;
/// Smallest capacity.
const MIN_CAPACITY: usize = 8;

/// Result of a lookup by key.
pub(crate) enum Probe {
    /// Found: the bucket and the id in it.
    Found { bucket: usize, id: u32 },
    /// Absent: the bucket where the key would be inserted.
    Vacant { bucket: usize },
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    buckets: Vec<u32>,
    id_bits: u32,
    live: usize,
    tombstones: usize,
}

#[inline]
fn home(hash: u64, capacity: usize) -> usize {
    ((u64::from(hash as u32) * capacity as u64) >> 32) as usize
}

impl Table {
    pub(crate) fn new() -> Table {
        Table {
            buckets: Vec::new(),
            id_bits: 0,
            live: 0,
            tombstones: 0,
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<u32>()
    }

    #[inline]
    fn id_mask(&self) -> u32 {
        // id_bits is in 1..=32.
        u32::MAX >> (32 - self.id_bits)
    }

    #[inline]
    fn fingerprint(&self, hash: u64) -> u32 {
        ((hash >> 32) as u32).checked_shl(self.id_bits).unwrap_or(0)
    }

    /// Whether an id fits the current bucket encoding.
    #[inline]
    pub(crate) fn fits_id(&self, id: u32) -> bool {
        !self.buckets.is_empty() && u64::from(id) + 2 <= u64::from(self.id_mask())
    }

    /// Whether one more insert needs a rebuild first (load of live + tombstones over 7/8).
    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        (self.live + self.tombstones + 1) * 8 > self.buckets.len() * 7
    }

    /// Whether the table is worth shrinking after removals: under 1/16 full. (Tombstones
    /// alone never call for a rebuild here: they count toward the 7/8 limit that
    /// [`Table::is_full`] checks on insert.) A shrink rehashes every live name, so it
    /// waits for the table to be mostly empty: removing all of a table's entries
    /// rehashes about a sixth of them, and the table (4 bytes a bucket) is then at most
    /// 64 bytes per live entry, about the 8-byte slots the removed entries leave.
    pub(crate) fn is_sparse(&self) -> bool {
        let cap = self.buckets.len();
        cap > MIN_CAPACITY * 4 && self.live * 16 < cap
    }

    /// Looks a key up; `eq(id)` says whether entry `id` has the key. O(1) expected.
    #[inline]
    pub(crate) fn probe(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Probe {
        let cap = self.buckets.len();
        if cap == 0 {
            return Probe::Vacant { bucket: 0 };
        }
        let mask = self.id_mask();
        let fp = self.fingerprint(hash);
        let mut i = home(hash, cap);
        let mut vacant = None;
        loop {
            let b = self.buckets[i];
            if b == EMPTY {
                return Probe::Vacant {
                    bucket: vacant.unwrap_or(i),
                };
            }
            if b == TOMBSTONE {
                vacant.get_or_insert(i);
            } else if b & !mask == fp {
                let id = (b & mask) - 2;
                if eq(id) {
                    return Probe::Found { bucket: i, id };
                }
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    /// Reads the home bucket of `hash`, for callers that look a group of keys up and want
    /// the cache misses of the group to overlap: the value itself means nothing.
    #[inline]
    pub(crate) fn touch(&self, hash: u64) -> u32 {
        let cap = self.buckets.len();
        if cap == 0 {
            return 0;
        }
        self.buckets[home(hash, cap)]
    }

    /// The id in the home bucket of `hash` if its fingerprint matches: where a lookup of
    /// `hash` most likely ends, for the same callers as [`Table::touch`]. O(1), no loop.
    #[inline]
    pub(crate) fn peek(&self, hash: u64) -> Option<u32> {
        let cap = self.buckets.len();
        if cap == 0 {
            return None;
        }
        let b = self.buckets[home(hash, cap)];
        let mask = self.id_mask();
        (b > TOMBSTONE && b & !mask == self.fingerprint(hash)).then(|| (b & mask) - 2)
    }

    /// The bucket holding `id`, found through its hash. O(1) expected.
    pub(crate) fn bucket_of(&self, hash: u64, id: u32) -> Option<usize> {
        match self.probe(hash, |other| other == id) {
            Probe::Found { bucket, .. } => Some(bucket),
            Probe::Vacant { .. } => None,
        }
    }

    /// Puts `id` into the `Vacant` bucket a [`Table::probe`] returned. Call only when
    /// neither [`Table::is_full`] nor `!`[`Table::fits_id`] asked for a rebuild.
    #[inline]
    pub(crate) fn insert_at(&mut self, bucket: usize, hash: u64, id: u32) {
        if self.buckets[bucket] == TOMBSTONE {
            self.tombstones -= 1;
        }
        self.buckets[bucket] = self.fingerprint(hash) | (id + 2);
        self.live += 1;
    }

    /// Empties a bucket found by a probe.
    #[inline]
    pub(crate) fn erase(&mut self, bucket: usize) {
        let cap = self.buckets.len();
        self.live -= 1;
        let next = if bucket + 1 == cap { 0 } else { bucket + 1 };
        if self.buckets[next] != EMPTY {
            self.buckets[bucket] = TOMBSTONE;
            self.tombstones += 1;
            return;
        }
        // An empty next bucket ends every probe sequence through this one, so the bucket
        // can become empty instead of a tombstone, and so can the tombstones before it.
        self.buckets[bucket] = EMPTY;
        let mut i = bucket;
        loop {
            i = if i == 0 { cap - 1 } else { i - 1 };
            if self.buckets[i] != TOMBSTONE {
                break;
            }
            self.buckets[i] = EMPTY;
            self.tombstones -= 1;
        }
    }

    /// Capacity for `live` entries after a growth rebuild: 7/16 full (half of the 7/8
    /// limit), so the next growth comes after as many inserts again.
    pub(crate) fn grown_capacity(live: usize) -> usize {
        live * 16 / 7 + 1
    }

    /// Capacity for `live` entries after a cleanup rebuild (tombstones, shrinkage): 70% full.
    pub(crate) fn tidy_capacity(live: usize) -> usize {
        live * 10 / 7 + 1
    }

    /// Capacity for a known population: full to 7/8 exactly when it is reached.
    pub(crate) fn reserved_capacity(entries: usize) -> usize {
        entries * 8 / 7 + 2
    }

    /// Rebuilds with `capacity` buckets (at least 8) for the entries listed by `ids`
    /// (hashed by `hash_of`) and ids up to `max_id`. O(capacity + entries).
    pub(crate) fn rebuild(
        &mut self,
        capacity: usize,
        max_id: u32,
        ids: impl Iterator<Item = u32>,
        hash_of: impl Fn(u32) -> u64,
    ) {
        let cap = capacity.max(MIN_CAPACITY);
        // Room for ids up to max(max_id, cap) without another rebuild soon.
        let top = u64::from(max_id).max(cap as u64) + 2;
        self.id_bits = (64 - top.leading_zeros()).clamp(1, 32);
        self.buckets = Vec::new(); // free the old table before allocating the new one
        self.buckets = vec![EMPTY; cap];
        self.live = 0;
        self.tombstones = 0;
        for id in ids {
            let hash = hash_of(id);
            let mut i = home(hash, cap);
            while self.buckets[i] != EMPTY {
                i += 1;
                if i == cap {
                    i = 0;
                }
            }
            self.insert_at(i, hash, id);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.fill(EMPTY);
        self.live = 0;
        self.tombstones = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A table over keys with a deliberately awful hash (4 distinct values, equal
    /// fingerprints) so every probe walks through collisions.
    struct Weak {
        table: Table,
        keys: Vec<Option<u64>>,
    }

    fn weak_hash(key: u64) -> u64 {
        key % 4
    }

    impl Weak {
        fn rebuild(&mut self) {
            let live = self.keys.iter().filter(|k| k.is_some()).count();
            let ids: Vec<u32> = (0..self.keys.len() as u32)
                .filter(|&i| self.keys[i as usize].is_some())
                .collect();
            let keys = &self.keys;
            self.table.rebuild(
                Table::grown_capacity(live),
                keys.len() as u32,
                ids.into_iter(),
                |id| weak_hash(keys[id as usize].unwrap()),
            );
        }

        fn get(&self, key: u64) -> Option<u32> {
            match self
                .table
                .probe(weak_hash(key), |id| self.keys[id as usize] == Some(key))
            {
                Probe::Found { id, .. } => Some(id),
                Probe::Vacant { .. } => None,
            }
        }

        fn insert(&mut self, key: u64) -> u32 {
            if let Some(id) = self.get(key) {
                return id;
            }
            let id = self.keys.len() as u32;
            self.keys.push(Some(key));
            if self.table.is_full() || !self.table.fits_id(id) {
                self.rebuild();
                return id;
            }
            match self.table.probe(weak_hash(key), |_| false) {
                Probe::Vacant { bucket } => self.table.insert_at(bucket, weak_hash(key), id),
                Probe::Found { .. } => unreachable!(),
            }
            id
        }

        fn remove(&mut self, key: u64) -> bool {
            let Some(id) = self.get(key) else {
                return false;
            };
            let bucket = self.table.bucket_of(weak_hash(key), id).unwrap();
            self.table.erase(bucket);
            self.keys[id as usize] = None;
            if self.table.is_sparse() {
                self.rebuild();
            }
            true
        }
    }

    #[test]
    fn forced_collisions_against_a_model() {
        let mut weak = Weak {
            table: Table::new(),
            keys: Vec::new(),
        };
        let mut model: HashMap<u64, u32> = HashMap::new();
        let mut x: u64 = 12345;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 300;
            if x % 3 == 0 {
                assert_eq!(
                    weak.remove(key),
                    model.remove(&key).is_some(),
                    "step {step}"
                );
            } else {
                let id = weak.insert(key);
                assert_eq!(*model.entry(key).or_insert(id), id, "step {step}");
            }
            if step % 97 == 0 {
                for k in 0..300 {
                    assert_eq!(
                        weak.get(k),
                        model.get(&k).copied(),
                        "key {k} at step {step}"
                    );
                }
                assert_eq!(weak.table.live, model.len());
            }
        }
    }
}
