//! `loadtest`: measures block-controller against a real API server and prints the figures.
//!
//! Subcommands (each starts a local control plane and the controller unless `--use-kubeconfig`):
//! - `latency`: label → lock complete, and → unlock complete, for one namespace with 3 workloads,
//!   repeated `--runs` times (median, p90, p99, max), plus API calls per lock and per unlock from
//!   the controller's own request counter.
//! - `idle`: with `--namespaces` managed namespaces (locked-and-complete or active), the API calls
//!   the controller makes at start-up and per minute while nothing changes.
//!
//! - `run`: the full profile (default 100,000 namespaces, 3 replicas): creates or resumes the
//!   population, starts the replicas, runs idle, label bursts, a 10,000-namespace BlockRequest,
//!   expiries, scale R→R+1→R−1, `kill -9`, a graceful restart and the raw-capacity probe; checks
//!   for lost work and overlapping ownership (audit log); writes `result.json`, `report.md` and SVG
//!   charts. Exits non-zero when a check fails.
//!
//! Build first: `cargo build --release -p block-controller -p loadtest`, then e.g.
//! `target/release/loadtest latency --runs 200` or `target/release/loadtest run`.

mod audit;
mod capacity;
mod cluster;
mod fleet;
mod names;
mod population;
mod progress;
mod prom;
mod report;
mod run;
mod sampler;
mod stats;
mod svg;
mod tracker;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::cluster::Cluster;
use crate::stats::Summary;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Measures block-controller against a real API server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Use the cluster (and the controller already running there) named by KUBECONFIG instead of
    /// starting a local control plane and a controller.
    #[arg(long, global = true)]
    use_kubeconfig: bool,
    /// Extra flags for the controller started locally.
    #[arg(long, global = true, allow_hyphen_values = true)]
    controller_arg: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Event-to-done latency of lock and unlock, and API calls per lock/unlock.
    Latency {
        /// Namespaces locked then unlocked one after the other.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Deployments per namespace.
        #[arg(long, default_value_t = 3)]
        workloads: usize,
        /// Pause between flows, so the controller's token bucket (default 50 QPS) refills and the
        /// figure is the latency of one change on an idle controller; 0 measures back-to-back
        /// changes, where the client-side rate limit dominates.
        #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
        pause: Duration,
    },
    /// API calls at start-up and while idle with many managed namespaces.
    Idle {
        /// Managed namespaces (half locked-and-complete, half active).
        #[arg(long, default_value_t = 10_000)]
        namespaces: usize,
        /// How long to watch the idle controller.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// The full profile: population, replicas, scenarios, checks, report (see `run --help`).
    #[command(alias = "full")]
    Run(Box<run::RunArgs>),
    /// The ownership check of a finished run, again, over the audit log and its rotated files;
    /// rewrites the run's result.json and report.md.
    Audit {
        /// The run's output folder.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The API server's audit log (its rotated `audit-*.log` siblings are read too).
        #[arg(long)]
        audit_log: std::path::PathBuf,
        /// `--ranges` of the replicas.
        #[arg(long, default_value_t = 256)]
        ranges: u32,
        /// The controller's namespace.
        #[arg(long, default_value = "block-system")]
        controller_namespace: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs to stderr: stdout carries the report. The control plane's readiness probe logs
    // connection errors while it starts; they are expected.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Latency {
                runs,
                workloads,
                pause,
            } => {
                latency(
                    cli.use_kubeconfig,
                    &cli.controller_arg,
                    runs,
                    workloads,
                    pause,
                )
                .await
            }
            Command::Idle {
                namespaces,
                duration,
            } => {
                idle(
                    cli.use_kubeconfig,
                    &cli.controller_arg,
                    namespaces,
                    duration,
                )
                .await
            }
            Command::Audit {
                out,
                audit_log,
                ranges,
                controller_namespace,
            } => {
                let passed = run::recheck(&out, &audit_log, ranges, &controller_namespace)?;
                if !passed {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Run(args) => {
                let passed = run::run(*args, cli.use_kubeconfig, cli.controller_arg).await?;
                if !passed {
                    std::process::exit(1);
                }
                Ok(())
            }
        }
    })
}

