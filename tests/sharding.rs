//! Several controller processes against one real API server, with lock/unlock traffic flowing
//! throughout: 3 replicas, scale to 4 and 5, `kill -9` one, `SIGSTOP` one past its lease then
//! `SIGCONT`, `SIGTERM` two (scale to 2). At the end every requested lock and unlock is complete,
//! and the API server's audit log shows that every write a replica made to a namespace fell
//! inside that replica's ownership epoch of the namespace's range (so no two replicas ever wrote
//! one namespace in the same epoch).
//!
//! The figures of the sharding issue are printed (run with `--nocapture`): failover after
//! SIGKILL, graceful handover, ranges moved 3→4, Lease writes per minute per replica, and watch
//! events received per replica against the total.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use block_controller::api::{STATUS_LABEL, UNLOCK_TIMESTAMP_ANNOTATION};
use block_controller::bucket::{bucket_value, BUCKET_LABEL};
use block_controller::pages::Pages;
use block_controller::state::LOCKED_AT_ANNOTATION;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

const RANGES: u32 = 64;
const LEASE_SECS: u64 = 6;
const NAMESPACES: usize = 1500;
const RUN_LABEL: &str = "e2e.block-controller/run";

struct Replica {
    identity: String,
    child: std::process::Child,
    metrics: u16,
    health: u16,
}

impl Replica {
    fn start(identity: &str) -> Replica {
        let cp = common::control_plane();
        let metrics = common::free_port();
        let health = common::free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_block-controller"));
        cmd.env("KUBECONFIG", cp.kubeconfig())
            .env("RUST_LOG", "info,kube=warn")
            .arg(format!("--identity={identity}"))
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics}"))
            .arg(format!("--health-probe-bind-address=127.0.0.1:{health}"))
            .arg(format!(
                "--controller-namespace={}",
                common::CONTROLLER_NAMESPACE
            ))
            .arg(format!("--ranges={RANGES}"))
            .arg(format!("--lease-duration={LEASE_SECS}s"))
            .args([
                "--renew-deadline=4s",
                "--retry-period=1s",
                "--member-lease-gc-after=10s",
                // Absent until the rolling-restart phase: a SIGTERM before it leaves for good.
                "--statefulset-name=block-controller",
                "--api-timeout=1500ms",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ]);
        let log = std::env::temp_dir().join(format!(
            "block-controller-sharding-{}-{identity}.log",
            std::process::id()
        ));
        eprintln!("{identity}: log in {}", log.display());
        let child = local_control_plane::spawn_tied(cmd, &log).expect("spawn");
        Replica {
            identity: identity.to_string(),
            child,
            metrics,
            health,
        }
    }

    /// Sum of the samples of `name` whose labels contain every filter; `None` when the
    /// replica does not answer.
    fn try_metric(&self, name: &str, filters: &[&str]) -> Option<f64> {
        let (_, body) = common::http_get(self.metrics, "/metrics")?;
        Some(
            body.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                })
                .filter(|l| filters.iter().all(|f| l.contains(f)))
                .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                .sum(),
        )
    }

    /// [`Replica::try_metric`] of a live replica: retried, never a silent 0.
    fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        for _ in 0..20 {
            if let Some(v) = self.try_metric(name, filters) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{} does not serve its metrics", self.identity)
    }

    fn owned(&self) -> u32 {
        self.try_metric("block_controller_owned_ranges", &[])
            .unwrap_or(0.0) as u32
    }

    fn ready(&self) -> bool {
        common::http_get(self.health, "/readyz").is_some_and(|(code, _)| code == 200)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {}", self.identity);
    }
}

/// Waits until the replicas own every range between them, each ⌊R/N⌋ or ⌈R/N⌉; returns when.
async fn balanced(replicas: &[&Replica], what: &str) -> Instant {
    let n = replicas.len() as u32;
    let (lo, hi) = (RANGES / n, RANGES.div_ceil(n));
    common::eventually(Duration::from_secs(90), what, || async {
        let owned: Vec<u32> = replicas.iter().map(|r| r.owned()).collect();
        (owned.iter().sum::<u32>() == RANGES && owned.iter().all(|&o| (lo..=hi).contains(&o)))
            .then(Instant::now)
    })
    .await
}

