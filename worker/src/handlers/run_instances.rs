//! `run-instances`: launch from an AMI with the job id as `ClientToken` and as a tag on every
//! instance and volume; verify termination protection took; optionally wait until running.
//!
//! A redelivered job first looks for its launch: by the instance ids an earlier run recorded
//! in the job's progress, else by the job-id tag (in any state: an instance someone already
//! terminated was still this job's launch), and launches nothing new if it finds one. The
//! ids are asked for directly because EC2 may not list a new instance for a while; a lookup
//! by tag that finds nothing is trusted only once that window has passed. A repeated
//! `RunInstances` would anyway return the first reservation (same `ClientToken`), but the
//! emulator ignores the token, and the lookup keeps tests exact.

use std::sync::Arc;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, Instance, InstanceAttributeName, InstanceStateName, InstanceType,
    Placement, ResourceType,
};
use shoal_common::error::ShoalCode;
use shoal_common::job::RunInstances;
use tokio::time::Instant;

use super::consistency::{look_until_settled, on_own_resource};
use super::ec2::{
    client_token, dry_run_outcome, job_id_filter, next_check, rfc3339, tag_spec, tags_with_job_id,
    to_chrono,
};
use super::limiter::Ec2Limiter;
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct RunInstancesHandler {
    pub limiter: Arc<Ec2Limiter>,
}

/// The progress key under which a run records its launch: reservation and instance ids.
const LAUNCH: &str = "launch";

/// How a job's existing launch was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// This message's own earlier run recorded it.
    Recorded,
    /// By the job-id tag: an earlier delivery of this message that died before it could
    /// record the launch, or another message with the same job id.
    ByTag,
}

