//! The NamespaceIndex: compact state of the namespaces in this replica's ranges.
//!
//! ```text
//!   table (4 B/bucket, 44–88% full)    slots (8 B each)              arena (64 KiB chunks)
//!   ┌──────────────┐                  ┌──────────────────────────┐   ┌──────────────────────┐
//!   │ fp | id + 2  │ ───────────────▶ │ pos │ len|status │ link ─┐│──▶│ns-user-3f9a2cteam-al…│
//!   └──────────────┘                  └──────────────────────────┘   └──────────────────────┘
//!   range heads (4 B per range) ──▶ first slot of the range ──▶ next slot of the range ─▶ …
//!                                      expiry queue (12 B per scheduled entry): id → deadline
//! ```
//!
//! * **Names** are stored whole (up to 63 bytes, the DNS-label limit of namespace names)
//!   in a chunked arena: no allocation per name, no truncation, no copying on growth. A
//!   removed name leaves a hole, remembered in a free list per length, and the next name
//!   of that length is written into it, so churn (namespaces created and deleted) reuses
//!   space. A chunk whose names are all removed is freed at once (names removed in about
//!   the order they came give their memory back without any copying). Other holes
//!   nobody reuses are garbage; when it exceeds both the live bytes and two bytes per
//!   slot, the arena is compacted (live names copied into fresh chunks, O(slots + live
//!   bytes)), which is amortized O(1) per removal and keeps the arena under twice the
//!   live bytes.
//! * **Slots** hold the arena position (4 bytes), the name length and the status (1 byte)
//!   and a 3-byte link, in three parallel segmented vectors, so no padding is paid,
//!   growth copies nothing, and a lookup reads only the first two. An [`EntryId`] is a
//!   slot number: stable while the entry lives, reused after its removal.
//! * **Range lists**: every entry is in the singly linked list of its hash range (a head
//!   per range, the links in the slots), so a whole range is found, iterated and
//!   removed in time proportional to its entries, not to the index. A removal by name
//!   does not unlink (a singly linked list has no O(1) unlink): the slot stays in its
//!   list, dead, until a walk of that list (`remove_range`) or a sweep of all lists
//!   frees it. A sweep runs when an insert finds no free slot and the dead slots are an
//!   eighth of all slots or more, so there are never many more slots than the most
//!   entries held at once (at most 8/7 of it, plus R/64). The hash range itself is not
//!   stored: the list an entry is in says it.
//! * **The table** maps a name to its slot: see the private `table` module. Lookups hash
//!   the name once (xxh3) and compare names only on a fingerprint and length match, so
//!   they are exact.
//! * **Deadlines** live in an embedded [`ExpiryQueue`] keyed by slot id, so the index and
//!   its timers are one structure and one memory figure.
//!
//! The index never drops an entry on its own: not under memory pressure, not on a hash
//! collision. Memory is about 47 bytes per namespace with a 20-byte name and a deadline
//! (see the crate README for the measured figure).

use thiserror::Error;

use crate::arena::NameArena;
use crate::expiry::{Deadline, ExpiryQueue};
use crate::grow::SegVec;
use crate::ranges::{hash_name, RangeCount, RangeSet};
use crate::table::{Probe, Table};
use xxhash_rust::xxh3::xxh3_64;

/// Longest namespace name: a DNS-1123 label has at most 63 characters.
///
/// ```
/// assert_eq!(shard::MAX_NAME_LEN, 63);
/// ```
pub const MAX_NAME_LEN: usize = 63;

/// Slot number meaning "none" in the free list.
const NO_SLOT: u32 = u32::MAX;
/// Slot number meaning "none" in a range list (the link is 24 bits of the slot word).
const NO_LINK: u32 = (1 << 24) - 1;
/// Slot ids are below this (they must fit a range-list link, and differ from `NO_LINK`).
const ID_LIMIT: usize = NO_LINK as usize;
/// Bits of `Slot::meta` that hold the name length (1..=63; 0 marks a slot that is not live).
const LEN_MASK: u8 = 0x3f;
/// Largest number of entries: 2^24 - 2, so that ids fit the 24-bit range-list links.
const MAX_ENTRIES: u32 = (1 << 24) - 2;
/// Names per group in the batch operations (see [`NamespaceIndex::remove_many`]).
const GROUP: usize = 16;
/// Garbage below this many arena bytes is never worth a compaction.
const MIN_GARBAGE_TO_COMPACT: usize = 4096;

/// Errors of the index; they name bad input or a hard limit and are not retryable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IndexError {
    /// Namespace names are never empty.
    #[error("empty namespace name")]
    EmptyName,
    /// Namespace names are DNS-1123 labels of at most 63 bytes.
    #[error("namespace name of {len} bytes is longer than 63")]
    NameTooLong {
        /// Length of the rejected name.
        len: usize,
    },
    /// More than 2^24 - 2 (16.7 million) entries, or names past 4 GiB: far beyond any
    /// cluster.
    #[error("namespace index is full")]
    Full,
}

/// Lock status of a namespace, as read from its `clawcloud.run/status` label.
///
/// ```
/// use shard::Status;
/// assert_eq!(Status::from_label(Some("locked")), Status::Locked);
/// assert_eq!(Status::from_label(Some("weird")), Status::Unknown);
/// assert_eq!(Status::Active.as_str(), "active");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Status {
    /// No label, or a value this version does not know.
    #[default]
    Unknown,
    /// `active`: not locked.
    Active,
    /// `locked`.
    Locked,
}

impl Status {
    /// The status for a label value (`None` when the label is missing).
    ///
    /// ```
    /// assert_eq!(shard::Status::from_label(None), shard::Status::Unknown);
    /// ```
    pub fn from_label(value: Option<&str>) -> Status {
        match value {
            Some("locked") => Status::Locked,
            Some("active") => Status::Active,
            _ => Status::Unknown,
        }
    }

    /// The label value, `unknown` for [`Status::Unknown`].
    ///
    /// ```
    /// assert_eq!(shard::Status::Locked.as_str(), "locked");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Active => "active",
            Status::Locked => "locked",
        }
    }

    fn bits(self) -> u8 {
        match self {
            Status::Unknown => 0,
            Status::Active => 1,
            Status::Locked => 2,
        }
    }

    fn from_bits(bits: u8) -> Status {
        match bits {
            1 => Status::Active,
            2 => Status::Locked,
            _ => Status::Unknown,
        }
    }
}

/// Handle to an index entry: valid until that entry is removed, after which the same id
/// may name another namespace. Keep names, not ids, across removals.
///
/// ```
/// use shard::{NamespaceIndex, RangeCount, Status};
/// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
/// let id = index.upsert("ns-a", Status::Active, None).unwrap();
/// assert_eq!(index.entry(id).unwrap().name, "ns-a");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(u32);

impl EntryId {
    /// The slot number (dense, from 0): usable as an index into side tables.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// assert_eq!(index.upsert("first", Status::Active, None).unwrap().index(), 0);
    /// ```
    pub fn index(self) -> u32 {
        self.0
    }
}

/// A read-only view of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The entry's handle.
    pub id: EntryId,
    /// The full namespace name.
    pub name: &'a str,
    /// Its status.
    pub status: Status,
    /// Its hash range.
    pub range: u32,
    /// Its pending deadline; for an entry returned by [`NamespaceIndex::pop_due`], the
    /// deadline that fell due (and is no longer pending).
    pub deadline: Option<Deadline>,
}

/// What [`NamespaceIndex::remove`] took out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The status the entry had.
    pub status: Status,
    /// The deadline that was pending, now cancelled.
    pub deadline: Option<Deadline>,
}

