//! The real Hadoop Streaming (3.5 client, LocalJobRunner, from Maven
//! Central: scripts/engines) runs streaming-examples/hadoop/emr-streaming-job.sh
//! as it is: `plan`, one map task per manifest line, reducers into
//! kinesis-writer on the emulator's S3, then `finish`.

use crate::harness::*;
use std::path::PathBuf;
use std::sync::OnceLock;

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A classpath file resolved by `scripts/engines WHAT` (from ~/.m2), or
/// the one `scripts/test` named in `var`.
pub(crate) fn resolved(var: &str, what: &str) -> String {
    if let Ok(cp) = std::env::var(var) {
        return cp;
    }
    let o = std::process::Command::new(root().join("scripts/engines"))
        .arg(what)
        .output()
        .expect("scripts/engines (needs java and mvn)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Hadoop's classpath file.
pub(crate) fn classpath() -> &'static str {
    static CP: OnceLock<String> = OnceLock::new();
    CP.get_or_init(|| resolved("KINESIS_ENGINES_CLASSPATH", "classpath"))
}

pub(crate) fn streaming_jar() -> String {
    std::fs::read_to_string(classpath())
        .unwrap()
        .split(':')
        .find(|j| j.contains("/hadoop-streaming-"))
        .expect("hadoop-streaming on the classpath")
        .to_string()
}

/// Runs the EMR job script under the LocalJobRunner (2 map slots) in a
/// directory of its own; returns its output (the job client's log included).
fn emr_job(stream: &str, table: &str, logical: &str, output: &str, defines: &str) -> Output {
    job(
        "emr-streaming-job.sh",
        stream,
        table,
        logical,
        output,
        defines,
    )
}

/// Runs `streaming-examples/hadoop/<script>` the same way.
fn job(
    script: &str,
    stream: &str,
    table: &str,
    logical: &str,
    output: &str,
    defines: &str,
) -> Output {
    let work = std::env::temp_dir().join(unique("hadoop-job"));
    std::fs::create_dir_all(&work).unwrap();
    let bins = PathBuf::from(READER)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let defines = format!(
        "-D mapreduce.framework.name=local -D mapreduce.local.map.tasks.maximum=2 \
         -D hadoop.tmp.dir={} {defines}",
        work.join("tmp").display()
    );
    let script = root().join("streaming-examples/hadoop").join(script);
    let o = shell(
        &format!(
            "cd \"$WORK\" && {} \"$1\" \"$2\" \"$3\" \"$4\"",
            script.display()
        )
        .replace("$1", stream)
        .replace("$2", table)
        .replace("$3", logical)
        .replace("$4", output),
        &[
            ("WORK", work.to_str().unwrap()),
            ("KINESIS_BIN", &bins),
            ("STREAMING_JAR", &streaming_jar()),
            (
                "HADOOP",
                root().join("tests/engines/hadoop").to_str().unwrap(),
            ),
            ("KINESIS_ENGINES_CLASSPATH", classpath()),
            ("JOB_DIR", &format!("file://{}", work.display())),
            ("JOB_DEFINES", &defines),
            ("PYTHON", root().join(".venv/bin/python").to_str().unwrap()),
        ],
    );
    let _ = std::fs::remove_dir_all(&work);
    o
}

use std::process::Output;

/// A counter of the finished job, as the job client reports the job's
/// aggregated counters (`Counters: N` block).
pub(crate) fn job_counter(o: &Output, group: &str, name: &str) -> Option<u64> {
    let log = stderr(o) + &String::from_utf8_lossy(&o.stdout);
    let block = &log[log.rfind("Counters: ")?..];
    let group = &block[block.find(&format!("\t{group}\n"))?..];
    group
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("\t\t"))
        .find_map(|l| l.trim().strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
}

/// The S3 objects of one iteration, their lines sorted.
pub(crate) async fn job_result(bucket: &str, prefix: &str, n: u64) -> Vec<String> {
    let s3 = s3().await;
    let mut lines = Vec::new();
    for key in keys(&s3, bucket).await {
        if key.starts_with(&format!("{prefix}/iteration={n}/part-")) {
            let body = get(&s3, bucket, &key).await;
            lines.extend(String::from_utf8(body).unwrap().lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

pub(crate) fn produce(stream: &str, records: &str, seed: &str) {
    let o = python(
        &[
            "streaming-examples/log-analysis/produce.py",
            "--stream",
            stream,
            "--shards",
            "3",
            "--records",
            records,
            "--seed",
            seed,
        ],
        &[("AWS_DEFAULT_REGION", REGION)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A replay of iteration `n`.
pub(crate) fn replay(stream: &str, table: &str, logical: &str, n: u64) -> Vec<u8> {
    let n = n.to_string();
    ok(reader(&[
        "--stream",
        stream,
        "--checkpoint-table",
        table,
        "--logical-name",
        logical,
        "--iteration",
        &n,
    ]))
}

/// The Unix pipeline's answer over a replay of iteration `n`.
pub(crate) fn unix_pipeline(stream: &str, table: &str, logical: &str, n: u64) -> Vec<String> {
    let mut lines = log_analysis(&replay(stream, table, logical, n), "--all");
    lines.sort();
    lines
}

/// A "top 10 errors" job's output (`o`, over iteration 0 of logical name
/// "top") is the Unix pipeline's top 10, and the job finished the iteration.
fn assert_top_10(o: Output, stream: &str, table: &str) {
    assert!(o.status.success(), "{}", stderr(&o));
    let top: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(top.len(), 10, "{top:?}");
    assert_eq!(top, log_analysis(&replay(stream, table, "top", 0), ""));
    assert_eq!(status(stream, table, "top")[0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn hadoop_streaming_runs_the_emr_job_and_equals_the_unix_pipeline() {
    let stream = unique("hadoop");
    let table = table();
    let s3c = s3().await;
    let b = bucket(&s3c).await;
    let output = format!("s3://{b}/top/");
    produce(&stream, "600", "7");

    // Iteration 0: the mapper gets NLineInputFormat's `<offset>\t<line>`.
    let o = emr_job(&stream, &table, "top", &output, "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        job_counter(&o, "KinesisReader", "records"),
        Some(600),
        "{}",
        stderr(&o)
    );
    assert_eq!(job_counter(&o, "KinesisReader", "shards"), Some(3));
    let result = job_result(&b, "top", 0).await;
    assert!(!result.is_empty());
    assert_eq!(result, unix_pipeline(&stream, &table, "top", 0));
    assert_eq!(
        job_counter(&o, "KinesisWriter", "lines"),
        Some(result.len() as u64)
    );

    // Iteration 1, with the key stripped: the mapper gets the line alone.
    produce(&stream, "300", "8");
    let o = emr_job(
        &stream,
        &table,
        "top",
        &output,
        "-D stream.map.input.ignoreKey=true",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(job_counter(&o, "KinesisReader", "records"), Some(300));
    assert_eq!(
        job_result(&b, "top", 1).await,
        unix_pipeline(&stream, &table, "top", 1)
    );
    let st = status(&stream, &table, "top");
    let states: Vec<_> = st
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].clone())
        .collect();
    assert_eq!(states, ["succeeded", "succeeded"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_hadoop_job_is_planned_again_with_the_same_records() {
    let stream = unique("hadoop-fail");
    let table = table();
    let s3c = s3().await;
    let b = bucket(&s3c).await;
    produce(&stream, "300", "9");

    // A wrong setting (a table that does not exist) fails the map tasks:
    // the reader's one-line error is in the task's log, and nothing moves.
    let o = emr_job(
        &stream,
        &table,
        "top",
        &format!("s3://{b}/top/"),
        "-D kinesis.checkpoint.metastore.table.name=no-such-table",
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("kinesis-reader: checkpoint table \"no-such-table\" does not exist"),
        "{}",
        stderr(&o)
    );
    let st = status(&stream, &table, "top");
    assert_eq!(st[0]["state"], "open");
    assert!(
        st[0]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["next"].is_null()),
        "{st}"
    );

    // The reducers fail (no such bucket): the iteration is not finished.
    let o = emr_job(&stream, &table, "top", "s3://no-such-bucket/top/", "");
    assert!(!o.status.success());
    assert_ne!(status(&stream, &table, "top")[0]["state"], "succeeded");
    // The next run plans the same iteration, with the same records.
    let o = emr_job(&stream, &table, "top", &format!("s3://{b}/top/"), "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(job_counter(&o, "KinesisReader", "records"), Some(300));
    assert_eq!(
        job_result(&b, "top", 0).await,
        unix_pipeline(&stream, &table, "top", 0)
    );
    assert_eq!(status(&stream, &table, "top")[0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_typed_bytes_job_hands_the_reducer_every_byte_intact() {
    let k = kinesis().await;
    let stream = unique("typed");
    create_stream(&k, &stream, 2).await;
    let table = table();
    let s3c = s3().await;
    let b = bucket(&s3c).await;
    // Every byte value, and the ones a text job would split on.
    let every: Vec<u8> = (0..=255u8).collect();
    let mut sent = vec![
        ("all-bytes".to_string(), every.clone()),
        ("tabs".to_string(), b"a\tb\t\tc".to_vec()),
        ("newlines".to_string(), b"\n\nx\r\n".to_vec()),
        ("empty".to_string(), Vec::new()),
    ];
    for i in 0..20u8 {
        let data: Vec<u8> = every.iter().map(|x| x.wrapping_mul(i + 1)).collect();
        sent.push((format!("key-{}", i % 3), data));
    }
    for (key, data) in &sent {
        put(&k, &stream, key, data).await;
    }
    let o = job(
        "binary-records-job.sh",
        &stream,
        &table,
        "frames",
        &format!("s3://{b}/frames/"),
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    use base64::Engine;
    let mut received: Vec<(String, Vec<u8>)> = job_result(&b, "frames", 0)
        .await
        .iter()
        .map(|l| {
            let (key, data) = l.split_once('\t').expect("key<TAB>base64");
            let data = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap();
            (key.to_string(), data)
        })
        .collect();
    received.sort();
    sent.sort();
    assert_eq!(received, sent);
    assert_eq!(status(&stream, &table, "frames")[0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn pig_streams_a_manifest_through_the_reader_and_equals_the_unix_pipeline() {
    let stream = unique("pig");
    let table = table();
    produce(&stream, "600", "11");
    let work = std::env::temp_dir().join(unique("pig-job"));
    std::fs::create_dir_all(&work).unwrap();
    let pig_cp = resolved("KINESIS_PIG_CLASSPATH", "pig-classpath");
    let pig = format!(
        "{} -x local",
        root().join("tests/engines/pig/pig").display()
    );
    let java_opts = format!("-Xmx1g -Dhadoop.tmp.dir={}", work.join("tmp").display());
    let out = work.join("out");
    let script = root().join("streaming-examples/pig/top-errors.sh");
    let o = shell(
        &format!(
            "cd \"$WORK\" && {} {stream} {table} top \"$WORK/out\"",
            script.display()
        ),
        &[
            ("WORK", work.to_str().unwrap()),
            (
                "KINESIS_BIN",
                PathBuf::from(READER).parent().unwrap().to_str().unwrap(),
            ),
            ("KINESIS_PIG_CLASSPATH", &pig_cp),
            ("PIG", &pig),
            ("JAVA_OPTS", &java_opts),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut lines: Vec<String> = Vec::new();
    for part in std::fs::read_dir(out.join("iteration=0")).unwrap() {
        let path = part.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("part-")
        {
            let text = std::fs::read_to_string(path).unwrap();
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines.sort();
    assert!(!lines.is_empty());
    assert_eq!(lines, unix_pipeline(&stream, &table, "top", 0));
    assert_eq!(status(&stream, &table, "top")[0]["state"], "succeeded");
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_sql_transform_gives_the_unix_pipelines_top_10() {
    let stream = unique("spark");
    let table = table();
    produce(&stream, "600", "13");
    let python = resolved("KINESIS_PYSPARK_PYTHON", "pyspark");
    let work = std::env::temp_dir().join(unique("spark-job"));
    std::fs::create_dir_all(&work).unwrap();
    let script = root().join("streaming-examples/spark/top_errors_sql.py");
    let o = shell(
        &format!(
            "cd \"$WORK\" && \"$PY\" {} --stream {stream} --checkpoint-table {table} \
             --logical-name top",
            script.display()
        ),
        &[("WORK", work.to_str().unwrap()), ("PY", &python)],
    );
    let _ = std::fs::remove_dir_all(&work);
    assert_top_10(o, &stream, &table);
}

#[tokio::test(flavor = "multi_thread")]
async fn hive_transform_gives_the_unix_pipelines_top_10() {
    let stream = unique("hive");
    let table = table();
    produce(&stream, "600", "17");
    let work = std::env::temp_dir().join(unique("hive-job"));
    std::fs::create_dir_all(&work).unwrap();
    let hive_cp = resolved("KINESIS_HIVE_CLASSPATH", "hive-classpath");
    let java_opts = format!("-Xmx1g -Dhadoop.tmp.dir={}", work.join("tmp").display());
    let script = root().join("streaming-examples/hive/top-errors.sh");
    let o = shell(
        &format!("cd \"$WORK\" && {} {stream} {table} top", script.display()),
        &[
            ("WORK", work.to_str().unwrap()),
            (
                "KINESIS_BIN",
                PathBuf::from(READER).parent().unwrap().to_str().unwrap(),
            ),
            ("KINESIS_HIVE_CLASSPATH", &hive_cp),
            (
                "HIVE",
                root().join("tests/engines/hive/hive").to_str().unwrap(),
            ),
            ("JAVA_OPTS", &java_opts),
        ],
    );
    let _ = std::fs::remove_dir_all(&work);
    assert_top_10(o, &stream, &table);
}
