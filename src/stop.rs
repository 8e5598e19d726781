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

/// Passes SIGINT and SIGTERM on to the child process `pid` and every process
/// it started (a shell's pipeline: the shell alone would leave a writer
/// loading on after the reader said the iteration failed); the returned
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
            // Descendants first: a shell that dies first hands its children
            // to init, and they are no longer found as ours.
            for p in descendants(pid).into_iter().rev().chain([pid]) {
                // SAFETY: kill(2) with a valid signal number, to our child or
                // a process it started.
                unsafe {
                    libc::kill(p, sig);
                }
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(name.to_string());
            }
        }
    });
    Box::pin(async move { rx.await.unwrap_or_default() })
}

/// The processes descended from `pid`, parents before their children, as
/// /proc shows them now.
fn descendants(pid: i32) -> Vec<i32> {
    let parent_of = |p: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|p| Some((p, parent_of(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.split_off(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_shells_pipeline_is_found_as_its_descendants() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 | sleep 30"])
            .spawn()
            .unwrap();
        let pid = sh.id() as i32;
        let mut found = Vec::new();
        for _ in 0..100 {
            found = super::descendants(pid);
            if found.len() >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(found.len() >= 2, "{found:?}");
        for p in found.iter().chain([&pid]) {
            // SAFETY: our own child and its children.
            unsafe {
                libc::kill(*p, libc::SIGKILL);
            }
        }
        sh.wait().unwrap();
    }
}
