//! `prune-snapshots`: retention for the snapshots Shoal made, as Data Lifecycle Manager
//! keeps them: the newest `keep_count` and those younger than `keep_for` stay, the rest are
//! deleted with `DeleteSnapshot`.
//!
//! Never deleted: a snapshot Shoal did not make (no `shoal:job-id`; unless the worker is told
//! `--allow-destroying-untagged`), one still pending, and one an AMI is registered from (AWS
//! refuses with `InvalidSnapshot.InUse`, the emulator does not, so the account's images are
//! looked at first and the snapshot is reported kept, naming the image). A snapshot already gone is
//! already deleted: a snapshot deleted moments ago may still be listed, and its
//! `InvalidSnapshot.NotFound` is the deletion done, so a repeat of the job is a no-op.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_ec2::types::{Filter, Snapshot as Ec2Snapshot, SnapshotState};
use chrono::{DateTime, Utc};
use shoal_common::job::{keep_for_duration, PruneSnapshots};
use shoal_common::validate::JOB_ID_TAG;

use super::consistency::ensure_lease;
use super::ec2::{filter, made_by_shoal, to_chrono, volumes_named};
use super::limiter::Ec2Limiter;
use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct PruneSnapshotsHandler {
    pub limiter: Arc<Ec2Limiter>,
}

/// One snapshot's fate, for the event.
struct Verdict {
    snapshot_id: String,
    start_time: Option<DateTime<Utc>>,
    reason: String,
}

impl Verdict {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "snapshot_id": self.snapshot_id,
            "start_time": self.start_time.map(|t| t.to_rfc3339()),
            "reason": self.reason,
        })
    }
}

/// What retention reads of one snapshot.
struct Facts {
    snapshot_id: String,
    start_time: Option<DateTime<Utc>>,
    state: Option<String>,
    /// It carries `shoal:job-id`.
    ours: bool,
}

/// What a job keeps.
struct Rules {
    keep_count: Option<u32>,
    keep_for: Option<String>,
    allow_untagged: bool,
}

/// Retention's verdicts on `snapshots` (newest first) at `now`: what is kept, and why; and
/// what retention lets go, before the images are asked.
fn judge(snapshots: &[Facts], rules: &Rules, now: DateTime<Utc>) -> (Vec<Verdict>, Vec<Verdict>) {
    let keep_for = rules
        .keep_for
        .as_deref()
        .and_then(keep_for_duration)
        .and_then(|d| chrono::Duration::from_std(d).ok());
    let mut kept = Vec::new();
    let mut candidates = Vec::new();
    // The first `keep_count` completed ones of Shoal's stay.
    let mut counted = 0u32;
    for s in snapshots {
        let verdict = |reason: String| Verdict {
            snapshot_id: s.snapshot_id.clone(),
            start_time: s.start_time,
            reason,
        };
        if !s.ours && !rules.allow_untagged {
            kept.push(verdict(format!(
                "not made by Shoal (no `{JOB_ID_TAG}` tag; --allow-destroying-untagged)"
            )));
            continue;
        }
        if s.state.as_deref() != Some(SnapshotState::Completed.as_str()) {
            kept.push(verdict(format!(
                "still {}",
                s.state.as_deref().unwrap_or("pending")
            )));
            continue;
        }
        if let Some(n) = rules.keep_count.filter(|n| counted < *n) {
            counted += 1;
            kept.push(verdict(format!("among the newest {n}")));
            continue;
        }
        if let (Some(age), Some(started)) = (keep_for, s.start_time) {
            if now - started < age {
                kept.push(verdict(format!(
                    "younger than {}",
                    rules.keep_for.as_deref().unwrap_or_default()
                )));
                continue;
            }
        }
        candidates.push(verdict("retention".into()));
    }
    (kept, candidates)
}

/// `candidates` split into those an AMI is registered from (kept, naming it) and the rest.
fn apart_in_use(
    candidates: Vec<Verdict>,
    in_use: &HashMap<String, String>,
) -> (Vec<Verdict>, Vec<Verdict>) {
    let mut kept = Vec::new();
    let mut rest = Vec::new();
    for mut v in candidates {
        match in_use.get(&v.snapshot_id) {
            Some(image) => {
                v.reason = format!("AMI {image} is registered from it");
                kept.push(v);
            }
            None => rest.push(v),
        }
    }
    (kept, rest)
}

