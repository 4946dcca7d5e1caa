//! The controller's side of the Lease protocol: [`lease::driver`] runs the protocol; this
//! module is its [`lease::driver::Host`], turning the protocol's events into engine calls:
//!
//! ```text
//!   Acquired(r)  → engine.gain(r): the filter admits r, the watches list again
//!   Draining(r)  → engine.shed(r); the driver waits until no worker holds a namespace of r
//!   Lost(r)      → engine.shed(r) at once (renew deadline passed)
//!   Leader(b)    → start / stop the singleton duties (BlockRequest intake)
//! ```
//!
//! Every request goes through the controller's client, whose per-request timeout
//! (`--api-timeout`) is the bound the protocol's safety argument needs.

use std::time::Duration;

use kube::api::Api;
use lease::driver::Host;
use lease::Event;
use shard::RangeSet;
use tracing::warn;

use crate::client::WriteGate;
use crate::context::Context;
use crate::engine::Engine;

/// Lease names start with this.
pub const LEASE_PREFIX: &str = "block-controller";

/// What `/healthz` needs to know of the protocol: that its loop runs and that the member lease
/// keeps being renewed. Cheap to clone.
#[derive(Clone)]
pub struct Liveness {
    inner: std::sync::Arc<std::sync::Mutex<LivenessState>>,
    lease_duration: Duration,
}

struct LivenessState {
    started: std::time::Instant,
    /// The protocol loop's last turn (it turns at least every retry period).
    last_turn: std::time::Instant,
    /// The last work deadline seen: renewals push it forward.
    work_deadline: Option<std::time::Instant>,
}

impl Liveness {
    /// A process that just started.
    pub fn new(lease_duration: Duration) -> Liveness {
        let now = std::time::Instant::now();
        Liveness {
            inner: std::sync::Arc::new(std::sync::Mutex::new(LivenessState {
                started: now,
                last_turn: now,
                work_deadline: None,
            })),
            lease_duration,
        }
    }

    fn turn(&self, work_deadline: Option<std::time::Instant>) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.last_turn = std::time::Instant::now();
        if work_deadline.is_some() {
            s.work_deadline = work_deadline;
        }
    }

    /// `Err(why)` when the process should be restarted: the protocol loop stalled for a lease
    /// duration, or the member lease went unrenewed for a lease duration past its work
    /// deadline (or was never acquired within three lease durations of the start). An API server that is
    /// down for that long fails every replica's check; a restart then costs nothing more.
    pub fn check(&self) -> Result<(), String> {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let d = self.lease_duration;
        if now.duration_since(s.last_turn) > d {
            return Err(format!(
                "the Lease protocol loop has not run for {:?}",
                now.duration_since(s.last_turn)
            ));
        }
        match s.work_deadline {
            Some(deadline) if now > deadline + d => Err(format!(
                "the member Lease has not been renewed for {:?} past the renew deadline",
                now.duration_since(deadline)
            )),
            None if now.duration_since(s.started) > 3 * d => {
                Err("no member Lease acquired since start".into())
            }
            _ => Ok(()),
        }
    }
}

/// The engine and the singleton duties, as the protocol's host.
struct Replica {
    ctx: Context,
    leader_ctx: Context,
    /// The write gates of the range-work and leader clients.
    gates: (WriteGate, WriteGate),
    liveness: Liveness,
    engine: Engine,
    duties: Option<tokio::task::JoinHandle<()>>,
}

impl Host for Replica {
    fn event(&mut self, event: &Event) {
        let metrics = &self.ctx.metrics;
        match event {
            Event::Acquired(r) => {
                metrics.range_event("acquired", r.len() as usize);
                self.engine.gain(r);
            }
            Event::Draining(r) => {
                metrics.range_event("draining", r.len() as usize);
                self.engine.shed(r);
            }
            Event::Released(r) => metrics.range_event("released", r.len() as usize),
            Event::Lost(r) => {
                metrics.range_event("lost", r.len() as usize);
                self.engine.shed(r);
            }
            Event::LeaderChanged(true) => {
                metrics.set_leader(true);
                let c = self.leader_ctx.clone();
                self.duties = Some(tokio::spawn(crate::blockrequest::run(c)));
            }
            Event::LeaderChanged(false) => {
                metrics.set_leader(false);
                if let Some(d) = self.duties.take() {
                    d.abort();
                }
            }
            Event::DuplicateIdentity { .. } | Event::Stopped => {}
        }
    }

    fn busy(&self, ranges: &RangeSet) -> bool {
        self.engine.busy_in(ranges)
    }

