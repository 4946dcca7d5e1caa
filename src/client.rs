//! The Kubernetes client: a per-replica User-Agent, a client-side token bucket (QPS and burst), and a
//! timeout on every non-watch request, all inside the client's tower stack so no request escapes.
//!
//! kube-rs has no client-side rate limiter: without one, a burst of 100k label changes would turn
//! into a flood of requests at the API server. The timeout bounds how late a write can land after
//! this replica stopped owning a range (the sharding design relies on it).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

use crate::metrics::Metrics;

/// Builds the controller's client from the ambient configuration (in-cluster or `KUBECONFIG`).
pub async fn build(
    user_agent: &str,
    qps: f64,
    burst: u32,
    timeout: Duration,
    metrics: Option<Metrics>,
) -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes configuration (in-cluster or KUBECONFIG): {e}")
    })?;
    from_config(config, user_agent, qps, burst, timeout, metrics)
}

/// Builds the controller's client from an explicit configuration.
pub fn from_config(
    config: kube::Config,
    user_agent: &str,
    qps: f64,
    burst: u32,
    timeout: Duration,
    metrics: Option<Metrics>,
) -> anyhow::Result<kube::Client> {
    let layer = GuardLayer {
        bucket: Arc::new(Mutex::new(TokenBucket::new(qps, burst))),
        lease_bucket: None,
        timeout,
        metrics,
        gate: None,
    };
    with_layer(config, user_agent, &layer)
}

/// The error of a request [`Wanted`] refused.
pub const NOT_WANTED: &str = "not sent: the namespace's range was handed over";

/// The burst of the Lease bucket: every claim or release of a handover of the default 256
/// ranges, plus the member and leader Leases, passes at once.
const LEASE_BURST: u32 = 512;

/// The timeout of one list page (at least `--api-timeout`).
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// The controller's two clients, sharing one token bucket (so `--kube-api-qps` bounds the whole
/// process), each behind its own [`WriteGate`].
pub struct Clients {
    /// Range work: writes pass while the member may work ([`lease::Machine::work_deadline`]).
    pub main: kube::Client,
    /// Counted clients over `main`'s stack, one per reconcile.
    pub counting: Counting,
    /// The gate of `main`.
    pub main_gate: WriteGate,
    /// Singleton duties (BlockRequests label namespaces of any range). It sends
    /// `<user agent> leader`, which tells them apart from range work in the API server's audit
    /// log; writes pass while leader ([`lease::Machine::leader_deadline`]).
    pub leader: kube::Client,
    /// The gate of `leader`.
    pub leader_gate: WriteGate,
}

/// Builds the controller's [`Clients`] from the ambient configuration.
pub async fn build_with_leader(
    user_agent: &str,
    qps: f64,
    burst: u32,
    timeout: Duration,
    metrics: Option<Metrics>,
) -> anyhow::Result<Clients> {
    let config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes configuration (in-cluster or KUBECONFIG): {e}")
    })?;
    let bucket = Arc::new(Mutex::new(TokenBucket::new(qps, burst)));
    let lease_bucket = Arc::new(Mutex::new(TokenBucket::new(qps, burst.max(LEASE_BURST))));
    let (main_gate, leader_gate) = (WriteGate::closed(), WriteGate::closed());
    let layer = |gate: &WriteGate| GuardLayer {
        bucket: bucket.clone(),
        lease_bucket: Some(lease_bucket.clone()),
        timeout,
        metrics: metrics.clone(),
        gate: Some(gate.clone()),
    };
    let counting = counting(config.clone(), user_agent, &layer(&main_gate))?;
    Ok(Clients {
        main: counting.shared(),
        counting,
        leader: with_layer(
            config,
            &format!("{user_agent} leader"),
            &layer(&leader_gate),
        )?,
        main_gate,
        leader_gate,
    })
}

/// The service stack every client of the process uses: kube's default stack plus the guard.
type Stack =
    Guard<tower::util::BoxService<Request<Body>, Response<hyper::body::Incoming>, BoxError>>;

fn with_layer(
    config: kube::Config,
    user_agent: &str,
    layer: &GuardLayer,
) -> anyhow::Result<kube::Client> {
    Ok(counting(config, user_agent, layer)?.shared())
}

