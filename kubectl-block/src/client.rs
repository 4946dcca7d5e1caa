//! The connection: kubeconfig (`KUBECONFIG`, `--kubeconfig`, `--context`), the namespace for
//! BlockRequests (`-n`), and API errors turned into messages that say what to do.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

/// The BlockRequest CRD's full name.
pub const CRD_NAME: &str = "blockrequests.core.clawcloud.run";

/// Flags every command takes.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Namespace for BlockRequests (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Namespace the controller runs in: never locked by --all, holds the range Leases.
    #[arg(
        long,
        global = true,
        default_value = "block-system",
        value_name = "NAMESPACE"
    )]
    pub controller_namespace: String,

    /// How long to wait for one API request (e.g. 30s, 1m).
    #[arg(long, global = true, default_value = "30s", value_parser = parse_timeout, value_name = "DURATION")]
    pub request_timeout: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero".into()),
        Err(e) => Err(format!("{s:?} is not a duration like 30s or 1m: {e}")),
    }
}

/// A connected client and what the commands need to know about the connection.
#[derive(Clone)]
pub struct Kube {
    /// The client.
    pub client: Client,
    /// The API server URL (for error messages).
    pub url: String,
    /// Namespace for BlockRequests.
    pub namespace: String,
    /// The controller's namespace.
    pub controller_namespace: String,
}

impl Kube {
    /// Reads the kubeconfig (or the in-cluster configuration when there is none and no
    /// kubeconfig flag was given) and checks that the API server answers.
    pub async fn connect(g: &GlobalArgs) -> Result<Kube> {
        let options = KubeConfigOptions {
            context: g.context.clone(),
            cluster: None,
            user: None,
        };
        let mut config = match &g.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .with_context(|| format!("using kubeconfig {}", path.display()))?
            }
            None => match kube::Config::from_kubeconfig(&options).await {
                Ok(c) => c,
                Err(e) if g.context.is_none() => kube::Config::incluster().map_err(|_| {
                    anyhow!(
                        "no usable kubeconfig (set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config): {e}"
                    )
                })?,
                Err(e) => return Err(anyhow!("kubeconfig: {e}")),
            },
        };
        config.connect_timeout = Some(g.request_timeout.min(Duration::from_secs(10)));
        config.read_timeout = Some(g.request_timeout);
        config.write_timeout = Some(g.request_timeout);
        let url = config.cluster_url.to_string();
        let url = url.trim_end_matches('/').to_string();
        let namespace = g
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| anyhow!("building a client for {url}: {}", root_cause(&e)))?;
        let kube = Kube {
            client,
            url,
            namespace,
            controller_namespace: g.controller_namespace.clone(),
        };
        // One cheap request first, so "no cluster" is reported as such and not as the failure
        // of whatever the command does first.
        kube.client
            .apiserver_version()
            .await
            .map_err(|e| kube.error(e, "get", "the server version"))?;
        Ok(kube)
    }

    /// Explains a failed API call: unreachable server, forbidden (naming verb and resource),
    /// unauthorized, or the server's own message.
    pub fn error(&self, e: kube::Error, verb: &str, resource: &str) -> anyhow::Error {
        match e {
            kube::Error::Api(s) if s.code == 403 => {
                anyhow!("forbidden: not allowed to {verb} {resource}: {}", s.message)
            }
            kube::Error::Api(s) if s.code == 401 => anyhow!(
                "unauthorized: the API server at {} rejected the credentials of this kubeconfig ({})",
                self.url,
                s.message
            ),
            kube::Error::Api(s) => {
                anyhow!("{verb} {resource}: {} (HTTP {})", s.message.trim(), s.code)
            }
            e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => anyhow!(
                "cannot reach the Kubernetes API server at {}: {}",
                self.url,
                root_cause(&e)
            ),
            other => anyhow!("{verb} {resource}: {}", root_cause(&other)),
        }
    }

    /// Fails with the install hint unless the BlockRequest CRD is served.
    pub async fn require_crd(&self) -> Result<()> {
        if self.crd_installed().await? {
            Ok(())
        } else {
            Err(crd_missing())
        }
    }

    /// Whether the server serves `blockrequests.core.clawcloud.run/v1`.
    pub async fn crd_installed(&self) -> Result<bool> {
        match self
            .client
            .list_api_group_resources("core.clawcloud.run/v1")
            .await
        {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == "blockrequests")),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.error(e, "discover", "the API group core.clawcloud.run/v1")),
        }
    }
}

/// The message for a cluster without the CRD.
pub fn crd_missing() -> anyhow::Error {
    anyhow!(
        "the BlockRequest CRD ({CRD_NAME}) is not installed; apply deploy/crd/blockrequests.yaml"
    )
}

/// Whether an API error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The innermost message of an error chain, where the actual cause is (e.g. "Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = vec![e.to_string()];
    let mut current = e.source();
    while let Some(inner) = current {
        messages.push(inner.to_string());
        current = inner.source();
    }
    // Keep the last message, plus the one before when it adds context (e.g. "tcp connect error").
    let last = messages.pop().unwrap_or_default();
    match messages.pop() {
        Some(prev) if !prev.contains(&last) && prev.len() < 60 => format!("{prev}: {last}"),
        _ => last,
    }
}
