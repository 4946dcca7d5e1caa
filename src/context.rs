//! What every flow needs: the client, the configuration, metrics, Events, and the API resources
//! this server serves (discovered once at start, as kubectl does).

use std::sync::Arc;

use kube::api::ApiResource;
use kube::discovery::{ApiCapabilities, Scope};
use tracing::{info, warn};

use crate::config::Config;
use crate::events::Recorder;
use crate::metrics::Metrics;

/// Shared by every worker.
#[derive(Clone)]
pub struct Context {
    /// The rate-limited, counted client.
    pub client: kube::Client,
    /// Validated flags.
    pub cfg: Arc<Config>,
    /// Metrics of this replica.
    pub metrics: Metrics,
    /// Kubernetes Events.
    pub events: Recorder,
    /// API resources in use.
    pub kinds: Arc<Kinds>,
    /// Makes per-reconcile clients that count their requests (None: `client` is used as is).
    pub counting: Option<crate::client::Counting>,
}

/// The API resources the flows touch.
#[derive(Debug, Clone)]
pub struct Kinds {
    /// core/v1 Namespace.
    pub namespace: ApiResource,
    /// core/v1 ResourceQuota.
    pub quota: ApiResource,
    /// core/v1 Pod.
    pub pod: ApiResource,
    /// Deployment, StatefulSet, ReplicaSet, ReplicationController.
    pub scalable: Vec<ApiResource>,
    /// CronJob at the version this server serves (`batch/v1` from 1.21, `batch/v1beta1` before);
    /// `None` if it serves neither.
    pub cronjob: Option<ApiResource>,
}

impl Kinds {
    /// The scalable workload kinds, in lock order.
    pub fn scalable(&self) -> &[ApiResource] {
        &self.scalable
    }

    /// Asks the server where CronJobs live.
    pub async fn discover(client: &kube::Client) -> anyhow::Result<Kinds> {
        use k8s_openapi::api::{apps::v1 as apps, core::v1 as core};
        let mut cronjob = None;
        for version in ["v1", "v1beta1"] {
            let gv = kube::core::GroupVersion::gv("batch", version);
            match kube::discovery::oneshot::pinned_group(client, &gv).await {
                Ok(group) => {
                    let found: Option<(ApiResource, ApiCapabilities)> = group
                        .resources_by_stability()
                        .into_iter()
                        .find(|(ar, caps)| ar.kind == "CronJob" && caps.scope == Scope::Namespaced);
                    if let Some((ar, _)) = found {
                        info!(api_version = %ar.api_version, "CronJobs served");
                        cronjob = Some(ar);
                        break;
                    }
                }
                Err(e) => tracing::debug!(%version, error = %e, "batch group version not served"),
            }
        }
        if cronjob.is_none() {
            warn!("the server serves no CronJob API; CronJobs are not suspended");
        }
        Ok(Kinds {
            namespace: ApiResource::erase::<core::Namespace>(&()),
            quota: ApiResource::erase::<core::ResourceQuota>(&()),
            pod: ApiResource::erase::<core::Pod>(&()),
            scalable: vec![
                ApiResource::erase::<apps::Deployment>(&()),
                ApiResource::erase::<apps::StatefulSet>(&()),
                ApiResource::erase::<apps::ReplicaSet>(&()),
                ApiResource::erase::<core::ReplicationController>(&()),
            ],
            cronjob,
        })
    }
}
