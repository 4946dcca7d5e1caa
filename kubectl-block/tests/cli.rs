//! The `kubectl-block` binary against a real control plane (kube-apiserver v1.20 + etcd):
//! every command, run as a process, asserting on its output, its exit code and the cluster.
//! The controller is not running: the tests check the intent objects, labels and annotations
//! the plugin writes, and fake the controller's results (status, leases) where a command reads
//! them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use block_controller::api::{
    Action, BlockRequest, BlockRequestSpec, ORIGINAL_REPLICAS_ANNOTATION,
    ORIGINAL_SUSPEND_ANNOTATION, QUOTA_NAME, STATUS_LABEL, UNLOCK_TIMESTAMP_ANNOTATION,
};
use block_controller::blockrequest::REQUEST_UID_LABEL;
use block_controller::state::{
    format_timestamp, LOCKED_AT_ANNOTATION, LOCK_DURATION_ANNOTATION, LOCK_REASON_ANNOTATION,
};
use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use local_control_plane::ControlPlane;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-block");

// ---------------------------------------------------------------------------------------------
// Fixture

fn control_plane() -> &'static ControlPlane {
    match local_control_plane::shared() {
        Ok(cp) => cp,
        Err(e) => panic!("no control plane for the tests: {e}"),
    }
}

/// A client for the shared control plane, with the CRD installed (once per binary).
async fn setup() -> Client {
    static CRD: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cp = tokio::task::spawn_blocking(control_plane)
        .await
        .expect("control plane thread");
    let client = cp.client().await.expect("client");
    CRD.get_or_init(|| install_crd(client.clone())).await;
    client
}

async fn install_crd(client: Client) {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/crd/blockrequests.yaml"
    ))
    .expect("read deploy/crd/blockrequests.yaml");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("parse the CRD");
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let name = crd.name_any();
    api.patch(
        &name,
        &PatchParams::apply("kubectl-block-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD");
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            api,
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD established within 30 s")
    .expect("watching the CRD");
}

/// Creates a namespace with a unique name and these labels and annotations.
async fn namespace(
    client: &Client,
    prefix: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> String {
    let name = local_control_plane::unique_name(prefix);
    create_named_namespace(client, &name, labels, annotations).await;
    name
}

async fn create_named_namespace(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) {
    let map = |kv: &[(&str, &str)]| -> Option<BTreeMap<String, String>> {
        (!kv.is_empty()).then(|| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    };
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_string());
    ns.metadata.labels = map(labels);
    ns.metadata.annotations = map(annotations);
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

async fn ns_get(client: &Client, name: &str) -> Namespace {
    Api::<Namespace>::all(client.clone())
        .get(name)
        .await
        .expect("get namespace")
}

async fn requests_in(client: &Client, ns: &str) -> Vec<BlockRequest> {
    Api::<BlockRequest>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("list blockrequests")
        .items
}

async fn quota(client: &Client, ns: &str) {
    let q: ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": QUOTA_NAME },
        "spec": { "hard": { "pods": "0" } }
    }))
    .expect("quota");
    Api::<ResourceQuota>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &q)
        .await
        .expect("create quota");
}

async fn has_quota(client: &Client, ns: &str) -> bool {
    Api::<ResourceQuota>::namespaced(client.clone(), ns)
        .get_opt(QUOTA_NAME)
        .await
        .expect("get quota")
        .is_some()
}

/// A Deployment at 0 replicas carrying `original-replicas` (what a lock leaves).
async fn held_deployment(client: &Client, ns: &str, name: &str, saved: &str) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": { ORIGINAL_REPLICAS_ANNOTATION: saved } },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "c", "image": "busybox" }] }
            }
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
}

/// A suspended CronJob carrying `original-suspend: "false"`, at the version the server serves.
async fn held_cronjob(client: &Client, ns: &str, name: &str) {
    let kinds = block_controller::context::Kinds::discover(client)
        .await
        .expect("discovery");
    let ar = kinds.cronjob.expect("the server serves CronJobs");
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": ar.api_version,
        "kind": "CronJob",
        "metadata": { "name": name, "annotations": { ORIGINAL_SUSPEND_ANNOTATION: "false" } },
        "spec": { "schedule": "0 0 1 1 *", "suspend": true, "jobTemplate": { "spec": { "template": {
            "spec": { "restartPolicy": "Never", "containers": [{ "name": "c", "image": "busybox" }] } } } } }
    }))
    .expect("cronjob");
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create cronjob");
}

async fn range_lease(client: &Client, ns: &str, range: u32, holder: &str) {
    let lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": format!("block-controller-range-{range}") },
        "spec": { "holderIdentity": holder, "leaseDurationSeconds": 15 }
    }))
    .expect("lease");
    Api::<Lease>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &lease)
        .await
        .expect("create lease");
}

