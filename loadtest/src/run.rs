//! `loadtest run`: the full profile. Creates (or resumes) the population, starts R replicas, runs
//! the scenarios in order, checks that no work was lost and that no two replicas wrote the same
//! namespace within one ownership epoch (audit log), measures the server's raw capacity, and
//! writes `result.json`, `report.md` and SVG charts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::json;

use crate::cluster::Cluster;
use crate::fleet::{identity, Fleet, Ownership, Waited};
use crate::names::*;
use crate::population::{self, unit, Shape};
use crate::progress::Progress;
use crate::sampler::{self, ReplicaSample, Sample, Sampler};
use crate::stats::Summary;
use crate::tracker::{Tracker, Want};

/// Scenarios, in the order they run.
pub const ALL_SCENARIOS: &[&str] = &[
    "idle",
    "burst",
    "blockrequest",
    "expiry",
    "scale",
    "kill",
    "restart",
    "capacity",
];

/// Flags of `loadtest run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Namespaces in the population.
    #[arg(long, default_value_t = 100_000)]
    pub namespaces: usize,
    /// Controller replicas started as processes (local mode, or KUBECONFIG without --external-replicas).
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Fraction of namespaces holding a Deployment, a StatefulSet, a CronJob and a bare pod.
    #[arg(long, default_value_t = 0.05)]
    pub workload_fraction: f64,
    /// Fraction labelled `clawcloud.run/status=active` (managed) at creation; the rest carry no
    /// status label.
    #[arg(long, default_value_t = 0.9)]
    pub active_fraction: f64,
    /// Population name: namespace name prefix and value of `loadtest.clawcloud.run/population`.
    #[arg(long, default_value = "ltns")]
    pub population: String,
    /// Namespace creations per second (upper bound).
    #[arg(long, default_value_t = 600.0)]
    pub create_rate: f64,
    /// Concurrent creations.
    #[arg(long, default_value_t = 32)]
    pub create_concurrency: usize,
    /// `--ranges` of the replicas (also used by the audit check).
    #[arg(long, default_value_t = 256)]
    pub ranges: u32,
    /// The controller's namespace (Leases).
    #[arg(long, default_value = "block-system")]
    pub controller_namespace: String,
    /// Comma-separated scenarios to run (in the fixed order): idle, burst, blockrequest, expiry,
    /// scale, kill, restart, capacity.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,burst,blockrequest,expiry,scale,kill,restart,capacity"
    )]
    pub scenarios: Vec<String>,
    /// Length of the idle period.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// Fraction of the population locked (then unlocked) at once through labels.
    #[arg(long, default_value_t = 0.05)]
    pub burst_fraction: f64,
    /// Namespaces named by the one big BlockRequest.
    #[arg(long, default_value_t = 10_000)]
    pub blockrequest_size: usize,
    /// Namespaces created locked with a short `core.clawcloud.run/lock-duration`, to expire.
    #[arg(long, default_value_t = 500)]
    pub expiry_count: usize,
    /// Their lock duration (Go syntax, as the annotation takes it).
    #[arg(long, default_value = "60s")]
    pub expiry_after: String,
    /// Locks/unlocks per second kept flowing during scale, kill and restart.
    #[arg(long, default_value_t = 5.0)]
    pub trickle_rate: f64,
    /// Namespaces the trickle flips.
    #[arg(long, default_value_t = 200)]
    pub trickle_namespaces: usize,
    /// Concurrent label writes of a burst.
    #[arg(long, default_value_t = 64)]
    pub write_concurrency: usize,
    /// How long any one scenario may wait for its work to complete before it counts as lost.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub scenario_timeout: Duration,
    /// Give up on a scenario's outstanding work (counted as lost) when nothing completed for
    /// this long.
    #[arg(long, default_value = "4m", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,
    /// Raw capacity: how long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub capacity_duration: Duration,
    /// Raw capacity: concurrent flows.
    #[arg(long, default_value_t = 128)]
    pub capacity_concurrency: usize,
    /// Sampling interval of metrics and RSS.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// Output folder (result.json, report.md, *.svg).
    #[arg(long, default_value = "loadtest-results")]
    pub out: PathBuf,
    /// KUBECONFIG mode: the replicas run in the cluster; do not start any. Their metrics are
    /// read from 127.0.0.1:<port> (`kubectl port-forward`), if given.
    #[arg(long)]
    pub external_replicas: bool,
    /// Local ports of the external replicas' /metrics (repeat).
    #[arg(long)]
    pub replica_metrics_port: Vec<u16>,
    /// The API server's audit log (KUBECONFIG mode; a local control plane's is found itself).
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Only create (or finish) the population, then exit (KUBECONFIG mode: prepare a cluster
    /// once for several runs).
    #[arg(long)]
    pub populate_only: bool,
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Ms {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Ms {
    fn of(d: &[Duration]) -> Ms {
        let s = Summary::of(d);
        let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        Ms {
            p50: ms(s.p50),
            p90: ms(s.p90),
            p99: ms(s.p99),
            max: ms(s.max),
        }
    }
}

/// One measured step of a scenario.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Step {
    pub name: String,
    pub targets: usize,
    pub completed: usize,
    pub lost: usize,
    /// Up to 20 of the lost names.
    pub lost_sample: Vec<String>,
    /// Event-to-done latency.
    pub latency_ms: Ms,
    /// Seconds from the first write to the last completion.
    pub seconds: f64,
    /// Completions per second over `seconds`.
    pub throughput_per_s: f64,
    /// Seconds spent issuing the writes.
    pub write_seconds: f64,
    /// Controller API calls during the step, by verb (all replicas).
    pub controller_calls: BTreeMap<String, f64>,
    /// API server requests during the step, by verb (every client).
    pub apiserver_calls: BTreeMap<String, f64>,
    /// Free-form figures (expiry lateness, BlockRequest status, ...).
    pub notes: Vec<String>,
}

/// One fault or scaling event.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Fault {
    pub name: String,
    pub what: String,
    /// Seconds until the condition (`until`) held.
    pub waited: Waited,
    pub until: String,
    pub notes: Vec<String>,
}

/// Idle figures per replica.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Idle {
    pub seconds: f64,
    /// identity → verb → calls per minute.
    pub per_replica_per_minute: BTreeMap<String, BTreeMap<String, f64>>,
    /// API server, every client, by verb, per minute.
    pub apiserver_per_minute: BTreeMap<String, f64>,
    /// Controller mutating requests per minute by replica, from the audit log (user agent).
    pub audit_per_minute: BTreeMap<String, f64>,
    pub window: (f64, f64),
}

