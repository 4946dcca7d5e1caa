//! Who should own each range: a deterministic, balanced, sticky assignment of the `R`
//! ranges to the live members.
//!
//! Every replica computes the assignment from the same inputs (the live member set and the
//! current owners as recorded in the range Leases) and gets the same answer, so no replica
//! needs to be told what to claim. The algorithm:
//!
//! 1. Members are deduplicated and put in *natural order* (`block-controller-2` before
//!    `block-controller-10`); the order of the input does not matter.
//! 2. Current owners that are not live members count as no owner.
//! 3. Quotas: with `N` members each gets `⌊R/N⌋`, and `R mod N` of them get one more.
//!    The extra ones go to the members that already hold the most ranges (ties: natural
//!    order), so a balanced assignment stays put.
//! 4. A member over its quota releases its highest-numbered ranges until it is at quota.
//! 5. Unowned ranges, ascending, go to the members under quota, in natural order, each
//!    filled to its quota before the next (so a fresh assignment is contiguous blocks:
//!    member 0 gets `0-k`, member 1 the next block, and so on).
//!
//! Guarantees (checked by property tests over random member sets):
//! * **deterministic**: a function of the member *set* and the current owners;
//! * **balanced**: every member owns `⌊R/N⌋` or `⌈R/N⌉` ranges, every range has an owner
//!   when there is at least one member;
//! * **minimal movement**: from a balanced assignment, adding one member moves at most
//!   `⌈R/(N+1)⌉` ranges (only to the newcomer), and removing one member moves only the
//!   ranges it owned.

use std::cmp::Ordering;
use std::collections::HashMap;

use thiserror::Error;

use crate::ranges::{RangeCount, RangeSet};

const UNOWNED: u32 = u32::MAX;

/// Errors of [`Assignment`] computation; they name bad input and are not retryable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AssignmentError {
    /// A member identity is the empty string (an empty Lease holder means "no holder").
    #[error("empty member identity")]
    EmptyMember,
    /// The current-owner list does not have one entry per range.
    #[error("current owners list has {got} entries, expected one per range ({expected})")]
    CurrentLength {
        /// The range count.
        expected: u32,
        /// The length given.
        got: usize,
    },
}

/// The owner of every range, as computed by [`Assignment::balanced`] or
/// [`Assignment::rebalance`]. See the [module docs](self) for the algorithm and guarantees.
///
/// ```
/// use shard::{Assignment, RangeCount};
/// let count = RangeCount::new(8).unwrap();
/// let two = Assignment::balanced(count, &["block-controller-1", "block-controller-0"]).unwrap();
/// assert_eq!(two.ranges_of("block-controller-0").to_string(), "0-3");
/// assert_eq!(two.ranges_of("block-controller-1").to_string(), "4-7");
///
/// // A third member takes a few ranges from each; nothing else moves.
/// let three = two.rebalance(&["block-controller-0", "block-controller-1", "block-controller-2"]);
/// assert_eq!(three.ranges_of("block-controller-0").to_string(), "0-2");
/// assert_eq!(three.ranges_of("block-controller-1").to_string(), "4-6");
/// assert_eq!(three.ranges_of("block-controller-2").to_string(), "3,7");
/// assert_eq!(three.moved_from(&two).to_string(), "3,7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    count: RangeCount,
    /// Deduplicated, in natural order.
    members: Vec<String>,
    /// Per range: index into `members`, or `UNOWNED` (only when there are no members).
    owners: Vec<u32>,
}

impl Assignment {
    /// Assignment from scratch (no current owners): contiguous balanced blocks in natural
    /// member order. O(R + N log N).
    ///
    /// ```
    /// use shard::{Assignment, RangeCount};
    /// let a = Assignment::balanced(RangeCount::new(10).unwrap(), &["a", "b", "c"]).unwrap();
    /// assert_eq!(a.ranges_of("a").to_string(), "0-3");
    /// assert_eq!(a.ranges_of("b").to_string(), "4-6");
    /// assert_eq!(a.ranges_of("c").to_string(), "7-9");
    /// ```
    pub fn balanced<M: AsRef<str>>(
        count: RangeCount,
        members: &[M],
    ) -> Result<Assignment, AssignmentError> {
        Self::compute(count, members, None::<&[Option<&str>]>)
    }

