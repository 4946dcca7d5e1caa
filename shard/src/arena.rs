//! The name arena (string pool) of the [`NamespaceIndex`](crate::NamespaceIndex).
//!
//! Names are appended to 64 KiB chunks; a name never straddles two chunks, so it is one
//! contiguous `&str`, and its position fits a `u32` (`chunk << 16 | offset`). Chunks are
//! allocated one at a time and never reallocated: growth copies nothing, and the unused
//! space is the tail of the last chunk plus under 63 bytes per chunk (0.1%).
//!
//! A removed name is garbage: its place is a hole, remembered in a list per length, and
//! the next name of that length is written into it. A chunk whose names are all removed
//! is freed at once (its holes are dropped from the lists lazily), so names removed in
//! about the order they were added (a namespace storm cleaned up) give their memory back
//! without copying anything. Other garbage waits for the index to copy the live names
//! into a fresh arena (see its docs for when).

/// Bytes per chunk: names are at most 63 bytes, so at most 62 bytes per chunk are wasted.
const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;
const OFFSET_MASK: u32 = (1 << CHUNK_BITS) - 1;
/// Longest name: a DNS-1123 label.
const MAX_LEN: usize = 63;
/// Stale holes (in freed chunks) below this count are never worth a cleanup pass.
const MIN_STALE_TO_CLEAN: usize = 1024;

/// Chunked string storage with hole reuse; positions are `u32`.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameArena {
    /// The chunks; a freed one is an empty `String` (no allocation).
    chunks: Vec<String>,
    /// Per chunk: bytes of live names, and holes of it in `holes`.
    stats: Vec<ChunkStats>,
    /// Per name length, positions of removed names of that length; those in freed
    /// chunks (`stale` of them) are skipped when popped.
    holes: Vec<Vec<u32>>,
    stale: usize,
    /// Bytes of names stored in allocated chunks, live and garbage, without chunk tails.
    used: usize,
    /// Bytes of removed names in allocated chunks.
    garbage: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct ChunkStats {
    live: u32,
    holes: u32,
}

#[inline]
fn chunk_of(pos: u32) -> usize {
    (pos >> CHUNK_BITS) as usize
}

