//! The gate: limits on what a job may ask of this worker, checked before any AWS call.
//!
//! Whoever can send to the job queue can make the fleet launch instances. The worker's IAM
//! role is the fence; these settings are the gate in front of it, so a compromised or buggy
//! producer cannot pass them either: the kinds this worker accepts, the instance types and
//! AMIs a launch may use (globs such as `t3.*`), the most instances one job may launch, and a
//! dry-run-only mode, and tag rules stricter than EC2's. A job outside them is dead-lettered permanently, its reason naming
//! the setting. Each is off by default, so existing fleets keep working; every deploy
//! example shows them. (AMI owners need EC2's word, so that check is the `run-instances`
//! handler's, still before it launches anything.)

use shoal_common::error::ShoalCode;
use shoal_common::job::RunInstances;
use shoal_common::validate::{TagRules, Violations};
use shoal_common::{Job, JobKind};

use crate::handler::JobError;

/// What this worker accepts. The default accepts everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Guardrails {
    /// Kinds this worker runs; empty means every kind.
    pub kinds: Vec<JobKind>,
    /// Instance types a launch may use, as globs (`t3.*`); empty means any.
    pub instance_types: Vec<String>,
    /// AMI ids a launch may use, as globs; empty means any.
    pub images: Vec<String>,
    /// The most instances one job may launch (its `max_count`); `None` leaves it to EC2.
    pub max_instances_per_job: Option<u32>,
    /// Only dry runs: an EC2 job that would change something is refused.
    pub dry_run_only: bool,
    /// Tag rules beyond EC2's own, for tags that must also work elsewhere.
    pub tag_rules: TagRules,
    /// Regions a job may reach (a copy's destination, a prune's region); empty means any.
    /// The worker binary always sets it: its own region, and those `--allow-regions` names.
    pub regions: Vec<String>,
}

fn refused(field: &str, message: String) -> JobError {
    JobError::shoal(ShoalCode::NotAllowed, format!("{field}: {message}"))
}

impl Guardrails {
    /// `Ok` if this worker may run `job`; otherwise the permanent reason, naming the setting.
    pub fn check(&self, job: &Job) -> Result<(), JobError> {
        let kind = job.kind();
        if !self.kinds.is_empty() && !self.kinds.contains(&kind) {
            let allowed: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
            return Err(refused(
                "kind",
                format!(
                    "`{kind}` jobs are not accepted by this worker (--allow-kinds {})",
                    allowed.join(",")
                ),
            ));
        }
        if let Some((field, region)) = job.reaches() {
            if !self.regions.is_empty() && !self.regions.iter().any(|r| r == region) {
                return Err(refused(
                    field,
                    format!(
                        "`{region}` is not a region this worker reaches (--allow-regions {})",
                        self.regions.join(",")
                    ),
                ));
            }
        }
        let mut violations = Violations::under("params");
        violations.tag_rules(self.tag_rules, "tags", job.tags());
        if let Some(first) = violations.into_errors().into_iter().next() {
            return Err(JobError::shoal(ShoalCode::NotAllowed, first.to_string()));
        }
        // A launch's own limits: the instance types, images and count it may ask for.
        if let Some(p) = job.params::<RunInstances>() {
            if !self.instance_types.is_empty()
                && !self
                    .instance_types
                    .iter()
                    .any(|g| glob_match(g, &p.instance_type))
            {
                return Err(refused(
                    "params.instance_type",
                    format!(
                        "`{}` is not allowed (--allow-instance-types {})",
                        p.instance_type,
                        self.instance_types.join(",")
                    ),
                ));
            }
            if !self.images.is_empty() && !self.images.iter().any(|g| glob_match(g, &p.image_id)) {
                return Err(refused(
                    "params.image_id",
                    format!(
                        "`{}` is not allowed (--allow-images {})",
                        p.image_id,
                        self.images.join(",")
                    ),
                ));
            }
            if let Some(most) = self.max_instances_per_job {
                if p.max_count > most {
                    return Err(refused(
                            "params.max_count",
                            format!(
                                "is {} but this worker launches at most {most} instances per job (--max-instances-per-job)",
                                p.max_count
                            ),
                        ));
                }
            }
        }
        if self.dry_run_only && job.dry_run() == Some(false) {
            return Err(refused(
                "params.dry_run",
                format!("this worker runs only dry runs (--dry-run-only), and this `{kind}` job is not one"),
            ));
        }
        Ok(())
    }
}

