//! Hashing of namespace names and the cutting of the hash space into ranges.
//!
//! A name's hash is xxh3-64 of its bytes. The 64-bit hash space is cut into `R` equal,
//! contiguous slices (`R` from 1 to 65536, fixed per installation); range `r` holds the
//! hashes `h` with `r * 2^64 / R <= h < (r + 1) * 2^64 / R`, which is what
//! [`range_of_hash`] computes with one 128-bit multiplication and no division.
//!
//! [`RangeSet`] is a bitset of ranges with a compact text form for logs and
//! annotations (`0-31,64-95`) and a strict parser for it.

use std::fmt;

use thiserror::Error;

/// Largest number of ranges an installation may use.
///
/// 65536 keeps a range index within `u16` (the [`NamespaceIndex`](crate::NamespaceIndex)
/// stores it in two bytes) and a [`RangeSet`] within 8 KiB.
///
/// ```
/// assert!(shard::RangeCount::new(shard::MAX_RANGES).is_ok());
/// ```
pub const MAX_RANGES: u32 = 65536;

/// Errors of this module: an invalid range count, a range out of bounds, or a
/// [`RangeSet`] text that does not parse. None is retryable: they all name bad input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RangeError {
    /// The range count is outside `1..=65536`.
    #[error("range count {0} is outside 1..=65536")]
    InvalidCount(u64),
    /// The text was empty; an empty set is written `-`.
    #[error("empty range set text (an empty set is written `-`)")]
    EmptyText,
    /// Two commas in a row, or a comma at the start or the end.
    #[error("empty item at byte {position} of range set text")]
    EmptyItem {
        /// Byte offset of the empty item in the text.
        position: usize,
    },
    /// An item is not `N` or `N-M` with decimal digits only (no sign, no space,
    /// no leading zero).
    #[error("invalid range item {token:?}: expected N or N-M in canonical decimal")]
    InvalidItem {
        /// The offending item.
        token: String,
    },
    /// A range number is not below the range count.
    #[error("range item {token:?} is out of bounds: ranges are 0..={max}")]
    OutOfBounds {
        /// The offending item.
        token: String,
        /// The largest valid range (count - 1).
        max: u32,
    },
    /// An item `N-M` with `N > M`.
    #[error("range item {token:?} is reversed")]
    Reversed {
        /// The offending item.
        token: String,
    },
    /// An item overlaps or precedes the one before it; items must be strictly ascending.
    #[error("range item {token:?} overlaps or precedes the item before it")]
    NotAscending {
        /// The offending item.
        token: String,
    },
    /// Two sets with different range counts were combined.
    #[error("range counts differ: {0} and {1}")]
    CountMismatch(u32, u32),
}

