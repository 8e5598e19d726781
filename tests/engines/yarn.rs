//! emr-streaming-job.sh on a YARN cluster (MiniMRYarnCluster: 2 NodeManagers,
//! from hadoop-minicluster 3.5.0), where attempts are retried and
//! speculated. First attempts outside the job hold two tasks' leases, so
//! that the job's attempts of those tasks wait, silent but for the reader's
//! heartbeat, longer than the job's short mapreduce.task.timeout. While
//! they wait, one is failed by hand (`hadoop job -fail-task`, as an operator
//! would) and the other is speculated (CertainSpeculation.java makes the
//! ApplicationMaster's speculator sure of it).

use crate::harness::*;
use crate::jobs::{job_counter, job_result, produce, replay, resolved, root, unix_pipeline};
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
        // The estimator that makes a speculative attempt certain goes on the
        // cluster's classpath, where its ApplicationMasters find it; the
        // attempt watcher beside it.
        let classes = work.join("classes");
        let javac = Command::new("javac")
            .args(["-nowarn", "-cp", cp.trim(), "-d"])
            .arg(&classes)
            .arg(root().join("tests/engines/yarn/CertainSpeculation.java"))
            .arg(root().join("tests/engines/yarn/AttemptStatus.java"))
            .output()
            .expect("javac");
        assert!(javac.status.success(), "{}", stderr(&javac));
        let cp = format!("{}:{}", classes.display(), cp.trim());
        let log = std::fs::File::create(work.join("cluster.log")).unwrap();
        let mut child = Command::new("java")
            .args(["-Xmx1200m", "-cp", &cp])
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
        // A failed test leaves the cluster's logs (its containers' among
        // them, under target/) to be read.
        if std::thread::panicking() {
            eprintln!("the mini-cluster's logs are in {}", self.work.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.work);
        }
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

/// A map attempt as the ApplicationMaster's web UI shows it: its id, its
/// state and its status text.
#[derive(Debug, Clone)]
struct Attempt {
    id: String,
    state: String,
    status: String,
}

/// A job's map attempts, watched (tests/engines/yarn/AttemptStatus.java)
/// until its ApplicationMaster is gone: one snapshot of them all every
/// 300 ms or so.
struct Attempts {
    child: Child,
    snapshots: std::sync::mpsc::Receiver<Vec<Attempt>>,
}

impl Attempts {
    fn watch(cluster: &Cluster, job_id: &str) -> Attempts {
        let jars = std::fs::read_to_string(crate::jobs::classpath()).unwrap();
        let cp = format!(
            "{}:{}:{}",
            cluster.work.join("classes").display(),
            cluster.conf.display(),
            jars.trim()
        );
        let mut child = Command::new("java")
            .args(["-Xmx256m", "-cp", &cp, "AttemptStatus", job_id])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (send, snapshots) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut now = Vec::new();
            for line in out.lines().map_while(Result::ok) {
                if line == "end" {
                    if send.send(std::mem::take(&mut now)).is_err() {
                        return;
                    }
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let text = |a: &serde_json::Value, k: &str| a[k].as_str().unwrap_or("").to_string();
                now.extend(
                    v["taskAttempts"]["taskAttempt"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| Attempt {
                            id: text(a, "id"),
                            state: text(a, "state"),
                            status: text(a, "status"),
                        }),
                );
            }
        });
        Attempts { child, snapshots }
    }

    /// Waits until the map attempts satisfy `done`, and returns them.
    fn until(&self, what: &str, done: impl Fn(&[Attempt]) -> bool) -> Vec<Attempt> {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut last = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.snapshots.recv_timeout(left) {
                Ok(now) if done(&now) => return now,
                Ok(now) => last = now,
                Err(_) => panic!("timed out waiting until {what}; the map attempts: {last:#?}"),
            }
        }
    }
}

