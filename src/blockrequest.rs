//! BlockRequest intake: set `clawcloud.run/status` to `spec.action` on every target namespace.
//! The label is the single source of truth; the lock or unlock work then follows from the
//! namespace itself, through the namespace engine.
//!
//! Fixes over the original (SPEC.md "Decisions"): a changed action re-applies; deleting a locking
//! request unlocks what it locked and no later request changed (tracked by a label carrying the
//! request's uid, so the set is found with one label-selected list); selectors are listed page by
//! page once per generation; status stays bounded whatever the request's size.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;
use tracing::{info, warn};

use crate::api::{
    messages, Action, BlockRequest, BlockRequestStatus, Condition, NamespaceStatus, FINALIZER,
    STATUS_LABEL,
};
use crate::config::is_dns_label;
use crate::context::Context;
use crate::pages::Pages;

/// Label on a namespace naming (by uid) the BlockRequest that last set its status label.
pub const REQUEST_UID_LABEL: &str = "core.clawcloud.run/request-uid";
/// Most per-namespace entries kept in status (failures first).
pub const MAX_STATUS_ENTRIES: usize = 100;
/// Message for a protected target.
pub const PROTECTED_MESSAGE: &str = "Namespace is protected; refused";
/// Label writes in flight per request (the client's token bucket still bounds the rate).
const CONCURRENCY: usize = 16;

/// Why a reconcile of a BlockRequest failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The selector cannot be turned into a label selector string.
    #[error("invalid namespaceSelector: {0}")]
    Selector(String),
    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// Runs the BlockRequest controller until the process stops.
pub async fn run(ctx: Context) {
    let api: Api<BlockRequest> = Api::all(ctx.client.clone());
    let concurrency = ctx.cfg.worker_count as u16;
    Controller::new(api, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "blockrequest reconcile failed");
            }
        })
        .await;
}

fn error_policy(_br: Arc<BlockRequest>, err: &Error, _ctx: Arc<Context>) -> Requeue {
    warn!(error = %err, "blockrequest will be retried");
    Requeue::requeue(Duration::from_secs(5))
}

