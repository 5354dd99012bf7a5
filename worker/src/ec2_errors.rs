//! EC2's errors as Shoal reads them, in one place the runtime and the handlers both use: an
//! SDK error classified with its AWS code kept ([`ec2_error`]), the code alone
//! ([`error_code`]), and what a code says: a named resource does not exist (or is not listed
//! yet: [`is_not_found`]), or the call was refused for its rate with nothing done
//! ([`is_throttling`]). Codes are matched as AWS writes them, never by a message's text.

use aws_sdk_ec2::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use shoal_common::error::classify_sdk_error;

use crate::handler::JobError;

/// An EC2 failure as a job error, classified, with the AWS code and message kept for the
/// failure event.
pub fn ec2_error<E>(operation: &'static str, err: SdkError<E>) -> JobError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    JobError::from(classify_sdk_error(operation, &err))
}

/// The AWS code of an SDK error, if the service answered with one.
pub fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Option<&str> {
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// Whether an error says a named resource does not exist (`InvalidInstanceID.NotFound`,
/// `InvalidAMIID.NotFound`, `InvalidSnapshot.NotFound`, `InvalidVolume.NotFound`, …): on an
/// eventually consistent EC2, possibly only "not yet".
pub fn is_not_found(e: &JobError) -> bool {
    e.code
        .as_deref()
        .is_some_and(|c| c.ends_with(".NotFound") || c.ends_with(".NotFoundException"))
}

/// Whether an error says a resource is not in the state the call needs yet (an instance
/// still `pending` or `stopping`, a volume still attaching): EC2 refuses the call, nothing is
/// done, and the same call may go through once the resource settles.
pub fn is_changing_state(e: &JobError) -> bool {
    e.code
        .as_deref()
        .is_some_and(|c| matches!(c, "IncorrectInstanceState" | "IncorrectState"))
}

/// EC2's codes for a call refused for its rate, with nothing done.
pub fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_and_throttling_codes_are_recognised_by_code() {
        assert!(is_not_found(&JobError::permanent(
            "InvalidSnapshot.NotFound",
            "no such snapshot"
        )));
        assert!(is_not_found(&JobError::permanent(
            "InvalidInstanceID.NotFound",
            "x"
        )));
        assert!(!is_not_found(&JobError::permanent(
            "InvalidInstanceID.Malformed",
            "x"
        )));
        assert!(!is_not_found(&JobError::transient(
            "InternalError",
            "InvalidInstanceID.NotFound in the text is not the code"
        )));
        assert!(is_throttling("RequestLimitExceeded"));
        assert!(!is_throttling("UnauthorizedOperation"));
    }
}
