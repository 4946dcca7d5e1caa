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

/// Every series name the controller exports: the registry rendered after touching each metric
/// (a labelled family renders only once it has a child), histograms with their `_bucket`,
/// `_sum` and `_count` series.
fn exported_series() -> std::collections::BTreeSet<String> {
    use block_controller::metrics::{Metrics, RequestLabels};
    use std::time::Duration;
    let m = Metrics::new("x");
    let d = Duration::from_millis(5);
    let req = http::Request::builder()
        .method("GET")
        .uri("/api/v1/namespaces/x")
        .body(())
        .expect("request");
    m.api_request(&RequestLabels::of(&req), "200", d);
    m.rate_limited(d);
    m.reconcile("lock", "ok", d);
    m.event_to_done("lock", d);
    m.set_queue_depth(1);
    m.set_index(1, 1, 1);
    m.set_owned_ranges(1);
    m.set_ranges(1);
    m.lease_write("member", "ok");
    m.range_event("acquired", 1);
    m.handover(d);
    m.set_leader(true);
    m.expiry("deleted");
    m.problem("unlock_timestamp");
    m.watch_event("owned");
    block_controller::telemetry::parse_exposition(&m.render())
        .into_iter()
        .flat_map(|f| {
            let mut names: Vec<String> = f.samples.into_iter().map(|s| s.name).collect();
            names.push(f.name);
            names
        })
        .collect()
}

/// The `block_controller_*` metric names a PromQL expression refers to.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("block_controller_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let exported = exported_series();
    assert!(
        exported.contains("block_controller_owned_ranges"),
        "{exported:?}"
    );
    assert!(exported.contains("block_controller_process_resident_memory_bytes"));

    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")).expect("JSON");
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "replica"]);
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    let mut exprs = 0;
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {p}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{}: {expr}", p["title"]);
            for n in names {
                assert!(
                    exported.contains(&n),
                    "panel {}: {n} is not exported by the controller",
                    p["title"]
                );
            }
            // Per-shard panels follow the replica selector; only whole-installation
            // aggregates (no label selector at all) may ignore it.
            assert!(
                !expr.contains('{') || expr.contains(r#"replica=~"$replica""#),
                "{}: {expr}",
                p["title"]
            );
            exprs += 1;
        }
    }
    assert!(exprs >= 20, "{exprs} expressions");
    let all: String = panels.iter().map(|p| p.to_string()).collect();
    for metric in [
        "block_controller_owned_ranges",
        "block_controller_ranges",
        "block_controller_indexed_namespaces",
        "block_controller_locked_namespaces",
        "block_controller_queue_depth",
        "block_controller_reconciles_total",
        "block_controller_reconcile_duration_seconds_bucket",
        "block_controller_event_to_done_seconds_bucket",
        "block_controller_api_requests_total",
        "block_controller_client_rate_limited_total",
        "block_controller_lease_writes_total",
        "block_controller_range_events_total",
        "block_controller_handover_duration_seconds_bucket",
        "block_controller_leader",
        "block_controller_process_resident_memory_bytes",
    ] {
        assert!(all.contains(metric), "no panel shows {metric}");
    }

    let rule: serde_json::Value =
        serde_yaml::from_str(&read("deploy/monitoring/prometheusrule.yaml")).expect("YAML");
    let rules = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules");
    for r in rules {
        let expr = r["expr"].as_str().expect("expr");
        for n in metric_names(expr) {
            assert!(
                exported.contains(&n),
                "alert {}: {n} is not exported",
                r["alert"]
            );
        }
    }
    let alerts: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for a in [
        "BlockControllerUnownedRanges",
        "BlockControllerLeaseFlapping",
        "BlockControllerLeaseWriteFailures",
        "BlockControllerNoLeader",
        "BlockControllerReconcileErrors",
        "BlockControllerExpiryDeletionsSpike",
        "BlockControllerMemoryNearBudget",
    ] {
        assert!(alerts.contains(&a), "{a} missing from {alerts:?}");
    }
}

#[test]
fn collector_example_wires_what_it_defines() {
    let cfg: serde_json::Value =
        serde_yaml::from_str(&read("deploy/monitoring/otel-collector.yaml")).expect("YAML");
    assert!(cfg["receivers"]["otlp"]["protocols"]["http"].is_object());
    for (signal, pipeline) in cfg["service"]["pipelines"].as_object().expect("pipelines") {
        for section in ["receivers", "processors", "exporters"] {
            for name in pipeline[section].as_array().expect(section) {
                let name = name.as_str().expect("name");
                assert!(
                    cfg[section][name].is_object(),
                    "{signal}: {section} {name} is not defined"
                );
            }
        }
    }
    let exporters = &cfg["service"]["pipelines"]["metrics"]["exporters"];
    assert!(exporters
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e == "prometheus")));
}

#[test]
fn statefulset_probes_resources_and_grace() {
    let base = docs(&kustomize("deploy/base"));
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(
        base.iter()
            .find(|d| d["kind"] == "StatefulSet")
            .cloned()
            .expect("StatefulSet"),
    )
    .expect("StatefulSet");
    let pod = sts.spec.expect("spec").template.spec.expect("pod spec");
    // Longer than a handover: --renew-deadline (10 s) plus in-flight work.
    assert!(pod.termination_grace_period_seconds.unwrap_or(30) >= 30);
    let c = &pod.containers[0];
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let ports: Vec<_> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert!(ports.contains(&("health".into(), 8081)), "{ports:?}");
    let res = c.resources.as_ref().expect("resources");
    let q = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
             k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    assert_eq!(q(&res.requests, "memory").as_deref(), Some("64Mi"));
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("256Mi"));
    assert!(q(&res.requests, "cpu").is_some());
    assert!(
        q(&res.limits, "cpu").is_none(),
        "a CPU limit throttles Lease renewals"
    );
    let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    for var in ["POD_NAME", "POD_NAMESPACE", "STATEFULSET_NAME"] {
        assert!(env.contains(&var), "{var} missing: {env:?}");
    }
    // The queue budget matches the memory limit.
    assert!(c.args.iter().flatten().any(|a| a == "--max-memory-mb=256"));
}
