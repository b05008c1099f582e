//! A bounded TXT cache in front of any [`TxtResolver`].
//!
//! Policy (`04-identity-dns.md` §4.6 note):
//!
//! * answers are kept for their TTL, clamped to [`CacheConfig::min_ttl`] ..
//!   [`CacheConfig::max_ttl`] — the floor stops a zero-TTL record from sending every
//!   artifact to DNS, the ceiling bounds how long a rotated key stays trusted;
//! * "not found" (NXDOMAIN, NODATA) is kept for [`CacheConfig::negative_ttl`], 30 s by
//!   default: long enough to absorb a burst of artifacts naming a missing key, short
//!   enough that a key published after a failed delivery is seen by the sender's retry;
//! * temporary failures and invalid names are never kept, so a retry really retries;
//! * at most [`CacheConfig::capacity`] names are kept; when full, expired entries go
//!   first, then the least recently used one;
//! * concurrent lookups of a name that is not cached share one query: the first caller
//!   asks the inner resolver, the others wait for its result. If that caller is
//!   cancelled, a waiting one takes over.
//!
//! The state sits behind a `std::sync::Mutex` that is never held across an `.await`.
//!
//! How each lookup was answered is counted in [`CacheStats`] and reported, as a
//! [`DnsCacheEvent`], to an optional observer ([`CachingResolver::with_observer`]):
//! the server passes `metrics::dns_cache` there, so that this module needs to know
//! nothing of metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{BoxFuture, DnsError, TxtAnswer, TxtResolver};

/// Tuning of a [`CachingResolver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Shortest time an answer is kept, whatever its TTL.
    pub min_ttl: Duration,
    /// Longest time an answer is kept, whatever its TTL.
    pub max_ttl: Duration,
    /// How long "not found" is kept.
    pub negative_ttl: Duration,
    /// Most names kept at once.
    pub capacity: usize,
}

impl Default for CacheConfig {
    /// 5 s ≤ TTL ≤ 1 h, 30 s for "not found", 4096 names. A key record is about
    /// 0.5 KB, so a full cache stays within a few megabytes.
    fn default() -> Self {
        CacheConfig {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(30),
            capacity: 4096,
        }
    }
}

/// Counters of a [`CachingResolver`] since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache with records.
    pub hits: u64,
    /// Lookups answered from the cache with "not found".
    pub negative_hits: u64,
    /// Lookups that went to the inner resolver.
    pub misses: u64,
    /// Lookups that waited for another caller's query of the same name.
    pub coalesced: u64,
    /// Names currently held (including expired ones not yet evicted).
    pub entries: usize,
    /// Names being queried right now.
    pub in_flight: usize,
}

/// How the cache answered one lookup: what a [`CachingResolver`] tells its observer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsCacheEvent {
    /// Answered from the cache with records.
    Hit,
    /// Answered from the cache with "not found".
    NegativeHit,
    /// Sent to the name servers.
    Miss,
    /// Answered by another caller's query of the same name, in flight at the time.
    Coalesced,
}

/// Told of every lookup a [`CachingResolver`] answers.
type Observer = Arc<dyn Fn(DnsCacheEvent) + Send + Sync>;

/// Wraps a [`TxtResolver`] with a bounded, TTL-respecting cache (see the module
/// documentation for the policy).
pub struct CachingResolver<R> {
    inner: R,
    config: CacheConfig,
    observer: Option<Observer>,
    state: Mutex<State>,
    hits: AtomicU64,
    negative_hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
}

type Outcome = Result<TxtAnswer, DnsError>;

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    in_flight: HashMap<String, Query>,
    /// A logical clock for least-recently-used eviction.
    tick: u64,
}

/// A query of the inner resolver that callers are waiting for.
#[derive(Default)]
struct Query {
    cell: Arc<OnceCell<Outcome>>,
    /// Callers holding an `InFlight` guard for it.
    waiters: usize,
}

