//! NamespaceIndex inserts/s and deletes/s at 100k entries.
//!
//! Seed report (original): 24 k inserts/s, 228 k deletes/s. Target: ≥ 10 M/s each.
//!
//! Inserts are measured two ways: into an index that already holds 100k entries (the
//! steady state "at 100k entries"; its capacity was reserved, so no table rebuild falls
//! in the measured window), and building 100k from empty, every table rebuild and arena
//! growth included.
//!
//! Deletes remove all 100k entries by name, hashing included (arena compactions, chunk
//! frees and table shrinking included), one `remove` call per name, in two orders:
//! insertion order (namespaces deleted in about the order they were created: the
//! index's slots and names are then read in sequence, only the table is read at random)
//! and a seeded shuffle (every lookup reads the table, the slot and the name at random:
//! three dependent cache misses). The same two orders through `remove_many`, which
//! overlaps the misses of 16 names at a time. And the handover path, which walks the
//! lists of the ranges given away instead of looking names up: `remove_range` for each
//! of the 256 ranges in turn (one call per range, all 100k entries), and
//! `remove_ranges`, the engine's call, in one call for every third range (86 of 256,
//! about a third of the entries: what a replica gives away when it hands a third of
//! its ranges over) and for all 256 ranges.
//!
//! Names passed to the index come from one packed buffer in the order they are used
//! (see `common::Packed`), as names just decoded from watch events would be hot in
//! cache.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{Packed, Rate};
use criterion::{BatchSize, Criterion, Throughput};
use shard::{NamespaceIndex, RangeCount, RangeSet, Status};

const N: usize = 100_000;
const MORE: usize = 20_000;

fn insert_all(index: &mut NamespaceIndex, names: &Packed) {
    for name in names.iter() {
        index
            .upsert(name, Status::Locked, None)
            .expect("bench names are valid");
    }
}

fn insert_many(index: &mut NamespaceIndex, names: &Packed) {
    index
        .upsert_many(names.iter().map(|n| (n, Status::Locked, None)))
        .expect("bench names are valid");
}

/// `index` after `insert` of `names` (handed back, so that its drop is not timed).
fn inserted(
    mut index: NamespaceIndex,
    names: &Packed,
    insert: fn(&mut NamespaceIndex, &Packed),
) -> NamespaceIndex {
    insert(&mut index, names);
    index
}

fn build(count: RangeCount, names: &Packed) -> NamespaceIndex {
    let mut index = NamespaceIndex::new(count);
    insert_all(&mut index, names);
    index
}

fn delete_all(mut index: NamespaceIndex, names: &Packed) -> NamespaceIndex {
    for name in names.iter() {
        black_box(index.remove(name));
    }
    index
}

fn delete_many(mut index: NamespaceIndex, names: &Packed) -> NamespaceIndex {
    index.remove_many(names.iter());
    index
}

/// Handover with the engine's call: `remove_ranges` of `ranges` in one call; returns the
/// index and how many entries it removed.
fn delete_set(mut index: NamespaceIndex, ranges: &RangeSet) -> (NamespaceIndex, usize) {
    let removed = index.remove_ranges(ranges);
    (index, removed)
}

/// Every third range (0, 3, 6, ...): 86 of 256.
fn every_third(count: RangeCount) -> RangeSet {
    let mut set = RangeSet::new(count);
    for r in (0..count.get()).step_by(3) {
        set.insert(r);
    }
    set
}

/// Handover of everything: every range removed by `remove_range`, one call per range.
fn delete_ranges(mut index: NamespaceIndex) -> NamespaceIndex {
    let mut removed = 0;
    for range in 0..index.range_count().get() {
        removed += index.remove_range(range);
    }
    assert_eq!(removed, N, "every entry is in one range");
    index
}

/// Seconds of one run of `routine` on fresh `setup` output (setup and drop untimed).
fn time_once<S, O>(setup: impl Fn() -> S, routine: impl Fn(S) -> O) -> f64 {
    let input = setup();
    let start = Instant::now();
    let out = routine(input);
    let secs = start.elapsed().as_secs_f64();
    drop(black_box(out));
    secs
}

/// A timed run of `routine` on a clone of `index` (the clone and the drop untimed: the
/// routine hands the index back).
fn on_clone<'a, O: 'a>(
    index: &'a NamespaceIndex,
    routine: impl Fn(NamespaceIndex) -> O + 'a,
) -> Box<dyn Fn() -> f64 + 'a> {
    Box::new(move || time_once(|| index.clone(), &routine))
}

/// One FIGURE measurement: elements per run, and one timed run.
type Figure<'a> = (usize, Box<dyn Fn() -> f64 + 'a>);

