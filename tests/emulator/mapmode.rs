//! Map mode against moto: `plan` fixes an iteration and prints its manifest,
//! map tasks read their shards side by side, retries replay, `finish` moves
//! `next` on.

use crate::harness::*;
use std::collections::BTreeSet;

const FIELDS: &str = "shard_id,sequence_number,partition_key,data";

fn plan(stream: &str, table: &str, logical: &str, extra: &[&str]) -> (Vec<String>, String) {
    let mut a = vec![
        "plan",
        "--stream",
        stream,
        "--checkpoint-table",
        table,
        "--logical-name",
        logical,
    ];
    a.extend_from_slice(extra);
    let o = reader(&a);
    let err = stderr(&o);
    let out = String::from_utf8(ok(o)).unwrap();
    (out.lines().map(str::to_string).collect(), err)
}

fn finish(stream: &str, table: &str, logical: &str, n: &str) -> std::process::Output {
    reader(&[
        "finish",
        "--stream",
        stream,
        "--checkpoint-table",
        table,
        "--logical-name",
        logical,
        "--iteration",
        n,
    ])
}

/// A map task as Hadoop runs it: settings from jobconf variables, its
/// manifest line on stdin as `<offset>\t<line>`.
fn map_task(table: &str, input: &str) -> Vec<u8> {
    ok(reader_input(
        &["--shards-from-stdin", "--fields", FIELDS],
        input.as_bytes(),
        &[
            ("kinesis_checkpoint_metastore_table_name", table),
            ("mapreduce_task_attempt_id", "attempt_test_m_000000_0"),
        ],
    ))
}

fn records(outs: &[&[u8]]) -> Vec<(String, String, String, String)> {
    let mut all: Vec<_> = outs.iter().flat_map(|o| parse_lines(o)).collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_iteration_read_by_map_tasks_equals_a_single_run_and_finish_moves_on() {
    let k = kinesis().await;
    let stream = unique("plan");
    create_stream(&k, &stream, 4).await;
    let table = table();
    let put0 = put_many(&k, &stream, 0, 60).await;

    let (manifest, err) = plan(&stream, &table, "M", &["--shards-per-line", "2"]);
    assert_eq!(manifest.len(), 2, "4 shards, 2 per line: {manifest:?}");
    assert!(
        err.contains("iteration 0") && err.contains("4 shards in 2 manifest lines"),
        "{err}"
    );

    // Two map tasks at once, each with its line (the second with Hadoop's offset).
    let (t0, t1) = {
        let (a, b) = (manifest[0].clone(), format!("{}\t{}\n", 123, manifest[1]));
        let (ta, tb) = (table.clone(), table.clone());
        let h0 = std::thread::spawn(move || map_task(&ta, &a));
        let h1 = std::thread::spawn(move || map_task(&tb, &b));
        (h0.join().unwrap(), h1.join().unwrap())
    };
    let mut expected: Vec<_> = put0.iter().map(Put::line).collect();
    expected.sort();
    assert_eq!(
        records(&[&t0, &t1]),
        expected,
        "every record once, across the tasks"
    );
    // Each task printed only its own shards.
    let shards_of =
        |o: &[u8]| -> BTreeSet<String> { parse_lines(o).into_iter().map(|l| l.0).collect() };
    assert!(shards_of(&t0).is_disjoint(&shards_of(&t1)));

    // Not finished yet: it is still `next`, and a retried task replays byte for byte.
    let st = status(&stream, &table, "M");
    assert_eq!(st[0]["state"], "open");
    let fixers: BTreeSet<String> = st[0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["fixed_by"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fixers.len(), 2, "two tasks fixed the shards: {fixers:?}");
    assert_eq!(map_task(&table, &manifest[0]), t0);
    put_many(&k, &stream, 60, 20).await;
    let (again, err) = plan(&stream, &table, "M", &["--shards-per-line", "2"]);
    assert_eq!(
        again, manifest,
        "an unfinished iteration is planned again, unchanged"
    );
    assert!(err.contains("has not been marked succeeded"), "{err}");

    let o = finish(&stream, &table, "M", "0");
    assert!(
        stderr(&o).contains("iteration 0 marked succeeded"),
        "{}",
        stderr(&o)
    );
    assert_eq!(status(&stream, &table, "M")[0]["state"], "succeeded");
    // A single run's replay of the whole iteration prints the same records.
    let single = ok(reader(&args(&stream, &table, "M", "0")));
    assert_eq!(records(&[&single]), expected);

    // Iteration 1 by `--task i/n`: the 20 new records, split between 3 tasks.
    let (m1, _) = plan(&stream, &table, "M", &[]);
    assert_eq!(m1.len(), 4);
    assert!(m1[0].contains("\"iteration\":1"));
    let mut outs = Vec::new();
    for i in 0..3 {
        let task = format!("{i}/3");
        let mut a = args(&stream, &table, "M", "next");
        a.extend(["--task", task.as_str()]);
        outs.push(ok(reader(&a)));
    }
    let got = records(&outs.iter().map(Vec::as_slice).collect::<Vec<_>>());
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|r| r.3.starts_with("record ") && {
        let i: usize = r.3["record ".len()..].parse().unwrap();
        (60..80).contains(&i)
    }));
}

