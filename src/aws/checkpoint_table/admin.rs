//! Creating the checkpoint table and checking that it is the table this run
//! expects: its status, and string keys under the configured names.

use super::codec::RESERVED;
use super::DynamoStore;
use crate::aws::{code, full};
use crate::error::ExitError;
use anyhow::anyhow;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use std::collections::HashMap;
use std::time::Duration;

impl DynamoStore {
    /// Creates the table (on-demand) unless it exists, then waits until it is
    /// active and checks its key schema.
    pub async fn create_table(&self) -> anyhow::Result<bool> {
        self.check_key_names()?;
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("complete")
        };
        let key = |name: &str, kt| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kt)
                .build()
                .expect("complete")
        };
        let created = match self
            .client
            .create_table()
            .table_name(&self.t.table)
            .attribute_definitions(attr(&self.t.hash_key))
            .attribute_definitions(attr(&self.t.range_key))
            .key_schema(key(&self.t.hash_key, KeyType::Hash))
            .key_schema(key(&self.t.range_key, KeyType::Range))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
        {
            Ok(_) => true,
            Err(SdkError::ServiceError(se)) if code(se.err()) == "ResourceInUseException" => false,
            Err(e) => {
                return Err(full(e).context(format!("creating table {}", self.t.table)));
            }
        };
        for _ in 0..600 {
            if self.check_table().await? == TableStatus::Active {
                return Ok(created);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(anyhow!(
            "table {} did not become active within 5 minutes",
            self.t.table
        ))
    }

    /// The key names must not clash with each other or with the attributes
    /// this layout writes.
    fn check_key_names(&self) -> Result<(), ExitError> {
        for k in [&self.t.hash_key, &self.t.range_key] {
            if k.is_empty() || RESERVED.contains(&k.as_str()) {
                return Err(ExitError::Usage(format!(
                    "{k:?} cannot be a checkpoint table key name: the checkpoint items use \
                     these attribute names: {}",
                    RESERVED.join(", ")
                )));
            }
        }
        if self.t.hash_key == self.t.range_key {
            return Err(ExitError::Usage(format!(
                "the hash key and the range key cannot both be named {:?}",
                self.t.hash_key
            )));
        }
        Ok(())
    }

    /// Checks that the table exists with the expected string keys; returns its status.
    pub async fn check_table(&self) -> anyhow::Result<TableStatus> {
        self.check_key_names()?;
        let out = match self
            .client
            .describe_table()
            .table_name(&self.t.table)
            .send()
            .await
        {
            Ok(o) => o,
            Err(SdkError::ServiceError(se)) if code(se.err()) == "ResourceNotFoundException" => {
                return Err(ExitError::Usage(format!(
                    "checkpoint table {:?} does not exist; create it with: kinesis-reader \
                     create-table --checkpoint-table {} (add --hash-key/--range-key if you use \
                     other key names)",
                    self.t.table, self.t.table
                ))
                .into())
            }
            Err(SdkError::ServiceError(se)) if code(se.err()) == "AccessDeniedException" => {
                return Err(anyhow!(
                    "access denied to checkpoint table {:?}: the credentials need \
                     dynamodb:DescribeTable, GetItem, Query, PutItem, UpdateItem and \
                     TransactWriteItems on it",
                    self.t.table
                ))
            }
            Err(e) => return Err(full(e).context(format!("describing table {}", self.t.table))),
        };
        let table = out
            .table()
            .ok_or_else(|| anyhow!("DescribeTable: empty answer"))?;
        let types: HashMap<&str, &ScalarAttributeType> = table
            .attribute_definitions()
            .iter()
            .map(|a| (a.attribute_name(), a.attribute_type()))
            .collect();
        let mut hash = None;
        let mut range = None;
        for k in table.key_schema() {
            let desc = format!(
                "{} ({})",
                k.attribute_name(),
                types.get(k.attribute_name()).map_or("?", |t| t.as_str())
            );
            match k.key_type() {
                KeyType::Hash => hash = Some((k.attribute_name().to_string(), desc)),
                _ => range = Some((k.attribute_name().to_string(), desc)),
            }
        }
        let want_ok = |got: &Option<(String, String)>, name: &str| {
            got.as_ref().is_some_and(|(g, _)| g == name)
                && types
                    .get(name)
                    .is_some_and(|t| **t == ScalarAttributeType::S)
        };
        if !want_ok(&hash, &self.t.hash_key) || !want_ok(&range, &self.t.range_key) {
            return Err(ExitError::Usage(format!(
                "checkpoint table {:?} has key schema hash={} range={}, but this run expects hash \
                 key {:?} and range key {:?}, both strings; pass --hash-key/--range-key (or \
                 -D kinesis.checkpoint.metastore.hash.key.name / .range.key.name) to match the \
                 table, or use another table",
                self.t.table,
                hash.map_or("none".into(), |h| h.1),
                range.map_or("none".into(), |r| r.1),
                self.t.hash_key,
                self.t.range_key
            ))
            .into());
        }
        Ok(table.table_status().cloned().unwrap_or(TableStatus::Active))
    }
}