/// Waits until the replicas own every range between them (balanced or not).
async fn covered(replicas: &[&Replica], what: &str) -> Instant {
    common::eventually(Duration::from_secs(60), what, || async {
        (replicas.iter().map(|r| r.owned()).sum::<u32>() == RANGES).then(Instant::now)
    })
    .await
}

fn sum(replicas: &[&Replica], name: &str, filters: &[&str]) -> f64 {
    replicas.iter().map(|r| r.metric(name, filters)).sum()
}

/// Flips random namespaces between locked and active until stopped; remembers the last state
/// asked for each. While `only_bucketed` is set it leaves the never-managed fifth alone.
fn traffic(
    client: kube::Client,
    names: Vec<String>,
    stop: Arc<AtomicBool>,
    only_bucketed: Arc<AtomicBool>,
) -> (
    tokio::task::JoinHandle<usize>,
    Arc<Mutex<HashMap<String, bool>>>,
) {
    let desired: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let d = desired.clone();
    let task = tokio::spawn(async move {
        let api: Api<Namespace> = Api::all(client);
        let mut changes = 0;
        while !stop.load(Ordering::Relaxed) {
            let i = rand::random_range(0..names.len());
            if i % 5 == 0 && only_bucketed.load(Ordering::Relaxed) {
                continue;
            }
            let name = &names[i];
            let lock = !d
                .lock()
                .expect("desired")
                .get(name)
                .copied()
                .unwrap_or(false);
            let value = if lock { "locked" } else { "active" };
            let patch = serde_json::json!({ "metadata": { "labels": { STATUS_LABEL: value } } });
            if api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                d.lock().expect("desired").insert(name.clone(), lock);
                changes += 1;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        changes
    });
    (task, desired)
}

/// Namespaces whose state differs from what was asked last.
async fn incomplete(api: &Api<Namespace>, run: &str, desired: &HashMap<String, bool>) -> usize {
    let mut wrong = 0;
    let mut pages = Pages::new(
        ListParams::default()
            .labels(&format!("{RUN_LABEL}={run}"))
            .limit(500),
    );
    while let Some(params) = pages.next_params() {
        let Ok(page) = api.list(&params).await else {
            return usize::MAX;
        };
        pages.advance(&page.metadata);
        for ns in &page.items {
            let name = ns.metadata.name.as_deref().unwrap_or_default();
            let Some(&locked) = desired.get(name) else {
                continue;
            };
            let annotations = ns.metadata.annotations.clone().unwrap_or_default();
            let done = if locked {
                annotations.contains_key(LOCKED_AT_ANNOTATION)
                    && annotations.contains_key(UNLOCK_TIMESTAMP_ANNOTATION)
            } else {
                !annotations.contains_key(LOCKED_AT_ANNOTATION)
                    && !annotations.contains_key(UNLOCK_TIMESTAMP_ANNOTATION)
            };
            if !done {
                wrong += 1;
            }
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_scale_crash_pause_and_hand_over_without_overlap() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let mut own = Namespace::default();
    own.metadata.name = Some(common::CONTROLLER_NAMESPACE.into());
    let _ = ns_api.create(&PostParams::default(), &own).await;

    // A few thousand managed namespaces: 4 in 5 were managed before (bucket label present),
    // the others never were (found through the unbucketed watch).
    let run = local_control_plane::unique_name("e2e");
    let names: Vec<String> = (0..NAMESPACES).map(|i| format!("{run}-{i}")).collect();
    futures::stream::iter(names.iter().enumerate())
        .for_each_concurrent(32, |(i, name)| {
            let api = ns_api.clone();
            let run = run.clone();
            async move {
                let mut ns = Namespace::default();
                ns.metadata.name = Some(name.clone());
                let mut labels = BTreeMap::from([
                    (STATUS_LABEL.to_string(), "active".to_string()),
                    (RUN_LABEL.to_string(), run),
                ]);
                if i % 5 != 0 {
                    labels.insert(BUCKET_LABEL.to_string(), bucket_value(name));
                }
                ns.metadata.labels = Some(labels);
                api.create(&PostParams::default(), &ns)
                    .await
                    .expect("create namespace");
            }
        })
        .await;

    // Three replicas split the ranges and become ready.
    let r0 = Replica::start("block-controller-0");
    let r1 = Replica::start("block-controller-1");
    let r2 = Replica::start("block-controller-2");
    balanced(&[&r0, &r1, &r2], "3 replicas balanced").await;
    for r in [&r0, &r1, &r2] {
        common::eventually(Duration::from_secs(60), "readiness", || async {
            r.ready().then_some(())
        })
        .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let only_bucketed = Arc::new(AtomicBool::new(true));
    let (traffic_task, desired) = traffic(
        client.clone(),
        names.clone(),
        stop.clone(),
        only_bucketed.clone(),
    );

    // Steady state with traffic on managed (bucketed) namespaces: Lease writes per replica, and
    // watch events per replica against the events of owned namespaces (each such event is
    // owned by exactly one replica). The never-managed fifth joins the traffic afterwards.
    let three = [&r0, &r1, &r2];
    let lease_before: Vec<f64> = three
        .iter()
        .map(|r| r.metric("block_controller_lease_writes_total", &[]))
        .collect();
    let events_before: Vec<(f64, f64)> = three
        .iter()
        .map(|r| {
            (
                r.metric("block_controller_watch_events_total", &[]),
                r.metric(
                    "block_controller_watch_events_total",
                    &["outcome=\"owned\""],
                ),
            )
        })
        .collect();
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let mut figures = Vec::new();
    let mut owned_total = 0.0;
    let mut received = Vec::new();
    for (i, r) in three.iter().enumerate() {
        let writes = r.metric("block_controller_lease_writes_total", &[]) - lease_before[i];
        figures.push(format!(
            "lease writes/min {}: {:.0}",
            r.identity,
            writes * 60.0 / window.as_secs_f64()
        ));
        let all = r.metric("block_controller_watch_events_total", &[]) - events_before[i].0;
        let owned = r.metric(
            "block_controller_watch_events_total",
            &["outcome=\"owned\""],
        ) - events_before[i].1;
        owned_total += owned;
        received.push((r.identity.clone(), all));
    }
    for (identity, all) in received {
        figures.push(format!(
            "watch events received by {identity}: {all:.0} of {owned_total:.0} ({:.2})",
            all / owned_total.max(1.0)
        ));
    }
    only_bucketed.store(false, Ordering::Relaxed);

    // Scale 3 → 4: only the newcomer's share moves.
    let acquired = |rs: &[&Replica]| sum(rs, "block_controller_range_events_total", &["acquired"]);
    let before = acquired(&three);
    let r3 = Replica::start("block-controller-3");
    balanced(&[&r0, &r1, &r2, &r3], "4 replicas balanced").await;
    let moved = acquired(&[&r0, &r1, &r2, &r3]) - before;
    figures.push(format!(
        "ranges moved 3→4: {moved} (target ≤ {})",
        RANGES.div_ceil(4)
    ));
    assert!(moved <= f64::from(RANGES.div_ceil(4)), "moved {moved}");

    // Scale 4 → 5.
    let mut r4 = Replica::start("block-controller-4");
    balanced(&[&r0, &r1, &r2, &r3, &r4], "5 replicas balanced").await;

    // kill -9 one: the others own everything again within a lease duration (+ margin).
    r4.child.kill().expect("kill -9");
    let killed = Instant::now();
    let failover = covered(&[&r0, &r1, &r2, &r3], "takeover after SIGKILL").await - killed;
    figures.push(format!(
        "failover after SIGKILL: {failover:.1?} (lease {LEASE_SECS} s; target ≤ {} s)",
        LEASE_SECS + 2
    ));
    assert!(
        failover <= Duration::from_secs(LEASE_SECS + 4),
        "failover took {failover:?}"
    );
    let _ = r4.child.wait();

    // SIGSTOP one past its lease: the others take its ranges over. After SIGCONT it must not
    // write before it owns ranges again (the audit check below proves it); then it rejoins.
    r3.signal("STOP");
    let paused = Instant::now();
    covered(&[&r0, &r1, &r2], "takeover from the paused replica").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    figures.push(format!(
        "paused replica's ranges taken over after {:.1?}",
        paused.elapsed() - Duration::from_secs(2)
    ));
    r3.signal("CONT");
    balanced(&[&r0, &r1, &r2, &r3], "the paused replica rejoined").await;

    // SIGTERM two (scale to 2): they hand over at once.
    let mut r2 = r2;
    let mut r3 = r3;
    r3.signal("TERM");
    r2.signal("TERM");
    let termed = Instant::now();
    let handover = covered(&[&r0, &r1], "handover on SIGTERM").await - termed;
    figures.push(format!("graceful handover of 2 replicas: {handover:.1?}"));
    for r in [&mut r2, &mut r3] {
        let status = r.child.wait().expect("exit");
        assert!(status.success(), "{} exited with {status}", r.identity);
    }
    balanced(&[&r0, &r1], "2 replicas balanced").await;
    for r in [&r0, &r1] {
        common::eventually(Duration::from_secs(10), "no unclaimed range", || async {
            (r.try_metric("block_controller_unclaimed_ranges", &[]) == Some(0.0)).then_some(())
        })
        .await;
    }

    // The leader removes the member Leases of the replicas that left (SIGTERM) or died
    // (kill -9, then fenced): only the two live ones stay.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), common::CONTROLLER_NAMESPACE);
    common::eventually(
        Duration::from_secs(60),
        "member Leases of departed replicas removed",
        || async {
            let names: Vec<String> = leases
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|l| l.metadata.name)
                .filter(|n| n.starts_with("block-controller-member-"))
                .collect();
            (names.len() == 2).then_some(())
        },
    )
    .await;

    // A rolling restart does not rebalance: with the StatefulSet saying 2 replicas, a SIGTERM
    // of ordinal 1 is a restart; the survivor keeps its own ranges only, and the same identity
    // gets its ranges back when it returns.
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "block-controller", "namespace": common::CONTROLLER_NAMESPACE },
        "spec": {
            "replicas": 2,
            "serviceName": "block-controller",
            "selector": { "matchLabels": { "app": "e2e-block-controller" } },
            "template": {
                "metadata": { "labels": { "app": "e2e-block-controller" } },
                "spec": { "containers": [{ "name": "c", "image": "example.invalid/none" }] }
            }
        }
    }))
    .expect("statefulset");
    Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(
        client.clone(),
        common::CONTROLLER_NAMESPACE,
    )
    .create(&PostParams::default(), &sts)
    .await
    .expect("create the StatefulSet");
    let r0_acquired = r0.metric("block_controller_range_events_total", &["acquired"]);
    let r0_owned = r0.metric("block_controller_owned_ranges", &[]);
    let mut r1 = r1;
    r1.signal("TERM");
    let restarting = Instant::now();
    let status = r1.child.wait().expect("exit");
    assert!(status.success(), "restart exit: {status}");
    let r1 = Replica::start("block-controller-1");
    balanced(&[&r0, &r1], "the restarted replica owns its ranges again").await;
    let back = restarting.elapsed();
    assert_eq!(
        r0.metric("block_controller_range_events_total", &["acquired"]),
        r0_acquired,
        "the survivor took nothing during the restart"
    );
    assert_eq!(r0.metric("block_controller_owned_ranges", &[]), r0_owned);
    figures.push(format!(
        "rolling restart of one of 2: ranges back with the same identity after {back:.1?}, none moved"
    ));

    // Traffic stops; every requested state is reached.
    stop.store(true, Ordering::Relaxed);
    let changes = traffic_task.await.expect("traffic");
    let desired = desired.lock().expect("desired").clone();
    common::eventually(
        Duration::from_secs(120),
        "every requested lock and unlock complete",
        || async { (incomplete(&ns_api, &run, &desired).await == 0).then_some(()) },
    )
    .await;
    figures.push(format!(
        "label changes during the run: {changes}; all complete"
    ));

    // The audit log: every replica write inside the writer's epoch on that range.
    let log = common::control_plane().audit_log().expect("audit log");
    let entries = local_control_plane::audit::read(log).expect("read audit log");
    let count = shard::RangeCount::new(RANGES).expect("ranges");
    let report = local_control_plane::audit::check_ownership(
        &entries,
        block_controller::sharding::LEASE_PREFIX,
        common::CONTROLLER_NAMESPACE,
        |ns| count.range_of(ns),
    );
    figures.push(format!(
        "audit: {} replica writes checked in {} epochs, by replica {:?}; {} outside the writer's epoch",
        report.writes_checked,
        report.epochs,
        report.writes_by_replica,
        report.violations.len()
    ));
    eprintln!("--- sharding figures ---\n{}", figures.join("\n"));
    assert!(
        report.violations.is_empty(),
        "writes outside ownership: {:#?}",
        &report.violations[..report.violations.len().min(20)]
    );
    assert!(report.writes_checked > 100, "{report:?}");
    assert!(report.writes_by_replica.len() >= 4, "{report:?}");
}
