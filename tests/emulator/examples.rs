//! The streaming-examples run as they are (against moto) and give the
//! answers planted in their generated data.

use crate::harness::*;

fn venv_python() -> String {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin/python")
        .display()
        .to_string()
}

fn run(script: &str, env: &[(&str, &str)]) -> (String, String) {
    let py = venv_python();
    let mut env = env.to_vec();
    env.push(("PYTHON", &py));
    let o = shell(script, &env);
    assert!(o.status.success(), "{script}: {}", stderr(&o));
    (String::from_utf8(o.stdout.clone()).unwrap(), stderr(&o))
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_engagement_finds_the_planted_best_category_per_site() {
    let (stream, campaigns, results) = (unique("clicks"), unique("camp"), unique("rank"));
    let checkpoints = table();
    let (out, _) = run(
        "streaming-examples/customer-engagement/run.sh",
        &[
            ("STREAM", &stream),
            ("CAMPAIGNS", &campaigns),
            ("RESULTS", &results),
            ("CHECKPOINTS", &checkpoints),
        ],
    );
    // produce.py plants these click rates as the highest of each site.
    let best: Vec<(&str, &str)> = out
        .lines()
        .skip_while(|l| !l.starts_with("best category per site"))
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0], f[1])
        })
        .collect();
    assert_eq!(
        best,
        [
            ("news.example", "sports"),
            ("shop.example", "fashion"),
            ("travel.example", "travel")
        ],
        "{out}"
    );
    assert_eq!(
        status(&stream, &checkpoints, "engagement")[0]["state"],
        "succeeded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn adhoc_queries_load_one_partition_per_iteration_with_the_ddls_columns() {
    let (stream, bucket) = (unique("adhoc"), unique("adhoc"));
    let checkpoints = table();
    let (out, _) = run(
        "streaming-examples/adhoc-queries/run.sh",
        &[
            ("STREAM", &stream),
            ("BUCKET", &bucket),
            ("CHECKPOINTS", &checkpoints),
        ],
    );
    assert!(
        out.contains(&format!(
            "s3://{bucket}/access_logs/iteration_no=0/part-00000\t800 rows"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "s3://{bucket}/access_logs/iteration_no=1/part-00000\t300 rows"
        )),
        "{out}"
    );
    // Every row has the columns tables.hql declares, in a form Hive parses.
    let ddl = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("streaming-examples/adhoc-queries/tables.hql"),
    )
    .unwrap();
    let block = &ddl[ddl.find("access_logs (").unwrap()..ddl.find("PARTITIONED BY").unwrap()];
    let columns = block.lines().filter(|l| l.starts_with("  ")).count();
    assert_eq!(columns, 8);
    let s3 = s3().await;
    let body = get(&s3, &bucket, "access_logs/iteration_no=1/part-00000").await;
    for row in String::from_utf8(body).unwrap().lines() {
        let f: Vec<&str> = row.split('\t').collect();
        assert_eq!(f.len(), columns, "{row}");
        assert!(
            f[4].parse::<u16>().is_ok() && f[5].parse::<u64>().is_ok(),
            "{row}"
        );
        assert_eq!(f[1].len(), "2026-11-26 10:00:00".len(), "{row}");
    }
    // The awk stand-in for the first query printed a count per region.
    let query = out.split("GROUP BY region\n").nth(1).unwrap();
    assert_eq!(query.lines().count(), 3, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_runs_one_iteration_per_call_and_reruns_a_failed_one() {
    let stream = unique("sched");
    let checkpoints = table();
    let s3c = s3().await;
    let bucket = bucket(&s3c).await;
    let lock = std::env::temp_dir().join(unique("sched.lock"));
    let produce = |records: &str, seed: &str| {
        let o = python(
            &[
                "streaming-examples/log-analysis/produce.py",
                "--stream",
                &stream,
                "--records",
                records,
                "--seed",
                seed,
            ],
            &[],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let schedule = |output: &str| {
        shell(
            "streaming-examples/hadoop/schedule.sh",
            &[
                ("STREAM", &stream),
                ("CHECKPOINTS", &checkpoints),
                ("LOGICAL_NAME", "sched"),
                ("OUTPUT", output),
                ("LOCK", lock.to_str().unwrap()),
            ],
        )
    };
    let good = format!("s3://{bucket}/top/");
    produce("300", "1");
    assert!(schedule(&good).status.success());
    produce("200", "2");
    // The writer fails (no such bucket): the iteration is marked failed...
    let o = schedule("s3://no-such-bucket-here/top/");
    assert!(!o.status.success(), "{}", stderr(&o));
    // ...and the next call runs it again, with exactly its records.
    assert!(schedule(&good).status.success());
    let st = status(&stream, &checkpoints, "sched");
    let states: Vec<&str> = st
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["succeeded", "succeeded"], "{st}");
    assert_eq!(st[1]["records"], 200);
    assert_eq!(
        keys(&s3c, &bucket).await,
        ["top/iteration=0/part-00000", "top/iteration=1/part-00000"]
    );
    let _ = std::fs::remove_file(&lock);
}

/// Example 1's mapper and reducer give the top 10 errors that a count made
/// here, independently, over the same records gives.
#[tokio::test(flavor = "multi_thread")]
async fn log_analysis_top_10_matches_an_independent_count() {
    let stream = unique("logs");
    let table = table();
    let o = python(
        &[
            "streaming-examples/log-analysis/produce.py",
            "--stream",
            &stream,
            "--shards",
            "2",
            "--records",
            "1500",
            "--seed",
            "5",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let records = ok(reader(&[
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "top",
    ]));
    // The independent count: status (>= 400) and region of every access-log line.
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for line in String::from_utf8(records.clone()).unwrap().lines() {
        let data = line.split_once('\t').unwrap().1;
        let status: u16 = data.split("\" ").nth(1).unwrap()[..3].parse().unwrap();
        let region = data.rsplit("region=").next().unwrap();
        if status >= 400 {
            *counts.entry(format!("{status} {region}")).or_default() += 1;
        }
    }
    let mut expected: Vec<(String, u64)> = counts.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    expected.truncate(10);
    let got: Vec<(String, u64)> = log_analysis(&records, "")
        .iter()
        .map(|l| {
            let (k, n) = l.rsplit_once('\t').unwrap();
            (k.to_string(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(got, expected);
}
