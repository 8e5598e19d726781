//! `kinesis-writer`: parse, resolve, write, map errors to exit codes.

use anyhow::Result;
use kinesis_streaming::cli::{self, WriterCli};
use kinesis_streaming::config::{Layers, WriterConfig};
use kinesis_streaming::error::ExitError;
use kinesis_streaming::progress::{self, Progress};
use kinesis_streaming::{aws, feed, sink, stop};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

fn main() -> ExitCode {
    cli::main_with::<WriterCli, _, _>("kinesis-writer", run)
}

async fn run(cli: WriterCli) -> Result<u8> {
    let started = Instant::now();
    let env = |k: &str| std::env::var(k).ok();
    let layers = Layers::for_writer(&cli.define, &env)?;
    let cfg = WriterConfig::resolve(&cli, &layers, &env)?;
    if kinesis_streaming::descriptors::closed_at_start(0) {
        return Err(ExitError::Usage(
            "standard input is closed (<&-), so there is nothing to load: give the writer its \
             input on stdin"
                .into(),
        )
        .into());
    }
    let store = aws::writer_store(&cfg).await?;
    let progress = Arc::new(Progress::default());
    let ticker = (!cli.verbosity.quiet && std::io::stderr().is_terminal())
        .then(|| progress::spawn_ticker(progress.clone(), "kinesis-writer"));
    // Under an exec-mode reader, the input ends only when the reader says
    // it delivered everything (a killed reader also ends it, cut short).
    let stdin = feed::Checked::new(std::io::stdin(), &env);
    let stop = stop::on_signal();
    let written = sink::run(
        &cfg.destination,
        &cfg.on_bad_line,
        store,
        stdin,
        stop,
        progress,
    )
    .await;
    progress::stop_display(ticker);
    let mut counters = written?;
    counters.push(("retries", aws::counters::retries()));
    counters.push(("throttles", aws::counters::throttled()));
    if progress::under_hadoop(&env) {
        eprint!("{}", progress::counter_lines("KinesisWriter", &counters));
    }
    log::debug!("done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(0)
}
