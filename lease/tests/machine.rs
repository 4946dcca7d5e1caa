//! Plain tests of one machine, driven by hand against the fake API server: every input and
//! every write is explicit.

mod common;

use std::time::Duration;

use common::{config, Server};
use lease::{Event, Instant, LeaseRecord, Machine, Request, WriteOutcome};
use shard::RangeSet;

const R: u32 = 8;

fn at(secs: f64) -> Instant {
    Instant::from_nanos((secs * 1e9) as u64)
}

fn all() -> RangeSet {
    RangeSet::full(shard::RangeCount::new(R).unwrap())
}

fn set(ranges: &[u32]) -> RangeSet {
    let mut s = RangeSet::new(shard::RangeCount::new(R).unwrap());
    for &r in ranges {
        s.insert(r);
    }
    s
}

/// One machine against a server; writes are answered at once and their stored records
/// echoed back through the "watch" unless told otherwise.
struct Rig {
    m: Machine,
    server: Server,
    events: Vec<Event>,
    sent: Vec<Request>,
}

impl Rig {
    fn new(identity: &str, instance: &str) -> Rig {
        Rig::with_server(identity, instance, Server::default())
    }

    fn with_server(identity: &str, instance: &str, server: Server) -> Rig {
        let m = Machine::new(config(identity, instance, "bc", R), at(0.0)).unwrap();
        Rig {
            m,
            server,
            events: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn list(&mut self, now: Instant) {
        let records: Vec<LeaseRecord> = self.server.leases.values().cloned().collect();
        self.m.handle_list(now, records);
        self.pump(now);
    }

    /// Sends every request, answers it, echoes stored records, until quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            self.take_events();
            let Some(request) = self.m.poll_request() else {
                break;
            };
            self.sent.push(request.clone());
            let outcome = self.server.apply(&request);
            self.m
                .handle_write_result(now, request.id(), outcome.clone());
            match (outcome, &request) {
                (WriteOutcome::Ok(_), Request::Delete { lease, .. }) => {
                    self.m.handle_deleted(now, &lease.name)
                }
                (WriteOutcome::Ok(stored), _) => self.m.handle_observed(now, stored),
                _ => {}
            }
        }
        self.take_events();
    }

    /// Requests the machine wants to send, without answering them.
    fn requests(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        while let Some(r) = self.m.poll_request() {
            out.push(r);
        }
        self.take_events();
        out
    }

    fn take_events(&mut self) {
        while let Some(e) = self.m.poll_event() {
            self.events.push(e);
        }
    }

    fn timeout(&mut self, now: Instant) {
        self.m.handle_timeout(now);
        self.pump(now);
    }

    /// Joins and claims everything (alone), as in `claim_from_empty`.
    fn joined_alone(identity: &str) -> Rig {
        let mut rig = Rig::new(identity, "a1");
        rig.list(at(0.0));
        rig.timeout(at(2.0));
        assert_eq!(rig.m.owned(at(2.0)), all());
        rig.events.clear();
        rig.sent.clear();
        rig
    }