const STATUS_LABEL: &str = "clawcloud.run/status";
const LOCKED_AT: &str = "core.clawcloud.run/locked-at";
const UNLOCK_AT: &str = "clawcloud.run/unlock-timestamp";

async fn latency(
    use_kubeconfig: bool,
    extra: &[String],
    runs: usize,
    workloads: usize,
    pause: Duration,
) -> anyhow::Result<()> {
    let cluster = Cluster::start(use_kubeconfig).await?;
    let client = cluster.client().await?;
    let prefix = format!("lat-{}", std::process::id());
    eprintln!("creating {runs} namespaces with {workloads} Deployments each");
    let ns_api: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(0..runs)
        .for_each_concurrent(16, |i| {
            let client = client.clone();
            let ns_api = ns_api.clone();
            let name = format!("{prefix}-{i}");
            async move {
                let mut ns = Namespace::default();
                ns.metadata.name = Some(name.clone());
                let _ = ns_api.create(&PostParams::default(), &ns).await;
                let d: Api<Deployment> = Api::namespaced(client, &name);
                for w in 0..workloads {
                    let dep: Deployment = serde_json::from_value(json!({
                        "metadata": { "name": format!("w{w}") },
                        "spec": { "replicas": 2, "selector": { "matchLabels": { "app": format!("w{w}") } },
                                  "template": { "metadata": { "labels": { "app": format!("w{w}") } },
                                                "spec": { "containers": [{ "name": "c", "image": "busybox" }] } } }
                    }))
                    .expect("static deployment");
                    let _ = d.create(&PostParams::default(), &dep).await;
                }
            }
        })
        .await;
    let controller = cluster.start_controller(extra).await?;

    // One watch over every managed namespace tells when each lock/unlock completes.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool, Instant)>();
    let watch_api: Api<kube::api::PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let watch = tokio::spawn(async move {
        let mut s =
            watcher::watcher(watch_api, watcher::Config::default().labels(STATUS_LABEL)).boxed();
        while let Some(Ok(ev)) = s.next().await {
            if let watcher::Event::Apply(m) | watcher::Event::InitApply(m) = ev {
                let a = m.metadata.annotations.unwrap_or_default();
                let name = m.metadata.name.unwrap_or_default();
                let locked = a.contains_key(LOCKED_AT);
                let clean = !locked && !a.contains_key(UNLOCK_AT);
                if locked || clean {
                    let _ = tx.send((name, locked, Instant::now()));
                }
            }
        }
    });

    let calls_before = controller.api_requests().await?;
    let mut lock_lat = Vec::with_capacity(runs);
    let mut unlock_lat = Vec::with_capacity(runs);
    let mut lock_calls = 0u64;
    let mut unlock_calls = 0u64;
    for i in 0..runs {
        let name = format!("{prefix}-{i}");
        for (value, want_locked, lat, calls) in [
            ("locked", true, &mut lock_lat, &mut lock_calls),
            ("active", false, &mut unlock_lat, &mut unlock_calls),
        ] {
            tokio::time::sleep(pause).await;
            let before = controller.api_requests().await?;
            let t0 = Instant::now();
            ns_api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "metadata": { "labels": { STATUS_LABEL: value } } })),
                )
                .await
                .with_context(|| format!("labelling {name}"))?;
            let done = loop {
                let (n, locked, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                    .await
                    .with_context(|| format!("{name} not {value} within 30 s"))?
                    .context("watch ended")?;
                if n == name && locked == want_locked && at >= t0 {
                    break at;
                }
            };
            lat.push(done - t0);
            // Let trailing calls (Events) land before counting.
            tokio::time::sleep(Duration::from_millis(50)).await;
            *calls += controller.api_requests().await? - before;
        }
    }
    watch.abort();
    let total = controller.api_requests().await? - calls_before;
    println!("## latency: label change → lock / unlock complete ({runs} runs, {workloads} Deployments each, {pause:?} between changes)\n");
    println!("| flow | median | p90 | p99 | max | API calls per flow |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let l = Summary::of(&lock_lat);
    let u = Summary::of(&unlock_lat);
    println!(
        "| lock | {} | {} | {} | {} | {:.1} |",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.max),
        lock_calls as f64 / runs as f64
    );
    println!(
        "| unlock | {} | {} | {} | {} | {:.1} |",
        ms(u.p50),
        ms(u.p90),
        ms(u.p99),
        ms(u.max),
        unlock_calls as f64 / runs as f64
    );
    println!("\ncontroller API requests during the runs: {total}");
    for action in ["lock", "unlock"] {
        let f = format!("action=\"{action}\"");
        let work = controller
            .histogram_mean("block_controller_reconcile_duration_seconds", &f)
            .await?;
        let e2d = controller
            .histogram_mean("block_controller_event_to_done_seconds", &f)
            .await?;
        println!(
            "controller-side {action}: mean reconcile {:?}, mean event-to-done {:?}",
            work.unwrap_or_default(),
            e2d.unwrap_or_default()
        );
    }
    for verb in ["list", "patch", "create", "delete"] {
        let f = format!("verb=\"{verb}\"");
        let mean = controller
            .histogram_mean("block_controller_api_request_duration_seconds", &f)
            .await?;
        println!(
            "controller-side mean {verb} request: {:?}",
            mean.unwrap_or_default()
        );
    }
    println!("\n{}", controller.api_breakdown().await?);
    Ok(())
}

