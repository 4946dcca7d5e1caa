//! Wiring: flags → client → context → engine, BlockRequests and endpoints.

use std::sync::Arc;

use anyhow::Context as _;
use shard::{RangeCount, RangeSet};
use tracing::info;

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
    let client = crate::client::build(
        &agent,
        cfg.kube_api_qps,
        cfg.kube_api_burst,
        cfg.api_timeout,
        Some(metrics.clone()),
    )
    .await
    .context("building the Kubernetes client")?;
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
    };
    // Single replica until the sharding runtime hands ranges out: every range is ours.
    let ranges = RangeCount::new(256).context("range count")?;
    let engine = Engine::new(ctx.clone(), ranges, &RangeSet::full(ranges));

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
                "/healthz" => (200, "ok\n".into()),
                "/readyz" if e.is_synced() => (200, "ok\n".into()),
                "/readyz" => (503, "initial list not done\n".into()),
                _ => (404, "not found\n".into()),
            }),
        ));
    }
    tasks.spawn(engine.run());
    let brctx = ctx.clone();
    tasks.spawn(async move {
        crate::blockrequest::run(brctx).await;
        anyhow::bail!("blockrequest controller ended")
    });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted; stopping"),
        _ = term.recv() => info!("terminated; stopping"),
        r = tasks.join_next() => {
            match r {
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => anyhow::bail!("task failed: {e}"),
                _ => anyhow::bail!("a task ended unexpectedly"),
            }
        }
    }
    Ok(())
}
