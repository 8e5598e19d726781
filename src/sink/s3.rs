//! Streaming stdin into one S3 object with bounded memory.
//!
//! Input bytes (compressed on the fly if asked) are cut into parts; parts go
//! up concurrently as a multipart upload, at most `parts_in_flight` at once,
//! while one more waits and the next fills. Memory is therefore at most part
//! size × (parts in flight + 2) — at least 4 parts — never the input. Input that fits in one part is
//! sent with a single PutObject. The object appears only when complete; on
//! any error the upload is aborted, so nothing partial stays visible or billable.

use crate::ports::objects::{ObjectStore, Part};
use crate::sink::lines::BadLines;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: usize = 5 << 30;
pub const MAX_PARTS: u32 = 10_000;
/// After this many parts the part size doubles, so that any object up to
/// S3's 5 TiB limit fits in 10,000 parts without guessing its size up front.
const PARTS_PER_SIZE_STEP: u32 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

#[derive(Clone, Debug)]
pub struct UploadOptions {
    pub part_size: usize,
    pub parts_in_flight: usize,
    pub compression: Compression,
    /// Write nothing (rather than an empty object) when the input is empty.
    pub skip_empty: bool,
    pub progress: Arc<crate::progress::Progress>,
}

/// Bytes held in part buffers now, and the most ever held.
#[derive(Debug, Default)]
pub struct Accounting {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Accounting {
    fn add(&self, n: usize) {
        let now = self.now.fetch_add(n, Ordering::SeqCst) + n;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }
    fn sub(&self, n: usize) {
        self.now.fetch_sub(n, Ordering::SeqCst);
    }
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// What an upload did.
#[derive(Debug, Default, Clone)]
pub struct UploadSummary {
    pub lines: u64,
    pub input_bytes: u64,
    pub object_bytes: u64,
    pub parts: u32,
    /// False when `skip_empty` left out an empty input.
    pub written: bool,
    pub peak_buffered: usize,
}

/// A part buffer on its way to S3; its bytes are accounted until dropped.
struct Chunk {
    data: Bytes,
    /// The input was read to its end: nothing follows. A channel that closes
    /// without a last chunk means the input failed, and nothing is written.
    last: bool,
    accounting: Arc<Accounting>,
}
impl Drop for Chunk {
    fn drop(&mut self) {
        self.accounting.sub(self.data.len());
    }
}

/// A part buffer's first reservation; it doubles up to the part size.
const FIRST_RESERVATION: usize = 1 << 20;

/// Cuts the byte stream into parts (a `Write` the compressor writes into).
struct PartCutter {
    buf: Vec<u8>,
    base: usize,
    parts_cut: u32,
    tx: mpsc::Sender<Chunk>,
    accounting: Arc<Accounting>,
}

impl PartCutter {
    fn target(&self) -> usize {
        (self.base << (self.parts_cut / PARTS_PER_SIZE_STEP).min(20)).min(MAX_PART_SIZE)
    }
    fn cut(&mut self, last: bool) -> std::io::Result<()> {
        let data = Bytes::from(std::mem::take(&mut self.buf));
        self.parts_cut += 1;
        let chunk = Chunk {
            data,
            last,
            accounting: self.accounting.clone(),
        };
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::other("the upload stopped"))?;
        self.buf = Vec::new();
        Ok(())
    }
}

impl Write for PartCutter {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let t = self.target();
            if self.buf.len() == self.buf.capacity() {
                // Grown towards the part size as data comes, so that a small
                // input holds (and "peak buffers" reports) little.
                let had = self.buf.capacity();
                let want = (had * 2).clamp(FIRST_RESERVATION.min(t), t);
                self.buf.reserve_exact(want - self.buf.len());
                self.accounting.add(self.buf.capacity() - had);
            }
            let room = self.buf.capacity().min(t) - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == t {
                // The accounted capacity becomes the chunk's length.
                let cap = self.buf.capacity();
                self.accounting.sub(cap - self.buf.len());
                self.cut(false)?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The byte stream on its way to the part cutter, compressed or not.
enum Encoder {
    Plain(PartCutter),
    Gzip(flate2::write::GzEncoder<PartCutter>),
    Zstd(zstd::stream::write::Encoder<'static, PartCutter>),
}

impl Encoder {
    fn new(c: PartCutter, compression: Compression) -> Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::Plain(c),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                c,
                flate2::Compression::default(),
            )),
            Compression::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(c, 3).context("starting zstd")?)
            }
        })
    }
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Plain(c) => c.write_all(b),
            Encoder::Gzip(e) => e.write_all(b),
            Encoder::Zstd(e) => e.write_all(b),
        }
    }
    /// Ends the stream and hands over the last part.
    fn finish(self) -> Result<()> {
        let mut c = match self {
            Encoder::Plain(c) => c,
            Encoder::Gzip(e) => e.finish().context("finishing gzip")?,
            Encoder::Zstd(e) => e.finish().context("finishing zstd")?,
        };
        // The last part; empty when the input was empty or ended on a cut.
        let cap = c.buf.capacity();
        c.accounting.sub(cap - c.buf.len());
        c.cut(true).context("handing over the last part")?;
        Ok(())
    }
}

