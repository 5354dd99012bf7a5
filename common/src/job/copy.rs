//! `copy-snapshot`: a snapshot copied into another region, as DLM's cross-region copy and
//! AWS Backup's copy actions do: the point in the past kept where a region's bad day cannot
//! reach it. The copy carries the source's tags, the job's, and Shoal's.

use clap::{ArgAction, Args};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::tag::{as_map, Tag};
use crate::validate::Validate;
use crate::validate::Violations;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(deny_unknown_fields)]
pub struct CopySnapshot {
    /// The snapshot to copy (`snap-…`).
    #[schemars(pattern(r"^snap-([0-9a-f]{8}|[0-9a-f]{17})$"))]
    #[arg(long)]
    pub snapshot_id: String,
    /// The region to copy it into, e.g. `us-west-2`.
    #[schemars(pattern(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    #[arg(long)]
    pub destination_region: String,
    /// The region the snapshot is in (default: the worker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    #[arg(long)]
    pub source_region: Option<String>,
    /// The copy's description (default: "Copy of <snapshot id>").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), pattern(crate::validate::pattern::XML_SAFE))]
    #[arg(long)]
    pub description: Option<String>,
    /// Encrypt the copy: with `kms_key_id`, or the account's default EBS key there.
    #[serde(default)]
    #[arg(long)]
    pub encrypted: bool,
    /// The KMS key (id, alias or ARN) in the destination region to encrypt the copy with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[arg(long)]
    pub kms_key_id: Option<String>,
    /// Tags for the copy, besides the source's.
    #[serde(default, with = "as_map", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "as_map::schema")]
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<Tag>,
    /// Finish only once the copy is `completed` (default). `--no-wait` finishes as soon as
    /// it is started.
    #[serde(default = "super::yes")]
    #[arg(long = "no-wait", action = ArgAction::SetFalse)]
    pub wait: bool,
    /// Check permissions and parameters with EC2's DryRun; nothing is copied.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

/// Whether `region` reads as an AWS region name (`us-west-2`, `ap-southeast-1`).
pub fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let Some((number, words)) = parts.split_last() else {
        return false;
    };
    parts.len() >= 3
        && words.first().is_some_and(|w| w.len() == 2)
        && parts.iter().all(|p| !p.is_empty())
        && words
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_lowercase()))
        && number.chars().all(|c| c.is_ascii_digit())
}

impl Validate for CopySnapshot {
    fn validate(&self, v: &mut Violations) {
        v.resource_id("snapshot_id", &self.snapshot_id, "snap-");
        if !is_region(&self.destination_region) {
            v.add(
                "destination_region",
                format!(
                    "`{}` is not an AWS region name (`us-west-2`)",
                    self.destination_region
                ),
            );
        }
        if let Some(source) = &self.source_region {
            if !is_region(source) {
                v.add(
                    "source_region",
                    format!("`{source}` is not an AWS region name (`us-east-1`)"),
                );
            }
            if *source == self.destination_region {
                v.add(
                    "destination_region",
                    "is the source region: a copy is made in another region",
                );
            }
        }
        if let Some(description) = &self.description {
            v.text("description", description, 255);
        }
        if self.kms_key_id.is_some() && !self.encrypted {
            v.add("kms_key_id", "is only used with encrypted: true");
        }
        v.tags("tags", &self.tags);
    }
}

impl Kind for CopySnapshot {
    const NAME: &'static str = "copy-snapshot";
    const DESCRIPTION: &'static str = "Copy a snapshot into another region.";

    fn tags(&self) -> &[Tag] {
        &self.tags
    }

    fn dry_run(&self) -> Option<bool> {
        Some(self.dry_run)
    }

    fn reaches(&self) -> Option<(&'static str, &str)> {
        Some(("params.destination_region", &self.destination_region))
    }

    fn example() -> Self {
        CopySnapshot {
            snapshot_id: "snap-12345678".into(),
            destination_region: "us-west-2".into(),
            source_region: None,
            description: Some("nightly copy".into()),
            encrypted: true,
            kms_key_id: Some("alias/backup".into()),
            tags: vec![Tag::new("backup", "nightly")],
            wait: true,
            dry_run: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_told_from_other_strings() {
        for ok in [
            "us-east-1",
            "us-west-2",
            "ap-southeast-1",
            "us-gov-west-1",
            "eu-central-2",
        ] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in [
            "",
            "us",
            "us-east",
            "US-EAST-1",
            "us-east-x",
            "us--1",
            "useast1",
            "u-east-1",
        ] {
            assert!(!is_region(bad), "{bad}");
        }
    }
}
