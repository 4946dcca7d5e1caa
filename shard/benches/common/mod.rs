//! Seeded, realistic namespace names for the benches.
#![allow(dead_code)] // each bench uses a different part

use std::collections::HashSet;
use std::time::Instant;

/// xorshift64*: seeded, so every run benches the same names.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn hex(&mut self, digits: usize) -> String {
        let v = self.next();
        format!("{v:016x}")[..digits].to_string()
    }
}

const WORDS: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "payments", "search", "api", "web", "data", "ml", "infra",
    "billing", "auth", "edge", "batch", "kafka", "redis", "etl", "ui", "core",
];
const ENVS: &[&str] = &["dev", "test", "staging", "prod", "qa", "sandbox"];

/// One name of 8 to 40 bytes, in one of the shapes real clusters show.
pub fn realistic_name(rng: &mut Rng) -> String {
    let name = match rng.below(8) {
        0 => format!("ns-user-{}", rng.hex(8)),
        1 => format!(
            "team-{}-{}-{}-{}",
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.pick(ENVS),
            rng.below(100)
        ),
        2 => format!("ci-run-{}-{}", 100_000 + rng.below(900_000), rng.hex(4)),
        3 => format!("tenant-{}", rng.hex(12)),
        4 => format!("{}-{}-{}", rng.pick(WORDS), rng.pick(ENVS), rng.pick(WORDS)),
        5 => format!("{}-{}-{}", rng.pick(WORDS), rng.pick(WORDS), rng.hex(8)),
        6 => format!(
            "pr-{}-{}-{}",
            rng.below(10_000),
            rng.pick(WORDS),
            rng.pick(ENVS)
        ),
        _ => format!(
            "{}-{}-{}-{}-{}",
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.pick(ENVS),
            rng.hex(8)
        ),
    };
    let mut name = name;
    while name.len() < 8 {
        name.push('x');
    }
    name.truncate(40);
    name
}

/// `n` distinct realistic names from `seed`.
pub fn names(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let name = realistic_name(&mut rng);
        if seen.insert(name.clone()) {
            out.push(name);
        }
    }
    out
}

pub fn mean_len(names: &[String]) -> f64 {
    names.iter().map(String::len).sum::<usize>() as f64 / names.len() as f64
}

/// Median of `rounds` timings of `f`, in seconds.
pub fn median_secs(rounds: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[rounds / 2]
}

/// Whether the binary runs as a real bench (`cargo bench`), not as a smoke test.
pub fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Names packed into one buffer, in the order a bench uses them: the stand-in for names
/// just decoded from watch events, which are hot in cache when the index or the filter
/// sees them. (100k separate `String`s scattered over the heap would make every bench
/// mostly measure cache misses on its own input.)
pub struct Packed {
    text: String,
    ends: Vec<u32>,
}

impl Packed {
    pub fn new<S: AsRef<str>>(names: &[S]) -> Packed {
        let mut text = String::with_capacity(names.iter().map(|n| n.as_ref().len()).sum());
        let mut ends = Vec::with_capacity(names.len());
        for name in names {
            text.push_str(name.as_ref());
            ends.push(text.len() as u32);
        }
        Packed { text, ends }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let name = &self.text[start..end as usize];
            start = end as usize;
            name
        })
    }

    /// The names as slices of the buffer: the cheapest thing for a bench loop to walk.
    pub fn slices(&self) -> Vec<&str> {
        self.iter().collect()
    }

    pub fn mean_len(&self) -> f64 {
        self.text.len() as f64 / self.ends.len() as f64
    }
}

/// Median and best of a set of rates, in M elements/s.
pub struct Rate {
    pub median: f64,
    pub best: f64,
}

impl Rate {
    /// From per-round durations in seconds for `elements` elements each.
    pub fn from_secs(elements: usize, mut secs: Vec<f64>) -> Rate {
        secs.sort_by(f64::total_cmp);
        Rate {
            median: elements as f64 / secs[secs.len() / 2] / 1e6,
            best: elements as f64 / secs[0] / 1e6,
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} M/s (best round {:.1})", self.median, self.best)
    }
}
