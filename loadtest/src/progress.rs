//! Progress bars (indicatif) that also print a line every few seconds when stderr is not a
//! terminal (a run under `nohup` keeps a readable log).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A counted task with a bar.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    what: String,
    last: Arc<Mutex<Instant>>,
    tty: bool,
}

impl Progress {
    /// A bar of `len` steps named `what`.
    pub fn new(len: u64, what: &str) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            ProgressBar::new(len)
        } else {
            ProgressBar::hidden()
        };
        bar.set_length(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>28} [{bar:40}] {pos}/{len} {per_sec} eta {eta} elapsed {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        Progress {
            bar,
            what: what.to_string(),
            last: Arc::new(Mutex::new(Instant::now())),
            tty,
        }
    }

    /// One more step done.
    pub fn inc(&self) {
        self.bar.inc(1);
        self.maybe_print();
    }

    /// Sets the position.
    pub fn set(&self, pos: u64) {
        self.bar.set_position(pos);
        self.maybe_print();
    }

    fn maybe_print(&self) {
        if self.tty {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= Duration::from_secs(10) {
            *last = Instant::now();
            eprintln!(
                "  {}: {}/{} ({:.0}/s)",
                self.what,
                self.bar.position(),
                self.bar.length().unwrap_or(0),
                self.bar.per_sec()
            );
        }
    }

    /// Done: the bar stays with its final count.
    pub fn finish(&self) {
        self.bar.finish();
        if !self.tty {
            eprintln!(
                "  {}: {}/{} in {:.1} s",
                self.what,
                self.bar.position(),
                self.bar.length().unwrap_or(0),
                self.bar.elapsed().as_secs_f64()
            );
        }
    }
}
