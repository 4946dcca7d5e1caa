//! The cluster under test: a local control plane started for the run (or the one in KUBECONFIG),
//! and the controller processes started against it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use local_control_plane::ControlPlane;

/// A control plane for the run.
pub struct Cluster {
    cp: ControlPlane,
    local: bool,
}

/// How to start one controller replica.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    /// `--identity` (a StatefulSet pod name, `block-controller-<ordinal>`).
    pub identity: String,
    /// Flags after ours (they win).
    pub args: Vec<String>,
    /// Wait until `/readyz` answers 200 (it owns ranges and listed them).
    pub wait_ready: bool,
}

/// A controller process started by the load generator. Dies with the load generator.
pub struct Replica {
    /// Its `--identity`.
    pub identity: String,
    metrics_port: u16,
    health_port: u16,
    pid: u32,
    child: Option<std::process::Child>,
    /// Its log file.
    pub log: PathBuf,
}

/// The controller of the single-replica subcommands.
pub type Controller = Replica;

const CRD: &str = include_str!("../../deploy/crd/blockrequests.yaml");

impl Cluster {
    /// Starts a local control plane (or uses KUBECONFIG) and installs the CRD.
    pub async fn start(use_kubeconfig: bool) -> anyhow::Result<Cluster> {
        let cp = if use_kubeconfig {
            ControlPlane::existing()?
        } else {
            eprintln!("starting a local control plane");
            // Blocking start: run it off the async threads.
            tokio::task::spawn_blocking(|| {
                ControlPlane::start(local_control_plane::Options {
                    // Room for 100k namespaces and bursts from many clients at once.
                    extra_apiserver_args: vec![
                        "--max-requests-inflight=1000".into(),
                        "--max-mutating-requests-inflight=500".into(),
                    ],
                    ..Default::default()
                })
            })
            .await??
        };
        let cluster = Cluster {
            cp,
            local: !use_kubeconfig,
        };
        let client = cluster.client().await?;
        let crd: CustomResourceDefinition = serde_yaml::from_str(CRD).context("parsing the CRD")?;
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        api.patch(
            "blockrequests.core.clawcloud.run",
            &PatchParams::apply("loadtest").force(),
            &Patch::Apply(&crd),
        )
        .await
        .context("installing the CRD")?;
        let mut ns = Namespace::default();
        ns.metadata.name = Some("block-system".into());
        let _ = Api::<Namespace>::all(client)
            .create(&PostParams::default(), &ns)
            .await;
        Ok(cluster)
    }

    /// Whether the control plane was started by us.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// The API server's audit log, when we started the control plane.
    pub fn audit_log(&self) -> Option<&std::path::Path> {
        self.cp.audit_log()
    }

    /// A client for the load generator's own traffic.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(self.cp.client_with_agent("loadtest").await?)
    }

    /// Starts the controller of the single-replica subcommands (`block-controller-0`).
    pub async fn start_controller(&self, extra: &[String]) -> anyhow::Result<Controller> {
        if !self.local {
            bail!("with --use-kubeconfig, run the controller yourself (see deploy/) and read its metrics");
        }
        self.start_replica(&ReplicaSpec {
            identity: "block-controller-0".into(),
            args: extra.to_vec(),
            wait_ready: true,
        })
        .await
    }

    /// Starts a controller replica (the `block-controller` binary next to this one, or
    /// `$BLOCK_CONTROLLER_BIN`) against this cluster's kubeconfig.
    pub async fn start_replica(&self, spec: &ReplicaSpec) -> anyhow::Result<Replica> {
        let bin: PathBuf = match std::env::var_os("BLOCK_CONTROLLER_BIN") {
            Some(b) => b.into(),
            None => std::env::current_exe()?.with_file_name("block-controller"),
        };
        if !bin.exists() {
            bail!("{} not found: build it first with `cargo build --release -p block-controller -p loadtest` (or set BLOCK_CONTROLLER_BIN)", bin.display());
        }
        let metrics_port = free_port()?;
        let health_port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.env("KUBECONFIG", self.cp.kubeconfig())
            .env(
                "RUST_LOG",
                std::env::var("CONTROLLER_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics_port}"))
            .arg(format!(
                "--health-probe-bind-address=127.0.0.1:{health_port}"
            ))
            .arg(format!("--identity={}", spec.identity))
            .args(&spec.args);
        let log = std::env::temp_dir().join(format!(
            "loadtest-{}-{}-{metrics_port}.log",
            std::process::id(),
            spec.identity
        ));
        let child =
            local_control_plane::spawn_tied(cmd, &log).context("starting the controller")?;
        let mut replica = Replica {
            identity: spec.identity.clone(),
            metrics_port,
            health_port,
            pid: child.id(),
            child: Some(child),
            log,
        };
        if spec.wait_ready {
            replica.wait_ready(Duration::from_secs(600)).await?;
        }
        Ok(replica)
    }
}

impl Replica {
    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if http_get(self.health_port, "/readyz")
                .await
                .is_some_and(|(c, _)| c == 200)
            {
                return Ok(());
            }
            if !self.alive() {
                bail!("{} exited; log: {}", self.identity, self.log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready in {timeout:?}; log: {}",
                    self.identity,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the sampler scrapes.
    pub fn target(&self) -> crate::sampler::Target {
        crate::sampler::Target {
            identity: self.identity.clone(),
            metrics_port: self.metrics_port,
            pid: Some(self.pid),
        }
    }

    /// Whether the process still runs (reaps it when it ended).
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().context("SIGKILL")?;
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `timeout`). Returns how long it took.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        if self.child.is_none() {
            return Ok(Duration::ZERO);
        }
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        while self.alive() {
            if t0.elapsed() > timeout {
                self.kill()?;
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM",
                    self.identity
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.child = None;
        Ok(t0.elapsed())
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        http_get(self.metrics_port, "/metrics")
            .await
            .map(|(_, b)| b)
            .context("scraping the controller")
    }

    /// All API requests the controller made so far.
    pub async fn api_requests(&self) -> anyhow::Result<u64> {
        Ok(self
            .metrics()
            .await?
            .lines()
            .filter(|l| l.starts_with("block_controller_api_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum::<f64>() as u64)
    }

    /// Mean of a histogram (`<name>_sum / <name>_count`) over samples whose labels contain `filter`.
    pub async fn histogram_mean(
        &self,
        name: &str,
        filter: &str,
    ) -> anyhow::Result<Option<std::time::Duration>> {
        let text = self.metrics().await?;
        let value = |suffix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}_{suffix}{{")) && l.contains(filter))
                .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                .sum()
        };
        let (sum, count) = (value("sum"), value("count"));
        Ok((count > 0.0).then(|| std::time::Duration::from_secs_f64(sum / count)))
    }

    /// Requests by verb and resource, as a Markdown list.
    pub async fn api_breakdown(&self) -> anyhow::Result<String> {
        let mut rows: Vec<String> = self
            .metrics()
            .await?
            .lines()
            .filter(|l| l.starts_with("block_controller_api_requests_total{"))
            .map(|l| {
                format!(
                    "- {}",
                    l.trim_start_matches("block_controller_api_requests_total")
                )
            })
            .collect();
        rows.sort();
        Ok(rows.join("\n"))
    }

    /// Resident memory of the controller process.
    pub fn rss_mib(&self) -> Option<f64> {
        self.child.as_ref()?;
        rss_mib(self.pid)
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}
