//! kinesis-streaming: checkpointed, replayable *iterations* of an Amazon Kinesis
//! stream, printed as lines for Hadoop Streaming and Unix pipelines.
//!
//! Nothing in the library touches the process's stdin, stdout or environment
//! directly, except the mode functions in [`commands`]: the binaries in
//! `src/bin/` parse, resolve and hand over. The README's "Design" section
//! has the module map: what each module owns and what it may call.

// The way in: command lines, settings, modes, exit codes.
pub mod cli;
pub mod commands;
pub mod config;
pub mod descriptors;
pub mod error;
pub mod exec;
pub mod feed;
pub mod stop;

// The reader's run logic: which shards, opening an iteration, reading it.
pub mod expiry;
pub mod integrity;
pub mod iteration;
pub mod lineage;
pub mod manifest;
pub mod merge;
pub mod pages;
pub mod run;
pub mod shard;
pub mod status;

// Values: records, positions, output lines, time.
pub mod clock;
pub mod format;
pub mod kpl;
pub mod position;
pub mod records;
pub mod words;

// The writer.
pub mod sink;

// The outside world: ports, their AWS adapters, in-memory fakes.
pub mod aws;
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
pub mod ports;
pub mod simulation;

// Progress on a terminal, Hadoop counters and heartbeats.
pub mod progress;

#[doc(hidden)]
pub mod fuzzing;
