//! BlockRequest intake: names, selectors, action changes, deletion, missing and protected
//! targets, large requests, bounded status.

use std::time::Duration;

use block_controller::api::{messages, Action, BlockRequest, BlockRequestSpec, STATUS_LABEL};
use block_controller::blockrequest::{PROTECTED_MESSAGE, REQUEST_UID_LABEL};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::common;
use crate::rules::{setup, wait_locked, wait_unlocked, WAIT};

async fn request(
    client: &Client,
    home: &str,
    name: &str,
    names: Vec<String>,
    selector: Option<LabelSelector>,
    action: Action,
) -> Api<BlockRequest> {
    let api: Api<BlockRequest> = Api::namespaced(client.clone(), home);
    let br = BlockRequest::new(
        name,
        BlockRequestSpec {
            namespace_names: names,
            namespace_selector: selector,
            action,
        },
    );
    api.create(&PostParams::default(), &br)
        .await
        .expect("create blockrequest");
    api
}

async fn label_of(client: &Client, ns: &str) -> Option<String> {
    Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("ns")
        .labels()
        .get(STATUS_LABEL)
        .cloned()
}

async fn wait_ready(api: &Api<BlockRequest>, name: &str) -> BlockRequest {
    common::eventually(WAIT, &format!("blockrequest {name} ready"), || async {
        let br = api.get(name).await.ok()?;
        let st = br.status.as_ref()?;
        let ready = st
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && st.observed_generation == br.metadata.generation).then_some(br)
    })
    .await
}

#[tokio::test]
async fn by_names_with_a_missing_and_a_protected_target() {
    let client = setup().await;
    let home = common::create_namespace(&client, "br-home", &[]).await;
    let a = common::create_namespace(&client, "br-a", &[]).await;
    let b = common::create_namespace(&client, "br-b", &[]).await;
    let names = vec![
        a.clone(),
        b.clone(),
        "does-not-exist-xyz".into(),
        "kube-system".into(),
        a.clone(),
    ];
    let api = request(&client, &home, "lock-ab", names, None, Action::Locked).await;
    let br = wait_ready(&api, "lock-ab").await;
    assert!(br
        .finalizers()
        .iter()
        .any(|f| f == "core.clawcloud.run/finalizer"));
    let st = br.status.expect("status");
    assert_eq!(
        (
            st.target_count,
            st.applied_count,
            st.not_found_count,
            st.protected_count,
            st.failed_count
        ),
        (4, 2, 1, 1, 0)
    );
    let msg = |n: &str| {
        st.namespace_statuses
            .iter()
            .find(|s| s.name == n)
            .map(|s| s.message.clone())
    };
    assert_eq!(msg(&a).as_deref(), Some(messages::UPDATED));
    assert_eq!(
        msg("does-not-exist-xyz").as_deref(),
        Some(messages::NOT_FOUND)
    );
    assert_eq!(msg("kube-system").as_deref(), Some(PROTECTED_MESSAGE));
    assert_eq!(
        st.namespace_statuses[0].name, "does-not-exist-xyz",
        "problems first"
    );
    for ns in [&a, &b] {
        assert_eq!(label_of(&client, ns).await.as_deref(), Some("locked"));
        wait_locked(&client, ns).await;
    }
    assert_eq!(
        label_of(&client, "kube-system").await,
        None,
        "protected: never labelled"
    );
}

#[tokio::test]
async fn by_selector_then_action_change_then_deletion_unlocks() {
    let client = setup().await;
    let home = common::create_namespace(&client, "br-home", &[]).await;
    let team = local_control_plane::unique_name("team");
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(common::create_namespace(&client, "br-sel", &[("team", &team)]).await);
    }
    let outsider = common::create_namespace(&client, "br-out", &[("team", "other")]).await;
    let selector = LabelSelector {
        match_labels: Some([("team".to_string(), team.clone())].into()),
        match_expressions: None,
    };
    let api = request(
        &client,
        &home,
        "team-lock",
        vec![],
        Some(selector),
        Action::Locked,
    )
    .await;
    let st = wait_ready(&api, "team-lock").await.status.expect("status");
    assert_eq!((st.target_count, st.applied_count), (3, 3));
    for ns in &members {
        wait_locked(&client, ns).await;
    }
    assert_eq!(label_of(&client, &outsider).await, None);

    // Changing the action re-applies it to every target.
    api.patch(
        "team-lock",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "action": "active" } })),
    )
    .await
    .expect("change action");
    wait_ready(&api, "team-lock").await;
    for ns in &members {
        assert_eq!(label_of(&client, ns).await.as_deref(), Some("active"));
        wait_unlocked(&client, ns).await;
    }

    // Lock again, then a later request takes one namespace over; deleting the first request
    // unlocks only what it locked and nobody changed since.
    api.patch(
        "team-lock",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "action": "locked" } })),
    )
    .await
    .expect("change action");
    wait_ready(&api, "team-lock").await;
    // Someone later takes one namespace over (a later request, or a person): its marker changes.
    Api::<Namespace>::all(client.clone())
        .patch(
            &members[0],
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "labels": { REQUEST_UID_LABEL: "a-later-request" } } }),
            ),
        )
        .await
        .expect("relabel");
    api.delete("team-lock", &DeleteParams::default())
        .await
        .expect("delete request");
    common::eventually(WAIT, "the request to be gone", || async {
        api.get_opt("team-lock").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(
        label_of(&client, &members[0]).await.as_deref(),
        Some("locked"),
        "changed by someone later: kept"
    );
    for ns in &members[1..] {
        assert_eq!(
            label_of(&client, ns).await.as_deref(),
            Some("active"),
            "{ns} unlocked on deletion"
        );
        wait_unlocked(&client, ns).await;
    }
}

#[tokio::test]
async fn a_thousand_names_with_bounded_status() {
    let client = setup().await;
    let home = common::create_namespace(&client, "br-home", &[]).await;
    let prefix = local_control_plane::unique_name("bulk");
    let names: Vec<String> = (0..1000).map(|i| format!("{prefix}-{i}")).collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    // Create them 32 at a time.
    use futures::StreamExt;
    futures::stream::iter(names.iter().take(990).cloned())
        .for_each_concurrent(32, |n| {
            let ns_api = ns_api.clone();
            async move {
                let mut ns = Namespace::default();
                ns.metadata.name = Some(n);
                ns_api
                    .create(&PostParams::default(), &ns)
                    .await
                    .expect("create");
            }
        })
        .await;
    // `active` on fresh namespaces: pure intake, no lock work behind it.
    let api = request(&client, &home, "bulk", names.clone(), None, Action::Active).await;
    let br = common::eventually(
        Duration::from_secs(120),
        "the bulk request ready",
        || async {
            let br = api.get("bulk").await.ok()?;
            let st = br.status.as_ref()?;
            (st.observed_generation == br.metadata.generation && st.target_count == 1000)
                .then_some(br)
        },
    )
    .await;
    let st = br.status.expect("status");
    assert_eq!(
        (st.applied_count, st.not_found_count, st.failed_count),
        (990, 10, 0)
    );
    assert_eq!(st.namespace_statuses.len(), 100, "bounded");
    assert!(
        st.namespace_statuses[..10]
            .iter()
            .all(|s| s.message == messages::NOT_FOUND),
        "problems first"
    );
    let labelled = ns_api
        .list_metadata(&kube::api::ListParams::default().labels(&format!("{STATUS_LABEL}=active")))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|n| n.name_any().starts_with(&prefix))
        .count();
    assert_eq!(labelled, 990);
}
