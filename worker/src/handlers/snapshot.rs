//! `snapshot`: the article's flow. Optionally tag the instance and its volume with `Name`,
//! find the volumes (by id, by `Name` tag, or attached to an instance), snapshot each as
//! "<Name> Snap" tagged with the job id, and by default wait until every snapshot is
//! `completed`, without holding a worker meanwhile.
//!
//! `CreateSnapshot` has no client token, so exactly-once rests on Shoal: each snapshot id is
//! recorded in the job's progress as soon as it is created, and a later run asks for those
//! ids directly and then looks for snapshots tagged with the job's id, creating only those
//! still missing. EC2 may not list a new snapshot for a while, so when an earlier run may
//! have created one that neither lookup shows (it died mid-call, or its answer was lost),
//! the run looks again until the consistency window has passed before it creates.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_ec2::types::{
    ResourceType, Snapshot as Ec2Snapshot, SnapshotState, Tag as Ec2Tag, Volume,
};
use shoal_common::error::ShoalCode;
use shoal_common::job::Snapshot;

use super::consistency::{look_until_settled, on_own_resource};
use super::ec2::{
    dry_run_outcome, filter, job_id_filter, next_check, rfc3339, tag_spec, tags_with_job_id,
    to_chrono, volumes_named,
};
use super::limiter::{no_sdk_retry, Ec2Limiter};
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct SnapshotHandler {
    pub limiter: Arc<Ec2Limiter>,
}

impl JobHandler for SnapshotHandler {
    type Params = Snapshot;

    async fn run(&self, ctx: JobContext, p: Snapshot) -> Result<Outcome, JobError> {
        let ec2 = &ctx.clients.ec2;
        let volumes = self.volumes(&ctx, &p).await?;
        let Some(first) = volumes.first() else {
            return Err(JobError::permanent(
                "InvalidVolume.NotFound",
                match (&p.volume_name, &p.instance_id) {
                    (Some(name), _) => format!("no volume has the Name tag `{name}`"),
                    (_, Some(id)) => format!("no volume is attached to {id}"),
                    _ => "no volume matches".to_owned(),
                },
            ));
        };
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
            let request = ec2
                .create_snapshot()
                .volume_id(first.volume_id().unwrap_or_default())
                .description(description(first))
                .tag_specifications(tag_spec(ResourceType::Snapshot, &tags))
                .dry_run(true);
            let result = self.limiter.paced("CreateSnapshot", request.send()).await;
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
            let request = ec2
                .create_tags()
                .set_resources(Some(resources))
                .tags(Ec2Tag::builder().key("Name").value(name).build());
            self.limiter.call("CreateTags", request.send()).await?;
        }

        let mut snapshots = self.existing(&ctx, &volumes).await?;
        for volume in &volumes {
            let volume_id = volume.volume_id().unwrap_or_default();
            if snapshots.contains_key(volume_id) {
                continue;
            }
            let request = ec2
                .create_snapshot()
                .volume_id(volume_id)
                .description(description(volume))
                .tag_specifications(tag_spec(ResourceType::Snapshot, &tags));
            let out = self
                .limiter
                .create_once("CreateSnapshot", &ctx, || {
                    request
                        .clone()
                        .customize()
                        .config_override(no_sdk_retry())
                        .send()
                })
                .await?;
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
            record(&ctx, &snapshots);
        }

        let mut snapshots: Vec<Ec2Snapshot> = snapshots.into_values().collect();
        snapshots.sort_by(|a, b| a.volume_id().cmp(&b.volume_id()));
        if let Some(failed) = snapshots
            .iter()
            .find(|s| s.state() == Some(&SnapshotState::Error))
        {
            return Err(JobError::shoal(
                ShoalCode::SnapshotFailed,
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
        // The instance travels on in the result, for a chain's next step (lifting its
        // termination protection, say).
        Ok(Outcome::Done(serde_json::json!({
            "instance_id": p.instance_id,
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
            (_, Some(name), _) => {
                return volumes_named(&self.limiter, &ctx.clients.ec2, name).await
            }
            (_, _, Some(instance)) => request.filters(filter("attachment.instance-id", instance)),
            _ => {
                return Err(JobError::permanent(
                    "InvalidParameterCombination",
                    "no volume selector",
                ))
            }
        };
        let out = self.limiter.call("DescribeVolumes", request.send()).await?;
        Ok(out.volumes.unwrap_or_default())
    }

    /// This job's snapshots already taken, by volume: those its progress names, asked for
    /// by id (EC2 may not list them yet), and those carrying its tag. When a run before this
    /// one may have snapshotted a volume that neither shows, look again until the
    /// consistency window has passed: only then is "no snapshot" proof.
    async fn existing(
        &self,
        ctx: &JobContext,
        volumes: &[Volume],
    ) -> Result<HashMap<String, Ec2Snapshot>, JobError> {
        let ec2 = &ctx.clients.ec2;
        let recorded: HashMap<String, String> = ctx
            .progress
            .get(SNAPSHOTS)
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let mut found = HashMap::new();
        if !recorded.is_empty() {
            let ids: Vec<String> = recorded.values().cloned().collect();
            let out = on_own_resource(self.limiter.settings(), ctx.received_at, || async {
                self.limiter
                    .call(
                        "DescribeSnapshots",
                        ec2.describe_snapshots()
                            .owner_ids("self")
                            .set_snapshot_ids(Some(ids.clone()))
                            .send(),
                    )
                    .await
            })
            .await?;
            found.extend(by_volume(out.snapshots.unwrap_or_default()));
        }
        let wanted: Vec<&str> = volumes.iter().filter_map(|v| v.volume_id()).collect();
        let tagged = look_until_settled(
            ctx,
            self.limiter.settings(),
            |tagged: &HashMap<String, Ec2Snapshot>| {
                wanted
                    .iter()
                    .all(|v| found.contains_key(*v) || tagged.contains_key(*v))
            },
            || async {
                let out = self
                    .limiter
                    .call(
                        "DescribeSnapshots",
                        ec2.describe_snapshots()
                            .owner_ids("self")
                            .filters(job_id_filter(&ctx.job_id))
                            .send(),
                    )
                    .await?;
                Ok(by_volume(out.snapshots.unwrap_or_default()))
            },
        )
        .await?;
        for (volume, snapshot) in tagged {
            found.entry(volume).or_insert(snapshot);
        }
        record(ctx, &found);
        Ok(found)
    }
}

/// The progress key under which a run records its snapshots, by volume.
const SNAPSHOTS: &str = "snapshots";

/// Records the snapshots taken so far, volume → snapshot id, in the job's progress.
fn record(ctx: &JobContext, snapshots: &HashMap<String, Ec2Snapshot>) {
    let ids: serde_json::Map<String, serde_json::Value> = snapshots
        .iter()
        .filter_map(|(volume, s)| Some((volume.clone(), serde_json::json!(s.snapshot_id()?))))
        .collect();
    if !ids.is_empty() {
        ctx.progress.set(SNAPSHOTS, serde_json::Value::Object(ids));
    }
}

fn by_volume(snapshots: Vec<Ec2Snapshot>) -> HashMap<String, Ec2Snapshot> {
    snapshots
        .into_iter()
        .filter_map(|s| s.volume_id().map(str::to_owned).map(|v| (v, s)))
        .collect()
}

fn name_tag(tags: &[Ec2Tag]) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some("Name"))
        .and_then(|t| t.value())
        .map(str::to_owned)
}
