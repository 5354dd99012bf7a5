//! `restore-volume`: `CreateVolume` from a snapshot, with a `ClientToken` from the job id,
//! tagged; optionally `AttachVolume` to an instance; and by default waited on until the
//! volume is `available` (or attached and `in-use`), holding no worker slot meanwhile.
//!
//! "The newest completed snapshot" can change between runs, so the snapshot a run chose is
//! recorded in the job's progress before the volume is made, and a later run restores that
//! one. The volume made is recorded too, the moment EC2 answers; AWS also answers a repeated
//! token with the same volume, but the emulator ignores tokens, so a later run looks (by the
//! recorded id, else by the job's tag) before it creates.

use std::sync::Arc;

use aws_sdk_ec2::types::{Filter, ResourceType, Volume, VolumeAttachmentState, VolumeState};
use shoal_common::error::ShoalCode;
use shoal_common::job::RestoreVolume;

use super::consistency::{ensure_lease, made_before};
use super::ec2::{
    client_token, dry_run_outcome, filter, job_id_filter, next_check, tag_spec, tags_with_job_id,
    to_chrono, volumes_named,
};
use super::limiter::Ec2Limiter;
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct RestoreVolumeHandler {
    pub limiter: Arc<Ec2Limiter>,
}

/// Progress keys: the snapshot a run chose, and the volume it made.
const SNAPSHOT_ID: &str = "snapshot_id";
const VOLUME_ID: &str = "volume_id";

impl JobHandler for RestoreVolumeHandler {
    type Params = RestoreVolume;

    async fn run(&self, ctx: JobContext, p: RestoreVolume) -> Result<Outcome, JobError> {
        let ec2 = &ctx.clients.ec2;
        let snapshot_id = match ctx
            .progress
            .get(SNAPSHOT_ID)
            .and_then(|v| v.as_str().map(str::to_owned))
        {
            Some(id) => id,
            None => {
                let id = self.choose(&ctx, &p).await?;
                ctx.progress.set(SNAPSHOT_ID, serde_json::json!(id));
                id
            }
        };
        let tags = tags_with_job_id(&p.tags, &ctx.job_id);
        let request = || {
            ec2.create_volume()
                .snapshot_id(&snapshot_id)
                .availability_zone(&p.availability_zone)
                .client_token(client_token(&ctx.job_id))
                .tag_specifications(tag_spec(ResourceType::Volume, &tags))
        };
        if p.dry_run {
            let result = self
                .limiter
                .paced("CreateVolume", request().dry_run(true).send())
                .await;
            return dry_run_outcome("CreateVolume", result);
        }
        let volume = match self.existing(&ctx).await? {
            Some(volume) => volume,
            None => {
                ctx.before_create("CreateVolume").await?;
                // The token makes a repeat of this call harmless on AWS: the SDK's retry may
                // resend it.
                let out = self.limiter.call("CreateVolume", request().send()).await?;
                let id = out.volume_id().unwrap_or_default().to_owned();
                ctx.progress.set(VOLUME_ID, serde_json::json!(id));
                match self.find(&ctx, filter("volume-id", &id)).await? {
                    Some(volume) => volume,
                    None => Volume::builder()
                        .volume_id(id)
                        .state(VolumeState::Creating)
                        .build(),
                }
            }
        };
        let volume_id = volume.volume_id().unwrap_or_default().to_owned();
        match volume.state() {
            Some(VolumeState::Error) => {
                return Err(JobError::shoal(
                    ShoalCode::SnapshotFailed,
                    format!("volume {volume_id} from {snapshot_id} is in error"),
                ))
            }
            Some(VolumeState::Creating) | None => {
                return if p.wait || p.instance_id.is_some() {
                    next_check(
                        self.limiter.settings(),
                        "the volume",
                        to_chrono(volume.create_time()),
                    )
                } else {
                    Ok(done(&p, &snapshot_id, &volume))
                };
            }
            _ => {}
        }
        if let (Some(instance), Some(device)) = (&p.instance_id, &p.device) {
            let attached = volume
                .attachments()
                .iter()
                .find(|a| a.instance_id() == Some(instance.as_str()));
            match attached {
                None if volume.state() == Some(&VolumeState::Available) => {
                    ensure_lease(&ctx)?;
                    let out = self
                        .limiter
                        .call(
                            "AttachVolume",
                            ec2.attach_volume()
                                .volume_id(&volume_id)
                                .instance_id(instance)
                                .device(device)
                                .send(),
                        )
                        .await?;
                    if p.wait {
                        // The deadline counts from EC2's own times (the attachment's, else
                        // the volume's), which no message can set back.
                        let since = to_chrono(out.attach_time())
                            .or_else(|| to_chrono(volume.create_time()))
                            .or_else(|| Some(chrono::Utc::now()));
                        return next_check(self.limiter.settings(), "the attachment", since);
                    }
                }
                None => {
                    return Err(JobError::permanent(
                        "VolumeInUse",
                        format!(
                            "volume {volume_id} is {} and not attached to {instance}",
                            volume.state().map(|s| s.as_str()).unwrap_or("?")
                        ),
                    ))
                }
                Some(a) if p.wait && a.state() != Some(&VolumeAttachmentState::Attached) => {
                    let since =
                        to_chrono(a.attach_time()).or_else(|| to_chrono(volume.create_time()));
                    return next_check(self.limiter.settings(), "the attachment", since);
                }
                Some(_) => {}
            }
        }
        let volume = self
            .find(&ctx, filter("volume-id", &volume_id))
            .await?
            .unwrap_or(volume);
        Ok(done(&p, &snapshot_id, &volume))
    }
}

