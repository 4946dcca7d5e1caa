//! Command-line flags, validated into a [`Config`] the rest of the controller reads.
//!
//! Names follow the original Go controller where it had the flag; polling-era flags that describe
//! nothing real here are refused with a message that says why.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Namespaces that are never locked, unlocked or deleted, whatever their labels say.
pub const ALWAYS_PROTECTED: [&str; 4] =
    ["kube-system", "kube-public", "kube-node-lease", "default"];

/// What to do when a lock outlives its unlock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExpireAction {
    /// Delete the namespace (the original's behaviour).
    Delete,
    /// Only report (Event, log, metric); keep the namespace locked.
    None,
}

/// Flags as given on the command line.
#[derive(Debug, Parser)]
#[command(
    name = "block-controller",
    version,
    about = "Locks, unlocks and expires Kubernetes namespaces labelled clawcloud.run/status.",
    long_about = None
)]
pub struct Flags {
    /// How long a lock lasts before the namespace expires (Go-style duration: 168h, 30m, 1h30m).
    #[arg(long, default_value = "168h", value_parser = parse_duration)]
    pub lock_duration: Duration,

    /// Namespaces reconciled at the same time (never two workers on one namespace).
    #[arg(long, default_value_t = 20)]
    pub max_concurrent_reconciles: usize,

    /// BlockRequests reconciled at the same time.
    #[arg(long, default_value_t = 4)]
    pub worker_count: usize,

    /// Memory budget in MiB: bounds the work queue (backpressure on intake); never drops state.
    #[arg(long, default_value_t = 1024)]
    pub max_memory_mb: u64,

    /// Client-side limit on API requests per second (token bucket refill rate). Requests to
    /// Leases take tokens from a second bucket of the same rate (burst at least 512), so the
    /// sharding protocol never queues behind namespace work.
    #[arg(long, default_value_t = 50.0)]
    pub kube_api_qps: f64,

    /// Client-side burst of API requests above the QPS limit (token bucket size).
    #[arg(long, default_value_t = 100)]
    pub kube_api_burst: u32,

    /// Timeout of every non-watch API request. Kept well below the lease duration minus the
    /// renew deadline, so no write of a replica that lost a range can land after a new owner starts.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    pub api_timeout: Duration,

    /// Address of the Prometheus `/metrics` endpoint (`0` disables it).
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,

    /// Address of `/healthz` and `/readyz` (`0` disables them).
    #[arg(long, default_value = ":8081")]
    pub health_probe_bind_address: String,

    /// Take part in leader election for singleton duties.
    #[arg(long, default_value_t = false)]
    pub leader_elect: bool,

    /// `delete` (default) deletes a namespace whose lock expired; `none` only reports it.
    #[arg(long, value_enum, default_value_t = ExpireAction::Delete)]
    pub expire_action: ExpireAction,

    /// Emit a warning Event this long before a namespace expires (0 disables).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub expiry_warning: Duration,

    /// More namespaces never to touch, comma-separated (kube-system, kube-public, kube-node-lease,
    /// default and the controller's own namespace always are).
    #[arg(long, value_delimiter = ',')]
    pub protected_namespaces: Vec<String>,

    /// The controller's own namespace (protected; holds its Leases).
    #[arg(long, env = "POD_NAMESPACE", default_value = "block-system")]
    pub controller_namespace: String,

    /// This replica's identity (StatefulSet pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// The StatefulSet this replica belongs to (in the controller's namespace). On SIGTERM a
    /// replica whose ordinal is at or above its replica count is being scaled away and hands
    /// its ranges over at once; otherwise it is restarting and the others keep its ranges for
    /// its next incarnation (one lease duration). Unset: every shutdown hands over at once.
    #[arg(long, env = "STATEFULSET_NAME")]
    pub statefulset_name: Option<String>,

    /// Hash ranges of namespace names, fixed per installation (every replica must agree).
    #[arg(long, default_value_t = 256)]
    pub ranges: u32,

    /// A replica whose member Lease goes unrenewed this long (by the observer's clock) is gone:
    /// its ranges are taken over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// A replica that cannot renew its Lease for this long stops all work at once.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// Lease renew interval.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,

    /// The leader deletes the member Lease of a replica that left for good (scaled away, or
    /// dead and fenced) once it stayed unchanged this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub member_lease_gc_after: Duration,

    /// Also set `requests.storage: 0` in the lock quota.
    #[arg(long, default_value_t = false)]
    pub quota_requests_storage: bool,

    /// Page size of workload lists inside a namespace (the original's batch of 50).
    #[arg(long, alias = "scan-batch-size", default_value_t = 50)]
    pub list_page_size: u32,

    /// Refused: the original polled every namespace at this interval; this controller is
    /// event-driven (watch + expiry queue) and has nothing to poll.
    #[arg(long, hide = true)]
    pub fast_scan_interval: Option<String>,

