//! Every rule of SPEC.md against a real API server, through the released `block-controller`
//! binary (one control plane and one controller for this whole test binary; each test works in
//! namespaces of its own).

#[path = "../common/mod.rs"]
mod common;

mod blockrequests;
mod rules;
