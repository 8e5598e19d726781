//! Settings from the command line, `-D name=value` pairs (EMR's jobconf names)
//! and Hadoop-mangled environment variables, resolved once into one validated
//! struct. Precedence: flag > `-D` > environment > default. No I/O here: the
//! environment is passed in as a lookup function.

use crate::error::ReaderError;
use crate::format::{parse_fields, DataEncoding, Field, OutputFormat};
use crate::iteration::{IterationRequest, StartSpec};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "kinesis-reader",
    version,
    about = "Print one checkpointed iteration of a Kinesis stream as tab-separated lines",
    after_help = "Every setting can also be given by its EMR name, as -D name=value or as the \
                  Hadoop-mangled environment variable (e.g. kinesis_checkpoint_iteration_no). \
                  Exit codes: 0 ok, 1 failure, 2 usage, 3 iteration owned by another run, \
                  4 data expired."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub verbosity: Verbosity,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the checkpoint table (on-demand billing) and wait until it is active.
    CreateTable,
    /// Show the iterations of a logical name.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How many of the latest iterations to show (0 = all).
        #[arg(long, default_value_t = 20)]
        last: usize,
    },
    /// Open an iteration for map tasks (its shards and starts are fixed) and print its
    /// manifest: one line per group of shards, for NLineInputFormat or `--shards-from-stdin`.
    Plan {
        /// Shards per manifest line (per map task).
        #[arg(long, default_value_t = 1)]
        shards_per_line: usize,
    },
    /// After a distributed job: mark a planned iteration succeeded (every shard must have a
    /// fixed end), so that `--iteration next` moves on to the one after it.
    Finish {
        /// Mark it succeeded even though a run recorded it as failed (say, a command that
        /// was killed), once you know its output is complete.
        #[arg(long)]
        force: bool,
    },
    /// Deregister an enhanced fan-out consumer of the stream (never done implicitly).
    DeregisterConsumer {
        /// The consumer's name.
        name: String,
    },
}

