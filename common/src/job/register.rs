//! `register-image`: an AMI from a snapshot, the article's "EBS volume → new AMI": the
//! snapshot as the root device, with the settings that matter for booting it.

use clap::{ArgAction, Args};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::tag::{as_map, Tag};
use crate::validate::Validate;
use crate::validate::Violations;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(deny_unknown_fields)]
pub struct RegisterImage {
    /// The snapshot to boot from (`snap-…`).
    #[schemars(pattern(r"^snap-([0-9a-f]{8}|[0-9a-f]{17})$"))]
    #[arg(long)]
    pub snapshot_id: String,
    /// The AMI's name: unique in the account and region.
    #[schemars(length(min = 3, max = 128))]
    #[arg(long)]
    pub name: String,
    /// The AMI's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), pattern(crate::validate::pattern::XML_SAFE))]
    #[arg(long)]
    pub description: Option<String>,
    /// The root device's name.
    #[serde(default = "root")]
    #[arg(long, default_value = "/dev/xvda")]
    pub root_device_name: String,
    /// `x86_64`, `arm64`, `i386`, `x86_64_mac` or `arm64_mac`.
    #[serde(default = "x86_64")]
    #[arg(long, default_value = "x86_64")]
    pub architecture: String,
    /// `hvm` (default) or `paravirtual`.
    #[serde(default = "hvm")]
    #[arg(long, default_value = "hvm")]
    pub virtualization_type: String,
    /// Enhanced networking with ENA (default on, as current instance types need it).
    #[serde(default = "super::yes")]
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    pub ena_support: bool,
    /// `legacy-bios`, `uefi` or `uefi-preferred` (default: EC2's for the architecture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub boot_mode: Option<String>,
    /// Tags for the AMI.
    #[serde(default, with = "as_map", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "as_map::schema")]
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<Tag>,
    /// Finish only once the AMI is `available`.
    #[serde(default)]
    #[arg(long)]
    pub wait: bool,
    /// Check permissions and parameters with EC2's DryRun; nothing is registered.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
}

fn root() -> String {
    "/dev/xvda".into()
}
fn x86_64() -> String {
    "x86_64".into()
}
fn hvm() -> String {
    "hvm".into()
}
const ARCHITECTURES: &[&str] = &["x86_64", "arm64", "i386", "x86_64_mac", "arm64_mac"];
const VIRTUALIZATION: &[&str] = &["hvm", "paravirtual"];
const BOOT_MODES: &[&str] = &["legacy-bios", "uefi", "uefi-preferred"];

impl Validate for RegisterImage {
    fn validate(&self, v: &mut Violations) {
        v.resource_id("snapshot_id", &self.snapshot_id, "snap-");
        let name_ok = self.name.len() >= 3
            && self.name.len() <= 128
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " ()[]./-'@_".contains(c));
        if !name_ok {
            v.add(
                "name",
                "must be 3 to 128 letters, digits, spaces or ( ) [ ] . / - ' @ _ (EC2's rule for AMI names)",
            );
        }
        if let Some(description) = &self.description {
            v.text("description", description, 255);
        }
        if !self.root_device_name.starts_with("/dev/") {
            v.add(
                "root_device_name",
                format!(
                    "`{}` is not a device name (`/dev/xvda`)",
                    self.root_device_name
                ),
            );
        }
        for (field, value, allowed) in [
            ("architecture", self.architecture.as_str(), ARCHITECTURES),
            (
                "virtualization_type",
                self.virtualization_type.as_str(),
                VIRTUALIZATION,
            ),
        ] {
            if !allowed.contains(&value) {
                v.add(
                    field,
                    format!("`{value}` is not one of {}", allowed.join(", ")),
                );
            }
        }
        if let Some(mode) = &self.boot_mode {
            if !BOOT_MODES.contains(&mode.as_str()) {
                v.add(
                    "boot_mode",
                    format!("`{mode}` is not one of {}", BOOT_MODES.join(", ")),
                );
            }
        }
        v.tags("tags", &self.tags);
    }
}

impl Kind for RegisterImage {
    const NAME: &'static str = "register-image";
    const DESCRIPTION: &'static str = "Register an AMI from a snapshot.";

    fn tags(&self) -> &[Tag] {
        &self.tags
    }

    fn dry_run(&self) -> Option<bool> {
        Some(self.dry_run)
    }

    fn example() -> Self {
        RegisterImage {
            snapshot_id: "snap-12345678".into(),
            name: "db restored".into(),
            description: Some("from last night".into()),
            root_device_name: "/dev/xvda".into(),
            architecture: "x86_64".into(),
            virtualization_type: "hvm".into(),
            ena_support: true,
            boot_mode: Some("uefi-preferred".into()),
            tags: vec![Tag::new("Name", "db")],
            wait: false,
            dry_run: true,
        }
    }
}
