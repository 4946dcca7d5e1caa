//! The lock, unlock and expiry flows of SPEC.md, as API calls.
//!
//! Crash safety comes from the order of writes: what is needed to undo a change is written before
//! it or in the same request (the original replica count goes into the same patch that scales to
//! zero), the namespace's unlock annotation is written first and the completion marker last, and
//! the unlock flow removes both last. Every workload write carries the `resourceVersion` it was
//! decided on, so a concurrent change by a user is re-read and re-decided, never overwritten.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    Preconditions,
};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::api::{
    ORIGINAL_REPLICAS_ANNOTATION, ORIGINAL_SUSPEND_ANNOTATION, QUOTA_NAME,
    UNLOCK_TIMESTAMP_ANNOTATION,
};
use crate::bucket::{bucket_value, BUCKET_LABEL};
use crate::context::Context;
use crate::events::EventKind;
use crate::pages::Pages;
use crate::state::{self, NamespaceView, LOCKED_AT_ANNOTATION};

/// Why a flow stopped; every variant is retried with backoff by the work queue.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Optimistic concurrency kept failing on one object.
    #[error("{0}: still conflicting after retries")]
    Conflict(String),
    /// The server's clock says the deadline has not passed yet; try again at this time.
    #[error("expiry of {name} is early by the API server's clock; retry at {retry_at}")]
    Early {
        /// The namespace.
        name: String,
        /// When to look again (Unix seconds).
        retry_at: i64,
    },
}

impl FlowError {
    fn api(what: impl Into<String>, source: kube::Error) -> FlowError {
        FlowError::Api {
            what: what.into(),
            source,
        }
    }

    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            FlowError::Api { .. } => "api_error",
            FlowError::Conflict(_) => "conflict",
            FlowError::Early { .. } => "early",
        }
    }
}

/// What a flow achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Lock complete; deadline in Unix seconds (None: unparsable annotation, no expiry).
    Locked {
        /// Unlock time.
        deadline: Option<i64>,
        /// The namespace's resourceVersion after the last write of the lock: views older than it
        /// are from before the lock completed.
        resource_version: Option<String>,
    },
    /// Unlock complete.
    Unlocked,
    /// Unlock done except for objects whose saved values do not parse (left alone, reported).
    UnlockIncomplete,
    /// The namespace was deleted on expiry.
    Expired,
    /// Expiry reached but not acted on (protected, `--expire-action=none`).
    ExpiryReported,
    /// The namespace is gone, or its state changed so that this flow no longer applies.
    Superseded,
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some("block-controller".into()),
        ..Default::default()
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn annotations(obj: &DynamicObject) -> Option<&std::collections::BTreeMap<String, String>> {
    obj.metadata.annotations.as_ref()
}