    async fn leaving_for_good(&mut self) -> bool {
        leaving_for_good(&self.ctx).await
    }

    fn lease_write(&self, lease: &'static str, outcome: &'static str) {
        self.ctx.metrics.lease_write(lease, outcome);
    }

    fn handover(&self, took: Duration) {
        self.ctx.metrics.handover(took);
    }

    fn owned(&self, owned: &RangeSet) {
        self.ctx.metrics.set_owned_ranges(owned.len() as usize);
    }

    fn deadlines(&self, work: Option<std::time::Instant>, leader: Option<std::time::Instant>) {
        self.gates.0.set(work);
        self.gates.1.set(leader);
        self.liveness.turn(work);
    }

    fn unclaimed(&self, ranges: u32) {
        self.ctx.metrics.set_unclaimed_ranges(ranges);
    }
}

/// Whether this shutdown is for good (scale-down), so the others should take our ranges at once
/// rather than keep them for our next incarnation (a rolling restart). A StatefulSet scales down
/// by lowering its replica count first, then stopping the highest ordinals.
async fn leaving_for_good(ctx: &Context) -> bool {
    let Some(sts) = &ctx.cfg.statefulset_name else {
        return true;
    };
    let ordinal = ctx
        .cfg
        .identity
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<i32>().ok());
    let api: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(ctx.client.clone(), &ctx.cfg.controller_namespace);
    match (ordinal, api.get(sts).await) {
        (Some(ordinal), Ok(set)) => {
            let replicas = set.spec.and_then(|s| s.replicas).unwrap_or(1);
            ordinal >= replicas
        }
        (None, _) => {
            warn!(identity = %ctx.cfg.identity, "identity has no ordinal: leaving for good");
            true
        }
        (_, Err(e)) => {
            warn!(error = %e, statefulset = %sts, "cannot read the StatefulSet: leaving for good");
            true
        }
    }
}

/// Runs the protocol until `shutdown` fires and everything was handed over.
pub async fn run(
    ctx: Context,
    leader_ctx: Context,
    gates: (WriteGate, WriteGate),
    liveness: Liveness,
    engine: Engine,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Timing flags: client-go's leader-election defaults (15 s / 10 s / 2 s).
    let ranges = ctx.cfg.ranges;
    let instance = format!("{:08x}", rand::random::<u32>());
    let mut config = lease::Config::new(
        ctx.cfg.identity.clone(),
        instance,
        LEASE_PREFIX,
        ranges.get(),
    )?;
    config.lease_duration = ctx.cfg.lease_duration;
    config.renew_deadline = ctx.cfg.renew_deadline;
    config.retry_period = ctx.cfg.retry_period;
    config.member_gc_after = ctx.cfg.member_lease_gc_after;
    config.request_timeout = ctx.cfg.api_timeout;
    ctx.metrics.set_ranges(ranges.get());
    let namespace = ctx.cfg.controller_namespace.clone();
    let client = ctx.client.clone();
    let mut host = Replica {
        ctx,
        leader_ctx,
        gates,
        liveness,
        engine,
        duties: None,
    };
    lease::driver::run(client, &namespace, config, &mut host, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn liveness(started_ago: u64, turn_ago: u64, deadline_ago: Option<i64>) -> Liveness {
        let l = Liveness::new(Duration::from_secs(15));
        let now = std::time::Instant::now();
        {
            let mut s = l.inner.lock().expect("lock");
            s.started = now - Duration::from_secs(started_ago);
            s.last_turn = now - Duration::from_secs(turn_ago);
            s.work_deadline = deadline_ago.map(|a| {
                if a >= 0 {
                    now - Duration::from_secs(a as u64)
                } else {
                    now + Duration::from_secs((-a) as u64)
                }
            });
        }
        l
    }

    #[test]
    fn healthy_while_renewing() {
        assert!(liveness(100, 1, Some(-8)).check().is_ok());
        // Renewals failing, but not for long: still alive (work already stopped).
        assert!(liveness(100, 1, Some(10)).check().is_ok());
        // Just started, not yet a member.
        assert!(liveness(5, 1, None).check().is_ok());
    }

    #[test]
    fn unhealthy_when_stalled_or_not_renewing() {
        assert!(liveness(100, 20, Some(-8)).check().is_err(), "loop stalled");
        assert!(liveness(100, 1, Some(16)).check().is_err(), "not renewed");
        assert!(liveness(50, 1, None).check().is_err(), "never joined");
    }
}
