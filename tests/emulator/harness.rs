//! Test harness: a moto server on 127.0.0.1 (the one `.ci/run` started, via
//! `KINESIS_STREAMING_TEST_ENDPOINT`, or one started here), SDK clients for
//! setting up streams and tables, unique names, and running the binaries.

use aws_sdk_dynamodb::Client as Dynamo;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::Client as Kinesis;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";

static ENDPOINT: OnceLock<String> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The emulator's URL, starting moto if no endpoint was given.
pub fn endpoint() -> &'static str {
    ENDPOINT.get_or_init(|| {
        if let Ok(e) = std::env::var("KINESIS_STREAMING_TEST_ENDPOINT") {
            return e;
        }
        start_moto()
    })
}

fn start_moto() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // moto through its wrapper, which applies DynamoDB writes
    // one at a time (why: scripts/moto-server).
    let venv = root.join(".venv/bin/python");
    let python = if venv.exists() {
        venv.display().to_string()
    } else {
        "python3".to_string()
    };
    let moto = format!("{python} {}", root.join("scripts/moto-server").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // moto outlives no test run: a small watchdog stops it when this process ends.
    let script = format!(
        "{moto} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $m",
        pid = std::process::id()
    );
    // The watchdog lives as long as this process; nobody waits for it.
    let watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("starting scripts/moto-server (run .ci/run, or pip install 'moto[server]')");
    std::mem::forget(watchdog);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("http://127.0.0.1:{port}")
}

static KINESIS_LOCAL: OnceLock<String> = OnceLock::new();

/// kinesis-local's URL (it reshards like the service; moto does not), from
/// `.ci/run` / `scripts/test`, or started here from `.emulators/`.
pub fn kinesis_local() -> &'static str {
    KINESIS_LOCAL.get_or_init(|| {
        if let Ok(e) = std::env::var("KINESIS_STREAMING_TEST_KINESIS_LOCAL") {
            return e;
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let status = Command::new(root.join("scripts/emulator.sh"))
            .args(["start-kinesis-local", &port.to_string()])
            .status()
            .expect("scripts/emulator.sh start-kinesis-local (needs node and npm)");
        assert!(status.success(), "kinesis-local did not start");
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {root}/scripts/emulator.sh stop-kinesis-local {port}",
            pid = std::process::id(),
            root = root.display()
        );
        std::mem::forget(Command::new("sh").args(["-c", &script]).current_dir(&root).spawn().unwrap());
        format!("http://127.0.0.1:{port}")
    })
}

pub async fn kinesis_local_client() -> Kinesis {
    let conf = aws_sdk_kinesis::config::Builder::from(&sdk().await)
        .endpoint_url(kinesis_local())
        .build();
    Kinesis::from_conf(conf)
}

/// Runs `kinesis-reader` with Kinesis on kinesis-local (and DynamoDB on moto).
pub fn reader_kl(args: &[&str]) -> Output {
    reader_env(args, &[("AWS_ENDPOINT_URL_KINESIS", kinesis_local())])
}

/// Polls `cond` until it holds; fails the test after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

pub async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
}

pub async fn kinesis() -> Kinesis {
    Kinesis::new(&sdk().await)
}

pub async fn dynamo() -> Dynamo {
    Dynamo::new(&sdk().await)
}

/// A record as put: where it went and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Put {
    pub shard_id: String,
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Vec<u8>,
}

impl Put {
    /// The record as [`parse_lines`] reads it back.
    pub fn line(&self) -> (String, String, String, String) {
        (
            self.shard_id.clone(),
            self.sequence_number.clone(),
            self.partition_key.clone(),
            String::from_utf8(self.data.clone()).unwrap(),
        )
    }
}

pub async fn create_stream(k: &Kinesis, name: &str, shards: i32) {
    k.create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
}

pub async fn put(k: &Kinesis, stream: &str, pk: &str, data: &[u8]) -> Put {
    let out = k
        .put_record()
        .stream_name(stream)
        .partition_key(pk)
        .data(Blob::new(data))
        .send()
        .await
        .unwrap();
    Put {
        shard_id: out.shard_id().to_string(),
        sequence_number: out.sequence_number().to_string(),
        partition_key: pk.to_string(),
        data: data.to_vec(),
    }
}

/// Puts `n` records numbered from `from`, spread over partition keys.
pub async fn put_many(k: &Kinesis, stream: &str, from: usize, n: usize) -> Vec<Put> {
    let mut v = Vec::new();
    for i in from..from + n {
        v.push(
            put(
                k,
                stream,
                &format!("key-{}", i % 17),
                format!("record {i}").as_bytes(),
            )
            .await,
        );
    }
    v
}

