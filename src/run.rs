//! Wiring: flags → client → context → engine, BlockRequests and endpoints.

use std::sync::Arc;

use anyhow::Context as _;
use shard::RangeSet;
use tracing::{info, warn};

use crate::config::Config;
use crate::context::{Context, Kinds};
use crate::engine::Engine;
use crate::events::Recorder;
use crate::metrics::Metrics;

/// Runs the controller until SIGINT/SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let metrics = Metrics::new(&cfg.identity);
    let agent = format!(
        "block-controller/{} ({})",
        env!("CARGO_PKG_VERSION"),
        cfg.identity
    );
    let clients = crate::client::build_with_leader(
        &agent,
        cfg.kube_api_qps,
        cfg.kube_api_burst,
        cfg.api_timeout,
        Some(metrics.clone()),
    )
    .await
    .context("building the Kubernetes client")?;
    let (client, leader_client) = (clients.main.clone(), clients.leader.clone());
    let version = client
        .apiserver_version()
        .await
        .context("reaching the API server")?;
    info!(server = %version.git_version, identity = %cfg.identity, "connected");
    let kinds = Kinds::discover(&client)
        .await
        .context("discovering API resources")?;
    let ctx = Context {
        events: Recorder::new(client.clone(), &cfg.identity, &cfg.controller_namespace),
        client,
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        kinds: Arc::new(kinds),
        counting: Some(clients.counting.clone()),
    };
    // Singleton duties write with their own User-Agent (same token bucket).
    let leader_ctx = Context {
        events: Recorder::new(
            leader_client.clone(),
            &cfg.identity,
            &cfg.controller_namespace,
        ),
        client: leader_client,
        counting: None,
        ..ctx.clone()
    };
    // No ranges until the Lease protocol hands them out (a single replica claims them all).
    let engine = Engine::new(ctx.clone(), cfg.ranges, &RangeSet::new(cfg.ranges));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let liveness = crate::sharding::Liveness::new(cfg.lease_duration);
    let mut sharding = tokio::spawn(crate::sharding::run(
        ctx.clone(),
        leader_ctx,
        (clients.main_gate, clients.leader_gate),
        liveness.clone(),
        engine.clone(),
        stop_rx,
    ));

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = cfg.metrics_addr {
        let m = metrics.clone();
        tasks.spawn(crate::http::serve(
            addr,
            Arc::new(move |path: &str| match path {
                "/metrics" => (200, m.render()),
                _ => (404, "not found\n".into()),
            }),
        ));
    }
    if let Some(addr) = cfg.health_addr {
        let e = engine.clone();
        tasks.spawn(crate::http::serve(
            addr,
            Arc::new(move |path: &str| match path {
                // Alive: the Lease protocol runs and the member Lease is being renewed.
                "/healthz" => match liveness.check() {
                    Ok(()) => (200, "ok\n".into()),
                    Err(why) => (503, format!("{why}\n")),
                },
                // Ready once it owns ranges and has listed their namespaces. (More replicas than
                // ranges would leave some never ready: keep replicas ≤ --ranges.)
                "/readyz" if e.is_synced() && !e.owned().is_empty() => (200, "ok\n".into()),
                "/readyz" => (
                    503,
                    "no ranges claimed yet, or their initial list is not done\n".into(),
                ),
                _ => (404, "not found\n".into()),
            }),
        ));
    }
    tasks.spawn(engine.run());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted; handing ranges over"),
        _ = term.recv() => info!("terminated; handing ranges over"),
        r = &mut sharding => {
            return match r {
                Ok(Err(e)) => Err(e.context("lease protocol")),
                Ok(Ok(())) => anyhow::bail!("the lease protocol stopped"),
                Err(e) => anyhow::bail!("lease task failed: {e}"),
            };
        }
        r = tasks.join_next() => {
            match r {
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => anyhow::bail!("task failed: {e}"),
                _ => anyhow::bail!("a task ended unexpectedly"),
            }
        }
    }
    // Graceful handover: stop intake, finish in flight, release every range, then exit. Bounded,
    // so a vanished API server cannot hold the pod past its grace period.
    let _ = stop_tx.send(true);
    match tokio::time::timeout(cfg.lease_duration, &mut sharding).await {
        Ok(_) => info!("handed over"),
        Err(_) => {
            warn!("handover did not finish in time; the others take over after a lease duration")
        }
    }
    Ok(())
}
