//! emr-streaming-job.sh on a YARN cluster (MiniMRYarnCluster: 2 NodeManagers,
//! from hadoop-minicluster 3.5.0), where attempts are retried: one map
//! attempt is failed by hand (`hadoop job -fail-task`, as an operator would),
//! and another task's attempt is made slow — a first attempt outside the job
//! holds its shard's lease — so that it waits, silent but for the reader's
//! heartbeat, longer than the job's short mapreduce.task.timeout.

use crate::harness::*;
use crate::jobs::{job_counter, job_result, produce, resolved, root, unix_pipeline};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running mini-cluster; its configuration is in `conf` (HADOOP_CONF_DIR).
struct Cluster {
    child: Child,
    conf: PathBuf,
    work: PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        // The NodeManagers' shuffle servers bind every interface: run only
        // where loopback is the only one (scripts/test's network namespace).
        // (/proc/net/dev lists this network namespace's interfaces.)
        let interfaces: Vec<String> = std::fs::read_to_string("/proc/net/dev")
            .unwrap_or_default()
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|i| i.trim().to_string())
            .collect();
        assert!(
            !interfaces.is_empty() && interfaces.iter().all(|i| i == "lo"),
            "the YARN test runs only in a network namespace with nothing but loopback \
             (interfaces here: {interfaces:?}); run it through scripts/test"
        );
        let work = std::env::temp_dir().join(unique("yarn"));
        let conf = work.join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::copy(
            root().join("tests/engines/conf/log4j.properties"),
            conf.join("log4j.properties"),
        )
        .unwrap();
        let cp =
            std::fs::read_to_string(resolved("KINESIS_YARN_CLASSPATH", "yarn-classpath")).unwrap();
        let log = std::fs::File::create(work.join("cluster.log")).unwrap();
        let mut child = Command::new("java")
            .args(["-Xmx1200m", "-cp", cp.trim()])
            .arg(root().join("tests/engines/yarn/MiniYarn.java"))
            .arg(&conf)
            .current_dir(&work)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("java (the YARN mini-cluster)");
        // Its log goes to stdout too: drained to the log file for as long
        // as it runs, and "ready" (a line of its own) says it is up.
        let (ready, is_ready) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let mut copy = std::fs::File::create(work.join("cluster.out")).unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready.send(());
                }
                let _ = writeln!(copy, "{line}");
            }
        });
        assert!(
            is_ready.recv_timeout(Duration::from_secs(180)).is_ok(),
            "the mini-cluster did not start; see {}",
            work.join("cluster.out").display()
        );
        Cluster { child, conf, work }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Closing its stdin stops the cluster.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// `hadoop …` (tests/engines/hadoop) against the cluster.
