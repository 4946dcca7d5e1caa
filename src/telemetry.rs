//! Logging, and OpenTelemetry export over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! ```text
//!  tracing spans/events ──► EnvFilter ──┬─► fmt (stderr logs, always)
//!                                       └─► tracing-opentelemetry ─► batch ─► OTLP/HTTP /v1/traces
//!  Prometheus exposition ─► bridge thread (parse, snapshot) ─► observable instruments
//!                                       └─► periodic reader ─► OTLP/HTTP /v1/metrics
//! ```
//!
//! **Traces.** Every `tracing` span becomes an OpenTelemetry span; the one that matters is
//! `reconcile` (one per worker run, see [`crate::engine`]) with the attributes `namespace`,
//! `range`, `action`, `outcome` and `api_calls`. Spans pass the same filter as the logs
//! (`RUST_LOG`, default `info,kube=warn`).
//!
//! **Metrics: a bridge, not a mirror.** The OTLP metrics are the families `/metrics` serves,
//! read at export time: a thread reads the replica's exposition text every half export interval,
//! keeps the parsed samples as a snapshot, and registers one observable instrument per series
//! name the first time it appears (counters, and the `_bucket` / `_sum` / `_count` series of
//! histograms, as observable counters; gauges as observable gauges), whose callback reports the
//! snapshot's samples with their labels (`replica` included). Why a bridge:
//! - one source of truth: every metric is defined and updated once, in [`crate::metrics`]; a
//!   mirror would double every update site and drift as soon as a metric is added;
//! - the series keep their Prometheus names and labels, so the same Grafana dashboard and alerts
//!   work on either path (scraped, or OTLP → collector → Prometheus);
//! - nothing runs on the hot path: instruments are read only when an export is due.
//!
//! The price: histograms arrive as their cumulative `_bucket{le}` / `_sum` / `_count` counters
//! rather than as OTLP histogram points (the OTel API has no observable histogram), and values
//! are up to half an export interval old. The exposition is read from the replica's own
//! `/metrics` endpoint over loopback ([`scrape`]), so OTLP metrics need `--metrics-bind-address`.
//!
//! **Resource.** `service.name=block-controller` (or `OTEL_SERVICE_NAME`),
//! `service.instance.id=<replica identity>`, `service.version`, and `k8s.pod.name` /
//! `k8s.namespace.name` from `POD_NAME` / `POD_NAMESPACE`; `OTEL_RESOURCE_ATTRIBUTES` adds more.
//! Dashboards split per shard on `service.instance.id`.
//!
//! **Transport.** OTLP over HTTP with protobuf bodies (`http/protobuf`, port 4318), posted through
//! the hyper client and rustls (ring) stack the Kubernetes client already uses: no gRPC, no
//! second HTTP or TLS stack; `https://` endpoints are verified against the system's roots. The standard variables apply: `OTEL_EXPORTER_OTLP_ENDPOINT` (the
//! switch; `/v1/traces` and `/v1/metrics` are appended), `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_METRIC_EXPORT_INTERVAL`;
//! `OTEL_TRACES_EXPORTER=none` or `OTEL_METRICS_EXPORTER=none` turns one signal off,
//! `OTEL_SDK_DISABLED=true` both. The SDK exports from its own threads; each request is handed to
//! the controller's tokio runtime, so [`Telemetry::shutdown`] must run while that runtime exists.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::metrics::Meter;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The log (and span) filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,kube=warn";
/// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "block-controller";

/// Per-request limit of an export; the SDK retries with backoff on its own.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// An OTLP response is a small status message; anything bigger is refused.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The installed logging and, when configured, the OTLP pipelines. Call [`Telemetry::shutdown`]
/// before the tokio runtime goes away, so the last spans and metrics are sent.
#[must_use = "call shutdown() to flush the last spans and metrics"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    bridge: Option<Bridge>,
}

/// What [`init`] needs to know about the replica.
pub struct Options<'a> {
    /// The replica identity (`service.instance.id`).
    pub identity: &'a str,
    /// Where the replica serves `/metrics` (the bridge reads it); `None`: no OTLP metrics.
    pub metrics_addr: Option<SocketAddr>,
    /// The runtime the exporters' HTTP requests run on.
    pub runtime: tokio::runtime::Handle,
}

