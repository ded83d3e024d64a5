//! A cache of expiring credentials with one fetch per key.
//!
//! Each key has its own async lock: the first caller that finds no fresh
//! value fetches one while later callers for the same key wait, then find
//! the fresh value. Values are renewed `refresh_margin` before they expire,
//! a failed fetch is remembered for `failure_ttl` so a misconfigured key
//! does not hammer the credential service, and idle keys are dropped once
//! `max_entries` is reached.
//!
//! Metrics: `attache_credential_cache_total{provider,result}`.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::metrics::CREDENTIAL_CACHE;

/// A value with an optional expiry time.
pub trait Expiring {
    fn expires_at(&self) -> Option<SystemTime>;
}

#[cfg(feature = "aws")]
impl Expiring for aws_credential_types::Credentials {
    fn expires_at(&self) -> Option<SystemTime> {
        self.expiry()
    }
}

enum Slot<V, E> {
    Empty,
    Ready(V),
    Failed { error: E, until: SystemTime },
}

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// One key's slot, locked while its value is fetched.
type SharedSlot<V, E> = Arc<tokio::sync::Mutex<Slot<V, E>>>;

/// The cache; see the module documentation.
pub struct CredentialCache<K, V, E> {
    provider: &'static str,
    refresh_margin: Duration,
    failure_ttl: Duration,
    max_entries: usize,
    slots: Mutex<HashMap<K, SharedSlot<V, E>>>,
    clock: Clock,
}

impl<K: Hash + Eq + Clone, V: Expiring + Clone, E: Clone> CredentialCache<K, V, E> {
    /// Creates an empty cache; `provider` labels its metrics.
    pub fn new(
        provider: &'static str,
        refresh_margin: Duration,
        failure_ttl: Duration,
        max_entries: usize,
    ) -> Self {
        Self {
            provider,
            refresh_margin,
            failure_ttl,
            max_entries,
            slots: Mutex::default(),
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Replaces the clock, for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Returns the value of `key`, fetching it with `fetch` when it is
    /// missing, within the refresh margin of its expiry, or failed longer
    /// than the failure TTL ago.
    pub async fn get<F, Fut>(&self, key: K, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = self.slot(key);
        let mut slot = slot.lock().await;
        let now = (self.clock)();
        match &*slot {
            Slot::Ready(value) if self.fresh(value, now) => {
                CREDENTIAL_CACHE
                    .with_label_values(&[self.provider, "hit"])
                    .inc();
                return Ok(value.clone());
            }
            Slot::Failed { error, until } if *until > now => {
                CREDENTIAL_CACHE
                    .with_label_values(&[self.provider, "hit"])
                    .inc();
                return Err(error.clone());
            }
            _ => CREDENTIAL_CACHE
                .with_label_values(&[self.provider, "miss"])
                .inc(),
        }
        let result = fetch().await;
        *slot = match &result {
            Ok(value) => Slot::Ready(value.clone()),
            Err(error) => Slot::Failed {
                error: error.clone(),
                until: now + self.failure_ttl,
            },
        };
        result
    }

    /// Drops the value of `key`, for example after a service reported it
    /// expired early.
    pub fn forget(&self, key: &K) {
        self.slots
            .lock()
            .expect("the cache lock is never held across a panic")
            .remove(key);
    }

    fn fresh(&self, value: &V, now: SystemTime) -> bool {
        value.expires_at().is_none_or(|expiry| {
            expiry
                .duration_since(now)
                .is_ok_and(|left| left > self.refresh_margin)
        })
    }

    fn slot(&self, key: K) -> SharedSlot<V, E> {
        let mut slots = self
            .slots
            .lock()
            .expect("the cache lock is never held across a panic");
        if slots.len() >= self.max_entries {
            // Drop idle keys; a slot in use is shared and kept.
            slots.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        slots
            .entry(key)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Slot::Empty)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Token(SystemTime);

    impl Expiring for Token {
        fn expires_at(&self) -> Option<SystemTime> {
            Some(self.0)
        }
    }

    /// A cache whose clock starts at a fixed time and moves when a test sets it.
    fn cache(offset: Arc<AtomicU64>) -> CredentialCache<&'static str, Token, String> {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        CredentialCache::new("test", Duration::from_secs(300), Duration::from_secs(10), 2)
            .with_clock(move || start + Duration::from_secs(offset.load(Ordering::SeqCst)))
    }

    fn expiring_in(minutes: u64, offset: &AtomicU64) -> Token {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        Token(start + Duration::from_secs(offset.load(Ordering::SeqCst) + minutes * 60))
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let offset = Arc::new(AtomicU64::new(0));
        let cache = cache(offset.clone());
        let fetches = AtomicUsize::new(0);
        let calls = (0..200).map(|_| {
            cache.get("team", || async {
                fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, String>(expiring_in(60, &offset))
            })
        });
        let results = futures_util::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn value_is_refreshed_once_inside_the_margin() {
        let offset = Arc::new(AtomicU64::new(0));
        let cache = cache(offset.clone());
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(expiring_in(10, &offset))
        };
        cache.get("team", fetch).await.unwrap();
        // Six minutes later, four remain: inside the five-minute margin.
        offset.store(4 * 60, Ordering::SeqCst);
        cache.get("team", fetch).await.unwrap();
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "still fresh after 4 minutes"
        );
        offset.store(6 * 60, Ordering::SeqCst);
        let calls = (0..20).map(|_| cache.get("team", fetch));
        futures_util::future::join_all(calls).await;
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "one refresh for 20 callers"
        );
    }

    #[tokio::test]
    async fn failures_are_remembered_briefly() {
        let offset = Arc::new(AtomicU64::new(0));
        let cache = cache(offset.clone());
        let fetches = AtomicUsize::new(0);
        let failing = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Err::<Token, _>("denied".to_owned())
        };
        assert!(cache.get("team", failing).await.is_err());
        assert!(cache.get("team", failing).await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        offset.store(11, Ordering::SeqCst);
        assert!(cache.get("team", failing).await.is_err());
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "asked again after the TTL"
        );
    }

    #[tokio::test]
    async fn idle_keys_are_dropped_at_the_bound() {
        let offset = Arc::new(AtomicU64::new(0));
        let cache = cache(offset.clone());
        for key in ["a", "b", "c"] {
            cache
                .get(key, || async { Ok::<_, String>(expiring_in(60, &offset)) })
                .await
                .unwrap();
        }
        assert!(cache.slots.lock().unwrap().len() <= 2);
    }
}
