//! Several controller processes against one real API server: ranges are split between them
//! (disjoint, balanced), locks complete whoever owns the namespace, and a replica killed with
//! SIGKILL has its ranges taken over within a lease duration.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use block_controller::api::STATUS_LABEL;
use block_controller::state::LOCKED_AT_ANNOTATION;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

struct Replica {
    child: std::process::Child,
    metrics: u16,
    health: u16,
}

fn start(identity: &str) -> Replica {
    let cp = common::control_plane();
    let metrics = common::free_port();
    let health = common::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_block-controller"));
    cmd.env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "info,kube=warn")
        .arg(format!("--identity={identity}"))
        .arg(format!("--metrics-bind-address=127.0.0.1:{metrics}"))
        .arg(format!("--health-probe-bind-address=127.0.0.1:{health}"))
        .arg(format!(
            "--controller-namespace={}",
            common::CONTROLLER_NAMESPACE
        ))
        .args([
            "--ranges=64",
            "--lease-duration=6s",
            "--renew-deadline=4s",
            "--retry-period=1s",
            "--api-timeout=1500ms",
        ])
        .args(["--kube-api-qps=200", "--kube-api-burst=400"]);
    let log = std::env::temp_dir().join(format!(
        "block-controller-sharding-{}-{identity}.log",
        std::process::id()
    ));
    let child = local_control_plane::spawn_tied(cmd, &log).expect("spawn");
    Replica {
        child,
        metrics,
        health,
    }
}

fn gauge(port: u16, name: &str) -> Option<f64> {
    let (_, body) = common::http_get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn owned(r: &Replica) -> u32 {
    gauge(r.metrics, "block_controller_owned_ranges").unwrap_or(0.0) as u32
}

async fn lock_and_wait(client: &kube::Client, count: usize, prefix: &str) {
    let mut names = Vec::new();
    for _ in 0..count {
        names.push(common::create_namespace(client, prefix, &[(STATUS_LABEL, "locked")]).await);
    }
    let api: Api<Namespace> = Api::all(client.clone());
    for n in names {
        common::eventually(Duration::from_secs(30), &format!("{n} locked"), || async {
            let ns = api.get(&n).await.ok()?;
            ns.metadata
                .annotations?
                .contains_key(LOCKED_AT_ANNOTATION)
                .then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn ranges_are_split_and_taken_over_after_a_crash() {
    let client = common::client().await;
    common::install_crd(&client).await;
    let mut ns = Namespace::default();
    ns.metadata.name = Some(common::CONTROLLER_NAMESPACE.into());
    let _ = Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await;

    let a = start("block-controller-0");
    let mut b = start("block-controller-1");
    common::eventually(
        Duration::from_secs(60),
        "both replicas owning half of the ranges",
        || async {
            let (x, y) = (owned(&a), owned(&b));
            (x == 32 && y == 32).then_some(())
        },
    )
    .await;
    for r in [&a, &b] {
        common::eventually(Duration::from_secs(30), "readiness", || async {
            (common::http_get(r.health, "/readyz")?.0 == 200).then_some(())
        })
        .await;
    }
    // Work flows through both.
    lock_and_wait(&client, 20, "shard-a").await;

    // SIGKILL one: the other takes everything over within a lease duration (+ margin).
    b.child.kill().expect("kill -9");
    let killed = Instant::now();
    common::eventually(
        Duration::from_secs(30),
        "the survivor owning every range",
        || async { (owned(&a) == 64).then_some(()) },
    )
    .await;
    let failover = killed.elapsed();
    eprintln!("failover after SIGKILL: {failover:?} (lease duration 6 s)");
    assert!(
        failover <= Duration::from_secs(6 + 4),
        "failover took {failover:?}"
    );
    lock_and_wait(&client, 10, "shard-b").await;
}
