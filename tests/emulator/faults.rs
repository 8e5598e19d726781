//! The reader and writer through the fault-injecting proxy: throttling, 5xx,
//! expired iterators, answers past the attempt timeout, answers lost after
//! the server applied the request, answers cut off mid-body. Whatever
//! happens, no record is lost or duplicated and replays stay byte-identical.
//!
//! The seed is fixed (so CI is repeatable) unless `KINESIS_STREAMING_FAULT_SEED`
//! is set; it is printed, so a failure can be replayed. `scripts/soak` runs
//! these tests with new seeds over and over.

use crate::harness::*;
use crate::proxy::{self, Fault, FaultPlan};
use std::collections::BTreeMap;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn seed(salt: u64) -> u64 {
    let s = std::env::var("KINESIS_STREAMING_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261126);
    eprintln!("fault seed {s} (set KINESIS_STREAMING_FAULT_SEED={s} to replay)");
    s ^ salt
}

pub fn plan(seed: u64) -> FaultPlan {
    FaultPlan {
        seed,
        throttle: 0.04,
        server_error: 0.03,
        expired_iterator: 0.15,
        delay: 0.006,
        lost_answer: 0.03,
        cut_body: 0.02,
        delay_for: Duration::from_millis(2500),
        only: vec![],
        rate: None,
        force: vec![],
        conflicts: None,
    }
}

/// Seeded random moments (xorshift): `next(below)` is in `0..below`.
fn moments(mut x: u64) -> impl FnMut(u64) -> u64 {
    move |below| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % below
    }
}

/// The binaries' environment for going through the proxy.
pub(crate) fn via(p: &proxy::Proxy) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", p.url.clone()),
        ("KINESIS_STREAMING_ATTEMPT_TIMEOUT", "1500ms".into()),
    ]
}

fn run_reader(p: &proxy::Proxy, a: &[&str]) -> Output {
    let env = via(p);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    reader_env(a, &env)
}

#[tokio::test(flavor = "multi_thread")]
async fn iterations_under_faults_deliver_every_record_once_and_replay_exactly() {
    let k = kinesis().await;
    let stream = unique("faults");
    create_stream(&k, &stream, 3).await;
    let table = table();
    // Each kind of fault asserted below, guaranteed whatever the seed draws.
    let forced = FaultPlan {
        force: vec![
            (Fault::Throttle, "GetRecords"),
            (Fault::ServerError, "GetRecords"),
            (Fault::ExpiredIterator, "GetRecords"),
            (Fault::CutBody, "GetRecords"),
            (Fault::LostAnswer, "TransactWriteItems"),
        ],
        ..plan(seed(1))
    };
    let p = proxy::start(endpoint(), endpoint(), forced);

    // A producer writes while the iterations run.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (k, stream, stop) = (k.clone(), stream.clone(), stop.clone());
        tokio::spawn(async move {
            let mut put = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                put.extend(put_many(&k, &stream, i, 10).await);
                i += 10;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            put
        })
    };
    let mut a = args(&stream, &table, "F", "next");
    a.extend(["--lease-duration", "3s", "--lease-wait", "30s"]);
    let mut done: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut failed_runs = 0;
    for attempt in 0..40 {
        if done.len() == 4 {
            stop.store(true, Ordering::Relaxed);
        }
        if done.len() == 6 {
            break;
        }
        let o = tokio::task::block_in_place(|| run_reader(&p, &a));
        if o.status.success() {
            let st = status(&stream, &table, "F");
            let n = st
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["state"] == "succeeded")
                .map(|i| i["iteration"].as_u64().unwrap())
                .max()
                .unwrap();
            assert!(
                done.insert(n, o.stdout).is_none(),
                "attempt {attempt}: iteration {n} succeeded twice"
            );
        } else {
            // A run that gave up (retries exhausted) is a failed iteration: `next` reruns it.
            failed_runs += 1;
            eprintln!("attempt {attempt}: {:?}: {}", o.status, stderr(&o));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let put = producer.await.unwrap();
    // Drain what the producer wrote last, then compare with everything it put.
    let o = tokio::task::block_in_place(|| run_reader(&p, &a));
    let last = ok(o);
    // Every record exactly once across the iterations, in shard order.
    let iterations: Vec<_> = done
        .values()
        .chain(std::iter::once(&last))
        .map(|o| parse_lines(o))
        .collect();
    crate::reshard::check(&iterations, &put, &BTreeMap::new());
    assert!(done.len() >= 5, "only {} iterations succeeded", done.len());

    // Replays through the same faults print the same bytes.
    for (n, out) in &done {
        let nn = n.to_string();
        let mut r = args(&stream, &table, "F", &nn);
        r.extend(["--lease-wait", "30s"]);
        let o = tokio::task::block_in_place(|| run_reader(&p, &r));
        assert_eq!(&ok(o), out, "replay of iteration {n}");
    }
    eprintln!(
        "{} requests, {} failed runs, faults: {:?}",
        p.requests(),
        failed_runs,
        p.injected()
    );
    // The Hadoop counters carry what the SDK retried and what was throttled.
    let mut r = args(&stream, &table, "F", "0");
    r.extend(["--hadoop-reporter", "--lease-wait", "30s"]);
    let o = tokio::task::block_in_place(|| run_reader(&p, &r));
    let err = stderr(&o);
    for name in ["records", "retries", "throttles"] {
        assert!(
            err.contains(&format!("reporter:counter:KinesisReader,{name},")),
            "{err}"
        );
    }
    for f in [
        Fault::Throttle,
        Fault::ServerError,
        Fault::ExpiredIterator,
        Fault::LostAnswer,
        Fault::CutBody,
    ] {
        assert!(p.count(f) > 0, "no {f:?} was injected: {:?}", p.injected());
    }
}

