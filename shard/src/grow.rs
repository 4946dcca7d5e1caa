//! Storage that grows without copying and without slack.
//!
//! `Vec::push` doubles the capacity: it copies every element again at each doubling and
//! leaves up to half of a large vector unused, which at 1M namespaces alone would break
//! the 48 bytes-per-namespace budget. The index's per-entry arrays therefore live in
//! [`SegVec`]s: fixed-size segments allocated one at a time, so growth never moves an
//! element and the unused tail is at most one segment.

/// Elements per segment (a power of two): 4096, i.e. 4 to 32 KiB per segment here.
const SEG_BITS: u32 = 12;
const SEG_LEN: usize = 1 << SEG_BITS;
const SEG_MASK: usize = SEG_LEN - 1;

/// A vector of `Copy` elements in fixed-size segments. Indexing is two loads (segment
/// pointer, element); push is amortized O(1) and never copies existing elements.
#[derive(Debug, Clone)]
pub(crate) struct SegVec<T> {
    segs: Vec<Box<[T]>>,
    len: usize,
    fill: T,
}

impl<T: Copy> SegVec<T> {
    /// An empty vector; `fill` initializes fresh segments (never observable below `len`).
    pub(crate) const fn new(fill: T) -> SegVec<T> {
        SegVec {
            segs: Vec::new(),
            len: 0,
            fill,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`; `i < len` (else it panics, like slice indexing).
    #[inline]
    pub(crate) fn at(&self, i: usize) -> T {
        debug_assert!(i < self.len);
        self.segs[i >> SEG_BITS][i & SEG_MASK]
    }

    /// Element `i`, or `None` past the end.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<T> {
        if i < self.len {
            Some(self.segs[i >> SEG_BITS][i & SEG_MASK])
        } else {
            None
        }
    }

    /// Sets element `i`; `i < len`.
    #[inline]
    pub(crate) fn set(&mut self, i: usize, value: T) {
        debug_assert!(i < self.len);
        self.segs[i >> SEG_BITS][i & SEG_MASK] = value;
    }

    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        if self.len == self.segs.len() << SEG_BITS {
            self.segs.push(vec![self.fill; SEG_LEN].into_boxed_slice());
        }
        let i = self.len;
        self.len += 1;
        self.set(i, value);
    }

    /// Removes and returns the last element.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        let last = self.len.checked_sub(1)?;
        let value = self.at(last);
        self.len = last;
        Some(value)
    }

    /// Grows to `new_len` with copies of `value` (never shrinks).
    pub(crate) fn extend_to(&mut self, new_len: usize, value: T) {
        while self.len < new_len {
            self.push(value);
        }
    }

    /// Empties the vector, keeping its segments.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Makes room for `additional` more elements at once (for known populations).
    pub(crate) fn reserve(&mut self, additional: usize) {
        let needed = (self.len + additional).div_ceil(SEG_LEN);
        self.segs
            .reserve_exact(needed.saturating_sub(self.segs.len()));
        while self.segs.len() < needed {
            self.segs.push(vec![self.fill; SEG_LEN].into_boxed_slice());
        }
    }

    /// Bytes allocated: the segments and the segment table.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.segs.len() * SEG_LEN * size_of::<T>() + self.segs.capacity() * size_of::<Box<[T]>>()
    }

    /// The elements in order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.segments().flat_map(|(_, s)| s.iter().copied())
    }

    /// The elements as mutable slices, one per segment, in order.
    pub(crate) fn segments_mut(&mut self) -> impl Iterator<Item = &mut [T]> + '_ {
        let mut left = self.len;
        self.segs.iter_mut().map_while(move |s| {
            let n = left.min(SEG_LEN);
            left -= n;
            (n > 0).then(|| &mut s[..n])
        })
    }

    /// The elements as slices, one per segment, in order, each with the index of its
    /// first element: for scans that want a plain loop over each.
    pub(crate) fn segments(&self) -> impl Iterator<Item = (usize, &[T])> + '_ {
        self.segs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let start = (i << SEG_BITS).min(self.len);
                (start, &s[..(self.len - start).min(SEG_LEN)])
            })
            .take_while(|(_, s)| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_vec() {
        let mut s = SegVec::new(0u32);
        let mut v = Vec::new();
        for i in 0..10_000u32 {
            s.push(i);
            v.push(i);
            if i % 7 == 0 {
                assert_eq!(s.pop(), v.pop());
            }
            if i % 5 == 0 && !v.is_empty() {
                let j = (i as usize * 31) % v.len();
                s.set(j, i);
                v[j] = i;
            }
        }
        assert_eq!(s.len(), v.len());
        assert_eq!(s.iter().collect::<Vec<_>>(), v);
        assert_eq!(s.get(v.len()), None);
        s.extend_to(v.len() + 3, 9);
        assert_eq!(s.at(v.len() + 2), 9);
        s.clear();
        assert!(s.is_empty());
        s.reserve(SEG_LEN * 3 + 1);
        assert_eq!(s.segs.len(), 4);
        assert!(s.memory_bytes() >= 4 * SEG_LEN * 4);
    }
}
