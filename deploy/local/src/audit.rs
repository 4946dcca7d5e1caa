//! Reading the local API server's audit log, and the ownership check built on it: from the
//! server's own record of who wrote what and when, prove that no two controller replicas ever
//! wrote the same namespace's objects within one ownership epoch.
//!
//! The local server logs every mutating request at level `Metadata` and Lease writes at level
//! `Request` (so a range claim's `holderIdentity` is visible). An *epoch* of replica `X` on range
//! `r` starts when a write making `X` the holder of the range Lease completed, and ends when the
//! next write giving the Lease to anybody else (or to nobody: a release) was received. Every
//! write a replica makes to a managed namespace (the Namespace itself, or any object in it) must
//! be received inside one of that replica's epochs on the namespace's range; since epochs of one
//! range never overlap (claims are compare-and-swap), two replicas can never write one namespace
//! in the same epoch.
//!
//! Controller requests are recognised by their User-Agent `block-controller/<version>
//! (<identity>)`; the leader's singleton duties (BlockRequests, which label namespaces of any
//! range) send `… leader` and are not range work.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

/// One completed request from the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `create`, `update`, `patch`, `delete`, …
    pub verb: String,
    /// The client's User-Agent.
    pub user_agent: String,
    /// `objectRef.resource` (with `/subresource` when there is one).
    pub resource: String,
    /// `objectRef.namespace`.
    pub namespace: Option<String>,
    /// `objectRef.name`.
    pub name: Option<String>,
    /// HTTP status of the response (0 when absent).
    pub code: u16,
    /// `requestReceivedTimestamp`, Unix microseconds.
    pub received: i64,
    /// `stageTimestamp` of the `ResponseComplete` stage, Unix microseconds.
    pub completed: i64,
    /// For Lease writes logged with their request body: `spec.holderIdentity`.
    pub holder: Option<String>,
}

impl Entry {
    /// Whether the request succeeded (2xx).
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The controller replica that sent it (`block-controller/<v> (<identity>)`), and whether it
    /// was a leader duty.
    pub fn replica(&self) -> Option<(&str, bool)> {
        let rest = self.user_agent.strip_prefix("block-controller/")?;
        let (_, rest) = rest.split_once(" (")?;
        let (identity, tail) = rest.split_once(')')?;
        Some((identity, tail.trim() == "leader"))
    }
}

/// Errors reading the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be read.
    #[error("reading the audit log {path}: {source}")]
    Io {
        /// The log's path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Parses an RFC 3339 UTC timestamp with up to 9 fractional digits into Unix microseconds.
pub fn parse_micros(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let mut micros = 0i64;
    for (i, c) in frac.bytes().take(6).enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        micros += i64::from(c - b'0') * 10i64.pow(5 - i as u32);
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + micros)
}

fn entry_of(v: &serde_json::Value) -> Option<Entry> {
    if v.get("stage")?.as_str()? != "ResponseComplete" {
        return None;
    }
    let obj = v.get("objectRef");
    let field = |k: &str| {
        obj.and_then(|o| o.get(k))
            .and_then(|x| x.as_str())
            .map(str::to_owned)
    };
    let mut resource = field("resource").unwrap_or_default();
    if let Some(sub) = field("subresource") {
        resource = format!("{resource}/{sub}");
    }
    Some(Entry {
        verb: v.get("verb")?.as_str()?.to_owned(),
        user_agent: v
            .get("userAgent")
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned(),
        resource,
        namespace: field("namespace"),
        name: field("name"),
        code: v
            .pointer("/responseStatus/code")
            .and_then(|c| c.as_u64())
            .unwrap_or(0) as u16,
        received: parse_micros(v.get("requestReceivedTimestamp")?.as_str()?)?,
        completed: parse_micros(v.get("stageTimestamp")?.as_str()?)?,
        holder: v
            .pointer("/requestObject/spec/holderIdentity")
            .and_then(|h| h.as_str())
            .map(str::to_owned),
    })
}

