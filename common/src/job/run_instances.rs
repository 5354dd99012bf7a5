//! `run-instances`: launch instances from an AMI, as the article's `run_instances` call does.

use clap::Args;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::tag::{as_map, Tag};
use crate::validate::Validate;
use crate::validate::{self, Violations};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(deny_unknown_fields)]
pub struct RunInstances {
    /// The AMI to launch (`ami-…`).
    #[schemars(pattern(crate::validate::pattern::AMI_ID))]
    #[arg(long)]
    pub image_id: String,
    /// Launch fails unless at least this many instances can start.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    #[arg(long, default_value_t = 1)]
    pub min_count: u32,
    /// Launch up to this many instances, as capacity allows; at least `min_count` (a rule
    /// across fields, which the JSON Schema does not state).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    #[arg(long, default_value_t = 1)]
    pub max_count: u32,
    /// The key pair to install for SSH access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::pattern::KEY_NAME))]
    #[arg(long)]
    pub key_name: Option<String>,
    /// Instance type, e.g. `t2.micro`.
    #[schemars(pattern(crate::validate::pattern::INSTANCE_TYPE))]
    #[arg(long)]
    pub instance_type: String,
    /// Availability zone placement, e.g. `us-east-1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::pattern::AVAILABILITY_ZONE))]
    #[arg(long)]
    pub availability_zone: Option<String>,
    /// Termination protection: the instances refuse `TerminateInstances` until it is lifted
    /// (see `set-termination-protection`).
    #[serde(default)]
    #[arg(long)]
    pub disable_api_termination: bool,
    /// Tags for the instances and their volumes.
    #[serde(default, with = "as_map", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "as_map::schema")]
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<Tag>,
    /// Subnet to launch into (`subnet-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::pattern::SUBNET_ID))]
    #[arg(long)]
    pub subnet_id: Option<String>,
    /// Security groups by id (`sg-…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(crate::validate::pattern::SECURITY_GROUP_ID)))]
    #[arg(long = "security-group-id", value_name = "SG_ID")]
    pub security_group_ids: Vec<String>,
    /// User data as plain text (Shoal base64-encodes it); at most 16 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    #[arg(long)]
    pub user_data: Option<String>,
    /// Finish only once the instances are running.
    #[serde(default)]
    #[arg(long)]
    pub wait: bool,
    /// Check permissions and parameters with EC2's DryRun; nothing is launched.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

fn one() -> u32 {
    1
}

/// EC2's limit on user data before base64 encoding.
const MAX_USER_DATA_BYTES: usize = 16 * 1024;

impl Validate for RunInstances {
    fn validate(&self, v: &mut Violations) {
        v.resource_id("image_id", &self.image_id, "ami-");
        if self.min_count < 1 {
            v.add("min_count", "must be at least 1");
        }
        if self.max_count < self.min_count {
            v.add(
                "max_count",
                format!(
                    "is {} but must be at least min_count ({})",
                    self.max_count, self.min_count
                ),
            );
        }
        if let Some(key) = &self.key_name {
            if key.is_empty() || key.len() > 255 || !key.is_ascii() {
                v.add("key_name", "must be 1 to 255 ASCII characters");
            }
            v.xml_safe("key_name", key);
        }
        validate::instance_type(v, "instance_type", &self.instance_type);
        if let Some(az) = &self.availability_zone {
            validate::availability_zone(v, "availability_zone", az);
        }
        v.tags("tags", &self.tags);
        if let Some(subnet) = &self.subnet_id {
            v.resource_id("subnet_id", subnet, "subnet-");
        }
        for (i, sg) in self.security_group_ids.iter().enumerate() {
            v.resource_id(&format!("security_group_ids[{i}]"), sg, "sg-");
        }
        if let Some(data) = &self.user_data {
            if data.len() > MAX_USER_DATA_BYTES {
                v.add(
                    "user_data",
                    format!("is {} bytes; EC2 allows {MAX_USER_DATA_BYTES}", data.len()),
                );
            }
        }
    }
}

impl Kind for RunInstances {
    const NAME: &'static str = "run-instances";
    const DESCRIPTION: &'static str = "Launch instances from an AMI.";

    fn tags(&self) -> &[Tag] {
        &self.tags
    }

    fn dry_run(&self) -> Option<bool> {
        Some(self.dry_run)
    }

    fn example() -> Self {
        RunInstances {
            image_id: "ami-12345678".into(),
            min_count: 1,
            max_count: 3,
            key_name: Some("ops".into()),
            instance_type: "m5.large".into(),
            availability_zone: Some("eu-west-1b".into()),
            disable_api_termination: true,
            tags: vec![Tag::new("Name", "db"), Tag::new("team", "core")],
            subnet_id: Some("subnet-12345678".into()),
            security_group_ids: vec!["sg-12345678".into()],
            user_data: Some("#!/bin/sh\necho hi\n".into()),
            wait: true,
            dry_run: false,
        }
    }
}
