//! block-controller: locks, unlocks and expires Kubernetes namespaces.
//!
//! The contract is `SPEC.md`; this crate is the controller binary's library so that integration
//! tests can reach the same types the binary uses.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