/// xxh3-64 (seed 0) of the name's bytes: the one hash every replica and crate uses for a
/// namespace.
///
/// ```
/// let h = shard::hash_name("team-alpha-prod-17");
/// assert_eq!(h, xxhash_rust::xxh3::xxh3_64(b"team-alpha-prod-17"));
/// assert_ne!(h, shard::hash_name("team-alpha-prod-18"));
/// ```
#[inline]
pub fn hash_name(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// Range of a hash for `count` ranges: `((hash as u128 * R as u128) >> 64) as u32`.
///
/// Equal contiguous slices of the 64-bit space; other crates rely on this exact formula.
/// O(1).
///
/// ```
/// use shard::{range_of_hash, RangeCount};
/// let r = RangeCount::new(4).unwrap();
/// assert_eq!(range_of_hash(0, r), 0);
/// assert_eq!(range_of_hash(u64::MAX, r), 3);
/// assert_eq!(range_of_hash(1 << 63, r), 2);
/// ```
#[inline]
pub fn range_of_hash(hash: u64, count: RangeCount) -> u32 {
    ((hash as u128 * count.0 as u128) >> 64) as u32
}

/// Range of a namespace name: [`range_of_hash`] of [`hash_name`]. O(length of the name).
///
/// ```
/// use shard::{range_of, RangeCount};
/// let r = RangeCount::new(256).unwrap();
/// assert!(range_of("kube-system", r) < 256);
/// ```
#[inline]
pub fn range_of(name: &str, count: RangeCount) -> u32 {
    range_of_hash(hash_name(name), count)
}

/// The number of ranges `R`, validated to `1..=65536`.
///
/// ```
/// use shard::RangeCount;
/// assert_eq!(RangeCount::new(256).unwrap().get(), 256);
/// assert!(RangeCount::new(0).is_err());
/// assert!(RangeCount::new(65537).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeCount(u32);

impl RangeCount {
    /// Validates a range count: `1..=65536`.
    ///
    /// ```
    /// assert_eq!(shard::RangeCount::new(0), Err(shard::RangeError::InvalidCount(0)));
    /// ```
    pub fn new(count: u32) -> Result<Self, RangeError> {
        if (1..=MAX_RANGES).contains(&count) {
            Ok(Self(count))
        } else {
            Err(RangeError::InvalidCount(count.into()))
        }
    }

    /// The count as a number.
    ///
    /// ```
    /// assert_eq!(shard::RangeCount::new(7).unwrap().get(), 7);
    /// ```
    #[inline]
    pub fn get(self) -> u32 {
        self.0
    }

    /// Range of a hash; see [`range_of_hash`].
    ///
    /// ```
    /// let r = shard::RangeCount::new(2).unwrap();
    /// assert_eq!(r.range_of_hash(u64::MAX), 1);
    /// ```
    #[inline]
    pub fn range_of_hash(self, hash: u64) -> u32 {
        range_of_hash(hash, self)
    }

    /// Range of a name; see [`range_of`].
    ///
    /// ```
    /// let r = shard::RangeCount::new(1).unwrap();
    /// assert_eq!(r.range_of("anything"), 0);
    /// ```
    #[inline]
    pub fn range_of(self, name: &str) -> u32 {
        range_of(name, self)
    }
}

impl TryFrom<u32> for RangeCount {
    type Error = RangeError;
    fn try_from(count: u32) -> Result<Self, RangeError> {
        Self::new(count)
    }
}

impl fmt::Display for RangeCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A set of ranges out of `R`: a bitset of `ceil(R / 64)` words (at most 8 KiB).
///
/// Text form ([`Display`](fmt::Display), [`RangeSet::parse`]): ascending runs separated by
/// commas, a run being `N` or `N-M` (inclusive), e.g. `0-31,64-95,200`. The empty set is
/// written `-` so that a log line or an annotation never carries an empty value.
/// `Display` always prints maximal runs (canonical form); the parser also accepts
/// adjacent runs (`0-3,4-7`) and `N-N`, but rejects anything overlapping, out of order,
/// out of bounds, reversed, or not plain decimal (signs, spaces, leading zeros).
///
/// ```
/// use shard::{RangeCount, RangeSet};
/// let count = RangeCount::new(128).unwrap();
/// let mut set = RangeSet::new(count);
/// for r in (0..32).chain(64..96) {
///     set.insert(r);
/// }
/// assert_eq!(set.to_string(), "0-31,64-95");
/// assert_eq!(RangeSet::parse("0-31,64-95", count).unwrap(), set);
/// assert_eq!(RangeSet::new(count).to_string(), "-");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RangeSet {
    count: RangeCount,
    words: Vec<u64>,
    len: u32,
}

impl RangeSet {
    /// The empty set. O(R / 64).
    ///
    /// ```
    /// let set = shard::RangeSet::new(shard::RangeCount::new(8).unwrap());
    /// assert!(set.is_empty());
    /// ```
    pub fn new(count: RangeCount) -> Self {
        Self {
            count,
            words: vec![0; count.0.div_ceil(64) as usize],
            len: 0,
        }
    }

    /// The set of all `R` ranges. O(R / 64).
    ///
    /// ```
    /// let set = shard::RangeSet::full(shard::RangeCount::new(100).unwrap());
    /// assert_eq!(set.len(), 100);
    /// assert_eq!(set.to_string(), "0-99");
    /// ```
    pub fn full(count: RangeCount) -> Self {
        let mut set = Self::new(count);
        set.words.fill(u64::MAX);
        let tail = count.0 % 64;
        if tail != 0 {
            if let Some(last) = set.words.last_mut() {
                *last = (1u64 << tail) - 1;
            }
        }
        set.len = count.0;
        set
    }

    /// The range count this set is drawn from.
    ///
    /// ```
    /// use shard::{RangeCount, RangeSet};
    /// let c = RangeCount::new(8).unwrap();
    /// assert_eq!(RangeSet::new(c).count(), c);
    /// ```
    #[inline]
    pub fn count(&self) -> RangeCount {
        self.count
    }