/// The longest line the writer holds back while it waits for the line's
/// newline. Only whole lines reach the object, so that a truncated last line,
/// reported as skipped, is never stored.
pub const MAX_LINE: usize = 256 * 1024 * 1024;

/// Reads `input` to its end into parts; returns (lines, input bytes). Only
/// complete lines (ending with a newline) are passed on: what follows the
/// last newline waits in `pending` until its own newline comes.
fn cut_input(
    mut input: impl Read,
    compression: Compression,
    cutter: PartCutter,
    bad: &mut BadLines,
    progress: &crate::progress::Progress,
) -> Result<(u64, u64)> {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut lines, mut total) = (0u64, 0u64);
    let mut encoder = Encoder::new(cutter, compression)?;
    // The current line, not yet ended by a newline.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow!(e).context("reading standard input")),
        };
        let chunk = &buf[..n];
        let newlines = memchr::memchr_iter(b'\n', chunk).count() as u64;
        progress.add(newlines, n as u64);
        match memchr::memrchr(b'\n', chunk) {
            Some(p) => {
                encoder.write_all(&pending).context("buffering a part")?;
                encoder
                    .write_all(&chunk[..=p])
                    .context("buffering a part")?;
                pending.clear();
                pending.extend_from_slice(&chunk[p + 1..]);
            }
            None => pending.extend_from_slice(chunk),
        }
        lines += newlines;
        total += n as u64;
        if pending.len() > MAX_LINE {
            bail!(
                "line {}: longer than {} MiB without a newline; kinesis-writer keeps a line \
                 back until its newline arrives, so that a cut-off line is never stored",
                lines + 1,
                MAX_LINE >> 20
            );
        }
    }
    if !pending.is_empty() {
        // A reducer's output ends with a newline; without one the input was cut off.
        bad.bad(
            lines + 1,
            &pending,
            "the input ends in the middle of a line (no newline at the end): it looks truncated"
                .into(),
        )?;
        lines += 1;
    }
    encoder.finish()?;
    Ok((lines, total))
}

/// Streams `input` into the object `key`. Blocking reads happen on a
/// blocking thread; uploads run on the runtime.
pub async fn upload(
    store: Arc<dyn ObjectStore>,
    key: &str,
    input: impl Read + Send + 'static,
    opts: &UploadOptions,
    mut bad: BadLines,
    stop: crate::stop::Stop,
) -> Result<(UploadSummary, BadLines)> {
    let part_size = opts.part_size.max(MIN_PART_SIZE);
    let accounting = Arc::new(Accounting::default());
    let (tx, mut rx) = mpsc::channel::<Chunk>(1);
    let cutter = PartCutter {
        buf: Vec::new(),
        base: part_size,
        parts_cut: 0,
        tx,
        accounting: accounting.clone(),
    };
    let compression = opts.compression;
    let progress = opts.progress.clone();
    let reading = tokio::task::spawn_blocking(move || {
        let r = cut_input(input, compression, cutter, &mut bad, &progress);
        (r, bad)
    });

    let mut summary = UploadSummary::default();
    let started: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let result = tokio::select! {
        r = send_parts(&store, key, &mut rx, opts, &mut summary, started.clone()) => r,
        why = stop => {
            let id = started.lock().unwrap().clone();
            abort(&store, key, id.as_deref()).await;
            return Err(crate::error::ExitError::Interrupted(format!(
                "stopped by {why}; the upload of {key} was aborted, nothing was written"
            ))
            .into());
        }
    };
    // Whatever happened, let the reading thread end (it fails once rx is gone).
    drop(rx);
    let (read, bad) = reading.await.context("the input thread panicked")?;
    finish_upload(&store, key, result, read, &mut summary, opts.skip_empty).await?;
    summary.peak_buffered = accounting.peak();
    Ok((summary, bad))
}

