//! The thin kube driver of the protocol (feature `kube`): one label-selected watch over the
//! protocol's Leases feeds [`Machine`]; the writes it asks for are sent as creates or as
//! updates carrying the expected resourceVersion (compare-and-swap, never a patch); its events
//! go to the [`Host`], the program that does the work on the ranges:
//!
//! ```text
//!   Acquired(r)  → host: start intake of r (list its namespaces, index them)
//!   Draining(r)  → host: stop intake of r; once host.busy(r) is false → handle_drained
//!   Lost(r)      → host: stop all work on r at once (renew deadline passed)
//!   Leader(b)    → host: start / stop singleton duties
//! ```
//!
//! The driver owns no policy: timing comes from [`Config`]. Every request must go through a
//! client whose per-request timeout is at most [`Config::request_timeout`]: the safety
//! argument (see the crate README) bounds how late a write may land by it.

use std::future::Future;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use serde_json::json;
use shard::RangeSet;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    Config, ConfigError, Event, LeaseKind, LeaseRecord, Machine, Request, RequestId, WriteOutcome,
    LEAVING_ANNOTATION, PREFIX_LABEL,
};

/// What the driver needs from the program it coordinates.
pub trait Host {
    /// A protocol event, in order. [`Event::Draining`] ranges are reported drained by the
    /// driver once [`Host::busy`] says so; [`Event::Stopped`] ends [`run`].
    fn event(&mut self, event: &Event);
    /// Whether work on any of `ranges` is still in flight.
    fn busy(&self, ranges: &RangeSet) -> bool;
    /// On shutdown: whether this member leaves for good (scale-down: the others take its
    /// ranges at once) or will be back (rolling restart: they wait for it a while).
    fn leaving_for_good(&mut self) -> impl Future<Output = bool> + Send;
    /// A Lease write finished (`lease`: member, range or leader; `outcome`: ok, conflict,
    /// exists, not_found or error). For metrics.
    fn lease_write(&self, _lease: &'static str, _outcome: &'static str) {}
    /// A handover drained after `took`. For metrics.
    fn handover(&self, _took: Duration) {}
    /// The ranges workable now, after every input. For metrics.
    fn owned(&self, _owned: &RangeSet) {}
    /// After every input: until when this member may work on its ranges
    /// ([`Machine::work_deadline`]) and act as leader ([`Machine::leader_deadline`]), on the
    /// process's monotonic clock; `None`: not at all. A host gates its writes on these, so a
    /// request already under way when the deadline passes (a paused process waking up) is
    /// not sent after it.
    fn deadlines(&self, _work: Option<std::time::Instant>, _leader: Option<std::time::Instant>) {}
    /// Ranges nobody may work on, as this member sees them ([`Machine::unclaimed`]); at most
    /// once a second. For metrics and alerts.
    fn unclaimed(&self, _ranges: u32) {}
}

/// Why [`run`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The protocol configuration is invalid.
    #[error("lease protocol configuration: {0}")]
    Config(#[from] ConfigError),
}

