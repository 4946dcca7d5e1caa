//! `list`: BlockRequests with their progress.

use anyhow::Result;
use block_controller::api::BlockRequest;
use chrono::Utc;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::client::{crd_missing, is_not_found, GlobalArgs, Kube};
use crate::output::{self, or_dash, Format, Mode, Table};
use crate::targets::{name, PAGE};

/// `kubectl block list`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    kubectl block list\n  \
    kubectl block list -A -o wide\n  \
    kubectl block list -n ops -o json")]
pub struct ListArgs {
    /// BlockRequests of every namespace (default: the -n / context namespace).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Output format.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
}

/// One BlockRequest in `list -o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRow {
    /// Namespace of the request.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `locked` or `active`.
    pub action: String,
    /// spec.namespaceNames.
    pub namespace_names: Vec<String>,
    /// spec.namespaceSelector as a selector string, `null` when absent.
    pub namespace_selector: Option<String>,
    /// Whether the controller has processed the current generation.
    pub observed: bool,
    /// status.targetCount (null until processed).
    pub targets: Option<i64>,
    /// status.appliedCount.
    pub applied: Option<i64>,
    /// status.notFoundCount.
    pub not_found: Option<i64>,
    /// status.failedCount.
    pub failed: Option<i64>,
    /// status.protectedCount.
    pub protected: Option<i64>,
    /// The Ready condition: `True`, `False`, or `Unknown` when absent.
    pub ready: String,
    /// The Ready condition's message.
    pub message: Option<String>,
    /// Creation time, RFC 3339.
    pub created: Option<String>,
    /// Seconds since creation.
    pub age_seconds: Option<i64>,
}

#[derive(Debug, Serialize)]
struct ListDoc {
    #[serde(rename = "blockRequests")]
    block_requests: Vec<RequestRow>,
}

/// Lists BlockRequests (all namespaces when `namespace` is `None`), page by page.
pub async fn list_requests(kube: &Kube, namespace: Option<&str>) -> Result<Vec<BlockRequest>> {
    let api: Api<BlockRequest> = match namespace {
        Some(ns) => Api::namespaced(kube.client.clone(), ns),
        None => Api::all(kube.client.clone()),
    };
    let what = match namespace {
        Some(ns) => format!("blockrequests.core.clawcloud.run in namespace {ns}"),
        None => "blockrequests.core.clawcloud.run".to_string(),
    };
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = match api.list(&lp).await {
            Ok(p) => p,
            Err(e) if is_not_found(&e) => return Err(crd_missing()),
            Err(e) => return Err(kube.error(e, "list", &what)),
        };
        out.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    Ok(out)
}

/// The row of one request.
pub fn row(br: &BlockRequest) -> RequestRow {
    let status = br.status.as_ref();
    let observed = status
        .and_then(|s| s.observed_generation)
        .is_some_and(|g| Some(g) == br.metadata.generation);
    let count = |f: fn(&block_controller::api::BlockRequestStatus) -> i64| {
        status.filter(|_| observed).map(f)
    };
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let created = br.metadata.creation_timestamp.as_ref().map(|t| t.0);
    RequestRow {
        namespace: br.metadata.namespace.clone().unwrap_or_default(),
        name: name(&br.metadata).to_string(),
        action: br.spec.action.as_label().to_string(),
        namespace_names: br.spec.namespace_names.clone(),
        namespace_selector: br.spec.namespace_selector.as_ref().map(|s| {
            block_controller::blockrequest::selector_string(s).unwrap_or_else(|e| format!("<{e}>"))
        }),
        observed,
        targets: count(|s| s.target_count),
        applied: count(|s| s.applied_count),
        not_found: count(|s| s.not_found_count),
        failed: count(|s| s.failed_count),
        protected: count(|s| s.protected_count),
        ready: ready.map_or_else(|| "Unknown".to_string(), |c| c.status.clone()),
        message: ready.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
        created: created.map(|t| t.to_string()),
        age_seconds: created.map(|t| Utc::now().timestamp() - t.as_second()),
    }
}

/// `kubectl block list`.
pub async fn run(g: &GlobalArgs, a: &ListArgs) -> Result<()> {
    let kube = Kube::connect(g).await?;
    kube.require_crd().await?;
    let ns = (!a.all_namespaces).then_some(kube.namespace.as_str());
    let mut requests = list_requests(&kube, ns).await?;
    requests.sort_by(|x, y| {
        (&x.metadata.namespace, &x.metadata.name).cmp(&(&y.metadata.namespace, &y.metadata.name))
    });
    let rows: Vec<RequestRow> = requests.iter().map(row).collect();
    let mode = Mode::from_flag(a.output);
    if let Mode::Document(f) = mode {
        return output::print_document(
            &ListDoc {
                block_requests: rows,
            },
            f,
        );
    }
    if rows.is_empty() {
        match ns {
            Some(ns) => eprintln!("No BlockRequests found in namespace {ns}."),
            None => eprintln!("No BlockRequests found."),
        }
        return Ok(());
    }
    let wide = mode == Mode::Wide;
    let mut headers = vec![
        "NAMESPACE",
        "NAME",
        "ACTION",
        "TARGETS",
        "APPLIED",
        "FAILED",
        "READY",
        "AGE",
    ];
    if wide {
        headers.extend(["NOT-FOUND", "PROTECTED", "SCOPE", "MESSAGE"]);
    }
    let mut t = Table::new(&headers);
    let n = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for r in &rows {
        let mut cells = vec![
            r.namespace.clone(),
            r.name.clone(),
            r.action.clone(),
            n(r.targets),
            n(r.applied),
            n(r.failed),
            r.ready.clone(),
            r.age_seconds.map_or_else(|| "-".into(), output::age),
        ];
        if wide {
            let scope = match (&r.namespace_selector, r.namespace_names.len()) {
                (Some(s), 0) => format!("selector {s}"),
                (Some(s), k) => format!("{k} names + selector {s}"),
                (None, 1) => r.namespace_names.join(""),
                (None, k) => format!("{k} names"),
            };
            cells.extend([
                n(r.not_found),
                n(r.protected),
                scope,
                or_dash(r.message.as_deref()),
            ]);
        }
        t.row(cells);
    }
    out!("{}", t.render());
    Ok(())
}