/// Memory held by a [`NamespaceIndex`], in bytes of allocated capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryUsage {
    /// The name arena (live names, garbage, spare capacity and the lists of holes).
    pub arena: usize,
    /// Arena bytes of removed names, reclaimed by the next compaction (part of `arena`).
    pub garbage: usize,
    /// The entry slots and the range-list heads.
    pub slots: usize,
    /// The hash table.
    pub table: usize,
    /// The expiry queue.
    pub expiry: usize,
}

impl MemoryUsage {
    /// Everything: `arena + slots + table + expiry`.
    ///
    /// ```
    /// let m = shard::MemoryUsage { arena: 1, garbage: 0, slots: 2, table: 3, expiry: 4 };
    /// assert_eq!(m.total(), 10);
    /// ```
    pub fn total(&self) -> usize {
        self.arena + self.slots + self.table + self.expiry
    }
}

/// One entry's fixed part, 8 bytes, read from and written to [`Slots`] by value.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Arena position of the name; in a free slot, the next free slot or `NO_SLOT`.
    off: u32,
    /// Name length in the low 6 bits (0 = not live: free or dead), status in the top 2.
    meta: u8,
    /// In a live or dead slot: the next slot of the same range's list, or `NO_LINK`
    /// (24 bits).
    link: u32,
}

const FREE: Slot = Slot {
    off: NO_SLOT,
    meta: 0,
    link: NO_LINK,
};

impl Slot {
    #[inline]
    fn len(self) -> usize {
        usize::from(self.meta & LEN_MASK)
    }
    #[inline]
    fn is_free(self) -> bool {
        self.meta & LEN_MASK == 0
    }
    #[inline]
    fn status(self) -> Status {
        Status::from_bits(self.meta >> 6)
    }
}

/// The slots as three parallel vectors: arena positions (4 bytes), length and status
/// (1 byte), range-list links (3 bytes). A lookup reads only the first two, so the
/// links, which only inserts and list walks use, stay out of its way in the cache.
#[derive(Debug, Clone)]
struct Slots {
    offs: SegVec<u32>,
    metas: SegVec<u8>,
    links: SegVec<[u8; 3]>,
}

#[inline]
fn link_bytes(link: u32) -> [u8; 3] {
    let [a, b, c, _] = link.to_le_bytes();
    [a, b, c]
}

#[inline]
fn link_of(bytes: [u8; 3]) -> u32 {
    let [a, b, c] = bytes;
    u32::from_le_bytes([a, b, c, 0])
}

impl Slots {
    const fn new() -> Slots {
        Slots {
            offs: SegVec::new(NO_SLOT),
            metas: SegVec::new(0),
            links: SegVec::new([0xff; 3]),
        }
    }
    #[inline]
    fn len(&self) -> usize {
        self.offs.len()
    }
    /// The arena position and the length field of a slot (what a lookup compares: no
    /// link).
    #[inline(always)]
    fn key(&self, id: u32) -> (u32, u8) {
        let i = id as usize;
        (self.offs.at(i), self.metas.at(i) & LEN_MASK)
    }
    #[inline(always)]
    fn at(&self, id: u32) -> Slot {
        let i = id as usize;
        Slot {
            off: self.offs.at(i),
            meta: self.metas.at(i),
            link: link_of(self.links.at(i)),
        }
    }
    #[inline(always)]
    fn get(&self, id: u32) -> Option<Slot> {
        ((id as usize) < self.len()).then(|| self.at(id))
    }
    /// Sets all of a slot. (The single-field setters below write only what changes, so
    /// that a removal does not touch the link's cache line.)
    #[inline]
    fn set(&mut self, id: u32, slot: Slot) {
        let i = id as usize;
        self.offs.set(i, slot.off);
        self.metas.set(i, slot.meta);
        self.links.set(i, link_bytes(slot.link));
    }
    #[inline(always)]
    fn set_off(&mut self, id: u32, off: u32) {
        self.offs.set(id as usize, off);
    }
    #[inline(always)]
    fn meta(&self, id: u32) -> u8 {
        self.metas.at(id as usize)
    }
    #[inline(always)]
    fn set_meta(&mut self, id: u32, meta: u8) {
        self.metas.set(id as usize, meta);
    }
    #[inline(always)]
    fn set_link(&mut self, id: u32, link: u32) {
        self.links.set(id as usize, link_bytes(link));
    }
    #[inline]
    fn push(&mut self, slot: Slot) {
        self.offs.push(slot.off);
        self.metas.push(slot.meta);
        self.links.push(link_bytes(slot.link));
    }
    fn reserve(&mut self, additional: usize) {
        self.offs.reserve(additional);
        self.metas.reserve(additional);
        self.links.reserve(additional);
    }
    fn clear(&mut self) {
        self.offs.clear();
        self.metas.clear();
        self.links.clear();
    }
    fn memory_bytes(&self) -> usize {
        self.offs.memory_bytes() + self.metas.memory_bytes() + self.links.memory_bytes()
    }
    /// Live slot ids, ascending.
    fn live_ids(&self) -> impl Iterator<Item = u32> + '_ {
        // Segment by segment: a plain loop over each slice.
        self.metas.segments().flat_map(|(start, metas)| {
            metas
                .iter()
                .enumerate()
                .filter(|&(_, &m)| m & LEN_MASK != 0)
                .map(move |(i, _)| (start + i) as u32)
        })
    }
}

/// Compact per-namespace state for the owned ranges; see the [module docs](self).
///
/// Complexities are expected (hashing) and amortized (growth, compaction); `L` is the
/// name length (≤ 63), `S` the number of slots (the most entries ever held at once).
///
/// ```
/// use shard::{Deadline, NamespaceIndex, RangeCount, Status};
/// let mut index = NamespaceIndex::new(RangeCount::new(256).unwrap());
/// let at = |s| Deadline::from_unix_secs(s).unwrap();
///
/// // On a watch event: record the namespace and its unlock deadline.
/// index.upsert("team-alpha-prod-17", Status::Locked, Some(at(1_000))).unwrap();
/// index.upsert("ns-user-3f9a2c", Status::Active, None).unwrap();
/// assert_eq!(index.get("team-alpha-prod-17").unwrap().status, Status::Locked);
///
/// // On the timer: what is due now?
/// assert_eq!(index.next_deadline(), Some(at(1_000)));
/// let due: Vec<String> = index.drain_due(1_000).map(|e| e.name.to_owned()).collect();
/// assert_eq!(due, ["team-alpha-prod-17"]);
///
/// // Handover: drop a whole range.
/// let r = index.get("ns-user-3f9a2c").unwrap().range;
/// index.remove_range(r);
/// assert!(index.get("ns-user-3f9a2c").is_none());
/// ```
#[derive(Debug, Clone)]
pub struct NamespaceIndex {
    count: RangeCount,
    arena: NameArena,
    slots: Slots,
    /// Per range, the first slot of its list (`NO_LINK` if none); empty until the first
    /// insert. Every live slot is in the list of its range; so are dead slots (removed
    /// entries not unlinked yet, see [`NamespaceIndex::sweep`]).
    heads: Vec<u32>,
    /// Number of dead slots: removed, still linked, not reusable until unlinked.
    dead: u32,
    free_head: u32,
    live: u32,
    table: Table,
    expiry: ExpiryQueue,
}

impl NamespaceIndex {
    /// An empty index for names hashed into `count` ranges. O(1), no allocation.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount};
    /// let index = NamespaceIndex::new(RangeCount::new(256).unwrap());
    /// assert!(index.is_empty());
    /// ```
    pub fn new(count: RangeCount) -> NamespaceIndex {
        NamespaceIndex {
            count,
            arena: NameArena::default(),
            slots: Slots::new(),
            heads: Vec::new(),
            dead: 0,
            free_head: NO_SLOT,
            live: 0,
            table: Table::new(),
            expiry: ExpiryQueue::new(),
        }
    }

