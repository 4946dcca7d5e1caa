//! Randomized deterministic simulation of the lease protocol: thousands of seeded schedules
//! with joins, crashes, restarts, graceful and scale-down shutdowns, pauses, partitions,
//! stalled watches, lost requests and responses, duplicate identities and drifting clocks.
//! Safety (no two members on one range; at most one leader) is checked after every event;
//! liveness, balance and quiet after healing.
//!
//! `SIM_SEEDS=n` runs n seeds (default 2000), `SEED=s` runs only seed s (with `SIM_TRACE=1`
//! for a full trace).

mod common;

use common::*;

const POOL: usize = 8;
const MAX_NODES: usize = 7;
/// Every range must be owned again within this time after healing: a lease duration (a
/// crashed owner's lease expires; or the restart grace of a member that shut down without
/// leaving), plus one request timeout (a request sent before healing may still be in flight,
/// e.g. a shutdown's release), plus a retry period (fence, observe, claim, drain).
const LIVENESS_BOUND: u64 = 15 * SEC + 4_500 * MS + 2 * SEC;
const AFTER_HEAL: u64 = 32 * SEC;

fn identity(rng: &mut Rng) -> String {
    format!("bc-{}", rng.range(0, POOL as u64))
}

fn on(identity: String, what: Action) -> Action {
    Action::OnIdentity {
        identity,
        what: Box::new(what),
    }
}

/// Builds a random schedule; returns the heal time.
fn schedule(sim: &mut Sim) -> u64 {
    let mut rng = Rng::new(sim.seed.wrapping_mul(0x9E37_79B9));
    let ranges_choices = [1u32, 2, 3, 5, 8, 13, 16, 32, 64];
    let _ = ranges_choices;
    let n0 = rng.range(1, 6) as usize;
    let simultaneous = rng.chance(0.5);
    for k in 0..n0 {
        let t = if simultaneous {
            rng.range(0, 300 * MS)
        } else {
            k as u64 * rng.range(0, 5 * SEC)
        };
        sim.at(
            t,
            Action::StartIfAbsent {
                identity: format!("bc-{k}"),
                max: MAX_NODES,
            },
        );
    }
    let heal = rng.range(20, 70) * SEC;
    let mut t = rng.range(SEC, 8 * SEC);
    while t < heal {
        let clip = |end: u64| end.min(heal);
        let who = identity(&mut rng);
        match rng.range(0, 117) {
            0..20 => sim.at(
                t,
                Action::StartIfAbsent {
                    identity: who,
                    max: MAX_NODES,
                },
            ),
            20..30 => sim.at(t, on(who, Action::Crash { node: 0 })),
            30..40 => {
                sim.at(t, on(who.clone(), Action::Crash { node: 0 }));
                let back = t + rng.range(SEC, 20 * SEC);
                if back < heal {
                    sim.at(
                        back,
                        Action::StartIfAbsent {
                            identity: who,
                            max: MAX_NODES,
                        },
                    );
                }
            }
            40..50 => {
                // Rolling restart: graceful shutdown, same identity back shortly after.
                sim.at(t, on(who.clone(), Action::Shutdown { node: 0 }));
                let back = t + rng.range(SEC, 10 * SEC);
                sim.at(
                    back.min(heal),
                    Action::StartIfAbsent {
                        identity: who,
                        max: MAX_NODES,
                    },
                );
            }
            50..58 => {
                // Scale-down: leaving, then shutdown.
                sim.at(
                    t,
                    on(
                        who.clone(),
                        Action::Leaving {
                            node: 0,
                            leaving: true,
                        },
                    ),
                );
                let stop = clip(t + rng.range(0, 5 * SEC));
                sim.at(stop, on(who, Action::Shutdown { node: 0 }));
            }
            58..62 => {
                // Scale-down reverted.
                sim.at(
                    t,
                    on(
                        who.clone(),
                        Action::Leaving {
                            node: 0,
                            leaving: true,
                        },
                    ),
                );
                let back = t + rng.range(2 * SEC, 15 * SEC);
                sim.at(
                    clip(back),
                    on(
                        who,
                        Action::Leaving {
                            node: 0,
                            leaving: false,
                        },
                    ),
                );
            }
            62..72 => {
                let until = clip(t + rng.range(SEC, 25 * SEC));
                sim.at(t, on(who, Action::Pause { node: 0, until }));
            }
            72..82 => {
                let until = clip(t + rng.range(SEC, 25 * SEC));
                sim.at(t, on(who, Action::Partition { node: 0, until }));
            }
            82..88 => {
                let until = clip(t + rng.range(SEC, 15 * SEC));
                sim.at(t, on(who, Action::StallWatch { node: 0, until }));
            }
            88..91 => sim.at(t, Action::Start { identity: who }),
            91..97 => {
                sim.at(t, Action::SetNet(Net::faulty()));
                sim.at(
                    clip(t + rng.range(5 * SEC, 20 * SEC)),
                    Action::SetNet(Net::calm()),
                );
            }
            107..117 => {
                // Stalled past the renew deadline (ranges lost with work in flight), then
                // told to leave or shut down right when it runs again.
                let until = clip(t + rng.range(9 * SEC, 16 * SEC));
                let fault = if rng.chance(0.5) {
                    Action::Pause { node: 0, until }
                } else {
                    Action::Partition { node: 0, until }
                };
                sim.at(t, on(who.clone(), fault));
                let then = clip(until + rng.range(0, 500 * MS));
                if rng.chance(0.5) {
                    sim.at(
                        then,
                        on(
                            who.clone(),
                            Action::Leaving {
                                node: 0,
                                leaving: true,
                            },
                        ),
                    );
                }
                sim.at(then, on(who, Action::Shutdown { node: 0 }));
            }
            _ => {
                // A leaving member that is shut down, and the same identity rejoining later.
                sim.at(t, on(who.clone(), Action::Shutdown { node: 0 }));
                let back = t + rng.range(SEC, 30 * SEC);
                if back < heal {
                    sim.at(
                        back,
                        Action::StartIfAbsent {
                            identity: who,
                            max: MAX_NODES,
                        },
                    );
                }
            }
        }
        t += rng.range(500 * MS, 8 * SEC);
    }
    sim.at(heal, Action::SetNet(Net::calm()));
    sim.at(heal, Action::EnsureMember);
    heal
}

