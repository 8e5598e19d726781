//! kinesis-reader against moto: iterations, replay, resume, ownership,
//! settings under their EMR names, and errors.

use crate::harness::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Output;

fn seq_num(s: &str) -> u128 {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_iterations_deliver_every_record_once_in_shard_order_and_replay_exactly() {
    let k = kinesis().await;
    let stream = unique("three");
    create_stream(&k, &stream, 3).await;
    let table = table();

    let mut put = put_many(&k, &stream, 0, 40).await;
    let out0 = ok(reader(&args(&stream, &table, "L", "next")));
    put.extend(put_many(&k, &stream, 40, 25).await);
    let out1 = ok(reader(&args(&stream, &table, "L", "next")));
    put.extend(put_many(&k, &stream, 65, 10).await);
    let out2 = ok(reader(&args(&stream, &table, "L", "next")));

    // Each iteration holds exactly what was put before it, after the previous one.
    assert_eq!(parse_lines(&out0).len(), 40);
    assert_eq!(parse_lines(&out1).len(), 25);
    assert_eq!(parse_lines(&out2).len(), 10);
    let mut all: Vec<_> = [&out0, &out1, &out2]
        .iter()
        .flat_map(|o| parse_lines(o))
        .collect();
    let mut per_shard: BTreeMap<String, Vec<u128>> = BTreeMap::new();
    for (shard, seq, _, _) in &all {
        per_shard
            .entry(shard.clone())
            .or_default()
            .push(seq_num(seq));
    }
    for (shard, seqs) in &per_shard {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "shard {shard} out of order: {seqs:?}"
        );
    }
    all.sort();
    let mut expected: Vec<_> = put.iter().map(Put::line).collect();
    expected.sort();
    assert_eq!(all, expected, "every record exactly once");

    // Replays are byte-identical, however much arrived since.
    put_many(&k, &stream, 75, 30).await;
    assert_eq!(ok(reader(&args(&stream, &table, "L", "1"))), out1);
    assert_eq!(ok(reader(&args(&stream, &table, "L", "0"))), out0);
    assert_eq!(ok(reader(&args(&stream, &table, "L", "2"))), out2);

    let st = status(&stream, &table, "L");
    let iters = st.as_array().unwrap();
    assert_eq!(iters.len(), 3);
    for (i, it) in iters.iter().enumerate() {
        assert_eq!(it["iteration"], i as u64);
        assert_eq!(it["state"], "succeeded");
        assert_eq!(it["shards"].as_array().unwrap().len(), 3);
    }
    assert_eq!(iters[1]["records"], 25);

    // The next iteration picks up exactly the 30 records put after iteration 2.
    let out3 = ok(reader(&args(&stream, &table, "L", "next")));
    assert_eq!(parse_lines(&out3).len(), 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn default_output_is_key_tab_escaped_data_and_encodings_round_trip() {
    let k = kinesis().await;
    let stream = unique("fmt");
    create_stream(&k, &stream, 1).await;
    put(&k, &stream, "k1", b"tab\there\nnewline\\slash").await;
    put(&k, &stream, "k2", &[0, 159, 146, 150, 255]).await;
    let out = ok(reader(&["--stream", &stream]));
    // The stream's ARN names the same stream.
    let arn = k
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    let arn = arn
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_string();
    assert_eq!(ok(reader(&["--stream", &arn])), out);
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "a record never splits a line: {text:?}");
    assert_eq!(lines[0], "k1\ttab\\there\\nnewline\\\\slash");

    let out = ok(reader(&[
        "--stream",
        &stream,
        "--fields",
        "data",
        "--data-encoding",
        "hex",
    ]));
    assert_eq!(
        String::from_utf8(out).unwrap().lines().nth(1),
        Some("009f9296ff")
    );

    let out = ok(reader(&["--stream", &stream, "--format", "jsonl"]));
    let v: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["data"], "tab\there\nnewline\\slash");
    assert_eq!(v[1]["data_encoding"], "base64");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_table_it_reads_everything_and_records_nothing() {
    let k = kinesis().await;
    let stream = unique("plain");
    create_stream(&k, &stream, 2).await;
    put_many(&k, &stream, 0, 12).await;
    let first = ok(reader(&["--stream", &stream]));
    assert_eq!(String::from_utf8_lossy(&first).lines().count(), 12);
    put_many(&k, &stream, 12, 3).await;
    let second = ok(reader(&["--stream", &stream]));
    assert_eq!(
        String::from_utf8_lossy(&second).lines().count(),
        15,
        "nothing was recorded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_exits_0_fixes_nothing_and_next_resumes_that_iteration() {
    let k = kinesis().await;
    let stream = unique("head");
    create_stream(&k, &stream, 2).await;
    let table = table();
    // Enough bytes that the reader is still writing when `head -1` goes away.
    let big = "x".repeat(2000);
    let mut puts = Vec::new();
    for i in 0..300 {
        puts.push(
            put(
                &k,
                &stream,
                &format!("k{i}"),
                format!("{i} {big}").as_bytes(),
            )
            .await,
        );
    }
    let mut child = spawn_reader(&args(&stream, &table, "H", "next"));
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // Dropping the reader's stdout is what `| head -1` does.
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
    assert!(!first.is_empty());

    let st = status(&stream, &table, "H");
    assert_eq!(st[0]["state"], "failed");
    for s in st[0]["shards"].as_array().unwrap() {
        assert!(
            s["next"].is_null(),
            "a shard was fixed past what was delivered: {s}"
        );
    }

    // `next` runs iteration 0 again, in full.
    let again = ok(reader(&args(&stream, &table, "H", "next")));
    assert_eq!(parse_lines(&again).len(), 300);
    assert_eq!(status(&stream, &table, "H")[0]["state"], "succeeded");
    put_many(&k, &stream, 0, 5).await;
    let next = ok(reader(&args(&stream, &table, "H", "next")));
    assert_eq!(parse_lines(&next).len(), 5);
    assert_eq!(status(&stream, &table, "H").as_array().unwrap().len(), 2);
}

/// Two runs of the same iteration at once: exactly one fixes the boundaries;
/// the other gives up with exit code 3 and says who holds it.
#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_runs_of_one_iteration_exactly_one_wins() {
    let k = kinesis().await;
    let stream = unique("race");
    create_stream(&k, &stream, 2).await;
    let table = table();
    put_many(&k, &stream, 0, 20).await;
    // EMR's end rule keeps each run reading (holding the lease) for 3 s.
    let mut a = args(&stream, &table, "R", "0");
    a.extend([
        "--until",
        "timeouts",
        "--iteration-timeout",
        "3s",
        "--lease-wait",
        "0s",
    ]);
    let runs: Vec<_> = (0..2).map(|_| spawn_reader(&a)).collect();
    let outs: Vec<_> = runs
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let codes: Vec<i32> = outs.iter().map(|o| o.status.code().unwrap()).collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![0, 3],
        "codes {codes:?}: {} / {}",
        stderr(&outs[0]),
        stderr(&outs[1])
    );
    let loser = outs.iter().find(|o| o.status.code() == Some(3)).unwrap();
    assert!(
        stderr(loser).contains("is being run by"),
        "{}",
        stderr(loser)
    );
    let winner = outs.iter().find(|o| o.status.success()).unwrap();
    assert_eq!(parse_lines(&winner.stdout).len(), 20);
    // The iteration is the winner's: a replay prints exactly its output.
    assert_eq!(ok(reader(&args(&stream, &table, "R", "0"))), winner.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn rerun_without_wait_takes_over_and_the_old_run_cannot_fix_anything() {
    let k = kinesis().await;
    let stream = unique("takeover");
    create_stream(&k, &stream, 2).await;
    let table = table();
    put_many(&k, &stream, 0, 10).await;
    let mut slow = args(&stream, &table, "T", "0");
    slow.extend(["--until", "timeouts", "--iteration-timeout", "4s"]);
    let first = spawn_reader(&slow);
    // Wait until the first run holds the lease.
    wait_until("the first run opens the iteration", 10, || {
        !status(&stream, &table, "T").as_array().unwrap().is_empty()
    });
    let mut take = args(&stream, &table, "T", "0");
    take.push("--rerun-without-wait");
    let second = reader(&take);
    let first = first.wait_with_output().unwrap();
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("took the iteration over"),
        "{}",
        stderr(&first)
    );
    let st = status(&stream, &table, "T");
    assert_eq!(st[0]["state"], "succeeded");
    assert_eq!(ok(reader(&args(&stream, &table, "T", "0"))), second.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn emr_names_as_defines_and_as_env_match_the_flags() {
    let k = kinesis().await;
    let stream = unique("emr");
    create_stream(&k, &stream, 2).await;
    let table = table();
    put_many(&k, &stream, 0, 15).await;
    let by_flags = ok(reader(&[
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "F",
        "--iteration",
        "0",
        "--batch-size",
        "4",
    ]));
    let d = |n: &str, v: &str| format!("{n}={v}");
    let defines = [
        d("kinesis.stream.name", &stream),
        d("kinesis.checkpoint.enabled", "true"),
        d("kinesis.checkpoint.metastore.table.name", &table),
        d("kinesis.checkpoint.metastore.hash.key.name", "HashKey"),
        d("kinesis.checkpoint.metastore.hash.range.name", "RangeKey"),
        d("kinesis.checkpoint.logical.name", "D"),
        d("kinesis.checkpoint.iteration.no", "0"),
        d("kinesis.records.batchsize", "4"),
        d("kinesis.endpoint.region", REGION),
        d("kinesis.nodata.timeout", "1"),
    ];
    let mut dargs = Vec::new();
    for x in &defines {
        dargs.extend(["-D", x.as_str()]);
    }
    let by_defines = ok(reader(&dargs));
    let env: Vec<(String, String)> = defines
        .iter()
        .map(|x| {
            let (n, v) = x.split_once('=').unwrap();
            let v = if n.ends_with("logical.name") { "E" } else { v };
            (n.replace('.', "_"), v.to_string())
        })
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    // A whole iteration outside Hadoop; its counters as a task's would be.
    let run = reader_env(&["--hadoop-reporter"], &env);
    assert!(
        stderr(&run).contains("reporter:counter:KinesisReader,records,15\n"),
        "{}",
        stderr(&run)
    );
    let by_env = ok(run);
    assert_eq!(String::from_utf8_lossy(&by_flags).lines().count(), 15);
    assert_eq!(by_defines, by_flags);
    assert_eq!(by_env, by_flags);
    for l in ["F", "D", "E"] {
        assert_eq!(
            status(&stream, &table, l)[0]["state"],
            "succeeded",
            "logical name {l}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_one_clear_message_a_code_and_no_checkpoint() {
    let k = kinesis().await;
    let stream = unique("err");
    create_stream(&k, &stream, 1).await;
    put_many(&k, &stream, 0, 3).await;
    let table = table();

    fails_with(
        &reader(&args("no-such-stream", &table, "X", "next")),
        1,
        "does not exist",
    );
    fails_with(
        &reader(&args(&stream, "no-such-table", "X", "next")),
        2,
        "create-table",
    );
    fails_with(
        &reader(&args(&stream, &table, "X", "7")),
        2,
        "its first is 0",
    );
    fails_with(
        &reader(&args(&stream, &table, "X", "soon")),
        2,
        "--iteration soon",
    );
    fails_with(
        &reader(&["--stream", &stream, "--fields", "data,colour"]),
        2,
        "unknown field \"colour\"",
    );
    fails_with(
        &reader(&["--stream", &stream, "-D", "kinesis.records.batchsize=20000"]),
        2,
        "-D kinesis.records.batchsize=20000",
    );
    fails_with(
        &reader(&["--checkpoint-table", &table]),
        2,
        "no stream given",
    );
    // Nothing was recorded for logical name X by any of these.
    assert_eq!(status(&stream, &table, "X").as_array().unwrap().len(), 0);

    // Iteration 0 exists: asking for 2 names the one that can come next.
    ok(reader(&args(&stream, &table, "X", "0")));
    fails_with(
        &reader(&args(&stream, &table, "X", "2")),
        2,
        "--iteration 1",
    );
    assert_eq!(status(&stream, &table, "X").as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_table_is_idempotent_and_rejects_a_table_with_other_keys() {
    let t = table();
    let again = reader(&["create-table", "--checkpoint-table", &t]);
    assert!(again.status.success());
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));

    let other = unique("other");
    let d = dynamo().await;
    use aws_sdk_dynamodb::types::*;
    d.create_table()
        .table_name(&other)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    fails_with(
        &reader(&["create-table", "--checkpoint-table", &other]),
        2,
        "key schema hash=id (S)",
    );
    let k = kinesis().await;
    let stream = unique("keys");
    create_stream(&k, &stream, 1).await;
    fails_with(
        &reader(&args(&stream, &other, "K", "next")),
        2,
        "--hash-key",
    );
    fails_with(
        &reader(&[
            "create-table",
            "--checkpoint-table",
            &unique("bad"),
            "--hash-key",
            "state",
        ]),
        2,
        "cannot be a checkpoint table key name",
    );
    // Custom key names work end to end.
    let custom = unique("custom");
    ok(reader(&[
        "create-table",
        "--checkpoint-table",
        &custom,
        "--hash-key",
        "pk",
        "--range-key",
        "sk",
    ]));
    put_many(&k, &stream, 0, 2).await;
    let out = ok(reader(&[
        "--stream",
        &stream,
        "--checkpoint-table",
        &custom,
        "--hash-key",
        "pk",
        "--range-key",
        "sk",
        "--logical-name",
        "C",
    ]));
    assert_eq!(String::from_utf8_lossy(&out).lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_prints_an_aligned_table() {
    let k = kinesis().await;
    let stream = unique("status");
    create_stream(&k, &stream, 2).await;
    let table = table();
    put_many(&k, &stream, 0, 6).await;
    ok(reader(&args(&stream, &table, "S", "next")));
    let out = ok(reader(&[
        "status",
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "S",
    ]));
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ITERATION  STATE"));
    let col = lines[0].find("SHARD").unwrap();
    assert!(lines[1][col..].starts_with("shardId-"), "{text}");
    assert!(lines[1].contains("succeeded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_the_iteration_as_failed_so_next_resumes_it_at_once() {
    let k = kinesis().await;
    let stream = unique("term");
    create_stream(&k, &stream, 1).await;
    let table = table();
    put_many(&k, &stream, 0, 4).await;
    let mut a = args(&stream, &table, "G", "next");
    a.extend(["--until", "timeouts", "--iteration-timeout", "30s"]);
    let child = spawn_reader(&a);
    wait_until("the run opens its iteration", 10, || {
        !status(&stream, &table, "G").as_array().unwrap().is_empty()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("SIGTERM"), "{}", stderr(&out));
    let st = status(&stream, &table, "G");
    assert_eq!(st[0]["state"], "failed");
    assert!(
        st[0]["lease_owner"].is_null(),
        "the lease was released: {}",
        st[0]
    );
    // No 30 s wait for a lease: next runs iteration 0 again straight away.
    let again = ok(reader(&args(&stream, &table, "G", "next")));
    assert_eq!(parse_lines(&again).len(), 4);
    assert_eq!(status(&stream, &table, "G")[0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn kpl_aggregates_are_split_into_sub_records_and_bad_ones_pass_through() {
    use kinesis_streaming::kpl::aggregate;
    let k = kinesis().await;
    let stream = unique("kpl");
    create_stream(&k, &stream, 1).await;
    let table = table();
    let agg = aggregate(&[
        ("ключ", None, b"one"),
        (
            "clé",
            Some("170141183460469231731687303715884105728"),
            b"two",
        ),
        ("ключ", None, b"three\tfour"),
    ]);
    let mut corrupt = aggregate(&[("x", None, b"hidden")]);
    *corrupt.last_mut().unwrap() ^= 1;
    put(&k, &stream, "outer", &agg).await;
    put(&k, &stream, "bad", &corrupt).await;
    put(&k, &stream, "plain", b"plain record").await;
    let a = [
        "--stream",
        stream.as_str(),
        "--checkpoint-table",
        &table,
        "--logical-name",
        "K",
        "--iteration",
        "0",
        "--fields",
        "sub_sequence_number,partition_key,data",
        "--data-encoding",
        "escape",
    ];
    let out = ok(reader(&a));
    let text = String::from_utf8_lossy(&out).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..3],
        ["0\tключ\tone", "1\tclé\ttwo", "2\tключ\tthree\\tfour"]
    );
    // The corrupted aggregate (wrong MD5) is passed on whole, as the KCL does.
    assert!(
        lines[3].starts_with("0\tbad\t") && lines[3].contains("hidden"),
        "{}",
        lines[3]
    );
    assert_eq!(lines[4], "0\tplain\tplain record");
    assert_eq!(lines.len(), 5);
    // A rerun prints the same; --no-deaggregate prints the records as stored.
    assert_eq!(ok(reader(&a)), out);
    let raw = ok(reader(&[
        "--stream",
        &stream,
        "--no-deaggregate",
        "--fields",
        "partition_key",
    ]));
    assert_eq!(String::from_utf8(raw).unwrap(), "outer\nbad\nplain\n");
}

/// Moto never trims a stream, so the test ages a checkpoint as time would:
/// the previous iteration's end is moved before the shard's oldest record and
/// its "read up to" time 48 h back (the stream keeps 24 h).
#[tokio::test(flavor = "multi_thread")]
async fn an_aged_out_start_fails_with_code_4_or_is_skipped_loudly_and_recorded() {
    use aws_sdk_dynamodb::types::AttributeValue as AV;
    let k = kinesis().await;
    let stream = unique("expired");
    create_stream(&k, &stream, 1).await;
    let table = table();
    put_many(&k, &stream, 0, 3).await;
    ok(reader(&args(&stream, &table, "E", "next")));
    let old = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 48 * 3_600_000)
        .to_string();
    let d = dynamo().await;
    d.update_item()
        .table_name(&table)
        .key("HashKey", AV::S(format!("{stream}/E/0000000000")))
        .key("RangeKey", AV::S("shardId-000000000000".into()))
        // A whole range that agrees with itself (the table checks that),
        // as if iteration 0 had read one record, 0, two days ago.
        .update_expression(
            "SET #n = :n, #s = :s, last_seq = :f, known_until = :k, first_seq = :f, \
             first_arrival = :k",
        )
        .expression_attribute_names("#n", "next")
        .expression_attribute_names("#s", "start")
        .expression_attribute_values(":n", AV::S("after:0".into()))
        .expression_attribute_values(":s", AV::S("at:0".into()))
        .expression_attribute_values(":f", AV::S("0".into()))
        .expression_attribute_values(":k", AV::N(old))
        .send()
        .await
        .unwrap();
    put_many(&k, &stream, 3, 2).await;

    let o = reader(&args(&stream, &table, "E", "next"));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("data expired in stream {stream}"))
            && e.contains("shardId-000000000000"),
        "{e}"
    );
    assert!(
        e.contains("after:0") && e.contains("--on-expired skip"),
        "{e}"
    );
    assert!(o.stdout.is_empty(), "nothing printed");
    assert_eq!(status(&stream, &table, "E")[1]["state"], "failed");
    // A replay of iteration 0, whose first record is "gone", fails the same way.
    let o = reader(&args(&stream, &table, "E", "0"));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    let mut skip = args(&stream, &table, "E", "next");
    skip.extend(["--on-expired", "skip"]);
    let o = reader(&skip);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("SKIPPING expired data in shard shardId-000000000000"),
        "{}",
        stderr(&o)
    );
    // It went on from the oldest record, and the table says so.
    assert_eq!(parse_lines(&o.stdout).len(), 5);
    let st = status(&stream, &table, "E");
    let shard = &st[1]["shards"][0];
    assert_eq!(shard["read_from"], "at:1");
    assert!(
        shard["expired_skip"].as_str().unwrap().contains("after:0"),
        "{shard}"
    );
    // And its replay prints the same records again.
    assert_eq!(ok(reader(&args(&stream, &table, "E", "1"))), o.stdout);
}

/// Exec mode: `kinesis-reader … -- CMD` runs the rest of the pipeline as its
/// child, tells it the iteration, and lets its exit status decide.
#[tokio::test(flavor = "multi_thread")]
async fn exec_mode_pipes_into_a_writer_with_the_iteration_context() {
    let k = kinesis().await;
    let s3 = s3().await;
    let b = bucket(&s3).await;
    let stream = unique("exec");
    create_stream(&k, &stream, 2).await;
    let table = table();
    put_many(&k, &stream, 0, 9).await;
    let pipeline = format!("sort | {WRITER} s3://{b}/out/");
    let mut a = args(&stream, &table, "X", "next");
    a.extend(["--", "sh", "-c", pipeline.as_str()]);
    let o = reader(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    // The writer named its object from the reader's iteration, with no flags.
    let got = get(&s3, &b, "out/iteration=0/part-00000").await;
    let mut expected = parse_lines(&ok(reader(&args(&stream, &table, "X", "0"))))
        .into_iter()
        .map(|(a, b, c, d)| format!("{a}\t{b}\t{c}\t{d}\n"))
        .collect::<Vec<_>>();
    expected.sort();
    assert_eq!(String::from_utf8(got).unwrap(), expected.concat());
    assert_eq!(status(&stream, &table, "X")[0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_mode_a_failing_command_fails_the_iteration_and_next_reruns_it() {
    let k = kinesis().await;
    let stream = unique("execfail");
    create_stream(&k, &stream, 1).await;
    let table = table();
    put_many(&k, &stream, 0, 4).await;
    let ctx = std::env::temp_dir().join(unique("ctx"));
    let script = format!(
        "echo \"$KINESIS_STREAM $KINESIS_LOGICAL_NAME $KINESIS_ITERATION\" > {}; wc -l >/dev/null; exit 3",
        ctx.display()
    );
    let mut a = args(&stream, &table, "F", "next");
    a.extend(["--", "sh", "-c", script.as_str()]);
    let o = reader(&a);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&ctx).unwrap().trim(),
        format!("{stream} F 0")
    );
    let st = status(&stream, &table, "F");
    assert_eq!(st[0]["state"], "failed");
    assert!(
        st[0]["shards"][0]["next"].is_string(),
        "boundaries are fixed: a rerun replays them"
    );
    // next runs the failed iteration again (the same records), then moves on.
    let mut a = args(&stream, &table, "F", "next");
    a.extend(["--", "cat"]);
    let again = reader(&a);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(parse_lines(&again.stdout).len(), 4);
    assert_eq!(again.stdout, ok(reader(&args(&stream, &table, "F", "0"))));
    assert_eq!(status(&stream, &table, "F")[0]["state"], "succeeded");
    std::fs::remove_file(ctx).ok();
    // A command that does not exist is a usage error before anything is opened.
    let mut a = args(&stream, &table, "G", "next");
    a.extend(["--", "no-such-command-here"]);
    let o = reader(&a);
    assert_eq!(o.status.code(), Some(2));
    assert!(status(&stream, &table, "G").as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_mode_forwards_sigterm_and_exits_with_the_childs_status() {
    let k = kinesis().await;
    let stream = unique("execsig");
    create_stream(&k, &stream, 1).await;
    let table = table();
    put_many(&k, &stream, 0, 2).await;
    let ready = std::env::temp_dir().join(unique("ready"));
    let script = format!(
        "trap 'kill $!; exit 7' TERM; cat >/dev/null; touch {}; sleep 30 & wait",
        ready.display()
    );
    let mut a = args(&stream, &table, "S", "next");
    a.extend(["--", "sh", "-c", script.as_str()]);
    let child = spawn_reader(&a);
    wait_until("the command finishes reading", 15, || ready.exists());
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(status(&stream, &table, "S")[0]["state"], "failed");
    std::fs::remove_file(ready).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_says_nothing_on_stderr_and_verbose_shows_the_table_requests() {
    let k = kinesis().await;
    let stream = unique("quiet");
    create_stream(&k, &stream, 1).await;
    put_many(&k, &stream, 0, 3).await;
    let table = table();
    let mut a = args(&stream, &table, "Q", "next");
    a.push("-q");
    let o = reader(&a);
    assert_eq!(parse_lines(&ok(o.clone())).len(), 3);
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    let mut a = args(&stream, &table, "Q", "0");
    a.push("-v");
    let o = reader(&a);
    assert!(
        stderr(&o).contains("checkpoint table requests: GetItem"),
        "{}",
        stderr(&o)
    );
    // The writer takes the same flags.
    let o = writer(
        &[
            "s3://no-bucket-needed/x",
            "-q",
            "--skip-empty",
            "--iteration",
            "0",
        ],
        b"",
    );
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn emr_credentials_work_but_never_show_and_remote_plain_http_is_refused() {
    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY";
    const KEY_ID: &str = "AKIAKINESISSTREAMING";
    let k = kinesis().await;
    let stream = unique("creds");
    create_stream(&k, &stream, 2).await;
    put_many(&k, &stream, 0, 4).await;
    let table = table();
    let ak = format!("kinesis.accessKey={KEY_ID}");
    let sk = format!("kinesis.secretKey={SECRET}");
    let with_keys = |a: &[&str]| -> Output {
        let keys = ["-D", ak.as_str(), "-D", sk.as_str(), "-vv"];
        reader(&[a, &keys[..]].concat())
    };
    let mut outputs = Vec::new();
    let o = with_keys(&args(&stream, &table, "C", "next"));
    assert_eq!(parse_lines(&ok(o.clone())).len(), 4);
    outputs.push(o);
    let o = with_keys(&[
        "status",
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "C",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    outputs.push(o);
    // Errors that name their settings: two secrets, half a pair, a bad value beside them.
    let o = reader(&[
        "--stream",
        &stream,
        "-D",
        &sk,
        "-D",
        "kinesis.secretKey=other",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("kinesis.secretKey is given twice"),
        "{}",
        stderr(&o)
    );
    outputs.push(o);
    let o = reader(&["--stream", &stream, "-D", &sk]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("go together"), "{}", stderr(&o));
    outputs.push(o);
    let o = reader_env(
        &["--stream", &stream, "-D", &ak, "--batch-size", "0"],
        &[("kinesis_secretKey", SECRET)],
    );
    assert_eq!(o.status.code(), Some(2));
    outputs.push(o);
    let s3c = s3().await;
    let bucket = bucket(&s3c).await;
    let target = format!("s3://{bucket}/out");
    let o = writer_env(&["-D", &ak, "-D", &sk, "-vv", &target], b"a\t1\n", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    outputs.push(o);
    for o in &outputs {
        for text in [
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        ] {
            assert!(!text.contains(SECRET), "the secret key leaked:\n{text}");
        }
    }
    // Nothing of the credentials is kept in the checkpoint table.
    let items = dynamo()
        .await
        .scan()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let dump = format!("{:?}", items.items());
    assert!(!dump.contains(SECRET) && !dump.contains(KEY_ID));

    // Plain HTTP to another host is refused before any request is sent.
    let o = reader(&[
        "--stream",
        &stream,
        "--endpoint-url",
        "http://10.255.255.1:4566",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--allow-insecure-endpoint"),
        "{}",
        stderr(&o)
    );
    let o = writer_env(
        &[&target],
        b"a\n",
        &[("AWS_ENDPOINT_URL_S3", "http://s3.example.com")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("AWS_ENDPOINT_URL_S3 http://s3.example.com"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_shards_reads_group_after_group_and_replays_alike() {
    let k = kinesis().await;
    let stream = unique("groups");
    create_stream(&k, &stream, 4).await;
    let table = table();
    let put = put_many(&k, &stream, 0, 60).await;
    let mut a = args(&stream, &table, "G", "0");
    a.extend(["--max-concurrent-shards", "1"]);
    let out = ok(reader(&a));
    let lines = parse_lines(&out);
    // One shard at a time: all of a shard's lines together, shards in id order.
    let shards: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
    let mut grouped = shards.clone();
    grouped.dedup();
    let mut sorted = grouped.clone();
    sorted.sort();
    assert_eq!(grouped, sorted, "shard after shard, in id order");
    assert_eq!(grouped.len(), 4);
    let mut got = lines.clone();
    got.sort();
    let mut expected: Vec<_> = put.iter().map(Put::line).collect();
    expected.sort();
    assert_eq!(got, expected);
    // The same limit replays the same bytes; another one the same records.
    assert_eq!(ok(reader(&a)), out);
    let mut all = parse_lines(&ok(reader(&args(&stream, &table, "G", "0"))));
    all.sort();
    assert_eq!(all, expected);
    let mut bad = args(&stream, &table, "G", "0");
    bad.extend(["--max-concurrent-shards", "0"]);
    assert_eq!(reader(&bad).status.code(), Some(2));
}

/// Every GetRecords answer from the emulator is decoded by the fast path
/// (src/aws/get_records.rs, none left to the SDK), and what it decodes is
/// the records as put: every byte value, any partition key, the arrival time.
#[tokio::test(flavor = "multi_thread")]
async fn get_records_answers_take_the_fast_path_and_keep_every_byte() {
    let k = kinesis().await;
    let stream = unique("fastpath");
    create_stream(&k, &stream, 2).await;
    let mut puts = vec![put(&k, &stream, "p/k \"é\"\\", &(0..=255u8).collect::<Vec<_>>()).await];
    puts.extend(put_many(&k, &stream, 0, 40).await);
    puts.push(put(&k, &stream, "empty", b"").await);
    let o = reader(&[
        "--stream",
        &stream,
        "--fields",
        "shard_id,sequence_number,partition_key,data,arrival_millis",
        "--data-encoding",
        "hex",
        "-vv",
    ]);
    let out = String::from_utf8(ok(o.clone())).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut got: BTreeMap<(String, String), (String, String, i64)> = BTreeMap::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f.len(), 5, "{l:?}");
        let at = (f[0].into(), f[1].into());
        got.insert(at, (f[2].into(), f[3].into(), f[4].parse().unwrap()));
    }
    assert_eq!(got.len(), puts.len());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for p in &puts {
        let (key, data, arrival) = &got[&(p.shard_id.clone(), p.sequence_number.clone())];
        assert_eq!(key, &hex(p.partition_key.as_bytes()));
        assert_eq!(data, &hex(&p.data));
        assert!((now - 600_000..=now).contains(arrival), "{arrival}");
    }
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("GetRecords answers:"))
        .unwrap_or_else(|| panic!("no GetRecords count in {err}"));
    let direct: u64 = line
        .split("answers: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(direct >= 2 && line.ends_with(", 0 by the SDK"), "{line}");
}
