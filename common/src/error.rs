//! The error taxonomy: every failure is transient (try again later) or permanent (trying
//! again cannot help), decided once, where the failure arises.
//!
//! The worker's runtime reads only [`ErrorClass`]: transient failures go back to the queue
//! with a backoff, permanent ones to the dead-letter queue with their reason. The producer
//! uses the same class to decide which failed batch entries to resend.

use std::error::Error as StdError;
use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

/// Whether trying the same thing again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, missing capacity: retry after a backoff.
    Transient,
    /// Bad input, missing resources, missing permissions: retrying repeats the failure.
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shoal's own error codes, for failures no AWS service named. AWS's codes travel as the
/// service wrote them; these are written by Shoal, and each carries its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShoalCode {
    /// The message is not a valid job.
    InvalidMessage,
    /// No handler for the job's kind in this worker.
    NoHandler,
    /// A handler was given parameters of another kind.
    HandlerMismatch,
    /// The last attempt failed too.
    AttemptsExhausted,
    /// The handler panicked (its class is the worker's `--on-panic`).
    HandlerPanicked,
    /// An EC2 operation did not finish within the wait deadline.
    WaitDeadlineExceeded,
    /// The message's visibility lapsed: another worker may hold the job now.
    LeaseLost,
    /// A resource the job created is still not listed after the consistency window.
    NotVisibleYet,
    /// An EC2 call ran although `DryRun` was set.
    DryRunIgnored,
    /// An instance of the launch terminated before it was running.
    InstanceTerminated,
    /// The AMI ended failed, invalid or deregistered.
    ImageFailed,
    /// A snapshot ended in `error`.
    SnapshotFailed,
    /// An attribute set on an instance does not read back yet.
    AttributeNotUpdated,
    /// A receipt handle no longer names a delivery: the message was delivered again, or
    /// deleted, and whatever was meant for it is moot.
    StaleReceipt,
    /// The worker is shutting down and its batchers take no more entries.
    BatcherClosed,
    /// A batch call failed as a whole, with no code of its own.
    CallFailed,
    /// A batch answer said nothing of one of its entries.
    MissingEntry,
    /// The queue has no redrive policy where one is needed.
    NoRedrivePolicy,
    /// The job asks for what this worker's limits do not allow.
    NotAllowed,
    /// A job SQS's redrive policy moved to the DLQ: its worker died on every delivery.
    RedrivenBySqs,
    /// No AWS credentials could be found (environment, profile, SSO, container or instance
    /// role).
    NoCredentials,
    /// The endpoint could not be reached: no connection, or no answer in time.
    EndpointUnreachable,
    /// A follow-up's reference (`$from`, `$each`, `for_each`) names nothing in its parent's
    /// result, or resolves to a value its kind refuses: the follow-up is never enqueued.
    UnresolvedReference,
    /// The job ledger records the job as over but holds no outcome that can be read.
    UnreadableRecord,
    /// The job id is on record for another job (another kind, or another envelope): a job
    /// id names one job.
    JobIdReused,
    /// SNS (or SQS, for a follow-up) refuses a job's event for good: it can never be
    /// announced, so the job ends in the dead-letter queue with this reason.
    EventRefused,
    /// The job ledger did not take a create's note before the create was to be sent: the
    /// create is not sent (a later run could not know of it), and the attempt fails.
    CreateNotNoted,
    /// An operator cancelled the job: nothing more is created or waited for.
    Cancelled,
}

