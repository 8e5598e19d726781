//! Errors that decide the exit code, and the exit codes themselves.
//!
//! Everything else travels as `anyhow::Error` with context; the binaries look
//! for one of these in the chain to pick the code.

use std::process::ExitCode;

/// Exit codes, documented in the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Anything that went wrong at run time (AWS errors, missing stream, …).
    Failure = 1,
    /// Bad command line or settings.
    Usage = 2,
    /// The iteration is held by another live run (lease), or was taken over.
    IterationOwned = 3,
    /// A stored position has aged out of the stream's retention.
    DataExpired = 4,
    /// Exec mode: the command exited 0 without reading all of its input, so
    /// the iteration was not delivered whole (it is marked failed).
    Undrained = 5,
    /// Stopped by SIGINT or SIGTERM (the iteration is released as failed).
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Errors with their own exit code.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    IterationOwned(String),
    #[error("{0}")]
    DataExpired(String),
    #[error("{0}")]
    Interrupted(String),
    #[error("{0}")]
    Undrained(String),
}

/// The `main` of both binaries: logging (`RUST_LOG`, default `info` for
/// this crate), parsing, a tokio runtime, and the exit code — an error is
/// printed once, as its whole chain, on one line.
pub fn main_with<C, F, Fut>(name: &str, run: F) -> ExitCode
where
    C: clap::Parser + crate::config::HasVerbosity,
    F: FnOnce(C) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u8>>,
{
    let cli = match C::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    // -q / -v win over RUST_LOG, which wins over the default.
    let krate = name.replace('-', "_");
    let default = format!("{krate}=info,kinesis_streaming=info,warn");
    let mut logger = match cli.verbosity().filter(&krate) {
        Some(f) => {
            let mut b = env_logger::Builder::new();
            b.parse_filters(&f);
            b
        }
        None => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        }
    };
    logger.format_target(false).init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(cli));
    // Do not wait for a thread still blocked on stdin or stdout.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit_for(&e);
            if code != Exit::Ok {
                eprintln!("{name}: {e:#}");
            }
            code.into()
        }
    }
}

/// Resolves at SIGINT or SIGTERM, naming it: both binaries stop cleanly on either.
pub async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// The exit code for an error chain: a broken pipe (the reader of our stdout
/// went away, as with `| head`) is a normal end.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ReaderError>() {
            return match e {
                ReaderError::Usage(_) => Exit::Usage,
                ReaderError::IterationOwned(_) => Exit::IterationOwned,
                ReaderError::DataExpired(_) => Exit::DataExpired,
                ReaderError::Interrupted(_) => Exit::Interrupted,
                ReaderError::Undrained(_) => Exit::Undrained,
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return Exit::Ok;
            }
        }
    }
    Exit::Failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_are_found_through_context() {
        let e = Err::<(), _>(ReaderError::IterationOwned("x".into()))
            .context("opening iteration 3")
            .unwrap_err();
        assert_eq!(exit_for(&e), Exit::IterationOwned);
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing stdout");
        assert_eq!(exit_for(&pipe), Exit::Ok);
        assert_eq!(exit_for(&anyhow::anyhow!("boom")), Exit::Failure);
        assert_eq!(
            exit_for(&ReaderError::Usage("u".into()).into()),
            Exit::Usage
        );
        assert_eq!(Exit::DataExpired as u8, 4);
        assert_eq!(
            exit_for(&ReaderError::Undrained("u".into()).into()),
            Exit::Undrained
        );
        assert_eq!(Exit::Undrained as u8, 5);
    }
}