fn hadoop(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    Command::new(root().join("tests/engines/hadoop"))
        .args(args)
        .env("HADOOP_CONF_DIR", &cluster.conf)
        .env("KINESIS_ENGINES_CLASSPATH", crate::jobs::classpath())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A kinesis-reader in the background with `input` on its stdin.
fn spawn_reader_with(args: &[&str], input: &str) -> Child {
    let mut c = command(READER, args, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn on_yarn_a_failed_and_a_slow_attempt_still_deliver_every_record_once() {
    let stream = unique("yarn");
    let table = table();
    let s3c = s3().await;
    let b = bucket(&s3c).await;
    produce(&stream, "300", "21");
    let cluster = Cluster::start();

    // A slow first attempt of shard 0's task, outside the job: it fixes the
    // shard's end at once, then holds the task's lease for 25 s.
    let manifest = String::from_utf8(ok(run_plan(&stream, &table, "top", "next"))).unwrap();
    let shard0 = manifest.lines().next().unwrap().to_string();
    let slow = spawn_reader_with(
        &[
            "--shards-from-stdin",
            "--checkpoint-table",
            &table,
            "--",
            "sh",
            "-c",
            "cat >/dev/null; sleep 25",
        ],
        &format!("{shard0}\n"),
    );
    wait_until("the slow attempt fixes shard 0", 20, || {
        let st = status(&stream, &table, "top");
        st[0]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| !s["fixed_by"].is_null())
    });

    // The job, with a task timeout far shorter than the slow attempt's 25 s:
    // the job's attempt for shard 0 waits for that lease, and only its
    // heartbeat (every 2 s here) keeps it alive.
    let bins = PathBuf::from(READER)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let cmdenv = format!(
        "-cmdenv AWS_ENDPOINT_URL={} -cmdenv AWS_ACCESS_KEY_ID=test \
         -cmdenv AWS_SECRET_ACCESS_KEY=test -cmdenv AWS_REGION={REGION}",
        endpoint()
    );
    let defines = "-D mapreduce.task.timeout=10000 -D kinesis.hadoop.status.interval=2s \
                   -D mapreduce.map.maxattempts=4";
    let mut job = Command::new(root().join("streaming-examples/hadoop/emr-streaming-job.sh"))
        .args([
            stream.as_str(),
            table.as_str(),
            "top",
            &format!("s3://{b}/top/"),
        ])
        .current_dir(&cluster.work)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", REGION)
        .env("KINESIS_BIN", &bins)
        .env("STREAMING_JAR", crate::jobs::streaming_jar())
        .env("HADOOP", root().join("tests/engines/hadoop"))
        .env("HADOOP_CONF_DIR", &cluster.conf)
        .env("KINESIS_ENGINES_CLASSPATH", crate::jobs::classpath())
        .env(
            "JOB_DIR",
            format!("file://{}", cluster.work.join("jobs").display()),
        )
        .env("JOB_DEFINES", defines)
        .env("STREAMING_OPTS", &cmdenv)
        .env("PYTHON", root().join(".venv/bin/python"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reading = {
        let (log, err) = (log.clone(), job.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };

    // Fail the first attempt of task 1 (shard 1) once it runs.
    let job_id = {
        let mut id = None;
        wait_until("the job is submitted", 120, || {
            let l = log.lock().unwrap();
            id = l
                .find("Running job: ")
                .map(|at| l[at + 13..].split_whitespace().next().unwrap().to_string());
            id.is_some()
        });
        id.unwrap()
    };
    let target = format!("{}_m_000001_0", job_id.replacen("job_", "attempt_", 1));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let o = hadoop(
            &cluster,
            &["job", "-list-attempt-ids", &job_id, "MAP", "RUNNING"],
        );
        if String::from_utf8_lossy(&o.stdout).contains(&target) {
            break;
        }
        assert!(
            Instant::now() < deadline && job.try_wait().unwrap().is_none(),
            "task 1's first attempt never ran ({}): {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o),
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let failed = hadoop(&cluster, &["job", "-fail-task", &target]);
    assert!(failed.status.success(), "{}", stderr(&failed));

    let status_code = job.wait().unwrap();
    reading.join().unwrap();
    let log = log.lock().unwrap().clone();
    let slow = slow.wait_with_output().unwrap();
    assert!(slow.status.success(), "{}", stderr(&slow));
    assert!(status_code.success(), "{log}");

    // Exactly the forced failure: the waiting attempt was never timed out.
    let o = std::process::Output {
        status: status_code,
        stdout: Vec::new(),
        stderr: log.clone().into_bytes(),
    };
    assert_eq!(
        job_counter(&o, "Job Counters ", "Failed map tasks"),
        Some(1),
        "{log}"
    );
    // Three map tasks, and at least the failed attempt's retry beside them.
    let launched = job_counter(&o, "Job Counters ", "Launched map tasks").unwrap_or(0);
    assert!(launched >= 4, "{launched} map attempts launched: {log}");
    assert_eq!(
        job_counter(&o, "KinesisReader", "records"),
        Some(300),
        "{log}"
    );

    // Every record once, as the Unix pipeline over a replay counts them; a
    // second replay is byte-identical; every shard was fixed once.
    assert_eq!(
        job_result(&b, "top", 0).await,
        unix_pipeline(&stream, &table, "top", 0)
    );
    let replay = |n: &str| {
        ok(reader(&[
            "--stream",
            &stream,
            "--checkpoint-table",
            &table,
            "--logical-name",
            "top",
            "--iteration",
            n,
        ]))
    };
    assert_eq!(replay("0"), replay("0"));
    let st = status(&stream, &table, "top");
    assert_eq!(st[0]["state"], "succeeded");
    assert!(
        st[0]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["fixed_by"].is_null()),
        "{st}"
    );
    drop(cluster);
}
