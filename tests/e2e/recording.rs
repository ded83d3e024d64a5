//! Recording fetch outcomes and callback attempts in batches, against the
//! real database: which attempts of a batch count, and that every task
//! completes exactly once with one callback whichever batches its
//! attachments land in. Also how a new task's jobs are grouped into
//! messages, and how a batch of new tasks honours idempotency keys.

use std::time::Duration;

use attache_domain::{
    AttachmentId, CallbackId, CallbackStatus, ErrorCode, FETCH_GROUP_SIZE, FetchGroupJob, FetchJob,
    JobMessage, Provider, TaskId, TaskStatus,
};
use attache_producer::keys::TeamCredentials;
use attache_store::Store;
use attache_store::callbacks::{Claim, DeliveryAttempt, DeliveryResult};
use attache_store::fetches::{FetchAttempt, FetchResult, Recorded};
use attache_store::replay::ReplayFilter;
use attache_store::tasks::{Inserted, NewAttachment, NewTask};
use serde_json::{Value, json};

use crate::support::TestDatabase;

/// A migrated database with one team, and nothing consuming its outbox.
struct Fixture {
    database: TestDatabase,
    store: Store,
    team: TeamCredentials,
}

impl Fixture {
    async fn start() -> Self {
        let database = TestDatabase::create(&uuid::Uuid::new_v4().simple().to_string()).await;
        let store = Store::open(&database.args)
            .await
            .expect("the test database migrates");
        let team = TeamCredentials::generate();
        store
            .create_team(team.new_team("recording"))
            .await
            .expect("a team row");
        Self {
            database,
            store,
            team,
        }
    }

    /// Returns a new task of the team with `count` attachments.
    fn new_task(&self, count: usize, idempotency_key: Option<&str>, request_hash: u8) -> NewTask {
        NewTask {
            id: TaskId::new(),
            team_id: self.team.team_id,
            callback_url: "https://hooks.example.com/attache".to_owned(),
            metadata: json!({"case": "recording"}),
            idempotency_key: idempotency_key.map(str::to_owned),
            request_hash: vec![request_hash; 32],
            attachments: (0..count)
                .map(|position| NewAttachment {
                    id: AttachmentId::new(),
                    uri: format!("https://files.example.com/{position}.pdf"),
                    provider: Provider::Http,
                })
                .collect(),
        }
    }

    /// Inserts a pending task with `count` attachments and returns their ids.
    async fn task(&self, count: usize) -> (TaskId, Vec<AttachmentId>) {
        let task = self.new_task(count, None, 0);
        let inserted = self
            .store
            .insert_task(&task)
            .await
            .expect("the task is inserted");
        assert!(matches!(inserted, Inserted::Created));
        (task.id, task.attachments.iter().map(|a| a.id).collect())
    }

    async fn stop(self) {
        self.store.close();
        self.database.drop().await;
    }
}

fn stored(attachment_id: AttachmentId, attempt: u32, size: u64) -> FetchAttempt {
    FetchAttempt {
        attachment_id,
        attempt,
        egress_member: Some("local:127.0.0.11".to_owned()),
        result: FetchResult::Stored {
            size_bytes: size,
            sha256: format!("{size:064x}"),
            content_type: Some("application/pdf".to_owned()),
            storage_key: format!("key/{attachment_id}"),
        },
    }
}

fn failed(attachment_id: AttachmentId, attempt: u32) -> FetchAttempt {
    FetchAttempt {
        attachment_id,
        attempt,
        egress_member: None,
        result: FetchResult::Failed {
            code: ErrorCode::NotFound,
            message: "the source answered 404".to_owned(),
        },
    }
}

fn retry(attachment_id: AttachmentId, attempt: u32, delay: Duration) -> FetchAttempt {
    FetchAttempt {
        attachment_id,
        attempt,
        egress_member: None,
        result: FetchResult::Retry {
            code: ErrorCode::ServerError,
            message: "the source answered 503".to_owned(),
            delay,
        },
    }
}

