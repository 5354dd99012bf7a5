//! `run-instances`: launch from an AMI with the job id as `ClientToken` and as a tag on every
//! instance and volume; verify termination protection took; optionally wait until running.
//!
//! A redelivered job first looks for instances tagged with its id (in any state: an
//! instance someone already terminated was still this job's launch) and launches nothing
//! new if it finds them. The lookup also covers the emulator, which ignores `ClientToken`.

use std::sync::Arc;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, Instance, InstanceAttributeName, InstanceStateName, InstanceType,
    Placement, ResourceType,
};
use shoal_common::job::RunInstances;

use super::ec2::{
    client_token, dry_run_outcome, ec2_error, job_id_filter, next_check, rfc3339, tag_spec,
    tags_with_job_id, to_chrono, Ec2Limiter,
};
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct RunInstancesHandler {
    pub limiter: Arc<Ec2Limiter>,
}

impl JobHandler for RunInstancesHandler {
    type Params = RunInstances;

    async fn run(&self, ctx: JobContext, p: RunInstances) -> Result<Outcome, JobError> {
        let ec2 = &ctx.clients.ec2;
        let tags = tags_with_job_id(&p.tags, &ctx.job_id);
        let request = || {
            ec2.run_instances()
                .image_id(&p.image_id)
                .min_count(p.min_count as i32)
                .max_count(p.max_count as i32)
                .set_key_name(p.key_name.clone())
                .instance_type(InstanceType::from(p.instance_type.as_str()))
                .set_placement(
                    p.availability_zone
                        .as_ref()
                        .map(|az| Placement::builder().availability_zone(az).build()),
                )
                .disable_api_termination(p.disable_api_termination)
                .tag_specifications(tag_spec(ResourceType::Instance, &tags))
                .tag_specifications(tag_spec(ResourceType::Volume, &tags))
                .set_subnet_id(p.subnet_id.clone())
                .set_security_group_ids(
                    (!p.security_group_ids.is_empty()).then(|| p.security_group_ids.clone()),
                )
                .set_user_data(
                    p.user_data
                        .as_ref()
                        .map(|d| aws_smithy_types::base64::encode(d.as_bytes())),
                )
                .client_token(client_token(&ctx.job_id))
        };
        if p.dry_run {
            self.limiter.acquire("RunInstances").await;
            return dry_run_outcome("RunInstances", request().dry_run(true).send().await);
        }

        let (reservation_id, mut instances, reused) = match self.find(&ctx).await? {
            Some((reservation, instances)) => (reservation, instances, true),
            None => {
                self.limiter.acquire("RunInstances").await;
                let out = request()
                    .send()
                    .await
                    .map_err(|e| ec2_error("RunInstances", e))?;
                (
                    out.reservation_id.unwrap_or_default(),
                    out.instances.unwrap_or_default(),
                    false,
                )
            }
        };
        if p.disable_api_termination {
            self.ensure_protected(&ctx, &instances).await?;
        }
        if p.wait {
            if !reused {
                // Freshly launched instances are pending: look again later rather than here.
                let started = instances
                    .iter()
                    .filter_map(|i| to_chrono(i.launch_time()))
                    .min();
                return next_check(self.limiter.settings(), "the launch", started);
            }
            let pending = instances
                .iter()
                .any(|i| i.state().and_then(|s| s.name()) != Some(&InstanceStateName::Running));
            if pending {
                let gone = instances.iter().any(|i| {
                    matches!(
                        i.state().and_then(|s| s.name()),
                        Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
                    )
                });
                if gone {
                    return Err(JobError::permanent(
                        "InstanceTerminated",
                        "an instance of this launch terminated before it was running",
                    ));
                }
                let started = instances
                    .iter()
                    .filter_map(|i| to_chrono(i.launch_time()))
                    .min();
                return next_check(self.limiter.settings(), "the launch", started);
            }
        }
        instances.sort_by(|a, b| a.instance_id().cmp(&b.instance_id()));
        Ok(Outcome::Done(serde_json::json!({
            "reservation_id": reservation_id,
            "reused_existing_launch": reused,
            "termination_protection": p.disable_api_termination,
            "instances": instances.iter().map(describe).collect::<Vec<_>>(),
        })))
    }
}

impl RunInstancesHandler {
    /// The reservation this job already launched, if any.
    async fn find(&self, ctx: &JobContext) -> Result<Option<(String, Vec<Instance>)>, JobError> {
        self.limiter.acquire("DescribeInstances").await;
        let out = ctx
            .clients
            .ec2
            .describe_instances()
            .filters(job_id_filter(&ctx.job_id))
            .send()
            .await
            .map_err(|e| ec2_error("DescribeInstances", e))?;
        let mut reservations = out.reservations.unwrap_or_default();
        reservations.retain(|r| !r.instances().is_empty());
        if reservations.len() > 1 {
            tracing::warn!(
                count = reservations.len(),
                "more than one reservation carries this job's id; reporting the first"
            );
        }
        Ok(reservations.into_iter().next().map(|r| {
            (
                r.reservation_id.unwrap_or_default(),
                r.instances.unwrap_or_default(),
            )
        }))
    }

    /// Termination protection is a safety setting: read it back and set it where the
    /// launch parameter did not take.
    async fn ensure_protected(
        &self,
        ctx: &JobContext,
        instances: &[Instance],
    ) -> Result<(), JobError> {
        let ec2 = &ctx.clients.ec2;
        for id in instances.iter().filter_map(|i| i.instance_id()) {
            self.limiter.acquire("DescribeInstanceAttribute").await;
            let protected = ec2
                .describe_instance_attribute()
                .instance_id(id)
                .attribute(InstanceAttributeName::DisableApiTermination)
                .send()
                .await
                .map_err(|e| ec2_error("DescribeInstanceAttribute", e))?
                .disable_api_termination()
                .and_then(|v| v.value())
                .unwrap_or(false);
            if !protected {
                tracing::warn!(
                    instance_id = id,
                    "termination protection did not take at launch; setting it"
                );
                self.limiter.acquire("ModifyInstanceAttribute").await;
                ec2.modify_instance_attribute()
                    .instance_id(id)
                    .disable_api_termination(AttributeBooleanValue::builder().value(true).build())
                    .send()
                    .await
                    .map_err(|e| ec2_error("ModifyInstanceAttribute", e))?;
            }
        }
        Ok(())
    }
}

fn describe(i: &Instance) -> serde_json::Value {
    serde_json::json!({
        "instance_id": i.instance_id(),
        "state": i.state().and_then(|s| s.name()).map(|n| n.as_str()),
        "instance_type": i.instance_type().map(|t| t.as_str()),
        "availability_zone": i.placement().and_then(|p| p.availability_zone()),
        "private_ip_address": i.private_ip_address(),
        "launch_time": rfc3339(i.launch_time()),
        "image_id": i.image_id(),
    })
}