/// One of the binaries with the emulator's endpoint and test credentials,
/// and nothing else of this process's environment but PATH.
pub fn command(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", std::env::temp_dir());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub const READER: &str = env!("CARGO_BIN_EXE_kinesis-reader");
pub const WRITER: &str = env!("CARGO_BIN_EXE_kinesis-writer");

/// Runs `kinesis-writer` with `input` on its stdin.
pub fn writer(args: &[&str], input: &[u8]) -> Output {
    writer_env(args, input, &[])
}

pub fn writer_env(args: &[&str], input: &[u8], env: &[(&str, &str)]) -> Output {
    run_with_input(WRITER, args, input, env)
}

/// Runs `kinesis-reader` with `input` on its stdin (map mode's manifest).
pub fn reader_input(args: &[&str], input: &[u8], env: &[(&str, &str)]) -> Output {
    run_with_input(READER, args, input, env)
}

fn run_with_input(bin: &str, args: &[&str], input: &[u8], env: &[(&str, &str)]) -> Output {
    let mut child = command(bin, args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// Starts `kinesis-writer` with piped stdin (the caller writes and closes it).
pub fn spawn_writer(args: &[&str]) -> Child {
    spawn(WRITER, args, Stdio::piped(), &[])
}

pub async fn s3() -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&sdk().await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub async fn bucket(s3: &aws_sdk_s3::Client) -> String {
    let b = unique("bucket");
    s3.create_bucket().bucket(&b).send().await.unwrap();
    b
}

/// Every key in a bucket.
pub async fn keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

pub async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let o = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    o.body.collect().await.unwrap().into_bytes().to_vec()
}

pub async fn dangling_uploads(s3: &aws_sdk_s3::Client, bucket: &str) -> usize {
    let out = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    out.uploads().len()
}

/// Runs `kinesis-reader` to the end.
pub fn reader(args: &[&str]) -> Output {
    reader_env(args, &[])
}

pub fn reader_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(READER, args, env)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Starts `kinesis-reader` with piped stdout and stderr.
pub fn spawn_reader(args: &[&str]) -> Child {
    spawn(READER, args, Stdio::null(), &[])
}

/// [`spawn_reader`], reading the stream from kinesis-local.
pub fn spawn_reader_kl(args: &[&str]) -> Child {
    let env = [("AWS_ENDPOINT_URL_KINESIS", kinesis_local())];
    spawn(READER, args, Stdio::null(), &env)
}

/// Starts one of the binaries with piped stdout and stderr.
fn spawn(bin: &str, args: &[&str], stdin: Stdio, env: &[(&str, &str)]) -> Child {
    command(bin, args, env)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that a run ended with `code`, said `text` on stderr, and printed
/// nothing on stdout.
pub fn fails_with(o: &Output, code: i32, text: &str) {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
    let e = stderr(o);
    assert!(e.contains(text), "expected {text:?} in {e:?}");
    assert!(o.stdout.is_empty(), "nothing on stdout after an error");
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> Vec<u8> {
    assert!(
        o.status.success(),
        "reader failed: {:?}\n{}",
        o.status,
        stderr(&o)
    );
    o.stdout
}

/// `kinesis-reader plan` of one iteration (`N` or `next`), to its end.
pub fn run_plan(stream: &str, table: &str, logical: &str, iteration: &str) -> Output {
    reader(&[
        "plan",
        "--stream",
        stream,
        "--checkpoint-table",
        table,
        "--logical-name",
        logical,
        "--iteration",
        iteration,
    ])
}

/// The checkpoint table for one test.
pub fn table() -> String {
    let t = unique("cp");
    ok(reader(&["create-table", "--checkpoint-table", &t]));
    t
}

/// The flags for one iteration of a logical name, printing
/// `shard_id, sequence_number, partition_key, data`.
pub fn args<'a>(
    stream: &'a str,
    table: &'a str,
    logical: &'a str,
    iteration: &'a str,
) -> Vec<&'a str> {
    vec![
        "--stream",
        stream,
        "--checkpoint-table",
        table,
        "--logical-name",
        logical,
        "--iteration",
        iteration,
        "--fields",
        "shard_id,sequence_number,partition_key,data",
    ]
}

/// `status --json` of a logical name.
pub fn status(stream: &str, table: &str, logical: &str) -> serde_json::Value {
    status_with(reader, stream, table, logical)
}

/// [`status`] of a stream on kinesis-local.
pub fn status_kl(stream: &str, table: &str, logical: &str) -> serde_json::Value {
    status_with(reader_kl, stream, table, logical)
}

fn status_with(
    run: fn(&[&str]) -> Output,
    stream: &str,
    table: &str,
    logical: &str,
) -> serde_json::Value {
    let out = ok(run(&[
        "status",
        "--stream",
        stream,
        "--checkpoint-table",
        table,
        "--logical-name",
        logical,
        "--json",
        "--last",
        "0",
    ]));
    serde_json::from_slice(&out).unwrap()
}

/// Parses lines of `shard_id<TAB>sequence_number<TAB>partition_key<TAB>data`.
pub fn parse_lines(out: &[u8]) -> Vec<(String, String, String, String)> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "line {l:?}");
            (f[0].into(), f[1].into(), f[2].into(), f[3].into())
        })
        .collect()
}

