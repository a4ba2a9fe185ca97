//! The short-lived caches of the review surface's light reads, each bounded and each with its
//! staleness stated:
//!
//! - [`TokenCache`]: the principal a bearer token was verified as (its row found live and
//!   vouched for by its audit entries), keyed by the SHA-256 of the secret, believed for
//!   `server.token_cache_seconds` without asking the database again. A revocation made through
//!   this [`super::App`] ends the entry at once; one made by another process or replica (or an
//!   edit of the `tokens` table by hand) is seen when the entry expires, at most that many
//!   seconds later. 0 turns it off: every request checks its token.
//! - [`Listings`]: pages of the queue and its counts per status, kept while the audit log's
//!   head ([`ListingMark`]) stays where it was. Every write that changes a proposal or its
//!   reviews (a run's proposals, a review, an expiry or a supersession) appends its audit entry
//!   in the same transaction, whichever process or replica makes it, so a page is answered from
//!   the cache only while the head read from the database for this very request is the one it
//!   was computed at: a change made anywhere shows in the next listing, never later.
//!
//! Both are behind a plain mutex held for a lookup or an insert only, never across an await.

use super::access::{AuthSource, Principal};
use super::queue::ProposalPage;
use super::{AppError, AppResult};
use crate::domain::ProposalStatus;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Tokens remembered at most; expired ones are dropped first, then all of them.
const MAX_TOKENS: usize = 1024;
/// Pages of the queue remembered at most (each up to [`super::queue::MAX_PAGE`] summaries).
const MAX_PAGES: usize = 64;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while it was held leaves a whole value behind: keep using it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Verified bearer tokens, for a bounded time. See the module's documentation.
pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl TokenCache {
    /// Believes a verified token for `ttl` (zero: never).
    pub fn new(ttl: Duration) -> TokenCache {
        TokenCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long a verified token is believed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The principal the token whose secret hashes to `hash` was verified as, if that was less
    /// than the time to live ago.
    pub fn get(&self, hash: &str) -> Option<Principal> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = lock(&self.entries);
        match entries.get(hash) {
            Some((principal, until)) if Instant::now() < *until => Some(principal.clone()),
            Some(_) => {
                entries.remove(hash);
                None
            }
            None => None,
        }
    }

    /// Remembers a principal just verified from its token (`hash`: its secret's SHA-256).
    pub fn put(&self, hash: &str, principal: &Principal) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_TOKENS {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= MAX_TOKENS {
                entries.clear();
            }
        }
        entries.insert(hash.to_string(), (principal.clone(), now + self.ttl));
    }

    /// Forgets the token with this id (revoked through this process): its next use is checked.
    pub fn forget(&self, token_id: &str) {
        lock(&self.entries)
            .retain(|_, (p, _)| !matches!(&p.via, AuthSource::Token(id) if id == token_id));
    }
}

/// Where the stored queue stands for a cached listing: the audit log's head (its last
/// sequence number, 0 for an empty log), read from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingMark(pub i64);

/// What a page of the queue is asked by, once validated: its filters, size, cursor and order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub status: Option<&'static str>,
    pub moment: Option<&'static str>,
    pub segment: Option<String>,
    pub run: Option<String>,
    pub text: Option<String>,
    pub limit: usize,
    pub cursor: Option<String>,
    pub order: &'static str,
}

/// Pages of the queue and its counts, all computed at one [`ListingMark`], and the reads of
/// the mark itself, shared by the requests that wait for one at the same time.
#[derive(Default)]
pub struct Listings {
    state: Mutex<ListingState>,
    marks: MarkReads,
}

/// Reads of the [`ListingMark`] shared between concurrent requests: a request is answered by
/// the first read that *starts* after it asked (so it sees every write committed before it
/// came), and one read answers every request that came while the previous one was in flight.
/// Under load the database sees one cheap read at a time instead of one per request.
struct MarkReads {
    state: Arc<Mutex<MarkState>>,
    /// The last read finished: its number and what it found.
    done: tokio::sync::watch::Sender<(u64, AppResult<ListingMark>)>,
}

