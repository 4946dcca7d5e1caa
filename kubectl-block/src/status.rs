//! `status`: per namespace, the lock state, unlock time and remaining time, the reason, which
//! replica owns the namespace's hash range (from the range Leases) and, with `--details`, the
//! workloads held at zero and the quota.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use block_controller::api::{
    ORIGINAL_REPLICAS_ANNOTATION, ORIGINAL_SUSPEND_ANNOTATION, QUOTA_NAME, STATUS_LABEL,
    UNLOCK_TIMESTAMP_ANNOTATION,
};
use block_controller::blockrequest::REQUEST_UID_LABEL;
use block_controller::context::Kinds;
use block_controller::state::{
    parse_timestamp, LOCKED_AT_ANNOTATION, LOCK_DURATION_ANNOTATION, LOCK_REASON_ANNOTATION,
    REQUESTED_BY_ANNOTATION,
};
use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde::Serialize;
use shard::RangeCount;

use crate::client::{is_not_found, GlobalArgs, Kube};
use crate::lock::UNLOCK_REASON_ANNOTATION;
use crate::output::{self, or_dash, Format, Mode, Table};
use crate::targets::{self, annotation, label, name, PAGE};

/// Prefix of the range Leases: `block-controller-range-<r>`.
pub const RANGE_LEASE_PREFIX: &str = "block-controller-range-";

/// Flags for the hash ranges.
#[derive(Debug, clap::Args)]
pub struct RangeArgs {
    /// Number of hash ranges the controller's replicas share (its --ranges).
    #[arg(long, default_value_t = 256, value_parser = parse_ranges, value_name = "R")]
    pub ranges: u32,
}

fn parse_ranges(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    RangeCount::new(n)
        .map(|c| c.get())
        .map_err(|e| e.to_string())
}

/// `kubectl block status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without NAMESPACE, --all or --selector: the namespaces carrying the \
clawcloud.run/status label.\n\nExamples:\n  \
    kubectl block status team-a --details\n  \
    kubectl block status --locked-only -o wide\n  \
    kubectl block status --selector tier=trial -o json"
)]
pub struct StatusArgs {
    /// One namespace.
    #[arg(value_name = "NAMESPACE", conflicts_with_all = ["all", "selector"])]
    pub namespace: Option<String>,

    /// Every namespace, labelled or not.
    #[arg(short = 'A', long, conflicts_with = "selector")]
    pub all: bool,

    /// Only namespaces labelled clawcloud.run/status=locked.
    #[arg(long)]
    pub locked_only: bool,

    /// Namespaces matching this label selector.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Also list the workloads held at zero (with their saved counts), suspended CronJobs and
    /// the quota of each namespace.
    #[arg(long)]
    pub details: bool,

    #[command(flatten)]
    pub ranges: RangeArgs,

    /// Output format.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
}

/// One namespace in `status -o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceRow {
    /// Namespace name.
    pub name: String,
    /// The clawcloud.run/status label, `null` when absent.
    pub state: Option<String>,
    /// `complete` (locked-at present), `pending` (locked, not yet complete), `null` otherwise.
    pub lock: Option<String>,
    /// clawcloud.run/unlock-timestamp, raw.
    pub unlock_at: Option<String>,
    /// Seconds until the unlock time (negative when past); `null` when not locked or unset or
    /// unparsable.
    pub remaining_seconds: Option<i64>,
    /// `6d23h`, `expired`, `invalid unlock time`; `null` when not locked or unset.
    pub remaining: Option<String>,
    /// core.clawcloud.run/locked-at.
    pub locked_at: Option<String>,
    /// core.clawcloud.run/lock-duration.
    pub lock_duration: Option<String>,
    /// core.clawcloud.run/lock-reason.
    pub reason: Option<String>,
    /// core.clawcloud.run/unlock-reason.
    pub unlock_reason: Option<String>,
    /// core.clawcloud.run/requested-by (the BlockRequest that last set the label).
    pub requested_by: Option<String>,
    /// core.clawcloud.run/request-uid label.
    pub request_uid: Option<String>,
    /// Hash range of the name.
    pub range: u32,
    /// holderIdentity of the range's Lease; `null` when unowned or no sharding.
    pub owner: Option<String>,
    /// `owned`, `unowned` (range leases exist but this one has no holder), `no-sharding`
    /// (no range leases: single replica or sharding not running).
    pub ownership: &'static str,
    /// With --details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