/// Reads every completed request of the log (lines that are not audit events are skipped).
pub fn read(path: &Path) -> Result<Vec<Entry>, AuditError> {
    let err = |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(err)?;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(e) = entry_of(&v) {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// One replica's tenure on one range, in Unix microseconds: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// Replica identity.
    pub identity: String,
    /// The claim's completion.
    pub start: i64,
    /// Reception of the write that gave the range to somebody else or nobody (`i64::MAX`
    /// while it lasts).
    pub end: i64,
}

/// What [`check_ownership`] found.
#[derive(Debug, Default, Clone)]
pub struct OwnershipReport {
    /// Controller writes to managed namespaces that were checked.
    pub writes_checked: usize,
    /// Writes of leader duties (not range work), not checked.
    pub leader_writes: usize,
    /// Epochs found, over all ranges.
    pub epochs: usize,
    /// Checked writes per replica.
    pub writes_by_replica: BTreeMap<String, usize>,
    /// Writes outside the writer's epochs, described (namespace, replica, time, who owned it).
    pub violations: Vec<String>,
}

/// Range epochs from the Lease writes of the log (`<lease_prefix>-range-<r>`).
pub fn epochs(entries: &[Entry], lease_prefix: &str) -> HashMap<u32, Vec<Epoch>> {
    let range_prefix = format!("{lease_prefix}-range-");
    let mut writes: HashMap<u32, Vec<&Entry>> = HashMap::new();
    for e in entries {
        if e.resource != "leases" || !e.ok() || !matches!(e.verb.as_str(), "create" | "update") {
            continue;
        }
        let Some(r) = e
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix(&range_prefix))
            .and_then(|d| d.parse::<u32>().ok())
        else {
            continue;
        };
        writes.entry(r).or_default().push(e);
    }
    let mut out = HashMap::new();
    for (r, mut ws) in writes {
        ws.sort_by_key(|e| e.completed);
        let mut list: Vec<Epoch> = Vec::new();
        for w in ws {
            let identity = w
                .holder
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(|h| h.rsplit_once('_').map_or(h, |(id, _)| id).to_owned());
            let current = list.last().filter(|e| e.end == i64::MAX);
            match (current, identity) {
                (Some(c), Some(id)) if c.identity == id => {} // renewed or re-stamped
                (cur, id) => {
                    if cur.is_some() {
                        if let Some(last) = list.last_mut() {
                            last.end = w.received;
                        }
                    }
                    if let Some(identity) = id {
                        list.push(Epoch {
                            identity,
                            start: w.completed,
                            end: i64::MAX,
                        });
                    }
                }
            }
        }
        out.insert(r, list);
    }
    out
}