    fn drained_all(&mut self, now: Instant) {
        let draining: Vec<RangeSet> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Draining(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        for s in draining {
            self.m.handle_drained(now, &s);
        }
        self.pump(now);
    }
}

fn lease(name: &str, holder: Option<&str>) -> LeaseRecord {
    LeaseRecord {
        name: name.into(),
        resource_version: String::new(),
        holder: holder.map(str::to_owned),
        lease_duration_secs: Some(15),
        renew_time_micros: Some(1),
        leaving: false,
    }
}

fn store(server: &mut Server, record: LeaseRecord) -> LeaseRecord {
    match server.apply(&Request::Create {
        id: lease::RequestId(0),
        lease: record,
    }) {
        WriteOutcome::Ok(stored) => stored,
        other => panic!("{other:?}"),
    }
}

fn update(server: &mut Server, mut record: LeaseRecord) -> LeaseRecord {
    record.resource_version = server.leases[&record.name].resource_version.clone();
    match server.apply(&Request::Update {
        id: lease::RequestId(0),
        lease: record,
    }) {
        WriteOutcome::Ok(stored) => stored,
        other => panic!("{other:?}"),
    }
}

#[test]
fn claim_from_empty() {
    let mut rig = Rig::new("m-0", "a1");
    assert!(rig.requests().is_empty(), "nothing before the first list");
    rig.list(at(0.0));
    // Joined: created its member lease, and the leader lease.
    let names: Vec<&str> = rig.sent.iter().map(|r| r.lease().name.as_str()).collect();
    assert_eq!(names, ["bc-member-m-0", "bc-leader"]);
    assert!(matches!(rig.sent[0], Request::Create { .. }));
    assert_eq!(rig.sent[0].lease().holder.as_deref(), Some("m-0_a1"));
    assert!(rig.m.is_member());
    assert!(rig.m.is_leader(at(0.0)));
    // Claims wait one retry period after joining, so parallel starters see each other.
    assert!(rig.m.owned(at(1.0)).is_empty());
    rig.timeout(at(2.0));
    assert_eq!(rig.m.owned(at(2.0)), all());
    let mut acquired = RangeSet::new(all().count());
    for e in &rig.events {
        if let Event::Acquired(s) = e {
            acquired = acquired.union(s).unwrap();
        }
    }
    assert_eq!(acquired, all());
    let creates = rig
        .sent
        .iter()
        .filter(|r| matches!(r, Request::Create { .. }) && r.lease().name.starts_with("bc-range-"))
        .count();
    assert_eq!(creates, R as usize, "one create per range, nothing else");
    // Work stops 10 s after the last successful renew was sent: the leader renews every
    // other retry period, so that is the create at 0 s.
    assert_eq!(
        rig.m.work_deadline(),
        Some(at(0.0) + Duration::from_secs(10))
    );
}

#[test]
fn unclaimed_counts_ranges_nobody_may_work_on() {
    let mut rig = Rig::new("m-0", "a1");
    rig.list(at(0.0));
    assert_eq!(rig.m.unclaimed(at(1.0)), R, "joined, claims not made yet");
    rig.timeout(at(2.0));
    assert_eq!(rig.m.unclaimed(at(2.0)), 0);
    // The renew deadline passes with the API server unreachable: nothing is workable.
    let mut t = 2.0;
    while t < 14.0 {
        t += 0.5;
        rig.m.handle_timeout(at(t));
        for r in rig.requests() {
            rig.m
                .handle_write_result(at(t), r.id(), WriteOutcome::Failed);
        }
    }
    assert_eq!(rig.m.unclaimed(at(14.0)), R);
}

#[test]
fn the_leader_removes_member_leases_of_identities_gone_for_good() {
    let mut server = Server::default();
    let mut gone = lease("bc-member-m-9", None);
    gone.leaving = true;
    let gone = store(&mut server, gone);
    // Released without leaving: a restart in progress, kept.
    store(&mut server, lease("bc-member-m-8", None));
    let mut rig = Rig::with_server("m-0", "a1", server);
    rig.list(at(0.0));
    let deletes = |rig: &Rig| -> Vec<LeaseRecord> {
        rig.sent
            .iter()
            .filter_map(|r| match r {
                Request::Delete { lease, .. } => Some(lease.clone()),
                _ => None,
            })
            .collect()
    };
    for k in 1..=14 {
        rig.timeout(at(2.0 * f64::from(k)));
    }
    assert!(
        deletes(&rig).is_empty(),
        "not before member_gc_after (30 s)"
    );
    for k in 15..=20 {
        rig.timeout(at(2.0 * f64::from(k)));
    }
    let sent = deletes(&rig);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].name, "bc-member-m-9");
    assert_eq!(
        sent[0].resource_version, gone.resource_version,
        "a precondition"
    );
    assert!(!rig.server.leases.contains_key("bc-member-m-9"));
    assert!(rig.server.leases.contains_key("bc-member-m-8"));
    assert_eq!(rig.m.owned(at(40.0)), all(), "work goes on");
}

