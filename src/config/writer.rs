//! The writer's settings, resolved once from its command line, the layers
//! under it and the iteration context into one validated [`WriterConfig`]:
//! where the output goes (the exact S3 key, or the table and its columns) and
//! how. No I/O here: the environment comes in as a lookup.

use super::aws::{aws_from, AwsSettings};
use super::checks::{check_extension, check_logical_name, check_object_key, check_table_name};
use super::layers::{exported, names, parse_size, parsed, Layers};
use crate::cli::{FieldEncoding, WriterCli};
use crate::error::ExitError;
use crate::sink::columns::parse_columns;
use crate::sink::dynamodb::Mode;
use crate::sink::lines::BadLinePolicy;
use crate::sink::s3::{Compression, MAX_PART_SIZE, MIN_PART_SIZE};
use crate::sink::{Destination, S3Output, TableOutput, WriteRate};

/// Everything a write needs, validated.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub aws: AwsSettings,
    pub on_bad_line: BadLinePolicy,
    pub destination: Destination,
}

impl WriterConfig {
    pub fn resolve(
        cli: &WriterCli,
        l: &Layers,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ExitError> {
        let ctx = iteration_context(cli, l, env)?;
        let target = Target::parse(&cli.target)?;
        let on_bad_line = BadLinePolicy::parse(&cli.on_bad_line)
            .map_err(|e| ExitError::Usage(format!("--on-bad-line {e}")))?;
        let aws = aws_from(
            cli.region.as_deref(),
            cli.profile.clone(),
            cli.endpoint_url.clone(),
            cli.allow_insecure_endpoint,
            l,
        )?;
        refuse_other_targets_flags(cli, &target)?;
        let destination = match target {
            Target::S3 { bucket, key } => {
                let path_style = aws.endpoint_url.is_some()
                    || env("AWS_ENDPOINT_URL").is_some()
                    || env("AWS_ENDPOINT_URL_S3").is_some();
                Destination::S3(s3_output(cli, &ctx, bucket, key, path_style)?)
            }
            Target::DynamoDb { table } => Destination::DynamoDb(table_output(cli, &ctx, table)?),
        };
        Ok(WriterConfig {
            aws,
            on_bad_line,
            destination,
        })
    }
}

fn s3_output(
    cli: &WriterCli,
    ctx: &IterationContext,
    bucket: String,
    key: S3Key,
    path_style: bool,
) -> Result<S3Output, ExitError> {
    let compression = cli.compress.unwrap_or(Compression::None);
    let key = match key {
        S3Key::Exact(k) => k,
        S3Key::Prefix(p) => format!(
            "{p}{}{}",
            expand_key(
                cli.key_template.as_deref().unwrap_or(DEFAULT_KEY_TEMPLATE),
                ctx
            )?,
            compression.extension()
        ),
    };
    check_object_key(&key)?;
    check_extension(&key, compression)?;
    check_partitions_differ(cli, ctx, &bucket, &key)?;
    let part_size_text = cli.part_size.as_deref().unwrap_or("8MiB");
    let part_size =
        parse_size(part_size_text).map_err(|e| ExitError::Usage(format!("--part-size {e}")))?;
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
        return Err(ExitError::Usage(format!(
            "--part-size {part_size_text}: S3 parts are 5MiB to 5GiB"
        )));
    }
    Ok(S3Output {
        bucket,
        key,
        path_style,
        part_size,
        parts_in_flight: in_range("--parts-in-flight", cli.parts_in_flight, 4)?,
        compression,
        skip_empty: cli.skip_empty,
        success_marker: cli.success_marker,
    })
}

