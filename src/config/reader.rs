//! The reader's settings, resolved once from its command line and the layers
//! under it into one validated [`ReaderConfig`] (or the few settings a
//! sub-command needs). No I/O here: the environment comes in as a lookup.

use super::aws::{aws_settings, AwsSettings};
use super::checks::{check_consumer_name, check_logical_name, check_stream_name, check_table_name};
use super::layers::{mangle, names, parse_bool, parse_duration, usage, Layers};
use crate::cli::reader::NOT_FOR;
use crate::cli::{Command, CommonArgs, ReadArgs, ReaderCli};
use crate::error::ExitError;
use crate::format::{parse_fields, DataEncoding, Field, OutputFormat};
use crate::iteration::IterationRequest;
use crate::lineage::StartSpec;
use crate::shard::Until;
use std::collections::BTreeSet;
use std::time::Duration;

/// Map mode: a map task reads part of a planned iteration (see `manifest.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapMode {
    /// `--shards-from-stdin`: the shards named by manifest lines, and what
    /// the plan saw of the stream (so that the task need not ask).
    Manifest {
        shards: BTreeSet<String>,
        facts: Option<crate::manifest::StreamFacts>,
    },
    /// `--task i/n`, or Hadoop's task partition and map count.
    Task { index: usize, count: usize },
}

/// Hadoop's jobconf names for a task's partition and the job's map count
/// (current, then Hadoop 1).
const TASK_PARTITION: [&str; 2] = ["mapreduce.task.partition", "mapred.task.partition"];
const JOB_MAPS: [&str; 2] = ["mapreduce.job.maps", "mapred.map.tasks"];
/// The task attempt's id: Hadoop sets it (or its Hadoop 1 name) for every task.
const TASK_ATTEMPT: [&str; 2] = ["mapreduce.task.attempt.id", "mapred.task.id"];

