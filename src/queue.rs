//! The namespace work queue: deduplicated per namespace, never handed to two workers at once,
//! bounded (intake waits when full), with exponential backoff and jitter for retries.
//!
//! Semantics follow client-go's workqueue: a name added while queued is merged into the queued
//! item; a name added while a worker holds it is parked as "dirty" and queued again when that
//! worker finishes, so the newest state is always processed and never concurrently.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::state::NamespaceView;

/// What a worker should do with a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Decide from this (newest) view and act.
    Reconcile(Box<NamespaceView>),
    /// Its deadline passed: re-read it and expire it if still due.
    Expire,
    /// It left the watch's selector (label removed, or deleted): re-read and unlock if needed.
    Check,
    /// Emit the expiry warning.
    Warn,
}

/// A queued namespace.
#[derive(Clone, Debug)]
pub struct Item {
    /// The namespace.
    pub name: String,
    /// The work.
    pub work: Work,
    /// When the oldest event merged into this item arrived (event-to-done latency).
    pub since: Instant,
    /// Failed attempts so far.
    pub attempts: u32,
}

#[derive(Default)]
struct State {
    order: VecDeque<String>,
    queued: HashMap<String, Item>,
    active: HashMap<String, Option<Item>>,
    closed: bool,
}

/// The queue; cheap to clone.
#[derive(Clone)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    ready: Arc<Notify>,
    space: Arc<Notify>,
    capacity: usize,
}

/// Merges new work into queued work: the newest event wins, except that a timer's `Expire` or
/// `Warn` never replaces a `Reconcile`, which re-decides (and expires if due) from the newest view.
fn merge(old: &Work, new: Work) -> Work {
    match (old, new) {
        (Work::Reconcile(v), Work::Expire | Work::Warn) => Work::Reconcile(v.clone()),
        (Work::Check, Work::Expire | Work::Warn) => Work::Check,
        (_, new) => new,
    }
}

impl WorkQueue {
    /// A queue holding at most `capacity` distinct namespaces.
    pub fn new(capacity: usize) -> WorkQueue {
        WorkQueue {
            state: Arc::new(Mutex::new(State::default())),
            ready: Arc::new(Notify::new()),
            space: Arc::new(Notify::new()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds work, waiting while the queue is full (backpressure on intake).
    pub async fn add(&self, name: &str, work: Work) {
        let mut work = Some(work);
        loop {
            let notified = self.space.notified();
            if let Some(w) = work.take() {
                match self.try_add(name, w, Instant::now(), 0) {
                    Ok(()) => return,
                    Err(w) => work = Some(w),
                }
            }
            notified.await;
        }
    }

    /// Adds work unless the queue is full (then returns it). Merging into an already queued or
    /// active name always succeeds.
    pub fn try_add(
        &self,
        name: &str,
        work: Work,
        since: Instant,
        attempts: u32,
    ) -> Result<(), Work> {
        let mut s = self.lock();
        if s.closed {
            return Ok(());
        }
        if let Some(slot) = s.active.get_mut(name) {
            let item = match slot.take() {
                Some(mut parked) => {
                    parked.work = merge(&parked.work, work);
                    parked.since = parked.since.min(since);
                    parked
                }
                None => Item {
                    name: name.to_string(),
                    work,
                    since,
                    attempts,
                },
            };
            *slot = Some(item);
            return Ok(());
        }
        if let Some(item) = s.queued.get_mut(name) {
            item.work = merge(&item.work, work);
            item.since = item.since.min(since);
            return Ok(());
        }
        if s.queued.len() >= self.capacity {
            return Err(work);
        }
        s.queued.insert(
            name.to_string(),
            Item {
                name: name.to_string(),
                work,
                since,
                attempts,
            },
        );
        s.order.push_back(name.to_string());
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the next item, waiting for one; `None` once the queue is shut down.
    pub async fn next(&self) -> Option<Item> {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if s.closed {
                    return None;
                }
                while let Some(name) = s.order.pop_front() {
                    if let Some(item) = s.queued.remove(&name) {
                        s.active.insert(name, None);
                        drop(s);
                        self.space.notify_one();
                        // More may be waiting: pass the wake-up on.
                        self.ready.notify_one();
                        return Some(item);
                    }
                }
            }
            notified.await;
        }
    }

    /// A worker finished `name`. Work that arrived meanwhile is queued again; with `retry`, the
    /// item comes back after a backoff unless newer work superseded it.
    pub fn done(&self, item: &Item, retry: Option<Duration>) {
        let parked = {
            let mut s = self.lock();
            s.active.remove(&item.name).flatten()
        };
        if let Some(parked) = parked {
            let _ = self.try_add(&parked.name, parked.work, parked.since, 0);
            return;
        }
        if let Some(delay) = retry {
            let q = self.clone();
            let item = item.clone();
            // A retry reads the namespace afresh: the view it failed with may be stale (our own
            // earlier write moved its resourceVersion), and a write carrying that version would
            // conflict on every retry.
            let work = match &item.work {
                Work::Reconcile(_) => Work::Check,
                other => other.clone(),
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                // Full queue: the retry waits its turn like any intake.
                if let Err(work) = q.try_add(&item.name, work, item.since, item.attempts + 1) {
                    q.add(&item.name, work).await;
                }
            });
        }
    }

    /// Drops queued work for names `keep` rejects (ranges handed over); active ones finish.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> usize {
        let mut s = self.lock();
        let before = s.queued.len();
        s.queued.retain(|name, _| keep(name));
        let State { order, queued, .. } = &mut *s;
        order.retain(|n| queued.contains_key(n));
        before - s.queued.len()
    }

