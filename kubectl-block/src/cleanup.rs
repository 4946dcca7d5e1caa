//! `cleanup`: removes what the controller left on namespaces that are not locked (labelled
//! `active` or unlabelled): the ResourceQuota `block-controller-quota` and the annotations
//! `clawcloud.run/unlock-timestamp` and `core.clawcloud.run/locked-at`.
//!
//! A namespace where a workload still carries `core.clawcloud.run/original-replicas` (or a
//! CronJob `core.clawcloud.run/original-suspend`) is never touched: that is restore work pending
//! for the controller, and removing its markers would lose the saved counts' context.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use block_controller::api::{
    ORIGINAL_REPLICAS_ANNOTATION, ORIGINAL_SUSPEND_ANNOTATION, QUOTA_NAME, STATUS_LABEL,
    UNLOCK_TIMESTAMP_ANNOTATION,
};
use block_controller::context::Kinds;
use block_controller::state::LOCKED_AT_ANNOTATION;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{json, Map, Value};

use crate::client::{is_not_found, GlobalArgs, Kube};
use crate::targets::{self, annotation, label, name, PAGE};

/// The annotations cleanup removes.
const STALE_ANNOTATIONS: [&str; 2] = [UNLOCK_TIMESTAMP_ANNOTATION, LOCKED_AT_ANNOTATION];

/// `kubectl block cleanup`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Namespaces labelled clawcloud.run/status=locked, or with another \
label value, are never touched.\n\nExamples:\n  \
    kubectl block cleanup --dry-run\n  \
    kubectl block cleanup team-a\n  \
    kubectl block cleanup --selector tier=trial --force"
)]
pub struct CleanupArgs {
    /// Only these namespaces (default: every namespace).
    #[arg(value_name = "NAMESPACE", conflicts_with = "selector")]
    pub names: Vec<String>,

    /// Only namespaces matching this label selector.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// List what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation when more than one namespace is cleaned.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// Leftovers found on one namespace.
struct Leftovers {
    namespace: String,
    quota: bool,
    annotations: Vec<&'static str>,
}

impl Leftovers {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.quota {
            parts.push(format!("resourcequota/{QUOTA_NAME}"));
        }
        if !self.annotations.is_empty() {
            parts.push(format!("annotations {}", self.annotations.join(", ")));
        }
        parts.join(" and ")
    }
}

/// `kubectl block cleanup`.
pub async fn run(g: &GlobalArgs, a: &CleanupArgs) -> Result<()> {
    let kube = Kube::connect(g).await?;
    let scanned = if !a.names.is_empty() {
        targets::get_namespaces(&kube, &a.names).await?
    } else {
        targets::list_namespaces(&kube, a.selector.as_deref()).await?
    };
    let with_quota = namespaces_with_quota(&kube).await?;

    let mut candidates = Vec::new();
    for m in &scanned {
        let ns = name(m);
        let state = label(m, STATUS_LABEL);
        if !matches!(state, None | Some("active")) {
            if !a.names.is_empty() {
                outln!(
                    "namespace/{ns}: labelled {STATUS_LABEL}={}; left alone",
                    state.unwrap_or_default()
                );
            }
            continue;
        }
        if m.deletion_timestamp.is_some() {
            continue;
        }
        let found = Leftovers {
            namespace: ns.to_string(),
            quota: with_quota.contains(ns),
            annotations: STALE_ANNOTATIONS
                .into_iter()
                .filter(|k| annotation(m, k).is_some())
                .collect(),
        };
        if found.quota || !found.annotations.is_empty() {
            candidates.push(found);
        } else if !a.names.is_empty() {
            outln!("namespace/{ns}: nothing to clean up");
        }
    }
    if candidates.is_empty() {
        outln!("Nothing to clean up.");
        return Ok(());
    }

    let kinds = Kinds::discover(&kube.client).await?;
    let mut cleanable = Vec::new();
    for c in candidates {
        match pending_restore(&kube, &kinds, &c.namespace).await? {
            Some(what) => outln!(
                "namespace/{}: skipped: {what} still carries its saved value; the controller has \
                 not finished restoring it (leftovers kept: {})",
                c.namespace,
                c.describe()
            ),
            None => cleanable.push(c),
        }
    }
    if cleanable.is_empty() {
        return Ok(());
    }
    if a.dry_run {
        for c in &cleanable {
            outln!("namespace/{}: would remove {}", c.namespace, c.describe());
        }
        outln!(
            "Dry run: nothing was changed ({} would be cleaned).",
            targets::count(cleanable.len(), "namespace")
        );
        return Ok(());
    }
    if a.names.is_empty() || cleanable.len() > 1 {
        let names: Vec<String> = cleanable.iter().map(|c| c.namespace.clone()).collect();
        let what = format!(
            "remove controller leftovers from {}",
            targets::count(names.len(), "namespace")
        );
        targets::confirm(&what, &names, a.force)?;
    }
    let mut failed = 0;
    for c in &cleanable {
        match clean(&kube, c).await {
            Ok(Some(done)) => outln!("namespace/{}: removed {done}", c.namespace),
            Ok(None) => outln!(
                "namespace/{}: became locked meanwhile; left alone",
                c.namespace
            ),
            Err(e) => {
                failed += 1;
                eprintln!("namespace/{}: {e:#}", c.namespace);
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} could not be cleaned",
            targets::count(cleanable.len(), "namespace")
        );
    }
    Ok(())
}