/// What a run of the binary gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `kubectl-block args…` against `kubeconfig`, stdin from `input` (a pipe: not a terminal).
async fn run_with(kubeconfig: &Path, args: &[&str], input: &str) -> Run {
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl-block");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("kubectl-block finished within 120 s")
        .expect("kubectl-block output");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ kubectl-block {}\n{run:#?}", args.join(" "));
    run
}

/// Runs against the shared control plane, stdin empty.
async fn kb(args: &[&str]) -> Run {
    run_with(control_plane().kubeconfig(), args, "").await
}

/// The shared control plane's kubeconfig as YAML, to derive others from.
fn kubeconfig_yaml() -> serde_yaml::Value {
    let text = std::fs::read_to_string(control_plane().kubeconfig()).expect("read kubeconfig");
    serde_yaml::from_str(&text).expect("parse kubeconfig")
}

fn write_kubeconfig(dir: &Path, value: &serde_yaml::Value) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(value).expect("yaml")).expect("write kubeconfig");
    path
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn dead_kubeconfig(dir: &Path, port: u16) -> PathBuf {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: u\n  user:\n    token: nothing\ncontexts:\n- name: dead\n  context:\n    cluster: dead\n    user: u\ncurrent-context: dead\n"
    );
    let path = dir.join("dead-kubeconfig");
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

fn lines_naming(stdout: &str, prefix: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| l.split(':').next())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Help and usage (no cluster needed)

#[tokio::test]
async fn help_names_every_command_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = dir.path().join("none");
    let help = run_with(&nowhere, &["--help"], "").await.ok();
    for cmd in ["lock", "unlock", "status", "list", "report", "cleanup"] {
        assert!(
            help.stdout.contains(&format!("\n  {cmd} ")),
            "--help lists {cmd}"
        );
    }
    assert!(help.stdout.contains("Usage: kubectl block"));
    assert!(help.stdout.contains("Examples:"));
    let lock = run_with(&nowhere, &["lock", "--help"], "").await.ok();
    for flag in [
        "--selector",
        "--all",
        "--exclude",
        "--duration",
        "--reason",
        "--dry-run",
        "--force",
        "--direct",
        "--context",
        "--namespace",
    ] {
        assert!(lock.stdout.contains(flag), "lock --help has {flag}");
    }
    let unlock = run_with(&nowhere, &["unlock", "--help"], "").await.ok();
    assert!(unlock.stdout.contains("--all-locked"));
    let status = run_with(&nowhere, &["status", "--help"], "").await.ok();
    for flag in [
        "--all",
        "--locked-only",
        "--selector",
        "--details",
        "--output",
    ] {
        assert!(status.stdout.contains(flag), "status --help has {flag}");
    }
    for args in [
        &["lock"][..],
        &["lock", "a", "--all"],
        &["lock", "a", "--duration", "7days"],
        &["lock", "a", "--exclude", "b"],
        &["unlock", "--all-locked", "--selector", "x=y"],
        &["status", "-o", "xml"],
        &["frobnicate"],
    ] {
        let r = run_with(&nowhere, args, "").await;
        assert_eq!(r.code, 2, "usage error for {args:?}: {r:#?}");
    }

    // krew-style: kubectl finds `kubectl-block` on PATH and runs it for `kubectl block`.
    if let Ok(kubectl) = which("kubectl") {
        let bin_dir = Path::new(BIN).parent().expect("bin dir");
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = tokio::process::Command::new(kubectl)
            .args(["block", "--help"])
            .env("PATH", path)
            .output()
            .await
            .expect("run kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "kubectl block --help: {out:?}");
        assert!(stdout.contains("Usage: kubectl block"), "{stdout}");
    }
}

fn which(cmd: &str) -> Result<PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
        .ok_or(())
}

// ---------------------------------------------------------------------------------------------
// lock / unlock through a BlockRequest, list

