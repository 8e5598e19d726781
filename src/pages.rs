//! How many pages the reader holds at once: its memory bound.
//!
//! Every shard has one page slot of its own, so it can always fetch its next
//! page once the merge has written its last one. (The merge waits for every
//! shard's next record, so a shard without a page must never wait for the
//! pages of others: that would be a deadlock.) A second page per shard,
//! fetched while the first is being written so that fetching and output
//! overlap, takes a slot from a small budget shared by all shards. So memory
//! is one page per shard plus [`SHARED_PAGES`], not two pages per shard.
//!
//! A slot is taken before the GetRecords call and given back by the merge
//! when the page is written, so a stalled consumer stops the reading.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The most pages one shard holds, counting the one being fetched.
pub const PAGES_PER_SHARD: usize = 2;
/// Second pages, shared by all the shards of a run. Three pages of at most
/// 10 MiB each keep the reader within 64 MiB beyond one page per shard.
pub const SHARED_PAGES: usize = 3;

/// `--max-memory`'s default.
pub const DEFAULT_MAX_MEMORY: usize = 512 * 1024 * 1024;
/// What a run takes besides its pages (the program, the output buffer,
/// connections, the merge's state), measured in BENCHMARKS.md.
pub const FIXED_MEMORY: usize = 48 * 1024 * 1024;
/// The smallest page worth a GetRecords call.
pub const MIN_PAGE_BYTES: usize = 64 * 1024;

/// The bytes a page may hold when `shards` are read at once within
/// `max_memory`: one page per shard and the shared pages, each the same
/// share, at most the service's 10 MiB. `Err` with the smallest budget that
/// would do, when the share would be under [`MIN_PAGE_BYTES`].
pub fn page_bytes(max_memory: usize, shards: usize) -> Result<usize, usize> {
    let pages = shards + SHARED_PAGES;
    let share = max_memory.saturating_sub(FIXED_MEMORY) / pages;
    if share < MIN_PAGE_BYTES {
        return Err(FIXED_MEMORY + pages * MIN_PAGE_BYTES);
    }
    Ok(share.min(crate::shard::MAX_PAGE_BYTES))
}

/// The shared budget of a run.
#[derive(Clone)]
pub struct Budget(Arc<Semaphore>);

impl Default for Budget {
    fn default() -> Self {
        Budget(Arc::new(Semaphore::new(SHARED_PAGES)))
    }
}

impl Budget {
    /// The slots of one more shard.
    pub fn shard(&self) -> Arc<ShardPages> {
        Arc::new(ShardPages {
            own: Semaphore::new(1),
            shared: self.0.clone(),
            holds_shared: AtomicBool::new(false),
            sent: Mutex::new(VecDeque::new()),
        })
    }
}

/// One shard's page slots.
pub struct ShardPages {
    own: Semaphore,
    shared: Arc<Semaphore>,
    /// At most one shared slot per shard (so at most two pages per shard).
    holds_shared: AtomicBool,
    /// For each page sent to the merge and not yet written: was its slot shared?
    sent: Mutex<VecDeque<bool>>,
}

impl ShardPages {
    /// A shard with a budget of its own (tests, and a shard read alone).
    pub fn alone() -> Arc<ShardPages> {
        Budget(Arc::new(Semaphore::new(PAGES_PER_SHARD - 1))).shard()
    }

