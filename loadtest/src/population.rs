//! The namespaces under test: `N` of them with realistic labels, a fraction holding workloads,
//! created at a bounded rate and resumable (what exists, found by the population label, is
//! skipped; a namespace whose workloads were not all created is finished).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::names::{POPULATION_LABEL, ROLE_LABEL, STATUS_LABEL, WORKLOADS_LABEL};
use crate::progress::Progress;

/// Shape of the population.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Name prefix and value of the population label.
    pub prefix: String,
    pub namespaces: usize,
    /// Fraction holding a Deployment, a StatefulSet, a CronJob and a bare pod.
    pub workload_fraction: f64,
    /// Fraction labelled `clawcloud.run/status=active` (managed); the rest carry no status label.
    pub active_fraction: f64,
}

/// A deterministic pseudo-random number in `[0, 1)` for index `i` and stream `salt`.
pub fn unit(i: usize, salt: u64) -> f64 {
    let mut x = (i as u64 ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(salt);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Shape {
    /// Name of namespace `i`.
    pub fn name(&self, i: usize) -> String {
        format!("{}-{i:06}", self.prefix)
    }

    /// Whether namespace `i` holds workloads.
    pub fn has_workloads(&self, i: usize) -> bool {
        unit(i, 1) < self.workload_fraction
    }

    /// The label selector of the population.
    pub fn selector(&self) -> String {
        format!("{POPULATION_LABEL}={}", self.prefix)
    }

    fn namespace(&self, i: usize) -> Namespace {
        let mut labels = serde_json::Map::new();
        labels.insert(POPULATION_LABEL.into(), json!(self.prefix));
        labels.insert(ROLE_LABEL.into(), json!("population"));
        // Realistic labels of a multi-tenant platform: team, owner, plan, region.
        labels.insert("team".into(), json!(format!("team-{}", i % 997)));
        labels.insert("owner".into(), json!(format!("user-{}", (i * 7) % 20011)));
        let plan = match unit(i, 3) {
            p if p < 0.7 => "free",
            p if p < 0.95 => "pro",
            _ => "enterprise",
        };
        labels.insert("clawcloud.run/plan".into(), json!(plan));
        labels.insert(
            "topology.clawcloud.run/region".into(),
            json!(["eu-west", "us-east", "ap-south"][i % 3]),
        );
        if unit(i, 2) < self.active_fraction {
            labels.insert(STATUS_LABEL.into(), json!("active"));
        }
        if self.has_workloads(i) {
            labels.insert(WORKLOADS_LABEL.into(), json!("pending"));
        }
        serde_json::from_value(json!({
            "metadata": {
                "name": self.name(i),
                "labels": labels,
                "annotations": { "clawcloud.run/created-by": "loadtest" },
            }
        }))
        .expect("static namespace shape")
    }
}

/// The API resource of CronJobs on this server (`batch/v1` from 1.21, `batch/v1beta1` before).
pub async fn cronjob_resource(client: &kube::Client) -> anyhow::Result<ApiResource> {
    let group = kube::discovery::group(client, "batch")
        .await
        .context("discovering the batch group")?;
    for version in ["v1", "v1beta1"] {
        if let Some((ar, _)) = group
            .versioned_resources(version)
            .into_iter()
            .find(|(ar, _)| ar.kind == "CronJob")
        {
            return Ok(ar);
        }
    }
    anyhow::bail!("this server serves no CronJob kind")
}

fn ok_or_exists<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the workloads of namespace `ns`: a Deployment and a StatefulSet of one replica each,
/// a CronJob, a bare pod. Existing objects are fine.
pub async fn create_workloads(
    client: &kube::Client,
    cronjobs: &ApiResource,
    ns: &str,
) -> Result<(), kube::Error> {
    let pp = PostParams::default();
    let container = json!([{ "name": "app", "image": "registry.example/app:1.0",
        "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } } }]);
    let dep: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web", "labels": { "app": "web" } },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "web" } },
                  "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": container } } }
    }))
    .expect("static deployment");
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": "db", "labels": { "app": "db" } },
        "spec": { "replicas": 1, "serviceName": "db", "selector": { "matchLabels": { "app": "db" } },
                  "template": { "metadata": { "labels": { "app": "db" } }, "spec": { "containers": container } } }
    }))
    .expect("static statefulset");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "debug" },
        "spec": { "containers": container }
    }))
    .expect("static pod");
    let mut cj = DynamicObject::new("backup", cronjobs).within(ns);
    cj.data = json!({ "spec": { "schedule": "0 3 * * *", "suspend": false,
        "jobTemplate": { "spec": { "template": { "spec": { "restartPolicy": "Never", "containers": container } } } } } });
    let (da, sa, pa, ca) = (
        Api::<Deployment>::namespaced(client.clone(), ns),
        Api::<StatefulSet>::namespaced(client.clone(), ns),
        Api::<Pod>::namespaced(client.clone(), ns),
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, cronjobs),
    );
    let (a, b, c, d) = tokio::join!(
        da.create(&pp, &dep),
        sa.create(&pp, &sts),
        pa.create(&pp, &pod),
        ca.create(&pp, &cj),
    );
    ok_or_exists(a)?;
    ok_or_exists(b)?;
    ok_or_exists(c)?;
    ok_or_exists(d)?;
    Ok(())
}

