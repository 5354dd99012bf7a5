//! Resending batch entries: an SQS or SNS batch call can succeed while failing some of its
//! entries, and a whole call can fail. Entries that failed through no fault of the sender
//! (throttling, internal errors) are resent, with a jittered exponential backoff, a few
//! times; then every entry has its final result, by position. One implementation for the
//! worker's batchers and the producer's bulk send (vector's SQS source ignores per-entry
//! failures; Shoal does not).

use std::future::Future;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoffBuilder;

use crate::error::{Error, ErrorClass, ShoalCode};

/// Calls made for one batch before its remaining failures are final.
pub const MAX_CALLS: u32 = 5;
/// The pause before the first resend; it doubles (±50%) up to [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
pub const MAX_PAUSE: Duration = Duration::from_secs(2);

/// One batch API: a call on some entries, answered entry by entry in the order given.
pub trait BatchCall: Send + Sync {
    type Entry: Send + Sync;
    /// What a successful entry yields (a message id, or nothing).
    type Ok: Send;

    fn call(
        &self,
        entries: &[&Self::Entry],
    ) -> impl Future<Output = Vec<Result<Self::Ok, Error>>> + Send;
}

/// Each entry's result from a batch call's answer, by position in `ids` (the ids the request
/// gave its entries): an entry is done only when the answer says so. An entry the answer
/// leaves out, or one whose request entry could not be built and was never sent, fails as
/// [`ShoalCode::MissingEntry`] (transient, so it is resent) rather than pass as done.
pub fn entry_results<'a, T>(
    ids: &[String],
    answers: impl IntoIterator<Item = (&'a str, Result<T, Error>)>,
) -> Vec<Result<T, Error>> {
    let mut results: Vec<Result<T, Error>> = ids
        .iter()
        .map(|_| {
            Err(Error::shoal(
                ShoalCode::MissingEntry,
                "the batch answer left this entry out",
            ))
        })
        .collect();
    for (id, result) in answers {
        if let Some(slot) = ids
            .iter()
            .position(|known| known == id)
            .and_then(|i| results.get_mut(i))
        {
            *slot = result;
        }
    }
    results
}

/// A failed entry as SQS and SNS report it: permanent when the service blames the sender,
/// worth resending otherwise.
pub fn failed_entry(sender_fault: bool, code: &str, message: Option<&str>) -> Error {
    let message = message.unwrap_or_default();
    if sender_fault {
        Error::permanent(code, message)
    } else {
        Error::transient(code, message)
    }
}

/// What sending a batch came to.
pub struct Sent<I, T> {
    /// Each item with its final result.
    pub results: Vec<(I, Result<T, Error>)>,
    /// Calls made.
    pub calls: usize,
    /// Entries sent again after a call failed them.
    pub resent: usize,
}