#[test]
fn steady_state_writes_only_renewals() {
    let mut rig = Rig::joined_alone("m-0");
    for k in 1..=30 {
        rig.timeout(at(2.0 + f64::from(k) * 2.0));
    }
    assert!(rig
        .sent
        .iter()
        .all(|r| !r.lease().name.starts_with("bc-range-")));
    let member = rig
        .sent
        .iter()
        .filter(|r| r.lease().name == "bc-member-m-0")
        .count();
    let leader = rig
        .sent
        .iter()
        .filter(|r| r.lease().name == "bc-leader")
        .count();
    // The leader renews both of its leases every other retry period: 30 writes a minute in
    // all, as many as a member that is not the leader.
    assert_eq!((member, leader), (15, 15));
    assert_eq!(rig.m.owned(at(62.0)), all());
}

#[test]
fn conflict_waits_for_a_newer_view() {
    // Range 0 looks released, but someone else claimed it meanwhile (our view is old).
    let mut server = Server::default();
    let other = store(&mut server, lease("bc-member-m-1", Some("m-1_b1")));
    let old = store(&mut server, lease("bc-range-0", None));
    let mut rig = Rig::with_server("m-0", "a1", server);
    rig.list(at(0.0));
    let newer = update(&mut rig.server, lease("bc-range-0", Some("m-1_b1")));
    assert_ne!(old.resource_version, newer.resource_version);
    rig.timeout(at(2.0));
    let claims_of_0 = |rig: &Rig| {
        rig.sent
            .iter()
            .filter(|r| {
                r.lease().name == "bc-range-0" && r.lease().holder.as_deref() == Some("m-0_a1")
            })
            .count()
    };
    assert_eq!(claims_of_0(&rig), 1, "claimed once against the old version");
    assert!(!rig.m.owned(at(2.0)).contains(0), "conflict: not ours");
    // No retry against the same old version, however often we wake up.
    for k in 1..10 {
        rig.timeout(at(2.0 + f64::from(k)));
    }
    assert_eq!(claims_of_0(&rig), 1);
    // The watch shows m-1 holds it (and m-1 renews): still not ours, no write.
    rig.m.handle_observed(at(12.0), newer);
    rig.m.handle_observed(at(12.0), other);
    rig.pump(at(12.0));
    assert_eq!(claims_of_0(&rig), 1);
    assert!(!rig.m.owned(at(12.0)).contains(0));
}

#[test]
fn renew_deadline_stops_all_work_and_an_unbroken_chain_resumes() {
    let mut rig = Rig::joined_alone("m-0");
    // From now on renewals time out (the API server is unreachable).
    let mut t = 2.0;
    let mut lost_at = None;
    while t < 14.0 {
        t += 0.5;
        rig.m.handle_timeout(at(t));
        for r in rig.requests() {
            rig.m
                .handle_write_result(at(t), r.id(), WriteOutcome::Failed);
        }
        rig.take_events();
        if lost_at.is_none() && rig.events.iter().any(|e| matches!(e, Event::Lost(_))) {
            lost_at = Some(t);
        }
    }
    // The last successful renew was the create at 0.0 (a leader renews every other retry
    // period): work stops at 10.0 at the latest.
    let deadline = rig.m.work_deadline().unwrap();
    assert!(deadline <= at(10.0), "{deadline:?}");
    assert!(rig.m.owned(deadline).is_empty());
    assert!(!rig.m.is_leader(deadline));
    assert_eq!(lost_at, Some(10.0));
    assert!(rig.events.contains(&Event::Lost(all())));
    assert!(rig.events.contains(&Event::LeaderChanged(false)));
    // The API server is back and nobody touched our member lease: the chain goes on and
    // the ranges are ours again, with no range lease write.
    rig.events.clear();
    rig.sent.clear();
    rig.timeout(at(16.0)); // the next renew (the last failed one was sent at 14.0)
    assert_eq!(rig.m.owned(at(16.0)), all());
    assert!(rig.events.contains(&Event::Acquired(all())));
    assert!(rig
        .sent
        .iter()
        .all(|r| !r.lease().name.starts_with("bc-range-")));
}

