//! The kube driver of the Lease protocol ([`lease::Machine`]): it feeds the machine the Leases
//! it observes (one label-selected watch over the controller's namespace) and the results of its
//! own writes, performs the writes the machine asks for (create, or update with the expected
//! resourceVersion: compare-and-swap), and turns the machine's events into engine calls:
//!
//! ```text
//!   Acquired(r)  → engine.gain(r): the filter admits r, the watch lists again
//!   Draining(r)  → engine.shed(r), wait until no worker holds a namespace of r → handle_drained
//!   Lost(r)      → engine.shed(r) at once (renew deadline passed)
//!   Leader(b)    → start / stop the singleton duties (BlockRequest intake)
//! ```
//!
//! Every request goes through the controller's client, whose per-request timeout
//! (`--api-timeout`) is the bound the protocol's safety argument needs.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use lease::{
    Event, LeaseKind, LeaseRecord, Machine, Request, RequestId, WriteOutcome, LEAVING_ANNOTATION,
    PREFIX_LABEL,
};
use serde_json::json;
use shard::RangeSet;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::context::Context;
use crate::engine::Engine;

/// Timing of the protocol (client-go's leader-election defaults).
#[derive(Clone, Debug)]
pub struct Timing {
    /// Unrenewed for this long (by the observer's clock): the holder is gone.
    pub lease_duration: Duration,
    /// A holder that could not renew for this long stops all work.
    pub renew_deadline: Duration,
    /// Renew interval.
    pub retry_period: Duration,
}

/// Lease names start with this.
pub const LEASE_PREFIX: &str = "block-controller";

fn micros_to_rfc3339(micros: i64) -> String {
    // A 1.20 API server accepts MicroTime only with exactly six fractional digits.
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    format!("{}.{frac:06}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

fn record_of(lease: &Lease) -> LeaseRecord {
    let mut r = LeaseRecord::new(
        lease.metadata.name.clone().unwrap_or_default(),
        lease.metadata.resource_version.clone().unwrap_or_default(),
    );
    if let Some(spec) = &lease.spec {
        r.holder = spec.holder_identity.clone();
        r.lease_duration_secs = spec.lease_duration_seconds;
        r.renew_time_micros = spec.renew_time.as_ref().map(|t| t.0.as_microsecond());
    }
    r.leaving = lease
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.get(LEAVING_ANNOTATION).is_some_and(|v| v == "true"));
    r
}

fn object_of(namespace: &str, r: &LeaseRecord) -> serde_json::Value {
    let mut metadata = json!({
        "name": r.name,
        "namespace": namespace,
        "labels": { PREFIX_LABEL: LEASE_PREFIX },
        "annotations": { LEAVING_ANNOTATION: if r.leaving { "true" } else { "false" } },
    });
    if !r.resource_version.is_empty() {
        metadata["resourceVersion"] = json!(r.resource_version);
    }
    let mut spec = serde_json::Map::new();
    spec.insert(
        "holderIdentity".into(),
        json!(r.holder.clone().unwrap_or_default()),
    );
    if let Some(d) = r.lease_duration_secs {
        spec.insert("leaseDurationSeconds".into(), json!(d));
    }
    if let Some(t) = r.renew_time_micros {
        spec.insert("renewTime".into(), json!(micros_to_rfc3339(t)));
    }
    json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec })
}