    /// Number of ranges in the set. O(1).
    ///
    /// ```
    /// let mut set = shard::RangeSet::new(shard::RangeCount::new(8).unwrap());
    /// set.insert(3);
    /// assert_eq!(set.len(), 1);
    /// ```
    #[inline]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set is empty. O(1).
    ///
    /// ```
    /// assert!(shard::RangeSet::new(shard::RangeCount::new(8).unwrap()).is_empty());
    /// ```
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `range` is in the set; `false` for a range out of bounds. O(1).
    ///
    /// ```
    /// let mut set = shard::RangeSet::new(shard::RangeCount::new(8).unwrap());
    /// set.insert(5);
    /// assert!(set.contains(5));
    /// assert!(!set.contains(4));
    /// assert!(!set.contains(1000));
    /// ```
    #[inline]
    pub fn contains(&self, range: u32) -> bool {
        self.words
            .get((range / 64) as usize)
            .is_some_and(|w| (w >> (range % 64)) & 1 != 0)
    }

    /// Adds `range`; returns whether it was absent. O(1).
    ///
    /// # Panics
    /// If `range >= R`: a range index comes from [`range_of`] or from a parsed set, so an
    /// out-of-bounds one is a bug in the caller, like an out-of-bounds slice index.
    ///
    /// ```
    /// let mut set = shard::RangeSet::new(shard::RangeCount::new(8).unwrap());
    /// assert!(set.insert(7));
    /// assert!(!set.insert(7));
    /// ```
    pub fn insert(&mut self, range: u32) -> bool {
        assert!(
            range < self.count.0,
            "range {range} out of bounds for {} ranges",
            self.count.0
        );
        let word = &mut self.words[(range / 64) as usize];
        let bit = 1u64 << (range % 64);
        let added = *word & bit == 0;
        *word |= bit;
        self.len += u32::from(added);
        added
    }

    /// Removes `range`; returns whether it was present (`false` when out of bounds). O(1).
    ///
    /// ```
    /// let mut set = shard::RangeSet::full(shard::RangeCount::new(8).unwrap());
    /// assert!(set.remove(2));
    /// assert!(!set.remove(2));
    /// assert_eq!(set.to_string(), "0-1,3-7");
    /// ```
    pub fn remove(&mut self, range: u32) -> bool {
        let Some(word) = self.words.get_mut((range / 64) as usize) else {
            return false;
        };
        let bit = 1u64 << (range % 64);
        let removed = *word & bit != 0;
        *word &= !bit;
        self.len -= u32::from(removed);
        removed
    }

