//! `create-image`: create an AMI from an instance.

use clap::Args;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::tag::{as_map, Tag};
use crate::validate::Validate;
use crate::validate::{self, Violations};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(deny_unknown_fields)]
pub struct CreateImage {
    /// The instance to image (`i-…`).
    #[schemars(pattern(crate::validate::pattern::INSTANCE_ID))]
    #[arg(long)]
    pub instance_id: String,
    /// The AMI name: 3 to 128 characters, unique in the account and region.
    #[schemars(pattern(crate::validate::pattern::AMI_NAME))]
    #[arg(long)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), pattern(crate::validate::pattern::XML_SAFE))]
    #[arg(long)]
    pub description: Option<String>,
    /// Image without stopping the instance (the file system may be inconsistent).
    #[serde(default)]
    #[arg(long)]
    pub no_reboot: bool,
    /// Tags for the image and its snapshots.
    #[serde(default, with = "as_map", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "as_map::schema")]
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<Tag>,
    /// Finish only once the image is available.
    #[serde(default)]
    #[arg(long)]
    pub wait: bool,
    /// Check permissions and parameters with EC2's DryRun; nothing is created.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

impl Validate for CreateImage {
    fn validate(&self, v: &mut Violations) {
        v.resource_id("instance_id", &self.instance_id, "i-");
        validate::ami_name(v, "name", &self.name);
        if let Some(description) = &self.description {
            v.text("description", description, 255);
        }
        v.tags("tags", &self.tags);
    }
}

impl Kind for CreateImage {
    const NAME: &'static str = "create-image";
    const DESCRIPTION: &'static str = "Create an AMI from an instance.";

    fn tags(&self) -> &[Tag] {
        &self.tags
    }

    fn dry_run(&self) -> Option<bool> {
        Some(self.dry_run)
    }

    fn example() -> Self {
        CreateImage {
            instance_id: "i-12345678".into(),
            name: "db image".into(),
            description: Some("nightly".into()),
            no_reboot: false,
            tags: vec![Tag::new("Name", "db")],
            wait: false,
            dry_run: true,
        }
    }
}