/// Runs one seed; returns an error report, or the number of events-ish work done.
fn run_seed(seed: u64) -> Result<(), String> {
    let mut pick = Rng::new(seed ^ 0xABCD);
    let ranges = [1u32, 2, 3, 5, 8, 13, 16, 32, 64][pick.range(0, 9) as usize];
    let mut sim = Sim::new(seed, ranges);
    let heal = schedule(&mut sim);
    sim.run_until(heal);
    if !sim.violations.is_empty() {
        return Err(sim.failure_report());
    }
    // Liveness: from heal + bound on, every range has exactly one running owner.
    sim.run_until(heal + LIVENESS_BOUND);
    let end = heal + AFTER_HEAL;
    let mut t = heal + LIVENESS_BOUND;
    while t <= end {
        sim.run_until(t);
        let (unowned, multi) = sim.coverage();
        if !unowned.is_empty() || !multi.is_empty() {
            sim.violations.push(format!(
                "t={:.3}s liveness: unowned {unowned:?}, owned twice {multi:?} ({:.1}s after healing)",
                t as f64 / SEC as f64,
                (t - heal) as f64 / SEC as f64
            ));
            break;
        }
        t += 250 * MS;
    }
    if sim.violations.is_empty() {
        if let Some(e) = sim.balance_error() {
            sim.violations.push(format!("balance at the end: {e}"));
        }
        let leaders = sim.leaders();
        if leaders.len() != 1 {
            sim.violations
                .push(format!("leaders at the end: {leaders:?}"));
        }
        // Quiet: no range lease writes in the last 8 s.
        let quiet_from = end - 8 * SEC;
        for (i, n) in sim.nodes.iter().enumerate() {
            if let Some(&w) = n.range_writes_at.iter().rev().find(|&&w| w >= quiet_from) {
                sim.violations.push(format!(
                    "node {i} still writes range leases at t={:.3}s",
                    w as f64 / SEC as f64
                ));
                break;
            }
        }
    }
    if sim.violations.is_empty() {
        Ok(())
    } else {
        Err(sim.failure_report())
    }
}

