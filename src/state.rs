//! What a namespace's label and annotations ask for: a pure decision, no I/O.
//!
//! The rules are SPEC.md's "What a namespace's state means", plus the start-up and handover rule of
//! DESIGN.md: pending work is visible on the namespace itself. The lock flow writes the unlock
//! annotation first and the completion marker last; the unlock flow removes both last. So an
//! `active` or unlabelled namespace without either has nothing to undo, and a `locked` one carrying
//! the marker needs no re-verification after a restart.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::api::{STATUS_LABEL, UNLOCK_TIMESTAMP_ANNOTATION};

/// Written with the last step of the lock flow (RFC 3339 time the lock completed); removed with
/// the last step of the unlock flow.
pub const LOCKED_AT_ANNOTATION: &str = "core.clawcloud.run/locked-at";
/// Optional per-namespace lock duration (Go-style, e.g. `24h`), overriding `--lock-duration`.
pub const LOCK_DURATION_ANNOTATION: &str = "core.clawcloud.run/lock-duration";
/// Optional reason for the lock, shown in Events and by `kubectl block status`.
pub const LOCK_REASON_ANNOTATION: &str = "core.clawcloud.run/lock-reason";
/// The BlockRequest (`<namespace>/<name>/<uid>`) that last set the status label.
pub const REQUESTED_BY_ANNOTATION: &str = "core.clawcloud.run/requested-by";

/// The part of a Namespace the decision needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceView {
    /// Namespace name.
    pub name: String,
    /// Its uid (deletion preconditions).
    pub uid: Option<String>,
    /// Its resourceVersion (write preconditions).
    pub resource_version: Option<String>,
    /// `clawcloud.run/status`, if present.
    pub label: Option<String>,
    /// `clawcloud.run/unlock-timestamp`, raw.
    pub unlock_at: Option<String>,
    /// Carries [`LOCKED_AT_ANNOTATION`].
    pub lock_complete: bool,
    /// [`LOCK_DURATION_ANNOTATION`], raw.
    pub lock_duration: Option<String>,
    /// Being deleted already.
    pub terminating: bool,
    /// Carries the right [`crate::bucket::BUCKET_LABEL`] (so the owned-buckets watch sees it).
    pub bucketed: bool,
}

impl NamespaceView {
    /// Reads the view out of object metadata.
    pub fn from_meta(
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> NamespaceView {
        let empty = BTreeMap::new();
        let labels = meta.labels.as_ref().unwrap_or(&empty);
        let annotations = meta.annotations.as_ref().unwrap_or(&empty);
        NamespaceView {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            label: labels.get(STATUS_LABEL).cloned(),
            unlock_at: annotations.get(UNLOCK_TIMESTAMP_ANNOTATION).cloned(),
            lock_complete: annotations.contains_key(LOCKED_AT_ANNOTATION),
            lock_duration: annotations.get(LOCK_DURATION_ANNOTATION).cloned(),
            terminating: meta.deletion_timestamp.is_some(),
            bucketed: meta.name.as_deref().is_some_and(|n| {
                labels.get(crate::bucket::BUCKET_LABEL) == Some(&crate::bucket::bucket_value(n))
            }),
        }
    }

    /// The unlock time, if the annotation is present: `Ok(None)` when absent, `Err` when it does
    /// not parse (never delete on that).
    pub fn deadline(&self) -> Result<Option<DateTime<Utc>>, String> {
        match &self.unlock_at {
            None => Ok(None),
            Some(raw) => parse_timestamp(raw).map(Some),
        }
    }
}

/// Parses the unlock annotation: RFC 3339 (the original writes UTC with a `Z`).
pub fn parse_timestamp(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{raw:?} is not an RFC 3339 time: {e}"))
}

/// Formats a deadline the way the original does: RFC 3339, UTC, whole seconds, `Z`.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What to do with a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run the lock flow.
    Lock,
    /// Locked and complete; only (re)schedule its expiry. `deadline` is `None` when the
    /// annotation does not parse (locked without expiry until someone fixes it).
    Locked {
        /// Unlock time in Unix seconds.
        deadline: Option<i64>,
    },
    /// The lock outlived its deadline.
    Expire {
        /// Unlock time in Unix seconds.
        deadline: i64,
    },
    /// Run the unlock flow.
    Unlock,
    /// Nothing to do (active and clean, unknown label value, terminating, …).
    Nothing,
}