struct Entry {
    /// `Ok` answer or `Err(NotFound)`; nothing else is stored.
    outcome: Outcome,
    expires: Instant,
    last_used: u64,
}

impl<R: TxtResolver> CachingResolver<R> {
    /// Wraps `inner`. Lookups are counted in [`CachingResolver::stats`] and reported
    /// to no one until an observer is set.
    pub fn new(inner: R, config: CacheConfig) -> Self {
        CachingResolver {
            inner,
            config,
            observer: None,
            state: Mutex::new(State::default()),
            hits: AtomicU64::new(0),
            negative_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        }
    }

    /// Reports every lookup's [`DnsCacheEvent`] to `observer` (the server passes
    /// `btps::metrics::dns_cache`); replaces any earlier observer. The observer runs
    /// on the caller's task, possibly with the cache's lock held: it must not look a
    /// name up through this resolver, and should cost no more than a counter increment.
    pub fn with_observer(
        mut self,
        observer: impl Fn(DnsCacheEvent) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        let state = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            negative_hits: self.negative_hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            entries: state.entries.len(),
            in_flight: state.in_flight.len(),
        }
    }

    /// Forgets one name (e.g. after an operator says a key was rotated).
    pub fn invalidate(&self, name: &str) {
        self.lock().entries.remove(&cache_key(name));
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// The wrapped resolver.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn observe(&self, event: DnsCacheEvent) {
        if let Some(observer) = &self.observer {
            observer(event);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a cache: after a panic elsewhere its content is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn lookup(&self, name: &str) -> Outcome {
        let key = cache_key(name);
        let cell = {
            let mut state = self.lock();
            state.tick += 1;
            let tick = state.tick;
            let now = Instant::now();
            if let Some(entry) = state.entries.get_mut(&key) {
                if entry.expires > now {
                    entry.last_used = tick;
                    let remaining = entry.expires - now;
                    return match &entry.outcome {
                        Ok(answer) => {
                            self.hits.fetch_add(1, Ordering::Relaxed);
                            self.observe(DnsCacheEvent::Hit);
                            Ok(TxtAnswer {
                                records: answer.records.clone(),
                                ttl: remaining,
                            })
                        }
                        Err(_) => {
                            self.negative_hits.fetch_add(1, Ordering::Relaxed);
                            self.observe(DnsCacheEvent::NegativeHit);
                            Err(DnsError::NotFound {
                                name: name.to_owned(),
                            })
                        }
                    };
                }
                state.entries.remove(&key);
            }
            let query = state.in_flight.entry(key.clone()).or_default();
            query.waiters += 1;
            Arc::clone(&query.cell)
        };

        // Cleans up after a cancelled caller (see `InFlight`).
        let _in_flight = InFlight {
            state: &self.state,
            key: &key,
            cell: &cell,
        };
        let mut queried = false;
        let outcome = cell
            .get_or_init(|| {
                queried = true;
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.observe(DnsCacheEvent::Miss);
                self.inner.lookup_txt(name)
            })
            .await
            .clone();
        if !queried {
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            self.observe(DnsCacheEvent::Coalesced);
            // The shared outcome names the name as the first caller spelled it.
            return rename(outcome, name);
        }

        // The query is over: forget it and cache its outcome under one lock, so that a
        // new caller finds one or the other. The lock is released before the guard's
        // drop takes it again.
        let mut state = self.lock();
        if state
            .in_flight
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(&current.cell, &cell))
        {
            state.in_flight.remove(&key);
        }
        let lifetime = match &outcome {
            Ok(answer) => Some(answer.ttl.clamp(self.config.min_ttl, self.config.max_ttl)),
            Err(DnsError::NotFound { .. }) => Some(self.config.negative_ttl),
            Err(_) => None,
        };
        if let Some(lifetime) = lifetime.filter(|lifetime| !lifetime.is_zero()) {
            self.insert(&mut state, key.clone(), outcome.clone(), lifetime);
        }
        drop(state);
        outcome
    }

    fn insert(&self, state: &mut State, key: String, outcome: Outcome, lifetime: Duration) {
        if self.config.capacity == 0 {
            return;
        }
        if state.entries.len() >= self.config.capacity && !state.entries.contains_key(&key) {
            let now = Instant::now();
            state.entries.retain(|_, entry| entry.expires > now);
            if state.entries.len() >= self.config.capacity {
                let oldest = state
                    .entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.last_used)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    state.entries.remove(&oldest);
                }
            }
        }
        let last_used = state.tick;
        state.entries.insert(
            key,
            Entry {
                outcome,
                expires: Instant::now() + lifetime,
                last_used,
            },
        );
    }
}