    /// An empty index with room for `namespaces` entries, so that loading a known
    /// population (e.g. from a list's `remainingItemCount`) never rebuilds the table.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount};
    /// let index = NamespaceIndex::with_capacity(RangeCount::new(256).unwrap(), 1000);
    /// assert!(index.is_empty());
    /// assert!(index.memory_bytes() >= 1000 * (4 + 8));
    /// ```
    pub fn with_capacity(count: RangeCount, namespaces: usize) -> NamespaceIndex {
        let mut index = NamespaceIndex::new(count);
        index.slots.reserve(namespaces);
        index.heads = vec![NO_LINK; count.get() as usize];
        index.table.rebuild(
            Table::reserved_capacity(namespaces),
            namespaces as u32,
            std::iter::empty(),
            |_| 0,
        );
        index
    }

    /// The range count names are hashed into.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount};
    /// let c = RangeCount::new(256).unwrap();
    /// assert_eq!(NamespaceIndex::new(c).range_count(), c);
    /// ```
    pub fn range_count(&self) -> RangeCount {
        self.count
    }

    /// Number of entries. O(1).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// index.upsert("a", Status::Active, None).unwrap();
    /// index.upsert("a", Status::Locked, None).unwrap();
    /// assert_eq!(index.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// Whether the index is empty. O(1).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount};
    /// assert!(NamespaceIndex::new(RangeCount::new(4).unwrap()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Inserts `name` or updates its entry: sets its status and its deadline (`None`
    /// cancels a pending one). Returns the entry's id. O(L) + O(log n) for the deadline.
    ///
    /// Errors on an empty name or one longer than 63 bytes (no namespace has such a
    /// name); the index is then unchanged.
    ///
    /// ```
    /// use shard::{IndexError, NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// let a = index.upsert("ns-a", Status::Active, None).unwrap();
    /// assert_eq!(index.upsert("ns-a", Status::Locked, None).unwrap(), a);
    /// assert_eq!(index.len(), 1);
    /// assert_eq!(index.upsert("", Status::Active, None), Err(IndexError::EmptyName));
    /// ```
    pub fn upsert(
        &mut self,
        name: &str,
        status: Status,
        deadline: Option<Deadline>,
    ) -> Result<EntryId, IndexError> {
        check_name(name)?;
        self.upsert_hashed(name, hash_name(name), status, deadline)
    }

    /// Upserts every `(name, status, deadline)` of `items`, in order; returns how many.
    /// The same as [`NamespaceIndex::upsert`] for each, but faster on long lists (a list
    /// page, a relist): it hashes a group of 16 names and reads their table buckets
    /// before applying them, so the cache misses of a group overlap. Stops at the first
    /// invalid name with its error; the items before it are applied. Amortized O(L) per
    /// item, plus O(log n) for a deadline.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// let page = [("a", Status::Active, None), ("b", Status::Locked, None)];
    /// assert_eq!(index.upsert_many(page), Ok(2));
    /// assert_eq!(index.get("b").unwrap().status, Status::Locked);
    /// ```
    pub fn upsert_many<'n>(
        &mut self,
        items: impl IntoIterator<Item = (&'n str, Status, Option<Deadline>)>,
    ) -> Result<usize, IndexError> {
        let mut done = 0;
        let mut group = [("", Status::Unknown, None); GROUP];
        let mut hashes = [0u64; GROUP];
        let mut items = items.into_iter();
        loop {
            let mut len = 0;
            for (name, status, deadline) in items.by_ref().take(GROUP) {
                hashes[len] = hash_name(name);
                group[len] = (name, status, deadline);
                len += 1;
            }
            std::hint::black_box(self.touch_buckets(&hashes[..len]));
            for (&(name, status, deadline), &hash) in group[..len].iter().zip(&hashes) {
                check_name(name)?;
                self.upsert_hashed(name, hash, status, deadline)?;
                done += 1;
            }
            if len < GROUP {
                return Ok(done);
            }
        }
    }

    fn upsert_hashed(
        &mut self,
        name: &str,
        hash: u64,
        status: Status,
        deadline: Option<Deadline>,
    ) -> Result<EntryId, IndexError> {
        let id = match self.find(hash, name) {
            Probe::Found { id, .. } => {
                let meta = self.slots.meta(id);
                self.slots
                    .set_meta(id, (meta & LEN_MASK) | (status.bits() << 6));
                id
            }
            Probe::Vacant { bucket } => self.insert_new(name, hash, status, bucket)?,
        };
        match deadline {
            Some(d) => {
                self.expiry.schedule(id, d);
            }
            None => {
                self.expiry.cancel(id);
            }
        }
        Ok(EntryId(id))
    }

    fn insert_new(
        &mut self,
        name: &str,
        hash: u64,
        status: Status,
        bucket: usize,
    ) -> Result<u32, IndexError> {
        if self.live >= MAX_ENTRIES {
            return Err(IndexError::Full);
        }
        // The name first: the only step that can fail.
        let off = match self.arena.store(name) {
            Some(off) => off,
            None => {
                self.compact_arena();
                self.arena.store(name).ok_or(IndexError::Full)?
            }
        };
        // The slot: a free one, or a new one at the end (after reclaiming the dead slots
        // when they are worth it, or when ids ran out).
        if self.free_head == NO_SLOT
            && self.dead > 0
            && (8 * self.dead as usize >= self.slots.len() + self.heads.len() / 8
                || self.slots.len() >= ID_LIMIT)
        {
            self.sweep();
        }
        let id = if self.free_head != NO_SLOT {
            self.free_head
        } else {
            self.slots.len() as u32
        };
        let rebuild = self.table.is_full() || !self.table.fits_id(id);
        if self.heads.is_empty() {
            self.heads = vec![NO_LINK; self.count.get() as usize];
        }
        let head = &mut self.heads[self.count.range_of_hash(hash) as usize];
        let slot = Slot {
            off,
            meta: name.len() as u8 | (status.bits() << 6),
            link: *head,
        };
        *head = id;
        if id == self.slots.len() as u32 {
            self.slots.push(slot);
        } else {
            self.free_head = self.slots.key(id).0;
            self.slots.set(id, slot);
        }
        self.live += 1;
        if rebuild {
            // Places the new entry too.
            self.rebuild_table(Table::grown_capacity(self.live as usize));
        } else {
            self.table.insert_at(bucket, hash, id);
        }
        Ok(id)
    }

    #[inline]
    fn find(&self, hash: u64, name: &str) -> Probe {
        let (slots, arena) = (&self.slots, &self.arena);
        let name = name.as_bytes();
        self.table.probe(hash, |id| {
            // The length first (in the slot): the arena is read only when it matches.
            let (off, len) = slots.key(id);
            usize::from(len) == name.len() && same_bytes(arena.bytes(off, name.len()), name)
        })
    }

    /// Rebuilds the table with `capacity` buckets from the live slots, rehashing every
    /// name in slot order (so the arena is read mostly in sequence). O(S + capacity).
    fn rebuild_table(&mut self, capacity: usize) {
        let (slots, arena) = (&self.slots, &self.arena);
        self.table
            .rebuild(capacity, slots.len() as u32, slots.live_ids(), |id| {
                let slot = slots.at(id);
                xxh3_64(arena.bytes(slot.off, slot.len()))
            });
    }

