//! [`MemoryItems`]: one DynamoDB table in memory, with its key schema,
//! BatchWriteItem's rules and unprocessed items, and `add_once`'s condition.

use crate::ports::items::{
    item_size, Item, ItemTable, KeyAttr, TableInfo, Value, APPLIED_ATTRIBUTE,
};
use crate::ports::SinkError;
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A table in memory.
pub struct MemoryItems {
    info: TableInfo,
    items: Mutex<BTreeMap<String, Item>>,
    batches: AtomicU64,
    /// As a throttled table does: every other BatchWriteItem leaves its
    /// odd-numbered items unprocessed, for the caller to send again.
    pub unprocessed: bool,
    /// The largest item the table takes, in bytes (DynamoDB: 400 KB, by
    /// rules the writer only estimates).
    pub max_item_bytes: usize,
}

fn invalid(what: String) -> SinkError {
    SinkError::Refused(format!("DynamoDB refused the item: {what}"))
}

impl MemoryItems {
    /// A table keyed by `keys` (name, "S" | "N" | "B"), with provisioned
    /// write capacity `wcu` (`None`: on-demand).
    pub fn new(keys: &[(&str, &str)], wcu: Option<i64>) -> Self {
        MemoryItems {
            info: TableInfo {
                keys: keys
                    .iter()
                    .map(|(name, ty)| KeyAttr {
                        name: name.to_string(),
                        ty: ty.to_string(),
                    })
                    .collect(),
                write_capacity: wcu,
            },
            items: Mutex::default(),
            batches: AtomicU64::new(0),
            unprocessed: false,
            max_item_bytes: 400 * 1024,
        }
    }

    /// The stored items, by their key values joined with '/'.
    pub fn items(&self) -> BTreeMap<String, Item> {
        self.items.lock().unwrap().clone()
    }

    fn check_size(&self, item: &Item) -> Result<(), SinkError> {
        if item_size(item) > self.max_item_bytes {
            return Err(invalid(
                "Item size has exceeded the maximum allowed size".into(),
            ));
        }
        Ok(())
    }

    /// The item's key, checked against the schema.
    fn key_of(&self, item: &Item) -> Result<String, SinkError> {
        let mut parts = Vec::new();
        for k in &self.info.keys {
            let part = match (item.get(&k.name), k.ty.as_str()) {
                (Some(Value::S(s)), "S") | (Some(Value::N(s)), "N") => s.clone(),
                (Some(Value::B(b)), "B") => format!("{b:?}"),
                (v, ty) => {
                    return Err(invalid(format!(
                        "key attribute {} must be of type {ty}, not {v:?}",
                        k.name
                    )))
                }
            };
            parts.push(part);
        }
        Ok(parts.join("/"))
    }
}

#[async_trait]
impl ItemTable for MemoryItems {
    async fn describe(&self) -> Result<TableInfo, SinkError> {
        Ok(TableInfo {
            keys: self.info.keys.clone(),
            write_capacity: self.info.write_capacity,
        })
    }

    async fn batch_put(&self, items: Vec<Item>) -> Result<Vec<Item>, SinkError> {
        if items.len() > 25 {
            return Err(invalid("too many items in one BatchWriteItem".into()));
        }
        let mut keys = BTreeSet::new();
        for i in &items {
            self.check_size(i)?;
            if !keys.insert(self.key_of(i)?) {
                return Err(invalid(
                    "Provided list of item keys contains duplicates".into(),
                ));
            }
        }
        let throttled = self.unprocessed
            && self
                .batches
                .fetch_add(1, Ordering::SeqCst)
                .is_multiple_of(2);
        let mut left = Vec::new();
        for (n, i) in items.into_iter().enumerate() {
            if throttled && n % 2 == 1 {
                left.push(i);
            } else {
                let k = self.key_of(&i)?;
                self.items.lock().unwrap().insert(k, i);
            }
        }
        tokio::task::yield_now().await;
        Ok(left)
    }

    async fn add_once(
        &self,
        key: Item,
        adds: Item,
        sets: Item,
        tag: &str,
    ) -> Result<bool, SinkError> {
        let k = self.key_of(&key)?;
        let mut items = self.items.lock().unwrap();
        let mut updated = items.get(&k).cloned().unwrap_or(key);
        let applied = match updated.get(APPLIED_ATTRIBUTE) {
            Some(Value::Ss(tags)) => tags.clone(),
            _ => Vec::new(),
        };
        if applied.iter().any(|t| t == tag) {
            return Ok(false);
        }
        for (name, v) in adds {
            let Value::N(add) = v else {
                return Err(invalid(format!("ADD {name}: not a number")));
            };
            let sum = match updated.get(&name) {
                Some(Value::N(old)) => crate::sink::dynamodb::add_numbers(old, &add),
                _ => add,
            };
            updated.insert(name, Value::N(sum));
        }
        updated.extend(sets);
        let mut tags = applied;
        tags.push(tag.to_string());
        updated.insert(APPLIED_ATTRIBUTE.to_string(), Value::Ss(tags));
        // The whole update is refused, as UpdateItem's is.
        self.check_size(&updated)?;
        items.insert(k, updated);
        Ok(true)
    }
}
