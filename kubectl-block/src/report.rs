//! `report`: namespaces by state, locks expiring within 24 hours, BlockRequests not Ready and
//! hash ranges without an owner.

use anyhow::{anyhow, Result};
use block_controller::api::{STATUS_LABEL, UNLOCK_TIMESTAMP_ANNOTATION};
use block_controller::state::{parse_timestamp, LOCKED_AT_ANNOTATION};
use chrono::Utc;
use serde::Serialize;
use shard::{RangeCount, RangeSet};

use crate::client::{GlobalArgs, Kube};
use crate::list;
use crate::output::{self, Format, Table};
use crate::status::{read_range_leases, RangeArgs};
use crate::targets::{self, annotation, label, name};

/// Expiry horizon of the report.
const HORIZON_SECS: i64 = 24 * 3600;

/// `kubectl block report`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    kubectl block report\n  \
    kubectl block report --ranges 1024 -o json")]
pub struct ReportArgs {
    #[command(flatten)]
    pub ranges: RangeArgs,

    /// Output format (wide prints the same as the default).
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
}

/// The document `report -o json|yaml` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Counts by state.
    pub namespaces: Counts,
    /// Locked namespaces whose unlock time is within 24 hours (or already past), soonest first.
    pub expiring_within_24h: Vec<Expiring>,
    /// Locked namespaces whose unlock time does not parse (never expired by the controller).
    pub invalid_unlock_times: Vec<String>,
    /// BlockRequests whose Ready condition is not True (`null` when the CRD is not installed).
    pub block_requests_not_ready: Option<Vec<NotReady>>,
    /// The range Leases.
    pub ranges: Ranges,
}

/// Namespaces by state.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// All namespaces.
    pub total: u64,
    /// `locked` with core.clawcloud.run/locked-at.
    pub locked_complete: u64,
    /// `locked` without it (the lock flow has not finished).
    pub locked_pending: u64,
    /// `active`.
    pub active: u64,
    /// Another label value (left alone by the controller).
    pub other: u64,
    /// No clawcloud.run/status label.
    pub unlabelled: u64,
}

/// A lock expiring soon.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Expiring {
    /// Namespace.
    pub name: String,
    /// The unlock time, RFC 3339.
    pub unlock_at: String,
    /// Seconds until then (negative: overdue).
    pub remaining_seconds: i64,
}

/// A BlockRequest not Ready.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotReady {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `locked` / `active`.
    pub action: String,
    /// `False` or `Unknown`.
    pub ready: String,
    /// The condition's message.
    pub message: Option<String>,
}

/// Ownership of the hash ranges.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ranges {
    /// Where the Leases were read.
    pub controller_namespace: String,
    /// R.
    pub count: u32,
    /// Range Leases found.
    pub leases: u32,
    /// Ranges whose Lease has a holder.
    pub owned: u32,
    /// Ranges without a Lease or with an empty holder, as `0-31,64-95` (`-` when none);
    /// `null` when there are no range Leases at all (single replica or sharding not running).
    pub unowned: Option<String>,
    /// How many ranges are unowned.
    pub unowned_count: u32,
}

