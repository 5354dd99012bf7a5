//! AWS clients, built from one shared SDK configuration.
//!
//! Credentials, region and endpoint all come from the SDK's standard chain, so the same
//! binary talks to AWS or, with `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_SQS`, `_SNS`,
//! `_EC2`) set, to a local emulator, with no code path of its own.

use aws_config::{BehaviorVersion, SdkConfig};

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

use crate::metrics::Metrics;

/// Longest single attempt of any AWS call: above SQS's 20-second long poll, far below what
/// a hung connection would otherwise cost.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Loads the SDK configuration from the environment, profile and instance metadata.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}

/// Why a process cannot talk to AWS at all: said in one line, with what to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("no AWS region: set AWS_REGION (e.g. us-east-1), or a region in the AWS_PROFILE's configuration")]
    NoRegion,
    #[error("{}", crate::error::NO_CREDENTIALS)]
    NoCredentials,
}

/// Checks what every call needs before the first is made: a region, and credentials (the
/// SDK's chain resolved once, so a missing one is said here rather than as a transient
/// failure of some call later).
pub async fn check_setup(config: &SdkConfig) -> Result<(), SetupError> {
    use aws_sdk_sqs::config::ProvideCredentials;
    if config.region().is_none() {
        return Err(SetupError::NoRegion);
    }
    let provider = config
        .credentials_provider()
        .ok_or(SetupError::NoCredentials)?;
    match provider.provide_credentials().await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::debug!(error = %aws_smithy_types::error::display::DisplayErrorContext(&e), "the credential chain found nothing");
            Err(SetupError::NoCredentials)
        }
    }
}

/// The clients a Shoal process uses; cheap to clone (each is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    /// The job ledger's table.
    pub dynamodb: aws_sdk_dynamodb::Client,
    #[cfg(feature = "ec2")]
    pub ec2: aws_sdk_ec2::Client,
    /// Who the worker is (`GetCallerIdentity`, which needs no permission): the account whose
    /// own snapshots `register-image` takes.
    #[cfg(feature = "ec2")]
    pub sts: aws_sdk_sts::Client,
}

impl AwsClients {
    pub fn new(config: &SdkConfig) -> Self {
        AwsClients {
            sqs: aws_sdk_sqs::Client::new(config),
            sns: aws_sdk_sns::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            #[cfg(feature = "ec2")]
            ec2: aws_sdk_ec2::Client::new(config),
            #[cfg(feature = "ec2")]
            sts: aws_sdk_sts::Client::new(config),
        }
    }

    pub async fn from_env() -> Self {
        Self::new(&load_sdk_config().await)
    }

    /// Clients whose every call is counted in `metrics` (`shoal_aws_api_calls_total`), and
    /// whose every attempt is bounded in time: the SDK sets no read timeout by default, and a
    /// worker whose call hangs holds its job (and keeps extending it) forever.
    pub fn instrumented(config: &SdkConfig, metrics: &Metrics) -> Self {
        let counter = metrics.api_call_counter();
        let mut timeouts = TimeoutConfig::builder().operation_attempt_timeout(ATTEMPT_TIMEOUT);
        if let Some(connect) = config.timeout_config().and_then(|t| t.connect_timeout()) {
            timeouts = timeouts.connect_timeout(connect);
        }
        let config = &config.to_builder().timeout_config(timeouts.build()).build();
        AwsClients {
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(config)
                    .interceptor(counter.clone())
                    .build(),
            ),
            sns: aws_sdk_sns::Client::from_conf(
                aws_sdk_sns::config::Builder::from(config)
                    .interceptor(counter.clone())
                    .build(),
            ),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(config)
                    .interceptor(counter.clone())
                    .build(),
            ),
            #[cfg(feature = "ec2")]
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(config)
                    .interceptor(counter.clone())
                    .build(),
            ),
            #[cfg(feature = "ec2")]
            sts: aws_sdk_sts::Client::from_conf(
                aws_sdk_sts::config::Builder::from(config)
                    .interceptor(counter)
                    .build(),
            ),
        }
    }
}