/// What the lock holds in a namespace.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    /// Whether ResourceQuota block-controller-quota exists.
    pub quota: bool,
    /// Workloads carrying core.clawcloud.run/original-replicas.
    pub workloads: Vec<Workload>,
    /// CronJobs carrying core.clawcloud.run/original-suspend.
    pub cron_jobs: Vec<CronJob>,
}

/// A workload held at zero.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Deployment, StatefulSet, ReplicaSet or ReplicationController.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Current spec.replicas.
    pub replicas: i64,
    /// The saved count, raw.
    pub original_replicas: String,
}

/// A suspended CronJob.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJob {
    /// Name.
    pub name: String,
    /// Current spec.suspend.
    pub suspend: bool,
    /// The saved value, raw.
    pub original_suspend: String,
}

/// The document `status -o json|yaml` prints.
#[derive(Debug, Serialize)]
struct StatusDoc {
    namespaces: Vec<NamespaceRow>,
}

/// Holders of the range Leases.
#[derive(Debug, Clone)]
pub struct RangeLeases {
    /// Range count used to read them.
    pub count: RangeCount,
    /// Range → holder (`None`: the lease exists with an empty holder).
    pub holders: BTreeMap<u32, Option<String>>,
}

impl RangeLeases {
    /// Owner of a range and the ownership word of [`NamespaceRow::ownership`].
    pub fn owner(&self, range: u32) -> (Option<String>, &'static str) {
        if self.holders.is_empty() {
            return (None, "no-sharding");
        }
        match self.holders.get(&range) {
            Some(Some(h)) => (Some(h.clone()), "owned"),
            _ => (None, "unowned"),
        }
    }
}

/// Reads the range Leases in the controller's namespace. A namespace that does not exist or
/// cannot be read yields no leases (with a warning for the latter).
pub async fn read_range_leases(kube: &Kube, count: RangeCount) -> Result<RangeLeases> {
    let api: Api<Lease> = Api::namespaced(kube.client.clone(), &kube.controller_namespace);
    let mut holders = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = match api.list(&lp).await {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                eprintln!(
                    "warning: cannot list leases in namespace {}: owners are not shown ({})",
                    kube.controller_namespace, s.message
                );
                break;
            }
            Err(e) if is_not_found(&e) => break,
            Err(e) => {
                return Err(kube.error(
                    e,
                    "list",
                    &format!("leases in namespace {}", kube.controller_namespace),
                ))
            }
        };
        for lease in page.items {
            let Some(r) = lease
                .metadata
                .name
                .as_deref()
                .and_then(|n| range_of_lease(n, count))
            else {
                continue;
            };
            let holder = lease
                .spec
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty());
            holders.insert(r, holder);
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    Ok(RangeLeases { count, holders })
}

/// `block-controller-range-17` → 17 (canonical decimal, below the count).
fn range_of_lease(name: &str, count: RangeCount) -> Option<u32> {
    let digits = name.strip_prefix(RANGE_LEASE_PREFIX)?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    let r: u32 = digits.parse().ok()?;
    (r < count.get()).then_some(r)
}

/// A namespace's row, without details.
pub fn row(meta: &ObjectMeta, now: DateTime<Utc>, leases: &RangeLeases) -> NamespaceRow {
    let name = name(meta).to_string();
    let state = label(meta, STATUS_LABEL).map(str::to_string);
    let locked = state.as_deref() == Some("locked");
    let get = |k: &str| annotation(meta, k).map(str::to_string);
    let unlock_at = get(UNLOCK_TIMESTAMP_ANNOTATION);
    let locked_at = get(LOCKED_AT_ANNOTATION);
    let (remaining_seconds, remaining) = match (&unlock_at, locked) {
        (Some(raw), true) => match parse_timestamp(raw) {
            Ok(t) => {
                let secs = (t - now).num_seconds();
                let text = if secs <= 0 {
                    "expired".to_string()
                } else {
                    output::short_duration(secs)
                };
                (Some(secs), Some(text))
            }
            Err(_) => (None, Some("invalid unlock time".to_string())),
        },
        _ => (None, None),
    };
    let lock = locked.then(|| {
        if locked_at.is_some() {
            "complete"
        } else {
            "pending"
        }
        .to_string()
    });
    let range = leases.count.range_of(&name);
    let (owner, ownership) = leases.owner(range);
    NamespaceRow {
        state,
        lock,
        unlock_at,
        remaining_seconds,
        remaining,
        locked_at,
        lock_duration: get(LOCK_DURATION_ANNOTATION),
        reason: get(LOCK_REASON_ANNOTATION),
        unlock_reason: get(UNLOCK_REASON_ANNOTATION),
        requested_by: get(REQUESTED_BY_ANNOTATION),
        request_uid: label(meta, REQUEST_UID_LABEL).map(str::to_string),
        range,
        owner,
        ownership,
        details: None,
        name,
    }
}

