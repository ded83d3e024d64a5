//! Store calls of many concurrent jobs, run in batches.
//!
//! A worker runs dozens of jobs at once, and each makes the same few store
//! calls: load its row, record its outcome. The API likewise inserts the
//! tasks of concurrent requests. A [`Batcher`] runs the calls
//! that arrive while its previous batch is in the database as the next
//! batch, in one statement or transaction. Under load, one round trip,
//! commit and WAL flush then serve many jobs. A call that arrives while
//! nothing is running starts at once, so batching adds no wait. A batch
//! that panics or outlasts [`BATCH_TIMEOUT`] fails its calls, and the task
//! goes on with the next batch.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::FutureExt;

use prometheus::{HistogramVec, exponential_buckets, register_histogram_vec};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// Calls served by one batch at most.
pub const MAX_BATCH: usize = 256;

/// Time one batch may take. The calls queued behind a batch wait for it,
/// so a batch stuck on a dead connection fails its calls, which their jobs
/// retry, instead of holding up every job of the worker.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Calls served per batch, by operation, such as `fetch_record`.
static BATCH_SIZE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "attache_database_batch_size",
        "Store calls of jobs and API requests served per database batch, by operation.",
        &["operation"],
        exponential_buckets(1.0, 2.0, 10).expect("bucket parameters are valid")
    )
    .expect("metric names are unique and valid")
});

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
                let count = inputs.len();
                BATCH_SIZE
                    .with_label_values(&[operation])
                    .observe(count as f64);
                let mut results = match tokio::time::timeout(
                    BATCH_TIMEOUT,
                    AssertUnwindSafe(run(inputs)).catch_unwind(),
                )
                .await
                {
                    Ok(Ok(results)) => results,
                    Ok(Err(_)) => {
                        tracing::error!(
                            operation,
                            calls = count,
                            "a store batch panicked; failing its calls"
                        );
                        shared_error(
                            StoreError::Startup(format!("the {operation} batch panicked")),
                            count,
                        )
                    }
                    Err(_) => {
                        tracing::error!(operation, calls = count, timeout = ?BATCH_TIMEOUT, "a store batch timed out; failing its calls");
                        shared_error(
                            StoreError::Startup(format!(
                                "the {operation} batch timed out after {BATCH_TIMEOUT:?}"
                            )),
                            count,
                        )
                    }
                };
                if results.len() != count {
                    tracing::error!(
                        inputs = count,
                        results = results.len(),
                        "a batch returned the wrong number of results; failing its calls"
                    );
                    results = shared_error(
                        StoreError::Startup(
                            "a store batch returned the wrong number of results".to_owned(),
                        ),
                        count,
                    );
                }
                for (reply, result) in replies.into_iter().zip(results) {
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
        let stopped = || StoreError::Startup("the store batcher stopped".to_owned());
        let (reply, response) = oneshot::channel();
        self.requests
            .send((input, reply))
            .await
            .map_err(|_| stopped())?;
        response.await.map_err(|_| stopped())?
    }
}

/// Returns `error` for each of `count` calls of a failed batch.
pub fn shared_error<O>(error: StoreError, count: usize) -> Vec<Result<O, StoreError>> {
    let error = Arc::new(error);
    (0..count)
        .map(|_| Err(StoreError::Batch(error.clone())))
        .collect()
}

/// Returns the result of a batch call that returns one result per input,
/// or the batch's error for each input.
pub fn per_input<O>(result: crate::Result<Vec<O>>, count: usize) -> Vec<Result<O, StoreError>> {
    match result {
        Ok(outputs) => outputs.into_iter().map(Ok).collect(),
        Err(error) => shared_error(error, count),
    }
}

/// Awaits `batch`, the batch call over `inputs`, and when PostgreSQL rejects
/// one of its statements (see [`StoreError::is_statement_error`]) runs `one` on each
/// input alone instead, so one bad input or a deadlock with another replica
/// cannot fail the others.
pub async fn each_alone_on_rejection<'a, I, O, F>(
    operation: &str,
    inputs: &'a [I],
    batch: impl Future<Output = crate::Result<Vec<O>>>,
    one: impl Fn(&'a I) -> F,
) -> Vec<Result<O, StoreError>>
where
    F: Future<Output = crate::Result<O>>,
{
    match batch.await {
        Err(error) if inputs.len() > 1 && error.is_statement_error() => {
            tracing::warn!(%error, operation, calls = inputs.len(), "a store batch was rejected; running its calls one by one");
            let mut results = Vec::with_capacity(inputs.len());
            for input in inputs {
                results.push(one(input).await);
            }
            results
        }
        result => per_input(result, inputs.len()),
    }
}

/// Returns, for each key, its row from `found`, or `None` when it has none.
/// A key may appear more than once in a batch (a duplicate delivery beside
/// a retry of the same attachment), and each appearance gets the row.
pub fn lookup_each<K, V>(
    keys: &[K],
    found: crate::Result<HashMap<K, V>>,
) -> Vec<Result<Option<V>, StoreError>>
where
    K: Eq + Hash,
    V: Clone,
{
    match found {
        Ok(found) => keys.iter().map(|key| Ok(found.get(key).cloned())).collect(),
        Err(error) => shared_error(error, keys.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_each_repeated_keys() {
        let found = HashMap::from([(1, "one"), (2, "two")]);
        let rows: Vec<Option<&str>> = lookup_each(&[1, 3, 1, 2], Ok(found))
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, [Some("one"), None, Some("one"), Some("two")]);
    }

    #[tokio::test]
    async fn batcher_survives_panicking_batch() {
        let batcher = Batcher::spawn("test", |inputs: Vec<i32>| async move {
            assert!(!inputs.contains(&0), "zero makes this batch panic");
            inputs.into_iter().map(|n| Ok(n * 2)).collect()
        });
        let failed = batcher.call(0).await;
        assert!(matches!(failed, Err(StoreError::Batch(_))), "{failed:?}");
        assert_eq!(batcher.call(21).await.unwrap(), 42);
    }

    #[test]
    fn lookup_each_failed_batch() {
        let failed = Err(StoreError::Startup("down".to_owned()));
        let rows = lookup_each::<i32, &str>(&[1, 1, 2], failed);
        assert_eq!(rows.len(), 3);
        assert!(
            rows.iter()
                .all(|row| matches!(row, Err(StoreError::Batch(_))))
        );
    }
}
