//! `--columns name:TYPE,...`: how a line's fields become a DynamoDB item.
//! The first column (or two) are the table's key, checked against the
//! table's key schema; each field is converted by its column's type, and a
//! number key is written in one canonical form so that keys equal as numbers
//! are one item.

use crate::error::ExitError;
use crate::ports::items::{item_size, Item, TableInfo, Value, APPLIED_ATTRIBUTE};
use crate::sink::lines::unescape;
use anyhow::{bail, Result};
use base64::Engine;

pub const MAX_ITEM_BYTES: usize = 400 * 1024;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    S,
    N,
    B,
    Bool,
    Null,
    Ss,
    Ns,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// `--columns error:S,region:S,count:N`.
pub fn parse_columns(s: &str) -> Result<Vec<Column>, String> {
    let mut cols = Vec::new();
    // `k:S, v:N` is meant as `k:S,v:N`: a name never starts or ends with a space.
    for part in s.split(',').map(str::trim) {
        let (name, ty) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("column {part:?}: expected NAME:TYPE"))?;
        let (name, ty) = (name.trim(), ty.trim());
        let ty = match ty {
            "S" => ColumnType::S,
            "N" => ColumnType::N,
            "B" => ColumnType::B,
            "BOOL" => ColumnType::Bool,
            "NULL" => ColumnType::Null,
            "SS" => ColumnType::Ss,
            "NS" => ColumnType::Ns,
            "JSON" => ColumnType::Json,
            _ => {
                return Err(format!(
                "column {part:?}: unknown type {ty:?}; types are S, N, B, BOOL, NULL, SS, NS, JSON"
            ))
            }
        };
        if name.is_empty() || cols.iter().any(|c: &Column| c.name == name) {
            return Err(format!(
                "column {part:?}: names must be unique and not empty"
            ));
        }
        if name == APPLIED_ATTRIBUTE {
            return Err(format!(
                "column name {APPLIED_ATTRIBUTE} is kept for add mode"
            ));
        }
        cols.push(Column {
            name: name.to_string(),
            ty,
        });
    }
    Ok(cols)
}

fn is_number(s: &str) -> bool {
    // DynamoDB numbers: up to 38 significant digits; we accept what parses as a finite f64.
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && s.parse::<f64>().is_ok_and(f64::is_finite)
}

fn json_value(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => Value::N(n.to_string()),
        J::String(s) => Value::S(s),
        J::Array(a) => Value::L(a.into_iter().map(json_value).collect()),
        J::Object(o) => Value::M(o.into_iter().map(|(k, v)| (k, json_value(v))).collect()),
    }
}

/// One field as an attribute; `None` leaves the attribute out (an empty set).
fn field_value(c: &Column, raw: &str) -> Result<Option<Value>, String> {
    let list = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = s
            .split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    Ok(Some(match c.ty {
        ColumnType::S => Value::S(raw.to_string()),
        ColumnType::N if is_number(raw) => Value::N(raw.to_string()),
        ColumnType::N => return Err(format!("{raw:?} is not a number")),
        ColumnType::B => Value::B(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|e| format!("{raw:?} is not valid base64 ({e})"))?,
        ),
        ColumnType::Bool => match raw {
            "true" | "TRUE" | "True" | "1" => Value::Bool(true),
            "false" | "FALSE" | "False" | "0" => Value::Bool(false),
            _ => return Err(format!("{raw:?} is not true or false")),
        },
        ColumnType::Null => Value::Null,
        ColumnType::Ss => {
            let v = list(raw);
            if v.is_empty() {
                return Ok(None);
            }
            Value::Ss(v)
        }
        ColumnType::Ns => {
            let v = list(raw);
            if let Some(bad) = v.iter().find(|x| !is_number(x)) {
                return Err(format!("{bad:?} in the list is not a number"));
            }
            if v.is_empty() {
                return Ok(None);
            }
            Value::Ns(v)
        }
        ColumnType::Json => {
            json_value(serde_json::from_str(raw).map_err(|e| format!("not valid JSON ({e})"))?)
        }
    }))
}