/// `-q` / `-v`: how much the binaries say on stderr.
#[derive(Args, Debug, Default, Clone, Copy)]
pub struct Verbosity {
    /// Only warnings and errors on stderr: no progress, no summary.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More on stderr: -v adds debug detail (e.g. checkpoint-table requests), -vv traces the AWS
    /// SDK's requests too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

impl Verbosity {
    /// The log filter the flags ask for (`None`: `RUST_LOG`, else the default).
    pub fn filter(&self, krate: &str) -> Option<String> {
        match (self.quiet, self.verbose) {
            (true, _) => Some("warn".into()),
            (false, 0) => None,
            (false, 1) => Some(format!("{krate}=debug,kinesis_streaming=debug,warn")),
            (false, _) => Some(format!(
                "{krate}=trace,kinesis_streaming=trace,aws=debug,info"
            )),
        }
    }
}

/// The CLIs that carry [`Verbosity`].
pub trait HasVerbosity {
    fn verbosity(&self) -> Verbosity;
}

impl HasVerbosity for Cli {
    fn verbosity(&self) -> Verbosity {
        self.verbosity
    }
}

impl HasVerbosity for WriterCli {
    fn verbosity(&self) -> Verbosity {
        self.verbosity
    }
}

/// Settings every sub-command shares.
#[derive(Args, Debug, Default)]
pub struct CommonArgs {
    /// Stream name or ARN [kinesis.stream.name].
    #[arg(long, global = true)]
    pub stream: Option<String>,
    /// AWS region [kinesis.endpoint.region].
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Named profile from the AWS config files.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Endpoint for every AWS service (AWS_ENDPOINT_URL[_KINESIS|_DYNAMODB] also work).
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// Allow a plain-HTTP endpoint on another host than this one (credentials-signed requests
    /// then cross the network unencrypted).
    #[arg(long, global = true)]
    pub allow_insecure_endpoint: bool,
    /// DynamoDB table for checkpoints [kinesis.checkpoint.metastore.table.name].
    #[arg(long, global = true)]
    pub checkpoint_table: Option<String>,
    /// The table's hash key name [kinesis.checkpoint.metastore.hash.key.name] (default HashKey).
    #[arg(long, global = true)]
    pub hash_key: Option<String>,
    /// The table's range key name [kinesis.checkpoint.metastore.range.key.name] (default RangeKey).
    #[arg(long, global = true)]
    pub range_key: Option<String>,
    /// Name under which iterations are kept [kinesis.checkpoint.logical.name].
    #[arg(long, global = true)]
    pub logical_name: Option<String>,
    /// An EMR setting, as NAME=VALUE (repeatable).
    #[arg(short = 'D', value_name = "NAME=VALUE", global = true)]
    pub define: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ReadArgs {
    /// Iteration number, or `next` [kinesis.checkpoint.iteration.no].
    #[arg(long, global = true)]
    pub iteration: Option<String>,
    /// Take over an iteration another run holds, at once [kinesis.rerun.iteration.without.wait].
    #[arg(long, global = true)]
    pub rerun_without_wait: bool,
    /// Where the first iteration starts: trim-horizon, latest, at-timestamp=RFC3339.
    #[arg(long, global = true)]
    pub start_position: Option<String>,
    /// End rule: `snapshot` (what was in the stream at the start) or `timeouts` (EMR's).
    #[arg(long, value_enum)]
    pub until: Option<Until>,
    /// Stop a shard after no new record for this long; bare numbers are minutes [kinesis.nodata.timeout].
    #[arg(long)]
    pub nodata_timeout: Option<String>,
    /// Hard cap on an iteration's reading time; bare numbers are minutes [kinesis.iteration.timeout].
    #[arg(long)]
    pub iteration_timeout: Option<String>,
    /// Records per GetRecords call, 1..10000 [kinesis.records.batchsize].
    #[arg(long)]
    pub batch_size: Option<String>,
    /// When a stored position has aged out of the stream's retention: fail (exit 4) or skip
    /// to the oldest record left (loudly, and recorded in the checkpoint table).
    #[arg(long, value_enum, default_value_t = crate::expiry::OnExpired::Fail)]
    pub on_expired: crate::expiry::OnExpired,
    /// Read at most this many MiB/s from each shard (the service allows 2 MiB/s per shard
    /// for all readers together: lower it when several logical names share a stream).
    #[arg(long, default_value_t = 2.0)]
    pub max_read_rate: f64,
    /// Least time between GetRecords calls on one shard (benchmarks against an emulator only).
    #[arg(long, hide = true, default_value = "200ms")]
    pub min_call_interval: String,
    /// Print KPL aggregated records as they are, instead of their sub-records.
    #[arg(long)]
    pub no_deaggregate: bool,
    /// Output fields, comma-separated (default partition_key,data).
    #[arg(long)]
    pub fields: Option<String>,
    /// How record data (and partition keys) are written in TSV.
    #[arg(long, value_enum, default_value_t = DataEncoding::Escape)]
    pub data_encoding: DataEncoding,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Tsv)]
    pub format: OutputFormat,
    /// How long to wait for another run's lease on the iteration before exiting with code 3.
    #[arg(long, global = true, default_value = "5m")]
    pub lease_wait: String,
    /// How long a lease lasts without renewal (a crashed run blocks its iteration this long).
    #[arg(long, global = true, default_value = "30s")]
    pub lease_duration: String,
    /// Map mode: read only the shards named by the manifest lines on stdin (from `plan`;
    /// Hadoop's `<offset><TAB><line>` form too). Stream, logical name and iteration come
    /// from the manifest.
    #[arg(long, conflicts_with = "task")]
    pub shards_from_stdin: bool,
    /// Map mode: read task I's share (of N) of a planned iteration's shards. Inside a Hadoop
    /// map task, mapreduce_task_partition / mapreduce_job_maps set it (even for one map).
    #[arg(long, value_name = "I/N")]
    pub task: Option<String>,
    /// Write Hadoop `reporter:` counter and status lines on stderr even outside a Hadoop task.
    #[arg(long)]
    pub hadoop_reporter: bool,
    /// Under Hadoop: how often the `reporter:status:` heartbeat is written; keep it well under
    /// the job's mapreduce.task.timeout (600 s by default) [kinesis.hadoop.status.interval;
    /// default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub status_interval: Option<String>,
    /// Read with enhanced fan-out (SubscribeToShard) as the stream consumer NAME, registering
    /// it if needed (it stays registered: `kinesis-reader deregister-consumer NAME` removes it).
    #[arg(long, value_name = "NAME")]
    pub efo_consumer: Option<String>,
    /// Read at most N shards at a time (default: all at once): shards are read in groups of N
    /// in shard-id order, and the output is group after group.
    #[arg(long, value_name = "N")]
    pub max_concurrent_shards: Option<usize>,
    /// Exec mode: run this command with the records on its stdin (after `--`); the iteration
    /// succeeds only if it exits 0, and its exit status is the reader's.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Map mode: a map task reads part of a planned iteration (see `manifest.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapMode {
    /// `--shards-from-stdin`: the shards named by manifest lines.
    Manifest(BTreeSet<String>),
    /// `--task i/n`, or Hadoop's task partition and map count.
    Task { index: usize, count: usize },
}

/// Hadoop's jobconf names for a task's partition and the job's map count
/// (current, then Hadoop 1).
const TASK_PARTITION: [&str; 2] = ["mapreduce.task.partition", "mapred.task.partition"];
const JOB_MAPS: [&str; 2] = ["mapreduce.job.maps", "mapred.map.tasks"];

