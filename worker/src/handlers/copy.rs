//! `copy-snapshot`: `CopySnapshot` into another region, tagged with the source's tags, the
//! job's and `shoal:job-id`, optionally encrypted, and by default waited on until the copy
//! completes, holding no worker slot meanwhile.
//!
//! `CopySnapshot` takes no client token, so it is a create like `CreateImage`: sent once per
//! try with the SDK's retry off, the copy's id recorded in the job's progress (and so in the
//! ledger) the moment EC2 answers, and on any later run looked for (by that id, else by the
//! job's tag in the destination, waiting out EC2's lag) before anything is copied again.

use std::sync::Arc;

use aws_sdk_ec2::types::{ResourceType, Snapshot as Ec2Snapshot, SnapshotState, Tag as Ec2Tag};
use shoal_common::error::ShoalCode;
use shoal_common::job::CopySnapshot;
use shoal_common::validate::JOB_ID_TAG;

use super::consistency::made_before;
use super::ec2::{
    dry_run_outcome, filter, job_id_filter, next_check, rfc3339, tag_spec, to_chrono,
};
use super::limiter::{no_sdk_retry, Ec2Limiter};
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct CopySnapshotHandler {
    pub limiter: Arc<Ec2Limiter>,
}

/// The progress key under which a run records the copy it made.
const COPY_ID: &str = "copy_id";

/// The worker's EC2 client, for `region` (its interceptors, timeouts and credentials kept).
pub fn client_in(ctx: &JobContext, region: Option<&str>) -> aws_sdk_ec2::Client {
    match region {
        None => ctx.clients.ec2.clone(),
        Some(region) => aws_sdk_ec2::Client::from_conf(
            ctx.clients
                .ec2
                .config()
                .to_builder()
                .region(aws_sdk_ec2::config::Region::new(region.to_owned()))
                .build(),
        ),
    }
}

impl JobHandler for CopySnapshotHandler {
    type Params = CopySnapshot;

    async fn run(&self, ctx: JobContext, p: CopySnapshot) -> Result<Outcome, JobError> {
        let source = client_in(&ctx, p.source_region.as_deref());
        let destination = client_in(&ctx, Some(&p.destination_region));
        let source_region = match &p.source_region {
            Some(region) => region.clone(),
            None => ctx
                .clients
                .ec2
                .config()
                .region()
                .map(|r| r.to_string())
                .unwrap_or_default(),
        };

        let copy = match self.existing(&ctx, &destination).await? {
            Some(copy) => copy,
            None => {
                // The source's tags travel with it (not AWS's own, nor its job's id).
                let original = self
                    .limiter
                    .call(
                        "DescribeSnapshots",
                        source
                            .describe_snapshots()
                            .snapshot_ids(&p.snapshot_id)
                            .send(),
                    )
                    .await?;
                let mut tags: Vec<Ec2Tag> = original
                    .snapshots()
                    .first()
                    .map(|s| s.tags().to_vec())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| {
                        t.key()
                            .is_some_and(|k| !k.starts_with("aws:") && k != JOB_ID_TAG)
                    })
                    .filter(|t| !p.tags.iter().any(|own| Some(own.key.as_str()) == t.key()))
                    .collect();
                tags.extend(
                    p.tags
                        .iter()
                        .map(|t| Ec2Tag::builder().key(&t.key).value(&t.value).build()),
                );
                tags.push(
                    Ec2Tag::builder()
                        .key(JOB_ID_TAG)
                        .value(ctx.job_id.as_str())
                        .build(),
                );
                let request = || {
                    destination
                        .copy_snapshot()
                        .source_region(&source_region)
                        .source_snapshot_id(&p.snapshot_id)
                        .description(
                            p.description
                                .clone()
                                .unwrap_or_else(|| format!("Copy of {}", p.snapshot_id)),
                        )
                        // No `PresignedUrl`, even for an encrypted source: EC2 no longer
                        // needs one (the SDKs dropped generating it, smithy-rs#133).
                        .encrypted(p.encrypted)
                        .set_kms_key_id(p.kms_key_id.clone())
                        .tag_specifications(tag_spec(ResourceType::Snapshot, &tags))
                };
                if p.dry_run {
                    let result = self
                        .limiter
                        .paced("CopySnapshot", request().dry_run(true).send())
                        .await;
                    return dry_run_outcome("CopySnapshot", result);
                }
                let out = self
                    .limiter
                    .create_once("CopySnapshot", &ctx, || {
                        request().customize().config_override(no_sdk_retry()).send()
                    })
                    .await?;
                let id = out.snapshot_id.unwrap_or_default();
                ctx.progress.set(COPY_ID, serde_json::json!(id));
                // Listed or not yet, the copy exists: report what is known.
                match self.find(&destination, filter("snapshot-id", &id)).await? {
                    Some(copy) => copy,
                    None => Ec2Snapshot::builder()
                        .snapshot_id(id)
                        .state(SnapshotState::Pending)
                        .build(),
                }
            }
        };
        match copy.state() {
            Some(SnapshotState::Error) => Err(JobError::shoal(
                ShoalCode::SnapshotFailed,
                format!(
                    "the copy {} of {} is in error: {}",
                    copy.snapshot_id().unwrap_or_default(),
                    p.snapshot_id,
                    copy.state_message().unwrap_or("no reason given")
                ),
            )),
            Some(SnapshotState::Completed) => Ok(done(&p, &copy)),
            _ if p.wait => next_check(
                self.limiter.settings(),
                "the snapshot copy",
                to_chrono(copy.start_time()),
            ),
            _ => Ok(done(&p, &copy)),
        }
    }
}

fn done(p: &CopySnapshot, copy: &Ec2Snapshot) -> Outcome {
    Outcome::Done(serde_json::json!({
        "snapshot_id": copy.snapshot_id(),
        "source_snapshot_id": p.snapshot_id,
        "destination_region": p.destination_region,
        "state": copy.state().map(|s| s.as_str()),
        "progress": copy.progress(),
        "start_time": rfc3339(copy.start_time()),
        "encrypted": copy.encrypted(),
    }))
}

impl CopySnapshotHandler {
    /// The copy this job already made: the one its progress names (asked for by id, waiting
    /// out EC2's lag), else the one carrying its tag in the destination.
    async fn existing(
        &self,
        ctx: &JobContext,
        destination: &aws_sdk_ec2::Client,
    ) -> Result<Option<Ec2Snapshot>, JobError> {
        made_before(
            ctx,
            self.limiter.settings(),
            COPY_ID,
            "InvalidSnapshot.NotFound",
            |id| async move { self.find(destination, filter("snapshot-id", &id)).await },
            || self.find(destination, job_id_filter(&ctx.job_id)),
        )
        .await
    }

    async fn find(
        &self,
        ec2: &aws_sdk_ec2::Client,
        by: aws_sdk_ec2::types::Filter,
    ) -> Result<Option<Ec2Snapshot>, JobError> {
        let out = self
            .limiter
            .call(
                "DescribeSnapshots",
                ec2.describe_snapshots()
                    .owner_ids("self")
                    .filters(by)
                    .send(),
            )
            .await?;
        Ok(out.snapshots.unwrap_or_default().into_iter().next())
    }
}