/// Completes (or aborts) the upload once the input is read.
async fn finish_upload(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    result: Result<UploadState, (Option<String>, anyhow::Error)>,
    read: Result<(u64, u64)>,
    summary: &mut UploadSummary,
    skip_empty: bool,
) -> Result<()> {
    let upload_id = match result {
        Ok(id) => id,
        Err((id, e)) => {
            abort(store, key, id.as_deref()).await;
            return Err(e);
        }
    };
    let (lines, input_bytes) = match read {
        Ok(v) => v,
        Err(e) => {
            abort(store, key, upload_id.as_ref().map(|(id, _)| id.as_str())).await;
            return Err(e);
        }
    };
    summary.lines = lines;
    summary.input_bytes = input_bytes;
    match upload_id {
        Some((id, parts)) => {
            if let Err(e) = complete(store, key, &id, &parts).await {
                abort(store, key, Some(&id)).await;
                return Err(e);
            }
            summary.parts = parts.len() as u32;
            summary.written = true;
        }
        None => {
            // One part or none: a single PutObject, unless empty input is skipped.
            summary.written = !(skip_empty && input_bytes == 0);
            summary.parts = u32::from(summary.written);
        }
    }
    Ok(())
}

/// The ids of the uploads in progress for `key`, if they can be listed
/// (best effort: without s3:ListBucketMultipartUploads there is no sweep).
async fn upload_ids(store: &Arc<dyn ObjectStore>, key: &str) -> Option<Vec<String>> {
    match store.uploads_of(key).await {
        Ok(u) => Some(u.into_iter().map(|(id, _)| id).collect()),
        Err(e) => {
            log::debug!(
                "could not list the uploads of {key} (to clean up after lost answers): {e:#}"
            );
            None
        }
    }
}

/// A CreateMultipartUpload whose answer was lost still started an upload,
/// and the SDK's retry started another: the first is orphaned (billed,
/// invisible). Uploads of this key that appeared during our create call and
/// are not ours are such orphans, and are aborted. (Another writer of the
/// same key starting in that very moment would lose its upload and fail —
/// never a wrong object.)
async fn sweep(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    before: Option<Vec<String>>,
    ours: Option<&str>,
) {
    let Some(before) = before else { return };
    let Some(after) = upload_ids(store, key).await else {
        return;
    };
    for id in after {
        if Some(id.as_str()) != ours && !before.contains(&id) {
            match store.abort(key, &id).await {
                Ok(()) => log::warn!(
                    "aborted upload {id} of {key}: a CreateMultipartUpload whose answer was lost \
                     had started it"
                ),
                Err(e) => log::error!("could not abort the orphaned upload {id} of {key}: {e:#}"),
            }
        }
    }
}

type UploadState = Option<(String, Vec<Part>)>;

