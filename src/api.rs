//! The `BlockRequest` API (`core.clawcloud.run/v1`) and the names shared with the original Go
//! controller. Every string here is wire-compatible with it: existing clusters and tools keep working.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// API group of the BlockRequest CRD.
pub const GROUP: &str = "core.clawcloud.run";
/// Finalizer put on every BlockRequest on first sight.
pub const FINALIZER: &str = "core.clawcloud.run/finalizer";
/// The namespace status label: `locked` or `active` (any other value: left alone).
pub const STATUS_LABEL: &str = "clawcloud.run/status";
/// Unlock deadline annotation on a namespace, RFC 3339 in UTC.
pub const UNLOCK_TIMESTAMP_ANNOTATION: &str = "clawcloud.run/unlock-timestamp";
/// Original replica count annotation on each scaled workload.
pub const ORIGINAL_REPLICAS_ANNOTATION: &str = "core.clawcloud.run/original-replicas";
/// Original suspend annotation on each suspended CronJob.
pub const ORIGINAL_SUSPEND_ANNOTATION: &str = "core.clawcloud.run/original-suspend";
/// Name of the ResourceQuota created in a locked namespace.
pub const QUOTA_NAME: &str = "block-controller-quota";

/// Per-namespace messages of the original, kept byte for byte.
pub mod messages {
    /// The named namespace does not exist.
    pub const NOT_FOUND: &str = "Namespace not found";
    /// Reading the namespace failed.
    pub const FETCH_FAILED: &str = "Failed to fetch namespace";
    /// Writing the label failed.
    pub const UPDATE_FAILED: &str = "Failed to update namespace label";
    /// The label was written.
    pub const UPDATED: &str = "Namespace label updated successfully";
}

/// What a BlockRequest asks for: the value its targets' `clawcloud.run/status` label should carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Lock: scale to zero, quota, deadline.
    Locked,
    /// Unlock: restore everything.
    Active,
}

impl Action {
    /// The label value, as the original writes it.
    pub fn as_label(self) -> &'static str {
        match self {
            Action::Locked => "locked",
            Action::Active => "active",
        }
    }
}

/// Lock or unlock many namespaces at once, by name and/or by label selector.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "core.clawcloud.run",
    version = "v1",
    kind = "BlockRequest",
    plural = "blockrequests",
    singular = "blockrequest",
    doc = "BlockRequest locks or unlocks many namespaces at once by setting their clawcloud.run/status label.",
    namespaced,
    status = "BlockRequestStatus",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Targets","type":"integer","jsonPath":".status.targetCount"}"#,
    printcolumn = r#"{"name":"Applied","type":"integer","jsonPath":".status.appliedCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BlockRequestSpec {
    /// Namespaces named directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_names: Vec<String>,
    /// Namespaces matched by labels (listed page by page, once per generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector_schema")]
    pub namespace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// `locked` or `active`.
    pub action: Action,
}

/// Progress of a BlockRequest: the original's fields plus bounded counts and conditions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockRequestStatus {
    /// At most 100 entries, failures first, with the original's exact messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_statuses: Vec<NamespaceStatus>,
    /// Targets processed so far (the original's field).
    #[serde(default)]
    pub processed_namespace_count: i64,
    /// The original's selector paging token; we page within one pass and leave it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector_continue_token: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Distinct target namespaces (names plus selector matches).
    #[serde(default)]
    pub target_count: i64,
    /// Targets that carry the requested label.
    #[serde(default)]
    pub applied_count: i64,
    /// Named targets that do not exist.
    #[serde(default)]
    pub not_found_count: i64,
    /// Targets whose label could not be read or written.
    #[serde(default)]
    pub failed_count: i64,
    /// Targets refused because they are protected.
    #[serde(default)]
    pub protected_count: i64,
    /// `Ready` is `True` when every target carries the requested label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One namespace's outcome, as the original reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamespaceStatus {
    /// Namespace name.
    pub name: String,
    /// One of [`messages`], or a refusal for a protected namespace.
    pub message: String,
}

/// A status condition, shaped like `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason in CamelCase.
    pub reason: String,
    /// Human-readable message (required, as in `metav1.Condition`; a schema default of `""`
    /// is refused by a 1.20 API server).
    pub message: String,
    /// When the status last changed, RFC 3339.
    pub last_transition_time: String,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// k8s-openapi has no JsonSchema for LabelSelector; this is the upstream schema, atomic as in the
/// original CRD (a selector is replaced whole, never merged).
fn label_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let schema = json!({
        "type": "object",
        "description": "Namespaces matched by labels (listed page by page, once per generation).",
        "x-kubernetes-map-type": "atomic",
        "properties": {
            "matchLabels": {
                "type": "object",
                "additionalProperties": { "type": "string" }
            },
            "matchExpressions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": { "type": "string" },
                        "operator": { "type": "string" },
                        "values": {
                            "type": "array",
                            "x-kubernetes-list-type": "atomic",
                            "items": { "type": "string" }
                        }
                    }
                },
                "x-kubernetes-list-type": "atomic"
            }
        }
    });
    schemars::Schema::try_from(schema).unwrap_or_default()
}

/// The CustomResourceDefinition as YAML, exactly what `deploy/crd/blockrequests.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let crd = BlockRequest::crd();
    let body = serde_yaml::to_string(&crd)?;
    Ok(format!(
        "# Generated from src/api.rs by `cargo run -- crd`; do not edit by hand.\n{body}"
    ))
}
