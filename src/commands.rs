//! `kinesis-reader`'s modes, one function per sub-command, each from its
//! resolved settings to an exit code. They build the AWS adapters and hand
//! them to the run logic in `run`, which sees only the ports.

use crate::aws::{self, checkpoint_table::DynamoStore, kinesis::KinesisStream};
use crate::config::{AwsSettings, ReaderCommand, ReaderConfig, TableSettings};
use crate::error::{exit_for, Exit, ExitError};
use crate::exec;
use crate::exec::Running;
use crate::feed::Feed;
use crate::ports::checkpoint::{CheckpointStore, IterationState, LogicalKey};
use crate::ports::stream::{stream_name, StreamApi, StreamError};
use crate::progress::{self, Progress};
use crate::run;
use crate::stop::{self, Stop};
use crate::words::count;
use anyhow::Result;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

/// How the person or scheduler running us watches stderr.
#[derive(Clone, Copy, Debug, Default)]
pub struct Watch {
    /// `-q`: no progress, no summary.
    pub quiet: bool,
    /// `--hadoop-reporter`: Hadoop's `reporter:` lines even outside a task.
    pub hadoop_reporter: bool,
}

/// Runs one resolved command line.
pub async fn run(command: ReaderCommand, watch: Watch) -> Result<u8> {
    match command {
        ReaderCommand::Read(cfg) => read(cfg, watch).await,
        ReaderCommand::CreateTable { aws, table } => create_table(&aws, table).await,
        ReaderCommand::Status {
            aws,
            table,
            stream,
            logical_name,
            last,
            json,
        } => {
            let key = LogicalKey {
                stream: stream_name(&stream).to_string(),
                logical_name,
            };
            status(&aws, table, key, last, json).await
        }
        ReaderCommand::Plan {
            cfg,
            shards_per_line,
        } => plan(&cfg, shards_per_line).await,
        ReaderCommand::Finish { cfg, force } => finish(&cfg, force).await,
        ReaderCommand::DeregisterConsumer { aws, stream, name } => {
            deregister_consumer(&aws, &stream, &name).await
        }
    }
}

async fn create_table(aws: &AwsSettings, table: TableSettings) -> Result<u8> {
    let sdk = aws::sdk_config(aws).await?;
    let name = table.table.clone();
    let created = DynamoStore::new(&sdk, table).create_table().await?;
    eprintln!(
        "kinesis-reader: table {name} {}",
        if created {
            "created and active"
        } else {
            "exists and has the right keys"
        }
    );
    Ok(0)
}