/// A key attribute as text that is equal exactly when DynamoDB takes the two
/// keys for the same item: numbers compare by value (`7`, `7.0`, `07` and
/// `0.7e1` are one key), binary by its bytes.
fn key_text(v: &Value) -> String {
    match v {
        Value::N(n) => canonical_number(n).unwrap_or_else(|| n.clone()),
        Value::B(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Value::S(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// A number's value as `[-]DIGITSeEXP` with no leading or trailing zeros in
/// DIGITS (zero is `0`), so that equal values give equal text.
fn canonical_number(s: &str) -> Option<String> {
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], s[at + 1..].parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let all = format!("{int}{frac}");
    let digits = all.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        return Some("0".into());
    }
    let exp = exp - frac.len() as i64 + (digits.len() - trimmed.len()) as i64;
    Some(format!(
        "{}{trimmed}e{exp}",
        if negative { "-" } else { "" }
    ))
}

/// A parsed line: its key (as text, for de-duplication) and its item.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub line: u64,
    /// The line(s) as read, without the newline: what a dead-letter file
    /// gets if the service refuses the item (empty without one).
    pub raw: Vec<u8>,
    pub key: String,
    pub item: Item,
}

/// Parses one line (without its newline) against the columns; `key_len` is 1 or 2.
pub fn parse_row(
    columns: &[Column],
    key_len: usize,
    line_no: u64,
    line: &str,
    escaped: bool,
) -> Result<Row, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != columns.len() {
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        return Err(format!(
            "{} field{}, expected {} ({})",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" },
            columns.len(),
            names.join(", ")
        ));
    }
    let mut item = Item::new();
    let mut key = String::new();
    for (i, (c, raw)) in columns.iter().zip(fields).enumerate() {
        let raw = if escaped { unescape(raw) } else { raw.into() };
        let what = |e: String| format!("field {} ({}): {e}", i + 1, c.name);
        if i < key_len && raw.is_empty() {
            return Err(what("a key cannot be empty".into()));
        }
        if let Some(v) = field_value(c, &raw).map_err(what)? {
            if i < key_len {
                key.push_str(&key_text(&v));
                key.push('\u{0}');
            }
            item.insert(c.name.clone(), v);
        }
    }
    let size = item_size(&item);
    if size > MAX_ITEM_BYTES {
        return Err(format!(
            "the item is {size} bytes, over DynamoDB's 400 KB limit"
        ));
    }
    Ok(Row {
        line: line_no,
        raw: Vec::new(),
        key,
        item,
    })
}

