//! The layers under the command line: `-D name=value` pairs (EMR's jobconf
//! names) and the environment, where Hadoop Streaming passes jobconf as
//! mangled variable names. Precedence: flag > `-D` > environment > default.
//! Also the parsers every setting shares, so that a bad value names its source.

use crate::error::ExitError;
use std::collections::BTreeMap;
use std::time::Duration;

/// EMR setting names this tool understands.
pub mod names {
    pub const ENABLED: &str = "kinesis.checkpoint.enabled";
    pub const TABLE: &str = "kinesis.checkpoint.metastore.table.name";
    pub const HASH_KEY: &str = "kinesis.checkpoint.metastore.hash.key.name";
    pub const RANGE_KEY: &str = "kinesis.checkpoint.metastore.range.key.name";
    /// The misspelling in EMR's own documentation.
    pub const RANGE_KEY_ALIAS: &str = "kinesis.checkpoint.metastore.hash.range.name";
    pub const LOGICAL_NAME: &str = "kinesis.checkpoint.logical.name";
    pub const ITERATION: &str = "kinesis.checkpoint.iteration.no";
    pub const RERUN: &str = "kinesis.rerun.iteration.without.wait";
    pub const ITERATION_TIMEOUT: &str = "kinesis.iteration.timeout";
    pub const NODATA_TIMEOUT: &str = "kinesis.nodata.timeout";
    pub const BATCH_SIZE: &str = "kinesis.records.batchsize";
    pub const REGION: &str = "kinesis.endpoint.region";
    pub const STREAM: &str = "kinesis.stream.name";
    /// The period of the `reporter:status:` heartbeat under Hadoop.
    pub const STATUS_INTERVAL: &str = "kinesis.hadoop.status.interval";
    /// Static credentials, for EMR jobs that passed them this way: used, never shown.
    pub const ACCESS_KEY: &str = "kinesis.accessKey";
    pub const SECRET_KEY: &str = "kinesis.secretKey";
    pub const ALL: [&str; 16] = [
        ACCESS_KEY,
        SECRET_KEY,
        ENABLED,
        TABLE,
        HASH_KEY,
        RANGE_KEY,
        RANGE_KEY_ALIAS,
        LOGICAL_NAME,
        ITERATION,
        RERUN,
        ITERATION_TIMEOUT,
        NODATA_TIMEOUT,
        BATCH_SIZE,
        REGION,
        STREAM,
        STATUS_INTERVAL,
    ];
}

/// A value as messages may show it: credentials never are.
pub(crate) fn shown<'v>(name: &str, value: &'v str) -> &'v str {
    if name == names::ACCESS_KEY || name == names::SECRET_KEY {
        "***"
    } else {
        value
    }
}

/// Hadoop passes jobconf `a.b.c` to tasks as the variable `a_b_c`.
pub fn mangle(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The layers below the command line.
pub struct Layers<'a> {
    defines: BTreeMap<String, String>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

pub(crate) fn usage(msg: String) -> ExitError {
    ExitError::Usage(msg)
}

impl<'a> Layers<'a> {
    /// Checks the `-D` pairs: well-formed, known `kinesis.*` names, no name given
    /// twice with different values. Other names (a copied jobconf) are ignored.
    pub fn new(
        defines: &[String],
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ExitError> {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for d in defines {
            let (k, v) = d.split_once('=').ok_or_else(|| {
                usage(format!(
                    "-D {d}: expected NAME=VALUE, e.g. -D {}=7",
                    names::ITERATION
                ))
            })?;
            let k = k.trim();
            if k.starts_with("kinesis.") && !names::ALL.contains(&k) {
                return Err(usage(format!(
                    "-D {k}: unknown setting; known settings are {}",
                    names::ALL.join(", ")
                )));
            }
            if let Some(old) = map.get(k) {
                if old != v {
                    return Err(usage(format!(
                        "-D {k} is given twice with different values ({:?} and {:?})",
                        shown(k, old),
                        shown(k, v)
                    )));
                }
            }
            map.insert(k.to_string(), v.to_string());
        }
        Ok(Layers { defines: map, env })
    }

    /// The value of a setting: from the flag, else `-D` (any of its names), else
    /// the environment; with a description of where it came from.
    pub fn get(
        &self,
        flag: &str,
        cli: Option<&str>,
        names: &[&str],
    ) -> Result<Option<(String, String)>, ExitError> {
        if let Some(v) = cli {
            return Ok(Some((v.to_string(), format!("--{flag} {v}"))));
        }
        let from_defines: Vec<(String, String)> = names
            .iter()
            .filter_map(|n| {
                self.defines
                    .get(*n)
                    .map(|v| (v.clone(), format!("-D {n}={}", shown(n, v))))
            })
            .collect();
        if let Some(v) = one(&from_defines)? {
            return Ok(Some(v));
        }
        // Hadoop Streaming and Hive export a jobconf key with its
        // non-alphanumerics turned into '_'; Pig's STREAM exports the keys
        // listed in pig.streaming.environment under their own names.
        let from_env: Vec<(String, String)> = names
            .iter()
            .flat_map(|n| [(n, mangle(n)), (n, n.to_string())])
            .filter_map(|(n, var)| {
                (self.env)(&var).map(|v| (v.clone(), format!("environment {var}={}", shown(n, &v))))
            })
            .collect();
        one(&from_env)
    }
}

/// At most one distinct value among a setting's names at one layer.
fn one(found: &[(String, String)]) -> Result<Option<(String, String)>, ExitError> {
    match found {
        [] => Ok(None),
        [first, rest @ ..] => {
            if let Some(other) = rest.iter().find(|(v, _)| v != &first.0) {
                return Err(usage(format!(
                    "conflicting settings: {} and {}",
                    first.1, other.1
                )));
            }
            Ok(Some(first.clone()))
        }
    }
}

/// Parses a value and names its source in the error.
pub(crate) fn parsed<T>(
    found: Option<(String, String)>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ExitError> {
    match found {
        None => Ok(None),
        Some((v, src)) => parse(v.trim())
            .map(Some)
            .map_err(|e| usage(format!("{src}: {e}"))),
    }
}

pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// A duration: `90s`, `2m`, `1h30m`; a bare number is minutes, as on EMR.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(minutes) = s.parse::<f64>() {
        if minutes.is_finite() && minutes >= 0.0 {
            return Ok(Duration::from_secs_f64(minutes * 60.0));
        }
        return Err("a duration cannot be negative".into());
    }
    humantime::parse_duration(s).map_err(|e| format!("not a duration ({e}); use e.g. 90s, 5m or 5"))
}

/// Environment variables `kinesis-reader` sets for a child process (exec mode).
pub mod exported {
    pub const LOGICAL_NAME: &str = "KINESIS_LOGICAL_NAME";
    pub const ITERATION: &str = "KINESIS_ITERATION";
    pub const STREAM: &str = "KINESIS_STREAM";
    pub const ITERATION_START: &str = "KINESIS_ITERATION_START";
}

/// `8MiB`, `5MB`, `16777216`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 8MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "KB" => 1_000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}