/// Installs the global `tracing` subscriber (logs to stderr), plus the OTLP trace and metric
/// pipelines when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Fails on an unusable OTLP configuration
/// (say, an endpoint that is no URL): a deployment error is better seen at once.
pub fn init(opts: Options<'_>) -> anyhow::Result<Telemetry> {
    let mut telemetry = Telemetry {
        tracer: None,
        meter: None,
        bridge: None,
    };
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT");
    let enabled = endpoint.is_some()
        && env("OTEL_SDK_DISABLED").is_none_or(|v| !v.eq_ignore_ascii_case("true"));
    let mut notes = Vec::new();
    if enabled {
        let resource = resource(opts.identity);
        let client = OtlpClient::new(opts.runtime.clone(), OtlpClient::https_configured())?;
        if env("OTEL_EXPORTER_OTLP_PROTOCOL").is_some_and(|p| p != "http/protobuf") {
            notes.push("only OTLP http/protobuf is built in: OTEL_EXPORTER_OTLP_PROTOCOL ignored");
        }
        if signal_on("OTEL_TRACES_EXPORTER") {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_http_client(client.clone())
                .build()
                .context("building the OTLP span exporter")?;
            telemetry.tracer = Some(
                SdkTracerProvider::builder()
                    .with_resource(resource.clone())
                    .with_batch_exporter(exporter)
                    .build(),
            );
        }
        if signal_on("OTEL_METRICS_EXPORTER") {
            match opts.metrics_addr {
                Some(addr) => {
                    let exporter = opentelemetry_otlp::MetricExporter::builder()
                        .with_http()
                        .with_protocol(Protocol::HttpBinary)
                        .with_http_client(client)
                        .build()
                        .context("building the OTLP metric exporter")?;
                    let provider = SdkMeterProvider::builder()
                        .with_resource(resource)
                        .with_reader(PeriodicReader::builder(exporter).build())
                        .build();
                    let meter =
                        opentelemetry::metrics::MeterProvider::meter(&provider, "block-controller");
                    telemetry.bridge =
                        Some(Bridge::start(meter, export_interval() / 2, move || {
                            scrape(addr)
                        }));
                    telemetry.meter = Some(provider);
                }
                None => notes.push("OTLP metrics need --metrics-bind-address: not exported"),
            }
        }
    }
    let otel = telemetry
        .tracer
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("block-controller")));
    tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)))
        .with(tracing_subscriber::fmt::layer())
        .with(otel)
        .try_init()
        .context("installing the tracing subscriber")?;
    for note in notes {
        warn!("{note}");
    }
    if enabled {
        info!(
            endpoint = endpoint.as_deref().unwrap_or_default(),
            traces = telemetry.tracer.is_some(),
            metrics = telemetry.meter.is_some(),
            "exporting OpenTelemetry over OTLP/HTTP"
        );
    }
    Ok(telemetry)
}

impl Telemetry {
    /// Whether anything is exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some() || self.meter.is_some()
    }

    /// Sends what is buffered and stops the exporters (each bounded by a few seconds). Must run
    /// while the tokio runtime given to [`init`] still exists, outside of it.
    pub fn shutdown(self) {
        if let Some(bridge) = self.bridge {
            bridge.stop();
        }
        if let Some(meter) = self.meter {
            if let Err(e) = meter.shutdown_with_timeout(Duration::from_secs(5)) {
                warn!(error = %e, "flushing OTLP metrics failed");
            }
        }
        if let Some(tracer) = self.tracer {
            if let Err(e) = tracer.shutdown_with_timeout(Duration::from_secs(5)) {
                warn!(error = %e, "flushing OTLP spans failed");
            }
        }
    }
}

/// The resource every span and metric carries: who sent it, so dashboards split per shard.
pub fn resource(identity: &str) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.instance.id", identity.to_string()),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Some(pod) = env("POD_NAME") {
        attrs.push(KeyValue::new("k8s.pod.name", pod));
    }
    if let Some(ns) = env("POD_NAMESPACE") {
        attrs.push(KeyValue::new("k8s.namespace.name", ns));
    }
    // The builder's detectors read OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; ours win,
    // except for the service name, which an explicit OTEL_SERVICE_NAME may change.
    Resource::builder()
        .with_service_name(env("OTEL_SERVICE_NAME").unwrap_or_else(|| SERVICE_NAME.into()))
        .with_attributes(attrs)
        .build()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `OTEL_{TRACES,METRICS}_EXPORTER` is unset or names OTLP.
