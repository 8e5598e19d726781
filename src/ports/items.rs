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

impl Value {
    /// DynamoDB's size rules, near enough to check the 400 KB item limit
    /// before sending (numbers are counted by their text, a little over).
    pub fn size(&self) -> usize {
        match self {
            Value::S(s) | Value::N(s) => s.len(),
            Value::B(b) => b.len(),
            Value::Bool(_) | Value::Null => 1,
            Value::Ss(v) | Value::Ns(v) => v.iter().map(String::len).sum(),
            Value::L(v) => 3 + v.iter().map(|x| 1 + x.size()).sum::<usize>(),
            Value::M(m) => 3 + m.iter().map(|(k, x)| 1 + k.len() + x.size()).sum::<usize>(),
        }
    }
}

/// An item's size by DynamoDB's rules: its attribute names and values.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + v.size()).sum()
}

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
