//! Database reads and writes of many jobs, batched.
//!
//! Every fetch job starts with one read, its attachment, and ends with one
//! write, its attempt's outcome. A [`Batcher`] runs the calls that arrive
//! while its previous batch is in the database as the next batch, in one
//! statement or transaction. Under load, one round trip, commit and WAL
//! flush then serve many jobs, and the attachments of one task take the
//! task's row lock once instead of queueing on it. A call that arrives
//! while nothing is running starts at once, so batching adds no wait.

use std::future::Future;
use std::sync::Arc;

use attache_domain::AttachmentId;
use attache_store::fetches::{FetchAttempt, FetchTarget, Recorded};
use attache_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::DATABASE_BATCH;

/// Calls served by one batch at most.
pub const MAX_BATCH: usize = 256;

type Reply<O> = oneshot::Sender<Result<O, StoreError>>;

/// A handle on a task that serves calls in batches. Cloning it shares the
/// task; the task ends when the last handle is dropped.
pub struct Batcher<I, O> {
    requests: mpsc::Sender<(I, Reply<O>)>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts a task that passes each batch to `run`, which returns one
    /// result per input, in order. `operation` labels the batch size metric.
    pub fn spawn<F, Fut>(operation: &'static str, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Result<O, StoreError>>> + Send,
    {
        let (requests, mut receiver) = mpsc::channel::<(I, Reply<O>)>(MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (inputs, replies): (Vec<I>, Vec<Reply<O>>) = batch.drain(..).unzip();
                DATABASE_BATCH
                    .with_label_values(&[operation])
                    .observe(inputs.len() as f64);
                for (reply, result) in replies.into_iter().zip(run(inputs).await) {
                    // A caller cancelled by a shutdown no longer listens; the
                    // batch ran all the same.
                    let _ = reply.send(result);
                }
            }
        });
        Self { requests }
    }

    /// Runs `input` in whichever batch it joins.
    pub async fn call(&self, input: I) -> Result<O, StoreError> {
        let stopped = || StoreError::Startup("the database batcher stopped".to_owned());
        let (reply, response) = oneshot::channel();
        self.requests
            .send((input, reply))
            .await
            .map_err(|_| stopped())?;
        response.await.map_err(|_| stopped())?
    }
}

/// Loads attachments, as [`Store::fetch_target`] does, in batches.
pub fn loader(store: Store) -> Batcher<AttachmentId, Option<FetchTarget>> {
    Batcher::spawn("load", move |ids: Vec<AttachmentId>| {
        let store = store.clone();
        async move {
            match store.fetch_targets(&ids).await {
                Ok(mut targets) => ids.iter().map(|id| Ok(targets.remove(id))).collect(),
                Err(error) => shared_error(error, ids.len()),
            }
        }
    })
}

/// Records attempts, as [`Store::record_fetch`] does, in batches.
pub fn recorder(store: Store) -> Batcher<FetchAttempt, Recorded> {
    Batcher::spawn("record", move |attempts: Vec<FetchAttempt>| {
        let store = store.clone();
        async move { record(&store, &attempts).await }
    })
}

async fn record(store: &Store, attempts: &[FetchAttempt]) -> Vec<Result<Recorded, StoreError>> {
    match store.record_fetches(attempts).await {
        Ok(recorded) => recorded.into_iter().map(Ok).collect(),
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
        Err(error) => shared_error(error, attempts.len()),
    }
}

/// Returns the same error for each of `count` calls.
fn shared_error<O>(error: StoreError, count: usize) -> Vec<Result<O, StoreError>> {
    let error = Arc::new(error);
    (0..count)
        .map(|_| Err(StoreError::Batch(error.clone())))
        .collect()
}