/// The hardest fault for a checkpoint: a write that landed but whose answer
/// was lost, so the SDK's retry meets the write itself. Half of all
/// checkpoint writes lose their answer here. A run may still give up when
/// all five attempts of one call lose theirs (it is then rerun, as a
/// scheduler would), but never with exit 3: its own write is never taken for
/// another run's. Each shard is fixed once, and a map task releases its lease.
#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_writes_whose_answers_are_lost_are_recognised_as_our_own() {
    let k = kinesis().await;
    let stream = unique("lost");
    create_stream(&k, &stream, 2).await;
    let table = table();
    let mut plan = plan(seed(2));
    plan = FaultPlan {
        lost_answer: 0.5,
        only: vec!["TransactWriteItems", "UpdateItem", "DeleteItem"],
        ..FaultPlan {
            throttle: 0.0,
            server_error: 0.0,
            expired_iterator: 0.0,
            delay: 0.0,
            cut_body: 0.0,
            ..plan
        }
    };
    let p = proxy::start(endpoint(), endpoint(), plan);
    let mut total = 0;
    let mut gave_up = 0;
    for i in 0..4 {
        let put = put_many(&k, &stream, i * 10, 10).await;
        let mut a = args(&stream, &table, "L", "next");
        a.extend(["--lease-duration", "2s", "--lease-wait", "20s"]);
        let out = loop {
            let o = tokio::task::block_in_place(|| run_reader(&p, &a));
            assert_ne!(
                o.status.code(),
                Some(3),
                "its own write taken for a rival's: {}",
                stderr(&o)
            );
            if o.status.success() {
                break o.stdout;
            }
            gave_up += 1;
            assert!(gave_up < 6, "{}", stderr(&o));
        };
        assert_eq!(parse_lines(&out).len(), put.len());
        total += put.len();
    }
    let st = status(&stream, &table, "L");
    let iters = st.as_array().unwrap();
    assert_eq!(iters.len(), 4);
    assert!(iters.iter().all(|i| i["state"] == "succeeded"), "{st}");
    // Map mode: plan, a task through the faults, finish.
    put_many(&k, &stream, 40, 6).await;
    let env = via(&p);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Each step is retried like the runs above, and never ends with exit 3.
    let mut until_ok = |run: &dyn Fn() -> Output| loop {
        let o = run();
        assert_ne!(o.status.code(), Some(3), "{}", stderr(&o));
        if o.status.success() {
            break o.stdout;
        }
        gave_up += 1;
        assert!(gave_up < 10, "{}", stderr(&o));
    };
    let cp = [
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "L",
    ];
    let manifest = until_ok(&|| reader_env(&[&["plan"][..], &cp].concat(), &env));
    let task = [
        "--shards-from-stdin",
        "--checkpoint-table",
        &table,
        "--lease-duration",
        "2s",
    ];
    let out = until_ok(&|| reader_input(&task, &manifest, &env));
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 6);
    until_ok(&|| {
        reader_env(
            &[&["finish"][..], &cp, &["--iteration", "4"]].concat(),
            &env,
        )
    });
    eprintln!(
        "{} records, {gave_up} runs gave up; faults: {:?}",
        total + 6,
        p.injected()
    );
    assert!(p.count(Fault::LostAnswer) >= 5, "{:?}", p.injected());
}