impl ShoalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ShoalCode::InvalidMessage => "InvalidMessage",
            ShoalCode::NoHandler => "NoHandler",
            ShoalCode::HandlerMismatch => "HandlerMismatch",
            ShoalCode::AttemptsExhausted => "AttemptsExhausted",
            ShoalCode::HandlerPanicked => "HandlerPanicked",
            ShoalCode::WaitDeadlineExceeded => "WaitDeadlineExceeded",
            ShoalCode::LeaseLost => "LeaseLost",
            ShoalCode::NotVisibleYet => "NotVisibleYet",
            ShoalCode::DryRunIgnored => "DryRunIgnored",
            ShoalCode::InstanceTerminated => "InstanceTerminated",
            ShoalCode::ImageFailed => "ImageFailed",
            ShoalCode::SnapshotFailed => "SnapshotFailed",
            ShoalCode::AttributeNotUpdated => "AttributeNotUpdated",
            ShoalCode::StaleReceipt => "StaleReceipt",
            ShoalCode::BatcherClosed => "BatcherClosed",
            ShoalCode::CallFailed => "CallFailed",
            ShoalCode::MissingEntry => "MissingEntry",
            ShoalCode::NoRedrivePolicy => "NoRedrivePolicy",
            ShoalCode::NotAllowed => "NotAllowed",
            ShoalCode::RedrivenBySqs => "RedrivenBySqs",
            ShoalCode::UnresolvedReference => "UnresolvedReference",
            ShoalCode::NoCredentials => "NoCredentials",
            ShoalCode::EndpointUnreachable => "EndpointUnreachable",
            ShoalCode::UnreadableRecord => "UnreadableRecord",
            ShoalCode::JobIdReused => "JobIdReused",
            ShoalCode::EventRefused => "EventRefused",
            ShoalCode::CreateNotNoted => "CreateNotNoted",
            ShoalCode::Cancelled => "Cancelled",
        }
    }

    /// Whether trying again may help, for this code.
    pub fn class(self) -> ErrorClass {
        match self {
            ShoalCode::AttemptsExhausted
            | ShoalCode::LeaseLost
            | ShoalCode::NotVisibleYet
            | ShoalCode::AttributeNotUpdated
            | ShoalCode::BatcherClosed
            | ShoalCode::CallFailed
            | ShoalCode::MissingEntry
            | ShoalCode::RedrivenBySqs
            | ShoalCode::CreateNotNoted
            // Mid-run, a credential refresh or a connection may work on the next try; at
            // start-up the binaries stop at once on either (see `aws::check_setup`).
            | ShoalCode::NoCredentials
            | ShoalCode::EndpointUnreachable => ErrorClass::Transient,
            ShoalCode::InvalidMessage
            | ShoalCode::NoHandler
            | ShoalCode::HandlerMismatch
            | ShoalCode::HandlerPanicked
            | ShoalCode::WaitDeadlineExceeded
            | ShoalCode::DryRunIgnored
            | ShoalCode::InstanceTerminated
            | ShoalCode::ImageFailed
            | ShoalCode::SnapshotFailed
            | ShoalCode::StaleReceipt
            | ShoalCode::NoRedrivePolicy
            | ShoalCode::NotAllowed
            | ShoalCode::UnresolvedReference
            | ShoalCode::UnreadableRecord
            | ShoalCode::JobIdReused
            | ShoalCode::EventRefused
            | ShoalCode::Cancelled => ErrorClass::Permanent,
        }
    }
}

impl fmt::Display for ShoalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure, classified where it arose: Shoal's one error type. An AWS call's failure, a
/// handler's, a batch entry's and a job's are all this, so the runtime decides retry or
/// dead-letter from [`Error::class`] alone.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", .operation.map(|o| format!("{o}: ")).unwrap_or_default())]
pub struct Error {
    pub class: ErrorClass,
    /// The AWS error code (`RequestLimitExceeded`) or Shoal's own ([`ShoalCode`]), when
    /// there is one.
    pub code: Option<String>,
    /// The AWS operation that failed, e.g. `SendMessageBatch`, when one did.
    pub operation: Option<&'static str>,
    pub message: String,
}

