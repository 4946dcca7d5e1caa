//! Lease-based coordination of hash ranges between the replicas of block-controller: the
//! deterministic, sans-I/O protocol core. No Kubernetes client, no async runtime, no clock:
//! the driver feeds it what its one watch over the protocol's Leases shows, the results of
//! the writes it asked for, and the time of its own monotonic clock; the machine answers
//! with writes to send, events to act on, and when to wake it next (as quinn-proto does for
//! QUIC). The README of this crate states the protocol, its invariants and the figures of
//! the simulator that checks them.
//!
//! # The model
//!
//! * **Member lease** `<prefix>-member-<identity>`, one per replica identity (the pod name),
//!   held by `<identity>_<instance>` and renewed every retry period (2 s). It is the only
//!   lease renewed at steady state: renew traffic grows with replicas, never with ranges.
//! * **Range lease** `<prefix>-range-<r>` for each of the `R` hash ranges, naming the
//!   holder that claimed it. Written only when ownership changes. A claim is valid while the
//!   member lease of the holder's identity names that holder and is renewed.
//! * **Leader lease** `<prefix>-leader`, an ordinary renewed lease for singleton duties.
//!
//! Who should own what is [`shard::Assignment`] over the live member identities, keeping
//! current owners. Every write is a compare-and-swap on the resourceVersion the member last
//! saw. Expiry is judged by local observation time: a lease is expired for me when I have
//! seen no change of it for a full lease duration of my clock.
//!
//! # Driving it
//!
//! ```text
//!              ┌──────── driver (kube + tokio: `driver`, feature `kube`) ───────────┐
//!  list ──────▶│ handle_list         (initial list, and every relist, whole)       │
//!  watch ─────▶│ handle_observed / handle_deleted   (one watch, in order)          │
//!  results ───▶│ handle_write_result (exactly once per request)     ┌──────────┐  │
//!  timer ─────▶│ handle_timeout                                 ───▶│ Machine  │  │
//!  drained ───▶│ handle_drained      (after Event::Draining)        └────┬─────┘  │
//!  operator ──▶│ set_leaving / shutdown                                  │        │
//!              │      poll_request ─▶ create / update-with-rv, each with a timeout  │
//!              │      poll_event   ─▶ start / drain / stop work, leadership         │
//!              │      poll_timeout ─▶ sleep until then (or the next input)          │
//!              └───────────────────────────────────────────────────────────────────┘
//! ```
//!
//! 1. List the protocol's leases (label [`PREFIX_LABEL`]) and hand the whole list to
//!    [`Machine::handle_list`]; nothing is written before. Then watch from the list's
//!    resourceVersion and feed every event, in order, to [`Machine::handle_observed`] or
//!    [`Machine::handle_deleted`]. When the watch breaks (410 Gone, idle timeout), relist and
//!    call `handle_list` again with the whole list.
//! 2. After every input, send every [`Machine::poll_request`] (a Create, or a PUT with the
//!    expected resourceVersion; never a patch) and report each outcome once with
//!    [`Machine::handle_write_result`]; act on every [`Machine::poll_event`]; then sleep
//!    until [`Machine::poll_timeout`] or the next input, and call
//!    [`Machine::handle_timeout`].
//! 3. Before starting any request on behalf of a range, check that
//!    [`Machine::owned`]`(now)` contains it (or that `now` is before
//!    [`Machine::work_deadline`]); do the same with [`Machine::is_leader`] for singleton
//!    duties.
//!
//! ```
//! use lease::{Config, Event, Instant, Machine, Request};
//!
//! let config = Config::new("block-controller-0", "7f3a9c", "block-controller", 16).unwrap();
//! let mut machine = Machine::new(config, Instant::ZERO).unwrap();
//! machine.handle_list(Instant::ZERO, Vec::new()); // nothing exists yet
//! match machine.poll_request() {
//!     Some(Request::Create { lease, .. }) => {
//!         assert_eq!(lease.name, "block-controller-member-block-controller-0");
//!         assert_eq!(lease.holder.as_deref(), Some("block-controller-0_7f3a9c"));
//!     }
//!     other => panic!("expected the member lease create, got {other:?}"),
//! }
//! assert_eq!(machine.poll_event(), None);
//! assert!(machine.owned(Instant::ZERO).is_empty()); // nothing is ours before a claim lands
//! ```
//!
//! # What the driver guarantees
//!
//! * **Bounded requests.** Every API request of the process (lease writes and the work on
//!   owned ranges) carries a timeout of at most [`Config::request_timeout`]: it lands before
//!   that or never. [`Config::validate`] checks
//!   `renew_deadline / 0.99 + request_timeout < lease_duration / 1.01`, which is what makes a
//!   member's last request land before anyone may take over from it.
//! * **One ordered watch** over all the protocol's leases, and whole relists.
//! * **Renew times written unchanged** (they identify the member's own writes).
//! * **`handle_drained` only when nothing is in flight** for those ranges; on
//!   [`Event::Lost`], stop at once (requests in flight are covered by the timeout bound).
//! * **Monotonic time** from one clock per process, rate within 1 % of real time.
#![deny(missing_docs)]

mod config;
mod machine;
mod record;
mod time;

#[cfg(feature = "kube")]
pub mod driver;

pub use config::{Config, ConfigError, MAX_CLOCK_DRIFT_PPM};
pub use machine::{Event, Machine};
pub use record::{
    LeaseKind, LeaseRecord, Request, RequestId, WriteOutcome, LEAVING_ANNOTATION, PREFIX_LABEL,
};
pub use time::Instant;
