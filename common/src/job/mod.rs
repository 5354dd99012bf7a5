//! The job contract: what a service in any language puts on the queue.
//!
//! A message body is one JSON object, the [`JobEnvelope`]:
//!
//! ```json
//! {"schema_version": 1, "job_id": "3f0c…", "kind": "canary",
//!  "submitted_at": "2026-11-24T10:00:00Z", "params": {"sleep_ms": 0}}
//! ```
//!
//! A kind is a type ([`Kind`], in `kind.rs`): each built-in kind's parameters, name and
//! policies are in a file of its own here, and the [`builtin_kinds!`] list below names them
//! once (one line a kind) for the table of known kinds, the built-in [`JobKind`] names and the
//! producer CLI's subcommands. A library user's kind is a `Kind` like these, outside this
//! crate. The envelope is `envelope.rs`, the job id `id.rs`, the errors `error.rs`, chains
//! `chain/`.
//!
//! Unknown fields are refused everywhere: a misspelt `disable_api_termination` must fail
//! loudly rather than launch unprotected instances.

mod canary;
pub mod chain;
mod copy;
mod create_image;
mod described;
mod envelope;
mod error;
mod id;
mod kind;
mod prune;
mod register;
mod restore;
mod run_instances;
mod snapshot;
mod terminate;
mod termination;

pub use crate::tag::Tag;
pub use crate::validate::Validate;
pub use canary::Canary;
pub use chain::FollowUp;
pub use copy::{is_region, CopySnapshot};
pub use create_image::CreateImage;
pub use described::{learn_kinds, learn_kinds_from_file};
pub use envelope::{
    json_schema, parse_request_line, parse_request_line_as, with_default_id, JobEnvelope,
    MAX_SCHEDULE_AHEAD,
};
pub use error::ContractError;
pub use id::JobId;
pub use kind::{is_kind_name, register, Job, JobKind, Kind, KindError};
pub use prune::{keep_for_duration, PruneSnapshots};
pub use register::RegisterImage;
pub use restore::RestoreVolume;
pub use run_instances::RunInstances;
pub use snapshot::Snapshot;
pub use terminate::TerminateInstances;
pub use termination::SetTerminationProtection;

/// The envelope version this build writes and reads. A worker refuses other versions rather
/// than guess at their meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// SQS's limit on one message, body and attributes together. SNS has the same limit, so a
/// job that fits here also fits in its completion event's echo of the job id and kind.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

macro_rules! builtin_kinds {
    ($( $kind:ident, )+) => {
        /// The built-in kinds, in their published order: the table of known kinds starts
        /// with them.
        static BUILTIN: &[kind::KindInfo] = &[$(kind::KindInfo::of::<$kind>()),+];

        /// The built-in kinds by the names of their types (`JobKind::RunInstances`), as the
        /// closed enum they once were named.
        #[allow(non_upper_case_globals)]
        impl JobKind {
            $( pub const $kind: JobKind = JobKind::of::<$kind>(); )+
        }

        /// The built-in kinds as the producer CLI's subcommands, one per kind with its
        /// parameters as flags (`shoal-producer snapshot --volume-id …`); any kind, built-in
        /// or not, is also sent by name with JSON parameters (`send`).
        #[derive(Debug, Clone, clap::Subcommand)]
        pub enum BuiltinJob {
            $(
                #[command(name = <$kind as Kind>::NAME, about = <$kind as Kind>::DESCRIPTION)]
                $kind($kind),
            )+
        }

        impl From<BuiltinJob> for Job {
            fn from(job: BuiltinJob) -> Job {
                match job { $(BuiltinJob::$kind(p) => Job::new(p),)+ }
            }
        }
    };
}

builtin_kinds! {
    RunInstances,
    CreateImage,
    Snapshot,
    SetTerminationProtection,
    PruneSnapshots,
    CopySnapshot,
    RestoreVolume,
    RegisterImage,
    TerminateInstances,
    Canary,
}

/// The default of the `wait` parameters (`#[serde(default = "super::yes")]`): a job
/// finishes once its effect is done unless it says otherwise.
fn yes() -> bool {
    true
}