fn signal_on(var: &str) -> bool {
    env(var).is_none_or(|v| v.split(',').any(|e| e.trim() == "otlp"))
}

/// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds), as the SDK's periodic reader reads it.
fn export_interval() -> Duration {
    env("OTEL_METRIC_EXPORT_INTERVAL")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(60))
}

// ---------------------------------------------------------------------------------------------
// Transport

type HttpConnector = hyper_util::client::legacy::connect::HttpConnector;
type Pool<C> = hyper_util::client::legacy::Client<C, Full<Bytes>>;

/// The exporters' HTTP client: the hyper client of the kube stack, plain, or with rustls (ring)
/// and the system's roots when an endpoint is `https://` (the roots are not needed, nor
/// loaded, otherwise). The SDK calls it from its export threads, outside any runtime; each
/// request is spawned onto the controller's runtime and awaited from there.
#[derive(Clone)]
struct OtlpClient {
    pool: Transport,
    runtime: tokio::runtime::Handle,
}

#[derive(Clone)]
enum Transport {
    Http(Pool<HttpConnector>),
    Https(Pool<hyper_rustls::HttpsConnector<HttpConnector>>),
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpClient")
    }
}

impl OtlpClient {
    /// Whether a configured endpoint needs TLS.
    fn https_configured() -> bool {
        [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ]
        .into_iter()
        .filter_map(env)
        .any(|e| e.trim_start().to_ascii_lowercase().starts_with("https:"))
    }

