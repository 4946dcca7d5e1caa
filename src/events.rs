//! Kubernetes Events on namespaces (core/v1, which `kubectl describe namespace` shows on every
//! server version). Emitting is best effort: a failed Event is logged, never fails a flow.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use tracing::debug;

/// The Events this controller emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Lock complete.
    Locked,
    /// Unlock complete.
    Unlocked,
    /// Unlock left objects alone because a saved value does not parse.
    UnlockIncomplete,
    /// A saved value (original replicas / suspend) does not parse.
    BadSavedValue,
    /// The unlock annotation does not parse; no expiry.
    UnparsableUnlockTime,
    /// `--expiry-warning` before the deadline.
    ExpiryWarning,
    /// Deadline passed; the namespace is deleted.
    Expired,
    /// Deadline passed; kept (`--expire-action=none`).
    ExpiryReached,
}

impl EventKind {
    /// The Event's reason.
    pub fn reason(self) -> &'static str {
        match self {
            EventKind::Locked => "NamespaceLocked",
            EventKind::Unlocked => "NamespaceUnlocked",
            EventKind::UnlockIncomplete => "UnlockIncomplete",
            EventKind::BadSavedValue => "UnparsableSavedValue",
            EventKind::UnparsableUnlockTime => "UnparsableUnlockTimestamp",
            EventKind::ExpiryWarning => "LockExpiringSoon",
            EventKind::Expired => "LockExpired",
            EventKind::ExpiryReached => "LockExpiredKept",
        }
    }

    fn type_(self) -> &'static str {
        match self {
            EventKind::Locked | EventKind::Unlocked => "Normal",
            _ => "Warning",
        }
    }
}

/// Emits Events as this replica.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    identity: String,
    controller_namespace: String,
}

impl Recorder {
    /// A recorder reporting as `identity`.
    pub fn new(client: kube::Client, identity: &str, controller_namespace: &str) -> Recorder {
        Recorder {
            client,
            identity: identity.to_string(),
            controller_namespace: controller_namespace.to_string(),
        }
    }

    /// An Event about `namespace`, stored in that namespace (tenants see it there).
    pub async fn namespace(&self, namespace: &str, kind: EventKind, message: &str) {
        self.emit(namespace, namespace, kind, message).await
    }

    /// An Event about `namespace`, stored in the controller's namespace, so it outlives a
    /// namespace deleted on expiry.
    pub async fn controller(&self, namespace: &str, kind: EventKind, message: &str) {
        let home = self.controller_namespace.clone();
        self.emit(&home, namespace, kind, message).await
    }

    async fn emit(&self, store_in: &str, about: &str, kind: EventKind, message: &str) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let nanos = now.as_nanosecond();
        let now = Time(now);
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!("{about}.{nanos:x}")),
                namespace: Some(store_in.to_string()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Namespace".into()),
                name: Some(about.to_string()),
                // The API server requires this to match the Event's own namespace.
                namespace: Some(store_in.to_string()),
                ..Default::default()
            },
            reason: Some(kind.reason().into()),
            message: Some(message.chars().take(1000).collect()),
            type_: Some(kind.type_().into()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            source: Some(EventSource {
                component: Some("block-controller".into()),
                host: None,
            }),
            reporting_component: Some("block-controller".into()),
            reporting_instance: Some(self.identity.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), store_in);
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            debug!(namespace = about, reason = kind.reason(), error = %e, "event not recorded");
        }
    }
}