/// Makes a manifest's stream, logical name and iteration the settings of
/// this run; one that is also set otherwise must agree with it.
pub fn apply_manifest(
    c: &mut CommonArgs,
    r: &mut ReadArgs,
    l: &Layers,
    a: &crate::manifest::Assignment,
) -> Result<(), ReaderError> {
    let agree = |given: Option<(String, String)>, want: &str, what: &str| match given {
        Some((v, src)) if v != want && crate::stream::stream_name(&v) != want => Err(usage(
            format!("{src} does not match the manifest on stdin, which is for {what} {want:?}"),
        )),
        _ => Ok(()),
    };
    agree(
        l.get("stream", c.stream.as_deref(), &[names::STREAM])?,
        &a.stream,
        "stream",
    )?;
    agree(
        l.get(
            "logical-name",
            c.logical_name.as_deref(),
            &[names::LOGICAL_NAME],
        )?,
        &a.logical_name,
        "logical name",
    )?;
    let n = a.iteration.to_string();
    match l.get("iteration", r.iteration.as_deref(), &[names::ITERATION])? {
        Some((v, _)) if v == "next" => {}
        given => agree(given, &n, "iteration")?,
    }
    c.stream.get_or_insert_with(|| a.stream.clone());
    c.logical_name.get_or_insert_with(|| a.logical_name.clone());
    r.iteration = Some(n);
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Until {
    Snapshot,
    Timeouts,
}

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
fn shown<'v>(name: &str, value: &'v str) -> &'v str {
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

fn usage(msg: String) -> ReaderError {
    ReaderError::Usage(msg)
}

