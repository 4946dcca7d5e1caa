//! A deterministic world for the lease protocol: a fake API server with resourceVersion
//! compare-and-swap, watches with random latency, members with drifting clocks, a virtual
//! global clock that jumps to the next event, injected faults, and invariant checks after
//! every event. One seed reproduces one run.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use lease::{Config, Event, Instant, LeaseRecord, Machine, Request, RequestId, WriteOutcome};
use shard::{RangeCount, RangeSet};

pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000 * MS;

/// The driver's request timeout, on the member's clock.
/// 4.5 s leaves the smallest slack the timing inequality allows with the default lease
/// duration and renew deadline (15 s / 1.01 - 10 s / 0.99 - 4.5 s = 0.25 s), so timing
/// mistakes show up as violations.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(4_500);
/// The server applies a request only if it arrives within this (global) time of its sending:
/// below `REQUEST_TIMEOUT / 1.01`, so a write lands before the client's timeout fires.
pub const LAND_LIMIT: u64 = 4_400 * MS;

// ----- randomness ----------------------------------------------------------------------

/// SplitMix64: tiny, seeded, good enough for schedules.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (`lo` when empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.range(0, items.len() as u64) as usize])
        }
    }
}

// ----- clocks ----------------------------------------------------------------------------

/// A member's monotonic clock: `local = offset + global * (1 + ppm / 1e6)`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub offset: u64,
    pub ppm: i64,
}

impl Clock {
    pub fn local(&self, global: u64) -> Instant {
        let g = global as i128;
        let l = self.offset as i128 + g + (g * self.ppm as i128).div_euclid(1_000_000);
        Instant::from_nanos(l as u64)
    }
    /// The first global time at which the local clock reads at least `local`.
    pub fn global(&self, local: Instant) -> u64 {
        let x = local.as_nanos() as i128 - self.offset as i128;
        if x <= 0 {
            return 0;
        }
        let den = 1_000_000 + self.ppm as i128;
        let g = (x * 1_000_000 + den - 1) / den;
        g as u64
    }
}

// ----- the API server ------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct Server {
    pub leases: BTreeMap<String, LeaseRecord>,
    next_rv: u64,
}

impl Server {
    pub fn apply(&mut self, request: &Request) -> WriteOutcome {
        match request {
            Request::Create { lease, .. } => {
                if self.leases.contains_key(&lease.name) {
                    return WriteOutcome::AlreadyExists;
                }
                self.store(lease)
            }
            Request::Update { lease, .. } => match self.leases.get(&lease.name) {
                None => WriteOutcome::NotFound,
                Some(current) if current.resource_version != lease.resource_version => {
                    WriteOutcome::Conflict
                }
                Some(_) => self.store(lease),
            },
            Request::Delete { lease, .. } => match self.leases.get(&lease.name) {
                None => WriteOutcome::NotFound,
                Some(current) if current.resource_version != lease.resource_version => {
                    WriteOutcome::Conflict
                }
                Some(_) => {
                    self.leases.remove(&lease.name);
                    self.next_rv += 1;
                    WriteOutcome::Ok(LeaseRecord::new(
                        lease.name.clone(),
                        self.next_rv.to_string(),
                    ))
                }
            },
        }
    }

    fn store(&mut self, lease: &LeaseRecord) -> WriteOutcome {
        self.next_rv += 1;
        let mut stored = lease.clone();
        stored.resource_version = self.next_rv.to_string();
        self.leases.insert(stored.name.clone(), stored.clone());
        WriteOutcome::Ok(stored)
    }
}

// ----- members -------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    Paused,
    Crashed,
    Stopped,
}

pub struct Node {
    pub identity: String,
    pub instance: String,
    pub machine: Machine,
    pub clock: Clock,
    pub state: NodeState,
    pub partitioned: bool,
    /// Watch deliveries are held back until this global time (a stalled watch).
    pub watch_stalled_until: u64,
    /// Last scheduled watch delivery: the watch is FIFO.
    pub watch_last: u64,
    pub timer_gen: u64,
    pub deferred: Vec<Ev>,
    pub leaving: bool,
    pub stopping: bool,
    pub events: Vec<(u64, Event)>,
    pub writes: u64,
    pub writes_at: Vec<u64>,
    pub range_writes_at: Vec<u64>,
    // checker
    pub prev_owned: RangeSet,
    pub prev_deadline: Option<Instant>,
    pub prev_leader: bool,
    pub prev_leader_deadline: Option<Instant>,
    /// Per range: when this node last stopped owning it, and the global time from which
    /// another may start: one request timeout (on this node's clock) later after a loss, at
    /// once after a drain (the driver finished everything in flight).
    pub ended: Vec<(u64, u64)>,
    pub leader_ended: (u64, u64),
    pub acquired_total: u64,
}

