//! Field validation shared by every job kind.
//!
//! A job is checked twice, by the producer before anything is sent and by the worker before
//! anything is done, with the same code. Every violation names the field by its path in the
//! message (`params.min_count`), so a team writing jobs in another language can find its
//! mistake without reading Rust.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use crate::tag::Tag;

/// Field rules of a job kind's parameters, beyond what its Rust type already enforces.
pub trait Validate {
    fn validate(&self, v: &mut Violations);
}

/// One broken rule, with the path of the field that broke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path in the JSON message, e.g. `params.tags.Name`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects every violation of a message, so one round trip shows the caller all of them.
#[derive(Debug, Default)]
pub struct Violations {
    prefix: String,
    errors: Vec<FieldError>,
}

impl Violations {
    /// Violations whose field paths start with `prefix` (e.g. `params`).
    pub fn under(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            errors: Vec::new(),
        }
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        let field = if self.prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{}", self.prefix, field)
        };
        self.errors.push(FieldError {
            field,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }

    /// Checks `value` is an EC2 resource id: `prefix` then 8 or 17 lowercase hex digits.
    pub fn resource_id(&mut self, field: &str, value: &str, prefix: &str) {
        if !is_resource_id(value, prefix) {
            self.add(
                field,
                format!(
                    "`{value}` is not a valid id: expected `{prefix}` followed by 8 or 17 hex digits"
                ),
            );
        }
    }

    /// Checks a list of instance ids a job acts on: 1 to `max` of them, each an `i-…` id.
    pub fn instance_ids(&mut self, field: &str, ids: &[String], max: usize) {
        if ids.is_empty() {
            self.add(field, "must name at least one instance");
        }
        if ids.len() > max {
            self.add(
                field,
                format!("names {} instances; at most {max} allowed", ids.len()),
            );
        }
        for (i, id) in ids.iter().enumerate() {
            self.resource_id(&format!("{field}[{i}]"), id, "i-");
        }
    }

    /// Checks how a job names the volumes it works on: exactly one of `choices` (field, set)
    /// is set, or, where `none_ok`, none; the error goes under the first field's name. Then
    /// `volume_id`, `volume_name` and `instance_id` each by its own rule, where set.
    pub fn volume_choice(
        &mut self,
        choices: &[(&str, bool)],
        none_ok: Option<&str>,
        volume_id: Option<&str>,
        volume_name: Option<&str>,
        instance_id: Option<&str>,
    ) {
        let chosen = choices.iter().filter(|(_, set)| *set).count();
        if chosen > 1 || (chosen == 0 && none_ok.is_none()) {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            let (last, rest) = names.split_last().unwrap_or((&"", &[]));
            self.add(
                names.first().copied().unwrap_or("params"),
                format!(
                    "exactly one of {} and {last} must be set ({chosen} are){}",
                    rest.join(", "),
                    none_ok
                        .map(|alt| format!(", or none with {alt}"))
                        .unwrap_or_default()
                ),
            );
        }
        if let Some(id) = volume_id {
            self.resource_id("volume_id", id, "vol-");
        }
        if let Some(name) = volume_name {
            if name.is_empty() {
                self.add("volume_name", "must not be empty");
            }
            self.text("volume_name", name, 256);
        }
        if let Some(id) = instance_id {
            self.resource_id("instance_id", id, "i-");
        }
    }

    /// Checks that `value` can travel in EC2's XML: XML 1.0 has no place for control
    /// characters other than tab, line feed and carriage return (EC2 itself allows any
    /// character in a tag, but a `\u{1}` fails inside `RunInstances` as an XML parse error).
    pub fn xml_safe(&mut self, field: &str, value: &str) {
        let forbidden = |c: char| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}');
        if let Some((at, c)) = value.chars().enumerate().find(|(_, c)| forbidden(*c)) {
            self.add(
                field,
                format!(
                    "has the control character U+{:04X} at position {at}; EC2's XML carries none but tab, line feed and carriage return",
                    c as u32
                ),
            );
        }
    }

    /// Checks a free-text field that goes to EC2: at most `max` characters, all of which
    /// can travel in its XML.
    pub fn text(&mut self, field: &str, value: &str, max: usize) {
        self.max_chars(field, value, max);
        self.xml_safe(field, value);
    }

    /// Checks a free-text field against a length limit in characters.
    pub fn max_chars(&mut self, field: &str, value: &str, max: usize) {
        let n = value.chars().count();
        if n > max {
            self.add(
                field,
                format!("is {n} characters long; at most {max} allowed"),
            );
        }
    }

    /// EC2's tag rules, less what Shoal reserves for itself: at most [`MAX_USER_TAGS`] tags,
    /// keys of 1 to 128 characters not starting with `aws:` or `shoal:`, values of at most 256
    /// characters, each key once.
    pub fn tags(&mut self, field: &str, tags: &[Tag]) {
        if tags.len() > MAX_USER_TAGS {
            self.add(
                field,
                format!(
                    "has {} tags; at most {MAX_USER_TAGS} allowed (EC2 allows 50 per resource and Shoal adds `{JOB_ID_TAG}`)",
                    tags.len()
                ),
            );
        }
        for (i, tag) in tags.iter().enumerate() {
            let at = format!("{field}.{}", tag.key);
            let key_len = tag.key.chars().count();
            if key_len == 0 || key_len > 128 {
                self.add(
                    &at,
                    format!("tag key is {key_len} characters long; 1 to 128 allowed"),
                );
            }
            let lower = tag.key.to_ascii_lowercase();
            if lower.starts_with("aws:") {
                self.add(&at, "tag keys starting with `aws:` are reserved by AWS");
            } else if lower.starts_with("shoal:") {
                self.add(&at, "tag keys starting with `shoal:` are reserved by Shoal");
            }
            self.xml_safe(&at, &tag.key);
            self.text(&at, &tag.value, 256);
            if tags.iter().take(i).any(|t| t.key == tag.key) {
                self.add(&at, "tag key given more than once");
            }
        }
    }
}