/// Several partitions writing one key overwrite each other, and only the
/// last to finish would be left: a key that cannot differ between partitions
/// is refused where partitions differ (a partition other than 0, or a job
/// that says it has more than one).
fn check_partitions_differ(
    cli: &WriterCli,
    ctx: &IterationContext,
    bucket: &str,
    key: &str,
) -> Result<(), ExitError> {
    let per_partition = cli.target.ends_with('/')
        && cli
            .key_template
            .as_deref()
            .unwrap_or(DEFAULT_KEY_TEMPLATE)
            .contains("{partition}");
    let several = ctx.partition != 0 || ctx.partitions.is_some_and(|n| n > 1);
    if several && cli.success_marker {
        // Hadoop writes _SUCCESS once, when the whole job has committed;
        // no one of several reducers knows that.
        return Err(ExitError::Usage(format!(
            "--success-marker says every part is there, but partition {} is one of several \
             and cannot know that the others have finished: let the job's driver write \
             _SUCCESS after the job (as Hadoop does), or run a single reducer",
            ctx.partition
        )));
    }
    if per_partition || !several {
        return Ok(());
    }
    let job = match ctx.partitions {
        Some(n) => format!(" of {n}"),
        None => String::new(),
    };
    let fix = if cli.target.ends_with('/') {
        format!("put {{partition}} in --key-template (the default is {DEFAULT_KEY_TEMPLATE})")
    } else {
        "end the target with '/' to name one object per partition".to_string()
    };
    Err(ExitError::Usage(format!(
        "partition {}{job} would write s3://{bucket}/{key}, the key every partition writes, \
         and the partitions would overwrite each other: {fix}, or run a single reducer",
        ctx.partition
    )))
}

/// Which share of an iteration an add comes from, for its tag: the tag
/// makes a rerun of the same share a no-op, so two shares that add into
/// the same keys (map tasks of one plan; partitions) need tags of their
/// own, or the second would be skipped as "already applied". The one writer
/// of an iteration keeps the tag `<logical name>#<iteration>`.
fn share(ctx: &IterationContext) -> String {
    match (&ctx.task, ctx.partition, ctx.partitions) {
        (Some(task), _, _) => format!("@{task}"),
        (None, p, n) if p != 0 || n.is_some_and(|n| n > 1) => format!("@part-{p:05}"),
        _ => String::new(),
    }
}

fn table_output(
    cli: &WriterCli,
    ctx: &IterationContext,
    table: String,
) -> Result<TableOutput, ExitError> {
    let columns = cli.columns.as_deref().ok_or_else(|| {
        ExitError::Usage("a dynamodb:// target needs --columns NAME:TYPE,...".into())
    })?;
    let columns =
        parse_columns(columns).map_err(|e| ExitError::Usage(format!("--columns: {e}")))?;
    let mode = cli.mode.unwrap_or(Mode::Put);
    let tag = match (mode, &ctx.logical_name, ctx.iteration) {
        (Mode::Add, Some(l), Some(n)) => Some(format!("{l}#{n}{}", share(ctx))),
        (Mode::Add, _, _) => {
            return Err(ExitError::Usage(
                "--mode add records each iteration in the items it changes, so it needs \
                 --logical-name and --iteration (or their EMR names)"
                    .into(),
            ))
        }
        _ => None,
    };
    let rate = match (cli.write_rate, cli.write_capacity_percent) {
        (Some(_), Some(_)) => {
            return Err(ExitError::Usage(
                "give --write-rate or --write-capacity-percent, not both".into(),
            ))
        }
        (Some(r), None) if r > 0.0 => Some(WriteRate::ItemsPerSecond(r)),
        (Some(r), None) => {
            return Err(ExitError::Usage(format!(
                "--write-rate {r}: must be above 0"
            )))
        }
        (None, Some(p)) if p > 0.0 => Some(WriteRate::PercentOfCapacity(p)),
        (None, Some(_)) => {
            return Err(ExitError::Usage(
                "--write-capacity-percent must be above 0".into(),
            ))
        }
        (None, None) => None,
    };
    Ok(TableOutput {
        table,
        columns,
        mode,
        escaped: cli.field_encoding == FieldEncoding::Escape,
        batches_in_flight: in_range("--batches-in-flight", cli.batches_in_flight, 4)?,
        rate,
        tag,
        hold_until_whole: mode == Mode::Add && ctx.fed_by_reader,
    })
}