/// Rates of `figures` over `rounds` rounds, interleaved (every round runs each figure
/// once), so that all figures see the same machine noise.
fn interleaved(rounds: usize, figures: &[Figure<'_>]) -> Vec<Rate> {
    let mut secs = vec![Vec::with_capacity(rounds); figures.len()];
    for _ in 0..rounds {
        for ((_, run), secs) in figures.iter().zip(&mut secs) {
            secs.push(run());
        }
    }
    figures
        .iter()
        .zip(secs)
        .map(|((elements, _), secs)| Rate::from_secs(*elements, secs))
        .collect()
}

fn main() {
    let names = common::names(N + MORE, 0x1de8);
    let (base_names, more_names) = names.split_at(N);
    let mut rng = common::Rng::new(7);
    let mut shuffled = base_names.to_vec();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let base_names = Packed::new(base_names);
    let more_names = Packed::new(more_names);
    let shuffled = Packed::new(&shuffled);
    drop(names);
    let count = RangeCount::new(256).expect("256 is a valid range count");

    let full = build(count, &base_names);
    let mut at_100k = NamespaceIndex::with_capacity(count, N + MORE);
    insert_all(&mut at_100k, &base_names);

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();
    let mut group = c.benchmark_group("namespace_index");
    group.throughput(Throughput::Elements(MORE as u64));
    group.bench_function("insert_20k_into_100k", |b| {
        b.iter_batched(
            || at_100k.clone(),
            |index| inserted(index, &more_names, insert_all),
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("build_100k_from_empty", |b| {
        b.iter_with_large_drop(|| build(count, &base_names))
    });
    group.bench_function("delete_100k_insertion_order", |b| {
        b.iter_batched(
            || full.clone(),
            |index| delete_all(index, &base_names),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("delete_100k_shuffled", |b| {
        b.iter_batched(
            || full.clone(),
            |index| delete_all(index, &shuffled),
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(MORE as u64));
    group.bench_function("upsert_many_20k_into_100k", |b| {
        b.iter_batched(
            || at_100k.clone(),
            |index| inserted(index, &more_names, insert_many),
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("remove_many_100k_insertion_order", |b| {
        b.iter_batched(
            || full.clone(),
            |index| delete_many(index, &base_names),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("remove_range_all_256_ranges", |b| {
        b.iter_batched(|| full.clone(), delete_ranges, BatchSize::LargeInput)
    });
    group.bench_function("lookup_100k_shuffled", |b| {
        b.iter(|| shuffled.iter().filter(|n| full.get(n).is_some()).count())
    });
    group.finish();
    c.final_summary();

    if common::benching() {
        let third = every_third(count);
        let third_entries = delete_set(full.clone(), &third).1;
        let all = RangeSet::full(count);
        let figures: Vec<Figure<'_>> = vec![
            (
                MORE,
                on_clone(&at_100k, |i| inserted(i, &more_names, insert_all)),
            ),
            (
                MORE,
                on_clone(&at_100k, |i| inserted(i, &more_names, insert_many)),
            ),
            (
                N,
                Box::new(|| time_once(|| (), |()| build(count, &base_names))),
            ),
            (N, on_clone(&full, |i| delete_all(i, &base_names))),
            (N, on_clone(&full, |i| delete_all(i, &shuffled))),
            (N, on_clone(&full, |i| delete_many(i, &base_names))),
            (N, on_clone(&full, |i| delete_many(i, &shuffled))),
            (N, on_clone(&full, delete_ranges)),
            (third_entries, on_clone(&full, |i| delete_set(i, &third))),
            (N, on_clone(&full, |i| delete_set(i, &all))),
        ];
        let rates = interleaved(15, &figures);
        let [insert, insert_batched, build_rate, delete, delete_shuffled, many, many_shuffled, handover, set_third, set_all] =
            &rates[..]
        else {
            unreachable!("one rate per figure")
        };
        println!(
            "\nFIGURE index_insert (seed report: 24 k/s; target >= 10 M): \
             into an index of 100k {insert}; with upsert_many {insert_batched}; \
             building 100k from empty, growth included, {build_rate}"
        );
        println!(
            "FIGURE index_delete (seed report: 228 k/s; target >= 10 M): removing 100k \
             by name, one call each, in insertion order {delete}; shuffled {delete_shuffled}; \
             with remove_many in insertion order {many}; shuffled {many_shuffled}; \
             handover, remove_range for each of the 256 ranges {handover}; \
             remove_ranges in one call, every third range ({third_entries} entries) {set_third}, \
             all ranges {set_all}"
        );
    }
}