/// Lock flow, steps 1–5 of SPEC.md, then the completion marker.
pub async fn lock(ctx: &Context, view: &NamespaceView) -> Result<Outcome, FlowError> {
    let name = view.name.as_str();
    let ns_api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ctx.kinds.namespace);

    // 1. The unlock time, set once: an existing value is never changed.
    let mut deadline_raw = view.unlock_at.clone();
    if deadline_raw.is_none() {
        let duration = lock_duration(ctx, view);
        let at = state::format_timestamp(
            Utc::now() + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::days(7)),
        );
        let patch = json!({ "metadata": {
            "resourceVersion": view.resource_version,
            "annotations": { UNLOCK_TIMESTAMP_ANNOTATION: at },
        }});
        match ns_api.patch(name, &params(), &Patch::Merge(&patch)).await {
            Ok(_) => deadline_raw = Some(at),
            Err(e) if is_code(&e, 404) => return Ok(Outcome::Superseded),
            // The namespace changed since the event: the newer event re-queues it.
            Err(e) if is_code(&e, 409) => {
                return Err(FlowError::Conflict(format!("namespace {name}")))
            }
            Err(e) => {
                return Err(FlowError::api(
                    format!("setting the unlock time of {name}"),
                    e,
                ))
            }
        }
    }
    let deadline = match deadline_raw.as_deref().map(state::parse_timestamp) {
        Some(Ok(t)) => Some(t.timestamp()),
        Some(Err(why)) => {
            ctx.metrics.problem("unlock_timestamp");
            warn!(namespace = name, %why, "unparsable unlock time: locked without expiry until fixed");
            ctx.events
                .namespace(name, EventKind::UnparsableUnlockTime, &format!("{why}; the namespace stays locked and will not expire until the annotation is fixed"))
                .await;
            None
        }
        None => None,
    };

    // 2. The zero quota: nothing new can start from here on.
    create_quota(ctx, name).await?;

    // 3.–5. Scale workloads to zero (the original count saved in the same write), suspend
    // CronJobs, delete bare pods. Each object's write is self-contained, so the kinds run
    // concurrently: the lock takes as long as the slowest kind, not the sum of them.
    let mut steps: Vec<futures::future::BoxFuture<'_, Result<usize, FlowError>>> = Vec::new();
    for kind in ctx.kinds.scalable() {
        steps.push(Box::pin(for_each(ctx, kind, name, move |obj| {
            scale_down_patch(kind, obj)
        })));
    }
    if let Some(cronjobs) = &ctx.kinds.cronjob {
        steps.push(Box::pin(for_each(ctx, cronjobs, name, suspend_patch)));
    }
    steps.push(Box::pin(async {
        delete_bare_pods(ctx, name).await.map(|()| 0)
    }));
    futures::future::try_join_all(steps).await?;

    // Last: the marker that says nothing is left to do for this lock.
    // It also carries the bucket label (see `crate::bucket`): no extra write.
    let patch = json!({ "metadata": {
        "labels": { BUCKET_LABEL: bucket_value(name) },
        "annotations": { LOCKED_AT_ANNOTATION: state::format_timestamp(Utc::now()) },
    } });
    let resource_version = match ns_api.patch(name, &params(), &Patch::Merge(&patch)).await {
        Ok(ns) => ns.metadata.resource_version,
        Err(e) if is_code(&e, 404) => return Ok(Outcome::Superseded),
        Err(e) => {
            return Err(FlowError::api(
                format!("marking the lock of {name} complete"),
                e,
            ))
        }
    };
    let until = deadline_raw.unwrap_or_default();
    ctx.events
        .namespace(
            name,
            EventKind::Locked,
            &format!("Namespace locked until {until}: workloads scaled to zero, quota set to zero"),
        )
        .await;
    info!(namespace = name, until = %until, "locked");
    Ok(Outcome::Locked {
        deadline,
        resource_version,
    })
}

fn lock_duration(ctx: &Context, view: &NamespaceView) -> Duration {
    match view
        .lock_duration
        .as_deref()
        .map(crate::config::parse_duration)
    {
        Some(Ok(d)) if d >= Duration::from_secs(1) => d,
        Some(_) => {
            ctx.metrics.problem("lock_duration");
            warn!(namespace = %view.name, "unparsable lock-duration annotation; using --lock-duration");
            ctx.cfg.lock_duration
        }
        None => ctx.cfg.lock_duration,
    }
}