    /// Refused, like --fast-scan-interval.
    #[arg(long, hide = true)]
    pub slow_scan_interval: Option<String>,
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Default lock duration.
    pub lock_duration: Duration,
    /// Namespace reconcile concurrency.
    pub max_concurrent_reconciles: usize,
    /// BlockRequest reconcile concurrency.
    pub worker_count: usize,
    /// Most namespaces waiting in the work queue before intake applies backpressure.
    pub max_queued: usize,
    /// Client QPS.
    pub kube_api_qps: f64,
    /// Client burst.
    pub kube_api_burst: u32,
    /// Per-request timeout (non-watch).
    pub api_timeout: Duration,
    /// Metrics address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// Health address, if enabled.
    pub health_addr: Option<SocketAddr>,
    /// Leader election on.
    pub leader_elect: bool,
    /// Expiry behaviour.
    pub expire_action: ExpireAction,
    /// Warning lead time, if any.
    pub expiry_warning: Option<Duration>,
    /// Every protected namespace.
    pub protected: BTreeSet<String>,
    /// The controller's namespace.
    pub controller_namespace: String,
    /// Replica identity.
    pub identity: String,
    /// The replica's StatefulSet, when it runs in one.
    pub statefulset_name: Option<String>,
    /// Add `requests.storage` to the quota.
    pub quota_requests_storage: bool,
    /// Hash ranges.
    pub ranges: shard::RangeCount,
    /// Lease timing.
    pub lease_duration: Duration,
    /// Renew deadline.
    pub renew_deadline: Duration,
    /// Renew interval.
    pub retry_period: Duration,
    /// Member Leases of departed replicas are deleted after this.
    pub member_lease_gc_after: Duration,
    /// Workload list page size.
    pub list_page_size: u32,
}

/// A flag value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value out of its range.
    #[error("--{flag}={value}: {why}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        why: String,
    },
    /// A flag of the original that describes polling.
    #[error(
        "--{0} is not supported: the original controller polled every namespace on that interval; \
         this one is event-driven (a label-selected watch plus a deadline queue) and never polls. \
         Remove the flag."
    )]
    PollingFlag(&'static str),
}

impl Config {
    /// Validates flags.
    pub fn from_flags(f: Flags) -> Result<Config, ConfigError> {
        if f.fast_scan_interval.is_some() {
            return Err(ConfigError::PollingFlag("fast-scan-interval"));
        }
        if f.slow_scan_interval.is_some() {
            return Err(ConfigError::PollingFlag("slow-scan-interval"));
        }
        let invalid = |flag, value: String, why: &str| ConfigError::Invalid {
            flag,
            value,
            why: why.to_string(),
        };
        if f.lock_duration < Duration::from_secs(1) {
            return Err(invalid(
                "lock-duration",
                format!("{:?}", f.lock_duration),
                "must be at least 1s",
            ));
        }
        if !(1..=10_000).contains(&f.max_concurrent_reconciles) {
            return Err(invalid(
                "max-concurrent-reconciles",
                f.max_concurrent_reconciles.to_string(),
                "must be between 1 and 10000",
            ));
        }
        if !(1..=1_000).contains(&f.worker_count) {
            return Err(invalid(
                "worker-count",
                f.worker_count.to_string(),
                "must be between 1 and 1000",
            ));
        }
        if f.max_memory_mb < 32 {
            return Err(invalid(
                "max-memory-mb",
                f.max_memory_mb.to_string(),
                "must be at least 32",
            ));
        }
        if !(f.kube_api_qps.is_finite() && f.kube_api_qps > 0.0) {
            return Err(invalid(
                "kube-api-qps",
                f.kube_api_qps.to_string(),
                "must be a positive number",
            ));
        }
        if f.kube_api_burst == 0 {
            return Err(invalid("kube-api-burst", "0".into(), "must be at least 1"));
        }
        if f.api_timeout < Duration::from_millis(100) {
            return Err(invalid(
                "api-timeout",
                format!("{:?}", f.api_timeout),
                "must be at least 100ms",
            ));
        }
        if !(1..=500).contains(&f.list_page_size) {
            return Err(invalid(
                "list-page-size",
                f.list_page_size.to_string(),
                "must be between 1 and 500",
            ));
        }
        if f.expiry_warning >= f.lock_duration && !f.expiry_warning.is_zero() {
            return Err(invalid(
                "expiry-warning",
                format!("{:?}", f.expiry_warning),
                "must be shorter than --lock-duration",
            ));
        }
        let ranges = shard::RangeCount::new(f.ranges)
            .map_err(|e| invalid("ranges", f.ranges.to_string(), &e.to_string()))?;
        if !(f.retry_period < f.renew_deadline && f.renew_deadline < f.lease_duration) {
            return Err(invalid(
                "renew-deadline",
                format!("{:?}", f.renew_deadline),
                "needs --retry-period < --renew-deadline < --lease-duration",
            ));
        }
        // A request sent just before the renew deadline must land before anyone may take over.
        if f.renew_deadline + f.api_timeout >= f.lease_duration {
            return Err(invalid(
                "api-timeout",
                format!("{:?}", f.api_timeout),
                "must be below --lease-duration minus --renew-deadline",
            ));
        }
        let mut protected: BTreeSet<String> =
            ALWAYS_PROTECTED.iter().map(|s| s.to_string()).collect();
        protected.insert(f.controller_namespace.clone());
        for p in &f.protected_namespaces {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            if !is_dns_label(p) {
                return Err(invalid(
                    "protected-namespaces",
                    p.to_string(),
                    "is not a valid namespace name",
                ));
            }
            protected.insert(p.to_string());
        }
        let identity = match f.identity {
            Some(i) if !i.is_empty() => i,
            _ => std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "block-controller-0".to_string()),
        };
        // ~1 KiB per queued namespace (name, snapshot, bookkeeping) is a generous upper bound; a
        // quarter of the budget may go to the queue.
        let max_queued = (f.max_memory_mb as usize * 1024 / 4).max(1024);
        Ok(Config {
            lock_duration: f.lock_duration,
            max_concurrent_reconciles: f.max_concurrent_reconciles,
            worker_count: f.worker_count,
            max_queued,
            kube_api_qps: f.kube_api_qps,
            kube_api_burst: f.kube_api_burst,
            api_timeout: f.api_timeout,
            metrics_addr: parse_bind("metrics-bind-address", &f.metrics_bind_address)?,
            health_addr: parse_bind("health-probe-bind-address", &f.health_probe_bind_address)?,
            leader_elect: f.leader_elect,
            expire_action: f.expire_action,
            expiry_warning: (!f.expiry_warning.is_zero()).then_some(f.expiry_warning),
            protected,
            controller_namespace: f.controller_namespace,
            identity,
            statefulset_name: f.statefulset_name.filter(|s| !s.is_empty()),
            quota_requests_storage: f.quota_requests_storage,
            ranges,
            lease_duration: f.lease_duration,
            renew_deadline: f.renew_deadline,
            retry_period: f.retry_period,
            member_lease_gc_after: f.member_lease_gc_after,
            list_page_size: f.list_page_size,
        })
    }

    /// Whether `namespace` must never be touched.
    pub fn is_protected(&self, namespace: &str) -> bool {
        self.protected.contains(namespace)
    }
}

