//! `register-image`: `RegisterImage` with the snapshot as the root device, tagged, waited on
//! as `create-image` is. It takes no client token, so it is a create like `CreateImage`: sent
//! once, its id recorded at once, looked for (by that id, else by the job's tag) before any
//! second call, and a duplicate name that carries this job's id is this job's image.

use std::sync::Arc;

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ResourceType,
};
use shoal_common::error::{classify_sdk_error, ShoalCode};
use shoal_common::job::RegisterImage;

use super::create_image::CreateImageHandler;
use super::ec2::{dry_run_outcome, tag_spec, tags_with_job_id};
use super::limiter::{no_sdk_retry, Ec2Limiter};
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct RegisterImageHandler {
    pub limiter: Arc<Ec2Limiter>,
    /// This worker's account, asked once.
    pub account: Arc<tokio::sync::OnceCell<String>>,
}

impl RegisterImageHandler {
    pub fn new(limiter: Arc<Ec2Limiter>) -> Self {
        RegisterImageHandler {
            limiter,
            account: Arc::default(),
        }
    }

    /// `Ok` when `snapshot_id` is this account's own: an AMI registered from a snapshot
    /// another account shared would be owned by this one, and so pass `--allow-image-owners`
    /// for whatever that account put on it.
    async fn own_snapshot(&self, ctx: &JobContext, snapshot_id: &str) -> Result<(), JobError> {
        let account = self
            .account
            .get_or_try_init(|| async {
                let who = ctx
                    .clients
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| JobError::from(classify_sdk_error("GetCallerIdentity", &e)))?;
                Ok::<_, JobError>(who.account().unwrap_or_default().to_owned())
            })
            .await?;
        let found = self
            .limiter
            .call(
                "DescribeSnapshots",
                ctx.clients
                    .ec2
                    .describe_snapshots()
                    .snapshot_ids(snapshot_id)
                    .send(),
            )
            .await?;
        match found.snapshots().first().and_then(|s| s.owner_id()) {
            Some(owner) if owner == account => Ok(()),
            Some(owner) => Err(JobError::shoal(
                ShoalCode::NotAllowed,
                format!(
                    "params.snapshot_id: {snapshot_id} is owned by account {owner}, not this one ({account}): register-image makes AMIs only from this account's own snapshots"
                ),
            )),
            None => Err(JobError::permanent(
                "InvalidSnapshot.NotFound",
                format!("{snapshot_id} is not listed by EC2"),
            )),
        }
    }
}

impl JobHandler for RegisterImageHandler {
    type Params = RegisterImage;

    async fn run(&self, ctx: JobContext, p: RegisterImage) -> Result<Outcome, JobError> {
        let ec2 = &ctx.clients.ec2;
        let tags = tags_with_job_id(&p.tags, &ctx.job_id);
        let request = || {
            ec2.register_image()
                .name(&p.name)
                .set_description(p.description.clone())
                .root_device_name(&p.root_device_name)
                .architecture(ArchitectureValues::from(p.architecture.as_str()))
                .virtualization_type(&p.virtualization_type)
                .ena_support(p.ena_support)
                .set_boot_mode(p.boot_mode.as_deref().map(BootModeValues::from))
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name(&p.root_device_name)
                        .ebs(
                            EbsBlockDevice::builder()
                                .snapshot_id(&p.snapshot_id)
                                .delete_on_termination(true)
                                .build(),
                        )
                        .build(),
                )
                .tag_specifications(tag_spec(ResourceType::Image, &tags))
        };
        self.own_snapshot(&ctx, &p.snapshot_id).await?;
        if p.dry_run {
            let result = self
                .limiter
                .paced("RegisterImage", request().dry_run(true).send())
                .await;
            return dry_run_outcome("RegisterImage", result);
        }
        let images = CreateImageHandler {
            limiter: self.limiter.clone(),
        };
        let image = images
            .made_once(&ctx, &p.name, "RegisterImage", || async {
                request()
                    .customize()
                    .config_override(no_sdk_retry())
                    .send()
                    .await
                    .map(|out| out.image_id)
            })
            .await?;
        images.outcome(&image, p.wait)
    }
}