/// Formats Unix microseconds as a Lease `MicroTime`. A 1.20 API server accepts exactly six
/// fractional digits.
fn micro_time(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    format!("{}.{frac:06}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// The machine's view of a Lease object.
pub fn record_of(lease: &Lease) -> LeaseRecord {
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

/// The Lease object of a record (`prefix` labels it for the protocol's watch).
pub fn object_of(namespace: &str, prefix: &str, r: &LeaseRecord) -> serde_json::Value {
    let mut metadata = json!({
        "name": r.name,
        "namespace": namespace,
        "labels": { PREFIX_LABEL: prefix },
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
        spec.insert("renewTime".into(), json!(micro_time(t)));
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

fn outcome_label(outcome: &WriteOutcome) -> &'static str {
    match outcome {
        WriteOutcome::Ok(_) => "ok",
        WriteOutcome::Conflict => "conflict",
        WriteOutcome::AlreadyExists => "exists",
        WriteOutcome::NotFound => "not_found",
        WriteOutcome::Failed => "error",
    }
}

/// Sends one write and returns its outcome.
async fn send(
    api: Api<DynamicObject>,
    namespace: String,
    prefix: String,
    req: Request,
) -> (RequestId, WriteOutcome) {
    let (id, create, lease) = match req {
        Request::Create { id, lease } => (id, true, lease),
        Request::Update { id, lease } => (id, false, lease),
        Request::Delete { id, lease } => {
            // Delete with the version seen as a precondition: compare-and-delete.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: Some(lease.resource_version.clone()),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            let outcome = match api.delete(&lease.name, &params).await {
                Ok(_) => WriteOutcome::Ok(LeaseRecord::new(lease.name, "")),
                Err(e) => outcome_of(Err(e)),
            };
            return (id, outcome);
        }
    };
    let mut record = lease;
    if create {
        record.resource_version.clear();
    }
    let obj: DynamicObject = match serde_json::from_value(object_of(&namespace, &prefix, &record)) {
        Ok(o) => o,
        Err(_) => return (id, WriteOutcome::Failed),
    };
    let result = if create {
        api.create(&PostParams::default(), &obj).await
    } else {
        // Update (PUT) with the expected resourceVersion: compare-and-swap.
        api.replace(&record.name, &PostParams::default(), &obj)
            .await
    };
    (id, outcome_of(result))
}

/// Runs the protocol in `namespace` until `shutdown` turns true (or its sender is dropped) and
/// the machine has released everything.
pub async fn run<H: Host>(
    client: kube::Client,
    namespace: &str,
    mut config: Config,
    host: &mut H,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), DriverError> {
    let origin = std::time::Instant::now();
    config.wall_clock_at_origin_micros = chrono::Utc::now().timestamp_micros();
    let now = move || crate::Instant::from_duration(origin.elapsed());
    let prefix = config.prefix.clone();
    let mut machine = Machine::new(config, now())?;
    info!(holder = machine.holder_identity(), "joining");

    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client, namespace, &ApiResource::erase::<Lease>(&()));
    let watch_cfg = watcher::Config::default().labels(&format!("{PREFIX_LABEL}={prefix}"));
    let mut stream = watcher::watcher(leases, watch_cfg)
        .default_backoff()
        .boxed();
    let (results_tx, mut results_rx) =
        mpsc::unbounded_channel::<(RequestId, WriteOutcome, &'static str)>();
    let mut initial: Option<Vec<LeaseRecord>> = None;
    let mut draining: Vec<(RangeSet, std::time::Instant)> = Vec::new();
    let mut stopping = false;
    let mut last_unclaimed = origin;

    loop {
        // Outputs first: writes, then events.
        while let Some(req) = machine.poll_request() {
            let lease_name = match &req {
                Request::Create { lease, .. }
                | Request::Update { lease, .. }
                | Request::Delete { lease, .. } => &lease.name,
            };
            let kind = match machine.config().lease_kind(lease_name) {
                Some(LeaseKind::Member(_)) => "member",
                Some(LeaseKind::Range(_)) => "range",
                Some(LeaseKind::Leader) | None => "leader",
            };
            let write = send(raw.clone(), namespace.to_string(), prefix.clone(), req);
            let tx = results_tx.clone();
            tokio::spawn(async move {
                let (id, outcome) = write.await;
                let _ = tx.send((id, outcome, kind));
            });
        }
        while let Some(ev) = machine.poll_event() {
            match &ev {
                Event::Acquired(r) => info!(ranges = %r, "acquired"),
                Event::Draining(r) => {
                    info!(ranges = %r, "draining");
                    draining.push((r.clone(), std::time::Instant::now()));
                }
                Event::Released(r) => info!(ranges = %r, "released"),
                Event::Lost(r) => warn!(ranges = %r, "lost: stopping all work on them"),
                Event::LeaderChanged(leader) => info!(leader, "leadership changed"),
                Event::DuplicateIdentity { holder } => {
                    warn!(%holder, "another process holds this identity's member lease; waiting")
                }
                Event::Stopped => info!("released everything; stopping"),
            }
            host.event(&ev);
            if ev == Event::Stopped {
                return Ok(());
            }
        }
        // Draining ranges are handed back once no work on them is in flight.
        draining.retain(|(r, since)| {
            if host.busy(r) {
                true
            } else {
                host.handover(since.elapsed());
                machine.handle_drained(now(), r);
                false
            }
        });
        host.owned(&machine.owned(now()));
        let to_std = |t: crate::Instant| origin + Duration::from_nanos(t.as_nanos());
        host.deadlines(
            machine.work_deadline().map(to_std),
            machine.leader_deadline().map(to_std),
        );
        if last_unclaimed.elapsed() >= Duration::from_secs(1) {
            host.unclaimed(machine.unclaimed(now()));
            last_unclaimed = std::time::Instant::now();
        }

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
                Ok(Some(WatchEvent::Delete(l))) => {
                    machine.handle_deleted(now(), &l.metadata.name.unwrap_or_default())
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "lease watch error"),
            },
            Some((id, outcome, kind)) = results_rx.recv() => {
                host.lease_write(kind, outcome_label(&outcome));
                machine.handle_write_result(now(), id, outcome)
            }
            _ = tokio::time::sleep(sleep) => machine.handle_timeout(now()),
            changed = shutdown.changed(), if !stopping => {
                if changed.is_err() || *shutdown.borrow() {
                    let leaving = host.leaving_for_good().await;
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
            micro_time(1_800_000_000_000_001),
            "2027-01-15T08:00:00.000001Z"
        );
        assert_eq!(
            micro_time(1_800_000_000_120_000),
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
        let lease: Lease =
            serde_json::from_value(object_of("block-system", "block-controller", &r))
                .expect("lease");
        assert_eq!(record_of(&lease), r);
    }
}
