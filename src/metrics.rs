//! Prometheus metrics of one replica. Labels have bounded cardinality only: never a namespace name.
//!
//! Every API request is counted inside the client's tower stack (see [`crate::client`]), so the
//! figures include watches, lists, retries and Events alike.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The replica's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    api_requests: IntCounterVec,
    api_latency: HistogramVec,
    rate_limited: IntCounter,
    rate_limited_seconds: prometheus::Counter,
    reconciles: IntCounterVec,
    reconcile_latency: HistogramVec,
    event_to_done: HistogramVec,
    queue_depth: IntGauge,
    tasks: IntGauge,
    indexed: IntGauge,
    locked: IntGauge,
    owned_ranges: IntGauge,
    expiries: IntCounterVec,
    expiry_scheduled: IntGauge,
    problems: IntCounterVec,
    watch_events: IntCounterVec,
    ranges: IntGauge,
    unclaimed: IntGauge,
    lease_writes: IntCounterVec,
    range_events: IntCounterVec,
    handover_latency: prometheus::Histogram,
    leader: IntGauge,
}

/// Verb and resource of one API request, read off its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …
    pub verb: &'static str,
    /// Plural resource, with `/subresource` when there is one.
    pub resource: String,
}

impl RequestLabels {
    /// Reads verb and resource from a request.
    pub fn of<B>(req: &http::Request<B>) -> RequestLabels {
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true"));
        let (resource, named) = resource_of_path(req.uri().path());
        let verb = match *req.method() {
            http::Method::GET if watch => "watch",
            http::Method::GET if named => "get",
            http::Method::GET => "list",
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE if named => "delete",
            http::Method::DELETE => "deletecollection",
            _ => "other",
        };
        RequestLabels { verb, resource }
    }
}

/// `(resource[/subresource], names an object)` of an API path such as
/// `/apis/apps/v1/namespaces/x/deployments/y/scale` or `/api/v1/namespaces/x`.
fn resource_of_path(path: &str) -> (String, bool) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", _v, rest @ ..] => rest,
        ["apis", _g, _v, rest @ ..] => rest,
        _ => return ("other".into(), false),
    };
    // Namespaced: namespaces/{ns}/{resource}[/{name}[/{sub}]]; else {resource}[/{name}[/{sub}]].
    let rest = match rest {
        ["namespaces", _ns, r, tail @ ..] => {
            let mut v = vec![*r];
            v.extend_from_slice(tail);
            v
        }
        other => other.to_vec(),
    };
    match rest.as_slice() {
        [] => ("other".into(), false),
        [r] => (r.to_string(), false),
        [r, _name] => (r.to_string(), true),
        [r, _name, sub, ..] => (format!("{r}/{sub}"), true),
    }
}

fn must<T>(r: Result<T, prometheus::Error>) -> T {
    // Metric definitions are static; an error here is a programming mistake caught by the tests.
    r.unwrap_or_else(|e| panic!("invalid metric definition: {e}"))
}

