//! Configuration of a member: who it is, how many ranges, and the protocol's timing.

use std::time::Duration;

use shard::RangeCount;
use thiserror::Error;

use crate::record::LeaseKind;

/// The largest clock rate error the timing checks allow for, in parts per million (1 %):
/// over any interval, a member's monotonic clock runs between 0.99 and 1.01 times real time.
/// Quartz clocks drift by tens of ppm; NTP slewing by at most 500 ppm.
pub const MAX_CLOCK_DRIFT_PPM: u32 = 10_000;

/// Errors of [`Config::validate`]: bad configuration, not retryable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The identity is empty, too long, or not lowercase alphanumerics, `-` and `.`.
    #[error(
        "invalid member identity {0:?}: expected a DNS-1123 subdomain of at most 200 characters"
    )]
    Identity(String),
    /// The instance id is empty, too long, or not alphanumerics and `-`.
    #[error("invalid instance id {0:?}: expected 1-63 ASCII letters, digits or '-'")]
    Instance(String),
    /// The prefix is empty, too long, or not lowercase alphanumerics, `-` and `.`.
    #[error(
        "invalid lease name prefix {0:?}: expected a DNS-1123 subdomain of at most 40 characters"
    )]
    Prefix(String),
    /// The timing does not satisfy `retry_period < renew_deadline` and
    /// `renew_deadline / (1 - drift) + request_timeout < lease_duration / (1 + drift)`.
    #[error("unsafe timing: {0}")]
    Timing(String),
}

/// A member's configuration. Build it with [`Config::new`] (defaults as client-go's leader
/// election: 15 s lease duration, 10 s renew deadline, 2 s retry period) and adjust fields.
///
/// ```
/// use lease::Config;
/// let config = Config::new("block-controller-2", "7f3a9c", "block-controller", 256).unwrap();
/// assert_eq!(config.holder_identity(), "block-controller-2_7f3a9c");
/// assert_eq!(config.member_lease_name("block-controller-2"), "block-controller-member-block-controller-2");
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Stable identity of the member: the pod name, e.g. `block-controller-2`.
    pub identity: String,
    /// Per-process id (random at start-up), so a new incarnation is never taken for its
    /// predecessor.
    pub instance: String,
    /// Prefix of all lease names (`<prefix>-member-<identity>`, `<prefix>-range-<r>`,
    /// `<prefix>-leader`).
    pub prefix: String,
    /// The number of hash ranges `R`, fixed per installation.
    pub ranges: RangeCount,
    /// How long a member lease (or the leader lease) may go unrenewed, as seen by an
    /// observer's own clock, before the observer may take over. Default 15 s.
    pub lease_duration: Duration,
    /// A holder that has not renewed successfully within this time, measured from when its
    /// last successful renew was *sent*, stops all work. Default 10 s.
    pub renew_deadline: Duration,
    /// Renew interval, and the back-off after a failed write. Default 2 s.
    pub retry_period: Duration,
    /// The bound the driver puts on every API request of the process (lease writes *and*
    /// the work on owned ranges): a request either lands within it or never. Default 4 s.
    pub request_timeout: Duration,
    /// How long the others keep a member that shut down gracefully without leaving (a
    /// rolling restart) in the assignment, so its ranges wait for its next incarnation
    /// instead of moving twice. Default: the lease duration.
    pub restart_grace: Duration,
    /// The leader deletes the member lease of an identity that left for good (released with
    /// the leaving flag, or fenced) once it has stayed so, unchanged, this long: scale-downs
    /// leave no clutter behind. Default 10 minutes.
    pub member_gc_after: Duration,
    /// Unix time in microseconds at this member's [`Instant::ZERO`](crate::Instant::ZERO).
    /// Written renew times are this plus the member's clock, so `kubectl` shows plausible
    /// times; the protocol itself only compares them for equality. Default 0.
    pub wall_clock_at_origin_micros: i64,
}

impl Config {
    /// A configuration with default timing; fails when `ranges` is not in `1..=65536`.
    pub fn new(
        identity: impl Into<String>,
        instance: impl Into<String>,
        prefix: impl Into<String>,
        ranges: u32,
    ) -> Result<Config, shard::RangeError> {
        Ok(Config {
            identity: identity.into(),
            instance: instance.into(),
            prefix: prefix.into(),
            ranges: RangeCount::new(ranges)?,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            request_timeout: Duration::from_secs(4),
            restart_grace: Duration::from_secs(15),
            member_gc_after: Duration::from_secs(600),
            wall_clock_at_origin_micros: 0,
        })
    }

