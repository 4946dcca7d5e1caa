//! `lock` and `unlock`: through a BlockRequest (default) or directly on the namespace label.
//!
//! Per-namespace parameters (`--duration`, `--reason`) are annotations on each target, written
//! before the BlockRequest is created so the controller sees them when it acts.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use block_controller::api::{Action, BlockRequest, BlockRequestSpec, STATUS_LABEL};
use block_controller::blockrequest::REQUEST_UID_LABEL;
use block_controller::state::{LOCK_DURATION_ANNOTATION, LOCK_REASON_ANNOTATION};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Map, Value};

use crate::client::{GlobalArgs, Kube};
use crate::targets::{self, annotation, label, name};

/// Reason given to `unlock --reason`, recorded on the namespace (the lock reason is removed).
pub const UNLOCK_REASON_ANNOTATION: &str = "core.clawcloud.run/unlock-reason";
/// Label put on BlockRequests this plugin creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kubectl-block");
/// Most names in one BlockRequest (keeps the object far below the 1.5 MB limit); more targets
/// are split over several requests.
const NAMES_PER_REQUEST: usize = 5000;
/// Namespace writes in flight with --direct or annotations.
const CONCURRENCY: usize = 16;

/// Flags shared by lock and unlock.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Why; recorded on each namespace (lock: core.clawcloud.run/lock-reason, unlock:
    /// core.clawcloud.run/unlock-reason).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Set the clawcloud.run/status label on each namespace directly instead of creating a
    /// BlockRequest.
    #[arg(long)]
    pub direct: bool,

    /// Print the targets and the objects/patches; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation of bulk actions (more than one namespace, --selector, --all).
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `kubectl block lock`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    kubectl block lock team-a --duration 24h --reason \"unpaid invoice\"\n  \
    kubectl block lock team-a team-b --force\n  \
    kubectl block lock --selector tier=trial --dry-run\n  \
    kubectl block lock --all --exclude ops,monitoring\n  \
    kubectl block lock team-a --direct")]
pub struct LockArgs {
    /// Namespaces to lock.
    #[arg(value_name = "NAMESPACE", required_unless_present_any = ["selector", "all"], conflicts_with_all = ["selector", "all"])]
    pub names: Vec<String>,

    /// Lock the namespaces matching this label selector (e.g. tier=trial,env!=prod).
    #[arg(short = 'l', long, value_name = "SELECTOR", conflicts_with = "all")]
    pub selector: Option<String>,

    /// Lock every namespace except kube-system, kube-public, kube-node-lease, default, kube-*,
    /// the controller's namespace and --exclude.
    #[arg(long)]
    pub all: bool,

    /// With --all: namespaces to leave out (comma-separated or repeated).
    #[arg(
        long,
        requires = "all",
        value_delimiter = ',',
        value_name = "NAMESPACE"
    )]
    pub exclude: Vec<String>,

    /// Lock duration of these namespaces before they expire (Go duration: 24h, 90m, 1h30m);
    /// default: the controller's --lock-duration. Does not extend an existing lock.
    #[arg(long, value_parser = parse_go_duration, value_name = "DURATION")]
    pub duration: Option<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// `kubectl block unlock`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    kubectl block unlock team-a --reason \"paid\"\n  \
    kubectl block unlock --selector tier=trial --force\n  \
    kubectl block unlock --all-locked --dry-run")]
pub struct UnlockArgs {
    /// Namespaces to unlock.
    #[arg(value_name = "NAMESPACE", required_unless_present_any = ["selector", "all_locked"], conflicts_with_all = ["selector", "all_locked"])]
    pub names: Vec<String>,

    /// Unlock the namespaces matching this label selector.
    #[arg(
        short = 'l',
        long,
        value_name = "SELECTOR",
        conflicts_with = "all_locked"
    )]
    pub selector: Option<String>,

    /// Unlock every namespace labelled clawcloud.run/status=locked.
    #[arg(long)]
    pub all_locked: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// What the user pointed at.
enum Scope {
    Names(Vec<String>),
    Selector(String),
    All(Vec<String>),
}

/// Annotation changes for each target: `Some` sets, `None` removes.
type AnnotationChanges = BTreeMap<&'static str, Option<String>>;

