//! The EventFilter: "is this namespace in my ranges?", answered before anything else is
//! done with a watch event.
//!
//! The answer is a function of the range of the full 64-bit xxh3 hash of the full name,
//! so it is exact: two names whose hashes collide are in the same range, and both are
//! rightly in or out. (The original keyed a table by a 32-bit hash and let colliding
//! names through.) A check is the hash, one multiplication and one byte load, with no
//! branch of its own: the range `r = (hash × R) >> 64` is below `R ≤ 65536`, so it is a
//! `u16`, and the owned set is unpacked into a 64 KiB table of one byte per possible `u16`,
//! which any `u16` indexes without a bounds check. Only the first `R` bytes are ever read
//! (256 bytes, four cache lines, with the default `R`).
//!
//! Measured alternatives (`benches/filter.rs` and an A/B harness, same names, same run):
//! a bitset word test instead of the byte load, a shift instead of the multiplication for
//! power-of-two `R` (with the branch that chooses it) and the former bounds-checked
//! per-`R` byte table all cost 3–8% more than this; a table indexed by the top `k` bits
//! of the hash (`2^k >= R`, exact but for prefixes that straddle an owned and a not-owned
//! range, which take a branch to an exact check) 7–11% more, and 10% more with `k = 16`
//! (a 64 KiB table read all over). The multiplication and the byte load cost 0–5% over
//! the bare hash.

use std::fmt;

use crate::ranges::{hash_name, range_of_hash, RangeCount, RangeSet};

/// Entries of the owned table: one per `u16`, so a range indexes it without a check.
const TABLE_LEN: usize = 1 << 16;

/// Exact, O(1) membership test of a name's range in an owned [`RangeSet`].
///
/// Rebuild it (cheap: O(R) and a 64 KiB zeroed table) whenever the owned ranges change.
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
#[derive(Clone)]
pub struct EventFilter {
    /// `owned[r]` is 1 when range `r` is owned, else 0 (always 0 from `R` on).
    owned: Box<[u8; TABLE_LEN]>,
    count: RangeCount,
    ranges: RangeSet,
}

impl fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The 64 KiB table says nothing the ranges do not.
        f.debug_struct("EventFilter")
            .field("count", &self.count.get())
            .field("ranges", &self.ranges.to_string())
            .finish()
    }
}

impl EventFilter {
    /// A filter that accepts the names of the ranges in `owned`. O(R), plus zeroing a
    /// 64 KiB table.
    ///
    /// ```
    /// use shard::{EventFilter, RangeCount, RangeSet};
    /// let owned = RangeSet::parse("0-63", RangeCount::new(256).unwrap()).unwrap();
    /// let filter = EventFilter::new(&owned);
    /// assert_eq!(filter.ranges().len(), 64);
    /// ```
    pub fn new(owned: &RangeSet) -> EventFilter {
        let mut table: Box<[u8; TABLE_LEN]> = vec![0u8; TABLE_LEN]
            .into_boxed_slice()
            .try_into()
            .expect("the vector has TABLE_LEN bytes");
        for range in owned.iter() {
            // Ranges are below R <= 65536 = TABLE_LEN.
            table[range as usize] = 1;
        }
        EventFilter {
            owned: table,
            count: owned.count(),
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

    /// Whether `name` falls in an owned range. O(length of name): one xxh3, one
    /// multiplication and one byte load.
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
        // The range is below R <= 65536, so the cast to u16 keeps it whole; any u16
        // indexes the table, so there is no bounds check and no branch.
        let r = range_of_hash(hash, self.count) as u16;
        self.owned[usize::from(r)] != 0
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
