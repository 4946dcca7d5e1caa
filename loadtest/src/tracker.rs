//! One metadata-only watch over the load test's namespaces tells when each requested change is
//! done: a lock when the controller's marker `core.clawcloud.run/locked-at` appears, an unlock
//! when it and the unlock time are gone, an expiry when the namespace is being deleted.
//!
//! Expectations are registered *before* the write that asks for the change, so a fast controller
//! cannot complete work the tracker has not been told about yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};

use crate::names::{LOCKED_AT, STATUS_LABEL, UNLOCK_AT};

/// What the tracker knows of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// `clawcloud.run/status`.
    pub status: Option<String>,
    /// The completion marker is present.
    pub locked_at: bool,
    /// The unlock deadline, Unix seconds (`None`: absent or unparsable).
    pub unlock_at: Option<i64>,
    /// The unlock annotation is present (parsable or not).
    pub has_unlock_at: bool,
    /// `deletionTimestamp` is set, or the namespace is gone.
    pub deleting: bool,
}

/// A state a namespace should reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Want {
    /// Locked and complete.
    Locked,
    /// Unlocked: no marker, no deadline.
    Unlocked,
    /// Being deleted (expired).
    Deleted,
}

impl Want {
    /// Whether `view` is in this state.
    pub fn reached(self, view: &View) -> bool {
        match self {
            Want::Locked => view.locked_at && !view.deleting,
            Want::Unlocked => !view.locked_at && !view.has_unlock_at && !view.deleting,
            Want::Deleted => view.deleting,
        }
    }
}

/// A completed expectation.
#[derive(Debug, Clone)]
pub struct Done {
    /// The scenario that asked.
    pub scenario: String,
    /// Seconds since the run started, at completion.
    pub at: f64,
    /// From the expectation (just before the write) to completion.
    pub latency: Duration,
    /// For expiries: seconds from the unlock deadline to the deletion being seen.
    pub lateness: Option<f64>,
}

struct Expect {
    scenario: String,
    want: Want,
    since: Instant,
    /// Expected next, from the moment this one is met.
    then: Option<(String, Want)>,
}

#[derive(Default)]
struct State {
    views: HashMap<String, View>,
    expects: HashMap<String, Expect>,
    done: Vec<Done>,
    synced: bool,
}

/// The shared tracker; cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    state: Arc<Mutex<State>>,
    t0: Instant,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

