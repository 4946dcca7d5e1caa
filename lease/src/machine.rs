//! The protocol state machine of one member. See the [crate docs](crate) for the model, the
//! call order and the safety argument.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use shard::{Assignment, RangeSet};

use crate::config::{identity_of, Config, ConfigError};
use crate::record::{LeaseKind, LeaseRecord, Request, RequestId, WriteOutcome};
use crate::time::Instant;

/// What the machine tells its driver. Read them with [`Machine::poll_event`] after every
/// input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// These ranges are now the member's: start intake (list their namespaces, build the
    /// index). They stay workable while they are in [`Machine::owned`].
    Acquired(RangeSet),
    /// Hand these ranges over: stop intake for them, finish (or time out) the work in
    /// flight, drop them from the index, then call [`Machine::handle_drained`]. They stay
    /// in [`Machine::owned`] until then.
    Draining(RangeSet),
    /// The claims on these (already drained) ranges were given up on the API server.
    /// Informational.
    Released(RangeSet),
    /// These ranges are no longer the member's *now*: stop all work on them at once, without
    /// finishing anything (renew deadline passed, or the member lease was taken away).
    Lost(RangeSet),
    /// Leadership for singleton duties was gained (`true`) or lost or given up (`false`).
    LeaderChanged(bool),
    /// Another process holds and renews the member lease of this identity (`holder` is its
    /// holder identity). This member waits until that lease is released or goes unrenewed
    /// for a full lease duration; log it loudly.
    DuplicateIdentity {
        /// The other process's holder identity.
        holder: String,
    },
    /// After [`Machine::shutdown`]: everything was drained and given up; the process may
    /// exit. Nothing is emitted after it.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    /// Waiting to (re)acquire the member lease of our identity.
    Joining,
    /// Holding the member lease in an unbroken renew chain.
    Active,
    /// The release of the member lease is in flight (or failed): no claims are ours any
    /// more, whether or not it lands.
    Releasing,
    /// Released the member lease while leaving; rejoins when no longer leaving.
    Out,
    /// Shut down.
    Stopped,
}

/// Which of the leases we renew ourselves a write is for.
#[derive(Debug, Clone, Copy)]
enum Own {
    Member,
    Leader,
}

/// An unbroken chain of successful writes to a lease we renew: every write expected the
/// resourceVersion the previous one produced, so nobody else wrote it in between.
#[derive(Debug, Clone)]
struct Chain {
    rv: String,
    /// When the last write known to have landed was *sent*: the renew deadline counts from
    /// here.
    renewed_sent: Instant,
}

/// A lease this member holds and renews: its member lease or the leader lease.
#[derive(Debug, Default)]
struct Held {
    chain: Option<Chain>,
    last_send: Option<Instant>,
    /// A renew whose outcome is unknown (`Failed`): its stamp and send time. If a later
    /// conflict turns out to be caused by it (observed with our stamp), the chain goes on.
    unknown: Option<(i64, Instant)>,
}

/// Our view of one lease, from observations and our own writes' results.
#[derive(Debug, Clone)]
struct Observed {
    record: Option<LeaseRecord>,
    /// Local time at which we first saw the current value (or its absence).
    since: Instant,
    /// Versions we wrote against (successfully or not): the lease has moved past them, so a
    /// view still showing one is old; wait for the watch. A few, newest last.
    dead: Vec<String>,
    /// Same for "absent": we created it, or a create found it there.
    dead_absent: bool,
    /// A write failed with unknown outcome: back off until then.
    retry_at: Option<Instant>,
    /// Our write in flight for this lease.
    busy: Option<RequestId>,
    /// The current holder renewed it while we watched.
    renewed_seen: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Same,
    /// Only resourceVersion / renew time / duration changed: a renewal.
    Renewed,
    /// Presence, holder or the leaving flag changed.
    Changed,
}

impl Observed {
    fn new(now: Instant) -> Observed {
        Observed {
            record: None,
            since: now,
            dead: Vec::new(),
            dead_absent: false,
            retry_at: None,
            busy: None,
            renewed_seen: false,
        }
    }

    fn observe(&mut self, now: Instant, record: Option<LeaseRecord>) -> Change {
        let change = match (&self.record, &record) {
            (None, None) => Change::Same,
            (Some(a), Some(b)) => {
                if a.holder() != b.holder() || a.leaving != b.leaving {
                    Change::Changed
                } else if a.resource_version != b.resource_version
                    || a.renew_time_micros != b.renew_time_micros
                    || a.lease_duration_secs != b.lease_duration_secs
                {
                    Change::Renewed
                } else {
                    Change::Same
                }
            }
            _ => Change::Changed,
        };
        if change != Change::Same {
            self.record = record;
            self.since = now;
            self.dead_absent = false;
            self.renewed_seen = change == Change::Renewed;
        }
        change
    }

    fn writable(&self, now: Instant) -> bool {
        self.busy.is_none()
            && self.retry_at.is_none_or(|t| now >= t)
            && match &self.record {
                None => !self.dead_absent,
                Some(r) => !self.dead.contains(&r.resource_version),
            }
    }

    /// Records that we wrote (or tried to write) against `expected`: views showing it are
    /// old now. Views change only through the watch (never through our write results,
    /// which may arrive after newer watch events and would roll the view back).
    fn moved_past(&mut self, expected: Option<&str>) {
        match expected {
            None => self.dead_absent = true,
            Some(rv) => {
                if !self.dead.iter().any(|d| d == rv) {
                    if self.dead.len() >= 4 {
                        self.dead.remove(0);
                    }
                    self.dead.push(rv.to_owned());
                }
            }
        }
    }

    fn blocked(&self) -> bool {
        self.dead_absent
            || self
                .record
                .as_ref()
                .is_some_and(|r| self.dead.contains(&r.resource_version))
    }

    fn holder(&self) -> Option<&str> {
        self.record.as_ref().and_then(LeaseRecord::holder)
    }
}

