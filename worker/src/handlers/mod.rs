//! The built-in handlers, one file per kind, and the registry of them all (one line a kind;
//! a test fails for a built-in kind without its line).

mod canary;
pub mod consistency;
mod copy;
mod create_image;
pub mod ec2;
pub mod limiter;
mod prune;
mod register;
mod restore;
mod run_instances;
mod settings;
mod snapshot;
mod terminate;
mod termination;

use std::sync::Arc;

pub use canary::CanaryHandler;
pub use copy::CopySnapshotHandler;
pub use create_image::CreateImageHandler;
pub use limiter::Ec2Limiter;
pub use prune::PruneSnapshotsHandler;
pub use register::RegisterImageHandler;
pub use restore::RestoreVolumeHandler;
pub use run_instances::RunInstancesHandler;
pub use settings::Ec2Settings;
pub use snapshot::SnapshotHandler;
pub use terminate::TerminateInstancesHandler;
pub use termination::TerminationProtectionHandler;

use crate::handler::Registry;

/// Every EC2 operation the built-in handlers call: what `--ec2-rate` may name (a rate for an
/// operation no handler calls would be a typo that paces nothing). A test keeps it whole.
pub const EC2_OPERATIONS: &[&str] = &[
    "AttachVolume",
    "CopySnapshot",
    "CreateImage",
    "CreateSnapshot",
    "CreateTags",
    "CreateVolume",
    "DeleteSnapshot",
    "DescribeImages",
    "DescribeInstanceAttribute",
    "DescribeInstances",
    "DescribeSnapshots",
    "DescribeVolumes",
    "ModifyInstanceAttribute",
    "RegisterImage",
    "RunInstances",
    "TerminateInstances",
];

/// A registry with every built-in handler, pacing EC2 calls with default settings.
pub fn default_registry() -> Registry {
    registry_with(Ec2Settings::default())
}

/// A registry with every built-in handler, sharing one EC2 rate limiter made with `settings`.
pub fn registry_with(settings: Ec2Settings) -> Registry {
    builtin_registry(&Arc::new(Ec2Limiter::new(settings)))
}

/// A registry with every built-in handler, sharing `limiter` (as a binary's own kinds may).
/// A built-in kind without its line here fails `the_default_registry_handles_every_kind`
/// (and the worker binary refuses to start).
pub fn builtin_registry(limiter: &Arc<Ec2Limiter>) -> Registry {
    let mut registry = Registry::new();
    registry
        .register(CanaryHandler)
        .register(RunInstancesHandler {
            limiter: limiter.clone(),
        })
        .register(CreateImageHandler {
            limiter: limiter.clone(),
        })
        .register(SnapshotHandler {
            limiter: limiter.clone(),
        })
        .register(TerminationProtectionHandler {
            limiter: limiter.clone(),
        })
        .register(CopySnapshotHandler {
            limiter: limiter.clone(),
        })
        .register(RegisterImageHandler::new(limiter.clone()))
        .register(RestoreVolumeHandler {
            limiter: limiter.clone(),
        })
        .register(PruneSnapshotsHandler {
            limiter: limiter.clone(),
        })
        .register(TerminateInstancesHandler {
            limiter: limiter.clone(),
        });
    registry
}

#[cfg(test)]
mod tests {

    /// Every operation named in a handler's pacing call is in [`super::EC2_OPERATIONS`], so
    /// `--ec2-rate` accepts each operation a handler calls.
    #[test]
    fn every_operation_a_handler_paces_may_be_given_a_rate() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/handlers");
        let mut found = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir).expect("handlers") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            for call in ["call(", "paced(", "create_once(", "pages("] {
                for (at, _) in text.match_indices(call) {
                    let rest = text[at + call.len()..].trim_start();
                    if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                        if name.chars().all(|c| c.is_ascii_alphabetic()) && !name.is_empty() {
                            found.insert(name.to_owned());
                        }
                    }
                }
            }
        }
        assert!(found.len() > 5, "{found:?}");
        for op in &found {
            assert!(
                super::EC2_OPERATIONS.contains(&op.as_str()),
                "{op} is missing"
            );
        }
    }
    use super::*;

    #[test]
    fn the_default_registry_handles_every_kind() {
        assert_eq!(
            default_registry().missing(),
            Vec::<shoal_common::JobKind>::new()
        );
    }
}