/// Lists every object of `ar` in `ns`, page by page.
pub async fn list_dynamic(kube: &Kube, ns: &str, ar: &ApiResource) -> Result<Vec<DynamicObject>> {
    let api: Api<DynamicObject> = Api::namespaced_with(kube.client.clone(), ns, ar);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.map_err(|e| {
            kube.error(
                e,
                "list",
                &format!("{} in namespace {ns}", ar.plural.as_str()),
            )
        })?;
        out.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    Ok(out)
}

/// What the lock holds in `ns`.
pub async fn details(kube: &Kube, kinds: &Kinds, ns: &str) -> Result<Details> {
    let mut workloads = Vec::new();
    for ar in kinds.scalable() {
        for obj in list_dynamic(kube, ns, ar).await? {
            if targets::follows_deployment(&ar.kind, &obj.metadata) {
                continue;
            }
            if let Some(saved) = annotation(&obj.metadata, ORIGINAL_REPLICAS_ANNOTATION) {
                workloads.push(Workload {
                    kind: ar.kind.clone(),
                    name: name(&obj.metadata).to_string(),
                    replicas: obj.data["spec"]["replicas"].as_i64().unwrap_or(1),
                    original_replicas: saved.to_string(),
                });
            }
        }
    }
    let mut cron_jobs = Vec::new();
    if let Some(ar) = &kinds.cronjob {
        for obj in list_dynamic(kube, ns, ar).await? {
            if let Some(saved) = annotation(&obj.metadata, ORIGINAL_SUSPEND_ANNOTATION) {
                cron_jobs.push(CronJob {
                    name: name(&obj.metadata).to_string(),
                    suspend: obj.data["spec"]["suspend"].as_bool().unwrap_or(false),
                    original_suspend: saved.to_string(),
                });
            }
        }
    }
    let quota = Api::<ResourceQuota>::namespaced(kube.client.clone(), ns)
        .get_metadata_opt(QUOTA_NAME)
        .await
        .map_err(|e| {
            kube.error(
                e,
                "get",
                &format!("resourcequotas/{QUOTA_NAME} in namespace {ns}"),
            )
        })?
        .is_some();
    Ok(Details {
        quota,
        workloads,
        cron_jobs,
    })
}

/// `kubectl block status`.
pub async fn run(g: &GlobalArgs, a: &StatusArgs) -> Result<()> {
    let count = RangeCount::new(a.ranges.ranges).map_err(|e| anyhow!("--ranges: {e}"))?;
    let kube = Kube::connect(g).await?;
    let mut metas = match (&a.namespace, a.all, &a.selector) {
        (Some(ns), _, _) => targets::get_namespaces(&kube, std::slice::from_ref(ns)).await?,
        (None, true, _) => targets::list_namespaces(&kube, None).await?,
        (None, false, Some(s)) => targets::list_namespaces(&kube, Some(s)).await?,
        (None, false, None) => targets::list_namespaces(&kube, Some(STATUS_LABEL)).await?,
    };
    if a.locked_only {
        metas.retain(|m| label(m, STATUS_LABEL) == Some("locked"));
    }
    let leases = read_range_leases(&kube, count).await?;
    let now = Utc::now();
    let mut rows: Vec<NamespaceRow> = metas.iter().map(|m| row(m, now, &leases)).collect();
    if a.details {
        let kinds = Kinds::discover(&kube.client).await?;
        for r in &mut rows {
            r.details = Some(details(&kube, &kinds, &r.name).await?);
        }
    }
    let mode = Mode::from_flag(a.output);
    if let Mode::Document(f) = mode {
        return output::print_document(&StatusDoc { namespaces: rows }, f);
    }
    if rows.is_empty() {
        if a.namespace.is_some() {
            bail!(
                "namespace {:?} is not locked",
                a.namespace.as_deref().unwrap_or_default()
            );
        }
        eprintln!("No namespaces found.");
        return Ok(());
    }
    out!("{}", table(&rows, mode == Mode::Wide));
    if a.details {
        for r in &rows {
            if let Some(d) = &r.details {
                out!("\n{}", details_text(&r.name, d));
            }
        }
    }
    Ok(())
}

