//! `terminate-instances`: `TerminateInstances` for instances Shoal launched.
//!
//! Destroying is a new power for whoever can send to the queue, so the instances are looked
//! at first (`DescribeInstances`, which changes nothing) and the job is refused, before the
//! call that destroys, when one of them does not carry `shoal:job-id`, unless the worker is
//! told `--allow-destroying-untagged`. IAM holds the same line independently: the worker's
//! `ec2:TerminateInstances` carries an `aws:ResourceTag/shoal:job-id` condition. An instance
//! already terminated (or shutting down) is done, so a redelivery changes nothing; a
//! protected one is EC2's to refuse (`OperationNotPermitted`, permanent, naming it).

use std::sync::Arc;

use aws_sdk_ec2::types::{Instance, InstanceStateName};
use shoal_common::job::TerminateInstances;

use super::consistency::ensure_lease;
use super::ec2::{dry_run_outcome, shoals_instances};
use super::limiter::Ec2Limiter;
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct TerminateInstancesHandler {
    pub limiter: Arc<Ec2Limiter>,
}

fn state(instance: &Instance) -> Option<&InstanceStateName> {
    instance.state().and_then(|s| s.name())
}

fn gone(instance: &Instance) -> bool {
    matches!(
        state(instance),
        Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
    )
}

impl JobHandler for TerminateInstancesHandler {
    type Params = TerminateInstances;

    async fn run(&self, ctx: JobContext, p: TerminateInstances) -> Result<Outcome, JobError> {
        let ec2 = &ctx.clients.ec2;
        // EC2 lists an instance for about an hour after it terminated; one it does not list
        // at all is not one this job may call done.
        let instances = shoals_instances(&self.limiter, ec2, &p.instance_ids, "terminates").await?;
        let find = |id: &str| instances.iter().find(|i| i.instance_id() == Some(id));
        let to_end: Vec<String> = p
            .instance_ids
            .iter()
            .filter(|id| find(id).is_some_and(|i| !gone(i)))
            .cloned()
            .collect();
        if p.dry_run {
            if to_end.is_empty() {
                return Ok(Outcome::Done(serde_json::json!({
                    "dry_run": true, "operation": "TerminateInstances", "would_succeed": true,
                })));
            }
            let result = self
                .limiter
                .paced(
                    "TerminateInstances",
                    ec2.terminate_instances()
                        .set_instance_ids(Some(to_end))
                        .dry_run(true)
                        .send(),
                )
                .await;
            return dry_run_outcome("TerminateInstances", result);
        }
        let mut results: Vec<serde_json::Value> = Vec::with_capacity(p.instance_ids.len());
        if !to_end.is_empty() {
            ensure_lease(&ctx)?;
            let ended = self
                .limiter
                .call(
                    "TerminateInstances",
                    ec2.terminate_instances()
                        .set_instance_ids(Some(to_end.clone()))
                        .send(),
                )
                .await
                .map_err(|e| match e.code.as_deref() {
                    Some("OperationNotPermitted") => JobError {
                        message: format!(
                            "termination refused (protected: lift it with set-termination-protection first): {}",
                            e.message
                        ),
                        ..e
                    },
                    _ => e,
                })?;
            for change in ended.terminating_instances() {
                results.push(serde_json::json!({
                    "instance_id": change.instance_id(),
                    "previous_state": change.previous_state().and_then(|s| s.name()).map(|s| s.as_str()),
                    "current_state": change.current_state().and_then(|s| s.name()).map(|s| s.as_str()),
                }));
            }
        }
        for id in p.instance_ids.iter().filter(|id| !to_end.contains(id)) {
            let was = find(id).and_then(state).map(|s| s.as_str());
            results.push(serde_json::json!({
                "instance_id": id, "previous_state": was, "current_state": was,
            }));
        }
        Ok(Outcome::Done(serde_json::json!({ "instances": results })))
    }
}