fn counting(
    mut config: kube::Config,
    user_agent: &str,
    layer: &GuardLayer,
) -> anyhow::Result<Counting> {
    let agent = http::HeaderValue::from_str(user_agent).map_err(|e| {
        anyhow::anyhow!("user agent {user_agent:?} is not a valid header value: {e}")
    })?;
    config.headers.push((http::header::USER_AGENT, agent));
    Ok(Counting {
        stack: layer.layer(base_service(&config)?),
        default_ns: config.default_namespace.clone(),
    })
}

/// Makes clients over one shared stack (connection pool, token bucket, gate, metrics); a
/// [`Counting::counted`] client also counts its own requests, so a reconcile can say how many
/// API calls it cost. Cheap to clone.
#[derive(Clone)]
pub struct Counting {
    stack: Stack,
    default_ns: String,
}

impl Counting {
    /// A client over the shared stack.
    pub fn shared(&self) -> kube::Client {
        kube::Client::new(self.stack.clone(), self.default_ns.clone())
    }

    /// A client over the shared stack counting the requests made through it (one small
    /// buffer task per client, ended when it is dropped). Each request it makes is sent only
    /// if `wanted` still says yes once the request has its token (see [`Wanted`]).
    pub fn counted(&self, wanted: Wanted) -> (kube::Client, Arc<AtomicU32>) {
        let counter = Arc::new(AtomicU32::new(0));
        let svc = Counted {
            inner: self.stack.clone(),
            counter: counter.clone(),
            wanted,
        };
        (kube::Client::new(svc, self.default_ns.clone()), counter)
    }
}

/// Whether the work a client does is still wanted, asked right before each of its requests
/// leaves (after the token bucket). A reconcile's namespace handed over mid-flow stops at its
/// next request instead of finishing: the flows are safe to stop at any request (a `kill -9`
/// does the same), the next owner reads the namespace afresh, and the graceful handover no
/// longer waits for every in-flight flow to queue through the token bucket to its end.
#[derive(Clone)]
pub struct Wanted(Arc<dyn Fn() -> bool + Send + Sync>);

impl Wanted {
    /// Asks `still` before each request.
    pub fn new(still: impl Fn() -> bool + Send + Sync + 'static) -> Wanted {
        Wanted(Arc::new(still))
    }
}

/// Counts requests, then hands them to the shared stack with the [`Wanted`] check attached.
struct Counted {
    inner: Stack,
    counter: Arc<AtomicU32>,
    wanted: Wanted,
}

impl Service<Request<Body>> for Counted {
    type Response = <Stack as Service<Request<Body>>>::Response;
    type Error = BoxError;
    type Future = <Stack as Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        self.counter.fetch_add(1, Ordering::Relaxed);
        req.extensions_mut().insert(self.wanted.clone());
        self.inner.call(req)
    }
}

/// kube's default stack, but with `TCP_NODELAY`: without it, a request written in two segments
/// (headers, then body) waits for the server's delayed ACK, costing ~40 ms per write on loopback.
fn base_service(
    config: &kube::Config,
) -> anyhow::Result<tower::util::BoxService<Request<Body>, Response<hyper::body::Incoming>, BoxError>>
{
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    // The read timeout also detects watches that went quiet without closing.
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(client);
    Ok(tower::util::BoxService::new(service))
}

/// Token bucket: `burst` tokens, refilled at `qps` per second. A caller that finds it empty
/// reserves the next token and sleeps until it is due, so waiters are served in arrival order.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    qps: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(qps: f64, burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: burst as f64,
            burst: burst as f64,
            qps,
            last: Instant::now(),
        }
    }

    /// Takes a token; returns how long the caller must wait before using it.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }
}

#[derive(Clone)]
struct GuardLayer {
    bucket: Arc<Mutex<TokenBucket>>,
    /// Requests to Leases take their tokens here, not from `bucket`: a renewal or a handover's
    /// releases must not queue behind range work (20 reconciles waiting at 50 QPS delayed a
    /// graceful handover of 64 ranges by 1.3 s at 100k namespaces). The protocol bounds this
    /// traffic itself: a renewal every other retry period, one write per range handed over.
    lease_bucket: Option<Arc<Mutex<TokenBucket>>>,
    timeout: Duration,
    metrics: Option<Metrics>,
    gate: Option<WriteGate>,
}