    /// The ranges in ascending order. O(R / 64 + len) for a full pass.
    ///
    /// ```
    /// let set = shard::RangeSet::parse("1,3-4", shard::RangeCount::new(8).unwrap()).unwrap();
    /// assert_eq!(set.iter().collect::<Vec<_>>(), vec![1, 3, 4]);
    /// ```
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            words: &self.words,
            index: 0,
            current: self.words.first().copied().unwrap_or(0),
        }
    }

    /// Maximal runs of consecutive ranges, as inclusive `(first, last)` pairs, ascending.
    ///
    /// ```
    /// let set = shard::RangeSet::parse("0-3,4-7,9", shard::RangeCount::new(16).unwrap()).unwrap();
    /// assert_eq!(set.runs().collect::<Vec<_>>(), vec![(0, 7), (9, 9)]);
    /// ```
    pub fn runs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let mut iter = self.iter().peekable();
        std::iter::from_fn(move || {
            let first = iter.next()?;
            let mut last = first;
            while iter.next_if(|&r| r == last + 1).is_some() {
                last += 1;
            }
            Some((first, last))
        })
    }

    /// Ranges in `self` or `other`. O(R / 64).
    ///
    /// Errors with [`RangeError::CountMismatch`] when the two sets have different range counts.
    ///
    /// ```
    /// use shard::{RangeCount, RangeSet};
    /// let c = RangeCount::new(16).unwrap();
    /// let a = RangeSet::parse("0-3", c).unwrap();
    /// let b = RangeSet::parse("2-5", c).unwrap();
    /// assert_eq!(a.union(&b).unwrap().to_string(), "0-5");
    /// ```
    pub fn union(&self, other: &RangeSet) -> Result<RangeSet, RangeError> {
        self.combine(other, |a, b| a | b)
    }

    /// Ranges in `self` but not in `other`. O(R / 64).
    ///
    /// Errors with [`RangeError::CountMismatch`] when the two sets have different range counts.
    ///
    /// ```
    /// use shard::{RangeCount, RangeSet};
    /// let c = RangeCount::new(16).unwrap();
    /// let a = RangeSet::parse("0-7", c).unwrap();
    /// let b = RangeSet::parse("2-5", c).unwrap();
    /// assert_eq!(a.difference(&b).unwrap().to_string(), "0-1,6-7");
    /// ```
    pub fn difference(&self, other: &RangeSet) -> Result<RangeSet, RangeError> {
        self.combine(other, |a, b| a & !b)
    }

    /// Ranges in both `self` and `other`. O(R / 64).
    ///
    /// Errors with [`RangeError::CountMismatch`] when the two sets have different range counts.
    ///
    /// ```
    /// use shard::{RangeCount, RangeSet};
    /// let c = RangeCount::new(16).unwrap();
    /// let a = RangeSet::parse("0-7", c).unwrap();
    /// let b = RangeSet::parse("6-9", c).unwrap();
    /// assert_eq!(a.intersection(&b).unwrap().to_string(), "6-7");
    /// ```
    pub fn intersection(&self, other: &RangeSet) -> Result<RangeSet, RangeError> {
        self.combine(other, |a, b| a & b)
    }

    fn combine(
        &self,
        other: &RangeSet,
        op: impl Fn(u64, u64) -> u64,
    ) -> Result<RangeSet, RangeError> {
        if self.count != other.count {
            return Err(RangeError::CountMismatch(self.count.0, other.count.0));
        }
        let words: Vec<u64> = self
            .words
            .iter()
            .zip(&other.words)
            .map(|(&a, &b)| op(a, b))
            .collect();
        let len = words.iter().map(|w| w.count_ones()).sum();
        Ok(RangeSet {
            count: self.count,
            words,
            len,
        })
    }

    /// The raw bitset words (bit `r % 64` of word `r / 64` is range `r`); used by the
    /// [`EventFilter`](crate::EventFilter) to build its lookup table.
    ///
    /// ```
    /// use shard::{RangeCount, RangeSet};
    /// let set = RangeSet::parse("0,65", RangeCount::new(100).unwrap()).unwrap();
    /// assert_eq!(set.words(), [1, 2]);
    /// ```
    #[inline]
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Parses the text form (see the type docs) for `count` ranges. O(length of text + R / 64).
    ///
    /// ```
    /// use shard::{RangeCount, RangeError, RangeSet};
    /// let c = RangeCount::new(256).unwrap();
    /// assert_eq!(RangeSet::parse("0-31,64-95", c).unwrap().len(), 64);
    /// assert!(RangeSet::parse("-", c).unwrap().is_empty());
    /// assert_eq!(
    ///     RangeSet::parse("0-31,300", c),
    ///     Err(RangeError::OutOfBounds { token: "300".into(), max: 255 })
    /// );
    /// assert!(matches!(RangeSet::parse("5-3", c), Err(RangeError::Reversed { .. })));
    /// assert!(matches!(RangeSet::parse("0-9,5", c), Err(RangeError::NotAscending { .. })));
    /// assert!(matches!(RangeSet::parse("1, 2", c), Err(RangeError::InvalidItem { .. })));
    /// ```
    pub fn parse(text: &str, count: RangeCount) -> Result<RangeSet, RangeError> {
        let mut set = RangeSet::new(count);
        if text == "-" {
            return Ok(set);
        }
        if text.is_empty() {
            return Err(RangeError::EmptyText);
        }
        let max = count.0 - 1;
        let mut next_allowed: u32 = 0;
        let mut position = 0;
        for token in text.split(',') {
            if token.is_empty() {
                return Err(RangeError::EmptyItem { position });
            }
            position += token.len() + 1;
            let owned = || token.to_owned();
            let (first, last) = match token.split_once('-') {
                Some((a, b)) => (parse_number(a, token)?, parse_number(b, token)?),
                None => {
                    let n = parse_number(token, token)?;
                    (n, n)
                }
            };
            if first > last {
                return Err(RangeError::Reversed { token: owned() });
            }
            if last > u64::from(max) {
                return Err(RangeError::OutOfBounds {
                    token: owned(),
                    max,
                });
            }
            // Both fit in u32 now: last <= max < 65536.
            let (first, last) = (first as u32, last as u32);
            if first < next_allowed {
                return Err(RangeError::NotAscending { token: owned() });
            }
            for r in first..=last {
                set.insert(r);
            }
            next_allowed = last + 1;
        }
        Ok(set)
    }
}