/// How strictly tags are checked beyond EC2's own rules; opt-in, for tags that must also
/// work elsewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TagRules {
    /// EC2's rules: any character its XML can carry.
    #[default]
    Ec2,
    /// AWS's generally allowed set, which every service that takes tags accepts: letters,
    /// numbers and spaces, and `+ - = . _ : / @`.
    Portable,
    /// `portable`, and keys as instance metadata can expose them: no space or `/`, and not
    /// `.`, `..` or `_index`.
    InstanceMetadata,
}

impl TagRules {
    pub fn as_str(self) -> &'static str {
        match self {
            TagRules::Ec2 => "ec2",
            TagRules::Portable => "portable",
            TagRules::InstanceMetadata => "instance-metadata",
        }
    }
}

impl Violations {
    /// Checks `tags` against `rules`, beyond EC2's own (see [`Violations::tags`]).
    pub fn tag_rules(&mut self, rules: TagRules, field: &str, tags: &[Tag]) {
        if rules == TagRules::Ec2 {
            return;
        }
        let portable = |c: char| c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c);
        for tag in tags {
            let at = format!("{field}.{}", tag.key);
            for (what, text) in [("key", &tag.key), ("value", &tag.value)] {
                if let Some(bad) = text.chars().find(|c| !portable(*c)) {
                    self.add(
                        &at,
                        format!("tag {what} has `{bad}`, outside AWS's generally allowed set (letters, numbers, spaces and + - = . _ : / @; --tag-rules {})", rules.as_str()),
                    );
                }
            }
            if rules == TagRules::InstanceMetadata {
                if tag.key.contains([' ', '/']) {
                    self.add(&at, "a tag key exposed in instance metadata has no space or `/` (--tag-rules instance-metadata)");
                }
                if matches!(tag.key.as_str(), "." | ".." | "_index") {
                    self.add(&at, "a tag key exposed in instance metadata cannot be `.`, `..` or `_index` (--tag-rules instance-metadata)");
                }
            }
        }
    }
}

pub use crate::tag::MAX_USER_TAGS;

/// The tag that ties every EC2 resource Shoal creates to the job that created it.
pub const JOB_ID_TAG: &str = "shoal:job-id";

pub fn is_resource_id(value: &str, prefix: &str) -> bool {
    value.strip_prefix(prefix).is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

pub mod pattern;

static INSTANCE_TYPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(pattern::INSTANCE_TYPE).expect("static pattern"));
static AVAILABILITY_ZONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(pattern::AVAILABILITY_ZONE).expect("static pattern"));
static REGION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$").expect("static pattern"));

pub fn instance_type(v: &mut Violations, field: &str, value: &str) {
    if !INSTANCE_TYPE.is_match(value) {
        v.add(
            field,
            format!("`{value}` is not an instance type: expected family.size, e.g. t2.micro"),
        );
    }
}

pub fn availability_zone(v: &mut Violations, field: &str, value: &str) {
    if REGION.is_match(value) {
        v.add(
            field,
            format!("`{value}` is a region, not an availability zone: add the zone letter, e.g. {value}a"),
        );
    } else if !AVAILABILITY_ZONE.is_match(value) {
        v.add(
            field,
            format!("`{value}` is not an availability zone: expected e.g. us-east-1d"),
        );
    }
}

