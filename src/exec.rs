//! Exec mode: the command after `--` gets the records on its stdin, with the
//! iteration it reads in its environment, and its exit status decides the
//! iteration's.

use crate::clock::fmt_ms;
use crate::config::{exported, mangle, names};
use crate::descriptors;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

/// Where a run is, as its command is told.
#[derive(Clone, Debug)]
pub struct RunContext {
    pub stream: String,
    /// With checkpoints: the logical name, iteration number and opening
    /// time (epoch ms).
    pub iteration: Option<(String, u64, i64)>,
    /// A map task's name (its share of the iteration), in map mode.
    pub task: Option<String>,
}

/// The command's stdin, made before the command is started, so that what
/// it holds can be counted by whoever needs to know ([`Stdin::pipe`]).
pub struct Stdin {
    read_end: std::io::PipeReader,
    write_end: std::io::PipeWriter,
    /// The reader's own copy of the pipe's read end (see [`Exited::unread`]).
    pub pipe: Arc<Pipe>,
}

impl Stdin {
    pub fn new() -> std::io::Result<Stdin> {
        let (read_end, write_end) = std::io::pipe()?;
        let pipe = Arc::new(Pipe(Mutex::new(Some(read_end.try_clone()?))));
        Ok(Stdin {
            read_end,
            write_end,
            pipe,
        })
    }
}

/// The command, started: the write end of its stdin, and a thread that
/// waits for it to exit.
pub struct Running {
    pub stdin: Option<std::io::PipeWriter>,
    pub pid: i32,
    exited: std::thread::JoinHandle<std::io::Result<Exited>>,
}

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exited {
    /// Its exit status as a shell reports it (128 + signal if killed).
    pub status: u8,
    /// What it left unread in its stdin pipe when it exited. A pipe holds
    /// 64 KiB, so a command can exit 0 without reading while every write
    /// before that succeeded: only this tells.
    pub unread: usize,
}

/// The reader's copy of the read end of the command's stdin. Holding it
/// keeps the pipe's contents countable after the command exits; it is closed
/// then, so that a write still under way fails as a closed pipe would.
pub struct Pipe(Mutex<Option<std::io::PipeReader>>);

impl Pipe {
    /// Bytes in the pipe that no one has read, while the command runs.
    pub fn unread(&self) -> Option<usize> {
        let held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.as_ref().and_then(|r| descriptors::unread(r).ok())
    }

    /// Counts what is left, then lets go of the read end.
    fn close(&self) -> usize {
        let left = self.unread().unwrap_or(0);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
        left
    }
}

impl Running {
    /// Waits for the command to exit.
    pub fn wait(self) -> std::io::Result<Exited> {
        self.exited.join().unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the thread waiting for the command panicked",
            ))
        })
    }
}

/// Starts `program` with `args`, its stdin a pipe, and the run's context in
/// its environment under both the `KINESIS_*` names and the EMR names as
/// Hadoop would pass them; `feed` is the socket a writer in it asks.
pub fn spawn(
    program: &str,
    args: &[String],
    ctx: &RunContext,
    feed: Option<&str>,
    stdin: Stdin,
) -> std::io::Result<Running> {
    let (stream, it) = (&ctx.stream, &ctx.iteration);
    let Stdin {
        read_end,
        write_end,
        pipe,
    } = stdin;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(read_end);
    cmd.env(exported::STREAM, stream)
        .env(mangle(names::STREAM), stream);
    if let Some((logical, n, opened_ms)) = it {
        cmd.env(exported::LOGICAL_NAME, logical)
            .env(mangle(names::LOGICAL_NAME), logical)
            .env(exported::ITERATION, n.to_string())
            .env(mangle(names::ITERATION), n.to_string())
            .env(exported::ITERATION_START, fmt_ms(*opened_ms));
    }
    match &ctx.task {
        Some(t) => cmd.env(exported::TASK, t),
        None => cmd.env_remove(exported::TASK),
    };
    // A stdout or stderr closed when we started (`>&-`) is closed for the
    // command too, as the person asked; the runtime's stand-in /dev/null
    // would swallow the command's output without a word.
    let closed: Vec<libc::c_int> = [1, 2]
        .into_iter()
        .filter(|fd| descriptors::closed_at_start(*fd as usize))
        .collect();
    if !closed.is_empty() {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only close(2), which is
        // async-signal-safe, runs.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &closed {
                    libc::close(*fd);
                }
                Ok(())
            });
        }
    }
    match feed {
        Some(name) => cmd.env(crate::feed::VARIABLE, name),
        // An outer reader's socket is not this run's.
        None => cmd.env_remove(crate::feed::VARIABLE),
    };
    let mut child = cmd.spawn()?;
    // The command's copy of the read end goes with `cmd`.
    drop(cmd);
    let pid = child.id() as i32;
    let exited = std::thread::spawn(move || {
        let status = wait(&mut child)?;
        Ok(Exited {
            status,
            unread: pipe.close(),
        })
    });
    Ok(Running {
        stdin: Some(write_end),
        pid,
        exited,
    })
}

/// The child's exit status as a shell reports it (128 + signal if killed).
fn wait(c: &mut Child) -> std::io::Result<u8> {
    use std::os::unix::process::ExitStatusExt;
    let s = c.wait()?;
    Ok(match (s.code(), s.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        _ => 1,
    })
}

/// Why `program` cannot be run, if it cannot: it must be an executable file,
/// given as a path or found on the PATH, as execvp(3) looks for it.
pub fn not_runnable(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = std::path::Path::new(program);
        return match std::fs::metadata(p) {
            Err(_) => Some("no such file".into()),
            Ok(m) if !m.is_file() => Some("not a file".into()),
            Ok(_) if !executable(p) => Some(format!(
                "not executable (chmod +x {program}, or run it through its interpreter, e.g. \
                 -- python3 {program})"
            )),
            Ok(_) => None,
        };
    }
    let dirs: Vec<_> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if dirs.iter().any(|d| executable(&d.join(program))) {
        return None;
    }
    Some(match dirs.iter().find(|d| d.join(program).is_file()) {
        Some(d) => format!("{} is not executable", d.join(program).display()),
        None => "not found on the PATH".into(),
    })
}

/// What an early end means for a run that records its outcome: `recorded`
/// is the iteration and whether this run is a map task's share of it.
pub fn incomplete(recorded: Option<(u64, bool)>) -> Option<String> {
    recorded.map(|(n, task)| match task {
        false => format!(
            "iteration {n} was not completed and is marked failed (--iteration next runs it again)"
        ),
        true => format!(
            "this task's shards of iteration {n} that were not read to their end stay unfixed, \
             so a retry of the task reads them"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_cannot_run_says_why() {
        let dir = std::env::temp_dir().join(format!("exec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("mapper.py");
        std::fs::write(&script, "print(1)\n").unwrap();
        let path = script.to_str().unwrap();
        assert!(not_runnable(path).unwrap().contains("chmod +x"));
        assert_eq!(not_runnable(dir.to_str().unwrap()).unwrap(), "not a file");
        assert_eq!(not_runnable("./no-such-mapper").unwrap(), "no such file");
        assert_eq!(
            not_runnable("no-such-program-anywhere").unwrap(),
            "not found on the PATH"
        );
        assert!(not_runnable("sh").is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