    /// Waits for a slot for the next page: the shard's own when free, else a
    /// shared one when the shard holds none.
    pub async fn acquire(&self) -> Slot<'_> {
        let slot = |permit, shared| Slot {
            pages: self,
            permit: Some(permit),
            shared,
        };
        if let Ok(p) = self.own.try_acquire() {
            return slot(p, false);
        }
        if !self.holds_shared.load(Ordering::Acquire) {
            if let Ok(p) = self.shared.try_acquire() {
                self.holds_shared.store(true, Ordering::Release);
                return slot(p, true);
            }
            // Neither is free: whichever comes first (the semaphores are
            // never closed).
            tokio::select! {
                biased;
                p = self.own.acquire() => return slot(p.expect("open"), false),
                p = self.shared.acquire() => {
                    self.holds_shared.store(true, Ordering::Release);
                    return slot(p.expect("open"), true);
                }
            }
        }
        slot(self.own.acquire().await.expect("open"), false)
    }

    /// The merge wrote (or dropped) the oldest page sent: its slot is free.
    /// Pages sent without a slot (tests) free nothing.
    pub fn release(&self) {
        match self.sent.lock().unwrap().pop_front() {
            Some(true) => {
                self.holds_shared.store(false, Ordering::Release);
                self.shared.add_permits(1);
            }
            Some(false) => self.own.add_permits(1),
            None => {}
        }
    }
}

/// A slot held for a page being fetched. Dropped, it is free again; sent,
/// the merge frees it when the page is written.
pub struct Slot<'a> {
    pages: &'a ShardPages,
    permit: Option<SemaphorePermit<'a>>,
    shared: bool,
}

impl Slot<'_> {
    /// The page went to the merge, which will call [`ShardPages::release`].
    pub fn sent(mut self) {
        self.pages.sent.lock().unwrap().push_back(self.shared);
        if let Some(p) = self.permit.take() {
            p.forget();
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.permit.take().is_some() && self.shared {
            // The permit itself goes back to the semaphore as it drops.
            self.pages.holds_shared.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    async fn blocked(p: &ShardPages) -> bool {
        timeout(Duration::from_millis(50), p.acquire())
            .await
            .is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn one_page_per_shard_plus_a_shared_few() {
        let budget = Budget::default();
        let shards: Vec<_> = (0..5).map(|_| budget.shard()).collect();
        // Every shard gets its first page, however many shards prefetch.
        let mut held = Vec::new();
        for s in &shards {
            held.push(s.acquire().await);
        }
        // Second pages: SHARED_PAGES of them, then everyone waits.
        for s in &shards[..SHARED_PAGES] {
            held.push(s.acquire().await);
        }
        for s in &shards {
            assert!(blocked(s).await);
        }
        // At most two per shard even with shared slots free.
        held.pop().unwrap().sent();
        shards[SHARED_PAGES - 1].release();
        assert!(blocked(&shards[0]).await, "a third page for one shard");
        // The freed shared slot goes to a shard that has none.
        held.push(shards[4].acquire().await);
        for p in held.drain(..) {
            p.sent();
        }
        // The merge writes shard 0's pages in order: own first, then shared.
        shards[0].release();
        let own = shards[0].acquire().await;
        assert!(!own.shared);
        assert!(blocked(&shards[0]).await);
        shards[0].release();
        assert!(shards[0].acquire().await.shared);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_dropped_unsent_is_free_again() {
        let s = ShardPages::alone();
        let a = s.acquire().await;
        let b = s.acquire().await;
        assert!(b.shared && blocked(&s).await);
        drop(b);
        let c = s.acquire().await;
        assert!(c.shared);
        drop((a, c));
        assert!(!s.acquire().await.shared);
    }

    #[test]
    fn the_memory_budget_is_shared_out_over_the_pages_a_group_may_hold() {
        use super::*;
        let mib = 1 << 20;
        assert_eq!(page_bytes(512 * mib, 1), Ok(crate::shard::MAX_PAGE_BYTES));
        assert_eq!(page_bytes(512 * mib, 64), Ok((512 - 48) * mib / 67));
        let at_1000 = page_bytes(512 * mib, 1_000).unwrap();
        assert!((400 * 1024..500 * 1024).contains(&at_1000), "{at_1000}");
        assert!(1_003 * at_1000 + FIXED_MEMORY <= 512 * mib);
        assert_eq!(
            page_bytes(512 * mib, 10_000),
            Err(FIXED_MEMORY + 10_003 * MIN_PAGE_BYTES)
        );
    }
}
