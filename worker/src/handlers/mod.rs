//! The built-in handlers, one file per kind, and the registry of them all: an exhaustive
//! `match` over the kinds, so a kind without a handler does not compile.

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
use shoal_common::JobKind;
pub use snapshot::SnapshotHandler;
pub use terminate::TerminateInstancesHandler;
pub use termination::TerminationProtectionHandler;

use crate::handler::Registry;

/// A registry with every built-in handler, pacing EC2 calls with default settings.
pub fn default_registry() -> Registry {
    registry_with(Ec2Settings::default())
}

/// A registry with every built-in handler, sharing one EC2 rate limiter.
pub fn registry_with(settings: Ec2Settings) -> Registry {
    let limiter = Arc::new(Ec2Limiter::new(settings));
    let mut registry = Registry::new();
    for kind in JobKind::ALL {
        // Exhaustive: a kind without a built-in handler does not compile.
        match kind {
            JobKind::Canary => registry.register(CanaryHandler),
            JobKind::RunInstances => registry.register(RunInstancesHandler {
                limiter: limiter.clone(),
            }),
            JobKind::CreateImage => registry.register(CreateImageHandler {
                limiter: limiter.clone(),
            }),
            JobKind::Snapshot => registry.register(SnapshotHandler {
                limiter: limiter.clone(),
            }),
            JobKind::SetTerminationProtection => registry.register(TerminationProtectionHandler {
                limiter: limiter.clone(),
            }),
            JobKind::CopySnapshot => registry.register(CopySnapshotHandler {
                limiter: limiter.clone(),
            }),
            JobKind::RegisterImage => registry.register(RegisterImageHandler {
                limiter: limiter.clone(),
            }),
            JobKind::RestoreVolume => registry.register(RestoreVolumeHandler {
                limiter: limiter.clone(),
            }),
            JobKind::PruneSnapshots => registry.register(PruneSnapshotsHandler {
                limiter: limiter.clone(),
            }),
            JobKind::TerminateInstances => registry.register(TerminateInstancesHandler {
                limiter: limiter.clone(),
            }),
        };
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_registry_handles_every_kind() {
        assert_eq!(default_registry().missing(), Vec::<JobKind>::new());
    }
}