/// `s3://bucket/prefix/`, `s3://bucket/key`, or `dynamodb://table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    S3 { bucket: String, key: S3Key },
    DynamoDb { table: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S3Key {
    /// Ends with `/`: the object name comes from the iteration context.
    Prefix(String),
    Exact(String),
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, ExitError> {
        let usage = |m: &str| {
            ExitError::Usage(format!(
                "target {s:?}: {m}; expected s3://BUCKET/PREFIX/, s3://BUCKET/KEY or dynamodb://TABLE"
            ))
        };
        if let Some(rest) = s.strip_prefix("s3://") {
            let Some((bucket, key)) = rest.split_once('/') else {
                // Without a trailing '/' a target is an exact key, and this one names none.
                return Err(ExitError::Usage(format!(
                    "target {s:?} names a bucket but no object: use s3://{rest}/ to write \
                     under the bucket's top level (objects named from the iteration), or \
                     s3://{rest}/KEY for one exact key"
                )));
            };
            if bucket.is_empty() {
                return Err(usage("no bucket"));
            }
            let key = if key.is_empty() || key.ends_with('/') {
                S3Key::Prefix(key.to_string())
            } else {
                S3Key::Exact(key.to_string())
            };
            Ok(Target::S3 {
                bucket: bucket.to_string(),
                key,
            })
        } else if let Some(table) = s.strip_prefix("dynamodb://") {
            check_table_name(table)?;
            Ok(Target::DynamoDb {
                table: table.to_string(),
            })
        } else {
            Err(usage("unknown scheme"))
        }
    }
}

/// Which iteration's output this is (from flags, EMR names, or the
/// environment the reader gives its child).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IterationContext {
    pub logical_name: Option<String>,
    pub iteration: Option<u64>,
    pub stream: Option<String>,
    /// Hadoop's task partition (`mapreduce_task_partition`): which reducer's part.
    pub partition: u32,
    /// How many partitions the job writes (its reducers, or its maps in a
    /// map-only job), when Hadoop says.
    pub partitions: Option<u32>,
    /// When the iteration was opened (epoch ms), for `{date}` / `{hour}`.
    pub opened_ms: Option<i64>,
    /// The input comes from an exec-mode reader that says when it is whole.
    pub fed_by_reader: bool,
    /// A map task's name, from the reader that runs this writer's command.
    pub task: Option<String>,
}

/// The default object name under a prefix: one object per iteration and
/// partition, so a rerun writes the same key.
pub const DEFAULT_KEY_TEMPLATE: &str = "iteration={iteration}/part-{partition}";

