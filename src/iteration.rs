//! Opening an iteration in the checkpoint store: resolving `--iteration
//! N|next`, creating the iteration if needed (a conditional write, its shards
//! from `lineage`), and taking its lease or a map task's; `plan` and `finish`
//! for distributed jobs.

use crate::clock::fmt_ms;
use crate::error::ExitError;
use crate::integrity;
use crate::lineage::{first_shards, next_shards, spec_time, StartSpec};
use crate::ports::checkpoint::{
    CheckpointStore, Holder, IterationHeader, IterationState, Lease, LogicalKey, ShardCheckpoint,
    StoreError,
};
use crate::ports::stream::{ShardInfo, StreamInfo};
use crate::words::count;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use std::time::Duration;

/// `--iteration N` or `--iteration next`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IterationRequest {
    Number(u64),
    Next,
}

/// Lease settings for a run.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub owner: String,
    /// Map mode: the lease covers only this task's shards (see [`Holder`]);
    /// the task's name, for messages.
    pub task: Option<String>,
    /// Map mode: the task's shards. Each is leased on its own, so that two
    /// tasks whose manifest lines overlap never read one shard at once.
    pub shards: Vec<String>,
    pub duration: Duration,
    /// How long to wait for another run's lease before giving up (exit code 3).
    pub wait: Duration,
    /// `--rerun-without-wait`: take the lease over at once.
    pub takeover: bool,
}

impl LeaseOptions {
    /// The holder of the whole lease, or of the task's (named by the task).
    pub fn holder(&self) -> Holder {
        Holder {
            owner: self.owner.clone(),
            task: self.task.clone(),
        }
    }

    /// Every lease this run takes: the iteration's, or one per shard of the
    /// task, in shard-id order (so that tasks taking several never deadlock).
    pub fn holders(&self) -> Vec<Holder> {
        match &self.task {
            Some(_) if !self.shards.is_empty() => {
                let mut ids = self.shards.clone();
                ids.sort();
                ids.dedup();
                ids.into_iter().map(|s| self.holder_of(&s)).collect()
            }
            _ => vec![self.holder()],
        }
    }

    /// The lease under which `shard_id` is read and fixed.
    pub fn holder_of(&self, shard_id: &str) -> Holder {
        match &self.task {
            Some(_) if !self.shards.is_empty() => Holder {
                owner: self.owner.clone(),
                task: Some(shard_id.to_string()),
            },
            _ => self.holder(),
        }
    }
}

/// An opened iteration: its header, its shards, and whether we hold its lease
/// (a succeeded iteration is replayed without one).
#[derive(Clone, Debug)]
pub struct Opened {
    pub header: IterationHeader,
    pub shards: Vec<ShardCheckpoint>,
    pub leased: bool,
}

/// Which iteration number `request` means for this logical name.
pub async fn resolve(
    store: &dyn CheckpointStore,
    key: &LogicalKey,
    request: IterationRequest,
) -> Result<u64> {
    let latest = store
        .latest(key)
        .await
        .context("reading the latest iteration")?;
    match (request, latest) {
        (IterationRequest::Next, None) => Ok(0),
        (IterationRequest::Next, Some(h)) => {
            let low = store
                .lowest_unfinished(key, h.low_water.min(h.number), h.number)
                .await
                .context("looking for an unfinished iteration")?;
            Ok(low.unwrap_or(h.number + 1))
        }
        (IterationRequest::Number(0), None) => Ok(0),
        (IterationRequest::Number(n), None) => Err(ExitError::Usage(format!(
            "iteration {n} of logical name {:?} cannot be opened: it has no iterations yet and \
             its first is 0 (use --iteration 0 or --iteration next)",
            key.logical_name
        ))
        .into()),
        (IterationRequest::Number(n), Some(h)) if n <= h.number + 1 => Ok(n),
        (IterationRequest::Number(n), Some(h)) => Err(ExitError::Usage(format!(
            "iteration {n} of logical name {:?} cannot be opened: the latest iteration is {}, \
             so the next one is {} (use --iteration {} or --iteration next)",
            key.logical_name,
            h.number,
            h.number + 1,
            h.number + 1
        ))
        .into()),
    }
}

/// Iteration `n` of a logical name, and what opening it needs: the store,
/// the stream as it is now, this run's lease settings and its clock.
#[derive(Clone, Copy)]
pub struct Opening<'a> {
    pub store: &'a dyn CheckpointStore,
    pub key: &'a LogicalKey,
    pub n: u64,
    pub stream: &'a StreamInfo,
    /// The stream's shards, to plan from; `None` for a map task that took
    /// what it needs from its manifest (a map task never plans).
    pub listed: Option<&'a [ShardInfo]>,
    pub lease: &'a LeaseOptions,
    pub now: &'a dyn Fn() -> i64,
}