#[tokio::test(flavor = "multi_thread")]
async fn map_tasks_refuse_what_was_not_planned_or_does_not_match() {
    let k = kinesis().await;
    let stream = unique("noplan");
    create_stream(&k, &stream, 2).await;
    let table = table();
    put_many(&k, &stream, 0, 5).await;

    // --task on an iteration nobody planned.
    let mut a = args(&stream, &table, "N", "next");
    a.extend(["--task", "0/2"]);
    let o = reader(&a);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("has not been planned: run `kinesis-reader plan`"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());

    let (manifest, _) = plan(&stream, &table, "N", &[]);
    // A manifest for another logical name than the jobconf says.
    let o = reader_input(
        &["--shards-from-stdin"],
        manifest[0].as_bytes(),
        &[
            ("kinesis_checkpoint_metastore_table_name", &table),
            ("kinesis_checkpoint_logical_name", "other"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("does not match the manifest"),
        "{}",
        stderr(&o)
    );
    // A shard the planned iteration does not have.
    let forged = manifest[0].replace("shardId-000000000000", "shardId-000000000009");
    let o = reader_input(
        &["--shards-from-stdin"],
        forged.as_bytes(),
        &[("kinesis_checkpoint_metastore_table_name", &table)],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not part of iteration 0"),
        "{}",
        stderr(&o)
    );
    // Not a manifest at all.
    let o = reader_input(
        &["--shards-from-stdin"],
        b"0\thello world\n",
        &[("kinesis_checkpoint_metastore_table_name", &table)],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("stdin line 1: not a manifest line"),
        "{}",
        stderr(&o)
    );
    // finish refuses while shards have no fixed end.
    let o = finish(&stream, &table, "N", "0");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is not complete: 2 of its 2 shards"),
        "{}",
        stderr(&o)
    );
}

/// A real Hadoop Streaming runner: mrjob's local runner starts one map task
/// per manifest line (kinesis-reader in map mode piping into mapper.py) and
/// two reducers, as Hadoop Streaming would. Its result must equal the plain
/// Unix pipeline's over the same iteration, and its counters must carry the
/// reader's.
#[tokio::test(flavor = "multi_thread")]
async fn mrjob_runs_the_streaming_job_over_a_plan_like_the_unix_pipeline() {
    let stream = unique("mrjob");
    let table = table();
    let py = |args: &[&str]| {
        let o = python(args, &[]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    py(&[
        "streaming-examples/log-analysis/produce.py",
        "--stream",
        &stream,
        "--shards",
        "3",
        "--records",
        "400",
        "--seed",
        "7",
    ]);
    let (manifest, _) = plan(&stream, &table, "top", &[]);
    assert_eq!(manifest.len(), 3);
    let dir = std::env::temp_dir().join(unique("mrjob-manifest"));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest_file = dir.join("manifest.txt");
    write_file(&manifest_file, &(manifest.join("\n") + "\n"));

    let jobconf = format!("kinesis.checkpoint.metastore.table.name={table}");
    let o = py(&[
        "streaming-examples/hadoop/mrjob_top_errors.py",
        "-r",
        "local",
        "--num-cores",
        "2",
        "--jobconf",
        &jobconf,
        manifest_file.to_str().unwrap(),
    ]);
    let mut mr: Vec<String> = String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    mr.sort();
    let log = stderr(&o);
    let counter = |name: &str| -> u64 {
        let at = log
            .find("KinesisReader")
            .unwrap_or_else(|| panic!("no KinesisReader counters in mrjob's log:\n{log}"));
        let rest = &log[at..];
        let line = rest
            .lines()
            .find(|l| l.trim().starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no counter {name}:\n{log}"));
        line.trim()[name.len() + 1..].parse().unwrap()
    };
    assert_eq!(counter("records"), 400, "{log}");
    assert_eq!(counter("shards"), 3);

    // Three map tasks (one per line) fixed the shards, each in its own process.
    let st = status(&stream, &table, "top");
    let fixers: BTreeSet<&str> = st[0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["fixed_by"].as_str().unwrap())
        .collect();
    assert_eq!(fixers.len(), 3, "{st}");

    // The Unix pipeline over the same iteration.
    let records = ok(reader(&[
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "top",
        "--iteration",
        "0",
    ]));
    let mut unix = log_analysis(&records, "--all");
    unix.sort();
    assert!(unix.len() > 5, "the data has errors to count: {unix:?}");
    assert_eq!(mr, unix);
    let _ = std::fs::remove_dir_all(&dir);
}
