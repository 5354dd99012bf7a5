//! `snapshot`: the article's flow. Optionally tag the instance and its volume with `Name`,
//! find the volumes (by id, by `Name` tag, or attached to an instance), snapshot each as
//! "<Name> Snap" tagged with the job id, and by default wait until every snapshot is
//! `completed`, without holding a worker meanwhile.
//!
//! A redelivered job finds the snapshots tagged with its id and creates only those still
//! missing, so a crash between two volumes' snapshots leaves no duplicate.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_ec2::types::{
    ResourceType, Snapshot as Ec2Snapshot, SnapshotState, Tag as Ec2Tag, Volume,
};
use shoal_common::job::Snapshot;

use super::ec2::{
    dry_run_outcome, ec2_error, filter, job_id_filter, next_check, rfc3339, tag_spec,
    tags_with_job_id, to_chrono, Ec2Limiter,
};
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct SnapshotHandler {
    pub limiter: Arc<Ec2Limiter>,
}

impl JobHandler for SnapshotHandler {
    type Params = Snapshot;

    async fn run(&self, ctx: JobContext, p: Snapshot) -> Result<Outcome, JobError> {
        let ec2 = &ctx.clients.ec2;
        let volumes = self.volumes(&ctx, &p).await?;
        if volumes.is_empty() {
            return Err(JobError::permanent(
                "InvalidVolume.NotFound",
                match (&p.volume_name, &p.instance_id) {
                    (Some(name), _) => format!("no volume has the Name tag `{name}`"),
                    (_, Some(id)) => format!("no volume is attached to {id}"),
                    _ => "no volume matches".to_owned(),
                },
            ));
        }
        let tags = tags_with_job_id(&p.tags, &ctx.job_id);
        let description = |volume: &Volume| {
            p.description.clone().unwrap_or_else(|| {
                let name = p
                    .name
                    .clone()
                    .or_else(|| name_tag(volume.tags()))
                    .unwrap_or_else(|| volume.volume_id().unwrap_or_default().to_owned());
                format!("{name} Snap")
            })
        };
        if p.dry_run {
            self.limiter.acquire("CreateSnapshot").await;
            let result = ec2
                .create_snapshot()
                .volume_id(volumes[0].volume_id().unwrap_or_default())
                .description(description(&volumes[0]))
                .tag_specifications(tag_spec(ResourceType::Snapshot, &tags))
                .dry_run(true)
                .send()
                .await;
            return dry_run_outcome("CreateSnapshot", result);
        }

        if let Some(name) = &p.name {
            let resources: Vec<String> = p
                .instance_id
                .iter()
                .cloned()
                .chain(
                    volumes
                        .iter()
                        .filter_map(|v| v.volume_id().map(str::to_owned)),
                )
                .collect();
            self.limiter.acquire("CreateTags").await;
            ec2.create_tags()
                .set_resources(Some(resources))
                .tags(Ec2Tag::builder().key("Name").value(name).build())
                .send()
                .await
                .map_err(|e| ec2_error("CreateTags", e))?;
        }

        let mut snapshots = self.existing(&ctx).await?;
        for volume in &volumes {
            let volume_id = volume.volume_id().unwrap_or_default();
            if snapshots.contains_key(volume_id) {
                continue;
            }
            self.limiter.acquire("CreateSnapshot").await;
            let out = ec2
                .create_snapshot()
                .volume_id(volume_id)
                .description(description(volume))
                .tag_specifications(tag_spec(ResourceType::Snapshot, &tags))
                .send()
                .await
                .map_err(|e| ec2_error("CreateSnapshot", e))?;
            let snapshot = Ec2Snapshot::builder()
                .set_snapshot_id(out.snapshot_id)
                .set_volume_id(out.volume_id)
                .set_volume_size(out.volume_size)
                .set_start_time(out.start_time)
                .set_state(out.state)
                .set_progress(out.progress)
                .set_description(out.description)
                .build();
            snapshots.insert(volume_id.to_owned(), snapshot);
        }

        let mut snapshots: Vec<Ec2Snapshot> = snapshots.into_values().collect();
        snapshots.sort_by(|a, b| a.volume_id().cmp(&b.volume_id()));
        if let Some(failed) = snapshots
            .iter()
            .find(|s| s.state() == Some(&SnapshotState::Error))
        {
            return Err(JobError::permanent(
                "SnapshotFailed",
                format!(
                    "snapshot {} of {} failed: {}",
                    failed.snapshot_id().unwrap_or_default(),
                    failed.volume_id().unwrap_or_default(),
                    failed.state_message().unwrap_or("no reason given")
                ),
            ));
        }
        if p.wait
            && snapshots
                .iter()
                .any(|s| s.state() != Some(&SnapshotState::Completed))
        {
            let started = snapshots
                .iter()
                .filter_map(|s| to_chrono(s.start_time()))
                .min();
            return next_check(self.limiter.settings(), "the snapshot", started);
        }
        Ok(Outcome::Done(serde_json::json!({
            "snapshots": snapshots.iter().map(|s| serde_json::json!({
                "snapshot_id": s.snapshot_id(),
                "volume_id": s.volume_id(),
                "volume_size": s.volume_size(),
                "start_time": rfc3339(s.start_time()),
                "state": s.state().map(|st| st.as_str()),
                "progress": s.progress(),
                "description": s.description(),
            })).collect::<Vec<_>>(),
        })))
    }
}

impl SnapshotHandler {
    /// The volumes the job names: by id, by `Name` tag, or attached to an instance.
    async fn volumes(&self, ctx: &JobContext, p: &Snapshot) -> Result<Vec<Volume>, JobError> {
        let mut request = ctx.clients.ec2.describe_volumes();
        request = match (&p.volume_id, &p.volume_name, &p.instance_id) {
            (Some(id), _, _) => request.volume_ids(id),
            (_, Some(name), _) => request.filters(filter("tag:Name", name)),
            (_, _, Some(instance)) => request.filters(filter("attachment.instance-id", instance)),
            _ => {
                return Err(JobError::permanent(
                    "InvalidParameterCombination",
                    "no volume selector",
                ))
            }
        };
        self.limiter.acquire("DescribeVolumes").await;
        let out = request
            .send()
            .await
            .map_err(|e| ec2_error("DescribeVolumes", e))?;
        Ok(out.volumes.unwrap_or_default())
    }

    /// This job's snapshots already taken, by volume.
    async fn existing(&self, ctx: &JobContext) -> Result<HashMap<String, Ec2Snapshot>, JobError> {
        self.limiter.acquire("DescribeSnapshots").await;
        let out = ctx
            .clients
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(job_id_filter(&ctx.job_id))
            .send()
            .await
            .map_err(|e| ec2_error("DescribeSnapshots", e))?;
        Ok(out
            .snapshots
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.volume_id().map(str::to_owned).map(|v| (v, s)))
            .collect())
    }
}

fn name_tag(tags: &[Ec2Tag]) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some("Name"))
        .and_then(|t| t.value())
        .map(str::to_owned)
}