/// Unlock flow, steps 1–4 of SPEC.md. The status label is not removed.
pub async fn unlock(ctx: &Context, view: &NamespaceView) -> Result<Outcome, FlowError> {
    let name = view.name.as_str();
    // 1. The quota.
    let quotas: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), name, &ctx.kinds.quota);
    match quotas.delete(QUOTA_NAME, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_code(&e, 404) => {}
        Err(e) => return Err(FlowError::api(format!("deleting the quota of {name}"), e)),
    }
    // 2. Workloads, 3. CronJobs: restore and drop the annotation in the same write.
    let mut steps: Vec<futures::future::BoxFuture<'_, Result<usize, FlowError>>> = Vec::new();
    for kind in ctx.kinds.scalable() {
        steps.push(Box::pin(for_each(ctx, kind, name, move |obj| {
            restore_replicas_patch(kind, obj)
        })));
    }
    if let Some(cronjobs) = &ctx.kinds.cronjob {
        steps.push(Box::pin(for_each(
            ctx,
            cronjobs,
            name,
            restore_suspend_patch,
        )));
    }
    let problems: usize = futures::future::try_join_all(steps)
        .await?
        .into_iter()
        .sum();
    if problems > 0 {
        // Keep the unlock annotation: the work stays visibly pending and is retried on the next
        // event or restart, once someone fixes the value. Nothing we cannot restore is touched.
        ctx.events
            .namespace(name, EventKind::UnlockIncomplete, &format!("{problems} object(s) carry an unparsable saved value and were left alone; fix or remove the annotation"))
            .await;
        return Ok(Outcome::UnlockIncomplete);
    }
    // 4. Last: the namespace's annotations.
    let ns_api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ctx.kinds.namespace);
    let patch = json!({ "metadata": {
        "labels": { BUCKET_LABEL: bucket_value(name) },
        "annotations": { UNLOCK_TIMESTAMP_ANNOTATION: null, LOCKED_AT_ANNOTATION: null },
    } });
    match ns_api.patch(name, &params(), &Patch::Merge(&patch)).await {
        Ok(_) => {}
        Err(e) if is_code(&e, 404) => return Ok(Outcome::Superseded),
        Err(e) => {
            return Err(FlowError::api(
                format!("removing the unlock time of {name}"),
                e,
            ))
        }
    }
    ctx.events
        .namespace(
            name,
            EventKind::Unlocked,
            "Namespace unlocked: workloads and CronJobs restored, quota removed",
        )
        .await;
    info!(namespace = name, "unlocked");
    Ok(Outcome::Unlocked)
}

/// Expiry: re-read the namespace, decide with the API server's clock, then delete it with
/// preconditions on the uid and resourceVersion the decision was made on.
pub async fn expire(ctx: &Context, name: &str) -> Result<Outcome, FlowError> {
    let (view, server_now) = match get_namespace_with_date(ctx, name).await? {
        Some(v) => v,
        None => return Ok(Outcome::Superseded),
    };
    let Some(server_now) = server_now else {
        return Err(FlowError::Conflict(format!(
            "namespace {name}: no Date header from the API server"
        )));
    };
    if !matches!(
        state::decide(&view, server_now),
        state::Decision::Expire { .. }
    ) {
        // Still locked with a future deadline by the server's clock: our clock ran ahead.
        let deadline = view.deadline().ok().flatten().map(|t| t.timestamp());
        return match deadline {
            Some(d) if view.label.as_deref() == Some("locked") && !view.terminating => {
                Err(FlowError::Early {
                    name: name.to_string(),
                    retry_at: d,
                })
            }
            _ => Ok(Outcome::Superseded),
        };
    }
    if ctx.cfg.is_protected(name) {
        ctx.metrics.expiry("protected");
        warn!(
            namespace = name,
            "lock expired on a protected namespace; never deleted"
        );
        return Ok(Outcome::ExpiryReported);
    }
    if ctx.cfg.expire_action == crate::config::ExpireAction::None {
        ctx.metrics.expiry("reported");
        ctx.events
            .namespace(
                name,
                EventKind::ExpiryReached,
                "Lock expired; --expire-action=none keeps the namespace",
            )
            .await;
        return Ok(Outcome::ExpiryReported);
    }
    let note = format!(
        "Lock expired at {}; deleting the namespace",
        view.unlock_at.as_deref().unwrap_or_default()
    );
    ctx.events.namespace(name, EventKind::Expired, &note).await;
    ctx.events.controller(name, EventKind::Expired, &note).await;
    let ns_api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ctx.kinds.namespace);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: view.uid.clone(),
            resource_version: view.resource_version.clone(),
        }),
        ..Default::default()
    };
    match ns_api.delete(name, &dp).await {
        Ok(_) => {
            ctx.metrics.expiry("deleted");
            info!(namespace = name, "expired: namespace deleted");
            Ok(Outcome::Expired)
        }
        Err(e) if is_code(&e, 404) => Ok(Outcome::Superseded),
        Err(e) if is_code(&e, 409) => {
            Err(FlowError::Conflict(format!("deleting namespace {name}")))
        }
        Err(e) => {
            ctx.metrics.expiry("error");
            Err(FlowError::api(
                format!("deleting expired namespace {name}"),
                e,
            ))
        }
    }
}