async fn status(
    aws: &AwsSettings,
    table: TableSettings,
    key: LogicalKey,
    last: usize,
    json: bool,
) -> Result<u8> {
    stdout_open("the status would go nowhere")?;
    let sdk = aws::sdk_config(aws).await?;
    let store = DynamoStore::new(&sdk, table);
    store.check_table().await?;
    // Printed once it is known to be about a stream that exists.
    let mut shown = Vec::new();
    let now = crate::clock::now_ms();
    let n = crate::status::status(&store, &key, last, json, now, &mut shown).await?;
    if n == 0 {
        // A typo in the stream's name looks the same as a logical name that
        // has not run yet: the stream says which.
        let api = KinesisStream::new(&sdk, &key.stream);
        if let Err(StreamError::NotFound(why)) = api.describe().await {
            return Err(
                ExitError::Usage(format!("no iterations: {why} (a typo in --stream?)")).into(),
            );
        }
        if !json {
            eprintln!(
                "kinesis-reader: logical name {:?} of stream {} has no iterations yet (check the \
                 logical name, or run it)",
                key.logical_name, key.stream
            );
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&shown)?;
    out.flush()?;
    Ok(0)
}

async fn plan(cfg: &ReaderConfig, shards_per_line: usize) -> Result<u8> {
    stdout_open("the manifest would go nowhere: send it to a file")?;
    let (api, store) = clients(cfg).await?;
    let p = run::plan(
        api.as_ref(),
        store.as_ref(),
        cfg,
        &owner_id(),
        shards_per_line,
    )
    .await?;
    let mut out = std::io::stdout().lock();
    for line in &p.lines {
        writeln!(out, "{}", line.to_line())?;
    }
    out.flush()?;
    eprintln!(
        "kinesis-reader: iteration {} of {:?} planned: {} in {}{}",
        p.iteration,
        p.logical_name,
        count(p.shards, "shard"),
        count(p.lines.len(), "manifest line"),
        match (p.state, p.fixed) {
            (IterationState::Succeeded, _) =>
                " (it has succeeded: map tasks replay it)".to_string(),
            (_, 0) => String::new(),
            (_, f) => format!(
                " ({f} with fixed ends, replayed; the iteration runs again because it has not \
                 been marked succeeded — `kinesis-reader finish` after the job)"
            ),
        }
    );
    Ok(0)
}

async fn finish(cfg: &ReaderConfig, force: bool) -> Result<u8> {
    let (api, store) = clients(cfg).await?;
    let (n, done) = run::confirm(api.as_ref(), store.as_ref(), cfg, &owner_id(), force).await?;
    eprintln!(
        "kinesis-reader: iteration {n} {}",
        if done {
            "marked succeeded"
        } else {
            "had already succeeded"
        }
    );
    Ok(0)
}

async fn deregister_consumer(aws: &AwsSettings, stream: &str, name: &str) -> Result<u8> {
    let sdk = aws::sdk_config(aws).await?;
    let api = KinesisStream::new(&sdk, stream);
    let gone = api
        .deregister_consumer(name)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    eprintln!(
        "kinesis-reader: consumer {name:?} of stream {stream} {}",
        if gone {
            "deregistered"
        } else {
            "was not registered (or is already being deregistered)"
        }
    );
    Ok(0)
}

/// Refuses a stdout that was closed when we started (`>&-`): Rust's runtime
/// would have opened it as /dev/null, and `why` says what would be lost.
fn stdout_open(why: &str) -> Result<()> {
    match crate::descriptors::closed_at_start(1) {
        true => Err(ExitError::Usage(format!("standard output is closed (>&-), so {why}")).into()),
        false => Ok(()),
    }
}

/// The stream and the checkpoint table (checked) for `plan` and `finish`.
async fn clients(cfg: &ReaderConfig) -> Result<(Arc<KinesisStream>, Arc<DynamoStore>)> {
    let cp = cfg
        .checkpoint
        .as_ref()
        .ok_or_else(|| ExitError::Usage("this needs --checkpoint-table T".into()))?;
    let sdk = aws::sdk_config(&cfg.aws).await?;
    let store = Arc::new(DynamoStore::new(&sdk, cp.table.clone()));
    store.check_table().await?;
    Ok((
        Arc::new(KinesisStream::new(&sdk, &cfg.stream).named_by(&cfg.stream_from)),
        store,
    ))
}

/// Reads an iteration to stdout, or to the command after `--`.
async fn read(cfg: ReaderConfig, watch: Watch) -> Result<u8> {
    // Per-shard progress when a person watches stderr (and stdout goes elsewhere).
    let watched =
        !watch.quiet && std::io::stderr().is_terminal() && !std::io::stdout().is_terminal();
    let meter = watched.then(|| Arc::new(progress::Shards::default()));
    if let Some(program) = cfg.command.first() {
        if let Some(why) = exec::not_runnable(program) {
            return Err(ExitError::Usage(format!(
                "command {program:?} (after --) cannot be run: {why}"
            ))
            .into());
        }
    }
    if cfg.command.is_empty() {
        stdout_open(
            "the records would go nowhere and still count as delivered: send them to a file or \
             a pipe, or give a command after --",
        )?;
    }
    let sdk = aws::sdk_config(&cfg.aws).await?;
    let api = Arc::new(KinesisStream::new(&sdk, &cfg.stream).named_by(&cfg.stream_from));
    let dynamo = match &cfg.checkpoint {
        Some(cp) => {
            let s = Arc::new(DynamoStore::new(&sdk, cp.table.clone()));
            s.check_table().await?;
            Some(s)
        }
        None => None,
    };
    let store = dynamo.clone().map(|s| s as Arc<dyn CheckpointStore>);
    // The heartbeat starts before the iteration is opened: a retried or
    // speculative attempt may wait for the first attempt's lease, silent
    // for as long as --lease-wait, and Hadoop kills a silent task.
    let progress = Arc::new(Progress::default());
    let hadoop = watch.hadoop_reporter || progress::under_hadoop(&|k: &str| std::env::var(k).ok());
    let heartbeat = hadoop.then(|| {
        progress::spawn_heartbeat(progress.clone(), "kinesis-reader", cfg.status_interval)
    });
    // Open the iteration first: a child is told which one it gets.
    let prepared = run::prepare(api, store, &cfg, &owner_id(), meter.clone()).await?;
    let (out, child, stop): (Box<dyn Write + Send>, Option<Started>, Stop) =
        match cfg.command.split_first() {
            // The reader buffers its output in large blocks itself (and
            // flushes before any wait), so stdout gets whole blocks.
            None => (Box::new(std::io::stdout()), None, stop::on_signal()),
            Some((program, args)) => match start_command(program, args, &prepared) {
                Ok((mut c, feed)) => {
                    // The run's copy is the only one: its end is the command's end of input.
                    let stdin = c.stdin.take().expect("taken once");
                    let out: Box<dyn Write + Send> = match &feed {
                        Some(f) => Box::new(f.output(stdin)),
                        None => Box::new(stdin),
                    };
                    let stop = stop::forwarding_to(c.pid);
                    (out, Some((c, feed)), stop)
                }
                Err(e) => {
                    // Nothing was read: give the iteration back at once.
                    prepared.abandon().await;
                    return Err(anyhow::anyhow!("starting {program:?}: {e}"));
                }
            },
        };
    // Progress on a terminal's stderr; counted where lines leave the buffer.
    let out: Box<dyn Write + Send> = Box::new(progress::Counting {
        inner: out,
        progress: progress.clone(),
    });
    let shard_count = prepared.shard_count();
    let recorded = prepared.recorded();
    let display = meter.map(|m| progress::spawn_display(progress, m, shard_count));
    let summary = run::run(prepared, &cfg, out, stop, child.is_some()).await;
    progress::stop_display(display);
    if let Some(h) = heartbeat {
        h.abort();
    }
    let (summary, code) = match child {
        // `| head`: a closed pipe is a normal end (exit 0), but say that the
        // iteration was not completed, or a scheduler would never know.
        None => match summary {
            Err(e) if exit_for(&e) == Exit::Ok => {
                if let Some(what) = exec::incomplete(recorded) {
                    log::warn!("the output was closed before the end: {what}");
                }
                return Ok(0);
            }
            s => (s?, 0),
        },
        Some((c, feed)) => match after_command(c, feed, summary, &cfg, recorded).await? {
            Ok(done) => done,
            Err(code) => return Ok(code),
        },
    };
    report(&summary, hadoop, dynamo.as_deref());
    Ok(code)
}

/// The command after `--`, running, and the feed a writer in it asks.
type Started = (Running, Option<Feed>);

/// Starts the command after `--`, with a feed socket for a writer in it to
/// ask whether its input is whole.
fn start_command(
    program: &str,
    args: &[String],
    prepared: &run::Prepared,
) -> std::io::Result<Started> {
    // The feed counts what the command's stdin holds, and the command is
    // told the feed's name: the pipe comes first, then the feed, then the command.
    let stdin = exec::Stdin::new()?;
    let pipe = stdin.pipe.clone();
    let feed = Feed::serve(move || pipe.unread());
    let c = exec::spawn(
        program,
        args,
        &prepared.context(),
        feed.as_ref().map(Feed::name),
        stdin,
    )?;
    Ok((c, feed))
}

/// Exec mode, once the reader's end of the pipe is closed: waits for the
/// command and records the iteration by its exit status. `Ok(Err(code))`
/// is a run that ends with the command's code and no summary.
async fn after_command(
    c: Running,
    feed: Option<Feed>,
    summary: Result<run::Summary>,
    cfg: &ReaderConfig,
    recorded: Option<(u64, bool)>,
) -> Result<Result<(run::Summary, u8), u8>> {
    // A writer in the command may be waiting to hear whether its input is whole.
    if let Some(f) = &feed {
        f.decide(match &summary {
            Ok(_) => Ok(()),
            Err(e) if exit_for(e) == Exit::Ok => {
                Err("the command stopped reading before the end of the iteration".into())
            }
            Err(e) => Err(format!("the reader failed: {e:#}")),
        });
    }
    let exited = tokio::task::spawn_blocking(move || c.wait()).await??;
    let status = exited.status;
    let undrained = |what: String| {
        Err(ExitError::Undrained(format!(
            "the command exited 0 without reading all of its input{}: {what}",
            match exited.unread {
                0 => String::new(),
                n => format!(" ({} left in its pipe)", count(n, "byte")),
            }
        ))
        .into())
    };
    match summary {
        Ok(mut s) => {
            // A command that exits 0 with records still in its pipe did
            // not read them, however well every write went.
            let read_all = exited.unread == 0;
            if let Some(h) = s.held.take() {
                h.finish(status == 0 && read_all).await?;
            }
            if status == 0 && !read_all {
                return undrained(match recorded {
                    Some((n, true)) => format!(
                        "this task's share of iteration {n} failed; its shards' fixed ends \
                         stay, so a retry replays exactly the same records"
                    ),
                    r => {
                        exec::incomplete(r).unwrap_or_else(|| "it did not get every record".into())
                    }
                });
            }
            if status != 0 && cfg.map.is_some() {
                log::warn!(
                    "the command exited with {status}: this task failed; its shards' fixed \
                     ends stay, so a retry replays exactly the same records"
                );
            } else if status != 0 {
                log::warn!(
                    "the command exited with {status}: the iteration is marked failed \
                     (--iteration next runs it again)"
                );
            }
            Ok(Ok((s, status)))
        }
        // The child stopped reading early.
        Err(e) if exit_for(&e) == Exit::Ok => {
            let what =
                exec::incomplete(recorded).unwrap_or_else(|| "it did not get every record".into());
            if status == 0 {
                return undrained(what);
            }
            log::warn!("the command exited with {status} before reading all of its input: {what}");
            Ok(Err(status))
        }
        // A lost lease is exit 3 whatever the command did: its output is
        // not the iteration's.
        Err(e) if status == 0 || exit_for(&e) == Exit::IterationOwned => Err(e),
        Err(e) => {
            eprintln!("kinesis-reader: {e:#}");
            Ok(Err(status))
        }
    }
}

/// The closing lines on stderr: Hadoop counters under Hadoop, and the summary.
fn report(summary: &run::Summary, hadoop: bool, dynamo: Option<&DynamoStore>) {
    if hadoop {
        eprint!(
            "{}",
            progress::counter_lines(
                "KinesisReader",
                &[
                    ("records", summary.records),
                    ("bytes", summary.bytes),
                    ("shards", summary.shards as u64),
                    ("retries", aws::counters::retries()),
                    ("throttles", aws::counters::throttled()),
                ]
            )
        );
    }
    let what = match summary.iteration {
        Some(n) => format!("iteration {n}"),
        None => "read without checkpoints".into(),
    };
    log::info!(
        "{what}: {} ({}) from {} ({} fixed now, {} replayed) in {:.1}s",
        count(summary.records, "record"),
        count(summary.bytes, "byte"),
        count(summary.shards, "shard"),
        summary.fixed_now,
        summary.replayed,
        summary.elapsed.as_secs_f64()
    );
    if let Some(d) = dynamo {
        log::debug!("checkpoint table requests: {}", d.usage());
    }
    let (direct, by_sdk) = aws::get_records::pages();
    log::debug!("GetRecords answers: {direct} decoded directly, {by_sdk} by the SDK");
}

/// Who holds a lease: host, process and start time, so `status` says who;
/// under Hadoop the task attempt first (`attempt_…@host:pid:ms`), so that a
/// lease or a fixed end can be traced to the attempt that holds or fixed it.
fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let me = format!("{host}:{}:{}", std::process::id(), crate::clock::now_ms());
    match progress::task_attempt(&|k: &str| std::env::var(k).ok()) {
        Some(attempt) => format!("{attempt}@{me}"),
        None => me,
    }
}
