//! `prune-snapshots`: retention as AWS Data Lifecycle Manager states it, for the snapshots
//! Shoal made. The snapshots of a volume, of an instance's volumes, or of the volumes named
//! by a `Name` tag, optionally narrowed by more tags, or those carrying the tags alone (a
//! copy in another region belongs to no volume there); keep the newest `keep_count` and
//! those younger than `keep_for` (a snapshot either rule keeps is kept), delete the rest.

use std::time::Duration;

use clap::Args;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::tag::{as_map, Tag};
use crate::validate::Validate;
use crate::validate::Violations;

/// Exactly one of `volume_id`, `volume_name` and `instance_id` chooses the snapshots (or
/// none, and `tags` alone do), and at least one of `keep_count` and `keep_for` says what stays (rules across fields, which the
/// JSON Schema does not state; the worker and producer check them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(deny_unknown_fields)]
pub struct PruneSnapshots {
    /// The snapshots of this volume (`vol-…`; it may be gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::pattern::VOLUME_ID))]
    #[arg(long)]
    pub volume_id: Option<String>,
    /// The snapshots of the volumes whose `Name` tag is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        pattern(crate::validate::pattern::XML_SAFE)
    )]
    #[arg(long)]
    pub volume_name: Option<String>,
    /// The snapshots of this instance's volumes (`i-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::pattern::INSTANCE_ID))]
    #[arg(long)]
    pub instance_id: Option<String>,
    /// Only snapshots that also carry these tags (with no volume named: the snapshots that
    /// carry them).
    #[serde(default, with = "as_map", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "as_map::schema")]
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<Tag>,
    /// Keep the newest this many completed snapshots (1 to 1,000, as DLM allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    #[arg(long)]
    pub keep_count: Option<u32>,
    /// Keep the snapshots younger than this: a number of hours, days or weeks (`36h`, `14d`,
    /// `8w`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[1-9][0-9]{0,5}[hdw]$"))]
    #[arg(long)]
    pub keep_for: Option<String>,
    /// The region the snapshots are in (default: the worker's), e.g. for copies made there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    #[arg(long)]
    pub region: Option<String>,
    /// List what would be deleted, and delete nothing.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

/// `keep_for` as a duration: `N` hours, days or weeks; `None` if it is not one.
pub fn keep_for_duration(text: &str) -> Option<Duration> {
    // The unit is the last character, whatever its width: splitting at a byte count would
    // panic inside a multi-byte one (`"1é"`).
    let (at, _) = text.char_indices().last()?;
    let (number, unit) = text.split_at(at);
    if number.is_empty()
        || number.starts_with('0')
        || number.len() > 6
        || !number.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    let hours = match unit {
        "h" => n,
        "d" => n * 24,
        "w" => n * 24 * 7,
        _ => return None,
    };
    Some(Duration::from_secs(hours * 3600))
}

impl Validate for PruneSnapshots {
    fn validate(&self, v: &mut Violations) {
        v.volume_choice(
            &[
                ("volume_id", self.volume_id.is_some()),
                ("volume_name", self.volume_name.is_some()),
                ("instance_id", self.instance_id.is_some()),
            ],
            (!self.tags.is_empty()).then_some("tags"),
            self.volume_id.as_deref(),
            self.volume_name.as_deref(),
            self.instance_id.as_deref(),
        );
        if self.keep_count.is_none() && self.keep_for.is_none() {
            v.add(
                "keep_count",
                "at least one of keep_count and keep_for must be set: a retention keeps something",
            );
        }
        if let Some(n) = self.keep_count {
            if !(1..=1000).contains(&n) {
                v.add("keep_count", format!("is {n}; must be 1 to 1000"));
            }
        }
        if let Some(text) = &self.keep_for {
            if keep_for_duration(text).is_none() {
                v.add(
                    "keep_for",
                    format!(
                        "`{text}` is not a number of hours, days or weeks (`36h`, `14d`, `8w`)"
                    ),
                );
            }
        }
        if let Some(region) = &self.region {
            if !super::is_region(region) {
                v.add(
                    "region",
                    format!("`{region}` is not an AWS region name (`us-west-2`)"),
                );
            }
        }
        v.tags("tags", &self.tags);
    }
}

impl Kind for PruneSnapshots {
    const NAME: &'static str = "prune-snapshots";
    const DESCRIPTION: &'static str =
        "Delete old snapshots Shoal made, keeping the newest and the young.";

    fn dry_run(&self) -> Option<bool> {
        Some(self.dry_run)
    }

    fn reaches(&self) -> Option<(&'static str, &str)> {
        self.region.as_deref().map(|r| ("params.region", r))
    }

    fn example() -> Self {
        PruneSnapshots {
            volume_id: None,
            volume_name: Some("db".into()),
            instance_id: None,
            tags: vec![Tag::new("backup", "nightly")],
            keep_count: Some(7),
            keep_for: Some("14d".into()),
            region: Some("us-west-2".into()),
            dry_run: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_for_reads_hours_days_and_weeks_only() {
        assert_eq!(
            keep_for_duration("36h"),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(
            keep_for_duration("14d"),
            Some(Duration::from_secs(14 * 86400))
        );
        assert_eq!(
            keep_for_duration("2w"),
            Some(Duration::from_secs(14 * 86400))
        );
        for bad in [
            "",
            "d",
            "0d",
            "07d",
            "14",
            "14m",
            "1.5d",
            "-1d",
            "+1d",
            "9999999d",
            "1é",
            "é",
            "1dé",
            "\u{1F600}d",
            "1\u{0}d",
        ] {
            assert_eq!(keep_for_duration(bad), None, "{bad}");
        }
    }
}
