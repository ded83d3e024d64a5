//! The callback jobs' store calls, batched (see [`attache_store::batch`]).
//!
//! Every callback job loads its callback, claims the attempt and records
//! it: three calls, two of them commits.

use std::time::Duration;

use attache_domain::CallbackId;
use attache_store::Store;
use attache_store::batch::{Batcher, each_alone_on_rejection, lookup_each, per_input};
use attache_store::callbacks::{Claim, Delivery, DeliveryAttempt};

/// The batched calls of one callback-worker.
#[derive(Clone)]
pub struct Calls {
    /// Loads callbacks, as [`Store::delivery`] does.
    pub load: Batcher<CallbackId, Option<Delivery>>,
    /// Claims attempts for a lease, as [`Store::claim_delivery`] does.
    pub claim: Batcher<(CallbackId, u32), Claim>,
    /// Records attempts, as [`Store::record_delivery`] does.
    pub record: Batcher<DeliveryAttempt, bool>,
}

impl Calls {
    /// Starts the batchers; claims take `lease`.
    pub fn spawn(store: &Store, lease: Duration) -> Self {
        let loads = store.clone();
        let claims = store.clone();
        let records = store.clone();
        Self {
            load: Batcher::spawn("callback_load", move |ids: Vec<CallbackId>| {
                let store = loads.clone();
                async move { lookup_each(&ids, store.deliveries(&ids).await) }
            }),
            claim: Batcher::spawn("callback_claim", move |attempts: Vec<(CallbackId, u32)>| {
                let store = claims.clone();
                async move {
                    let claimed = store.claim_deliveries(&attempts, lease).await;
                    per_input(claimed, attempts.len())
                }
            }),
            record: Batcher::spawn("callback_record", move |attempts: Vec<DeliveryAttempt>| {
                let store = records.clone();
                async move {
                    each_alone_on_rejection(
                        "callback_record",
                        &attempts,
                        store.record_deliveries(&attempts),
                        |attempt| store.record_delivery(attempt),
                    )
                    .await
                }
            }),
        }
    }
}
