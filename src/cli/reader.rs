//! `kinesis-reader`'s command line.

use super::Verbosity;
use crate::format::{DataEncoding, OutputFormat};
use crate::shard::Until;
use clap::{Args, Parser, Subcommand};

/// The end of `kinesis-reader --help`: the EMR names, one worked job, the
/// exit codes (the README's "Exit codes").
const READER_AFTER_HELP: &str = "\
Every setting can also be given by its EMR name, as -D name=value or as the Hadoop-mangled \
environment variable (e.g. kinesis_checkpoint_iteration_no).

Example: the top errors of each iteration, rerunnable, on a cron schedule:
  kinesis-reader create-table --checkpoint-table emr-checkpoints
  kinesis-reader --stream access-logs --checkpoint-table emr-checkpoints \\
      --logical-name top-errors --iteration next -- \\
    bash -o pipefail -c 'python3 mapper.py | sort | python3 reducer.py \\
                         | kinesis-writer s3://results/top-errors/'
The iteration succeeds only if the whole pipeline exits 0; otherwise the next run reads the same \
records again, and the writer replaces its object for that iteration instead of adding one.

Exit codes: 0 ok (also when the reader of the output stopped early: a warning then says that \
the iteration will be rerun), 1 failure, 2 usage, 3 iteration owned \
by another run or taken over, 4 data expired, 5 exec command exited 0 without reading all of its \
input, 130 interrupted; in exec mode otherwise the command's own status.";

