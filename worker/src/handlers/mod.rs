//! The built-in handlers, one file per kind, and the registry of them all.

mod canary;

pub use canary::CanaryHandler;

use crate::handler::Registry;

/// A registry with every built-in handler.
pub fn default_registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(CanaryHandler);
    registry
}
