//! The namespace engine: a label-selected metadata watch feeds the work queue; workers run the
//! flows; a timer turns deadlines from the index into expiry work. No store of Namespace objects:
//! per namespace only the compact [`shard::NamespaceIndex`] entry of an owned range.
//!
//! ```text
//!   watches (metadata only, paginated, bookmarks; see crate::bucket):
//!     bucket in (owned buckets)  +  status label, no bucket yet
//!     │  EventFilter: owned range?            ┌──────────── timer (next deadline) ──┐
//!     ▼                                       ▼                                     │
//!   decide(view) ──(work)──► WorkQueue ──► workers (≤ --max-concurrent-reconciles)  │
//!     │ (no work: locked & complete)             │ lock / unlock / expire flows      │
//!     └──────────────► NamespaceIndex ◄──────────┘  status + deadline ───────────────┘
//! ```
//!
//! Which ranges this replica owns is given from outside ([`Engine::set_owned`]): all of them
//! for a single replica, the Lease-claimed ones once sharding runs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use shard::{Deadline, EventFilter, ExpiryQueue, NamespaceIndex, RangeCount, RangeSet, Status};
use tokio::sync::Notify;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::bucket;
use crate::context::Context;
use crate::flows::{self, FlowError, Outcome};
use crate::queue::{backoff, Item, Work, WorkQueue};
use crate::state::{self, Decision, NamespaceView};

/// Per-replica state of the owned ranges.
struct Shard {
    filter: EventFilter,
    index: NamespaceIndex,
    /// Expiry-warning times, keyed by index entry id.
    warnings: ExpiryQueue,
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    ctx: Context,
    queue: WorkQueue,
    shard: Arc<Mutex<Shard>>,
    timer: Arc<Notify>,
    synced: Arc<AtomicBool>,
    /// resourceVersion of each lock's last write, kept until the watch shows it: a view older
    /// than it is from between our own writes and needs no new pass.
    recent_locks: Arc<Mutex<std::collections::HashMap<String, u64>>>,
    /// Asks the watch to list again (ranges were gained: their namespaces must be indexed).
    relist: Arc<Notify>,
    /// Namespaces our flows are bucketing: their leaving the unbucketed watch is expected.
    bucketing: Arc<Mutex<HashSet<String>>>,
}

type WatchStream = futures::stream::BoxStream<
    'static,
    Result<Event<PartialObjectMeta<Namespace>>, watcher::Error>,
>;

/// Most entries in `recent_locks`; past it the map is cleared (costing at worst a redundant,
/// idempotent pass), so it cannot grow without bound if watch events are lost.
const RECENT_LOCKS_MAX: usize = 10_000;