async fn idle(
    use_kubeconfig: bool,
    extra: &[String],
    namespaces: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let cluster = Cluster::start(use_kubeconfig).await?;
    let client = cluster.client().await?;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let prefix = format!("idle-{}", std::process::id());
    eprintln!("creating {namespaces} managed namespaces (half locked and complete, half active)");
    let far = "2099-01-01T00:00:00Z";
    let t0 = Instant::now();
    futures::stream::iter(0..namespaces)
        .for_each_concurrent(32, |i| {
            let ns_api = ns_api.clone();
            let name = format!("{prefix}-{i}");
            async move {
                let v = if i % 2 == 0 {
                    json!({ "metadata": { "name": name, "labels": { STATUS_LABEL: "locked" }, "annotations": { UNLOCK_AT: far, LOCKED_AT: far } } })
                } else {
                    json!({ "metadata": { "name": name, "labels": { STATUS_LABEL: "active" } } })
                };
                let ns: Namespace = serde_json::from_value(v).expect("static namespace");
                let _ = ns_api.create(&PostParams::default(), &ns).await;
            }
        })
        .await;
    eprintln!("created in {:?}", t0.elapsed());
    let started = Instant::now();
    let controller = cluster.start_controller(extra).await?;
    let ready = started.elapsed();
    let at_start = controller.api_requests().await?;
    let startup_breakdown = controller.api_breakdown().await?;
    tokio::time::sleep(duration).await;
    let after = controller.api_requests().await?;
    let per_minute = (after - at_start) as f64 * 60.0 / duration.as_secs_f64();
    println!("## idle: {namespaces} managed namespaces\n");
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| start to ready (initial list done) | {} |", ms(ready));
    println!("| API requests at start-up (until ready) | {at_start} |");
    println!(
        "| API requests per minute while idle (over {:?}) | {per_minute:.1} |",
        duration
    );
    println!(
        "| controller RSS after start-up | {} MiB |",
        controller
            .rss_mib()
            .map(|m| format!("{m:.1}"))
            .unwrap_or_else(|| "n/a".into())
    );
    println!("\nstart-up requests:\n{startup_breakdown}");
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