/// GET of a namespace through the raw client, to read the API server's `Date` header as well.
pub async fn get_namespace_with_date(
    ctx: &Context,
    name: &str,
) -> Result<Option<(NamespaceView, Option<i64>)>, FlowError> {
    let req = http::Request::get(format!("/api/v1/namespaces/{name}"))
        .body(Vec::new())
        .map_err(|e| FlowError::Conflict(format!("building a request for {name}: {e}")))?;
    let resp = ctx
        .client
        .send(req.map(kube::client::Body::from))
        .await
        .map_err(|e| FlowError::api(format!("reading namespace {name}"), e))?;
    let status = resp.status();
    let date = resp
        .headers()
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| DateTime::parse_from_rfc2822(s).ok())
        .map(|t| t.timestamp());
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| {
            FlowError::api(
                format!("reading namespace {name}"),
                kube::Error::Service(e.into()),
            )
        })?
        .to_bytes();
    if status == http::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        let message = String::from_utf8_lossy(&body).into_owned();
        return Err(FlowError::api(
            format!("reading namespace {name}"),
            kube::Error::Api(
                kube::core::Status::failure(&message, "")
                    .with_code(status.as_u16())
                    .boxed(),
            ),
        ));
    }
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_slice(&body).map_err(|e| {
        FlowError::api(
            format!("decoding namespace {name}"),
            kube::Error::SerdeError(e),
        )
    })?;
    Ok(Some((NamespaceView::from_meta(&ns.metadata), date)))
}

async fn create_quota(ctx: &Context, namespace: &str) -> Result<(), FlowError> {
    let mut hard = serde_json::Map::new();
    for r in [
        "pods",
        "services",
        "replicationcontrollers",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "services.nodeports",
        "services.loadbalancers",
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    ] {
        hard.insert(r.into(), json!("0"));
    }
    if ctx.cfg.quota_requests_storage {
        hard.insert("requests.storage".into(), json!("0"));
    }
    let quota: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": { "name": QUOTA_NAME, "namespace": namespace },
        "spec": { "hard": hard },
    }))
    .map_err(|e| FlowError::api("building the quota", kube::Error::SerdeError(e)))?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &ctx.kinds.quota);
    match api.create(&PostParams::default(), &quota).await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, 409) => Ok(()), // AlreadyExists: fine.
        Err(e) => Err(FlowError::api(
            format!("creating the quota in {namespace}"),
            e,
        )),
    }
}

/// What to write to one object, decided from its current state.
enum Plan {
    /// Nothing to do.
    Skip,
    /// Send this merge patch (it carries the object's resourceVersion).
    Patch(Value),
    /// A saved value does not parse: leave the object alone, report it.
    Problem(String),
}

/// Lists `kind` in `namespace` page by page and applies `plan` to each object, retrying an
/// object on conflict by re-reading it. Returns how many objects had a problem.
async fn for_each(
    ctx: &Context,
    kind: &ApiResource,
    namespace: &str,
    plan: impl Fn(&DynamicObject) -> Plan,
) -> Result<usize, FlowError> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, kind);
    let mut problems = 0;
    let mut pages = Pages::new(ListParams::default().limit(ctx.cfg.list_page_size));
    while let Some(lp) = pages.next_params() {
        let page = api
            .list(&lp)
            .await
            .map_err(|e| FlowError::api(format!("listing {} in {namespace}", kind.plural), e))?;
        pages.advance(&page.metadata);
        for obj in page.items {
            problems += apply_plan(ctx, &api, kind, namespace, obj, &plan).await?;
        }
    }
    Ok(problems)
}

