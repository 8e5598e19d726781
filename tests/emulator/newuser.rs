//! What a new user hit, each as they hit it: the writer storing a line it
//! said it skipped, number keys that DynamoDB takes for one, a lease left
//! behind by a command that could not start, overlapping `next` runs, early
//! ends that looked like success, a lost lease, a one-map Hadoop job, and
//! flags that did not apply.

use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::time::Duration;

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

/// Exec mode: the reader's flags for one iteration, then `-- sh -c SCRIPT`.
fn exec_args<'a>(
    stream: &'a str,
    table: &'a str,
    logical: &'a str,
    iteration: &'a str,
    script: &'a str,
) -> Vec<&'a str> {
    let mut a = args(stream, table, logical, iteration);
    a.extend(["--", "sh", "-c", script]);
    a
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_a_line_reported_as_skipped_is_never_in_the_object() {
    let s3 = s3().await;
    let b = bucket(&s3).await;
    let dir = std::env::temp_dir().join(unique("dead"));
    let dead = format!("dead-letter={}", dir.display());
    for (policy, compress, key) in [
        ("skip", "none", "nt/iteration=0/part-00000"),
        (dead.as_str(), "none", "dl/iteration=0/part-00000"),
        ("skip", "gzip", "gz/iteration=0/part-00000.gz"),
    ] {
        let prefix = key.split('/').next().unwrap();
        let target = format!("s3://{b}/{prefix}/");
        let o = writer(
            &[
                &target,
                "--iteration",
                "0",
                "--on-bad-line",
                policy,
                "--compress",
                compress,
            ],
            b"a\t1\nb\t2\npartial",
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("1 skipped"), "{}", stderr(&o));
        let stored = get(&s3, &b, key).await;
        let plain = match compress {
            "gzip" => {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&stored[..]), &mut v)
                    .unwrap();
                v
            }
            _ => stored,
        };
        assert_eq!(
            String::from_utf8_lossy(&plain),
            "a\t1\nb\t2\n",
            "{policy} {compress}"
        );
    }
    assert_eq!(std::fs::read(&dir).unwrap(), b"partial\n");
    std::fs::remove_file(dir).ok();

    // Without a policy that goes on: the message names the line.
    let o = writer(
        &[&format!("s3://{b}/small/"), "--iteration", "0"],
        b"a\t1\nb",
    );
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("line 2: "), "{}", stderr(&o));
    assert!(keys(&s3, &b).await.iter().all(|k| !k.starts_with("small/")));
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_number_keys_equal_as_numbers_are_one_item() {
    use aws_sdk_dynamodb::types::*;
    let d = dynamo().await;
    let t = unique("nkeys");
    d.create_table()
        .table_name(&t)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("k")
                .attribute_type(ScalarAttributeType::N)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("k")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let target = format!("dynamodb://{t}");
    let add = [
        target.as_str(),
        "--columns",
        "k:N,c:N",
        "--mode",
        "add",
        "--logical-name",
        "A",
        "--iteration",
        "1",
    ];
    let o = writer(&add, b"7\t5\n7.0\t7\n8\t1\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 items written"), "{}", stderr(&o));
    let c = |k: &str| {
        let d = d.clone();
        let t = t.clone();
        let k = k.to_string();
        async move {
            d.get_item()
                .table_name(t)
                .key("k", AttributeValue::N(k))
                .send()
                .await
                .unwrap()
                .item
                .and_then(|i| i.get("c").cloned())
                .map(|v| v.as_n().unwrap().clone())
        }
    };
    assert_eq!(c("7").await.as_deref(), Some("12"));
    assert_eq!(c("8").await.as_deref(), Some("1"));

    // Put: `7`, `8`, `07` are two items, the last `7` wins.
    let o = writer(
        &[target.as_str(), "--columns", "k:N,c:N"],
        b"7\t1\n8\t2\n07\t3\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 items written"), "{}", stderr(&o));
    assert_eq!(c("7").await.as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_run_is_a_usage_error_before_anything_is_opened() {
    let k = kinesis().await;
    let stream = unique("noexec");
    create_stream(&k, &stream, 1).await;
    let table = table();
    put_many(&k, &stream, 0, 3).await;
    let script = std::env::temp_dir().join(unique("mapper.py"));
    std::fs::write(&script, "#!/bin/sh\ncat >/dev/null\n").unwrap();
    let path = script.display().to_string();
    let mut a = args(&stream, &table, "E", "next");
    a.extend(["--", path.as_str()]);
    let o = reader(&a);
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not executable"), "{}", stderr(&o));
    assert!(
        status(&stream, &table, "E").as_array().unwrap().is_empty(),
        "nothing was opened"
    );
    // The next run does not wait for anything.
    let mut b = args(&stream, &table, "E", "next");
    b.extend(["--lease-wait", "0s"]);
    assert_eq!(parse_lines(&ok(reader(&b))).len(), 3);
    std::fs::remove_file(script).ok();
}

/// Starts a `next` run that holds its iteration for 2 s (EMR's end rule),
/// and returns once it has opened it.
fn holding_run(stream: &str, table: &str, logical: &str) -> std::process::Child {
    let mut a = args(stream, table, logical, "next");
    a.extend(["--until", "timeouts", "--iteration-timeout", "2s"]);
    let run = spawn_reader(&a);
    wait_until("the first run opens its iteration", 10, || {
        !status(stream, table, logical)
            .as_array()
            .unwrap()
            .is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    run
}

#[tokio::test(flavor = "multi_thread")]
async fn a_next_run_that_waited_moves_on_and_never_repeats_a_succeeded_iteration() {
    let k = kinesis().await;
    let stream = unique("overlap");
    create_stream(&k, &stream, 2).await;
    let table = table();
    put_many(&k, &stream, 0, 20).await;

    let first = holding_run(&stream, &table, "O");
    let mut a = args(&stream, &table, "O", "next");
    a.extend(["--until", "timeouts", "--iteration-timeout", "1s"]);
    let second = reader(&a);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(parse_lines(&first.stdout).len(), 20);
    assert!(
        parse_lines(&second.stdout).is_empty(),
        "the second run delivered iteration 0 again: {}",
        stderr(&second)
    );
    assert!(
        stderr(&second).contains("is now iteration 1"),
        "{}",
        stderr(&second)
    );
    let states = |logical: &str| -> Vec<serde_json::Value> {
        let st = status(&stream, &table, logical);
        st.as_array()
            .unwrap()
            .iter()
            .map(|h| h["state"].clone())
            .collect()
    };
    assert_eq!(states("O"), ["succeeded", "succeeded"]);

    // `plan --iteration next` follows the same rule.
    let first = holding_run(&stream, &table, "P");
    let planned = run_plan(&stream, &table, "P", "next");
    assert!(first.wait_with_output().unwrap().status.success());
    assert!(planned.status.success(), "{}", stderr(&planned));
    let manifest = String::from_utf8(planned.stdout.clone()).unwrap();
    assert!(
        !manifest.is_empty() && manifest.lines().all(|l| l.contains("\"iteration\":1")),
        "plan handed out a succeeded iteration: {manifest}\n{}",
        stderr(&planned)
    );
    assert_eq!(states("P"), ["succeeded", "open"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn early_ends_say_the_iteration_was_not_completed() {
    let k = kinesis().await;
    let stream = unique("early");
    create_stream(&k, &stream, 1).await;
    let table = table();
    let big = "y".repeat(4000);
    for i in 0..200 {
        put(&k, &stream, "p", format!("{i} {big}").as_bytes()).await;
    }
    // `| head -1`: exit 0, and one warning line.
    let mut child = spawn_reader(&args(&stream, &table, "H", "next"));
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("iteration 0 was not completed and is marked failed"),
        "{}",
        stderr(&out)
    );
    // Exec mode: a command that exits 0 without reading its input: exit 5.
    let o = reader(&exec_args(
        &stream,
        &table,
        "H",
        "next",
        "head -c 1 >/dev/null",
    ));
    fails_with(&o, 5, "exited 0 without reading all of its input");
    // One that fails before reading it all: its status, and a warning.
    let o = reader(&exec_args(
        &stream,
        &table,
        "H",
        "next",
        "head -c 1 >/dev/null; exit 7",
    ));
    fails_with(&o, 7, "exited with 7 before reading all of its input");
    assert_eq!(status(&stream, &table, "H")[0]["state"], "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_lease_is_taken_over_exits_3() {
    let k = kinesis().await;
    let stream = unique("lost");
    create_stream(&k, &stream, 1).await;
    let table = table();
    put_many(&k, &stream, 0, 5).await;
    let first = spawn_reader(&exec_args(
        &stream,
        &table,
        "T4",
        "0",
        "cat >/dev/null; sleep 4",
    ));
    wait_until("the first run opens iteration 0", 10, || {
        !status(&stream, &table, "T4").as_array().unwrap().is_empty()
    });
    let mut take = args(&stream, &table, "T4", "0");
    take.push("--rerun-without-wait");
    let second = reader(&take);
    assert!(second.status.success(), "{}", stderr(&second));
    let pid = first.id();
    let first = first.wait_with_output().unwrap();
    fails_with(&first, 3, "another run took the iteration over");
    assert!(!stderr(&first).contains("#o"), "{}", stderr(&first));
    let st = status(&stream, &table, "T4");
    assert_eq!(st[0]["state"], "succeeded");
    // The takeover leaves a trace: from the first run, by the second.
    let from = st[0]["taken_over"]["from"].as_str().unwrap_or_default();
    let by = st[0]["taken_over"]["by"].as_str().unwrap_or_default();
    assert!(from.contains(&format!(":{pid}:")), "{}", st[0]);
    assert!(!by.is_empty() && by != from, "{}", st[0]);
    let table_view = ok(reader(&[
        "status",
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "T4",
    ]));
    let table_view = String::from_utf8_lossy(&table_view);
    assert!(
        table_view.contains(&format!("succeeded (taken over from {from} by {by} at ")),
        "{table_view}"
    );
}

/// While a map task reads a planned iteration, `status` shows its lease on
/// each of its shards; once it has ended, none.
#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_leases_of_running_map_tasks() {
    let k = kinesis().await;
    let stream = unique("tasklease");
    create_stream(&k, &stream, 2).await;
    let table = table();
    put_many(&k, &stream, 0, 6).await;
    let manifest = ok(run_plan(&stream, &table, "ML", "0"));
    let first_line = String::from_utf8_lossy(&manifest)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let dir = std::env::temp_dir().join(unique("tasklease"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("line"), format!("{first_line}\n")).unwrap();
    let script = "kinesis-reader --shards-from-stdin --checkpoint-table \"$T\" \
          -- sh -c 'cat >/dev/null; sleep 3' < \"$D/line\" 2> \"$D/task.err\" & pid=$!; \
        sleep 1.5; \
        kinesis-reader status --stream \"$S\" --checkpoint-table \"$T\" --logical-name ML \
          --json > \"$D/during.json\"; \
        kinesis-reader status --stream \"$S\" --checkpoint-table \"$T\" --logical-name ML \
          > \"$D/during.txt\"; \
        wait $pid; echo $?";
    let env = [
        ("T", table.as_str()),
        ("S", stream.as_str()),
        ("D", dir.to_str().unwrap()),
    ];
    let o = shell(script, &env);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0",
        "{}",
        read("task.err")
    );
    let during: serde_json::Value = serde_json::from_str(&read("during.json")).unwrap();
    let shards = during[0]["shards"].as_array().unwrap();
    let leased: Vec<&serde_json::Value> = shards
        .iter()
        .filter(|s| !s["task_lease"].is_null())
        .collect();
    assert_eq!(leased.len(), 1, "one shard is being read: {during}");
    assert_eq!(leased[0]["task_lease"]["lapsed"], false, "{during}");
    assert!(
        read("during.txt").contains("open (map task "),
        "{}",
        read("during.txt")
    );
    let after = status(&stream, &table, "ML");
    assert!(
        after[0]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["task_lease"].is_null()),
        "a finished task holds no lease: {after}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A run killed with -9 leaves its lease until it expires: the next run
/// says that its owner's process is gone, in one line without a doubled
/// prefix.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_left_by_a_killed_run_is_named_as_such() {
    let k = kinesis().await;
    let stream = unique("killed");
    create_stream(&k, &stream, 1).await;
    let table = table();
    put_many(&k, &stream, 0, 3).await;
    let mut first = spawn_reader(&exec_args(&stream, &table, "K", "0", "cat; sleep 30"));
    wait_until("the first run opens iteration 0", 10, || {
        !status(&stream, &table, "K").as_array().unwrap().is_empty()
    });
    let pid = first.id();
    first.kill().unwrap();
    first.wait().unwrap();
    let mut again = args(&stream, &table, "K", "0");
    again.extend(["--lease-wait", "1s", "-q"]);
    let o = reader(&again);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    let last = stderr(&o).lines().last().unwrap_or("").to_string();
    assert!(
        last.starts_with("kinesis-reader: iteration 0 of logical name \"K\" is leased by ")
            && last.contains(&format!(
                "but its process {pid} no longer runs on this host (it ended without \
                 releasing the lease); waited 1s; rerun after "
            ))
            && last.ends_with(", or take it over now with --rerun-without-wait"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_map_hadoop_job_leaves_the_iteration_to_finish() {
    let k = kinesis().await;
    let stream = unique("onemap");
    create_stream(&k, &stream, 2).await;
    let table = table();
    put_many(&k, &stream, 0, 10).await;
    ok(run_plan(&stream, &table, "M", "0"));
    let o = reader_env(
        &args(&stream, &table, "M", "0"),
        &[
            ("mapreduce_task_partition", "0"),
            ("mapreduce_job_maps", "1"),
            ("mapreduce_task_attempt_id", "attempt_1_0001_m_000000_0"),
        ],
    );
    assert_eq!(parse_lines(&ok(o)).len(), 10);
    assert_eq!(status(&stream, &table, "M")[0]["state"], "open");
    let finish = [
        "finish",
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "M",
        "--iteration",
        "0",
    ];
    ok(reader(&finish));
    assert_eq!(status(&stream, &table, "M")[0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn finish_refuses_a_failed_iteration_unless_forced() {
    let k = kinesis().await;
    let stream = unique("finfail");
    create_stream(&k, &stream, 1).await;
    let table = table();
    put_many(&k, &stream, 0, 3).await;
    let a = exec_args(&stream, &table, "F", "0", "cat >/dev/null; exit 1");
    assert_eq!(code(&reader(&a)), Some(1));
    assert_eq!(status(&stream, &table, "F")[0]["state"], "failed");
    let finish = |force: bool| {
        let mut f = vec![
            "finish",
            "--stream",
            stream.as_str(),
            "--checkpoint-table",
            table.as_str(),
            "--logical-name",
            "F",
            "--iteration",
            "0",
        ];
        if force {
            f.push("--force");
        }
        reader(&f)
    };
    let o = finish(false);
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("recorded as failed"), "{}", stderr(&o));
    assert_eq!(status(&stream, &table, "F")[0]["state"], "failed");
    ok(finish(true));
    assert_eq!(status(&stream, &table, "F")[0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn writer_flags_and_names_that_disagree_are_refused_before_any_write() {
    let s3 = s3().await;
    let b = bucket(&s3).await;
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                format!("s3://{b}/plain.tsv"),
                "--compress".into(),
                "gzip".into(),
            ],
            "end the key with .gz",
        ),
        (vec![format!("s3://{b}/d.tsv.gz")], "add --compress gzip"),
        (
            vec![
                format!("s3://{b}/f.tsv.zst"),
                "--compress".into(),
                "gzip".into(),
            ],
            "end the key with .gz",
        ),
        (vec![format!("s3://{b}")], "names a bucket but no object"),
        (
            vec![
                "dynamodb://some-table".into(),
                "--compress".into(),
                "gzip".into(),
            ],
            "--compress does not apply to a dynamodb:// target",
        ),
        (
            vec![format!("s3://{b}/x/"), "--columns".into(), "k:S".into()],
            "--columns does not apply to an s3:// target",
        ),
        (
            vec![
                format!("s3://{b}/x.tsv"),
                "--key-template".into(),
                "{iteration}".into(),
            ],
            "is the exact key",
        ),
        (
            vec![
                format!("s3://{b}/x/"),
                "--iteration".into(),
                "0".into(),
                "--parts-in-flight".into(),
                "0".into(),
            ],
            "must be 1 to 64",
        ),
        (
            vec![
                format!("s3://{b}/x/"),
                "--logical-name".into(),
                "a/b".into(),
            ],
            "without '/'",
        ),
    ];
    for (argv, says) in cases {
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        let o = writer(&a, b"a\t1\n");
        assert_eq!(code(&o), Some(2), "{argv:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{argv:?}: {}", stderr(&o));
    }
    assert!(keys(&s3, &b).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_waiting_for_a_lease_keeps_its_heartbeat() {
    let k = kinesis().await;
    let stream = unique("beat");
    create_stream(&k, &stream, 1).await;
    let table = table();
    put_many(&k, &stream, 0, 3).await;
    // The first run holds iteration 0 for 4 s (its command sleeps).
    let first = spawn_reader(&exec_args(
        &stream,
        &table,
        "B",
        "0",
        "cat >/dev/null; sleep 4",
    ));
    wait_until("the first run opens iteration 0", 10, || {
        !status(&stream, &table, "B").as_array().unwrap().is_empty()
    });
    // A second attempt, as Hadoop would start it, waits for that lease.
    let mut a = args(&stream, &table, "B", "0");
    a.extend(["--hadoop-reporter", "--status-interval", "1s"]);
    let waiting = reader(&a);
    assert!(first.wait_with_output().unwrap().status.success());
    assert!(waiting.status.success(), "{}", stderr(&waiting));
    let log = stderr(&waiting);
    let beats: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("reporter:status:"))
        .collect();
    // Each says what it waits for (it is the task's status in Hadoop's
    // task reports and web UI), naming the holder.
    let waits: Vec<&&str> = beats
        .iter()
        .filter(|l| l.contains(": waiting: iteration 0 is held by ") && l.contains(" until "))
        .collect();
    assert!(
        waits.len() >= 2,
        "{} heartbeats saying what they wait for:\n{log}",
        waits.len()
    );
}

/// Bad settings a new user tries, each with the exact line it gives.
#[tokio::test(flavor = "multi_thread")]
async fn aws_trouble_is_one_line_that_says_what_to_do() {
    let no_files = std::env::temp_dir().join("no-such-aws-config");
    let no_files = no_files.to_str().unwrap();
    let bare_env = |bin: &str, args: &[&str], creds: bool, env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(bin);
        c.args(args)
            .env_clear()
            .env("AWS_CONFIG_FILE", no_files)
            .env("AWS_SHARED_CREDENTIALS_FILE", no_files)
            .envs(env.iter().copied())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::temp_dir())
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(std::process::Stdio::null());
        if creds {
            c.env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test");
        }
        c.output().unwrap()
    };
    let bare = |bin: &str, args: &[&str], creds: bool| bare_env(bin, args, creds, &[]);
    let first = |o: &std::process::Output| stderr(o).lines().next().unwrap_or("").to_string();
    let ep = endpoint();
    let cases: Vec<(std::process::Output, i32, String)> =
        vec![
        (
            bare(READER, &["--stream", "s", "--endpoint-url", ep], false),
            1,
            "kinesis-reader: DescribeStreamSummary on stream \"s\": no AWS credentials found: set \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass --profile, or run where an \
             instance or task role provides them"
                .into(),
        ),
        (
            bare(READER, &["--stream", "s", "--endpoint-url", "http://127.0.0.1:1"], true),
            1,
            "kinesis-reader: DescribeStreamSummary on stream \"s\": cannot connect to the \
             endpoint (connection refused): check --endpoint-url or AWS_ENDPOINT_URL, and that \
             the service is running"
                .into(),
        ),
        (
            bare(READER, &["--stream", "s", "--endpoint-url", "notaurl"], true),
            2,
            "kinesis-reader: --endpoint-url \"notaurl\": expected a URL such as \
             http://127.0.0.1:4566 or https://kinesis.us-east-1.amazonaws.com"
                .into(),
        ),
        // Credentials in the environment do not make a missing profile work.
        (
            bare(READER, &["--stream", "s", "--endpoint-url", ep, "--profile", "nosuch"], true),
            2,
            "kinesis-reader: --profile nosuch: no such profile in the AWS config files \
             (~/.aws/config and ~/.aws/credentials, or AWS_CONFIG_FILE and \
             AWS_SHARED_CREDENTIALS_FILE); they define none"
                .into(),
        ),
        // A setting is named where it came from: here Hadoop's environment.
        (
            bare_env(
                READER,
                &["--endpoint-url", ep],
                true,
                &[("kinesis_stream_name", "no-such-stream")],
            ),
            1,
            format!(
                "kinesis-reader: DescribeStreamSummary: stream \"no-such-stream\" does not \
                 exist in region {REGION}; check environment \
                 kinesis_stream_name=no-such-stream and the region"
            ),
        ),
    ];
    for (o, code, line) in cases {
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert_eq!(first(&o), line);
    }
    let o = writer_env(
        &["s3://no-such-bucket-here/x/", "--iteration", "0"],
        b"a\t1\n",
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        first(&o),
        "kinesis-writer: PutObject s3://no-such-bucket-here/x/iteration=0/part-00000: the bucket \
         does not exist: create it, or check the name (NoSuchBucket: The specified bucket does \
         not exist)"
    );
}

/// Two map tasks whose manifest lines overlap (s1 in both), run at once:
/// the second waits for the first's lease on s1, then replays it; neither
/// reads s1 while the other does, and both succeed.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_manifest_lines_never_read_one_shard_at_once() {
    let k = kinesis().await;
    let stream = unique("overlapline");
    create_stream(&k, &stream, 3).await;
    let table = table();
    put_many(&k, &stream, 0, 60).await;
    let ids: Vec<String> = String::from_utf8(ok(run_plan(&stream, &table, "V", "0")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["shards"][0].to_string())
        .collect();
    let line = |a: &str, b: &str| {
        format!(r#"{{"iteration":0,"logical_name":"V","shards":[{a},{b}],"stream":"{stream}"}}"#)
    };
    let dir = std::env::temp_dir().join(unique("overlap"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = "fields=shard_id,sequence_number,partition_key,data; \
        printf '%s\\n' \"$A\" | kinesis-reader --shards-from-stdin --checkpoint-table \"$T\" \
          --fields $fields -- sh -c 'cat > \"$D/a.out\"; sleep 3' 2> \"$D/a.err\" & pid=$!; \
        sleep 1; \
        printf '%s\\n' \"$B\" | kinesis-reader --shards-from-stdin --checkpoint-table \"$T\" \
          --fields $fields > \"$D/b.out\" 2> \"$D/b.err\"; b=$?; \
        wait $pid; a=$?; echo \"$a $b\"";
    let o = shell(
        script,
        &[
            ("A", &line(&ids[0], &ids[1])),
            ("B", &line(&ids[1], &ids[2])),
            ("T", &table),
            ("D", dir.to_str().unwrap()),
        ],
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0 0",
        "{}\n--- a:\n{}\n--- b:\n{}",
        stderr(&o),
        read("a.err"),
        read("b.err")
    );
    assert!(
        read("b.err").contains("waiting for it"),
        "{}",
        read("b.err")
    );
    // The shard both lines name: the second task replayed it exactly.
    let s1: String = ids[1].trim_matches('"').to_string();
    let of = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{s1}\t")))
            .map(str::to_string)
            .collect()
    };
    assert!(!of(&read("a.out")).is_empty());
    assert_eq!(of(&read("a.out")), of(&read("b.out")));
    std::fs::remove_dir_all(dir).ok();
}

/// A map task whose shard lease another attempt took over while it read
/// exits 3, even when the taker has already finished and released that
/// lease; one whose lease was taken only after it printed its share whole
/// (its command still running) succeeds, saying so.
#[tokio::test(flavor = "multi_thread")]
async fn a_map_task_whose_lease_is_taken_over_exits_3_unless_it_printed_everything() {
    let k = kinesis().await;
    let stream = unique("losttask");
    create_stream(&k, &stream, 1).await;
    let table = table();
    // 200 KB: more than the pipe holds, so a reader whose command waits
    // before reading is still writing when its lease is taken.
    let big = "x".repeat(1000);
    for i in 0..200 {
        put(&k, &stream, "p", format!("{i} {big}").as_bytes()).await;
    }
    let manifest = ok(run_plan(&stream, &table, "M4", "0"));
    let dir = std::env::temp_dir().join(unique("losttask"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest"), &manifest).unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    // First: taken over while it reads (its 3 s lease is renewed each
    // second, so it hears of the takeover at once): exit 3, incomplete.
    // Then: taken over after it printed its share whole, while its command
    // still runs: what it printed is the iteration's, and it succeeds.
    for (command, lease, expected, said) in [
        (
            "sleep 4; cat >/dev/null",
            "3s",
            "3 0",
            "another run took the iteration over while this run read it",
        ),
        (
            "cat >/dev/null; sleep 4",
            "30s",
            "0 0",
            "after this one printed its share whole",
        ),
    ] {
        let script = format!(
            "kinesis-reader --shards-from-stdin --checkpoint-table \"$T\" --lease-duration {lease} \
               -- sh -c '{command}' < \"$D/manifest\" 2> \"$D/first.err\" & pid=$!; \
             sleep 1.5; \
             kinesis-reader --shards-from-stdin --checkpoint-table \"$T\" --rerun-without-wait \
               < \"$D/manifest\" > /dev/null 2> \"$D/second.err\"; b=$?; \
             wait $pid; a=$?; echo \"$a $b\""
        );
        let o = shell(&script, &[("T", &table), ("D", dir.to_str().unwrap())]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            expected,
            "{command}: {}\n--- first:\n{}\n--- second:\n{}",
            stderr(&o),
            read("first.err"),
            read("second.err")
        );
        assert!(read("first.err").contains(said), "{}", read("first.err"));
    }
    std::fs::remove_dir_all(dir).ok();
}

/// On a terminal the writer's progress line is cleared at the end, and its
/// summary and warnings stand on lines of their own.
#[tokio::test(flavor = "multi_thread")]
async fn the_writers_progress_leaves_only_its_summary_on_the_terminal() {
    let s3c = s3().await;
    let b = bucket(&s3c).await;
    let target = format!("s3://{b}/progress/");
    let script = "(seq 1 200000 | sed 's/$/\\tx/'; sleep 1.2; printf 'cut') | \
        kinesis-writer \"$TARGET\" --iteration 0 --logical-name P --on-bad-line skip";
    let lines = on_a_terminal(script, &[("TARGET", target.as_str())], None);
    assert!(
        lines.iter().all(|l| !l.starts_with("kinesis-writer: ")),
        "the progress line is left: {lines:#?}"
    );
    let summary = lines
        .iter()
        .find(|l| l.contains(" wrote s3://"))
        .unwrap_or_else(|| panic!("no summary: {lines:#?}"));
    assert!(summary.starts_with('['), "{summary}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('[') && l.contains("skipping line 200001")),
        "{lines:#?}"
    );
}

/// Ctrl-C pressed while the reader's per-shard display is drawn (the
/// terminal echoes `^C` into it): the display is cleared, and what remains
/// says why the run stopped.
#[tokio::test(flavor = "multi_thread")]
async fn after_ctrl_c_nothing_of_the_readers_display_is_left() {
    let k = kinesis().await;
    let stream = unique("ctrlc");
    create_stream(&k, &stream, 2).await;
    put_many(&k, &stream, 0, 20).await;
    let table = table();
    let script = "kinesis-reader --stream \"$S\" --checkpoint-table \"$T\" \
        --logical-name C --until timeouts --nodata-timeout 1m -- sh -c 'cat > /dev/null' > /dev/null";
    let env = [("S", stream.as_str()), ("T", table.as_str())];
    let lines = on_a_terminal(script, &env, Some("2.5"));
    assert!(
        lines.iter().all(|l| !l.starts_with("shards ")
            && !l.contains("output: ")
            && !l.contains("caught up")),
        "the display is left: {lines:#?}"
    );
    // The 80-column terminal wraps the last message over two rows.
    let text = lines.concat();
    let last = &text[text.rfind('[').unwrap_or(0)..];
    assert!(
        last.contains("kinesis-reader: stopped by SIGINT; iteration 0 is released as failed"),
        "{lines:#?}"
    );
}

/// The table of bad inputs a new user tries, with the exact first line and
/// exit code each gives (the AWS failures are in
/// `aws_trouble_is_one_line_that_says_what_to_do`).
#[tokio::test(flavor = "multi_thread")]
async fn each_bad_input_gives_its_exact_first_line() {
    let table = table();
    let reader_cases: &[(&[&str], &str)] = &[
        (
            &["--stream", "s", "--iteration", "-1"],
            "kinesis-reader: --iteration -1: expected a whole number ≥ 0 or `next`",
        ),
        (
            &["--stream", "s", "--lease-duration", "1s"],
            "kinesis-reader: --lease-duration 1s: must be 2s to 1h",
        ),
        (
            &["--stream", "s", "--max-concurrent-shards", "0"],
            "kinesis-reader: --max-concurrent-shards 0: expected a whole number ≥ 1",
        ),
        (
            &["--stream", "s", "--max-concurrent-shards", "-1"],
            "kinesis-reader: --max-concurrent-shards -1: expected a whole number ≥ 1",
        ),
        (
            &["--stream", "s", "--max-memory", "-5MiB"],
            "kinesis-reader: --max-memory -5MiB: \"-5MiB\" is not a size like 8MiB or 1.5GiB",
        ),
        (
            &["--stream", "s", "--rerun-without-wait"],
            "kinesis-reader: --rerun-without-wait is about the lease on an iteration, and \
             without a checkpoint table nothing is leased: add --checkpoint-table T, or leave \
             it out",
        ),
        (
            &["--stream", "s", "--max-memory", "10MiB"],
            "kinesis-reader: --max-memory 10MiB: must be at least 64MiB",
        ),
        (
            &["status", "--stream", "s", "--last", "-1"],
            "kinesis-reader: --last -1: expected a whole number ≥ 0",
        ),
        (
            &["--stream", "no spaces"],
            "kinesis-reader: --stream no spaces: a stream name is 1 to 128 characters of \
             A-Z, a-z, 0-9, '_', '-' and '.' (or give the stream's ARN)",
        ),
        (
            &[
                "status",
                "--stream",
                "s",
                "--checkpoint-table",
                &table,
                "--logical-name",
                "l",
                "--iteration",
                "2",
                "--lease-wait",
                "1s",
            ],
            "kinesis-reader: --iteration, --lease-wait do not apply to status: it shows the \
             latest iterations of the logical name (--last N says how many)",
        ),
        (
            &["--stream", "s", "--", "./no-such-mapper.py"],
            "kinesis-reader: command \"./no-such-mapper.py\" (after --) cannot be run: no such \
             file",
        ),
    ];
    for (args, line) in reader_cases {
        let o = reader(args);
        assert_eq!(code(&o), Some(2), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().next().unwrap_or(""), *line, "{args:?}");
    }
    let writer_cases: &[(&[&str], &str)] = &[
        (
            &["s3://b/x/", "--iteration", "0", "--parts-in-flight", "0"],
            "kinesis-writer: --parts-in-flight 0: must be 1 to 64",
        ),
        (
            &["s3://b/x/", "--iteration", "0", "--part-size", "1MiB"],
            "kinesis-writer: --part-size 1MiB: S3 parts are 5MiB to 5GiB",
        ),
        (
            &["s3://b/x/", "--iteration", "0", "--part-size", "6GiB"],
            "kinesis-writer: --part-size 6GiB: S3 parts are 5MiB to 5GiB",
        ),
        (
            &[
                "dynamodb://tbl",
                "--columns",
                "k:S",
                "--batches-in-flight",
                "0",
            ],
            "kinesis-writer: --batches-in-flight 0: must be 1 to 64",
        ),
        (
            &["s3://b/x/", "--logical-name", "a/b", "--iteration", "1"],
            "kinesis-writer: logical name \"a/b\": use 1 to 255 characters without '/' or \
             control characters",
        ),
        (
            &["dynamodb://tbl", "--columns", "k:S", "--compress", "gzip"],
            "kinesis-writer: --compress does not apply to a dynamodb:// target (only to \
             s3:// targets)",
        ),
        (
            &["s3://b/x.tsv.gz", "--iteration", "0"],
            "kinesis-writer: S3 key \"x.tsv.gz\" ends with .gz, but the object would be stored \
             uncompressed, and readers pick the codec from the name: add --compress gzip, or \
             drop .gz from the key",
        ),
        (
            &[
                "s3://b/x/",
                "--iteration",
                "0",
                "-D",
                "kinesis.checkpoint.enabled=true",
            ],
            "kinesis-writer: -D kinesis.checkpoint.enabled is a kinesis-reader setting; \
             kinesis-writer reads only kinesis.accessKey, kinesis.secretKey, \
             kinesis.checkpoint.logical.name, kinesis.checkpoint.iteration.no, \
             kinesis.stream.name, kinesis.endpoint.region",
        ),
    ];
    for (args, line) in writer_cases {
        let o = writer(args, b"a\t1\n");
        assert_eq!(code(&o), Some(2), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().next().unwrap_or(""), *line, "{args:?}");
    }
}
