//! `modify-volume`, a job kind defined outside Shoal, as a library user writes one: grow an
//! EBS volume (EC2 `ModifyVolume`) and wait until the new size is usable. Copy this crate to
//! add a kind of your own: the parameters type implements [`Kind`], the handler
//! [`JobHandler`], and `main.rs` registers the handler beside the built-ins. Everything a
//! built-in kind has comes with it: the ledger's lease, progress and outcome, chains, per-kind
//! concurrency, `--allow-kinds`, pause, cancel and retry, metrics, events and dead-letter
//! reasons.
//!
//! The worker's role needs `ec2:ModifyVolume`, `ec2:DescribeVolumes` and
//! `ec2:DescribeVolumesModifications` for it, beside the built-ins' (`deploy/aws/shoal.yaml`).
//!
//! `ModifyVolume` takes no client token, and AWS allows one modification of a volume per six
//! hours, so the handler never sends it twice: it looks for a modification to the asked size
//! first (one an earlier run started, which the ledger's lease and its create note make the
//! only one), and sends only when there is none and the volume is still smaller.

use std::sync::Arc;

use aws_sdk_ec2::types::{VolumeModification, VolumeModificationState};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use shoal_common::job::Kind;
use shoal_common::validate::{Validate, Violations};
use shoal_worker::handlers::consistency::look_until_settled;
use shoal_worker::handlers::ec2::{dry_run_outcome, next_check, rfc3339, to_chrono};
use shoal_worker::handlers::limiter::{no_sdk_retry, Ec2Limiter};
use shoal_worker::{JobContext, JobError, JobHandler, Outcome};

/// EBS's largest volume (io2 Block Express and gp3 top out at 64 TiB).
const MAX_SIZE_GIB: u32 = 65_536;

/// Grow an EBS volume and wait until the new size is usable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModifyVolume {
    /// The volume to grow (in a chain, `{"$each": "/volume_id"}` after a `snapshot`).
    #[schemars(pattern(shoal_common::validate::pattern::VOLUME_ID))]
    pub volume_id: String,
    /// Its new size in GiB: larger than it is (EBS does not shrink a volume).
    #[schemars(range(min = 1, max = MAX_SIZE_GIB))]
    pub size_gib: u32,
    /// Finish once EC2 reports the new size usable (`optimizing` or `completed`), rather than
    /// as soon as the modification is accepted.
    #[serde(default = "yes")]
    pub wait: bool,
    /// Ask EC2 whether the modification would be allowed, and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn yes() -> bool {
    true
}

impl Validate for ModifyVolume {
    fn validate(&self, v: &mut Violations) {
        v.resource_id("volume_id", &self.volume_id, "vol-");
        if !(1..=MAX_SIZE_GIB).contains(&self.size_gib) {
            v.add("size_gib", format!("must be 1 to {MAX_SIZE_GIB}"));
        }
    }
}

impl Kind for ModifyVolume {
    const NAME: &'static str = "modify-volume";
    const DESCRIPTION: &'static str = "Grow an EBS volume and wait until the new size is usable.";
    // The default, said out loud: a second `ModifyVolume` is refused for six hours, so a
    // run must know whether an earlier one sent it.
    const TAKES_LEASE: bool = true;

    fn dry_run(&self) -> Option<bool> {
        Some(self.dry_run)
    }

    fn example() -> Self {
        ModifyVolume {
            volume_id: "vol-12345678".into(),
            size_gib: 16,
            wait: true,
            dry_run: false,
        }
    }
}

/// Runs `modify-volume` jobs, pacing its EC2 calls with the worker's shared limiter.
pub struct ModifyVolumeHandler {
    pub limiter: Arc<Ec2Limiter>,
}

impl JobHandler for ModifyVolumeHandler {
    type Params = ModifyVolume;