#[derive(Default)]
struct MarkState {
    /// Reads started so far (the number of the latest).
    started: u64,
    in_flight: bool,
}

impl Default for MarkReads {
    fn default() -> Self {
        MarkReads {
            state: Arc::default(),
            done: tokio::sync::watch::Sender::new((0, Ok(ListingMark(0)))),
        }
    }
}

impl MarkReads {
    /// The mark as found by a read started after this call; `read` makes one, run as a task
    /// of its own so that it finishes and answers the others even if this request goes away.
    async fn read<F, Fut>(&self, read: F) -> AppResult<ListingMark>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = AppResult<ListingMark>> + Send + 'static,
    {
        let mut done = self.done.subscribe();
        let target = {
            let state = lock(&self.state);
            state.started + 1
        };
        let mut read = Some(read);
        loop {
            {
                let last = done.borrow_and_update();
                if last.0 >= target {
                    return last.1.clone();
                }
            }
            // No read in flight (the one in flight when this request came has finished):
            // start the next one, unless another waiting request already did.
            let lead = {
                let mut state = lock(&self.state);
                let lead = !state.in_flight && state.started < target;
                if lead {
                    state.started = target;
                    state.in_flight = true;
                }
                lead
            };
            if let Some(read) = read.take_if(|_| lead) {
                let future = read();
                let (state, published) = (self.state.clone(), self.done.clone());
                tokio::spawn(async move {
                    let found = future.await;
                    // Cleared before it is published: a request that wants a newer read than
                    // this one finds none in flight and starts it.
                    lock(&state).in_flight = false;
                    let _previous = published.send_replace((target, found));
                });
            }
            if done.changed().await.is_err() {
                return Err(AppError::runtime("the queue's mark is no longer read"));
            }
        }
    }
}

#[derive(Default)]
struct ListingState {
    mark: Option<ListingMark>,
    pages: HashMap<PageKey, ProposalPage>,
    counts: Option<Vec<(ProposalStatus, u64)>>,
}

impl ListingState {
    /// The state at `mark`: everything computed at another mark is dropped.
    fn at(&mut self, mark: ListingMark) -> &mut ListingState {
        if self.mark != Some(mark) {
            *self = ListingState {
                mark: Some(mark),
                ..ListingState::default()
            };
        }
        self
    }
}

impl Listings {
    /// The mark as found by a read that starts after this call (`read` makes one), shared with
    /// the requests that ask at the same time (see [`MarkReads`]).
    pub async fn mark<F, Fut>(&self, read: F) -> AppResult<ListingMark>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = AppResult<ListingMark>> + Send + 'static,
    {
        self.marks.read(read).await
    }

    /// The page asked by `key`, if one was computed at `mark` (read for this request).
    pub fn page(&self, mark: ListingMark, key: &PageKey) -> Option<ProposalPage> {
        let state = lock(&self.state);
        if state.mark != Some(mark) {
            return None;
        }
        state.pages.get(key).cloned()
    }

    /// Keeps a page computed after `mark` was read.
    pub fn put_page(&self, mark: ListingMark, key: PageKey, page: &ProposalPage) {
        let mut state = lock(&self.state);
        let state = state.at(mark);
        if state.pages.len() >= MAX_PAGES {
            state.pages.clear();
        }
        state.pages.insert(key, page.clone());
    }

    /// The counts per status, if computed at `mark`.
    pub fn counts(&self, mark: ListingMark) -> Option<Vec<(ProposalStatus, u64)>> {
        let state = lock(&self.state);
        if state.mark != Some(mark) {
            return None;
        }
        state.counts.clone()
    }

