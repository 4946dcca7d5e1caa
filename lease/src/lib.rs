//! Lease-based coordination of hash ranges between replicas (placeholder; filled in by the sharding issue).
#![deny(missing_docs)]