impl NameArena {
    /// Stores `name` (1 to 63 bytes), in a hole of its length if there is one, and
    /// returns its position; `None` when the arena already spans 4 GiB.
    #[inline]
    pub(crate) fn store(&mut self, name: &str) -> Option<u32> {
        while let Some(pos) = self.holes.get_mut(name.len()).and_then(Vec::pop) {
            let c = chunk_of(pos);
            if self.chunks[c].capacity() == 0 {
                self.stale -= 1; // a hole of a freed chunk
                continue;
            }
            let start = (pos & OFFSET_MASK) as usize;
            // Same length: the bytes are replaced in place, nothing moves.
            self.chunks[c].replace_range(start..start + name.len(), name);
            self.stats[c].holes -= 1;
            self.stats[c].live += name.len() as u32;
            self.garbage -= name.len();
            return Some(pos);
        }
        self.push(name)
    }

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
            // The chunk that stops being the last may be all garbage by now.
            if let Some(last) = self.chunks.len().checked_sub(1) {
                self.free_if_dead(last);
            }
            self.chunks.push(String::with_capacity(CHUNK));
            self.stats.push(ChunkStats::default());
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let pos = ((index as u32) << CHUNK_BITS) | chunk.len() as u32;
        chunk.push_str(name);
        self.stats[index].live += name.len() as u32;
        self.used += name.len();
        Some(pos)
    }

    /// Removes the name at `pos` of `len` bytes: it becomes a hole, or, if it was the
    /// last live name of its chunk (not the one names are appended to), the chunk is
    /// freed.
    #[inline]
    pub(crate) fn release(&mut self, pos: u32, len: usize) {
        let c = chunk_of(pos);
        self.stats[c].live -= len as u32;
        self.garbage += len;
        if self.stats[c].live == 0 && c + 1 < self.chunks.len() {
            self.free_chunk(c);
            return;
        }
        if self.holes.is_empty() {
            self.holes = vec![Vec::new(); MAX_LEN + 1];
        }
        self.holes[len].push(pos);
        self.stats[c].holes += 1;
    }

    fn free_if_dead(&mut self, c: usize) {
        if self.stats[c].live == 0 && self.chunks[c].capacity() != 0 {
            self.free_chunk(c);
        }
    }

    /// Frees chunk `c`, all garbage; its holes in the lists become stale.
    fn free_chunk(&mut self, c: usize) {
        let bytes = self.chunks[c].len();
        self.chunks[c] = String::new();
        self.used -= bytes;
        self.garbage -= bytes;
        self.stale += self.stats[c].holes as usize;
        self.stats[c].holes = 0;
        // Stale holes cost 4 bytes each: drop them once they are half of all holes.
        if self.stale >= MIN_STALE_TO_CLEAN && 2 * self.stale >= self.hole_count() {
            let chunks = &self.chunks;
            for list in &mut self.holes {
                list.retain(|&pos| chunks[chunk_of(pos)].capacity() != 0);
            }
            self.stale = 0;
        }
    }

    fn hole_count(&self) -> usize {
        self.holes.iter().map(Vec::len).sum()
    }

    /// The name at `pos` of `len` bytes, as returned by [`NameArena::store`].
    #[inline]
    pub(crate) fn get(&self, pos: u32, len: usize) -> &str {
        let start = (pos & OFFSET_MASK) as usize;
        &self.chunks[chunk_of(pos)][start..start + len]
    }

    /// The bytes of the name at `pos` of `len` bytes (no UTF-8 boundary checks: for
    /// comparisons).
    #[inline]
    pub(crate) fn bytes(&self, pos: u32, len: usize) -> &[u8] {
        let start = (pos & OFFSET_MASK) as usize;
        &self.chunks[chunk_of(pos)].as_bytes()[start..start + len]
    }

    /// Bytes of names stored, live and garbage.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Bytes of removed names not reclaimed yet (part of [`NameArena::used`]).
    pub(crate) fn garbage(&self) -> usize {
        self.garbage
    }

    /// Bytes allocated: chunks, chunk table, lists of holes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.chunks.iter().map(String::capacity).sum::<usize>()
            + self.chunks.capacity() * size_of::<String>()
            + self.stats.capacity() * size_of::<ChunkStats>()
            + self.holes.capacity() * size_of::<Vec<u32>>()
            + self.holes.iter().map(|h| h.capacity() * 4).sum::<usize>()
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
        let pos: Vec<u32> = names.iter().map(|n| arena.store(n).unwrap()).collect();
        assert!(arena.chunks.len() > 1);
        for (p, n) in pos.iter().zip(&names) {
            assert_eq!(arena.get(*p, n.len()), *n);
        }
        arena.release(pos[5], names[5].len());
        assert_eq!(arena.store("5-xxxxx"), Some(pos[5]), "the hole is reused");
        assert_eq!(arena.get(pos[5], 7), "5-xxxxx");
        assert_eq!(arena.get(pos[6], names[6].len()), names[6]);
        let used: usize = names.iter().map(|n| n.len()).sum();
        assert_eq!(arena.used(), used);
        assert_eq!(arena.garbage(), 0);
        assert!(arena.memory_bytes() < used + used / 100 + CHUNK + 4096);
    }

    #[test]
    fn dead_chunks_are_freed_and_their_holes_skipped() {
        let mut arena = NameArena::default();
        let names: Vec<String> = (0..20_000).map(|i| format!("name-{i:010}")).collect();
        let pos: Vec<u32> = names.iter().map(|n| arena.store(n).unwrap()).collect();
        let chunks = arena.chunks.len();
        assert!(chunks >= 4);
        let before = arena.memory_bytes();
        // Remove the first half in order: whole chunks die and are freed.
        for (p, n) in pos.iter().zip(&names).take(10_000) {
            arena.release(*p, n.len());
        }
        assert!(arena.memory_bytes() < before - CHUNK, "freed chunks");
        assert!(
            arena.garbage() < CHUNK,
            "only the partly live chunk keeps garbage"
        );
        assert_eq!(arena.used() - arena.garbage(), 10_000 * 15);
        // Holes of freed chunks are never handed out; live names stay intact.
        for i in 0..10_000 {
            let p = arena.store(&format!("anew-{i:010}")).unwrap();
            assert!(arena.chunks[chunk_of(p)].capacity() != 0);
            assert_eq!(arena.get(p, 15), format!("anew-{i:010}"));
        }
        for (p, n) in pos.iter().zip(&names).skip(10_000) {
            assert_eq!(arena.get(*p, n.len()), n);
        }
        assert_eq!(arena.used() - arena.garbage(), 20_000 * 15);
    }
}
