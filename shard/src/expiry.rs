//! The expiry queue: one pending deadline per key, popped when due.
//!
//! An indexed binary min-heap of `(deadline, key)` packed in one `u64` (so ties between
//! equal deadlines pop in key order, deterministically), plus the heap position of every
//! key, so that reschedule and cancel are O(log n) without leaving stale items behind:
//! memory is 8 bytes per scheduled key plus 4 bytes per key of the key space (both kept
//! in fixed-size segments, so growth copies nothing and leaves no slack to speak of).
//!
//! Keys are small dense integers, such as the [`EntryId`](crate::EntryId)s of a
//! [`NamespaceIndex`](crate::NamespaceIndex), which embeds one of these queues. Time is
//! never read here: deadlines and "now" are passed in as Unix seconds.

use thiserror::Error;

use crate::grow::SegVec;

const NOT_QUEUED: u32 = u32::MAX;

/// Errors of this module; they name bad input and are not retryable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExpiryError {
    /// A deadline outside what [`Deadline`] can hold (1970-01-01 to 2106-02-07).
    #[error("deadline {0} (unix seconds) is outside 0..=4294967295")]
    OutOfRange(i64),
}

/// A deadline in whole seconds since the Unix epoch, 1970-01-01T00:00:00Z to
/// 2106-02-07T06:28:15Z.
///
/// Four bytes, because unlock deadlines are whole seconds (RFC 3339 annotations without
/// fractions) and the index keeps one per namespace within a tight memory budget.
///
/// ```
/// use shard::Deadline;
/// let d = Deadline::from_unix_secs(1_700_000_000).unwrap();
/// assert_eq!(d.as_unix_secs(), 1_700_000_000);
/// assert!(Deadline::from_unix_secs(-1).is_err());
/// assert_eq!(Deadline::saturating_from_unix_secs(i64::MAX), Deadline::MAX);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(u32);

impl Deadline {
    /// The earliest deadline, the Unix epoch.
    ///
    /// ```
    /// assert_eq!(shard::Deadline::MIN.as_unix_secs(), 0);
    /// ```
    pub const MIN: Deadline = Deadline(0);
    /// The latest deadline, 2106-02-07T06:28:15Z.
    ///
    /// ```
    /// assert_eq!(shard::Deadline::MAX.as_unix_secs(), 4_294_967_295); // 2106-02-07T06:28:15Z
    /// ```
    pub const MAX: Deadline = Deadline(u32::MAX);

    /// A deadline at `secs` seconds since the Unix epoch; errors outside the range.
    ///
    /// ```
    /// use shard::{Deadline, ExpiryError};
    /// assert!(Deadline::from_unix_secs(1_700_000_000).is_ok());
    /// assert_eq!(Deadline::from_unix_secs(1 << 40), Err(ExpiryError::OutOfRange(1 << 40)));
    /// ```
    pub fn from_unix_secs(secs: i64) -> Result<Deadline, ExpiryError> {
        u32::try_from(secs)
            .map(Deadline)
            .map_err(|_| ExpiryError::OutOfRange(secs))
    }

    /// A deadline at `secs`, clamped into the range (for "never" or "long ago" inputs).
    ///
    /// ```
    /// use shard::Deadline;
    /// assert_eq!(Deadline::saturating_from_unix_secs(-5), Deadline::MIN);
    /// ```
    pub fn saturating_from_unix_secs(secs: i64) -> Deadline {
        Deadline(secs.clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// Seconds since the Unix epoch.
    ///
    /// ```
    /// assert_eq!(shard::Deadline::from_unix_secs(42).unwrap().as_unix_secs(), 42);
    /// ```
    pub fn as_unix_secs(self) -> i64 {
        i64::from(self.0)
    }

    /// Whether the deadline has passed at `now` (Unix seconds): `deadline <= now`.
    ///
    /// ```
    /// let d = shard::Deadline::from_unix_secs(100).unwrap();
    /// assert!(d.is_due(100));
    /// assert!(!d.is_due(99));
    /// ```
    pub fn is_due(self, now: i64) -> bool {
        i64::from(self.0) <= now
    }
}

/// One pending deadline per `u32` key; see the [module docs](self).
///
/// ```
/// use shard::{Deadline, ExpiryQueue};
/// let at = |s| Deadline::from_unix_secs(s).unwrap();
/// let mut q = ExpiryQueue::new();
/// q.schedule(7, at(300));
/// q.schedule(3, at(100));
/// q.schedule(5, at(200));
/// q.schedule(7, at(50)); // reschedule
/// q.cancel(5);
/// assert_eq!(q.pop_due(99), Some((7, at(50))));
/// assert_eq!(q.pop_due(99), None);
/// assert_eq!(q.drain_due(1000).collect::<Vec<_>>(), [(3, at(100))]);
/// assert!(q.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct ExpiryQueue {
    /// Min-heap of `deadline << 32 | key`.
    heap: SegVec<u64>,
    /// Per key: its index in `heap`, or `NOT_QUEUED`.
    positions: SegVec<u32>,
}

impl Default for ExpiryQueue {
    fn default() -> ExpiryQueue {
        ExpiryQueue::new()
    }
}

#[inline]
fn pack(deadline: Deadline, key: u32) -> u64 {
    (u64::from(deadline.0) << 32) | u64::from(key)
}

#[inline]
fn key_of(item: u64) -> u32 {
    item as u32
}

#[inline]
fn deadline_of(item: u64) -> Deadline {
    Deadline((item >> 32) as u32)
}

impl ExpiryQueue {
    /// An empty queue. O(1), no allocation.
    ///
    /// ```
    /// let q = shard::ExpiryQueue::new();
    /// assert!(q.is_empty() && q.peek().is_none());
    /// ```
    pub const fn new() -> ExpiryQueue {
        ExpiryQueue {
            heap: SegVec::new(0),
            positions: SegVec::new(NOT_QUEUED),
        }
    }