/// Sends `items` (each holding an entry, reached through `entry`) through `api`, resending
/// the entries that failed transiently until they succeed or [`MAX_CALLS`] calls are made.
pub async fn send_with_resends<A, I>(
    api: &A,
    items: Vec<I>,
    entry: impl Fn(&I) -> &A::Entry,
) -> Sent<I, A::Ok>
where
    A: BatchCall,
{
    let mut pauses = ExponentialBackoffBuilder::new()
        .with_initial_interval(FIRST_PAUSE)
        .with_multiplier(2.0)
        .with_randomization_factor(0.5)
        .with_max_interval(MAX_PAUSE)
        .with_max_elapsed_time(None)
        .build();
    let mut sent = Sent {
        results: Vec::with_capacity(items.len()),
        calls: 0,
        resent: 0,
    };
    let mut pending = items;
    for call in 1..=MAX_CALLS {
        let entries: Vec<&A::Entry> = pending.iter().map(&entry).collect();
        let mut results = api.call(&entries).await;
        sent.calls += 1;
        // An answer short of entries fails the rest, rather than losing them.
        results.resize_with(pending.len(), || {
            Err(Error::shoal(
                ShoalCode::MissingEntry,
                "the batch answer left this entry out",
            ))
        });
        let mut again = Vec::new();
        for (item, result) in pending.into_iter().zip(results) {
            match result {
                Err(e) if e.class == ErrorClass::Transient && call < MAX_CALLS => again.push(item),
                other => sent.results.push((item, other)),
            }
        }
        if again.is_empty() {
            break;
        }
        sent.resent += again.len();
        pending = again;
        tokio::time::sleep(pauses.next_backoff().unwrap_or(MAX_PAUSE)).await;
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails each entry transiently as many times as its value says, then succeeds; an
    /// entry of 99 is the sender's fault.
    struct Flaky {
        seen: Mutex<Vec<Vec<u32>>>,
        failures: Mutex<std::collections::HashMap<u32, u32>>,
    }

    impl BatchCall for Flaky {
        type Entry = u32;
        type Ok = u32;

        async fn call(&self, entries: &[&u32]) -> Vec<Result<u32, Error>> {
            self.seen
                .lock()
                .expect("lock")
                .push(entries.iter().map(|e| **e).collect());
            let mut failures = self.failures.lock().expect("lock");
            entries
                .iter()
                .map(|&&e| {
                    let failed = failures.entry(e).or_default();
                    if e == 99 {
                        Err(Error::permanent("InvalidParameterValue", "bad entry"))
                    } else if *failed < e {
                        *failed += 1;
                        Err(Error::transient("InternalError", "try again"))
                    } else {
                        Ok(e * 10)
                    }
                })
                .collect()
        }
    }

    #[test]
    fn an_entry_is_done_only_when_the_answer_says_so() {
        let ids: Vec<String> = (0..4).map(|i| i.to_string()).collect();
        let results = entry_results(
            &ids,
            vec![
                ("0", Ok("m-0")),
                ("2", Err(failed_entry(true, "InvalidParameterValue", None))),
                ("9", Ok("an id the request never gave")),
            ],
        );
        assert_eq!(results[0], Ok("m-0"));
        assert_eq!(
            results[1].as_ref().map_err(|e| (e.code.clone(), e.class)),
            Err((Some("MissingEntry".into()), ErrorClass::Transient)),
            "left out of the answer: not done, and resent"
        );
        assert_eq!(
            results[2].as_ref().map_err(|e| e.class),
            Err(ErrorClass::Permanent)
        );
        assert!(results[3].is_err(), "left out too");
        assert_eq!(
            failed_entry(false, "InternalError", Some("x")).class,
            ErrorClass::Transient
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_resent_until_they_pass_or_calls_run_out() {
        let api = Flaky {
            seen: Mutex::default(),
            failures: Mutex::default(),
        };
        let sent = send_with_resends(&api, vec![0, 1, 2, 99, 7], |e| e).await;
        let results: std::collections::HashMap<u32, Result<u32, Error>> =
            sent.results.into_iter().collect();
        assert_eq!(results[&0], Ok(0));
        assert_eq!(results[&1], Ok(10), "one failure, then through");
        assert_eq!(results[&2], Ok(20), "two failures, then through");
        assert_eq!(
            results[&99].as_ref().map_err(|e| e.class),
            Err(ErrorClass::Permanent),
            "the sender's fault is not resent"
        );
        assert_eq!(
            results[&7].as_ref().map_err(|e| e.code.clone()),
            Err(Some("InternalError".into())),
            "still failing when the calls run out"
        );
        let seen = api.seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), MAX_CALLS as usize);
        assert_eq!(seen[0], vec![0, 1, 2, 99, 7]);
        assert_eq!(seen[1], vec![1, 2, 7], "only the transient failures again");
        assert_eq!(seen[2], vec![2, 7]);
        assert_eq!(sent.calls, MAX_CALLS as usize);
        assert_eq!(sent.resent, 3 + 2 + 1 + 1);
    }
}