impl<'a> Layers<'a> {
    /// Checks the `-D` pairs: well-formed, known `kinesis.*` names, no name given
    /// twice with different values. Other names (a copied jobconf) are ignored.
    pub fn new(
        defines: &[String],
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ReaderError> {
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
    ) -> Result<Option<(String, String)>, ReaderError> {
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
fn one(found: &[(String, String)]) -> Result<Option<(String, String)>, ReaderError> {
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
fn parsed<T>(
    found: Option<(String, String)>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ReaderError> {
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

fn parse_iteration(s: &str) -> Result<IterationRequest, String> {
    if s == "next" {
        return Ok(IterationRequest::Next);
    }
    s.parse::<u64>()
        .map(IterationRequest::Number)
        .map_err(|_| "expected a whole number ≥ 0 or `next`".into())
}

fn parse_batch(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 10000".into()),
    }
}

/// Where the AWS clients point, and as whom.
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// `kinesis.accessKey` / `kinesis.secretKey`; otherwise the SDK's standard chain.
    pub keys: Option<StaticKeys>,
    /// `--allow-insecure-endpoint`: plain HTTP to a host other than this one.
    pub allow_insecure_endpoint: bool,
}

/// Static credentials; `Debug` shows neither half.
#[derive(Clone, Default)]
pub struct StaticKeys {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticKeys(***)")
    }
}

/// The AWS settings of either binary: flags, then EMR names.
pub fn aws_from(
    region: Option<&str>,
    profile: Option<String>,
    endpoint_url: Option<String>,
    allow_insecure_endpoint: bool,
    l: &Layers,
) -> Result<AwsSettings, ReaderError> {
    let access = l.get("", None, &[names::ACCESS_KEY])?.map(|v| v.0);
    let secret = l.get("", None, &[names::SECRET_KEY])?.map(|v| v.0);
    let keys = match (access, secret) {
        (Some(access_key), Some(secret_key)) => Some(StaticKeys {
            access_key,
            secret_key,
        }),
        (None, None) => None,
        _ => {
            return Err(usage(format!(
                "{} and {} go together: give both, or neither (and let the SDK find \
                 credentials)",
                names::ACCESS_KEY,
                names::SECRET_KEY
            )))
        }
    };
    if let Some(url) = &endpoint_url {
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if host.is_none_or(str::is_empty) {
            return Err(usage(format!(
                "--endpoint-url {url:?}: expected a URL such as http://127.0.0.1:4566 or \
                 https://kinesis.us-east-1.amazonaws.com"
            )));
        }
    }
    Ok(AwsSettings {
        region: l.get("region", region, &[names::REGION])?.map(|v| v.0),
        profile,
        endpoint_url,
        keys,
        allow_insecure_endpoint,
    })
}

/// The checkpoint table and its key names.
#[derive(Clone, Debug)]
pub struct TableSettings {
    pub table: String,
    pub hash_key: String,
    pub range_key: String,
}

#[derive(Clone, Debug)]
pub struct CheckpointSettings {
    pub table: TableSettings,
    pub logical_name: String,
    pub iteration: IterationRequest,
    pub takeover: bool,
    pub lease_wait: Duration,
    pub lease_duration: Duration,
}

/// Everything a read needs, validated.
#[derive(Clone, Debug)]
pub struct ReaderConfig {
    pub stream: String,
    pub aws: AwsSettings,
    pub checkpoint: Option<CheckpointSettings>,
    pub start: StartSpec,
    pub until: Until,
    pub nodata_timeout: Option<Duration>,
    pub iteration_timeout: Option<Duration>,
    /// Under Hadoop: the period of the `reporter:status:` heartbeat.
    pub status_interval: Duration,
    /// Batch size, de-aggregation and per-shard read rate.
    pub read: crate::shard_reader::ReadSettings,
    pub on_expired: crate::expiry::OnExpired,
    /// Exec mode: the command that gets the records on its stdin.
    pub command: Vec<String>,
    pub fields: Vec<Field>,
    pub encoding: DataEncoding,
    pub format: OutputFormat,
    /// Map mode: this run reads only part of a planned iteration.
    pub map: Option<MapMode>,
    /// `--efo-consumer NAME`: read with enhanced fan-out as this consumer.
    pub efo_consumer: Option<String>,
    /// `--max-concurrent-shards N`: read N shards at a time, group after group.
    pub max_concurrent_shards: Option<usize>,
}

/// Which part of an iteration this run reads: the manifest's shards, `--task`,
/// or Hadoop's task partition when the job has more than one map task.
fn map_mode(
    r: &ReadArgs,
    l: &Layers,
    assignment: Option<&crate::manifest::Assignment>,
) -> Result<Option<MapMode>, ReaderError> {
    if let Some(a) = assignment {
        return Ok(Some(MapMode::Manifest(a.shards.clone())));
    }
    if let Some(t) = &r.task {
        let (index, count) =
            crate::manifest::parse_task(t).map_err(|e| usage(format!("--task {e}")))?;
        return Ok(Some(MapMode::Task { index, count }));
    }
    let number = |names: &[&str]| -> Result<Option<usize>, ReaderError> {
        parsed(l.get("", None, names)?, |v| {
            v.parse::<usize>()
                .map_err(|_| "expected a whole number".to_string())
        })
    };
    // Inside a Hadoop task the run is always a map task, even the only one:
    // a task attempt can be retried or speculated, and the job's reducers
    // have not run yet, so only `finish` may mark the iteration succeeded.
    match (number(&JOB_MAPS)?, number(&TASK_PARTITION)?) {
        (Some(count), Some(index)) if index < count => Ok(Some(MapMode::Task { index, count })),
        _ => Ok(None),
    }
}

/// A logical name is part of the checkpoint table's keys (`<stream>/<logical
/// name>/<iteration>`): a '/' in it could make one logical name's header
/// collide with another's shard items, so it is refused.
fn check_logical_name(name: &str) -> Result<(), ReaderError> {
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(usage(format!(
            "logical name {name:?}: use 1 to 255 characters without '/' or control characters"
        )));
    }
    Ok(())
}

/// EMR's default iteration timeout, used by `--until timeouts` when none is given.
pub const DEFAULT_ITERATION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

pub fn aws_settings(c: &CommonArgs, l: &Layers) -> Result<AwsSettings, ReaderError> {
    aws_from(
        c.region.as_deref(),
        c.profile.clone(),
        c.endpoint_url.clone(),
        c.allow_insecure_endpoint,
        l,
    )
}

pub fn stream_setting(c: &CommonArgs, l: &Layers) -> Result<String, ReaderError> {
    let (stream, src) = l
        .get("stream", c.stream.as_deref(), &[names::STREAM])?
        .ok_or_else(|| {
            usage(format!(
                "no stream given: use --stream NAME (or -D {}=NAME)",
                names::STREAM
            ))
        })?;
    // A name, or an ARN ending in stream/NAME; names are Kinesis's 1–128 of A-Z a-z 0-9 _ - .
    let name = crate::stream::stream_name(&stream);
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !ok {
        return Err(usage(format!(
            "{src}: a stream name is 1 to 128 characters of A-Z, a-z, 0-9, '_', '-' and '.' \
             (or give the stream's ARN)"
        )));
    }
    Ok(stream)
}

/// The checkpoint table, if checkpointing is on.
pub fn table_settings(c: &CommonArgs, l: &Layers) -> Result<Option<TableSettings>, ReaderError> {
    let enabled = parsed(l.get("checkpoint", None, &[names::ENABLED])?, parse_bool)?;
    let table = l.get(
        "checkpoint-table",
        c.checkpoint_table.as_deref(),
        &[names::TABLE],
    )?;
    let table = match (enabled, table) {
        (Some(false), Some((_, src))) if c.checkpoint_table.is_some() => {
            return Err(usage(format!(
                "{src} conflicts with {}=false: drop one of them",
                names::ENABLED
            )))
        }
        (Some(false), _) => return Ok(None),
        (Some(true), None) => {
            return Err(usage(format!(
                "{}=true but no checkpoint table: use --checkpoint-table T (or -D {}=T)",
                names::ENABLED,
                names::TABLE
            )))
        }
        (_, None) => return Ok(None),
        (_, Some((t, _))) => t,
    };
    crate::sink::check_table_name(&table)?;
    let hash_key = l
        .get("hash-key", c.hash_key.as_deref(), &[names::HASH_KEY])?
        .map_or_else(|| "HashKey".to_string(), |v| v.0);
    let range_key = l
        .get(
            "range-key",
            c.range_key.as_deref(),
            &[names::RANGE_KEY, names::RANGE_KEY_ALIAS],
        )?
        .map_or_else(|| "RangeKey".to_string(), |v| v.0);
    Ok(Some(TableSettings {
        table,
        hash_key,
        range_key,
    }))
}

pub fn logical_name(c: &CommonArgs, l: &Layers) -> Result<Option<String>, ReaderError> {
    Ok(l.get(
        "logical-name",
        c.logical_name.as_deref(),
        &[names::LOGICAL_NAME],
    )?
    .map(|v| v.0))
}

impl ReaderConfig {
    /// `assignment`: the manifest read from stdin with `--shards-from-stdin`.
    pub fn resolve(
        c: &CommonArgs,
        r: &ReadArgs,
        l: &Layers,
        assignment: Option<&crate::manifest::Assignment>,
    ) -> Result<Self, ReaderError> {
        let stream = stream_setting(c, l)?;
        let aws = aws_settings(c, l)?;
        let table = table_settings(c, l)?;
        let logical = logical_name(c, l)?;
        let iteration = parsed(
            l.get("iteration", r.iteration.as_deref(), &[names::ITERATION])?,
            parse_iteration,
        )?;
        let rerun = if r.rerun_without_wait {
            Some(true)
        } else {
            parsed(
                l.get("rerun-without-wait", None, &[names::RERUN])?,
                parse_bool,
            )?
        };
        let lease_wait =
            parse_duration(&r.lease_wait).map_err(|e| usage(format!("--lease-wait: {e}")))?;
        let lease_duration = parse_duration(&r.lease_duration)
            .map_err(|e| usage(format!("--lease-duration: {e}")))?;
        // Renewed every third of it: under 2 s a renewal has under 0.7 s to
        // land; over an hour a crashed run blocks its iteration for too long.
        if !(Duration::from_secs(2)..=Duration::from_secs(3600)).contains(&lease_duration) {
            return Err(usage(format!(
                "--lease-duration {}: must be 2s to 1h",
                r.lease_duration
            )));
        }
        let checkpoint = match table {
            Some(table) => {
                let logical_name = logical.ok_or_else(|| {
                    usage(format!(
                        "checkpointing needs a logical name: use --logical-name NAME (or -D {}=NAME)",
                        names::LOGICAL_NAME
                    ))
                })?;
                check_logical_name(&logical_name)?;
                Some(CheckpointSettings {
                    table,
                    logical_name,
                    iteration: iteration.unwrap_or(IterationRequest::Next),
                    takeover: rerun.unwrap_or(false),
                    lease_wait,
                    lease_duration,
                })
            }
            None => {
                if logical.is_some() || iteration.is_some() {
                    return Err(usage(format!(
                        "a logical name or iteration needs a checkpoint table: add \
                         --checkpoint-table T (or -D {}=T)",
                        names::TABLE
                    )));
                }
                None
            }
        };
        let start = match &r.start_position {
            Some(s) => StartSpec::parse(s).map_err(|e| usage(format!("--start-position: {e}")))?,
            None => StartSpec::TrimHorizon,
        };
        let nodata_timeout = parsed(
            l.get(
                "nodata-timeout",
                r.nodata_timeout.as_deref(),
                &[names::NODATA_TIMEOUT],
            )?,
            parse_duration,
        )?;
        let iteration_timeout = parsed(
            l.get(
                "iteration-timeout",
                r.iteration_timeout.as_deref(),
                &[names::ITERATION_TIMEOUT],
            )?,
            parse_duration,
        )?;
        let status_interval = match parsed(
            l.get(
                "status-interval",
                r.status_interval.as_deref(),
                &[names::STATUS_INTERVAL],
            )?,
            parse_duration,
        )? {
            None => Duration::from_secs(30),
            Some(d) if d >= Duration::from_secs(1) => d,
            Some(d) => {
                return Err(usage(format!(
                    "--status-interval {}: must be at least 1s",
                    humantime::format_duration(d)
                )))
            }
        };
        let until = r.until.unwrap_or(Until::Snapshot);
        let iteration_timeout = match until {
            Until::Timeouts => Some(iteration_timeout.unwrap_or_else(|| {
                log::info!(
                    "--until timeouts without --iteration-timeout: this run reads for {} \
                     (EMR's default)",
                    humantime::format_duration(DEFAULT_ITERATION_TIMEOUT)
                );
                DEFAULT_ITERATION_TIMEOUT
            })),
            Until::Snapshot => iteration_timeout,
        };
        let batch_size = parsed(
            l.get("batch-size", r.batch_size.as_deref(), &[names::BATCH_SIZE])?,
            parse_batch,
        )?
        .unwrap_or(10_000);
        let max_read_rate = match r.max_read_rate {
            x if x.is_finite() && x > 0.0 => x,
            x => {
                return Err(usage(format!(
                    "--max-read-rate {x}: must be a positive number of MiB/s"
                )))
            }
        };
        let map = map_mode(r, l, assignment)?;
        if map.is_some() && checkpoint.is_none() {
            return Err(usage(
                "map mode (--shards-from-stdin, --task, or Hadoop's task partition) reads a \
                 planned iteration: it needs a checkpoint table"
                    .into(),
            ));
        }
        let fields = match &r.fields {
            Some(f) => parse_fields(f).map_err(|e| usage(format!("--fields: {e}")))?,
            None => vec![Field::PartitionKey, Field::Data],
        };
        Ok(ReaderConfig {
            stream,
            aws,
            checkpoint,
            start,
            until,
            nodata_timeout,
            iteration_timeout,
            status_interval,
            read: crate::shard_reader::ReadSettings {
                batch_size,
                deaggregate: !r.no_deaggregate,
                bytes_per_sec: max_read_rate * 1024.0 * 1024.0,
                min_call_interval: humantime::parse_duration(&r.min_call_interval)
                    .map_err(|e| usage(format!("--min-call-interval: {e}")))?,
                efo: None,
                meter: None,
            },
            efo_consumer: r.efo_consumer.clone(),
            max_concurrent_shards: match r.max_concurrent_shards {
                Some(0) => return Err(usage("--max-concurrent-shards must be at least 1".into())),
                n => n,
            },
            on_expired: r.on_expired,
            command: r.command.clone(),
            fields,
            encoding: r.data_encoding,
            format: r.format,
            map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<ReaderConfig, ReaderError> {
        let mut argv = vec!["kinesis-reader"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.get(k).cloned();
        let layers = Layers::new(&cli.common.define, &lookup)?;
        ReaderConfig::resolve(&cli.common, &cli.read, &layers, None)
    }

    #[test]
    fn names_that_would_break_keys_or_the_service_are_refused_up_front() {
        let err = |args: &[&str]| resolve(args, &[]).unwrap_err().to_string();
        let cp = ["--checkpoint-table", "cp-table", "--logical-name"];
        let e = err(&[&["--stream", "s"][..], &cp, &["a/0000000001"]].concat());
        assert!(e.contains("without '/'"), "{e}");
        let e = err(&["--stream", "no spaces"]);
        assert!(
            e.contains("--stream no spaces") && e.contains("1 to 128"),
            "{e}"
        );
        let e = err(&[
            "--stream",
            "s",
            "--checkpoint-table",
            "ab",
            "--logical-name",
            "l",
        ]);
        assert!(e.contains("3 to 255"), "{e}");
        // An ARN is fine; its name part is what is checked.
        assert!(resolve(
            &[
                "--stream",
                "arn:aws:kinesis:us-east-1:123456789012:stream/ok-1"
            ],
            &[]
        )
        .is_ok());
    }

    #[test]
    fn flags_defines_and_env_give_the_same_config() {
        let by_flags = resolve(
            &[
                "--stream",
                "s",
                "--checkpoint-table",
                "cpt",
                "--logical-name",
                "L",
                "--iteration",
                "3",
                "--batch-size",
                "500",
                "--nodata-timeout",
                "2",
                "--range-key",
                "R",
            ],
            &[],
        )
        .unwrap();
        let by_defines = resolve(
            &[
                "-D",
                "kinesis.stream.name=s",
                "-Dkinesis.checkpoint.metastore.table.name=cpt",
                "-D",
                "kinesis.checkpoint.logical.name=L",
                "-D",
                "kinesis.checkpoint.iteration.no=3",
                "-D",
                "kinesis.records.batchsize=500",
                "-D",
                "kinesis.nodata.timeout=2",
                "-D",
                "kinesis.checkpoint.metastore.hash.range.name=R",
            ],
            &[],
        )
        .unwrap();
        let by_env = resolve(
            &[],
            &[
                ("kinesis_stream_name", "s"),
                ("kinesis_checkpoint_metastore_table_name", "cpt"),
                ("kinesis_checkpoint_logical_name", "L"),
                ("kinesis_checkpoint_iteration_no", "3"),
                ("kinesis_records_batchsize", "500"),
                ("kinesis_nodata_timeout", "2"),
                ("kinesis_checkpoint_metastore_range_key_name", "R"),
            ],
        )
        .unwrap();
        for c in [&by_flags, &by_defines, &by_env] {
            assert_eq!(c.stream, "s");
            let cp = c.checkpoint.as_ref().unwrap();
            assert_eq!(cp.table.table, "cpt");
            assert_eq!(cp.table.range_key, "R");
            assert_eq!(cp.table.hash_key, "HashKey");
            assert_eq!(cp.logical_name, "L");
            assert_eq!(cp.iteration, IterationRequest::Number(3));
            assert_eq!(c.read.batch_size, 500);
            assert_eq!(c.nodata_timeout, Some(Duration::from_secs(120)));
        }
    }

    #[test]
    fn precedence_is_flag_then_define_then_env() {
        let env = [("kinesis_records_batchsize", "7")];
        assert_eq!(
            resolve(&["--stream", "s"], &env).unwrap().read.batch_size,
            7
        );
        assert_eq!(
            resolve(
                &["--stream", "s", "-D", "kinesis.records.batchsize=8"],
                &env
            )
            .unwrap()
            .read
            .batch_size,
            8
        );
        assert_eq!(
            resolve(
                &[
                    "--stream",
                    "s",
                    "-D",
                    "kinesis.records.batchsize=8",
                    "--batch-size",
                    "9"
                ],
                &env
            )
            .unwrap()
            .read
            .batch_size,
            9
        );
        assert_eq!(
            resolve(&["--stream", "s"], &[]).unwrap().read.batch_size,
            10_000
        );
    }

    #[test]
    fn a_lease_duration_outside_its_range_is_refused_with_the_range() {
        let with = |d: &str| {
            resolve(
                &[
                    "--stream",
                    "s",
                    "--checkpoint-table",
                    "cp1",
                    "--logical-name",
                    "l",
                    "--lease-duration",
                    d,
                ],
                &[],
            )
        };
        for bad in ["1s", "0", "2h"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("must be 2s to 1h"), "{bad}: {e}");
        }
        assert!(with("2s").is_ok() && with("30s").is_ok());
    }

    #[test]
    fn pigs_unmangled_environment_names_are_read_too() {
        // Pig's STREAM exports pig.streaming.environment keys as they are.
        let env = [("kinesis.records.batchsize", "6")];
        assert_eq!(
            resolve(&["--stream", "s"], &env).unwrap().read.batch_size,
            6
        );
        let both = [
            ("kinesis.records.batchsize", "6"),
            ("kinesis_records_batchsize", "5"),
        ];
        let e = resolve(&["--stream", "s"], &both).unwrap_err().to_string();
        assert!(e.contains("conflicting settings"), "{e}");
    }

    #[test]
    fn bad_values_name_the_setting_and_its_source() {
        let e = resolve(&["--stream", "s", "-D", "kinesis.records.batchsize=0"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("-D kinesis.records.batchsize=0"),
            "{e}"
        );
        let e = resolve(&["--stream", "s"], &[("kinesis_nodata_timeout", "soon")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("environment kinesis_nodata_timeout=soon"),
            "{e}"
        );
        let e = resolve(
            &[
                "--stream",
                "s",
                "-D",
                "kinesis.checkpoint.metastore.range.key.name=A",
                "-D",
                "kinesis.checkpoint.metastore.hash.range.name=B",
                "--checkpoint-table",
                "cpt",
                "--logical-name",
                "l",
            ],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("conflicting"), "{e}");
        let e = resolve(
            &["--stream", "s", "-D", "kinesis.checkpoint.iteraton.no=1"],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown setting"), "{e}");
        let e = resolve(&["--stream", "s", "--checkpoint-table", "cpt"], &[]).unwrap_err();
        assert!(e.to_string().contains("logical name"), "{e}");
        let e = resolve(
            &[
                "--stream",
                "s",
                "--checkpoint-table",
                "cpt",
                "--logical-name",
                "l",
                "--iteration=-1",
            ],
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("--iteration -1") && e.to_string().contains("next"),
            "{e}"
        );
        let e = resolve(&["--checkpoint-table", "cpt", "--logical-name", "l"], &[]).unwrap_err();
        assert!(e.to_string().contains("--stream"), "{e}");
    }

    #[test]
    fn checkpoint_enabled_switch() {
        let c = resolve(
            &["--stream", "s"],
            &[
                ("kinesis_checkpoint_enabled", "false"),
                ("kinesis_checkpoint_metastore_table_name", "cpt"),
            ],
        )
        .unwrap();
        assert!(c.checkpoint.is_none());
        let e = resolve(
            &["--stream", "s", "-D", "kinesis.checkpoint.enabled=true"],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("no checkpoint table"), "{e}");
        let e = resolve(
            &[
                "--stream",
                "s",
                "--checkpoint-table",
                "cpt",
                "-D",
                "kinesis.checkpoint.enabled=false",
            ],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("conflicts"), "{e}");
    }

    #[test]
    fn durations_bare_numbers_are_minutes() {
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_secs(30));
        assert!(parse_duration("-1").is_err());
    }
}

/// `kinesis-writer`'s command line.
#[derive(Parser, Debug)]
#[command(
    name = "kinesis-writer",
    version,
    about = "Load tab-separated lines from stdin into S3 or DynamoDB, idempotently per iteration",
    after_help = "The iteration context also comes from EMR names (-D kinesis.checkpoint.logical.name=L, \
                  -D kinesis.checkpoint.iteration.no=N, or their Hadoop-mangled environment variables) \
                  and from KINESIS_LOGICAL_NAME / KINESIS_ITERATION / KINESIS_STREAM / \
                  KINESIS_ITERATION_START. The part number comes from --partition or Hadoop's \
                  mapreduce_task_partition. Exit codes: 0 ok, 1 failure, 2 usage, 130 interrupted."
)]
pub struct WriterCli {
    #[command(flatten)]
    pub verbosity: Verbosity,
    /// s3://BUCKET/PREFIX/ (object named from the iteration), s3://BUCKET/KEY, or dynamodb://TABLE.
    pub target: String,
    /// Logical name of the iteration [kinesis.checkpoint.logical.name].
    #[arg(long)]
    pub logical_name: Option<String>,
    /// Iteration number [kinesis.checkpoint.iteration.no].
    #[arg(long)]
    pub iteration: Option<String>,
    /// Stream name, for {stream} in key templates [kinesis.stream.name].
    #[arg(long)]
    pub stream: Option<String>,
    /// This writer's part number (default: $mapreduce_task_partition, else 0).
    #[arg(long)]
    pub partition: Option<u32>,
    /// When the iteration opened (RFC 3339), for {date} and {hour}.
    #[arg(long)]
    pub iteration_start: Option<String>,
    /// AWS region [kinesis.endpoint.region].
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub profile: Option<String>,
    /// Endpoint for every AWS service (AWS_ENDPOINT_URL[_S3|_DYNAMODB] also work).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Allow a plain-HTTP endpoint on another host than this one.
    #[arg(long)]
    pub allow_insecure_endpoint: bool,
    /// An EMR setting, as NAME=VALUE (repeatable).
    #[arg(short = 'D', value_name = "NAME=VALUE")]
    pub define: Vec<String>,
    /// What to do with a bad line: fail, skip, or dead-letter=PATH (written verbatim).
    #[arg(long, default_value = "fail")]
    pub on_bad_line: String,

    /// S3: object name under a prefix target; placeholders {logical_name} {iteration}
    /// {partition} {stream} {date} {hour} [default: iteration={iteration}/part-{partition}].
    #[arg(long)]
    pub key_template: Option<String>,
    /// S3: part size (at least 5MiB; doubles after every 1,000 parts) [default: 8MiB].
    #[arg(long)]
    pub part_size: Option<String>,
    /// S3: parts uploaded at once, 1 to 64 [default: 4].
    #[arg(long)]
    pub parts_in_flight: Option<usize>,
    /// S3: compress the object (adds .gz / .zst to a generated name; an exact key must end
    /// with it) [default: none].
    #[arg(long, value_enum)]
    pub compress: Option<crate::sink::s3::Compression>,
    /// S3: write an empty _SUCCESS object beside the output when done, as Hadoop does.
    #[arg(long)]
    pub success_marker: bool,
    /// S3: write no object at all for empty input (default: an empty object).
    #[arg(long)]
    pub skip_empty: bool,

    /// DynamoDB: NAME:TYPE per field (S N B BOOL NULL SS NS JSON); the first one or two are the key.
    #[arg(long)]
    pub columns: Option<String>,
    /// DynamoDB: put overwrites items; add adds numeric columns once per iteration
    /// [default: put].
    #[arg(long, value_enum)]
    pub mode: Option<crate::sink::dynamodb::Mode>,
    /// DynamoDB: BatchWriteItem calls in flight, 1 to 64 [default: 4].
    #[arg(long)]
    pub batches_in_flight: Option<usize>,
    /// DynamoDB: at most this many items per second.
    #[arg(long)]
    pub write_rate: Option<f64>,
    /// DynamoDB: at most this percent of the table's provisioned write capacity.
    #[arg(long)]
    pub write_capacity_percent: Option<f64>,
    /// How fields are written: escape (\t \n \r \\ as kinesis-reader writes them) or raw.
    #[arg(long, value_enum, default_value_t = FieldEncoding::Escape)]
    pub field_encoding: FieldEncoding,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FieldEncoding {
    Escape,
    Raw,
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

/// The iteration context from flags, EMR names, and the reader's exports.
pub fn writer_context(
    c: &WriterCli,
    l: &Layers,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::sink::IterationContext, ReaderError> {
    let or_export = |v: Option<(String, String)>, var: &str| {
        v.or_else(|| env(var).map(|x| (x.clone(), format!("environment {var}={x}"))))
    };
    let logical_name = or_export(
        l.get(
            "logical-name",
            c.logical_name.as_deref(),
            &[names::LOGICAL_NAME],
        )?,
        exported::LOGICAL_NAME,
    )
    .map(|v| v.0);
    // The same names as the reader's, so that one iteration has one name.
    if let Some(name) = &logical_name {
        check_logical_name(name)?;
    }
    let iteration = parsed(
        or_export(
            l.get("iteration", c.iteration.as_deref(), &[names::ITERATION])?,
            exported::ITERATION,
        ),
        |s| {
            s.parse::<u64>()
                .map_err(|_| "expected a whole number ≥ 0".to_string())
        },
    )?;
    let stream = or_export(
        l.get("stream", c.stream.as_deref(), &[names::STREAM])?,
        exported::STREAM,
    )
    .map(|v| crate::stream::stream_name(&v.0).to_string());
    let partition = match c.partition {
        Some(p) => p,
        None => parsed(
            ["mapreduce_task_partition", "mapred_task_partition"]
                .iter()
                .find_map(|v| env(v).map(|x| (x.clone(), format!("environment {v}={x}")))),
            |s| {
                s.parse::<u32>()
                    .map_err(|_| "expected a whole number".to_string())
            },
        )?
        .unwrap_or(0),
    };
    let start = c
        .iteration_start
        .clone()
        .map(|v| (v.clone(), format!("--iteration-start {v}")))
        .or_else(|| {
            env(exported::ITERATION_START).map(|x| {
                (
                    x.clone(),
                    format!("environment {}={x}", exported::ITERATION_START),
                )
            })
        });
    let opened_ms = parsed(start, |s| {
        humantime::parse_rfc3339_weak(s)
            .map_err(|e| format!("not an RFC 3339 time ({e})"))
            .map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0)
            })
    })?;
    Ok(crate::sink::IterationContext {
        logical_name,
        iteration,
        stream,
        partition,
        opened_ms,
    })
}
