//! The check of a chain at enqueue time: every follow-up (recursively) decoded and
//! validated by its kind's rules, with stand-in values where references are, so that every
//! field but what the references will hold is judged before anything is sent. Errors are
//! named from the envelope (`then[0].params.name`).

use serde_json::{Map, Value};

use super::references::{check_pointer, field, references, set_at, Source};
use super::{follow_up_id, FollowUp, EACH, FAN_OUT_DIGITS};
use crate::job::{ContractError, Job, JobId};
use crate::validate::{FieldError, Violations};

/// Values tried in place of references at enqueue time, so the rest of the params can be
/// checked without knowing what the references will hold.
fn stand_ins() -> [Value; 5] {
    [
        Value::String(String::new()),
        Value::from(1),
        Value::Bool(false),
        Value::Array(Vec::new()),
        Value::Object(Map::new()),
    ]
}

/// Whether the error `field` (relative to the params) lies at or under `path`.
fn under(field: &str, path: &str) -> bool {
    field == path
        || field
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Checks a chain at enqueue time: every follow-up of `parent` (recursively), all but what
/// the references will hold. Errors are named from the envelope (`then[0].params.name`).
pub fn check(parent: &JobId, then: &[FollowUp]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_level(parent.as_str(), then, "then", &mut errors);
    errors
}

fn check_level(parent: &str, then: &[FollowUp], at: &str, errors: &mut Vec<FieldError>) {
    for (n, follow_up) in then.iter().enumerate() {
        let step = format!("{at}[{n}]");
        let mut id = follow_up_id(parent, n, None);
        if let Some(pointer) = &follow_up.for_each {
            if let Err(message) = check_pointer(pointer) {
                errors.push(field(&format!("{step}.for_each"), message));
            }
            id = format!("{id}:{}", "9".repeat(FAN_OUT_DIGITS));
        }
        if let Err(message) = JobId::parse(&id) {
            errors.push(field(
                &step,
                format!("its job id `{id}…` {message}: shorten the parent's job_id or the chain"),
            ));
        }
        check_params(follow_up, &step, errors);
        check_level(&id, &follow_up.then, &format!("{step}.then"), errors);
    }
}

fn check_params(follow_up: &FollowUp, step: &str, errors: &mut Vec<FieldError>) {
    let params = Value::Object(follow_up.params.clone());
    let mut refs = Vec::new();
    let mut bad = Vec::new();
    references(&params, "", &mut refs, &mut bad);
    let name = |path: &str| {
        if path.is_empty() {
            format!("{step}.params")
        } else {
            format!("{step}.params.{path}")
        }
    };
    for e in bad {
        errors.push(field(&name(&e.field), e.message));
    }
    if follow_up.for_each.is_none() {
        for r in refs.iter().filter(|r| r.source == Source::Element) {
            errors.push(field(
                &name(&r.path),
                format!("`{EACH}` reads a fan-out element; this follow-up has no `for_each`"),
            ));
        }
    }
    // Each reference tries the stand-ins in turn until decoding stops failing at it: what
    // still fails is a fault of the values the caller wrote.
    let stand_ins = stand_ins();
    let mut choice = vec![0usize; refs.len()];
    for _ in 0..=refs.len() * stand_ins.len() {
        let mut value = params.clone();
        for (r, c) in refs.iter().zip(&choice) {
            if let Some(stand_in) = stand_ins.get(*c) {
                set_at(&mut value, &r.path, stand_in.clone());
            }
        }
        let job = match Job::decode(follow_up.kind, value) {
            Ok(job) => job,
            Err(ContractError::Invalid(found)) => {
                let Some(first) = found.into_iter().next() else {
                    return;
                };
                let relative = first.field.strip_prefix("params").unwrap_or(&first.field);
                let relative = relative.strip_prefix('.').unwrap_or(relative);
                match refs.iter().position(|r| under(relative, &r.path)) {
                    Some(i) if choice.get(i).is_some_and(|c| c + 1 < stand_ins.len()) => {
                        if let Some(c) = choice.get_mut(i) {
                            *c += 1;
                        }
                        continue;
                    }
                    // No stand-in fits: what the reference holds decides, at run time.
                    Some(_) => return,
                    None => {
                        errors.push(field(&name(relative), first.message));
                        return;
                    }
                }
            }
            Err(other) => {
                errors.push(field(&format!("{step}.kind"), other.to_string()));
                return;
            }
        };
        let mut v = Violations::under("");
        job.validate_params(&mut v);
        for e in v.into_errors() {
            if !refs.iter().any(|r| under(&e.field, &r.path)) {
                errors.push(field(&name(&e.field), e.message));
            }
        }
        return;
    }
}
