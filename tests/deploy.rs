//! The shipped manifests: a server-side dry run of everything the local v1.20 server serves
//! (the `kube-1.20` overlay), and offline checks of what it does not (policy/v1,
//! flowcontrol v1, the Prometheus Operator's kinds).

mod common;

use std::process::Command;

fn kustomize(dir: &str) -> String {
    let out = Command::new("kubectl")
        .args([
            "kustomize",
            &format!("{}/{dir}", env!("CARGO_MANIFEST_DIR")),
        ])
        .output()
        .expect("kubectl is on machines of this kind");
    assert!(
        out.status.success(),
        "kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn docs(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml document"))
        .collect()
}

#[tokio::test]
async fn manifests_pass_a_server_side_dry_run() {
    let cp = common::control_plane();
    let client = cp.client().await.expect("client");
    // Namespaced objects need their namespace to exist for a dry run.
    let _ = common::create_namespace(&client, "unused", &[]).await;
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some("block-system".into());
    let _ = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await;
    let rendered = kustomize("deploy/overlays/kube-1.20");
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", cp.kubeconfig())
        .args(["apply", "--server-side", "--dry-run=server", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rendered.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("kubectl apply");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dry run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "statefulset.apps/block-controller",
        "clusterrole.rbac.authorization.k8s.io/block-controller",
        "customresourcedefinition.apiextensions.k8s.io/blockrequests.core.clawcloud.run",
        "flowschema.flowcontrol.apiserver.k8s.io/block-controller-leases",
        "poddisruptionbudget.policy/block-controller",
    ] {
        assert!(stdout.contains(kind), "{kind} missing from:\n{stdout}");
    }
}

#[test]
fn what_v1_20_lacks_is_validated_offline() {
    let base = docs(&kustomize("deploy/base"));
    let find = |kind: &str| {
        base.iter()
            .find(|d| d["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("{kind} in base"))
    };
    // Typed decoding checks field names and types of the current API versions.
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
        serde_json::from_value(find("PodDisruptionBudget")).expect("policy/v1 PDB");
    assert!(pdb.spec.and_then(|s| s.max_unavailable).is_some());
    let fs: k8s_openapi::api::flowcontrol::v1::FlowSchema =
        serde_json::from_value(find("FlowSchema")).expect("flowcontrol/v1 FlowSchema");
    assert_eq!(
        fs.spec.expect("spec").priority_level_configuration.name,
        "block-controller-leases"
    );
    let _: k8s_openapi::api::flowcontrol::v1::PriorityLevelConfiguration =
        serde_json::from_value(find("PriorityLevelConfiguration")).expect("flowcontrol/v1 PLC");
    let sts: k8s_openapi::api::apps::v1::StatefulSet =
        serde_json::from_value(find("StatefulSet")).expect("StatefulSet");
    let spec = sts.spec.expect("spec");
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));

    let monitoring = docs(&kustomize("deploy/monitoring"));
    let sm = monitoring
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    let rule = monitoring
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("PrometheusRule");
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert!(alerts.len() >= 4, "{alerts:?}");
    for r in rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
    {
        assert!(
            r["expr"]
                .as_str()
                .is_some_and(|e| e.contains("block_controller_")),
            "{r}"
        );
    }
}