/// Whether a launch found for this job was made by an earlier job (another message with the
/// same id, a resubmission) rather than by an earlier delivery of this one: the result's
/// `reused_existing_launch`. A launch this message recorded is its own; one found by tag is
/// an earlier job's only if it started before this message was enqueued.
fn made_by_an_earlier_job(how: Found, instances: &[Instance], ctx: &JobContext) -> bool {
    let launched = instances
        .iter()
        .filter_map(|i| to_chrono(i.launch_time()))
        .min();
    match (how, launched, ctx.enqueued_at) {
        (Found::Recorded, _, _) => false,
        (Found::ByTag, Some(launched), Some(enqueued)) => launched < enqueued,
        // Without both instants there is no proof the launch is another job's.
        (Found::ByTag, _, _) => false,
    }
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
        self.check_image_owner(&ctx, &p.image_id).await?;
        if p.dry_run {
            let result = self
                .limiter
                .paced("RunInstances", request().dry_run(true).send())
                .await;
            return dry_run_outcome("RunInstances", result);
        }

        // Since when EC2 may still be catching up with this launch.
        let mut since = ctx.received_at;
        let (reservation_id, mut instances, found) = match self.find(&ctx).await? {
            Some((reservation, instances, how)) => (reservation, instances, Some(how)),
            None => {
                ctx.before_create("RunInstances").await?;
                let out = self.limiter.call("RunInstances", request().send()).await?;
                since = Instant::now();
                let reservation = out.reservation_id.unwrap_or_default();
                let instances = out.instances.unwrap_or_default();
                ctx.progress.set(
                    LAUNCH,
                    serde_json::json!({
                        "reservation_id": reservation,
                        "instance_ids": instances.iter().filter_map(|i| i.instance_id()).collect::<Vec<_>>(),
                    }),
                );
                (reservation, instances, None)
            }
        };
        let reused = found.is_some_and(|how| made_by_an_earlier_job(how, &instances, &ctx));
        if p.disable_api_termination {
            self.ensure_protected(&ctx, &instances, since).await?;
        }
        if p.wait {
            let started = instances
                .iter()
                .filter_map(|i| to_chrono(i.launch_time()))
                .min();
            if found.is_none() {
                // Freshly launched instances are pending: look again later rather than here.
                return next_check(self.limiter.settings(), "the launch", started);
            }
            let state = |i: &Instance| i.state().and_then(|s| s.name()).cloned();
            if instances.iter().any(|i| {
                matches!(
                    state(i),
                    Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
                )
            }) {
                return Err(JobError::shoal(
                    ShoalCode::InstanceTerminated,
                    "an instance of this launch terminated before it was running",
                ));
            }
            if instances
                .iter()
                .any(|i| state(i) != Some(InstanceStateName::Running))
            {
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
    /// Refuses an AMI whose owner is not among `--allow-image-owners`, before anything is
    /// launched. Only EC2 knows an image's owner, so this gate is the handler's.
    async fn check_image_owner(&self, ctx: &JobContext, image_id: &str) -> Result<(), JobError> {
        let allowed = &self.limiter.settings().allowed_image_owners;
        if allowed.is_empty() {
            return Ok(());
        }
        let out = self
            .limiter
            .call(
                "DescribeImages",
                ctx.clients.ec2.describe_images().image_ids(image_id).send(),
            )
            .await?;
        let image = out.images().first();
        let owners = [
            image.and_then(|i| i.owner_id()),
            image.and_then(|i| i.image_owner_alias()),
        ];
        if owners
            .iter()
            .flatten()
            .any(|o| allowed.iter().any(|a| a == o))
        {
            return Ok(());
        }
        Err(JobError::shoal(
            ShoalCode::NotAllowed,
            format!(
                "params.image_id: `{image_id}` is owned by {}, which --allow-image-owners ({}) does not list",
                image.and_then(|i| i.owner_id()).unwrap_or("no one EC2 names"),
                allowed.join(",")
            ),
        ))
    }

    /// The reservation this job already launched, if any, and how it was found.
    async fn find(
        &self,
        ctx: &JobContext,
    ) -> Result<Option<(String, Vec<Instance>, Found)>, JobError> {
        let ec2 = &ctx.clients.ec2;
        let recorded: Vec<String> = ctx
            .progress
            .get(LAUNCH)
            .and_then(|l| l.get("instance_ids").cloned())
            .and_then(|ids| serde_json::from_value(ids).ok())
            .unwrap_or_default();
        let reservations = if recorded.is_empty() {
            look_until_settled(
                ctx,
                self.limiter.settings(),
                |reservations: &Vec<aws_sdk_ec2::types::Reservation>| !reservations.is_empty(),
                || async {
                    let out = self
                        .limiter
                        .call(
                            "DescribeInstances",
                            ec2.describe_instances()
                                .filters(job_id_filter(&ctx.job_id))
                                .send(),
                        )
                        .await?;
                    let mut reservations = out.reservations.unwrap_or_default();
                    reservations.retain(|r| !r.instances().is_empty());
                    Ok(reservations)
                },
            )
            .await?
        } else {
            on_own_resource(self.limiter.settings(), ctx.received_at, || async {
                self.limiter
                    .call(
                        "DescribeInstances",
                        ec2.describe_instances()
                            .set_instance_ids(Some(recorded.clone()))
                            .send(),
                    )
                    .await
            })
            .await?
            .reservations
            .unwrap_or_default()
        };
        if reservations.len() > 1 {
            tracing::warn!(
                count = reservations.len(),
                "more than one reservation carries this job's id; reporting the first"
            );
        }
        let how = if recorded.is_empty() {
            Found::ByTag
        } else {
            Found::Recorded
        };
        Ok(reservations.into_iter().next().map(|r| {
            (
                r.reservation_id.unwrap_or_default(),
                r.instances.unwrap_or_default(),
                how,
            )
        }))
    }

    /// Termination protection is a safety setting: read it back and set it where the
    /// launch parameter did not take. The instances are this job's own, created at or after
    /// `since`, so `InvalidInstanceID.NotFound` means EC2 has not caught up yet.
    async fn ensure_protected(
        &self,
        ctx: &JobContext,
        instances: &[Instance],
        since: Instant,
    ) -> Result<(), JobError> {
        let ec2 = &ctx.clients.ec2;
        let settings = self.limiter.settings();
        for id in instances.iter().filter_map(|i| i.instance_id()) {
            let protected = on_own_resource(settings, since, || async {
                self.limiter
                    .call(
                        "DescribeInstanceAttribute",
                        ec2.describe_instance_attribute()
                            .instance_id(id)
                            .attribute(InstanceAttributeName::DisableApiTermination)
                            .send(),
                    )
                    .await
            })
            .await?
            .disable_api_termination()
            .and_then(|v| v.value())
            .unwrap_or(false);
            if !protected {
                tracing::warn!(
                    instance_id = id,
                    "termination protection did not take at launch; setting it"
                );
                on_own_resource(settings, since, || async {
                    self.limiter
                        .call(
                            "ModifyInstanceAttribute",
                            ec2.modify_instance_attribute()
                                .instance_id(id)
                                .disable_api_termination(
                                    AttributeBooleanValue::builder().value(true).build(),
                                )
                                .send(),
                        )
                        .await
                })
                .await?;
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
