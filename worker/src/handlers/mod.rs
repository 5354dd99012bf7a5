//! The built-in handlers, one file per kind, and the registry of them all.

mod canary;
mod create_image;
pub mod ec2;
mod run_instances;
mod snapshot;
mod termination;

use std::sync::Arc;

pub use canary::CanaryHandler;
pub use create_image::CreateImageHandler;
pub use ec2::{Ec2Limiter, Ec2Settings};
pub use run_instances::RunInstancesHandler;
pub use snapshot::SnapshotHandler;
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
        .register(TerminationProtectionHandler { limiter });
    registry
}
