//! Whole input or nothing: what an exec-mode reader promises the pipeline it
//! feeds. A writer in that pipeline sees only an end of input, and an end at
//! a line boundary looks the same whether the reader delivered its last
//! record or was killed (`kill -9`, the OOM killer) half-way. So before it
//! completes anything, the writer asks the reader, over a socket named in
//! [`VARIABLE`], whether its whole output was delivered and read; a dead
//! reader cannot answer, and the writer then completes nothing.
//!
//! The reader answers "whole" only once its run has ended well (every record
//! written, every end fixed) and the command's stdin pipe holds nothing
//! unread. The sockets are Linux's abstract ones: no file to clean up, and
//! nothing left behind by a killed reader.

use std::io::{BufRead, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex};

/// The variable a reader sets for its command: the socket to ask.
pub const VARIABLE: &str = "KINESIS_READER_FEED";

const WHOLE: &str = "whole";

/// Where the reader's output stands.
#[derive(Clone, Debug, PartialEq)]
enum State {
    /// Records are still going out: an end of input seen now is not ours.
    Writing,
    /// The reader closed its end; the run is recording its outcome.
    Closed,
    /// The run ended well.
    Whole,
    /// The run did not deliver everything, and why.
    Broken(String),
}

/// The reader's side: the state its answers come from.
#[derive(Clone)]
pub struct Feed {
    state: Arc<(Mutex<State>, Condvar)>,
    name: String,
}

impl Feed {
    /// Listens on a new abstract socket and answers every question on a
    /// thread of its own. `unread` tells what the command's stdin still
    /// holds. `None` if no socket could be made (the writer then has
    /// nothing to ask, and says nothing of it).
    pub fn serve(unread: impl Fn() -> Option<usize> + Send + 'static) -> Option<Feed> {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("kinesis-reader/{}/{nonce}", std::process::id());
        let listener = SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| UnixListener::bind_addr(&a))
            .map_err(|e| log::debug!("no feed socket ({e}): a writer in the command cannot ask"))
            .ok()?;
        let feed = Feed {
            state: Arc::new((Mutex::new(State::Writing), Condvar::new())),
            name,
        };
        let answers = feed.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut conn = conn;
                let _ = writeln!(conn, "{}", answers.answer(&unread));
            }
        });
        Some(feed)
    }

    /// The socket's name, for [`VARIABLE`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wraps the command's stdin: its end marks the output closed, and a
    /// failed write marks it broken.
    pub fn output<W: Write>(&self, inner: W) -> Output<W> {
        Output {
            inner,
            feed: self.clone(),
        }
    }

    /// The run's outcome: `Ok` once every record was delivered.
    pub fn decide(&self, outcome: Result<(), String>) {
        self.set(match outcome {
            Ok(()) => State::Whole,
            Err(why) => State::Broken(why),
        });
    }

    fn set(&self, to: State) {
        let (lock, changed) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        // A decided outcome is final.
        if matches!(*s, State::Writing | State::Closed) {
            *s = to;
            changed.notify_all();
        }
    }

    fn answer(&self, unread: &dyn Fn() -> Option<usize>) -> String {
        let (lock, changed) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        // Closed means the outcome is moments away: wait for it.
        while *s == State::Closed {
            s = changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        match &*s {
            State::Writing => "the reader is still writing its output (this input ended \
                               before the reader's did)"
                .into(),
            State::Broken(why) => why.clone(),
            State::Whole => match unread() {
                Some(n) if n > 0 => format!(
                    "the command left {} of the reader's output unread",
                    crate::words::count(n, "byte")
                ),
                _ => WHOLE.into(),
            },
            State::Closed => unreachable!("waited for above"),
        }
    }
}

