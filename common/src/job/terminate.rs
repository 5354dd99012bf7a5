//! `terminate-instances`: the end of an instance, the article's last step. Only instances
//! Shoal launched (they carry `shoal:job-id`) unless the worker allows more; a protected
//! instance is EC2's to refuse, and an instance already terminated is done.

use clap::Args;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::validate::Validate;
use crate::validate::Violations;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(deny_unknown_fields)]
pub struct TerminateInstances {
    /// The instances to terminate (`i-…`).
    #[schemars(
        length(min = 1, max = 1000),
        inner(pattern(crate::validate::pattern::INSTANCE_ID))
    )]
    #[arg(long = "instance-id", value_name = "INSTANCE_ID", required = true)]
    pub instance_ids: Vec<String>,
    /// Only ask EC2 whether the termination would be allowed (`DryRun`); nothing ends.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

/// A generous bound that keeps one job's API calls and event small.
const MAX_INSTANCES: usize = 1000;

impl Validate for TerminateInstances {
    fn validate(&self, v: &mut Violations) {
        v.instance_ids("instance_ids", &self.instance_ids, MAX_INSTANCES);
    }
}

impl Kind for TerminateInstances {
    const NAME: &'static str = "terminate-instances";
    const DESCRIPTION: &'static str = "Terminate instances Shoal launched.";

    fn dry_run(&self) -> Option<bool> {
        Some(self.dry_run)
    }

    fn example() -> Self {
        TerminateInstances {
            instance_ids: vec!["i-12345678".into()],
            dry_run: true,
        }
    }
}