async fn apply_plan(
    ctx: &Context,
    api: &Api<DynamicObject>,
    kind: &ApiResource,
    namespace: &str,
    mut obj: DynamicObject,
    plan: &impl Fn(&DynamicObject) -> Plan,
) -> Result<usize, FlowError> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    for attempt in 0..6u32 {
        let patch = match plan(&obj) {
            Plan::Skip => return Ok(0),
            Plan::Problem(why) => {
                ctx.metrics.problem(&kind.plural);
                warn!(namespace, kind = %kind.kind, object = %name, %why, "left alone");
                ctx.events
                    .namespace(
                        namespace,
                        EventKind::BadSavedValue,
                        &format!("{} {name}: {why}; left alone", kind.kind),
                    )
                    .await;
                return Ok(1);
            }
            Plan::Patch(p) => p,
        };
        match api.patch(&name, &params(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                debug!(namespace, kind = %kind.kind, object = %name, "patched");
                return Ok(0);
            }
            Err(e) if is_code(&e, 404) => return Ok(0),
            Err(e) if is_code(&e, 409) => {
                // Someone changed it since we read it: re-read and decide again, never overwrite.
                warn!(namespace, kind = %kind.kind, object = %name, attempt, "conflict; re-reading");
                tokio::time::sleep(crate::queue::backoff(
                    attempt,
                    Duration::from_millis(20),
                    Duration::from_secs(1),
                ))
                .await;
                // A list by name rather than a get: SPEC's RBAC grants CronJobs list, not get.
                let lp = ListParams::default().fields(&format!("metadata.name={name}"));
                match api.list(&lp).await {
                    Ok(list) => match list.items.into_iter().next() {
                        Some(fresh) => obj = fresh,
                        None => return Ok(0),
                    },
                    Err(e) => {
                        return Err(FlowError::api(
                            format!("re-reading {} {namespace}/{name}", kind.kind),
                            e,
                        ))
                    }
                }
            }
            Err(e) => {
                return Err(FlowError::api(
                    format!("patching {} {namespace}/{name}", kind.kind),
                    e,
                ))
            }
        }
    }
    Err(FlowError::Conflict(format!(
        "{} {namespace}/{name}",
        kind.kind
    )))
}

fn controlled_by_deployment(obj: &DynamicObject) -> bool {
    obj.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "Deployment")
}

fn scale_down_patch(kind: &ApiResource, obj: &DynamicObject) -> Plan {
    if kind.kind == "ReplicaSet" && controlled_by_deployment(obj) {
        return Plan::Skip; // It follows its Deployment.
    }
    // `spec.replicas` absent means 1, the API default.
    let replicas = obj
        .data
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if replicas == 0 {
        return Plan::Skip;
    }
    let mut meta = json!({ "resourceVersion": obj.metadata.resource_version });
    if !annotations(obj).is_some_and(|a| a.contains_key(ORIGINAL_REPLICAS_ANNOTATION)) {
        meta["annotations"] = json!({ ORIGINAL_REPLICAS_ANNOTATION: replicas.to_string() });
    }
    Plan::Patch(json!({ "metadata": meta, "spec": { "replicas": 0 } }))
}

fn restore_replicas_patch(kind: &ApiResource, obj: &DynamicObject) -> Plan {
    if kind.kind == "ReplicaSet" && controlled_by_deployment(obj) {
        // Its Deployment owns its count (and the deployment controller copies the Deployment's
        // annotations onto it, ours included): restoring the Deployment restores it.
        return Plan::Skip;
    }
    let Some(raw) = annotations(obj).and_then(|a| a.get(ORIGINAL_REPLICAS_ANNOTATION)) else {
        return Plan::Skip;
    };
    match raw.trim().parse::<i32>() {
        Ok(n) if n >= 0 => Plan::Patch(json!({
            "metadata": {
                "resourceVersion": obj.metadata.resource_version,
                "annotations": { ORIGINAL_REPLICAS_ANNOTATION: null },
            },
            "spec": { "replicas": n },
        })),
        _ => Plan::Problem(format!(
            "{ORIGINAL_REPLICAS_ANNOTATION}={raw:?} is not a replica count"
        )),
    }
}

