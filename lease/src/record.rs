//! The Lease as plain data, and the writes the core asks the driver to make.

use std::fmt;

/// Annotation the driver writes on a member Lease when [`LeaseRecord::leaving`] is true
/// (value `"true"`; absent means false).
pub const LEAVING_ANNOTATION: &str = "coordination.clawcloud.run/leaving";

/// Label the driver puts on every Lease of the protocol, with the configured prefix as value,
/// so one label-selected list+watch sees them all.
pub const PREFIX_LABEL: &str = "coordination.clawcloud.run/lease-prefix";

/// What a Lease of the protocol stands for; its name says it (see
/// [`Config::lease_name`](crate::Config::lease_name)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseKind {
    /// `<prefix>-member-<identity>`: one per member identity, renewed by the live holder.
    Member(String),
    /// `<prefix>-range-<r>`: the claim on hash range `r`; written only when ownership changes.
    Range(u32),
    /// `<prefix>-leader`: the leader lease for singleton duties.
    Leader,
}

/// The fields of a `coordination.k8s.io/v1` Lease the protocol reads and writes.
///
/// Observed records come from the driver's watch; records in a [`Request`] are what to write
/// (for an update, `resource_version` is the *expected* version: a compare-and-swap). The
/// driver maps them to Lease objects: `holder` to `spec.holderIdentity` (`None` = absent or
/// empty), `lease_duration_secs` to `spec.leaseDurationSeconds`, `renew_time_micros` to
/// `spec.renewTime`, `leaving` to the [`LEAVING_ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseRecord {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.resourceVersion`: opaque; compared only for equality. Empty in a create.
    pub resource_version: String,
    /// `spec.holderIdentity`: `<identity>_<instance>` of the holder, `None` when released.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub lease_duration_secs: Option<i32>,
    /// `spec.renewTime` in microseconds since the Unix epoch. The core only ever checks it
    /// for *change* (a record whose renew time, holder or resourceVersion changed counts as
    /// renewed), never against a clock. Written records carry a stamp that is unique per
    /// write of the member (its clock plus [`Config::wall_clock_at_origin_micros`](crate::Config::wall_clock_at_origin_micros)):
    /// the driver must write it unchanged (as a MicroTime with exactly 6 fractional digits
    /// for a v1.20 server) and report it back unchanged, since that is how a member
    /// recognizes its own renew whose response was lost.
    pub renew_time_micros: Option<i64>,
    /// The member announced it is leaving for good (scale-down): exclude it from the
    /// assignment at once. Only meaningful on member leases.
    pub leaving: bool,
}

impl LeaseRecord {
    /// A record with only a name and resource version set.
    pub fn new(name: impl Into<String>, resource_version: impl Into<String>) -> LeaseRecord {
        LeaseRecord {
            name: name.into(),
            resource_version: resource_version.into(),
            holder: None,
            lease_duration_secs: None,
            renew_time_micros: None,
            leaving: false,
        }
    }

    /// The holder, with an empty string read as no holder.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }
}

/// Identifies one write, so its result can be matched with [`Machine::handle_write_result`](crate::Machine::handle_write_result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A write the driver must send, with a bounded timeout (see the crate docs), and whose
/// result it must report exactly once with [`Machine::handle_write_result`](crate::Machine::handle_write_result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Create the lease; it must not exist yet (`AlreadyExists` otherwise).
    Create {
        /// The request's id.
        id: RequestId,
        /// The lease to create (`resource_version` empty).
        lease: LeaseRecord,
    },
    /// Replace the lease if its resourceVersion is still `lease.resource_version`
    /// (a PUT with `metadata.resourceVersion` set; `Conflict` otherwise). Never a patch.
    Update {
        /// The request's id.
        id: RequestId,
        /// The new content, with the *expected* resourceVersion.
        lease: LeaseRecord,
    },
    /// Delete the lease if its resourceVersion is still `lease.resource_version` (a DELETE
    /// with that precondition; `Conflict` otherwise, `NotFound` when already gone). Only the
    /// leader sends it, for member leases of identities gone for good.
    Delete {
        /// The request's id.
        id: RequestId,
        /// The lease's name and *expected* resourceVersion (other fields unused).
        lease: LeaseRecord,
    },
}

impl Request {
    /// The request's id.
    pub fn id(&self) -> RequestId {
        match self {
            Request::Create { id, .. }
            | Request::Update { id, .. }
            | Request::Delete { id, .. } => *id,
        }
    }

    /// The lease to write.
    pub fn lease(&self) -> &LeaseRecord {
        match self {
            Request::Create { lease, .. }
            | Request::Update { lease, .. }
            | Request::Delete { lease, .. } => lease,
        }
    }
}

/// The result of a [`Request`], as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write landed; the lease as stored (with its new resourceVersion).
    Ok(LeaseRecord),
    /// An update found another resourceVersion (HTTP 409 on update).
    Conflict,
    /// An update found no lease (HTTP 404).
    NotFound,
    /// A create found the lease already there (HTTP 409 on create).
    AlreadyExists,
    /// Anything else: timeout, transport error, 5xx, 429. The write *may* have landed, but
    /// only before the request's timeout (the driver's guarantee); the core treats the
    /// outcome as unknown.
    Failed,
}
