//! References in a follow-up's params, shared by the check at enqueue ([`super::check`])
//! and the expansion at run time ([`super::expand`]): finding them (`{"$from": …}`,
//! `{"$each": …}`), checking their JSON Pointers, and writing a value where one stood.

use serde_json::Value;

use super::{EACH, FROM};
use crate::validate::FieldError;

/// Where a reference reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Result,
    Element,
}

/// A reference found in a follow-up's params, at `path` (`instance_ids[0]`, `tags.Name`).
#[derive(Debug, Clone)]
pub(super) struct Reference {
    pub path: String,
    pub source: Source,
    pub pointer: String,
}

impl Reference {
    pub fn key(&self) -> &'static str {
        match self.source {
            Source::Result => FROM,
            Source::Element => EACH,
        }
    }
}

/// Finds the references in `value` (at `path`), and what is wrong with any malformed one.
pub(super) fn references(
    value: &Value,
    path: &str,
    found: &mut Vec<Reference>,
    bad: &mut Vec<FieldError>,
) {
    match value {
        Value::Object(map) => {
            let key = [FROM, EACH].into_iter().find(|k| map.contains_key(*k));
            if let Some(key) = key {
                let source = if key == FROM {
                    Source::Result
                } else {
                    Source::Element
                };
                match map.get(key) {
                    Some(Value::String(pointer)) if map.len() == 1 => {
                        if let Err(message) = check_pointer(pointer) {
                            bad.push(field(path, format!("`{key}`: {message}")));
                        }
                        found.push(Reference {
                            path: path.to_owned(),
                            source,
                            pointer: pointer.clone(),
                        });
                    }
                    _ => {
                        bad.push(field(
                            path,
                            format!(
                                "a reference is {{\"{key}\": \"/json/pointer\"}} and nothing else"
                            ),
                        ));
                        // Still a reference in intent: stood in for, not decoded as a value.
                        found.push(Reference {
                            path: path.to_owned(),
                            source,
                            pointer: String::new(),
                        });
                    }
                }
                return;
            }
            for (k, v) in map {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                references(v, &at, found, bad);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                references(v, &format!("{path}[{i}]"), found, bad);
            }
        }
        _ => {}
    }
}

pub(super) fn field(path: &str, message: String) -> FieldError {
    FieldError {
        field: path.to_owned(),
        message,
    }
}

/// A JSON Pointer is empty (the whole document) or `/`-separated tokens where `~` is only
/// ever `~0` or `~1`.
pub(super) fn check_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "`{pointer}` is not a JSON Pointer: it starts with `/` (or is empty, for the whole value)"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "`{pointer}` is not a JSON Pointer: `~` is written `~0` and `/` inside a name `~1`"
            ));
        }
    }
    Ok(())
}

/// Sets the value at `path` (as [`references`] writes it) inside `params`.
pub(super) fn set_at(params: &mut Value, path: &str, new: Value) {
    let mut at = params;
    for segment in split_path(path) {
        let next = match (segment, at) {
            (Segment::Key(k), Value::Object(map)) => map.get_mut(k),
            (Segment::Index(i), Value::Array(items)) => items.get_mut(i),
            _ => None,
        };
        match next {
            Some(next) => at = next,
            None => return,
        }
    }
    *at = new;
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Segment<'_>> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            segments.push(Segment::Key(key));
        }
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                segments.push(Segment::Index(i));
            }
        }
    }
    segments
}
