//! Wire names the load generator reads and writes (the controller's, byte for byte, and its own).

/// The namespace status label.
pub const STATUS_LABEL: &str = "clawcloud.run/status";
/// The controller's completion marker of a lock.
pub const LOCKED_AT: &str = "core.clawcloud.run/locked-at";
/// The unlock deadline.
pub const UNLOCK_AT: &str = "clawcloud.run/unlock-timestamp";
/// Per-namespace lock duration (overrides `--lock-duration`).
pub const LOCK_DURATION: &str = "core.clawcloud.run/lock-duration";
/// Saved replica count on a scaled workload.
pub const ORIGINAL_REPLICAS: &str = "core.clawcloud.run/original-replicas";
/// Saved suspend flag on a CronJob.
pub const ORIGINAL_SUSPEND: &str = "core.clawcloud.run/original-suspend";
/// The load test's population label: its value names the population.
pub const POPULATION_LABEL: &str = "loadtest.clawcloud.run/population";
/// `pending` until a namespace's workloads were created, then `ready` (resumable creation).
pub const WORKLOADS_LABEL: &str = "loadtest.clawcloud.run/workloads";
/// What a namespace is for: `population`, `expiry` or `scratch`.
pub const ROLE_LABEL: &str = "loadtest.clawcloud.run/role";
/// The controller's Lease names start with this.
pub const LEASE_PREFIX: &str = "block-controller";