fn table(rows: &[NamespaceRow], wide: bool) -> String {
    let mut headers = vec![
        "NAMESPACE",
        "STATE",
        "LOCK",
        "UNLOCK-AT",
        "REMAINING",
        "REASON",
        "OWNER",
    ];
    if wide {
        headers.extend(["RANGE", "LOCKED-AT", "DURATION", "REQUESTED-BY"]);
    }
    let mut t = Table::new(&headers);
    for r in rows {
        let reason = if r.state.as_deref() == Some("locked") {
            r.reason.as_deref()
        } else {
            r.unlock_reason.as_deref()
        };
        let owner = match r.ownership {
            "unowned" => "<unowned>".to_string(),
            _ => or_dash(r.owner.as_deref()),
        };
        let mut cells = vec![
            r.name.clone(),
            or_dash(r.state.as_deref()),
            or_dash(r.lock.as_deref()),
            or_dash(r.unlock_at.as_deref()),
            or_dash(r.remaining.as_deref()),
            or_dash(reason),
            owner,
        ];
        if wide {
            cells.extend([
                r.range.to_string(),
                or_dash(r.locked_at.as_deref()),
                or_dash(r.lock_duration.as_deref()),
                or_dash(r.requested_by.as_deref()),
            ]);
        }
        t.row(cells);
    }
    t.render()
}

fn details_text(ns: &str, d: &Details) -> String {
    let mut out = format!("Namespace {ns}:\n");
    out.push_str(&format!(
        "  ResourceQuota {QUOTA_NAME}: {}\n",
        if d.quota { "present" } else { "absent" }
    ));
    if d.workloads.is_empty() {
        out.push_str("  Workloads held at zero: none\n");
    } else {
        out.push_str("  Workloads held at zero:\n");
        let mut t = Table::new(&["KIND", "NAME", "REPLICAS", "ORIGINAL-REPLICAS"]).indent(4);
        for w in &d.workloads {
            t.row(vec![
                w.kind.clone(),
                w.name.clone(),
                w.replicas.to_string(),
                w.original_replicas.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    if d.cron_jobs.is_empty() {
        out.push_str("  CronJobs suspended by the lock: none\n");
    } else {
        out.push_str("  CronJobs suspended by the lock:\n");
        let mut t = Table::new(&["NAME", "SUSPEND", "ORIGINAL-SUSPEND"]).indent(4);
        for c in &d.cron_jobs {
            t.row(vec![
                c.name.clone(),
                c.suspend.to_string(),
                c.original_suspend.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names() {
        let c = RangeCount::new(256).expect("count");
        assert_eq!(range_of_lease("block-controller-range-0", c), Some(0));
        assert_eq!(range_of_lease("block-controller-range-255", c), Some(255));
        assert_eq!(range_of_lease("block-controller-range-256", c), None);
        assert_eq!(range_of_lease("block-controller-range-07", c), None);
        assert_eq!(range_of_lease("block-controller-member-x", c), None);
    }

    #[test]
    fn rows_from_metadata() {
        let now = Utc::now();
        let leases = RangeLeases {
            count: RangeCount::new(4).expect("count"),
            holders: BTreeMap::new(),
        };
        let mut meta = ObjectMeta {
            name: Some("team-a".into()),
            labels: Some(BTreeMap::from([(STATUS_LABEL.into(), "locked".into())])),
            ..Default::default()
        };
        let unlock = block_controller::state::format_timestamp(now + chrono::Duration::days(7));
        meta.annotations = Some(BTreeMap::from([
            (UNLOCK_TIMESTAMP_ANNOTATION.into(), unlock),
            (LOCK_REASON_ANNOTATION.into(), "audit".into()),
        ]));
        let r = row(&meta, now, &leases);
        assert_eq!(r.lock.as_deref(), Some("pending"));
        assert_eq!(r.remaining.as_deref(), Some("6d23h"));
        assert_eq!(r.ownership, "no-sharding");
        assert_eq!(
            r.range,
            RangeCount::new(4).expect("count").range_of("team-a")
        );
    }
}
