//! The checkpoint store: where iteration boundaries live.
//!
//! The trait is small so that the iteration logic can be tested against the
//! in-memory store in `fakes/`; the DynamoDB implementation (item layout and
//! conditional writes) is in `aws/checkpoint_table/`.
//!
//! Every write that decides ownership or a boundary is conditional:
//! - creating an iteration succeeds only if it does not exist yet;
//! - taking the lease succeeds only if it is free, expired, or ours (or with
//!   an explicit takeover);
//! - fixing a shard's end succeeds only while we hold the lease *and* the end
//!   is not fixed yet (one transaction).

use crate::position::Position;
use async_trait::async_trait;

/// Which logical name of which stream: the unit that has iterations.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogicalKey {
    pub stream: String,
    pub logical_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IterationState {
    /// Opened; some shard boundaries may still be unfixed, or the run died.
    Open,
    /// Every shard's boundary is fixed and the run that fixed the last one ended well.
    Succeeded,
    /// A run ended with an error; `next` runs it again.
    Failed,
}

impl IterationState {
    pub fn as_str(self) -> &'static str {
        match self {
            IterationState::Open => "open",
            IterationState::Succeeded => "succeeded",
            IterationState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(IterationState::Open),
            "succeeded" => Some(IterationState::Succeeded),
            "failed" => Some(IterationState::Failed),
            _ => None,
        }
    }
}

/// The iteration's header: identity, state and lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IterationHeader {
    pub number: u64,
    pub state: IterationState,
    pub stream_arn: String,
    pub stream_created_ms: i64,
    /// What the user asked for the very first iteration (`trim-horizon`, …), kept for humans.
    pub start_spec: String,
    /// The wall-clock time the iteration was opened; the snapshot end rule reads up to it.
    pub opened_ms: i64,
    pub opened_by: String,
    pub shard_count: u32,
    /// Every iteration below this one had succeeded when this one was opened,
    /// so `next` only looks from here up.
    pub low_water: u64,
    pub owner: Option<String>,
    pub lease_expires_ms: i64,
    pub finished_ms: Option<i64>,
    /// The last time a run took the lease over from another live run.
    pub taken_over: Option<Takeover>,
    /// How many children joined the run that read it (raised in the
    /// transaction that records each), so that a deleted joined child's
    /// item is noticed; `None` in headers written before it was kept.
    pub joined_children: Option<u32>,
}

/// A lease taken from another run while it was live (`--rerun-without-wait`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    pub from: String,
    pub by: String,
    pub at_ms: i64,
}

/// A shard's boundary, fixed once when the shard is read to its end rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardEnd {
    /// The last record of this iteration in this shard; `None` if it read nothing.
    pub last_sequence: Option<String>,
    /// Where the next iteration starts in this shard.
    pub next: Position,
    /// The shard is closed and read to its very end: its children come next.
    pub closed: bool,
    pub records: u64,
    pub bytes: u64,
    pub fixed_ms: i64,
    pub fixed_by: String,
    /// Every record after `next` that arrived before this time has been read
    /// (see [`ShardCheckpoint::known_until_ms`]).
    pub known_until_ms: Option<i64>,
    /// Where reading really began, when data had expired and was skipped.
    pub read_from: Option<Position>,
    /// What was skipped because it had aged out of the stream (`--on-expired skip`).
    pub expired_skip: Option<String>,
    /// The first record of this iteration in this shard, and when it arrived:
    /// a replay checks that it is still in the stream.
    pub first_sequence: Option<String>,
    pub first_arrival_ms: Option<i64>,
}

impl ShardEnd {
    /// The same fix (one run's write at one time), as stored and read back.
    pub fn same_fix(&self, other: &ShardEnd) -> bool {
        (&self.fixed_by, self.fixed_ms, &self.next)
            == (&other.fixed_by, other.fixed_ms, &other.next)
    }
}

/// One shard of one iteration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardCheckpoint {
    pub shard_id: String,
    pub parents: Vec<String>,
    pub start: Position,
    /// Records after `start` that arrived before this time were all read by
    /// earlier iterations; if it is older than the stream's retention, data
    /// may have aged out unread. `None`: nothing to check (a shard's beginning).
    pub known_until_ms: Option<i64>,
    pub end: Option<ShardEnd>,
    /// A child that joined the run that read its parents to their end after
    /// the iteration was opened (they closed during it): the order it joined
    /// in, 1 for the first. Its lane in the merge comes after every planned
    /// shard's, in this order, so that a replay interleaves as the run did.
    pub joined: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost: someone else created, owns or fixed it.
    #[error("conditional write lost: {0}")]
    Conflict(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// How a lease request went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    Acquired,
    /// Held by `owner` until `expires_ms`.
    HeldBy {
        owner: String,
        expires_ms: i64,
    },
    /// The iteration has succeeded: it needs no lease, only a replay.
    Succeeded,
}

