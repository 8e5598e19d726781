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
    /// What kinesis-writer reads: the iteration context, and where AWS is.
    pub const WRITER: [&str; 6] = [
        ACCESS_KEY,
        SECRET_KEY,
        LOGICAL_NAME,
        ITERATION,
        STREAM,
        REGION,
    ];
    /// What kinesis-reader reads.
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
    /// The reader's layers. Checks the `-D` pairs: well-formed, known
    /// `kinesis.*` names, no name given twice with different values. Other
    /// names (a copied jobconf) are ignored.
    pub fn new(
        defines: &[String],
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ExitError> {
        Self::checked(defines, ("kinesis-reader", &names::ALL), env)
    }

    /// The writer's layers: as [`Layers::new`], for the few settings the
    /// writer reads ([`names::WRITER`]); a reader's setting is refused.
    pub fn for_writer(
        defines: &[String],
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ExitError> {
        Self::checked(defines, ("kinesis-writer", &names::WRITER), env)
    }

    fn checked(
        defines: &[String],
        (binary, known): (&str, &[&str]),
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
            if k.starts_with("kinesis.") && !known.contains(&k) {
                let list = known.join(", ");
                return Err(usage(if names::ALL.contains(&k) {
                    format!("-D {k} is a kinesis-reader setting; {binary} reads only {list}")
                } else {
                    let hint = closest(k, known)
                        .map_or(String::new(), |c| format!(" (did you mean {c}?)"));
                    format!("-D {k}: unknown setting{hint}; {binary}'s settings are {list}")
                }));
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

    /// A setting's value (as [`Layers::get`]) parsed by `parse`, whose error
    /// names where the value came from.
    pub fn parsed<T>(
        &self,
        flag: &str,
        cli: Option<&str>,
        names: &[&str],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ExitError> {
        parsed(self.get(flag, cli, names)?, parse)
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

/// The known name nearest to a mistyped one, if one is near enough to be
/// what was meant (a few letters apart).
fn closest<'n>(name: &str, known: &[&'n str]) -> Option<&'n str> {
    known
        .iter()
        .map(|k| (distance(name, k), *k))
        .filter(|(d, k)| *d <= 3.max(k.len() / 6))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance: the fewest single-letter edits between `a` and `b`.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = here;
        }
    }
    row[b.len()]
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
    /// A map task's name: which share of the iteration its command gets.
    pub const TASK: &str = "KINESIS_TASK";
}

/// `8MiB`, `5MB`, `16777216`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = match num.parse() {
        Ok(n) if !num.is_empty() => n,
        _ => return Err(format!("{s:?} is not a size like 8MiB or 1.5GiB")),
    };
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "KB" => 1_000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use KiB, MiB, GiB)")),
    };
    let bytes = (n * mult as f64).round();
    match bytes < usize::MAX as f64 {
        true => Ok(bytes as usize),
        false => Err(format!("{s:?} is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_fractions_and_refuse_signs() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("512").unwrap(), 512);
        for bad in ["-5MiB", ".", "MiB", "1.5.2GiB"] {
            assert!(
                parse_size(bad).unwrap_err().contains("is not a size"),
                "{bad}"
            );
        }
        assert!(parse_size("3XB").unwrap_err().contains("unknown unit"));
    }

    fn reader(d: &str) -> String {
        let none = |_: &str| None;
        Layers::new(&[d.to_string()], &none)
            .err()
            .unwrap()
            .to_string()
    }

    fn writer(d: &str) -> Result<(), String> {
        let none = |_: &str| None;
        Layers::for_writer(&[d.to_string()], &none)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_mistyped_name_suggests_the_one_meant() {
        let e = reader("kinesis.checkpoint.iteraton.no=1");
        assert!(
            e.contains("(did you mean kinesis.checkpoint.iteration.no?)"),
            "{e}"
        );
        let e = reader("kinesis.records.batch=10");
        assert!(e.contains("did you mean kinesis.records.batchsize?"), "{e}");
        // Nothing near: no guess.
        let e = reader("kinesis.colour=blue");
        assert!(
            e.contains("unknown setting;") && !e.contains("did you mean"),
            "{e}"
        );
    }

    #[test]
    fn the_writer_names_only_its_own_settings_and_refuses_the_readers() {
        assert!(writer("kinesis.checkpoint.logical.name=top").is_ok());
        let e = writer("kinesis.records.batchsize=10").unwrap_err();
        assert!(e.contains("is a kinesis-reader setting"), "{e}");
        let e = writer("kinesis.checkpoint.logical.nmae=top").unwrap_err();
        assert!(
            e.contains("did you mean kinesis.checkpoint.logical.name?")
                && e.contains("kinesis-writer's settings are")
                && !e.contains("batchsize"),
            "{e}"
        );
        // A copied jobconf's other names are not ours to judge.
        assert!(writer("mapreduce.job.reduces=4").is_ok());
    }

    #[test]
    fn distance_counts_single_letter_edits() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("same", "same"), 0);
    }
}
