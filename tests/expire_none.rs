//! `--expire-action=none`: a lock that outlives its deadline is reported, never deleted. A test
//! binary of its own, since it needs a controller started with different flags.

mod common;

use std::time::Duration;

use block_controller::api::STATUS_LABEL;
use block_controller::state::{LOCKED_AT_ANNOTATION, LOCK_DURATION_ANNOTATION};
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{Api, PostParams};

#[tokio::test]
async fn expired_lock_is_reported_and_kept() {
    common::controller_with(&["--expire-action=none"]);
    let client = common::client().await;
    let name = local_control_plane::unique_name("keep");
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    ns.metadata.labels = Some([(STATUS_LABEL.to_string(), "locked".to_string())].into());
    ns.metadata.annotations =
        Some([(LOCK_DURATION_ANNOTATION.to_string(), "2s".to_string())].into());
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create");
    common::eventually(
        Duration::from_secs(30),
        "the expiry to be reported",
        || async {
            let events = Api::<Event>::namespaced(client.clone(), &name)
                .list(&Default::default())
                .await
                .ok()?;
            events
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("LockExpiredKept"))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = api.get(&name).await.expect("still there");
    assert!(
        n.metadata.deletion_timestamp.is_none(),
        "kept with --expire-action=none"
    );
    assert!(
        n.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(LOCKED_AT_ANNOTATION),
        "still locked"
    );
}