    fn new(runtime: tokio::runtime::Handle, https: bool) -> anyhow::Result<OtlpClient> {
        let builder =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        let pool = if https {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .context("loading the system's root certificates for OTLP over https")?
                .https_or_http()
                .enable_http1()
                .build();
            Transport::Https(builder.build(connector))
        } else {
            Transport::Http(builder.build(HttpConnector::new()))
        };
        Ok(OtlpClient { pool, runtime })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let pool = self.pool.clone();
        let send = async move {
            let (parts, body) = request.into_parts();
            let request = http::Request::from_parts(parts, Full::new(body));
            let response = match pool {
                Transport::Http(c) => c.request(request).await?,
                Transport::Https(c) => c.request(request).await?,
            };
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        };
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, send).await });
        match task.await? {
            Ok(result) => result,
            Err(_) => Err(format!("no OTLP response within {EXPORT_TIMEOUT:?}").into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics bridge

/// A series' samples as of the last read: attributes (the Prometheus labels) and value.
type Points = Vec<(Vec<KeyValue>, f64)>;

/// The thread that reads the exposition and registers instruments; see the module docs.
struct Bridge {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Bridge {
    fn start<F>(meter: Meter, every: Duration, mut read: F) -> Bridge
    where
        F: FnMut() -> Option<String> + Send + 'static,
    {
        let every = every.max(Duration::from_millis(100));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("otlp-metrics-bridge".into())
            .spawn(move || {
                let snapshot: Arc<Mutex<HashMap<String, Points>>> = Arc::default();
                let mut registered = HashSet::new();
                loop {
                    if let Some(text) = read() {
                        refresh(&meter, &snapshot, &mut registered, &parse_exposition(&text));
                    }
                    // Wakes on stop (a message or the sender dropped) or after `every`.
                    if !matches!(
                        stopped.recv_timeout(every),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    ) {
                        return;
                    }
                }
            });
        match thread {
            Ok(thread) => Bridge { stop, thread },
            Err(e) => panic!("cannot start the metrics bridge thread: {e}"),
        }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Replaces the snapshot with `families` and registers an instrument for each new series name.
fn refresh(
    meter: &Meter,
    snapshot: &Arc<Mutex<HashMap<String, Points>>>,
    registered: &mut HashSet<String>,
    families: &[Family],
) {
    let mut next: HashMap<String, Points> = HashMap::new();
    let mut new = Vec::new();
    for family in families {
        for s in &family.samples {
            if !registered.contains(&s.name) && !next.contains_key(&s.name) {
                new.push((
                    s.name.clone(),
                    family.help.clone(),
                    family.series_kind(&s.name),
                ));
            }
            let attrs = s
                .labels
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect();
            next.entry(s.name.clone())
                .or_default()
                .push((attrs, s.value));
        }
    }
    *snapshot.lock().unwrap_or_else(|p| p.into_inner()) = next;
    // Outside the lock: the first export after this reads them.
    for (name, help, kind) in new {
        let snap = snapshot.clone();
        let key = name.clone();
        let observe = move |o: &dyn opentelemetry::metrics::AsyncInstrument<f64>| {
            let snap = snap.lock().unwrap_or_else(|p| p.into_inner());
            for (attrs, v) in snap.get(&key).into_iter().flatten() {
                o.observe(*v, attrs);
            }
        };
        // The SDK keeps the callback for the provider's lifetime; the handle is not needed.
        match kind {
            SeriesKind::Counter => {
                meter
                    .f64_observable_counter(name.clone())
                    .with_description(help)
                    .with_callback(observe)
                    .build();
            }
            SeriesKind::Gauge => {
                meter
                    .f64_observable_gauge(name.clone())
                    .with_description(help)
                    .with_callback(observe)
                    .build();
            }
        }
        registered.insert(name);
    }
}

/// Reads `/metrics` from the replica's own endpoint (loopback when bound to every address).
/// Blocking, bounded by 5 s; `None` when it is not up (yet).
pub fn scrape(addr: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let timeout = Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.take(64 << 20).read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The Prometheus type of a family (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    /// Monotonic total.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// `_bucket{le}`, `_sum`, `_count`.
    Histogram,
    /// Quantiles, `_sum`, `_count`.
    Summary,
    /// No `# TYPE` line (treated as a gauge).
    Untyped,
}

/// How a series is exported: a cumulative counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeriesKind {
    Counter,
    Gauge,
}

/// One metric family of the text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Family name (`block_controller_reconcile_duration_seconds`).
    pub name: String,
    /// `# HELP` text.
    pub help: String,
    /// `# TYPE`.
    pub kind: FamilyKind,
    /// Its samples (for a histogram: the `_bucket`, `_sum` and `_count` series).
    pub samples: Vec<Sample>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series name (a histogram's carry `_bucket`, `_sum`, `_count`).
    pub name: String,
    /// Labels in order of appearance.
    pub labels: Vec<(String, String)>,
    /// Value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Family {
    fn series_kind(&self, series: &str) -> SeriesKind {
        let suffix = series.strip_prefix(self.name.as_str()).unwrap_or("");
        match (self.kind, suffix) {
            (FamilyKind::Counter, _) => SeriesKind::Counter,
            (FamilyKind::Histogram, "_bucket" | "_sum" | "_count") => SeriesKind::Counter,
            (FamilyKind::Summary, "_sum" | "_count") => SeriesKind::Counter,
            _ => SeriesKind::Gauge,
        }
    }
}

/// Parses the Prometheus text exposition format (0.0.4) as [`crate::metrics`] renders it.
/// Lines that do not parse are skipped; timestamps are ignored.
pub fn parse_exposition(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.trim_start().splitn(3, ' ');
            let (Some(what), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            let arg = words.next().unwrap_or("").trim();
            let family = family_mut(&mut families, name);
            match what {
                "HELP" => family.help = unescape(arg, false),
                "TYPE" => {
                    family.kind = match arg {
                        "counter" => FamilyKind::Counter,
                        "gauge" => FamilyKind::Gauge,
                        "histogram" => FamilyKind::Histogram,
                        "summary" => FamilyKind::Summary,
                        _ => FamilyKind::Untyped,
                    }
                }
                _ => {}
            }
            continue;
        }
        let Some(sample) = parse_sample(line) else {
            continue;
        };
        let family = match families.last() {
            Some(f) if belongs(f, &sample.name) => f.name.clone(),
            _ => sample.name.clone(),
        };
        family_mut(&mut families, &family).samples.push(sample);
    }
    families
}

fn belongs(family: &Family, series: &str) -> bool {
    let Some(suffix) = series.strip_prefix(family.name.as_str()) else {
        return false;
    };
    match family.kind {
        FamilyKind::Histogram => matches!(suffix, "" | "_bucket" | "_sum" | "_count"),
        FamilyKind::Summary => matches!(suffix, "" | "_sum" | "_count"),
        _ => suffix.is_empty(),
    }
}

fn family_mut<'a>(families: &'a mut Vec<Family>, name: &str) -> &'a mut Family {
    let i = match families.iter().rposition(|f| f.name == name) {
        Some(i) => i,
        None => {
            families.push(Family {
                name: name.to_string(),
                help: String::new(),
                kind: FamilyKind::Untyped,
                samples: Vec::new(),
            });
            families.len() - 1
        }
    };
    &mut families[i]
}

/// `name{k="v",…} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let after = after.strip_prefix('"')?;
            // The value ends at the first quote not escaped by a backslash.
            let mut escaped = false;
            let close = after.char_indices().find_map(|(i, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end.then_some(i)
            })?;
            labels.push((key.trim().to_string(), unescape(&after[..close], true)));
            rest = &after[close + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Undoes `\\`, `\n` (and in label values `\"`).
fn unescape(s: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn parses_what_metrics_renders() {
        let m = Metrics::new("block-controller-1");
        m.reconcile("lock", "ok", Duration::from_millis(20));
        m.lease_write("member", "ok");
        m.set_owned_ranges(7);
        let families = parse_exposition(&m.render());
        let find = |name: &str| {
            families
                .iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("{name} in {families:#?}"))
        };
        let owned = find("block_controller_owned_ranges");
        assert_eq!(owned.kind, FamilyKind::Gauge);
        assert_eq!(owned.samples.len(), 1);
        assert_eq!(owned.samples[0].value, 7.0);
        assert_eq!(
            owned.samples[0].labels,
            vec![("replica".to_string(), "block-controller-1".to_string())]
        );
        let writes = find("block_controller_lease_writes_total");
        assert_eq!(writes.kind, FamilyKind::Counter);
        assert!(writes.samples[0]
            .labels
            .contains(&("lease".into(), "member".into())));
        let h = find("block_controller_reconcile_duration_seconds");
        assert_eq!(h.kind, FamilyKind::Histogram);
        let inf = h
            .samples
            .iter()
            .find(|s| s.labels.contains(&("le".into(), "+Inf".into())))
            .expect("+Inf bucket");
        assert_eq!(
            inf.name,
            "block_controller_reconcile_duration_seconds_bucket"
        );
        assert_eq!(inf.value, 1.0);
        assert!(h
            .samples
            .iter()
            .any(|s| s.name.ends_with("_count") && s.value == 1.0));
        assert_eq!(h.series_kind(&inf.name), SeriesKind::Counter);
        assert_eq!(
            owned.series_kind("block_controller_owned_ranges"),
            SeriesKind::Gauge
        );
    }

    #[test]
    fn escapes_and_odd_lines() {
        let text = "# HELP x_total a \\\\ help\n# TYPE x_total counter\n\
                    x_total{a=\"q\\\"uote, \\\\ and \\n\",b=\"}\"} 3 1700000000\n\
                    garbage{\n\
                    y NaN\n\
                    z{le=\"+Inf\"} +Inf\n";
        let f = parse_exposition(text);
        assert_eq!(f[0].help, "a \\ help");
        assert_eq!(
            f[0].samples[0].labels,
            vec![
                ("a".to_string(), "q\"uote, \\ and \n".to_string()),
                ("b".to_string(), "}".to_string())
            ]
        );
        assert_eq!(f[0].samples[0].value, 3.0);
        let y = f.iter().find(|f| f.name == "y").expect("y");
        assert!(y.samples[0].value.is_nan());
        assert_eq!(y.kind, FamilyKind::Untyped);
        let z = f.iter().find(|f| f.name == "z").expect("z");
        assert_eq!(z.samples[0].value, f64::INFINITY);
        assert!(f.iter().all(|f| f.name != "garbage{"));
    }

    #[tokio::test]
    async fn https_transport_loads_the_system_roots() {
        let handle = tokio::runtime::Handle::current();
        assert!(matches!(
            OtlpClient::new(handle.clone(), false).map(|c| c.pool),
            Ok(Transport::Http(_))
        ));
        assert!(matches!(
            OtlpClient::new(handle, true).map(|c| c.pool),
            Ok(Transport::Https(_))
        ));
    }

    #[test]
    fn resource_names_the_replica() {
        let r = resource("block-controller-2");
        assert_eq!(
            r.get(&"service.instance.id".into()),
            Some("block-controller-2".into())
        );
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            assert_eq!(r.get(&"service.name".into()), Some(SERVICE_NAME.into()));
        }
    }
}