    async fn run(&self, ctx: JobContext, p: ModifyVolume) -> Result<Outcome, JobError> {
        let ec2 = &ctx.clients.ec2;
        if p.dry_run {
            let request = ec2
                .modify_volume()
                .volume_id(&p.volume_id)
                .size(i32::try_from(p.size_gib).unwrap_or(i32::MAX))
                .dry_run(true);
            let result = self.limiter.paced("ModifyVolume", request.send()).await;
            return dry_run_outcome("ModifyVolume", result);
        }
        // A modification to this size already under way (or done) is this job's: taken up,
        // never asked for again. After an earlier run's create note, EC2 may not list it yet:
        // an empty answer is trusted only once the consistency window has passed.
        let earlier = look_until_settled(&ctx, self.limiter.settings(), Option::is_some, || {
            self.modification(&ctx, &p)
        })
        .await?;
        if let Some(started) = earlier {
            return self.settle(&p, &started);
        }
        let volumes = self
            .limiter
            .call(
                "DescribeVolumes",
                ec2.describe_volumes().volume_ids(&p.volume_id).send(),
            )
            .await?;
        let size = volumes
            .volumes()
            .first()
            .and_then(|v| v.size())
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(0);
        if size >= p.size_gib {
            if size == p.size_gib {
                return Ok(Outcome::Done(serde_json::json!({
                    "volume_id": p.volume_id,
                    "size_gib": size,
                    "state": "completed",
                    "modified": false,
                })));
            }
            return Err(JobError::permanent(
                "VolumeCannotShrink",
                format!(
                    "{} is {size} GiB; EBS grows a volume but never shrinks it to {} GiB",
                    p.volume_id, p.size_gib
                ),
            ));
        }
        let request = ec2
            .modify_volume()
            .volume_id(&p.volume_id)
            .size(i32::try_from(p.size_gib).unwrap_or(i32::MAX));
        let out = self
            .limiter
            .create_once("ModifyVolume", &ctx, || {
                request
                    .clone()
                    .customize()
                    .config_override(no_sdk_retry())
                    .send()
            })
            .await?;
        let modification = out.volume_modification().cloned().unwrap_or_else(|| {
            VolumeModification::builder()
                .volume_id(&p.volume_id)
                .target_size(i32::try_from(p.size_gib).unwrap_or(i32::MAX))
                .modification_state(VolumeModificationState::Modifying)
                .build()
        });
        self.settle(&p, &modification)
    }
}

impl ModifyVolumeHandler {
    /// The volume's modification to `p.size_gib` that has not failed, if EC2 lists one.
    async fn modification(
        &self,
        ctx: &JobContext,
        p: &ModifyVolume,
    ) -> Result<Option<VolumeModification>, JobError> {
        let listed = self
            .limiter
            .call(
                "DescribeVolumesModifications",
                ctx.clients
                    .ec2
                    .describe_volumes_modifications()
                    .volume_ids(&p.volume_id)
                    .send(),
            )
            .await?;
        let target = i32::try_from(p.size_gib).unwrap_or(i32::MAX);
        Ok(listed
            .volumes_modifications()
            .iter()
            .filter(|m| m.target_size() == Some(target))
            .filter(|m| m.modification_state() != Some(&VolumeModificationState::Failed))
            .max_by_key(|m| m.start_time().map(|t| t.secs()))
            .cloned())
    }

    /// Done once the new size is usable (or at once without `wait`); else look again later,
    /// until the worker's wait deadline.
    fn settle(&self, p: &ModifyVolume, m: &VolumeModification) -> Result<Outcome, JobError> {
        let state = m.modification_state().cloned();
        let usable = matches!(
            state,
            Some(VolumeModificationState::Optimizing | VolumeModificationState::Completed)
        );
        if state == Some(VolumeModificationState::Failed) {
            return Err(JobError::permanent(
                "VolumeModificationFailed",
                m.status_message()
                    .unwrap_or("EC2 gave no reason")
                    .to_owned(),
            ));
        }
        if usable || !p.wait {
            return Ok(Outcome::Done(serde_json::json!({
                "volume_id": p.volume_id,
                "size_gib": p.size_gib,
                "original_size_gib": m.original_size(),
                "state": state.as_ref().map(|s| s.as_str()),
                "start_time": rfc3339(m.start_time()),
                "modified": true,
            })));
        }
        next_check(
            self.limiter.settings(),
            "ModifyVolume",
            to_chrono(m.start_time()),
        )
    }
}