/// Namespaces holding a ResourceQuota named block-controller-quota (one cluster-wide list).
async fn namespaces_with_quota(kube: &Kube) -> Result<BTreeSet<String>> {
    let api: Api<ResourceQuota> = Api::all(kube.client.clone());
    let mut out = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default()
            .fields(&format!("metadata.name={QUOTA_NAME}"))
            .limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api
            .list_metadata(&lp)
            .await
            .map_err(|e| kube.error(e, "list", "resourcequotas (all namespaces)"))?;
        out.extend(page.items.into_iter().filter_map(|q| q.metadata.namespace));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    Ok(out)
}

/// The first workload or CronJob in `ns` still carrying a saved value, as `Kind/name`.
async fn pending_restore(kube: &Kube, kinds: &Kinds, ns: &str) -> Result<Option<String>> {
    let mut kinds_to_check: Vec<(&ApiResource, &str)> = kinds
        .scalable()
        .iter()
        .map(|ar| (ar, ORIGINAL_REPLICAS_ANNOTATION))
        .collect();
    if let Some(ar) = &kinds.cronjob {
        kinds_to_check.push((ar, ORIGINAL_SUSPEND_ANNOTATION));
    }
    for (ar, key) in kinds_to_check {
        let api: Api<DynamicObject> = Api::namespaced_with(kube.client.clone(), ns, ar);
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = api
                .list_metadata(&lp)
                .await
                .map_err(|e| kube.error(e, "list", &format!("{} in namespace {ns}", ar.plural)))?;
            if let Some(o) = page.items.iter().find(|o| {
                annotation(&o.metadata, key).is_some()
                    && !targets::follows_deployment(&ar.kind, &o.metadata)
            }) {
                return Ok(Some(format!(
                    "{}/{} ({key}={})",
                    ar.kind,
                    name(&o.metadata),
                    annotation(&o.metadata, key).unwrap_or_default()
                )));
            }
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
    }
    Ok(None)
}

/// Re-reads the namespace, then removes the annotations (with a resourceVersion precondition,
/// so a namespace locked meanwhile is not touched) and the quota. `None`: it became locked.
async fn clean(kube: &Kube, c: &Leftovers) -> Result<Option<String>> {
    let ns_api: Api<Namespace> = Api::all(kube.client.clone());
    let current: ObjectMeta = ns_api
        .get_metadata(&c.namespace)
        .await
        .map_err(|e| kube.error(e, "get", &format!("namespaces/{}", c.namespace)))?
        .metadata;
    if !matches!(label(&current, STATUS_LABEL), None | Some("active")) {
        return Ok(None);
    }
    let present: Vec<&str> = STALE_ANNOTATIONS
        .into_iter()
        .filter(|k| annotation(&current, k).is_some())
        .collect();
    let mut done = Vec::new();
    if !present.is_empty() {
        let mut annotations = Map::new();
        for k in &present {
            annotations.insert(k.to_string(), Value::Null);
        }
        let patch = json!({ "metadata": {
            "resourceVersion": current.resource_version,
            "annotations": annotations,
        }});
        ns_api
            .patch(&c.namespace, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 409 => anyhow::anyhow!(
                    "the namespace changed while cleaning; nothing removed, run cleanup again"
                ),
                e => kube.error(e, "patch", &format!("namespaces/{}", c.namespace)),
            })?;
        done.push(format!("annotations {}", present.join(", ")));
    }
    if c.quota {
        let q: Api<ResourceQuota> = Api::namespaced(kube.client.clone(), &c.namespace);
        match q.delete(QUOTA_NAME, &DeleteParams::default()).await {
            Ok(_) => done.push(format!("resourcequota/{QUOTA_NAME}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(kube.error(
                    e,
                    "delete",
                    &format!("resourcequotas/{QUOTA_NAME} in namespace {}", c.namespace),
                ))
            }
        }
    }
    if done.is_empty() {
        done.push("nothing (already clean)".to_string());
    }
    Ok(Some(done.join(" and ")))
}
