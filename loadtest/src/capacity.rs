//! Raw capacity of the API server: the calls the controller makes to lock and unlock a namespace
//! without workloads, issued directly by the load generator at a fixed concurrency for a fixed
//! time against scratch namespaces (no status label, so no controller touches them). The
//! controller's burst throughput is then stated as a ratio of this.
//!
//! Lock flow (10 calls): patch the namespace (unlock time), create the quota, list Deployments,
//! StatefulSets, ReplicaSets, ReplicationControllers, CronJobs and Pods (concurrently), patch the
//! namespace (marker), create an Event. Unlock flow (8 calls): delete the quota, list the five
//! workload kinds (concurrently), patch the namespace, create an Event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ReplicationController, ResourceQuota};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::json;

use crate::names::{LOCKED_AT, ROLE_LABEL, UNLOCK_AT};
use crate::progress::Progress;
use crate::stats::Summary;

/// What the raw run achieved.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Capacity {
    pub seconds: f64,
    pub concurrency: usize,
    pub namespaces: usize,
    pub lock_flows: u64,
    pub unlock_flows: u64,
    pub calls: u64,
    pub errors: u64,
    /// Lock + unlock flows per second.
    pub flows_per_second: f64,
    pub calls_per_second: f64,
    /// Lock flow duration (ms): p50, p90, p99, max.
    pub lock_flow_ms: [f64; 4],
    /// The first failed call, if any.
    pub first_error: Option<String>,
}

const QUOTA: &str = "block-controller-quota";

struct Ctx {
    client: kube::Client,
    cronjobs: ApiResource,
    calls: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Ctx {
    fn count<T, E: std::fmt::Display>(&self, r: Result<T, E>) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &r {
            if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                *self.first_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        }
        r.is_ok()
    }

    async fn lists(&self, ns: &str, with_pods: bool) {
        let lp = ListParams::default().limit(50);
        let c = &self.client;
        let (da, sa, ra, rca, ca) = (
            Api::<Deployment>::namespaced(c.clone(), ns),
            Api::<StatefulSet>::namespaced(c.clone(), ns),
            Api::<ReplicaSet>::namespaced(c.clone(), ns),
            Api::<ReplicationController>::namespaced(c.clone(), ns),
            Api::<DynamicObject>::namespaced_with(c.clone(), ns, &self.cronjobs),
        );
        let (a, b, d, e, f) = tokio::join!(
            da.list(&lp),
            sa.list(&lp),
            ra.list(&lp),
            rca.list(&lp),
            ca.list(&lp),
        );
        self.count(a);
        self.count(b);
        self.count(d);
        self.count(e);
        self.count(f);
        if with_pods {
            let p = Api::<Pod>::namespaced(c.clone(), ns).list(&lp).await;
            self.count(p);
        }
    }

    async fn event(&self, ns: &str, reason: &str) {
        let ev: Event = serde_json::from_value(json!({
            "metadata": { "generateName": "loadtest-capacity-" },
            "involvedObject": { "kind": "Namespace", "name": ns, "namespace": ns, "apiVersion": "v1" },
            "reason": reason, "message": "raw capacity probe", "type": "Normal",
            "source": { "component": "loadtest" },
        }))
        .expect("static event");
        let r = Api::<Event>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &ev)
            .await;
        self.count(r);
    }

    async fn lock(&self, ns: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let pp = PatchParams::default();
        let p1 = json!({ "metadata": { "annotations": { UNLOCK_AT: "2099-01-01T00:00:00Z" } } });
        let r = api.patch(ns, &pp, &Patch::Merge(&p1)).await;
        self.count(r);
        let hard: serde_json::Map<String, serde_json::Value> = [
            "pods",
            "services",
            "replicationcontrollers",
            "secrets",
            "configmaps",
            "persistentvolumeclaims",
            "services.nodeports",
            "services.loadbalancers",
            "requests.cpu",
            "requests.memory",
            "limits.cpu",
            "limits.memory",
        ]
        .iter()
        .map(|k| (k.to_string(), json!("0")))
        .collect();
        let q: ResourceQuota = serde_json::from_value(json!({
            "metadata": { "name": QUOTA }, "spec": { "hard": hard }
        }))
        .expect("static quota");
        let r = Api::<ResourceQuota>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &q)
            .await;
        self.count(r);
        self.lists(ns, true).await;
        let p2 = json!({ "metadata": { "annotations": { LOCKED_AT: "2026-01-01T00:00:00Z" } } });
        let r = api.patch(ns, &pp, &Patch::Merge(&p2)).await;
        self.count(r);
        self.event(ns, "NamespaceLocked").await;
    }

    async fn unlock(&self, ns: &str) {
        let r = Api::<ResourceQuota>::namespaced(self.client.clone(), ns)
            .delete(QUOTA, &DeleteParams::default())
            .await;
        self.count(r);
        self.lists(ns, false).await;
        let api: Api<Namespace> = Api::all(self.client.clone());
        let p = json!({ "metadata": { "annotations": { UNLOCK_AT: null, LOCKED_AT: null } } });
        let r = api
            .patch(ns, &PatchParams::default(), &Patch::Merge(&p))
            .await;
        self.count(r);
        self.event(ns, "NamespaceUnlocked").await;
    }
}