/// Checks the columns against the table's key schema; returns the key length.
pub fn key_columns(columns: &[Column], info: &TableInfo, table: &str) -> Result<usize> {
    let ty = |c: &Column| match c.ty {
        ColumnType::S => "S",
        ColumnType::N => "N",
        ColumnType::B => "B",
        _ => "?",
    };
    let want: Vec<String> = info
        .keys
        .iter()
        .map(|k| format!("{}:{}", k.name, k.ty))
        .collect();
    let got: Vec<String> = columns
        .iter()
        .take(info.keys.len())
        .map(|c| format!("{}:{}", c.name, ty(c)))
        .collect();
    if want != got {
        bail!(ExitError::Usage(format!(
            "table {table} has the key {}, so --columns must start with {} (it starts with {})",
            want.join(" + "),
            want.join(","),
            got.join(",")
        )));
    }
    Ok(info.keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::items::KeyAttr;
    use std::collections::BTreeMap;

    fn cols() -> Vec<Column> {
        parse_columns("error:S,region:S,count:N,tags:SS,blob:B,ok:BOOL,doc:JSON").unwrap()
    }

    #[test]
    fn lines_become_items() {
        let r = parse_row(
            &cols(),
            2,
            1,
            "503\teu\\tw\t12\tb,a,a\taGk=\ttrue\t{\"x\":[1,\"y\"]}",
            true,
        )
        .unwrap();
        assert_eq!(r.key, "503\u{0}eu\tw\u{0}");
        assert_eq!(r.item["region"], Value::S("eu\tw".into()));
        assert_eq!(r.item["count"], Value::N("12".into()));
        assert_eq!(r.item["tags"], Value::Ss(vec!["a".into(), "b".into()]));
        assert_eq!(r.item["blob"], Value::B(b"hi".to_vec()));
        assert_eq!(r.item["ok"], Value::Bool(true));
        assert_eq!(
            r.item["doc"],
            Value::M(BTreeMap::from([(
                "x".to_string(),
                Value::L(vec![Value::N("1".into()), Value::S("y".into())])
            )]))
        );
        // An empty set is left out (DynamoDB has no empty sets).
        let r = parse_row(&cols(), 2, 1, "a\tb\t1\t\taGk=\tfalse\tnull", true).unwrap();
        assert!(!r.item.contains_key("tags"));
    }

    #[test]
    fn column_lists_with_spaces_name_the_same_columns() {
        assert_eq!(
            parse_columns("k:S, v:N").unwrap(),
            parse_columns("k:S,v:N").unwrap()
        );
        let cols = parse_columns("k:S,v:N").unwrap();
        assert!(parse_row(&cols, 1, 1, "x", true)
            .unwrap_err()
            .starts_with("1 field, expected 2"));
    }

    #[test]
    fn number_keys_are_one_key_when_dynamodb_takes_them_as_one() {
        for same in [
            &["7", "7.0", "07", "+7", "0.7e1", "70E-1", "7.000"][..],
            &["0", "-0", "0.0", "0e5", "00"],
            &["-1.5", "-15e-1", "-1.50"],
            &["100", "1e2", "1E+2", "100.0"],
        ] {
            let texts: Vec<String> = same.iter().map(|n| canonical_number(n).unwrap()).collect();
            assert!(texts.iter().all(|t| *t == texts[0]), "{same:?}: {texts:?}");
        }
        for (a, b) in [("7", "70"), ("1", "-1"), ("0.1", "1"), ("1e2", "1e3")] {
            assert_ne!(canonical_number(a), canonical_number(b), "{a} {b}");
        }
        let cols = parse_columns("k:N,c:N").unwrap();
        let row = |l: &str| parse_row(&cols, 1, 1, l, true).unwrap().key;
        assert_eq!(row("7\t5"), row("7.0\t7"));
        assert_eq!(row("1\t1"), row("01\t1"));
        assert_ne!(row("7\t1"), row("8\t1"));
        let cols = parse_columns("k:B,c:N").unwrap();
        let row = |l: &str| parse_row(&cols, 1, 1, l, true).unwrap().key;
        assert_ne!(row("AAE=\t1"), row("AAI=\t1"));
    }

    #[test]
    fn bad_fields_name_field_and_reason() {
        let c = cols();
        let e = |l: &str| parse_row(&c, 2, 9, l, true).unwrap_err();
        assert!(e("a\tb\t1").contains("3 fields, expected 7"));
        assert_eq!(
            e("a\tb\tmany\tx\taGk=\ttrue\t1"),
            "field 3 (count): \"many\" is not a number"
        );
        assert!(e("\tb\t1\tx\taGk=\ttrue\t1").contains("field 1 (error): a key cannot be empty"));
        assert!(e("a\tb\t1\tx\t!!\ttrue\t1").contains("field 5 (blob): \"!!\" is not valid base64"));
        assert!(e("a\tb\t1\tx\taGk=\tyes\t1").contains("field 6 (ok)"));
        assert!(e("a\tb\t1\tx\taGk=\ttrue\t{").contains("field 7 (doc): not valid JSON"));
        let big = "x".repeat(MAX_ITEM_BYTES);
        let e = parse_row(
            &parse_columns("k:S,v:S").unwrap(),
            1,
            1,
            &format!("k\t{big}"),
            true,
        )
        .unwrap_err();
        assert!(e.contains("400 KB"), "{e}");
    }

    #[test]
    fn column_specs() {
        assert!(parse_columns("a:S,a:N").is_err());
        assert!(parse_columns("a:STRING")
            .unwrap_err()
            .contains("unknown type"));
        assert!(parse_columns("a").is_err());
        assert!(parse_columns("kinesis_applied:SS").is_err());
    }

    #[test]
    fn key_schema_must_match_the_first_columns() {
        let info = TableInfo {
            keys: vec![
                KeyAttr {
                    name: "error".into(),
                    ty: "S".into(),
                },
                KeyAttr {
                    name: "region".into(),
                    ty: "S".into(),
                },
            ],
            write_capacity: None,
        };
        assert_eq!(key_columns(&cols(), &info, "t").unwrap(), 2);
        let wrong = parse_columns("region:S,error:S").unwrap();
        let e = key_columns(&wrong, &info, "t").unwrap_err();
        assert!(
            e.to_string().contains("must start with error:S,region:S"),
            "{e}"
        );
    }
}