#[derive(Parser, Debug)]
#[command(
    name = "kinesis-reader",
    version = super::VERSION,
    about = "Print one checkpointed iteration of a Kinesis stream as tab-separated lines",
    subcommand_value_name = "SUBCOMMAND",
    subcommand_help_heading = "Subcommands",
    after_help = READER_AFTER_HELP
)]
pub struct ReaderCli {
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
        #[arg(long, default_value_t = 20, allow_negative_numbers = true, value_parser = super::whole::<usize>)]
        last: usize,
    },
    /// Open an iteration for map tasks (its shards and starts are fixed) and print its
    /// manifest: one line per group of shards, for NLineInputFormat or `--shards-from-stdin`.
    Plan {
        /// Shards per manifest line (per map task); a child and its parents in the iteration stay on one line.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = super::whole::<usize>)]
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

/// What each subcommand does not use, by argument id: hidden from its
/// `--help`, and refused when given (`config/reader.rs`), so that nothing
/// given is silently ignored.
pub const NOT_FOR: [(&str, &[&str]); 4] = [
    (
        "finish",
        &[
            "rerun_without_wait",
            "start_position",
            "lease_duration",
            "efo_consumer",
        ],
    ),
    (
        "create-table",
        &[
            "stream",
            "logical_name",
            "iteration",
            "rerun_without_wait",
            "start_position",
            "lease_wait",
            "lease_duration",
            "efo_consumer",
        ],
    ),
    (
        "status",
        &[
            "iteration",
            "rerun_without_wait",
            "start_position",
            "lease_wait",
            "lease_duration",
            "efo_consumer",
        ],
    ),
    (
        "deregister-consumer",
        &[
            "checkpoint_table",
            "hash_key",
            "range_key",
            "logical_name",
            "iteration",
            "rerun_without_wait",
            "start_position",
            "lease_wait",
            "lease_duration",
            "efo_consumer",
        ],
    ),
];

/// Settings every sub-command shares.
#[derive(Args, Debug, Default, Clone)]
pub struct CommonArgs {
    /// Stream name or ARN [kinesis.stream.name].
    #[arg(help_heading = "Stream", long, global = true)]
    pub stream: Option<String>,
    /// AWS region [kinesis.endpoint.region].
    #[arg(help_heading = "AWS", long, global = true)]
    pub region: Option<String>,
    /// Named profile from the AWS config files.
    #[arg(help_heading = "AWS", long, global = true)]
    pub profile: Option<String>,
    /// Endpoint for every AWS service (AWS_ENDPOINT_URL[_KINESIS|_DYNAMODB] also work).
    #[arg(help_heading = "AWS", long, global = true)]
    pub endpoint_url: Option<String>,
    /// Allow a plain-HTTP endpoint on another host than this one (credentials-signed requests
    /// then cross the network unencrypted).
    #[arg(help_heading = "AWS", long, global = true)]
    pub allow_insecure_endpoint: bool,
    /// DynamoDB table for checkpoints [kinesis.checkpoint.metastore.table.name].
    #[arg(help_heading = "Checkpoints", long, global = true)]
    pub checkpoint_table: Option<String>,
    /// The table's hash key name [kinesis.checkpoint.metastore.hash.key.name] (default HashKey).
    #[arg(help_heading = "Checkpoints", long, global = true)]
    pub hash_key: Option<String>,
    /// The table's range key name [kinesis.checkpoint.metastore.range.key.name] (default RangeKey).
    #[arg(help_heading = "Checkpoints", long, global = true)]
    pub range_key: Option<String>,
    /// Name under which iterations are kept [kinesis.checkpoint.logical.name].
    #[arg(help_heading = "Checkpoints", long, global = true)]
    pub logical_name: Option<String>,
    /// An EMR setting, as NAME=VALUE (repeatable).
    #[arg(
        help_heading = "Hadoop",
        short = 'D',
        value_name = "NAME=VALUE",
        global = true
    )]
    pub define: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ReadArgs {
    /// Iteration number, or `next` (`finish` takes only a number) [kinesis.checkpoint.iteration.no].
    #[arg(
        help_heading = "Checkpoints",
        long,
        global = true,
        allow_negative_numbers = true
    )]
    pub iteration: Option<String>,
    /// Take over an iteration another run holds, at once [kinesis.rerun.iteration.without.wait].
    #[arg(help_heading = "Checkpoints", long, global = true)]
    pub rerun_without_wait: bool,
    /// Where the first iteration starts: trim-horizon, latest, at-timestamp=RFC3339.
    #[arg(help_heading = "Stream", long, global = true)]
    pub start_position: Option<String>,
    /// End rule: `snapshot` (what was in the stream at the start) or `timeouts` (EMR's).
    #[arg(help_heading = "Stream", long, value_enum)]
    pub until: Option<Until>,
    /// Stop a shard after no new record for this long; bare numbers are minutes [kinesis.nodata.timeout].
    #[arg(help_heading = "Stream", long)]
    pub nodata_timeout: Option<String>,
    /// Hard cap on an iteration's reading time; bare numbers are minutes [kinesis.iteration.timeout].
    #[arg(help_heading = "Stream", long)]
    pub iteration_timeout: Option<String>,
    /// Records per GetRecords call at most, 1..10000 [kinesis.records.batchsize].
    #[arg(help_heading = "Stream", long)]
    pub batch_size: Option<String>,
    /// When a stored position has aged out of the stream's retention: fail (exit 4) or skip
    /// to the oldest record left (loudly, and recorded in the checkpoint table).
    #[arg(help_heading = "Stream", long, value_enum, default_value_t = crate::expiry::OnExpired::Fail)]
    pub on_expired: crate::expiry::OnExpired,
    /// Read at most this many MiB/s from each shard (the service allows 2 MiB/s per shard
    /// for all readers together: lower it when several logical names share a stream).
    #[arg(
        help_heading = "Stream",
        long,
        default_value_t = 2.0,
        allow_negative_numbers = true
    )]
    pub max_read_rate: f64,
    /// Least time between GetRecords calls on one shard (benchmarks against an emulator only).
    #[arg(help_heading = "Stream", long, hide = true, default_value = "200ms")]
    pub min_call_interval: String,
    /// The most memory the pages being read may take, whatever the number of shards: each
    /// shard's GetRecords Limit is sized so that its pages fit its share (enhanced fan-out's
    /// pushed pages are not limited) [default: 512MiB].
    #[arg(
        help_heading = "Stream",
        long,
        value_name = "SIZE",
        allow_hyphen_values = true
    )]
    pub max_memory: Option<String>,
    /// Print KPL aggregated records as they are, instead of their sub-records.
    #[arg(help_heading = "Stream", long)]
    pub no_deaggregate: bool,
    /// Output fields, comma-separated (default partition_key,data).
    #[arg(help_heading = "Output", long)]
    pub fields: Option<String>,
    /// How record data (and partition keys) are written in TSV [default: escape].
    #[arg(help_heading = "Output", long, value_enum)]
    pub data_encoding: Option<DataEncoding>,
    /// Output format.
    #[arg(help_heading = "Output", long, value_enum, default_value_t = OutputFormat::Tsv)]
    pub format: OutputFormat,
    /// How long to wait for another run's lease on the iteration before exiting with code 3
    /// [default: 5m].
    #[arg(help_heading = "Checkpoints", long, global = true)]
    pub lease_wait: Option<String>,
    /// How long a lease lasts without renewal (a crashed run blocks its iteration this long)
    /// [default: 30s].
    #[arg(help_heading = "Checkpoints", long, global = true)]
    pub lease_duration: Option<String>,
    /// Map mode: read only the shards named by the manifest lines on stdin (from `plan`;
    /// Hadoop's `<offset><TAB><line>` form too). Stream, logical name and iteration come
    /// from the manifest.
    #[arg(help_heading = "Hadoop", long, conflicts_with = "task")]
    pub shards_from_stdin: bool,
    /// Map mode: read task I's share (of N) of a planned iteration's shards. Inside a Hadoop
    /// map task, mapreduce_task_partition / mapreduce_job_maps set it (even for one map).
    #[arg(help_heading = "Hadoop", long, value_name = "I/N")]
    pub task: Option<String>,
    /// Write Hadoop `reporter:` counter and status lines on stderr even outside a Hadoop task.
    #[arg(help_heading = "Hadoop", long)]
    pub hadoop_reporter: bool,
    /// Under Hadoop: how often the `reporter:status:` heartbeat is written; keep it well under
    /// the job's mapreduce.task.timeout (600 s by default) [kinesis.hadoop.status.interval;
    /// default: 30s].
    #[arg(help_heading = "Hadoop", long, value_name = "DURATION")]
    pub status_interval: Option<String>,
    /// Read with enhanced fan-out (SubscribeToShard) as the stream consumer NAME, registering
    /// it if needed (it stays registered: `kinesis-reader deregister-consumer NAME` removes it).
    /// Given to `plan`, the manifest names it, and map tasks reading as NAME need not look it
    /// up.
    #[arg(help_heading = "Stream", long, value_name = "NAME", global = true)]
    pub efo_consumer: Option<String>,
    /// Read at most N shards at a time (default: all at once): shards are read in groups of N
    /// in shard-id order, and the output is group after group.
    #[arg(help_heading = "Stream", long, value_name = "N", allow_negative_numbers = true, value_parser = super::positive::<usize>)]
    pub max_concurrent_shards: Option<usize>,
    /// Exec mode: run this command with the records on its stdin (after `--`); the iteration
    /// succeeds only if it exits 0, and its exit status is the reader's.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}