impl Metrics {
    /// Registers every metric, with the replica's identity as a constant label.
    pub fn new(identity: &str) -> Metrics {
        let registry = must(Registry::new_custom(
            Some("block_controller".into()),
            Some([("replica".to_string(), identity.to_string())].into()),
        ));
        let latency_buckets = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let api_requests = must(IntCounterVec::new(
            Opts::new(
                "api_requests_total",
                "API requests by verb, resource and response code",
            ),
            &["verb", "resource", "code"],
        ));
        let api_latency = must(HistogramVec::new(
            HistogramOpts::new(
                "api_request_duration_seconds",
                "API request latency (watches: until headers)",
            )
            .buckets(latency_buckets.clone()),
            &["verb"],
        ));
        let rate_limited = must(IntCounter::new(
            "client_rate_limited_total",
            "Requests that waited for the client-side token bucket",
        ));
        let rate_limited_seconds = must(prometheus::Counter::new(
            "client_rate_limited_seconds_total",
            "Time spent waiting for the client-side token bucket",
        ));
        let reconciles = must(IntCounterVec::new(
            Opts::new(
                "reconciles_total",
                "Namespace reconciles by action and outcome",
            ),
            &["action", "outcome"],
        ));
        let reconcile_latency = must(HistogramVec::new(
            HistogramOpts::new(
                "reconcile_duration_seconds",
                "Time a worker spent on one reconcile",
            )
            .buckets(latency_buckets.clone()),
            &["action"],
        ));
        let event_to_done = must(HistogramVec::new(
            HistogramOpts::new(
                "event_to_done_seconds",
                "From the watch event that asked for work to that work being complete",
            )
            .buckets(latency_buckets),
            &["action"],
        ));
        let queue_depth = must(IntGauge::new(
            "queue_depth",
            "Namespaces waiting for a worker",
        ));
        let tasks = must(IntGauge::new(
            "tokio_tasks",
            "Tasks alive in the async runtime (workers, watches, requests in flight)",
        ));
        let indexed = must(IntGauge::new(
            "indexed_namespaces",
            "Namespaces in this replica's index",
        ));
        let locked = must(IntGauge::new(
            "locked_namespaces",
            "Locked namespaces in this replica's index",
        ));
        let owned_ranges = must(IntGauge::new(
            "owned_ranges",
            "Hash ranges this replica may work on",
        ));
        let expiries = must(IntCounterVec::new(
            Opts::new("expiries_total", "Expired locks by outcome"),
            &["outcome"],
        ));
        let expiry_scheduled = must(IntGauge::new(
            "expiries_scheduled",
            "Deadlines waiting in the expiry queue",
        ));
        let problems = must(IntCounterVec::new(
            Opts::new(
                "problems_total",
                "Bad input found on objects (left alone and reported)",
            ),
            &["kind"],
        ));
        let watch_events = must(IntCounterVec::new(
            Opts::new(
                "watch_events_total",
                "Namespace watch events by outcome of the filter",
            ),
            &["outcome"],
        ));
        let ranges = must(IntGauge::new(
            "ranges",
            "Hash ranges of the installation (--ranges); unowned = max(ranges) - sum(owned_ranges)",
        ));
        let unclaimed = must(IntGauge::new(
            "unclaimed_ranges",
            "Ranges nobody may work on as this replica sees the Leases (not ours, no live claim)",
        ));
        let lease_writes = must(IntCounterVec::new(
            Opts::new(
                "lease_writes_total",
                "Lease writes by lease kind (member, range, leader) and outcome",
            ),
            &["lease", "outcome"],
        ));
        let range_events = must(IntCounterVec::new(
            Opts::new(
                "range_events_total",
                "Ranges acquired, draining (handover started), released or lost (renew deadline passed)",
            ),
            &["event"],
        ));
        let handover_latency = must(prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "handover_duration_seconds",
                "From a handover's start (stop intake) to its ranges being drained",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
        ));
        let leader = must(IntGauge::new(
            "leader",
            "1 while this replica holds the leader lease (singleton duties)",
        ));
        let build_info = must(prometheus::IntGaugeVec::new(
            Opts::new("build_info", "Build information"),
            &["version"],
        ));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for c in [
            Box::new(api_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(api_latency.clone()),
            Box::new(rate_limited.clone()),
            Box::new(rate_limited_seconds.clone()),
            Box::new(reconciles.clone()),
            Box::new(reconcile_latency.clone()),
            Box::new(event_to_done.clone()),
            Box::new(queue_depth.clone()),
            Box::new(tasks.clone()),
            Box::new(indexed.clone()),
            Box::new(locked.clone()),
            Box::new(owned_ranges.clone()),
            Box::new(expiries.clone()),
            Box::new(expiry_scheduled.clone()),
            Box::new(problems.clone()),
            Box::new(watch_events.clone()),
            Box::new(ranges.clone()),
            Box::new(unclaimed.clone()),
            Box::new(lease_writes.clone()),
            Box::new(range_events.clone()),
            Box::new(handover_latency.clone()),
            Box::new(leader.clone()),
            Box::new(build_info),
        ] {
            must(registry.register(c));
        }
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                api_requests,
                api_latency,
                rate_limited,
                rate_limited_seconds,
                reconciles,
                reconcile_latency,
                event_to_done,
                queue_depth,
                tasks,
                indexed,
                locked,
                owned_ranges,
                expiries,
                expiry_scheduled,
                problems,
                watch_events,
                ranges,
                unclaimed,
                lease_writes,
                range_events,
                handover_latency,
                leader,
            }),
        }
    }

    /// One API request finished.
    pub fn api_request(&self, labels: &RequestLabels, code: &str, took: Duration) {
        let i = &self.inner;
        i.api_requests
            .with_label_values(&[labels.verb, &labels.resource, code])
            .inc();
        i.api_latency
            .with_label_values(&[labels.verb])
            .observe(took.as_secs_f64());
    }

    /// A request waited for the token bucket.
    pub fn rate_limited(&self, waited: Duration) {
        self.inner.rate_limited.inc();
        self.inner.rate_limited_seconds.inc_by(waited.as_secs_f64());
    }

    /// One reconcile finished.
    pub fn reconcile(&self, action: &str, outcome: &str, took: Duration) {
        self.inner
            .reconciles
            .with_label_values(&[action, outcome])
            .inc();
        self.inner
            .reconcile_latency
            .with_label_values(&[action])
            .observe(took.as_secs_f64());
    }

    /// Work asked for by a watch event is complete.
    pub fn event_to_done(&self, action: &str, took: Duration) {
        self.inner
            .event_to_done
            .with_label_values(&[action])
            .observe(took.as_secs_f64());
    }

    /// Current queue depth.
    pub fn set_queue_depth(&self, n: usize) {
        self.inner.queue_depth.set(n as i64);
    }

    /// Tasks alive in the runtime.
    pub fn set_tasks(&self, n: usize) {
        self.inner.tasks.set(n as i64);
    }

    /// Current index figures.
    pub fn set_index(&self, indexed: usize, locked: usize, scheduled: usize) {
        self.inner.indexed.set(indexed as i64);
        self.inner.locked.set(locked as i64);
        self.inner.expiry_scheduled.set(scheduled as i64);
    }

    /// Ranges owned now.
    pub fn set_owned_ranges(&self, n: usize) {
        self.inner.owned_ranges.set(n as i64);
    }

    /// The installation's range count.
    pub fn set_ranges(&self, n: u32) {
        self.inner.ranges.set(i64::from(n));
    }

    /// Ranges with no live claim, as this replica sees them.
    pub fn set_unclaimed_ranges(&self, n: u32) {
        self.inner.unclaimed.set(i64::from(n));
    }

    /// A Lease write finished: `lease` is `member`, `range` or `leader`; `outcome` is `ok`,
    /// `conflict`, `exists`, `not_found` or `error`.
    pub fn lease_write(&self, lease: &str, outcome: &str) {
        self.inner
            .lease_writes
            .with_label_values(&[lease, outcome])
            .inc();
    }

    /// `n` ranges went through `event` (`acquired`, `draining`, `released`, `lost`).
    pub fn range_event(&self, event: &str, n: usize) {
        self.inner
            .range_events
            .with_label_values(&[event])
            .inc_by(n as u64);
    }

    /// A handover finished draining after `took`.
    pub fn handover(&self, took: Duration) {
        self.inner.handover_latency.observe(took.as_secs_f64());
    }

    /// Leader status changed.
    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.set(i64::from(leader));
    }

    /// An expiry reached an outcome (`deleted`, `skipped`, `reported`, `error`, `warned`).
    pub fn expiry(&self, outcome: &str) {
        self.inner.expiries.with_label_values(&[outcome]).inc();
    }

    /// Bad input on an object (`unlock_timestamp`, `original_replicas`, `original_suspend`, …).
    pub fn problem(&self, kind: &str) {
        self.inner.problems.with_label_values(&[kind]).inc();
    }

    /// A watch event was seen (`owned`, `foreign`, `skipped`).
    pub fn watch_event(&self, outcome: &str) {
        self.inner.watch_events.with_label_values(&[outcome]).inc();
    }

    /// Total API requests counted so far (all verbs), for tests and the loadtest.
    pub fn api_requests_total(&self) -> u64 {
        let mut n = 0;
        for mf in self.inner.registry.gather() {
            if mf.name() == "block_controller_api_requests_total" {
                for m in mf.get_metric() {
                    n += m.get_counter().get_value() as u64;
                }
            }
        }
        n
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.inner.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: &str, uri: &str) -> RequestLabels {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("request");
        RequestLabels::of(&req)
    }

    #[test]
    fn verbs_and_resources_from_paths() {
        let l = labels("GET", "/api/v1/namespaces?labelSelector=x&limit=500");
        assert_eq!((l.verb, l.resource.as_str()), ("list", "namespaces"));
        let l = labels("GET", "/api/v1/namespaces?watch=true&resourceVersion=5");
        assert_eq!((l.verb, l.resource.as_str()), ("watch", "namespaces"));
        let l = labels("PATCH", "/api/v1/namespaces/team-a");
        assert_eq!((l.verb, l.resource.as_str()), ("patch", "namespaces"));
        let l = labels("PATCH", "/apis/apps/v1/namespaces/team-a/deployments/web");
        assert_eq!((l.verb, l.resource.as_str()), ("patch", "deployments"));
        let l = labels(
            "GET",
            "/apis/apps/v1/namespaces/team-a/deployments?limit=50",
        );
        assert_eq!((l.verb, l.resource.as_str()), ("list", "deployments"));
        let l = labels(
            "PUT",
            "/apis/core.clawcloud.run/v1/namespaces/x/blockrequests/r/status",
        );
        assert_eq!(
            (l.verb, l.resource.as_str()),
            ("update", "blockrequests/status")
        );
        let l = labels("DELETE", "/api/v1/namespaces/x/pods/p");
        assert_eq!((l.verb, l.resource.as_str()), ("delete", "pods"));
        let l = labels("POST", "/api/v1/namespaces/x/resourcequotas");
        assert_eq!((l.verb, l.resource.as_str()), ("create", "resourcequotas"));
    }

    #[test]
    fn renders_with_replica_label() {
        let m = Metrics::new("block-controller-1");
        m.api_request(
            &labels("GET", "/api/v1/namespaces/x"),
            "200",
            Duration::from_millis(3),
        );
        m.reconcile("lock", "ok", Duration::from_millis(20));
        let text = m.render();
        assert!(text.contains(r#"block_controller_api_requests_total{code="200",resource="namespaces",verb="get",replica="block-controller-1"} 1"#), "{text}");
        assert_eq!(m.api_requests_total(), 1);
    }
}
