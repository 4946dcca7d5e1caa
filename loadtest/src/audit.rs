//! The ownership check over the API server's audit log, rotated files included: the local
//! server rotates its log every 100 MB (`audit-<time>.log` next to `audit.log`), and a 100k run
//! writes several.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use local_control_plane::audit::{self as cp_audit, Entry};

use crate::names::LEASE_PREFIX;
use crate::run::Audit;

/// The log and its rotated backups (`<stem>-<timestamp>.<ext>`), oldest first, the live file last.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("audit")
        .to_string();
    let ext = path
        .extension()
        .and_then(|s| s.to_str())
        .unwrap_or("log")
        .to_string();
    let mut out: Vec<PathBuf> = path
        .parent()
        .and_then(|d| std::fs::read_dir(d).ok())
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&format!("{stem}-")) && n.ends_with(&format!(".{ext}"))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.push(path.to_path_buf());
    out
}

/// Reads every file of the log.
pub fn read_all(path: &Path) -> Result<Vec<Entry>, cp_audit::AuditError> {
    let mut all = Vec::new();
    for f in files(path) {
        all.extend(cp_audit::read(&f)?);
    }
    Ok(all)
}

/// Checks the controller writes received from `since` (Unix µs) on against the ownership epochs
/// (from the whole Lease history). With `window`, also the controllers' mutating requests per
/// minute inside it, by replica.
pub fn check(
    path: &Path,
    since: i64,
    ranges: u32,
    controller_namespace: &str,
    window: Option<(i64, i64)>,
) -> (Audit, BTreeMap<String, f64>) {
    // No check possible: say why, count nothing.
    let unchecked = |note: String| {
        (
            Audit {
                note,
                ..Default::default()
            },
            BTreeMap::new(),
        )
    };
    let entries = match read_all(path) {
        Ok(e) => e,
        Err(e) => return unchecked(format!("unreadable: {e}")),
    };
    let total = entries.len();
    let entries: Vec<Entry> = entries
        .into_iter()
        .filter(|e| e.resource == "leases" || e.received >= since)
        .collect();
    let count = match shard::RangeCount::new(ranges) {
        Ok(c) => c,
        Err(e) => return unchecked(format!("--ranges: {e}")),
    };
    let report = cp_audit::check_ownership(&entries, LEASE_PREFIX, controller_namespace, |ns| {
        shard::range_of(ns, count)
    });
    let mut writes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut per_minute: BTreeMap<String, f64> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.received >= since) {
        let Some((id, leader)) = e.replica() else {
            continue;
        };
        let key = if leader {
            format!("{id} (leader)")
        } else {
            id.to_string()
        };
        *writes
            .entry(key)
            .or_default()
            .entry(format!("{} {}", e.verb, e.resource))
            .or_default() += 1;
        if let Some((a, b)) = window {
            if e.received >= a && e.received < b {
                *per_minute.entry(id.to_string()).or_default() += 60e6 / (b - a) as f64;
            }
        }
    }
    if report.epochs == 0 && report.writes_checked > 0 {
        // The log has controller writes but no range Lease holders: its policy does not log
        // Lease writes at level Request, so ownership cannot be reconstructed. Not a violation.
        return (
            Audit {
                entries: total,
                writes_checked: 0,
                controller_writes: writes,
                note: format!(
                    "the log holds {} controller writes but no range Lease holder (its audit policy does not log Lease writes at level Request): ownership not checkable",
                    report.writes_checked
                ),
                ..Default::default()
            },
            per_minute,
        );
    }
    let audit = Audit {
        available: true,
        entries: total,
        writes_checked: report.writes_checked,
        leader_writes: report.leader_writes,
        epochs: report.epochs,
        writes_by_replica: report.writes_by_replica.clone(),
        violations: report.violations.len(),
        violation_sample: report.violations.iter().take(20).cloned().collect(),
        controller_writes: writes,
        note: format!("{} file(s) read", files(path).len()),
    };
    (audit, per_minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_backups_come_first_in_time_order() {
        let dir = std::env::temp_dir().join(format!("lt-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for n in [
            "audit.log",
            "audit-2026-11-26T09-19-09.332.log",
            "audit-2026-11-26T08-26-20.041.log",
            "audit-policy.yaml",
            "other.log",
        ] {
            std::fs::write(dir.join(n), "").expect("file");
        }
        let names: Vec<String> = files(&dir.join("audit.log"))
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        assert_eq!(
            names,
            [
                "audit-2026-11-26T08-26-20.041.log",
                "audit-2026-11-26T09-19-09.332.log",
                "audit.log"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