    /// Checks names and the timing inequality the safety argument rests on (see the crate
    /// docs): `retry_period < renew_deadline` and, with clocks off by up to
    /// [`MAX_CLOCK_DRIFT_PPM`], `renew_deadline/(1-d) + request_timeout < lease_duration/(1+d)`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_dns_name(&self.identity, 200) {
            return Err(ConfigError::Identity(self.identity.clone()));
        }
        let instance_ok = !self.instance.is_empty()
            && self.instance.len() <= 63
            && self
                .instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !instance_ok {
            return Err(ConfigError::Instance(self.instance.clone()));
        }
        if !is_dns_name(&self.prefix, 40) {
            return Err(ConfigError::Prefix(self.prefix.clone()));
        }
        let zero = [
            ("lease_duration", self.lease_duration),
            ("renew_deadline", self.renew_deadline),
            ("retry_period", self.retry_period),
            ("request_timeout", self.request_timeout),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::Timing(format!("{name} is zero")));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(ConfigError::Timing(format!(
                "retry_period {:?} must be below renew_deadline {:?}",
                self.retry_period, self.renew_deadline
            )));
        }
        if self.lease_duration > Duration::from_secs(i32::MAX as u64) {
            return Err(ConfigError::Timing("lease_duration too long".into()));
        }
        let d = f64::from(MAX_CLOCK_DRIFT_PPM) / 1e6;
        let holder_bound =
            self.renew_deadline.as_secs_f64() / (1.0 - d) + self.request_timeout.as_secs_f64();
        let observer_bound = self.lease_duration.as_secs_f64() / (1.0 + d);
        if holder_bound >= observer_bound {
            return Err(ConfigError::Timing(format!(
                "renew_deadline {:?} / 0.99 + request_timeout {:?} must be below lease_duration {:?} / 1.01",
                self.renew_deadline, self.request_timeout, self.lease_duration
            )));
        }
        Ok(())
    }

    /// What this member writes as holder: `<identity>_<instance>`.
    pub fn holder_identity(&self) -> String {
        format!("{}_{}", self.identity, self.instance)
    }

    /// Name of the member lease of `identity`.
    pub fn member_lease_name(&self, identity: &str) -> String {
        format!("{}-member-{identity}", self.prefix)
    }

    /// Name of the lease of `kind`.
    ///
    /// ```
    /// use lease::{Config, LeaseKind};
    /// let c = Config::new("m-0", "a1", "bc", 16).unwrap();
    /// assert_eq!(c.lease_name(&LeaseKind::Range(7)), "bc-range-7");
    /// assert_eq!(c.lease_name(&LeaseKind::Leader), "bc-leader");
    /// assert_eq!(c.lease_kind("bc-range-7"), Some(LeaseKind::Range(7)));
    /// assert_eq!(c.lease_kind("bc-range-16"), None); // out of bounds
    /// assert_eq!(c.lease_kind("bc-member-m-1"), Some(LeaseKind::Member("m-1".into())));
    /// assert_eq!(c.lease_kind("other-leader"), None);
    /// ```
    pub fn lease_name(&self, kind: &LeaseKind) -> String {
        match kind {
            LeaseKind::Member(identity) => self.member_lease_name(identity),
            LeaseKind::Range(r) => format!("{}-range-{r}", self.prefix),
            LeaseKind::Leader => format!("{}-leader", self.prefix),
        }
    }

    /// The kind of the lease called `name`, or `None` when it is not one of this
    /// installation's (other prefix, malformed, or a range out of bounds).
    pub fn lease_kind(&self, name: &str) -> Option<LeaseKind> {
        let rest = name.strip_prefix(self.prefix.as_str())?.strip_prefix('-')?;
        if rest == "leader" {
            return Some(LeaseKind::Leader);
        }
        if let Some(identity) = rest.strip_prefix("member-") {
            return (!identity.is_empty()).then(|| LeaseKind::Member(identity.to_owned()));
        }
        let digits = rest.strip_prefix("range-")?;
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !canonical {
            return None;
        }
        let r: u32 = digits.parse().ok()?;
        (r < self.ranges.get()).then_some(LeaseKind::Range(r))
    }
}

/// The identity part of a holder string `<identity>_<instance>` (the whole string when it
/// has no `_`).
pub(crate) fn identity_of(holder: &str) -> &str {
    holder
        .rsplit_once('_')
        .map_or(holder, |(identity, _)| identity)
}

fn is_dns_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new("block-controller-0", "abc", "bc", 8).unwrap()
    }

    #[test]
    fn defaults_are_safe() {
        config().validate().unwrap();
    }

    #[test]
    fn rejects_bad_names_and_timing() {
        let mut c = config();
        c.identity = "Bad_Name".into();
        assert!(matches!(c.validate(), Err(ConfigError::Identity(_))));
        let mut c = config();
        c.instance = "a_b".into();
        assert!(matches!(c.validate(), Err(ConfigError::Instance(_))));
        let mut c = config();
        c.prefix = String::new();
        assert!(matches!(c.validate(), Err(ConfigError::Prefix(_))));
        let mut c = config();
        c.request_timeout = Duration::from_secs(5);
        assert!(matches!(c.validate(), Err(ConfigError::Timing(_))));
        let mut c = config();
        c.retry_period = Duration::from_secs(10);
        assert!(matches!(c.validate(), Err(ConfigError::Timing(_))));
    }

    #[test]
    fn identity_of_holder() {
        assert_eq!(identity_of("block-controller-2_abc"), "block-controller-2");
        assert_eq!(identity_of("plain"), "plain");
    }
}
