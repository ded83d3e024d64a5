//! The fetch jobs' store calls, batched (see [`attache_store::batch`]).
//!
//! Every fetch job starts with one read, its attachment, and ends with one
//! write, its attempt's outcome. Batched, the attachments of one task also
//! take the task's row lock once instead of queueing on it.

use attache_domain::AttachmentId;
use attache_store::batch::{Batcher, lookup_each, per_input};
use attache_store::fetches::{FetchAttempt, FetchTarget, Recorded};
use attache_store::{Store, StoreError};

/// Loads attachments, as [`Store::fetch_target`] does, in batches.
pub fn loader(store: Store) -> Batcher<AttachmentId, Option<FetchTarget>> {
    Batcher::spawn("fetch_load", move |ids: Vec<AttachmentId>| {
        let store = store.clone();
        async move { lookup_each(&ids, store.fetch_targets(&ids).await) }
    })
}

/// Records attempts, as [`Store::record_fetch`] does, in batches.
pub fn recorder(store: Store) -> Batcher<FetchAttempt, Recorded> {
    Batcher::spawn("fetch_record", move |attempts: Vec<FetchAttempt>| {
        let store = store.clone();
        async move { record(&store, &attempts).await }
    })
}

async fn record(store: &Store, attempts: &[FetchAttempt]) -> Vec<Result<Recorded, StoreError>> {
    match store.record_fetches(attempts).await {
        Err(error) if attempts.len() > 1 && error.is_statement_error() => {
            // A deadlock with another replica or one bad attempt: recorded
            // alone, each attempt succeeds or fails on its own.
            tracing::warn!(%error, attempts = attempts.len(), "recording a batch of fetch outcomes failed; recording them one by one");
            let mut results = Vec::with_capacity(attempts.len());
            for attempt in attempts {
                results.push(store.record_fetch(attempt).await);
            }
            results
        }
        result => per_input(result, attempts.len()),
    }
}