/// `kubectl block lock`.
pub async fn lock(g: &GlobalArgs, a: &LockArgs) -> Result<()> {
    let scope = if a.all {
        Scope::All(a.exclude.clone())
    } else if let Some(s) = &a.selector {
        Scope::Selector(s.clone())
    } else {
        Scope::Names(a.names.clone())
    };
    let mut changes = AnnotationChanges::new();
    if let Some(d) = &a.duration {
        changes.insert(LOCK_DURATION_ANNOTATION, Some(d.clone()));
    }
    if let Some(r) = &a.common.reason {
        changes.insert(LOCK_REASON_ANNOTATION, Some(r.clone()));
    }
    changes.insert(UNLOCK_REASON_ANNOTATION, None);
    run(
        g,
        Action::Locked,
        scope,
        changes,
        &a.common,
        a.duration.is_some(),
    )
    .await
}

/// `kubectl block unlock`.
pub async fn unlock(g: &GlobalArgs, a: &UnlockArgs) -> Result<()> {
    let scope = if a.all_locked {
        Scope::Selector(format!("{STATUS_LABEL}=locked"))
    } else if let Some(s) = &a.selector {
        Scope::Selector(s.clone())
    } else {
        Scope::Names(a.names.clone())
    };
    let mut changes = AnnotationChanges::new();
    changes.insert(LOCK_REASON_ANNOTATION, None);
    changes.insert(UNLOCK_REASON_ANNOTATION, a.common.reason.clone());
    run(g, Action::Active, scope, changes, &a.common, false).await
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Locked => "lock",
        Action::Active => "unlock",
    }
}

async fn run(
    g: &GlobalArgs,
    action: Action,
    scope: Scope,
    changes: AnnotationChanges,
    c: &CommonArgs,
    duration_given: bool,
) -> Result<()> {
    let verb = verb(action);
    // A selector that cannot go into a BlockRequest fails before anything else.
    let request_selector = match &scope {
        Scope::Selector(s) if !c.direct => Some(targets::parse_selector(s)?),
        Scope::Selector(s) => {
            targets::parse_selector(s)?;
            None
        }
        _ => None,
    };
    let kube = Kube::connect(g).await?;
    if !c.direct {
        kube.require_crd().await?;
    }
    let ctl = kube.controller_namespace.clone();

    let (found, bulk) = match &scope {
        Scope::Names(names) => {
            let protected: Vec<&String> = names
                .iter()
                .filter(|n| targets::is_protected(n, &ctl))
                .collect();
            if let Some(p) = protected.first() {
                bail!("namespace {p:?} is protected: the controller never locks or unlocks it");
            }
            let found = targets::get_namespaces(&kube, names).await?;
            let bulk = found.len() > 1;
            (found, bulk)
        }
        Scope::Selector(s) => (targets::list_namespaces(&kube, Some(s)).await?, true),
        Scope::All(exclude) => {
            let all = targets::list_namespaces(&kube, None).await?;
            let kept = all
                .into_iter()
                .filter(|m| {
                    !targets::is_system(name(m), &ctl) && !exclude.iter().any(|e| e == name(m))
                })
                .collect();
            (kept, true)
        }
    };
    let (targets, skipped): (Vec<ObjectMeta>, Vec<ObjectMeta>) = found
        .into_iter()
        .partition(|m| !targets::is_protected(name(m), &ctl));
    for m in &skipped {
        eprintln!(
            "skipping namespace/{}: protected (the controller never touches it)",
            name(m)
        );
    }
    if targets.is_empty() {
        outln!("No namespaces to {verb}; nothing to do.");
        return Ok(());
    }
    let names: Vec<String> = targets.iter().map(|m| name(m).to_string()).collect();
    let how = if c.direct {
        "directly".to_string()
    } else {
        format!("through a BlockRequest in namespace {}", kube.namespace)
    };

    let patches: Vec<(String, Option<Value>)> = targets
        .iter()
        .map(|m| {
            (
                name(m).to_string(),
                namespace_patch(m, action, &changes, c.direct),
            )
        })
        .collect();
    let requests = if c.direct {
        Vec::new()
    } else {
        build_requests(action, &scope, request_selector, &names)
    };

    if action == Action::Locked && duration_given {
        for m in &targets {
            if label(m, STATUS_LABEL) == Some("locked") {
                let until = annotation(m, block_controller::api::UNLOCK_TIMESTAMP_ANNOTATION)
                    .unwrap_or("(not set yet)");
                eprintln!(
                    "note: namespace/{} is already locked (unlock at {until}); --duration does not extend an existing lock",
                    name(m)
                );
            }
        }
    }

    if c.dry_run {
        return dry_run(&kube, verb, &how, &patches, &requests).await;
    }
    if bulk {
        let what = format!("{verb} {} {how}", targets::count(names.len(), "namespace"));
        targets::confirm(&what, &names, c.force)?;
    }

    let failures = apply_patches(&kube, &patches, action, c.direct).await;
    if !failures.is_empty() {
        for (ns, e) in &failures {
            eprintln!("namespace/{ns}: {e:#}");
        }
        if c.direct {
            bail!(
                "{} of {} could not be {verb}ed",
                failures.len(),
                targets::count(names.len(), "namespace")
            );
        }
        // The parameters must be on the namespaces before the controller acts: stop here.
        bail!(
            "could not annotate {} of {}; no BlockRequest was created",
            failures.len(),
            targets::count(names.len(), "namespace")
        );
    }
    if c.direct {
        return Ok(());
    }
    let api: Api<BlockRequest> = Api::namespaced(kube.client.clone(), &kube.namespace);
    for br in &requests {
        let created = api.create(&PostParams::default(), br).await.map_err(|e| {
            kube.error(
                e,
                "create",
                &format!(
                    "blockrequests.core.clawcloud.run in namespace {}",
                    kube.namespace
                ),
            )
        })?;
        let target = match (&br.spec.namespace_selector, br.spec.namespace_names.len()) {
            (Some(_), _) => format!("selector {}", scope_text(&scope)),
            (None, n) => targets::count(n, "namespace"),
        };
        outln!(
            "blockrequest.core.clawcloud.run/{} created in namespace {} (action {}, {target})",
            name(&created.metadata),
            kube.namespace,
            action.as_label()
        );
    }
    outln!(
        "The controller applies it; follow with: kubectl block list -n {}",
        kube.namespace
    );
    Ok(())
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Selector(s) => format!("{s:?}"),
        Scope::Names(_) | Scope::All(_) => "names".to_string(),
    }
}