#[tokio::test]
async fn lock_and_unlock_through_block_requests_and_list_them() {
    let client = setup().await;
    let home = namespace(&client, "kb-home", &[], &[]).await;
    let a = namespace(&client, "kb-a", &[], &[]).await;
    let b = namespace(&client, "kb-b", &[], &[]).await;

    let r = kb(&[
        "lock",
        &b,
        &a,
        "--duration",
        "24h",
        "--reason",
        "unpaid invoice",
        "--force",
        "-n",
        &home,
    ])
    .await
    .ok();
    assert!(
        r.stdout
            .contains("blockrequest.core.clawcloud.run/kubectl-block-lock-"),
        "{r:#?}"
    );
    let requests = requests_in(&client, &home).await;
    assert_eq!(requests.len(), 1);
    let br = &requests[0];
    assert!(br.name_any().starts_with("kubectl-block-lock-"));
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(br.spec.namespace_names, expected);
    assert_eq!(br.spec.action, Action::Locked);
    assert!(br.spec.namespace_selector.is_none());
    assert_eq!(
        br.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("kubectl-block")
    );
    for ns in [&a, &b] {
        let n = ns_get(&client, ns).await;
        assert_eq!(
            n.annotations()
                .get(LOCK_DURATION_ANNOTATION)
                .map(String::as_str),
            Some("24h")
        );
        assert_eq!(
            n.annotations()
                .get(LOCK_REASON_ANNOTATION)
                .map(String::as_str),
            Some("unpaid invoice")
        );
        // The label is the controller's job when going through a request.
        assert!(!n.labels().contains_key(STATUS_LABEL));
    }

    // list: not processed yet.
    let list = kb(&["list", "-n", &home]).await.ok();
    assert!(list.stdout.starts_with("NAMESPACE"), "{list:#?}");
    let line = list
        .stdout
        .lines()
        .find(|l| l.contains(&br.name_any()))
        .expect("row of the request");
    assert!(
        line.contains("locked") && line.contains("Unknown"),
        "{line}"
    );
    let doc = kb(&["list", "-n", &home, "-o", "json"]).await.ok().json();
    let item = &doc["blockRequests"][0];
    assert_eq!(item["name"], br.name_any());
    assert_eq!(item["namespace"], home);
    assert_eq!(item["action"], "locked");
    assert_eq!(item["namespaceNames"], json!(expected));
    assert_eq!(item["targets"], Value::Null);
    assert_eq!(item["ready"], "Unknown");

    // What the controller would report, then list shows the progress.
    let api: Api<BlockRequest> = Api::namespaced(client.clone(), &home);
    api.patch_status(
        &br.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
            "observedGeneration": br.metadata.generation,
            "targetCount": 2, "appliedCount": 1, "failedCount": 1, "processedNamespaceCount": 2,
            "conditions": [{ "type": "Ready", "status": "False", "reason": "TargetsFailed",
                "message": "1 target failed", "lastTransitionTime": format_timestamp(Utc::now()) }]
        }})),
    )
    .await
    .expect("patch status");
    let wide = kb(&["list", "-n", &home, "-o", "wide"]).await.ok();
    let line = wide
        .stdout
        .lines()
        .find(|l| l.contains(&br.name_any()))
        .expect("row");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[2..7], ["locked", "2", "1", "1", "False"], "{line}");
    assert!(line.contains("1 target failed"), "{line}");
    let yaml = kb(&["list", "-n", &home, "-o", "yaml"]).await.ok();
    let doc: serde_yaml::Value = serde_yaml::from_str(&yaml.stdout).expect("yaml");
    assert_eq!(
        doc["blockRequests"][0]["applied"],
        serde_yaml::Value::from(1)
    );

    // A single namespace needs no confirmation, even without a terminal.
    let r = kb(&["unlock", &a, "--reason", "paid", "-n", &home])
        .await
        .ok();
    assert!(
        r.stdout
            .contains("blockrequest.core.clawcloud.run/kubectl-block-unlock-"),
        "{r:#?}"
    );
    let unlock = requests_in(&client, &home)
        .await
        .into_iter()
        .find(|r| r.spec.action == Action::Active)
        .expect("unlock request");
    assert_eq!(unlock.spec.namespace_names, vec![a.clone()]);
    let n = ns_get(&client, &a).await;
    assert!(!n.annotations().contains_key(LOCK_REASON_ANNOTATION));
    assert_eq!(
        n.annotations()
            .get("core.clawcloud.run/unlock-reason")
            .map(String::as_str),
        Some("paid")
    );

    // A selector goes into the request as a selector.
    let tag = local_control_plane::unique_name("tag");
    namespace(&client, "kb-c", &[("kb-test", &tag)], &[]).await;
    let sel = format!("kb-test={tag}");
    kb(&["lock", "--selector", &sel, "--force", "-n", &home])
        .await
        .ok();
    let by_selector = requests_in(&client, &home)
        .await
        .into_iter()
        .find(|r| r.spec.namespace_selector.is_some())
        .expect("selector request");
    assert_eq!(
        by_selector
            .spec
            .namespace_selector
            .and_then(|s| s.match_labels)
            .and_then(|m| m.get("kb-test").cloned()),
        Some(tag.clone())
    );
    assert!(by_selector.spec.namespace_names.is_empty());
    let list = kb(&["list", "-A"]).await.ok();
    assert!(list.stdout.contains(&home));
}

#[tokio::test]
async fn bulk_actions_need_force_without_a_terminal() {
    let client = setup().await;
    let home = namespace(&client, "kb-home", &[], &[]).await;
    let tag = local_control_plane::unique_name("tag");
    let a = namespace(&client, "kb-bulk", &[("kb-test", &tag)], &[]).await;
    let b = namespace(
        &client,
        "kb-bulk",
        &[("kb-test", &tag), (STATUS_LABEL, "locked")],
        &[],
    )
    .await;
    let sel = format!("kb-test={tag}");
    for args in [
        vec!["lock", &a, &b, "--reason", "x", "-n", &home],
        vec!["lock", "--selector", &sel, "-n", &home],
        vec!["lock", "--all", "-n", &home],
        vec!["unlock", "--selector", &sel, "--direct"],
        vec!["unlock", "--all-locked", "-n", &home],
    ] {
        let r = kb(&args).await;
        assert_eq!(r.code, 1, "{args:?}: {r:#?}");
        assert!(
            r.stderr.contains("stdin is not a terminal") && r.stderr.contains("--force"),
            "{r:#?}"
        );
    }
    assert!(requests_in(&client, &home).await.is_empty());
    let na = ns_get(&client, &a).await;
    assert!(!na.annotations().contains_key(LOCK_REASON_ANNOTATION));
    assert!(!na.labels().contains_key(STATUS_LABEL));
    assert_eq!(
        ns_get(&client, &b)
            .await
            .labels()
            .get(STATUS_LABEL)
            .map(String::as_str),
        Some("locked")
    );

    // On a terminal the prompt decides: "n" aborts, "y" proceeds (util-linux `script` gives a pty).
    if which("script").is_ok() {
        let kubeconfig = control_plane().kubeconfig().display().to_string();
        let cmd = format!("{BIN} lock {a} {b} -n {home}");
        let r = script(&kubeconfig, &cmd, "n\n").await;
        assert_ne!(r.code, 0, "{r:#?}");
        assert!(r.stdout.contains("Proceed? [y/N]"), "{r:#?}");
        assert!(requests_in(&client, &home).await.is_empty());
        let r = script(&kubeconfig, &cmd, "y\n").await;
        assert_eq!(r.code, 0, "{r:#?}");
        assert_eq!(requests_in(&client, &home).await.len(), 1);
    }
}