    /// Assignment that keeps the `current` owners (one entry per range, `None` for a range
    /// without holder) wherever balance allows. Owners that are not in `members` count as
    /// no owner. O(R + N log N).
    ///
    /// ```
    /// use shard::{Assignment, RangeCount};
    /// let count = RangeCount::new(4).unwrap();
    /// let current = [Some("b"), Some("b"), Some("gone"), None];
    /// let a = Assignment::with_current(count, &["a", "b"], &current).unwrap();
    /// assert_eq!(a.ranges_of("b").to_string(), "0-1");
    /// assert_eq!(a.ranges_of("a").to_string(), "2-3");
    /// ```
    pub fn with_current<M: AsRef<str>, C: AsRef<str>>(
        count: RangeCount,
        members: &[M],
        current: &[Option<C>],
    ) -> Result<Assignment, AssignmentError> {
        if current.len() != count.get() as usize {
            return Err(AssignmentError::CurrentLength {
                expected: count.get(),
                got: current.len(),
            });
        }
        Self::compute(count, members, Some(current))
    }

    /// The assignment for a new member set, starting from this one as the current owners.
    /// O(R + N log N).
    ///
    /// # Panics
    /// If a member identity is empty (see [`AssignmentError::EmptyMember`]); use
    /// [`Assignment::with_current`] to get an error instead.
    ///
    /// ```
    /// use shard::{Assignment, RangeCount};
    /// let a = Assignment::balanced(RangeCount::new(6).unwrap(), &["a", "b", "c"]).unwrap();
    /// let b = a.rebalance(&["a", "c"]); // "b" left: only its ranges move
    /// assert_eq!(b.moved_from(&a), a.ranges_of("b"));
    /// ```
    pub fn rebalance<M: AsRef<str>>(&self, members: &[M]) -> Assignment {
        let current: Vec<Option<&str>> = self.owners().collect();
        Self::compute(self.count, members, Some(&current[..]))
            .expect("members were validated by the caller: non-empty identities")
    }

    fn compute<M: AsRef<str>, C: AsRef<str>>(
        count: RangeCount,
        members: &[M],
        current: Option<&[Option<C>]>,
    ) -> Result<Assignment, AssignmentError> {
        let mut names: Vec<&str> = members.iter().map(AsRef::as_ref).collect();
        if names.iter().any(|m| m.is_empty()) {
            return Err(AssignmentError::EmptyMember);
        }
        names.sort_unstable_by(|a, b| natural_cmp(a, b));
        names.dedup();
        let r = count.get() as usize;
        let n = names.len();
        let mut owners = vec![UNOWNED; r];
        if n == 0 {
            return Ok(Assignment {
                count,
                members: Vec::new(),
                owners,
            });
        }

        // 2. Current owners that are live members.
        let mut held = vec![0u32; n];
        if let Some(current) = current {
            let index: HashMap<&str, u32> = names
                .iter()
                .enumerate()
                .map(|(i, m)| (*m, i as u32))
                .collect();
            for (slot, owner) in owners.iter_mut().zip(current) {
                if let Some(&m) = owner.as_ref().and_then(|o| index.get(o.as_ref())) {
                    *slot = m;
                    held[m as usize] += 1;
                }
            }
        }

        // 3. Quotas: the `R mod N` extra ranges go to the members holding most.
        let base = (r / n) as u32;
        let extra = r % n;
        let mut by_holding: Vec<usize> = (0..n).collect();
        // `names` is in natural order, so index order breaks ties by natural order.
        by_holding.sort_by(|&a, &b| held[b].cmp(&held[a]).then(a.cmp(&b)));
        let mut quota = vec![base; n];
        for &m in &by_holding[..extra] {
            quota[m] += 1;
        }

        // 4. Over-quota members release their highest ranges.
        for slot in owners.iter_mut().rev() {
            if *slot != UNOWNED {
                let m = *slot as usize;
                if held[m] > quota[m] {
                    held[m] -= 1;
                    *slot = UNOWNED;
                }
            }
        }

        // 5. Unowned ranges, ascending, fill under-quota members in natural order.
        let mut filler = 0usize;
        for slot in owners.iter_mut().filter(|s| **s == UNOWNED) {
            while held[filler] >= quota[filler] {
                filler += 1; // Cannot run past `n`: sum(quota) == R.
            }
            *slot = filler as u32;
            held[filler] += 1;
        }

        Ok(Assignment {
            count,
            members: names.into_iter().map(str::to_owned).collect(),
            owners,
        })
    }