impl Node {
    /// The global time until which a request this node sent at global `t` may land.
    pub fn free_after(&self, t: u64) -> u64 {
        self.clock.global(self.clock.local(t) + REQUEST_TIMEOUT)
    }
}

#[derive(Debug, Clone)]
pub enum Ev {
    Watch {
        node: usize,
        name: String,
        record: Option<LeaseRecord>,
    },
    List {
        node: usize,
        records: Vec<LeaseRecord>,
    },
    Arrive {
        node: usize,
        request: Request,
        sent: u64,
        timeout_at: u64,
    },
    Result {
        node: usize,
        id: RequestId,
        outcome: WriteOutcome,
    },
    Timer {
        node: usize,
        gen: u64,
    },
    Drained {
        node: usize,
        ranges: RangeSet,
    },
    Resume {
        node: usize,
    },
    Heal {
        node: usize,
    },
    Action(usize),
}

impl Ev {
    fn node(&self) -> Option<usize> {
        match self {
            Ev::Watch { node, .. }
            | Ev::List { node, .. }
            | Ev::Result { node, .. }
            | Ev::Timer { node, .. }
            | Ev::Drained { node, .. } => Some(*node),
            _ => None,
        }
    }
}

struct Queued {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.t, self.seq) == (other.t, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.t, other.seq).cmp(&(self.t, self.seq))
    }
}

/// Network and fault parameters that may change during a run.
#[derive(Debug, Clone)]
pub struct Net {
    /// Uplink / downlink latency range, nanoseconds.
    pub latency: (u64, u64),
    /// Chance that a request is slow (up to 5 s: it may miss the land limit), and
    /// separately that a response is slow (up to 5 s: it may miss the timeout).
    pub slow: f64,
    /// Chance that a request is lost before the server.
    pub drop_request: f64,
    /// Chance that a response is lost (the write landed; the client sees `Failed`).
    pub drop_response: f64,
    /// Watch delivery latency range.
    pub watch_latency: (u64, u64),
    /// Time the driver takes to drain a range set.
    pub drain_time: (u64, u64),
}

impl Net {
    pub fn calm() -> Net {
        Net {
            latency: (MS, 30 * MS),
            slow: 0.0,
            drop_request: 0.0,
            drop_response: 0.0,
            watch_latency: (MS, 100 * MS),
            drain_time: (0, SEC),
        }
    }
    pub fn faulty() -> Net {
        Net {
            latency: (MS, 200 * MS),
            slow: 0.05,
            drop_request: 0.02,
            drop_response: 0.02,
            watch_latency: (MS, 500 * MS),
            drain_time: (0, 1500 * MS),
        }
    }
}

pub struct Sim {
    pub seed: u64,
    pub rng: Rng,
    pub now: u64,
    pub ranges: RangeCount,
    pub prefix: String,
    pub server: Server,
    pub nodes: Vec<Node>,
    pub net: Net,
    queue: BinaryHeap<Queued>,
    seq: u64,
    pub violations: Vec<String>,
    pub log: Vec<String>,
    pub trace: bool,
    pub writes_total: u64,
    next_instance: u64,
    /// Scheduled actions (closures are awkward to clone; a schedule is a list of these).
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone)]
pub enum Action {
    Start {
        identity: String,
    },
    Crash {
        node: usize,
    },
    Shutdown {
        node: usize,
    },
    Leaving {
        node: usize,
        leaving: bool,
    },
    Pause {
        node: usize,
        until: u64,
    },
    Partition {
        node: usize,
        until: u64,
    },
    StallWatch {
        node: usize,
        until: u64,
    },
    /// Act on whichever node runs `identity` (resolved when the action fires).
    OnIdentity {
        identity: String,
        what: Box<Action>,
    },
    /// Start `identity` unless an instance of it is alive or `max` nodes run.
    StartIfAbsent {
        identity: String,
        max: usize,
    },
    /// Start a fresh identity unless some member is up and not leaving.
    EnsureMember,
    SetNet(Net),
}

