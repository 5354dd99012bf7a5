//! `restore-volume`: the article's "return to some point in the past": a volume made from a
//! snapshot (named, or the newest completed one of a volume or of the volumes a `Name` tag
//! names), in an availability zone, tagged, optionally attached to an instance.

use clap::{ArgAction, Args};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::tag::{as_map, Tag};
use crate::validate::Validate;
use crate::validate::Violations;

/// Exactly one of `snapshot_id`, `volume_id` and `volume_name` chooses the snapshot, and
/// `instance_id` goes with `device` (rules across fields, which the JSON Schema does not
/// state; the worker and producer check them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(deny_unknown_fields)]
pub struct RestoreVolume {
    /// Restore this snapshot (`snap-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^snap-([0-9a-f]{8}|[0-9a-f]{17})$"))]
    #[arg(long)]
    pub snapshot_id: Option<String>,
    /// Restore the newest completed snapshot of this volume (`vol-…`; it may be gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::pattern::VOLUME_ID))]
    #[arg(long)]
    pub volume_id: Option<String>,
    /// Restore the newest completed snapshot of the volumes whose `Name` tag is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        pattern(crate::validate::pattern::XML_SAFE)
    )]
    #[arg(long)]
    pub volume_name: Option<String>,
    /// The availability zone of the new volume, e.g. `us-east-1a`.
    #[schemars(length(min = 1, max = 64))]
    #[arg(long)]
    pub availability_zone: String,
    /// Tags for the new volume.
    #[serde(default, with = "as_map", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "as_map::schema")]
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<Tag>,
    /// Attach the volume to this instance (`i-…`), at `device`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::pattern::INSTANCE_ID))]
    #[arg(long)]
    pub instance_id: Option<String>,
    /// The device name to attach at, e.g. `/dev/sdf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[arg(long)]
    pub device: Option<String>,
    /// Finish only once the volume is `available` (or `in-use`, attached) (default).
    /// `--no-wait` finishes as soon as it is created.
    #[serde(default = "super::yes")]
    #[arg(long = "no-wait", action = ArgAction::SetFalse)]
    pub wait: bool,
    /// Check permissions and parameters with EC2's DryRun; nothing is created.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

impl Validate for RestoreVolume {
    fn validate(&self, v: &mut Violations) {
        v.volume_choice(
            &[
                ("snapshot_id", self.snapshot_id.is_some()),
                ("volume_id", self.volume_id.is_some()),
                ("volume_name", self.volume_name.is_some()),
            ],
            None,
            self.volume_id.as_deref(),
            self.volume_name.as_deref(),
            None,
        );
        if let Some(id) = &self.snapshot_id {
            v.resource_id("snapshot_id", id, "snap-");
        }
        if self.availability_zone.is_empty() {
            v.add("availability_zone", "must not be empty");
        }
        match (&self.instance_id, &self.device) {
            (Some(id), Some(device)) => {
                v.resource_id("instance_id", id, "i-");
                if !device.starts_with("/dev/") && !device.starts_with("xvd") {
                    v.add(
                        "device",
                        format!("`{device}` is not a device name (`/dev/sdf`)"),
                    );
                }
            }
            (None, None) => {}
            (Some(_), None) => v.add("device", "is needed with instance_id"),
            (None, Some(_)) => v.add("instance_id", "is needed with device"),
        }
        v.tags("tags", &self.tags);
    }
}

impl Kind for RestoreVolume {
    const NAME: &'static str = "restore-volume";
    const DESCRIPTION: &'static str =
        "Make a volume from a snapshot, optionally attached to an instance.";

    fn tags(&self) -> &[Tag] {
        &self.tags
    }

    fn dry_run(&self) -> Option<bool> {
        Some(self.dry_run)
    }

    fn example() -> Self {
        RestoreVolume {
            snapshot_id: None,
            volume_id: None,
            volume_name: Some("db".into()),
            availability_zone: "us-east-1a".into(),
            tags: vec![Tag::new("Name", "db-restored")],
            instance_id: Some("i-12345678".into()),
            device: Some("/dev/sdf".into()),
            wait: true,
            dry_run: false,
        }
    }
}