async fn reconcile(br: Arc<BlockRequest>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let ns = br.namespace().unwrap_or_default();
    let api: Api<BlockRequest> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, br, |event| async {
        match event {
            FinalizerEvent::Apply(br) => apply(&ctx, &br).await,
            FinalizerEvent::Cleanup(br) => cleanup(&ctx, &br).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// The outcome of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetOutcome {
    Applied,
    NotFound,
    FetchFailed,
    UpdateFailed,
    Protected,
}

impl TargetOutcome {
    fn message(self) -> &'static str {
        match self {
            TargetOutcome::Applied => messages::UPDATED,
            TargetOutcome::NotFound => messages::NOT_FOUND,
            TargetOutcome::FetchFailed => messages::FETCH_FAILED,
            TargetOutcome::UpdateFailed => messages::UPDATE_FAILED,
            TargetOutcome::Protected => PROTECTED_MESSAGE,
        }
    }

    /// Order of status entries: failures first.
    fn rank(self) -> u8 {
        match self {
            TargetOutcome::UpdateFailed | TargetOutcome::FetchFailed => 0,
            TargetOutcome::NotFound => 1,
            TargetOutcome::Protected => 2,
            TargetOutcome::Applied => 3,
        }
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

async fn apply(ctx: &Context, br: &BlockRequest) -> Result<Requeue, Error> {
    let generation = br.metadata.generation;
    if let Some(status) = &br.status {
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if status.observed_generation == generation && generation.is_some() && ready {
            return Ok(Requeue::await_change()); // Once per generation.
        }
    }
    let uid = br.uid().unwrap_or_default();
    let action = br.spec.action;
    let ns_api: Api<Namespace> = Api::all(ctx.client.clone());

    // Names first (deduplicated, in order), then the selector's matches.
    let mut results: Vec<(String, TargetOutcome)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let names: Vec<String> = br
        .spec
        .namespace_names
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| seen.insert(n.clone()))
        .collect();
    let outcomes: Vec<(String, TargetOutcome)> = futures::stream::iter(names)
        .map(|name| {
            let ns_api = ns_api.clone();
            let uid = uid.clone();
            async move {
                let outcome = apply_named(ctx, &ns_api, &name, action, &uid).await;
                (name, outcome)
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    results.extend(outcomes);

    if let Some(selector) = &br.spec.namespace_selector {
        let selector = selector_string(selector)?;
        let mut pages = Pages::new(ListParams::default().labels(&selector).limit(500));
        while let Some(lp) = pages.next_params() {
            let page = ns_api
                .list_metadata(&lp)
                .await
                .map_err(|source| Error::Api {
                    what: format!("listing namespaces matching {selector:?}"),
                    source,
                })?;
            pages.advance(&page.metadata);
            let batch: Vec<_> = page
                .items
                .into_iter()
                .filter_map(|m| {
                    let name = m.metadata.name.clone()?;
                    seen.insert(name.clone())
                        .then_some((name, m.metadata.labels.unwrap_or_default()))
                })
                .collect();
            let outcomes: Vec<(String, TargetOutcome)> = futures::stream::iter(batch)
                .map(|(name, labels)| {
                    let ns_api = ns_api.clone();
                    let uid = uid.clone();
                    async move {
                        let current = labels.get(STATUS_LABEL).map(String::as_str);
                        let outcome = apply_one(ctx, &ns_api, &name, current, action, &uid).await;
                        (name, outcome)
                    }
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;
            results.extend(outcomes);
        }
    }

    let status = summarize(&results, generation, br.status.as_ref());
    let failed = status.failed_count;
    let api: Api<BlockRequest> =
        Api::namespaced(ctx.client.clone(), &br.namespace().unwrap_or_default());
    api.patch_status(
        &br.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|source| Error::Api {
        what: "writing status".into(),
        source,
    })?;
    info!(request = %br.name_any(), action = action.as_label(), targets = results.len(), failed, "blockrequest applied");
    if failed > 0 {
        Ok(Requeue::requeue(Duration::from_secs(10)))
    } else {
        Ok(Requeue::await_change())
    }
}

async fn apply_named(
    ctx: &Context,
    ns_api: &Api<Namespace>,
    name: &str,
    action: Action,
    uid: &str,
) -> TargetOutcome {
    if ctx.cfg.is_protected(name) {
        return TargetOutcome::Protected;
    }
    if !is_dns_label(name) {
        return TargetOutcome::NotFound; // No namespace can have this name.
    }
    match ns_api.get_metadata_opt(name).await {
        Ok(Some(m)) => {
            let labels = m.metadata.labels.unwrap_or_default();
            apply_one(
                ctx,
                ns_api,
                name,
                labels.get(STATUS_LABEL).map(String::as_str),
                action,
                uid,
            )
            .await
        }
        Ok(None) => TargetOutcome::NotFound,
        Err(e) => {
            warn!(namespace = name, error = %e, "fetching a BlockRequest target failed");
            TargetOutcome::FetchFailed
        }
    }
}

/// Sets the label unless it already has the requested value. The request's uid goes along so
/// that deleting a locking request can find what it locked.
async fn apply_one(
    ctx: &Context,
    ns_api: &Api<Namespace>,
    name: &str,
    current: Option<&str>,
    action: Action,
    uid: &str,
) -> TargetOutcome {
    if ctx.cfg.is_protected(name) {
        return TargetOutcome::Protected;
    }
    if current == Some(action.as_label()) {
        return TargetOutcome::Applied;
    }
    let patch = json!({ "metadata": { "labels": { STATUS_LABEL: action.as_label(), REQUEST_UID_LABEL: uid } } });
    match ns_api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => TargetOutcome::Applied,
        Err(e) if is_code(&e, 404) => TargetOutcome::NotFound,
        Err(e) => {
            warn!(namespace = name, error = %e, "labelling a BlockRequest target failed");
            TargetOutcome::UpdateFailed
        }
    }
}

/// Deleting a request: if it locked, set `active` on the namespaces it locked that no later
/// request changed (they still carry its uid and are still locked).
async fn cleanup(ctx: &Context, br: &BlockRequest) -> Result<Requeue, Error> {
    if br.spec.action != Action::Locked {
        return Ok(Requeue::await_change());
    }
    let uid = br.uid().unwrap_or_default();
    let ns_api: Api<Namespace> = Api::all(ctx.client.clone());
    let selector = format!("{REQUEST_UID_LABEL}={uid},{STATUS_LABEL}=locked");
    let mut unlocked = 0usize;
    let mut pages = Pages::new(ListParams::default().labels(&selector).limit(500));
    while let Some(lp) = pages.next_params() {
        let page = ns_api
            .list_metadata(&lp)
            .await
            .map_err(|source| Error::Api {
                what: "listing namespaces locked by the request".into(),
                source,
            })?;
        pages.advance(&page.metadata);
        for m in page.items {
            let Some(name) = m.metadata.name else {
                continue;
            };
            if ctx.cfg.is_protected(&name) {
                continue;
            }
            let patch = json!({ "metadata": { "labels": { STATUS_LABEL: "active", REQUEST_UID_LABEL: null } } });
            match ns_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => unlocked += 1,
                Err(e) if is_code(&e, 404) => {}
                Err(source) => {
                    return Err(Error::Api {
                        what: format!("unlocking {name} on deletion of its request"),
                        source,
                    })
                }
            }
        }
    }
    info!(request = %br.name_any(), unlocked, "locking blockrequest deleted; its namespaces unlocked");
    Ok(Requeue::await_change())
}

/// Turns a LabelSelector into the selector string the API takes.
pub fn selector_string(s: &LabelSelector) -> Result<String, Error> {
    let mut parts = Vec::new();
    for (k, v) in s.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(Error::Selector(format!(
                    "{} {} needs values",
                    e.key, e.operator
                )));
            }
            "In" => parts.push(format!("{} in ({})", e.key, values.join(","))),
            "NotIn" => parts.push(format!("{} notin ({})", e.key, values.join(","))),
            "Exists" => parts.push(e.key.clone()),
            "DoesNotExist" => parts.push(format!("!{}", e.key)),
            other => return Err(Error::Selector(format!("unknown operator {other:?}"))),
        }
    }
    if parts.is_empty() {
        // An empty selector would match every namespace: refuse rather than lock a cluster.
        return Err(Error::Selector(
            "an empty selector would match every namespace".into(),
        ));
    }
    Ok(parts.join(","))
}

/// Bounded status: counts, observedGeneration, a Ready condition and ≤ 100 entries.
fn summarize(
    results: &[(String, TargetOutcome)],
    generation: Option<i64>,
    previous: Option<&BlockRequestStatus>,
) -> BlockRequestStatus {
    let count = |o: TargetOutcome| results.iter().filter(|(_, r)| *r == o).count() as i64;
    let applied = count(TargetOutcome::Applied);
    let not_found = count(TargetOutcome::NotFound);
    let protected = count(TargetOutcome::Protected);
    let failed = count(TargetOutcome::FetchFailed) + count(TargetOutcome::UpdateFailed);
    let mut entries: Vec<&(String, TargetOutcome)> = results.iter().collect();
    entries.sort_by_key(|(_, o)| o.rank());
    let namespace_statuses = entries
        .into_iter()
        .take(MAX_STATUS_ENTRIES)
        .map(|(name, o)| NamespaceStatus {
            name: name.clone(),
            message: o.message().to_string(),
        })
        .collect();
    let (status, reason, message) = if failed == 0 {
        (
            "True",
            "Applied",
            format!("{applied} of {} targets carry the label ({not_found} not found, {protected} protected)", results.len()),
        )
    } else {
        (
            "False",
            "Failed",
            format!("{failed} targets could not be labelled; retrying"),
        )
    };
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let last_transition_time = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    BlockRequestStatus {
        namespace_statuses,
        processed_namespace_count: results.len() as i64,
        selector_continue_token: None,
        observed_generation: generation,
        target_count: results.len() as i64,
        applied_count: applied,
        not_found_count: not_found,
        failed_count: failed,
        protected_count: protected,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: generation,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selectors_render_like_kubectl() {
        let s = LabelSelector {
            match_labels: Some([("team".to_string(), "a".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["free".into(), "trial".into()]),
                },
                LabelSelectorRequirement {
                    key: "vip".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            selector_string(&s).expect("valid"),
            "team=a,tier in (free,trial),!vip"
        );
        assert!(
            selector_string(&LabelSelector::default()).is_err(),
            "empty selector refused"
        );
    }

    #[test]
    fn status_is_bounded_with_failures_first() {
        let mut results: Vec<(String, TargetOutcome)> = (0..1000)
            .map(|i| (format!("ns-{i}"), TargetOutcome::Applied))
            .collect();
        results.push(("gone".into(), TargetOutcome::NotFound));
        results.push(("broken".into(), TargetOutcome::UpdateFailed));
        let s = summarize(&results, Some(3), None);
        assert_eq!(s.namespace_statuses.len(), MAX_STATUS_ENTRIES);
        assert_eq!(s.namespace_statuses[0].message, messages::UPDATE_FAILED);
        assert_eq!(s.namespace_statuses[1].message, messages::NOT_FOUND);
        assert_eq!(s.namespace_statuses[2].message, messages::UPDATED);
        assert_eq!(
            (
                s.target_count,
                s.applied_count,
                s.not_found_count,
                s.failed_count
            ),
            (1002, 1000, 1, 1)
        );
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.observed_generation, Some(3));
    }
}
