//! The fetch jobs' store calls, batched (see [`attache_store::batch`]).
//!
//! Every fetch job starts with one read, its attachment, and ends with one
//! write, its attempt's outcome. Batched, the attachments of one task also
//! take the task's row lock once instead of queueing on it.

use attache_domain::AttachmentId;
use attache_store::Store;
use attache_store::batch::{Batcher, each_alone_on_rejection, lookup_each};
use attache_store::fetches::{FetchAttempt, FetchTarget, Recorded};

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
        async move {
            each_alone_on_rejection(
                "fetch_record",
                &attempts,
                store.record_fetches(&attempts),
                |attempt| store.record_fetch(attempt),
            )
            .await
        }
    })
}