    /// Number of scheduled keys. O(1).
    ///
    /// ```
    /// let mut q = shard::ExpiryQueue::new();
    /// q.schedule(3, shard::Deadline::MAX);
    /// assert_eq!(q.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is scheduled. O(1).
    ///
    /// ```
    /// assert!(shard::ExpiryQueue::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Schedules `key` at `deadline`, replacing (rescheduling) any deadline it had, which
    /// is returned. O(log n); the key space grows to `key + 1` if needed (amortized O(1)).
    ///
    /// ```
    /// use shard::{Deadline, ExpiryQueue};
    /// let mut q = ExpiryQueue::new();
    /// assert_eq!(q.schedule(1, Deadline::MAX), None);
    /// assert_eq!(q.schedule(1, Deadline::MIN), Some(Deadline::MAX));
    /// assert_eq!(q.deadline(1), Some(Deadline::MIN));
    /// ```
    pub fn schedule(&mut self, key: u32, deadline: Deadline) -> Option<Deadline> {
        let k = key as usize;
        self.positions.extend_to(k + 1, NOT_QUEUED);
        let item = pack(deadline, key);
        let pos = self.positions.at(k);
        if pos == NOT_QUEUED {
            self.heap.push(item);
            self.sift_up(self.heap.len() - 1);
            None
        } else {
            let pos = pos as usize;
            let old = self.heap.at(pos);
            self.heap.set(pos, item);
            if item < old {
                self.sift_up(pos);
            } else {
                self.sift_down(pos);
            }
            Some(deadline_of(old))
        }
    }

    /// Cancels `key`'s deadline, returning it. O(log n).
    ///
    /// ```
    /// use shard::{Deadline, ExpiryQueue};
    /// let mut q = ExpiryQueue::new();
    /// q.schedule(2, Deadline::MIN);
    /// assert_eq!(q.cancel(2), Some(Deadline::MIN));
    /// assert_eq!(q.cancel(2), None);
    /// assert!(q.is_empty());
    /// ```
    pub fn cancel(&mut self, key: u32) -> Option<Deadline> {
        let pos = self.positions.get(key as usize)?;
        if pos == NOT_QUEUED {
            return None;
        }
        Some(deadline_of(self.remove_at(pos as usize)))
    }

    /// The deadline of `key`, if scheduled. O(1).
    ///
    /// ```
    /// use shard::{Deadline, ExpiryQueue};
    /// let q = ExpiryQueue::new();
    /// assert_eq!(q.deadline(9), None);
    /// ```
    pub fn deadline(&self, key: u32) -> Option<Deadline> {
        let pos = self.positions.get(key as usize)?;
        self.heap.get(pos as usize).map(deadline_of)
    }

    /// The earliest `(key, deadline)` without removing it: when to wake up next. O(1).
    ///
    /// ```
    /// use shard::{Deadline, ExpiryQueue};
    /// let mut q = ExpiryQueue::new();
    /// q.schedule(4, Deadline::MAX);
    /// assert_eq!(q.peek(), Some((4, Deadline::MAX)));
    /// ```
    pub fn peek(&self) -> Option<(u32, Deadline)> {
        self.heap.get(0).map(|i| (key_of(i), deadline_of(i)))
    }

    /// Pops the earliest key if its deadline is due at `now` (Unix seconds,
    /// `deadline <= now`). Ties pop in key order. O(log n).
    ///
    /// ```
    /// use shard::{Deadline, ExpiryQueue};
    /// let mut q = ExpiryQueue::new();
    /// q.schedule(1, Deadline::from_unix_secs(10).unwrap());
    /// assert_eq!(q.pop_due(9), None);
    /// assert_eq!(q.pop_due(10).map(|(k, _)| k), Some(1));
    /// ```
    pub fn pop_due(&mut self, now: i64) -> Option<(u32, Deadline)> {
        let top = self.heap.get(0)?;
        if !deadline_of(top).is_due(now) {
            return None;
        }
        self.remove_at(0);
        Some((key_of(top), deadline_of(top)))
    }

