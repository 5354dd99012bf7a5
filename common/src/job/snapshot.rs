//! `snapshot`: the article's flow: name an instance and its volume, find the volume, snapshot
//! it as "<Name> Snap", and wait until the snapshot completes.

use clap::{ArgAction, Args};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::tag::{as_map, Tag};
use crate::validate::Validate;
use crate::validate::Violations;

/// Exactly one of `volume_id`, `volume_name` and `instance_id` chooses what to snapshot, and
/// `name` does not go with `volume_name` (rules across fields, which the JSON Schema does not
/// state; the worker and producer check them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Snapshot this volume (`vol-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::pattern::VOLUME_ID))]
    #[arg(long)]
    pub volume_id: Option<String>,
    /// Snapshot the volume whose `Name` tag is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        pattern(crate::validate::pattern::XML_SAFE)
    )]
    #[arg(long)]
    pub volume_name: Option<String>,
    /// Snapshot every volume attached to this instance (`i-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::pattern::INSTANCE_ID))]
    #[arg(long)]
    pub instance_id: Option<String>,
    /// First tag the instance and its volume with `Name` = this (with `instance_id` or
    /// `volume_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        pattern(crate::validate::pattern::XML_SAFE)
    )]
    #[arg(long)]
    pub name: Option<String>,
    /// Snapshot description; defaults to "<Name> Snap".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), pattern(crate::validate::pattern::XML_SAFE))]
    #[arg(long)]
    pub description: Option<String>,
    /// Tags for the snapshot.
    #[serde(default, with = "as_map", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "as_map::schema")]
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<Tag>,
    /// Finish only once the snapshot is `completed` (default). `--no-wait` finishes as soon
    /// as it is started.
    #[serde(default = "super::yes")]
    #[arg(long = "no-wait", action = ArgAction::SetFalse)]
    pub wait: bool,
    /// Check permissions and parameters with EC2's DryRun; nothing is created.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

impl Validate for Snapshot {
    fn validate(&self, v: &mut Violations) {
        v.volume_choice(
            &[
                ("volume_id", self.volume_id.is_some()),
                ("volume_name", self.volume_name.is_some()),
                ("instance_id", self.instance_id.is_some()),
            ],
            None,
            self.volume_id.as_deref(),
            self.volume_name.as_deref(),
            self.instance_id.as_deref(),
        );
        if let Some(name) = &self.name {
            if self.volume_name.is_some() {
                v.add(
                    "name",
                    "cannot be set with volume_name, which already selects by Name",
                );
            }
            if name.is_empty() {
                v.add("name", "must not be empty");
            }
            v.text("name", name, 256);
        }
        if let Some(description) = &self.description {
            v.text("description", description, 255);
        }
        v.tags("tags", &self.tags);
    }
}

impl Kind for Snapshot {
    const NAME: &'static str = "snapshot";
    const DESCRIPTION: &'static str =
        "Snapshot a volume, optionally naming the instance and volume first.";

    fn tags(&self) -> &[Tag] {
        &self.tags
    }

    fn dry_run(&self) -> Option<bool> {
        Some(self.dry_run)
    }

    fn example() -> Self {
        Snapshot {
            volume_id: None,
            volume_name: Some("db".into()),
            instance_id: None,
            name: None,
            description: None,
            tags: vec![],
            wait: false,
            dry_run: false,
        }
    }
}
