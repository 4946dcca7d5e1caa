//! The controller runs with a ServiceAccount token bound to exactly the shipped ClusterRole and
//! Role (deploy/base/rbac.yaml): lock, unlock, expiry and a BlockRequest all work, and not one
//! request is Forbidden. So RBAC is neither missing nor wider than SPEC.md lists.

mod common;

use std::time::Duration;

use block_controller::api::{
    Action, BlockRequest, BlockRequestSpec, STATUS_LABEL, UNLOCK_TIMESTAMP_ANNOTATION,
};
use block_controller::state::{LOCKED_AT_ANNOTATION, LOCK_DURATION_ANNOTATION};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn kubectl_apply(kubeconfig: &std::path::Path, file: &str) {
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args([
            "apply",
            "-f",
            &format!("{}/{file}", env!("CARGO_MANIFEST_DIR")),
        ])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "applying {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A kubeconfig that authenticates as the controller's ServiceAccount.
async fn service_account_kubeconfig(cp: &local_control_plane::ControlPlane) -> std::path::PathBuf {
    kubectl_apply(cp.kubeconfig(), "deploy/base/namespace.yaml");
    kubectl_apply(cp.kubeconfig(), "deploy/base/rbac.yaml");
    let client = cp.client().await.expect("client");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "block-system");
    let secrets: Api<Secret> = Api::namespaced(client, "block-system");
    // v1.20's token controller creates a token Secret for the ServiceAccount.
    let token = common::eventually(
        Duration::from_secs(30),
        "the ServiceAccount token",
        || async {
            let sa = sas.get("block-controller").await.ok()?;
            let name = sa.secrets?.into_iter().find_map(|s| s.name)?;
            let secret = secrets.get(&name).await.ok()?;
            let token = secret.data?.get("token")?.0.clone();
            String::from_utf8(token).ok()
        },
    )
    .await;
    let dir = cp.dir().expect("our own control plane");
    let path = dir.join("controller-sa.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: sa\n\
             current-context: local\n",
            cp.server(),
            dir.join("ca.crt").display()
        ),
    )
    .expect("write kubeconfig");
    path
}

#[tokio::test]
async fn shipped_rbac_is_exactly_enough() {
    if std::env::var_os("USE_EXISTING_CLUSTER").is_some() {
        eprintln!("skipped: needs a control plane started by the tests");
        return;
    }
    let cp = common::control_plane();
    let admin = cp.client().await.expect("client");
    common::install_crd(&admin).await;
    let kubeconfig = service_account_kubeconfig(cp).await;
    let controller = common::controller_as(&[], Some(kubeconfig));

    // Lock and unlock a namespace with a Deployment, a CronJob and a bare pod.
    let ns = common::create_namespace(&admin, "rbac", &[]).await;
    let deploy: Deployment = serde_json::from_value(json!({ "metadata": { "name": "web" }, "spec": { "replicas": 2,
        "selector": { "matchLabels": { "app": "web" } },
        "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "c", "image": "busybox" }] } } } }))
    .expect("deployment");
    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({ "metadata": { "name": "bare" }, "spec": { "containers": [{ "name": "c", "image": "busybox" }] } })).expect("pod");
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let label = |v: &'static str| json!({ "metadata": { "labels": { STATUS_LABEL: v } } });
    let nss: Api<Namespace> = Api::all(admin.clone());
    nss.patch(&ns, &PatchParams::default(), &Patch::Merge(label("locked")))
        .await
        .expect("label");
    common::eventually(Duration::from_secs(30), "locked", || async {
        let n = nss.get(&ns).await.ok()?;
        n.metadata
            .annotations?
            .contains_key(LOCKED_AT_ANNOTATION)
            .then_some(())
    })
    .await;
    nss.patch(&ns, &PatchParams::default(), &Patch::Merge(label("active")))
        .await
        .expect("label");
    common::eventually(Duration::from_secs(30), "unlocked", || async {
        let n = nss.get(&ns).await.ok()?;
        (!n.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(UNLOCK_TIMESTAMP_ANNOTATION))
        .then_some(())
    })
    .await;

    // Expiry.
    let doomed = local_control_plane::unique_name("rbac-expire");
    let mut n = Namespace::default();
    n.metadata.name = Some(doomed.clone());
    n.metadata.labels = Some([(STATUS_LABEL.to_string(), "locked".to_string())].into());
    n.metadata.annotations =
        Some([(LOCK_DURATION_ANNOTATION.to_string(), "2s".to_string())].into());
    nss.create(&PostParams::default(), &n)
        .await
        .expect("create");
    common::eventually(Duration::from_secs(30), "expiry deletion", || async {
        match nss.get_opt(&doomed).await.ok()? {
            None => Some(()),
            Some(n) => n.metadata.deletion_timestamp.map(|_| ()),
        }
    })
    .await;

    // A BlockRequest (finalizer, status).
    let home = common::create_namespace(&admin, "rbac-home", &[]).await;
    let target = common::create_namespace(&admin, "rbac-target", &[]).await;
    let brs: Api<BlockRequest> = Api::namespaced(admin.clone(), &home);
    let br = BlockRequest::new(
        "r",
        BlockRequestSpec {
            namespace_names: vec![target.clone()],
            namespace_selector: None,
            action: Action::Active,
        },
    );
    brs.create(&PostParams::default(), &br)
        .await
        .expect("blockrequest");
    common::eventually(Duration::from_secs(30), "the request processed", || async {
        let br = brs.get("r").await.ok()?;
        (br.status?.applied_count == 1).then_some(())
    })
    .await;

    let metrics = controller.metrics();
    let forbidden: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("block_controller_api_requests_total") && l.contains("code=\"403\"")
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "Forbidden requests:\n{}",
        forbidden.join("\n")
    );
    let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "the controller log mentions Forbidden"
    );
}