/// Runs `cmd` under `script` (a pseudo-terminal), feeding `input` after a moment.
async fn script(kubeconfig: &str, cmd: &str, input: &str) -> Run {
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script");
    let mut stdin = child.stdin.take().expect("stdin");
    // Give the plugin time to reach the prompt; the pty buffers the answer anyway.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stdin.write_all(input.as_bytes()).await.expect("answer");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("script finished")
        .expect("script output");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ script {cmd}\n{run:#?}");
    run
}

#[tokio::test]
async fn direct_lock_and_unlock_set_the_label() {
    let client = setup().await;
    let home = namespace(&client, "kb-home", &[], &[]).await;
    let a = namespace(
        &client,
        "kb-direct",
        &[(REQUEST_UID_LABEL, "old-request")],
        &[],
    )
    .await;
    let r = kb(&[
        "lock",
        &a,
        "--direct",
        "--duration",
        "2h",
        "--reason",
        "abuse",
        "-n",
        &home,
    ])
    .await
    .ok();
    assert!(
        r.stdout.contains(&format!("namespace/{a} locked")),
        "{r:#?}"
    );
    let n = ns_get(&client, &a).await;
    assert_eq!(
        n.labels().get(STATUS_LABEL).map(String::as_str),
        Some("locked")
    );
    assert!(!n.labels().contains_key(REQUEST_UID_LABEL));
    assert_eq!(
        n.annotations()
            .get(LOCK_DURATION_ANNOTATION)
            .map(String::as_str),
        Some("2h")
    );
    assert_eq!(
        n.annotations()
            .get(LOCK_REASON_ANNOTATION)
            .map(String::as_str),
        Some("abuse")
    );
    assert!(requests_in(&client, &home).await.is_empty());

    let r = kb(&["unlock", &a, "--direct"]).await.ok();
    assert!(
        r.stdout.contains(&format!("namespace/{a} unlocked")),
        "{r:#?}"
    );
    let n = ns_get(&client, &a).await;
    assert_eq!(
        n.labels().get(STATUS_LABEL).map(String::as_str),
        Some("active")
    );
    assert!(!n.annotations().contains_key(LOCK_REASON_ANNOTATION));

    // Protected and missing namespaces are refused before anything is written.
    let r = kb(&["lock", "kube-system", "--direct"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("protected"), "{r:#?}");
    let r = kb(&["lock", &a, "no-such-namespace-kb", "--direct", "--force"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no-such-namespace-kb"), "{r:#?}");
    assert_eq!(
        ns_get(&client, &a)
            .await
            .labels()
            .get(STATUS_LABEL)
            .map(String::as_str),
        Some("active")
    );
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let client = setup().await;
    let home = namespace(&client, "kb-home", &[], &[]).await;
    let a = namespace(&client, "kb-dry", &[], &[]).await;
    let b = namespace(&client, "kb-dry", &[], &[]).await;
    let r = kb(&[
        "lock",
        &a,
        &b,
        "--reason",
        "test",
        "--duration",
        "1h",
        "--dry-run",
        "-n",
        &home,
    ])
    .await
    .ok();
    assert!(r.stdout.contains("Dry run"), "{r:#?}");
    assert!(r.stdout.contains("kind: BlockRequest"), "{r:#?}");
    assert!(r.stdout.contains("generateName: kubectl-block-lock-"));
    let mut named = lines_naming(&r.stdout, "namespace/");
    named.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(named, expected);
    let r = kb(&["lock", &a, "--direct", "--dry-run"]).await.ok();
    assert!(r.stdout.contains(STATUS_LABEL), "{r:#?}");
    let r = kb(&["unlock", &a, &b, "--dry-run", "-n", &home]).await.ok();
    assert!(r.stdout.contains("action: active"), "{r:#?}");
    assert!(requests_in(&client, &home).await.is_empty());
    for ns in [&a, &b] {
        let n = ns_get(&client, ns).await;
        assert!(n.annotations().is_empty(), "{ns}: {:?}", n.annotations());
        assert!(!n.labels().contains_key(STATUS_LABEL));
    }
}

#[tokio::test]
async fn all_skips_system_protected_and_excluded_namespaces() {
    let client = setup().await;
    let home = namespace(&client, "kb-home", &[], &[]).await;
    let keep = namespace(&client, "kb-all", &[], &[]).await;
    let excluded = namespace(&client, "kb-all", &[], &[]).await;
    let kube_like = namespace(&client, "kube-extra", &[], &[]).await;
    create_named_namespace(&client, "block-system", &[], &[]).await;
    let r = kb(&[
        "lock",
        "--all",
        "--exclude",
        &excluded,
        "--dry-run",
        "-n",
        &home,
    ])
    .await
    .ok();
    let named = lines_naming(&r.stdout, "namespace/");
    assert!(named.contains(&keep), "{r:#?}");
    assert!(named.contains(&home));
    for never in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "default",
        "block-system",
        excluded.as_str(),
        kube_like.as_str(),
    ] {
        assert!(!named.iter().any(|n| n == never), "--all included {never}");
    }
    // --all names the targets in the request (a selector cannot exclude by name).
    assert!(r.stdout.contains("namespaceNames:"), "{r:#?}");
    assert!(requests_in(&client, &home).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// status

#[tokio::test]
async fn status_shows_state_remaining_reason_owner_and_details() {
    let client = setup().await;
    let ctl = namespace(&client, "kb-ctl", &[], &[]).await;
    let tag = local_control_plane::unique_name("tag");
    let unlock_at = format_timestamp(Utc::now() + chrono::Duration::days(7));
    let locked_at = format_timestamp(Utc::now());
    let a = namespace(
        &client,
        "kb-status",
        &[(STATUS_LABEL, "locked"), ("kb-test", &tag)],
        &[
            (UNLOCK_TIMESTAMP_ANNOTATION, &unlock_at),
            (LOCKED_AT_ANNOTATION, &locked_at),
            (LOCK_REASON_ANNOTATION, "audit"),
        ],
    )
    .await;
    let b = namespace(
        &client,
        "kb-status",
        &[(STATUS_LABEL, "active"), ("kb-test", &tag)],
        &[],
    )
    .await;

    // No range leases: no owner.
    let r = kb(&["status", &a, "--controller-namespace", &ctl])
        .await
        .ok();
    let header = r.stdout.lines().next().expect("header");
    assert!(
        header.starts_with("NAMESPACE") && header.contains("REMAINING") && header.contains("OWNER")
    );
    let line = r.stdout.lines().nth(1).expect("row");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[0], a);
    assert_eq!(cells[1], "locked");
    assert_eq!(cells[2], "complete");
    assert_eq!(cells[3], unlock_at);
    assert_eq!(cells[4], "6d23h");
    assert_eq!(cells[5], "audit");
    assert_eq!(cells[6], "-");

    // A range lease held by a replica: it is the owner. Other ranges are then unowned.
    let range = shard::range_of(&a, shard::RangeCount::new(256).expect("count"));
    range_lease(&client, &ctl, range, "block-controller-1_7f3a9c").await;
    let r = kb(&["status", &a, "--controller-namespace", &ctl, "-o", "wide"])
        .await
        .ok();
    assert!(r.stdout.contains("block-controller-1_7f3a9c"), "{r:#?}");
    assert!(r.stdout.contains("RANGE"), "{r:#?}");
    let doc = kb(&["status", &a, "--controller-namespace", &ctl, "-o", "json"])
        .await
        .ok()
        .json();
    let row = &doc["namespaces"][0];
    assert_eq!(row["name"], a);
    assert_eq!(row["state"], "locked");
    assert_eq!(row["lock"], "complete");
    assert_eq!(row["unlockAt"], unlock_at);
    assert_eq!(row["remaining"], "6d23h");
    assert!(row["remainingSeconds"].as_i64().expect("seconds") > 6 * 86_400);
    assert_eq!(row["lockedAt"], locked_at);
    assert_eq!(row["reason"], "audit");
    assert_eq!(row["range"], range);
    assert_eq!(row["owner"], "block-controller-1_7f3a9c");
    assert_eq!(row["ownership"], "owned");
    assert!(row.get("details").is_none());
    let b_range = shard::range_of(&b, shard::RangeCount::new(256).expect("count"));
    if b_range != range {
        let doc = kb(&["status", &b, "--controller-namespace", &ctl, "-o", "json"])
            .await
            .ok()
            .json();
        assert_eq!(doc["namespaces"][0]["ownership"], "unowned");
        assert_eq!(doc["namespaces"][0]["owner"], Value::Null);
    }

    // --selector and --locked-only.
    let sel = format!("kb-test={tag}");
    let doc = kb(&["status", "--selector", &sel, "-o", "json"])
        .await
        .ok()
        .json();
    let names: Vec<&str> = doc["namespaces"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(names, expected);
    let doc = kb(&["status", "--selector", &sel, "--locked-only", "-o", "yaml"])
        .await
        .ok();
    let doc: serde_yaml::Value = serde_yaml::from_str(&doc.stdout).expect("yaml");
    let items = doc["namespaces"].as_sequence().expect("sequence");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"].as_str(), Some(a.as_str()));
    // Default scope: labelled namespaces, --all: every namespace.
    let r = kb(&["status", "--locked-only"]).await.ok();
    assert!(r.stdout.contains(&a));
    let r = kb(&["status", "--all", "-o", "json"]).await.ok();
    assert!(r.stdout.contains("\"kube-system\""));

    // --details: workloads held at zero, suspended CronJobs, the quota.
    held_deployment(&client, &a, "web", "3").await;
    held_cronjob(&client, &a, "nightly").await;
    quota(&client, &a).await;
    let r = kb(&["status", &a, "--details"]).await.ok();
    assert!(r.stdout.contains(&format!("Namespace {a}:")), "{r:#?}");
    assert!(r
        .stdout
        .contains("ResourceQuota block-controller-quota: present"));
    let web = r
        .stdout
        .lines()
        .find(|l| l.contains("Deployment"))
        .expect("deployment row");
    assert_eq!(
        web.split_whitespace().collect::<Vec<_>>(),
        ["Deployment", "web", "0", "3"]
    );
    let cron = r
        .stdout
        .lines()
        .find(|l| l.contains("nightly"))
        .expect("cronjob row");
    assert_eq!(
        cron.split_whitespace().collect::<Vec<_>>(),
        ["nightly", "true", "false"]
    );
    let doc = kb(&["status", &a, "--details", "-o", "json"])
        .await
        .ok()
        .json();
    let d = &doc["namespaces"][0]["details"];
    assert_eq!(d["quota"], true);
    assert_eq!(
        d["workloads"],
        json!([{ "kind": "Deployment", "name": "web", "replicas": 0, "originalReplicas": "3" }])
    );
    assert_eq!(
        d["cronJobs"],
        json!([{ "name": "nightly", "suspend": true, "originalSuspend": "false" }])
    );

    let r = kb(&["status", "no-such-namespace-kb"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not found"), "{r:#?}");
}

// ---------------------------------------------------------------------------------------------
// report

#[tokio::test]
async fn report_counts_states_expiring_locks_requests_and_unowned_ranges() {
    let client = setup().await;
    let ctl = namespace(&client, "kb-ctl", &[], &[]).await;
    let home = namespace(&client, "kb-home", &[], &[]).await;
    let soon = format_timestamp(Utc::now() + chrono::Duration::hours(2));
    let later = format_timestamp(Utc::now() + chrono::Duration::days(3));
    let now = format_timestamp(Utc::now());
    let e1 = namespace(
        &client,
        "kb-report",
        &[(STATUS_LABEL, "locked")],
        &[
            (UNLOCK_TIMESTAMP_ANNOTATION, &soon),
            (LOCKED_AT_ANNOTATION, &now),
        ],
    )
    .await;
    let e2 = namespace(
        &client,
        "kb-report",
        &[(STATUS_LABEL, "locked")],
        &[(UNLOCK_TIMESTAMP_ANNOTATION, &later)],
    )
    .await;
    let bad = namespace(
        &client,
        "kb-report",
        &[(STATUS_LABEL, "locked")],
        &[(UNLOCK_TIMESTAMP_ANNOTATION, "next tuesday")],
    )
    .await;
    namespace(&client, "kb-report", &[(STATUS_LABEL, "paused")], &[]).await;
    let api: Api<BlockRequest> = Api::namespaced(client.clone(), &home);
    api.create(
        &PostParams::default(),
        &BlockRequest::new(
            "pending",
            BlockRequestSpec {
                namespace_names: vec![e1.clone()],
                namespace_selector: None,
                action: Action::Locked,
            },
        ),
    )
    .await
    .expect("create request");

    let args = ["report", "--controller-namespace", &ctl, "--ranges", "4"];
    let doc = kb(&[&args[..], &["-o", "json"]].concat()).await.ok().json();
    let counts = &doc["namespaces"];
    for key in ["lockedComplete", "lockedPending", "other", "unlabelled"] {
        assert!(counts[key].as_u64().expect("count") >= 1, "{key}: {doc}");
    }
    let total: u64 = [
        "lockedComplete",
        "lockedPending",
        "active",
        "other",
        "unlabelled",
    ]
    .iter()
    .map(|k| counts[*k].as_u64().expect("count"))
    .sum();
    assert_eq!(counts["total"].as_u64(), Some(total));
    let expiring: Vec<&str> = doc["expiringWithin24h"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(expiring.contains(&e1.as_str()), "{doc}");
    assert!(!expiring.contains(&e2.as_str()), "{doc}");
    assert!(doc["invalidUnlockTimes"]
        .as_array()
        .expect("array")
        .iter()
        .any(|n| n == bad.as_str()));
    assert!(doc["blockRequestsNotReady"]
        .as_array()
        .expect("array")
        .iter()
        .any(|r| r["namespace"] == home.as_str() && r["name"] == "pending"));
    assert_eq!(doc["ranges"]["unowned"], Value::Null, "no leases: {doc}");

    range_lease(&client, &ctl, 0, "block-controller-0_aaaa").await;
    range_lease(&client, &ctl, 1, "").await;
    let doc = kb(&[&args[..], &["-o", "json"]].concat()).await.ok().json();
    assert_eq!(doc["ranges"]["leases"], 2);
    assert_eq!(doc["ranges"]["owned"], 1);
    assert_eq!(doc["ranges"]["unowned"], "1-3");
    assert_eq!(doc["ranges"]["unownedCount"], 3);

    let text = kb(&args).await.ok();
    assert!(
        text.stdout.contains("Locks expiring within 24h"),
        "{text:#?}"
    );
    let row = text
        .stdout
        .lines()
        .find(|l| l.contains(&e1))
        .expect("expiring row");
    assert!(row.contains(&soon) && row.contains('h'), "{row}");
    assert!(text.stdout.contains("BlockRequests not Ready"));
    assert!(text.stdout.contains("1 owned, 3 unowned: 1-3"), "{text:#?}");
}

// ---------------------------------------------------------------------------------------------
// cleanup

#[tokio::test]
async fn cleanup_removes_leftovers_but_never_pending_restores() {
    let client = setup().await;
    let ts = format_timestamp(Utc::now());
    let stale = namespace(
        &client,
        "kb-clean",
        &[(STATUS_LABEL, "active")],
        &[
            (UNLOCK_TIMESTAMP_ANNOTATION, &ts),
            (LOCKED_AT_ANNOTATION, &ts),
        ],
    )
    .await;
    quota(&client, &stale).await;
    let pending = namespace(
        &client,
        "kb-clean",
        &[],
        &[(UNLOCK_TIMESTAMP_ANNOTATION, &ts)],
    )
    .await;
    quota(&client, &pending).await;
    held_deployment(&client, &pending, "api", "2").await;
    let locked = namespace(
        &client,
        "kb-clean",
        &[(STATUS_LABEL, "locked")],
        &[(UNLOCK_TIMESTAMP_ANNOTATION, &ts)],
    )
    .await;
    quota(&client, &locked).await;

    let r = kb(&["cleanup", &stale, &pending, &locked, "--dry-run"])
        .await
        .ok();
    let line = |prefix: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(&format!("namespace/{prefix}:")))
            .unwrap_or_else(|| panic!("a line for {prefix}: {r:#?}"))
            .to_string()
    };
    assert!(line(&stale).contains("would remove resourcequota/block-controller-quota"));
    assert!(line(&stale).contains(LOCKED_AT_ANNOTATION));
    assert!(line(&pending).contains("skipped"));
    assert!(line(&pending).contains("Deployment/api"));
    assert!(line(&locked).contains("left alone"));
    assert!(r.stdout.contains("Dry run"));
    assert!(has_quota(&client, &stale).await);
    assert!(ns_get(&client, &stale)
        .await
        .annotations()
        .contains_key(LOCKED_AT_ANNOTATION));

    // One namespace to clean, named: no confirmation needed.
    let r = kb(&["cleanup", &stale, &pending, &locked]).await.ok();
    assert!(
        r.stdout.contains(&format!("namespace/{stale}: removed")),
        "{r:#?}"
    );
    assert!(!has_quota(&client, &stale).await);
    let n = ns_get(&client, &stale).await;
    assert!(!n.annotations().contains_key(LOCKED_AT_ANNOTATION));
    assert!(!n.annotations().contains_key(UNLOCK_TIMESTAMP_ANNOTATION));
    assert_eq!(
        n.labels().get(STATUS_LABEL).map(String::as_str),
        Some("active")
    );
    // Pending restore work and the locked namespace are untouched.
    assert!(has_quota(&client, &pending).await);
    assert!(ns_get(&client, &pending)
        .await
        .annotations()
        .contains_key(UNLOCK_TIMESTAMP_ANNOTATION));
    assert!(has_quota(&client, &locked).await);
    let r = kb(&["cleanup", &stale]).await.ok();
    assert!(r.stdout.contains("Nothing to clean up"), "{r:#?}");

    // Bulk: a selector needs --force without a terminal.
    let tag = local_control_plane::unique_name("tag");
    let x = namespace(
        &client,
        "kb-clean",
        &[("kb-test", &tag)],
        &[(LOCKED_AT_ANNOTATION, &ts)],
    )
    .await;
    let y = namespace(&client, "kb-clean", &[("kb-test", &tag)], &[]).await;
    quota(&client, &y).await;
    let sel = format!("kb-test={tag}");
    let r = kb(&["cleanup", "--selector", &sel]).await;
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(r.stderr.contains("--force"));
    assert!(has_quota(&client, &y).await);
    kb(&["cleanup", "--selector", &sel, "--force"]).await.ok();
    assert!(!has_quota(&client, &y).await);
    assert!(!ns_get(&client, &x)
        .await
        .annotations()
        .contains_key(LOCKED_AT_ANNOTATION));
}

// ---------------------------------------------------------------------------------------------
// Errors and kubeconfig handling

#[tokio::test]
async fn unreachable_server_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let kubeconfig = dead_kubeconfig(dir.path(), port);
    for args in [
        &["status"][..],
        &["lock", "team-a", "--force"],
        &["list"],
        &["report"],
        &["cleanup", "--dry-run"],
    ] {
        let r = run_with(&kubeconfig, args, "").await;
        assert_eq!(r.code, 1, "{args:?}: {r:#?}");
        let expected =
            format!("error: cannot reach the Kubernetes API server at https://127.0.0.1:{port}: ");
        assert!(r.stderr.starts_with(&expected), "{r:#?}");
        assert!(r.stderr.to_lowercase().contains("refused"), "{r:#?}");
    }
}

#[tokio::test]
async fn context_and_its_namespace_are_honoured() {
    let client = setup().await;
    let home = namespace(&client, "kb-home", &[], &[]).await;
    let a = namespace(&client, "kb-ctx", &[], &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kc = kubeconfig_yaml();
    let port = closed_port();
    let user = kc["contexts"][0]["context"]["user"].clone();
    let clusters = kc["clusters"].as_sequence_mut().expect("clusters");
    clusters.push(
        serde_yaml::from_str(&format!(
            "name: dead\ncluster:\n  server: https://127.0.0.1:{port}\n  insecure-skip-tls-verify: true\n"
        ))
        .expect("cluster"),
    );
    let contexts = kc["contexts"].as_sequence_mut().expect("contexts");
    let mut good: serde_yaml::Value =
        serde_yaml::from_str("name: good\ncontext:\n  cluster: local\n").expect("context");
    good["context"]["user"] = user.clone();
    good["context"]["namespace"] = serde_yaml::Value::from(home.clone());
    let mut dead: serde_yaml::Value =
        serde_yaml::from_str("name: dead\ncontext:\n  cluster: dead\n").expect("context");
    dead["context"]["user"] = user;
    contexts.push(good);
    contexts.push(dead);
    kc["current-context"] = serde_yaml::Value::from("dead");
    let path = write_kubeconfig(dir.path(), &kc);

    let r = run_with(&path, &["lock", &a], "").await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot reach"), "{r:#?}");
    // --context picks the cluster; the context's namespace receives the BlockRequest.
    run_with(&path, &["--context", "good", "lock", &a], "")
        .await
        .ok();
    assert_eq!(requests_in(&client, &home).await.len(), 1);
    // --kubeconfig wins over KUBECONFIG.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let dead_path = dead_kubeconfig(dir2.path(), port);
    let p = path.display().to_string();
    run_with(
        &dead_path,
        &["--kubeconfig", &p, "--context", "good", "status", &a],
        "",
    )
    .await
    .ok();
}

#[tokio::test]
async fn forbidden_names_the_verb_and_resource() {
    let client = setup().await;
    let a = namespace(&client, "kb-forbidden", &[], &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kc = kubeconfig_yaml();
    kc["users"][0]["user"]["as"] = serde_yaml::Value::from("nobody-kb");
    let path = write_kubeconfig(dir.path(), &kc);
    let r = run_with(&path, &["status"], "").await;
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr
            .starts_with("error: forbidden: not allowed to list namespaces"),
        "{r:#?}"
    );
    assert!(r.stderr.contains("nobody-kb"), "{r:#?}");
    let r = run_with(&path, &["lock", &a, "--direct"], "").await;
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.starts_with(&format!(
            "error: forbidden: not allowed to get namespaces/{a}"
        )),
        "{r:#?}"
    );
}

#[tokio::test]
async fn missing_crd_is_explained() {
    // A second control plane of its own, without the CRD.
    let cp = tokio::task::spawn_blocking(|| {
        ControlPlane::start(local_control_plane::Options {
            controller_manager: false,
            ..Default::default()
        })
    })
    .await
    .expect("thread")
    .expect("second control plane");
    let client = cp.client().await.expect("client");
    let a = namespace(&client, "kb-nocrd", &[], &[]).await;
    let message = "error: the BlockRequest CRD (blockrequests.core.clawcloud.run) is not installed; apply deploy/crd/blockrequests.yaml";
    for args in [&["list"][..], &["lock", &a], &["unlock", &a, "--dry-run"]] {
        let r = run_with(cp.kubeconfig(), args, "").await;
        assert_eq!(r.code, 1, "{args:?}: {r:#?}");
        assert_eq!(r.stderr.trim_end(), message, "{r:#?}");
    }
    assert!(!ns_get(&client, &a)
        .await
        .labels()
        .contains_key(STATUS_LABEL));
    // --direct needs no CRD; report says the CRD is missing and goes on.
    run_with(cp.kubeconfig(), &["lock", &a, "--direct"], "")
        .await
        .ok();
    assert_eq!(
        ns_get(&client, &a)
            .await
            .labels()
            .get(STATUS_LABEL)
            .map(String::as_str),
        Some("locked")
    );
    let r = run_with(cp.kubeconfig(), &["report"], "").await.ok();
    assert!(r.stdout.contains("the CRD is not installed"), "{r:#?}");
    drop(cp);
}