impl Opening<'_> {
    /// Opens the iteration: creates it if it does not exist (planned from the
    /// previous iteration or from `start`), then takes its lease unless it has
    /// succeeded already.
    pub async fn open(self, start: &StartSpec) -> Result<Opened> {
        let Opening {
            store,
            key,
            n,
            stream,
            lease,
            now,
            ..
        } = self;
        let header = match store.header(key, n).await? {
            Some(h) => h,
            // A map task reads a planned iteration; it never creates one.
            None if lease.task.is_some() => {
                return Err(ExitError::Usage(format!(
                    "iteration {n} of logical name {:?} has not been planned: run `kinesis-reader \
                 plan` first (a map task reads only the shards of a planned iteration)",
                    key.logical_name
                ))
                .into())
            }
            None => match self.create(start).await? {
                Some(opened) => return Ok(opened),
                // Another run created it first: fall through to the lease.
                None => store.header(key, n).await?.ok_or_else(|| {
                    ExitError::Usage(format!(
                        "iteration {n} of logical name {:?} has shard items under {} but no \
                         header (deleted by hand?): restore the header, or delete those items \
                         too, which rewinds the logical name to iteration {}'s ends",
                        key.logical_name,
                        integrity::shard_items_key(key, n),
                        n.saturating_sub(1)
                    ))
                })?,
            },
        };
        check_same_stream(&header, stream, key)?;
        if header.state == IterationState::Succeeded {
            // Finished for good: a replay needs no lease (and no write).
            let shards = store.shards(key, n).await?;
            self.check(&header, &shards).await?;
            return Ok(Opened {
                header,
                shards,
                leased: false,
            });
        }
        let holders = lease.holders();
        for (i, holder) in holders.iter().enumerate() {
            let taken = self.acquire_one(holder).await;
            if !matches!(taken, Ok(Lease::Acquired)) {
                // Not all of them: give back the ones taken.
                for h in &holders[..i] {
                    if let Err(e) = store.finish(key, n, h, IterationState::Open, now()).await {
                        let what = h.task.as_deref().unwrap_or("the iteration");
                        log::warn!("iteration {n}: could not release the lease of {what}: {e:#}");
                    }
                }
            }
            match taken? {
                Lease::Acquired => {}
                _ => {
                    let header = store.header(key, n).await?.unwrap_or(header);
                    let shards = store.shards(key, n).await?;
                    self.check(&header, &shards).await?;
                    return Ok(Opened {
                        header,
                        shards,
                        leased: false,
                    });
                }
            }
        }
        let header = store.header(key, n).await?.unwrap_or(header);
        let mut shards = store.shards(key, n).await?;
        let planned = shards.iter().filter(|s| s.joined.is_none()).count();
        if planned < header.shard_count as usize && integrity::may_be_unfinished(&shards) {
            shards = self.complete_plan(&header, shards).await?;
        }
        if let Err(e) = self.check(&header, &shards).await {
            // Nothing was read: give the leases back as they were.
            for h in &holders {
                if let Err(e) = store.finish(key, n, h, header.state, now()).await {
                    log::warn!("iteration {n}: could not release its lease: {e:#}");
                }
            }
            return Err(e);
        }
        Ok(Opened {
            header,
            shards,
            leased: true,
        })
    }

    /// The table checked before it is relied on (see `integrity`): the
    /// iteration's items against its header and themselves, and, for a run
    /// of the whole iteration, its starts against the previous one's ends
    /// (one more Query; map tasks leave that to `plan`, which checks once).
    async fn check(self, header: &IterationHeader, shards: &[ShardCheckpoint]) -> Result<()> {
        let Opening {
            store,
            key,
            n,
            lease,
            ..
        } = self;
        let prev = match n > 0 && lease.task.is_none() {
            true => Some(store.shards(key, n - 1).await?),
            false => None,
        };
        integrity::iteration(key, header, shards, prev.as_deref())?;
        Ok(())
    }

    /// Takes one lease, waiting (up to `lease.wait`) while another run holds
    /// it: `Acquired`, or `Succeeded` when the iteration needs no lease.
    async fn acquire_one(self, holder: &Holder) -> Result<Lease> {
        let Opening {
            store,
            key,
            n,
            lease,
            now,
            ..
        } = self;
        let waited_since = now();
        let heartbeat = crate::progress::Waiting::begin();
        // Set once another run's lease was seen; then failed polls in a row.
        let mut waiting = false;
        let mut failed_polls = 0;
        loop {
            let t = now();
            let expires = t + lease.duration.as_millis() as i64;
            let answer = store
                .acquire(key, n, holder, t, expires, lease.takeover)
                .await;
            let answer = match answer {
                // While waiting, one failed poll (after the SDK's own retries) is
                // no reason to give up a wait that the next poll may end: several
                // runs polling one item under a flaky service met this. A
                // persistent error still ends the run, as itself.
                Err(e) if waiting && failed_polls < wait_poll_failures() => {
                    failed_polls += 1;
                    log::warn!("polling the lease of iteration {n} failed ({e:#}); polling again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                a => a.context("taking the iteration's lease")?,
            };
            failed_polls = 0;
            match answer {
                Lease::Succeeded => return Ok(Lease::Succeeded),
                Lease::Acquired => return Ok(Lease::Acquired),
                Lease::HeldBy { owner, expires_ms } => {
                    waiting = true;
                    let gone = gone_from_this_host(&owner, &lease.owner);
                    let (what, until) = (what(n, lease), fmt_ms(expires_ms));
                    heartbeat.show(format!("{what} is held by {owner} until {until}"));
                    let waited = Duration::from_millis((t - waited_since).max(0) as u64);
                    let waited = humantime::format_duration(Duration::from_secs(waited.as_secs()));
                    if waited.get_ref() >= &lease.wait {
                        let name = &key.logical_name;
                        return Err(ExitError::IterationOwned(match gone {
                            Some(pid) => format!(
                                "{what} of logical name {name:?} is leased by {owner} until \
                                 {until}, but its process {pid} no longer runs on this host (it \
                                 ended without releasing the lease); waited {waited}; rerun \
                                 after {until}, or take it over now with --rerun-without-wait"
                            ),
                            None => format!(
                                "{what} of logical name {name:?} is being run by {owner} \
                                 (lease until {until}); waited {waited}; rerun later, or take \
                                 it over with --rerun-without-wait"
                            ),
                        })
                        .into());
                    }
                    if waited.get_ref().is_zero() {
                        let name = &key.logical_name;
                        match gone {
                            Some(pid) => log::warn!(
                                "{what} of {name:?} is leased by {owner} until {until}, but its \
                                 process {pid} no longer runs on this host; waiting for the \
                                 lease to expire (--rerun-without-wait takes it over)"
                            ),
                            None => log::warn!(
                                "{what} of {name:?} is held by {owner} until {until}; waiting \
                                 for it to finish or its lease to expire (--rerun-without-wait \
                                 takes it over)"
                            ),
                        }
                    }
                    let waited = *waited.get_ref();
                    let until_expiry = Duration::from_millis((expires_ms - t).max(0) as u64 + 50);
                    let pause = until_expiry
                        .min(Duration::from_millis(500))
                        .min(lease.wait - waited);
                    tokio::time::sleep(pause.max(Duration::from_millis(10))).await;
                }
            }
        }
    }

    /// `plan`: opens the iteration (creating it if needed, so its shards and
    /// their starts are fixed) and releases it at once without an outcome, so
    /// that map tasks can lease its shards.
    pub async fn plan(self, start: &StartSpec) -> Result<Opened> {
        let Opening {
            store,
            key,
            n,
            lease,
            now,
            ..
        } = self;
        let opened = self.open(start).await?;
        if opened.leased {
            store
                .finish(key, n, &lease.holder(), IterationState::Open, now())
                .await
                .context("releasing the planned iteration")?;
        }
        Ok(opened)
    }

    /// After a distributed job: marks a planned iteration succeeded once every
    /// shard has a fixed end, so that `next` moves on. Returns false if it had
    /// succeeded already.
    pub async fn confirm(self) -> Result<bool> {
        let Opening {
            store,
            key,
            n,
            lease,
            now,
            ..
        } = self;
        if store.header(key, n).await?.is_none() {
            return Err(ExitError::Usage(format!(
                "iteration {n} of logical name {:?} does not exist",
                key.logical_name
            ))
            .into());
        }
        let opened = self.open(&StartSpec::TrimHorizon).await?;
        if !opened.leased {
            return Ok(false);
        }
        let unfixed: Vec<&str> = opened
            .shards
            .iter()
            .filter(|s| s.end.is_none())
            .map(|s| s.shard_id.as_str())
            .collect();
        let holder = lease.holder();
        if !unfixed.is_empty() {
            store
                .finish(key, n, &holder, IterationState::Open, now())
                .await?;
            return Err(anyhow!(
                "iteration {n} of {:?} is not complete: {} of its {} {} no fixed end \
             ({}); run the map tasks for them (or `kinesis-reader --iteration {n}`) first",
                key.logical_name,
                unfixed.len(),
                count(opened.shards.len(), "shard"),
                if unfixed.len() == 1 { "has" } else { "have" },
                unfixed.join(", ")
            ));
        }
        store
            .finish(key, n, &holder, IterationState::Succeeded, now())
            .await?;
        Ok(true)
    }

    /// Creates the iteration, with the lease; `None` if another run created it first.
    async fn create(self, start: &StartSpec) -> Result<Option<Opened>> {
        let Opening {
            store,
            key,
            n,
            stream,
            listed,
            lease,
            now,
        } = self;
        let listed =
            listed.ok_or_else(|| anyhow!("creating iteration {n} needs its shard list"))?;
        let t = now();
        let prev = if n == 0 {
            None
        } else {
            store.header(key, n - 1).await?
        };
        let (shards, start_spec, low_water) = match &prev {
            None => {
                // For n = 0 a concurrent creator may have won the race: the
                // conditional create below then loses, and we go for the lease.
                if n > 0 && store.latest(key).await?.is_some() {
                    bail!(ExitError::Usage(format!(
                        "iteration {} of logical name {:?} does not exist, so {n} cannot follow it",
                        n - 1,
                        key.logical_name
                    )));
                }
                let (spec, _) = start.describe(t);
                (first_shards(listed, start, t), spec, n)
            }
            Some(p) => {
                check_same_stream(p, stream, key)?;
                let prev_shards = store.shards(key, p.number).await?;
                integrity::iteration(key, p, &prev_shards, None)?;
                let shards =
                    next_shards(&prev_shards, listed, spec_time(&p.start_spec)).map_err(|e| {
                        anyhow!(ExitError::Usage(format!(
                            "iteration {n} cannot start yet: iteration {} is not complete ({e}); \
                         run it first (--iteration {} or --iteration next)",
                            p.number, p.number
                        )))
                    })?;
                let low = if p.state == IterationState::Succeeded && p.low_water >= p.number {
                    n
                } else {
                    store
                        .lowest_unfinished(key, p.low_water.min(p.number), p.number)
                        .await?
                        .unwrap_or(n)
                };
                (shards, p.start_spec.clone(), low)
            }
        };
        if shards.is_empty() {
            bail!(
                "stream {} has no shards to read for iteration {n} of {:?}",
                stream.name,
                key.logical_name
            );
        }
        let header = IterationHeader {
            number: n,
            state: IterationState::Open,
            stream_arn: stream.arn.clone(),
            stream_created_ms: stream.created_ms,
            start_spec,
            opened_ms: t,
            opened_by: lease.owner.clone(),
            shard_count: shards.len() as u32,
            low_water,
            owner: Some(lease.owner.clone()),
            lease_expires_ms: t + lease.duration.as_millis() as i64,
            finished_ms: None,
            taken_over: None,
            joined_children: None,
        };
        match store.create(key, &header, &shards).await {
            Ok(()) => Ok(Some(Opened {
                header,
                shards,
                leased: true,
            })),
            Err(StoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("creating iteration {n}"))),
        }
    }

    /// A creator that died between writing the header and all shard items left
    /// the plan short; plans are deterministic, so we write the missing shards.
    async fn complete_plan(
        self,
        header: &IterationHeader,
        have: Vec<ShardCheckpoint>,
    ) -> Result<Vec<ShardCheckpoint>> {
        let Opening {
            store,
            key,
            listed,
            lease,
            ..
        } = self;
        let n = header.number;
        let Some(listed) = listed else {
            bail!(ExitError::Usage(format!(
                "iteration {n} of logical name {:?} was planned with {} shards, but only {} are \
                 recorded (its plan was cut short): run `kinesis-reader plan` again, which \
                 completes it, then the map tasks",
                key.logical_name,
                header.shard_count,
                have.len()
            )));
        };
        let planned = if n == 0 || store.header(key, n - 1).await?.is_none() {
            let t = spec_time(&header.start_spec);
            let start = match t {
                Some(_) if header.start_spec.starts_with("latest") => StartSpec::Latest,
                Some(ms) => StartSpec::AtTimestamp(ms),
                None => StartSpec::TrimHorizon,
            };
            first_shards(listed, &start, t.unwrap_or(header.opened_ms))
        } else {
            let prev = store.shards(key, n - 1).await?;
            next_shards(&prev, listed, spec_time(&header.start_spec))?
        };
        let known: BTreeSet<String> = have.iter().map(|s| s.shard_id.clone()).collect();
        let missing: Vec<ShardCheckpoint> = planned
            .into_iter()
            .filter(|s| !known.contains(&s.shard_id))
            .collect();
        log::warn!(
            "iteration {n} was created with {} shards but only {} were recorded; adding {}",
            header.shard_count,
            have.len(),
            missing.len()
        );
        store
            .add_shards(key, n, &lease.holders()[0], &missing)
            .await?;
        Ok(store.shards(key, n).await?)
    }
}