fn suspend_patch(obj: &DynamicObject) -> Plan {
    if obj
        .data
        .pointer("/spec/suspend")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Plan::Skip; // Already suspended: stays suspended after unlock.
    }
    let mut meta = json!({ "resourceVersion": obj.metadata.resource_version });
    if !annotations(obj).is_some_and(|a| a.contains_key(ORIGINAL_SUSPEND_ANNOTATION)) {
        meta["annotations"] = json!({ ORIGINAL_SUSPEND_ANNOTATION: "false" });
    }
    Plan::Patch(json!({ "metadata": meta, "spec": { "suspend": true } }))
}

fn restore_suspend_patch(obj: &DynamicObject) -> Plan {
    let Some(raw) = annotations(obj).and_then(|a| a.get(ORIGINAL_SUSPEND_ANNOTATION)) else {
        return Plan::Skip;
    };
    let suspend = match raw.trim() {
        "false" => false,
        "true" => true,
        _ => {
            return Plan::Problem(format!(
                "{ORIGINAL_SUSPEND_ANNOTATION}={raw:?} is not true or false"
            ))
        }
    };
    Plan::Patch(json!({
        "metadata": {
            "resourceVersion": obj.metadata.resource_version,
            "annotations": { ORIGINAL_SUSPEND_ANNOTATION: null },
        },
        "spec": { "suspend": suspend },
    }))
}

/// Owners whose pods are kept: their replica counts are scaled (or, for Jobs, left alone as the
/// original does).
const POD_OWNERS_KEPT: [&str; 4] = ["ReplicaSet", "StatefulSet", "ReplicationController", "Job"];

