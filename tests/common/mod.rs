//! Shared helpers of the integration tests: the per-binary control plane, CRD installation,
//! unique namespaces.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use local_control_plane::ControlPlane;

/// The control plane of this test binary (started on first use).
pub fn control_plane() -> &'static ControlPlane {
    match local_control_plane::shared() {
        Ok(cp) => cp,
        Err(e) => panic!("no control plane for the tests: {e}"),
    }
}

/// A client for the control plane, in the calling test's runtime.
pub async fn client() -> Client {
    control_plane()
        .client()
        .await
        .expect("client for the local control plane")
}

/// Installs (or updates) the BlockRequest CRD from the checked-in YAML and waits until it is
/// established, so tests exercise exactly what users apply.
pub async fn install_crd(client: &Client) {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/crd/blockrequests.yaml"
    ))
    .expect("read deploy/crd/blockrequests.yaml");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("parse the CRD YAML");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().expect("CRD has a name");
    api.patch(
        &name,
        &PatchParams::apply("block-controller-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD");
    let cond = kube::runtime::wait::conditions::is_crd_established();
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(api, &name, cond),
    )
    .await
    .expect("CRD established within 30 s")
    .expect("watching the CRD");
}

/// Creates a namespace with a unique name (prefix kept) and the given labels; returns its name.
pub async fn create_namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let name = local_control_plane::unique_name(prefix);
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    if !labels.is_empty() {
        ns.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The controller under test: the real `block-controller` binary, one per test binary, against
/// this binary's control plane. It dies with the test binary.
pub struct Controller {
    /// Its `/metrics` URL.
    pub metrics_url: String,
    /// Its log file.
    pub log: std::path::PathBuf,
}

/// The controller's namespace in tests (protected; holds Events about expired namespaces).
pub const CONTROLLER_NAMESPACE: &str = "block-system";
/// A namespace protected through `--protected-namespaces`.
pub const FLAG_PROTECTED: &str = "protected-by-flag";

/// Starts (once) the controller binary with `args` added to the test defaults.
pub fn controller_with(args: &'static [&'static str]) -> &'static Controller {
    controller_as(args, None)
}

/// Like [`controller_with`], with the controller's own kubeconfig (e.g. a ServiceAccount token).
pub fn controller_as(
    args: &'static [&'static str],
    kubeconfig: Option<std::path::PathBuf>,
) -> &'static Controller {
    static CONTROLLER: std::sync::OnceLock<Controller> = std::sync::OnceLock::new();
    CONTROLLER.get_or_init(|| {
        let cp = control_plane();
        // Set-up needs a runtime of its own: this may run inside a test's runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = cp.client().await.expect("client");
                install_crd(&client).await;
                for ns in [CONTROLLER_NAMESPACE, FLAG_PROTECTED] {
                    let mut n = Namespace::default();
                    n.metadata.name = Some(ns.to_string());
                    match Api::<Namespace>::all(client.clone())
                        .create(&PostParams::default(), &n)
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => panic!("creating {ns}: {e}"),
                    }
                }
            })
        })
        .join()
        .expect("set-up");
        let metrics = free_port();
        let health = free_port();
        let log =
            std::env::temp_dir().join(format!("block-controller-test-{}.log", std::process::id()));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_block-controller"));
        cmd.env(
            "KUBECONFIG",
            kubeconfig.as_deref().unwrap_or(cp.kubeconfig()),
        )
        .env("RUST_LOG", "info,block_controller=debug,kube=warn")
        .env_remove("POD_NAMESPACE")
        .env_remove("POD_NAME")
        .arg(format!("--metrics-bind-address=127.0.0.1:{metrics}"))
        .arg(format!("--health-probe-bind-address=127.0.0.1:{health}"))
        .arg(format!("--controller-namespace={CONTROLLER_NAMESPACE}"))
        .arg(format!("--protected-namespaces={FLAG_PROTECTED}"))
        .arg("--identity=block-controller-test")
        .arg("--kube-api-qps=500")
        .arg("--kube-api-burst=1000")
        .args(args);
        let mut child = local_control_plane::spawn_tied(cmd, &log).expect("spawn block-controller");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let out = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("block-controller exited early ({status}):\n{out}");
            }
            if http_get(health, "/readyz").is_some_and(|(code, _)| code == 200) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "block-controller not ready in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The child handle is dropped, not killed: the process lives as long as the test binary.
        std::mem::forget(child);
        eprintln!("controller log: {}", log.display());
        Controller {
            metrics_url: format!("127.0.0.1:{metrics}"),
            log,
        }
    })
}

/// Starts (once) the controller with the default test flags.
pub fn controller() -> &'static Controller {
    controller_with(&["--expiry-warning=3s"])
}

impl Controller {
    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let port: u16 = self
            .metrics_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Sum of `block_controller_api_requests_total` samples whose labels contain all of `filters`.
    pub fn api_requests(&self, filters: &[&str]) -> u64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("block_controller_api_requests_total{"))
            .filter(|l| filters.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum::<f64>() as u64
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A plain HTTP GET on loopback: `(status, body)`.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}