/// Receives parts and sends them. A single part (or none) is held back and
/// written with PutObject at the end of input; from the second part on, a
/// multipart upload. Returns the upload id and its parts, if one was started.
async fn send_parts(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    rx: &mut mpsc::Receiver<Chunk>,
    opts: &UploadOptions,
    summary: &mut UploadSummary,
    started: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<UploadState, (Option<String>, anyhow::Error)> {
    // No part at all: the input thread failed before its first part; its
    // error is the one reported.
    let Some(first) = rx.recv().await else {
        return Ok(None);
    };
    // One part, or one and an empty last one: a single PutObject.
    if !first.last {
        match rx.recv().await {
            None => return Ok(None), // the input failed: its error is reported
            Some(second) if !(second.last && second.data.is_empty()) => {
                return multipart(store, key, rx, opts, summary, started, [first, second]).await
            }
            Some(_) => {}
        }
    }
    summary.object_bytes = first.data.len() as u64;
    let empty = first.data.is_empty();
    if !(empty && opts.skip_empty) {
        store
            .put_object(key, first.data.clone())
            .await
            .map_err(|e| (None, e.into()))?;
    }
    Ok(None)
}

/// From the second part on: a multipart upload, `parts_in_flight` at once.
/// It is completed only after the last part (by the caller, once the input
/// was read without error).
async fn multipart(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    rx: &mut mpsc::Receiver<Chunk>,
    opts: &UploadOptions,
    summary: &mut UploadSummary,
    started: Arc<std::sync::Mutex<Option<String>>>,
    first_two: [Chunk; 2],
) -> Result<UploadState, (Option<String>, anyhow::Error)> {
    let before = upload_ids(store, key).await;
    let created = store.create_upload(key).await;
    sweep(
        store,
        key,
        before,
        created.as_ref().ok().map(String::as_str),
    )
    .await;
    let id = created.map_err(|e| (None, e.into()))?;
    *started.lock().unwrap() = Some(id.clone());
    let in_flight = Arc::new(Semaphore::new(opts.parts_in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut number = 0i32;
    let mut parts = Vec::new();
    let mut held = std::collections::VecDeque::from(first_two);
    let sent: Result<(), anyhow::Error> = async {
        loop {
            // Take a slot first, then a part: parts wait in the channel (one)
            // and in the cutter (one), not here.
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let chunk = match held.pop_front() {
                Some(c) => c,
                None => match rx.recv().await {
                    Some(c) => c,
                    None => break,
                },
            };
            if chunk.last && chunk.data.is_empty() {
                break;
            }
            number += 1;
            if number as u32 > MAX_PARTS {
                anyhow::bail!("the input needs more than {MAX_PARTS} parts");
            }
            summary.object_bytes += chunk.data.len() as u64;
            let (store, key, id) = (store.clone(), key.to_string(), id.clone());
            tasks.spawn(async move {
                let r = store
                    .upload_part(&key, &id, number, chunk.data.clone())
                    .await;
                drop(chunk);
                drop(permit);
                r.with_context(|| format!("uploading part {number}"))
            });
            // Collect finished parts as we go, and stop at the first failure.
            while let Some(done) = tasks.try_join_next() {
                parts.push(done??);
            }
        }
        while let Some(done) = tasks.join_next().await {
            parts.push(done??);
        }
        Ok(())
    }
    .await;
    if let Err(e) = sent {
        // Let the parts still on their way land (or fail) before the upload is
        // aborted: a part that finishes after the abort would stay billable.
        while tasks.join_next().await.is_some() {}
        return Err((Some(id), e));
    }
    parts.sort_by_key(|p| p.number);
    Ok(Some((id, parts)))
}

async fn complete(store: &Arc<dyn ObjectStore>, key: &str, id: &str, parts: &[Part]) -> Result<()> {
    if store.complete(key, id, parts).await? {
        return Ok(());
    }
    // The answer was lost: the object may well be complete. S3's ETag of a
    // multipart object is the MD5 of the parts' MD5s, "-" and the part count.
    let expected = multipart_etag(parts);
    match store.head_etag(key).await? {
        Some(etag) if Some(etag.trim_matches('"')) == expected.as_deref() => {
            log::warn!("the CompleteMultipartUpload answer was lost, but {key} is complete");
            Ok(())
        }
        _ => Err(anyhow!(
            "completing the upload of {key} failed and the object is not there"
        )),
    }
}

/// The ETag S3 gives a multipart object made of `parts` (with plain MD5 part ETags).
pub fn multipart_etag(parts: &[Part]) -> Option<String> {
    use md5::{Digest, Md5};
    let mut all = Md5::new();
    for p in parts {
        let hex = p.etag.trim_matches('"');
        if hex.len() != 32 {
            return None;
        }
        let mut raw = [0u8; 16];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        all.update(raw);
    }
    let d = all.finalize();
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{hex}-{}", parts.len()))
}

async fn abort(store: &Arc<dyn ObjectStore>, key: &str, id: Option<&str>) {
    if let Some(id) = id {
        if let Err(e) = store.abort(key, id).await {
            log::error!("could not abort the multipart upload {id} of {key}: {e:#}");
        } else {
            log::warn!("aborted the upload of {key}: nothing was written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{Fault, Faulty, MemoryObjects};
    use crate::sink::lines::{BadLinePolicy, BadLines};

    fn md5_hex(b: &[u8]) -> String {
        use md5::{Digest, Md5};
        Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A bucket whose parts take 2 ms to upload, so that they overlap.
    fn bucket() -> MemoryObjects {
        let mut b = MemoryObjects::default();
        b.part_latency = std::time::Duration::from_millis(2);
        b
    }

    fn opts(in_flight: usize) -> UploadOptions {
        UploadOptions {
            part_size: MIN_PART_SIZE,
            parts_in_flight: in_flight,
            compression: Compression::None,
            skip_empty: false,
            progress: Default::default(),
        }
    }

    async fn run<S: ObjectStore + 'static>(
        store: Arc<S>,
        input: Vec<u8>,
        o: UploadOptions,
    ) -> Result<UploadSummary> {
        let bad = BadLines::new(BadLinePolicy::Fail).unwrap();
        let never = crate::stop::never();
        upload(store, "k", std::io::Cursor::new(input), &o, bad, never)
            .await
            .map(|(s, _)| s)
    }

    fn lines(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("line {i:08}\n").into_bytes())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn many_parts_stay_within_the_memory_bound_and_arrive_in_order() {
        let input = lines(2_000_000); // 28 MB: 6 parts
        let store = Arc::new(bucket());
        let s = run(store.clone(), input.clone(), opts(2)).await.unwrap();
        assert_eq!(s.parts, 6);
        assert_eq!(s.lines, 2_000_000);
        assert!(
            s.peak_buffered <= MIN_PART_SIZE * 4,
            "peak {}",
            s.peak_buffered
        );
        assert!(store.object("k").unwrap() == input);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_small_input_holds_little_whatever_the_part_size() {
        let store = Arc::new(bucket());
        let mut o = opts(2);
        o.part_size = 1 << 30;
        let s = run(store.clone(), b"abc\n".to_vec(), o).await.unwrap();
        assert!(
            s.peak_buffered <= FIRST_RESERVATION,
            "peak {}",
            s.peak_buffered
        );
        assert_eq!(store.object("k").unwrap(), b"abc\n");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_upload_orphaned_by_a_lost_create_answer_is_aborted() {
        // The first CreateMultipartUpload's answer is lost and the SDK's
        // retry starts a second upload: the first is nobody's.
        let store = Arc::new(Faulty::new(bucket()).on("create_upload", 1..=1, Fault::AppliedTwice));
        run(store.clone(), lines(1_000_000), opts(2)).await.unwrap();
        let bucket = store.inner();
        assert!(bucket.object("k").is_some());
        assert_eq!(bucket.aborted(), ["upload-1"]);
        assert_eq!(bucket.open_uploads(), 0, "nothing left open");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_part_aborts_the_upload_and_writes_nothing() {
        let store = Arc::new(Faulty::new(bucket()).on("upload_part", 3..=3, Fault::Fail));
        let e = run(store.clone(), lines(2_000_000), opts(2))
            .await
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("injected: upload_part was refused"),
            "{e:#}"
        );
        let bucket = store.inner();
        assert!(bucket.keys().is_empty());
        assert_eq!(bucket.aborted().len(), 1);
        assert_eq!(bucket.open_uploads(), 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn small_input_is_one_put_and_a_lost_complete_is_checked_not_trusted() {
        let store = Arc::new(Faulty::new(bucket()));
        let s = run(store.clone(), b"a\tb\n".to_vec(), opts(4))
            .await
            .unwrap();
        assert_eq!(s.parts, 1);
        assert_eq!(
            store.calls("create_upload"),
            0,
            "no multipart upload for one part"
        );
        // The answer is lost and the upload was not completed: the object's
        // absence is an error.
        let store = Arc::new(Faulty::new(bucket()).on("complete", 1..=1, Fault::Dropped));
        let e = run(store.clone(), lines(1_000_000), opts(2))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not there"), "{e:#}");
        assert!(store.inner().keys().is_empty());
        // The answer is lost but the upload was completed: its ETag says so.
        let store = Arc::new(Faulty::new(bucket()).on("complete", 1..=1, Fault::Lost));
        let input = lines(1_000_000);
        run(store.clone(), input.clone(), opts(2)).await.unwrap();
        assert!(store.inner().object("k").unwrap() == input);
    }

    async fn run_with(
        store: Arc<MemoryObjects>,
        input: Vec<u8>,
        o: UploadOptions,
        policy: BadLinePolicy,
    ) -> Result<(UploadSummary, u64)> {
        let bad = BadLines::new(policy).unwrap();
        let never = crate::stop::never();
        upload(store, "k", std::io::Cursor::new(input), &o, bad, never)
            .await
            .map(|(s, b)| (s, b.skipped))
    }

    fn plain(stored: &[u8], c: Compression) -> Vec<u8> {
        match c {
            Compression::None => stored.to_vec(),
            Compression::Gzip => {
                let mut v = Vec::new();
                flate2::read::GzDecoder::new(stored)
                    .read_to_end(&mut v)
                    .unwrap();
                v
            }
            Compression::Zstd => zstd::decode_all(stored).unwrap(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_truncated_last_line_reported_as_skipped_is_not_stored() {
        // One part and many parts (a cut inside the held-back line), each
        // way of compressing.
        for complete in [b"a\t1\nb\t2\n".to_vec(), lines(1_000_000)] {
            for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
                let mut input = complete.clone();
                input.extend_from_slice(b"partial");
                let store = Arc::new(bucket());
                let o = UploadOptions {
                    compression: c,
                    ..opts(2)
                };
                let (s, skipped) = run_with(store.clone(), input, o, BadLinePolicy::Skip)
                    .await
                    .unwrap();
                assert_eq!(skipped, 1, "{c:?}");
                assert_eq!(
                    s.lines,
                    complete.iter().filter(|b| **b == b'\n').count() as u64 + 1
                );
                let stored = store.object("k").unwrap();
                assert!(
                    plain(&stored, c) == complete,
                    "{c:?}, {} bytes in: the object holds the skipped line",
                    complete.len()
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_truncated_input_names_its_line_and_writes_nothing() {
        // Small (no part was cut), and just over one part (one part was cut
        // before the input failed: it must not be stored on its own).
        let big = lines(MIN_PART_SIZE / 13 + 10);
        let n_big = big.iter().filter(|b| **b == b'\n').count();
        for (complete, n) in [(b"a\t1\n".to_vec(), 1), (big, n_big)] {
            let mut input = complete.clone();
            input.push(b'b');
            let store = Arc::new(bucket());
            let e = run_with(store.clone(), input, opts(2), BadLinePolicy::Fail)
                .await
                .unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("line {}: ", n + 1)),
                "{e:#}"
            );
            assert!(store.keys().is_empty(), "nothing stored");
            assert_eq!(store.open_uploads(), 0, "nothing left open");
        }
    }

    #[test]
    fn multipart_etag_is_md5_of_part_md5s() {
        // Two parts "a" and "b": md5(md5("a") ++ md5("b")) with "-2".
        let parts = [b"a", b"b"]
            .iter()
            .enumerate()
            .map(|(i, b)| Part {
                number: i as i32 + 1,
                etag: format!("\"{}\"", md5_hex(*b)),
                checksum_crc32: None,
            })
            .collect::<Vec<_>>();
        let mut cat = Vec::new();
        for b in [b"a", b"b"] {
            use md5::{Digest, Md5};
            cat.extend_from_slice(&Md5::digest(b));
        }
        assert_eq!(
            multipart_etag(&parts).unwrap(),
            format!("{}-2", md5_hex(&cat))
        );
    }
}
