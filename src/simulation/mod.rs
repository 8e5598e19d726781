//! Deterministic simulation of the checkpoint protocol (RELIABILITY.md,
//! "Deterministic simulation"): the real run logic against the in-memory
//! store and stream, on one thread and a paused clock, with a seeded
//! scheduler deciding every store and stream call — which run moves, which
//! call fails or loses its answer, which run is killed, when records arrive
//! and when a run's host clock steps.
//!
//! Outside the crate's own tests this module only answers "no": the
//! simulation is not running, and no old bug is put back.

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests;

/// Protocol bugs found (and fixed) before, which a test build can put back
/// to show that the simulation finds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// A `--iteration next` run that waited for another run's lease, and
    /// found the iteration succeeded, replayed it instead of moving on.
    NextReplaysASuccess,
    /// A lease request whose answer was lost, retried by the SDK, met its
    /// own lease and took it for a rival's.
    OwnLeaseIsARival,
    /// A run waiting for another run's lease gave up at its first failed
    /// poll, though the next poll might have ended the wait.
    PollGivesUp,
    /// The checkpoint table read as truth: a deleted item or a hand-edited
    /// range replayed, or continued from, without a word.
    TableTrusted,
}

#[cfg(test)]
thread_local! {
    static ACTIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static BUG: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
}

/// Whether this thread runs the simulation (which then runs everything on
/// this one thread, the output merge included).
pub fn active() -> bool {
    #[cfg(test)]
    return ACTIVE.get();
    #[cfg(not(test))]
    false
}

/// Whether `bug` is put back on this thread (only ever in a test build).
pub fn reintroduced(bug: Bug) -> bool {
    #[cfg(test)]
    return BUG.get() == Some(bug);
    #[cfg(not(test))]
    {
        let _ = bug;
        false
    }
}
