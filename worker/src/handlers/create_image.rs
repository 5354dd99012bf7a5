//! `create-image`: an AMI from an instance, tagged with the job id, found again by that tag
//! on redelivery; optionally wait until it is available.
//!
//! Only the image is tagged: the image tag is what makes the job idempotent, and the
//! emulator cannot tag an image's snapshots at creation (AWS can).

use std::sync::Arc;

use aws_sdk_ec2::types::{Image, ImageState, ResourceType};
use shoal_common::job::CreateImage;

use super::ec2::{
    dry_run_outcome, ec2_error, error_code, filter, has_job_id, job_id_filter, next_check,
    tag_spec, tags_with_job_id, Ec2Limiter,
};
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct CreateImageHandler {
    pub limiter: Arc<Ec2Limiter>,
}

impl JobHandler for CreateImageHandler {
    type Params = CreateImage;

    async fn run(&self, ctx: JobContext, p: CreateImage) -> Result<Outcome, JobError> {
        let ec2 = &ctx.clients.ec2;
        let tags = tags_with_job_id(&p.tags, &ctx.job_id);
        let request = || {
            ec2.create_image()
                .instance_id(&p.instance_id)
                .name(&p.name)
                .set_description(p.description.clone())
                .no_reboot(p.no_reboot)
                .tag_specifications(tag_spec(ResourceType::Image, &tags))
        };
        if p.dry_run {
            self.limiter.acquire("CreateImage").await;
            return dry_run_outcome("CreateImage", request().dry_run(true).send().await);
        }

        let image = match self.find(&ctx, job_id_filter(&ctx.job_id)).await? {
            Some(image) => image,
            None => {
                self.limiter.acquire("CreateImage").await;
                match request().send().await {
                    Ok(out) => {
                        let id = out.image_id.unwrap_or_default();
                        self.find(&ctx, filter("image-id", &id))
                            .await?
                            .ok_or_else(|| {
                                JobError::transient(
                                    "ImageNotVisibleYet",
                                    format!("{id} is not listed yet"),
                                )
                            })?
                    }
                    // A redelivery after a crash between create and tag lookup, or a name
                    // someone else holds: only an image carrying this job's id is ours.
                    Err(e) if error_code(&e) == Some("InvalidAMIName.Duplicate") => {
                        match self.find(&ctx, filter("name", &p.name)).await? {
                            Some(image) if has_job_id(image.tags(), &ctx.job_id) => image,
                            Some(image) => {
                                return Err(JobError::permanent(
                                    "InvalidAMIName.Duplicate",
                                    format!(
                                        "the AMI name `{}` is taken by {}, which this job did not create",
                                        p.name,
                                        image.image_id().unwrap_or("another image")
                                    ),
                                ))
                            }
                            None => return Err(ec2_error("CreateImage", e)),
                        }
                    }
                    Err(e) => return Err(ec2_error("CreateImage", e)),
                }
            }
        };
        match image.state() {
            Some(
                ImageState::Failed
                | ImageState::Error
                | ImageState::Invalid
                | ImageState::Deregistered,
            ) => {
                return Err(JobError::permanent(
                    "ImageFailed",
                    format!(
                        "image {} is {}: {}",
                        image.image_id().unwrap_or_default(),
                        image.state().map(|s| s.as_str()).unwrap_or("?"),
                        image
                            .state_reason()
                            .and_then(|r| r.message())
                            .unwrap_or("no reason given")
                    ),
                ))
            }
            Some(ImageState::Available) => {}
            _ if p.wait => {
                let started = image
                    .creation_date()
                    .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
                    .map(|d| d.with_timezone(&chrono::Utc));
                return next_check(self.limiter.settings(), "the image", started);
            }
            _ => {}
        }
        Ok(Outcome::Done(serde_json::json!({
            "image_id": image.image_id(),
            "name": image.name(),
            "state": image.state().map(|s| s.as_str()),
        })))
    }
}

impl CreateImageHandler {
    async fn find(
        &self,
        ctx: &JobContext,
        by: aws_sdk_ec2::types::Filter,
    ) -> Result<Option<Image>, JobError> {
        self.limiter.acquire("DescribeImages").await;
        let out = ctx
            .clients
            .ec2
            .describe_images()
            .owners("self")
            .filters(by)
            .send()
            .await
            .map_err(|e| ec2_error("DescribeImages", e))?;
        Ok(out.images.unwrap_or_default().into_iter().next())
    }
}