    /// The range count.
    ///
    /// ```
    /// use shard::{Assignment, RangeCount};
    /// let c = RangeCount::new(8).unwrap();
    /// assert_eq!(Assignment::balanced(c, &["a"]).unwrap().count(), c);
    /// ```
    pub fn count(&self) -> RangeCount {
        self.count
    }

    /// The live members, deduplicated, in natural order.
    ///
    /// ```
    /// use shard::{Assignment, RangeCount};
    /// let a = Assignment::balanced(RangeCount::new(4).unwrap(), &["m-10", "m-2", "m-2"]).unwrap();
    /// assert_eq!(a.members(), ["m-2", "m-10"]);
    /// ```
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Owner of `range`; `None` when there are no members or the range is out of bounds. O(1).
    ///
    /// ```
    /// use shard::{Assignment, RangeCount};
    /// let a = Assignment::balanced(RangeCount::new(4).unwrap(), &["a"]).unwrap();
    /// assert_eq!(a.owner(3), Some("a"));
    /// assert_eq!(a.owner(4), None);
    /// ```
    pub fn owner(&self, range: u32) -> Option<&str> {
        let m = *self.owners.get(range as usize)?;
        self.members.get(m as usize).map(String::as_str)
    }

    /// The owner of every range, in range order (the shape [`Assignment::with_current`]
    /// takes). O(R).
    ///
    /// ```
    /// use shard::{Assignment, RangeCount};
    /// let a = Assignment::balanced(RangeCount::new(2).unwrap(), &["a", "b"]).unwrap();
    /// assert_eq!(a.owners().collect::<Vec<_>>(), [Some("a"), Some("b")]);
    /// ```
    pub fn owners(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.owners
            .iter()
            .map(|&m| self.members.get(m as usize).map(String::as_str))
    }

    /// The ranges `member` should own (empty for a non-member). O(R).
    ///
    /// ```
    /// use shard::{Assignment, RangeCount};
    /// let a = Assignment::balanced(RangeCount::new(4).unwrap(), &["a", "b"]).unwrap();
    /// assert_eq!(a.ranges_of("b").to_string(), "2-3");
    /// assert!(a.ranges_of("z").is_empty());
    /// ```
    pub fn ranges_of(&self, member: &str) -> RangeSet {
        let mut set = RangeSet::new(self.count);
        if let Some(m) = self.members.iter().position(|x| x == member) {
            for (r, _) in self
                .owners
                .iter()
                .enumerate()
                .filter(|(_, &o)| o as usize == m)
            {
                set.insert(r as u32);
            }
        }
        set
    }