fn seeds(shard: u64, shards: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("SEED") {
        let seed: u64 = seed.parse().expect("SEED is a number");
        return if seed % shards == shard {
            vec![seed]
        } else {
            vec![]
        };
    }
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    (0..n).filter(|s| s % shards == shard).collect()
}

fn run_shard(shard: u64) {
    let started = std::time::Instant::now();
    let seeds = seeds(shard, 4);
    let mut failures = Vec::new();
    for &seed in &seeds {
        if let Err(report) = run_seed(seed) {
            eprintln!("{report}");
            failures.push(seed);
            if failures.len() >= 5 {
                break;
            }
        }
    }
    eprintln!(
        "shard {shard}: {} seeds in {:.1}s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "failing seeds: {failures:?} (rerun with SEED=<n>)"
    );
}

#[test]
fn random_schedules_0() {
    run_shard(0);
}
#[test]
fn random_schedules_1() {
    run_shard(1);
}
#[test]
fn random_schedules_2() {
    run_shard(2);
}
#[test]
fn random_schedules_3() {
    run_shard(3);
}

// ----- scenarios with figures ------------------------------------------------------------

fn start_members(sim: &mut Sim, identities: &[String], rng: &mut Rng) {
    for id in identities {
        let t = sim.now + rng.range(0, 2 * SEC);
        sim.at(
            t,
            Action::Start {
                identity: id.clone(),
            },
        );
    }
}