/// Memory of one replica.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Memory {
    pub identity: String,
    pub after_start_mib: Option<f64>,
    pub peak_mib: f64,
    pub last_mib: Option<f64>,
}

/// The audit-log check.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Audit {
    pub available: bool,
    pub entries: usize,
    pub writes_checked: usize,
    pub leader_writes: usize,
    pub epochs: usize,
    pub writes_by_replica: BTreeMap<String, usize>,
    pub violations: usize,
    pub violation_sample: Vec<String>,
    /// Controller mutating requests by replica and verb over the run (user agent).
    pub controller_writes: BTreeMap<String, BTreeMap<String, usize>>,
    pub note: String,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Results {
    pub command: String,
    pub started: String,
    pub machine: BTreeMap<String, String>,
    pub server_version: String,
    pub mode: String,
    pub namespaces: usize,
    pub replicas: u32,
    pub ranges: u32,
    pub workload_fraction: f64,
    pub controller_args: Vec<String>,
    pub population: population::Created,
    pub startup_seconds: f64,
    pub startup_calls: BTreeMap<String, f64>,
    pub idle: Option<Idle>,
    pub steps: Vec<Step>,
    pub faults: Vec<Fault>,
    pub capacity: Option<crate::capacity::Capacity>,
    pub memory: Vec<Memory>,
    pub audit: Audit,
    /// Namespaces whose final state disagrees with their label (lost work).
    pub final_mismatches: Vec<String>,
    pub workload_restore_failures: Vec<String>,
    pub crashed_replicas: Vec<String>,
    pub phases: Vec<(f64, f64, String)>,
    /// ∫ (ranges − Σ owned) dt over the whole run from the background samples, range-seconds.
    pub unowned_range_seconds_total: f64,
    pub total_seconds: f64,
    pub passed: bool,
    pub failures: Vec<String>,
    /// Downsampled samples (every 5 s).
    pub samples: Vec<Sample>,
}

fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_default(),
    );
    if let Ok(info) = std::fs::read_to_string("/proc/meminfo") {
        if let Some(kb) = info
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
        {
            m.insert("memory".into(), format!("{:.1} GiB", kb / 1024.0 / 1024.0));
        }
    }
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        if let Some(model) = info
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
        {
            m.insert("cpu".into(), model.1.trim().to_string());
        }
    }
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        m.insert("kernel".into(), k.trim().to_string());
    }
    m
}

fn calls_sum(samples: &[ReplicaSample]) -> BTreeMap<String, BTreeMap<String, f64>> {
    samples
        .iter()
        .filter(|s| s.up)
        .map(|s| (s.identity.clone(), s.api_by_verb.clone()))
        .collect()
}

/// Per verb, summed over replicas: end − start (a restarted replica counts from zero).
fn calls_delta(
    start: &BTreeMap<String, BTreeMap<String, f64>>,
    end: &BTreeMap<String, BTreeMap<String, f64>>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (id, verbs) in end {
        let before = start.get(id);
        let restarted =
            before.is_some_and(|b| b.values().sum::<f64>() > verbs.values().sum::<f64>());
        for (verb, v) in verbs {
            let b = if restarted {
                0.0
            } else {
                before.and_then(|b| b.get(verb)).copied().unwrap_or(0.0)
            };
            *out.entry(verb.clone()).or_insert(0.0) += (v - b).max(0.0);
        }
    }
    out.retain(|_, v| *v > 0.0);
    out
}

fn verb_delta(
    start: &Option<BTreeMap<String, f64>>,
    end: &Option<BTreeMap<String, f64>>,
) -> BTreeMap<String, f64> {
    let (Some(s), Some(e)) = (start, end) else {
        return BTreeMap::new();
    };
    e.iter()
        .map(|(k, v)| (k.clone(), v - s.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Per-replica request counters by verb, and the API server's by verb: a point to diff against.
type Snapshot = (
    BTreeMap<String, BTreeMap<String, f64>>,
    Option<BTreeMap<String, f64>>,
);

struct Driver<'a> {
    args: RunArgs,
    client: kube::Client,
    cluster: &'a Cluster,
    tracker: Tracker,
    fleet: Fleet<'a>,
    shape: Shape,
    t0: Instant,
    results: Results,
    /// Population indices in a fixed pseudo-random order: targets are taken from it.
    order: Vec<usize>,
    next_target: usize,
    cronjobs: ApiResource,
}

fn br_resource() -> ApiResource {
    ApiResource {
        group: "core.clawcloud.run".into(),
        version: "v1".into(),
        api_version: "core.clawcloud.run/v1".into(),
        kind: "BlockRequest".into(),
        plural: "blockrequests".into(),
    }
}

/// The BlockRequest's status in one line.
async fn br_status(api: &Api<DynamicObject>, name: &str) -> String {
    match api.get(name).await {
        Ok(br) => {
            let st = br.data.get("status").cloned().unwrap_or_default();
            let n = |k: &str| st.get(k).and_then(|v| v.as_i64()).unwrap_or(0);
            let ready = st
                .get("conditions")
                .and_then(|c| c.as_array())
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))
                })
                .and_then(|c| c.get("status").and_then(|s| s.as_str()))
                .unwrap_or("?")
                .to_string();
            format!(
                "BlockRequest status: targets {}, applied {}, not found {}, failed {}, protected {}, Ready {ready}",
                n("targetCount"),
                n("appliedCount"),
                n("notFoundCount"),
                n("failedCount"),
                n("protectedCount")
            )
        }
        Err(e) => format!("BlockRequest status unreadable: {e}"),
    }
}