/// `kubectl block report`.
pub async fn run(g: &GlobalArgs, a: &ReportArgs) -> Result<()> {
    let count = RangeCount::new(a.ranges.ranges).map_err(|e| anyhow!("--ranges: {e}"))?;
    let kube = Kube::connect(g).await?;
    let now = Utc::now();
    let namespaces = targets::list_namespaces(&kube, None).await?;
    let mut counts = Counts::default();
    let mut expiring = Vec::new();
    let mut invalid = Vec::new();
    for m in &namespaces {
        counts.total += 1;
        match label(m, STATUS_LABEL) {
            Some("locked") => {
                if annotation(m, LOCKED_AT_ANNOTATION).is_some() {
                    counts.locked_complete += 1;
                } else {
                    counts.locked_pending += 1;
                }
                if let Some(raw) = annotation(m, UNLOCK_TIMESTAMP_ANNOTATION) {
                    match parse_timestamp(raw) {
                        Ok(t) if (t - now).num_seconds() <= HORIZON_SECS => {
                            expiring.push(Expiring {
                                name: name(m).to_string(),
                                unlock_at: raw.to_string(),
                                remaining_seconds: (t - now).num_seconds(),
                            })
                        }
                        Ok(_) => {}
                        Err(_) => invalid.push(name(m).to_string()),
                    }
                }
            }
            Some("active") => counts.active += 1,
            Some(_) => counts.other += 1,
            None => counts.unlabelled += 1,
        }
    }
    expiring.sort_by(|x, y| (x.remaining_seconds, &x.name).cmp(&(y.remaining_seconds, &y.name)));

    let not_ready = if kube.crd_installed().await? {
        let requests = list::list_requests(&kube, None).await?;
        let mut rows: Vec<NotReady> = requests
            .iter()
            .map(list::row)
            .filter(|r| r.ready != "True")
            .map(|r| NotReady {
                namespace: r.namespace,
                name: r.name,
                action: r.action,
                ready: r.ready,
                message: r.message,
            })
            .collect();
        rows.sort_by(|x, y| (&x.namespace, &x.name).cmp(&(&y.namespace, &y.name)));
        Some(rows)
    } else {
        None
    };

    let leases = read_range_leases(&kube, count).await?;
    let mut owned = RangeSet::new(count);
    for (r, holder) in &leases.holders {
        if holder.is_some() {
            owned.insert(*r);
        }
    }
    let unowned = RangeSet::full(count).difference(&owned)?;
    let ranges = Ranges {
        controller_namespace: kube.controller_namespace.clone(),
        count: count.get(),
        leases: leases.holders.len() as u32,
        owned: owned.len(),
        unowned: (!leases.holders.is_empty()).then(|| unowned.to_string()),
        unowned_count: if leases.holders.is_empty() {
            0
        } else {
            unowned.len()
        },
    };
    let report = Report {
        namespaces: counts,
        expiring_within_24h: expiring,
        invalid_unlock_times: invalid,
        block_requests_not_ready: not_ready,
        ranges,
    };
    match a.output {
        Some(f @ (Format::Json | Format::Yaml)) => output::print_document(&report, f),
        _ => {
            out!("{}", text(&report));
            Ok(())
        }
    }
}

fn text(r: &Report) -> String {
    let c = &r.namespaces;
    let mut out = format!("Namespaces: {}\n", c.total);
    let mut t = Table::new(&["STATE", "COUNT"]).indent(2);
    for (k, v) in [
        ("locked (complete)", c.locked_complete),
        ("locked (pending)", c.locked_pending),
        ("active", c.active),
        ("other label value", c.other),
        ("unlabelled", c.unlabelled),
    ] {
        t.row(vec![k.to_string(), v.to_string()]);
    }
    out.push_str(&t.render());

    out.push_str(&format!(
        "\nLocks expiring within 24h: {}\n",
        r.expiring_within_24h.len()
    ));
    if !r.expiring_within_24h.is_empty() {
        let mut t = Table::new(&["NAMESPACE", "UNLOCK-AT", "REMAINING"]).indent(2);
        for e in &r.expiring_within_24h {
            let remaining = if e.remaining_seconds <= 0 {
                "overdue".to_string()
            } else {
                output::short_duration(e.remaining_seconds)
            };
            t.row(vec![e.name.clone(), e.unlock_at.clone(), remaining]);
        }
        out.push_str(&t.render());
    }
    if !r.invalid_unlock_times.is_empty() {
        out.push_str(&format!(
            "\nLocked with an unparsable unlock time (never expire until fixed): {}\n  {}\n",
            r.invalid_unlock_times.len(),
            r.invalid_unlock_times.join(", ")
        ));
    }

    match &r.block_requests_not_ready {
        None => out.push_str("\nBlockRequests: the CRD is not installed\n"),
        Some(rows) => {
            out.push_str(&format!("\nBlockRequests not Ready: {}\n", rows.len()));
            if !rows.is_empty() {
                let mut t =
                    Table::new(&["NAMESPACE", "NAME", "ACTION", "READY", "MESSAGE"]).indent(2);
                for b in rows {
                    t.row(vec![
                        b.namespace.clone(),
                        b.name.clone(),
                        b.action.clone(),
                        b.ready.clone(),
                        output::or_dash(b.message.as_deref()),
                    ]);
                }
                out.push_str(&t.render());
            }
        }
    }

    let g = &r.ranges;
    out.push_str(&format!(
        "\nHash ranges ({} ranges, Leases in namespace {}): ",
        g.count, g.controller_namespace
    ));
    match &g.unowned {
        None => out.push_str("no range Leases (single replica, or sharding not running)\n"),
        Some(u) => out.push_str(&format!(
            "{} owned, {} unowned{}\n",
            g.owned,
            g.unowned_count,
            if g.unowned_count > 0 {
                format!(": {u}")
            } else {
                String::new()
            }
        )),
    }
    out
}