/// The merge patch for one namespace, `None` when there is nothing to change.
fn namespace_patch(
    meta: &ObjectMeta,
    action: Action,
    changes: &AnnotationChanges,
    direct: bool,
) -> Option<Value> {
    let mut annotations = Map::new();
    for (key, value) in changes {
        let current = annotation(meta, key);
        match value {
            Some(v) if current != Some(v.as_str()) => {
                annotations.insert(key.to_string(), json!(v));
            }
            None if current.is_some() => {
                annotations.insert(key.to_string(), Value::Null);
            }
            _ => {}
        }
    }
    let mut metadata = Map::new();
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    if direct {
        // The person takes the namespace over: a later deletion of an older locking request
        // must not unlock it.
        metadata.insert(
            "labels".into(),
            json!({ STATUS_LABEL: action.as_label(), REQUEST_UID_LABEL: null }),
        );
    }
    (!metadata.is_empty()).then(|| json!({ "metadata": metadata }))
}

fn build_requests(
    action: Action,
    scope: &Scope,
    selector: Option<LabelSelector>,
    names: &[String],
) -> Vec<BlockRequest> {
    let new = |names: Vec<String>, selector: Option<LabelSelector>| {
        let mut br = BlockRequest::new(
            "",
            BlockRequestSpec {
                namespace_names: names,
                namespace_selector: selector,
                action,
            },
        );
        br.metadata.name = None;
        br.metadata.generate_name = Some(format!("kubectl-block-{}-", verb(action)));
        br.metadata.labels = Some(BTreeMap::from([(
            MANAGED_BY.0.to_string(),
            MANAGED_BY.1.to_string(),
        )]));
        br
    };
    match (scope, selector) {
        (Scope::Selector(_), Some(sel)) => vec![new(Vec::new(), Some(sel))],
        _ => names
            .chunks(NAMES_PER_REQUEST)
            .map(|chunk| new(chunk.to_vec(), None))
            .collect(),
    }
}

async fn dry_run(
    kube: &Kube,
    verb: &str,
    how: &str,
    patches: &[(String, Option<Value>)],
    requests: &[BlockRequest],
) -> Result<()> {
    outln!(
        "Dry run: nothing is written. Would {verb} {} {how}:",
        targets::count(patches.len(), "namespace")
    );
    for (ns, patch) in patches {
        match patch {
            Some(p) => outln!("namespace/{ns}: patch {p}"),
            None => outln!("namespace/{ns}: no change to the namespace itself"),
        }
    }
    if requests.is_empty() {
        return Ok(());
    }
    // Let the server validate the request (schema, admission, RBAC) without storing it.
    let api: Api<BlockRequest> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for br in requests {
        api.create(&pp, br).await.map_err(|e| {
            kube.error(
                e,
                "create",
                &format!(
                    "blockrequests.core.clawcloud.run in namespace {}",
                    kube.namespace
                ),
            )
        })?;
        outln!("Would create (validated by the server):");
        out!("---\n{}", serde_yaml::to_string(br)?);
    }
    Ok(())
}

