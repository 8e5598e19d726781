//! `kinesis-writer`'s command line.

use super::Verbosity;
use clap::{Parser, ValueEnum};

/// The end of `kinesis-writer --help`: where the iteration comes from, one
/// worked example, the exit codes (the README's "Exit codes").
const WRITER_AFTER_HELP: &str = "\
The iteration context also comes from EMR names (-D kinesis.checkpoint.logical.name=L, \
-D kinesis.checkpoint.iteration.no=N, or their Hadoop-mangled environment variables) and from \
KINESIS_LOGICAL_NAME / KINESIS_ITERATION / KINESIS_STREAM / KINESIS_ITERATION_START, which \
kinesis-reader sets for its command in exec mode. The part number comes from --partition or \
Hadoop's mapreduce_task_partition.

Example: a reducer's counts, added once per iteration to a DynamoDB table:
  kinesis-reader --stream access-logs --checkpoint-table emr-checkpoints \\
      --logical-name error-counts --iteration next -- \\
    bash -o pipefail -c 'python3 mapper.py | sort | python3 reducer.py \\
                         | kinesis-writer dynamodb://error-counts --columns error:S,count:N \\
                           --mode add'
Rerunning the iteration adds nothing twice: each item records the iterations it has taken.

Exit codes: 0 ok, 1 failure, 2 usage, 130 interrupted.";

/// `kinesis-writer`'s command line.
#[derive(Parser, Debug)]
#[command(
    name = "kinesis-writer",
    version = super::VERSION,
    about = "Load tab-separated lines from stdin into S3 or DynamoDB, idempotently per iteration",
    after_help = WRITER_AFTER_HELP
)]
pub struct WriterCli {
    #[command(flatten)]
    pub verbosity: Verbosity,
    /// s3://BUCKET/PREFIX/ (object named from the iteration), s3://BUCKET/KEY, or dynamodb://TABLE.
    pub target: String,
    /// Logical name of the iteration [kinesis.checkpoint.logical.name].
    #[arg(help_heading = "Iteration", long)]
    pub logical_name: Option<String>,
    /// Iteration number [kinesis.checkpoint.iteration.no].
    #[arg(help_heading = "Iteration", long, allow_negative_numbers = true)]
    pub iteration: Option<String>,
    /// Stream name, for {stream} in key templates [kinesis.stream.name].
    #[arg(help_heading = "Iteration", long)]
    pub stream: Option<String>,
    /// This writer's part number (default: $mapreduce_task_partition, else 0).
    #[arg(help_heading = "Iteration", long, allow_negative_numbers = true, value_parser = super::whole::<u32>)]
    pub partition: Option<u32>,
    /// When the iteration opened (RFC 3339), for {date} and {hour}.
    #[arg(help_heading = "Iteration", long)]
    pub iteration_start: Option<String>,
    /// AWS region [kinesis.endpoint.region].
    #[arg(help_heading = "AWS", long)]
    pub region: Option<String>,
    /// Named profile from the AWS config files.
    #[arg(help_heading = "AWS", long)]
    pub profile: Option<String>,
    /// Endpoint for every AWS service (AWS_ENDPOINT_URL[_S3|_DYNAMODB] also work).
    #[arg(help_heading = "AWS", long)]
    pub endpoint_url: Option<String>,
    /// Allow a plain-HTTP endpoint on another host than this one.
    #[arg(help_heading = "AWS", long)]
    pub allow_insecure_endpoint: bool,
    /// An EMR setting, as NAME=VALUE (repeatable).
    #[arg(help_heading = "Iteration", short = 'D', value_name = "NAME=VALUE")]
    pub define: Vec<String>,
    /// What to do with a bad line: fail, skip, or dead-letter=PATH (written verbatim).
    #[arg(help_heading = "Input", long, default_value = "fail")]
    pub on_bad_line: String,

    /// S3: object name under a prefix target; placeholders {logical_name} {iteration}
    /// {partition} {stream} {date} {hour} [default: iteration={iteration}/part-{partition}].
    #[arg(help_heading = "S3", long)]
    pub key_template: Option<String>,
    /// S3: part size (5MiB to 5GiB; doubles after every 1,000 parts, up to 5GiB) [default:
    /// 8MiB].
    #[arg(help_heading = "S3", long, allow_hyphen_values = true)]
    pub part_size: Option<String>,
    /// S3: parts uploaded at once, 1 to 64 [default: 4].
    #[arg(help_heading = "S3", long, allow_negative_numbers = true, value_parser = super::whole::<usize>)]
    pub parts_in_flight: Option<usize>,
    /// S3: compress the object (adds .gz / .zst to a generated name; an exact key must end
    /// with it) [default: none].
    #[arg(help_heading = "S3", long, value_enum)]
    pub compress: Option<crate::sink::s3::Compression>,
    /// S3: write an empty _SUCCESS object beside the output when done, as Hadoop does.
    #[arg(help_heading = "S3", long)]
    pub success_marker: bool,
    /// S3: write no object at all for empty input (default: an empty object).
    #[arg(help_heading = "S3", long)]
    pub skip_empty: bool,

    /// DynamoDB: NAME:TYPE per field (S N B BOOL NULL SS NS JSON); the first one or two are the key.
    #[arg(help_heading = "DynamoDB", long)]
    pub columns: Option<String>,
    /// DynamoDB: put overwrites items; add adds numeric columns once per iteration
    /// [default: put].
    #[arg(help_heading = "DynamoDB", long, value_enum)]
    pub mode: Option<crate::sink::dynamodb::Mode>,
    /// DynamoDB: BatchWriteItem calls in flight, 1 to 64 [default: 4].
    #[arg(help_heading = "DynamoDB", long, allow_negative_numbers = true, value_parser = super::whole::<usize>)]
    pub batches_in_flight: Option<usize>,
    /// DynamoDB: at most this many items per second.
    #[arg(help_heading = "DynamoDB", long, allow_negative_numbers = true)]
    pub write_rate: Option<f64>,
    /// DynamoDB: at most this percent of the table's provisioned write capacity.
    #[arg(help_heading = "DynamoDB", long, allow_negative_numbers = true)]
    pub write_capacity_percent: Option<f64>,
    /// How fields are written: escape (\t \n \r \\ as kinesis-reader writes them) or raw.
    #[arg(help_heading = "Input", long, value_enum, default_value_t = FieldEncoding::Escape)]
    pub field_encoding: FieldEncoding,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FieldEncoding {
    Escape,
    Raw,
}