/// Whether `value` matches `pattern`, where `*` stands for any run of characters and `?`
/// for one.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // The classic two-pointer match, backtracking to the last `*`.
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while let Some(&c) = v.get(vi) {
        let at = p.get(pi).copied();
        if at.is_some_and(|a| a == '?' || a == c) {
            pi += 1;
            vi += 1;
        } else if at == Some('*') {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p.iter().skip(pi).all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_common::job::{Canary, RunInstances, SetTerminationProtection};

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("t3.*", "t3.micro"));
        assert!(!glob_match("t3.*", "t3a.micro"));
        assert!(glob_match("t3*.*", "t3a.micro"));
        assert!(glob_match("ami-0abc?????????????", "ami-0abc1234567890123"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("m5.large", "m5.large2"));
        assert!(glob_match("*.metal", "c5.metal"));
    }

    fn launch(instance_type: &str, max_count: u32, dry_run: bool) -> Job {
        Job::new(RunInstances {
            image_id: "ami-12345678".into(),
            min_count: 1,
            max_count,
            key_name: None,
            instance_type: instance_type.into(),
            availability_zone: None,
            disable_api_termination: false,
            tags: vec![],
            subnet_id: None,
            security_group_ids: vec![],
            user_data: None,
            wait: false,
            dry_run,
        })
    }

    fn refusal(g: &Guardrails, job: &Job) -> String {
        let e = g.check(job).expect_err("refused");
        assert!(e.is(ShoalCode::NotAllowed));
        e.message
    }

    #[test]
    fn each_limit_refuses_what_it_names_and_the_default_accepts_all() {
        let all = Guardrails::default();
        assert!(all.check(&launch("x1e.32xlarge", 500, false)).is_ok());

        let g = Guardrails {
            kinds: vec![JobKind::RunInstances, JobKind::Canary],
            instance_types: vec!["t3.*".into(), "t2.micro".into()],
            images: vec!["ami-1234*".into()],
            max_instances_per_job: Some(4),
            dry_run_only: false,
            tag_rules: TagRules::Ec2,
            regions: vec![],
        };
        assert!(g.check(&launch("t3.large", 4, false)).is_ok());
        assert!(g.check(&Job::new(Canary::default())).is_ok());
        assert!(refusal(&g, &launch("m5.large", 1, false)).contains("--allow-instance-types"));
        assert!(refusal(&g, &launch("t3.micro", 5, false)).starts_with("params.max_count"));
        let other_image = launch("t3.micro", 1, false).edited(|p: &mut RunInstances| {
            p.image_id = "ami-87654321".into();
        });
        assert!(refusal(&g, &other_image).contains("--allow-images"));
        let unprotect = Job::new(SetTerminationProtection {
            instance_ids: vec!["i-12345678".into()],
            disable_api_termination: false,
        });
        assert!(refusal(&g, &unprotect).starts_with("kind: `set-termination-protection`"));
    }

    #[test]
    fn a_copy_or_prune_reaches_only_the_regions_allowed() {
        let g = Guardrails {
            regions: vec!["us-east-1".into(), "us-west-2".into()],
            ..Guardrails::default()
        };
        let copy_to = |region: &str| {
            Job::new(shoal_common::job::CopySnapshot {
                snapshot_id: "snap-12345678".into(),
                destination_region: region.into(),
                source_region: None,
                description: None,
                encrypted: false,
                kms_key_id: None,
                tags: vec![],
                wait: false,
                dry_run: false,
            })
        };
        assert!(g.check(&copy_to("us-west-2")).is_ok());
        let refused = refusal(&g, &copy_to("ap-south-1"));
        assert!(
            refused.starts_with("params.destination_region"),
            "{refused}"
        );
        assert!(
            refused.contains("--allow-regions us-east-1,us-west-2"),
            "{refused}"
        );
        assert!(
            Guardrails::default().check(&copy_to("ap-south-1")).is_ok(),
            "empty: any"
        );
    }

    #[test]
    fn dry_run_only_lets_dry_runs_and_canaries_through() {
        let g = Guardrails {
            dry_run_only: true,
            ..Guardrails::default()
        };
        assert!(g.check(&launch("t3.micro", 1, true)).is_ok());
        assert!(g.check(&Job::new(Canary::default())).is_ok());
        assert!(refusal(&g, &launch("t3.micro", 1, false)).contains("--dry-run-only"));
        let unprotect = Job::new(SetTerminationProtection {
            instance_ids: vec!["i-12345678".into()],
            disable_api_termination: false,
        });
        assert!(refusal(&g, &unprotect).contains("--dry-run-only"));
    }
}