/// kill -9 at random points of a run (opening, reading, fixing, finishing):
/// each of 20 logical names is killed once at a random moment of its first
/// iteration; the rerun prints exactly what an undisturbed run prints, and
/// the next iteration continues without a gap or an overlap.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points_then_rerun_gives_the_undisturbed_bytes() {
    let k = kinesis().await;
    let stream = unique("kill");
    create_stream(&k, &stream, 3).await;
    let table = table();
    let mut next_ms = moments(seed(3));
    put_many(&k, &stream, 0, 300).await;
    // One shard gets 200 records more, so that its end comes about a second
    // after the others' (pages of 40, at most 5 calls a second): kills then
    // land between the boundary writes too, which concurrent ends fixed in
    // one write would otherwise leave to chance.
    for i in 0..200 {
        put(&k, &stream, "key-0", format!("late {i}").as_bytes()).await;
    }
    // Small pages: a run takes a second or so, so kills land all along it.
    let run = |logical: &str, it: &str| {
        let mut a = args(&stream, &table, logical, it);
        a.extend(["--batch-size", "40", "--rerun-without-wait"]);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let read = |a: &[String]| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| ok(reader(&a)))
    };
    let started = std::time::Instant::now();
    let undisturbed = read(&run("U", "0"));
    assert_eq!(parse_lines(&undisturbed).len(), 500);
    // Kills are drawn over the time an undisturbed run took, and a little
    // past it: on a loaded machine a run's steps come later than a fixed span.
    let span = (started.elapsed().as_millis() as u64 * 13 / 10).max(500);
    let mut landed: BTreeMap<usize, u32> = BTreeMap::new();
    let names: Vec<String> = (0..20).map(|i| format!("K{i}")).collect();
    for name in &names {
        let a = run(name, "0");
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut child = spawn_reader(&a);
        tokio::time::sleep(Duration::from_millis(next_ms(span))).await;
        // SIGKILL: no handler, no release, no flush.
        let _ = child.kill();
        let _ = child.wait();
        // Where the kill landed: how many shards had a fixed end by then.
        let st = status(&stream, &table, name);
        let fixed = st.as_array().unwrap().first().map_or(0, |i| {
            i["shards"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| !s["fixed_by"].is_null())
                .count()
        });
        *landed.entry(fixed).or_insert(0) += 1;
        assert_eq!(read(&run(name, "0")), undisturbed, "{name} after its kill");
    }
    // The kills landed before, between and after the boundary writes.
    eprintln!("kills landed with this many shards fixed: {landed:?}");
    assert!(landed.len() >= 3, "{landed:?}");
    put_many(&k, &stream, 1000, 60).await;
    let next = read(&run("U", "next"));
    assert_eq!(parse_lines(&next).len(), 60);
    for name in &names {
        assert_eq!(read(&run(name, "next")), next, "{name}, iteration 1");
    }
    eprintln!("20 kill -9s, shards fixed when killed: {landed:?}; all reruns byte-identical");
}

