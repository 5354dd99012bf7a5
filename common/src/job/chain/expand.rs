//! The expansion of a chain at run time: the follow-ups of a job that succeeded, with their
//! references resolved against its result and their ids derived from its own, so a second
//! delivery of the parent builds the very same jobs. A follow-up whose references do not
//! resolve is not built: its entry says why, naming the pointer.

use serde_json::Value;

use super::references::{references, set_at, Source};
use super::{follow_up_id, FollowUp, EACH, MAX_FAN_OUT};
use crate::job::{ContractError, Job, JobEnvelope, JobId, JobKind, SCHEMA_VERSION};

/// One follow-up of a succeeded job: the job to enqueue, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    pub job_id: String,
    pub kind: JobKind,
    /// Where it is in the parent's chain (`then[1]`), for messages.
    pub step: String,
    pub job: Result<JobEnvelope, String>,
}

/// The follow-ups of `parent`, which succeeded with `result`, with their references
/// resolved. A fan-out whose pointer does not name an array fails as one entry, under the
/// id the step would have had without `for_each`.
pub fn expand(parent: &JobEnvelope, result: &Value) -> Vec<Expanded> {
    let mut out = Vec::new();
    for (n, follow_up) in parent.then.iter().enumerate() {
        let step = format!("then[{n}]");
        let Some(pointer) = &follow_up.for_each else {
            let id = follow_up_id(parent.job_id.as_str(), n, None);
            let job = build(parent, follow_up, &step, &id, result, None);
            out.push(expanded(id, follow_up, &step, job));
            continue;
        };
        match result.pointer(pointer).map(|v| v.as_array()) {
            Some(Some(items)) if items.len() <= MAX_FAN_OUT => {
                for (i, item) in items.iter().enumerate() {
                    let id = follow_up_id(parent.job_id.as_str(), n, Some(i));
                    let job = build(parent, follow_up, &step, &id, result, Some(item));
                    out.push(expanded(id, follow_up, &step, job));
                }
            }
            found => {
                let why = match found {
                    None => format!("`{pointer}` is not in the result of job {}", parent.job_id),
                    Some(None) => format!(
                        "`{pointer}` in the result of job {} is not an array",
                        parent.job_id
                    ),
                    Some(Some(items)) => format!(
                        "`{pointer}` in the result of job {} has {} elements; at most {MAX_FAN_OUT} follow-ups fan out",
                        parent.job_id,
                        items.len()
                    ),
                };
                let id = follow_up_id(parent.job_id.as_str(), n, None);
                out.push(expanded(
                    id,
                    follow_up,
                    &step,
                    Err(format!("{step}.for_each: {why}")),
                ));
            }
        }
    }
    out
}

fn expanded(
    job_id: String,
    follow_up: &FollowUp,
    step: &str,
    job: Result<JobEnvelope, String>,
) -> Expanded {
    Expanded {
        job_id,
        kind: follow_up.kind,
        step: step.to_owned(),
        job,
    }
}

fn build(
    parent: &JobEnvelope,
    follow_up: &FollowUp,
    step: &str,
    id: &str,
    result: &Value,
    element: Option<&Value>,
) -> Result<JobEnvelope, String> {
    let mut params = Value::Object(follow_up.params.clone());
    let mut refs = Vec::new();
    let mut bad = Vec::new();
    references(&params, "", &mut refs, &mut bad);
    if let Some(e) = bad.first() {
        return Err(format!("{step}.params.{}: {}", e.field, e.message));
    }
    for r in &refs {
        let (document, whose) = match (r.source, element) {
            (Source::Result, _) => (result, format!("the result of job {}", parent.job_id)),
            (Source::Element, Some(item)) => (item, "the fan-out element".to_owned()),
            (Source::Element, None) => {
                return Err(format!(
                    "{step}.params.{}: `{EACH}` outside a fan-out",
                    r.path
                ))
            }
        };
        match document.pointer(&r.pointer) {
            Some(value) => set_at(&mut params, &r.path, value.clone()),
            None => {
                return Err(format!(
                    "{step}.params.{}: `{}` `{}` is not in {whose}",
                    r.path,
                    r.key(),
                    r.pointer
                ))
            }
        }
    }
    let job_id = JobId::parse(id).map_err(|m| format!("{step}: job id `{id}` {m}"))?;
    let job = Job::decode(follow_up.kind, params).map_err(|e| in_step(step, e))?;
    let envelope = JobEnvelope {
        schema_version: SCHEMA_VERSION,
        job_id,
        submitted_at: chrono::Utc::now(),
        job,
        then: follow_up.then.clone(),
        chain_id: Some(parent.chain_id().clone()),
        parent_job_id: Some(parent.job_id.clone()),
        not_before: None,
    };
    envelope.validate().map_err(|e| in_step(step, e))?;
    Ok(envelope)
}

/// A contract error of a resolved follow-up, its fields named inside the parent's chain.
fn in_step(step: &str, e: ContractError) -> String {
    match e {
        ContractError::Invalid(errors) => errors
            .iter()
            .map(|e| format!("{step}.{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => format!("{step}: {other}"),
    }
}