impl JobHandler for PruneSnapshotsHandler {
    type Params = PruneSnapshots;

    async fn run(&self, ctx: JobContext, p: PruneSnapshots) -> Result<Outcome, JobError> {
        let ec2 = super::copy::client_in(&ctx, p.region.as_deref());
        let volumes = self.volumes(&ec2, &p).await?;
        let snapshots = self.snapshots(&ec2, &p, volumes.as_deref()).await?;
        let facts: Vec<Facts> = snapshots
            .iter()
            .map(|s| Facts {
                snapshot_id: s.snapshot_id().unwrap_or_default().to_owned(),
                start_time: to_chrono(s.start_time()),
                state: s.state().map(|x| x.as_str().to_owned()),
                ours: made_by_shoal(s.tags()),
            })
            .collect();
        let rules = Rules {
            keep_count: p.keep_count,
            keep_for: p.keep_for.clone(),
            allow_untagged: self.limiter.settings().allow_destroying_untagged,
        };
        let (mut kept, candidates) = judge(&facts, &rules, Utc::now());
        // What an AMI is registered from stays, whatever its age.
        let in_use = self.images_using(&ec2, &candidates).await?;
        let (in_use, to_delete) = apart_in_use(candidates, &in_use);
        kept.extend(in_use);

        let mut deleted = Vec::new();
        for mut v in to_delete {
            if p.dry_run {
                v.reason = "would be deleted (dry run)".into();
                deleted.push(v);
                continue;
            }
            ensure_lease(&ctx)?;
            let sent = self
                .limiter
                .call(
                    "DeleteSnapshot",
                    ec2.delete_snapshot().snapshot_id(&v.snapshot_id).send(),
                )
                .await;
            match sent {
                Ok(_) => {
                    v.reason = "older than the retention keeps".into();
                    deleted.push(v);
                }
                Err(e) if e.code.as_deref() == Some("InvalidSnapshot.NotFound") => {
                    v.reason = "already deleted".into();
                    deleted.push(v);
                }
                Err(e) if e.code.as_deref() == Some("InvalidSnapshot.InUse") => {
                    v.reason = format!("in use: {}", e.message);
                    kept.push(v);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Outcome::Done(serde_json::json!({
            "dry_run": p.dry_run,
            "region": p.region,
            "volumes": volumes,
            "deleted": deleted.iter().map(Verdict::json).collect::<Vec<_>>(),
            "kept": kept.iter().map(Verdict::json).collect::<Vec<_>>(),
        })))
    }
}

impl PruneSnapshotsHandler {
    /// The volumes whose snapshots the job prunes; `None` when it names none and its tags
    /// alone choose.
    async fn volumes(
        &self,
        ec2: &aws_sdk_ec2::Client,
        p: &PruneSnapshots,
    ) -> Result<Option<Vec<String>>, JobError> {
        if p.volume_id.is_none() && p.instance_id.is_none() && p.volume_name.is_none() {
            return Ok(None);
        }
        if let Some(id) = &p.volume_id {
            return Ok(Some(vec![id.clone()]));
        }
        if let Some(instance) = &p.instance_id {
            let out = self
                .limiter
                .call(
                    "DescribeInstances",
                    ec2.describe_instances().instance_ids(instance).send(),
                )
                .await?;
            return Ok(Some(
                out.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .flat_map(|i| i.block_device_mappings())
                    .filter_map(|m| m.ebs().and_then(|e| e.volume_id()).map(str::to_owned))
                    .collect(),
            ));
        }
        let name = p.volume_name.as_deref().unwrap_or_default();
        let volumes = volumes_named(&self.limiter, ec2, name).await?;
        Ok(Some(
            volumes.into_iter().filter_map(|v| v.volume_id).collect(),
        ))
    }

    /// This account's snapshots of `volumes` (any, for `None`) carrying the narrowing tags,
    /// newest first.
    async fn snapshots(
        &self,
        ec2: &aws_sdk_ec2::Client,
        p: &PruneSnapshots,
        volumes: Option<&[String]>,
    ) -> Result<Vec<Ec2Snapshot>, JobError> {
        let mut filters = Vec::new();
        if let Some(volumes) = volumes {
            if volumes.is_empty() {
                return Ok(Vec::new());
            }
            filters.push(
                Filter::builder()
                    .name("volume-id")
                    .set_values(Some(volumes.to_vec()))
                    .build(),
            );
        }
        filters.extend(
            p.tags
                .iter()
                .map(|t| filter(&format!("tag:{}", t.key), &t.value)),
        );
        let pages = self
            .limiter
            .pages(
                "DescribeSnapshots",
                |token| {
                    ec2.describe_snapshots()
                        .owner_ids("self")
                        .set_filters(Some(filters.clone()))
                        .set_next_token(token)
                        .send()
                },
                |page| page.next_token(),
            )
            .await?;
        let mut all: Vec<Ec2Snapshot> = pages
            .into_iter()
            .flat_map(|p| p.snapshots.unwrap_or_default())
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse(to_chrono(s.start_time())));
        Ok(all)
    }

    /// Which of `candidates` an AMI of this account is registered from, by snapshot id. The
    /// account's own images are read whole (paged), not filtered by
    /// `block-device-mapping.snapshot-id`: the emulator does not implement that filter, and
    /// an account's own AMIs are few enough that one listing serves every candidate.
    async fn images_using(
        &self,
        ec2: &aws_sdk_ec2::Client,
        candidates: &[Verdict],
    ) -> Result<HashMap<String, String>, JobError> {
        let mut in_use = HashMap::new();
        if candidates.is_empty() {
            return Ok(in_use);
        }
        let pages = self
            .limiter
            .pages(
                "DescribeImages",
                |token| {
                    ec2.describe_images()
                        .owners("self")
                        .set_next_token(token)
                        .send()
                },
                |page| page.next_token(),
            )
            .await?;
        for image in pages.iter().flat_map(|p| p.images()) {
            for mapping in image.block_device_mappings() {
                if let Some(id) = mapping.ebs().and_then(|e| e.snapshot_id()) {
                    if candidates.iter().any(|c| c.snapshot_id == id) {
                        in_use.insert(
                            id.to_owned(),
                            image.image_id().unwrap_or_default().to_owned(),
                        );
                    }
                }
            }
        }
        Ok(in_use)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: &str, hours_ago: i64, ours: bool, state: &str, now: DateTime<Utc>) -> Facts {
        Facts {
            snapshot_id: id.into(),
            start_time: Some(now - chrono::Duration::hours(hours_ago)),
            state: Some(state.into()),
            ours,
        }
    }

    fn ids(v: &[Verdict]) -> Vec<&str> {
        v.iter().map(|v| v.snapshot_id.as_str()).collect()
    }

    /// Retention's table, newest first: a pending one, a foreign one, the newest two kept by
    /// count, one kept by age, and the rest let go unless an AMI is registered from it.
    #[test]
    fn retention_keeps_by_count_or_age_and_never_what_it_must_not_delete() {
        let now = Utc::now();
        let all = [
            snapshot("pending", 0, true, "pending", now),
            snapshot("foreign", 1, false, "completed", now),
            snapshot("new-1", 2, true, "completed", now),
            snapshot("new-2", 3, true, "completed", now),
            snapshot("young", 20, true, "completed", now),
            snapshot("old-imaged", 50, true, "completed", now),
            snapshot("old", 60, true, "completed", now),
        ];
        let rules = Rules {
            keep_count: Some(2),
            keep_for: Some("1d".into()),
            allow_untagged: false,
        };
        let (kept, candidates) = judge(&all, &rules, now);
        assert_eq!(
            ids(&kept),
            ["pending", "foreign", "new-1", "new-2", "young"]
        );
        assert!(kept[0].reason.contains("still pending"));
        assert!(kept[1].reason.contains("not made by Shoal"));
        assert!(kept[2].reason.contains("newest 2"));
        assert!(kept[4].reason.contains("younger than 1d"));
        assert_eq!(ids(&candidates), ["old-imaged", "old"]);
        let images = HashMap::from([("old-imaged".to_owned(), "ami-1".to_owned())]);
        let (in_use, gone) = apart_in_use(candidates, &images);
        assert_eq!(ids(&in_use), ["old-imaged"]);
        assert!(in_use[0].reason.contains("ami-1"), "names the image");
        assert_eq!(ids(&gone), ["old"]);

        // Allowed to, it judges a foreign snapshot as its own.
        let rules = Rules {
            keep_count: Some(1),
            keep_for: None,
            allow_untagged: true,
        };
        let (kept, candidates) = judge(&all[1..3], &rules, now);
        assert_eq!(ids(&kept), ["foreign"]);
        assert_eq!(ids(&candidates), ["new-1"]);
    }
}