/// Four runs of one iteration started together (as speculative Hadoop
/// attempts would be), through the faults: one fixes the boundaries, the
/// others wait for its lease and replay it; all four print the same bytes,
/// and every shard was fixed once, by one run. Then the same for three
/// attempts of one map task.
#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_attempts_fix_one_set_of_boundaries_and_print_the_same() {
    let k = kinesis().await;
    let stream = unique("spec");
    create_stream(&k, &stream, 3).await;
    let table = table();
    put_many(&k, &stream, 0, 90).await;
    let p = proxy::start(endpoint(), endpoint(), plan(seed(4)));
    let env = via(&p);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut a = args(&stream, &table, "S", "0");
    // A lease that outlasts the injected faults (a 3 s one lapsed under
    // them in a soak, and another attempt took it over): this test is of
    // the protocol, not of the clock. A lapsed lease has its own test.
    a.extend(["--batch-size", "20", "--lease-duration", "20s"]);
    let outs: Vec<Output> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4).map(|_| s.spawn(|| reader_env(&a, &env))).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let first = ok(outs[0].clone());
    assert_eq!(parse_lines(&first).len(), 90);
    for o in &outs[1..] {
        assert_eq!(ok(o.clone()), first);
    }
    let st = status(&stream, &table, "S");
    let fixers: Vec<&str> = st[0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["fixed_by"].as_str().unwrap())
        .collect();
    assert!(
        fixers.windows(2).all(|w| w[0] == w[1]),
        "one run fixed them all: {fixers:?}"
    );

    // Three attempts of one map task of a planned iteration, together.
    put_many(&k, &stream, 100, 30).await;
    let o = reader_env(
        &[
            "plan",
            "--stream",
            &stream,
            "--checkpoint-table",
            &table,
            "--logical-name",
            "S",
        ],
        &env,
    );
    let manifest = String::from_utf8(ok(o)).unwrap();
    let line = manifest.lines().nth(1).unwrap().to_string();
    let task = [
        "--shards-from-stdin",
        "--checkpoint-table",
        &table,
        "--fields",
        "shard_id,sequence_number,partition_key,data",
        "--lease-duration",
        "20s",
    ];
    let outs: Vec<Output> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| reader_input(&task, line.as_bytes(), &env)))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let first = ok(outs[0].clone());
    for o in &outs[1..] {
        assert_eq!(ok(o.clone()), first, "speculative attempts print the same");
    }
    assert!(parse_lines(&first).iter().all(|l| line.contains(&l.0)));
    eprintln!("faults: {:?}", p.injected());
}

fn writer_via(p: &proxy::Proxy, a: &[&str], input: &[u8]) -> Output {
    let env = via(p);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    writer_env(a, input, &env)
}

/// The writer to S3 through the faults (SlowDown, 5xx, part answers lost
/// after the part landed, answers cut off, the completion's answer lost):
/// each object is either exactly the input or absent with no multipart
/// upload left behind. Then kill -9 mid-upload: never a partial object.
#[tokio::test(flavor = "multi_thread")]
async fn s3_objects_are_whole_or_absent_under_faults_and_kill_9() {
    let s3c = s3().await;
    let bucket = bucket(&s3c).await;
    let input: Vec<u8> = (0..300_000)
        .flat_map(|i| format!("line {i:07}\t{}\n", "x".repeat(i % 90)).into_bytes())
        .collect();
    let forced = FaultPlan {
        force: vec![
            (Fault::LostAnswer, "S3 UploadPart"),
            (Fault::CutBody, "S3 UploadPart"),
        ],
        ..plan(seed(5))
    };
    let p = proxy::start(endpoint(), endpoint(), forced);
    let (mut whole, mut absent) = (0, 0);
    for i in 0..4 {
        let key = format!("faults/{i}");
        let target = format!("s3://{bucket}/{key}");
        let o = tokio::task::block_in_place(|| {
            writer_via(
                &p,
                &[&target, "--part-size", "5MiB", "--parts-in-flight", "3"],
                &input,
            )
        });
        let stored = s3c.get_object().bucket(&bucket).key(&key).send().await;
        if o.status.success() {
            let body = stored.unwrap().body.collect().await.unwrap().into_bytes();
            assert!(body == input[..], "object {key} differs from its input");
            whole += 1;
        } else {
            assert!(
                stored.is_err(),
                "a failed upload left {key}: {}",
                stderr(&o)
            );
            absent += 1;
        }
    }
    assert_eq!(
        dangling_uploads(&s3c, &bucket).await,
        0,
        "uploads left behind; faults {:?}",
        p.injected()
    );
    // A completion that landed but whose answer was lost: the object is
    // checked, found whole, and the writer says so.
    let completes = proxy::start(
        endpoint(),
        endpoint(),
        // Every attempt's answer lost: the SDK's own retry of one lost
        // answer finds the upload completed and answers success.
        FaultPlan {
            lost_answer: 1.0,
            only: vec!["S3 CompleteMultipartUpload"],
            ..FaultPlan::quiet()
        },
    );
    let target = format!("s3://{bucket}/completes/0");
    let a = [target.as_str(), "--part-size", "5MiB"];
    let o = tokio::task::block_in_place(|| writer_via(&completes, &a, &input));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("answer was lost, but completes/0 is complete"),
        "{}",
        stderr(&o)
    );
    assert!(get(&s3c, &bucket, "completes/0").await == input[..]);
    // Lost CreateMultipartUpload answers start uploads the writer never hears
    // of; it finds and aborts them, whether its own create succeeded or not.
    let creates = proxy::start(
        endpoint(),
        endpoint(),
        FaultPlan {
            lost_answer: 0.6,
            only: vec!["S3 CreateMultipartUpload"],
            force: vec![(Fault::LostAnswer, "S3 CreateMultipartUpload")],
            ..plan(seed(9))
        },
    );
    for i in 0..4 {
        let target = format!("s3://{bucket}/creates/{i}");
        let a = [target.as_str(), "--part-size", "5MiB"];
        let _ = tokio::task::block_in_place(|| writer_via(&creates, &a, &input));
    }
    assert!(creates.count(Fault::LostAnswer) > 0);
    assert_eq!(
        dangling_uploads(&s3c, &bucket).await,
        0,
        "orphaned uploads left"
    );
    assert!(
        p.count(Fault::LostAnswer) + p.count(Fault::CutBody) > 0,
        "{:?}",
        p.injected()
    );
    eprintln!(
        "S3 under faults: {whole} whole, {absent} absent; faults {:?}",
        p.injected()
    );

    // kill -9 while uploading (no cleanup can run): whole or absent, never partial.
    let mut next_ms = moments(seed(6));
    for i in 0..5 {
        let key = format!("killed/{i}");
        let target = format!("s3://{bucket}/{key}");
        let mut child = spawn_writer(&[&target, "--part-size", "5MiB"]);
        let mut stdin = child.stdin.take().unwrap();
        let data = input.clone();
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
        tokio::time::sleep(Duration::from_millis(next_ms(700))).await;
        let _ = child.kill();
        let _ = child.wait();
        let _ = feeder.join();
        if let Ok(o) = s3c.get_object().bucket(&bucket).key(&key).send().await {
            let body = o.body.collect().await.unwrap().into_bytes();
            assert!(
                body == input[..],
                "killed upload {key} left a partial object"
            );
        }
    }
}

