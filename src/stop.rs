//! How a run is told to stop: one [`Stop`] future for the reader, for both
//! writer targets, and for a reader that passes signals on to its command.

use std::future::Future;
use std::pin::Pin;

/// Resolves, with a description such as "SIGTERM", when the run must stop.
pub type Stop = Pin<Box<dyn Future<Output = String> + Send>>;

/// Resolves at SIGINT or SIGTERM: both binaries stop cleanly on either.
pub fn on_signal() -> Stop {
    Box::pin(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT".to_string(),
            _ = term.recv() => "SIGTERM".to_string(),
        }
    })
}

/// Never resolves: for runs that nothing interrupts (tests).
pub fn never() -> Stop {
    Box::pin(std::future::pending())
}

/// Passes SIGINT and SIGTERM on to the child process `pid`; the returned
/// future resolves at the first one, so that the reader stops reading too.
pub fn forwarding_to(pid: i32) -> Stop {
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut tx = Some(tx);
        loop {
            let (sig, name) = tokio::select! {
                _ = int.recv() => (libc::SIGINT, "SIGINT"),
                _ = term.recv() => (libc::SIGTERM, "SIGTERM"),
            };
            // SAFETY: kill(2) with our own child's pid and a valid signal number.
            unsafe {
                libc::kill(pid, sig);
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(name.to_string());
            }
        }
    });
    Box::pin(async move { rx.await.unwrap_or_default() })
}
