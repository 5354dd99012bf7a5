//! `canary`: no AWS work. It completes with the worker's identity and timings, so a probe
//! that enqueues canaries and watches for their events checks the whole pipeline.

use std::time::Duration;

use shoal_common::job::Canary;

use crate::handler::{JobContext, JobError, JobHandler, Outcome};

pub struct CanaryHandler;

impl JobHandler for CanaryHandler {
    type Params = Canary;

    async fn run(&self, ctx: JobContext, params: Canary) -> Result<Outcome, JobError> {
        if params.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(params.sleep_ms)).await;
        }
        let queue_ms = ctx
            .enqueued_at
            .map(|at| (ctx.started_at - at).num_milliseconds().max(0));
        Ok(Outcome::Done(serde_json::json!({
            "worker_id": &*ctx.worker_id,
            "attempt": ctx.attempt,
            "slept_ms": params.sleep_ms,
            "queue_ms": queue_ms,
        })))
    }
}
