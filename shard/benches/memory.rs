//! Bytes per namespace of a NamespaceIndex at 100k and 1M entries, every entry with a
//! pending deadline, counted by a counting global allocator (everything included: name
//! arena, slots, table, expiry queue).
//!
//! Seed report (original): 64 bytes per namespace, names cut to 32 bytes. Target: ≤ 48.

mod common;

use std::alloc::System;
use std::hint::black_box;

use cap::Cap;
use shard::{Deadline, NamespaceIndex, RangeCount, Status};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

fn main() {
    let count = RangeCount::new(256).expect("256 is a valid range count");
    for n in [100_000usize, 1_000_000] {
        let names = common::names(n, 0xa11c + n as u64);
        let before = ALLOCATOR.allocated();
        let mut index = NamespaceIndex::new(count);
        for (i, name) in names.iter().enumerate() {
            let deadline = Deadline::from_unix_secs(1_700_000_000 + (i as i64 % 86_400))
                .expect("deadline in range");
            index
                .upsert(name, Status::Locked, Some(deadline))
                .expect("bench names are valid");
        }
        let used = ALLOCATOR.allocated() - before;
        println!(
            "FIGURE memory_{n}: {:.1} bytes/namespace (allocator), {:.1} by capacity; \
             names mean {:.1} bytes, all {} scheduled (seed report: 64 with names cut to 32 B; target <= 48)",
            used as f64 / n as f64,
            index.memory_bytes() as f64 / n as f64,
            common::mean_len(&names),
            index.scheduled(),
        );
        println!("  {:?}", per_namespace(&index));

        // Churn: replace a third of the namespaces, as days of lock/unlock/delete would.
        let fresh = common::names(n / 3, 0xc4a2 + n as u64);
        for name in names.iter().take(n / 3) {
            index.remove(name);
        }
        for name in &fresh {
            index
                .upsert(name, Status::Locked, Some(Deadline::MAX))
                .expect("bench names are valid");
        }
        let after = ALLOCATOR.allocated()
            - before
            - fresh.capacity() * 24
            - fresh.iter().map(String::capacity).sum::<usize>();
        println!(
            "  after replacing a third: {:.1} bytes/namespace (allocator), {:.1} by capacity, {} entries",
            after as f64 / index.len() as f64,
            index.memory_bytes() as f64 / index.len() as f64,
            index.len()
        );
        println!("  {:?}", per_namespace(&index));
        black_box(&index);
    }
}

/// The index's own accounting, per namespace, part by part.
fn per_namespace(index: &NamespaceIndex) -> [(&'static str, f64); 5] {
    let m = index.memory();
    let n = index.len() as f64;
    [
        ("arena", m.arena as f64 / n),
        ("of which garbage", m.garbage as f64 / n),
        ("slots", m.slots as f64 / n),
        ("table", m.table as f64 / n),
        ("expiry", m.expiry as f64 / n),
    ]
}