/// Current time in Unix seconds (the replica's clock; expiry re-checks with the server's).
fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Engine {
    /// An engine owning `owned` out of `ranges`.
    pub fn new(ctx: Context, ranges: RangeCount, owned: &RangeSet) -> Engine {
        let queue = WorkQueue::new(ctx.cfg.max_queued);
        ctx.metrics.set_owned_ranges(owned.len() as usize);
        Engine {
            ctx,
            queue,
            shard: Arc::new(Mutex::new(Shard {
                filter: EventFilter::new(owned),
                index: NamespaceIndex::new(ranges),
                warnings: ExpiryQueue::new(),
            })),
            timer: Arc::new(Notify::new()),
            synced: Arc::new(AtomicBool::new(false)),
            recent_locks: Arc::default(),
            relist: Arc::new(Notify::new()),
            bucketing: Arc::default(),
        }
    }

    fn lock_set<'a>(
        &self,
        set: &'a Mutex<HashSet<String>>,
    ) -> std::sync::MutexGuard<'a, HashSet<String>> {
        set.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shard(&self) -> std::sync::MutexGuard<'_, Shard> {
        self.shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the initial list of the watch completed (readiness).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Whether `name` falls in an owned range.
    pub fn owns(&self, name: &str) -> bool {
        self.shard().filter.contains(name)
    }

    /// The ranges owned now.
    pub fn owned(&self) -> RangeSet {
        self.shard().filter.ranges().clone()
    }

    /// Adds ranges (acquired): their namespaces are listed again and indexed.
    pub fn gain(&self, ranges: &RangeSet) {
        let mut owned = self.owned();
        for r in ranges.iter() {
            owned.insert(r);
        }
        self.set_owned(&owned);
        self.synced.store(false, Ordering::Relaxed);
        self.relist.notify_one();
    }

    /// Removes ranges (draining or lost): intake stops at once; queued work is dropped. When
    /// the owned buckets shrink, the watches restart with the narrower selector (one list of
    /// what stays ours), so the API server stops sending events of the ranges given away.
    pub fn shed(&self, ranges: &RangeSet) {
        let mut owned = self.owned();
        let count = self.shard().index.range_count();
        let before = bucket::owned_selector(&owned, count);
        for r in ranges.iter() {
            owned.remove(r);
        }
        self.set_owned(&owned);
        if bucket::owned_selector(&owned, count) != before {
            self.relist.notify_one();
        }
    }

    /// Whether a worker is still busy with a namespace of `ranges`.
    pub fn busy_in(&self, ranges: &RangeSet) -> bool {
        let count = self.shard().index.range_count();
        self.queue
            .active_names()
            .iter()
            .any(|n| ranges.contains(shard::range_of(n, count)))
    }

    /// Changes the owned ranges: entries and queued work of ranges given away are dropped at once
    /// (work in flight finishes); gained ranges fill in from the next relist.
    pub fn set_owned(&self, owned: &RangeSet) {
        let dropped = {
            let mut s = self.shard();
            s.filter = EventFilter::new(owned);
            let gone: RangeSet = {
                let mut all = RangeSet::full(s.index.range_count());
                for r in owned.iter() {
                    all.remove(r);
                }
                all
            };
            let dropped = s.index.remove_ranges(&gone);
            // Warning keys are entry ids, which dropped entries free for reuse: rebuild them
            // from the entries that stay (a handover is rare; O(n log n) is fine here).
            let Shard {
                index, warnings, ..
            } = &mut *s;
            warnings.clear();
            for e in index.iter() {
                if let Some(at) = e.deadline.and_then(|d| self.warning_at(d)) {
                    warnings.schedule(e.id.index(), at);
                }
            }
            dropped
        };
        let filter = EventFilter::new(owned);
        let unqueued = self.queue.retain(|n| filter.contains(n));
        self.ctx.metrics.set_owned_ranges(owned.len() as usize);
        info!(owned = %owned, dropped, unqueued, "owned ranges changed");
    }

    /// Runs the watch, the workers and the timer until the process stops.
    pub async fn run(self) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..self.ctx.cfg.max_concurrent_reconciles {
            let e = self.clone();
            tasks.spawn(async move { e.worker(i).await });
        }
        let e = self.clone();
        tasks.spawn(async move { e.timer_loop().await });
        let e = self.clone();
        tasks.spawn(async move { e.gauges_loop().await });
        let e = self.clone();
        tasks.spawn(async move { e.watch_loop().await });
        // Every task loops forever; the first to end is a bug worth stopping for.
        if let Some(r) = tasks.join_next().await {
            r.map_err(|e| anyhow::anyhow!("engine task failed: {e}"))?;
        }
        anyhow::bail!("an engine task ended unexpectedly")
    }

    /// The two namespace watches (see [`crate::bucket`]): the owned buckets, and namespaces not
    /// bucketed yet. Metadata only: labels and annotations are all we read. Exact, paginated
    /// initial lists (bounded memory at 100k); bookmarks keep the resourceVersion fresh.
    fn watches(&self) -> [WatchStream; 2] {
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(self.ctx.client.clone());
        let owned = self.owned();
        let count = self.shard().index.range_count();
        let selectors = [
            bucket::owned_selector(&owned, count),
            bucket::unbucketed_selector(),
        ];
        debug!(owned = %selectors[0], "watching");
        selectors.map(|sel| {
            let cfg = watcher::Config::default().labels(&sel).page_size(500);
            watcher::watcher(api.clone(), cfg).default_backoff().boxed()
        })
    }

    async fn watch_loop(&self) {
        // Both watches always list together: `after_relist` needs the union of their lists. A
        // watch that lists again on its own (410 Gone, a broken connection) restarts both.
        let mut streams = self.watches();
        // Which watch completed its current list. An Init before that is a retry of the list.
        let mut listed = [false, false];
        let mut seen: HashSet<String> = HashSet::new();
        loop {
            let [owned_watch, unbucketed_watch] = &mut streams;
            let (which, next) = tokio::select! {
                next = owned_watch.try_next() => (0, next),
                next = unbucketed_watch.try_next() => (1, next),
                _ = self.relist.notified() => {
                    // Gained ranges: list again (the filter now admits them, the bucket selector
                    // covers them). Claims land one by one; wait for a quiet second (at most 5 s)
                    // so a start-up or a takeover costs one relist, not one per range.
                    let until = tokio::time::Instant::now() + Duration::from_secs(5);
                    loop {
                        tokio::select! {
                            _ = self.relist.notified() => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => break,
                            _ = tokio::time::sleep_until(until) => break,
                        }
                    }
                    streams = self.watches();
                    (listed, seen) = ([false, false], HashSet::new());
                    continue;
                }
            };
            match next {
                Ok(Some(event)) => match event {
                    Event::Init => {
                        if listed[which] {
                            debug!(which, "one watch lists again: restarting both");
                            streams = self.watches();
                            (listed, seen) = ([false, false], HashSet::new());
                            continue;
                        }
                    }
                    Event::InitApply(obj) => {
                        let view = NamespaceView::from_meta(&obj.metadata);
                        seen.insert(view.name.clone());
                        self.on_view(view).await;
                    }
                    Event::InitDone => {
                        listed[which] = true;
                        if listed == [true, true] {
                            self.after_relist(&seen).await;
                            seen = HashSet::new();
                            if !self.synced.swap(true, Ordering::Relaxed) {
                                info!("initial namespace list done");
                            }
                        }
                    }
                    Event::Apply(obj) => {
                        self.on_view(NamespaceView::from_meta(&obj.metadata)).await
                    }
                    Event::Delete(obj) => {
                        let name = obj.metadata.name.unwrap_or_default();
                        self.on_gone(&name, which == 1).await;
                    }
                },
                Ok(None) => {
                    warn!("namespace watch ended; restarting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    streams = self.watches();
                    (listed, seen) = ([false, false], HashSet::new());
                }
                // default_backoff already waits between failures; log and carry on.
                Err(e) => warn!(error = %e, "namespace watch error"),
            }
        }
    }

    /// A namespace left a watch's selector: deleted, a label removed, or (for the unbucketed
    /// watch) bucketed by our own write, which the owned-buckets watch delivers anyway.
    async fn on_gone(&self, name: &str, unbucketed_watch: bool) {
        if !self.owns(name) {
            self.ctx.metrics.watch_event("foreign");
            return;
        }
        if unbucketed_watch && self.lock_set(&self.bucketing).remove(name) {
            self.ctx.metrics.watch_event("skipped");
            return;
        }
        // Re-read to tell.
        self.ctx.metrics.watch_event("owned");
        self.queue.add(name, Work::Check).await;
    }

    /// Namespaces indexed before a relist but absent from it left the selector while the watch
    /// was down: check each.
    async fn after_relist(&self, seen: &HashSet<String>) {
        let missing: Vec<String> = {
            let s = self.shard();
            s.index
                .iter()
                .filter(|e| !seen.contains(e.name))
                .map(|e| e.name.to_string())
                .collect()
        };
        for name in missing {
            self.queue.add(&name, Work::Check).await;
        }
    }

    /// A watch event: decide, and either queue work or just record the state.
    async fn on_view(&self, view: NamespaceView) {
        if view.name.is_empty() || !self.owns(&view.name) {
            self.ctx.metrics.watch_event("foreign");
            return;
        }
        if self.ctx.cfg.is_protected(&view.name) {
            // Never locked, unlocked or deleted, whatever its labels say.
            self.ctx.metrics.watch_event("protected");
            return;
        }
        self.ctx.metrics.watch_event("owned");
        self.observe_version(&view);
        match state::decide(&view, now_secs()) {
            Decision::Locked { deadline } => {
                if !self.queue.contains(&view.name) {
                    self.record(&view.name, Status::Locked, deadline);
                } else {
                    // A worker holds it: let the newest view follow through the queue.
                    self.queue
                        .add(&view.name.clone(), Work::Reconcile(Box::new(view)))
                        .await;
                }
            }
            Decision::Nothing => {
                if !self.queue.contains(&view.name) {
                    self.record(&view.name, Status::from_label(view.label.as_deref()), None);
                } else {
                    self.queue
                        .add(&view.name.clone(), Work::Reconcile(Box::new(view)))
                        .await;
                }
            }
            Decision::Lock | Decision::Unlock | Decision::Expire { .. } => {
                debug!(namespace = %view.name, "queued");
                self.queue
                    .add(&view.name.clone(), Work::Reconcile(Box::new(view)))
                    .await;
            }
        }
    }

    /// When to warn about `deadline` (`--expiry-warning` before it), if that is still ahead.
    fn warning_at(&self, deadline: Deadline) -> Option<Deadline> {
        let lead = self.ctx.cfg.expiry_warning?;
        let at = deadline.as_unix_secs() - lead.as_secs() as i64;
        (at > now_secs()).then(|| Deadline::saturating_from_unix_secs(at))
    }

    /// Records status and deadline in the index and (re)schedules the expiry warning.
    fn record(&self, name: &str, status: Status, deadline: Option<i64>) {
        let deadline = deadline.map(Deadline::saturating_from_unix_secs);
        let mut wake = false;
        {
            let mut s = self.shard();
            let before = s.index.next_deadline();
            match s.index.upsert(name, status, deadline) {
                Ok(id) => {
                    let key = id.index();
                    match deadline.and_then(|d| self.warning_at(d)) {
                        Some(at) => {
                            s.warnings.schedule(key, at);
                        }
                        None => {
                            s.warnings.cancel(key);
                        }
                    }
                }
                Err(e) => warn!(namespace = name, error = %e, "not indexed"),
            }
            if s.index.next_deadline() != before {
                wake = true;
            }
        }
        if wake {
            self.timer.notify_one();
        }
    }

    fn forget(&self, name: &str) {
        let mut s = self.shard();
        if let Some(id) = s.index.get(name).map(|e| e.id) {
            s.warnings.cancel(id.index());
        }
        s.index.remove(name);
    }

    /// Sleeps until the next deadline (or a new earlier one), then queues what fell due.
    async fn timer_loop(&self) {
        loop {
            let next = {
                let s = self.shard();
                let a = s.index.next_deadline().map(|d| d.as_unix_secs());
                let b = s.warnings.peek().map(|(_, d)| d.as_unix_secs());
                match (a, b) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            let notified = self.timer.notified();
            match next {
                Some(at) => {
                    let wait = (at - now_secs()).max(0) as u64;
                    if wait > 0 {
                        // Wake on the exact second boundary of the deadline.
                        let sub = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.subsec_nanos())
                            .unwrap_or(0);
                        let sleep = Duration::from_secs(wait)
                            .saturating_sub(Duration::from_nanos(sub as u64));
                        tokio::select! {
                            _ = tokio::time::sleep(sleep) => {},
                            _ = notified => continue,
                        }
                    }
                }
                None => {
                    notified.await;
                    continue;
                }
            }
            let now = now_secs();
            let (due, warn_due) = {
                let mut s = self.shard();
                let mut due = Vec::new();
                while let Some(e) = s.index.pop_due(now) {
                    due.push(e.name.to_string());
                }
                let ids: Vec<u32> = s.warnings.drain_due(now).map(|(k, _)| k).collect();
                let warn_due: Vec<String> = ids
                    .into_iter()
                    .filter_map(|k| s.index.entry_at(k).map(|e| e.name.to_string()))
                    .collect();
                (due, warn_due)
            };
            for name in warn_due {
                self.queue.add(&name, Work::Warn).await;
            }
            for name in due {
                debug!(namespace = %name, "deadline reached");
                self.queue.add(&name, Work::Expire).await;
            }
        }
    }

    async fn gauges_loop(&self) {
        loop {
            {
                let s = self.shard();
                let locked = s
                    .index
                    .iter()
                    .filter(|e| e.status == Status::Locked)
                    .count();
                self.ctx
                    .metrics
                    .set_index(s.index.len(), locked, s.index.scheduled());
            }
            self.ctx.metrics.set_queue_depth(self.queue.len());
            self.ctx.metrics.set_tasks(
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks(),
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    async fn worker(&self, _id: usize) {
        while let Some(item) = self.queue.next().await {
            let range = shard::range_of(&item.name, self.shard().index.range_count());
            // Signed integers: OpenTelemetry exports unsigned span fields as text.
            let span = info_span!(
                "reconcile",
                namespace = %item.name,
                range = i64::from(range),
                action = tracing::field::Empty,
                outcome = tracing::field::Empty,
                api_calls = tracing::field::Empty,
            );
            // A client of its own that counts this reconcile's requests (same shared stack).
            let (ctx, calls) = match &self.ctx.counting {
                Some(counting) => {
                    // Stops at its next request once the namespace's range is handed over.
                    let (engine, name) = (self.clone(), item.name.clone());
                    let wanted = crate::client::Wanted::new(move || engine.owns(&name));
                    let (client, calls) = counting.counted(wanted);
                    let ctx = Context {
                        client,
                        ..self.ctx.clone()
                    };
                    (ctx, Some(calls))
                }
                None => (self.ctx.clone(), None),
            };
            let retry = self.process(&ctx, &item).instrument(span.clone()).await;
            if let Some(calls) = calls {
                span.record("api_calls", i64::from(calls.load(Ordering::Relaxed)));
            }
            self.queue.done(&item, retry);
        }
    }

    /// Runs one item; returns the retry delay on failure.
    async fn process(&self, ctx: &Context, item: &Item) -> Option<Duration> {
        let name = item.name.as_str();
        if !self.owns(name) || self.ctx.cfg.is_protected(name) {
            return None; // Handed over while queued, or never ours to touch.
        }
        let started = tokio::time::Instant::now();
        let (action, result) = match &item.work {
            Work::Reconcile(view) => self.reconcile(ctx, view).await,
            Work::Check => match flows::get_namespace_with_date(ctx, name).await {
                Ok(None) => {
                    self.forget(name);
                    ("forget", Ok(Outcome::Superseded))
                }
                Ok(Some((view, _))) => self.reconcile(ctx, &view).await,
                Err(e) => ("check", Err(e)),
            },
            Work::Expire => ("expire", flows::expire(ctx, name).await),
            Work::Warn => {
                self.warn_expiry(name).await;
                ("warn", Ok(Outcome::Superseded))
            }
        };
        let span = tracing::Span::current();
        span.record("action", action);
        match result {
            Ok(outcome) => {
                span.record("outcome", "ok");
                self.ctx.metrics.reconcile(action, "ok", started.elapsed());
                self.ctx.metrics.event_to_done(action, item.since.elapsed());
                self.apply_outcome(name, outcome);
                None
            }
            Err(FlowError::Early { retry_at, .. }) => {
                span.record("outcome", "early");
                self.ctx
                    .metrics
                    .reconcile(action, "early", started.elapsed());
                Some(Duration::from_secs(
                    (retry_at - now_secs()).clamp(1, 3600) as u64
                ))
            }
            Err(e) if !self.owns(name) => {
                // Handed over mid-flow: its next request was not sent (`client::Wanted`). The
                // new owner reads the namespace afresh and carries on; nothing to retry here.
                span.record("outcome", "handed_over");
                self.ctx
                    .metrics
                    .reconcile(action, "handed_over", started.elapsed());
                info!(namespace = name, error = %e, "range handed over mid-flow; the new owner carries on");
                None
            }
            Err(e) => {
                span.record("outcome", e.metric_label());
                self.ctx
                    .metrics
                    .reconcile(action, e.metric_label(), started.elapsed());
                let delay = backoff(
                    item.attempts,
                    Duration::from_millis(200),
                    Duration::from_secs(120),
                );
                warn!(namespace = name, error = %e, attempt = item.attempts + 1, retry_in = ?delay, "reconcile failed; will retry");
                Some(delay)
            }
        }
    }

    async fn reconcile(
        &self,
        ctx: &Context,
        view: &NamespaceView,
    ) -> (&'static str, Result<Outcome, FlowError>) {
        match state::decide(view, now_secs()) {
            Decision::Lock => {
                if self.lock_already_done(view) {
                    return ("skip", Ok(Outcome::Superseded));
                }
                self.expect_bucketing(view);
                ("lock", flows::lock(ctx, view).await)
            }
            Decision::Unlock => {
                self.expect_bucketing(view);
                ("unlock", flows::unlock(ctx, view).await)
            }
            Decision::Expire { .. } => ("expire", flows::expire(ctx, &view.name).await),
            Decision::Locked { deadline } => {
                self.record(&view.name, Status::Locked, deadline);
                ("record", Ok(Outcome::Superseded))
            }
            Decision::Nothing => {
                self.record(&view.name, Status::from_label(view.label.as_deref()), None);
                ("record", Ok(Outcome::Superseded))
            }
        }
    }

    /// The flow about to run bucket-labels the namespace if it is not yet (see [`crate::bucket`]).
    fn expect_bucketing(&self, view: &NamespaceView) {
        if !view.bucketed {
            let mut set = self.lock_set(&self.bucketing);
            if set.len() >= RECENT_LOCKS_MAX {
                set.clear(); // at worst a redundant re-read per namespace
            }
            set.insert(view.name.clone());
        }
    }

    /// A view from between our own writes (unlock time set, marker not yet) can reach a worker
    /// after the lock it belongs to completed; redoing the lock would only cost calls. Such a view
    /// is older than the lock's last write. (resourceVersions are compared as the etcd revisions
    /// they are; one that does not parse never skips work.)
    fn lock_already_done(&self, view: &NamespaceView) -> bool {
        let Some(rv) = view
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return false;
        };
        let recent = self.recent_locks.lock().unwrap_or_else(|p| p.into_inner());
        recent.get(&view.name).is_some_and(|&done| rv < done)
    }

    /// Forgets the lock's last write once the watch delivered it (or anything newer).
    fn observe_version(&self, view: &NamespaceView) {
        let Some(rv) = view
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return;
        };
        let mut recent = self.recent_locks.lock().unwrap_or_else(|p| p.into_inner());
        if recent.get(&view.name).is_some_and(|&done| rv >= done) {
            recent.remove(&view.name);
        }
    }

    fn apply_outcome(&self, name: &str, outcome: Outcome) {
        match outcome {
            Outcome::Locked {
                deadline,
                resource_version,
            } => {
                if let Some(rv) = resource_version.and_then(|v| v.parse::<u64>().ok()) {
                    let mut recent = self.recent_locks.lock().unwrap_or_else(|p| p.into_inner());
                    if recent.len() >= RECENT_LOCKS_MAX {
                        recent.clear();
                    }
                    recent.insert(name.to_string(), rv);
                }
                self.record(name, Status::Locked, deadline)
            }
            Outcome::Unlocked => self.record(name, Status::Active, None),
            Outcome::Expired => self.forget(name),
            Outcome::UnlockIncomplete | Outcome::ExpiryReported | Outcome::Superseded => {}
        }
    }

    async fn warn_expiry(&self, name: &str) {
        let deadline = {
            let s = self.shard();
            s.index
                .get(name)
                .filter(|e| e.status == Status::Locked)
                .and_then(|e| e.deadline)
        };
        if let Some(d) = deadline {
            let at = chrono::DateTime::from_timestamp(d.as_unix_secs(), 0)
                .map(state::format_timestamp)
                .unwrap_or_default();
            let what = match self.ctx.cfg.expire_action {
                crate::config::ExpireAction::Delete => "will be deleted",
                crate::config::ExpireAction::None => "will expire (kept: --expire-action=none)",
            };
            self.ctx
                .events
                .namespace(
                    name,
                    crate::events::EventKind::ExpiryWarning,
                    &format!("Lock expires at {at}; the namespace {what} unless unlocked"),
                )
                .await;
            self.ctx.metrics.expiry("warned");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_sane() {
        assert!(now_secs() > 1_700_000_000);
    }
}
