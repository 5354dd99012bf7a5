//! `create-image`: an AMI from an instance, tagged with the job id, found again on
//! redelivery; optionally wait until it is available.
//!
//! `CreateImage` takes no client token, so it is sent once per try (the SDK's own retry off)
//! and a later run looks before it creates. AMI names are unique per account: a repeat that
//! meets `InvalidAMIName.Duplicate` accepts the image of that name only if it carries the
//! job's id. EC2 may not list a new image for a while, so the id a run created is recorded
//! in the job's progress and asked for directly, and neither a missing image nor a
//! duplicate name that cannot be looked up yet is ever reported as a failure while EC2 may
//! still be catching up.
//!
//! Only the image is tagged: the image tag is what makes the job idempotent, and the
//! emulator cannot tag an image's snapshots at creation (AWS can).

use std::sync::Arc;

use aws_sdk_ec2::types::{Filter, Image, ImageState, ResourceType};
use shoal_common::error::ShoalCode;
use shoal_common::job::CreateImage;
use tokio::time::Instant;

use super::consistency::made_before;
use super::ec2::{
    dry_run_outcome, filter, has_job_id, job_id_filter, next_check, tag_spec, tags_with_job_id,
};
use super::limiter::{no_sdk_retry, Ec2Limiter};
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct CreateImageHandler {
    pub limiter: Arc<Ec2Limiter>,
}

/// The progress key under which a run records the image it created.
const IMAGE_ID: &str = "image_id";

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
            let result = self
                .limiter
                .paced("CreateImage", request().dry_run(true).send())
                .await;
            return dry_run_outcome("CreateImage", result);
        }

        let image = self
            .made_once(&ctx, &p.name, "CreateImage", || async {
                request()
                    .customize()
                    .config_override(no_sdk_retry())
                    .send()
                    .await
                    .map(|out| out.image_id)
            })
            .await?;
        self.outcome(&image, p.wait)
    }
}

impl CreateImageHandler {
    /// The job's image, named `name`: the one an earlier run made, else the one `send` makes
    /// now (`CreateImage` or `RegisterImage`, neither of which takes a client token), sent
    /// once with no SDK retry and its id recorded the moment EC2 answers.
    pub(super) async fn made_once<F, Fut, E>(
        &self,
        ctx: &JobContext,
        name: &str,
        operation: &'static str,
        send: F,
    ) -> Result<Image, JobError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, aws_sdk_ec2::error::SdkError<E>>>,
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    {
        if let Some(image) = self.existing(ctx).await? {
            return Ok(image);
        }
        // No SDK retry: on AWS a repeat would meet `InvalidAMIName.Duplicate` (handled
        // below), but a name is no token, and an emulator may take the repeat.
        match self.limiter.create_once(operation, ctx, send).await {
            Ok(id) => {
                let id = id.unwrap_or_default();
                ctx.progress.set(IMAGE_ID, serde_json::json!(id));
                // Listed or not yet, the image exists: report what is known.
                Ok(match self.find(ctx, filter("image-id", &id)).await? {
                    Some(image) => image,
                    None => Image::builder()
                        .image_id(id)
                        .name(name)
                        .state(ImageState::Pending)
                        .build(),
                })
            }
            Err(e) if e.code.as_deref() == Some("InvalidAMIName.Duplicate") => {
                self.owner_of_name(ctx, name).await
            }
            Err(e) => Err(e),
        }
    }

    /// An image job's outcome at `image`'s state: failed, done, or (when it waits) a look
    /// again later.
    pub(super) fn outcome(&self, image: &Image, wait: bool) -> Result<Outcome, JobError> {
        match image.state() {
            Some(
                ImageState::Failed
                | ImageState::Error
                | ImageState::Invalid
                | ImageState::Deregistered,
            ) => {
                return Err(JobError::shoal(
                    ShoalCode::ImageFailed,
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
            _ if wait => {
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

    /// The image this job already created: the one its progress names (asked for by id,
    /// waiting out EC2's lag), else the one carrying its tag.
    async fn existing(&self, ctx: &JobContext) -> Result<Option<Image>, JobError> {
        made_before(
            ctx,
            self.limiter.settings(),
            IMAGE_ID,
            "InvalidAMIID.NotFound",
            |id| async move {
                let out = self
                    .limiter
                    .call(
                        "DescribeImages",
                        ctx.clients.ec2.describe_images().image_ids(id).send(),
                    )
                    .await?;
                Ok(out.images.unwrap_or_default().into_iter().next())
            },
            || self.find(ctx, job_id_filter(&ctx.job_id)),
        )
        .await
    }

    /// The image holding `name`, which EC2 just said exists: this job's if it carries the
    /// job's id (a repeat of its own create), a permanent clash otherwise. EC2 may not list
    /// it yet, so look until it does, for a consistency window from now.
    async fn owner_of_name(&self, ctx: &JobContext, name: &str) -> Result<Image, JobError> {
        let settled_at = Instant::now() + self.limiter.settings().consistency_window;
        loop {
            match self.find(ctx, filter("name", name)).await? {
                Some(image) if has_job_id(image.tags(), &ctx.job_id) => {
                    if let Some(id) = image.image_id() {
                        ctx.progress.set(IMAGE_ID, serde_json::json!(id));
                    }
                    return Ok(image);
                }
                Some(image) => {
                    return Err(JobError::permanent(
                        "InvalidAMIName.Duplicate",
                        format!(
                            "the AMI name `{name}` is taken by {}, which this job did not create",
                            image.image_id().unwrap_or("another image")
                        ),
                    ))
                }
                None if Instant::now() >= settled_at => {
                    return Err(JobError::transient(
                        "InvalidAMIName.Duplicate",
                        format!(
                        "the AMI name `{name}` is taken, but no image of that name is listed yet"
                    ),
                    ))
                }
                None => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
            }
        }
    }

    async fn find(&self, ctx: &JobContext, by: Filter) -> Result<Option<Image>, JobError> {
        let out = self
            .limiter
            .call(
                "DescribeImages",
                ctx.clients
                    .ec2
                    .describe_images()
                    .owners("self")
                    .filters(by)
                    .send(),
            )
            .await?;
        Ok(out.images.unwrap_or_default().into_iter().next())
    }
}