/// Decides from the view and the current time (Unix seconds).
pub fn decide(view: &NamespaceView, now: i64) -> Decision {
    if view.terminating {
        return Decision::Nothing;
    }
    match view.label.as_deref() {
        Some("locked") => match view.deadline() {
            Ok(Some(t)) if t.timestamp() <= now => Decision::Expire {
                deadline: t.timestamp(),
            },
            Ok(Some(t)) if view.lock_complete => Decision::Locked {
                deadline: Some(t.timestamp()),
            },
            Err(_) if view.lock_complete => Decision::Locked { deadline: None },
            _ => Decision::Lock,
        },
        // No label, or `active`: undo whatever a lock left; nothing is left when neither the
        // unlock annotation nor the completion marker is there (the unlock flow removes them last).
        None | Some("active") => {
            if view.unlock_at.is_some() || view.lock_complete {
                Decision::Unlock
            } else {
                Decision::Nothing
            }
        }
        Some(_) => Decision::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(label: Option<&str>, unlock_at: Option<&str>, complete: bool) -> NamespaceView {
        NamespaceView {
            name: "team-a".into(),
            label: label.map(str::to_string),
            unlock_at: unlock_at.map(str::to_string),
            lock_complete: complete,
            ..Default::default()
        }
    }

    const NOW: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

    #[test]
    fn locked_without_deadline_locks() {
        assert_eq!(
            decide(&view(Some("locked"), None, false), NOW),
            Decision::Lock
        );
    }

    #[test]
    fn locked_and_complete_only_schedules() {
        let v = view(Some("locked"), Some("2027-01-16T08:00:00Z"), true);
        assert_eq!(
            decide(&v, NOW),
            Decision::Locked {
                deadline: Some(NOW + 86_400)
            }
        );
    }

    #[test]
    fn locked_incomplete_redoes_the_lock() {
        let v = view(Some("locked"), Some("2027-01-16T08:00:00Z"), false);
        assert_eq!(decide(&v, NOW), Decision::Lock);
    }

    #[test]
    fn past_deadline_expires_even_if_incomplete() {
        let v = view(Some("locked"), Some("2027-01-15T07:59:59Z"), false);
        assert_eq!(decide(&v, NOW), Decision::Expire { deadline: NOW - 1 });
        let v = view(Some("locked"), Some("2027-01-15T08:00:00Z"), true);
        assert_eq!(decide(&v, NOW), Decision::Expire { deadline: NOW });
    }

    #[test]
    fn unparsable_deadline_never_expires() {
        let v = view(Some("locked"), Some("next tuesday"), true);
        assert_eq!(decide(&v, NOW), Decision::Locked { deadline: None });
        let v = view(Some("locked"), Some("1999-01-01"), false);
        assert_eq!(
            decide(&v, NOW),
            Decision::Lock,
            "redo the lock, never expire"
        );
    }

    #[test]
    fn active_or_unlabelled_unlocks_only_when_something_is_left() {
        assert_eq!(
            decide(&view(Some("active"), None, false), NOW),
            Decision::Nothing
        );
        assert_eq!(decide(&view(None, None, false), NOW), Decision::Nothing);
        assert_eq!(
            decide(
                &view(Some("active"), Some("2027-01-16T08:00:00Z"), true),
                NOW
            ),
            Decision::Unlock
        );
        assert_eq!(
            decide(&view(None, Some("garbage"), false), NOW),
            Decision::Unlock
        );
        assert_eq!(
            decide(&view(Some("active"), None, true), NOW),
            Decision::Unlock
        );
    }

    #[test]
    fn unknown_label_values_and_terminating_namespaces_are_left_alone() {
        assert_eq!(
            decide(
                &view(Some("frozen"), Some("2000-01-01T00:00:00Z"), false),
                NOW
            ),
            Decision::Nothing
        );
        let mut v = view(Some("locked"), None, false);
        v.terminating = true;
        assert_eq!(decide(&v, NOW), Decision::Nothing);
    }

    #[test]
    fn timestamps_round_trip_in_the_original_format() {
        let t = parse_timestamp("2026-12-03T10:04:05Z").expect("parses");
        assert_eq!(format_timestamp(t), "2026-12-03T10:04:05Z");
        // Offsets are accepted and normalised to UTC.
        let t = parse_timestamp("2026-12-03T12:04:05+02:00").expect("parses");
        assert_eq!(format_timestamp(t), "2026-12-03T10:04:05Z");
        assert!(parse_timestamp("2026-12-03").is_err());
    }
}