/// Who holds a lease, and on what. A run that reads a whole iteration leases
/// the iteration itself (its header); a map task of a planned iteration
/// leases only its own set of shards (`task` names that set), so the map
/// tasks of one iteration run side by side while two attempts of the same
/// task never do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub owner: String,
    pub task: Option<String>,
}

impl Holder {
    pub fn whole(owner: &str) -> Self {
        Holder {
            owner: owner.to_string(),
            task: None,
        }
    }
}

/// One shard's end, to be fixed under `holder`'s lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardFix {
    pub holder: Holder,
    pub shard_id: String,
    pub end: ShardEnd,
}

impl ShardFix {
    pub fn new(holder: &Holder, shard_id: &str, end: &ShardEnd) -> Self {
        ShardFix {
            holder: holder.clone(),
            shard_id: shard_id.to_string(),
            end: end.clone(),
        }
    }
}

/// A map task's lease on one shard of an iteration (map mode leases each
/// shard on its own), while it is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskLease {
    pub shard_id: String,
    pub owner: String,
    pub expires_ms: i64,
}

#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The highest-numbered iteration of a logical name.
    async fn latest(&self, key: &LogicalKey) -> Result<Option<IterationHeader>, StoreError>;
    async fn header(&self, key: &LogicalKey, n: u64)
        -> Result<Option<IterationHeader>, StoreError>;
    /// The lowest iteration in `from..=to` that has not succeeded.
    async fn lowest_unfinished(
        &self,
        key: &LogicalKey,
        from: u64,
        to: u64,
    ) -> Result<Option<u64>, StoreError>;
    /// Every iteration header, oldest first (for `status`).
    async fn headers(&self, key: &LogicalKey) -> Result<Vec<IterationHeader>, StoreError>;
    async fn shards(&self, key: &LogicalKey, n: u64) -> Result<Vec<ShardCheckpoint>, StoreError>;
    /// The map tasks' shard leases of iteration `n` that are held (for `status`).
    async fn task_leases(&self, key: &LogicalKey, n: u64) -> Result<Vec<TaskLease>, StoreError>;
    /// Creates an iteration (header with the creator's lease, and its shards).
    /// `Conflict` if it exists.
    async fn create(
        &self,
        key: &LogicalKey,
        header: &IterationHeader,
        shards: &[ShardCheckpoint],
    ) -> Result<(), StoreError>;
    /// Adds shard items under the lease: ones a crashed creator did not get
    /// to write, or children that join the run (`joined` set; that marks the
    /// iteration as one an older version must not read).
    async fn add_shards(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        shards: &[ShardCheckpoint],
    ) -> Result<(), StoreError>;
    /// Takes the lease if free, expired or ours; with `takeover`, in any case.
    /// A task's lease needs the iteration to exist; it leaves the header alone.
    async fn acquire(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        now_ms: i64,
        expires_ms: i64,
        takeover: bool,
    ) -> Result<Lease, StoreError>;
    /// Extends our lease; `Conflict` if it is no longer ours.
    async fn renew(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        expires_ms: i64,
    ) -> Result<(), StoreError>;
    /// Fixes shards' ends, each while its holder holds the lease and only if
    /// it is not fixed yet; `Conflict` otherwise. Several go in one write
    /// where the store allows (DynamoDB: up to 100 items per transaction),
    /// so that ends that arrive together cost a few round trips, not one
    /// each. Across such writes it is not atomic: a `Conflict` may leave
    /// earlier ones fixed, as fixing them one by one would.
    async fn fix_shards(
        &self,
        key: &LogicalKey,
        n: u64,
        fixes: &[ShardFix],
    ) -> Result<(), StoreError>;
    /// Releases our lease. For the whole iteration it also sets the state
    /// (`Open` releases it without an outcome); a task's lease is only
    /// released: an iteration's outcome is decided for the whole of it.
    async fn finish(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        state: IterationState,
        now_ms: i64,
    ) -> Result<(), StoreError>;
}