#[test]
fn broken_chain_reconfirms_every_range_with_a_write() {
    let mut rig = Rig::joined_alone("m-0");
    // Somebody fenced our member lease (it thought we were dead).
    let fenced = update(
        &mut rig.server,
        LeaseRecord {
            leaving: true,
            ..lease("bc-member-m-0", None)
        },
    );
    rig.timeout(at(4.0)); // the renew conflicts
    assert!(rig.m.owned(at(4.0)).is_empty());
    assert!(rig.events.contains(&Event::Lost(all())));
    // It rejoins from the view once it sees the fence, then re-confirms each claim by a
    // compare-and-swap before working on it again.
    rig.events.clear();
    rig.sent.clear();
    rig.m.handle_observed(at(4.1), fenced);
    rig.pump(at(4.1));
    assert!(rig.m.is_member());
    let reconfirms = rig
        .sent
        .iter()
        .filter(|r| r.lease().name.starts_with("bc-range-") && matches!(r, Request::Update { .. }))
        .count();
    assert_eq!(reconfirms, R as usize);
    assert_eq!(rig.m.owned(at(4.1)), all());
}

#[test]
fn graceful_shutdown_drains_then_releases_with_one_write() {
    let mut rig = Rig::joined_alone("m-0");
    rig.m.shutdown(at(3.0));
    rig.pump(at(3.0));
    assert!(rig.events.contains(&Event::Draining(all())));
    assert!(rig.events.contains(&Event::LeaderChanged(false)));
    assert_eq!(
        rig.m.owned(at(3.0)),
        all(),
        "draining ranges are still worked on"
    );
    rig.sent.clear();
    rig.drained_all(at(3.5));
    assert!(rig.m.owned(at(3.5)).is_empty());
    let member_release: Vec<&Request> = rig
        .sent
        .iter()
        .filter(|r| r.lease().name == "bc-member-m-0")
        .collect();
    assert_eq!(member_release.len(), 1);
    assert_eq!(member_release[0].lease().holder, None);
    assert!(
        !member_release[0].lease().leaving,
        "a restart, not a scale-down"
    );
    assert!(rig
        .sent
        .iter()
        .all(|r| !r.lease().name.starts_with("bc-range-")));
    assert!(rig.events.contains(&Event::Released(all())));
    // The leader lease is released one request timeout after stepping down.
    assert!(!rig.events.contains(&Event::Stopped));
    rig.timeout(at(3.0 + common::REQUEST_TIMEOUT.as_secs_f64()));
    assert_eq!(rig.server.leases["bc-leader"].holder, None);
    assert!(rig.events.contains(&Event::Stopped));
    assert!(rig.m.poll_timeout().is_none());
}

#[test]
fn takeover_after_a_full_lease_duration_fences_first() {
    // m-1 owns ranges 4..8 and then stops renewing (crashed).
    let mut server = Server::default();
    store(&mut server, lease("bc-member-m-1", Some("m-1_b1")));
    for r in 4..R {
        store(&mut server, lease(&format!("bc-range-{r}"), Some("m-1_b1")));
    }
    let mut rig = Rig::with_server("m-0", "a1", server);
    rig.list(at(0.0));
    rig.timeout(at(2.0));
    // While m-1 counts as live it keeps its ranges (the assignment is sticky).
    assert_eq!(rig.m.owned(at(2.0)), set(&[0, 1, 2, 3]));
    let mut t = 2.0;
    while t < 14.5 {
        t += 0.5;
        rig.timeout(at(t));
        assert!(
            !rig.m.owned(at(t)).contains(4),
            "took over too early at {t}"
        );
    }
    rig.timeout(at(15.0));
    // First the member lease of m-1 is compare-and-swapped to "released, gone", then the
    // ranges are claimed.
    let fence = rig
        .sent
        .iter()
        .position(|r| r.lease().name == "bc-member-m-1")
        .expect("fenced");
    let first_claim = rig
        .sent
        .iter()
        .position(|r| r.lease().name == "bc-range-4")
        .expect("claimed");
    assert!(fence < first_claim);
    assert_eq!(rig.sent[fence].lease().holder, None);
    assert!(rig.sent[fence].lease().leaving);
    assert_eq!(rig.m.owned(at(15.0)), all());
}