/// The command's stdin, as the run writes it.
pub struct Output<W> {
    inner: W,
    feed: Feed,
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        match &r {
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => self.feed.set(State::Broken(
                format!("the reader could not write its output ({e})"),
            )),
            _ => {}
        }
        r
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Drop for Output<W> {
    fn drop(&mut self) {
        self.feed.set(State::Closed);
    }
}

/// The socket of the exec-mode reader feeding this process, if one is.
pub fn socket(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    env(VARIABLE).filter(|n| !n.is_empty())
}

/// The writer's side: asks the reader listening on `name` whether the input
/// it fed is whole.
fn ask(name: &str) -> Result<(), String> {
    let gone = |e: std::io::Error| {
        format!(
            "the kinesis-reader that feeds this command is gone ({e}): it was killed or \
             crashed before it said its output was whole, so this input may be cut short"
        )
    };
    let mut conn = SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|a| UnixStream::connect_addr(&a))
        .map_err(gone)?;
    let mut answer = String::new();
    std::io::BufReader::new(&mut conn)
        .read_line(&mut answer)
        .map_err(gone)?;
    match answer.trim_end() {
        WHOLE => Ok(()),
        "" => Err(gone(std::io::ErrorKind::UnexpectedEof.into())),
        why => Err(format!(
            "the kinesis-reader that feeds this command did not deliver its whole output: {why}"
        )),
    }
}

/// An input that ends only when the reader feeding it says it is whole: at
/// its end, the reader is asked once, and a "no" is a read error, so nothing
/// downstream completes an object or a last batch.
pub struct Checked<R> {
    inner: R,
    /// The reader's socket, from [`VARIABLE`].
    feed: Option<String>,
    verdict: Option<Result<(), String>>,
}

impl<R: Read> Checked<R> {
    pub fn new(inner: R, env: &dyn Fn(&str) -> Option<String>) -> Self {
        Checked {
            inner,
            feed: socket(env),
            verdict: None,
        }
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        let feed = &self.feed;
        match self
            .verdict
            .get_or_insert_with(|| feed.as_deref().map_or(Ok(()), ask))
        {
            Ok(()) => Ok(0),
            Err(why) => Err(std::io::Error::other(why.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// As a writer asks at the end of its input: `Ok` without a reader.
    fn check(env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        socket(env).map_or(Ok(()), |name| ask(&name))
    }

    fn env_for(feed: &Feed) -> impl Fn(&str) -> Option<String> + Send + 'static {
        let name = feed.name().to_string();
        move |k: &str| (k == VARIABLE).then(|| name.clone())
    }

    fn read_all(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).map(|_| v)
    }

    #[test]
    fn an_input_ends_only_when_its_reader_delivered_everything() {
        let left = Arc::new(AtomicUsize::new(0));
        let l = left.clone();
        let feed = Feed::serve(move || Some(l.load(Ordering::SeqCst))).unwrap();
        let env = env_for(&feed);
        // Still writing: an end seen now is not the reader's.
        let e = check(&env).unwrap_err();
        assert!(e.contains("still writing"), "{e}");
        let out = feed.output(Vec::new());
        drop(out);
        // Closed: the answer waits for the outcome.
        let asking = std::thread::spawn({
            let env = env_for(&feed);
            move || check(&env)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!asking.is_finished());
        left.store(3, Ordering::SeqCst);
        feed.decide(Ok(()));
        let e = asking.join().unwrap().unwrap_err();
        assert!(e.contains("left 3 bytes"), "{e}");
        left.store(0, Ordering::SeqCst);
        assert_eq!(check(&env), Ok(()));
        let mut input = Checked::new(&b"a\tb\n"[..], &env_for(&feed));
        assert_eq!(read_all(&mut input).unwrap(), b"a\tb\n");
    }

    #[test]
    fn a_failed_or_dead_reader_ends_the_input_with_an_error() {
        let feed = Feed::serve(|| Some(0)).unwrap();
        feed.decide(Err("iteration 3 was taken over".into()));
        let mut input = Checked::new(&b"x\n"[..], &env_for(&feed));
        let e = read_all(&mut input).unwrap_err().to_string();
        assert!(e.contains("taken over"), "{e}");
        // No one listens under this name: the reader is gone.
        let nobody = |k: &str| (k == VARIABLE).then(|| "kinesis-reader/0/0".to_string());
        let e = check(&nobody).unwrap_err();
        assert!(e.contains("is gone"), "{e}");
        // Without a reader to ask, an end is an end.
        assert_eq!(check(&|_: &str| None), Ok(()));
    }

    #[test]
    fn a_failed_write_breaks_the_feed() {
        let feed = Feed::serve(|| Some(0)).unwrap();
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let mut out = feed.output(w);
        assert!(out.write_all(b"x\n").is_err());
        drop(out);
        feed.decide(Ok(()));
        let e = check(&env_for(&feed)).unwrap_err();
        assert!(e.contains("could not write"), "{e}");
    }
}
