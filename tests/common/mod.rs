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