#[test]
fn takeover_is_stopped_by_a_renewal_the_view_missed() {
    // m-1 renews, but our watch missed it: the fence conflicts and nothing is claimed.
    let mut server = Server::default();
    store(&mut server, lease("bc-member-m-1", Some("m-1_b1")));
    store(&mut server, lease("bc-range-7", Some("m-1_b1")));
    let mut rig = Rig::with_server("m-0", "a1", server);
    rig.list(at(0.0));
    let mut t = 0.0;
    while t < 20.0 {
        t += 0.5;
        if t == 10.0 {
            let _unseen = update(&mut rig.server, lease("bc-member-m-1", Some("m-1_b1")));
        }
        rig.timeout(at(t));
    }
    let fences: Vec<&Request> = rig
        .sent
        .iter()
        .filter(|r| r.lease().name == "bc-member-m-1")
        .collect();
    assert_eq!(
        fences.len(),
        1,
        "fenced once against the version it saw, then waits"
    );
    assert!(!rig.m.owned(at(t)).contains(7));
    assert_eq!(
        rig.server.leases["bc-range-7"].holder.as_deref(),
        Some("m-1_b1")
    );
    assert!(rig.sent.iter().all(|r| r.lease().name != "bc-range-7"));
}

#[test]
fn same_identity_twice_backs_off_until_the_other_stops() {
    let mut server = Server::default();
    store(&mut server, lease("bc-member-m-0", Some("m-0_old")));
    let mut rig = Rig::with_server("m-0", "new", server);
    rig.list(at(0.0));
    // The other process renews every 2 s.
    let mut t = 0.0;
    while t < 30.0 {
        t += 2.0;
        let renewed = update(&mut rig.server, lease("bc-member-m-0", Some("m-0_old")));
        rig.m.handle_observed(at(t), renewed);
        rig.timeout(at(t + 1.0));
        assert!(!rig.m.is_member(), "joined while the other renews");
    }
    assert!(rig.sent.iter().all(|r| r.lease().name != "bc-member-m-0"));
    assert!(rig.events.contains(&Event::DuplicateIdentity {
        holder: "m-0_old".into()
    }));
    // It stops renewing (last seen at 30.0): take over a full lease duration later.
    rig.timeout(at(44.9));
    assert!(!rig.m.is_member());
    rig.timeout(at(45.0));
    assert!(rig.m.is_member());
    assert_eq!(
        rig.server.leases["bc-member-m-0"].holder.as_deref(),
        Some("m-0_new")
    );
}

#[test]
fn restart_takes_back_its_own_ranges() {
    // The old incarnation released its member lease (graceful restart); its range leases
    // still name it. The new one takes its member lease and its ranges at once.
    let mut server = Server::default();
    store(&mut server, lease("bc-member-m-0", None));
    store(&mut server, lease("bc-member-m-1", Some("m-1_b1")));
    for r in 0..4 {
        store(
            &mut server,
            lease(&format!("bc-range-{r}"), Some("m-0_old")),
        );
    }
    for r in 4..R {
        store(&mut server, lease(&format!("bc-range-{r}"), Some("m-1_b1")));
    }
    let mut rig = Rig::with_server("m-0", "new", server);
    rig.list(at(0.0));
    assert!(rig.m.is_member());
    rig.timeout(at(2.0));
    assert_eq!(rig.m.owned(at(2.0)), set(&[0, 1, 2, 3]));
}

