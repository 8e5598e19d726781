//! kinesis-writer against moto: S3 objects named per iteration, atomic and
//! bounded in memory; DynamoDB put (last wins) and add (once per iteration);
//! bad lines.

use crate::harness::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// About `mb` MB of varied text lines, the same every time.
fn text(mb: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(mb << 20);
    let mut i = 0u64;
    while v.len() < mb << 20 {
        i += 1;
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        writeln!(v, "key-{}\t{}\t{:x}", x % 1000, i, x).unwrap();
    }
    v
}

/// The peak buffer size the writer reported, in MiB.
fn peak_mib(o: &std::process::Output) -> usize {
    let e = stderr(o);
    let at = e.find("peak buffers ").expect("summary line");
    e[at + 13..].split(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_mb_through_s3_in_small_parts_round_trips_plain_gzip_and_zstd() {
    let s3 = s3().await;
    let b = bucket(&s3).await;
    let input = text(50);
    for (compress, ext) in [("none", ""), ("gzip", ".gz"), ("zstd", ".zst")] {
        let target = format!("s3://{b}/out/");
        let o = writer(
            &[
                "--logical-name",
                "L",
                "--iteration",
                "2",
                "--part-size",
                "5MiB",
                "--parts-in-flight",
                "2",
                "--compress",
                compress,
                target.as_str(),
            ],
            &input,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        // 5 MiB parts, 2 in flight: never more than (2 + 2) parts in memory.
        assert!(
            peak_mib(&o) <= 20,
            "peak {} MiB: {}",
            peak_mib(&o),
            stderr(&o)
        );
        let stored = get(&s3, &b, &format!("out/iteration=2/part-00000{ext}")).await;
        let mut plain = Vec::new();
        match compress {
            "gzip" => {
                flate2::read::GzDecoder::new(&stored[..])
                    .read_to_end(&mut plain)
                    .unwrap();
            }
            "zstd" => plain = zstd::decode_all(&stored[..]).unwrap(),
            _ => plain = stored,
        }
        assert!(
            plain == input,
            "{compress}: the object differs from the input"
        );
    }
    assert_eq!(dangling_uploads(&s3, &b).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_upload_completes_on_the_plain_path_without_a_warning() {
    // The moto wrapper answers CompleteMultipartUpload as S3 does; without
    // that, every completion here went through the lost-answer path.
    let s3 = s3().await;
    let b = bucket(&s3).await;
    let input = text(12);
    let target = format!("s3://{b}/plain/out.tsv");
    let o = writer(&[target.as_str(), "--part-size", "5MiB", "-v"], &input);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("3 parts"), "a multipart upload: {e}");
    assert!(!e.contains("WARN") && !e.contains("answer"), "{e}");
    assert!(get(&s3, &b, "plain/out.tsv").await == input);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_of_an_iteration_overwrites_the_same_key_with_the_same_bytes() {
    let s3 = s3().await;
    let b = bucket(&s3).await;
    let target = format!("s3://{b}/top-errors/");
    let input = b"503 eu-west-1\t58\n404 us-east-1\t63\n";
    let env = [
        ("kinesis_checkpoint_logical_name", "top"),
        ("KINESIS_ITERATION", "7"),
        ("mapreduce_task_partition", "3"),
    ];
    for _ in 0..2 {
        let o = writer_env(&[target.as_str()], input, &env);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(keys(&s3, &b).await, ["top-errors/iteration=7/part-00003"]);
    assert_eq!(
        get(&s3, &b, "top-errors/iteration=7/part-00003").await,
        input
    );
    // The one reducer of a job may say the output is whole; one of several
    // may not (it cannot know the others have finished).
    let single = [
        ("mapreduce_task_partition", "0"),
        ("mapreduce_job_reduces", "1"),
    ];
    let one = [&env[..2], &single[..]].concat();
    let o = writer_env(&[target.as_str(), "--success-marker"], input, &one);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = writer_env(&[target.as_str(), "--success-marker"], input, &env);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        keys(&s3, &b).await,
        [
            "top-errors/iteration=7/_SUCCESS",
            "top-errors/iteration=7/part-00000",
            "top-errors/iteration=7/part-00003"
        ]
    );
    // A key template, and an exact key.
    let t = format!("s3://{b}/t/");
    let o = writer(
        &[
            t.as_str(),
            "--logical-name",
            "top",
            "--iteration",
            "8",
            "--stream",
            "logs",
            "--iteration-start",
            "2026-11-26T14:05:00Z",
            "--key-template",
            "{stream}/{logical_name}/dt={date}/hr={hour}/{iteration}.tsv",
        ],
        input,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        get(&s3, &b, "t/logs/top/dt=2026-11-26/hr=14/8.tsv").await,
        input
    );
    let exact = format!("s3://{b}/exact/name.tsv");
    assert!(writer(&[exact.as_str()], input).status.success());
    assert_eq!(get(&s3, &b, "exact/name.tsv").await, input);
    // A prefix target without an iteration cannot name its object.
    let o = writer(&[target.as_str()], input);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--iteration"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_input_writes_an_empty_object_or_nothing_with_skip_empty() {
    let s3 = s3().await;
    let b = bucket(&s3).await;
    let t = format!("s3://{b}/e/");
    assert!(writer(&[t.as_str(), "--iteration", "0"], b"")
        .status
        .success());
    assert_eq!(get(&s3, &b, "e/iteration=0/part-00000").await, b"");
    assert!(
        writer(&[t.as_str(), "--iteration", "1", "--skip-empty"], b"")
            .status
            .success()
    );
    assert_eq!(keys(&s3, &b).await, ["e/iteration=0/part-00000"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_or_truncated_input_leaves_no_object_and_no_upload() {
    let s3 = s3().await;
    let b = bucket(&s3).await;
    let target = format!("s3://{b}/i/");
    // SIGTERM in the middle of a multipart upload (3 parts sent, input still open).
    let mut child = spawn_writer(&[target.as_str(), "--iteration", "1", "--part-size", "5MiB"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&text(16)).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("aborted"), "{}", stderr(&out));
    // Input cut off in the middle of a line (large, so a multipart upload had begun).
    let mut cut = text(12);
    cut.extend_from_slice(b"key-1\t99");
    let o = writer(
        &[target.as_str(), "--iteration", "2", "--part-size", "5MiB"],
        &cut,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
    assert!(keys(&s3, &b).await.is_empty(), "no object may appear");
    assert_eq!(
        dangling_uploads(&s3, &b).await,
        0,
        "no multipart upload may be left"
    );
}

pub(crate) async fn table(d: &aws_sdk_dynamodb::Client, range: bool) -> String {
    use aws_sdk_dynamodb::types::*;
    let t = unique("items");
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |n: &str, k| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(k)
            .build()
            .unwrap()
    };
    let mut req = d
        .create_table()
        .table_name(&t)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("error"))
        .key_schema(key("error", KeyType::Hash));
    if range {
        req = req
            .attribute_definitions(attr("region"))
            .key_schema(key("region", KeyType::Range));
    }
    req.send().await.unwrap();
    t
}

/// (error, region) → count.
pub(crate) async fn counts(
    d: &aws_sdk_dynamodb::Client,
    t: &str,
) -> BTreeMap<(String, String), String> {
    let mut all = BTreeMap::new();
    let mut start = None;
    loop {
        let out = d
            .scan()
            .table_name(t)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for i in out.items() {
            let s = |k: &str| i[k].as_s().unwrap().clone();
            all.insert(
                (s("error"), s("region")),
                i["count"].as_n().unwrap().clone(),
            );
        }
        match out.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn put_loads_ten_thousand_lines_with_repeated_keys_last_wins() {
    let d = dynamo().await;
    let t = table(&d, true).await;
    let mut input = String::new();
    let mut expected = BTreeMap::new();
    for i in 0..10_000u32 {
        // 300 keys, each repeated, often within one 25-item batch window.
        let (e, r) = (
            format!("{}", 400 + (i * 7) % 100),
            ["eu", "us", "ap"][(i % 3) as usize],
        );
        input.push_str(&format!("{e}\t{r}\t{i}\n"));
        expected.insert((e, r.to_string()), i.to_string());
    }
    let target = format!("dynamodb://{t}");
    let o = writer(
        &[
            target.as_str(),
            "--columns",
            "error:S,region:S,count:N",
            "--batches-in-flight",
            "8",
        ],
        input.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("10000 lines"), "{}", stderr(&o));
    assert_eq!(counts(&d, &t).await, expected);
    // Rerunning the same input gives the same table.
    assert!(writer(
        &[target.as_str(), "--columns", "error:S,region:S,count:N"],
        input.as_bytes()
    )
    .status
    .success());
    assert_eq!(counts(&d, &t).await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn add_counts_an_iteration_once_and_the_next_one_on_top() {
    let d = dynamo().await;
    let t = table(&d, true).await;
    let target = format!("dynamodb://{t}");
    let add = |iteration: &str, input: &str| {
        writer(
            &[
                target.as_str(),
                "--columns",
                "error:S,region:S,count:N",
                "--mode",
                "add",
                "--logical-name",
                "top",
                "--iteration",
                iteration,
            ],
            input.as_bytes(),
        )
    };
    // Sorted reducer output; adjacent lines with one key are summed.
    let it1 = "404\teu\t2\n503\teu\t4\n503\teu\t1\n";
    assert!(add("1", it1).status.success());
    let rerun = add("1", it1);
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert!(
        stderr(&rerun).contains("2 already applied"),
        "{}",
        stderr(&rerun)
    );
    let c = counts(&d, &t).await;
    assert_eq!(c[&("503".into(), "eu".into())], "5");
    assert_eq!(c[&("404".into(), "eu".into())], "2");
    assert!(add("2", "503\teu\t10\n503\tus\t1\n").status.success());
    let c = counts(&d, &t).await;
    assert_eq!(c[&("503".into(), "eu".into())], "15");
    assert_eq!(c[&("503".into(), "us".into())], "1");
    // A key again after other keys: add mode needs sorted input.
    let o = add("3", "a\teu\t1\nb\teu\t1\na\teu\t1\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("line 3") && stderr(&o).contains("sorted"),
        "{}",
        stderr(&o)
    );
    // Without an iteration, add cannot be made idempotent.
    let o = writer(
        &[
            target.as_str(),
            "--columns",
            "error:S,region:S,count:N",
            "--mode",
            "add",
        ],
        b"a\tb\t1\n",
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_line_kind_is_named_with_its_line_and_the_policy_applies() {
    let d = dynamo().await;
    let t = table(&d, false).await;
    let target = format!("dynamodb://{t}");
    let cols = "error:S,region:S,count:N,blob:B";
    let cases = [
        ("a\teu\t1\n", "line 1: 3 fields, expected 4"),
        (
            "a\teu\tmany\taGk=\n",
            "line 1: field 3 (count): \"many\" is not a number",
        ),
        (
            "\teu\t1\taGk=\n",
            "line 1: field 1 (error): a key cannot be empty",
        ),
        (
            "a\teu\t1\t!!\n",
            "line 1: field 4 (blob): \"!!\" is not valid base64",
        ),
        (
            "a\teu\t1\taGk=",
            "line 1: the input ends in the middle of a line",
        ),
    ];
    for (input, message) in cases {
        let o = writer(&[target.as_str(), "--columns", cols], input.as_bytes());
        assert_eq!(o.status.code(), Some(1), "{input:?}");
        assert!(stderr(&o).contains(message), "{input:?}: {}", stderr(&o));
    }
    let big = format!("b\teu\t1\t{}\n", "QUFB".repeat(140_000));
    let o = writer(&[target.as_str(), "--columns", cols], big.as_bytes());
    assert!(
        stderr(&o).contains("over DynamoDB's 400 KB limit"),
        "{}",
        stderr(&o)
    );
    assert!(
        counts(&d, &t).await.is_empty(),
        "fail writes nothing after a bad first line"
    );

    let mixed = "good\teu\t1\taGk=\nbad\teu\tx\taGk=\nfine\tus\t2\taGk=\n";
    let o = writer(
        &[target.as_str(), "--columns", cols, "--on-bad-line", "skip"],
        mixed.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipping line 2") && stderr(&o).contains("1 skipped"),
        "{}",
        stderr(&o)
    );
    assert_eq!(counts(&d, &t).await.len(), 2);
    let dead = std::env::temp_dir().join(unique("dead"));
    let policy = format!("dead-letter={}", dead.display());
    let o = writer(
        &[
            target.as_str(),
            "--columns",
            cols,
            "--on-bad-line",
            policy.as_str(),
        ],
        mixed.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&dead).unwrap(),
        "bad\teu\tx\taGk=\n"
    );
    std::fs::remove_file(dead).ok();
    // Columns that do not start with the table's key.
    let o = writer(
        &[target.as_str(), "--columns", "region:S,error:S"],
        b"eu\ta\n",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("must start with error:S"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_dynamodb_refuses_is_skipped_under_skip_and_its_batch_goes_on() {
    let d = dynamo().await;
    let t = table(&d, false).await;
    let target = format!("dynamodb://{t}");
    let cols = "error:S,region:S,count:N,note:S";
    // 406,000 bytes passes the writer's own 400 KB check but not the
    // emulator's limit (405,000), as an item the writer's estimate lets
    // through can still be refused by the service.
    let input = format!(
        "a\teu\t1\tsmall\nb\teu\t2\t{}\nc\teu\t3\tsmall\n",
        "n".repeat(406_000)
    );
    let o = writer(&[target.as_str(), "--columns", cols], input.as_bytes());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("line 2: DynamoDB refused the item: ")
            && stderr(&o).contains("--on-bad-line skip"),
        "{}",
        stderr(&o)
    );
    let o = writer(
        &[target.as_str(), "--columns", cols, "--on-bad-line", "skip"],
        input.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipping line 2: DynamoDB refused the item: ")
            && stderr(&o).contains("2 items written")
            && stderr(&o).contains("1 skipped"),
        "{}",
        stderr(&o)
    );
    let c = counts(&d, &t).await;
    assert_eq!(
        c.keys().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
        ["a", "c"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn write_capacity_percent_paces_to_a_share_of_provisioned_capacity() {
    use aws_sdk_dynamodb::types::*;
    let d = dynamo().await;
    let t = unique("prov");
    d.create_table()
        .table_name(&t)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("error")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("error")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(5)
                .write_capacity_units(40)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let target = format!("dynamodb://{t}");
    let o = writer(
        &[
            target.as_str(),
            "--columns",
            "error:S,count:N",
            "--write-capacity-percent",
            "25",
        ],
        b"a\t1\nb\t2\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("writing at most 10.0 items/s"),
        "{}",
        stderr(&o)
    );
    // An on-demand table has no provisioned capacity to take a share of.
    let on_demand = table(&d, false).await;
    let target = format!("dynamodb://{on_demand}");
    let o = writer(
        &[
            target.as_str(),
            "--columns",
            "error:S,count:N",
            "--write-capacity-percent",
            "25",
        ],
        b"a\t1\n",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--write-rate"), "{}", stderr(&o));
}

/// The emulator keeps DynamoDB's per-item atomicity, which every writer and
/// checkpoint test relies on: bare moto serves requests on threads with no
/// lock, so concurrent puts under one partition key lost items and concurrent
/// conditional adds both passed (scripts/moto-server applies them one at a
/// time). 4 puts at once per partition key, then 4 conditional adds at once
/// per item: every item is there and added once.
#[tokio::test(flavor = "multi_thread")]
async fn the_emulator_applies_concurrent_writes_to_one_key_as_the_service_does() {
    use aws_sdk_dynamodb::types::AttributeValue as AV;
    let d = dynamo().await;
    let t = table(&d, true).await;
    let regions = ["eu", "us", "ap", "sa"];
    for i in 0..150 {
        let error = format!("{i:05}");
        let puts = regions.iter().map(|r| {
            d.put_item()
                .table_name(&t)
                .item("error", AV::S(error.clone()))
                .item("region", AV::S(r.to_string()))
                .item("count", AV::N("0".into()))
                .send()
        });
        for r in futures_util::future::join_all(puts).await {
            r.unwrap();
        }
        let adds = (0..4).map(|_| {
            d.update_item()
                .table_name(&t)
                .key("error", AV::S(error.clone()))
                .key("region", AV::S("eu".into()))
                .update_expression("ADD #applied :tags, #count :one")
                .condition_expression(
                    "attribute_not_exists(#applied) OR NOT contains(#applied, :tag)",
                )
                .expression_attribute_names("#applied", "kinesis_applied")
                .expression_attribute_names("#count", "count")
                .expression_attribute_values(":tag", AV::S("K/7".into()))
                .expression_attribute_values(":tags", AV::Ss(vec!["K/7".into()]))
                .expression_attribute_values(":one", AV::N("1".into()))
                .send()
        });
        let applied = futures_util::future::join_all(adds)
            .await
            .into_iter()
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(applied, 1, "conditional adds applied on item {error}");
    }
    let all = counts(&d, &t).await;
    assert_eq!(all.len(), 150 * regions.len(), "items kept");
    let added = all.values().filter(|c| *c == "1").count();
    assert_eq!(added, 150, "items added once");
}