/// Held by every caller waiting on an in-flight query. Without it, a caller cancelled
/// mid-query (a sender hanging up) would leave its entry in `in_flight` forever, and a
/// stream of unique names could grow the map without bound. The last waiter of an
/// unfinished query removes it; a finished one has already been removed by the caller
/// that ran it, under the same lock that cached the outcome.
struct InFlight<'a> {
    state: &'a Mutex<State>,
    key: &'a str,
    cell: &'a Arc<OnceCell<Outcome>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(query) = state.in_flight.get_mut(self.key) else {
            return;
        };
        // A newer query of the same name is not ours to count.
        if !Arc::ptr_eq(&query.cell, self.cell) {
            return;
        }
        query.waiters = query.waiters.saturating_sub(1);
        if query.waiters == 0 {
            state.in_flight.remove(self.key);
        }
    }
}

impl<R: TxtResolver> TxtResolver for CachingResolver<R> {
    fn lookup_txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<TxtAnswer, DnsError>> {
        Box::pin(self.lookup(name))
    }
}

/// DNS names compare case-insensitively and `a.b.` is `a.b`.
fn cache_key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn rename(outcome: Outcome, name: &str) -> Outcome {
    outcome.map_err(|error| match error {
        DnsError::NotFound { .. } => DnsError::NotFound {
            name: name.to_owned(),
        },
        DnsError::Temporary { reason, .. } => DnsError::Temporary {
            name: name.to_owned(),
            reason,
        },
        DnsError::InvalidName { reason, .. } => DnsError::InvalidName {
            name: name.to_owned(),
            reason,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A resolver whose answers are computed from the name, counting queries and
    /// pausing so that concurrent callers overlap. (The end-to-end behaviour against
    /// a real DNS server is tested in `tests/dns.rs`; this one isolates the policy.)
    struct Scripted {
        queries: AtomicUsize,
        delay: Duration,
    }

    impl TxtResolver for Scripted {
        fn lookup_txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                self.queries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                let name = name.to_owned();
                if name.starts_with("missing") {
                    Err(DnsError::NotFound { name })
                } else if name.starts_with("broken") {
                    Err(DnsError::Temporary {
                        name,
                        reason: "test".into(),
                    })
                } else {
                    let ttl = Duration::from_secs(if name.starts_with("zero") { 0 } else { 60 });
                    Ok(TxtAnswer {
                        records: vec![vec![name.into_bytes()]],
                        ttl,
                    })
                }
            })
        }
    }

    fn cache(capacity: usize) -> CachingResolver<Scripted> {
        CachingResolver::new(
            Scripted {
                queries: AtomicUsize::new(0),
                delay: Duration::from_millis(10),
            },
            CacheConfig {
                capacity,
                ..CacheConfig::default()
            },
        )
    }

    fn queries(cache: &CachingResolver<Scripted>) -> usize {
        cache.inner().queries.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_share_one_query() {
        let cache = cache(16);
        let results = futures_join_all((0..8).map(|i| {
            cache.lookup_txt(if i % 2 == 0 {
                "a.example"
            } else {
                "A.example."
            })
        }))
        .await;
        assert_eq!(queries(&cache), 1);
        assert!(results.iter().all(Result::is_ok));
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.coalesced, stats.hits), (1, 7, 0));
        cache.lookup_txt("a.example").await.unwrap();
        assert_eq!(cache.stats().hits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_hears_every_answer() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let heard = Arc::clone(&events);
        let cache = cache(16).with_observer(move |event| {
            heard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event);
        });
        futures_join_all((0..2).map(|_| cache.lookup_txt("a.example"))).await;
        cache.lookup_txt("a.example").await.unwrap();
        cache.lookup_txt("missing.example").await.unwrap_err();
        cache.lookup_txt("missing.example").await.unwrap_err();
        let events = events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(
            events,
            [
                DnsCacheEvent::Miss,
                DnsCacheEvent::Coalesced,
                DnsCacheEvent::Hit,
                DnsCacheEvent::Miss,
                DnsCacheEvent::NegativeHit,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn temporary_failures_are_shared_but_not_kept() {
        let cache = cache(16);
        let results = futures_join_all((0..3).map(|_| cache.lookup_txt("broken.example"))).await;
        assert_eq!(queries(&cache), 1);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(DnsError::Temporary { .. })))
        );
        let _ = cache.lookup_txt("broken.example").await;
        assert_eq!(queries(&cache), 2);
        assert_eq!(cache.stats().entries, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_is_clamped_and_negative_answers_expire() {
        let cache = cache(16);
        cache.lookup_txt("zero.example").await.unwrap();
        cache.lookup_txt("missing.example").await.unwrap_err();
        tokio::time::advance(Duration::from_secs(4)).await;
        // TTL 0 raised to the 5 s floor, counted from the answer's arrival (10 ms in);
        // "not found" kept for 30 s.
        assert_eq!(
            cache.lookup_txt("zero.example").await.unwrap().ttl,
            Duration::from_millis(990)
        );
        assert!(cache.lookup_txt("missing.example").await.is_err());
        assert_eq!(queries(&cache), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.lookup_txt("zero.example").await.unwrap();
        assert_eq!(queries(&cache), 3);
        tokio::time::advance(Duration::from_secs(30)).await;
        cache.lookup_txt("missing.example").await.unwrap_err();
        assert_eq!(queries(&cache), 4);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.negative_hits, stats.misses), (1, 1, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_evicts_least_recently_used() {
        let cache = cache(2);
        cache.lookup_txt("a").await.unwrap();
        cache.lookup_txt("b").await.unwrap();
        cache.lookup_txt("a").await.unwrap(); // b is now the least recently used
        cache.lookup_txt("c").await.unwrap();
        assert_eq!(cache.stats().entries, 2);
        assert_eq!(queries(&cache), 3);
        cache.lookup_txt("a").await.unwrap();
        assert_eq!(queries(&cache), 3);
        cache.lookup_txt("b").await.unwrap();
        assert_eq!(queries(&cache), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_leader_hands_over() {
        let cache = cache(4);
        let leader = cache.lookup_txt("a.example");
        // Poll the leader once so that it owns the query, then drop it.
        let mut leader = Box::pin(leader);
        assert!(futures_poll_once(leader.as_mut()).await.is_none());
        assert_eq!(cache.stats().in_flight, 1);
        drop(leader);
        assert_eq!(cache.stats().in_flight, 0);
        cache.lookup_txt("a.example").await.unwrap();
        assert_eq!(cache.stats().entries, 1);
    }

    /// Polls all futures concurrently on the current task until all are done (a
    /// minimal `join_all`, to avoid a dependency for tests).
    async fn futures_join_all<F: std::future::Future>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output> {
        let mut pending: Vec<_> = futures.map(|future| Some(Box::pin(future))).collect();
        let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
        std::future::poll_fn(|context| {
            let mut done = true;
            for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
                if let Some(future) = slot {
                    match future.as_mut().poll(context) {
                        std::task::Poll::Ready(output) => {
                            *result = Some(output);
                            *slot = None;
                        }
                        std::task::Poll::Pending => done = false,
                    }
                }
            }
            if done {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        results.into_iter().flatten().collect()
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|context| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(context) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
