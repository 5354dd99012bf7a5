//! Tags as the contract writes them: a JSON object of key to value (`{"Name": "web"}`),
//! and `--tag Name=web` on the command line.

use std::fmt;
use std::str::FromStr;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserializer, Serializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Tag {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl FromStr for Tag {
    type Err = String;

    /// `KEY=VALUE`; a bare `KEY` is a tag with an empty value, as EC2 allows.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s.split_once('=').unwrap_or((s, ""));
        if key.is_empty() {
            return Err(format!("`{s}` has an empty tag key; expected KEY=VALUE"));
        }
        Ok(Tag::new(key, value))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// EC2 allows 50 tags per resource; Shoal adds its job-id tag to every resource it creates.
pub const MAX_USER_TAGS: usize = 49;

/// A tag key: 1 to 128 characters EC2's XML can carry, not starting with `aws:` or `shoal:`
/// in any case. (Schema only: the validator says which rule a key breaks.)
pub const TAG_KEY: &str =
    r"^(?![aA][wW][sS]:)(?![sS][hH][oO][aA][lL]:)[^\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]{1,128}$";

/// Serde for `Vec<Tag>` as a JSON object. Decoding keeps every entry it is given, so a
/// repeated key (possible from `--tag` twice) reaches validation and is refused there.
pub mod as_map {
    use super::*;

    /// The tags object as the published schema states it: EC2's rules less what Shoal
    /// reserves, from the same constants the validator uses.
    pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        use crate::validate::pattern;
        schemars::json_schema!({
            "type": "object",
            "maxProperties": MAX_USER_TAGS,
            "propertyNames": {"pattern": pattern::TAG_KEY},
            "additionalProperties": {
                "type": "string",
                "maxLength": 256,
                "pattern": pattern::XML_SAFE,
            },
            "description": "Tags as key to value: at most 49 (EC2 allows 50 per resource and Shoal adds `shoal:job-id`); keys of 1 to 128 characters not starting with `aws:` or `shoal:`; values of at most 256 characters; no control character but tab, line feed and carriage return.",
        })
    }

    pub fn serialize<S: Serializer>(tags: &[Tag], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(tags.len()))?;
        for tag in tags {
            map.serialize_entry(&tag.key, &tag.value)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Tag>, D::Error> {
        struct TagMap;
        impl<'de> Visitor<'de> for TagMap {
            type Value = Vec<Tag>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of tag key to string value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Tag>, A::Error> {
                let mut tags = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    tags.push(Tag { key, value });
                }
                Ok(tags)
            }
        }
        d.deserialize_map(TagMap)
    }
}