impl Error {
    /// A failure worth retrying, under an AWS-style `code`.
    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            class: ErrorClass::Transient,
            code: Some(code.into()),
            operation: None,
            message: message.into(),
        }
    }

    /// A failure that retrying repeats, under an AWS-style `code`.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            class: ErrorClass::Permanent,
            code: Some(code.into()),
            operation: None,
            message: message.into(),
        }
    }

    /// A failure under one of Shoal's own codes, with that code's class.
    pub fn shoal(code: ShoalCode, message: impl Into<String>) -> Self {
        Error {
            class: code.class(),
            code: Some(code.as_str().to_owned()),
            operation: None,
            message: message.into(),
        }
    }

    /// The same failure, as the failure of `operation`.
    pub fn in_operation(mut self, operation: &'static str) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Whether this is Shoal's `code`.
    pub fn is(&self, code: ShoalCode) -> bool {
        self.code.as_deref() == Some(code.as_str())
    }

    /// The code for logs: the error's, or `none`.
    pub fn code_or_none(&self) -> &str {
        self.code.as_deref().unwrap_or("none")
    }
}

/// Error codes that mean "not now" across SQS, SNS and EC2.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "RequestExpired",
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientCapacity",
    "SnapshotCreationPerVolumeRateExceeded",
    "ConcurrentSnapshotLimitExceeded",
    "KMS.ThrottlingException",
    // DynamoDB's (the job ledger's): over its throughput, and a write that raced a
    // transaction on the same item.
    "ProvisionedThroughputExceededException",
    "TransactionConflictException",
    "KmsThrottled",
    "EC2ThrottledException",
];

/// Classifies an error code and HTTP status as AWS services use them.
pub fn classify_code(code: Option<&str>, status: Option<u16>) -> ErrorClass {
    if code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
        return ErrorClass::Transient;
    }
    match status {
        Some(429) | Some(500..=599) => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Classifies any AWS SDK error: a call that never got an answer (timeout, connection
/// failure, an answer that could not be read) is transient; an answer is classified by its
/// code and status; a request the SDK could not even build is permanent.
pub fn classify_sdk_error<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let message = aws_smithy_types::error::display::DisplayErrorContext(err).to_string();
    let operation = Some(operation);
    match err {
        SdkError::ConstructionFailure(_) => Error {
            operation,
            class: ErrorClass::Permanent,
            code: None,
            message,
        },
        SdkError::DispatchFailure(failure) => {
            // The SDK's own text nests every layer's debug output; one cause, said plainly,
            // is what a reader can act on.
            let (code, message) = if message.contains("loading credentials")
                || message.contains("no credentials")
            {
                (Some(ShoalCode::NoCredentials), NO_CREDENTIALS.to_owned())
            } else if failure.is_io() || failure.is_timeout() {
                (
                    Some(ShoalCode::EndpointUnreachable),
                    format!("cannot reach the AWS endpoint ({}): check the network, or AWS_ENDPOINT_URL if a local emulator is meant", root_cause(err)),
                )
            } else {
                (None, root_cause(err))
            };
            Error {
                operation,
                class: ErrorClass::Transient,
                code: code.map(|c| c.as_str().to_owned()),
                message,
            }
        }
        SdkError::TimeoutError(_) => Error {
            operation,
            class: ErrorClass::Transient,
            code: Some(ShoalCode::EndpointUnreachable.as_str().to_owned()),
            message: "no answer from the AWS endpoint in time".to_owned(),
        },
        SdkError::ResponseError(_) => Error {
            operation,
            class: ErrorClass::Transient,
            code: None,
            message,
        },
        SdkError::ServiceError(service) => {
            let code = service.err().code().map(str::to_owned);
            let status = service.raw().status().as_u16();
            let mut message = service
                .err()
                .message()
                .map(str::to_owned)
                .unwrap_or(message);
            if let Some(hint) = code.as_deref().and_then(setup_hint) {
                message = format!("{message} ({hint})");
            }
            Error {
                operation,
                class: classify_code(code.as_deref(), Some(status)),
                message,
                code,
            }
        }
        _ => Error {
            operation,
            class: ErrorClass::Transient,
            code: err.code().map(str::to_owned),
            message,
        },
    }
}

/// What to do when no credentials are found.
pub const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (see `aws configure`), or run with a role (instance profile, ECS task role, EKS service account)";

/// What to set or check when AWS answers with `code`, for answers that say the setup (not
/// the job) is wrong.
pub fn setup_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "AccessDenied" | "AccessDeniedException" | "AuthorizationError"
        | "UnauthorizedOperation" | "AuthFailure" | "KMS.AccessDeniedException" => {
            "the credentials in use lack this permission: grant it, e.g. with the policies in deploy/aws/shoal.yaml"
        }
        "InvalidClientTokenId" | "UnrecognizedClientException" | "SignatureDoesNotMatch"
        | "InvalidAccessKeyId" | "IncompleteSignature" => {
            "the AWS credentials are not valid here: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE and AWS_REGION"
        }
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" | "TokenRefreshRequired" => {
            "the AWS credentials have expired: refresh them (e.g. `aws sso login`, a new session token)"
        }
        "QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue" => {
            "no such queue in this account and region: create it (`shoal-producer stack create`, or deploy/aws/shoal.yaml) or check SHOAL_QUEUE_URL / SHOAL_QUEUE_NAME and AWS_REGION"
        }
        "ResourceNotFoundException" => {
            "no such job ledger table in this account and region: create it (`shoal-producer stack create`, or deploy/aws/shoal.yaml) or check --ledger-table (SHOAL_LEDGER_TABLE) and AWS_REGION"
        }
        "NotFound" | "NotFoundException" => {
            "check the ARN (SHOAL_TOPIC_ARN) and AWS_REGION"
        }
        _ => return None,
    })
}