async fn delete_bare_pods(ctx: &Context, namespace: &str) -> Result<(), FlowError> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &ctx.kinds.pod);
    let mut pages = Pages::new(ListParams::default().limit(ctx.cfg.list_page_size));
    while let Some(lp) = pages.next_params() {
        let page = api
            .list(&lp)
            .await
            .map_err(|e| FlowError::api(format!("listing pods in {namespace}"), e))?;
        pages.advance(&page.metadata);
        for pod in page.items {
            let kept = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| POD_OWNERS_KEPT.contains(&o.kind.as_str()));
            if kept || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => debug!(namespace, pod = %name, "deleted bare pod"),
                Err(e) if is_code(&e, 404) || is_code(&e, 409) => {} // gone, or replaced by a new pod of that name
                Err(e) => {
                    return Err(FlowError::api(
                        format!("deleting pod {namespace}/{name}"),
                        e,
                    ))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("object")
    }

    fn deploy() -> ApiResource {
        ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&())
    }

    fn rs() -> ApiResource {
        ApiResource::erase::<k8s_openapi::api::apps::v1::ReplicaSet>(&())
    }

    fn patch_of(p: Plan) -> Option<Value> {
        match p {
            Plan::Patch(v) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn scale_down_saves_the_count_in_the_same_write() {
        let o = obj(
            json!({"metadata": {"name": "web", "resourceVersion": "7"}, "spec": {"replicas": 3}}),
        );
        let p = patch_of(scale_down_patch(&deploy(), &o)).expect("patch");
        assert_eq!(
            p,
            json!({"metadata": {"resourceVersion": "7", "annotations": {ORIGINAL_REPLICAS_ANNOTATION: "3"}}, "spec": {"replicas": 0}})
        );
    }

    #[test]
    fn absent_replicas_mean_one_and_zero_is_skipped() {
        let o = obj(json!({"metadata": {"name": "web", "resourceVersion": "7"}, "spec": {}}));
        let p = patch_of(scale_down_patch(&deploy(), &o)).expect("patch");
        assert_eq!(
            p["metadata"]["annotations"][ORIGINAL_REPLICAS_ANNOTATION],
            "1"
        );
        let o = obj(json!({"metadata": {"name": "web"}, "spec": {"replicas": 0}}));
        assert!(matches!(scale_down_patch(&deploy(), &o), Plan::Skip));
    }

    #[test]
    fn an_existing_saved_count_is_never_overwritten() {
        let o = obj(
            json!({"metadata": {"name": "web", "resourceVersion": "9", "annotations": {ORIGINAL_REPLICAS_ANNOTATION: "5"}}, "spec": {"replicas": 2}}),
        );
        let p = patch_of(scale_down_patch(&deploy(), &o)).expect("patch");
        assert!(p["metadata"].get("annotations").is_none(), "{p}");
        assert_eq!(p["spec"]["replicas"], 0);
    }

    #[test]
    fn replicasets_of_deployments_are_skipped() {
        let o = obj(
            json!({"metadata": {"name": "web-abc", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u", "controller": true}]}, "spec": {"replicas": 3}}),
        );
        assert!(matches!(scale_down_patch(&rs(), &o), Plan::Skip));
        let o = obj(json!({"metadata": {"name": "lone"}, "spec": {"replicas": 3}}));
        assert!(patch_of(scale_down_patch(&rs(), &o)).is_some());
    }

    #[test]
    fn restore_removes_the_annotation_in_the_same_write() {
        let o = obj(
            json!({"metadata": {"name": "web", "resourceVersion": "11", "annotations": {ORIGINAL_REPLICAS_ANNOTATION: "4"}}, "spec": {"replicas": 0}}),
        );
        let p = patch_of(restore_replicas_patch(&deploy(), &o)).expect("patch");
        assert_eq!(
            p,
            json!({"metadata": {"resourceVersion": "11", "annotations": {ORIGINAL_REPLICAS_ANNOTATION: null}}, "spec": {"replicas": 4}})
        );
        for bad in ["three", "-1", "", "2.5"] {
            let o = obj(
                json!({"metadata": {"name": "web", "annotations": {ORIGINAL_REPLICAS_ANNOTATION: bad}}, "spec": {"replicas": 0}}),
            );
            assert!(
                matches!(restore_replicas_patch(&deploy(), &o), Plan::Problem(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cronjobs_suspend_and_restore() {
        let o = obj(
            json!({"metadata": {"name": "c", "resourceVersion": "1"}, "spec": {"schedule": "* * * * *"}}),
        );
        let p = patch_of(suspend_patch(&o)).expect("patch");
        assert_eq!(p["spec"]["suspend"], true);
        assert_eq!(
            p["metadata"]["annotations"][ORIGINAL_SUSPEND_ANNOTATION],
            "false"
        );
        let o = obj(json!({"metadata": {"name": "c"}, "spec": {"suspend": true}}));
        assert!(matches!(suspend_patch(&o), Plan::Skip));
        let o = obj(
            json!({"metadata": {"name": "c", "resourceVersion": "2", "annotations": {ORIGINAL_SUSPEND_ANNOTATION: "false"}}, "spec": {"suspend": true}}),
        );
        let p = patch_of(restore_suspend_patch(&o)).expect("patch");
        assert_eq!(p["spec"]["suspend"], false);
        assert_eq!(
            p["metadata"]["annotations"][ORIGINAL_SUSPEND_ANNOTATION],
            Value::Null
        );
        let o = obj(
            json!({"metadata": {"name": "c", "annotations": {ORIGINAL_SUSPEND_ANNOTATION: "maybe"}}, "spec": {"suspend": true}}),
        );
        assert!(matches!(restore_suspend_patch(&o), Plan::Problem(_)));
    }
}