/// Failed lease polls in a row tolerated while waiting for another run.
pub(crate) const WAIT_POLL_FAILURES: u32 = 3;

/// [`WAIT_POLL_FAILURES`], or none where a test puts the old bug back (the
/// simulation must find it).
fn wait_poll_failures() -> u32 {
    match crate::simulation::reintroduced(crate::simulation::Bug::PollGivesUp) {
        true => 0,
        false => WAIT_POLL_FAILURES,
    }
}

/// What a lease covers, for messages.
/// The pid of another run's lease owner when it ran on this host and its
/// process has ended: its lease then only waits out its expiry. Owners are
/// `host:pid:started_ms` (see `commands.rs`); `me` is this run's.
fn gone_from_this_host(owner: &str, me: &str) -> Option<u32> {
    let host_pid = |o: &str| {
        // A Hadoop attempt's owner starts with `attempt_…@`.
        let o = o.rsplit_once('@').map_or(o, |(_, rest)| rest);
        let mut parts = o.rsplitn(3, ':');
        let (_started, pid, host) = (parts.next()?, parts.next()?, parts.next()?);
        Some((host.to_string(), pid.parse::<u32>().ok()?))
    };
    let ((host, pid), (mine, _)) = (host_pid(owner)?, host_pid(me)?);
    (host == mine && !process_runs(pid)).then_some(pid)
}