/// The innermost cause of an error, which is the one that says what happened.
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut cause: &(dyn StdError + 'static) = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_faults_say_what_to_check() {
        for (code, words) in [
            ("AccessDenied", "lack this permission"),
            ("AuthorizationError", "lack this permission"),
            ("InvalidClientTokenId", "AWS_ACCESS_KEY_ID"),
            ("ExpiredToken", "expired"),
            ("AWS.SimpleQueueService.NonExistentQueue", "stack create"),
            ("NotFound", "SHOAL_TOPIC_ARN"),
            ("ResourceNotFoundException", "SHOAL_LEDGER_TABLE"),
        ] {
            let hint = setup_hint(code).unwrap_or_default();
            assert!(hint.contains(words), "{code}: {hint}");
        }
        assert_eq!(setup_hint("Throttling"), None, "not a setup fault");
    }

    #[test]
    fn shoal_codes_carry_their_class_and_name() {
        let e = Error::shoal(ShoalCode::LeaseLost, "lapsed");
        assert_eq!(e.class, ErrorClass::Transient);
        assert!(e.is(ShoalCode::LeaseLost));
        assert!(!e.is(ShoalCode::StaleReceipt));
        assert_eq!(e.code.as_deref(), Some("LeaseLost"));
        assert_eq!(
            Error::shoal(ShoalCode::NoHandler, "x").class,
            ErrorClass::Permanent
        );
    }

    #[test]
    fn an_operations_failure_names_it() {
        let e =
            Error::permanent("InvalidAMIID.NotFound", "no such image").in_operation("RunInstances");
        assert_eq!(e.to_string(), "RunInstances: no such image");
        assert_eq!(Error::transient("X", "plain").to_string(), "plain");
    }

    #[test]
    fn throttling_capacity_and_5xx_are_transient() {
        assert_eq!(
            classify_code(Some("RequestLimitExceeded"), Some(400)),
            ErrorClass::Transient
        );
        assert_eq!(
            classify_code(Some("InsufficientInstanceCapacity"), Some(500)),
            ErrorClass::Transient
        );
        assert_eq!(classify_code(None, Some(503)), ErrorClass::Transient);
        assert_eq!(classify_code(None, Some(429)), ErrorClass::Transient);
    }

    #[test]
    fn bad_input_and_missing_things_are_permanent() {
        assert_eq!(
            classify_code(Some("InvalidAMIID.NotFound"), Some(400)),
            ErrorClass::Permanent
        );
        assert_eq!(
            classify_code(Some("UnauthorizedOperation"), Some(403)),
            ErrorClass::Permanent
        );
        assert_eq!(
            classify_code(Some("AWS.SimpleQueueService.NonExistentQueue"), Some(400)),
            ErrorClass::Permanent
        );
    }
}