    /// Keeps the counts read after `mark` was read.
    pub fn put_counts(&self, mark: ListingMark, counts: &[(ProposalStatus, u64)]) {
        lock(&self.state).at(mark).counts = Some(counts.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Identity, Role};

    fn principal(token: &str) -> Principal {
        Principal {
            user: Identity::parse("ada").unwrap(),
            role: Role::Reviewer,
            via: AuthSource::Token(token.into()),
            kind: crate::domain::TokenKind::Person,
        }
    }

    #[test]
    fn a_token_is_believed_for_its_time_to_live_and_forgotten_when_revoked_here() {
        let cache = TokenCache::new(Duration::from_secs(60));
        assert_eq!(cache.get("h1"), None);
        cache.put("h1", &principal("t1"));
        cache.put("h2", &principal("t2"));
        assert_eq!(cache.get("h1"), Some(principal("t1")));
        cache.forget("t1");
        assert_eq!(cache.get("h1"), None);
        assert_eq!(cache.get("h2"), Some(principal("t2")));

        let short = TokenCache::new(Duration::from_millis(20));
        short.put("h1", &principal("t1"));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(short.get("h1"), None);

        let off = TokenCache::new(Duration::ZERO);
        off.put("h1", &principal("t1"));
        assert_eq!(off.get("h1"), None);
    }

    #[test]
    fn the_token_cache_stays_bounded() {
        let cache = TokenCache::new(Duration::from_secs(60));
        for i in 0..MAX_TOKENS + 10 {
            cache.put(&format!("h{i}"), &principal(&format!("t{i}")));
        }
        assert!(lock(&cache.entries).len() <= MAX_TOKENS);
        assert!(cache.get(&format!("h{}", MAX_TOKENS + 9)).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mark_is_read_after_the_request_came_and_shared_by_those_waiting_together() {
        use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
        let listings = Arc::new(Listings::default());
        let head = Arc::new(AtomicI64::new(5));
        let reads = Arc::new(AtomicU64::new(0));
        let read = |delay: u64| {
            let (head, reads) = (head.clone(), reads.clone());
            move || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok(ListingMark(head.load(Ordering::SeqCst)))
            }
        };
        // One at a time: each sees what was written before it asked.
        assert_eq!(listings.mark(read(0)).await, Ok(ListingMark(5)));
        head.store(6, Ordering::SeqCst);
        assert_eq!(listings.mark(read(0)).await, Ok(ListingMark(6)));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Twenty at once: the first read, then one more for all who came while it ran.
        let first = {
            let (listings, read) = (listings.clone(), read(100));
            tokio::spawn(async move { listings.mark(read).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        head.store(7, Ordering::SeqCst);
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let (listings, read) = (listings.clone(), read(100));
                tokio::spawn(async move { listings.mark(read).await })
            })
            .collect();
        assert!(matches!(first.await, Ok(Ok(ListingMark(6 | 7)))));
        for one in waiting {
            assert_eq!(one.await.ok(), Some(Ok(ListingMark(7))));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 4);
        // A failed read is every waiter's error, and the next request reads again.
        let failed = listings
            .mark(|| async { Err(AppError::runtime("the database is gone")) })
            .await;
        assert_eq!(
            failed.map_err(|e| e.message),
            Err("the database is gone".into())
        );
        assert_eq!(listings.mark(read(0)).await, Ok(ListingMark(7)));
    }

    #[test]
    fn a_listing_is_answered_only_at_the_mark_it_was_computed_at() {
        let listings = Listings::default();
        let key = PageKey {
            status: None,
            moment: None,
            segment: None,
            run: None,
            text: None,
            limit: 50,
            cursor: None,
            order: "value",
        };
        let page = ProposalPage {
            items: Vec::new(),
            next_cursor: Some("c".into()),
        };
        listings.put_page(ListingMark(7), key.clone(), &page);
        listings.put_counts(ListingMark(7), &[(ProposalStatus::Approved, 3)]);
        let hit = listings.page(ListingMark(7), &key).expect("a hit");
        assert_eq!(hit.next_cursor.as_deref(), Some("c"));
        assert_eq!(
            listings.counts(ListingMark(7)),
            Some(vec![(ProposalStatus::Approved, 3)])
        );
        assert!(listings.page(ListingMark(8), &key).is_none());
        // Something computed at another mark replaces what was kept.
        listings.put_counts(ListingMark(8), &[]);
        assert!(listings.page(ListingMark(7), &key).is_none());
        assert_eq!(listings.counts(ListingMark(8)), Some(Vec::new()));
    }
}
