//! `canary`: a job that touches no AWS service. Operators enqueue it as an end-to-end probe
//! of the pipeline; the benchmark uses it as the no-op job.

use clap::Args;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::validate::Validate;
use crate::validate::Violations;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// Sleep this long before completing, to probe long-running behaviour.
    #[serde(default)]
    #[schemars(range(max = MAX_SLEEP_MS))]
    #[arg(long, default_value_t = 0)]
    pub sleep_ms: u64,
}

/// SQS's longest visibility timeout: a probe longer than that says nothing useful.
const MAX_SLEEP_MS: u64 = 12 * 60 * 60 * 1000;

impl Validate for Canary {
    fn validate(&self, v: &mut Violations) {
        if self.sleep_ms > MAX_SLEEP_MS {
            v.add(
                "sleep_ms",
                format!("must be at most {MAX_SLEEP_MS} (12 hours)"),
            );
        }
    }
}

impl Kind for Canary {
    const NAME: &'static str = "canary";
    const DESCRIPTION: &'static str = "Do no AWS work: an end-to-end probe of the pipeline.";
    /// It creates nothing: no lease, and no ledger call on a probe's path.
    const TAKES_LEASE: bool = false;

    fn dry_run(&self) -> Option<bool> {
        None
    }

    fn example() -> Self {
        Canary { sleep_ms: 0 }
    }
}
