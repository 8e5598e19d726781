//! What `kinesis-writer` needs from DynamoDB: one table's items, in values
//! independent of the SDK (converted in `aws/item_table.rs`).

use super::SinkError;
use async_trait::async_trait;
use std::collections::BTreeMap;

/// An attribute value, independent of the SDK (converted in `aws/`).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    S(String),
    N(String),
    B(Vec<u8>),
    Bool(bool),
    Null,
    Ss(Vec<String>),
    Ns(Vec<String>),
    L(Vec<Value>),
    M(BTreeMap<String, Value>),
}

pub type Item = BTreeMap<String, Value>;

/// The attribute `add` mode keeps the applied iterations in.
pub const APPLIED_ATTRIBUTE: &str = "kinesis_applied";

/// The table's key attribute, as DescribeTable tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAttr {
    pub name: String,
    /// "S", "N" or "B".
    pub ty: String,
}

pub struct TableInfo {
    pub keys: Vec<KeyAttr>,
    /// Provisioned write capacity, if the table is provisioned.
    pub write_capacity: Option<i64>,
}

/// What the sink needs from DynamoDB (the SDK adapter is `aws/item_table.rs`).
#[async_trait]
pub trait ItemTable: Send + Sync {
    async fn describe(&self) -> Result<TableInfo, SinkError>;
    /// Writes up to 25 items with BatchWriteItem; returns those left unprocessed.
    async fn batch_put(&self, items: Vec<Item>) -> Result<Vec<Item>, SinkError>;
    /// Adds `adds` (numbers) and sets `sets` on the item with `key`, unless
    /// `tag` is already recorded in it; `Ok(false)` when it was.
    async fn add_once(
        &self,
        key: Item,
        adds: Item,
        sets: Item,
        tag: &str,
    ) -> Result<bool, SinkError>;
}