/// AMI names: 3 to 128 characters of letters, digits and `( ) [ ] . / - ' @ _` or space.
pub fn ami_name(v: &mut Violations, field: &str, value: &str) {
    let n = value.chars().count();
    if !(3..=128).contains(&n) {
        v.add(
            field,
            format!("is {n} characters long; an AMI name has 3 to 128"),
        );
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(*c)))
    {
        v.add(
            field,
            format!("`{bad}` is not allowed in an AMI name (letters, digits, spaces and ( ) [ ] . / - ' @ _ are)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_take_short_and_long_hex() {
        assert!(is_resource_id("ami-12345678", "ami-"));
        assert!(is_resource_id("i-0123456789abcdef0", "i-"));
        assert!(!is_resource_id("i-0123456789ABCDEF0", "i-"));
        assert!(!is_resource_id("vol-123", "vol-"));
        assert!(!is_resource_id("i-12345678", "vol-"));
    }

    #[test]
    fn zones_are_told_from_regions() {
        let mut v = Violations::under("params");
        availability_zone(&mut v, "availability_zone", "us-east-1d");
        availability_zone(&mut v, "availability_zone", "us-west-2-lax-1a");
        assert!(v.is_empty());
        availability_zone(&mut v, "availability_zone", "us-east-1");
        let errors = v.into_errors();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("is a region"), "{}", errors[0]);
    }

    #[test]
    fn instance_types_have_family_and_size() {
        for ok in [
            "t2.micro",
            "c7i-flex.large",
            "u-6tb1.112xlarge",
            "mac2-m2pro.metal",
        ] {
            let mut v = Violations::default();
            instance_type(&mut v, "t", ok);
            assert!(v.is_empty(), "{ok}");
        }
        for bad in ["t2micro", "T2.micro", "t2.", ".micro"] {
            let mut v = Violations::default();
            instance_type(&mut v, "t", bad);
            assert!(!v.is_empty(), "{bad}");
        }
    }

    #[test]
    fn tags_keep_to_ec2s_rules_less_what_shoal_reserves() {
        let check = |tags: &[Tag]| {
            let mut v = Violations::under("params");
            v.tags("tags", tags);
            v.into_errors()
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        };
        assert!(check(&[Tag::new("Name", "web"), Tag::new("team", "")]).is_empty());
        let errors = check(&[Tag::new("aws:cloudformation", "x")]);
        assert!(errors[0].contains("reserved by AWS"), "{errors:?}");
        let errors = check(&[Tag::new("Shoal:job-id", "x")]);
        assert!(errors[0].contains("reserved by Shoal"), "{errors:?}");
        let errors = check(&[Tag::new("Name", "a"), Tag::new("Name", "b")]);
        assert!(errors[0].contains("more than once"), "{errors:?}");
        let errors = check(&[Tag::new("k".repeat(129), "v")]);
        assert!(errors[0].contains("1 to 128"), "{errors:?}");
        let errors = check(&[Tag::new("Name", "v".repeat(257))]);
        assert!(errors[0].starts_with("params.tags.Name"), "{errors:?}");
        let many: Vec<Tag> = (0..=MAX_USER_TAGS)
            .map(|i| Tag::new(format!("k{i}"), "v"))
            .collect();
        let errors = check(&many);
        assert!(errors[0].contains("at most 49"), "{errors:?}");
    }

    #[test]
    fn control_characters_that_xml_cannot_carry_are_refused() {
        let mut v = Violations::under("params");
        v.text("description", "line one\nline two\ttabbed\r", 255);
        v.tags("tags", &[Tag::new("Name", "web \u{85} ok")]);
        assert!(
            v.is_empty(),
            "tab, newline, carriage return and C1 are XML-safe"
        );
        v.tags("tags", &[Tag::new("Name", "a\u{1}b")]);
        v.tags("tags", &[Tag::new("k\u{1b}", "v")]);
        v.text("description", "\u{ffff}", 255);
        let errors: Vec<String> = v.into_errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("params.tags.Name") && errors[0].contains("U+0001"));
        assert!(errors[1].contains("U+001B"), "{}", errors[1]);
        assert!(errors[2].starts_with("params.description") && errors[2].contains("U+FFFF"));
    }

    #[test]
    fn stricter_tag_rules_are_opt_in() {
        let tags = [Tag::new("team/owner", "Ops team: core@example.com")];
        let check = |rules| {
            let mut v = Violations::under("params");
            v.tag_rules(rules, "tags", &tags);
            v.into_errors()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        };
        assert!(check(TagRules::Ec2).is_empty());
        assert!(
            check(TagRules::Portable).is_empty(),
            "the generally allowed set"
        );
        let errors = check(TagRules::InstanceMetadata);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("params.tags.team/owner") && errors[0].contains("`/`"));

        let odd = [Tag::new("cost#center", "a;b"), Tag::new("_index", "x")];
        let mut v = Violations::under("params");
        v.tag_rules(TagRules::Portable, "tags", &odd);
        assert_eq!(v.into_errors().len(), 2, "`#` in a key and `;` in a value");
        let mut v = Violations::under("params");
        v.tag_rules(TagRules::InstanceMetadata, "tags", &odd);
        let errors: Vec<String> = v.into_errors().iter().map(|e| e.to_string()).collect();
        assert!(errors.iter().any(|e| e.contains("_index")), "{errors:?}");
    }

    #[test]
    fn ami_names_and_lengths_name_the_rule() {
        let mut v = Violations::default();
        ami_name(&mut v, "name", "web (2026-11-24)");
        v.max_chars("description", &"d".repeat(255), 255);
        assert!(v.is_empty());
        ami_name(&mut v, "name", "ab");
        ami_name(&mut v, "name", "web#1");
        v.max_chars("description", &"é".repeat(256), 255);
        let errors: Vec<String> = v.into_errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("3 to 128"));
        assert!(errors[1].contains("`#`"));
        assert!(
            errors[2].contains("256 characters"),
            "counted in characters: {}",
            errors[2]
        );
    }
}