/// The writer to DynamoDB through a sustained rate of faults (one request in
/// eight), each run succeeding at its first try because the writer retries
/// what got no answer or was throttled, beyond the SDK's own retries: put
/// mode ends with the table an undisturbed run makes; add mode adds each
/// iteration exactly once, however many of its updates had their answers
/// lost.
#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_tables_end_as_undisturbed_runs_under_faults() {
    let d = dynamo().await;
    let forced = FaultPlan {
        force: vec![
            (Fault::LostAnswer, "BatchWriteItem"),
            (Fault::LostAnswer, "UpdateItem"),
        ],
        ..plan(seed(7))
    };
    let p = proxy::start(endpoint(), endpoint(), forced);
    let rows: String = (0..1500usize)
        // 1,500 distinct keys (60 batches), then 300 of them again: last wins.
        .chain(0..300)
        .enumerate()
        .map(|(n, i)| format!("{:04}\t{}\t{n}\n", i % 500, ["eu", "us", "ap"][i % 3]))
        .collect();
    let (clean, faulty) = (
        crate::writer::table(&d, true).await,
        crate::writer::table(&d, true).await,
    );
    let put = |t: &str| {
        vec![
            format!("dynamodb://{t}"),
            "--columns".into(),
            "error:S,region:S,count:N".into(),
        ]
    };
    let clean_args = put(&clean);
    let a: Vec<&str> = clean_args.iter().map(String::as_str).collect();
    let o = writer(&a, rows.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let faulty_args = put(&faulty);
    let a: Vec<&str> = faulty_args.iter().map(String::as_str).collect();
    // The writer rides out the faults itself (a write it did not get an
    // answer for goes again), so one run of it is enough.
    let o = tokio::task::block_in_place(|| writer_via(&p, &a, rows.as_bytes()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        crate::writer::counts(&d, &faulty).await,
        crate::writer::counts(&d, &clean).await
    );
    let put_faults = p.injected();
    assert!(
        put_faults.keys().any(|(_, op)| op == "BatchWriteItem"),
        "{put_faults:?}"
    );

    // Add mode: sorted totals for two iterations, each applied exactly once.
    let t = crate::writer::table(&d, true).await;
    let target = format!("dynamodb://{t}");
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for it in ["1", "2"] {
        let lines: Vec<String> = (0..300)
            .map(|i| format!("{:03}\t{}\t{}\n", i, ["eu", "us"][i % 2], i + it.len()))
            .collect();
        for l in &lines {
            let f: Vec<&str> = l.trim_end().split('\t').collect();
            *expected.entry((f[0].into(), f[1].into())).or_default() +=
                f[2].parse::<u64>().unwrap();
        }
        let a = [
            &target,
            "--columns",
            "error:S,region:S,count:N",
            "--mode",
            "add",
            "--logical-name",
            "F",
            "--iteration",
            it,
        ];
        let o = tokio::task::block_in_place(|| writer_via(&p, &a, lines.concat().as_bytes()));
        assert!(o.status.success(), "add {it}: {}", stderr(&o));
        // A rerun after success changes nothing.
        let o = tokio::task::block_in_place(|| writer_via(&p, &a, lines.concat().as_bytes()));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let got: BTreeMap<(String, String), u64> = crate::writer::counts(&d, &t)
        .await
        .into_iter()
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(got, expected);
    eprintln!("DynamoDB under faults: {:?}", p.injected());
    assert!(p.count(Fault::LostAnswer) > 0, "{:?}", p.injected());
}

/// A storm: two writes in five to the table fail (throttled, 5xx, answer
/// lost or cut, no answer in time), far more than the SDK's five attempts
/// and its per-process retry quota ride out. Each writer run still succeeds
/// at its first try, with exact results: a put of 1,000 keys, an add of 400
/// and its rerun, which changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_dynamodb_writer_rides_out_a_storm_of_faults() {
    let d = dynamo().await;
    let storm = FaultPlan {
        seed: seed(11),
        throttle: 0.12,
        server_error: 0.10,
        lost_answer: 0.10,
        cut_body: 0.06,
        delay: 0.02,
        delay_for: Duration::from_millis(2500),
        only: vec!["BatchWriteItem", "UpdateItem"],
        ..FaultPlan::quiet()
    };
    let p = proxy::start(endpoint(), endpoint(), storm);
    let columns = ["--columns", "error:S,region:S,count:N"];
    let rows: String = (0..1000).map(|i| format!("e{i:04}\teu\t{i}\n")).collect();
    let t = crate::writer::table(&d, true).await;
    let target = format!("dynamodb://{t}");
    let o = tokio::task::block_in_place(|| {
        writer_via(
            &p,
            &[&[target.as_str()][..], &columns].concat(),
            rows.as_bytes(),
        )
    });
    assert!(o.status.success(), "put: {}", stderr(&o));
    let got = crate::writer::counts(&d, &t).await;
    assert_eq!(got.len(), 1000);
    assert!(got
        .iter()
        .all(|((e, _), n)| e[1..].parse::<u64>().unwrap().to_string() == *n));

    let t = crate::writer::table(&d, true).await;
    let target = format!("dynamodb://{t}");
    let add = [
        &[target.as_str()][..],
        &columns,
        &["--mode", "add", "--logical-name", "S", "--iteration", "3"],
    ]
    .concat();
    let lines: String = (0..400)
        .map(|i| format!("e{i:03}\tus\t{}\n", i + 1))
        .collect();
    for run in ["add", "rerun"] {
        let o = tokio::task::block_in_place(|| writer_via(&p, &add, lines.as_bytes()));
        assert!(o.status.success(), "{run}: {}", stderr(&o));
        eprintln!("{run}: {}", stderr(&o).lines().last().unwrap_or(""));
    }
    let got = crate::writer::counts(&d, &t).await;
    assert_eq!(got.len(), 400);
    for ((e, region), n) in &got {
        assert_eq!(region, "us");
        assert_eq!(*n, (e[1..].parse::<u64>().unwrap() + 1).to_string(), "{e}");
    }
    let faults = p.injected();
    eprintln!("DynamoDB storm: {faults:?}");
    let on = |op: &str| {
        faults
            .iter()
            .filter(|((_, o), _)| o == op)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert!(
        on("BatchWriteItem") > 10 && on("UpdateItem") > 100,
        "{faults:?}"
    );
}

/// The README's IAM policies list exactly the actions the binaries need:
/// every command of both binaries runs through a recording proxy, and each
/// operation seen must be allowed by the policy of the binary that made it
/// (and each allowed action must have been needed).
#[tokio::test(flavor = "multi_thread")]
async fn the_readmes_iam_policies_cover_exactly_the_calls_made() {
    let k = kinesis().await;
    let stream = unique("iam");
    create_stream(&k, &stream, 2).await;
    put_many(&k, &stream, 0, 10).await;
    let quiet = FaultPlan::quiet();
    // Every completion's answer is lost for the writer, so that the check
    // made after a lost answer (HeadObject: s3:GetObject) is among its calls.
    let lost_completions = FaultPlan {
        lost_answer: 1.0,
        only: vec!["S3 CompleteMultipartUpload"],
        ..FaultPlan::quiet()
    };
    let (r, w) = (
        proxy::start(endpoint(), endpoint(), quiet),
        proxy::start(endpoint(), endpoint(), lost_completions),
    );
    let table = unique("iam-cp");
    let cp = [
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "I",
    ];
    let reader_runs: Vec<Vec<&str>> = vec![
        vec!["create-table", "--checkpoint-table", &table],
        [&cp[..], &["--iteration", "next"]].concat(),
        [&cp[..], &["--iteration", "0"]].concat(),
        [&["status"][..], &cp].concat(),
        [&["plan"][..], &cp].concat(),
        vec!["--stream", &stream],
    ];
    for a in &reader_runs {
        assert!(run_reader(&r, a).status.success(), "{a:?}");
    }
    let manifest = ok(run_reader(&r, &[&["plan"][..], &cp].concat()));
    let env = via(&r);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ok(reader_input(
        &["--shards-from-stdin", "--checkpoint-table", &table],
        &manifest,
        &env,
    ));
    ok(run_reader(
        &r,
        &[&["finish"][..], &cp, &["--iteration", "1"]].concat(),
    ));

    let s3c = s3().await;
    let bucket = bucket(&s3c).await;
    let d = dynamo().await;
    let items = crate::writer::table(&d, true).await;
    let big: Vec<u8> = (0..1_500_000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let small = format!("s3://{bucket}/small");
    let large = format!("s3://{bucket}/large");
    let target = format!("dynamodb://{items}");
    let columns = ["--columns", "error:S,region:S,count:N"];
    for (a, input) in [
        (vec![small.as_str()], b"a\n".to_vec()),
        (vec![large.as_str(), "--part-size", "5MiB"], big),
        (
            [&[target.as_str()][..], &columns].concat(),
            b"e\tr\t1\n".to_vec(),
        ),
        (
            [
                &[target.as_str()][..],
                &columns,
                &["--mode", "add", "--logical-name", "I", "--iteration", "0"],
            ]
            .concat(),
            b"e\tr\t1\n".to_vec(),
        ),
    ] {
        let o = writer_via(&w, &a, &input);
        assert!(o.status.success(), "{a:?}: {}", stderr(&o));
    }
    // A truncated upload (whole lines for two parts, then a cut one) takes
    // the abort path.
    let lines: Vec<u8> = b"xxxxxxx\n".repeat(12 << 17);
    let o = writer_via(
        &w,
        &[&format!("s3://{bucket}/cut"), "--part-size", "5MiB"],
        &[&lines[..], b"no newline"].concat(),
    );
    assert!(!o.status.success());

    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let section = &readme[readme.find("### Minimal IAM policies").unwrap()..];
    let section = &section[..section.find("\n## ").unwrap()];
    let policies: Vec<&str> = section
        .split("```json")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect();
    assert_eq!(policies.len(), 2);
    let actions = |policy: &str| -> std::collections::BTreeSet<String> {
        let v: serde_json::Value = serde_json::from_str(policy).unwrap();
        v["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| match &s["Action"] {
                serde_json::Value::String(a) => vec![a.clone()],
                serde_json::Value::Array(a) => {
                    a.iter().map(|x| x.as_str().unwrap().to_string()).collect()
                }
                _ => vec![],
            })
            .collect()
    };
    // What each operation needs in IAM.
    let needs = |op: &str| -> Vec<String> {
        let (service, name) = op.split_once(' ').unwrap();
        match (service, name) {
            ("DynamoDB", "TransactWriteItems") => ["PutItem", "UpdateItem", "ConditionCheckItem"]
                .map(|a| format!("dynamodb:{a}"))
                .to_vec(),
            ("DynamoDB", a) => vec![format!("dynamodb:{a}")],
            ("Kinesis", a) => vec![format!("kinesis:{a}")],
            ("S3", "HeadObject" | "GetObject") => vec!["s3:GetObject".into()],
            ("S3", "AbortMultipartUpload") => vec!["s3:AbortMultipartUpload".into()],
            ("S3", "ListMultipartUploads") => vec!["s3:ListBucketMultipartUploads".into()],
            ("S3", _) => vec!["s3:PutObject".into()],
            _ => panic!("unknown operation {op}"),
        }
    };
    for (name, proxy, policy) in [("reader", &r, policies[0]), ("writer", &w, policies[1])] {
        let needed: std::collections::BTreeSet<String> =
            proxy.seen().iter().flat_map(|op| needs(op)).collect();
        assert_eq!(
            needed,
            actions(policy),
            "{name}: calls seen {:?}",
            proxy.seen()
        );
    }
}

/// The table once two scans in a row agree. Once, under heavy CPU load, one
/// item was missing from the scan after a rerun (not reproduced since); the
/// suspect is a request the killed writer sent just before its death, still
/// in moto's hands and landing while the scan pages. A real loss would show
/// in every scan, so it still fails the test.
async fn settled_counts(
    d: &aws_sdk_dynamodb::Client,
    t: &str,
) -> BTreeMap<(String, String), String> {
    let mut last = crate::writer::counts(d, t).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = crate::writer::counts(d, t).await;
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// The keys whose counts differ, the first few of them, as "key: got vs
/// expected" (a 4,000-item table printed whole hides the one that matters).
fn differences(
    got: &BTreeMap<(String, String), String>,
    expected: &BTreeMap<(String, String), String>,
) -> String {
    let keys: std::collections::BTreeSet<_> = got.keys().chain(expected.keys()).collect();
    let wrong: Vec<String> = keys
        .into_iter()
        .filter(|k| got.get(*k) != expected.get(*k))
        .map(|k| format!("{k:?}: {:?} vs {:?}", got.get(k), expected.get(k)))
        .collect();
    format!(
        "{} keys differ: {}",
        wrong.len(),
        wrong[..wrong.len().min(8)].join("; ")
    )
}

/// kill -9 the DynamoDB writer mid-load, at seeded random moments, then run
/// it again: put mode ends as an undisturbed run; add mode adds every
/// iteration exactly once (what landed before the kill is recognised by its
/// `kinesis_applied` mark, the rest is added by the rerun).
#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_writer_killed_mid_load_then_rerun_ends_as_undisturbed() {
    let d = dynamo().await;
    let mut next_ms = moments(seed(10));
    let rows: String = (0..4000usize)
        .map(|i| format!("{:05}\t{}\t{i}\n", i / 2, ["eu", "us"][i % 2]))
        .collect();
    let clean = crate::writer::table(&d, true).await;
    let columns = ["--columns", "error:S,region:S,count:N"];
    let target = |t: &str| format!("dynamodb://{t}");
    let o = writer(
        &[&[target(&clean).as_str()][..], &columns].concat(),
        rows.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = crate::writer::counts(&d, &clean).await;
    let kill_then_rerun = |a: &[&str], input: &[u8], after: Duration| {
        let mut child = spawn_writer(a);
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
        std::thread::sleep(after);
        let _ = child.kill();
        let _ = child.wait();
        let _ = feeder.join();
        let o = writer(a, input);
        assert!(o.status.success(), "rerun: {}", stderr(&o));
    };
    for _ in 0..3 {
        let t = crate::writer::table(&d, true).await;
        let tt = target(&t);
        let a = [&[tt.as_str()][..], &columns].concat();
        let after = Duration::from_millis(next_ms(1500));
        tokio::task::block_in_place(|| kill_then_rerun(&a, rows.as_bytes(), after));
        let got = settled_counts(&d, &t).await;
        assert!(
            got == expected,
            "put after a kill at {after:?}: {}",
            differences(&got, &expected)
        );
    }
    // Add mode: one iteration's sorted totals, killed mid-way, rerun.
    for _ in 0..3 {
        let t = crate::writer::table(&d, true).await;
        let tt = target(&t);
        let a = [
            &[tt.as_str()][..],
            &columns,
            &["--mode", "add", "--logical-name", "K", "--iteration", "7"],
        ]
        .concat();
        let after = Duration::from_millis(next_ms(1500));
        tokio::task::block_in_place(|| kill_then_rerun(&a, rows.as_bytes(), after));
        // Adjacent lines with one key are summed: 2i and 2i+1 differ in region, so each line is a key.
        let got = settled_counts(&d, &t).await;
        assert!(
            got == expected,
            "add after a kill at {after:?}: {}",
            differences(&got, &expected)
        );
    }
}
