//! The EventFilter: "is this namespace in my ranges?", answered before anything else is
//! done with a watch event.
//!
//! The answer is a function of the range of the full 64-bit xxh3 hash of the full name,
//! so it is exact: two names whose hashes collide are in the same range, and both are
//! rightly in or out. (The original keyed a table by a 32-bit hash and let colliding
//! names through.) The owned set is unpacked into one byte per range (at most 64 KiB), so
//! a check is one hash, one multiplication (a shift when `R` is a power of two) and one
//! byte load: the shortest dependency chain after the hash, which matters because the
//! hash's own length branches are often mispredicted and expose that chain.

use crate::ranges::{hash_name, RangeCount, RangeSet};

/// Exact, O(1) membership test of a name's range in an owned [`RangeSet`].
///
/// Rebuild it (cheap: O(R)) whenever the owned ranges change.
///
/// ```
/// use shard::{EventFilter, RangeCount, RangeSet};
/// let count = RangeCount::new(256).unwrap();
/// let mine = RangeSet::parse("0-127", count).unwrap();
/// let filter = EventFilter::new(&mine);
/// let name = "team-alpha-prod-17";
/// assert_eq!(filter.contains(name), mine.contains(count.range_of(name)));
/// assert!(EventFilter::new(&RangeSet::full(count)).contains(name));
/// ```
#[derive(Debug, Clone)]
pub struct EventFilter {
    /// `owned[r]` is 1 when range `r` is owned, else 0.
    owned: Box<[u8]>,
    count: RangeCount,
    /// `64 - log2(R)` when `R` is a power of two above 1: then the range is `hash >> shift`,
    /// which equals `(hash * R) >> 64` and spares a 128-bit multiplication.
    shift: Option<u32>,
    ranges: RangeSet,
}

impl EventFilter {
    /// A filter that accepts the names of the ranges in `owned`. O(R).
    ///
    /// ```
    /// use shard::{EventFilter, RangeCount, RangeSet};
    /// let owned = RangeSet::parse("0-63", RangeCount::new(256).unwrap()).unwrap();
    /// let filter = EventFilter::new(&owned);
    /// assert_eq!(filter.ranges().len(), 64);
    /// ```
    pub fn new(owned: &RangeSet) -> EventFilter {
        let r = owned.count().get();
        EventFilter {
            owned: (0..r)
                .map(|range| u8::from(owned.contains(range)))
                .collect(),
            count: owned.count(),
            shift: (r > 1 && r.is_power_of_two()).then(|| 64 - r.trailing_zeros()),
            ranges: owned.clone(),
        }
    }

    /// The owned ranges this filter was built from.
    ///
    /// ```
    /// use shard::{EventFilter, RangeCount, RangeSet};
    /// let set = RangeSet::parse("3", RangeCount::new(4).unwrap()).unwrap();
    /// assert_eq!(EventFilter::new(&set).ranges(), &set);
    /// ```
    pub fn ranges(&self) -> &RangeSet {
        &self.ranges
    }

    /// Whether `name` falls in an owned range. O(length of name): one xxh3 and a bit test.
    ///
    /// ```
    /// use shard::{EventFilter, RangeCount, RangeSet};
    /// let filter = EventFilter::new(&RangeSet::new(RangeCount::new(16).unwrap()));
    /// assert!(!filter.contains("anything"));
    /// ```
    #[inline]
    pub fn contains(&self, name: &str) -> bool {
        self.contains_hash(hash_name(name))
    }

    /// Whether a name with this [`hash_name`] falls in an owned range. O(1).
    ///
    /// ```
    /// use shard::{hash_name, EventFilter, RangeCount, RangeSet};
    /// let filter = EventFilter::new(&RangeSet::full(RangeCount::new(16).unwrap()));
    /// assert!(filter.contains_hash(hash_name("kube-public")));
    /// ```
    #[inline]
    pub fn contains_hash(&self, hash: u64) -> bool {
        let r = match self.shift {
            Some(shift) => (hash >> shift) as u32,
            None => self.count.range_of_hash(hash),
        };
        // `r < R`, so the byte exists; `get` keeps the check panic-free anyway.
        self.owned.get(r as usize).is_some_and(|&b| b != 0)
    }

    /// The name's hash when it falls in an owned range, so the caller can reuse it
    /// (e.g. for logging the range) without hashing twice. O(length of name).
    ///
    /// ```
    /// use shard::{hash_name, EventFilter, RangeCount, RangeSet};
    /// let filter = EventFilter::new(&RangeSet::full(RangeCount::new(16).unwrap()));
    /// assert_eq!(filter.hash_if_owned("ns-1"), Some(hash_name("ns-1")));
    /// ```
    #[inline]
    pub fn hash_if_owned(&self, name: &str) -> Option<u64> {
        let hash = hash_name(name);
        self.contains_hash(hash).then_some(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn agrees_with_the_range_set(
            n in prop_oneof![1u32..=65536, (0u32..=16).prop_map(|k| 1 << k)],
            owned in proptest::collection::vec(any::<u32>(), 0..200),
            names in proptest::collection::vec("[a-z0-9-]{1,40}", 1..50),
        ) {
            let count = RangeCount::new(n).unwrap();
            let mut set = RangeSet::new(count);
            for r in owned {
                set.insert(r % n);
            }
            let filter = EventFilter::new(&set);
            for name in &names {
                let expected = set.contains(count.range_of(name));
                prop_assert_eq!(filter.contains(name), expected);
                prop_assert_eq!(filter.hash_if_owned(name).is_some(), expected);
            }
            // Hash-level exactness at the range boundaries.
            for r in [0, n / 2, n - 1] {
                let lo = ((u128::from(r) << 64).div_ceil(u128::from(n))) as u64;
                prop_assert_eq!(filter.contains_hash(lo), set.contains(r));
                let hi = ((u128::from(r + 1) << 64).div_ceil(u128::from(n)) - 1) as u64;
                prop_assert_eq!(filter.contains_hash(hi), set.contains(r));
            }
        }
    }

    #[test]
    fn full_and_empty() {
        let count = RangeCount::new(1000).unwrap();
        let full = EventFilter::new(&RangeSet::full(count));
        let empty = EventFilter::new(&RangeSet::new(count));
        for i in 0..10_000 {
            let name = format!("ns-{i}");
            assert!(full.contains(&name));
            assert!(!empty.contains(&name));
        }
    }
}