/// The arguments with a manifest's stream, logical name and iteration as the
/// settings of this run; one that is also set otherwise must agree with it.
fn with_manifest(
    c: &CommonArgs,
    r: &ReadArgs,
    l: &Layers,
    a: &crate::manifest::Assignment,
) -> Result<(CommonArgs, ReadArgs), ExitError> {
    let agree = |given: Option<(String, String)>, want: &str, what: &str| match given {
        Some((v, src)) if v != want && crate::ports::stream::stream_name(&v) != want => Err(usage(
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
    let (mut c, mut r) = (c.clone(), r.clone());
    c.stream.get_or_insert_with(|| a.stream.clone());
    c.logical_name.get_or_insert_with(|| a.logical_name.clone());
    r.iteration = Some(n);
    Ok((c, r))
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
    /// Where the stream was given, as messages name it (`--stream s`).
    pub stream_from: String,
    pub aws: AwsSettings,
    pub checkpoint: Option<CheckpointSettings>,
    pub start: StartSpec,
    pub until: Until,
    pub nodata_timeout: Option<Duration>,
    pub iteration_timeout: Option<Duration>,
    /// Under Hadoop: the period of the `reporter:status:` heartbeat.
    pub status_interval: Duration,
    /// Batch size, de-aggregation and per-shard read rate.
    pub read: crate::shard::ReadSettings,
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

/// What a command line's settings are for: a run that reads (perhaps a map
/// task's share), or `plan` / `finish`, which drive a job.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Reader,
    Driver,
}

/// Which part of an iteration this run reads: the manifest's shards, `--task`,
/// or Hadoop's task partition when the job has more than one map task.
fn map_mode(
    r: &ReadArgs,
    l: &Layers,
    assignment: Option<&crate::manifest::Assignment>,
) -> Result<Option<MapMode>, ExitError> {
    if let Some(a) = assignment {
        return Ok(Some(MapMode::Manifest {
            shards: a.shards.clone(),
            facts: a.facts.clone(),
        }));
    }
    if let Some(t) = &r.task {
        let (index, count) =
            crate::manifest::parse_task(t).map_err(|e| usage(format!("--task {e}")))?;
        return Ok(Some(MapMode::Task { index, count }));
    }
    let number = |names: &[&str]| -> Result<Option<usize>, ExitError> {
        l.parsed("", None, names, |v| {
            v.parse::<usize>()
                .map_err(|_| "expected a whole number".to_string())
        })
    };
    // Inside a Hadoop task the run is always a map task, even the only one:
    // a task attempt can be retried or speculated, and the job's reducers
    // have not run yet, so only `finish` may mark the iteration succeeded.
    // Any one of the task's variables makes it a task: with the others
    // missing or wrong it must stop, not fall back to reading (and
    // committing) the whole iteration.
    let attempt = l.get("", None, &TASK_ATTEMPT)?;
    let (count, index) = (number(&JOB_MAPS)?, number(&TASK_PARTITION)?);
    match (count, index) {
        (Some(count), Some(index)) if index < count => Ok(Some(MapMode::Task { index, count })),
        (None, None) if attempt.is_none() => Ok(None),
        _ => {
            let seen = |v: Option<usize>, name: &str| match v {
                Some(v) => format!("{}={v}", mangle(name)),
                None => format!("no {}", mangle(name)),
            };
            let task = attempt.map_or(String::new(), |(_, src)| format!(" ({src})"));
            Err(usage(format!(
                "this is a Hadoop task{task} without a valid share of the iteration ({}, {}): \
                 a task reads only its share — give it a manifest line from `kinesis-reader \
                 plan` (--shards-from-stdin) or --task I/N",
                seen(index, TASK_PARTITION[0]),
                seen(count, JOB_MAPS[0]),
            )))
        }
    }
}

/// EMR's default iteration timeout, used by `--until timeouts` when none is given.
pub const DEFAULT_ITERATION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The stream, and where it was given (`--stream s`, `-D …`, `environment …`),
/// for a message that says what to check.
pub fn stream_setting(c: &CommonArgs, l: &Layers) -> Result<(String, String), ExitError> {
    let (stream, src) = l
        .get("stream", c.stream.as_deref(), &[names::STREAM])?
        .ok_or_else(|| {
            usage(format!(
                "no stream given: use --stream NAME (or -D {}=NAME)",
                names::STREAM
            ))
        })?;
    check_stream_name(&stream, &src)?;
    Ok((stream, src))
}

/// The checkpoint table, if checkpointing is on.
pub fn table_settings(c: &CommonArgs, l: &Layers) -> Result<Option<TableSettings>, ExitError> {
    let enabled = l.parsed("checkpoint", None, &[names::ENABLED], parse_bool)?;
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
    check_table_name(&table)?;
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

pub fn logical_name(c: &CommonArgs, l: &Layers) -> Result<Option<String>, ExitError> {
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
    ) -> Result<Self, ExitError> {
        Self::resolve_as(c, r, l, assignment, Role::Reader)
    }

    /// The settings of `plan` or `finish`: they drive a job, never read a
    /// task's share, so Hadoop's task variables (a driver started inside a
    /// launcher task, as Oozie's shell action does) say nothing to them.
    fn resolve_driver(c: &CommonArgs, r: &ReadArgs, l: &Layers) -> Result<Self, ExitError> {
        Self::resolve_as(c, r, l, None, Role::Driver)
    }

    fn resolve_as(
        c: &CommonArgs,
        r: &ReadArgs,
        l: &Layers,
        assignment: Option<&crate::manifest::Assignment>,
        role: Role,
    ) -> Result<Self, ExitError> {
        let manifest_args = assignment.map(|a| with_manifest(c, r, l, a)).transpose()?;
        let (c, r) = match &manifest_args {
            Some((c, r)) => (c, r),
            None => (c, r),
        };
        let (stream, stream_from) = stream_setting(c, l)?;
        let aws = aws_settings(c, l)?;
        let table = table_settings(c, l)?;
        let logical = logical_name(c, l)?;
        let iteration = l.parsed(
            "iteration",
            r.iteration.as_deref(),
            &[names::ITERATION],
            parse_iteration,
        )?;
        let rerun = if r.rerun_without_wait {
            Some(true)
        } else {
            l.parsed("rerun-without-wait", None, &[names::RERUN], parse_bool)?
        };
        let (wait, duration) = (
            r.lease_wait.as_deref().unwrap_or("5m"),
            r.lease_duration.as_deref().unwrap_or("30s"),
        );
        let lease_wait =
            parse_duration(wait).map_err(|e| usage(format!("--lease-wait {wait}: {e}")))?;
        let lease_duration = parse_duration(duration)
            .map_err(|e| usage(format!("--lease-duration {duration}: {e}")))?;
        // Renewed every third of it: under 2 s a renewal has under 0.7 s to
        // land; over an hour a crashed run blocks its iteration for too long.
        if !(Duration::from_secs(2)..=Duration::from_secs(3600)).contains(&lease_duration) {
            return Err(usage(format!(
                "--lease-duration {duration}: must be 2s to 1h"
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
                let leases = [
                    (rerun == Some(true), "--rerun-without-wait"),
                    (r.lease_wait.is_some(), "--lease-wait"),
                    (r.lease_duration.is_some(), "--lease-duration"),
                ];
                if let Some((_, flag)) = leases.iter().find(|(given, _)| *given) {
                    return Err(usage(format!(
                        "{flag} is about the lease on an iteration, and without a checkpoint \
                         table nothing is leased: add --checkpoint-table T, or leave it out"
                    )));
                }
                None
            }
        };
        let start = match &r.start_position {
            Some(s) => StartSpec::parse(s).map_err(|e| usage(format!("--start-position: {e}")))?,
            None => StartSpec::TrimHorizon,
        };
        let nodata_timeout = l.parsed(
            "nodata-timeout",
            r.nodata_timeout.as_deref(),
            &[names::NODATA_TIMEOUT],
            parse_duration,
        )?;
        let iteration_timeout = l.parsed(
            "iteration-timeout",
            r.iteration_timeout.as_deref(),
            &[names::ITERATION_TIMEOUT],
            parse_duration,
        )?;
        let status_interval = match l.parsed(
            "status-interval",
            r.status_interval.as_deref(),
            &[names::STATUS_INTERVAL],
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
        let batch_size = l
            .parsed(
                "batch-size",
                r.batch_size.as_deref(),
                &[names::BATCH_SIZE],
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
        let max_memory = match r.max_memory.as_deref() {
            None => crate::pages::DEFAULT_MAX_MEMORY,
            Some(v) => match super::layers::parse_size(v) {
                Ok(n) if n >= 64 << 20 => n,
                Ok(_) => return Err(usage(format!("--max-memory {v}: must be at least 64MiB"))),
                Err(e) => return Err(usage(format!("--max-memory {v}: {e}"))),
            },
        };
        let map = match role {
            Role::Reader => map_mode(r, l, assignment)?,
            Role::Driver => None,
        };
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
            stream_from,
            aws,
            checkpoint,
            start,
            until,
            nodata_timeout,
            iteration_timeout,
            status_interval,
            read: crate::shard::ReadSettings {
                batch_size,
                max_memory,
                page_bytes: crate::shard::MAX_PAGE_BYTES,
                record_sizes: Default::default(),
                deaggregate: !r.no_deaggregate,
                bytes_per_sec: max_read_rate * 1024.0 * 1024.0,
                min_call_interval: humantime::parse_duration(&r.min_call_interval)
                    .map_err(|e| usage(format!("--min-call-interval: {e}")))?,
                efo: None,
                meter: None,
            },
            efo_consumer: match &r.efo_consumer {
                Some(c) => {
                    check_consumer_name(c)?;
                    Some(c.clone())
                }
                None => None,
            },
            max_concurrent_shards: match r.max_concurrent_shards {
                Some(0) => return Err(usage("--max-concurrent-shards must be at least 1".into())),
                n => n,
            },
            on_expired: r.on_expired,
            command: r.command.clone(),
            fields,
            encoding: match (r.data_encoding, r.format) {
                (None, _) => DataEncoding::Escape,
                (Some(e), OutputFormat::Tsv) => e,
                (Some(_), f) => {
                    return Err(usage(format!(
                        "--data-encoding applies to --format tsv; {} writes data its own way \
                         ({})",
                        match f {
                            OutputFormat::Jsonl => "jsonl",
                            _ => "typedbytes",
                        },
                        match f {
                            OutputFormat::Jsonl =>
                                "as a JSON string, or base64 with a \
                                                    data_encoding key when it is not UTF-8",
                            _ => "as the bytes they are",
                        }
                    )))
                }
            },
            format: r.format,
            map,
        })
    }
}

/// A flag that a sub-command would ignore is a mistake, not a no-op.
fn refuse_what_does_not_apply(cli: &ReaderCli) -> Result<(), ExitError> {
    let (c, r) = (&cli.common, &cli.read);
    let (what, why) = match &cli.command {
        Some(Command::CreateTable) => (
            "create-table",
            "it makes the checkpoint table, which all logical names and iterations share",
        ),
        Some(Command::Status { .. }) => (
            "status",
            "it shows the latest iterations of the logical name (--last N says how many)",
        ),
        Some(Command::Finish { .. }) => (
            "finish",
            "it marks a planned iteration succeeded once every shard has a fixed end, reading \
             nothing and taking nothing over (--lease-wait still says how long it waits for a \
             running task)",
        ),
        Some(Command::DeregisterConsumer { .. }) => (
            "deregister-consumer",
            "it removes the stream's consumer, whatever reads with it",
        ),
        _ => return Ok(()),
    };
    let given = |id: &str| match id {
        "stream" => c.stream.is_some(),
        "checkpoint_table" => c.checkpoint_table.is_some(),
        "hash_key" => c.hash_key.is_some(),
        "range_key" => c.range_key.is_some(),
        "logical_name" => c.logical_name.is_some(),
        "iteration" => r.iteration.is_some(),
        "rerun_without_wait" => r.rerun_without_wait,
        "start_position" => r.start_position.is_some(),
        "lease_wait" => r.lease_wait.is_some(),
        "lease_duration" => r.lease_duration.is_some(),
        "efo_consumer" => r.efo_consumer.is_some(),
        other => unreachable!("NOT_FOR names {other}, which is not a global flag"),
    };
    let (_, ids) = NOT_FOR
        .iter()
        .find(|(name, _)| *name == what)
        .expect("every subcommand refused here has a NOT_FOR entry");
    let flags: Vec<String> = ids
        .iter()
        .filter(|id| given(id))
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect();
    match flags.as_slice() {
        [] => Ok(()),
        flags => Err(usage(format!(
            "{} {} not apply to {what}: {why}",
            flags.join(", "),
            if flags.len() == 1 { "does" } else { "do" }
        ))),
    }
}

/// What the command line asks `kinesis-reader` to do, with the settings that
/// needs, resolved.
#[derive(Clone, Debug)]
pub enum ReaderCommand {
    /// Read an iteration (or the stream without checkpoints).
    Read(ReaderConfig),
    CreateTable {
        aws: AwsSettings,
        table: TableSettings,
    },
    Status {
        aws: AwsSettings,
        table: TableSettings,
        stream: String,
        logical_name: String,
        last: usize,
        json: bool,
    },
    Plan {
        cfg: ReaderConfig,
        shards_per_line: usize,
    },
    Finish {
        cfg: ReaderConfig,
        force: bool,
    },
    DeregisterConsumer {
        aws: AwsSettings,
        stream: String,
        name: String,
    },
}

impl ReaderCommand {
    /// `manifest`: standard input, read for `--shards-from-stdin`.
    pub fn resolve(
        cli: &ReaderCli,
        l: &Layers,
        manifest: Option<&[u8]>,
    ) -> Result<Self, ExitError> {
        let c = &cli.common;
        let needs = |what: &str, flag: &str| usage(format!("{what} needs {flag}"));
        refuse_what_does_not_apply(cli)?;
        Ok(match &cli.command {
            Some(Command::CreateTable) => ReaderCommand::CreateTable {
                table: table_settings(c, l)?
                    .ok_or_else(|| needs("create-table", "--checkpoint-table T"))?,
                aws: aws_settings(c, l)?,
            },
            Some(Command::Status { json, last }) => ReaderCommand::Status {
                table: table_settings(c, l)?
                    .ok_or_else(|| needs("status", "--checkpoint-table T"))?,
                logical_name: logical_name(c, l)?
                    .ok_or_else(|| needs("status", "--logical-name L"))?,
                stream: stream_setting(c, l)?.0,
                aws: aws_settings(c, l)?,
                last: *last,
                json: *json,
            },
            Some(Command::Plan { shards_per_line }) => {
                if *shards_per_line == 0 {
                    return Err(usage("--shards-per-line must be at least 1".into()));
                }
                ReaderCommand::Plan {
                    cfg: ReaderConfig::resolve_driver(c, &cli.read, l)?,
                    shards_per_line: *shards_per_line,
                }
            }
            Some(Command::Finish { force }) => {
                let cfg = ReaderConfig::resolve_driver(c, &cli.read, l)?;
                if !matches!(
                    cfg.checkpoint.as_ref().map(|c| c.iteration),
                    Some(IterationRequest::Number(_))
                ) {
                    return Err(usage(
                        "finish needs the planned iteration's number: --iteration N".into(),
                    ));
                }
                ReaderCommand::Finish { cfg, force: *force }
            }
            Some(Command::DeregisterConsumer { name }) => ReaderCommand::DeregisterConsumer {
                stream: stream_setting(c, l)?.0,
                aws: aws_settings(c, l)?,
                name: name.clone(),
            },
            None => {
                let assignment = match manifest {
                    Some(input) => Some(
                        crate::manifest::input_lines(input)
                            .and_then(|text| crate::manifest::assignment(&text))
                            .map_err(ExitError::Usage)?,
                    ),
                    None => None,
                };
                ReaderCommand::Read(ReaderConfig::resolve(c, &cli.read, l, assignment.as_ref())?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeMap;

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<ReaderConfig, ExitError> {
        let mut argv = vec!["kinesis-reader"];
        argv.extend_from_slice(args);
        let cli = crate::cli::ReaderCli::try_parse_from(argv).unwrap();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.get(k).cloned();
        let layers = Layers::new(&cli.common.define, &lookup)?;
        ReaderConfig::resolve(&cli.common, &cli.read, &layers, None)
    }

    #[test]
    fn options_that_would_do_nothing_are_refused() {
        let e = |args: &[&str]| resolve(args, &[]).unwrap_err().to_string();
        for (flag, value) in [
            ("--rerun-without-wait", None),
            ("--lease-wait", Some("1m")),
            ("--lease-duration", Some("1m")),
        ] {
            let mut a = vec!["--stream", "s", flag];
            a.extend(value);
            let text = e(&a);
            assert!(
                text.contains(flag) && text.contains("without a checkpoint table"),
                "{text}"
            );
        }
        for format in ["jsonl", "typedbytes"] {
            let text = e(&[
                "--stream",
                "s",
                "--format",
                format,
                "--data-encoding",
                "hex",
            ]);
            assert!(
                text.contains("--data-encoding applies to --format tsv"),
                "{text}"
            );
        }
        let hex = resolve(&["--stream", "s", "--data-encoding", "hex"], &[]).unwrap();
        assert_eq!(hex.encoding, DataEncoding::Hex);
        let json = resolve(&["--stream", "s", "--format", "jsonl"], &[]).unwrap();
        assert_eq!(json.format, OutputFormat::Jsonl);
    }

    #[test]
    fn a_consumer_name_kinesis_would_refuse_is_refused_before_registering() {
        let a = ["--stream", "s", "--efo-consumer"];
        for bad in ["", "has space", "a/b", &"x".repeat(129)] {
            let e = resolve(&[&a[..], &[bad]].concat(), &[]).unwrap_err();
            assert!(
                e.to_string().contains("consumer name is 1 to 128"),
                "{bad}: {e}"
            );
        }
        assert!(resolve(&[&a[..], &["top-errors_1.v2"]].concat(), &[]).is_ok());
    }

    #[test]
    fn a_hadoop_task_without_a_valid_share_is_refused_not_read_whole() {
        let args = [
            "--stream",
            "s",
            "--checkpoint-table",
            "cpt",
            "--logical-name",
            "l",
            "--iteration",
            "0",
        ];
        let attempt = ("mapreduce_task_attempt_id", "attempt_1_0001_m_000001_0");
        let refused: &[&[(&str, &str)]] = &[
            &[
                attempt,
                ("mapreduce_task_partition", "5"),
                ("mapreduce_job_maps", "3"),
            ],
            &[
                attempt,
                ("mapreduce_task_partition", "3"),
                ("mapreduce_job_maps", "3"),
            ],
            &[
                attempt,
                ("mapreduce_task_partition", "0"),
                ("mapreduce_job_maps", "0"),
            ],
            &[attempt, ("mapreduce_task_partition", "1")],
            &[attempt, ("mapreduce_job_maps", "3")],
            &[("mapreduce_task_partition", "1")],
            &[("mapreduce_job_maps", "3")],
            &[attempt],
            &[("mapred_task_id", "attempt_1_0001_m_000001_0")],
        ];
        for env in refused {
            let e = resolve(&args, env).unwrap_err();
            assert!(matches!(e, ExitError::Usage(_)), "{env:?}: {e}");
            assert!(e.to_string().contains("Hadoop task"), "{env:?}: {e}");
        }
        let e = resolve(&args, refused[0]).unwrap_err().to_string();
        assert!(
            e.contains("mapreduce_task_partition=5") && e.contains("mapreduce_job_maps=3"),
            "{e}"
        );
        let task = resolve(
            &args,
            &[
                attempt,
                ("mapreduce_task_partition", "2"),
                ("mapreduce_job_maps", "3"),
            ],
        )
        .unwrap();
        assert_eq!(task.map, Some(MapMode::Task { index: 2, count: 3 }));
        // Old names alone, as Hadoop 1 sets them, are a task too.
        let old = resolve(
            &args,
            &[("mapred_task_partition", "0"), ("mapred_map_tasks", "1")],
        )
        .unwrap();
        assert_eq!(old.map, Some(MapMode::Task { index: 0, count: 1 }));
        // An explicit --task wins over a broken environment.
        let given = resolve(&[&args[..], &["--task", "1/2"]].concat(), refused[0]).unwrap();
        assert_eq!(given.map, Some(MapMode::Task { index: 1, count: 2 }));
        assert_eq!(resolve(&args, &[]).unwrap().map, None);
        // `plan` and `finish` drive the job: a launcher task may run them.
        for sub in ["plan", "finish"] {
            let mut argv = vec!["kinesis-reader", sub];
            argv.extend(args);
            let cli = crate::cli::ReaderCli::try_parse_from(argv).unwrap();
            let env = |k: &str| (k == "mapreduce_task_attempt_id").then(|| "attempt_1".to_string());
            let layers = Layers::new(&cli.common.define, &env).unwrap();
            let cmd = ReaderCommand::resolve(&cli, &layers, None);
            assert!(cmd.is_ok(), "{sub}: {:?}", cmd.err());
        }
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
    fn flags_a_sub_command_would_ignore_are_refused() {
        let refused = |args: &[&str]| {
            let mut argv = vec!["kinesis-reader"];
            argv.extend_from_slice(args);
            let cli = crate::cli::ReaderCli::try_parse_from(argv).unwrap();
            let none = |_: &str| None;
            let layers = Layers::new(&cli.common.define, &none).unwrap();
            ReaderCommand::resolve(&cli, &layers, None)
                .err()
                .map(|e| e.to_string())
        };
        let e = refused(&[
            "status",
            "--stream",
            "s",
            "--checkpoint-table",
            "cpt",
            "--logical-name",
            "l",
            "--iteration",
            "3",
        ])
        .unwrap();
        assert!(e.starts_with("--iteration does not apply to status"), "{e}");
        let e = refused(&[
            "create-table",
            "--checkpoint-table",
            "cpt",
            "--logical-name",
            "l",
        ])
        .unwrap();
        assert!(
            e.starts_with("--logical-name does not apply to create-table"),
            "{e}"
        );
        let e = refused(&[
            "deregister-consumer",
            "c",
            "--stream",
            "s",
            "--checkpoint-table",
            "cpt",
            "--iteration",
            "1",
        ])
        .unwrap();
        assert!(
            e.starts_with("--checkpoint-table, --iteration do not apply"),
            "{e}"
        );
        assert!(refused(&["create-table", "--checkpoint-table", "cpt"]).is_none());
        // Every flag a subcommand's help leaves out is refused by it.
        for (name, ids) in NOT_FOR {
            let mut cmd = <ReaderCli as clap::CommandFactory>::command();
            cmd.build();
            let mut cmd = <ReaderCli as crate::cli::HasVerbosity>::tailor(cmd);
            let help = cmd
                .find_subcommand_mut(name)
                .unwrap()
                .render_long_help()
                .to_string();
            for id in ids {
                let flag = format!("--{}", id.replace('_', "-"));
                assert!(
                    !help.contains(&format!("{flag} ")),
                    "{name} --help shows {flag}"
                );
                let value = if *id == "rerun_without_wait" {
                    None
                } else {
                    Some("1")
                };
                let mut argv = vec![name, "c", flag.as_str()];
                argv.extend(value);
                argv.retain(|a| *a != "c" || name == "deregister-consumer");
                let e = refused(&argv).unwrap_or_default();
                assert!(
                    e.contains(&format!("{flag} does not apply to {name}")),
                    "{argv:?}: {e}"
                );
            }
        }
    }

    #[test]
    fn durations_bare_numbers_are_minutes() {
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_secs(30));
        assert!(parse_duration("-1").is_err());
    }
}
