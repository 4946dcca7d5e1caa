//! The controller replicas of a run: started as processes with StatefulSet-like identities
//! (`block-controller-<ordinal>`), killed, terminated and restarted by the fault scenarios, and
//! watched for range ownership.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cluster::{Cluster, Replica, ReplicaSpec};
use crate::sampler::{scrape, ReplicaSample, Sampler, Target};

/// The replicas.
pub struct Fleet<'a> {
    cluster: &'a Cluster,
    args: Vec<String>,
    /// Live (or at least not yet reaped) replicas by ordinal.
    pub replicas: BTreeMap<u32, Replica>,
    /// Replicas we do not run (KUBECONFIG mode): only scraped.
    external: Vec<Target>,
    sampler: Sampler,
    /// `--ranges` of the installation.
    pub ranges: u32,
}

/// Range ownership over the live replicas at one instant.
#[derive(Clone, Debug, Default)]
pub struct Ownership {
    /// (identity, owned ranges) of every replica that answered.
    pub owned: Vec<(String, u32)>,
}

impl Ownership {
    /// Σ owned_ranges.
    pub fn sum(&self) -> u32 {
        self.owned.iter().map(|(_, o)| o).sum()
    }

    /// Every range owned, each replica within ⌊R/N⌋..=⌈R/N⌉ (the assignment's balance).
    pub fn balanced(&self, ranges: u32, replicas: usize) -> bool {
        if self.owned.len() != replicas || replicas == 0 {
            return false;
        }
        let n = replicas as u32;
        let (lo, hi) = (ranges / n, ranges.div_ceil(n));
        self.sum() == ranges && self.owned.iter().all(|(_, o)| (lo..=hi).contains(o))
    }

    /// What `identity` owns.
    pub fn of(&self, identity: &str) -> u32 {
        self.owned
            .iter()
            .find(|(i, _)| i == identity)
            .map_or(0, |(_, o)| *o)
    }
}

/// How a wait for an ownership condition went.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Waited {
    /// Seconds until the condition held (or the timeout).
    pub seconds: f64,
    /// Whether it held.
    pub reached: bool,
    /// ∫ (ranges − Σ owned) dt over the wait, in range-seconds.
    pub unowned_range_seconds: f64,
    /// Longest stretch with at least one range unowned, in seconds.
    pub max_gap_seconds: f64,
}

/// The identity of ordinal `o`.
pub fn identity(o: u32) -> String {
    format!("block-controller-{o}")
}

impl<'a> Fleet<'a> {
    /// No replicas yet. `args` go to every replica.
    pub fn new(cluster: &'a Cluster, args: Vec<String>, sampler: Sampler, ranges: u32) -> Self {
        Fleet {
            cluster,
            args,
            replicas: BTreeMap::new(),
            external: Vec::new(),
            sampler,
            ranges,
        }
    }

    /// Replicas run by somebody else, scraped at `127.0.0.1:<port>` (e.g. `kubectl port-forward`).
    pub fn add_external(&mut self, ports: &[u16]) {
        self.external = ports
            .iter()
            .enumerate()
            .map(|(i, p)| Target {
                identity: format!("external-{i}"),
                metrics_port: *p,
                pid: None,
            })
            .collect();
        self.sync();
    }

    fn sync(&self) {
        let mut t: Vec<Target> = self.replicas.values().map(Replica::target).collect();
        t.extend(self.external.iter().cloned());
        self.sampler.set_targets(t);
    }

    /// Live replica count.
    pub fn live(&self) -> usize {
        self.replicas.len() + self.external.len()
    }

    /// Starts the replicas of `ordinals` at once, then waits until each is ready.
    pub async fn start(&mut self, ordinals: &[u32], timeout: Duration) -> anyhow::Result<()> {
        for &o in ordinals {
            let r = self
                .cluster
                .start_replica(&ReplicaSpec {
                    identity: identity(o),
                    args: self.args.clone(),
                    wait_ready: false,
                })
                .await?;
            self.replicas.insert(o, r);
        }
        self.sync();
        for &o in ordinals {
            if let Some(r) = self.replicas.get_mut(&o) {
                r.wait_ready(timeout).await?;
            }
        }
        Ok(())
    }

    /// `kill -9` of ordinal `o`.
    pub fn kill(&mut self, o: u32) -> anyhow::Result<()> {
        let mut r = self
            .replicas
            .remove(&o)
            .with_context(|| format!("no replica {o}"))?;
        r.kill()?;
        self.sync();
        Ok(())
    }

