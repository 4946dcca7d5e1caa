//! The name arena (string pool) of the [`NamespaceIndex`](crate::NamespaceIndex).
//!
//! Names are appended to 64 KiB chunks; a name never straddles two chunks, so it is one
//! contiguous `&str`, and its position fits a `u32` (`chunk << 16 | offset`). Chunks are
//! allocated one at a time and never reallocated: growth copies nothing, and the unused
//! space is the tail of the last chunk plus under 63 bytes per chunk (0.1%).
//!
//! Removed names are garbage until the index copies the live names into a fresh arena
//! (see its docs for when).

/// Bytes per chunk: names are at most 63 bytes, so at most 62 bytes per chunk are wasted.
const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;
const OFFSET_MASK: u32 = (1 << CHUNK_BITS) - 1;

/// Append-only chunked string storage; positions are `u32`.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameArena {
    chunks: Vec<String>,
    /// Bytes of names stored (live and garbage), without chunk tails.
    used: usize,
}

impl NameArena {
    /// Appends `name` (at most 63 bytes) and returns its position, or `None` when the
    /// arena already spans 4 GiB.
    #[inline]
    pub(crate) fn push(&mut self, name: &str) -> Option<u32> {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.len() + name.len() <= CHUNK);
        if !fits {
            if self.chunks.len() >= 1 << (32 - CHUNK_BITS) {
                return None;
            }
            self.chunks.push(String::with_capacity(CHUNK));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let pos = ((index as u32) << CHUNK_BITS) | chunk.len() as u32;
        chunk.push_str(name);
        self.used += name.len();
        Some(pos)
    }

    /// Writes `name` over the garbage name at `pos`, which had the same length.
    #[inline]
    pub(crate) fn overwrite(&mut self, pos: u32, name: &str) {
        let start = (pos & OFFSET_MASK) as usize;
        // Same length: the bytes are replaced in place, nothing moves.
        self.chunks[(pos >> CHUNK_BITS) as usize].replace_range(start..start + name.len(), name);
    }

    /// The name at `pos` of `len` bytes, as returned by [`NameArena::push`].
    #[inline]
    pub(crate) fn get(&self, pos: u32, len: usize) -> &str {
        let start = (pos & OFFSET_MASK) as usize;
        &self.chunks[(pos >> CHUNK_BITS) as usize][start..start + len]
    }

    /// Bytes of names stored, live and garbage.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Bytes allocated.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.chunks.iter().map(String::capacity).sum::<usize>()
            + self.chunks.capacity() * size_of::<String>()
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_whole_across_chunks() {
        let mut arena = NameArena::default();
        let names: Vec<String> = (0..10_000)
            .map(|i| format!("{i}-{}", "x".repeat(i % 60)))
            .collect();
        let names: Vec<&str> = names.iter().map(|n| &n[..n.len().min(63)]).collect();
        let pos: Vec<u32> = names.iter().map(|n| arena.push(n).unwrap()).collect();
        assert!(arena.chunks.len() > 1);
        for (p, n) in pos.iter().zip(&names) {
            assert_eq!(arena.get(*p, n.len()), *n);
        }
        arena.overwrite(pos[5], "5-xxxxx");
        assert_eq!(arena.get(pos[5], 7), "5-xxxxx");
        assert_eq!(arena.get(pos[6], names[6].len()), names[6]);
        let used: usize = names.iter().map(|n| n.len()).sum();
        assert_eq!(arena.used(), used);
        assert!(arena.memory_bytes() < used + used / 100 + CHUNK + 1024);
    }
}
