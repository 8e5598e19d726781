//! `kinesis-writer`: parse, build, run, map errors to exit codes.

use anyhow::Result;
use kinesis_streaming::aws::{self, item_table::DynamoItems, s3::S3Objects};
use kinesis_streaming::config::{self, parse_size, FieldEncoding, Layers, WriterCli};
use kinesis_streaming::error::ReaderError;
use kinesis_streaming::sink::dynamodb::{self, LoadOptions, Mode};
use kinesis_streaming::sink::lines::{BadLinePolicy, BadLines};
use kinesis_streaming::sink::s3::{self as s3sink, UploadOptions};
use kinesis_streaming::sink::{expand_key, S3Key, Target};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

fn main() -> ExitCode {
    kinesis_streaming::error::main_with::<WriterCli, _, _>("kinesis-writer", run)
}

async fn run(cli: WriterCli) -> Result<u8> {
    let started = Instant::now();
    let env = |k: &str| std::env::var(k).ok();
    let layers = Layers::new(&cli.define, &env)?;
    let ctx = config::writer_context(&cli, &layers, &env)?;
    let target = Target::parse(&cli.target)?;
    let policy = BadLinePolicy::parse(&cli.on_bad_line)
        .map_err(|e| ReaderError::Usage(format!("--on-bad-line {e}")))?;
    let settings = config::aws_from(
        cli.region.as_deref(),
        cli.profile.clone(),
        cli.endpoint_url.clone(),
        cli.allow_insecure_endpoint,
        &layers,
    )?;
    let bad = BadLines::new(policy)?;
    let progress = Arc::new(kinesis_streaming::progress::Progress::default());
    let ticker = (!cli.verbosity.quiet && std::io::stderr().is_terminal())
        .then(|| kinesis_streaming::progress::spawn_ticker(progress.clone(), "kinesis-writer"));
    let r = write(cli, &env, ctx, target, settings, bad, progress).await;
    kinesis_streaming::progress::stop_ticker(ticker);
    let mut counters = r?;
    counters.push(("retries", kinesis_streaming::aws::counters::retries()));
    counters.push(("throttles", kinesis_streaming::aws::counters::throttled()));
    if kinesis_streaming::progress::under_hadoop(&env) {
        eprint!(
            "{}",
            kinesis_streaming::progress::counter_lines("KinesisWriter", &counters)
        );
    }
    log::debug!("done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
async fn write(
    cli: WriterCli,
    env: &dyn Fn(&str) -> Option<String>,
    ctx: kinesis_streaming::sink::IterationContext,
    target: Target,
    settings: config::AwsSettings,
    bad: BadLines,
    progress: Arc<kinesis_streaming::progress::Progress>,
) -> Result<Vec<(&'static str, u64)>> {
    let started = Instant::now();
    refuse_other_targets_flags(&cli, &target)?;
    match target {
        Target::S3 { bucket, key } => {
            let compression = cli.compress.unwrap_or(s3sink::Compression::None);
            let key = match key {
                S3Key::Exact(k) => k,
                S3Key::Prefix(p) => format!(
                    "{p}{}{}",
                    expand_key(
                        cli.key_template
                            .as_deref()
                            .unwrap_or(kinesis_streaming::sink::DEFAULT_KEY_TEMPLATE),
                        &ctx
                    )?,
                    compression.extension()
                ),
            };
            kinesis_streaming::sink::check_key(&key)?;
            kinesis_streaming::sink::check_extension(&key, compression)?;
            let part_size_text = cli.part_size.as_deref().unwrap_or("8MiB");
            let part_size = parse_size(part_size_text)
                .map_err(|e| ReaderError::Usage(format!("--part-size {e}")))?;
            if part_size < s3sink::MIN_PART_SIZE {
                return Err(ReaderError::Usage(format!(
                    "--part-size {part_size_text}: S3 parts are at least 5MiB"
                ))
                .into());
            }
            let opts = UploadOptions {
                part_size,
                parts_in_flight: in_range("--parts-in-flight", cli.parts_in_flight, 4)?,
                compression,
                skip_empty: cli.skip_empty,
                progress,
            };
            let sdk = aws::sdk_config(&settings).await?;
            let path_style = settings.endpoint_url.is_some()
                || env("AWS_ENDPOINT_URL").is_some()
                || env("AWS_ENDPOINT_URL_S3").is_some();
            let store: Arc<dyn s3sink::ObjectStore> =
                Arc::new(S3Objects::new(&sdk, &bucket, path_style));
            let stop =
                Box::pin(async { kinesis_streaming::error::interrupted().await.to_string() });
            let (s, mut bad) =
                s3sink::upload(store.clone(), &key, std::io::stdin(), &opts, bad, stop).await?;
            bad.finish()?;
            if s.written && cli.success_marker {
                let marker = match key.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/_SUCCESS"),
                    None => "_SUCCESS".to_string(),
                };
                store.put_object(&marker, bytes::Bytes::new()).await?;
            }
            log::info!(
                "{} s3://{bucket}/{key}: {} lines, {} bytes in, {} bytes stored in {} part(s), \
                 {} skipped, peak buffers {} MiB, {:.1}s",
                if s.written {
                    "wrote"
                } else {
                    "empty input, nothing written to"
                },
                s.lines,
                s.input_bytes,
                s.object_bytes,
                s.parts,
                bad.skipped,
                s.peak_buffered >> 20,
                started.elapsed().as_secs_f64()
            );
            Ok(vec![
                ("lines", s.lines),
                ("input_bytes", s.input_bytes),
                ("object_bytes", s.object_bytes),
                ("parts", s.parts as u64),
                ("skipped_lines", bad.skipped),
            ])
        }
        Target::DynamoDb { table } => {
            let columns = cli.columns.as_deref().ok_or_else(|| {
                ReaderError::Usage("a dynamodb:// target needs --columns NAME:TYPE,...".into())
            })?;
            let columns = dynamodb::parse_columns(columns)
                .map_err(|e| ReaderError::Usage(format!("--columns: {e}")))?;
            let mode = cli.mode.unwrap_or(Mode::Put);
            let tag =
                match (mode, &ctx.logical_name, ctx.iteration) {
                    (Mode::Add, Some(l), Some(n)) => Some(format!("{l}#{n}")),
                    (Mode::Add, _, _) => return Err(ReaderError::Usage(
                        "--mode add records each iteration in the items it changes, so it needs \
                         --logical-name and --iteration (or their EMR names)"
                            .into(),
                    )
                    .into()),
                    _ => None,
                };
            let sdk = aws::sdk_config(&settings).await?;
            let items: Arc<dyn dynamodb::ItemTable> = Arc::new(DynamoItems::new(&sdk, &table));
            let info = items.describe().await?;
            let key_len = dynamodb::check_key(&columns, &info, &table)?;
            let rate = match (cli.write_rate, cli.write_capacity_percent) {
                (Some(_), Some(_)) => {
                    return Err(ReaderError::Usage(
                        "give --write-rate or --write-capacity-percent, not both".into(),
                    )
                    .into())
                }
                (Some(r), None) if r > 0.0 => Some(r),
                (Some(r), None) => {
                    return Err(ReaderError::Usage(format!("--write-rate {r}: must be above 0")).into())
                }
                (None, Some(p)) => match info.write_capacity {
                    Some(wcu) if p > 0.0 => Some(wcu as f64 * p / 100.0),
                    Some(_) => return Err(ReaderError::Usage("--write-capacity-percent must be above 0".into()).into()),
                    None => {
                        return Err(ReaderError::Usage(format!(
                            "table {table} has no provisioned write capacity (on-demand): use --write-rate"
                        ))
                        .into())
                    }
                },
                (None, None) => None,
            };
            if let Some(r) = rate {
                log::info!("writing at most {r:.1} items/s");
            }
            let opts = LoadOptions {
                columns,
                key_len,
                mode,
                escaped: cli.field_encoding == FieldEncoding::Escape,
                batches_in_flight: in_range("--batches-in-flight", cli.batches_in_flight, 4)?,
                rate,
                tag,
                max_attempts: 10,
                progress,
            };
            let input = std::io::BufReader::with_capacity(256 * 1024, std::io::stdin());
            let (s, mut bad) = tokio::select! {
                r = dynamodb::load(items, input, &opts, bad) => r?,
                why = kinesis_streaming::error::interrupted() => return Err(ReaderError::Interrupted(format!(
                    "stopped by {why}; the items written so far stay (put and add are idempotent: \
                     run the same input again)"
                )).into()),
            };
            bad.finish()?;
            log::info!(
                "dynamodb://{table}: {} lines, {} items written, {} collapsed into later lines, \
                 {} already applied, {} retries, {} skipped, {:.1}s",
                s.lines,
                s.items_written,
                s.collapsed,
                s.already_applied,
                s.retries,
                bad.skipped,
                started.elapsed().as_secs_f64()
            );
            Ok(vec![
                ("lines", s.lines),
                ("items_written", s.items_written),
                ("already_applied", s.already_applied),
                ("retries", s.retries),
                ("skipped_lines", bad.skipped),
            ])
        }
    }
}

/// Requests in flight: 1 to 64 (more only queues at the client).
fn in_range(flag: &str, v: Option<usize>, default: usize) -> Result<usize, ReaderError> {
    match v.unwrap_or(default) {
        n @ 1..=64 => Ok(n),
        n => Err(ReaderError::Usage(format!("{flag} {n}: must be 1 to 64"))),
    }
}

/// A flag for the other kind of target is a mistake, not a no-op.
fn refuse_other_targets_flags(cli: &WriterCli, target: &Target) -> Result<(), ReaderError> {
    let given = |set: bool, flag: &'static str| set.then_some(flag);
    let (misplaced, here, there): (Vec<&str>, _, _) = match target {
        Target::S3 { key, .. } => {
            if let (S3Key::Exact(k), Some(_)) = (key, &cli.key_template) {
                return Err(ReaderError::Usage(format!(
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
        flags => Err(ReaderError::Usage(format!(
            "{} {} not apply to {here} (only to {there} targets)",
            flags.join(", "),
            if flags.len() == 1 { "does" } else { "do" }
        ))),
    }
}