/// Canonical decimal: digits only, no leading zero (except `0` itself), at most 10 digits.
fn parse_number(digits: &str, token: &str) -> Result<u64, RangeError> {
    let invalid = || RangeError::InvalidItem {
        token: token.to_owned(),
    };
    let canonical = !digits.is_empty()
        && digits.len() <= 10
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return Err(invalid());
    }
    digits.parse().map_err(|_| invalid())
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, (first, last)) in self.runs().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RangeSet({}/{}: {self})", self.len, self.count.0)
    }
}

impl<'a> IntoIterator for &'a RangeSet {
    type Item = u32;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Ascending iterator over a [`RangeSet`]; see [`RangeSet::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    words: &'a [u64],
    index: usize,
    current: u64,
}

impl Iterator for Iter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        loop {
            if self.current != 0 {
                let bit = self.current.trailing_zeros();
                self.current &= self.current - 1;
                return Some(self.index as u32 * 64 + bit);
            }
            self.index += 1;
            self.current = *self.words.get(self.index)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count(n: u32) -> RangeCount {
        RangeCount::new(n).unwrap()
    }

    #[test]
    fn range_formula_edges() {
        for n in [1, 2, 3, 7, 64, 256, 1000, 65536] {
            let c = count(n);
            assert_eq!(range_of_hash(0, c), 0);
            assert_eq!(range_of_hash(u64::MAX, c), n - 1);
        }
        // Equal slices: for R = 4 the boundaries are at multiples of 2^62.
        let c = count(4);
        assert_eq!(range_of_hash((1 << 62) - 1, c), 0);
        assert_eq!(range_of_hash(1 << 62, c), 1);
        assert_eq!(range_of_hash(3 << 62, c), 3);
    }

    #[test]
    fn hash_is_xxh3_of_bytes() {
        assert_eq!(hash_name(""), xxhash_rust::xxh3::xxh3_64(b""));
        assert_eq!(hash_name("abc"), xxhash_rust::xxh3::xxh3_64(b"abc"));
        // XXH3_64bits("") from the xxHash reference: a dependency upgrade that changed
        // the hash would move every namespace to another range.
        assert_eq!(hash_name(""), 0x2D06_8005_38D3_94C2);
    }

    #[test]
    fn counts_validated() {
        assert_eq!(RangeCount::new(0), Err(RangeError::InvalidCount(0)));
        assert!(RangeCount::new(1).is_ok());
        assert!(RangeCount::new(65536).is_ok());
        assert_eq!(RangeCount::new(65537), Err(RangeError::InvalidCount(65537)));
    }

    #[test]
    fn display_forms() {
        let c = count(200);
        let mut s = RangeSet::new(c);
        assert_eq!(s.to_string(), "-");
        s.insert(5);
        assert_eq!(s.to_string(), "5");
        s.insert(6);
        s.insert(199);
        assert_eq!(s.to_string(), "5-6,199");
        assert_eq!(RangeSet::full(c).to_string(), "0-199");
        assert_eq!(RangeSet::full(count(64)).to_string(), "0-63");
        assert_eq!(RangeSet::full(count(1)).to_string(), "0");
        assert_eq!(format!("{s:?}"), "RangeSet(3/200: 5-6,199)");
    }

    #[test]
    fn parser_rejects_garbage_naming_the_token() {
        let c = count(256);
        let cases: &[(&str, RangeError)] = &[
            ("", RangeError::EmptyText),
            (",", RangeError::EmptyItem { position: 0 }),
            ("1,,2", RangeError::EmptyItem { position: 2 }),
            ("1,", RangeError::EmptyItem { position: 2 }),
            (" 1", RangeError::InvalidItem { token: " 1".into() }),
            ("1 ", RangeError::InvalidItem { token: "1 ".into() }),
            ("+1", RangeError::InvalidItem { token: "+1".into() }),
            ("01", RangeError::InvalidItem { token: "01".into() }),
            ("1-", RangeError::InvalidItem { token: "1-".into() }),
            ("-1", RangeError::InvalidItem { token: "-1".into() }),
            (
                "1-2-3",
                RangeError::InvalidItem {
                    token: "1-2-3".into(),
                },
            ),
            ("a", RangeError::InvalidItem { token: "a".into() }),
            (
                "1;2",
                RangeError::InvalidItem {
                    token: "1;2".into(),
                },
            ),
            ("٣", RangeError::InvalidItem { token: "٣".into() }),
            (
                "99999999999",
                RangeError::InvalidItem {
                    token: "99999999999".into(),
                },
            ),
            (
                "4294967296",
                RangeError::OutOfBounds {
                    token: "4294967296".into(),
                    max: 255,
                },
            ),
            (
                "256",
                RangeError::OutOfBounds {
                    token: "256".into(),
                    max: 255,
                },
            ),
            (
                "250-256",
                RangeError::OutOfBounds {
                    token: "250-256".into(),
                    max: 255,
                },
            ),
            (
                "9-3",
                RangeError::Reversed {
                    token: "9-3".into(),
                },
            ),
            ("3,3", RangeError::NotAscending { token: "3".into() }),
            ("5,3", RangeError::NotAscending { token: "3".into() }),
            (
                "0-10,10-12",
                RangeError::NotAscending {
                    token: "10-12".into(),
                },
            ),
            ("--", RangeError::InvalidItem { token: "--".into() }),
        ];
        for (text, err) in cases {
            assert_eq!(RangeSet::parse(text, c).as_ref(), Err(err), "{text:?}");
            // Every message names the token it complains about.
            if let RangeError::InvalidItem { token } | RangeError::Reversed { token } = err {
                assert!(err.to_string().contains(token.as_str()));
            }
        }
        // Accepted non-canonical but unambiguous forms.
        assert_eq!(RangeSet::parse("0-3,4-7", c).unwrap().to_string(), "0-7");
        assert_eq!(RangeSet::parse("4-4", c).unwrap().to_string(), "4");
    }

    #[test]
    fn set_ops_reject_mismatched_counts() {
        let a = RangeSet::new(count(8));
        let b = RangeSet::new(count(16));
        assert_eq!(a.union(&b), Err(RangeError::CountMismatch(8, 16)));
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn insert_out_of_bounds_panics() {
        RangeSet::new(count(8)).insert(8);
    }

    fn arb_set() -> impl Strategy<Value = (RangeCount, Vec<u32>)> {
        (1u32..=300).prop_flat_map(|n| (Just(count(n)), proptest::collection::vec(0..n, 0..64)))
    }

    proptest! {
        #[test]
        fn display_parse_round_trip((c, members) in arb_set()) {
            let mut set = RangeSet::new(c);
            for r in &members {
                set.insert(*r);
            }
            let text = set.to_string();
            prop_assert_eq!(RangeSet::parse(&text, c).unwrap(), set.clone());
            let mut sorted = members.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(set.iter().collect::<Vec<_>>(), sorted.clone());
            prop_assert_eq!(set.len() as usize, sorted.len());
        }

        #[test]
        fn set_ops_match_model((c, a) in arb_set(), b in proptest::collection::vec(0u32..300, 0..64)) {
            let b: Vec<u32> = b.into_iter().filter(|&r| r < c.get()).collect();
            let (mut sa, mut sb) = (RangeSet::new(c), RangeSet::new(c));
            a.iter().for_each(|&r| { sa.insert(r); });
            b.iter().for_each(|&r| { sb.insert(r); });
            let model_a: std::collections::BTreeSet<u32> = a.iter().copied().collect();
            let model_b: std::collections::BTreeSet<u32> = b.iter().copied().collect();
            let u = sa.union(&sb).unwrap();
            prop_assert_eq!(u.iter().collect::<Vec<_>>(), model_a.union(&model_b).copied().collect::<Vec<_>>());
            prop_assert_eq!(u.len() as usize, model_a.union(&model_b).count());
            let d = sa.difference(&sb).unwrap();
            prop_assert_eq!(d.iter().collect::<Vec<_>>(), model_a.difference(&model_b).copied().collect::<Vec<_>>());
            let i = sa.intersection(&sb).unwrap();
            prop_assert_eq!(i.iter().collect::<Vec<_>>(), model_a.intersection(&model_b).copied().collect::<Vec<_>>());
            for r in &b {
                sa.remove(*r);
            }
            prop_assert_eq!(sa, d);
        }

        #[test]
        fn parser_never_panics(text in "[-,0-9a ]{0,24}") {
            let _ = RangeSet::parse(&text, count(1000));
        }

        #[test]
        fn ranges_are_equal_slices(h in any::<u64>(), n in 1u32..=65536) {
            let c = count(n);
            let r = range_of_hash(h, c);
            prop_assert!(r < n);
            // h lies in [r * 2^64 / n, (r + 1) * 2^64 / n).
            let lo = (u128::from(r) << 64).div_ceil(u128::from(n));
            let hi = (u128::from(r + 1) << 64).div_ceil(u128::from(n));
            prop_assert!(lo <= u128::from(h) && u128::from(h) < hi);
        }
    }
}