fn distinct_identities(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    while ids.len() < n {
        let id = format!("bc-{}", rng.range(0, 20));
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

fn node_of(sim: &Sim, identity: &str) -> usize {
    (0..sim.nodes.len())
        .rev()
        .find(|&i| sim.alive(i) && sim.nodes[i].identity == identity)
        .expect("identity runs")
}

/// Runs until every range has one running owner; returns the time that took, or panics
/// after `limit`.
fn until_covered(sim: &mut Sim, limit: u64) -> u64 {
    let start = sim.now;
    loop {
        let (unowned, multi) = sim.coverage();
        assert!(multi.is_empty(), "SEED={} owned twice: {multi:?}", sim.seed);
        if unowned.is_empty() {
            return sim.now - start;
        }
        assert!(
            sim.now - start <= limit,
            "SEED={} unowned {unowned:?} {:.1}s after start\n{}",
            sim.seed,
            (sim.now - start) as f64 / SEC as f64,
            sim.failure_report()
        );
        let t = sim.now + 10 * MS;
        sim.run_until(t);
    }
}

fn scenario_seeds(default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("SEED") {
        return vec![seed.parse().expect("SEED is a number")];
    }
    (0..default).collect()
}

/// A crashed owner's ranges are owned again within lease duration + 2 retry periods.
#[test]
fn crash_failover_within_bound() {
    let mut worst = 0u64;
    let mut total = 0u64;
    let seeds = scenario_seeds(150);
    for &seed in &seeds {
        let mut rng = Rng::new(seed);
        let n = rng.range(2, 8) as usize;
        let ranges = [4u32, 16, 64][rng.range(0, 3) as usize];
        let mut sim = Sim::new(seed, ranges);
        let ids = distinct_identities(&mut rng, n);
        start_members(&mut sim, &ids, &mut rng);
        sim.run_until(25 * SEC);
        assert!(sim.violations.is_empty(), "{}", sim.failure_report());
        assert_eq!(sim.balance_error(), None, "SEED={seed}");
        let victim = node_of(&sim, &ids[rng.range(0, n as u64) as usize]);
        let t = sim.now + rng.range(0, 2 * SEC);
        sim.run_until(t);
        sim.act(Action::Crash { node: victim });
        let took = until_covered(&mut sim, 15 * SEC + 4 * SEC);
        worst = worst.max(took);
        total += took;
        sim.run_until(sim.now + 10 * SEC);
        assert!(sim.violations.is_empty(), "{}", sim.failure_report());
        assert_eq!(sim.balance_error(), None, "SEED={seed}");
    }
    eprintln!(
        "crash failover over {} seeds: mean {:.2}s, worst {:.2}s (bound 19 s)",
        seeds.len(),
        total as f64 / seeds.len() as f64 / SEC as f64,
        worst as f64 / SEC as f64
    );
}

/// From a stable state, a joining member takes at most ⌈R/(N+1)⌉ ranges and nothing else
/// moves, without intermediate moves; a scale-down (leaving) hands over at once; a rolling
/// restart gets its own ranges back.
#[test]
fn join_leave_restart_move_little() {
    let seeds = scenario_seeds(60);
    let mut worst_leave = 0u64;
    let mut worst_restart = 0u64;
    for &seed in &seeds {
        let mut rng = Rng::new(seed);
        let n = rng.range(1, 7) as usize;
        let ranges = [1u32, 5, 16, 64, 256][rng.range(0, 5) as usize];
        let mut sim = Sim::new(seed, ranges);
        let ids = distinct_identities(&mut rng, n + 1);
        start_members(&mut sim, &ids[..n], &mut rng);
        sim.run_until(25 * SEC);
        assert_eq!(sim.balance_error(), None, "SEED={seed}");
        let before = sim.owners();
        let acquired_before: u64 = sim.nodes.iter().map(|n| n.acquired_total).sum();
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("n={n} R={ranges} ids={ids:?} before={before:?}");
        }

        // Join.
        sim.act(Action::Start {
            identity: ids[n].clone(),
        });
        sim.run_until(sim.now + 20 * SEC);
        assert!(sim.violations.is_empty(), "{}", sim.failure_report());
        assert_eq!(sim.balance_error(), None, "SEED={seed}");
        let after = sim.owners();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as u32;
        let acquired: u64 =
            sim.nodes.iter().map(|n| n.acquired_total).sum::<u64>() - acquired_before;
        let share = ranges.div_ceil(n as u32 + 1);
        assert!(moved <= share, "SEED={seed}: join moved {moved} > {share}");
        assert_eq!(
            acquired,
            u64::from(moved),
            "SEED={seed}: intermediate moves"
        );
        for (a, b) in before.iter().zip(&after) {
            if a != b {
                assert_eq!(b.as_deref(), Some(ids[n].as_str()), "SEED={seed}");
            }
        }

        // Rolling restart of one member: shutdown without leaving, back after a few seconds.
        let who = ids[rng.range(0, n as u64 + 1) as usize].clone();
        let before = sim.owners();
        let acquired_before: u64 = sim.nodes.iter().map(|n| n.acquired_total).sum();
        let node = node_of(&sim, &who);
        sim.act(Action::Shutdown { node });
        let back = sim.now + rng.range(SEC, 8 * SEC);
        sim.run_until(back);
        sim.act(Action::Start {
            identity: who.clone(),
        });
        let t0 = sim.now;
        until_covered(&mut sim, 15 * SEC);
        worst_restart = worst_restart.max(sim.now - t0);
        sim.run_until(sim.now + 5 * SEC);
        assert!(sim.violations.is_empty(), "{}", sim.failure_report());
        assert_eq!(sim.owners(), before, "SEED={seed}: restart moved ranges");
        let acquired: u64 =
            sim.nodes.iter().map(|n| n.acquired_total).sum::<u64>() - acquired_before;
        let own = before
            .iter()
            .filter(|o| o.as_deref() == Some(who.as_str()))
            .count() as u64;
        assert_eq!(
            acquired, own,
            "SEED={seed}: restart moved ranges through others"
        );

        // Scale-down of one member (if another remains): leaving, then shutdown.
        if n >= 1 {
            let who = ids[rng.range(0, n as u64 + 1) as usize].clone();
            let node = node_of(&sim, &who);
            sim.act(Action::Leaving {
                node,
                leaving: true,
            });
            sim.act(Action::Shutdown { node });
            let t0 = sim.now;
            sim.run_until(sim.now + 100 * MS);
            until_covered(&mut sim, 5 * SEC);
            worst_leave = worst_leave.max(sim.now - t0);
            sim.run_until(sim.now + 10 * SEC);
            assert!(sim.violations.is_empty(), "{}", sim.failure_report());
            assert_eq!(sim.balance_error(), None, "SEED={seed}");
        }
    }
    eprintln!(
        "handover over {} seeds: scale-down worst {:.2}s to full coverage, rolling restart worst {:.2}s after the new instance started",
        seeds.len(),
        worst_leave as f64 / SEC as f64,
        worst_restart as f64 / SEC as f64
    );
}

/// A second process with a live identity backs off (never joins while the first renews) and
/// takes over only after the first stops renewing for a lease duration.
#[test]
fn same_identity_twice_backs_off() {
    for seed in scenario_seeds(20) {
        let mut sim = Sim::new(seed, 16);
        sim.at(
            0,
            Action::Start {
                identity: "bc-0".into(),
            },
        );
        sim.at(
            0,
            Action::Start {
                identity: "bc-1".into(),
            },
        );
        sim.run_until(20 * SEC);
        sim.act(Action::Start {
            identity: "bc-0".into(),
        });
        let dup = sim.nodes.len() - 1;
        let original = 0;
        let mut t = sim.now;
        while t < 60 * SEC {
            t += 100 * MS;
            sim.run_until(t);
            assert!(
                !sim.nodes[dup].machine.is_member(),
                "SEED={seed}: duplicate joined"
            );
        }
        assert!(
            sim.nodes[dup]
                .events
                .iter()
                .any(|(_, e)| matches!(e, lease::Event::DuplicateIdentity { .. })),
            "SEED={seed}: no duplicate warning"
        );
        let crash = sim.now;
        sim.act(Action::Crash { node: original });
        until_covered(&mut sim, 20 * SEC);
        while !sim.nodes[dup].machine.is_member() {
            assert!(
                sim.now - crash < 20 * SEC,
                "SEED={seed}: duplicate never took over"
            );
            sim.run_until(sim.now + 10 * MS);
        }
        // The original renewed at most two retry periods before crashing (a leader renews
        // every other one), and its lease lasts 15 s.
        assert!(
            sim.now - crash >= 11 * SEC,
            "SEED={seed}: took over too early"
        );
        sim.run_until(sim.now + 10 * SEC);
        assert_eq!(sim.balance_error(), None, "SEED={seed}");
        assert!(sim.violations.is_empty(), "{}", sim.failure_report());
    }
}

/// Lease writes per minute at steady state: member renewals only, plus the leader's.
#[test]
fn steady_state_write_rate() {
    let mut sim = Sim::new(7, 256);
    for k in 0..3 {
        sim.at(
            k * 300 * MS,
            Action::Start {
                identity: format!("bc-{k}"),
            },
        );
    }
    sim.run_until(60 * SEC);
    assert_eq!(sim.balance_error(), None);
    let from = sim.now;
    sim.run_until(from + 120 * SEC);
    let mut report = Vec::new();
    for (i, n) in sim.nodes.iter().enumerate() {
        let writes = n.writes_at.iter().filter(|&&t| t >= from).count() as f64 / 2.0;
        let range_writes = n.range_writes_at.iter().filter(|&&t| t >= from).count();
        let leader = n.machine.is_leader(sim.local(i));
        assert_eq!(range_writes, 0, "range leases written at steady state");
        // The leader renews its two leases every other retry period: no more writes.
        let expected = 30.0;
        assert!(
            (writes - expected).abs() <= 1.5,
            "node {i}: {writes} writes/min"
        );
        report.push(format!(
            "{}{}: {writes:.1}/min",
            n.identity,
            if leader { " (leader)" } else { "" }
        ));
    }
    eprintln!(
        "steady state, 3 members, R=256, retry period 2 s: {}",
        report.join(", ")
    );
}
