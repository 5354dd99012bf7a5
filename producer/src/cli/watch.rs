//! `peek`, `events` and `status`: printing what the library's [`crate::inspect`] and
//! [`crate::operate`] find on the queues.

use std::io::Write;
use std::time::Duration;

use shoal_common::aws::AwsClients;
use shoal_common::config::QueueTarget;

use super::{CliError, Done, EventsArgs, Output, StatusArgs};
use crate::inspect::{self, EventReader};
use crate::operate;

pub(super) async fn peek(
    clients: &AwsClients,
    target: &QueueTarget,
    max: usize,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    for msg in inspect::peek(&clients.sqs, &target.url, max).await? {
        out.item(&msg, |w| {
            writeln!(
                w,
                "{:<28} schema={} receives={} {}",
                msg.kind, msg.schema, msg.receive_count, msg.text
            )
        })?;
    }
    Ok(Done::All)
}

/// Prints events until `count` have arrived or none came for `idle`, deleting each once
/// printed, and receiving no more than are still to print: `--count 3` consumes three.
/// Events are at-least-once: a repeat of a job id is shown as such.
pub(super) async fn events(
    clients: &AwsClients,
    args: &EventsArgs,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let mut reader = EventReader::new(&clients.sqs, &args.events_queue_url);
    let mut shown = 0usize;
    let mut last = std::time::Instant::now();
    while args.count.is_none_or(|n| shown < n) && last.elapsed() < args.idle {
        let wanted = args.count.map_or(10, |n| n.saturating_sub(shown));
        for read in reader.receive(args.idle, wanted).await? {
            last = std::time::Instant::now();
            let event = read.data();
            out.item(&read.event, |w| {
                let detail = match (&event["result"], &event["error"]) {
                    (serde_json::Value::Null, serde_json::Value::Null) => String::new(),
                    (result, serde_json::Value::Null) => result.to_string(),
                    (_, error) => error.to_string(),
                };
                writeln!(
                    w,
                    "{:<10} {:<27} {} attempts={}{} {detail}",
                    event["status"].as_str().unwrap_or("?"),
                    event["kind"].as_str().unwrap_or("?"),
                    read.job_id(),
                    event["attempts"],
                    if read.repeat { " (repeat)" } else { "" },
                )
            })?;
            shown += 1;
            reader.ack(&read).await?;
        }
    }
    Ok(Done::All)
}

pub(super) async fn status(
    clients: &AwsClients,
    target: &QueueTarget,
    ledger: Option<&shoal_common::ledger::Ledger>,
    args: &StatusArgs,
    out: &mut Output<'_, '_>,
) -> Result<Done, CliError> {
    let mut shown = 0usize;
    loop {
        let mut status = operate::status(clients, &target.url).await?;
        if let Some(ledger) = ledger {
            status.paused = Some(ledger.paused().await?);
        }
        out.item(&status, |w| write_status(w, &status))?;
        shown += 1;
        match args.watch {
            Some(every) if args.count.is_none_or(|n| shown < n) => {
                tokio::time::sleep(every).await;
                out.text(|w| writeln!(w))?;
            }
            _ => return Ok(Done::All),
        }
    }
}

fn write_status(out: &mut dyn Write, status: &operate::Status) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<40} {:>9} {:>9} {:>9} {:>8}",
        "queue", "visible", "in flight", "delayed", "oldest"
    )?;
    for q in std::iter::once(&status.jobs).chain(&status.dead_letter) {
        let age = q
            .oldest_message_age_secs
            .map(|s| humantime::format_duration(Duration::from_secs(s as u64)).to_string())
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<40} {:>9} {:>9} {:>9} {:>8}",
            q.name, q.visible, q.in_flight, q.delayed, age
        )?;
    }
    match (&status.dead_letter, status.max_receive_count) {
        (Some(_), Some(n)) => writeln!(out, "dead-lettered by SQS after {n} receives")?,
        _ => writeln!(out, "no redrive policy: failed jobs have nowhere to go")?,
    }
    if let Some(paused) = &status.paused {
        writeln!(out, "{}", super::verbs::describe_paused(paused))?;
    }
    Ok(())
}