/// Checks every controller write to a managed namespace against the writer's epochs on the
/// namespace's range. `range_of` maps a namespace name to its range; writes into
/// `controller_namespace` (Leases, stored Events) are not range work.
pub fn check_ownership(
    entries: &[Entry],
    lease_prefix: &str,
    controller_namespace: &str,
    range_of: impl Fn(&str) -> u32,
) -> OwnershipReport {
    let epochs = epochs(entries, lease_prefix);
    let mut report = OwnershipReport {
        epochs: epochs.values().map(Vec::len).sum(),
        ..Default::default()
    };
    for e in entries {
        let Some((identity, leader)) = e.replica() else {
            continue;
        };
        let target = if e.resource == "namespaces" {
            e.name.as_deref()
        } else {
            e.namespace.as_deref()
        };
        let Some(ns) = target else { continue };
        if ns == controller_namespace || e.resource == "leases" {
            continue;
        }
        if leader {
            report.leader_writes += 1;
            continue;
        }
        report.writes_checked += 1;
        *report
            .writes_by_replica
            .entry(identity.to_owned())
            .or_default() += 1;
        let r = range_of(ns);
        let list = epochs.get(&r).map(Vec::as_slice).unwrap_or(&[]);
        let inside = list
            .iter()
            .any(|ep| ep.identity == identity && ep.start <= e.received && e.received < ep.end);
        if !inside {
            let owners: Vec<String> = list
                .iter()
                .filter(|ep| ep.start <= e.received && e.received < ep.end)
                .map(|ep| ep.identity.clone())
                .collect();
            report.violations.push(format!(
                "{} {} {}/{} by {identity} at {} µs: range {r} owned by {owners:?} then",
                e.verb,
                e.resource,
                ns,
                e.name.as_deref().unwrap_or(""),
                e.received
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, holder: &str, at: i64) -> Entry {
        Entry {
            verb: "update".into(),
            user_agent: "x".into(),
            resource: "leases".into(),
            namespace: Some("sys".into()),
            name: Some(name.into()),
            code: 200,
            received: at,
            completed: at + 1,
            holder: Some(holder.into()),
        }
    }

    fn write(replica: &str, ns: &str, at: i64) -> Entry {
        Entry {
            verb: "patch".into(),
            user_agent: format!("block-controller/0.1.0 ({replica})"),
            resource: "namespaces".into(),
            namespace: None,
            name: Some(ns.into()),
            code: 200,
            received: at,
            completed: at + 1,
            holder: None,
        }
    }

    #[test]
    fn timestamps_parse_to_unix_micros() {
        assert_eq!(parse_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_micros("2026-11-26T07:24:34.123456Z"),
            Some(1_795_677_874_123_456)
        );
        assert_eq!(
            parse_micros("2000-02-29T00:00:01.5Z"),
            Some(951_782_401_500_000)
        );
        assert_eq!(parse_micros("garbage"), None);
    }

    #[test]
    fn user_agents_name_replicas_and_leader_duties() {
        let mut e = write("bc-1", "n", 0);
        assert_eq!(e.replica(), Some(("bc-1", false)));
        e.user_agent = "block-controller/0.1.0 (bc-1) leader".into();
        assert_eq!(e.replica(), Some(("bc-1", true)));
        e.user_agent = "kubectl/v1.32".into();
        assert_eq!(e.replica(), None);
    }

    #[test]
    fn writes_inside_epochs_pass_and_outside_fail() {
        let log = vec![
            lease("bc-range-0", "a_1", 100),
            write("a", "n", 200),
            lease("bc-range-0", "", 300), // a releases
            write("a", "n", 350),         // too late: violation
            lease("bc-range-0", "b_7", 400),
            write("b", "n", 500),
            write("a", "n", 600), // b owns it: violation
        ];
        let report = check_ownership(&log, "bc", "sys", |_| 0);
        assert_eq!(report.epochs, 2);
        assert_eq!(report.writes_checked, 4);
        assert_eq!(report.violations.len(), 2, "{:?}", report.violations);
        assert!(report.violations[1].contains("[\"b\"]"));
    }

    #[test]
    fn a_write_before_any_claim_is_a_violation() {
        let log = vec![write("a", "n", 50), lease("bc-range-0", "a_1", 100)];
        let report = check_ownership(&log, "bc", "sys", |_| 0);
        assert_eq!(report.violations.len(), 1);
    }

    #[test]
    fn leader_duties_and_other_clients_are_not_checked() {
        let mut leader = write("a", "n", 50);
        leader.user_agent.push_str(" leader");
        let mut other = write("a", "n", 50);
        other.user_agent = "kubectl".into();
        let report = check_ownership(&[leader, other], "bc", "sys", |_| 0);
        assert_eq!((report.writes_checked, report.leader_writes), (0, 1));
        assert!(report.violations.is_empty());
    }

    #[test]
    fn audit_lines_parse() {
        let line = r#"{"kind":"Event","level":"Request","stage":"ResponseComplete","verb":"update","userAgent":"block-controller/0.1.0 (bc-0)","objectRef":{"resource":"leases","namespace":"sys","name":"bc-range-3","apiGroup":"coordination.k8s.io"},"responseStatus":{"code":200},"requestObject":{"spec":{"holderIdentity":"bc-0_ab"}},"requestReceivedTimestamp":"2026-11-26T07:24:34.000100Z","stageTimestamp":"2026-11-26T07:24:34.000300Z"}"#;
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let e = entry_of(&v).expect("entry");
        assert_eq!(e.holder.as_deref(), Some("bc-0_ab"));
        assert_eq!(e.completed - e.received, 200);
        assert_eq!(e.name.as_deref(), Some("bc-range-3"));
    }
}
