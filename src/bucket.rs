//! The bucket label: lets the API server filter namespace events per shard.
//!
//! Every namespace the controller writes anyway (the last write of a lock or an unlock) also gets
//! `core.clawcloud.run/bucket=<b>`, where `b` is the top 8 bits of the name's xxh3 hash. The value
//! depends on the name alone, never on who owns what, so a rebalance relabels nothing. A replica
//! then watches two selectors:
//!
//! ```text
//!   core.clawcloud.run/bucket in (b1, b2, …)       the buckets overlapping its ranges: ≈ 1/N
//!   clawcloud.run/status, !core.clawcloud.run/bucket  namespaces never written yet: all replicas
//! ```
//!
//! Buckets are coarser than ranges (256 whatever `--ranges` is), which keeps selectors short; the
//! [`shard::EventFilter`] still decides exactly. A namespace that keeps its bucket label after its
//! status label is removed stays visible to its owner, so leftovers are found after a restart.

use shard::{hash_name, range_of_hash, RangeCount, RangeSet};

/// The label.
pub const BUCKET_LABEL: &str = "core.clawcloud.run/bucket";

/// Number of buckets: fixed forever (values are written to objects).
pub const BUCKETS: u32 = 256;

/// The bucket of a namespace name: the top 8 bits of its hash.
pub fn bucket_of(name: &str) -> u32 {
    (hash_name(name) >> 56) as u32
}

/// The label value of a name's bucket.
pub fn bucket_value(name: &str) -> String {
    bucket_of(name).to_string()
}

/// Buckets that hold a hash of at least one of `owned` ranges, ascending.
pub fn buckets_overlapping(owned: &RangeSet, count: RangeCount) -> Vec<u32> {
    (0..BUCKETS)
        .filter(|&b| {
            let first = u64::from(b) << 56;
            let last = first | ((1u64 << 56) - 1);
            (range_of_hash(first, count)..=range_of_hash(last, count)).any(|r| owned.contains(r))
        })
        .collect()
}

/// The label selector of the owned-buckets watch: `exists` when every bucket is owned.
pub fn owned_selector(owned: &RangeSet, count: RangeCount) -> String {
    let buckets = buckets_overlapping(owned, count);
    if buckets.len() == BUCKETS as usize {
        return BUCKET_LABEL.to_string();
    }
    if buckets.is_empty() {
        // Matches nothing (no bucket has this value), yet is a valid selector.
        return format!("{BUCKET_LABEL} in (none)");
    }
    let values: Vec<String> = buckets.iter().map(u32::to_string).collect();
    format!("{BUCKET_LABEL} in ({})", values.join(","))
}

/// The label selector of the watch over namespaces without a bucket yet.
pub fn unbucketed_selector() -> String {
    format!("{},!{BUCKET_LABEL}", crate::api::STATUS_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: u32) -> RangeCount {
        RangeCount::new(n).expect("count")
    }

    #[test]
    fn every_name_of_an_owned_range_is_in_a_selected_bucket() {
        let c = count(96); // not a power of two: buckets straddle ranges
        let mut owned = RangeSet::new(c);
        for r in [0, 5, 6, 50, 95] {
            owned.insert(r);
        }
        let buckets = buckets_overlapping(&owned, c);
        for i in 0..20_000 {
            let name = format!("ns-{i}");
            if owned.contains(c.range_of(&name)) {
                assert!(buckets.contains(&bucket_of(&name)), "{name}");
            }
        }
        // And far fewer than all buckets.
        assert!(buckets.len() < 30, "{}", buckets.len());
    }

    #[test]
    fn selectors() {
        let c = count(4);
        assert_eq!(owned_selector(&RangeSet::full(c), c), BUCKET_LABEL);
        assert_eq!(
            owned_selector(&RangeSet::new(c), c),
            "core.clawcloud.run/bucket in (none)"
        );
        let mut first = RangeSet::new(c);
        first.insert(0);
        let s = owned_selector(&first, c);
        assert!(s.starts_with("core.clawcloud.run/bucket in (0,1,2,"), "{s}");
        assert!(s.ends_with(",63)"), "{s}");
        assert_eq!(
            unbucketed_selector(),
            "clawcloud.run/status,!core.clawcloud.run/bucket"
        );
    }

    #[test]
    fn bucket_values_are_stable() {
        // Written to objects: must never change between versions.
        assert_eq!(bucket_of("team-a"), (hash_name("team-a") >> 56) as u32);
        assert!(bucket_of("x") < BUCKETS);
        assert_eq!(bucket_value("team-a"), bucket_of("team-a").to_string());
    }
}
