//! Errors that decide the exit code, and the exit codes themselves.
//!
//! Everything else travels as `anyhow::Error` with context; [`exit_for`] looks
//! for an [`ExitError`] in the chain to pick the code.

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

/// An error that carries its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum ExitError {
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

/// The exit code for an error chain: a broken pipe (the reader of our stdout
/// went away, as with `| head`) is a normal end.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ExitError>() {
            return match e {
                ExitError::Usage(_) => Exit::Usage,
                ExitError::IterationOwned(_) => Exit::IterationOwned,
                ExitError::DataExpired(_) => Exit::DataExpired,
                ExitError::Interrupted(_) => Exit::Interrupted,
                ExitError::Undrained(_) => Exit::Undrained,
            };
        }
        if let Some(crate::ports::SinkError::NotUsable(_)) = cause.downcast_ref() {
            return Exit::Usage;
        }
        // A store's error wraps its cause transparently, which hides the
        // cause from the chain: look inside.
        if let Some(crate::ports::checkpoint::StoreError::Other(inner)) = cause.downcast_ref() {
            return exit_for(inner);
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
        let e = Err::<(), _>(ExitError::IterationOwned("x".into()))
            .context("opening iteration 3")
            .unwrap_err();
        assert_eq!(exit_for(&e), Exit::IterationOwned);
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing stdout");
        assert_eq!(exit_for(&pipe), Exit::Ok);
        assert_eq!(exit_for(&anyhow::anyhow!("boom")), Exit::Failure);
        assert_eq!(exit_for(&ExitError::Usage("u".into()).into()), Exit::Usage);
        assert_eq!(Exit::DataExpired as u8, 4);
        assert_eq!(
            exit_for(&ExitError::Undrained("u".into()).into()),
            Exit::Undrained
        );
        assert_eq!(Exit::Undrained as u8, 5);
    }
}