/// Parses Go-style durations (`168h`, `1h30m`, `90s`, `500ms`) as the original's flags took them.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 168h, 30m or 1h30m: {e}"))
}

/// Parses a Go-style bind address: `:8080`, `127.0.0.1:8080`, or `0` to disable.
fn parse_bind(flag: &'static str, s: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if s == "0" || s.is_empty() {
        return Ok(None);
    }
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse().map(Some).map_err(|e| ConfigError::Invalid {
        flag,
        value: s.to_string(),
        why: format!("not an address like :8080 or 127.0.0.1:8080 ({e})"),
    })
}

/// A DNS-1123 label: what a namespace name must be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["block-controller"];
        all.extend_from_slice(args);
        let flags = Flags::try_parse_from(all).map_err(|e| e.to_string())?;
        Config::from_flags(flags).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_original() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.lock_duration, Duration::from_secs(168 * 3600));
        assert_eq!(c.max_concurrent_reconciles, 20);
        assert_eq!(c.expire_action, ExpireAction::Delete);
        assert_eq!(c.health_addr, Some("0.0.0.0:8081".parse().expect("addr")));
        assert!(
            c.is_protected("kube-system")
                && c.is_protected("default")
                && c.is_protected("block-system")
        );
        assert_eq!(c.list_page_size, 50);
    }

    #[test]
    fn go_style_durations() {
        let c = parse(&["--lock-duration=1h30m", "--expiry-warning=10m"]).expect("valid");
        assert_eq!(c.lock_duration, Duration::from_secs(5400));
        assert_eq!(c.expiry_warning, Some(Duration::from_secs(600)));
        let e = parse(&["--lock-duration=forever"]).expect_err("garbage");
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn polling_flags_are_refused_with_a_reason() {
        let e = parse(&["--fast-scan-interval=1m"]).expect_err("refused");
        assert!(e.contains("event-driven"), "{e}");
        let e = parse(&["--slow-scan-interval=1h"]).expect_err("refused");
        assert!(e.contains("slow-scan-interval"), "{e}");
        // --scan-batch-size maps onto something real: the page size of workload lists.
        assert_eq!(
            parse(&["--scan-batch-size=20"])
                .expect("alias")
                .list_page_size,
            20
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["--max-concurrent-reconciles=0"][..],
            &["--kube-api-qps=0"],
            &["--kube-api-qps=-3"],
            &["--kube-api-burst=0"],
            &["--max-memory-mb=1"],
            &["--list-page-size=0"],
            &["--protected-namespaces=Bad_Name"],
            &["--expiry-warning=200h"],
            &["--metrics-bind-address=nonsense"],
            &["--expire-action=explode"],
            &["--ranges=0"],
            &["--ranges=70000"],
            &["--renew-deadline=20s"],
            &["--api-timeout=6s"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
    }

    #[test]
    fn extra_protected_namespaces() {
        let c = parse(&[
            "--protected-namespaces=prod-a,prod-b",
            "--controller-namespace=ops",
        ])
        .expect("valid");
        assert!(c.is_protected("prod-a") && c.is_protected("prod-b") && c.is_protected("ops"));
        assert!(!c.is_protected("block-system"));
    }
}
