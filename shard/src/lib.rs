//! Pure data structures of block-controller's sharding: no I/O, no clock (time is passed
//! in as Unix seconds), no Kubernetes types.
//!
//! ```text
//!  namespace name ──xxh3-64──▶ hash ──(hash × R) >> 64──▶ range r ∈ 0..R
//!                                                           │
//!   live members + current owners ──Assignment──▶ owner of r │
//!                                                           ▼
//!   watch event ──EventFilter (is r mine?)──▶ NamespaceIndex (name, status, range,
//!                                              deadline) ──ExpiryQueue──▶ due names
//! ```
//!
//! * [`ranges`]: [`hash_name`], [`range_of_hash`], [`RangeCount`] (`R`, 1..=65536) and
//!   [`RangeSet`], a bitset of ranges whose text form is `0-31,64-95`.
//! * [`assignment`]: [`Assignment`], who should own each range: deterministic, balanced
//!   (`⌊R/N⌋` or `⌈R/N⌉` each), sticky, moving at most `⌈R/(N+1)⌉` ranges when a member
//!   joins and only the leaver's ranges when one leaves.
//! * [`filter`]: [`EventFilter`], the O(1) exact "is this name in my ranges?".
//! * [`index`]: [`NamespaceIndex`], compact state of the owned namespaces (about 47 bytes
//!   per namespace with its deadline), O(1) insert/update/remove/lookup, whole-range
//!   removal for handover in time proportional to the range, never dropping state.
//! * [`expiry`]: [`ExpiryQueue`] and [`Deadline`], one pending deadline per key, popped
//!   when due; embedded in the index.
//!
//! A replica's event path, end to end:
//!
//! ```
//! use shard::{Assignment, Deadline, EventFilter, NamespaceIndex, RangeCount, Status};
//!
//! let count = RangeCount::new(256).unwrap();
//! let members = ["block-controller-0", "block-controller-1"];
//! let assignment = Assignment::balanced(count, &members).unwrap();
//! let mine = assignment.ranges_of("block-controller-0");
//! assert_eq!(mine.to_string(), "0-127");
//!
//! let filter = EventFilter::new(&mine);
//! let mut index = NamespaceIndex::new(count);
//! for (name, deadline) in [("team-alpha-prod-17", 1_700_000_000), ("ns-user-3f9a2c", 1_700_000_100)] {
//!     if filter.contains(name) {
//!         let d = Deadline::from_unix_secs(deadline).unwrap();
//!         index.upsert(name, Status::Locked, Some(d)).unwrap();
//!     }
//! }
//! for due in index.drain_due(1_700_000_050) {
//!     assert!(filter.contains(due.name)); // unlock it
//! }
//! ```
#![deny(missing_docs)]

mod arena;
pub mod assignment;
pub mod expiry;
pub mod filter;
mod grow;
pub mod index;
pub mod ranges;
mod table;

pub use assignment::{natural_cmp, Assignment, AssignmentError};
pub use expiry::{Deadline, ExpiryError, ExpiryQueue};
pub use filter::EventFilter;
pub use index::{
    DrainDue, EntryId, EntryRef, IndexError, MemoryUsage, NamespaceIndex, Removed, Status,
    MAX_NAME_LEN,
};
pub use ranges::{
    hash_name, range_of, range_of_hash, RangeCount, RangeError, RangeSet, MAX_RANGES,
};