/// What exists of the population: name → whether its workloads are still pending.
pub async fn existing(
    client: &kube::Client,
    shape: &Shape,
) -> anyhow::Result<HashMap<String, bool>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut out = HashMap::new();
    let mut lp = ListParams::default()
        .labels(&format!("{},{ROLE_LABEL}=population", shape.selector()))
        .limit(1000);
    loop {
        let page = api
            .list_metadata(&lp)
            .await
            .context("listing the population")?;
        for m in page.items {
            let pending = m
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(WORKLOADS_LABEL))
                .is_some_and(|v| v == "pending");
            if m.metadata.deletion_timestamp.is_none() {
                out.insert(m.metadata.name.unwrap_or_default(), pending);
            }
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    Ok(out)
}

/// What the creation did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Created {
    pub existing: usize,
    pub created: usize,
    pub workload_namespaces_finished: usize,
    pub seconds: f64,
    pub failures: usize,
}

/// Creates what is missing of the population at `rate` namespaces per second.
pub async fn ensure(
    client: &kube::Client,
    shape: &Shape,
    rate: f64,
    concurrency: usize,
) -> anyhow::Result<Created> {
    let t0 = std::time::Instant::now();
    let have = existing(client, shape).await?;
    let cronjobs = cronjob_resource(client).await?;
    let todo: Vec<usize> = (0..shape.namespaces)
        .filter(|&i| {
            have.get(&shape.name(i))
                .is_none_or(|&pending| pending && shape.has_workloads(i))
        })
        .collect();
    eprintln!(
        "population {}: {} of {} namespaces exist; creating or finishing {} at ≤ {rate}/s",
        shape.prefix,
        have.len(),
        shape.namespaces,
        todo.len()
    );
    let progress = Progress::new(todo.len() as u64, "namespaces (+ workloads)");
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ticker = Arc::new(tokio::sync::Mutex::new(ticker));
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let results: Vec<(bool, bool, bool)> = futures::stream::iter(todo)
        .map(|i| {
            let ticker = ticker.clone();
            let ns_api = ns_api.clone();
            let client = client.clone();
            let cronjobs = cronjobs.clone();
            let progress = progress.clone();
            let exists = have.contains_key(&shape.name(i));
            async move {
                ticker.lock().await.tick().await;
                let name = shape.name(i);
                let mut ok = true;
                if !exists {
                    ok = ok_or_exists(
                        ns_api
                            .create(&PostParams::default(), &shape.namespace(i))
                            .await,
                    )
                    .is_ok();
                }
                let mut finished = false;
                if ok && shape.has_workloads(i) {
                    ok = create_workloads(&client, &cronjobs, &name).await.is_ok();
                    if ok {
                        let patch =
                            json!({ "metadata": { "labels": { WORKLOADS_LABEL: "ready" } } });
                        ok = ns_api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .is_ok();
                        finished = ok;
                    }
                }
                progress.inc();
                (ok, !exists && ok, finished)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    progress.finish();
    let created = Created {
        existing: have.len(),
        created: results.iter().filter(|r| r.1).count(),
        workload_namespaces_finished: results.iter().filter(|r| r.2).count(),
        failures: results.iter().filter(|r| !r.0).count(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    if created.failures > 0 {
        eprintln!(
            "  {} namespaces failed to be created; re-run to finish them",
            created.failures
        );
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_hold_roughly_and_names_sort() {
        let shape = Shape {
            prefix: "p".into(),
            namespaces: 10_000,
            workload_fraction: 0.05,
            active_fraction: 0.9,
        };
        let w = (0..10_000).filter(|&i| shape.has_workloads(i)).count();
        assert!((400..600).contains(&w), "{w}");
        let a = (0..10_000).filter(|&i| unit(i, 2) < 0.9).count();
        assert!((8800..9200).contains(&a), "{a}");
        assert!(shape.name(9) < shape.name(10));
        let ns = shape.namespace(1);
        assert_eq!(
            ns.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(POPULATION_LABEL))
                .map(String::as_str),
            Some("p")
        );
    }
}