    fn view(&self, id: u32) -> Option<EntryRef<'_>> {
        self.view_hashed(id, None)
    }

    /// A view of a live slot; `hash` is the name's hash when the caller has it already.
    fn view_hashed(&self, id: u32, hash: Option<u64>) -> Option<EntryRef<'_>> {
        let slot = self.slots.get(id)?;
        if slot.is_free() {
            return None;
        }
        let name = slot_name(&self.arena, slot);
        let hash = hash.unwrap_or_else(|| hash_name(name));
        Some(EntryRef {
            id: EntryId(id),
            name,
            status: slot.status(),
            range: self.count.range_of_hash(hash),
            deadline: self.expiry.deadline(id),
        })
    }

    /// The entry for `name`, if any. O(L).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// index.upsert("ns-a", Status::Active, None).unwrap();
    /// assert_eq!(index.get("ns-a").unwrap().status, Status::Active);
    /// assert!(index.get("ns-b").is_none());
    /// ```
    pub fn get(&self, name: &str) -> Option<EntryRef<'_>> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return None;
        }
        let hash = hash_name(name);
        match self.find(hash, name) {
            Probe::Found { id, .. } => self.view_hashed(id, Some(hash)),
            Probe::Vacant { .. } => None,
        }
    }

    /// The entry with this id, if it is live. O(1).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// let id = index.upsert("ns-a", Status::Locked, None).unwrap();
    /// assert_eq!(index.entry(id).unwrap().status, Status::Locked);
    /// ```
    pub fn entry(&self, id: EntryId) -> Option<EntryRef<'_>> {
        self.view(id.0)
    }

    /// The live entry in slot `index` (an [`EntryId::index`] kept in a side table), if any. O(1).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// let id = index.upsert("ns-a", Status::Locked, None).unwrap();
    /// assert_eq!(index.entry_at(id.index()).unwrap().name, "ns-a");
    /// assert!(index.entry_at(99).is_none());
    /// ```
    pub fn entry_at(&self, index: u32) -> Option<EntryRef<'_>> {
        self.view(index)
    }

    /// Sets the status of a live entry; returns whether it was live. O(1).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// let id = index.upsert("ns-a", Status::Locked, None).unwrap();
    /// assert!(index.set_status(id, Status::Active));
    /// assert_eq!(index.get("ns-a").unwrap().status, Status::Active);
    /// ```
    pub fn set_status(&mut self, id: EntryId, status: Status) -> bool {
        match self.slots.get(id.0) {
            Some(slot) if !slot.is_free() => {
                self.slots
                    .set_meta(id.0, (slot.meta & LEN_MASK) | (status.bits() << 6));
                true
            }
            _ => false,
        }
    }

    /// Schedules, reschedules (`Some`) or cancels (`None`) the deadline of a live entry;
    /// returns whether it was live. O(log n).
    ///
    /// ```
    /// use shard::{Deadline, NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// let id = index.upsert("ns-a", Status::Locked, None).unwrap();
    /// assert!(index.set_deadline(id, Some(Deadline::MAX)));
    /// assert_eq!(index.entry(id).unwrap().deadline, Some(Deadline::MAX));
    /// ```
    pub fn set_deadline(&mut self, id: EntryId, deadline: Option<Deadline>) -> bool {
        if self.view(id.0).is_none() {
            return false;
        }
        match deadline {
            Some(d) => {
                self.expiry.schedule(id.0, d);
            }
            None => {
                self.expiry.cancel(id.0);
            }
        }
        true
    }

    /// Removes `name`'s entry, cancelling its deadline. O(L) + O(log n), amortized.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// index.upsert("ns-a", Status::Locked, None).unwrap();
    /// assert_eq!(index.remove("ns-a").unwrap().status, Status::Locked);
    /// assert!(index.remove("ns-a").is_none());
    /// ```
    pub fn remove(&mut self, name: &str) -> Option<Removed> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return None;
        }
        self.remove_hashed(name, hash_name(name))
    }

    /// Removes every name of `names` that is present; returns how many were. The same as
    /// [`NamespaceIndex::remove`] for each, but faster on long lists (a relist, a
    /// deletion storm): it hashes a group of 16 names and reads their table buckets, then
    /// their slots, then their names before removing them, so the cache misses of a group
    /// overlap instead of queueing. O(L) + O(log n) per name, amortized.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// for name in ["a", "b", "c"] {
    ///     index.upsert(name, Status::Active, None).unwrap();
    /// }
    /// assert_eq!(index.remove_many(["a", "c", "zz"]), 2);
    /// assert_eq!(index.iter().map(|e| e.name).collect::<Vec<_>>(), ["b"]);
    /// ```
    pub fn remove_many<'n>(&mut self, names: impl IntoIterator<Item = &'n str>) -> usize {
        let mut removed = 0;
        let mut group = [""; GROUP];
        let mut hashes = [0u64; GROUP];
        let mut names = names.into_iter();
        loop {
            let mut len = 0;
            for name in names.by_ref().take(GROUP) {
                hashes[len] = hash_name(name);
                group[len] = name;
                len += 1;
            }
            self.warm(&hashes[..len]);
            for (&name, &hash) in group[..len].iter().zip(&hashes) {
                if !name.is_empty() && name.len() <= MAX_NAME_LEN {
                    removed += usize::from(self.remove_hashed(name, hash).is_some());
                }
            }
            if len < GROUP {
                return removed;
            }
        }
    }

    /// Reads the home buckets of a group of hashes: their cache misses overlap instead of
    /// queueing one lookup after another. The value read means nothing.
    fn touch_buckets(&self, hashes: &[u64]) -> u64 {
        hashes
            .iter()
            .fold(0, |sink, &hash| sink ^ u64::from(self.table.touch(hash)))
    }

    /// Reads what looking up each hash of a group will most likely read, stage by stage:
    /// all their home buckets, then the slots those buckets point to when the fingerprint
    /// matches, then those slots' names. Each lookup's three cache misses depend on one
    /// another, but those of different lookups do not: read this way they overlap across
    /// the group. For removals, whose names are all present; an upsert of a new name
    /// would read only its bucket, and the extra passes cost more than they save when
    /// slots and names are read in sequence anyway (measured: 25% on upserts in insertion
    /// order), so `upsert_many` reads the buckets only.
    fn warm(&self, hashes: &[u64]) {
        let mut sink = self.touch_buckets(hashes);
        let mut slots = [FREE; GROUP];
        for (slot, &hash) in slots.iter_mut().zip(hashes) {
            if let Some(found) = self.table.peek(hash).and_then(|id| self.slots.get(id)) {
                *slot = found;
                sink ^= u64::from(found.off);
            }
        }
        for slot in &slots[..hashes.len()] {
            if !slot.is_free() {
                sink ^= u64::from(self.arena.bytes(slot.off, 1)[0]);
            }
        }
        std::hint::black_box(sink);
    }

    fn remove_hashed(&mut self, name: &str, hash: u64) -> Option<Removed> {
        match self.find(hash, name) {
            Probe::Found { bucket, id } => {
                self.table.erase(bucket);
                let removed = self.kill_slot(id);
                self.after_removals();
                Some(removed)
            }
            Probe::Vacant { .. } => None,
        }
    }

    /// Removes the entry with this id, if live. O(L) + O(log n), amortized.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// let id = index.upsert("ns-a", Status::Active, None).unwrap();
    /// assert!(index.remove_id(id).is_some());
    /// assert!(index.is_empty());
    /// ```
    pub fn remove_id(&mut self, id: EntryId) -> Option<Removed> {
        let slot = self.slots.get(id.0)?;
        if slot.is_free() {
            return None;
        }
        self.erase_from_table(id.0, slot);
        let removed = self.kill_slot(id.0);
        self.after_removals();
        Some(removed)
    }

    fn erase_from_table(&mut self, id: u32, slot: Slot) {
        let hash = xxh3_64(self.arena.bytes(slot.off, slot.len()));
        if let Some(bucket) = self.table.bucket_of(hash, id) {
            self.table.erase(bucket);
        }
    }

    /// Ends a live entry already erased from the table: cancels its deadline, leaves its
    /// name as a hole, and marks the slot dead (still linked in its range's list, so the
    /// removal is O(1) on a singly linked list; the list walks of
    /// [`NamespaceIndex::remove_range`] and [`NamespaceIndex::sweep`] unlink it).
    #[inline]
    fn kill_slot(&mut self, id: u32) -> Removed {
        let (off, meta) = (self.slots.key(id).0, self.slots.meta(id));
        let deadline = self.expiry.cancel(id);
        self.arena.release(off, usize::from(meta & LEN_MASK));
        // Length 0: not live. The link stays (and is not even read here).
        self.slots.set_meta(id, 0);
        self.dead += 1;
        self.live -= 1;
        Removed {
            status: Status::from_bits(meta >> 6),
            deadline,
        }
    }

    /// Puts an unlinked slot (dead or just killed) on the free list.
    #[inline]
    fn release_slot(&mut self, id: u32) {
        // Its length is already 0; its link is never read again.
        self.slots.set_off(id, self.free_head);
        self.free_head = id;
    }

    /// Makes `kept` (or the head of range `r` when `kept` is `NO_LINK`), whose link is
    /// `link` now, point at `to`.
    #[inline]
    fn patch_link(&mut self, r: usize, kept: u32, link: u32, to: u32) {
        if link == to {
            return;
        }
        if kept == NO_LINK {
            self.heads[r] = to;
        } else {
            self.slots.set_link(kept, to);
        }
    }

    /// Unlinks every dead slot from its range's list and frees it. O(R + S); called when
    /// the dead slots are at least an eighth of all slots plus R/64 (so amortized O(1)
    /// per removal), or when slot ids run out.
    fn sweep(&mut self) {
        for r in 0..self.heads.len() {
            let mut id = self.heads[r];
            // The last live slot kept so far (`NO_LINK`: none yet, the head is patched)
            // and where its link points now: patched only when dead slots were skipped.
            let (mut kept, mut kept_link) = (NO_LINK, id);
            while id != NO_LINK {
                let slot = self.slots.at(id);
                if slot.is_free() {
                    self.release_slot(id);
                } else {
                    self.patch_link(r, kept, kept_link, id);
                    (kept, kept_link) = (id, slot.link);
                }
                id = slot.link;
            }
            self.patch_link(r, kept, kept_link, NO_LINK);
        }
        self.dead = 0;
    }

    fn after_removals(&mut self) {
        // A compaction costs O(S + live bytes): wait for at least that much garbage (over
        // the live bytes and two bytes per slot) so it is amortized O(1).
        let garbage = self.arena.garbage();
        let live_bytes = self.arena.used() - garbage;
        if garbage > MIN_GARBAGE_TO_COMPACT
            && garbage > live_bytes
            && garbage > 2 * self.slots.len()
        {
            self.compact_arena();
        }
        if self.table.is_sparse() {
            self.rebuild_table(Table::tidy_capacity(self.live as usize));
        }
    }

    /// Copies the live names into a fresh arena. O(S + live bytes).
    fn compact_arena(&mut self) {
        let mut arena = NameArena::default();
        let Slots { offs, metas, .. } = &mut self.slots;
        // Segment by segment, a plain loop over each (no per-slot segment lookup).
        for (offs, (_, metas)) in offs.segments_mut().zip(metas.segments()) {
            for (off, &meta) in offs.iter_mut().zip(metas) {
                let len = usize::from(meta & LEN_MASK);
                if len != 0 {
                    // The fresh arena holds less than the old one: it cannot be full.
                    *off = arena.push(self.arena.get(*off, len)).unwrap_or(NO_SLOT);
                }
            }
        }
        self.arena = arena;
    }

    /// Removes every entry of hash range `range` (handover), cancelling their deadlines;
    /// returns how many. O(entries of the range), amortized: a walk of the range's list
    /// (which also frees the slots of its earlier removals), hashing each name once to
    /// erase it from the table.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(2).unwrap());
    /// for i in 0..100 {
    ///     index.upsert(&format!("ns-{i}"), Status::Active, None).unwrap();
    /// }
    /// let in_zero = index.iter_range(0).count();
    /// assert_eq!(index.remove_range(0), in_zero);
    /// assert_eq!(index.len(), 100 - in_zero);
    /// assert!(index.iter().all(|e| e.range == 1));
    /// ```
    pub fn remove_range(&mut self, range: u32) -> usize {
        let removed = self.unlink_ranges(std::iter::once(range));
        if removed > 0 {
            self.after_removals();
        }
        removed
    }

    /// Removes every entry whose range is in `ranges` (e.g. all ranges no longer owned);
    /// returns how many. O(R/64 + ranges in the set + their entries), amortized.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, RangeSet, Status};
    /// let count = RangeCount::new(8).unwrap();
    /// let mut index = NamespaceIndex::new(count);
    /// for i in 0..100 {
    ///     index.upsert(&format!("ns-{i}"), Status::Active, None).unwrap();
    /// }
    /// let kept = RangeSet::parse("0-3", count).unwrap();
    /// let dropped = RangeSet::full(count).difference(&kept).unwrap();
    /// index.remove_ranges(&dropped);
    /// assert!(index.iter().all(|e| kept.contains(e.range)));
    /// ```
    pub fn remove_ranges(&mut self, ranges: &RangeSet) -> usize {
        let removed = self.unlink_ranges(ranges.iter());
        if removed > 0 {
            self.after_removals();
        }
        removed
    }

    /// Empties the lists of `ranges`: removes their live entries, frees all their slots.
    ///
    /// Slots are taken in groups of 16, each group worked stage by stage (slots, names,
    /// table buckets, then the removals) so that its cache misses overlap. A list is a
    /// chain of dependent reads, so up to 8 lists are walked side by side, a slot from
    /// each in turn, and their chains overlap too.
    fn unlink_ranges(&mut self, mut ranges: impl Iterator<Item = u32>) -> usize {
        const LISTS: usize = 8;
        let mut cursors = [NO_LINK; LISTS];
        let mut removed = 0;
        let mut ids = [0u32; GROUP];
        let mut hashes = [0u64; GROUP];
        let mut more = true;
        loop {
            let mut len = 0;
            'fill: while len < GROUP {
                let mut walked = false;
                for cursor in &mut cursors {
                    // An empty cursor takes the next non-empty list.
                    while *cursor == NO_LINK && more {
                        match ranges.next() {
                            Some(r) => {
                                if let Some(head) = self.heads.get_mut(r as usize) {
                                    *cursor = std::mem::replace(head, NO_LINK);
                                }
                            }
                            None => more = false,
                        }
                    }
                    if *cursor != NO_LINK {
                        ids[len] = *cursor;
                        *cursor = self.slots.at(*cursor).link;
                        len += 1;
                        walked = true;
                        if len == GROUP {
                            break 'fill;
                        }
                    }
                }
                if !walked {
                    break;
                }
            }
            if len == 0 {
                return removed;
            }
            let mut sink = 0u64;
            for &id in &ids[..len] {
                let (off, meta) = self.slots.key(id);
                if meta != 0 {
                    sink ^= u64::from(self.arena.bytes(off, 1)[0]);
                }
            }
            for (&id, hash) in ids[..len].iter().zip(&mut hashes) {
                let (off, meta) = self.slots.key(id);
                if meta != 0 {
                    *hash = xxh3_64(self.arena.bytes(off, usize::from(meta)));
                    sink ^= u64::from(self.table.touch(*hash));
                }
            }
            std::hint::black_box(sink);
            for (&id, &hash) in ids[..len].iter().zip(&hashes) {
                if self.slots.meta(id) & LEN_MASK != 0 {
                    if let Some(bucket) = self.table.bucket_of(hash, id) {
                        self.table.erase(bucket);
                    }
                    self.kill_slot(id);
                    removed += 1;
                }
                self.dead -= 1;
                self.release_slot(id);
            }
        }
    }

    /// All entries, in slot order. O(S × L) for a full pass (each name is hashed for its
    /// range).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// index.upsert("a", Status::Active, None).unwrap();
    /// index.upsert("b", Status::Locked, None).unwrap();
    /// let mut names: Vec<&str> = index.iter().map(|e| e.name).collect();
    /// names.sort();
    /// assert_eq!(names, ["a", "b"]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        (0..self.slots.len() as u32).filter_map(|id| self.view(id))
    }

    /// The entries of one range, most recently inserted first. O(entries of the range +
    /// its removals not yet swept): a walk of the range's list, no hashing.
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let count = RangeCount::new(16).unwrap();
    /// let mut index = NamespaceIndex::new(count);
    /// index.upsert("ns-a", Status::Active, None).unwrap();
    /// let r = count.range_of("ns-a");
    /// assert_eq!(index.iter_range(r).map(|e| e.name).collect::<Vec<_>>(), ["ns-a"]);
    /// ```
    pub fn iter_range(&self, range: u32) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        let mut id = self.heads.get(range as usize).copied().unwrap_or(NO_LINK);
        std::iter::from_fn(move || {
            while id != NO_LINK {
                let slot = self.slots.at(id);
                let this = id;
                id = slot.link;
                if !slot.is_free() {
                    return Some(EntryRef {
                        id: EntryId(this),
                        name: slot_name(&self.arena, slot),
                        status: slot.status(),
                        range,
                        deadline: self.expiry.deadline(this),
                    });
                }
            }
            None
        })
    }

    /// The earliest pending deadline: when the caller's timer should fire next. O(1).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount};
    /// assert_eq!(NamespaceIndex::new(RangeCount::new(4).unwrap()).next_deadline(), None);
    /// ```
    pub fn next_deadline(&self) -> Option<Deadline> {
        self.expiry.peek().map(|(_, d)| d)
    }

    /// Number of entries with a pending deadline. O(1).
    ///
    /// ```
    /// use shard::{Deadline, NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// index.upsert("a", Status::Locked, Some(Deadline::MAX)).unwrap();
    /// assert_eq!(index.scheduled(), 1);
    /// ```
    pub fn scheduled(&self) -> usize {
        self.expiry.len()
    }

    /// Pops the earliest entry whose deadline is due at `now` (Unix seconds): the deadline
    /// is no longer pending, the entry stays (its `deadline` field shows the one that fell
    /// due). O(log n).
    ///
    /// ```
    /// use shard::{Deadline, NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// let d = Deadline::from_unix_secs(50).unwrap();
    /// index.upsert("a", Status::Locked, Some(d)).unwrap();
    /// assert!(index.pop_due(49).is_none());
    /// let due = index.pop_due(50).unwrap();
    /// assert_eq!((due.name, due.deadline), ("a", Some(d)));
    /// assert_eq!(index.get("a").unwrap().deadline, None);
    /// ```
    pub fn pop_due(&mut self, now: i64) -> Option<EntryRef<'_>> {
        let (id, deadline) = self.expiry.pop_due(now)?;
        let mut entry = self.view(id)?;
        entry.deadline = Some(deadline);
        Some(entry)
    }

    /// Pops everything due at `now`, earliest first (ties in id order), lazily: what the
    /// iterator has not yielded when dropped stays pending. O(log n) per item.
    ///
    /// ```
    /// use shard::{Deadline, NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// for (name, at) in [("a", 30), ("b", 10), ("c", 99)] {
    ///     index.upsert(name, Status::Locked, Some(Deadline::from_unix_secs(at).unwrap())).unwrap();
    /// }
    /// let due: Vec<&str> = index.drain_due(50).map(|e| e.name).collect();
    /// assert_eq!(due, ["b", "a"]);
    /// ```
    pub fn drain_due(&mut self, now: i64) -> DrainDue<'_> {
        DrainDue {
            expiry: &mut self.expiry,
            slots: &self.slots,
            arena: &self.arena,
            count: self.count,
            now,
        }
    }

    /// Removes every entry; keeps the allocated memory. O(S).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// index.upsert("a", Status::Active, None).unwrap();
    /// index.clear();
    /// assert!(index.is_empty() && index.get("a").is_none());
    /// ```
    pub fn clear(&mut self) {
        self.arena = NameArena::default();
        self.slots.clear();
        self.heads.fill(NO_LINK);
        self.dead = 0;
        self.free_head = NO_SLOT;
        self.live = 0;
        self.table.clear();
        self.expiry.clear();
    }

    /// Bytes of heap memory held (allocated capacities of arena, slots, table and expiry
    /// queue): the figure for a memory gauge. O(1).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount};
    /// assert_eq!(NamespaceIndex::new(RangeCount::new(4).unwrap()).memory_bytes(), 0);
    /// ```
    pub fn memory_bytes(&self) -> usize {
        self.memory().total()
    }

    /// Memory held, part by part, for gauges and for tuning. O(1).
    ///
    /// ```
    /// use shard::{NamespaceIndex, RangeCount, Status};
    /// let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
    /// index.upsert("ns-a", Status::Active, None).unwrap();
    /// let m = index.memory();
    /// assert!(m.arena >= 4 && m.garbage == 0);
    /// assert_eq!(m.total(), index.memory_bytes());
    /// ```
    pub fn memory(&self) -> MemoryUsage {
        MemoryUsage {
            arena: self.arena.memory_bytes(),
            garbage: self.arena.garbage(),
            slots: self.slots.memory_bytes() + self.heads.capacity() * size_of::<u32>(),
            table: self.table.memory_bytes(),
            expiry: self.expiry.memory_bytes(),
        }
    }
}

