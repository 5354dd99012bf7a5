//! `set-termination-protection`: `ModifyInstanceAttribute` `DisableApiTermination` on each
//! instance (idempotent by nature), then the setting read back as the result.
//!
//! Lifting protection readies an instance to be destroyed, so the instances are looked at
//! first and the job is refused, before any change, when one does not carry `shoal:job-id`,
//! unless the worker is told `--allow-destroying-untagged` (as for the destroying kinds); IAM
//! holds the same line with an `aws:ResourceTag/shoal:job-id` condition.

use std::sync::Arc;

use aws_sdk_ec2::types::{AttributeBooleanValue, InstanceAttributeName};
use shoal_common::error::ShoalCode;
use shoal_common::job::SetTerminationProtection;

use super::ec2::shoals_instances;
use super::limiter::Ec2Limiter;
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct TerminationProtectionHandler {
    pub limiter: Arc<Ec2Limiter>,
}

impl JobHandler for TerminationProtectionHandler {
    type Params = SetTerminationProtection;

    async fn run(&self, ctx: JobContext, p: SetTerminationProtection) -> Result<Outcome, JobError> {
        let ec2 = &ctx.clients.ec2;
        shoals_instances(
            &self.limiter,
            ec2,
            &p.instance_ids,
            "sets termination protection on",
        )
        .await?;
        let mut results = Vec::with_capacity(p.instance_ids.len());
        for id in &p.instance_ids {
            let modify = ec2
                .modify_instance_attribute()
                .instance_id(id)
                .disable_api_termination(
                    AttributeBooleanValue::builder()
                        .value(p.disable_api_termination)
                        .build(),
                );
            self.limiter
                .call("ModifyInstanceAttribute", modify.send())
                .await?;
            let read_back = ec2
                .describe_instance_attribute()
                .instance_id(id)
                .attribute(InstanceAttributeName::DisableApiTermination);
            let now = self
                .limiter
                .call("DescribeInstanceAttribute", read_back.send())
                .await?
                .disable_api_termination()
                .and_then(|v| v.value());
            if now != Some(p.disable_api_termination) {
                return Err(JobError::shoal(
                    ShoalCode::AttributeNotUpdated,
                    format!("{id} still reads disable_api_termination = {now:?}"),
                ));
            }
            results.push(serde_json::json!({"instance_id": id, "disable_api_termination": p.disable_api_termination}));
        }
        Ok(Outcome::Done(serde_json::json!({ "instances": results })))
    }
}