fn view_of(meta: &kube::api::ObjectMeta) -> View {
    let labels = meta.labels.as_ref();
    let ann = meta.annotations.as_ref();
    let unlock = ann.and_then(|a| a.get(UNLOCK_AT));
    View {
        status: labels.and_then(|l| l.get(STATUS_LABEL)).cloned(),
        locked_at: ann.is_some_and(|a| a.contains_key(LOCKED_AT)),
        unlock_at: unlock
            .and_then(|v| local_control_plane::audit::parse_micros(v))
            .map(|us| us / 1_000_000),
        has_unlock_at: unlock.is_some(),
        deleting: meta.deletion_timestamp.is_some(),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Tracker {
    /// Starts the watch over namespaces matching `selector`; `t0` is the run's start.
    pub fn start(client: kube::Client, selector: &str, t0: Instant) -> Tracker {
        let tracker = Tracker {
            state: Arc::new(Mutex::new(State::default())),
            t0,
            task: Arc::default(),
        };
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let cfg = watcher::Config::default()
            .labels(selector)
            .page_size(500)
            .timeout(290);
        let t = tracker.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, cfg).default_backoff().boxed();
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!("namespace watch: {e}");
                        continue;
                    }
                };
                let now = Instant::now();
                let mut st = t.lock();
                match ev {
                    watcher::Event::Apply(m) | watcher::Event::InitApply(m) => {
                        let name = m.metadata.name.clone().unwrap_or_default();
                        let view = view_of(&m.metadata);
                        t.update(&mut st, name, view, now);
                    }
                    watcher::Event::Delete(m) => {
                        let name = m.metadata.name.clone().unwrap_or_default();
                        let view = View {
                            deleting: true,
                            ..st.views.get(&name).cloned().unwrap_or_default()
                        };
                        t.update(&mut st, name, view, now);
                    }
                    watcher::Event::Init => {}
                    watcher::Event::InitDone => st.synced = true,
                }
            }
        });
        *tracker.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        tracker
    }

    /// Stops the watch (before the control plane goes away).
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, st: &mut State, name: String, view: View, now: Instant) {
        if let Some(e) = st.expects.get(&name) {
            if e.want.reached(&view) && now >= e.since {
                let e = st
                    .expects
                    .remove(&name)
                    .expect("present: just looked it up");
                let deadline = view
                    .unlock_at
                    .or_else(|| st.views.get(&name).and_then(|v| v.unlock_at));
                let lateness = deadline
                    .filter(|_| e.want == Want::Deleted)
                    .map(|d| unix_now() - d as f64);
                if let Some((scenario, want)) = e.then.clone() {
                    st.expects.insert(
                        name.clone(),
                        Expect {
                            scenario,
                            want,
                            since: now,
                            then: None,
                        },
                    );
                }
                st.done.push(Done {
                    scenario: e.scenario,
                    at: (now - self.t0).as_secs_f64(),
                    latency: now - e.since,
                    lateness,
                });
            }
        }
        st.views.insert(name, view);
    }

    /// Waits until the initial list is done.
    pub async fn synced(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.lock().synced {
            if Instant::now() > deadline {
                anyhow::bail!("the namespace watch did not finish its initial list in {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Registers that `names` should reach `want`, from now on.
    pub fn expect<'a>(&self, scenario: &str, want: Want, names: impl IntoIterator<Item = &'a str>) {
        self.expect_then(scenario, want, None, names)
    }

    /// Like [`Tracker::expect`], and once met, `then` (expected from that moment).
    pub fn expect_then<'a>(
        &self,
        scenario: &str,
        want: Want,
        then: Option<(&str, Want)>,
        names: impl IntoIterator<Item = &'a str>,
    ) {
        let now = Instant::now();
        let mut st = self.lock();
        for n in names {
            st.expects.insert(
                n.to_string(),
                Expect {
                    scenario: scenario.to_string(),
                    want,
                    since: now,
                    then: then.map(|(s, w)| (s.to_string(), w)),
                },
            );
        }
    }

    /// Expectations of `scenario` not met yet.
    pub fn outstanding(&self, scenario: &str) -> Vec<String> {
        let st = self.lock();
        let mut v: Vec<String> = st
            .expects
            .iter()
            .filter(|(_, e)| e.scenario == scenario)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether `name` has an expectation not met yet.
    pub fn outstanding_for(&self, name: &str) -> bool {
        self.lock().expects.contains_key(name)
    }

    /// Forgets the outstanding expectations of `scenario` (after they were counted as lost).
    pub fn forget(&self, scenario: &str) {
        self.lock().expects.retain(|_, e| e.scenario != scenario);
    }

    /// Waits until every expectation of `scenario` is met, or `timeout`, or nothing completed
    /// for `stall` (work that stopped moving). Returns the names still outstanding. `progress`
    /// is called with the count done so far.
    pub async fn wait(
        &self,
        scenario: &str,
        timeout: Duration,
        stall: Duration,
        mut progress: impl FnMut(usize),
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut last_done = usize::MAX;
        let mut moved = Instant::now();
        loop {
            let (left, done) = {
                let st = self.lock();
                (
                    st.expects
                        .values()
                        .filter(|e| e.scenario == scenario)
                        .count(),
                    st.done.iter().filter(|d| d.scenario == scenario).count(),
                )
            };
            progress(done);
            if done != last_done {
                last_done = done;
                moved = Instant::now();
            }
            if left == 0 || Instant::now() > deadline || moved.elapsed() > stall {
                return self.outstanding(scenario);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Completions of `scenario`.
    pub fn done(&self, scenario: &str) -> Vec<Done> {
        self.lock()
            .done
            .iter()
            .filter(|d| d.scenario == scenario)
            .cloned()
            .collect()
    }

    /// Every completion so far.
    pub fn all_done(&self) -> Vec<Done> {
        self.lock().done.clone()
    }

    /// A copy of the current view of `name`.
    pub fn view(&self, name: &str) -> Option<View> {
        self.lock().views.get(name).cloned()
    }

    /// Names whose view satisfies `pred`.
    pub fn select(&self, pred: impl Fn(&str, &View) -> bool) -> Vec<String> {
        let st = self.lock();
        let mut v: Vec<String> = st
            .views
            .iter()
            .filter(|(n, view)| pred(n, view))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_read_the_marker_and_the_deadline() {
        let locked = View {
            status: Some("locked".into()),
            locked_at: true,
            unlock_at: Some(1),
            has_unlock_at: true,
            deleting: false,
        };
        assert!(Want::Locked.reached(&locked));
        assert!(!Want::Unlocked.reached(&locked));
        let pending_unlock = View {
            locked_at: false,
            ..locked.clone()
        };
        assert!(!Want::Locked.reached(&pending_unlock));
        assert!(!Want::Unlocked.reached(&pending_unlock));
        assert!(Want::Unlocked.reached(&View::default()));
        let gone = View {
            deleting: true,
            ..locked
        };
        assert!(Want::Deleted.reached(&gone) && !Want::Locked.reached(&gone));
    }
}