fn check_name(name: &str) -> Result<(), IndexError> {
    match name.len() {
        0 => Err(IndexError::EmptyName),
        len if len > MAX_NAME_LEN => Err(IndexError::NameTooLong { len }),
        _ => Ok(()),
    }
}

/// Whether two names of the same length (at most 63 bytes) are equal, compared a word at
/// a time: for names of 8 bytes and more, the words at 0, 8, ... and the last (possibly
/// overlapping) word, with no call and no byte loop.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n < 8 || b.len() != n {
        return a == b;
    }
    let word = |s: &[u8], i: usize| {
        s.get(i..i + 8)
            .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
    };
    let mut i = 0;
    while i + 8 < n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

#[inline]
fn slot_name(arena: &NameArena, slot: Slot) -> &str {
    arena.get(slot.off, slot.len())
}

/// Iterator of [`NamespaceIndex::drain_due`].
#[derive(Debug)]
pub struct DrainDue<'a> {
    expiry: &'a mut ExpiryQueue,
    slots: &'a Slots,
    arena: &'a NameArena,
    count: RangeCount,
    now: i64,
}

impl<'a> Iterator for DrainDue<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        loop {
            let (id, deadline) = self.expiry.pop_due(self.now)?;
            // Every scheduled id is a live slot (removal cancels); skip defensively.
            let Some(slot) = self.slots.get(id) else {
                continue;
            };
            if slot.is_free() {
                continue;
            }
            let name = slot_name(self.arena, slot);
            return Some(EntryRef {
                id: EntryId(id),
                name,
                status: slot.status(),
                range: self.count.range_of(name),
                deadline: Some(deadline),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone, PartialEq)]
    struct ModelEntry {
        status: Status,
        deadline: Option<u32>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(usize, Status, Option<u32>),
        Remove(usize),
        RemoveId(usize),
        RemoveMany(Vec<usize>),
        UpsertMany(Vec<(usize, Status, Option<u32>)>),
        SetStatus(usize, Status),
        SetDeadline(usize, Option<u32>),
        RemoveRange(u32),
        RemoveRanges(Vec<u32>),
        /// Remove the range of a key's name (random ranges rarely hold one when R is big).
        RemoveRangeOf(usize),
        PopDue(u32),
        Get(usize),
    }

    fn status() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Unknown),
            Just(Status::Active),
            Just(Status::Locked)
        ]
    }

    fn op(keys: usize, ranges: u32) -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..keys, status(), proptest::option::of(0u32..50)).prop_map(|(k, s, d)| Op::Upsert(k, s, d)),
            3 => (0..keys).prop_map(Op::Remove),
            1 => (0..keys).prop_map(Op::RemoveId),
            1 => proptest::collection::vec(0..keys, 0..40).prop_map(Op::RemoveMany),
            1 => proptest::collection::vec((0..keys, status(), proptest::option::of(0u32..50)), 0..40)
                .prop_map(Op::UpsertMany),
            1 => (0..keys, status()).prop_map(|(k, s)| Op::SetStatus(k, s)),
            2 => (0..keys, proptest::option::of(0u32..50)).prop_map(|(k, d)| Op::SetDeadline(k, d)),
            1 => (0..ranges).prop_map(Op::RemoveRange),
            1 => proptest::collection::vec(0..ranges, 0..4).prop_map(Op::RemoveRanges),
            1 => (0..keys).prop_map(Op::RemoveRangeOf),
            1 => (0u32..50).prop_map(Op::PopDue),
            2 => (0..keys).prop_map(Op::Get),
        ]
    }

    /// Key space: a few names of all lengths, several in the same range (R = 2).
    fn key_names() -> Vec<String> {
        let mut names: Vec<String> = (0..24).map(|i| format!("ns-{i}")).collect();
        names.push("a".into());
        names.push("x".repeat(63));
        names.push("y".repeat(62));
        names.push("ü-ns".into()); // not a valid label, but the index must not care
        names
    }

    fn check(
        index: &NamespaceIndex,
        model: &HashMap<String, ModelEntry>,
        names: &[String],
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(index.len(), model.len());
        for name in names {
            let got = index.get(name).map(|e| ModelEntry {
                status: e.status,
                deadline: e.deadline.map(|d| d.as_unix_secs() as u32),
            });
            prop_assert_eq!(got.as_ref(), model.get(name), "{}", name);
            if let Some(e) = index.get(name) {
                prop_assert_eq!(e.name, name.as_str());
                prop_assert_eq!(e.range, index.range_count().range_of(name));
                prop_assert_eq!(index.entry(e.id), Some(e));
            }
        }
        let mut listed: Vec<&str> = index.iter().map(|e| e.name).collect();
        listed.sort_unstable();
        let mut expected: Vec<&str> = model.keys().map(String::as_str).collect();
        expected.sort_unstable();
        prop_assert_eq!(listed, expected);
        prop_assert_eq!(
            index.scheduled(),
            model.values().filter(|e| e.deadline.is_some()).count()
        );
        // Every range's list holds exactly the range's entries.
        let count = index.range_count();
        let mut ranges: Vec<u32> = names.iter().map(|n| count.range_of(n)).collect();
        ranges.sort_unstable();
        ranges.dedup();
        for r in ranges {
            let mut listed: Vec<(&str, EntryId)> =
                index.iter_range(r).map(|e| (e.name, e.id)).collect();
            listed.sort_unstable();
            let mut expected: Vec<(&str, EntryId)> = model
                .keys()
                .filter(|n| count.range_of(n) == r)
                .map(|n| (n.as_str(), index.get(n).map(|e| e.id).unwrap()))
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(listed, expected, "range {}", r);
            prop_assert!(index
                .iter_range(r)
                .all(|e| e.range == r && index.entry(e.id) == Some(e)));
        }
        Ok(())
    }

    fn run(ops: Vec<Op>, ranges: u32) -> Result<(), TestCaseError> {
        let names = key_names();
        let count = RangeCount::new(ranges).unwrap();
        let mut index = NamespaceIndex::new(count);
        let mut model: HashMap<String, ModelEntry> = HashMap::new();
        let at = |d: u32| Deadline::from_unix_secs(i64::from(d)).unwrap();
        for op in ops {
            match op {
                Op::Upsert(k, s, d) => {
                    let id = index.upsert(&names[k], s, d.map(at)).unwrap();
                    prop_assert_eq!(index.entry(id).map(|e| e.name), Some(names[k].as_str()));
                    model.insert(
                        names[k].clone(),
                        ModelEntry {
                            status: s,
                            deadline: d,
                        },
                    );
                }
                Op::Remove(k) => {
                    let got = index.remove(&names[k]).map(|r| ModelEntry {
                        status: r.status,
                        deadline: r.deadline.map(|d| d.as_unix_secs() as u32),
                    });
                    prop_assert_eq!(got, model.remove(&names[k]));
                }
                Op::RemoveId(k) => {
                    if let Some(id) = index.get(&names[k]).map(|e| e.id) {
                        prop_assert!(index.remove_id(id).is_some());
                        prop_assert!(index.remove_id(id).is_none());
                        model.remove(&names[k]);
                    }
                }
                Op::RemoveMany(ks) => {
                    let mut expected = 0;
                    for k in &ks {
                        expected += usize::from(model.remove(&names[*k]).is_some());
                    }
                    prop_assert_eq!(
                        index.remove_many(ks.iter().map(|k| names[*k].as_str())),
                        expected
                    );
                }
                Op::UpsertMany(items) => {
                    let n = index.upsert_many(
                        items
                            .iter()
                            .map(|&(k, s, d)| (names[k].as_str(), s, d.map(at))),
                    );
                    prop_assert_eq!(n, Ok(items.len()));
                    for (k, s, d) in items {
                        model.insert(
                            names[k].clone(),
                            ModelEntry {
                                status: s,
                                deadline: d,
                            },
                        );
                    }
                }
                Op::SetStatus(k, s) => {
                    let id = index.get(&names[k]).map(|e| e.id);
                    if let (Some(id), Some(m)) = (id, model.get_mut(&names[k])) {
                        prop_assert!(index.set_status(id, s));
                        m.status = s;
                    } else {
                        prop_assert!(id.is_none());
                    }
                }
                Op::SetDeadline(k, d) => {
                    let id = index.get(&names[k]).map(|e| e.id);
                    if let (Some(id), Some(m)) = (id, model.get_mut(&names[k])) {
                        prop_assert!(index.set_deadline(id, d.map(at)));
                        m.deadline = d;
                    } else {
                        prop_assert!(id.is_none());
                    }
                }
                Op::RemoveRange(r) => {
                    let before = model.len();
                    model.retain(|name, _| count.range_of(name) != r);
                    prop_assert_eq!(index.remove_range(r), before - model.len());
                }
                Op::RemoveRangeOf(k) => {
                    let r = count.range_of(&names[k]);
                    let before = model.len();
                    model.retain(|name, _| count.range_of(name) != r);
                    prop_assert_eq!(index.remove_range(r), before - model.len());
                }
                Op::RemoveRanges(rs) => {
                    let mut set = RangeSet::new(count);
                    for r in rs {
                        set.insert(r);
                    }
                    let before = model.len();
                    model.retain(|name, _| !set.contains(count.range_of(name)));
                    prop_assert_eq!(index.remove_ranges(&set), before - model.len());
                }
                Op::PopDue(now) => {
                    let got: Vec<(String, u32)> = index
                        .drain_due(i64::from(now))
                        .map(|e| (e.name.to_owned(), e.deadline.unwrap().as_unix_secs() as u32))
                        .collect();
                    let mut want: Vec<(String, u32)> = model
                        .iter()
                        .filter_map(|(n, e)| {
                            e.deadline.filter(|&d| d <= now).map(|d| (n.clone(), d))
                        })
                        .collect();
                    want.sort_by_key(|w| w.1);
                    // Equal deadlines pop in id order, which the model does not know:
                    // compare deadlines in order, and names as sets.
                    prop_assert_eq!(
                        got.iter().map(|g| g.1).collect::<Vec<_>>(),
                        want.iter().map(|w| w.1).collect::<Vec<_>>()
                    );
                    let mut g: Vec<&String> = got.iter().map(|g| &g.0).collect();
                    let mut w: Vec<&String> = want.iter().map(|w| &w.0).collect();
                    g.sort();
                    w.sort();
                    prop_assert_eq!(g, w);
                    for (n, _) in &want {
                        if let Some(m) = model.get_mut(n) {
                            m.deadline = None;
                        }
                    }
                }
                Op::Get(k) => {
                    prop_assert_eq!(
                        index.get(&names[k]).is_some(),
                        model.contains_key(&names[k])
                    );
                }
            }
            check(&index, &model, &names)?;
        }
        Ok(())
    }

    proptest! {
        // 2000 + 1000 random sequences of up to 120 operations each, full check after
        // every operation.
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn matches_a_hashmap_model(ops in proptest::collection::vec(op(28, 2), 0..120)) {
            run(ops, 2)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn matches_a_hashmap_model_many_ranges(ops in proptest::collection::vec(op(28, 65536), 0..120)) {
            run(ops, 65536)?;
        }
    }

    #[test]
    fn rejects_bad_names() {
        let mut index = NamespaceIndex::new(RangeCount::new(4).unwrap());
        assert_eq!(
            index.upsert("", Status::Active, None),
            Err(IndexError::EmptyName)
        );
        let long = "z".repeat(64);
        assert_eq!(
            index.upsert(&long, Status::Active, None),
            Err(IndexError::NameTooLong { len: 64 })
        );
        assert!(index.get(&long).is_none());
        assert!(index.remove(&long).is_none());
        assert!(index.is_empty());
        assert!(index.upsert(&long[..63], Status::Active, None).is_ok());
        let items = [
            ("ok", Status::Active, None),
            ("", Status::Active, None),
            ("later", Status::Active, None),
        ];
        assert_eq!(index.upsert_many(items), Err(IndexError::EmptyName));
        assert!(index.get("ok").is_some() && index.get("later").is_none());
    }

    /// Many names, growth and shrinkage, removals that trigger arena compaction and
    /// table rebuilds: everything stays findable and names stay whole.
    #[test]
    fn many_names_through_growth_and_compaction() {
        let count = RangeCount::new(256).unwrap();
        let mut index = NamespaceIndex::new(count);
        let name = |i: u32| format!("namespace-with-a-long-name-{i:08}-{}", i % 7);
        for i in 0..50_000 {
            index
                .upsert(&name(i), Status::Locked, Some(Deadline::MAX))
                .unwrap();
        }
        assert_eq!(index.len(), 50_000);
        for i in (0..50_000).filter(|i| i % 3 != 0) {
            assert!(index.remove(&name(i)).is_some());
        }
        for i in 0..50_000 {
            let e = index.get(&name(i));
            assert_eq!(e.is_some(), i % 3 == 0, "{i}");
            if let Some(e) = e {
                assert_eq!(e.name, name(i));
                assert_eq!(e.deadline, Some(Deadline::MAX));
            }
        }
        assert!(index.arena.used() < 2 * 16_667 * 40, "arena compacted");
        for r in 0..128 {
            index.remove_range(r);
        }
        assert!(index.iter().all(|e| e.range >= 128));
        assert_eq!(index.scheduled(), index.len());
        for i in 50_000..60_000 {
            index.upsert(&name(i), Status::Active, None).unwrap();
        }
        for i in 50_000..60_000 {
            assert_eq!(index.get(&name(i)).unwrap().status, Status::Active);
        }
    }

    /// Removals leave dead slots in their range lists; churn must reclaim them (sweeps
    /// and range walks) so slots stay near the live count, and lists stay exact.
    #[test]
    fn churn_reclaims_dead_slots() {
        let count = RangeCount::new(64).unwrap();
        let mut index = NamespaceIndex::new(count);
        let mut present = std::collections::BTreeSet::new();
        let name = |i: u32| format!("churn-{i}");
        let live = 5000;
        for i in 0..live {
            index.upsert(&name(i), Status::Active, None).unwrap();
            present.insert(name(i));
        }
        for round in 0..20u32 {
            // Replace a fifth of the names; every other round drop one range as well.
            let (from, to) = (round * live / 5, (round + 1) * live / 5);
            for i in from..to {
                assert_eq!(index.remove(&name(i)).is_some(), present.remove(&name(i)));
            }
            for i in from + live..to + live {
                index.upsert(&name(i), Status::Locked, None).unwrap();
                present.insert(name(i));
            }
            if round % 2 == 1 {
                let r = round % 64;
                let before = present.len();
                present.retain(|n| count.range_of(n) != r);
                assert_eq!(index.remove_range(r), before - present.len());
                assert_eq!(index.iter_range(r).count(), 0);
            }
            assert!(
                index.slots.len() <= 2 * live as usize,
                "round {round}: {} slots",
                index.slots.len()
            );
            let mut listed = Vec::new();
            for r in 0..64 {
                for e in index.iter_range(r) {
                    assert_eq!(count.range_of(e.name), r);
                    assert_eq!(index.get(e.name).map(|g| g.id), Some(e.id));
                    listed.push(e.name.to_owned());
                }
            }
            listed.sort();
            assert!(listed.iter().eq(present.iter()), "round {round}");
        }
    }

    /// `remove_ranges` walks up to 8 lists side by side and refills its cursors from the
    /// set: every entry of the set's ranges goes, every other stays, also with removals
    /// (dead slots) already in the lists.
    #[test]
    fn remove_ranges_walks_many_lists() {
        let count = RangeCount::new(64).unwrap();
        let mut index = NamespaceIndex::new(count);
        let name = |i: u32| format!("lists-{i}");
        for i in 0..6000 {
            index.upsert(&name(i), Status::Active, None).unwrap();
        }
        for i in (0..6000).step_by(7) {
            index.remove(&name(i));
        }
        let mut set = RangeSet::new(count);
        for r in [0, 1, 2, 5, 8, 9, 13, 21, 34, 35, 36, 40, 41, 55, 63] {
            set.insert(r);
        }
        let doomed = |i: u32| set.contains(count.range_of(&name(i)));
        let expected = (0..6000).filter(|&i| i % 7 != 0 && doomed(i)).count();
        assert_eq!(index.remove_ranges(&set), expected);
        for i in 0..6000 {
            assert_eq!(
                index.get(&name(i)).is_some(),
                i % 7 != 0 && !doomed(i),
                "{i}"
            );
        }
        for r in 0..64 {
            let live = (0..6000)
                .filter(|&i| i % 7 != 0 && !set.contains(r) && count.range_of(&name(i)) == r)
                .count();
            assert_eq!(index.iter_range(r).count(), live, "range {r}");
        }
        assert_eq!(
            index.dead,
            6000 / 7 + 1 - (0..6000).step_by(7).filter(|&i| doomed(i)).count() as u32
        );
    }

    #[test]
    fn same_bytes_sees_every_byte() {
        for len in 1..=MAX_NAME_LEN {
            let a: Vec<u8> = (0..len as u8).map(|i| b'a' + i % 26).collect();
            assert!(same_bytes(&a, &a.clone()), "{len}");
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_bytes(&a, &b), "length {len}, byte {at}");
            }
            assert!(!same_bytes(&a, &a[..len - 1]), "{len}");
        }
    }

    #[test]
    fn with_capacity_does_not_reallocate() {
        let count = RangeCount::new(256).unwrap();
        let mut index = NamespaceIndex::with_capacity(count, 1000);
        let before = index.memory();
        for i in 0..1000 {
            index
                .upsert(&format!("ns-{i:016}"), Status::Active, None)
                .unwrap();
        }
        let after = index.memory();
        assert_eq!((after.slots, after.table), (before.slots, before.table));
    }
}
