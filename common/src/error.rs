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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// A failed AWS call, classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{operation} failed ({class}{}): {message}", .code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
pub struct AwsError {
    /// The API operation, e.g. `SendMessageBatch`.
    pub operation: &'static str,
    pub class: ErrorClass,
    /// The AWS error code (`RequestLimitExceeded`), when the service answered with one.
    pub code: Option<String>,
    pub message: String,
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
pub fn classify_sdk_error<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let message = aws_smithy_types::error::display::DisplayErrorContext(err).to_string();
    match err {
        SdkError::ConstructionFailure(_) => AwsError {
            operation,
            class: ErrorClass::Permanent,
            code: None,
            message,
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            AwsError {
                operation,
                class: ErrorClass::Transient,
                code: None,
                message,
            }
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().map(str::to_owned);
            let status = service.raw().status().as_u16();
            AwsError {
                operation,
                class: classify_code(code.as_deref(), Some(status)),
                message: service
                    .err()
                    .message()
                    .map(str::to_owned)
                    .unwrap_or(message),
                code,
            }
        }
        _ => AwsError {
            operation,
            class: ErrorClass::Transient,
            code: err.code().map(str::to_owned),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
