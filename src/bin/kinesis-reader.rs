//! `kinesis-reader`: parse, build, run, map errors to exit codes.

use anyhow::Result;
use clap::Parser;
use kinesis_streaming::aws::{self, checkpoint_table::DynamoStore, kinesis::KinesisStream};
use kinesis_streaming::checkpoint::{CheckpointStore, LogicalKey};
use kinesis_streaming::config::{self, Cli, Command, Layers, ReaderConfig};
use kinesis_streaming::error::{exit_for, Exit, ReaderError};
use kinesis_streaming::stream::stream_name;
use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default()
            .default_filter_or("kinesis_reader=info,kinesis_streaming=info,warn"),
    )
    .format_target(false)
    .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(cli));
    // Do not wait for a thread still blocked on stdin or stdout.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            let code = exit_for(&e);
            if code != Exit::Ok {
                eprintln!("kinesis-reader: {e:#}");
            }
            code.into()
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
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
            Ok(())
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
            Ok(())
        }
        None => read(ReaderConfig::resolve(&cli.common, &cli.read, &layers)?).await,
    }
}

async fn read(cfg: ReaderConfig) -> Result<()> {
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
    // Block-buffered even on a terminal-less pipe (Rust's stdout is line-buffered).
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let out: Box<dyn Write + Send> = if tty {
        Box::new(LineFlush(BufWriter::new(stdout)))
    } else {
        Box::new(BufWriter::with_capacity(64 * 1024, stdout))
    };
    // Progress on a terminal's stderr; counted where lines leave the buffer.
    let progress = Arc::new(kinesis_streaming::progress::Progress::default());
    let out: Box<dyn Write + Send> = Box::new(kinesis_streaming::progress::Counting {
        inner: out,
        progress: progress.clone(),
    });
    let ticker = (std::io::stderr().is_terminal() && !tty)
        .then(|| kinesis_streaming::progress::spawn_ticker(progress, "kinesis-reader"));
    let owner = owner_id();
    let stop = Box::pin(async { interrupted().await.to_string() });
    let summary = kinesis_streaming::reader::read(api, store, &cfg, &owner, out, stop).await;
    kinesis_streaming::progress::stop_ticker(ticker);
    let summary = summary?;
    if kinesis_streaming::progress::under_hadoop(&|k: &str| std::env::var(k).ok()) {
        eprint!(
            "{}",
            kinesis_streaming::progress::counter_lines(
                "KinesisReader",
                &[
                    ("records", summary.records),
                    ("bytes", summary.bytes),
                    ("shards", summary.shards as u64),
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
    Ok(())
}

/// On a terminal, show each line as it comes.
struct LineFlush<W: Write>(W);
impl<W: Write> Write for LineFlush<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
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