/// Until when a client may write: the Lease protocol's work (or leader) deadline, renewed with
/// every successful Lease renewal. Checked right before each write leaves, after the token
/// bucket, so a flow that was under way when its deadline passed (a paused process waking up,
/// an API server that stopped answering renewals) cannot land another write. Writes to Leases
/// themselves always pass: they are how the deadline is renewed. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WriteGate {
    /// Nanoseconds after [`gate_origin`]; 0: closed.
    until: Arc<std::sync::atomic::AtomicU64>,
}

fn gate_origin() -> std::time::Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

impl WriteGate {
    /// A gate closed until [`WriteGate::set`] opens it.
    pub fn closed() -> WriteGate {
        gate_origin();
        WriteGate {
            until: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Writes may leave until `until`; `None` closes the gate.
    pub fn set(&self, until: Option<std::time::Instant>) {
        let nanos = until
            .map(|t| t.saturating_duration_since(gate_origin()).as_nanos() as u64)
            .unwrap_or(0);
        self.until
            .store(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a write may leave now.
    pub fn is_open(&self) -> bool {
        let until = self.until.load(std::sync::atomic::Ordering::Relaxed);
        until > 0 && (gate_origin().elapsed().as_nanos() as u64) < until
    }
}

/// Whether a request must pass the gate: a write, and not to a Lease.
fn gated(req: &Request<Body>) -> bool {
    !matches!(*req.method(), http::Method::GET | http::Method::HEAD) && !is_lease(req)
}

/// Whether a request is about Leases (the sharding protocol's own traffic).
fn is_lease<B>(req: &Request<B>) -> bool {
    req.uri().path().starts_with("/apis/coordination.k8s.io/")
}

impl<S> Layer<S> for GuardLayer
where
    S: Service<Request<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
    S::Response: Send + 'static,
{
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            // The default stack is not Clone; a buffer makes it so, which lets every call own its
            // service handle across the wait for a token.
            inner: tower::buffer::Buffer::new(inner, 1024),
            layer: self.clone(),
        }
    }
}

/// The service of [`GuardLayer`].
pub struct Guard<S>
where
    S: Service<Request<Body>>,
{
    inner: tower::buffer::Buffer<Request<Body>, S::Future>,
    layer: GuardLayer,
}

impl<S> Clone for Guard<S>
where
    S: Service<Request<Body>>,
    S::Future: Send + 'static,
{
    fn clone(&self) -> Self {
        Guard {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, B> Service<Request<Body>> for Guard<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is awaited inside `call`, after the token, on the handle that call owns.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let mut inner = self.inner.clone();
        let layer = self.layer.clone();
        Box::pin(async move {
            // Read once: the timeout, the watch exemption and the metrics all go by it.
            let labels = crate::metrics::RequestLabels::of(&req);
            let bucket = match &layer.lease_bucket {
                Some(leases) if is_lease(&req) => leases,
                _ => &layer.bucket,
            };
            let wait = match bucket.lock() {
                Ok(mut b) => b.reserve(Instant::now()),
                Err(poisoned) => poisoned.into_inner().reserve(Instant::now()),
            };
            if !wait.is_zero() {
                if let Some(m) = &layer.metrics {
                    m.rate_limited(wait);
                }
                tokio::time::sleep(wait).await;
            }
            // Last checks before the request leaves: the work may have been handed over, or
            // the deadline may have passed, while this task waited for a token or was paused.
            if let Some(wanted) = req.extensions().get::<Wanted>() {
                if !(wanted.0)() {
                    return Err(NOT_WANTED.into());
                }
            }
            if let Some(gate) = &layer.gate {
                if gated(&req) && !gate.is_open() {
                    return Err("not sent: this replica's Lease deadline has passed".into());
                }
            }
            let started = std::time::Instant::now();
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            // A page of a label-selected list is read from etcd and, when the selector matches
            // few objects (the owned-buckets watch at start-up), scans the whole keyspace: ~9 s
            // at 100k namespaces on a small server. Lists are reads, so the bound the Lease
            // protocol needs (`--api-timeout`, on writes) does not apply to them.
            let timeout = if labels.verb == "list" {
                layer.timeout.max(LIST_TIMEOUT)
            } else {
                layer.timeout
            };
            let fut = inner.call(req);
            let result = if labels.verb == "watch" {
                fut.await
            } else {
                match tokio::time::timeout(timeout, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("request timed out after {timeout:?}").into()),
                }
            };
            if let Some(m) = &layer.metrics {
                let code = match &result {
                    Ok(resp) => resp.status().as_u16().to_string(),
                    Err(_) => "error".to_string(),
                };
                m.api_request(&labels, &code, started.elapsed());
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_paces_at_qps() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5);
        for _ in 0..5 {
            assert_eq!(b.reserve(t0), Duration::ZERO);
        }
        // The 6th request at the same instant waits one refill period, the 7th two.
        assert_eq!(b.reserve(t0), Duration::from_millis(100));
        assert_eq!(b.reserve(t0), Duration::from_millis(200));
        // After a long idle period the bucket is full again, never more than `burst`.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(b.reserve(later), Duration::ZERO);
        }
        assert!(b.reserve(later) > Duration::ZERO);
    }

    /// Sends `path` through `guard` and returns how long it waited (virtual time).
    async fn waited<S>(guard: &mut Guard<S>, path: &str) -> Duration
    where
        S: Service<Request<Body>, Response = Response<()>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError> + Send + Sync,
    {
        let req = Request::put(path)
            .body(Body::empty())
            .expect("a valid request");
        let start = Instant::now();
        guard.call(req).await.expect("the stub answers");
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn lease_requests_never_queue_behind_range_work() {
        let layer = GuardLayer {
            bucket: Arc::new(Mutex::new(TokenBucket::new(1.0, 1))),
            lease_bucket: Some(Arc::new(Mutex::new(TokenBucket::new(1.0, 3)))),
            timeout: Duration::from_secs(30),
            metrics: None,
            gate: None,
        };
        let stub = tower::service_fn(|_req: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(()))
        });
        let mut guard = layer.layer(stub);
        let ns = "/api/v1/namespaces/a";
        let lease =
            "/apis/coordination.k8s.io/v1/namespaces/block-system/leases/block-controller-range-1";
        // Range work takes the only token, then waits a full second for the next one.
        assert_eq!(waited(&mut guard, ns).await, Duration::ZERO);
        // Leases draw on their own bucket: a burst of three passes at once…
        for _ in 0..3 {
            assert_eq!(waited(&mut guard, lease).await, Duration::ZERO);
        }
        // …then paces at the same QPS, without touching range work's tokens.
        assert_eq!(waited(&mut guard, lease).await, Duration::from_secs(1));
        assert_eq!(waited(&mut guard, ns).await, Duration::ZERO);
        assert_eq!(waited(&mut guard, ns).await, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn work_handed_over_while_waiting_for_a_token_is_not_sent() {
        let layer = GuardLayer {
            bucket: Arc::new(Mutex::new(TokenBucket::new(1.0, 1))),
            lease_bucket: None,
            timeout: Duration::from_secs(30),
            metrics: None,
            gate: None,
        };
        let sent = Arc::new(AtomicU32::new(0));
        let counter = sent.clone();
        let stub = tower::service_fn(move |_req: Request<Body>| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, std::convert::Infallible>(Response::new(())) }
        });
        let mut guard = layer.layer(stub);
        let ours = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let request = |ours: &Arc<std::sync::atomic::AtomicBool>| {
            let ours = ours.clone();
            let mut req = Request::patch("/api/v1/namespaces/a")
                .body(Body::empty())
                .expect("a valid request");
            req.extensions_mut()
                .insert(Wanted::new(move || ours.load(Ordering::Relaxed)));
            req
        };
        // The first takes the only token and is sent.
        guard.call(request(&ours)).await.expect("sent");
        // The second waits a second for its token; the range is handed over meanwhile.
        let waiting = tokio::spawn(guard.call(request(&ours)));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            sent.load(Ordering::Relaxed),
            1,
            "still waiting for its token"
        );
        ours.store(false, Ordering::Relaxed);
        let refused = waiting.await.expect("the task ends").expect_err("not sent");
        assert_eq!(refused.to_string(), NOT_WANTED);
        assert_eq!(sent.load(Ordering::Relaxed), 1);
    }
}