#[allow(dead_code)]
pub fn write_file(path: &std::path::Path, s: &str) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(s.as_bytes())
        .unwrap();
}

/// Runs a Python script with the project's `.venv` (boto3, mrjob; installed by
/// `scripts/emulator.sh install`); see [`tool`].
#[allow(dead_code)]
pub fn python(args: &[&str], env: &[(&str, &str)]) -> Output {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/emulator.sh install",
        py.display()
    );
    tool(py.to_str().unwrap(), args, env)
}

/// Example 1 as a Unix pipeline over the reader's output: mapper, sort,
/// reducer (with `reducer_args`); the reducer's lines.
#[allow(dead_code)]
pub fn log_analysis(records: &[u8], reducer_args: &str) -> Vec<String> {
    let file = std::env::temp_dir().join(unique("records"));
    std::fs::write(&file, records).unwrap();
    let o = shell(
        &format!(
            "python3 streaming-examples/log-analysis/mapper.py < \"$R\" | sort \
             | python3 streaming-examples/log-analysis/reducer.py {reducer_args}"
        ),
        &[("R", file.to_str().unwrap())],
    );
    let _ = std::fs::remove_file(&file);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs a shell pipeline; see [`tool`].
#[allow(dead_code)]
pub fn shell(script: &str, env: &[(&str, &str)]) -> Output {
    tool("sh", &["-c", script], env)
}

/// Runs a program in the repository's root with the binaries first on the
/// PATH and the emulator's endpoint and test credentials in the environment.
fn tool(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bins = PathBuf::from(READER).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = command(program, args, env);
    c.env("PATH", path)
        .env("AWS_DEFAULT_REGION", REGION)
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs a shell script under a pseudo-terminal (`script`), so that stderr is
/// a terminal as a person's would be, and presses Ctrl-C on it after
/// `ctrl_c_after` (a `sleep` duration) if given; returns what the terminal
/// shows at the end (see [`screen`]).
pub fn on_a_terminal(
    script_text: &str,
    env: &[(&str, &str)],
    ctrl_c_after: Option<&str>,
) -> Vec<String> {
    let log = std::env::temp_dir().join(unique("typescript"));
    let log_path = log.to_str().unwrap();
    let keys = match ctrl_c_after {
        Some(after) => format!("sleep {after}; printf '\\003'; sleep 2"),
        None => "true".to_string(),
    };
    let o = shell(
        // A terminal echoes Ctrl-C as `^C` (echoctl, Linux's default).
        &format!("({keys}) | script -qec \"stty echoctl; $SCRIPT\" \"$LOG\" > /dev/null"),
        // A terminal has a TERM: without one, progress displays draw nothing.
        &[
            env,
            &[
                ("SCRIPT", script_text),
                ("LOG", log_path),
                ("TERM", "xterm"),
            ],
        ]
        .concat(),
    );
    let raw = std::fs::read(&log).unwrap_or_default();
    std::fs::remove_file(&log).ok();
    assert!(!raw.is_empty(), "script wrote nothing: {}", stderr(&o));
    // `script` frames the session with its own first and last lines.
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once('\n').map(|(_, rest)| rest).unwrap_or(&text);
    let body = body
        .rfind("\nScript done")
        .map(|i| &body[..i])
        .unwrap_or(body);
    screen(body, 80)
}

/// What a terminal `width` columns wide shows after `out`: the line moves
/// (`\r`, `\n`, wrapping), erasing (`ESC[K`, `ESC[2K`, `ESC[J`) and cursor
/// moves up and down (`ESC[nA`, `ESC[nB`) that progress displays use.
pub fn screen(out: &str, width: usize) -> Vec<String> {
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
            }
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut arg = String::new();
                while let Some(d) = chars.peek().copied().filter(|d| d.is_ascii_digit()) {
                    arg.push(d);
                    chars.next();
                }
                let n: usize = arg.parse().unwrap_or(1);
                match chars.next() {
                    Some('A') => row = row.saturating_sub(n),
                    Some('B') => row += n,
                    Some('K') if arg == "2" => rows[row].clear(),
                    Some('K') => rows[row].truncate(col),
                    Some('J') => {
                        rows[row].truncate(col);
                        rows.truncate(row + 1);
                    }
                    _ => {}
                }
            }
            c if c.is_control() => {}
            c => {
                if col == width {
                    row += 1;
                    col = 0;
                }
                while rows.len() <= row {
                    rows.push(Vec::new());
                }
                let line = &mut rows[row];
                while line.len() < col {
                    line.push(' ');
                }
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.push(c);
                }
                col += 1;
            }
        }
        while rows.len() <= row {
            rows.push(Vec::new());
        }
    }
    rows.into_iter()
        .map(|r| r.into_iter().collect::<String>().trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}