#[cfg(target_os = "linux")]
fn process_runs(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_runs(_pid: u32) -> bool {
    true
}

fn what(n: u64, lease: &LeaseOptions) -> String {
    match &lease.task {
        None => format!("iteration {n}"),
        Some(t) => format!("task {t} of iteration {n}"),
    }
}

/// A stream deleted and re-created under the same name must not continue the
/// old stream's checkpoints.
fn check_same_stream(h: &IterationHeader, s: &StreamInfo, key: &LogicalKey) -> Result<()> {
    if h.stream_arn != s.arn || h.stream_created_ms != s.created_ms {
        bail!(
            "iteration {} of logical name {:?} belongs to stream {} created {}, but the stream \
             now is {} created {}: the stream was deleted and re-created. Use a new logical \
             name for the new stream.",
            h.number,
            key.logical_name,
            h.stream_arn,
            fmt_ms(h.stream_created_ms),
            s.arn,
            fmt_ms(s.created_ms)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{ended, shard_info, Fault, Faulty, MemoryStore};
    use crate::ports::checkpoint::{ShardEnd, ShardFix};
    use crate::position::Position;

    fn key() -> LogicalKey {
        LogicalKey {
            stream: "s".into(),
            logical_name: "L".into(),
        }
    }
    fn stream() -> StreamInfo {
        StreamInfo {
            name: "s".into(),
            arn: "arn:aws:kinesis:r:1:stream/s".into(),
            created_ms: 9,
            retention_hours: 24,
        }
    }
    fn lease(owner: &str, takeover: bool) -> LeaseOptions {
        LeaseOptions {
            owner: owner.into(),
            task: None,
            shards: Vec::new(),
            duration: Duration::from_secs(30),
            wait: Duration::ZERO,
            takeover,
        }
    }
    const NOW: fn() -> i64 = || 1_000;

    async fn open_as(store: &MemoryStore, n: u64, owner: &str, takeover: bool) -> Result<Opened> {
        open_with(store, n, &lease(owner, takeover), &NOW).await
    }

    /// Opens iteration `n` of a two-shard stream from its trim horizon.
    async fn open_with(
        store: &dyn CheckpointStore,
        n: u64,
        lease: &LeaseOptions,
        now: &dyn Fn() -> i64,
    ) -> Result<Opened> {
        let listed = [
            shard_info("s0", &[], "1", None),
            shard_info("s1", &[], "1", None),
        ];
        let start = StartSpec::TrimHorizon;
        Opening {
            store,
            key: &key(),
            n,
            stream: &stream(),
            listed: Some(&listed),
            lease,
            now,
        }
        .open(&start)
        .await
    }

    async fn finish_all(store: &MemoryStore, o: &Opened, owner: &str, state: IterationState) {
        // Iteration n reads up to 5, 15, 25, …: after where n − 1 ended.
        let last = (5 + 10 * o.header.number).to_string();
        for s in &o.shards {
            let end = ShardEnd {
                fixed_by: owner.into(),
                ..ended(s, Some(&last), false).end.unwrap()
            };
            store
                .fix_shards(
                    &key(),
                    o.header.number,
                    &[ShardFix::new(&Holder::whole(owner), &s.shard_id, &end)],
                )
                .await
                .unwrap();
        }
        store
            .finish(&key(), o.header.number, &Holder::whole(owner), state, 2_000)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_creation_cut_short_is_completed_but_a_read_iteration_missing_an_item_is_refused() {
        let planned = open_as(&MemoryStore::default(), 0, "a", false)
            .await
            .unwrap();
        // The creator died after its first transaction: a header for two
        // shards and one item, nothing read yet. The next run completes it.
        let cut = MemoryStore::default();
        cut.create(&key(), &planned.header, &planned.shards[..1])
            .await
            .unwrap();
        let completed = open_as(&cut, 0, "a", false).await.unwrap();
        assert_eq!(completed.shards, planned.shards);
        // An item missing beside one that was read is no creation cut short:
        // it was deleted, and re-planning it would read its range again.
        let deleted = MemoryStore::default();
        let read = ended(&planned.shards[0], Some("5"), false);
        deleted
            .create(&key(), &planned.header, &[read])
            .await
            .unwrap();
        let e = open_as(&deleted, 0, "a", false).await.unwrap_err();
        assert!(e.to_string().contains("2 planned shards"), "{e}");
        assert_eq!(deleted.shards(&key(), 0).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn map_tasks_lease_their_shards_side_by_side_and_finish_confirms_the_whole() {
        let store = MemoryStore::default();
        let listed = [
            shard_info("s0", &[], "1", None),
            shard_info("s1", &[], "1", None),
        ];
        let task = |owner: &str, t: &str| LeaseOptions {
            task: Some(t.into()),
            ..lease(owner, false)
        };
        let open_task = |l: LeaseOptions| {
            let store = &store;
            let listed = &listed;
            async move {
                Opening {
                    store,
                    key: &key(),
                    n: 0,
                    stream: &stream(),
                    listed: Some(listed),
                    lease: &l,
                    now: &NOW,
                }
                .open(&StartSpec::TrimHorizon)
                .await
            }
        };
        // A task cannot start an iteration nobody planned.
        let e = open_task(task("a", "s0")).await.unwrap_err();
        assert!(e.to_string().contains("has not been planned"), "{e}");
        let planned = Opening {
            store: &store,
            key: &key(),
            n: 0,
            stream: &stream(),
            listed: Some(&listed),
            lease: &lease("planner", false),
            now: &NOW,
        }
        .plan(&StartSpec::TrimHorizon)
        .await
        .unwrap();
        assert_eq!(planned.shards.len(), 2);
        let h = store.header(&key(), 0).await.unwrap().unwrap();
        assert_eq!((h.owner, h.state), (None, IterationState::Open));
        // Two tasks of the same iteration hold their leases at once...
        let a = open_task(task("a", "s0")).await.unwrap();
        let b = open_task(task("b", "s1")).await.unwrap();
        assert!(a.leased && b.leased);
        // ...a second attempt of task s0 waits for the first (here: gives up at once)...
        let e = open_task(task("a2", "s0")).await.unwrap_err();
        assert!(e.to_string().contains("task s0 of iteration 0"), "{e}");
        // ...and fixes nothing without the lease.
        let end = ended(&a.shards[0], Some("5"), false).end.unwrap();
        let a_holder = task("a", "s0").holder();
        assert!(store
            .fix_shards(
                &key(),
                0,
                &[ShardFix::new(&task("a2", "s0").holder(), "s0", &end)]
            )
            .await
            .is_err());
        store
            .fix_shards(&key(), 0, &[ShardFix::new(&a_holder, "s0", &end)])
            .await
            .unwrap();
        store
            .finish(&key(), 0, &a_holder, IterationState::Succeeded, 2)
            .await
            .unwrap();
        // A task's end does not decide the iteration.
        let h = store.header(&key(), 0).await.unwrap().unwrap();
        assert_eq!(h.state, IterationState::Open);
        // The retry of s0 gets the lease and finds its end fixed: a replay.
        let again = open_task(task("a2", "s0")).await.unwrap();
        assert!(again.leased);
        assert!(again
            .shards
            .iter()
            .any(|s| s.shard_id == "s0" && s.end.is_some()));
        // finish refuses while s1 has no end, then confirms; `next` moves on.
        let (k, info, driver) = (key(), stream(), lease("driver", false));
        let confirm_job = || {
            Opening {
                store: &store,
                key: &k,
                n: 0,
                stream: &info,
                listed: Some(&listed),
                lease: &driver,
                now: &NOW,
            }
            .confirm()
        };
        let e = confirm_job().await.unwrap_err();
        assert!(e.to_string().contains("s1"), "{e}");
        assert_eq!(
            resolve(&store, &key(), IterationRequest::Next)
                .await
                .unwrap(),
            0
        );
        let b_holder = task("b", "s1").holder();
        let end = ended(&b.shards[1], None, false).end.unwrap();
        store
            .fix_shards(&key(), 0, &[ShardFix::new(&b_holder, "s1", &end)])
            .await
            .unwrap();
        assert!(confirm_job().await.unwrap());
        assert_eq!(
            resolve(&store, &key(), IterationRequest::Next)
                .await
                .unwrap(),
            1
        );
        assert!(!confirm_job().await.unwrap());
    }

    #[tokio::test]
    async fn tasks_whose_shards_overlap_never_hold_one_shard_at_once() {
        let store = MemoryStore::default();
        let listed = [
            shard_info("s0", &[], "1", None),
            shard_info("s1", &[], "1", None),
        ];
        let start = StartSpec::TrimHorizon;
        Opening {
            store: &store,
            key: &key(),
            n: 0,
            stream: &stream(),
            listed: Some(&listed),
            lease: &lease("p", false),
            now: &NOW,
        }
        .plan(&start)
        .await
        .unwrap();
        let task = |owner: &str, shards: &[&str]| LeaseOptions {
            task: Some(shards.join("+")),
            shards: shards.iter().map(|s| s.to_string()).collect(),
            ..lease(owner, false)
        };
        let both = task("a", &["s1", "s0"]);
        let o = Opening {
            store: &store,
            key: &key(),
            n: 0,
            stream: &stream(),
            listed: Some(&listed),
            lease: &both,
            now: &NOW,
        }
        .open(&start)
        .await
        .unwrap();
        assert!(o.leased);
        // Another task's line overlaps on s1: it waits (here: gives up at
        // once), and keeps none of its shards.
        let other = task("b", &["s1"]);
        let e = Opening {
            store: &store,
            key: &key(),
            n: 0,
            stream: &stream(),
            listed: Some(&listed),
            lease: &other,
            now: &NOW,
        }
        .open(&start)
        .await
        .unwrap_err();
        assert!(e.to_string().contains("is being run by a"), "{e}");
        let end = ended(&o.shards[1], Some("5"), false).end.unwrap();
        assert!(store
            .fix_shards(
                &key(),
                0,
                &[ShardFix::new(&other.holder_of("s1"), "s1", &end)]
            )
            .await
            .is_err());
        // Each shard is fixed under its own lease; when they are released,
        // the other task gets s1.
        store
            .fix_shards(
                &key(),
                0,
                &[ShardFix::new(&both.holder_of("s1"), "s1", &end)],
            )
            .await
            .unwrap();
        for h in both.holders() {
            store
                .finish(&key(), 0, &h, IterationState::Open, 2)
                .await
                .unwrap();
        }
        assert!(
            Opening {
                store: &store,
                key: &key(),
                n: 0,
                stream: &stream(),
                listed: Some(&listed),
                lease: &other,
                now: &NOW
            }
            .open(&start)
            .await
            .unwrap()
            .leased
        );
    }

    #[tokio::test]
    async fn next_opens_zero_then_resumes_failures_before_moving_on() {
        let store = MemoryStore::default();
        let k = key();
        let next = || resolve(&store, &k, IterationRequest::Next);
        assert_eq!(next().await.unwrap(), 0);
        let o = open_as(&store, 0, "a", false).await.unwrap();
        assert!(o.leased);
        assert_eq!(o.header.owner.as_deref(), Some("a"));
        // Still open (the run died or is running): next is 0 again.
        assert_eq!(next().await.unwrap(), 0);
        finish_all(&store, &o, "a", IterationState::Succeeded).await;
        assert_eq!(next().await.unwrap(), 1);
        let o1 = open_as(&store, 1, "a", false).await.unwrap();
        assert_eq!(o1.shards[0].start, Position::After("5".into()));
        finish_all(&store, &o1, "a", IterationState::Failed).await;
        // 1 failed with fixed boundaries: 2 may still be opened explicitly...
        let o2 = open_as(&store, 2, "a", false).await.unwrap();
        assert_eq!(o2.header.low_water, 1);
        finish_all(&store, &o2, "a", IterationState::Succeeded).await;
        // ...but next goes back to the failed one first.
        assert_eq!(next().await.unwrap(), 1);
        let e = resolve(&store, &key(), IterationRequest::Number(4))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--iteration 3"), "{e}");
        assert_eq!(
            resolve(&store, &key(), IterationRequest::Number(3))
                .await
                .unwrap(),
            3
        );
    }

    #[tokio::test]
    async fn a_held_iteration_is_refused_taken_over_or_replayed() {
        let store = MemoryStore::default();
        open_as(&store, 0, "a", false).await.unwrap();
        let e = open_as(&store, 0, "b", false).await.unwrap_err();
        assert_eq!(
            crate::error::exit_for(&e),
            crate::error::Exit::IterationOwned
        );
        assert!(e.to_string().contains("being run by a"), "{e}");
        // Takeover: b owns it, a can no longer fix anything.
        let o = open_as(&store, 0, "b", true).await.unwrap();
        let end = ended(&o.shards[0], Some("3"), false).end.unwrap();
        assert!(matches!(
            store
                .fix_shards(&key(), 0, &[ShardFix::new(&Holder::whole("a"), "s0", &end)])
                .await,
            Err(StoreError::Conflict(_))
        ));
        finish_all(&store, &o, "b", IterationState::Succeeded).await;
        // A succeeded iteration is replayed without a lease, boundaries intact.
        let r = open_as(&store, 0, "c", false).await.unwrap();
        assert!(!r.leased);
        assert!(r
            .shards
            .iter()
            .all(|s| s.end.as_ref().unwrap().fixed_by == "b"));
    }

    #[tokio::test]
    async fn losing_the_race_to_create_iteration_zero_means_waiting_for_its_lease() {
        let inner = MemoryStore::default();
        open_as(&inner, 0, "a", false).await.unwrap();
        // A stale read of the header: as if the other run created the
        // iteration between our read and our write.
        let late = Faulty::new(inner).on("header", 1..=1, Fault::StaleRead);
        let listed = [shard_info("s0", &[], "1", None)];
        let e = Opening {
            store: &late,
            key: &key(),
            n: 0,
            stream: &stream(),
            listed: Some(&listed),
            lease: &lease("b", false),
            now: &NOW,
        }
        .open(&StartSpec::TrimHorizon)
        .await
        .unwrap_err();
        assert_eq!(
            crate::error::exit_for(&e),
            crate::error::Exit::IterationOwned,
            "{e:#}"
        );
    }

    /// Opens iteration 0 as "b" on `store`, waiting up to 2 minutes for the
    /// lease "a" holds (30 s from 1,000), on a clock that moves 1 s per read.
    async fn wait_for_a(store: &Faulty<MemoryStore>) -> Result<Opened> {
        let clock = std::sync::atomic::AtomicI64::new(1_000);
        let now = || clock.fetch_add(1_000, std::sync::atomic::Ordering::SeqCst);
        let b = LeaseOptions {
            wait: Duration::from_secs(120),
            ..lease("b", false)
        };
        open_with(store, 0, &b, &now).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_poll_while_waiting_for_a_lease_is_polled_again() {
        let inner = MemoryStore::default();
        open_as(&inner, 0, "a", false).await.unwrap();
        // The first poll sees "a"'s lease; the next two fail.
        let store = Faulty::new(inner).on("acquire", 2..=3, Fault::Fail);
        let o = wait_for_a(&store).await.unwrap();
        assert!(o.leased, "b took the lease once a's expired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_error_while_waiting_ends_the_run_as_itself() {
        let inner = MemoryStore::default();
        open_as(&inner, 0, "a", false).await.unwrap();
        let store = Faulty::new(inner).on("acquire", 2.., Fault::Fail);
        let e = wait_for_a(&store).await.unwrap_err();
        assert!(format!("{e:#}").contains("injected"), "{e:#}");
        // The first poll and WAIT_POLL_FAILURES failed ones, then the last.
        let polls = store.calls("acquire");
        assert_eq!(polls, 2 + WAIT_POLL_FAILURES as usize);
        // A run that fails at its first poll does not wait at all.
        let store = Faulty::new(MemoryStore::default()).on("acquire", 1.., Fault::Fail);
        open_as(store.inner(), 0, "a", false).await.unwrap();
        assert!(wait_for_a(&store).await.is_err());
        assert_eq!(store.calls("acquire"), 1);
    }

    #[tokio::test]
    async fn a_fixed_boundary_is_never_moved() {
        let store = MemoryStore::default();
        let o = open_as(&store, 0, "a", false).await.unwrap();
        let end = ended(&o.shards[0], Some("3"), false).end.unwrap();
        store
            .fix_shards(&key(), 0, &[ShardFix::new(&Holder::whole("a"), "s0", &end)])
            .await
            .unwrap();
        let later = ended(&o.shards[0], Some("9"), false).end.unwrap();
        assert!(store
            .fix_shards(
                &key(),
                0,
                &[ShardFix::new(&Holder::whole("a"), "s0", &later)]
            )
            .await
            .is_err());
        let s = store.shards(&key(), 0).await.unwrap();
        assert_eq!(
            s[0].end.as_ref().unwrap().last_sequence.as_deref(),
            Some("3")
        );
    }

    #[tokio::test]
    async fn a_recreated_stream_is_not_continued() {
        let store = MemoryStore::default();
        let o = open_as(&store, 0, "a", false).await.unwrap();
        finish_all(&store, &o, "a", IterationState::Succeeded).await;
        let listed = [shard_info("s0", &[], "1", None)];
        let recreated = StreamInfo {
            created_ms: 10,
            ..stream()
        };
        let e = Opening {
            store: &store,
            key: &key(),
            n: 1,
            stream: &recreated,
            listed: Some(&listed),
            lease: &lease("a", false),
            now: &NOW,
        }
        .open(&StartSpec::TrimHorizon)
        .await
        .unwrap_err();
        assert!(e.to_string().contains("deleted and re-created"), "{e}");
    }

    #[tokio::test]
    async fn n_plus_one_needs_every_boundary_of_n() {
        let store = MemoryStore::default();
        open_as(&store, 0, "a", false).await.unwrap();
        let e = open_as(&store, 1, "a", false).await.unwrap_err();
        assert!(
            e.to_string().contains("iteration 0 is not complete"),
            "{e:#}"
        );
    }

    #[tokio::test]
    async fn a_lease_whose_process_has_ended_on_this_host_is_named_as_such() {
        let store = MemoryStore::default();
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        let dead = ended.id();
        ended.wait().unwrap();
        let me = format!("thishost:{}:2", std::process::id());
        open_as(&store, 0, &format!("thishost:{dead}:1"), false)
            .await
            .unwrap();
        let e = open_as(&store, 0, &me, false).await.unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "leased by thishost:{dead}:1 until 1970-01-01T00:00:31.000Z, but its process \
                 {dead} no longer runs on this host"
            )),
            "{e}"
        );
        // The same pid on another host is not this host's to judge.
        let other = MemoryStore::default();
        open_as(&other, 0, &format!("otherhost:{dead}:1"), false)
            .await
            .unwrap();
        let e = open_as(&other, 0, &me, false).await.unwrap_err();
        assert!(e.to_string().contains("is being run by otherhost"), "{e}");
        // A Hadoop attempt's owner names the attempt before the host.
        let hadoop = MemoryStore::default();
        let attempt = format!("attempt_1_0001_m_000000_0@thishost:{dead}:1");
        open_as(&hadoop, 0, &attempt, false).await.unwrap();
        let e = open_as(
            &hadoop,
            0,
            &format!("attempt_1_0001_m_000000_1@{me}"),
            false,
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "leased by {attempt} until 1970-01-01T00:00:31.000Z, but its process {dead} no \
                 longer runs on this host"
            )),
            "{e}"
        );
    }
}