    /// Pops everything due at `now`, earliest first, lazily: what the iterator has not
    /// yielded when dropped stays queued. O(log n) per item.
    ///
    /// ```
    /// use shard::{Deadline, ExpiryQueue};
    /// let mut q = ExpiryQueue::new();
    /// for k in 0..5 {
    ///     q.schedule(k, Deadline::from_unix_secs(i64::from(k) * 10).unwrap());
    /// }
    /// let due: Vec<u32> = q.drain_due(25).map(|(k, _)| k).collect();
    /// assert_eq!(due, [0, 1, 2]);
    /// assert_eq!(q.len(), 2);
    /// ```
    pub fn drain_due(&mut self, now: i64) -> impl Iterator<Item = (u32, Deadline)> + '_ {
        std::iter::from_fn(move || self.pop_due(now))
    }

    /// Removes every deadline; keeps the allocated memory. O(n).
    ///
    /// ```
    /// use shard::{Deadline, ExpiryQueue};
    /// let mut q = ExpiryQueue::new();
    /// q.schedule(0, Deadline::MIN);
    /// q.clear();
    /// assert!(q.is_empty() && q.deadline(0).is_none());
    /// ```
    pub fn clear(&mut self) {
        for i in 0..self.heap.len() {
            let key = key_of(self.heap.at(i));
            self.positions.set(key as usize, NOT_QUEUED);
        }
        self.heap.clear();
    }

    /// Bytes of heap memory held (allocated capacity), for memory gauges. O(1).
    ///
    /// ```
    /// assert_eq!(shard::ExpiryQueue::new().memory_bytes(), 0);
    /// ```
    pub fn memory_bytes(&self) -> usize {
        self.heap.memory_bytes() + self.positions.memory_bytes()
    }

    fn remove_at(&mut self, pos: usize) -> u64 {
        let removed = self.heap.at(pos);
        // `pos < len`, so there is a last element.
        let last = self.heap.pop().unwrap_or(removed);
        self.positions.set(key_of(removed) as usize, NOT_QUEUED);
        if pos < self.heap.len() {
            let moved = last;
            self.heap.set(pos, moved);
            self.positions.set(key_of(moved) as usize, pos as u32);
            if moved < removed {
                self.sift_up(pos);
            } else {
                self.sift_down(pos);
            }
        }
        removed
    }

    fn sift_up(&mut self, mut pos: usize) {
        let item = self.heap.at(pos);
        while pos > 0 {
            let parent = (pos - 1) / 2;
            let p = self.heap.at(parent);
            if p <= item {
                break;
            }
            self.heap.set(pos, p);
            self.positions.set(key_of(p) as usize, pos as u32);
            pos = parent;
        }
        self.heap.set(pos, item);
        self.positions.set(key_of(item) as usize, pos as u32);
    }

    fn sift_down(&mut self, mut pos: usize) {
        let item = self.heap.at(pos);
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let mut child = left;
            let mut c = self.heap.at(left);
            if right < len {
                let r = self.heap.at(right);
                if r < c {
                    child = right;
                    c = r;
                }
            }
            if item <= c {
                break;
            }
            self.heap.set(pos, c);
            self.positions.set(key_of(c) as usize, pos as u32);
            pos = child;
        }
        self.heap.set(pos, item);
        self.positions.set(key_of(item) as usize, pos as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Schedule(u32, u32),
        Cancel(u32),
        Pop(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..40, 0u32..100).prop_map(|(k, d)| Op::Schedule(k, d)),
            2 => (0u32..40).prop_map(Op::Cancel),
            1 => (0u32..100).prop_map(Op::Pop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(op(), 0..200)) {
            let mut q = ExpiryQueue::new();
            let mut model: BTreeMap<u32, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Schedule(k, d) => {
                        let got = q.schedule(k, Deadline(d));
                        prop_assert_eq!(got, model.insert(k, d).map(Deadline));
                    }
                    Op::Cancel(k) => prop_assert_eq!(q.cancel(k), model.remove(&k).map(Deadline)),
                    Op::Pop(now) => {
                        let got: Vec<(u32, Deadline)> = q.drain_due(i64::from(now)).collect();
                        let mut want: Vec<(u32, Deadline)> = model
                            .iter()
                            .filter(|(_, &d)| d <= now)
                            .map(|(&k, &d)| (k, Deadline(d)))
                            .collect();
                        want.sort_by_key(|&(k, d)| (d, k));
                        for (k, _) in &want {
                            model.remove(k);
                        }
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                let earliest = model.iter().map(|(&k, &d)| (d, k)).min().map(|(d, k)| (k, Deadline(d)));
                prop_assert_eq!(q.peek(), earliest);
                for k in 0..40 {
                    prop_assert_eq!(q.deadline(k), model.get(&k).map(|&d| Deadline(d)));
                }
            }
        }
    }

    #[test]
    fn now_outside_the_deadline_range() {
        let mut q = ExpiryQueue::new();
        q.schedule(0, Deadline::MIN);
        q.schedule(1, Deadline::MAX);
        assert_eq!(q.pop_due(-5), None);
        assert_eq!(q.drain_due(i64::MAX).count(), 2);
    }
}
