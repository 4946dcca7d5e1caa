//! Background sampling over the whole run: each replica's `/metrics` (API requests by verb,
//! owned ranges, queue) and RSS (`/proc/<pid>/status`), and the API server's own `/metrics`
//! (`apiserver_request_total` by verb).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::{http_get, rss_mib};
use crate::prom;

/// A replica to scrape.
#[derive(Clone, Debug)]
pub struct Target {
    pub identity: String,
    pub metrics_port: u16,
    /// Local process id (RSS), when the replica runs here.
    pub pid: Option<u32>,
}

/// One replica at one instant.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplicaSample {
    pub identity: String,
    /// The scrape answered.
    pub up: bool,
    pub rss_mib: Option<f64>,
    /// `block_controller_api_requests_total` by verb (cumulative).
    pub api_by_verb: BTreeMap<String, f64>,
    pub owned_ranges: Option<f64>,
    pub ranges: Option<f64>,
    pub queue_depth: Option<f64>,
    pub indexed: Option<f64>,
    pub leader: Option<f64>,
}

impl ReplicaSample {
    /// Every API request so far.
    pub fn api_total(&self) -> f64 {
        self.api_by_verb.values().sum()
    }
}

/// Everything at one instant.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    pub replicas: Vec<ReplicaSample>,
    /// `apiserver_request_total` by verb (cumulative, every client), when scraped this time.
    pub apiserver_by_verb: Option<BTreeMap<String, f64>>,
}

/// Scrapes one replica.
pub async fn scrape(t: &Target) -> ReplicaSample {
    let mut s = ReplicaSample {
        identity: t.identity.clone(),
        rss_mib: t.pid.and_then(rss_mib),
        ..Default::default()
    };
    if let Some((200, body)) = http_get(t.metrics_port, "/metrics").await {
        let samples = prom::parse(&body);
        s.up = true;
        s.api_by_verb = prom::by_label(&samples, "block_controller_api_requests_total", "verb");
        s.owned_ranges = prom::sum(&samples, "block_controller_owned_ranges");
        s.ranges = prom::sum(&samples, "block_controller_ranges");
        s.queue_depth = prom::sum(&samples, "block_controller_queue_depth");
        s.indexed = prom::sum(&samples, "block_controller_indexed_namespaces");
        s.leader = prom::sum(&samples, "block_controller_leader");
    }
    s
}

/// The API server's request counters by verb.
pub async fn apiserver_by_verb(client: &kube::Client) -> Option<BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = tokio::time::timeout(Duration::from_secs(10), client.request_text(req))
        .await
        .ok()?
        .ok()?;
    let samples = prom::parse(&text);
    let by = prom::by_label(&samples, "apiserver_request_total", "verb");
    (!by.is_empty()).then_some(by)
}

/// Shared state of the sampler.
#[derive(Clone, Default)]
pub struct Sampler {
    targets: Arc<Mutex<Vec<Target>>>,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Sampler {
    /// Replaces the set of replicas to scrape.
    pub fn set_targets(&self, targets: Vec<Target>) {
        *self.targets.lock().unwrap_or_else(|p| p.into_inner()) = targets;
    }

    /// The replicas scraped now.
    pub fn targets(&self) -> Vec<Target> {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Samples every `interval` (the API server every 5 intervals) until the task is aborted.
    pub fn spawn(
        &self,
        client: kube::Client,
        t0: Instant,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let t = t0.elapsed().as_secs_f64();
                let targets = me.targets();
                let replicas = futures::future::join_all(targets.iter().map(scrape)).await;
                let apiserver_by_verb = if n % 5 == 0 {
                    apiserver_by_verb(&client).await
                } else {
                    None
                };
                n += 1;
                me.samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Sample {
                        t,
                        replicas,
                        apiserver_by_verb,
                    });
            }
        })
    }
}

/// Range-seconds left unowned between samples `from..to` (seconds since start):
/// ∫ max(ranges) − Σ owned_ranges, by the trapezoid rule over the samples.
pub fn unowned_range_seconds(samples: &[Sample], ranges: u32, from: f64, to: f64) -> f64 {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= from && s.t <= to)
        .map(|s| {
            let owned: f64 = s
                .replicas
                .iter()
                .filter(|r| r.up)
                .filter_map(|r| r.owned_ranges)
                .sum();
            (s.t, (f64::from(ranges) - owned).max(0.0))
        })
        .collect();
    points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64, owned: &[f64]) -> Sample {
        Sample {
            t,
            replicas: owned
                .iter()
                .map(|&o| ReplicaSample {
                    up: true,
                    owned_ranges: Some(o),
                    ..Default::default()
                })
                .collect(),
            apiserver_by_verb: None,
        }
    }

    #[test]
    fn unowned_time_integrates_the_gap() {
        let s = vec![
            at(0.0, &[128.0, 128.0]),
            at(1.0, &[128.0]),
            at(2.0, &[128.0]),
            at(3.0, &[256.0]),
        ];
        // 0→1: 0..128 (64), 1→2: 128 (128), 2→3: 128..0 (64).
        assert_eq!(unowned_range_seconds(&s, 256, 0.0, 3.0), 256.0);
        assert_eq!(unowned_range_seconds(&s, 256, 3.0, 3.0), 0.0);
    }
}
