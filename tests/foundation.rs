//! The foundation against a real API server: the control plane itself, the CRD as users apply it,
//! server-side validation, printer columns, the audit log, and clean teardown.

mod common;

use std::time::Duration;

use block_controller::api::{Action, BlockRequest, BlockRequestSpec, BlockRequestStatus};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let generated = block_controller::api::crd_yaml().expect("render CRD");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crd/blockrequests.yaml");
    let checked_in = std::fs::read_to_string(path).expect("read the checked-in CRD");
    assert!(
        generated == checked_in,
        "deploy/crd/blockrequests.yaml drifted from src/api.rs; regenerate it with\n  \
         cargo run -q -- crd > deploy/crd/blockrequests.yaml"
    );
}

#[tokio::test]
async fn server_is_the_expected_kubernetes() {
    let client = common::client().await;
    let v = client.apiserver_version().await.expect("GET /version");
    assert_eq!(v.major, "1");
    if std::env::var_os("KUBEBUILDER_ASSETS").is_none()
        && std::env::var_os("USE_EXISTING_CLUSTER").is_none()
    {
        // Our own provisioning builds v1.20.2 with the version stamped in.
        assert_eq!(v.git_version, "v1.20.2");
    }
}

/// Creating a custom resource is what crashed a Go ≥ 1.18 build with the vendored reflect2
/// v1.0.1: this test keeps that from coming back unnoticed.
#[tokio::test]
async fn crd_accepts_valid_requests_and_the_server_rejects_a_bad_action() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::create_namespace(&client, "crd", &[]).await;
    let api: Api<BlockRequest> = Api::namespaced(client.clone(), &ns);

    let mut br = BlockRequest::new(
        "lock-some",
        BlockRequestSpec {
            namespace_names: vec!["a".into(), "b".into()],
            namespace_selector: Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some([("team".to_string(), "x".to_string())].into()),
                    match_expressions: None,
                },
            ),
            action: Action::Locked,
        },
    );
    let created = api
        .create(&PostParams::default(), &br)
        .await
        .expect("create a valid BlockRequest");
    assert_eq!(created.spec, br.spec, "the server keeps the spec as sent");

    // The API server is still alive after the first custom resource (the reflect2 crash).
    client
        .apiserver_version()
        .await
        .expect("API server alive after creating a custom resource");

    // Status is a subresource: writing it through the main resource is ignored, through /status kept.
    let status = BlockRequestStatus {
        target_count: 2,
        applied_count: 1,
        ..Default::default()
    };
    let patched = api
        .patch_status(
            "lock-some",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .expect("patch status");
    assert_eq!(patched.status.as_ref().map(|s| s.target_count), Some(2));

    // An action outside the enum is refused by the server, not by us.
    let bad = serde_json::json!({
        "apiVersion": "core.clawcloud.run/v1",
        "kind": "BlockRequest",
        "metadata": { "name": "bad-action", "namespace": ns },
        "spec": { "action": "frozen" }
    });
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<BlockRequest>(&()),
    );
    let obj: kube::api::DynamicObject = serde_json::from_value(bad).expect("dynamic object");
    let err = raw
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("invalid action must be rejected");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains("frozen"), "{}", status.message);
        }
        other => panic!("expected a 422 from the server, got {other}"),
    }

    // A missing action is refused too (it is required).
    br.metadata.name = Some("no-action".into());
    let mut v = serde_json::to_value(&br).expect("serialize");
    v["spec"]
        .as_object_mut()
        .expect("spec object")
        .remove("action");
    let obj: kube::api::DynamicObject = serde_json::from_value(v).expect("dynamic object");
    let err = raw
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("missing action must be rejected");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err}"
    );
}

/// `kubectl get blockrequests` asks the server for a Table; the columns come from the CRD.
#[tokio::test]
async fn printer_columns_are_served() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let ns = common::create_namespace(&client, "columns", &[]).await;
    let req = http::Request::get(format!(
        "/apis/core.clawcloud.run/v1/namespaces/{ns}/blockrequests"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .expect("request");
    let table: serde_json::Value = client.request(req).await.expect("table");
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columnDefinitions")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["Name", "Action", "Targets", "Applied", "Ready", "Age"]
    );
}

/// Every mutating request lands in the audit log with the client's user agent, which is how the
/// sharding tests tell replicas apart.
#[tokio::test]
async fn audit_log_records_mutations_with_user_agent() {
    let cp = common::control_plane();
    let Some(audit) = cp.audit_log() else {
        eprintln!("skipped: an existing cluster has no audit log of ours");
        return;
    };
    let client = cp
        .client_with_agent("audit-probe/1.0 (replica-x)")
        .await
        .expect("client");
    let name = local_control_plane::unique_name("audit");
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    Api::<Namespace>::all(client)
        .create(&PostParams::default(), &ns)
        .await
        .expect("create");
    let found = common::eventually(Duration::from_secs(10), "the audit entry", || {
        let name = name.clone();
        async move {
            let log = std::fs::read_to_string(audit).ok()?;
            log.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|e| e["verb"] == "create" && e["objectRef"]["name"] == name.as_str())
        }
    })
    .await;
    assert_eq!(found["userAgent"], "audit-probe/1.0 (replica-x)");
    assert_eq!(found["level"], "Metadata");
    assert_eq!(found["responseStatus"]["code"], 201);
}

/// The controller manager runs: deleting a namespace with content really removes it.
#[tokio::test]
async fn namespace_deletion_completes() {
    let client = common::client().await;
    let ns = common::create_namespace(&client, "delete-me", &[]).await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
    cm.metadata.name = Some("content".into());
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("configmap");
    let api: Api<Namespace> = Api::all(client.clone());
    api.delete(&ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
    common::eventually(Duration::from_secs(60), "the namespace to be gone", || {
        let api = api.clone();
        let ns = ns.clone();
        async move {
            api.get_opt(&ns)
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await;
}

/// A control plane of its own, dropped: no process and no port stays behind.
#[test]
fn teardown_leaves_nothing_behind() {
    if std::env::var_os("USE_EXISTING_CLUSTER").is_some() {
        return;
    }
    let mut cp = local_control_plane::ControlPlane::start(local_control_plane::Options {
        controller_manager: false,
        ..Default::default()
    })
    .expect("start a second control plane");
    let dir = cp.dir().expect("own dir").to_path_buf();
    let server = cp.server().to_string();
    let port: u16 = server
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    // Every component's command line names the working directory (etcd's data dir too).
    let needle = dir
        .file_name()
        .expect("dir name")
        .to_string_lossy()
        .into_owned();
    let pids = pids_with_arg(&needle);
    assert!(
        pids.len() >= 2,
        "etcd and kube-apiserver run with {}: {pids:?}",
        dir.display()
    );
    eprintln!("second control plane ready in {:?}", cp.startup_time());
    cp.stop();
    let left = pids_with_arg(&needle);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(!dir.exists(), "working directory left behind");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the API server's port is free again");
}

fn pids_with_arg(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            // Zombies have an empty cmdline and are not running.
            if String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}
