//! `set-termination-protection`: the article's `modify_instance_attribute` on
//! `DisableApiTermination`, which lifts (or sets) the protection `run-instances` gave.

use clap::{ArgAction, Args};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::validate::Validate;
use crate::validate::Violations;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(deny_unknown_fields)]
pub struct SetTerminationProtection {
    /// The instances to change (`i-…`).
    #[schemars(
        length(min = 1, max = 1000),
        inner(pattern(crate::validate::pattern::INSTANCE_ID))
    )]
    #[arg(long = "instance-id", value_name = "INSTANCE_ID", required = true)]
    pub instance_ids: Vec<String>,
    /// `true` protects the instances from termination, `false` lifts the protection. Always
    /// explicit: there is no safe default for a safety setting.
    #[arg(long, action = ArgAction::Set, required = true)]
    pub disable_api_termination: bool,
}

/// A generous bound that keeps one job's API calls and event small.
const MAX_INSTANCES: usize = 1000;

impl Validate for SetTerminationProtection {
    fn validate(&self, v: &mut Violations) {
        v.instance_ids("instance_ids", &self.instance_ids, MAX_INSTANCES);
    }
}

impl Kind for SetTerminationProtection {
    const NAME: &'static str = "set-termination-protection";
    const DESCRIPTION: &'static str = "Turn termination protection on or off for instances.";
    /// Termination protection set twice is set: no lease, and no ledger call on its path.
    const TAKES_LEASE: bool = false;

    /// It has no dry run: a dry-run-only worker refuses it.
    fn dry_run(&self) -> Option<bool> {
        Some(false)
    }

    fn example() -> Self {
        SetTerminationProtection {
            instance_ids: vec!["i-12345678".into()],
            disable_api_termination: true,
        }
    }
}