/// Reads the task's status and its callbacks' bodies.
async fn task_state(client: &tokio_postgres::Client, task_id: TaskId) -> (String, Vec<Value>) {
    let status: String = client
        .query_one("SELECT status FROM tasks WHERE id = $1", &[&task_id.0])
        .await
        .unwrap()
        .get(0);
    let payloads = client
        .query(
            "SELECT payload FROM callbacks WHERE task_id = $1",
            &[&task_id.0],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| serde_json::from_str(row.get(0)).unwrap())
        .collect();
    (status, payloads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_completes_task_once() {
    let fixture = Fixture::start().await;
    let (task_id, ids) = fixture.task(3).await;

    let recorded = fixture
        .store
        .record_fetches(&[
            stored(ids[0], 0, 10),
            failed(ids[1], 0),
            stored(ids[2], 0, 30),
            // The same attempt again, as a duplicate delivery would bring it.
            failed(ids[0], 0),
            // An attempt number the row has not reached.
            stored(ids[1], 5, 99),
        ])
        .await
        .unwrap();
    assert_eq!(
        recorded,
        vec![
            Recorded::Attachment,
            Recorded::Attachment,
            Recorded::TaskCompleted(TaskStatus::PartiallyFailed),
            Recorded::Stale,
            Recorded::Stale,
        ]
    );

    let client = fixture.database.client().await;
    let (status, callbacks) = task_state(&client, task_id).await;
    assert_eq!(status, "partially_failed");
    assert_eq!(callbacks.len(), 1, "{callbacks:?}");
    let attachments = &callbacks[0]["data"]["attachments"];
    assert_eq!(callbacks[0]["data"]["task_id"], task_id.to_string());
    assert_eq!(
        callbacks[0]["data"]["metadata"],
        json!({"case": "recording"})
    );
    let summary: Vec<(String, Value, Value)> = attachments
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["status"].as_str().unwrap().to_owned(),
                a["size_bytes"].clone(),
                a["error_code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("succeeded".to_owned(), json!(10), Value::Null),
            ("failed".to_owned(), Value::Null, json!("not_found")),
            ("succeeded".to_owned(), json!(30), Value::Null),
        ],
        "the callback lists the first of the repeated attempts, in submission order"
    );
    let callback_jobs: i64 = client
        .query_one("SELECT count(*) FROM outbox WHERE kind = 'callback'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(callback_jobs, 1);

    // Recording the same batch again changes nothing.
    let again = fixture
        .store
        .record_fetches(&[stored(ids[0], 0, 10), failed(ids[1], 0)])
        .await
        .unwrap();
    assert_eq!(again, vec![Recorded::Stale, Recorded::Stale]);
    assert_eq!(task_state(&client, task_id).await.1.len(), 1);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_view_shows_callback_once_completed() {
    let fixture = Fixture::start().await;
    let (task_id, ids) = fixture.task(1).await;
    let team_id = fixture.team.team_id;
    let pending = fixture.store.task_view(team_id, task_id).await.unwrap();
    let pending = pending.expect("the task exists");
    assert!(pending.callback.is_none(), "{:?}", pending.callback);
    assert_eq!(pending.metadata.get(), r#"{"case":"recording"}"#);

    fixture
        .store
        .record_fetch(&failed(ids[0], 0))
        .await
        .unwrap();
    let completed = fixture.store.task_view(team_id, task_id).await.unwrap();
    let completed = completed.expect("the task exists");
    let callback = completed.callback.expect("a completed task has a callback");
    assert_eq!(callback.status, CallbackStatus::Pending);
    assert_eq!(callback.attempts, 0);
    assert_eq!(callback.delivered_at, None);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_view_follows_replays() {
    let fixture = Fixture::start().await;
    let (task_id, ids) = fixture.task(1).await;
    let team_id = fixture.team.team_id;
    let filter = ReplayFilter {
        team_id: Some(team_id),
        task_id: Some(task_id),
        error_code: None,
        since: None,
        until: None,
    };
    let callback = || async {
        let view = fixture.store.task_view(team_id, task_id).await.unwrap();
        view.expect("the task exists").callback
    };
    fixture
        .store
        .record_fetch(&failed(ids[0], 0))
        .await
        .unwrap();
    assert!(
        callback().await.is_some(),
        "a completed task has a callback"
    );

    // The endpoint responds with 410, and the callback is dead.
    let client = fixture.database.client().await;
    let row = client
        .query_one("SELECT id FROM callbacks WHERE task_id = $1", &[&task_id.0])
        .await
        .unwrap();
    let first = CallbackId(row.get(0));
    let responded_410 = DeliveryAttempt {
        status_code: Some(410),
        ..delivery(
            first,
            0,
            DeliveryResult::Dead {
                error: "HTTP 410".to_owned(),
            },
        )
    };
    fixture
        .store
        .record_deliveries(&[responded_410])
        .await
        .unwrap();
    let dead = callback().await.expect("the dead callback");
    assert_eq!(dead.status, CallbackStatus::Dead);
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.last_status_code, Some(410));
    assert!(dead.last_attempt_at.is_some());

    // A replay of the callback starts its delivery afresh.
    fixture.store.replay_callbacks(&filter).await.unwrap();
    let replayed = callback().await.expect("the replayed callback");
    assert_eq!(replayed.status, CallbackStatus::Pending);
    assert_eq!(replayed.attempts, 0);
    assert_eq!(replayed.last_status_code, None);
    assert_eq!(replayed.last_error, None);
    assert_eq!(replayed.last_attempt_at, None);
    let delivered = delivery(first, 0, DeliveryResult::Delivered);
    fixture.store.record_deliveries(&[delivered]).await.unwrap();
    let delivered = callback().await.expect("the delivered callback");
    assert_eq!(delivered.status, CallbackStatus::Delivered);

    // A replay of the attachment reopens the task, which shows no callback
    // until it completes again with a new one.
    fixture.store.replay_attachments(&filter).await.unwrap();
    assert!(callback().await.is_none());
    let recorded = fixture.store.record_fetch(&stored(ids[0], 0, 10)).await;
    assert_eq!(
        recorded.unwrap(),
        Recorded::TaskCompleted(TaskStatus::Succeeded)
    );
    let second = callback().await.expect("the new callback");
    assert_eq!(
        second.status,
        CallbackStatus::Pending,
        "the latest callback"
    );
    let (_, payloads) = task_state(&client, task_id).await;
    assert_eq!(payloads.len(), 2);
    fixture.stop().await;
}

/// Metadata that the API now refuses can be stored by an older release or
/// by hand. Reading it must neither panic nor hold up the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_metadata_is_sent_without_decoding() {
    let fixture = Fixture::start().await;
    let (task_id, ids) = fixture.task(1).await;
    // The largest double in full: jsonb keeps all 309 digits, and serde_json
    // overflows reading them as a number.
    let huge = format!("17976931348623157{}", "0".repeat(292));
    assert!(serde_json::from_str::<Value>(&huge).is_err());
    let client = fixture.database.client().await;
    client
        .execute(
            &format!("UPDATE tasks SET metadata = '{{\"huge\": {huge}}}' WHERE id = $1"),
            &[&task_id.0],
        )
        .await
        .unwrap();

    let view = fixture
        .store
        .task_view(fixture.team.team_id, task_id)
        .await
        .unwrap()
        .expect("the task exists");
    assert_eq!(view.metadata.get(), format!("{{\"huge\": {huge}}}"));
    let recorded = fixture.store.record_fetch(&stored(ids[0], 0, 10)).await;
    assert_eq!(
        recorded.unwrap(),
        Recorded::TaskCompleted(TaskStatus::Succeeded)
    );
    let payload: String = client
        .query_one(
            "SELECT payload FROM callbacks WHERE task_id = $1",
            &[&task_id.0],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        payload.contains(&format!("\"metadata\":{{\"huge\": {huge}}}")),
        "{payload}"
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_keeps_task_pending() {
    let fixture = Fixture::start().await;
    let (waiting, waiting_ids) = fixture.task(2).await;
    let (done, done_ids) = fixture.task(1).await;
    let client = fixture.database.client().await;

    let recorded = fixture
        .store
        .record_fetches(&[
            retry(waiting_ids[0], 0, Duration::from_secs(600)),
            stored(waiting_ids[1], 0, 1),
            stored(done_ids[0], 0, 2),
        ])
        .await
        .unwrap();
    assert_eq!(
        recorded,
        vec![
            Recorded::Attachment,
            Recorded::Attachment,
            Recorded::TaskCompleted(TaskStatus::Succeeded),
        ]
    );
    assert_eq!(
        task_state(&client, waiting).await,
        ("pending".into(), vec![])
    );
    assert_eq!(task_state(&client, done).await.0, "succeeded");
    let retry_job = client
        .query_one(
            "SELECT payload, available_at > now() + interval '9 minutes' AS later
                 FROM outbox WHERE kind = 'fetch' AND payload->>'attempt' = '1'",
            &[],
        )
        .await
        .expect("one retry job is queued");
    let payload: Value = retry_job.get("payload");
    assert_eq!(payload["attachment_id"], waiting_ids[0].to_string());
    assert!(
        retry_job.get::<_, bool>("later"),
        "the retry waits its delay"
    );

    // The old attempt number is stale now; the next one completes the task.
    let recorded = fixture
        .store
        .record_fetches(&[stored(waiting_ids[0], 0, 5), stored(waiting_ids[0], 1, 5)])
        .await
        .unwrap();
    assert_eq!(
        recorded,
        vec![
            Recorded::Stale,
            Recorded::TaskCompleted(TaskStatus::Succeeded)
        ]
    );
    let (status, callbacks) = task_state(&client, waiting).await;
    assert_eq!(status, "succeeded");
    assert_eq!(callbacks.len(), 1);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_complete_each_task_once() {
    let fixture = Fixture::start().await;
    let client = fixture.database.client().await;
    // A race shows only some of the time, so several rounds run.
    for _ in 0..5 {
        let mut tasks = Vec::new();
        for _ in 0..40 {
            tasks.push(fixture.task(4).await);
        }
        // Two replicas' batches, each holding half of every task's
        // attachments, in opposite task orders, run at the same time.
        let first: Vec<FetchAttempt> = tasks
            .iter()
            .flat_map(|(_, ids)| [stored(ids[0], 0, 1), stored(ids[2], 0, 1)])
            .collect();
        let second: Vec<FetchAttempt> = tasks
            .iter()
            .rev()
            .flat_map(|(_, ids)| [failed(ids[3], 0), stored(ids[1], 0, 1)])
            .collect();
        let (a, b) = tokio::join!(
            fixture.store.record_fetches(&first),
            fixture.store.record_fetches(&second)
        );
        let completions = a
            .unwrap()
            .into_iter()
            .chain(b.unwrap())
            .filter(|recorded| matches!(recorded, Recorded::TaskCompleted(_)))
            .count();
        assert_eq!(completions, tasks.len(), "each task completes once");
        for (task_id, _) in &tasks {
            let (status, callbacks) = task_state(&client, *task_id).await;
            assert_eq!(status, "partially_failed");
            assert_eq!(callbacks.len(), 1, "one callback for task {task_id}");
        }
    }
    fixture.stop().await;
}

/// Completes a one-attachment task and returns its callback's id.
async fn completed_task_callback(fixture: &Fixture) -> CallbackId {
    let (task_id, ids) = fixture.task(1).await;
    let recorded = fixture.store.record_fetch(&stored(ids[0], 0, 1)).await;
    assert_eq!(
        recorded.unwrap(),
        Recorded::TaskCompleted(TaskStatus::Succeeded)
    );
    let client = fixture.database.client().await;
    let row = client
        .query_one("SELECT id FROM callbacks WHERE task_id = $1", &[&task_id.0])
        .await
        .unwrap();
    CallbackId(row.get(0))
}

fn delivery(callback_id: CallbackId, attempt: u32, result: DeliveryResult) -> DeliveryAttempt {
    DeliveryAttempt {
        callback_id,
        attempt,
        status_code: Some(200),
        duration: Duration::from_millis(12),
        egress_member: Some("local:127.0.0.11".to_owned()),
        result,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_claims_hold_repeated_attempts() {
    let fixture = Fixture::start().await;
    let first = completed_task_callback(&fixture).await;
    let second = completed_task_callback(&fixture).await;
    let lease = Duration::from_secs(60);

    let claims = fixture
        .store
        .claim_deliveries(&[(first, 0), (first, 0), (second, 3), (second, 0)], lease)
        .await
        .unwrap();
    assert_eq!(claims[0], Claim::Claimed);
    assert!(
        matches!(claims[1], Claim::Held { .. }),
        "a repeat in the batch waits for the first: {:?}",
        claims[1]
    );
    assert_eq!(
        claims[2],
        Claim::Stale,
        "an attempt the row has not reached"
    );
    assert_eq!(claims[3], Claim::Claimed);

    // Claimed by an earlier batch, the lease holds the attempt.
    let again = fixture
        .store
        .claim_deliveries(&[(first, 0)], lease)
        .await
        .unwrap();
    let Claim::Held { until } = again[0] else {
        panic!("the lease holds the attempt: {:?}", again[0]);
    };
    assert!(until > chrono::Utc::now() + chrono::Duration::seconds(50));
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_deliveries_record_each_attempt_once() {
    let fixture = Fixture::start().await;
    let delivered = completed_task_callback(&fixture).await;
    let retried = completed_task_callback(&fixture).await;
    let client = fixture.database.client().await;

    let recorded = fixture
        .store
        .record_deliveries(&[
            delivery(delivered, 0, DeliveryResult::Delivered),
            delivery(
                retried,
                0,
                DeliveryResult::Retry {
                    error: "HTTP 503".to_owned(),
                    delay: Duration::from_secs(600),
                },
            ),
            delivery(delivered, 0, DeliveryResult::Delivered),
            delivery(retried, 4, DeliveryResult::Delivered),
        ])
        .await
        .unwrap();
    assert_eq!(recorded, vec![true, true, false, false]);

    let state = |id: CallbackId| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT status, attempts, last_error,
                            (SELECT count(*) FROM callback_attempts a WHERE a.callback_id = c.id)
                                AS history
                         FROM callbacks c WHERE id = $1",
                    &[&id.0],
                )
                .await
                .unwrap();
            (
                row.get::<_, String>("status"),
                row.get::<_, i32>("attempts"),
                row.get::<_, Option<String>>("last_error"),
                row.get::<_, i64>("history"),
            )
        }
    };
    assert_eq!(state(delivered).await, ("delivered".into(), 1, None, 1));
    assert_eq!(
        state(retried).await,
        ("pending".into(), 1, Some("HTTP 503".into()), 1)
    );
    let retry_jobs: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox
                 WHERE kind = 'callback' AND payload->>'attempt' = '1'
                   AND payload->>'callback_id' = $1 AND available_at > now() + interval '9 minutes'",
            &[&retried.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(retry_jobs, 1, "the retry is queued after its delay");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_task_queues_its_jobs_in_groups() {
    let fixture = Fixture::start().await;
    let (_, ids) = fixture.task(FETCH_GROUP_SIZE + 4).await;

    let rows = fixture
        .database
        .client()
        .await
        .query(
            "SELECT payload FROM outbox WHERE kind = 'fetch' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let messages: Vec<JobMessage> = rows
        .iter()
        .map(|row| serde_json::from_value::<Value>(row.get(0)).unwrap())
        .map(|payload| JobMessage::decode(payload.to_string().as_bytes()).unwrap())
        .collect();
    let group = |range: std::ops::Range<usize>| {
        JobMessage::FetchGroup(FetchGroupJob {
            jobs: ids[range]
                .iter()
                .map(|&attachment_id| FetchJob {
                    attachment_id,
                    attempt: 0,
                })
                .collect(),
        })
    };
    assert_eq!(
        messages,
        vec![
            group(0..FETCH_GROUP_SIZE),
            group(FETCH_GROUP_SIZE..FETCH_GROUP_SIZE + 4)
        ]
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_batch_honours_idempotency_keys() {
    let fixture = Fixture::start().await;
    let earlier = fixture.new_task(1, Some("earlier"), 1);
    let inserted = fixture.store.insert_task(&earlier).await.unwrap();
    assert!(matches!(inserted, Inserted::Created));

    let retried = fixture.new_task(2, Some("earlier"), 1);
    let first = fixture.new_task(3, Some("shared"), 2);
    let second = fixture.new_task(4, Some("shared"), 3);
    let unkeyed = fixture.new_task(5, None, 4);
    let batch = [&retried, &first, &second, &unkeyed];
    let outcomes: Vec<Inserted> = fixture
        .store
        .insert_tasks(&batch)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert!(
        matches!(&outcomes[0], Inserted::Existing { task_id, request_hash }
            if *task_id == earlier.id && *request_hash == earlier.request_hash),
        "{:?}",
        outcomes[0]
    );
    assert!(
        matches!(outcomes[1], Inserted::Created),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(&outcomes[2], Inserted::Existing { task_id, request_hash }
            if *task_id == first.id && *request_hash == first.request_hash),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(outcomes[3], Inserted::Created),
        "{:?}",
        outcomes[3]
    );

    // Only the created tasks have rows, attachments and fetch jobs.
    let client = fixture.database.client().await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM tasks").await, 3);
    assert_eq!(count("SELECT count(*) FROM attachments").await, 1 + 3 + 5);
    let rows = client
        .query(
            "SELECT payload FROM outbox WHERE kind = 'fetch' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let queued: Vec<AttachmentId> = rows
        .iter()
        .map(|row| JobMessage::decode(row.get::<_, Value>(0).to_string().as_bytes()).unwrap())
        .flat_map(|message| match message {
            JobMessage::Fetch(job) => vec![job.attachment_id],
            JobMessage::FetchGroup(group) => {
                group.jobs.iter().map(|job| job.attachment_id).collect()
            }
            JobMessage::Callback(_) => panic!("a callback job in the fetch rows"),
        })
        .collect();
    let expected: Vec<AttachmentId> = [&earlier, &first, &unkeyed]
        .iter()
        .flat_map(|task| task.attachments.iter().map(|a| a.id))
        .collect();
    assert_eq!(
        queued, expected,
        "jobs are queued in the order tasks arrived"
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_insert_past_timeout_writes_nothing() {
    let fixture = Fixture::start().await;
    let blocked = fixture.new_task(1, Some("held"), 1);
    let bystander = fixture.new_task(1, None, 2);

    // Another transaction inserts the same key and keeps it uncommitted, so
    // the batch waits on it until its timeout cancels the statement.
    let mut holder = fixture.database.client().await;
    let holding = holder.transaction().await.unwrap();
    holding
        .execute(
            "INSERT INTO tasks (id, team_id, callback_url, idempotency_key, request_hash)
             VALUES (gen_random_uuid(), $1, 'http://127.0.0.1:9/h', 'held', '')",
            &[&fixture.team.team_id.0],
        )
        .await
        .unwrap();
    let outcome = fixture
        .store
        .insert_tasks_within(&[&blocked, &bystander], Duration::from_millis(500))
        .await;
    assert!(outcome.is_err(), "the insert was cancelled");
    holding.rollback().await.unwrap();
    // A statement still running would now go ahead and commit.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let client = fixture.database.client().await;
    let tasks: i64 = client
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tasks, 0, "a cancelled batch commits no task, later or now");
    fixture.stop().await;
}
