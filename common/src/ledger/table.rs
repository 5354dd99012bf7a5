//! The ledger's table: made on demand, with its indexes and TTL, for stacks made without
//! `deploy/aws/shoal.yaml` (the local emulator, the tests, `stack create`).

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use super::{attr, Ledger, BY_CHAIN_INDEX, BY_STATUS_INDEX};
use crate::error::{classify_sdk_error, Error, ErrorClass};

impl Ledger {
    /// Creates the ledger's table, on demand, with its indexes and TTL: what
    /// `deploy/aws/shoal.yaml` declares, for stacks made without the template.
    pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), Error> {
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let defined = |name: &str, kind: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
        };
        let index = |name: &str, hash: &str, range: &str| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(hash, KeyType::Hash)?)
                .key_schema(key(range, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
        };
        let build = |e: aws_sdk_dynamodb::error::BuildError| Error {
            class: ErrorClass::Permanent,
            code: None,
            operation: Some("CreateTable"),
            message: e.to_string(),
        };
        let created = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(attr::JOB_ID, KeyType::Hash).map_err(build)?)
            .attribute_definitions(defined(attr::JOB_ID, ScalarAttributeType::S).map_err(build)?)
            .attribute_definitions(defined(attr::STATUS, ScalarAttributeType::S).map_err(build)?)
            .attribute_definitions(
                defined(attr::UPDATED_AT, ScalarAttributeType::N).map_err(build)?,
            )
            .attribute_definitions(defined(attr::CHAIN_ID, ScalarAttributeType::S).map_err(build)?)
            .global_secondary_indexes(
                index(BY_STATUS_INDEX, attr::STATUS, attr::UPDATED_AT).map_err(build)?,
            )
            .global_secondary_indexes(
                index(BY_CHAIN_INDEX, attr::CHAIN_ID, attr::JOB_ID).map_err(build)?,
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Made before: stack creation is idempotent.
            Err(e)
                if matches!(&e, aws_sdk_dynamodb::error::SdkError::ServiceError(service)
                    if aws_smithy_types::error::metadata::ProvideErrorMetadata::code(service.err())
                        == Some("ResourceInUseException")) => {}
            Err(e) => return Err(classify_sdk_error("CreateTable", &e)),
        }
        // TTL can be set only on an active table; DynamoDB makes one in seconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let described = client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| classify_sdk_error("DescribeTable", &e))?;
            let status = described.table.and_then(|t| t.table_status);
            if status == Some(aws_sdk_dynamodb::types::TableStatus::Active)
                || std::time::Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(attr::EXPIRES_AT)
                    .build()
                    .map_err(|e| Error {
                        operation: Some("UpdateTimeToLive"),
                        ..build(e)
                    })?,
            )
            .send()
            .await
            .map_err(|e| classify_sdk_error("UpdateTimeToLive", &e))?;
        Ok(())
    }
}
