//! OpenTelemetry export, end to end: the released binary against the real API server, exporting
//! OTLP/HTTP (protobuf) to a receiver in this test, which decodes what arrives.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use block_controller::api::STATUS_LABEL;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

/// The identity `common::controller_with` gives the replica.
const IDENTITY: &str = "block-controller-test";

/// Everything the receiver decoded, and what it could not.
#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    errors: Vec<String>,
}

/// A minimal OTLP/HTTP receiver on loopback: HTTP/1.1 with keep-alive, `Content-Length` bodies,
/// `/v1/traces` and `/v1/metrics` decoded as protobuf; answers 200 with an empty (valid) response.
fn receiver() -> (u16, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
    let port = listener.local_addr().expect("address").port();
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let sink = sink.clone();
            std::thread::spawn(move || serve(conn, &sink));
        }
    });
    (port, received)
}

fn serve(conn: TcpStream, sink: &Mutex<Received>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
    let mut conn = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return; // closed
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        {
            let mut r = sink.lock().expect("receiver state");
            let content_type = headers.get("content-type").cloned().unwrap_or_default();
            if content_type != "application/x-protobuf" {
                r.errors
                    .push(format!("{path}: content-type {content_type:?}"));
            }
            match path.as_str() {
                "/v1/traces" => match ExportTraceServiceRequest::decode(body.as_slice()) {
                    Ok(req) => r.traces.push(req),
                    Err(e) => r.errors.push(format!("{path}: {e}")),
                },
                "/v1/metrics" => match ExportMetricsServiceRequest::decode(body.as_slice()) {
                    Ok(req) => r.metrics.push(req),
                    Err(e) => r.errors.push(format!("{path}: {e}")),
                },
                other => r.errors.push(format!("unexpected path {other}")),
            }
        }
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        );
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// An integer attribute. tracing-opentelemetry 0.34 records unsigned fields (`u32`, `u64`) as
/// their decimal text, signed ones as integers: both are accepted.
fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(Value::IntValue(i)) => Some(*i),
        Some(Value::StringValue(s)) => s.parse().ok(),
        _ => None,
    }
}

#[tokio::test]
async fn reconcile_spans_and_metrics_arrive_over_otlp() {
    let (port, received) = receiver();
    // Inherited by the controller process, which `controller_with` starts next (the only
    // process-wide change this test binary makes, before any other thread reads the environment).
    std::env::set_var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    );
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "500");
    common::controller_with(&[]);
    let client = common::client().await;
    let ns = common::create_namespace(&client, "otel", &[(STATUS_LABEL, "locked")]).await;

    // The lock's span: resource = this replica; attributes as the engine records them.
    let (range, calls) = common::eventually(
        Duration::from_secs(30),
        "a reconcile span for the locked namespace",
        || {
            let r = received.lock().expect("receiver state");
            let found = r
                .traces
                .iter()
                .flat_map(|t| &t.resource_spans)
                .find_map(|rs| {
                    let resource = &rs.resource.as_ref()?.attributes;
                    (str_attr(resource, "service.instance.id") == Some(IDENTITY)).then_some(())?;
                    rs.scope_spans
                        .iter()
                        .flat_map(|s| &s.spans)
                        .filter(|s| s.name == "reconcile")
                        .filter(|s| str_attr(&s.attributes, "namespace") == Some(ns.as_str()))
                        .filter(|s| str_attr(&s.attributes, "action") == Some("lock"))
                        .find_map(|s| {
                            (str_attr(&s.attributes, "outcome") == Some("ok")).then_some(())?;
                            Some((
                                int_attr(&s.attributes, "range")?,
                                int_attr(&s.attributes, "api_calls")?,
                            ))
                        })
                });
            std::future::ready(found)
        },
    )
    .await;
    assert!(range >= 0, "range {range}");
    // A lock makes a dozen calls. 0 means the per-reconcile count (a task-local in the client's
    // tower stack) did not see them: kube::Client buffers requests and runs the stack on its own
    // task, where the reconcile's task-local is not set.
    assert!(calls > 0, "the lock's span says api_calls={calls}");

    // Metrics: the bridged Prometheus families, same resource; the lock counted.
    common::eventually(
        Duration::from_secs(30),
        "OTLP metrics with the replica's resource and the lock counted",
        || {
            let r = received.lock().expect("receiver state");
            let found = r
                .metrics
                .iter()
                .flat_map(|m| &m.resource_metrics)
                .any(|rm| {
                    let ours = rm.resource.as_ref().is_some_and(|res| {
                        str_attr(&res.attributes, "service.instance.id") == Some(IDENTITY)
                            && str_attr(&res.attributes, "service.name") == Some("block-controller")
                    });
                    let metrics: Vec<_> =
                        rm.scope_metrics.iter().flat_map(|s| &s.metrics).collect();
                    let locks_ok = metrics
                        .iter()
                        .filter(|m| m.name == "block_controller_reconciles_total")
                        .any(|m| match &m.data {
                            Some(Data::Sum(sum)) => {
                                sum.is_monotonic
                                    && sum.data_points.iter().any(|p| {
                                        str_attr(&p.attributes, "action") == Some("lock")
                                            && str_attr(&p.attributes, "outcome") == Some("ok")
                                            && str_attr(&p.attributes, "replica") == Some(IDENTITY)
                                    })
                            }
                            _ => false,
                        });
                    let owned = metrics.iter().any(|m| {
                        m.name == "block_controller_owned_ranges"
                            && matches!(&m.data, Some(Data::Gauge(g)) if !g.data_points.is_empty())
                    });
                    ours && locks_ok && owned
                });
            std::future::ready(found.then_some(()))
        },
    )
    .await;
    let r = received.lock().expect("receiver state");
    assert!(r.errors.is_empty(), "receiver errors: {:?}", r.errors);
}