    /// Ranges whose owner differs between `previous` and `self` (what a rebalance moves).
    /// Ranges out of `previous`'s bounds count as moved. O(R).
    ///
    /// ```
    /// use shard::{Assignment, RangeCount};
    /// let c = RangeCount::new(4).unwrap();
    /// let a = Assignment::balanced(c, &["a", "b"]).unwrap();
    /// assert!(a.rebalance(&["b", "a"]).moved_from(&a).is_empty());
    /// ```
    pub fn moved_from(&self, previous: &Assignment) -> RangeSet {
        let mut set = RangeSet::new(self.count);
        for (r, now) in self.owners().enumerate() {
            if previous.owner(r as u32) != now {
                set.insert(r as u32);
            }
        }
        set
    }
}

/// Natural order: runs of ASCII digits compare by numeric value, other bytes by value;
/// names equal under that (`m-01` vs `m-1`) fall back to plain byte order, so the order is
/// total and deterministic.
///
/// ```
/// use std::cmp::Ordering;
/// assert_eq!(shard::natural_cmp("block-controller-2", "block-controller-10"), Ordering::Less);
/// assert_eq!(shard::natural_cmp("a", "a"), Ordering::Equal);
/// ```
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    while let (Some(&cx), Some(&cy)) = (x.first(), y.first()) {
        if cx.is_ascii_digit() && cy.is_ascii_digit() {
            let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
            let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
            let (dx, rx) = x.split_at(nx);
            let (dy, ry) = y.split_at(ny);
            let tx = trim_zeros(dx);
            let ty = trim_zeros(dy);
            let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
            if ord != Ordering::Equal {
                return ord;
            }
            (x, y) = (rx, ry);
        } else {
            if cx != cy {
                return cx.cmp(&cy);
            }
            (x, y) = (&x[1..], &y[1..]);
        }
    }
    x.len().cmp(&y.len()).then_with(|| a.cmp(b))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count(n: u32) -> RangeCount {
        RangeCount::new(n).unwrap()
    }

    fn check_balanced(a: &Assignment) -> Result<(), TestCaseError> {
        let r = a.count().get() as usize;
        let n = a.members().len();
        if n == 0 {
            prop_assert!(a.owners().all(|o| o.is_none()));
            return Ok(());
        }
        let mut per: HashMap<&str, usize> = a.members().iter().map(|m| (m.as_str(), 0)).collect();
        for o in a.owners() {
            let o = o.expect("every range owned when there are members");
            *per.get_mut(o).expect("owner is a member") += 1;
        }
        for (m, k) in per {
            prop_assert!(
                k == r / n || k == r.div_ceil(n),
                "{m} owns {k} of {r} with {n} members"
            );
        }
        Ok(())
    }

    fn member_names() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(
            prop_oneof![
                (0u32..40).prop_map(|i| format!("block-controller-{i}")),
                "[a-c]{1,3}",
            ],
            1..12,
        )
    }

    fn arb_count() -> impl Strategy<Value = RangeCount> {
        prop_oneof![1u32..=70, Just(256), Just(1000), Just(4096)].prop_map(count)
    }

    fn dedup(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["m-10", "m-2", "m-01", "m-1", "a", "m-", "m-1x", "b1", "b01"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["a", "b01", "b1", "m-", "m-01", "m-1", "m-1x", "m-2", "m-10"]
        );
    }

    #[test]
    fn no_members_no_owners() {
        let a = Assignment::balanced(count(4), &[] as &[&str]).unwrap();
        assert!(a.owners().all(|o| o.is_none()));
        assert!(a.ranges_of("x").is_empty());
    }

    #[test]
    fn errors() {
        assert_eq!(
            Assignment::balanced(count(4), &["a", ""]),
            Err(AssignmentError::EmptyMember)
        );
        assert_eq!(
            Assignment::with_current(count(4), &["a"], &[Some("a")]),
            Err(AssignmentError::CurrentLength {
                expected: 4,
                got: 1
            })
        );
    }

    #[test]
    fn more_members_than_ranges() {
        let a = Assignment::balanced(count(2), &["a", "b", "c"]).unwrap();
        assert_eq!(a.owners().collect::<Vec<_>>(), [Some("a"), Some("b")]);
        let b = a.rebalance(&["a", "b", "c", "d"]);
        assert!(b.moved_from(&a).is_empty());
        let c = b.rebalance(&["b", "c", "d"]);
        assert_eq!(c.moved_from(&b).to_string(), "0");
        assert_eq!(c.owner(0), Some("c"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn deterministic_in_any_order(
            c in arb_count(),
            members in member_names(),
            seed in any::<u64>(),
            owner_seed in any::<u64>(),
        ) {
            // Random current owners, including non-members and holes.
            let pool: Vec<String> = members.iter().cloned().chain(["gone".to_string()]).collect();
            let mut x = owner_seed | 1;
            let current: Vec<Option<&str>> = (0..c.get())
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let pick = (x >> 32) as usize % (pool.len() + 1);
                    pool.get(pick).map(String::as_str)
                })
                .collect();
            let a = Assignment::with_current(c, &members, &current).unwrap();
            let mut shuffled = members.clone();
            // Deterministic shuffle from the seed, plus a duplicate.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            shuffled.push(members[0].clone());
            let b = Assignment::with_current(c, &shuffled, &current).unwrap();
            prop_assert_eq!(&a, &b);
            check_balanced(&a)?;
            // Sticky: every member keeps min(what it held, its share) of its ranges.
            for m in a.members() {
                let share = a.ranges_of(m).len() as usize;
                let held = current.iter().filter(|o| **o == Some(m.as_str())).count();
                let kept = current
                    .iter()
                    .zip(a.owners())
                    .filter(|(o, now)| **o == Some(m.as_str()) && *now == Some(m.as_str()))
                    .count();
                prop_assert_eq!(kept, held.min(share), "{}", m);
            }
            let fresh = Assignment::balanced(c, &shuffled).unwrap();
            prop_assert_eq!(fresh, Assignment::balanced(c, &members).unwrap());
        }

        #[test]
        fn from_scratch_is_balanced(c in arb_count(), members in member_names()) {
            check_balanced(&Assignment::balanced(c, &members).unwrap())?;
        }

        #[test]
        fn adding_a_member_moves_little(
            c in arb_count(),
            members in member_names(),
            newcomer in "[a-z-]{1,8}[0-9]{0,2}",
        ) {
            let members = dedup(members);
            prop_assume!(!members.contains(&newcomer));
            let before = Assignment::balanced(c, &members).unwrap();
            // Go through a rebalance first so the starting point is not only the fresh layout.
            let mut grown = members.clone();
            grown.push(newcomer.clone());
            let after = before.rebalance(&grown);
            check_balanced(&after)?;
            let moved = after.moved_from(&before);
            let n1 = grown.len() as u32;
            prop_assert!(moved.len() <= c.get().div_ceil(n1), "moved {} > ceil({}/{})", moved.len(), c.get(), n1);
            // Everything that moved went to the newcomer.
            for r in &moved {
                prop_assert_eq!(after.owner(r), Some(newcomer.as_str()));
            }
            // And once more from that state.
            let mut grown2 = grown.clone();
            grown2.push(format!("{newcomer}-x"));
            let after2 = after.rebalance(&grown2);
            prop_assert!(after2.moved_from(&after).len() <= c.get().div_ceil(n1 + 1));
        }

        #[test]
        fn removing_a_member_moves_only_its_ranges(
            c in arb_count(),
            members in member_names(),
            pick in any::<prop::sample::Index>(),
            extra in "[a-z]{1,4}",
        ) {
            let mut members = dedup(members);
            if !members.contains(&extra) {
                members.push(extra);
            }
            // Start from a rebalanced (not fresh) state.
            let start = Assignment::balanced(c, &members[1..]).unwrap().rebalance(&members);
            let gone = members.remove(pick.index(members.len()));
            let after = start.rebalance(&members);
            check_balanced(&after)?;
            prop_assert_eq!(after.moved_from(&start), start.ranges_of(&gone));
        }
    }
}
