//! EventFilter checks/s over 100k realistic names, against a bare xxh3 loop
//! (`xxhash_rust::xxh3::xxh3_64`, which `shard::hash_name` is) over the same names in the
//! same run. Names come from one packed buffer (see `common::Packed`): a name checked
//! by the filter has just been decoded from a watch event and is hot in cache.
//!
//! Both loops are the same function, [`sum_over`], monomorphized for each per-name
//! function: the same `black_box` on each name, the same accumulation of a `u64`, so the
//! only difference is the per-name work (the hash alone, or the hash and the check).
//!
//! Seed report (original): 37.4 M checks/s. Target: ≥ 120 M/s, and ≥ 80% of bare xxh3.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::Packed;
use criterion::{Criterion, Throughput};
use shard::{Assignment, EventFilter, RangeCount};
use xxhash_rust::xxh3::xxh3_64;

const N: usize = 100_000;

/// The one loop both figures run: `f` on every name (hidden from the optimizer by
/// `black_box`), results summed so none is dropped.
#[inline(never)]
fn sum_over(names: &[&str], f: impl Fn(&str) -> u64) -> u64 {
    let mut acc = 0u64;
    for name in names {
        acc = acc.wrapping_add(f(black_box(name)));
    }
    acc
}

fn bare(names: &[&str]) -> u64 {
    sum_over(names, |name| xxh3_64(name.as_bytes()))
}

fn filtered(filter: &EventFilter, names: &[&str]) -> u64 {
    sum_over(names, |name| u64::from(filter.contains(name)))
}

fn main() {
    let packed = Packed::new(&common::names(N, 0x5eed_f11e));
    let names = packed.slices();
    let count = RangeCount::new(256).expect("256 is a valid range count");
    // A realistic shard: replica 0 of 3.
    let assignment = Assignment::balanced(
        count,
        &[
            "block-controller-0",
            "block-controller-1",
            "block-controller-2",
        ],
    )
    .expect("non-empty member names");
    let filter = EventFilter::new(&assignment.ranges_of("block-controller-0"));

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();
    let mut group = c.benchmark_group("event_filter_100k");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("bare_xxh3", |b| b.iter(|| bare(&names)));
    group.bench_function("filter_contains", |b| b.iter(|| filtered(&filter, &names)));
    group.finish();
    c.final_summary();

    if common::benching() {
        // Interleaved rounds, so both loops see the same machine noise.
        let mut bare_t = Vec::new();
        let mut filter_t = Vec::new();
        for _ in 0..15 {
            bare_t.push(common::median_secs(5, || {
                black_box(bare(&names));
            }));
            filter_t.push(common::median_secs(5, || {
                black_box(filtered(&filter, &names));
            }));
        }
        let bare_rate = common::Rate::from_secs(N, bare_t);
        let filter_rate = common::Rate::from_secs(N, filter_t);
        println!(
            "\nFIGURE event_filter (seed report: 37.4 M/s; target >= 120 M/s and >= 80% of bare xxh3): \
             filter {filter_rate}; bare xxh3 {bare_rate}; filter/bare {:.0}% (best rounds {:.0}%); \
             {N} names, mean {:.1} bytes, owned {} of {} ranges",
            100.0 * filter_rate.median / bare_rate.median,
            100.0 * filter_rate.best / bare_rate.best,
            packed.mean_len(),
            filter.ranges().len(),
            count.get(),
        );
    }
}