    /// SIGTERM to ordinal `o`; returns how long it took to exit (its graceful handover).
    pub async fn terminate(&mut self, o: u32, timeout: Duration) -> anyhow::Result<Duration> {
        let mut r = self
            .replicas
            .remove(&o)
            .with_context(|| format!("no replica {o}"))?;
        self.sync();
        r.terminate(timeout).await
    }

    /// SIGTERM to each of `ordinals` at once, as a StatefulSet with `podManagementPolicy:
    /// Parallel` (ours) scales down; returns how long each took to exit, in order.
    pub async fn terminate_all(
        &mut self,
        ordinals: &[u32],
        timeout: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut leaving = Vec::new();
        for &o in ordinals {
            let r = self
                .replicas
                .remove(&o)
                .with_context(|| format!("no replica {o}"))?;
            leaving.push(r);
        }
        self.sync();
        futures::future::join_all(leaving.iter_mut().map(|r| r.terminate(timeout)))
            .await
            .into_iter()
            .collect()
    }

    /// SIGTERM to every replica, at once.
    pub async fn stop_all(&mut self) {
        let ords: Vec<u32> = self.replicas.keys().copied().collect();
        let mut pending = Vec::new();
        for o in ords {
            if let Some(mut r) = self.replicas.remove(&o) {
                pending.push(async move {
                    let _ = r.terminate(Duration::from_secs(60)).await;
                });
            }
        }
        futures::future::join_all(pending).await;
        self.sync();
    }

    /// Replicas that died on their own (not killed by us).
    pub fn crashed(&mut self) -> Vec<String> {
        self.replicas
            .values_mut()
            .filter_map(|r| {
                (!r.alive()).then(|| format!("{} (log: {})", r.identity, r.log.display()))
            })
            .collect()
    }

    /// Scrapes every live replica now.
    pub async fn scrape(&self) -> Vec<ReplicaSample> {
        let targets = self.sampler.targets();
        futures::future::join_all(targets.iter().map(scrape)).await
    }

    /// Current range ownership.
    pub async fn ownership(&self) -> Ownership {
        Ownership {
            owned: self
                .scrape()
                .await
                .into_iter()
                .filter(|s| s.up)
                .map(|s| (s.identity, s.owned_ranges.unwrap_or(0.0) as u32))
                .collect(),
        }
    }

    /// The leader's ordinal, if a local replica says it leads.
    pub async fn leader(&self) -> Option<u32> {
        for (o, r) in &self.replicas {
            let s = scrape(&r.target()).await;
            if s.leader == Some(1.0) {
                return Some(*o);
            }
        }
        None
    }

    /// Polls ownership every 100 ms until `done` holds (or `timeout`), integrating the unowned
    /// ranges.
    pub async fn wait_ownership(
        &self,
        timeout: Duration,
        done: impl Fn(&Ownership) -> bool,
    ) -> Waited {
        let t0 = Instant::now();
        let mut last: Option<(Instant, u32)> = None;
        let mut w = Waited::default();
        let mut gap_since: Option<Instant> = None;
        loop {
            let own = self.ownership().await;
            let now = Instant::now();
            let unowned = self.ranges.saturating_sub(own.sum());
            if let Some((t, u)) = last {
                w.unowned_range_seconds += (now - t).as_secs_f64() * f64::from(u + unowned) / 2.0;
            }
            last = Some((now, unowned));
            match (unowned > 0, gap_since) {
                (true, None) => gap_since = Some(now),
                (false, Some(s)) => {
                    w.max_gap_seconds = w.max_gap_seconds.max((now - s).as_secs_f64());
                    gap_since = None;
                }
                _ => {}
            }
            if done(&own) || now - t0 > timeout {
                if let Some(s) = gap_since {
                    w.max_gap_seconds = w.max_gap_seconds.max((now - s).as_secs_f64());
                }
                w.reached = done(&own);
                w.seconds = (now - t0).as_secs_f64();
                return w;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_needs_every_range_and_fair_shares() {
        let o = |v: &[u32]| Ownership {
            owned: v
                .iter()
                .enumerate()
                .map(|(i, x)| (identity(i as u32), *x))
                .collect(),
        };
        assert!(o(&[86, 85, 85]).balanced(256, 3));
        assert!(!o(&[86, 85, 84]).balanced(256, 3));
        assert!(!o(&[128, 128]).balanced(256, 3));
        assert!(!o(&[256, 0]).balanced(256, 2));
        assert_eq!(o(&[1, 2]).of("block-controller-1"), 2);
    }
}