/// Applies the patches, `CONCURRENCY` at a time; returns the failures.
async fn apply_patches(
    kube: &Kube,
    patches: &[(String, Option<Value>)],
    action: Action,
    direct: bool,
) -> Vec<(String, anyhow::Error)> {
    let api: Api<Namespace> = Api::all(kube.client.clone());
    let results: Vec<(String, Result<Option<String>>)> = futures::stream::iter(
        patches
            .iter()
            .filter_map(|(ns, p)| p.as_ref().map(|p| (ns, p))),
    )
    .map(|(ns, patch)| {
        let api = api.clone();
        async move {
            let r = api
                .patch(ns, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(|_| Some(describe(patch)))
                .map_err(|e| kube.error(e, "patch", &format!("namespaces/{ns}")));
            (ns.clone(), r)
        }
    })
    .buffer_unordered(CONCURRENCY)
    .collect()
    .await;
    let mut results = results;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut failures = Vec::new();
    for (ns, r) in results {
        match r {
            Ok(Some(what)) if direct => outln!("namespace/{ns} {}ed ({what})", verb(action)),
            Ok(Some(what)) => outln!("namespace/{ns} annotated ({what})"),
            Ok(None) => {}
            Err(e) => failures.push((ns, e)),
        }
    }
    if direct {
        for (ns, p) in patches {
            if p.is_none() {
                outln!("namespace/{ns} unchanged");
            }
        }
    }
    failures
}

/// `key=value, key-` for the annotations and labels of a patch.
fn describe(patch: &Value) -> String {
    let mut parts = Vec::new();
    for section in ["labels", "annotations"] {
        if let Some(map) = patch["metadata"][section].as_object() {
            for (k, v) in map {
                match v.as_str() {
                    Some(s) => parts.push(format!("{k}={s}")),
                    None => parts.push(format!("{k}-")),
                }
            }
        }
    }
    parts.join(", ")
}

/// A Go duration (`24h`, `1h30m`, `90s`, `1.5h`), more than zero; humantime must parse it too
/// (the controller reads it with humantime).
pub fn parse_go_duration(s: &str) -> Result<String, String> {
    let s = s.trim();
    let err = || format!("{s:?} is not a duration like 24h, 90m or 1h30m");
    if !is_go_duration(s) {
        return Err(err());
    }
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(s.to_string()),
        Ok(_) => Err(format!("{s:?}: a lock duration must be more than zero")),
        Err(e) => Err(format!("{}: {e}", err())),
    }
}

/// `([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+`
fn is_go_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        if let Some(r) = rest.strip_prefix('.') {
            let frac = r.bytes().take_while(u8::is_ascii_digit).count();
            if frac == 0 {
                return false;
            }
            rest = &r[frac..];
        }
        let unit = ["ns", "us", "µs", "ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for ok in ["24h", "1h30m", "90s", "1.5h", "500ms", "168h"] {
            assert_eq!(parse_go_duration(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in ["", "1d", "24", "h", "1h 30m", "-1h", "0s", "1.h", "7days"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patches_only_what_changes() {
        let mut meta = ObjectMeta {
            name: Some("a".into()),
            ..Default::default()
        };
        meta.annotations = Some(BTreeMap::from([(
            LOCK_REASON_ANNOTATION.to_string(),
            "audit".to_string(),
        )]));
        let mut changes = AnnotationChanges::new();
        changes.insert(LOCK_REASON_ANNOTATION, Some("audit".into()));
        changes.insert(UNLOCK_REASON_ANNOTATION, None);
        assert_eq!(
            namespace_patch(&meta, Action::Locked, &changes, false),
            None
        );
        let p = namespace_patch(&meta, Action::Locked, &changes, true).expect("patch");
        assert_eq!(p["metadata"]["labels"][STATUS_LABEL], "locked");
        assert!(p["metadata"]["labels"][REQUEST_UID_LABEL].is_null());
        changes.insert(LOCK_REASON_ANNOTATION, None);
        let p = namespace_patch(&meta, Action::Active, &changes, false).expect("patch");
        assert!(p["metadata"]["annotations"][LOCK_REASON_ANNOTATION].is_null());
    }
}