impl Driver<'_> {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// The next `n` population namespaces that are unlocked now.
    fn take_targets(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n && self.next_target < self.order.len() {
            let name = self.shape.name(self.order[self.next_target]);
            self.next_target += 1;
            if self.tracker.view(&name).is_some_and(|v| {
                Want::Unlocked.reached(&v) && v.status.as_deref() != Some("locked")
            }) {
                out.push(name);
            }
        }
        out
    }

    async fn snapshot(&self) -> Snapshot {
        let (r, a) = tokio::join!(
            self.fleet.scrape(),
            sampler::apiserver_by_verb(&self.client)
        );
        (calls_sum(&r), a)
    }

    async fn label(&self, names: &[String], value: &str) -> f64 {
        let t = Instant::now();
        let api: Api<Namespace> = Api::all(self.client.clone());
        let progress = Progress::new(names.len() as u64, &format!("label writes ({value})"));
        futures::stream::iter(names)
            .for_each_concurrent(self.args.write_concurrency, |n| {
                let api = api.clone();
                let progress = progress.clone();
                async move {
                    let patch = json!({ "metadata": { "labels": { STATUS_LABEL: value } } });
                    for attempt in 0..5 {
                        match api
                            .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!("labelling {n}: {e} (attempt {attempt})");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                    progress.inc();
                }
            })
            .await;
        progress.finish();
        t.elapsed().as_secs_f64()
    }

    /// Waits for the expectations of `scenario` and builds its step.
    async fn finish_step(
        &mut self,
        scenario: &str,
        targets: usize,
        started: f64,
        write_seconds: f64,
        before: Snapshot,
    ) -> Step {
        let progress = Progress::new(targets as u64, &format!("{scenario} done"));
        let lost = self
            .tracker
            .wait(
                scenario,
                self.args.scenario_timeout,
                self.args.stall_timeout,
                |d| progress.set(d as u64),
            )
            .await;
        progress.finish();
        self.tracker.forget(scenario);
        let done = self.tracker.done(scenario);
        let after = self.snapshot().await;
        let last = done.iter().map(|d| d.at).fold(started, f64::max);
        let seconds = (last - started).max(1e-6);
        let lat: Vec<Duration> = done.iter().map(|d| d.latency).collect();
        let step = Step {
            name: scenario.to_string(),
            targets,
            completed: done.len(),
            lost: lost.len(),
            lost_sample: lost.iter().take(20).cloned().collect(),
            latency_ms: Ms::of(&lat),
            seconds,
            throughput_per_s: done.len() as f64 / seconds,
            write_seconds,
            controller_calls: calls_delta(&before.0, &after.0),
            apiserver_calls: verb_delta(&before.1, &after.1),
            notes: Vec::new(),
        };
        eprintln!(
            "{scenario}: {}/{} done, p50 {} ms, p99 {} ms, max {} ms, {:.1}/s{}",
            step.completed,
            step.targets,
            step.latency_ms.p50,
            step.latency_ms.p99,
            step.latency_ms.max,
            step.throughput_per_s,
            if step.lost > 0 {
                format!(", {} LOST", step.lost)
            } else {
                String::new()
            }
        );
        step
    }

    fn phase(&mut self, start: f64, name: &str) {
        let end = self.now();
        self.results.phases.push((start, end, name.to_string()));
    }

    async fn idle(&mut self) {
        eprintln!("idle for {:?}", self.args.idle);
        let start = self.now();
        let (r0, a0) = self.snapshot().await;
        tokio::time::sleep(self.args.idle).await;
        let (r1, a1) = self.snapshot().await;
        let end = self.now();
        let minutes = (end - start) / 60.0;
        let mut idle = Idle {
            seconds: end - start,
            window: (start, end),
            ..Default::default()
        };
        for (id, verbs) in &r1 {
            let Some(b) = r0.get(id) else { continue };
            let per: BTreeMap<String, f64> = verbs
                .iter()
                .map(|(v, x)| (v.clone(), (x - b.get(v).copied().unwrap_or(0.0)) / minutes))
                .filter(|(_, x)| *x > 0.0)
                .collect();
            idle.per_replica_per_minute.insert(id.clone(), per);
        }
        idle.apiserver_per_minute = verb_delta(&a0, &a1)
            .into_iter()
            .map(|(k, v)| (k, v / minutes))
            .collect();
        for (id, per) in &idle.per_replica_per_minute {
            eprintln!(
                "  {id}: {:.1} calls/min ({})",
                per.values().sum::<f64>(),
                per.iter()
                    .map(|(k, v)| format!("{k} {v:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.results.idle = Some(idle);
        self.phase(start, "idle");
    }

    async fn burst(&mut self) {
        let n = ((self.args.namespaces as f64 * self.args.burst_fraction).round() as usize).max(1);
        let names = self.take_targets(n);
        for (value, want, scenario) in [
            ("locked", Want::Locked, "burst-lock"),
            ("active", Want::Unlocked, "burst-unlock"),
        ] {
            eprintln!("{scenario}: {} namespaces through labels", names.len());
            let start = self.now();
            let before = self.snapshot().await;
            self.tracker
                .expect(scenario, want, names.iter().map(String::as_str));
            let ws = self.label(&names, value).await;
            let step = self
                .finish_step(scenario, names.len(), start, ws, before)
                .await;
            self.results.steps.push(step);
            self.phase(start, scenario);
        }
        self.verify_workloads(&names).await;
    }

    /// After an unlock: every workload of these namespaces has its replicas and suspend flag
    /// back, without the saved annotations.
    async fn verify_workloads(&mut self, names: &[String]) {
        let with: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.rsplit('-')
                    .next()
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| self.shape.has_workloads(i))
            })
            .collect();
        let client = &self.client;
        let cj = &self.cronjobs;
        let failures: Vec<String> = futures::stream::iter(with)
            .map(|n| async move {
                let mut bad = Vec::new();
                let d = Api::<Deployment>::namespaced(client.clone(), n)
                    .get("web")
                    .await;
                match d {
                    Ok(d) => bad.extend(not_restored(
                        format!("{n}/deployment web"),
                        ("replicas", d.spec.and_then(|s| s.replicas), Some(1)),
                        d.metadata.annotations.as_ref(),
                        ORIGINAL_REPLICAS,
                    )),
                    Err(e) => bad.push(format!("{n}/deployment web: {e}")),
                }
                match Api::<StatefulSet>::namespaced(client.clone(), n)
                    .get("db")
                    .await
                {
                    Ok(s) => bad.extend(not_restored(
                        format!("{n}/statefulset db"),
                        ("replicas", s.spec.and_then(|s| s.replicas), Some(1)),
                        s.metadata.annotations.as_ref(),
                        ORIGINAL_REPLICAS,
                    )),
                    Err(e) => bad.push(format!("{n}/statefulset db: {e}")),
                }
                match Api::<DynamicObject>::namespaced_with(client.clone(), n, cj)
                    .get("backup")
                    .await
                {
                    Ok(c) => bad.extend(not_restored(
                        format!("{n}/cronjob backup"),
                        (
                            "suspend",
                            c.data.pointer("/spec/suspend").and_then(|v| v.as_bool()),
                            Some(false),
                        ),
                        c.metadata.annotations.as_ref(),
                        ORIGINAL_SUSPEND,
                    )),
                    Err(e) => bad.push(format!("{n}/cronjob backup: {e}")),
                }
                bad
            })
            .buffer_unordered(32)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        if !failures.is_empty() {
            eprintln!(
                "workloads not restored: {} (e.g. {})",
                failures.len(),
                failures[0]
            );
        }
        self.results.workload_restore_failures.extend(failures);
    }

    async fn blockrequest(&mut self) -> anyhow::Result<()> {
        let names = self.take_targets(self.args.blockrequest_size);
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        let home = "loadtest";
        let mut ns = Namespace::default();
        ns.metadata.name = Some(home.into());
        let _ = ns_api.create(&PostParams::default(), &ns).await;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), home, &br_resource());
        let br_name = format!("{}-{}", self.args.population, std::process::id());
        eprintln!(
            "blockrequest-lock: one BlockRequest naming {} namespaces",
            names.len()
        );
        let start = self.now();
        let before = self.snapshot().await;
        self.tracker.expect(
            "blockrequest-lock",
            Want::Locked,
            names.iter().map(String::as_str),
        );
        let mut br = DynamicObject::new(&br_name, &br_resource()).within(home);
        br.data = json!({ "spec": { "namespaceNames": names, "action": "locked" } });
        let t = Instant::now();
        api.create(&PostParams::default(), &br)
            .await
            .context("creating the BlockRequest")?;
        let ws = t.elapsed().as_secs_f64();
        let mut step = self
            .finish_step("blockrequest-lock", names.len(), start, ws, before)
            .await;
        step.notes.push(br_status(&api, &br_name).await);
        self.results.steps.push(step);
        self.phase(start, "blockrequest-lock");

        eprintln!("blockrequest-unlock: spec.action → active");
        let start = self.now();
        let before = self.snapshot().await;
        self.tracker.expect(
            "blockrequest-unlock",
            Want::Unlocked,
            names.iter().map(String::as_str),
        );
        let t = Instant::now();
        api.patch(
            &br_name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "action": "active" } })),
        )
        .await
        .context("patching the BlockRequest")?;
        let ws = t.elapsed().as_secs_f64();
        let mut step = self
            .finish_step("blockrequest-unlock", names.len(), start, ws, before)
            .await;
        step.notes.push(br_status(&api, &br_name).await);
        // Deleting it: the finalizer is removed (nothing left to unlock).
        let t = Instant::now();
        let _ = api.delete(&br_name, &DeleteParams::default()).await;
        let mut gone = false;
        while t.elapsed() < Duration::from_secs(120) {
            if matches!(api.get(&br_name).await, Err(kube::Error::Api(e)) if e.code == 404) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        step.notes.push(if gone {
            format!(
                "BlockRequest deleted (finalizer removed) in {:.2} s",
                t.elapsed().as_secs_f64()
            )
        } else {
            "BlockRequest still present 120 s after its deletion".into()
        });
        if !gone {
            self.results
                .failures
                .push("the BlockRequest's finalizer was not removed".into());
        }
        self.results.steps.push(step);
        self.phase(start, "blockrequest-unlock");
        self.verify_workloads(&names).await;
        Ok(())
    }

    async fn expiry(&mut self) -> anyhow::Result<()> {
        let run = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            % 1_000_000;
        let names: Vec<String> = (0..self.args.expiry_count)
            .map(|i| format!("{}-exp-{run}-{i:05}", self.args.population))
            .collect();
        eprintln!(
            "expiry: {} namespaces created locked with lock-duration {}",
            names.len(),
            self.args.expiry_after
        );
        let start = self.now();
        let before = self.snapshot().await;
        self.tracker.expect_then(
            "expiry-lock",
            Want::Locked,
            Some(("expiry-delete", Want::Deleted)),
            names.iter().map(String::as_str),
        );
        let api: Api<Namespace> = Api::all(self.client.clone());
        let t = Instant::now();
        let progress = Progress::new(names.len() as u64, "expiring namespaces created");
        let pop = self.args.population.clone();
        let after = self.args.expiry_after.clone();
        futures::stream::iter(&names)
            .for_each_concurrent(self.args.write_concurrency, |n| {
                let api = api.clone();
                let progress = progress.clone();
                let (pop, after) = (pop.clone(), after.clone());
                async move {
                    let ns: Namespace = serde_json::from_value(json!({ "metadata": {
                        "name": n,
                        "labels": { STATUS_LABEL: "locked", POPULATION_LABEL: pop, ROLE_LABEL: "expiry" },
                        "annotations": { LOCK_DURATION: after },
                    }}))
                    .expect("static namespace");
                    if let Err(e) = api.create(&PostParams::default(), &ns).await {
                        tracing::warn!("creating {n}: {e}");
                    }
                    progress.inc();
                }
            })
            .await;
        progress.finish();
        let ws = t.elapsed().as_secs_f64();
        let step = self
            .finish_step("expiry-lock", names.len(), start, ws, before)
            .await;
        self.results.steps.push(step);
        self.phase(start, "expiry-lock");
        let start = self.now();
        let before = self.snapshot().await;
        let mut step = self
            .finish_step("expiry-delete", names.len(), start, 0.0, before)
            .await;
        let late: Vec<Duration> = self
            .tracker
            .done("expiry-delete")
            .iter()
            .filter_map(|d| d.lateness)
            .map(|s| Duration::from_secs_f64(s.max(0.0)))
            .collect();
        let l = Ms::of(&late);
        step.notes.push(format!(
            "deletion seen after the unlock deadline (1 s resolution): p50 {} ms, p99 {} ms, max {} ms",
            l.p50, l.p99, l.max
        ));
        step.notes.push(
            "latency here: from the lock being complete to the deletion being seen (includes the lock duration)"
                .into(),
        );
        self.results.steps.push(step);
        self.phase(start, "expiry-delete");
        Ok(())
    }

    /// Flips trickle namespaces at `rate` until `stop` fires.
    fn spawn_trickle(
        &self,
        names: Vec<String>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<usize> {
        let tracker = self.tracker.clone();
        let api: Api<Namespace> = Api::all(self.client.clone());
        let rate = self.args.trickle_rate.max(0.1);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut i = 0usize;
            let mut sent = 0usize;
            while !*stop.borrow() && !names.is_empty() {
                tick.tick().await;
                let n = &names[i % names.len()];
                i += 1;
                if tracker.outstanding_for(n) {
                    continue;
                }
                let Some(view) = tracker.view(n) else {
                    continue;
                };
                let (want, value) = if view.status.as_deref() == Some("locked") {
                    (Want::Unlocked, "active")
                } else {
                    (Want::Locked, "locked")
                };
                tracker.expect("trickle", want, [n.as_str()]);
                let patch = json!({ "metadata": { "labels": { STATUS_LABEL: value } } });
                let api = api.clone();
                let n = n.clone();
                tokio::spawn(async move {
                    if let Err(e) = api
                        .patch(&n, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        tracing::warn!("trickle write to {n}: {e}");
                    }
                });
                sent += 1;
            }
            sent
        })
    }

    fn balanced(&self) -> impl Fn(&Ownership) -> bool + '_ {
        let n = self.fleet.live();
        let ranges = self.fleet.ranges;
        move |o: &Ownership| o.balanced(ranges, n)
    }

    async fn handover_hist(&self) -> (f64, f64) {
        let mut sum = 0.0;
        let mut count = 0.0;
        for r in self.fleet.replicas.values() {
            if let Ok(text) = r.metrics().await {
                let s = crate::prom::parse(&text);
                sum += crate::prom::sum(&s, "block_controller_handover_duration_seconds_sum")
                    .unwrap_or(0.0);
                count += crate::prom::sum(&s, "block_controller_handover_duration_seconds_count")
                    .unwrap_or(0.0);
            }
        }
        (sum, count)
    }

    async fn scale(&mut self) -> anyhow::Result<()> {
        let r = self.args.replicas;
        let timeout = Duration::from_secs(300);
        // Up: R → R+1.
        let start = self.now();
        let (hs0, hc0) = self.handover_hist().await;
        let t = Instant::now();
        self.fleet.start(&[r], timeout).await?;
        let ready = t.elapsed().as_secs_f64();
        let newcomer = identity(r);
        let n = self.fleet.live();
        let ranges = self.fleet.ranges;
        let w = self
            .fleet
            .wait_ownership(timeout, |o| o.balanced(ranges, n))
            .await;
        let moved = self.fleet.ownership().await.of(&newcomer);
        let (hs1, hc1) = self.handover_hist().await;
        let handovers = if hc1 > hc0 {
            format!(
                "block_controller_handover_duration_seconds (stop intake → drained) on the old owners: mean {:.3} s over {} handovers",
                (hs1 - hs0) / (hc1 - hc0),
                hc1 - hc0
            )
        } else {
            "no handover recorded by block_controller_handover_duration_seconds".into()
        };
        let mut fault = Fault {
            name: format!("scale {r}→{}", r + 1),
            what: format!("started {newcomer}"),
            until: "every range owned, each replica within ⌊R/N⌋..⌈R/N⌉".into(),
            notes: vec![
                format!("newcomer ready (owns ranges, listed them) {ready:.2} s after its start"),
                format!(
                    "ranges moved to the newcomer: {moved} (target ≤ ⌈{ranges}/{}⌉ = {})",
                    r + 1,
                    ranges.div_ceil(r + 1)
                ),
                handovers,
            ],
            waited: w,
        };
        fault.waited.seconds += ready;
        eprintln!(
            "{}: balanced after {:.2} s, {moved} ranges moved",
            fault.name, fault.waited.seconds
        );
        self.results.faults.push(fault);
        self.phase(start, "scale up");
        tokio::time::sleep(Duration::from_secs(5)).await;

        // Down: R+1 → R−1 (at least 1), SIGTERM to the highest ordinals.
        let target = r.saturating_sub(1).max(1);
        let start = self.now();
        let t = Instant::now();
        let leaving: Vec<u32> = (target..=r).rev().collect();
        let stopped: Vec<String> = leaving.iter().map(|&o| identity(o)).collect();
        let exits = self
            .fleet
            .terminate_all(&leaving, Duration::from_secs(120))
            .await?;
        let n = self.fleet.live();
        let w = self
            .fleet
            .wait_ownership(timeout, |o| o.balanced(ranges, n))
            .await;
        let mut fault = Fault {
            name: format!("scale {}→{target}", r + 1),
            what: format!("SIGTERM to {} at once", stopped.join(", ")),
            until: "every range owned by the survivors, balanced".into(),
            notes: vec![format!(
                "exit after SIGTERM (drain + release): {}",
                exits
                    .iter()
                    .map(|d| format!("{:.2} s", d.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
            waited: w,
        };
        fault.waited.seconds = t.elapsed().as_secs_f64();
        eprintln!(
            "{}: balanced after {:.2} s, {:.1} unowned range-seconds",
            fault.name, fault.waited.seconds, fault.waited.unowned_range_seconds
        );
        self.results.faults.push(fault);
        self.phase(start, "scale down");

        // Back to R for what follows.
        let back: Vec<u32> = (target..r).collect();
        if !back.is_empty() {
            let start = self.now();
            self.fleet.start(&back, timeout).await?;
            let n = self.fleet.live();
            self.fleet
                .wait_ownership(timeout, |o| o.balanced(ranges, n))
                .await;
            self.phase(start, "scale back");
        }
        Ok(())
    }

    async fn kill(&mut self) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(300);
        let victim = match self.fleet.leader().await {
            Some(o) => o,
            None => *self.fleet.replicas.keys().next().context("no replicas")?,
        };
        if self.fleet.live() < 2 {
            eprintln!("kill: one replica only; its ranges come back when it restarts");
        }
        let start = self.now();
        let was_leader = self.fleet.leader().await == Some(victim);
        self.fleet.kill(victim)?;
        let ranges = self.fleet.ranges;
        let w = if self.fleet.live() > 0 {
            self.fleet
                .wait_ownership(timeout, |o| o.sum() == ranges)
                .await
        } else {
            Waited::default()
        };
        // The leader duties (BlockRequests) move too, when the leader was killed.
        let t = Instant::now();
        let mut new_leader = self.fleet.leader().await;
        while new_leader.is_none()
            && t.elapsed() < Duration::from_secs(120)
            && self.fleet.live() > 0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            new_leader = self.fleet.leader().await;
        }
        let leader_after = w.seconds + t.elapsed().as_secs_f64();
        let fault = Fault {
            name: "kill -9".into(),
            what: format!(
                "SIGKILL to {}{}",
                identity(victim),
                if was_leader { " (the leader)" } else { "" }
            ),
            until: "Σ owned_ranges over the survivors = ranges".into(),
            notes: vec![match new_leader {
                Some(l) => format!(
                    "leader afterwards: {}, {leader_after:.2} s after the SIGKILL",
                    identity(l)
                ),
                None => "no leader seen within 120 s".into(),
            }],
            waited: w,
        };
        eprintln!(
            "kill -9: every range owned again after {:.2} s ({:.1} unowned range-seconds)",
            fault.waited.seconds, fault.waited.unowned_range_seconds
        );
        self.results.faults.push(fault);
        self.phase(start, "kill -9");
        // Back: the same identity restarts (as a StatefulSet would).
        let start = self.now();
        let t = Instant::now();
        self.fleet.start(&[victim], timeout).await?;
        let bal = self.balanced();
        let w = self.fleet.wait_ownership(timeout, bal).await;
        let mut fault = Fault {
            name: "rejoin after kill".into(),
            what: format!("{} started again", identity(victim)),
            until: "balanced".into(),
            notes: vec![],
            waited: w,
        };
        fault.waited.seconds = t.elapsed().as_secs_f64();
        self.results.faults.push(fault);
        self.phase(start, "rejoin");
        Ok(())
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(300);
        let victim = *self.fleet.replicas.keys().last().context("no replicas")?;
        let start = self.now();
        let t = Instant::now();
        let before = self.fleet.ownership().await.of(&identity(victim));
        let exit = self
            .fleet
            .terminate(victim, Duration::from_secs(120))
            .await?;
        let t_start = Instant::now();
        self.fleet.start(&[victim], timeout).await?;
        let ready = t_start.elapsed().as_secs_f64();
        let bal = self.balanced();
        let w = self.fleet.wait_ownership(timeout, bal).await;
        let total = t.elapsed().as_secs_f64();
        let after = self.fleet.ownership().await.of(&identity(victim));
        let notes = vec![
            format!(
                "exit after SIGTERM (drain, release): {:.2} s",
                exit.as_secs_f64()
            ),
            format!(
                "new incarnation ready (owns ranges, listed them) {ready:.2} s after its start"
            ),
            format!(
                "{} owned {before} ranges before, {after} after",
                identity(victim)
            ),
        ];
        let mut fault = Fault {
            name: "graceful restart".into(),
            what: format!(
                "SIGTERM to {}, then started again with the same identity",
                identity(victim)
            ),
            until: "balanced, from the SIGTERM".into(),
            notes,
            waited: w,
        };
        fault.waited.seconds = total;
        eprintln!("graceful restart: balanced {total:.2} s after SIGTERM");
        self.results.faults.push(fault);
        self.phase(start, "restart");
        Ok(())
    }

    async fn capacity(&mut self) -> anyhow::Result<()> {
        let start = self.now();
        eprintln!(
            "raw capacity: lock/unlock call mix at concurrency {} for {:?}",
            self.args.capacity_concurrency, self.args.capacity_duration
        );
        let cap = crate::capacity::measure(
            &self.client,
            self.cronjobs.clone(),
            &self.args.population,
            (self.args.capacity_concurrency * 4).max(500),
            self.args.capacity_concurrency,
            self.args.capacity_duration,
        )
        .await?;
        eprintln!(
            "  {:.1} flows/s, {:.0} calls/s, {} errors",
            cap.flows_per_second, cap.calls_per_second, cap.errors
        );
        self.results.capacity = Some(cap);
        self.phase(start, "raw capacity");
        Ok(())
    }

    /// Work an earlier, interrupted run left pending (a lock without its marker, an unlock not
    /// finished): the replicas pick it up at start; wait for it. Completed locks stay locked (part
    /// of the population from now on; targets are only taken from unlocked namespaces).
    async fn settle(&mut self) {
        let pending = |want: Want| {
            self.tracker.select(move |n, v| {
                !v.deleting
                    && !n.contains("-exp-")
                    && match want {
                        Want::Locked => v.status.as_deref() == Some("locked") && !v.locked_at,
                        _ => {
                            v.status.as_deref() != Some("locked")
                                && (v.locked_at || v.has_unlock_at)
                        }
                    }
            })
        };
        let (locks, unlocks) = (pending(Want::Locked), pending(Want::Unlocked));
        if locks.is_empty() && unlocks.is_empty() {
            return;
        }
        eprintln!(
            "settle: {} locks and {} unlocks left pending by an earlier run",
            locks.len(),
            unlocks.len()
        );
        let start = self.now();
        let before = self.snapshot().await;
        self.tracker
            .expect("settle", Want::Locked, locks.iter().map(String::as_str));
        self.tracker
            .expect("settle", Want::Unlocked, unlocks.iter().map(String::as_str));
        let mut step = self
            .finish_step("settle", locks.len() + unlocks.len(), start, 0.0, before)
            .await;
        step.notes.push(format!(
            "{} locks and {} unlocks an earlier run left pending, finished by the replicas after their start",
            locks.len(),
            unlocks.len()
        ));
        self.results.steps.push(step);
        self.phase(start, "settle");
    }

    fn final_sweep(&mut self) {
        let bad = self.tracker.select(|n, v| {
            if v.deleting || n.contains("-exp-") {
                return false;
            }
            match v.status.as_deref() {
                Some("locked") => !v.locked_at,
                _ => v.locked_at || v.has_unlock_at,
            }
        });
        self.results.final_mismatches = bad.into_iter().take(100).collect();
    }

    async fn audit(&mut self, run_start_micros: i64) {
        let path = self
            .args
            .audit_log
            .clone()
            .or_else(|| self.cluster.audit_log().map(|p| p.to_path_buf()));
        let Some(path) = path else {
            self.results.audit.note = "no audit log: KUBECONFIG mode without --audit-log".into();
            return;
        };
        eprintln!("audit: reading {} (and its rotated files)", path.display());
        let window = self.results.idle.as_ref().map(|idle| {
            let (a, b) = idle.window;
            (
                run_start_micros + (a * 1e6) as i64,
                run_start_micros + (b * 1e6) as i64,
            )
        });
        let (ranges, cns) = (self.args.ranges, self.args.controller_namespace.clone());
        let checked = tokio::task::spawn_blocking(move || {
            crate::audit::check(&path, run_start_micros, ranges, &cns, window)
        })
        .await;
        let (audit, per_minute) = match checked {
            Ok(r) => r,
            Err(e) => {
                self.results.audit.note = format!("reader failed: {e}");
                return;
            }
        };
        eprintln!(
            "audit: {} controller writes checked over {} epochs: {} violations",
            audit.writes_checked, audit.epochs, audit.violations
        );
        self.results.audit = audit;
        // Idle figures from the server's side: the controllers' mutating requests per minute.
        if let Some(idle) = &mut self.results.idle {
            idle.audit_per_minute = per_minute;
        }
    }
}

/// `loadtest run`.
pub async fn run(
    args: RunArgs,
    use_kubeconfig: bool,
    controller_args: Vec<String>,
) -> anyhow::Result<bool> {
    let t0 = Instant::now();
    let run_start_micros = (SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()) as i64;
    shard::RangeCount::new(args.ranges).map_err(|e| anyhow::anyhow!("--ranges: {e}"))?;
    let unknown: Vec<&String> = args
        .scenarios
        .iter()
        .filter(|s| !ALL_SCENARIOS.contains(&s.as_str()))
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!("unknown scenarios {unknown:?}; known: {ALL_SCENARIOS:?}");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let cluster = Cluster::start(use_kubeconfig).await?;
    let client = cluster.client().await?;
    let server_version = client.apiserver_version().await?.git_version;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let mut cns = Namespace::default();
    cns.metadata.name = Some(args.controller_namespace.clone());
    let _ = ns_api.create(&PostParams::default(), &cns).await;

    let shape = Shape {
        prefix: args.population.clone(),
        namespaces: args.namespaces,
        workload_fraction: args.workload_fraction,
        active_fraction: args.active_fraction,
    };
    let mut results = Results {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        machine: machine(),
        server_version,
        mode: match (cluster.is_local(), args.external_replicas) {
            (true, _) => {
                "local control plane started for the run; replicas as local processes".into()
            }
            (false, false) => "cluster from KUBECONFIG; replicas as local processes".into(),
            (false, true) => "cluster from KUBECONFIG; replicas run in the cluster".into(),
        },
        namespaces: args.namespaces,
        replicas: args.replicas,
        ranges: args.ranges,
        workload_fraction: args.workload_fraction,
        controller_args: controller_args.clone(),
        ..Default::default()
    };
    results.population =
        population::ensure(&client, &shape, args.create_rate, args.create_concurrency).await?;
    let cronjobs = population::cronjob_resource(&client).await?;
    if args.populate_only {
        eprintln!("population ready: {:?}", results.population);
        return Ok(results.population.failures == 0);
    }

    let tracker = Tracker::start(client.clone(), &shape.selector(), t0);
    tracker.synced(Duration::from_secs(600)).await?;
    let sampler = Sampler::default();
    let sampler_task = sampler.spawn(client.clone(), t0, args.sample_interval);

    let mut replica_args = vec![
        format!("--ranges={}", args.ranges),
        format!("--controller-namespace={}", args.controller_namespace),
    ];
    replica_args.extend(controller_args);
    let mut fleet = Fleet::new(&cluster, replica_args, sampler.clone(), args.ranges);
    let local_replicas = !(args.external_replicas && use_kubeconfig);
    let startup = Instant::now();
    if local_replicas {
        eprintln!("starting {} replicas", args.replicas);
        let ords: Vec<u32> = (0..args.replicas).collect();
        fleet.start(&ords, Duration::from_secs(900)).await?;
        let ranges = args.ranges;
        let n = fleet.live();
        fleet
            .wait_ownership(Duration::from_secs(300), |o| o.balanced(ranges, n))
            .await;
    } else {
        fleet.add_external(&args.replica_metrics_port);
    }
    results.startup_seconds = startup.elapsed().as_secs_f64();
    let first = fleet.scrape().await;
    results.startup_calls = calls_delta(&BTreeMap::new(), &calls_sum(&first));
    let after_start: BTreeMap<String, Option<f64>> = first
        .iter()
        .map(|s| (s.identity.clone(), s.rss_mib))
        .collect();
    eprintln!(
        "replicas ready in {:.1} s; start-up API calls {:?}",
        results.startup_seconds, results.startup_calls
    );
    results
        .phases
        .push((0.0, t0.elapsed().as_secs_f64(), "start".into()));

    let order: Vec<usize> = {
        let mut v: Vec<usize> = (0..args.namespaces).collect();
        v.sort_by(|a, b| unit(*a, 7).total_cmp(&unit(*b, 7)));
        v
    };
    let mut d = Driver {
        args: args.clone(),
        client: client.clone(),
        cluster: &cluster,
        tracker: tracker.clone(),
        fleet,
        shape,
        t0,
        results,
        order,
        next_target: 0,
        cronjobs,
    };
    d.settle().await;

    let want = |s: &str| args.scenarios.iter().any(|x| x == s);
    // Lock/unlock traffic flowing through the fault scenarios, from the first of them on.
    let mut trickle: Option<(
        tokio::task::JoinHandle<usize>,
        tokio::sync::watch::Sender<bool>,
    )> = None;
    let mut trickle_started: Option<f64> = None;
    for s in ALL_SCENARIOS {
        if !want(s) || *s == "capacity" {
            continue;
        }
        let r = match *s {
            "idle" => {
                d.idle().await;
                Ok(())
            }
            "burst" => {
                d.burst().await;
                Ok(())
            }
            "blockrequest" => d.blockrequest().await,
            "expiry" => d.expiry().await,
            "scale" | "kill" | "restart" if !local_replicas => {
                eprintln!("{s}: skipped (the replicas run in the cluster)");
                Ok(())
            }
            "scale" | "kill" | "restart" => {
                if trickle.is_none() && args.trickle_rate > 0.0 {
                    trickle_started = Some(d.now());
                    let names = d.take_targets(args.trickle_namespaces);
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    trickle = Some((d.spawn_trickle(names, rx), tx));
                }
                match *s {
                    "scale" => d.scale().await,
                    "kill" => d.kill().await,
                    _ => d.restart().await,
                }
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            d.results.failures.push(format!("{s}: {e:#}"));
            eprintln!("{s} failed: {e:#}");
        }
    }
    if let Some((task, tx)) = trickle {
        let _ = tx.send(true);
        let sent = task.await.unwrap_or(0);
        let start = trickle_started.unwrap_or_else(|| d.now());
        let before = (BTreeMap::new(), None);
        let mut step = d.finish_step("trickle", sent, start, 0.0, before).await;
        step.controller_calls.clear();
        step.notes.push(format!(
            "{sent} label flips at {}/s kept flowing through scale, kill -9 and restart",
            args.trickle_rate
        ));
        d.results.steps.push(step);
    }
    // The raw capacity last, with no controller work in flight.
    if want("capacity") {
        if let Err(e) = d.capacity().await {
            d.results.failures.push(format!("capacity: {e:#}"));
            eprintln!("capacity failed: {e:#}");
        }
    }
    // Everything settled: every namespace's state agrees with its label.
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.final_sweep();
    d.results.crashed_replicas = d.fleet.crashed();

    // Memory over the run.
    sampler_task.abort();
    let samples = sampler.samples();
    let mut memory: BTreeMap<String, Memory> = BTreeMap::new();
    for s in &samples {
        for r in &s.replicas {
            let m = memory.entry(r.identity.clone()).or_insert_with(|| Memory {
                identity: r.identity.clone(),
                after_start_mib: after_start.get(&r.identity).copied().flatten(),
                ..Default::default()
            });
            if let Some(v) = r.rss_mib {
                m.peak_mib = m.peak_mib.max(v);
                m.last_mib = Some(v);
            }
        }
    }
    d.results.memory = memory.into_values().collect();
    d.results.unowned_range_seconds_total =
        sampler::unowned_range_seconds(&samples, args.ranges, d.results.startup_seconds, f64::MAX);
    if local_replicas {
        d.fleet.stop_all().await;
    }
    d.audit(run_start_micros).await;

    let r = &mut d.results;
    r.samples = {
        let mut last = f64::NEG_INFINITY;
        samples
            .iter()
            .filter(|s| {
                if s.t - last >= 5.0 {
                    last = s.t;
                    true
                } else {
                    false
                }
            })
            .cloned()
            .collect()
    };
    let lost: usize = r.steps.iter().map(|s| s.lost).sum();
    if lost > 0 {
        r.failures.push(format!(
            "{lost} requested locks/unlocks/expiries never completed"
        ));
    }
    if !r.final_mismatches.is_empty() {
        r.failures.push(format!(
            "{} namespaces end in a state that disagrees with their label",
            r.final_mismatches.len()
        ));
    }
    if !r.workload_restore_failures.is_empty() {
        r.failures.push(format!(
            "{} workloads not restored after unlock",
            r.workload_restore_failures.len()
        ));
    }
    if r.audit.violations > 0 {
        r.failures.push(format!(
            "{} writes outside the writer's ownership epoch (audit log)",
            r.audit.violations
        ));
    }
    if !r.crashed_replicas.is_empty() {
        r.failures.push(format!(
            "replicas exited on their own: {:?}",
            r.crashed_replicas
        ));
    }
    r.total_seconds = t0.elapsed().as_secs_f64();
    r.passed = r.failures.is_empty();
    tracker.stop();
    let all_done = tracker.all_done();
    crate::report::write(&args.out, r, &samples, &all_done)?;
    eprintln!(
        "{} in {:.0} s; report: {}",
        if r.passed { "PASSED" } else { "FAILED" },
        r.total_seconds,
        args.out.join("report.md").display()
    );
    for f in &r.failures {
        eprintln!("  failure: {f}");
    }
    Ok(r.passed)
}

/// `loadtest audit`: the ownership check of a finished run, again (e.g. over rotated files a
/// first reading missed); rewrites the run's `result.json` and `report.md` (charts unchanged).
pub fn recheck(
    out: &std::path::Path,
    audit_log: &std::path::Path,
    ranges: u32,
    controller_namespace: &str,
) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(out.join("result.json"))
        .with_context(|| format!("reading {}", out.join("result.json").display()))?;
    let mut r: Results = serde_json::from_str(&text).context("parsing result.json")?;
    let since = local_control_plane::audit::parse_micros(&r.started)
        .context("result.json: unparsable start time")?;
    let window = r.idle.as_ref().map(|i| {
        (
            since + (i.window.0 * 1e6) as i64,
            since + (i.window.1 * 1e6) as i64,
        )
    });
    let (audit, per_minute) =
        crate::audit::check(audit_log, since, ranges, controller_namespace, window);
    eprintln!(
        "audit: {} controller writes checked over {} epochs: {} violations ({})",
        audit.writes_checked, audit.epochs, audit.violations, audit.note
    );
    r.failures.retain(|f| !f.contains("(audit log)"));
    if audit.violations > 0 {
        r.failures.push(format!(
            "{} writes outside the writer's ownership epoch (audit log)",
            audit.violations
        ));
    }
    r.audit = audit;
    if let Some(idle) = &mut r.idle {
        idle.audit_per_minute = per_minute;
    }
    r.passed = r.failures.is_empty();
    std::fs::write(out.join("result.json"), serde_json::to_string_pretty(&r)?)?;
    std::fs::write(out.join("report.md"), crate::report::markdown(&r))?;
    Ok(r.passed)
}

/// What is wrong with one workload after an unlock, if anything: its `field` (replicas, or
/// the suspend flag) is not back to `expected`, or the annotation `saved` that held the
/// original is still there.
fn not_restored<T: PartialEq + std::fmt::Debug>(
    what: String,
    (field, value, expected): (&str, Option<T>, Option<T>),
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    saved: &str,
) -> Option<String> {
    let saved = annotations.is_some_and(|a| a.contains_key(saved));
    (value != expected || saved)
        .then(|| format!("{what}: {field} {value:?}, saved annotation {saved}"))
}

#[cfg(test)]
mod tests {
    use super::not_restored;
    use std::collections::BTreeMap;

    #[test]
    fn a_workload_is_restored_only_with_its_value_back_and_no_saved_annotation() {
        let none = BTreeMap::new();
        let kept: BTreeMap<String, String> = [("saved".to_string(), "1".to_string())].into();
        let check = |value, annotations| {
            not_restored(
                "ns/deployment web".into(),
                ("replicas", value, Some(1)),
                annotations,
                "saved",
            )
        };
        assert_eq!(check(Some(1), Some(&none)), None);
        assert_eq!(check(Some(1), None), None);
        assert_eq!(
            check(Some(0), Some(&none)).as_deref(),
            Some("ns/deployment web: replicas Some(0), saved annotation false")
        );
        assert_eq!(
            check(Some(1), Some(&kept)).as_deref(),
            Some("ns/deployment web: replicas Some(1), saved annotation true")
        );
    }
}