/// After a renew conflicted: if the lease as watched carries the stamp of our renew whose
/// outcome was unknown, that renew landed and the chain goes on from it (the deadline counts
/// from its send time). Otherwise somebody else wrote the lease.
fn adopt(holder: &str, held: &Held, view: Option<&Observed>) -> Option<Chain> {
    let (stamp, sent) = held.unknown?;
    held.chain.as_ref()?;
    let record = view?.record.as_ref()?;
    (record.renew_time_micros == Some(stamp) && record.holder() == Some(holder)).then(|| Chain {
        rv: record.resource_version.clone(),
        renewed_sent: sent,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    /// Not ours (as far as this member works on it).
    Idle,
    /// A claim write in flight, sent in member epoch `epoch`.
    Claiming { epoch: u64 },
    /// Ours in the current epoch.
    Owned,
    /// Ours, being handed over: the driver finishes in-flight work.
    Draining,
    /// The driver stopped all work on it; the claim is still on the lease.
    Drained,
    /// A release write in flight.
    Releasing,
}

#[derive(Debug, Clone)]
struct Slot {
    obs: Observed,
    local: Local,
    /// The record as stored by our last successful claim (what a release must expect).
    mine: Option<LeaseRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Acquire,
    Renew,
    Release,
}

#[derive(Debug, Clone)]
enum Pending {
    Member {
        op: Op,
        sent: Instant,
        stamp: i64,
        expected: Option<String>,
    },
    Leader {
        op: Op,
        sent: Instant,
        stamp: i64,
        expected: Option<String>,
    },
    Fence {
        identity: String,
        expected: Option<String>,
    },
    Claim {
        range: u32,
        expected: Option<String>,
        epoch: u64,
    },
    Release {
        range: u32,
        expected: String,
    },
    /// The leader removes the member lease of an identity gone for good.
    Remove {
        identity: String,
        expected: String,
    },
}

/// The sans-I/O protocol machine of one member: fed observations, write results and time;
/// emits writes, events and its next deadline. See the [crate docs](crate).
///
/// Method groups, in the order a driver uses them:
///
/// * inputs: [`handle_list`](Machine::handle_list) (first, and after every relist),
///   [`handle_observed`](Machine::handle_observed) / [`handle_deleted`](Machine::handle_deleted)
///   (watch events), [`handle_write_result`](Machine::handle_write_result),
///   [`handle_drained`](Machine::handle_drained), [`handle_timeout`](Machine::handle_timeout),
///   [`set_leaving`](Machine::set_leaving), [`shutdown`](Machine::shutdown);
/// * outputs, after every input: [`poll_request`](Machine::poll_request) and
///   [`poll_event`](Machine::poll_event) until `None`, then
///   [`poll_timeout`](Machine::poll_timeout);
/// * queries, any time: [`owned`](Machine::owned), [`work_deadline`](Machine::work_deadline),
///   [`is_leader`](Machine::is_leader), [`leader_deadline`](Machine::leader_deadline),
///   [`is_member`](Machine::is_member).
///
/// Every input takes `now` from the member's monotonic clock; a `now` earlier than one seen
/// before is treated as that one. Inputs cost O(1) for a renewal observed on another
/// member's lease, and otherwise one planning step: O(R + N log N) when the assignment's
/// inputs changed, O(R) otherwise.
#[derive(Debug)]
pub struct Machine {
    config: Config,
    holder: String,
    my_lease: String,
    leader_lease: String,
    /// Latest `now` handed in (inputs are clamped so time never goes back).
    now: Instant,
    next_id: u64,
    last_stamp: i64,
    synced: bool,
    leaving: bool,
    stopping: bool,
    stopped: bool,
    membership: Membership,
    /// Incremented whenever the member chain starts or ends: a claim sent in another epoch
    /// does not make a range ours.
    epoch: u64,
    ever_active: bool,
    settle_until: Option<Instant>,
    me: Held,
    /// Member leases by identity (ours included).
    members: BTreeMap<String, Observed>,
    leader_obs: Observed,
    leader: Held,
    /// While stepping down: leadership is no longer believed; release the lease at this time
    /// (one request timeout later, so duties in flight have landed).
    leader_release_at: Option<Instant>,
    slots: Vec<Slot>,
    /// Ranges in `Owned` or `Draining`.
    held: RangeSet,
    /// Bumped whenever an input of the assignment's "current owners" may have changed.
    current_gen: u64,
    /// The last assignment result: (members, `current_gen`, our ranges).
    assignment_cache: Option<(Vec<String>, u64, RangeSet)>,
    /// What the driver was last told it works on.
    reported: RangeSet,
    reported_leader: bool,
    draining_batch: RangeSet,
    released_batch: RangeSet,
    duplicate_reported: Option<String>,
    pending: HashMap<RequestId, (Instant, Pending)>,
    requests: VecDeque<Request>,
    events: VecDeque<Event>,
    next_timer: Option<Instant>,
    range_retry_at: Option<Instant>,
    /// After an involuntary loss, requests the driver had in flight on the lost ranges may
    /// still land until one request timeout later: no release (of a range lease or of the
    /// member lease) before then, so no new owner can start while they do.
    hold_releases_until: Option<Instant>,
    /// While handling a `Failed` result: when to try again (one retry period after the
    /// failed request was sent, so a fast failure does not turn into a busy loop and a
    /// timed-out one is retried at once).
    failure_retry: Instant,
}

impl Machine {
    /// A member that has not joined yet. It writes nothing until the driver hands it the
    /// first full list of leases with [`Machine::handle_list`].
    pub fn new(config: Config, now: Instant) -> Result<Machine, ConfigError> {
        config.validate()?;
        let count = config.ranges;
        let empty_slot = Slot {
            obs: Observed::new(now),
            local: Local::Idle,
            mine: None,
        };
        Ok(Machine {
            holder: config.holder_identity(),
            my_lease: config.member_lease_name(&config.identity),
            leader_lease: config.lease_name(&LeaseKind::Leader),
            now,
            next_id: 0,
            last_stamp: 0,
            synced: false,
            leaving: false,
            stopping: false,
            stopped: false,
            membership: Membership::Joining,
            epoch: 0,
            ever_active: false,
            settle_until: None,
            me: Held::default(),
            members: BTreeMap::new(),
            leader_obs: Observed::new(now),
            leader: Held::default(),
            leader_release_at: None,
            slots: vec![empty_slot; count.get() as usize],
            held: RangeSet::new(count),
            current_gen: 0,
            assignment_cache: None,
            reported: RangeSet::new(count),
            reported_leader: false,
            draining_batch: RangeSet::new(count),
            released_batch: RangeSet::new(count),
            duplicate_reported: None,
            pending: HashMap::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            next_timer: None,
            range_retry_at: None,
            hold_releases_until: None,
            failure_retry: now,
            config,
        })
    }

    // ----- accessors -------------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What this member writes as holder: `<identity>_<instance>`.
    pub fn holder_identity(&self) -> &str {
        &self.holder
    }

    /// The ranges this member may work on at `now`: those it owns in an unbroken member
    /// chain, including those being drained, and only while `now` is before
    /// [`Machine::work_deadline`]. O(R/64).
    ///
    /// The driver checks this (or the deadline) before starting any request on a range.
    #[must_use]
    pub fn owned(&self, now: Instant) -> RangeSet {
        if self.live(now) {
            self.held.clone()
        } else {
            RangeSet::new(self.config.ranges)
        }
    }

    /// Ranges nobody may work on as this member sees it: neither ours, nor claimed by a
    /// holder whose member lease still names it and was seen renewed within a lease duration.
    /// Every replica reports it; above zero for long, a range is stuck. O(R + N).
    pub fn unclaimed(&self, now: Instant) -> u32 {
        let live: std::collections::HashSet<&str> = self
            .members
            .values()
            .filter_map(|obs| {
                let record = obs.record.as_ref()?;
                let holder = record.holder()?;
                (now < obs.since + self.expiry_of(record)).then_some(holder)
            })
            .collect();
        let mine = self.owned(now);
        (0..self.config.ranges.get())
            .filter(|&r| {
                !mine.contains(r)
                    && !self.slots[r as usize]
                        .obs
                        .holder()
                        .is_some_and(|h| h != self.holder && live.contains(h))
            })
            .count() as u32
    }

    /// The instant at which [`Machine::owned`] becomes empty unless a renew succeeds first:
    /// the send time of the last renew known to have landed plus the renew deadline. `None`
    /// when the member holds no member lease.
    #[must_use]
    pub fn work_deadline(&self) -> Option<Instant> {
        if self.stopped || self.membership != Membership::Active {
            return None;
        }
        self.me
            .chain
            .as_ref()
            .map(|c| c.renewed_sent + self.config.renew_deadline)
    }

    /// Whether this member holds the leader lease at `now` (renewed within the renew
    /// deadline and not stepping down).
    #[must_use]
    pub fn is_leader(&self, now: Instant) -> bool {
        self.leader_deadline().is_some_and(|d| now < d)
    }

    /// The instant at which [`Machine::is_leader`] becomes false unless a renew succeeds
    /// first; `None` when not leader.
    #[must_use]
    pub fn leader_deadline(&self) -> Option<Instant> {
        if self.stopped || self.leader_release_at.is_some() {
            return None;
        }
        self.leader
            .chain
            .as_ref()
            .map(|c| c.renewed_sent + self.config.renew_deadline)
    }

    /// Whether the member currently holds its member lease (it may still be past its
    /// deadline; see [`Machine::owned`]).
    #[must_use]
    pub fn is_member(&self) -> bool {
        !self.stopped && self.membership == Membership::Active
    }

    /// Whether [`Event::Stopped`] was emitted.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The number of writes in flight.
    #[must_use]
    pub fn writes_in_flight(&self) -> usize {
        self.pending.len()
    }

    // ----- outputs ---------------------------------------------------------------------

    /// The next write to send. Call until `None` after every input.
    #[must_use]
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// The next event. Call until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Machine::handle_timeout`] at the latest (an instant on this member's
    /// clock; possibly already past). `None` once stopped. A wake-up may find nothing to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            None
        } else {
            self.next_timer
        }
    }

    // ----- inputs ----------------------------------------------------------------------

    /// The complete list of the protocol's leases (the driver's initial list, and every
    /// relist after its watch broke), handed over at once: leases missing from it count as
    /// deleted. The member writes nothing before its first list. O(R + N + leases).
    ///
    /// A relist must be applied atomically, not as single observations: a view that mixes
    /// the new list with older watch state could show a range claimed by a new member
    /// lease holder while still showing that member lease's older holder.
    pub fn handle_list(&mut self, now: Instant, leases: impl IntoIterator<Item = LeaseRecord>) {
        self.advance(now);
        if self.stopped {
            return;
        }
        let mut listed = std::collections::HashSet::new();
        for lease in leases {
            listed.insert(lease.name.clone());
            let name = lease.name.clone();
            self.observe(now, &name, Some(lease));
        }
        let mut vanished = Vec::new();
        for (identity, obs) in &self.members {
            let name = self.config.member_lease_name(identity);
            if obs.record.is_some() && !listed.contains(&name) {
                vanished.push(name);
            }
        }
        for (r, slot) in self.slots.iter().enumerate() {
            let name = self.config.lease_name(&LeaseKind::Range(r as u32));
            if slot.obs.record.is_some() && !listed.contains(&name) {
                vanished.push(name);
            }
        }
        if self.leader_obs.record.is_some() && !listed.contains(&self.leader_lease) {
            vanished.push(self.leader_lease.clone());
        }
        for name in vanished {
            self.observe(now, &name, None);
        }
        self.synced = true;
        self.step();
    }

    /// A lease of the protocol as the watch shows it (added or modified), in the order the
    /// one watch over all the protocol's leases delivers them. Leases of other prefixes are
    /// ignored. O(1) for a renewal of a member or leader lease; otherwise a full step
    /// (O(R + N log N)).
    pub fn handle_observed(&mut self, now: Instant, lease: LeaseRecord) {
        self.advance(now);
        let name = lease.name.clone();
        if self.observe(now, &name, Some(lease)) {
            self.step();
        }
    }

    /// A lease of the protocol was deleted (watch event).
    pub fn handle_deleted(&mut self, now: Instant, name: &str) {
        self.advance(now);
        if self.observe(now, name, None) {
            self.step();
        }
    }

    /// The result of a request from [`Machine::poll_request`]. Every request gets exactly one
    /// result. Unknown ids (results after [`Event::Stopped`]) are ignored.
    pub fn handle_write_result(&mut self, now: Instant, id: RequestId, outcome: WriteOutcome) {
        self.advance(now);
        let Some((sent, pending)) = self.pending.remove(&id) else {
            return;
        };
        self.failure_retry = sent + self.config.retry_period;
        if self.stopped {
            return;
        }
        match pending {
            Pending::Member {
                op,
                sent,
                stamp,
                expected,
            } => self.member_result(now, op, sent, stamp, expected, outcome),
            Pending::Leader {
                op,
                sent,
                stamp,
                expected,
            } => self.leader_result(op, sent, stamp, expected, outcome),
            Pending::Fence { identity, expected } => {
                let obs = self
                    .members
                    .entry(identity)
                    .or_insert_with(|| Observed::new(now));
                obs.busy = None;
                match outcome {
                    WriteOutcome::Failed => obs.retry_at = Some(self.failure_retry),
                    _ => obs.moved_past(expected.as_deref()),
                }
            }
            Pending::Claim {
                range,
                expected,
                epoch,
            } => self.claim_result(now, range, expected, epoch, outcome),
            Pending::Release { range, expected } => self.release_result(range, expected, outcome),
            Pending::Remove { identity, expected } => {
                if let Some(obs) = self.members.get_mut(&identity) {
                    obs.busy = None;
                    match outcome {
                        WriteOutcome::Failed => obs.retry_at = Some(self.failure_retry),
                        // Deleted, or changed meanwhile: never again against this version.
                        _ => obs.moved_past(Some(&expected)),
                    }
                }
            }
        }
        self.step();
    }

    /// The driver finished draining `ranges` (after [`Event::Draining`]): nothing of them is
    /// in flight any more. Ranges that are not draining are ignored.
    pub fn handle_drained(&mut self, now: Instant, ranges: &RangeSet) {
        self.advance(now);
        for r in ranges {
            if self.slots.get(r as usize).map(|s| s.local) == Some(Local::Draining) {
                self.set_local(r, Local::Drained);
                self.reported.remove(r);
            }
        }
        self.step();
    }

    /// Time passed; call at (or after) [`Machine::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.step();
    }

    /// Mark this member as leaving for good (scale-down: its ordinal is at or above the
    /// StatefulSet's replicas) or not. A leaving member drains everything, then releases its
    /// member lease with the leaving flag in one write, so the others take its ranges at
    /// once; it rejoins when no longer leaving.
    pub fn set_leaving(&mut self, now: Instant, leaving: bool) {
        self.advance(now);
        if self.leaving != leaving {
            self.leaving = leaving;
            if !leaving && self.membership == Membership::Out {
                self.membership = Membership::Joining;
            }
        }
        self.step();
    }

    /// Graceful shutdown: drain everything, step down as leader, release the member lease
    /// (one write that ends all our claims), then [`Event::Stopped`]. Without
    /// [`Machine::set_leaving`] the others keep our identity's ranges for its next
    /// incarnation for [`Config::restart_grace`]; with it they take them at once.
    pub fn shutdown(&mut self, now: Instant) {
        self.advance(now);
        self.stopping = true;
        self.step();
    }

    // ----- internals: inputs -----------------------------------------------------------

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Updates the view; returns whether a full step is needed.
    fn observe(&mut self, now: Instant, name: &str, record: Option<LeaseRecord>) -> bool {
        if self.stopped {
            return false;
        }
        let record = record.map(|mut r| {
            if r.holder.as_deref() == Some("") {
                r.holder = None;
            }
            r
        });
        let full_step = match self.config.lease_kind(name) {
            None => false,
            Some(LeaseKind::Member(identity)) => {
                let obs = self
                    .members
                    .entry(identity)
                    .or_insert_with(|| Observed::new(now));
                let was_blocked = obs.blocked();
                let lease_duration = self.config.lease_duration;
                let was_expired = obs.record.as_ref().is_some_and(|r| {
                    let written = r
                        .lease_duration_secs
                        .and_then(|s| u64::try_from(s).ok())
                        .map_or(Duration::ZERO, Duration::from_secs);
                    now >= obs.since + lease_duration.max(written)
                });
                let was_blocked = was_blocked || was_expired;
                match obs.observe(now, record) {
                    Change::Same => false,
                    Change::Renewed => was_blocked,
                    Change::Changed => true,
                }
            }
            Some(LeaseKind::Leader) => {
                let was_blocked = self.leader_obs.blocked();
                match self.leader_obs.observe(now, record) {
                    Change::Same => false,
                    Change::Renewed => was_blocked,
                    Change::Changed => true,
                }
            }
            Some(LeaseKind::Range(r)) => {
                // Observations never take a range away from us: while our member chain is
                // unbroken nobody else can have written it, so a contradicting observation
                // is an old one (the watch lags behind our own writes' results).
                let before = self.current_owner(r).map(str::to_owned);
                let change = self.slots[r as usize].obs.observe(now, record);
                if before.as_deref() != self.current_owner(r) {
                    self.current_gen += 1;
                }
                change != Change::Same
            }
        };
        full_step
    }

    fn member_result(
        &mut self,
        now: Instant,
        op: Op,
        sent: Instant,
        stamp: i64,
        expected: Option<String>,
        outcome: WriteOutcome,
    ) {
        let failure_retry = self.failure_retry;
        let obs = self.my_obs(now);
        obs.busy = None;
        if outcome != WriteOutcome::Failed {
            obs.moved_past(expected.as_deref());
        }
        match outcome {
            WriteOutcome::Ok(record) => {
                let rv = record.resource_version;
                match op {
                    Op::Acquire => {
                        if self.membership == Membership::Joining {
                            self.membership = Membership::Active;
                            self.epoch += 1;
                            self.me.chain = Some(Chain {
                                rv,
                                renewed_sent: sent,
                            });
                            self.me.unknown = None;
                            if !self.ever_active {
                                self.ever_active = true;
                                self.settle_until = Some(now + self.config.retry_period);
                            }
                        }
                    }
                    Op::Renew => {
                        if let Some(chain) = self.me.chain.as_mut() {
                            *chain = Chain {
                                rv,
                                renewed_sent: sent,
                            };
                            self.me.unknown = None;
                        }
                    }
                    Op::Release => self.end_membership(),
                }
            }
            WriteOutcome::Failed => match op {
                // Retried at the next renew time with the same expected version.
                Op::Renew => self.me.unknown = Some((stamp, sent)),
                // A release may have landed; retrying conflicts then, which ends it too.
                Op::Release | Op::Acquire => obs.retry_at = Some(failure_retry),
            },
            // Conflict, NotFound, AlreadyExists: somebody else wrote the lease.
            _ => match op {
                Op::Acquire => {}
                Op::Renew => {
                    let view = self.members.get(&self.config.identity);
                    match adopt(&self.holder, &self.me, view) {
                        Some(chain) => self.me.chain = Some(chain),
                        None => self.end_membership(),
                    }
                    self.me.unknown = None;
                }
                Op::Release => self.end_membership(),
            },
        }
    }

    /// The member chain ended: by our own release (`released`) or because somebody else
    /// wrote our member lease. Every claim of ours is void from here on.
    fn end_membership(&mut self) {
        self.me.chain = None;
        self.me.unknown = None;
        self.epoch += 1;
        for r in 0..self.slots.len() as u32 {
            match self.slots[r as usize].local {
                Local::Drained => {
                    self.released_batch.insert(r);
                    self.set_local(r, Local::Idle);
                }
                Local::Owned | Local::Draining => self.set_local(r, Local::Idle),
                _ => {}
            }
        }
        self.membership = if self.stopping {
            Membership::Stopped
        } else if self.leaving {
            Membership::Out
        } else {
            Membership::Joining
        };
    }

    fn leader_result(
        &mut self,
        op: Op,
        sent: Instant,
        stamp: i64,
        expected: Option<String>,
        outcome: WriteOutcome,
    ) {
        let obs = &mut self.leader_obs;
        obs.busy = None;
        if outcome != WriteOutcome::Failed {
            obs.moved_past(expected.as_deref());
        }
        match outcome {
            WriteOutcome::Ok(record) => match op {
                Op::Acquire | Op::Renew => {
                    if op == Op::Renew && self.leader.chain.is_none() {
                        return;
                    }
                    self.leader.chain = Some(Chain {
                        rv: record.resource_version,
                        renewed_sent: sent,
                    });
                    self.leader.unknown = None;
                }
                Op::Release => self.drop_leadership(),
            },
            WriteOutcome::Failed => match op {
                Op::Renew => self.leader.unknown = Some((stamp, sent)),
                Op::Acquire | Op::Release => obs.retry_at = Some(self.failure_retry),
            },
            _ => match op {
                Op::Acquire => {}
                Op::Renew => {
                    match adopt(&self.holder, &self.leader, Some(&self.leader_obs)) {
                        Some(chain) => self.leader.chain = Some(chain),
                        None => self.drop_leadership(),
                    }
                    self.leader.unknown = None;
                }
                Op::Release => self.drop_leadership(),
            },
        }
    }

    fn drop_leadership(&mut self) {
        self.leader.chain = None;
        self.leader.unknown = None;
        self.leader_release_at = None;
    }

    fn claim_result(
        &mut self,
        now: Instant,
        range: u32,
        expected: Option<String>,
        epoch: u64,
        outcome: WriteOutcome,
    ) {
        let live = self.live(now);
        let slot = &mut self.slots[range as usize];
        slot.obs.busy = None;
        if outcome != WriteOutcome::Failed {
            slot.obs.moved_past(expected.as_deref());
        }
        let mut next = Local::Idle;
        match outcome {
            WriteOutcome::Ok(record) => {
                slot.mine = Some(record);
                if epoch == self.epoch && self.membership == Membership::Active {
                    // Ours. While giving up (or past the deadline) the driver never starts
                    // on it: straight to drained, given up with the member lease.
                    next = if self.stopping || self.leaving || !live {
                        Local::Drained
                    } else {
                        Local::Owned
                    };
                }
            }
            WriteOutcome::Failed => slot.obs.retry_at = Some(self.failure_retry),
            _ => {}
        }
        self.set_local(range, next);
    }

    fn release_result(&mut self, range: u32, expected: String, outcome: WriteOutcome) {
        let slot = &mut self.slots[range as usize];
        slot.obs.busy = None;
        match outcome {
            WriteOutcome::Ok(_) => {
                slot.mine = None;
                self.released_batch.insert(range);
            }
            // Unknown: the lease may still carry our claim; the idle pass releases it again
            // if the view still shows us (a conflict then means it had landed).
            WriteOutcome::Failed => slot.obs.retry_at = Some(self.failure_retry),
            _ => slot.mine = None,
        }
        if outcome != WriteOutcome::Failed {
            slot.obs.moved_past(Some(&expected));
        }
        self.set_local(range, Local::Idle);
    }

    // ----- internals: the step ---------------------------------------------------------

    /// How often held leases are renewed: every retry period, or every other one while this
    /// member also holds the leader lease, so the leader's two leases cost no more writes than
    /// one member lease (bounded by half the renew deadline, leaving room for one retry).
    fn renew_period(&self) -> Duration {
        let p = self.config.retry_period;
        if self.leader.chain.is_some() {
            (p * 2).min(self.config.renew_deadline / 2).max(p)
        } else {
            p
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.work_deadline().is_some_and(|d| now < d)
    }

    /// The current owner of range `r` as the assignment sees it.
    fn current_owner(&self, r: u32) -> Option<&str> {
        let slot = &self.slots[r as usize];
        match slot.local {
            Local::Owned => Some(self.config.identity.as_str()),
            Local::Draining | Local::Drained | Local::Releasing => None,
            Local::Idle | Local::Claiming { .. } => slot.obs.holder().map(identity_of),
        }
    }

    fn set_local(&mut self, r: u32, local: Local) {
        let before = self.current_owner(r).map(str::to_owned);
        self.slots[r as usize].local = local;
        if before.as_deref() != self.current_owner(r) {
            self.current_gen += 1;
        }
        if matches!(local, Local::Owned | Local::Draining) {
            self.held.insert(r);
        } else {
            self.held.remove(r);
        }
    }

    fn next_request_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    /// A renew time for a write: unique per write of this member (the core recognizes its
    /// own writes by it), close to wall-clock time when the origin is configured.
    fn stamp(&mut self) -> i64 {
        let wall = self
            .config
            .wall_clock_at_origin_micros
            .saturating_add(self.now.as_micros());
        let s = wall.max(self.last_stamp + 1);
        self.last_stamp = s;
        s
    }

    fn lease_duration_secs(&self) -> i32 {
        let d = self.config.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }

    /// How long a record may go unchanged before it counts as expired: the longer of our
    /// configured duration and the one written in it.
    fn expiry_of(&self, record: &LeaseRecord) -> Duration {
        let written = record
            .lease_duration_secs
            .and_then(|s| u64::try_from(s).ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        self.config.lease_duration.max(written)
    }

    fn send(&mut self, create: bool, lease: LeaseRecord, pending: Pending) -> RequestId {
        let id = self.next_request_id();
        self.pending.insert(id, (self.now, pending));
        self.requests.push_back(if create {
            Request::Create { id, lease }
        } else {
            Request::Update { id, lease }
        });
        id
    }

    /// Re-plan everything from the current view, then sync events and the timer.
    fn step(&mut self) {
        if self.stopped {
            return;
        }
        let now = self.now;
        let lost = self
            .reported
            .difference(&self.owned(now))
            .expect("one range count throughout");
        if !lost.is_empty() {
            let until = now + self.config.request_timeout;
            self.hold_releases_until =
                Some(self.hold_releases_until.map_or(until, |t| t.max(until)));
        }
        self.plan_member(now);
        self.plan_leader(now);
        self.plan_member_gc(now);
        self.plan_ranges(now);
        // A member chain that ended while planning ranges needs another member pass (e.g.
        // to release the member lease once the last range is drained).
        self.plan_member(now);
        self.sync_events(now);
        self.next_timer = self.compute_timer(now);
    }

    fn member_record(
        &mut self,
        name: String,
        rv: String,
        holder: Option<String>,
        leaving: bool,
    ) -> (LeaseRecord, i64) {
        let stamp = self.stamp();
        (
            LeaseRecord {
                name,
                resource_version: rv,
                holder,
                lease_duration_secs: Some(self.lease_duration_secs()),
                renew_time_micros: Some(stamp),
                leaving,
            },
            stamp,
        )
    }

    fn plan_member(&mut self, now: Instant) {
        let identity = self.config.identity.clone();
        match self.membership {
            Membership::Stopped => {}
            Membership::Out => {
                if self.stopping {
                    self.membership = Membership::Stopped;
                }
            }
            Membership::Joining => {
                if self.stopping {
                    self.membership = Membership::Stopped;
                    return;
                }
                if self.leaving {
                    self.membership = Membership::Out;
                    return;
                }
                if !self.synced {
                    return;
                }
                let obs = self
                    .members
                    .entry(identity)
                    .or_insert_with(|| Observed::new(now))
                    .clone();
                if !obs.writable(now) {
                    return;
                }
                let expected = match &obs.record {
                    None => None,
                    Some(record) => {
                        let takeable = match record.holder() {
                            None => true,
                            Some(h) if h == self.holder => true,
                            Some(h) => {
                                if now >= obs.since + self.expiry_of(record) {
                                    true
                                } else {
                                    if obs.renewed_seen
                                        && self.duplicate_reported.as_deref() != Some(h)
                                    {
                                        self.duplicate_reported = Some(h.to_owned());
                                        self.events.push_back(Event::DuplicateIdentity {
                                            holder: h.to_owned(),
                                        });
                                    }
                                    false
                                }
                            }
                        };
                        if !takeable {
                            return;
                        }
                        Some(record.resource_version.clone())
                    }
                };
                self.write_own(now, Own::Member, Op::Acquire, expected, true, false);
            }
            Membership::Releasing => {
                let Some(chain) = self.me.chain.clone() else {
                    self.end_membership();
                    return;
                };
                let obs = self.my_obs(now).clone();
                if obs.busy.is_some() {
                    return;
                }
                let expired = now >= chain.renewed_sent + self.config.lease_duration;
                if !(self.stopping || self.leaving) || expired {
                    // Changed our mind (no longer leaving) while the release was unresolved,
                    // or it cannot matter any more: rejoin (or stop) from the view.
                    self.end_membership();
                    return;
                }
                if obs.retry_at.is_none_or(|t| now >= t) {
                    self.release_member(now, chain.rv);
                }
            }
            Membership::Active => {
                let Some(chain) = self.me.chain.clone() else {
                    return;
                };
                let obs = self.my_obs(now).clone();
                if obs.busy.is_some() {
                    return;
                }
                if self.stopping && !self.live(now) {
                    // Past the deadline nothing is owned any more; the lease expires by
                    // itself. Do not wait for an API server we cannot reach.
                    self.end_membership();
                    self.membership = Membership::Stopped;
                    return;
                }
                let giving_up = self.stopping || self.leaving;
                let nothing_left = self.held.is_empty()
                    && !self
                        .slots
                        .iter()
                        .any(|s| matches!(s.local, Local::Claiming { .. }));
                if giving_up
                    && nothing_left
                    && self.releases_allowed(now)
                    && obs.retry_at.is_none_or(|t| now >= t)
                {
                    self.release_member(now, chain.rv);
                    // From the moment the release may land, none of our claims hold.
                    self.membership = Membership::Releasing;
                    self.epoch += 1;
                    return;
                }
                let due = self
                    .me
                    .last_send
                    .is_none_or(|t| now >= t + self.renew_period());
                if due {
                    self.write_own(
                        now,
                        Own::Member,
                        Op::Renew,
                        Some(chain.rv),
                        true,
                        self.leaving,
                    );
                }
            }
        }
    }

    /// Sends the member Lease's release: the first one, and each retry after a failure. It
    /// carries the leaving flag, which tells the leader the identity is gone for good.
    fn release_member(&mut self, now: Instant, rv: String) {
        let leaving = self.leaving;
        self.write_own(now, Own::Member, Op::Release, Some(rv), false, leaving);
    }

    fn my_obs(&mut self, now: Instant) -> &mut Observed {
        let identity = self.config.identity.clone();
        self.members
            .entry(identity)
            .or_insert_with(|| Observed::new(now))
    }

    fn plan_leader(&mut self, now: Instant) {
        let candidate = self.membership == Membership::Active
            && self.live(now)
            && !self.stopping
            && !self.leaving
            && self.synced;
        if let Some(chain) = self.leader.chain.clone() {
            if self.leader_deadline_raw().is_some_and(|d| now >= d)
                && self.leader_obs.busy.is_none()
            {
                // Lapsed: the lease expires on its own; others take it over.
                self.drop_leadership();
                return;
            }
            if !candidate && self.leader_release_at.is_none() {
                // Step down: stop believing now; release once our duties in flight landed.
                self.leader_release_at = Some(now + self.config.request_timeout);
            }
            if self.leader_obs.busy.is_some() {
                return;
            }
            if let Some(at) = self.leader_release_at {
                if now >= at && self.leader_obs.retry_at.is_none_or(|t| now >= t) {
                    self.write_own(now, Own::Leader, Op::Release, Some(chain.rv), false, false);
                }
                return;
            }
            let due = self
                .leader
                .last_send
                .is_none_or(|t| now >= t + self.renew_period());
            if due {
                self.write_own(now, Own::Leader, Op::Renew, Some(chain.rv), true, false);
            }
            return;
        }
        if !candidate || !self.leader_obs.writable(now) {
            return;
        }
        let expected = match &self.leader_obs.record {
            None => None,
            Some(record) => {
                let takeable = match record.holder() {
                    None => true,
                    Some(h) if h == self.holder => true,
                    Some(_) => now >= self.leader_obs.since + self.expiry_of(record),
                };
                if !takeable {
                    return;
                }
                Some(record.resource_version.clone())
            }
        };
        self.write_own(now, Own::Leader, Op::Acquire, expected, true, false);
    }

    /// Writes our member lease or the leader lease against `expected` (`None`: create it):
    /// naming us as holder, or nobody (`holder` false: a release). Every such write is one
    /// link of the renew chain, so it records when it was sent and marks the lease busy.
    fn write_own(
        &mut self,
        now: Instant,
        lease: Own,
        op: Op,
        expected: Option<String>,
        holder: bool,
        leaving: bool,
    ) {
        let name = match lease {
            Own::Member => self.my_lease.clone(),
            Own::Leader => self.leader_lease.clone(),
        };
        let holder = holder.then(|| self.holder.clone());
        let (record, stamp) =
            self.member_record(name, expected.clone().unwrap_or_default(), holder, leaving);
        let create = expected.is_none();
        let pending = match lease {
            Own::Member => Pending::Member {
                op,
                sent: now,
                stamp,
                expected,
            },
            Own::Leader => Pending::Leader {
                op,
                sent: now,
                stamp,
                expected,
            },
        };
        let id = self.send(create, record, pending);
        match lease {
            Own::Member => {
                self.me.last_send = Some(now);
                self.my_obs(now).busy = Some(id);
            }
            Own::Leader => {
                self.leader.last_send = Some(now);
                self.leader_obs.busy = Some(id);
            }
        }
    }

    fn leader_deadline_raw(&self) -> Option<Instant> {
        self.leader
            .chain
            .as_ref()
            .map(|c| c.renewed_sent + self.config.renew_deadline)
    }

    /// Leader duty: delete member leases of identities gone for good (released while leaving,
    /// or fenced), unchanged for [`Config::member_gc_after`]. A delete carries the version
    /// seen, so a member that came back meanwhile keeps its lease. O(N).
    fn plan_member_gc(&mut self, now: Instant) {
        if !self.is_leader(now) || self.leader_release_at.is_some() {
            return;
        }
        let gc_after = self.config.member_gc_after;
        let gone: Vec<(String, String)> = self
            .members
            .iter()
            .filter(|(identity, obs)| {
                **identity != self.config.identity
                    && obs.busy.is_none()
                    && !obs.blocked()
                    && obs.retry_at.is_none_or(|t| now >= t)
                    && now >= obs.since + gc_after
                    && obs
                        .record
                        .as_ref()
                        .is_some_and(|r| r.holder().is_none() && r.leaving)
            })
            .filter_map(|(identity, obs)| {
                let rv = obs.record.as_ref()?.resource_version.clone();
                Some((identity.clone(), rv))
            })
            .collect();
        for (identity, rv) in gone {
            let id = self.next_request_id();
            let lease = LeaseRecord::new(self.config.member_lease_name(&identity), rv);
            let pending = Pending::Remove {
                identity: identity.clone(),
                expected: lease.resource_version.clone(),
            };
            self.pending.insert(id, (now, pending));
            self.requests.push_back(Request::Delete { id, lease });
            if let Some(obs) = self.members.get_mut(&identity) {
                obs.busy = Some(id);
                obs.retry_at = None;
            }
        }
    }

    /// The member identities the assignment is computed over, as this member sees them.
    fn assignment_members(&self, now: Instant) -> Vec<&str> {
        let mut members = Vec::with_capacity(self.members.len() + 1);
        for (identity, obs) in &self.members {
            if *identity == self.config.identity {
                continue;
            }
            let Some(record) = &obs.record else { continue };
            if record.leaving {
                continue;
            }
            let counts = match record.holder() {
                // Live: renewed within a lease duration of our clock.
                Some(_) => now < obs.since + self.expiry_of(record),
                // Released without leaving (a restart): keep its place for a while.
                None => now < obs.since + self.config.restart_grace,
            };
            if counts {
                members.push(identity.as_str());
            }
        }
        if self.membership == Membership::Active && !self.leaving && !self.stopping {
            members.push(self.config.identity.as_str());
        }
        members
    }

    /// Our ranges in the assignment; recomputed only when its inputs changed. O(N) when
    /// cached, else O(R + N log N).
    fn assigned_to_me(&mut self, now: Instant) -> RangeSet {
        let members = self.assignment_members(now);
        if let Some((cached, gen, mine)) = &self.assignment_cache {
            if *gen == self.current_gen
                && cached
                    .iter()
                    .map(String::as_str)
                    .eq(members.iter().copied())
            {
                return mine.clone();
            }
        }
        let mine = self.compute_assignment(&members);
        let members = members.into_iter().map(str::to_owned).collect();
        self.assignment_cache = Some((members, self.current_gen, mine.clone()));
        mine
    }

    fn compute_assignment(&self, members: &[&str]) -> RangeSet {
        let current: Vec<Option<&str>> = (0..self.config.ranges.get())
            .map(|r| self.current_owner(r))
            .collect();
        match Assignment::with_current(self.config.ranges, members, &current) {
            Ok(a) => a.ranges_of(&self.config.identity),
            // Cannot happen: identities come from non-empty lease name suffixes and the
            // current list has one entry per range.
            Err(_) => RangeSet::new(self.config.ranges),
        }
    }

    fn plan_ranges(&mut self, now: Instant) {
        let count = self.config.ranges;
        let live = self.live(now);
        let active = self.membership == Membership::Active;
        let giving_up = self.stopping || self.leaving;
        let may_claim = active
            && live
            && !giving_up
            && self.synced
            && self.settle_until.is_none_or(|t| now >= t);
        let mine = if active && live && !giving_up {
            self.assigned_to_me(now)
        } else {
            RangeSet::new(count)
        };
        let to_drain = if active && live && !giving_up {
            self.ranges_to_drain(now, &mine)
        } else {
            RangeSet::new(count)
        };
        let mut next_retry: Option<Instant> = None;
        for r in 0..count.get() {
            let want = mine.contains(r);
            match self.slots[r as usize].local {
                Local::Owned => {
                    if !live {
                        // Suspended: the driver was told `Lost`; an unbroken chain resumes
                        // it. Giving up, it simply counts as drained.
                        if giving_up {
                            self.set_local(r, Local::Drained);
                        }
                    } else if giving_up || to_drain.contains(r) {
                        self.set_local(r, Local::Draining);
                        self.draining_batch.insert(r);
                    }
                }
                Local::Draining => {
                    if !live {
                        // The driver stopped all work on `Lost`.
                        self.set_local(r, Local::Drained);
                        self.draining_batch.remove(r);
                    }
                }
                Local::Drained => {
                    if giving_up || !active || !self.releases_allowed(now) {
                        continue; // The member-lease release ends these claims in one write.
                    }
                    let slot = &self.slots[r as usize];
                    match slot.mine.clone() {
                        Some(mine_rec) if mine_rec.holder() == Some(self.holder.as_str()) => {
                            self.send_release(r, mine_rec.resource_version);
                        }
                        _ => self.set_local(r, Local::Idle),
                    }
                }
                Local::Idle => {
                    let slot = &self.slots[r as usize];
                    if slot.obs.busy.is_some() {
                        continue;
                    }
                    if let Some(t) = slot.obs.retry_at {
                        if now < t {
                            next_retry = Some(next_retry.map_or(t, |n| n.min(t)));
                            continue;
                        }
                    }
                    if want && may_claim {
                        self.try_claim(now, r);
                    } else if !want
                        && active
                        && live
                        && self.releases_allowed(now)
                        && !giving_up
                        && slot.obs.holder() == Some(self.holder.as_str())
                        && slot.obs.writable(now)
                    {
                        // A claim of ours from an earlier epoch (or a failed release):
                        // we do not work on it; hand it back.
                        let rv = slot
                            .obs
                            .record
                            .as_ref()
                            .map(|r| r.resource_version.clone())
                            .unwrap_or_default();
                        self.send_release(r, rv);
                    }
                }
                Local::Claiming { .. } | Local::Releasing => {}
            }
        }
        self.range_retry_at = next_retry;
    }

    /// Which of our owned ranges that the assignment gives to others to hand over now.
    ///
    /// The assignment gives the `R mod N` extra ranges to the members holding most; while a
    /// join is handed over, holdings are in flux and a member that already shed ranges could
    /// be told to shed one more (a range moving twice). So hand over in two phases: first
    /// only down to `⌈R/N⌉`; below that only once no other member holds more than `⌈R/N⌉`,
    /// when the extras are decided by natural order among equals, the same for everyone.
    /// Ranges go highest first, as the assignment picks them. O(R).
    fn ranges_to_drain(&mut self, now: Instant, mine: &RangeSet) -> RangeSet {
        let count = self.config.ranges;
        let mut drain = RangeSet::new(count);
        let owned = self
            .slots
            .iter()
            .filter(|s| s.local == Local::Owned)
            .count() as u32;
        let unwanted = (0..count.get())
            .filter(|&r| self.slots[r as usize].local == Local::Owned && !mine.contains(r))
            .count() as u32;
        if unwanted == 0 {
            return drain;
        }
        let members = self.assignment_members(now);
        let high = count.get().div_ceil(members.len().max(1) as u32);
        let mut holdings: HashMap<&str, u32> = HashMap::new();
        for slot in &self.slots {
            if let Some(h) = slot.obs.holder() {
                let identity = identity_of(h);
                if identity != self.config.identity && members.contains(&identity) {
                    *holdings.entry(identity).or_default() += 1;
                }
            }
        }
        let someone_above = holdings.values().any(|&k| k > high);
        let budget = if someone_above {
            owned.saturating_sub(high).min(unwanted)
        } else {
            unwanted
        };
        let mut left = budget;
        for r in (0..count.get()).rev() {
            if left == 0 {
                break;
            }
            if self.slots[r as usize].local == Local::Owned && !mine.contains(r) {
                drain.insert(r);
                left -= 1;
            }
        }
        drain
    }

    fn releases_allowed(&self, now: Instant) -> bool {
        self.hold_releases_until.is_none_or(|t| now >= t)
    }

    fn send_release(&mut self, r: u32, expected: String) {
        let name = self.config.lease_name(&LeaseKind::Range(r));
        let stamp = self.stamp();
        let record = LeaseRecord {
            name,
            resource_version: expected.clone(),
            holder: None,
            lease_duration_secs: None,
            renew_time_micros: Some(stamp),
            leaving: false,
        };
        let id = self.send(false, record, Pending::Release { range: r, expected });
        self.slots[r as usize].obs.busy = Some(id);
        self.set_local(r, Local::Releasing);
    }

    fn try_claim(&mut self, now: Instant, r: u32) {
        enum Decision {
            Claim,
            Fence(String),
            WatchAbsence(String),
            Wait,
        }
        let slot = &self.slots[r as usize];
        if !slot.obs.writable(now) {
            return;
        }
        let decision = match &slot.obs.record {
            None => Decision::Claim,
            Some(record) => match record.holder() {
                None => Decision::Claim,
                Some(h) if h == self.holder => Decision::Claim,
                Some(h) => {
                    let identity = identity_of(h);
                    if identity == self.config.identity {
                        // An earlier incarnation of ours: we hold our identity's member
                        // lease now, so its claims are void.
                        Decision::Claim
                    } else {
                        match self.members.get(identity) {
                            Some(m) => match &m.record {
                                // The member lease no longer names that holder: it was
                                // released (after draining) or taken over (after expiry).
                                Some(mr) if mr.holder() != Some(h) => Decision::Claim,
                                Some(mr) if now >= m.since + self.expiry_of(mr) => {
                                    Decision::Fence(identity.to_owned())
                                }
                                None if now >= m.since + self.config.lease_duration => {
                                    Decision::Fence(identity.to_owned())
                                }
                                _ => Decision::Wait,
                            },
                            None => Decision::WatchAbsence(identity.to_owned()),
                        }
                    }
                }
            },
        };
        match decision {
            Decision::Claim => self.send_claim(r),
            Decision::Fence(identity) => self.fence(now, identity),
            Decision::WatchAbsence(identity) => {
                // Never seen its member lease: time its absence from now.
                self.members.insert(identity, Observed::new(now));
            }
            Decision::Wait => {}
        }
    }

    fn send_claim(&mut self, r: u32) {
        let expected = self.slots[r as usize]
            .obs
            .record
            .as_ref()
            .map(|rec| rec.resource_version.clone());
        let name = self.config.lease_name(&LeaseKind::Range(r));
        let stamp = self.stamp();
        let record = LeaseRecord {
            name,
            resource_version: expected.clone().unwrap_or_default(),
            holder: Some(self.holder.clone()),
            lease_duration_secs: None,
            renew_time_micros: Some(stamp),
            leaving: false,
        };
        let epoch = self.epoch;
        let id = self.send(
            expected.is_none(),
            record,
            Pending::Claim {
                range: r,
                expected,
                epoch,
            },
        );
        self.slots[r as usize].obs.busy = Some(id);
        self.set_local(r, Local::Claiming { epoch });
    }

    /// Void the claims of a member whose lease we saw unrenewed for a full lease duration:
    /// compare-and-swap its member lease to "released, gone". If it renewed meanwhile (and
    /// our view is old) the write conflicts and nothing happens.
    fn fence(&mut self, now: Instant, identity: String) {
        let name = self.config.member_lease_name(&identity);
        let Some(obs) = self.members.get(&identity) else {
            return;
        };
        if !obs.writable(now) {
            return;
        }
        let expected = obs.record.as_ref().map(|r| r.resource_version.clone());
        let (record, _) =
            self.member_record(name, expected.clone().unwrap_or_default(), None, true);
        let id = self.send(
            expected.is_none(),
            record,
            Pending::Fence {
                identity: identity.clone(),
                expected,
            },
        );
        if let Some(obs) = self.members.get_mut(&identity) {
            obs.busy = Some(id);
        }
    }

    fn sync_events(&mut self, now: Instant) {
        let current = self.owned(now);
        let lost = self
            .reported
            .difference(&current)
            .expect("one range count throughout");
        if !lost.is_empty() {
            self.events.push_back(Event::Lost(lost));
        }
        let acquired = current
            .difference(&self.reported)
            .expect("one range count throughout");
        if !acquired.is_empty() {
            self.events.push_back(Event::Acquired(acquired));
        }
        self.reported = current;
        if !self.draining_batch.is_empty() {
            let batch =
                std::mem::replace(&mut self.draining_batch, RangeSet::new(self.config.ranges));
            let batch = batch
                .intersection(&self.reported)
                .expect("one range count throughout");
            if !batch.is_empty() {
                self.events.push_back(Event::Draining(batch));
            }
        }
        if !self.released_batch.is_empty() {
            let batch =
                std::mem::replace(&mut self.released_batch, RangeSet::new(self.config.ranges));
            self.events.push_back(Event::Released(batch));
        }
        let leader = self.is_leader(now);
        if leader != self.reported_leader {
            self.reported_leader = leader;
            self.events.push_back(Event::LeaderChanged(leader));
        }
        if self.membership == Membership::Stopped
            && self.leader.chain.is_none()
            && self.leader_obs.busy.is_none()
        {
            if self.reported_leader {
                self.reported_leader = false;
                self.events.push_back(Event::LeaderChanged(false));
            }
            self.stopped = true;
            self.events.push_back(Event::Stopped);
        }
    }

    fn compute_timer(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        let cfg = &self.config;
        if let Some(obs) = self.members.get(&cfg.identity) {
            if let Some(t) = obs.retry_at {
                at(t);
            }
            if self.membership == Membership::Joining {
                if let Some(record) = &obs.record {
                    at(obs.since + self.expiry_of(record));
                }
            }
        }
        if let Some(chain) = &self.me.chain {
            at(chain.renewed_sent + cfg.renew_deadline);
            if self.membership == Membership::Releasing {
                at(chain.renewed_sent + cfg.lease_duration);
            }
            if let Some(t) = self.me.last_send {
                at(t + self.renew_period());
            }
        }
        if let Some(t) = self.settle_until {
            at(t);
        }
        for (identity, obs) in &self.members {
            if *identity == cfg.identity {
                continue;
            }
            if let Some(t) = obs.retry_at {
                at(t);
            }
            if self.leader.chain.is_some() {
                at(obs.since + cfg.member_gc_after);
            }
            match &obs.record {
                Some(record) if record.holder().is_some() => at(obs.since + self.expiry_of(record)),
                Some(record) if !record.leaving => at(obs.since + cfg.restart_grace),
                Some(_) => {}
                None => at(obs.since + cfg.lease_duration),
            }
        }
        if let Some(chain) = &self.leader.chain {
            at(chain.renewed_sent + cfg.renew_deadline);
            if let Some(t) = self.leader.last_send {
                at(t + self.renew_period());
            }
            if let Some(t) = self.leader_release_at {
                at(t);
            }
        } else if let Some(record) = &self.leader_obs.record {
            at(self.leader_obs.since + self.expiry_of(record));
        }
        if let Some(t) = self.leader_obs.retry_at {
            at(t);
        }
        if let Some(t) = self.range_retry_at {
            at(t);
        }
        if let Some(t) = self.hold_releases_until {
            at(t);
        }
        next
    }
}
