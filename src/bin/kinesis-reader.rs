//! `kinesis-reader`: parse, resolve, run the mode, map errors to exit codes.

use anyhow::{Context, Result};
use kinesis_streaming::cli::{self, ReaderCli};
use kinesis_streaming::commands::{self, Watch};
use kinesis_streaming::config::{Layers, ReaderCommand};
use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main_with::<ReaderCli, _, _>("kinesis-reader", run)
}

async fn run(cli: ReaderCli) -> Result<u8> {
    let env = |k: &str| std::env::var(k).ok();
    let layers = Layers::new(&cli.common.define, &env)?;
    // Map mode: the manifest lines come on stdin.
    let manifest = if cli.command.is_none() && cli.read.shards_from_stdin {
        let mut input = Vec::new();
        std::io::stdin()
            .read_to_end(&mut input)
            .context("reading the manifest from stdin")?;
        Some(input)
    } else {
        None
    };
    let command = ReaderCommand::resolve(&cli, &layers, manifest.as_deref())?;
    let watch = Watch {
        quiet: cli.verbosity.quiet,
        hadoop_reporter: cli.read.hadoop_reporter,
    };
    commands::run(command, watch).await
}
