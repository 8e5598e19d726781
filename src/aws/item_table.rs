//! [`ItemTable`] on the DynamoDB SDK client (the writer's target table).

use super::{code, full, transient};
use crate::ports::items::{Item, ItemTable, KeyAttr, TableInfo, Value, APPLIED_ATTRIBUTE};
use crate::ports::SinkError;
use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue as AV, KeyType, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;

type Result<T> = std::result::Result<T, SinkError>;

pub struct DynamoItems {
    client: Client,
    table: String,
}

impl DynamoItems {
    pub fn new(config: &aws_config::SdkConfig, table: &str) -> Self {
        DynamoItems {
            client: Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(config)
                    .interceptor(super::counters::Counter)
                    .build(),
            ),
            table: table.to_string(),
        }
    }
}

fn to_av(v: Value) -> AV {
    match v {
        Value::S(s) => AV::S(s),
        Value::N(n) => AV::N(n),
        Value::B(b) => AV::B(Blob::new(b)),
        Value::Bool(b) => AV::Bool(b),
        Value::Null => AV::Null(true),
        Value::Ss(v) => AV::Ss(v),
        Value::Ns(v) => AV::Ns(v),
        Value::L(v) => AV::L(v.into_iter().map(to_av).collect()),
        Value::M(m) => AV::M(m.into_iter().map(|(k, v)| (k, to_av(v))).collect()),
    }
}

fn from_av(v: &AV) -> Value {
    match v {
        AV::S(s) => Value::S(s.clone()),
        AV::N(n) => Value::N(n.clone()),
        AV::B(b) => Value::B(b.as_ref().to_vec()),
        AV::Bool(b) => Value::Bool(*b),
        AV::Ss(v) => Value::Ss(v.clone()),
        AV::Ns(v) => Value::Ns(v.clone()),
        AV::L(v) => Value::L(v.iter().map(from_av).collect()),
        AV::M(m) => Value::M(m.iter().map(|(k, v)| (k.clone(), from_av(v))).collect()),
        _ => Value::Null,
    }
}

/// DynamoDB's own words for an item it refuses (ValidationException).
fn refused<E: ProvideErrorMetadata>(e: &E) -> SinkError {
    SinkError::Refused(format!(
        "DynamoDB refused the item: {}",
        e.message().unwrap_or("ValidationException")
    ))
}

fn to_item(i: Item) -> HashMap<String, AV> {
    i.into_iter().map(|(k, v)| (k, to_av(v))).collect()
}

#[async_trait]
impl ItemTable for DynamoItems {
    async fn describe(&self) -> Result<TableInfo> {
        let out = match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(o) => o,
            Err(SdkError::ServiceError(se)) if code(se.err()) == "ResourceNotFoundException" => {
                return Err(SinkError::NoSuchTable(self.table.clone()))
            }
            Err(e) => {
                return Err(full(e)
                    .context(format!("describing table {}", self.table))
                    .into())
            }
        };
        let t = out
            .table()
            .ok_or_else(|| anyhow!("DescribeTable: empty answer"))?;
        let types: HashMap<&str, &str> = t
            .attribute_definitions()
            .iter()
            .map(|a| (a.attribute_name(), a.attribute_type().as_str()))
            .collect();
        let mut keys: Vec<(bool, KeyAttr)> = t
            .key_schema()
            .iter()
            .map(|k| {
                (
                    *k.key_type() == KeyType::Range,
                    KeyAttr {
                        name: k.attribute_name().to_string(),
                        ty: types.get(k.attribute_name()).unwrap_or(&"?").to_string(),
                    },
                )
            })
            .collect();
        keys.sort_by_key(|(range, _)| *range);
        Ok(TableInfo {
            keys: keys.into_iter().map(|(_, k)| k).collect(),
            write_capacity: t
                .provisioned_throughput()
                .and_then(|p| p.write_capacity_units())
                .filter(|w| *w > 0),
        })
    }

    async fn batch_put(&self, items: Vec<Item>) -> Result<Vec<Item>> {
        let requests: Vec<WriteRequest> = items
            .into_iter()
            .map(|i| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(to_item(i)))
                            .build()
                            .expect("item set"),
                    )
                    .build()
            })
            .collect();
        let out = match self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .send()
            .await
        {
            Ok(out) => out,
            Err(SdkError::ServiceError(se)) if code(se.err()) == "ValidationException" => {
                return Err(refused(se.err()))
            }
            Err(e) => return Err(sink_error(e, "BatchWriteItem", &self.table)),
        };
        // Unprocessed items come back with HTTP 200: hand them back for a retry.
        let left = out
            .unprocessed_items()
            .and_then(|m| m.get(&self.table))
            .map(|reqs| {
                reqs.iter()
                    .filter_map(|r| r.put_request())
                    .map(|p| {
                        p.item()
                            .iter()
                            .map(|(k, v)| (k.clone(), from_av(v)))
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(left)
    }

    async fn add_once(&self, key: Item, adds: Item, sets: Item, tag: &str) -> Result<bool> {
        let mut names = HashMap::from([("#applied".to_string(), APPLIED_ATTRIBUTE.to_string())]);
        let mut values = HashMap::from([
            (":tag".to_string(), AV::S(tag.to_string())),
            (":tags".to_string(), AV::Ss(vec![tag.to_string()])),
        ]);
        let mut add_parts = vec!["#applied :tags".to_string()];
        let mut set_parts = Vec::new();
        for (i, (name, v)) in adds.into_iter().enumerate() {
            names.insert(format!("#a{i}"), name);
            values.insert(format!(":a{i}"), to_av(v));
            add_parts.push(format!("#a{i} :a{i}"));
        }
        for (i, (name, v)) in sets.into_iter().enumerate() {
            names.insert(format!("#s{i}"), name);
            values.insert(format!(":s{i}"), to_av(v));
            set_parts.push(format!("#s{i} = :s{i}"));
        }
        let mut update = format!("ADD {}", add_parts.join(", "));
        if !set_parts.is_empty() {
            update.push_str(&format!(" SET {}", set_parts.join(", ")));
        }
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(to_item(key)))
            .update_expression(update)
            .condition_expression("attribute_not_exists(#applied) OR NOT contains(#applied, :tag)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se))
                if code(se.err()) == "ConditionalCheckFailedException" =>
            {
                Ok(false)
            }
            Err(SdkError::ServiceError(se)) if code(se.err()) == "ValidationException" => {
                Err(refused(se.err()))
            }
            Err(e) => Err(sink_error(e, "UpdateItem", &self.table)),
        }
    }
}

/// A failed write as the sink's error: transient ones are for the sink to
/// retry (its writes are safe to repeat), the rest end the load.
fn sink_error<E>(
    e: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    op: &str,
    table: &str,
) -> SinkError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let again = transient(&e);
    let e = full(e).context(format!("{op} on table {table}"));
    match again {
        true => SinkError::Transient(e),
        false => SinkError::Other(e),
    }
}