pub fn config(identity: &str, instance: &str, prefix: &str, ranges: u32) -> Config {
    let mut c = Config::new(identity, instance, prefix, ranges).unwrap();
    c.request_timeout = REQUEST_TIMEOUT;
    // Short, so random schedules exercise the leader's removal of departed members' leases.
    c.member_gc_after = std::time::Duration::from_secs(30);
    c
}

impl Sim {
    pub fn new(seed: u64, ranges: u32) -> Sim {
        Sim {
            seed,
            rng: Rng::new(seed),
            now: 0,
            ranges: RangeCount::new(ranges).unwrap(),
            prefix: "bc".into(),
            server: Server::default(),
            nodes: Vec::new(),
            net: Net::calm(),
            queue: BinaryHeap::new(),
            seq: 0,
            violations: Vec::new(),
            log: Vec::new(),
            trace: std::env::var("SIM_TRACE").is_ok(),
            writes_total: 0,
            next_instance: 0,
            actions: Vec::new(),
        }
    }

    fn push(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            t,
            seq: self.seq,
            ev,
        });
    }

    /// Schedules `action` at global time `t`.
    pub fn at(&mut self, t: u64, action: Action) {
        self.actions.push(action);
        let index = self.actions.len() - 1;
        self.push(t, Ev::Action(index));
    }

    fn note(&mut self, msg: String) {
        if self.trace {
            eprintln!("{:>10.3} {msg}", self.now as f64 / SEC as f64);
        }
        if self.log.len() < 100_000 {
            self.log
                .push(format!("{:>10.3} {msg}", self.now as f64 / SEC as f64));
        }
    }

    fn violation(&mut self, msg: String) {
        self.note(format!("VIOLATION {msg}"));
        if self.violations.len() < 20 {
            self.violations
                .push(format!("t={:.3}s {msg}", self.now as f64 / SEC as f64));
        }
    }

    /// Starts a member (new instance) of `identity`; returns its node index.
    pub fn start(&mut self, identity: &str) -> usize {
        self.next_instance += 1;
        let instance = format!("i{}", self.next_instance);
        let clock = Clock {
            offset: self.rng.range(0, 1_000 * SEC),
            ppm: self.rng.range(0, 20_001) as i64 - 10_000,
        };
        let cfg = config(identity, &instance, &self.prefix, self.ranges.get());
        let machine = Machine::new(cfg, clock.local(self.now)).unwrap();
        let index = self.nodes.len();
        self.nodes.push(Node {
            identity: identity.into(),
            instance,
            machine,
            clock,
            state: NodeState::Running,
            partitioned: false,
            watch_stalled_until: 0,
            watch_last: self.now,
            timer_gen: 0,
            deferred: Vec::new(),
            leaving: false,
            stopping: false,
            events: Vec::new(),
            writes: 0,
            writes_at: Vec::new(),
            range_writes_at: Vec::new(),
            prev_owned: RangeSet::new(self.ranges),
            prev_deadline: None,
            prev_leader: false,
            prev_leader_deadline: None,
            ended: vec![(0, 0); self.ranges.get() as usize],
            leader_ended: (0, 0),
            acquired_total: 0,
        });
        self.note(format!(
            "start node {index} {identity}_{} ppm {}",
            self.nodes[index].instance, clock.ppm
        ));
        self.relist(index);
        index
    }

    /// Delivers the server's current state to a node (a list, then the watch goes on).
    fn relist(&mut self, node: usize) {
        let records: Vec<LeaseRecord> = self.server.leases.values().cloned().collect();
        let t = self.watch_time(node);
        self.push(t, Ev::List { node, records });
    }

    fn watch_time(&mut self, node: usize) -> u64 {
        let (lo, hi) = self.net.watch_latency;
        let lat = self.rng.range(lo, hi);
        let n = &mut self.nodes[node];
        let t = (self.now + lat)
            .max(n.watch_last)
            .max(n.watch_stalled_until);
        n.watch_last = t;
        t
    }

    pub fn alive(&self, node: usize) -> bool {
        matches!(
            self.nodes[node].state,
            NodeState::Running | NodeState::Paused
        )
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].state == NodeState::Running)
            .collect()
    }

    /// Runs events until global time `until` (inclusive).
    pub fn run_until(&mut self, until: u64) {
        while let Some(top) = self.queue.peek() {
            if top.t > until {
                break;
            }
            let Queued { t, ev, .. } = self.queue.pop().expect("peeked");
            self.now = self.now.max(t);
            self.check_time();
            self.dispatch(ev);
        }
        self.now = self.now.max(until);
        self.check_time();
    }

    fn dispatch(&mut self, ev: Ev) {
        if let Some(node) = ev.node() {
            match self.nodes[node].state {
                NodeState::Crashed | NodeState::Stopped => return,
                NodeState::Paused => {
                    self.nodes[node].deferred.push(ev);
                    return;
                }
                NodeState::Running => {}
            }
        }
        match ev {
            Ev::Watch { node, name, record } => {
                if self.trace {
                    self.note(format!(
                        "node {node} watch {name} rv={:?}",
                        record.as_ref().map(|r| r.resource_version.clone())
                    ));
                }
                let now = self.local(node);
                let m = &mut self.nodes[node].machine;
                match record {
                    Some(r) => m.handle_observed(now, r),
                    None => m.handle_deleted(now, &name),
                }
                self.flush(node, None);
            }
            Ev::List { node, records } => {
                let now = self.local(node);
                self.nodes[node].machine.handle_list(now, records);
                self.flush(node, None);
            }
            Ev::Arrive {
                node,
                request,
                sent,
                timeout_at,
            } => self.arrive(node, request, sent, timeout_at),
            Ev::Result { node, id, outcome } => {
                let now = self.local(node);
                if self.trace {
                    self.note(format!("node {node} result {id} {outcome:?}"));
                }
                self.nodes[node]
                    .machine
                    .handle_write_result(now, id, outcome);
                self.flush(node, None);
            }
            Ev::Timer { node, gen } => {
                if gen != self.nodes[node].timer_gen {
                    return;
                }
                let now = self.local(node);
                self.nodes[node].machine.handle_timeout(now);
                self.flush(node, None);
            }
            Ev::Drained { node, ranges } => {
                let now = self.local(node);
                self.nodes[node].machine.handle_drained(now, &ranges);
                self.flush(node, Some(ranges));
            }
            Ev::Resume { node } => {
                if self.nodes[node].state != NodeState::Paused {
                    return;
                }
                self.note(format!("resume node {node}"));
                self.nodes[node].state = NodeState::Running;
                // Replay what arrived during the pause, in order, before anything newer.
                let deferred = std::mem::take(&mut self.nodes[node].deferred);
                for ev in deferred {
                    self.dispatch(ev);
                }
                self.nodes[node].timer_gen += 1;
                let gen = self.nodes[node].timer_gen;
                self.push(self.now, Ev::Timer { node, gen });
            }
            Ev::Heal { node } => {
                if !self.nodes[node].partitioned {
                    return;
                }
                self.nodes[node].partitioned = false;
                if self.alive(node) {
                    self.note(format!("heal partition of node {node}"));
                    self.relist(node);
                }
            }
            Ev::Action(index) => {
                let action = self.actions[index].clone();
                self.act(action);
            }
        }
    }

    pub fn act(&mut self, action: Action) {
        match action {
            Action::Start { identity } => {
                self.start(&identity);
            }
            Action::Crash { node } => {
                if !self.alive(node) {
                    return;
                }
                self.note(format!("crash node {node}"));
                self.nodes[node].state = NodeState::Crashed;
                let n = &mut self.nodes[node];
                let free = n.free_after(self.now);
                for r in n.prev_owned.iter() {
                    n.ended[r as usize] = (self.now, free);
                }
                n.prev_owned = RangeSet::new(self.ranges);
                n.prev_deadline = None;
                if n.prev_leader {
                    n.leader_ended = (self.now, free);
                    n.prev_leader = false;
                }
            }
            Action::Shutdown { node } => {
                if self.nodes[node].state != NodeState::Running || self.nodes[node].stopping {
                    return;
                }
                self.note(format!("shutdown node {node}"));
                self.nodes[node].stopping = true;
                let now = self.local(node);
                self.nodes[node].machine.shutdown(now);
                self.flush(node, None);
            }
            Action::Leaving { node, leaving } => {
                if self.nodes[node].state != NodeState::Running {
                    return;
                }
                self.note(format!("node {node} leaving={leaving}"));
                self.nodes[node].leaving = leaving;
                let now = self.local(node);
                self.nodes[node].machine.set_leaving(now, leaving);
                self.flush(node, None);
            }
            Action::Pause { node, until } => {
                if self.nodes[node].state != NodeState::Running {
                    return;
                }
                self.note(format!(
                    "pause node {node} for {:.3}s",
                    (until - self.now) as f64 / SEC as f64
                ));
                self.nodes[node].state = NodeState::Paused;
                self.push(until, Ev::Resume { node });
            }
            Action::Partition { node, until } => {
                if !self.alive(node) || self.nodes[node].partitioned {
                    return;
                }
                self.note(format!(
                    "partition node {node} for {:.3}s",
                    (until - self.now) as f64 / SEC as f64
                ));
                self.nodes[node].partitioned = true;
                self.push(until, Ev::Heal { node });
            }
            Action::StallWatch { node, until } => {
                self.note(format!("stall watch of node {node}"));
                let n = &mut self.nodes[node];
                n.watch_stalled_until = n.watch_stalled_until.max(until);
            }
            Action::OnIdentity { identity, what } => {
                let node = (0..self.nodes.len())
                    .rev()
                    .find(|&i| self.alive(i) && self.nodes[i].identity == identity);
                if let Some(node) = node {
                    let what = retarget(*what, node);
                    self.act(what);
                }
            }
            Action::SetNet(net) => self.net = net,
            Action::StartIfAbsent { identity, max } => {
                let alive = (0..self.nodes.len()).filter(|&i| self.alive(i)).count();
                let present = (0..self.nodes.len())
                    .any(|i| self.alive(i) && self.nodes[i].identity == identity);
                if !present && alive < max {
                    self.start(&identity);
                }
            }
            Action::EnsureMember => {
                let up = (0..self.nodes.len()).any(|i| {
                    let n = &self.nodes[i];
                    n.state == NodeState::Running && !n.leaving && !n.stopping
                });
                if !up {
                    let k = self.nodes.len();
                    self.start(&format!("bc-fresh-{k}"));
                }
            }
        }
    }

    pub fn local(&self, node: usize) -> Instant {
        self.nodes[node].clock.local(self.now)
    }

    /// The driver's loop body after an input: send requests, react to events, re-arm the
    /// timer; then check the invariants.
    fn flush(&mut self, node: usize, drained: Option<RangeSet>) {
        while let Some(request) = self.nodes[node].machine.poll_request() {
            self.send(node, request);
        }
        while let Some(event) = self.nodes[node].machine.poll_event() {
            if self.trace {
                self.note(format!("node {node} event {event:?}"));
            }
            match &event {
                Event::Draining(ranges) => {
                    let (lo, hi) = self.net.drain_time;
                    let t = self.now + self.rng.range(lo, hi);
                    self.push(
                        t,
                        Ev::Drained {
                            node,
                            ranges: ranges.clone(),
                        },
                    );
                }
                Event::Acquired(ranges) => self.nodes[node].acquired_total += ranges.len() as u64,
                Event::Stopped => {
                    self.note(format!("node {node} stopped"));
                    self.nodes[node].state = NodeState::Stopped;
                }
                _ => {}
            }
            self.nodes[node].events.push((self.now, event));
        }
        if let Some(t) = self.nodes[node].machine.poll_timeout() {
            let g = self.nodes[node].clock.global(t).max(self.now);
            self.nodes[node].timer_gen += 1;
            let gen = self.nodes[node].timer_gen;
            self.push(g, Ev::Timer { node, gen });
        }
        self.check_node(node, drained.as_ref());
    }

    fn send(&mut self, node: usize, request: Request) {
        self.writes_total += 1;
        self.nodes[node].writes += 1;
        self.nodes[node].writes_at.push(self.now);
        if request.lease().name.contains("-range-") {
            self.nodes[node].range_writes_at.push(self.now);
        }
        if self.trace {
            let l = request.lease();
            self.note(format!(
                "node {node} sends {} {} rv={} holder={:?} leaving={}",
                match request {
                    Request::Create { .. } => "create",
                    Request::Update { .. } => "update",
                    Request::Delete { .. } => "delete",
                },
                l.name,
                l.resource_version,
                l.holder,
                l.leaving
            ));
        }
        let clock = self.nodes[node].clock;
        let timeout_at = clock.global(clock.local(self.now) + REQUEST_TIMEOUT);
        let id = request.id();
        let lost = self.nodes[node].partitioned || self.rng.chance(self.net.drop_request);
        let (lo, hi) = self.net.latency;
        let mut up = self.rng.range(lo, hi);
        if self.rng.chance(self.net.slow) {
            up = self.rng.range(SEC, 5 * SEC);
        }
        if lost || up > LAND_LIMIT {
            self.push(
                timeout_at,
                Ev::Result {
                    node,
                    id,
                    outcome: WriteOutcome::Failed,
                },
            );
            return;
        }
        self.push(
            self.now + up,
            Ev::Arrive {
                node,
                request,
                sent: self.now,
                timeout_at,
            },
        );
    }

    fn arrive(&mut self, node: usize, request: Request, sent: u64, timeout_at: u64) {
        debug_assert!(self.now <= sent + LAND_LIMIT);
        let outcome = self.server.apply(&request);
        let deleted = matches!(request, Request::Delete { .. });
        if let WriteOutcome::Ok(stored) = &outcome {
            if self.trace {
                self.note(format!(
                    "server stored {} rv={} holder={:?} leaving={} (from node {node})",
                    stored.name, stored.resource_version, stored.holder, stored.leaving
                ));
            }
            for other in 0..self.nodes.len() {
                if !self.alive(other) || self.nodes[other].partitioned {
                    continue;
                }
                let t = self.watch_time(other);
                self.push(
                    t,
                    Ev::Watch {
                        node: other,
                        name: stored.name.clone(),
                        record: (!deleted).then(|| stored.clone()),
                    },
                );
            }
        }
        let (lo, hi) = self.net.latency;
        let mut down = self.rng.range(lo, hi);
        if self.rng.chance(self.net.slow) {
            down = self.rng.range(SEC, 5 * SEC);
        }
        let lost = self.nodes[node].partitioned || self.rng.chance(self.net.drop_response);
        let id = request.id();
        if lost || self.now + down >= timeout_at {
            self.push(
                timeout_at,
                Ev::Result {
                    node,
                    id,
                    outcome: WriteOutcome::Failed,
                },
            );
        } else {
            self.push(self.now + down, Ev::Result { node, id, outcome });
        }
    }

    // ----- invariants --------------------------------------------------------------------

    /// Ends ownership that lapsed by time alone (a deadline passed without input).
    fn check_time(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.alive(i) {
                continue;
            }
            let local = self.local(i);
            let n = &mut self.nodes[i];
            if !n.prev_owned.is_empty() {
                if let Some(d) = n.prev_deadline {
                    if local >= d {
                        let end = n.clock.global(d);
                        let free = n.free_after(end);
                        for r in n.prev_owned.iter() {
                            n.ended[r as usize] = (end, free);
                        }
                        n.prev_owned = RangeSet::new(self.ranges);
                    }
                }
            }
            if n.prev_leader {
                if let Some(d) = n.prev_leader_deadline {
                    if local >= d {
                        let end = n.clock.global(d);
                        n.leader_ended = (end, n.free_after(end));
                        n.prev_leader = false;
                    }
                }
            }
        }
    }

    fn check_node(&mut self, i: usize, drained: Option<&RangeSet>) {
        let local = self.local(i);
        let owned = if self.alive(i) {
            self.nodes[i].machine.owned(local)
        } else {
            RangeSet::new(self.ranges)
        };
        let prev = std::mem::replace(&mut self.nodes[i].prev_owned, owned.clone());
        self.nodes[i].prev_deadline = self.nodes[i].machine.work_deadline();
        for r in prev.iter() {
            if !owned.contains(r) {
                let free = if drained.is_some_and(|d| d.contains(r)) {
                    self.now
                } else {
                    self.nodes[i].free_after(self.now)
                };
                self.nodes[i].ended[r as usize] = (self.now, free);
            }
        }
        if let Some(drained) = drained {
            // The driver says nothing is in flight for these any more, even if the deadline
            // already ended them.
            for r in drained.iter() {
                let (end, free) = &mut self.nodes[i].ended[r as usize];
                if !prev.contains(r) && *end > 0 && *free > self.now {
                    *free = self.now;
                }
            }
        }
        for r in owned.iter() {
            if prev.contains(r) {
                continue;
            }
            for j in 0..self.nodes.len() {
                if j == i {
                    continue;
                }
                if self.nodes[j].prev_owned.contains(r) {
                    let msg = format!(
                        "range {r}: node {i} ({}) starts while node {j} ({}) owns it",
                        self.nodes[i].identity, self.nodes[j].identity
                    );
                    self.violation(msg);
                }
                let (end, free) = self.nodes[j].ended[r as usize];
                if end > 0 && free > self.now {
                    let msg = format!(
                        "range {r}: node {i} starts {:.3}s after node {j} stopped (needs {:.3}s)",
                        (self.now as f64 - end as f64) / SEC as f64,
                        (free - end) as f64 / SEC as f64
                    );
                    self.violation(msg);
                }
            }
        }
        // Leader.
        let leader = self.alive(i) && self.nodes[i].machine.is_leader(local);
        let was = self.nodes[i].prev_leader;
        self.nodes[i].prev_leader = leader;
        self.nodes[i].prev_leader_deadline = self.nodes[i].machine.leader_deadline();
        if was && !leader {
            self.nodes[i].leader_ended = (self.now, self.nodes[i].free_after(self.now));
        }
        if leader && !was {
            for j in 0..self.nodes.len() {
                if j == i {
                    continue;
                }
                if self.nodes[j].prev_leader {
                    self.violation(format!("node {i} becomes leader while node {j} is"));
                }
                let (end, free) = self.nodes[j].leader_ended;
                if end > 0 && free > self.now {
                    self.violation(format!(
                        "node {i} becomes leader {:.3}s after node {j} stopped",
                        (self.now as f64 - end as f64) / SEC as f64
                    ));
                }
            }
        }
    }

    /// Ranges owned by no running node, and ranges owned by more than one.
    pub fn coverage(&self) -> (Vec<u32>, Vec<u32>) {
        let mut count = vec![0u32; self.ranges.get() as usize];
        for (i, n) in self.nodes.iter().enumerate() {
            if n.state != NodeState::Running {
                continue;
            }
            let _ = i;
            for r in n.prev_owned.iter() {
                count[r as usize] += 1;
            }
        }
        let unowned = (0..self.ranges.get())
            .filter(|&r| count[r as usize] == 0)
            .collect();
        let multi = (0..self.ranges.get())
            .filter(|&r| count[r as usize] > 1)
            .collect();
        (unowned, multi)
    }

    /// Live members that should share the ranges (running, joined, not leaving/stopping).
    pub fn members(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                n.state == NodeState::Running && !n.leaving && !n.stopping && n.machine.is_member()
            })
            .collect()
    }

    pub fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.alive(i) && self.nodes[i].prev_leader)
            .collect()
    }

    /// Checks the balance invariant: every member owns ⌊R/N⌋ or ⌈R/N⌉ ranges.
    pub fn balance_error(&self) -> Option<String> {
        let members = self.members();
        if members.is_empty() {
            return Some("no members".into());
        }
        let r = self.ranges.get() as usize;
        let n = members.len();
        for &i in &members {
            let k = self.nodes[i].prev_owned.len() as usize;
            if k != r / n && k != r.div_ceil(n) {
                return Some(format!(
                    "node {i} ({}) owns {k} of {r} ranges with {n} members",
                    self.nodes[i].identity
                ));
            }
        }
        None
    }

    pub fn owners(&self) -> Vec<Option<String>> {
        let mut owners = vec![None; self.ranges.get() as usize];
        for n in &self.nodes {
            if n.state != NodeState::Running {
                continue;
            }
            for r in n.prev_owned.iter() {
                owners[r as usize] = Some(n.identity.clone());
            }
        }
        owners
    }

    pub fn failure_report(&self) -> String {
        let mut s = format!("SEED={} violations:\n", self.seed);
        for v in &self.violations {
            s.push_str(&format!("  {v}\n"));
        }
        let tail = self.log.len().saturating_sub(60);
        s.push_str("last log lines:\n");
        for line in &self.log[tail..] {
            s.push_str(&format!("  {line}\n"));
        }
        s
    }
}

fn retarget(action: Action, node: usize) -> Action {
    match action {
        Action::Crash { .. } => Action::Crash { node },
        Action::Shutdown { .. } => Action::Shutdown { node },
        Action::Leaving { leaving, .. } => Action::Leaving { node, leaving },
        Action::Pause { until, .. } => Action::Pause { node, until },
        Action::Partition { until, .. } => Action::Partition { node, until },
        Action::StallWatch { until, .. } => Action::StallWatch { node, until },
        other => other,
    }
}
