//! block-controller: locks, unlocks and expires Kubernetes namespaces.
//!
//! The contract is `SPEC.md`. Modules, one concern each:
//! - [`api`]: the BlockRequest CRD and the wire names shared with the original controller;
//! - [`config`]: flags and their validation;
//! - [`client`]: the rate-limited, counted, timed Kubernetes client;
//! - [`state`]: the pure decision of what a namespace needs;
//! - [`flows`]: lock, unlock and expiry as API calls;
//! - [`queue`]: the deduplicating work queue;
//! - [`engine`]: watch → queue → workers, the index and the expiry timer;
//! - [`blockrequest`]: BlockRequest intake;
//! - [`events`], [`metrics`], [`http`]: what operators see; [`telemetry`]: logs and OTLP export;
//! - [`sharding`]: the kube driver of the Lease protocol (ranges gained, drained, lost; leadership);
//! - [`run`]: the wiring.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod blockrequest;
pub mod bucket;
pub mod client;
pub mod config;
pub mod context;
pub mod engine;
pub mod events;
pub mod flows;
pub mod http;
pub mod metrics;
pub mod pages;
pub mod queue;
pub mod run;
pub mod sharding;
pub mod state;
pub mod telemetry;