/// Creates `count` scratch namespaces (existing ones are reused) and runs the flows at
/// `concurrency` for `duration`.
pub async fn measure(
    client: &kube::Client,
    cronjobs: ApiResource,
    prefix: &str,
    count: usize,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Capacity> {
    let count = count.max(concurrency);
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-cap-{i:05}")).collect();
    let progress = Progress::new(count as u64, "scratch namespaces");
    futures::stream::iter(names.iter())
        .for_each_concurrent(32, |n| {
            let ns_api = ns_api.clone();
            let progress = progress.clone();
            async move {
                let ns: Namespace = serde_json::from_value(json!({
                    "metadata": { "name": n, "labels": { ROLE_LABEL: "scratch" } }
                }))
                .expect("static namespace");
                let _ = ns_api.create(&PostParams::default(), &ns).await;
                // Start from the unlocked state (a previous run may have stopped mid-flow).
                let _ = Api::<ResourceQuota>::namespaced(ns_api.clone().into_client(), n)
                    .delete(QUOTA, &DeleteParams::default())
                    .await;
                progress.inc();
            }
        })
        .await;
    progress.finish();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cronjobs,
        calls: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let t0 = Instant::now();
    let end = t0 + duration;
    let progress = Progress::new(duration.as_secs(), "raw capacity (seconds)");
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress.set(t0.elapsed().as_secs());
            }
        })
    };
    let per_worker: Vec<Vec<String>> = (0..concurrency)
        .map(|w| names.iter().skip(w).step_by(concurrency).cloned().collect())
        .collect();
    let results = futures::future::join_all(per_worker.into_iter().map(|mine| {
        let ctx = ctx.clone();
        async move {
            let (mut locks, mut unlocks, mut lat) = (0u64, 0u64, Vec::new());
            let mut i = 0;
            // Lock then unlock each namespace in turn: the mix of a burst and its undo.
            while Instant::now() < end && !mine.is_empty() {
                let ns = &mine[i % mine.len()];
                let s = Instant::now();
                ctx.lock(ns).await;
                lat.push(s.elapsed());
                locks += 1;
                if Instant::now() >= end {
                    break;
                }
                ctx.unlock(ns).await;
                unlocks += 1;
                i += 1;
            }
            (locks, unlocks, lat)
        }
    }))
    .await;
    ticker.abort();
    progress.finish();
    let seconds = t0.elapsed().as_secs_f64();
    let lock_flows: u64 = results.iter().map(|r| r.0).sum();
    let unlock_flows: u64 = results.iter().map(|r| r.1).sum();
    let lat: Vec<Duration> = results.into_iter().flat_map(|r| r.2).collect();
    let s = Summary::of(&lat);
    let calls = ctx.calls.load(Ordering::Relaxed);
    let first_error = ctx
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(Capacity {
        seconds,
        concurrency,
        namespaces: count,
        lock_flows,
        unlock_flows,
        calls,
        errors: ctx.errors.load(Ordering::Relaxed),
        flows_per_second: (lock_flows + unlock_flows) as f64 / seconds,
        calls_per_second: calls as f64 / seconds,
        lock_flow_ms: [s.p50, s.p90, s.p99, s.max].map(|d| d.as_secs_f64() * 1000.0),
        first_error,
    })
}
