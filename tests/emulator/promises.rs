//! The README's promises on the paths a new user's trial found open: a
//! command that exits 0 without reading its (small) input, a Hadoop task
//! whose partition variables are missing or wrong, a closed stdout or stdin,
//! a writer fed by an exec-mode reader that is killed, reducers that would
//! write one key. Each fails on the build before its fix.

use crate::harness::*;
use std::process::Stdio;

/// PATH with the binaries first, for a command that runs `kinesis-writer`.
fn path_with_binaries() -> String {
    let bins = std::path::Path::new(READER)
        .parent()
        .unwrap()
        .display()
        .to_string();
    format!("{bins}:{}", std::env::var("PATH").unwrap())
}

/// An iteration's state, as `status --json` shows it.
fn state(stream: &str, table: &str, logical: &str, n: usize) -> String {
    status(stream, table, logical)[n]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_exits_0_without_reading_fails_however_small_its_input() {
    let k = kinesis().await;
    let stream = unique("e7");
    create_stream(&k, &stream, 1).await;
    put_many(&k, &stream, 0, 300).await;
    let t = table();
    // A few KB: the whole iteration fits in the pipe, every write succeeds.
    let run = |cmd: &str| {
        let mut a = args(&stream, &t, "e", "next");
        a.extend(["--", "sh", "-c", cmd]);
        reader(&a)
    };
    let o = run("sleep 1; exit 0");
    fails_with(&o, 5, "without reading all of its input");
    assert!(stderr(&o).contains("left in its pipe"), "{}", stderr(&o));
    assert_eq!(state(&stream, &t, "e", 0), "failed");
    // Reading part of it is not reading it.
    let o = run("head -c 10 >/dev/null; exit 0");
    fails_with(&o, 5, "without reading all of its input");
    assert_eq!(state(&stream, &t, "e", 0), "failed");
    // A command that reads everything succeeds, with the same iteration.
    let o = run("wc -l");
    assert_eq!(String::from_utf8_lossy(&ok(o)).trim(), "300");
    assert_eq!(state(&stream, &t, "e", 0), "succeeded");

    // Map mode: a task's command that reads 10 bytes and exits 0 fails the task.
    put_many(&k, &stream, 300, 50).await;
    let manifest = ok(run_plan(&stream, &t, "e", "next"));
    let task = |cmd: &str| {
        reader_input(
            &[
                "--shards-from-stdin",
                "--checkpoint-table",
                &t,
                "--",
                "sh",
                "-c",
                cmd,
            ],
            &manifest,
            &[],
        )
    };
    let o = task("head -c 10 >/dev/null; exit 0");
    fails_with(&o, 5, "without reading all of its input");
    // A task's failure fails its attempt (Hadoop retries it); the shard's
    // fixed end stays, so the retry replays exactly the same records.
    // The retried task reads exactly the 50 records.
    let o = task("wc -l");
    assert_eq!(String::from_utf8_lossy(&ok(o)).trim(), "50");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hadoop_task_with_a_bad_partition_reads_nothing_and_commits_nothing() {
    let k = kinesis().await;
    let stream = unique("mp");
    create_stream(&k, &stream, 3).await;
    put_many(&k, &stream, 0, 60).await;
    let t = table();
    ok(run_plan(&stream, &t, "pb", "0"));
    let a = [
        "--checkpoint-table",
        &t,
        "--stream",
        &stream,
        "--logical-name",
        "pb",
        "--iteration",
        "0",
    ];
    let attempt = ("mapreduce_task_attempt_id", "attempt_1_0001_m_000001_0");
    for env in [
        &[
            attempt,
            ("mapreduce_task_partition", "5"),
            ("mapreduce_job_maps", "3"),
        ][..],
        &[attempt][..],
        &[("mapred_task_id", "attempt_1_0001_m_000001_0")][..],
        &[
            ("mapreduce_job_maps", "0"),
            ("mapreduce_task_partition", "0"),
        ][..],
    ] {
        let o = reader_env(&a, env);
        fails_with(&o, 2, "Hadoop task");
        assert_eq!(state(&stream, &t, "pb", 0), "open", "{env:?}");
    }
    // A valid share reads only its shard, and still commits nothing.
    let o = reader_env(
        &a,
        &[
            attempt,
            ("mapreduce_task_partition", "1"),
            ("mapreduce_job_maps", "3"),
        ],
    );
    let n = ok(o).iter().filter(|&&b| b == b'\n').count();
    assert!(n > 0 && n < 60, "one shard of three: {n} lines");
    assert_eq!(state(&stream, &t, "pb", 0), "open");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_or_stdin_is_refused_before_anything_counts() {
    let k = kinesis().await;
    let stream = unique("fd");
    create_stream(&k, &stream, 1).await;
    put_many(&k, &stream, 0, 20).await;
    let t = table();
    let a = args(&stream, &t, "c", "0").join(" ");
    let o = shell(&format!("kinesis-reader {a} >&-"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("standard output is closed"),
        "{}",
        stderr(&o)
    );
    assert!(status(&stream, &t, "c").as_array().unwrap().is_empty());
    // In exec mode the command gets the closed stdout it was given: its
    // output has nowhere to go, so `cat` fails, and so does the iteration.
    let o = shell(&format!("kinesis-reader {a} -- cat >&-"), &[]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(status(&stream, &t, "c")
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["state"] != "succeeded"));
    // A full disk fails the iteration.
    let o = shell(&format!("kinesis-reader {a} >/dev/full"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(state(&stream, &t, "c", 0), "failed");
    // A deliberate /dev/null is the user's choice, and works, opened either
    // way (Python's subprocess.DEVNULL opens it for reading and writing).
    let o = shell(&format!("kinesis-reader {a} 1<>/dev/null"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state(&stream, &t, "c", 0), "succeeded");
    let o = shell(&format!("kinesis-reader {a} >/dev/null"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let s3c = s3().await;
    let b = bucket(&s3c).await;
    let o = shell(
        &format!("kinesis-writer s3://{b}/x/ --iteration 0 <&-"),
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("standard input is closed"),
        "{}",
        stderr(&o)
    );
    assert!(keys(&s3c, &b).await.is_empty());
}

/// Starts an exec-mode reader whose command signals (a file appears) once
/// the first line has reached it, then goes on slowly into `sink`.
fn reader_feeding(a: &[&str], mark: &std::path::Path, sink: &str) -> std::process::Child {
    let script = format!(
        "{{ IFS= read -r first; printf '%s\\n' \"$first\"; touch {}; sleep 2; cat; }} | {sink}",
        mark.display()
    );
    let mut all: Vec<&str> = a.to_vec();
    all.extend(["--", "sh", "-c", &script]);
    command(READER, &all, &[])
        .env("PATH", path_with_binaries())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_fed_by_a_reader_killed_with_9_completes_nothing() {
    let k = kinesis().await;
    let stream = unique("ci");
    create_stream(&k, &stream, 2).await;
    put_many(&k, &stream, 0, 400).await;
    let t = table();
    let s3c = s3().await;
    let b = bucket(&s3c).await;
    let d = dynamo().await;
    let items = crate::writer::table(&d, false).await;
    let dir = std::env::temp_dir().join(unique("k9"));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, sink) in [
        format!("kinesis-writer s3://{b}/k9/"),
        // 17 keys: one batch, the last, that a whole input would apply.
        format!(
            "cut -f 1 | sed 's/$/\\t1/' | kinesis-writer dynamodb://{items} --columns error:S,count:N"
        ),
    ]
    .iter()
    .enumerate()
    {
        let mark = dir.join(format!("first-line-{i}"));
        let logical = format!("k9-{i}");
        let a = [
            "--stream",
            &stream,
            "--checkpoint-table",
            &t,
            "--logical-name",
            &logical,
            "--iteration",
            "next",
            "--batch-size",
            "100",
        ];
        let mut child = reader_feeding(&a, &mark, sink);
        wait_until("the command got its first line", 60, || mark.exists());
        // The OOM killer's way: no handler runs.
        child.kill().unwrap();
        // stderr ends when the pipeline, which goes on without its reader, has.
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), None, "killed by a signal");
        let e = stderr(&o);
        assert!(e.contains("kinesis-writer") && e.contains("is gone"), "{e}");
    }
    assert!(
        keys(&s3c, &b).await.is_empty(),
        "an object was completed from a killed reader's output"
    );
    assert_eq!(dangling_uploads(&s3c, &b).await, 0);
    let scan = d.scan().table_name(&items).send().await.unwrap();
    assert_eq!(scan.count(), 0, "a killed reader's last batch was applied");

    // The same pipelines with a reader that lives store everything.
    let whole = |logical: &str, sink: &str| {
        let mut a = args(&stream, &t, logical, "next");
        a.extend(["--", "sh", "-c", sink]);
        let path = path_with_binaries();
        let env = [("PATH", path.as_str())];
        reader_env(&a, &env)
    };
    let o = whole("k9-whole", &format!("kinesis-writer s3://{b}/k9/"));
    assert!(o.status.success(), "{}", stderr(&o));
    let stored = get(&s3c, &b, "k9/iteration=0/part-00000").await;
    assert_eq!(stored.iter().filter(|&&c| c == b'\n').count(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_whose_input_ends_before_its_readers_output_stores_nothing() {
    // `head` ends the writer's input while the reader still writes: the
    // writer hears that its input is not the reader's whole output.
    let k = kinesis().await;
    let stream = unique("hd");
    create_stream(&k, &stream, 1).await;
    let big = "x".repeat(2000);
    for i in 0..200 {
        put(&k, &stream, "p", format!("{i} {big}").as_bytes()).await;
    }
    let t = table();
    let s3c = s3().await;
    let b = bucket(&s3c).await;
    let path = path_with_binaries();
    let mut a = args(&stream, &t, "h", "next");
    let sink = format!("head -n 5 | kinesis-writer s3://{b}/h/");
    a.extend(["--", "sh", "-c", &sink]);
    let o = reader_env(&a, &[("PATH", &path)]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("did not deliver its whole output"),
        "{}",
        stderr(&o)
    );
    assert!(keys(&s3c, &b).await.is_empty());
    assert_eq!(state(&stream, &t, "h", 0), "failed");
}

/// The checkpoint table checks itself: each hand edit a trial made, and a
/// deleted item or header, is refused with one line naming the item and
/// the attribute, and nothing is printed or recorded.
#[tokio::test(flavor = "multi_thread")]
async fn hand_edits_of_the_checkpoint_table_are_refused_by_name() {
    use aws_sdk_dynamodb::types::AttributeValue as AV;
    let k = kinesis().await;
    let stream = unique("del");
    create_stream(&k, &stream, 2).await;
    let t = table();
    let names = [
        "gone", "nolast", "start", "back", "records", "next", "header", "nostart", "nonext",
        "strcount", "state",
    ];
    put_many(&k, &stream, 0, 80).await;
    for l in names {
        ok(reader(&args(&stream, &t, l, "next")));
    }
    put_many(&k, &stream, 80, 80).await;
    let mut second = std::collections::BTreeMap::new();
    for l in names {
        second.insert(l, ok(reader(&args(&stream, &t, l, "next"))));
    }
    let d = dynamo().await;
    let item_key = |l: &str, n: u64| format!("{stream}/{l}/{n:010}");
    let shard = "shardId-000000000000";
    let get = |l: &str, n: u64| {
        let d = d.clone();
        let key = item_key(l, n);
        let t = t.clone();
        async move {
            d.get_item()
                .table_name(&t)
                .key("HashKey", AV::S(key))
                .key("RangeKey", AV::S(shard.into()))
                .send()
                .await
                .unwrap()
                .item
                .unwrap()
        }
    };
    let s = |item: &std::collections::HashMap<String, AV>, a: &str| item[a].as_s().unwrap().clone();
    // Sets (or with None removes) one attribute of iteration n's item of `shard`.
    let set = |l: &str, n: u64, attribute: &str, value: Option<AV>| {
        let u = d
            .update_item()
            .table_name(&t)
            .key("HashKey", AV::S(item_key(l, n)))
            .key("RangeKey", AV::S(shard.into()))
            .expression_attribute_names("#a", attribute);
        match value {
            Some(v) => u
                .update_expression("SET #a = :v")
                .expression_attribute_values(":v", v),
            None => u.update_expression("REMOVE #a"),
        }
        .send()
    };
    let refused = |l: &str, iteration: &str, words: &[&str]| {
        let o = reader(&args(&stream, &t, l, iteration));
        assert_eq!(o.status.code(), Some(2), "{l}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(words.iter().all(|w| e.contains(w)), "{l}: {words:?} in {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{l}: one line: {e}");
        assert!(o.stdout.is_empty(), "{l}: nothing printed");
    };

    // A deleted shard item: the replay and the next iteration both refuse.
    d.delete_item()
        .table_name(&t)
        .key("HashKey", AV::S(item_key("gone", 1)))
        .key("RangeKey", AV::S("shardId-000000000001".into()))
        .send()
        .await
        .unwrap();
    refused(
        "gone",
        "1",
        &[
            "no item for shard shardId-000000000001",
            "never be read again",
        ],
    );
    refused(
        "gone",
        "next",
        &[
            "2 planned shards",
            "1 planned shard item",
            &item_key("gone", 1),
        ],
    );

    // last_seq removed.
    set("nolast", 1, "last_seq", None).await.unwrap();
    refused("nolast", "1", &["no last_seq", shard]);

    // start moved past the recorded first record.
    let it = get("start", 1).await;
    let past = format!("after:{}", s(&it, "first_seq"));
    set("start", 1, "start", Some(AV::S(past))).await.unwrap();
    refused("start", "1", &["has start after:", "past its first_seq"]);

    // start moved back into the previous iteration's range.
    let it0 = get("back", 0).await;
    let back = format!("at:{}", s(&it0, "first_seq"));
    set("back", 1, "start", Some(AV::S(back))).await.unwrap();
    refused("back", "1", &["iteration 0 ended that shard", "both hold"]);

    // records changed: found by the replay, which then stops with exit 2.
    set("records", 1, "records", Some(AV::N("5".into())))
        .await
        .unwrap();
    let o = reader(&args(&stream, &t, "records", "1"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("past the 5 records its item records"),
        "{}",
        stderr(&o)
    );

    // next rewound below last_seq: neither replayed nor continued from.
    let it = get("next", 1).await;
    let rewound = format!("after:{}", s(&it, "first_seq"));
    set("next", 1, "next", Some(AV::S(rewound))).await.unwrap();
    refused("next", "1", &["next after:", "just after its last_seq"]);
    refused("next", "next", &["next after:", "just after its last_seq"]);

    // Attributes this version cannot read: named, with what they hold.
    set("nostart", 1, "start", None).await.unwrap();
    refused("nostart", "1", &[&item_key("nostart", 1), "has no start"]);
    set("nonext", 1, "next", None).await.unwrap();
    refused("nonext", "1", &["has no next"]);
    refused("nonext", "next", &["has no next"]);
    set("strcount", 1, "records", Some(AV::S("16".into())))
        .await
        .unwrap();
    refused(
        "strcount",
        "1",
        &["has records = S(\"16\")", "a whole number"],
    );
    d.update_item()
        .table_name(&t)
        .key("HashKey", AV::S(format!("{stream}/state")))
        .key("RangeKey", AV::S("0000000001".into()))
        .update_expression("SET #s = :v")
        .expression_attribute_names("#s", "state")
        .expression_attribute_values(":v", AV::S("bogus".into()))
        .send()
        .await
        .unwrap();
    refused(
        "state",
        "1",
        &["has state = S(\"bogus\")", "open, succeeded or failed"],
    );

    // A deleted header, its items left.
    d.delete_item()
        .table_name(&t)
        .key("HashKey", AV::S(format!("{stream}/header")))
        .key("RangeKey", AV::S("0000000001".into()))
        .send()
        .await
        .unwrap();
    refused("header", "1", &["no header", &item_key("header", 1)]);

    // Nothing was recorded by the refusals: the unedited iteration replays as before.
    // (`status` itself refuses the items this version cannot read.)
    for l in ["nolast", "start", "back", "records", "next"] {
        assert_eq!(status(&stream, &t, l)[0]["state"], "succeeded", "{l}");
    }
    assert!(!ok(reader(&args(&stream, &t, "gone", "0"))).is_empty());

    // The supported edit: rewinding "gone" by deleting iteration 1 whole
    // (its header and its remaining item). `next` opens it again from
    // iteration 0's ends, with the same records.
    for (hash, range) in [
        (format!("{stream}/gone"), "0000000001"),
        (item_key("gone", 1), shard),
    ] {
        d.delete_item()
            .table_name(&t)
            .key("HashKey", AV::S(hash))
            .key("RangeKey", AV::S(range.into()))
            .send()
            .await
            .unwrap();
    }
    let again = ok(reader(&args(&stream, &t, "gone", "next")));
    assert_eq!(
        again, second["gone"],
        "the rewound iteration holds the same records"
    );
    assert_eq!(status(&stream, &t, "gone")[1]["state"], "succeeded");
}

/// What a new user met with a typo: status of a stream that does not exist,
/// and a writer's table that does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_stream_or_table_is_named_with_what_to_do() {
    let t = table();
    let o = reader(&[
        "status",
        "--stream",
        "no-such-stream-typo",
        "--checkpoint-table",
        &t,
        "--logical-name",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("\"no-such-stream-typo\" does not exist")
            && stderr(&o).contains("typo"),
        "{}",
        stderr(&o)
    );
    let o = writer(&["dynamodb://nosuch", "--columns", "k:S,v:N"], b"a\t1\n");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("table nosuch does not exist")
            && e.contains("aws dynamodb create-table --table-name nosuch")
            && e.contains("AttributeName=k,KeyType=HASH"),
        "{e}"
    );
}

/// Add mode records each iteration in the items it adds, so that a rerun
/// skips them: an add applied from an input cut short would stay short for
/// good. Under an exec-mode reader that is killed, nothing is added, and
/// the rerun adds the whole iteration once.
#[tokio::test(flavor = "multi_thread")]
async fn add_mode_under_a_killed_reader_adds_nothing_and_the_rerun_adds_it_whole() {
    let k = kinesis().await;
    let stream = unique("addk");
    create_stream(&k, &stream, 2).await;
    put_many(&k, &stream, 0, 300).await;
    let t = table();
    let d = dynamo().await;
    let items = crate::writer::table(&d, false).await;
    let dir = std::env::temp_dir().join(unique("addk"));
    std::fs::create_dir_all(&dir).unwrap();
    let mark = dir.join("first-line");
    let sink = format!(
        "cut -f 1 | sort | sed 's/$/\\t1/' | kinesis-writer dynamodb://{items} --columns \
         error:S,count:N --mode add"
    );
    let a = [
        "--stream",
        &stream,
        "--checkpoint-table",
        &t,
        "--logical-name",
        "add",
        "--iteration",
        "next",
        "--lease-duration",
        "3s",
    ];
    let mut child = reader_feeding(&a, &mark, &sink);
    wait_until("the command got its first line", 60, || mark.exists());
    child.kill().unwrap();
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert!(
        e.contains("is gone") && e.contains("nothing was added"),
        "{e}"
    );
    let scan = d.scan().table_name(&items).send().await.unwrap();
    assert_eq!(scan.count(), 0, "a killed reader's input was added");
    // The rerun (once the dead run's lease has expired) adds it whole, once.
    let path = path_with_binaries();
    let mut again = a.to_vec();
    again.extend(["--", "sh", "-c", &sink]);
    for _ in 0..2 {
        let o = reader_env(&again, &[("PATH", &path)]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let scan = d.scan().table_name(&items).send().await.unwrap();
    let total: u64 = scan
        .items()
        .iter()
        .map(|i| i["count"].as_n().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 300, "each record counted once");
    std::fs::remove_dir_all(dir).ok();
}

/// Map tasks of one plan that add into the same keys each count: a task's
/// adds are recorded under its own share of the iteration, so the second
/// is not skipped as "already applied"; a retried task still adds once.
#[tokio::test(flavor = "multi_thread")]
async fn map_tasks_adding_into_the_same_keys_each_count_once() {
    let k = kinesis().await;
    let stream = unique("addmap");
    create_stream(&k, &stream, 2).await;
    put_many(&k, &stream, 0, 200).await;
    let t = table();
    let d = dynamo().await;
    let items = crate::writer::table(&d, false).await;
    let manifest = String::from_utf8(ok(run_plan(&stream, &t, "am", "next"))).unwrap();
    let lines: Vec<&str> = manifest.lines().collect();
    assert_eq!(lines.len(), 2, "{manifest}");
    let path = path_with_binaries();
    let sink = format!(
        "cut -f 1 | sort | sed 's/$/\\t1/' | kinesis-writer dynamodb://{items} --columns \
         error:S,count:N --mode add"
    );
    // Each line once, and the first again (a retried attempt).
    for line in [lines[0], lines[1], lines[0]] {
        let o = reader_input(
            &[
                "--shards-from-stdin",
                "--checkpoint-table",
                &t,
                "--",
                "sh",
                "-c",
                &sink,
            ],
            line.as_bytes(),
            &[("PATH", &path)],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let scan = d.scan().table_name(&items).send().await.unwrap();
    let total: u64 = scan
        .items()
        .iter()
        .map(|i| i["count"].as_n().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 200, "every record counted once");
}

/// SIGTERM to an exec-mode reader reaches its command's whole pipeline, not
/// only the shell: nothing of it goes on after the reader said the
/// iteration failed.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_reaches_every_process_of_the_command() {
    let k = kinesis().await;
    let stream = unique("term");
    create_stream(&k, &stream, 1).await;
    put_many(&k, &stream, 0, 5).await;
    let t = table();
    let mut a = args(&stream, &t, "g", "next");
    // A duration no other process uses, to find this pipeline's sleep by.
    let marker = format!(
        "{}.{}",
        60 + std::process::id() % 30,
        std::process::id() % 997
    );
    let script = format!("sleep {marker} | cat");
    a.extend(["--", "sh", "-c", &script]);
    let child = spawn_reader(&a);
    let running = || {
        std::process::Command::new("pgrep")
            .args(["-f", &format!("^sleep {marker}$")])
            .output()
            .unwrap()
            .status
            .success()
    };
    wait_until("the command's pipeline runs", 60, running);
    // SAFETY: our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!running(), "the pipeline's sleep outlived the reader");
    assert_eq!(state(&stream, &t, "g", 0), "failed");
}