    /// Names a worker holds right now.
    pub fn active_names(&self) -> Vec<String> {
        self.lock().active.keys().cloned().collect()
    }

    /// Names queued or being worked on.
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.queued.len() + s.active.len()
    }

    /// True when nothing is queued or active.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `name` is queued or being worked on.
    pub fn contains(&self, name: &str) -> bool {
        let s = self.lock();
        s.queued.contains_key(name) || s.active.contains_key(name)
    }

    /// Stops handing out work; `next` returns `None` from now on.
    pub fn shutdown(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
        self.space.notify_waiters();
    }
}

/// Exponential backoff with jitter: `base * 2^attempt`, capped at `max`, then scaled by a random
/// factor in [0.5, 1.5) so that many namespaces failing together do not retry in lockstep.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20));
    let capped = exp.min(max);
    let jitter = 0.5 + rand::random::<f64>();
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, label: &str) -> NamespaceView {
        NamespaceView {
            name: name.into(),
            label: Some(label.into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn deduplicates_queued_work_keeping_the_newest_view() {
        let q = WorkQueue::new(10);
        q.add("a", Work::Reconcile(Box::new(view("a", "locked"))))
            .await;
        q.add("a", Work::Reconcile(Box::new(view("a", "active"))))
            .await;
        q.add("b", Work::Check).await;
        assert_eq!(q.len(), 2);
        let first = q.next().await.expect("item");
        assert_eq!(first.name, "a");
        assert_eq!(first.work, Work::Reconcile(Box::new(view("a", "active"))));
    }

    #[tokio::test]
    async fn never_hands_one_name_to_two_workers() {
        let q = WorkQueue::new(10);
        q.add("a", Work::Reconcile(Box::new(view("a", "locked"))))
            .await;
        let held = q.next().await.expect("item");
        // New work for the held name is parked, not handed out.
        q.add("a", Work::Reconcile(Box::new(view("a", "active"))))
            .await;
        q.add("b", Work::Check).await;
        let other = q.next().await.expect("item");
        assert_eq!(other.name, "b");
        assert!(tokio::time::timeout(Duration::from_millis(20), q.next())
            .await
            .is_err());
        // Once the worker is done, the parked work comes back with the newest view.
        q.done(&held, None);
        let again = q.next().await.expect("item");
        assert_eq!(again.work, Work::Reconcile(Box::new(view("a", "active"))));
    }

    #[tokio::test]
    async fn timer_work_does_not_replace_a_reconcile() {
        let q = WorkQueue::new(10);
        q.add("a", Work::Reconcile(Box::new(view("a", "locked"))))
            .await;
        q.add("a", Work::Expire).await;
        assert_eq!(
            q.next().await.expect("item").work,
            Work::Reconcile(Box::new(view("a", "locked")))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_come_back_after_the_backoff() {
        let q = WorkQueue::new(10);
        q.add("a", Work::Expire).await;
        let item = q.next().await.expect("item");
        q.done(&item, Some(Duration::from_secs(5)));
        assert!(tokio::time::timeout(Duration::from_secs(4), q.next())
            .await
            .is_err());
        let again = tokio::time::timeout(Duration::from_secs(2), q.next())
            .await
            .expect("retried")
            .expect("item");
        assert_eq!(again.attempts, 1);
    }

    #[tokio::test]
    async fn full_queue_applies_backpressure() {
        let q = WorkQueue::new(2);
        q.add("a", Work::Check).await;
        q.add("b", Work::Check).await;
        assert!(q.try_add("c", Work::Check, Instant::now(), 0).is_err());
        // Merging into a queued name still works when full.
        assert!(q.try_add("a", Work::Expire, Instant::now(), 0).is_ok());
        let q2 = q.clone();
        let adder = tokio::spawn(async move { q2.add("c", Work::Check).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!adder.is_finished(), "intake waits while full");
        let a = q.next().await.expect("item");
        adder.await.expect("intake resumes once there is space");
        assert!(q.contains("c"));
        q.done(&a, None);
    }

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        for attempt in 0..30 {
            let d = backoff(attempt, base, max);
            let nominal = base.saturating_mul(1 << attempt.min(20)).min(max);
            assert!(
                d >= nominal.mul_f64(0.5) && d < nominal.mul_f64(1.5),
                "{attempt}: {d:?}"
            );
        }
    }
}