fn done(p: &RestoreVolume, snapshot_id: &str, volume: &Volume) -> Outcome {
    let attachment = volume.attachments().first().map(|a| {
        serde_json::json!({
            "instance_id": a.instance_id(),
            "device": a.device(),
            "state": a.state().map(|s| s.as_str()),
        })
    });
    Outcome::Done(serde_json::json!({
        "volume_id": volume.volume_id(),
        "snapshot_id": snapshot_id,
        "availability_zone": p.availability_zone,
        "state": volume.state().map(|s| s.as_str()),
        "size_gib": volume.size(),
        "attachment": attachment,
    }))
}

impl RestoreVolumeHandler {
    /// The snapshot to restore: the one named, or the newest completed one of the volume (or
    /// of the volumes the `Name` tag names).
    async fn choose(&self, ctx: &JobContext, p: &RestoreVolume) -> Result<String, JobError> {
        if let Some(id) = &p.snapshot_id {
            return Ok(id.clone());
        }
        let ec2 = &ctx.clients.ec2;
        let volumes: Vec<String> = match (&p.volume_id, &p.volume_name) {
            (Some(id), _) => vec![id.clone()],
            (None, Some(name)) => volumes_named(&self.limiter, ec2, name)
                .await?
                .into_iter()
                .filter_map(|v| v.volume_id)
                .collect(),
            (None, None) => Vec::new(),
        };
        let what = p
            .volume_id
            .clone()
            .or_else(|| {
                p.volume_name
                    .as_ref()
                    .map(|n| format!("the volumes named `{n}`"))
            })
            .unwrap_or_default();
        if volumes.is_empty() {
            return Err(JobError::permanent(
                "InvalidVolume.NotFound",
                format!(
                    "no volume has the Name tag `{}`",
                    p.volume_name.as_deref().unwrap_or_default()
                ),
            ));
        }
        let out = self
            .limiter
            .call(
                "DescribeSnapshots",
                ec2.describe_snapshots()
                    .owner_ids("self")
                    .filters(
                        Filter::builder()
                            .name("volume-id")
                            .set_values(Some(volumes))
                            .build(),
                    )
                    .filters(filter("status", "completed"))
                    .send(),
            )
            .await?;
        out.snapshots()
            .iter()
            .max_by_key(|s| to_chrono(s.start_time()))
            .and_then(|s| s.snapshot_id().map(str::to_owned))
            .ok_or_else(|| {
                JobError::permanent(
                    "InvalidSnapshot.NotFound",
                    format!("{what} has no completed snapshot to restore"),
                )
            })
    }

    /// The volume this job already made: by the id its progress recorded (waiting out EC2's
    /// lag), else by its tag.
    async fn existing(&self, ctx: &JobContext) -> Result<Option<Volume>, JobError> {
        made_before(
            ctx,
            self.limiter.settings(),
            VOLUME_ID,
            "InvalidVolume.NotFound",
            |id| async move { self.find(ctx, filter("volume-id", &id)).await },
            || self.find(ctx, job_id_filter(&ctx.job_id)),
        )
        .await
    }

    async fn find(&self, ctx: &JobContext, by: Filter) -> Result<Option<Volume>, JobError> {
        let out = self
            .limiter
            .call(
                "DescribeVolumes",
                ctx.clients.ec2.describe_volumes().filters(by).send(),
            )
            .await?;
        Ok(out.volumes.unwrap_or_default().into_iter().next())
    }
}