fn outcome_of(result: Result<DynamicObject, kube::Error>) -> WriteOutcome {
    match result {
        Ok(obj) => match serde_json::to_value(&obj).and_then(serde_json::from_value::<Lease>) {
            Ok(lease) => WriteOutcome::Ok(record_of(&lease)),
            Err(_) => WriteOutcome::Failed,
        },
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
            WriteOutcome::AlreadyExists
        }
        Err(kube::Error::Api(s)) if s.code == 409 => WriteOutcome::Conflict,
        Err(kube::Error::Api(s)) if s.code == 404 => WriteOutcome::NotFound,
        Err(_) => WriteOutcome::Failed,
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

/// Runs the protocol until `shutdown` fires and the machine has released everything.
pub async fn run(
    ctx: Context,
    leader_ctx: Context,
    engine: Engine,
    timing: Timing,
    ranges: shard::RangeCount,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ns = ctx.cfg.controller_namespace.clone();
    let origin = std::time::Instant::now();
    let now = move || lease::Instant::from_duration(origin.elapsed());
    let instance = format!("{:08x}", rand::random::<u32>());
    let mut config = lease::Config::new(
        ctx.cfg.identity.clone(),
        instance,
        LEASE_PREFIX,
        ranges.get(),
    )?;
    config.lease_duration = timing.lease_duration;
    config.renew_deadline = timing.renew_deadline;
    config.retry_period = timing.retry_period;
    config.request_timeout = ctx.cfg.api_timeout;
    config.wall_clock_at_origin_micros = chrono::Utc::now().timestamp_micros();
    let mut machine = Machine::new(config, now())?;
    info!(holder = machine.holder_identity(), "joining");

    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ns);
    let raw: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &ns, &ApiResource::erase::<Lease>(&()));
    let watch_cfg = watcher::Config::default().labels(&format!("{PREFIX_LABEL}={LEASE_PREFIX}"));
    let mut stream = watcher::watcher(leases, watch_cfg)
        .default_backoff()
        .boxed();
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<(RequestId, WriteOutcome)>();
    let mut initial: Option<Vec<LeaseRecord>> = None;
    let mut draining: Vec<(RangeSet, std::time::Instant)> = Vec::new();
    ctx.metrics.set_ranges(ranges.get());
    let mut duties: Option<tokio::task::JoinHandle<()>> = None;
    let mut stopping = false;

    loop {
        // Outputs first: writes, then events.
        while let Some(req) = machine.poll_request() {
            let raw = raw.clone();
            let tx = results_tx.clone();
            let ns = ns.clone();
            let lease_name = match &req {
                Request::Create { lease, .. } | Request::Update { lease, .. } => &lease.name,
            };
            let kind = match machine.config().lease_kind(lease_name) {
                Some(LeaseKind::Member(_)) => "member",
                Some(LeaseKind::Range(_)) => "range",
                Some(LeaseKind::Leader) | None => "leader",
            };
            let metrics = ctx.metrics.clone();
            tokio::spawn(async move {
                let (id, result) = match req {
                    Request::Create { id, lease } => {
                        let mut l = lease.clone();
                        l.resource_version.clear();
                        let obj: DynamicObject = match serde_json::from_value(object_of(&ns, &l)) {
                            Ok(o) => o,
                            Err(_) => return,
                        };
                        (id, raw.create(&PostParams::default(), &obj).await)
                    }
                    Request::Update { id, lease } => {
                        let obj: DynamicObject =
                            match serde_json::from_value(object_of(&ns, &lease)) {
                                Ok(o) => o,
                                Err(_) => return,
                            };
                        // Update (PUT) with the expected resourceVersion: compare-and-swap.
                        (
                            id,
                            raw.replace(&lease.name, &PostParams::default(), &obj).await,
                        )
                    }
                };
                let outcome = outcome_of(result);
                metrics.lease_write(
                    kind,
                    match &outcome {
                        WriteOutcome::Ok(_) => "ok",
                        WriteOutcome::Conflict => "conflict",
                        WriteOutcome::AlreadyExists => "exists",
                        WriteOutcome::NotFound => "not_found",
                        WriteOutcome::Failed => "error",
                    },
                );
                let _ = tx.send((id, outcome));
            });
        }
        while let Some(ev) = machine.poll_event() {
            match ev {
                Event::Acquired(r) => {
                    info!(ranges = %r, "acquired");
                    ctx.metrics.range_event("acquired", r.len() as usize);
                    engine.gain(&r);
                }
                Event::Draining(r) => {
                    info!(ranges = %r, "draining");
                    ctx.metrics.range_event("draining", r.len() as usize);
                    engine.shed(&r);
                    draining.push((r, std::time::Instant::now()));
                }
                Event::Released(r) => {
                    info!(ranges = %r, "released");
                    ctx.metrics.range_event("released", r.len() as usize);
                }
                Event::Lost(r) => {
                    warn!(ranges = %r, "lost: stopping all work on them");
                    ctx.metrics.range_event("lost", r.len() as usize);
                    engine.shed(&r);
                }
                Event::LeaderChanged(true) => {
                    info!("leader: starting singleton duties");
                    ctx.metrics.set_leader(true);
                    let c = leader_ctx.clone();
                    duties = Some(tokio::spawn(crate::blockrequest::run(c)));
                }
                Event::LeaderChanged(false) => {
                    info!("no longer leader");
                    ctx.metrics.set_leader(false);
                    if let Some(d) = duties.take() {
                        d.abort();
                    }
                }
                Event::DuplicateIdentity { holder } => {
                    warn!(%holder, "another process holds this identity's member lease; waiting")
                }
                Event::Stopped => {
                    info!("released everything; stopping");
                    return Ok(());
                }
            }
        }
        // Draining ranges are handed back once no worker holds one of their namespaces.
        draining.retain(|(r, since)| {
            if engine.busy_in(r) {
                true
            } else {
                ctx.metrics.handover(since.elapsed());
                machine.handle_drained(now(), r);
                false
            }
        });
        ctx.metrics
            .set_owned_ranges(machine.owned(now()).len() as usize);

        let sleep = machine
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now()))
            .unwrap_or(Duration::from_secs(1));
        // While draining, look again soon.
        let sleep = if draining.is_empty() {
            sleep
        } else {
            sleep.min(Duration::from_millis(20))
        };
        tokio::select! {
            ev = stream.try_next() => match ev {
                Ok(Some(WatchEvent::Init)) => initial = Some(Vec::new()),
                Ok(Some(WatchEvent::InitApply(l))) => {
                    if let Some(v) = initial.as_mut() { v.push(record_of(&l)); }
                }
                Ok(Some(WatchEvent::InitDone)) => {
                    if let Some(v) = initial.take() { machine.handle_list(now(), v); }
                }
                Ok(Some(WatchEvent::Apply(l))) => machine.handle_observed(now(), record_of(&l)),
                Ok(Some(WatchEvent::Delete(l))) => machine.handle_deleted(now(), &l.metadata.name.unwrap_or_default()),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "lease watch error"),
            },
            Some((id, outcome)) = results_rx.recv() => machine.handle_write_result(now(), id, outcome),
            _ = tokio::time::sleep(sleep) => machine.handle_timeout(now()),
            changed = shutdown.changed(), if !stopping => {
                if changed.is_err() || *shutdown.borrow() {
                    let leaving = leaving_for_good(&ctx).await;
                    info!(leaving, "shutting down: handing ranges over");
                    stopping = true;
                    machine.set_leaving(now(), leaving);
                    machine.shutdown(now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_time_has_six_digits() {
        assert_eq!(
            micros_to_rfc3339(1_800_000_000_000_001),
            "2027-01-15T08:00:00.000001Z"
        );
        assert_eq!(
            micros_to_rfc3339(1_800_000_000_120_000),
            "2027-01-15T08:00:00.120000Z"
        );
    }

    #[test]
    fn records_round_trip_through_lease_objects() {
        let mut r = LeaseRecord::new("block-controller-range-7", "42");
        r.holder = Some("block-controller-1_abc".into());
        r.lease_duration_secs = Some(15);
        r.renew_time_micros = Some(1_800_000_000_000_001);
        r.leaving = true;
        let lease: Lease = serde_json::from_value(object_of("block-system", &r)).expect("lease");
        assert_eq!(record_of(&lease), r);
    }
}
