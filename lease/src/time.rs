//! Time as the core sees it: instants on the member's own monotonic clock, handed in by the
//! driver. The core never reads a clock and never compares instants of different members.

use std::ops::Add;
use std::time::Duration;

/// A point on this member's monotonic clock, in nanoseconds since an origin the driver picks
/// (process start, say). Only differences between instants of the *same* member mean
/// anything; the protocol never compares clocks across machines.
///
/// ```
/// use std::time::Duration;
/// use lease::Instant;
/// let t = Instant::from_nanos(1_000);
/// assert_eq!((t + Duration::from_nanos(500)).as_nanos(), 1_500);
/// assert_eq!((t + Duration::from_secs(1)).saturating_duration_since(t), Duration::from_secs(1));
/// assert_eq!(t.saturating_duration_since(t + Duration::from_secs(1)), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the clock.
    pub const ZERO: Instant = Instant(0);

    /// The instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// The instant `since_origin` after the origin (saturating at `u64::MAX` nanoseconds,
    /// about 584 years). A driver typically passes `std::time::Instant::now() - start`.
    pub fn from_duration(since_origin: Duration) -> Instant {
        Instant(u64::try_from(since_origin.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Microseconds since the origin, as stamped into written leases (see
    /// [`LeaseRecord::renew_time_micros`](crate::LeaseRecord::renew_time_micros)).
    pub(crate) fn as_micros(self) -> i64 {
        i64::try_from(self.0 / 1_000).unwrap_or(i64::MAX)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturating addition.
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}