/// Expands a key template. Placeholders: `{logical_name}`, `{iteration}`,
/// `{partition}` (5 digits), `{stream}`, `{date}` (YYYY-MM-DD) and `{hour}`
/// (HH) of the iteration's opening. A placeholder without a value is an error.
pub fn expand_key(template: &str, ctx: &IterationContext) -> Result<String, ExitError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| {
            ExitError::Usage(format!("key template {template:?}: a '{{' is never closed"))
        })? + open;
        let name = &rest[open + 1..close];
        let missing = |what: &str| {
            ExitError::Usage(format!(
                "key template {template:?} uses {{{name}}} but no {what} is known: pass {}",
                match name {
                    "logical_name" => "--logical-name (or -D kinesis.checkpoint.logical.name)",
                    "iteration" => "--iteration (or -D kinesis.checkpoint.iteration.no)",
                    "stream" => "--stream (or -D kinesis.stream.name)",
                    _ => "--iteration-start RFC3339",
                }
            ))
        };
        let value = match name {
            "logical_name" => ctx
                .logical_name
                .clone()
                .ok_or_else(|| missing("logical name"))?,
            "iteration" => ctx
                .iteration
                .ok_or_else(|| missing("iteration"))?
                .to_string(),
            "partition" => format!("{:05}", ctx.partition),
            "stream" => ctx.stream.clone().ok_or_else(|| missing("stream"))?,
            "date" | "hour" => {
                let ms = ctx.opened_ms.ok_or_else(|| missing("iteration start"))?;
                let t = crate::clock::fmt_ms(ms); // 2026-11-26T14:05:00.000Z
                if name == "date" {
                    t[..10].to_string()
                } else {
                    t[11..13].to_string()
                }
            }
            other => {
                return Err(ExitError::Usage(format!(
                    "key template {template:?}: unknown placeholder {{{other}}}; known: \
                     {{logical_name}} {{iteration}} {{partition}} {{stream}} {{date}} {{hour}}"
                )))
            }
        };
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The iteration context from flags, EMR names, and the reader's exports.
fn iteration_context(
    c: &WriterCli,
    l: &Layers,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<IterationContext, ExitError> {
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
    .map(|v| crate::ports::stream::stream_name(&v.0).to_string());
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
    // Only a Hadoop task has partitions: its job says how many it writes.
    let count = |vars: &[&str]| {
        vars.iter()
            .find_map(|v| env(v))
            .and_then(|x| x.parse::<u32>().ok())
    };
    let partitions = match count(&["mapreduce_job_reduces", "mapred_reduce_tasks"]) {
        Some(0) => count(&["mapreduce_job_maps", "mapred_map_tasks"]),
        n => n,
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
    Ok(IterationContext {
        logical_name,
        iteration,
        stream,
        partition,
        partitions,
        opened_ms,
        fed_by_reader: crate::feed::socket(env).is_some(),
        task: env(exported::TASK).filter(|t| !t.is_empty()),
    })
}

/// Requests in flight: 1 to 64 (more only queues at the client).
fn in_range(flag: &str, v: Option<usize>, default: usize) -> Result<usize, ExitError> {
    match v.unwrap_or(default) {
        n @ 1..=64 => Ok(n),
        n => Err(ExitError::Usage(format!("{flag} {n}: must be 1 to 64"))),
    }
}

/// A flag for the other kind of target is a mistake, not a no-op.
fn refuse_other_targets_flags(cli: &WriterCli, target: &Target) -> Result<(), ExitError> {
    let given = |set: bool, flag: &'static str| set.then_some(flag);
    let (misplaced, here, there): (Vec<&str>, _, _) = match target {
        Target::S3 { key, .. } => {
            if let (S3Key::Exact(k), Some(_)) = (key, &cli.key_template) {
                return Err(ExitError::Usage(format!(
                    "--key-template names objects under a prefix (a target ending with '/'), \
                     but {:?} is the exact key {k:?}",
                    cli.target
                )));
            }
            (
                [
                    given(cli.columns.is_some(), "--columns"),
                    given(cli.mode.is_some(), "--mode"),
                    given(cli.batches_in_flight.is_some(), "--batches-in-flight"),
                    given(cli.write_rate.is_some(), "--write-rate"),
                    given(
                        cli.write_capacity_percent.is_some(),
                        "--write-capacity-percent",
                    ),
                ]
                .into_iter()
                .flatten()
                .collect(),
                "an s3:// target",
                "dynamodb://",
            )
        }
        Target::DynamoDb { .. } => (
            [
                given(cli.compress.is_some(), "--compress"),
                given(cli.key_template.is_some(), "--key-template"),
                given(cli.part_size.is_some(), "--part-size"),
                given(cli.parts_in_flight.is_some(), "--parts-in-flight"),
                given(cli.success_marker, "--success-marker"),
                given(cli.skip_empty, "--skip-empty"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            "a dynamodb:// target",
            "s3://",
        ),
    };
    match misplaced.as_slice() {
        [] => Ok(()),
        flags => Err(ExitError::Usage(format!(
            "{} {} not apply to {here} (only to {there} targets)",
            flags.join(", "),
            if flags.len() == 1 { "does" } else { "do" }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("s3://results/top-errors/").unwrap(),
            Target::S3 {
                bucket: "results".into(),
                key: S3Key::Prefix("top-errors/".into())
            }
        );
        assert_eq!(
            Target::parse("s3://results/").unwrap(),
            Target::S3 {
                bucket: "results".into(),
                key: S3Key::Prefix("".into())
            }
        );
        // No '/': an exact key, and there is none.
        let e = Target::parse("s3://results").unwrap_err().to_string();
        assert!(e.contains("s3://results/"), "{e}");
        assert_eq!(
            Target::parse("s3://b/x/out.tsv").unwrap(),
            Target::S3 {
                bucket: "b".into(),
                key: S3Key::Exact("x/out.tsv".into())
            }
        );
        assert_eq!(
            Target::parse("dynamodb://counts").unwrap(),
            Target::DynamoDb {
                table: "counts".into()
            }
        );
        for bad in [
            "s3:///k",
            "file:///tmp/x",
            "dynamodb://",
            "results/",
            "dynamodb://a b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<WriterConfig, ExitError> {
        use clap::Parser;
        let mut argv = vec!["kinesis-writer"];
        argv.extend_from_slice(args);
        let cli = WriterCli::try_parse_from(argv).unwrap();
        let env: std::collections::BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.get(k).cloned();
        let layers = Layers::for_writer(&cli.define, &lookup)?;
        WriterConfig::resolve(&cli, &layers, &lookup)
    }

    #[test]
    fn partitions_that_would_write_one_key_are_refused() {
        let same = [
            "s3://bkt/kt/",
            "--iteration",
            "1",
            "--logical-name",
            "L",
            "--key-template",
            "iteration={iteration}/out.tsv",
        ];
        // Partition 1 (by flag or by Hadoop) cannot be the only one.
        let e = resolve(&[&same[..], &["--partition", "1"]].concat(), &[]).unwrap_err();
        assert!(matches!(e, ExitError::Usage(_)), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("partition 1")
                && e.contains("{partition}")
                && e.contains("kt/iteration=1/out.tsv"),
            "{e}"
        );
        let env1 = [("mapreduce_task_partition", "1")];
        assert!(resolve(&same, &env1).is_err());
        assert!(resolve(&["s3://bkt/kt/out.tsv"], &env1).is_err());
        // Partition 0 of a job with two reducers would be overwritten as well.
        let env0 = [
            ("mapreduce_task_partition", "0"),
            ("mapreduce_job_reduces", "2"),
        ];
        let e = resolve(&same, &env0).unwrap_err().to_string();
        assert!(e.contains("partition 0 of 2"), "{e}");
        // A map-only job counts its maps.
        let maps = [
            ("mapreduce_task_partition", "0"),
            ("mapreduce_job_reduces", "0"),
            ("mapreduce_job_maps", "4"),
        ];
        assert!(resolve(&same, &maps).is_err());
        // One writer, or a key per partition, is fine.
        assert!(resolve(&same, &[]).is_ok());
        let one = [
            ("mapreduce_task_partition", "0"),
            ("mapreduce_job_reduces", "1"),
        ];
        assert!(resolve(&same, &one).is_ok());
        assert!(resolve(&["s3://bkt/kt/out.tsv"], &one).is_ok());
        let per = ["s3://bkt/kt/", "--iteration", "1", "--logical-name", "L"];
        assert!(resolve(&per, &env1).is_ok());
        assert!(resolve(&per, &env0).is_ok());
        // Nor may one of several partitions say the whole output is there.
        let marker = [&per[..], &["--success-marker"]].concat();
        let e = resolve(&marker, &env1).unwrap_err().to_string();
        assert!(
            e.contains("--success-marker") && e.contains("one of several"),
            "{e}"
        );
        assert!(resolve(&marker, &one).is_ok());
    }

    #[test]
    fn each_share_of_an_iteration_adds_under_a_tag_of_its_own() {
        let tag = |env: &[(&str, &str)]| {
            let a = [
                "dynamodb://totals",
                "--columns",
                "k:S,n:N",
                "--mode",
                "add",
                "--logical-name",
                "L",
                "--iteration",
                "7",
            ];
            match resolve(&a, env).unwrap().destination {
                Destination::DynamoDb(t) => t.tag.unwrap(),
                d => panic!("{d:?}"),
            }
        };
        // The one writer: as before.
        assert_eq!(tag(&[]), "L#7");
        assert_eq!(tag(&[("mapreduce_task_partition", "0")]), "L#7");
        // Map tasks of one plan, and partitions, add the same keys apart.
        assert_eq!(
            tag(&[("KINESIS_TASK", "shardId-000000000001")]),
            "L#7@shardId-000000000001"
        );
        assert_eq!(tag(&[("mapreduce_task_partition", "1")]), "L#7@part-00001");
        let two = [
            ("mapreduce_task_partition", "0"),
            ("mapreduce_job_reduces", "2"),
        ];
        assert_eq!(tag(&two), "L#7@part-00000");
    }

    #[test]
    fn keys_are_deterministic_per_iteration_and_partition() {
        let ctx = IterationContext {
            logical_name: Some("top".into()),
            iteration: Some(7),
            stream: Some("logs".into()),
            partition: 3,
            partitions: None,
            opened_ms: Some(1_764_165_900_000), // 2025-11-26T14:05:00Z
            fed_by_reader: false,
            task: None,
        };
        assert_eq!(
            expand_key(DEFAULT_KEY_TEMPLATE, &ctx).unwrap(),
            "iteration=7/part-00003"
        );
        assert_eq!(
            expand_key(
                "{stream}/{logical_name}/dt={date}/hr={hour}/{iteration}.tsv",
                &ctx
            )
            .unwrap(),
            "logs/top/dt=2025-11-26/hr=14/7.tsv"
        );
        let e = expand_key(DEFAULT_KEY_TEMPLATE, &IterationContext::default()).unwrap_err();
        assert!(e.to_string().contains("--iteration"), "{e}");
        assert!(expand_key("{colour}", &ctx)
            .unwrap_err()
            .to_string()
            .contains("unknown placeholder"));
        assert!(expand_key("a{iteration", &ctx).is_err());
    }
}