impl Drop for Attempts {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Is this attempt running, its status the reader's heartbeat saying that
/// it waits for the lease of `shard`'s task?
fn waits_for(a: &Attempt, shard: &str) -> bool {
    a.state == "RUNNING"
        && a.status.starts_with(&format!(
            "kinesis-reader: waiting: task {shard} of iteration 0 is held by "
        ))
}

/// A first attempt of a manifest line's task, outside the job: it fixes
/// the line's shards at once, then holds the task's lease until `release`
/// (a file) exists, or two minutes pass.
fn hold(table: &str, line: &str, release: &std::path::Path) -> Child {
    let script = format!(
        "cat >/dev/null; i=0; while [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done",
        release.display()
    );
    let mut c = command(
        READER,
        &[
            "--shards-from-stdin",
            "--checkpoint-table",
            table,
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    writeln!(c.stdin.take().unwrap(), "{line}").unwrap();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn on_yarn_a_failed_and_a_speculated_attempt_still_deliver_every_record_once() {
    let stream = unique("yarn");
    let table = table();
    let s3c = s3().await;
    let b = bucket(&s3c).await;
    produce(&stream, "300", "21");
    let cluster = Cluster::start();

    // First attempts of the tasks of manifest lines 0 and 1, outside the
    // job, hold their leases
    // until the test lets go: the job's attempts of those tasks wait for
    // them, so that each step below happens while they wait.
    let manifest = String::from_utf8(ok(run_plan(&stream, &table, "top", "next"))).unwrap();
    let lines: Vec<&str> = manifest.lines().collect();
    let release = [0, 1].map(|k| cluster.work.join(format!("release-{k}")));
    let outsiders = [0, 1].map(|k| hold(&table, lines[k], &release[k]));
    wait_until("the outsiders fix shards 0 and 1", 20, || {
        let st = status(&stream, &table, "top");
        st[0]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !s["fixed_by"].is_null())
            .count()
            == 2
    });

    // The job, with a task timeout far shorter than the waits: only the
    // reader's heartbeat (every 2 s here) keeps a waiting attempt alive.
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
    let timeout = Duration::from_secs(10);
    let speculate = cluster.work.join("speculate");
    let defines = format!(
        "-D mapreduce.task.timeout={} -D kinesis.hadoop.status.interval=2s \
         -D mapreduce.map.maxattempts=4 \
         -D yarn.app.mapreduce.am.job.task.estimator.class=CertainSpeculation \
         -D certain.speculation.file={}",
        timeout.as_millis(),
        speculate.display()
    );
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
        .env("JOB_DEFINES", &defines)
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

    // Which task reads which line is the job's to choose (it orders its
    // splits by size): the attempts' status, the heartbeat, names the shard.
    let shard = |k: usize| {
        let line: serde_json::Value = serde_json::from_str(lines[k]).unwrap();
        line["shards"][0].as_str().unwrap().to_string()
    };
    let (shard0, shard1) = (shard(0), shard(1));
    let attempts = Attempts::watch(&cluster, &job_id);

    // Line 1's first attempt fails (by hand) while it waits; its retry then
    // waits too, until the outsider lets go.
    let now = attempts.until("line 1's first attempt waits", |a| {
        a.iter()
            .any(|x| x.id.ends_with("_0") && waits_for(x, &shard1))
    });
    let first = now.iter().find(|x| waits_for(x, &shard1)).unwrap();
    let failed = hadoop(&cluster, &["job", "-fail-task", &first.id]);
    assert!(failed.status.success(), "{}", stderr(&failed));
    attempts.until("line 1's retry waits", |a| {
        a.iter()
            .any(|x| x.id.ends_with("_1") && waits_for(x, &shard1))
    });
    std::fs::write(&release[1], "").unwrap();

    // Line 0's first attempt waits, its status (in the ApplicationMaster's
    // web UI) the reader's heartbeat, saying what it waits for. Named to the
    // estimator, it is speculated once another task has finished, and its
    // twin waits too. Both outlive the task timeout.
    let now = attempts.until("line 0's first attempt waits", |a| {
        a.iter()
            .any(|x| x.id.ends_with("_0") && waits_for(x, &shard0))
    });
    let since = Instant::now();
    let first = now.iter().find(|x| waits_for(x, &shard0)).unwrap();
    let task = first.id.replacen("attempt_", "task_", 1);
    std::fs::write(&speculate, task.rsplit_once('_').unwrap().0).unwrap();
    let now = attempts.until("line 0's task is speculated", |a| {
        a.iter().filter(|x| waits_for(x, &shard0)).count() == 2
    });
    println!("the map attempts while line 0's twins wait: {now:#?}");
    std::thread::sleep((timeout + Duration::from_secs(5)).saturating_sub(since.elapsed()));
    std::fs::write(&release[0], "").unwrap();

    let status_code = job.wait().unwrap();
    reading.join().unwrap();
    drop(attempts);
    let log = log.lock().unwrap().clone();
    for o in outsiders {
        let o = o.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(status_code.success(), "{log}");

    // Exactly the forced failure: no waiting attempt was timed out.
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
    // Of line 0's two attempts, the one that lost was killed when the other
    // succeeded.
    assert_eq!(
        job_counter(&o, "Job Counters ", "Killed map tasks"),
        Some(1),
        "{log}"
    );
    assert_eq!(
        job_counter(&o, "Job Counters ", "Launched map tasks"),
        Some(5),
        "three tasks, line 1's retry and line 0's twin: {log}"
    );
    assert_eq!(
        job_counter(&o, "KinesisReader", "records"),
        Some(300),
        "{log}"
    );

    // Every record once, as the Unix pipeline over a replay counts them; a
    // second replay is byte-identical.
    assert_eq!(
        job_result(&b, "top", 0).await,
        unix_pipeline(&stream, &table, "top", 0)
    );
    assert_eq!(
        replay(&stream, &table, "top", 0),
        replay(&stream, &table, "top", 0)
    );
    // Each shard's end was fixed once, by one attempt: lines 0 and 1's by
    // the outsiders, line 2's by a first attempt of the job (the owner names
    // it).
    let st = status(&stream, &table, "top");
    assert_eq!(st[0]["state"], "succeeded");
    let attempt_of = job_id.replacen("job_", "attempt_", 1);
    for (k, line) in lines.iter().enumerate() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        for id in line["shards"].as_array().unwrap() {
            let shard = st[0]["shards"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| &s["shard_id"] == id)
                .unwrap_or_else(|| panic!("{id} in {st}"));
            let by = shard["fixed_by"].as_str().unwrap_or_default();
            let expected = match k {
                0 | 1 => !by.contains('@'),
                _ => by.starts_with(&format!("{attempt_of}_m_")) && by.contains("_0@"),
            };
            assert!(
                !by.is_empty() && expected,
                "{id} (task {k}) fixed by {by:?}: {st}"
            );
        }
    }
    drop(cluster);
}
