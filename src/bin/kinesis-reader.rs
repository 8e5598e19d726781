//! `kinesis-reader`: parse, build, run, map errors to exit codes.

use anyhow::Result;
use kinesis_streaming::aws::{self, checkpoint_table::DynamoStore, kinesis::KinesisStream};
use kinesis_streaming::checkpoint::{CheckpointStore, IterationState, LogicalKey};
use kinesis_streaming::config::{
    self, exported, mangle, names, Cli, Command, Layers, ReaderConfig,
};
use kinesis_streaming::error::{exit_for, Exit, ReaderError};
use kinesis_streaming::iteration::{fmt_ms, IterationRequest};
use kinesis_streaming::manifest;
use kinesis_streaming::reader;
use kinesis_streaming::stream::stream_name;
use std::io::{IsTerminal, Write};
use std::process::{Child, Command as Process, ExitCode, Stdio};
use std::sync::Arc;

fn main() -> ExitCode {
    kinesis_streaming::error::main_with::<Cli, _, _>("kinesis-reader", run)
}

async fn run(mut cli: Cli) -> Result<u8> {
    let env = |k: &str| std::env::var(k).ok();
    let layers = Layers::new(&cli.common.define, &env)?;
    match cli.command {
        Some(Command::CreateTable) => {
            let table = config::table_settings(&cli.common, &layers)?.ok_or_else(|| {
                ReaderError::Usage("create-table needs --checkpoint-table T".into())
            })?;
            let sdk = aws::sdk_config(&config::aws_settings(&cli.common, &layers)?).await?;
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
        Some(Command::Status { json, last }) => {
            let table = config::table_settings(&cli.common, &layers)?
                .ok_or_else(|| ReaderError::Usage("status needs --checkpoint-table T".into()))?;
            let logical_name = config::logical_name(&cli.common, &layers)?
                .ok_or_else(|| ReaderError::Usage("status needs --logical-name L".into()))?;
            let stream = config::stream_setting(&cli.common, &layers)?;
            let sdk = aws::sdk_config(&config::aws_settings(&cli.common, &layers)?).await?;
            let store = DynamoStore::new(&sdk, table);
            store.check_table().await?;
            let key = LogicalKey {
                stream: stream_name(&stream).to_string(),
                logical_name,
            };
            let mut out = std::io::stdout().lock();
            let n = kinesis_streaming::status::status(&store, &key, last, json, &mut out).await?;
            if n == 0 && !json {
                eprintln!(
                    "kinesis-reader: logical name {:?} of stream {} has no iterations yet",
                    key.logical_name, key.stream
                );
            }
            Ok(0)
        }
        Some(Command::Plan { shards_per_line }) => {
            if shards_per_line == 0 {
                return Err(
                    ReaderError::Usage("--shards-per-line must be at least 1".into()).into(),
                );
            }
            let cfg = ReaderConfig::resolve(&cli.common, &cli.read, &layers, None)?;
            let (api, store) = clients(&cfg).await?;
            let p = reader::plan(
                api.as_ref(),
                store.as_ref(),
                &cfg,
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
                "kinesis-reader: iteration {} of {:?} planned: {} shards in {} manifest lines{}",
                p.iteration,
                p.logical_name,
                p.shards,
                p.lines.len(),
                match (p.state, p.fixed) {
                    (IterationState::Succeeded, _) =>
                        " (it has succeeded: map tasks replay it)".to_string(),
                    (_, 0) => String::new(),
                    (_, f) => format!(
                        " ({f} with fixed ends, replayed; the iteration runs again because it \
                         has not been marked succeeded — `kinesis-reader finish` after the job)"
                    ),
                }
            );
            Ok(0)
        }
        Some(Command::DeregisterConsumer { name }) => {
            let stream = config::stream_setting(&cli.common, &layers)?;
            let sdk = aws::sdk_config(&config::aws_settings(&cli.common, &layers)?).await?;
            let api = KinesisStream::new(&sdk, &stream);
            use kinesis_streaming::stream::StreamApi;
            let gone = api
                .deregister_consumer(&name)
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
        Some(Command::Finish { force }) => {
            let cfg = ReaderConfig::resolve(&cli.common, &cli.read, &layers, None)?;
            if !matches!(
                cfg.checkpoint.as_ref().map(|c| c.iteration),
                Some(IterationRequest::Number(_))
            ) {
                return Err(ReaderError::Usage(
                    "finish needs the planned iteration's number: --iteration N".into(),
                )
                .into());
            }
            let (api, store) = clients(&cfg).await?;
            let (n, done) =
                reader::confirm(api.as_ref(), store.as_ref(), &cfg, &owner_id(), force).await?;
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
        None => {
            let assignment = if cli.read.shards_from_stdin {
                let mut input = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
                    .map_err(|e| anyhow::anyhow!("reading the manifest from stdin: {e}"))?;
                let a = manifest::input_lines(&input)
                    .and_then(|text| manifest::assignment(&text))
                    .map_err(ReaderError::Usage)?;
                config::apply_manifest(&mut cli.common, &mut cli.read, &layers, &a)?;
                Some(a)
            } else {
                None
            };
            let cfg = ReaderConfig::resolve(&cli.common, &cli.read, &layers, assignment.as_ref())?;
            let code = read(cfg, cli.read.hadoop_reporter, cli.verbosity.quiet).await?;
            Ok(code)
        }
    }
}

/// The stream and the checkpoint table (checked) for `plan` and `finish`.
async fn clients(cfg: &ReaderConfig) -> Result<(Arc<KinesisStream>, Arc<DynamoStore>)> {
    let cp = cfg
        .checkpoint
        .as_ref()
        .ok_or_else(|| ReaderError::Usage("this needs --checkpoint-table T".into()))?;
    let sdk = aws::sdk_config(&cfg.aws).await?;
    let store = Arc::new(DynamoStore::new(&sdk, cp.table.clone()));
    store.check_table().await?;
    Ok((Arc::new(KinesisStream::new(&sdk, &cfg.stream)), store))
}

async fn read(mut cfg: ReaderConfig, reporter: bool, quiet: bool) -> Result<u8> {
    // Per-shard progress when a person watches stderr (and stdout goes elsewhere).
    let watched = !quiet && std::io::stderr().is_terminal() && !std::io::stdout().is_terminal();
    let meter = watched.then(|| Arc::new(kinesis_streaming::progress::Shards::default()));
    cfg.read.meter = meter.clone();
    if let Some(program) = cfg.command.first() {
        if let Some(why) = not_runnable(program) {
            return Err(ReaderError::Usage(format!(
                "command {program:?} (after --) cannot be run: {why}"
            ))
            .into());
        }
    }
    let sdk = aws::sdk_config(&cfg.aws).await?;
    let api = Arc::new(KinesisStream::new(&sdk, &cfg.stream));
    let dynamo = match &cfg.checkpoint {
        Some(cp) => {
            let s = Arc::new(DynamoStore::new(&sdk, cp.table.clone()));
            s.check_table().await?;
            Some(s)
        }
        None => None,
    };
    let store = dynamo.clone().map(|s| s as Arc<dyn CheckpointStore>);
    let owner = owner_id();
    // The heartbeat starts before the iteration is opened: a retried or
    // speculative attempt may wait for the first attempt's lease, silent
    // for as long as --lease-wait, and Hadoop kills a silent task.
    let progress = Arc::new(kinesis_streaming::progress::Progress::default());
    let hadoop =
        reporter || kinesis_streaming::progress::under_hadoop(&|k: &str| std::env::var(k).ok());
    let heartbeat = hadoop.then(|| {
        kinesis_streaming::progress::spawn_heartbeat(
            progress.clone(),
            "kinesis-reader",
            cfg.status_interval,
        )
    });
    // Open the iteration first: a child is told which one it gets.
    let prepared = reader::prepare(api, store, &cfg, &owner).await?;
    let (out, mut child, stop): (Box<dyn Write + Send>, Option<Child>, reader::Stop) =
        match cfg.command.split_first() {
            None => {
                // The reader buffers its output in large blocks itself (and
                // flushes before any wait), so stdout gets whole blocks.
                let out: Box<dyn Write + Send> = Box::new(std::io::stdout());
                (
                    out,
                    None,
                    Box::pin(async { kinesis_streaming::error::interrupted().await.to_string() }),
                )
            }
            Some((program, args)) => {
                let (stream, it) = prepared.context();
                let mut cmd = Process::new(program);
                cmd.args(args).stdin(Stdio::piped());
                cmd.env(exported::STREAM, &stream)
                    .env(mangle(names::STREAM), &stream);
                if let Some((logical, n, opened_ms)) = it {
                    cmd.env(exported::LOGICAL_NAME, &logical)
                        .env(mangle(names::LOGICAL_NAME), &logical)
                        .env(exported::ITERATION, n.to_string())
                        .env(mangle(names::ITERATION), n.to_string())
                        .env(exported::ITERATION_START, fmt_ms(opened_ms));
                }
                let mut c = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        // Nothing was read: give the iteration back at once.
                        prepared.abandon().await;
                        return Err(anyhow::anyhow!("starting {program:?}: {e}"));
                    }
                };
                let stdin = c.stdin.take().expect("piped");
                let out = Box::new(stdin);
                let pid = c.id() as i32;
                (out, Some(c), forward_signals(pid))
            }
        };
    // Progress on a terminal's stderr; counted where lines leave the buffer.
    let out: Box<dyn Write + Send> = Box::new(kinesis_streaming::progress::Counting {
        inner: out,
        progress: progress.clone(),
    });
    let shard_count = prepared.shard_count();
    let recorded = prepared.recorded();
    let display =
        meter.map(|m| kinesis_streaming::progress::spawn_display(progress, m, shard_count));
    let summary = reader::run(prepared, &cfg, out, stop, child.is_some()).await;
    kinesis_streaming::progress::stop_display(display);
    if let Some(h) = heartbeat {
        h.abort();
    }
    let mut code = 0u8;
    let summary = match child.take() {
        // `| head`: a closed pipe is a normal end (exit 0), but say that the
        // iteration was not completed, or a scheduler would never know.
        None => match summary {
            Err(e) if exit_for(&e) == Exit::Ok => {
                if let Some(what) = incomplete(recorded) {
                    log::warn!("the output was closed before the end: {what}");
                }
                return Ok(0);
            }
            s => s?,
        },
        Some(c) => {
            // The reader's end of the pipe is closed: wait for the child.
            let status = tokio::task::spawn_blocking(move || wait(c)).await??;
            code = status;
            match summary {
                Ok(mut s) => {
                    if let Some(h) = s.held.take() {
                        h.finish(status == 0).await?;
                    }
                    if status != 0 && cfg.map.is_some() {
                        log::warn!(
                            "the command exited with {status}: this task failed; its shards' \
                             fixed ends stay, so a retry replays exactly the same records"
                        );
                    } else if status != 0 {
                        log::warn!(
                            "the command exited with {status}: the iteration is marked failed \
                             (--iteration next runs it again)"
                        );
                    }
                    s
                }
                // The child stopped reading early.
                Err(e) if exit_for(&e) == Exit::Ok => {
                    let what = incomplete(recorded)
                        .unwrap_or_else(|| "it did not get every record".into());
                    if status == 0 {
                        return Err(ReaderError::Undrained(format!(
                            "the command exited 0 without reading all of its input: {what}"
                        ))
                        .into());
                    }
                    log::warn!(
                        "the command exited with {status} before reading all of its input: {what}"
                    );
                    return Ok(code);
                }
                // A lost lease is exit 3 whatever the command did: its
                // output is not the iteration's.
                Err(e) if status == 0 || exit_for(&e) == Exit::IterationOwned => return Err(e),
                Err(e) => {
                    eprintln!("kinesis-reader: {e:#}");
                    return Ok(code);
                }
            }
        }
    };
    if hadoop {
        eprint!(
            "{}",
            kinesis_streaming::progress::counter_lines(
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
        "{what}: {} records ({} bytes) from {} shards ({} fixed now, {} replayed) in {:.1}s",
        summary.records,
        summary.bytes,
        summary.shards,
        summary.fixed_now,
        summary.replayed,
        summary.elapsed.as_secs_f64()
    );
    if let Some(d) = dynamo {
        log::debug!("checkpoint table requests: {}", d.usage());
    }
    let (direct, by_sdk) = aws::get_records::pages();
    log::debug!("GetRecords answers: {direct} decoded directly, {by_sdk} by the SDK");
    Ok(code)
}

/// What an early end means for a run that records its outcome.
fn incomplete(recorded: Option<(u64, bool)>) -> Option<String> {
    recorded.map(|(n, task)| match task {
        false => format!(
            "iteration {n} was not completed and is marked failed (--iteration next runs it again)"
        ),
        true => format!(
            "this task's shards of iteration {n} that were not read to their end stay unfixed, \
             so a retry of the task reads them"
        ),
    })
}

/// The child's exit status as a shell reports it (128 + signal if killed).
fn wait(mut c: Child) -> std::io::Result<u8> {
    use std::os::unix::process::ExitStatusExt;
    let s = c.wait()?;
    Ok(match (s.code(), s.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        _ => 1,
    })
}

/// Passes SIGINT and SIGTERM on to the child; the returned future resolves
/// at the first one, so that the reader stops reading too.
fn forward_signals(pid: i32) -> reader::Stop {
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut tx = Some(tx);
        loop {
            let (sig, name) = tokio::select! {
                _ = int.recv() => (libc::SIGINT, "SIGINT"),
                _ = term.recv() => (libc::SIGTERM, "SIGTERM"),
            };
            // SAFETY: kill(2) with our own child's pid and a valid signal number.
            unsafe {
                libc::kill(pid, sig);
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(name.to_string());
            }
        }
    });
    Box::pin(async move { rx.await.unwrap_or_default() })
}

/// Why `program` cannot be run, if it cannot: it must be an executable file,
/// given as a path or found on the PATH, as execvp(3) looks for it.
fn not_runnable(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = std::path::Path::new(program);
        return match std::fs::metadata(p) {
            Err(_) => Some("no such file".into()),
            Ok(m) if !m.is_file() => Some("not a file".into()),
            Ok(_) if !executable(p) => Some(format!(
                "not executable (chmod +x {program}, or run it through its interpreter, e.g. \
                 -- python3 {program})"
            )),
            Ok(_) => None,
        };
    }
    let dirs: Vec<_> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if dirs.iter().any(|d| executable(&d.join(program))) {
        return None;
    }
    Some(match dirs.iter().find(|d| d.join(program).is_file()) {
        Some(d) => format!("{} is not executable", d.join(program).display()),
        None => "not found on the PATH".into(),
    })
}

/// Who holds a lease: host, process and start time, so `status` says who.
fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        kinesis_streaming::now_ms()
    )
}
