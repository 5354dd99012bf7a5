//! How the EC2 handlers pace their calls and their waits: one settings type, at the bottom
//! of the handlers' layers, read by the limiter, the consistency rules and each handler.

use std::collections::HashMap;
use std::time::Duration;

/// How the EC2 handlers pace their calls and their waits.
#[derive(Debug, Clone)]
pub struct Ec2Settings {
    /// Calls per second allowed for each EC2 operation, in this worker.
    pub calls_per_second: f64,
    /// Per-operation overrides, e.g. `RunInstances` → 2.
    pub operation_rates: HashMap<String, f64>,
    /// Shortest and longest pause between checks of an operation under way.
    pub wait_check_min: Duration,
    pub wait_check_max: Duration,
    /// How long a wait may last, from the resource's start, before the job fails.
    pub wait_deadline: Duration,
    /// How long EC2 may take to show what was just created: until then, a lookup that finds
    /// nothing is no proof that an earlier run created nothing, and `…NotFound` for an id
    /// Shoal itself created is "not yet", not "gone".
    pub consistency_window: Duration,
    /// Owners (account ids, or `amazon`) whose AMIs `run-instances` may launch; empty
    /// means any.
    pub allowed_image_owners: Vec<String>,
    /// Whether the kinds that destroy may end what Shoal did not make (what carries no
    /// `shoal:job-id`). Off: only Shoal's own.
    pub allow_destroying_untagged: bool,
}

impl Default for Ec2Settings {
    fn default() -> Self {
        Ec2Settings {
            calls_per_second: 10.0,
            operation_rates: HashMap::new(),
            wait_check_min: Duration::from_secs(5),
            wait_check_max: Duration::from_secs(600),
            wait_deadline: Duration::from_secs(6 * 60 * 60),
            consistency_window: Duration::from_secs(60),
            allowed_image_owners: Vec::new(),
            allow_destroying_untagged: false,
        }
    }
}