#[test]
fn leaving_hands_everything_over_and_can_come_back() {
    let mut rig = Rig::joined_alone("m-0");
    rig.m.set_leaving(at(3.0), true);
    rig.pump(at(3.0));
    assert!(rig.events.contains(&Event::Draining(all())));
    rig.sent.clear();
    rig.drained_all(at(3.2));
    let release: Vec<&Request> = rig
        .sent
        .iter()
        .filter(|r| r.lease().name == "bc-member-m-0")
        .collect();
    assert_eq!(release.len(), 1);
    assert_eq!(release[0].lease().holder, None);
    assert!(
        release[0].lease().leaving,
        "others drop it from the assignment at once"
    );
    assert!(!rig.m.is_member());
    assert!(rig.m.owned(at(3.2)).is_empty());
    // Scale-up again: rejoin, and the ranges come back (nobody else took them).
    rig.m.set_leaving(at(10.0), false);
    rig.pump(at(10.0));
    assert!(rig.m.is_member());
    rig.timeout(at(12.0));
    assert_eq!(rig.m.owned(at(12.0)), all());
}

#[test]
fn no_release_within_a_request_timeout_of_a_loss() {
    let mut rig = Rig::joined_alone("m-0");
    // Renewals fail until the deadline passes: everything is lost with work in flight.
    let mut t = 2.0;
    while t < 12.5 {
        t += 0.5;
        rig.m.handle_timeout(at(t));
        for r in rig.requests() {
            rig.m
                .handle_write_result(at(t), r.id(), WriteOutcome::Failed);
        }
    }
    rig.take_events();
    assert!(rig.events.contains(&Event::Lost(all())));
    // Now leaving: the member lease release (which frees every range at once) must wait
    // until requests sent before the loss can no longer land.
    rig.sent.clear();
    rig.m.set_leaving(at(12.5), true);
    rig.pump(at(12.5));
    assert!(rig
        .sent
        .iter()
        .all(|r| r.lease().holder.is_some() || r.lease().name == "bc-leader"));
    let hold_until = 12.0 + common::REQUEST_TIMEOUT.as_secs_f64();
    rig.timeout(at(hold_until + 0.5));
    assert!(rig
        .sent
        .iter()
        .any(|r| r.lease().name == "bc-member-m-0" && r.lease().holder.is_none()));
}

#[test]
fn a_vanished_member_lease_is_fenced_by_create_after_a_lease_duration() {
    let mut server = Server::default();
    store(&mut server, lease("bc-member-m-1", Some("m-1_b1")));
    store(&mut server, lease("bc-range-7", Some("m-1_b1")));
    let mut rig = Rig::with_server("m-0", "a1", server);
    rig.list(at(0.0));
    rig.timeout(at(2.0));
    // Someone deletes m-1's member lease.
    rig.server.leases.remove("bc-member-m-1");
    rig.m.handle_deleted(at(3.0), "bc-member-m-1");
    rig.pump(at(3.0));
    rig.timeout(at(17.9));
    assert!(!rig.m.owned(at(17.9)).contains(7));
    rig.timeout(at(18.0));
    let fence = rig
        .sent
        .iter()
        .find(|r| r.lease().name == "bc-member-m-1")
        .expect("fenced");
    assert!(matches!(fence, Request::Create { .. }));
    assert_eq!(rig.m.owned(at(18.0)), all());
}

#[test]
fn observations_never_take_an_owned_range_away() {
    let mut rig = Rig::joined_alone("m-0");
    // An old watch event (from before our claim) arrives late.
    rig.m.handle_observed(
        at(3.0),
        LeaseRecord {
            resource_version: "1".into(),
            ..lease("bc-range-3", Some("m-9_z"))
        },
    );
    rig.m.handle_deleted(at(3.0), "bc-range-4");
    rig.pump(at(3.0));
    assert_eq!(rig.m.owned(at(3.0)), all());
}
