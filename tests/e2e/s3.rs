//! `s3://` attachments against moto: delegated access through a role that
//! enforces the team's External ID, cross-account access with our own
//! identity, and the activation checks.
//!
//! moto skips trust policies of roles in other accounts, so the STS front
//! (see support/aws.rs) applies the External ID rule for role A, as AWS
//! would; role B's trust policy has no such condition.

use attache_aws::AwsArgs;
use attache_aws::integration::generate_external_id;
use attache_producer::keys::TeamCredentials;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::aws::{Moto, RecordingProxy, StsFront, start_moto};
use crate::support::{Deployment, Options, Receiver};

const KEY_LABELS: [&str; 9] = [
    "space",
    "plus",
    "percent",
    "percent_2f",
    "nfc",
    "nfd",
    "double_slash",
    "leading_slash",
    "large",
];

/// moto, the fronts our clients talk to, and a deployment using them.
struct AwsWorld {
    moto: Moto,
    sts: StsFront,
    s3: RecordingProxy,
    deployment: Deployment,
}

impl AwsWorld {
    async fn start(fetch_concurrency: u16) -> Self {
        let external_id_a = generate_external_id();
        let external_id_b = generate_external_id();
        let moto = start_moto(&external_id_a, &external_id_b).await;
        let sts = StsFront::start(&moto.endpoint, moto.required_external_ids()).await;
        let s3 = RecordingProxy::start(&moto.endpoint).await;
        let vendor = &moto.fixture["vendor"];
        let text = |value: &Value| value.as_str().unwrap().to_owned();
        let aws = AwsArgs {
            aws_account_id: Some(text(&vendor["account_id"])),
            aws_role_name: "AttacheReader".to_owned(),
            aws_principal_arn: Some(text(&vendor["user_arn"])),
            aws_region: text(&moto.fixture["region"]),
            aws_s3_endpoint_url: Some(s3.url()),
            aws_sts_endpoint_url: Some(sts.url()),
            aws_access_key_id: Some(text(&vendor["access_key_id"])),
            aws_secret_access_key: Some(text(&vendor["secret_access_key"])),
            aws_session_duration: std::time::Duration::from_secs(3600),
        };
        let deployment = Deployment::start(Options {
            aws,
            fetch_concurrency,
            // The fixture's largest object is 1 MiB and 1 byte.
            max_attachment_bytes: 4 * 1024 * 1024,
            ..Options::default()
        })
        .await;
        // The teams' External IDs were generated before moto's roles were
        // created with them.
        set_external_id(&deployment, &deployment.team, &external_id_a).await;
        Self {
            moto,
            sts,
            s3,
            deployment,
        }
    }

    fn bucket(&self, name: &str) -> String {
        self.moto.fixture["buckets"][name]["name"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn object(&self, bucket: &str, label: &str) -> &Value {
        &self.moto.fixture["buckets"][bucket]["objects"][label]
    }

    fn uri(&self, bucket: &str, label: &str) -> String {
        let key = self.object(bucket, label)["key"].as_str().unwrap();
        format!("s3://{}/{key}", self.bucket(bucket))
    }

    fn account(&self, customer: &str) -> String {
        self.moto.fixture["customers"][customer]["account_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn request(
        &self,
        team: &TeamCredentials,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .deployment
            .http
            .request(method, format!("http://{}{path}", self.deployment.api))
            .bearer_auth(&team.api_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn link(&self, team: &TeamCredentials, body: Value) -> (StatusCode, Value) {
        self.request(
            team,
            reqwest::Method::PUT,
            "/v1/integrations/aws",
            Some(body),
        )
        .await
    }

    /// Submits a task of `uris` for `team` and returns its callback payload.
    async fn run_task(&self, team: &TeamCredentials, uris: &[String]) -> Value {
        let receiver = Receiver::start([]).await;
        let attachments: Vec<Value> = uris.iter().map(|uri| json!({"uri": uri})).collect();
        let (status, accepted) = self
            .deployment
            .submit_raw(
                Some(&team.api_key),
                json!({"callback_url": receiver.url(), "attachments": attachments}).to_string(),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        receiver.wait_for(1).await[0].json()
    }

    async fn stop(self) {
        self.deployment.stop().await;
    }
}

async fn set_external_id(deployment: &Deployment, team: &TeamCredentials, external_id: &str) {
    deployment
        .database()
        .await
        .execute(
            "UPDATE teams SET aws_external_id = $1 WHERE id = $2",
            &[&external_id, &team.team_id.0],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delegated_team_reads_only_through_its_role() {
    let world = AwsWorld::start(8).await;
    let team = &world.deployment.team;
    let (status, settings) = world
        .link(team, json!({"account_id": world.account("a")}))
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["delegated_access_active"], true);
    assert_eq!(
        settings["trust_policy"]["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
        settings["external_id"]
    );

    let mut uris: Vec<String> = KEY_LABELS
        .iter()
        .map(|label| world.uri("customer_a", label))
        .collect();
    // Only our own identity may read this bucket: no fallback to it.
    uris.push(world.uri("vendor_readable", "space"));
    let calls_before = world.sts.assume_role_calls();
    let payload = world.run_task(team, &uris).await;

    let attachments = payload["data"]["attachments"].as_array().unwrap();
    for (label, attachment) in KEY_LABELS.iter().zip(attachments) {
        let expected = world.object("customer_a", label);
        assert_eq!(attachment["status"], "succeeded", "{label}: {attachment}");
        assert_eq!(attachment["sha256"], expected["sha256"], "{label}");
        assert_eq!(attachment["size_bytes"], expected["size"], "{label}");
    }
    let denied = &attachments[9];
    assert_eq!(denied["error_code"], "access_denied", "{denied}");
    assert!(
        denied["error_message"]
            .as_str()
            .unwrap()
            .contains("AttacheReader"),
        "{denied}"
    );
    assert_eq!(
        world.sts.assume_role_calls() - calls_before,
        1,
        "one AssumeRole for the whole task"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_account_team_reads_with_our_identity() {
    let world = AwsWorld::start(8).await;
    let team = world.deployment.create_team("cross-account").await;
    let uris = [
        world.uri("vendor_readable", "nfd"),
        world.uri("customer_a", "nfd"),
    ];
    let calls_before = world.sts.assume_role_calls();
    let payload = world.run_task(&team, &uris).await;

    let attachments = &payload["data"]["attachments"];
    assert_eq!(attachments[0]["status"], "succeeded", "{attachments}");
    assert_eq!(
        attachments[0]["sha256"],
        world.object("vendor_readable", "nfd")["sha256"]
    );
    assert_eq!(attachments[1]["error_code"], "access_denied");
    let message = attachments[1]["error_message"].as_str().unwrap();
    assert!(message.contains("bucket policy"), "{message}");
    assert_eq!(
        world.sts.assume_role_calls(),
        calls_before,
        "no role is assumed"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activation_checks_the_external_id() {
    let world = AwsWorld::start(8).await;
    let team = &world.deployment.team;

    let (status, error) = world.link(team, json!({"account_id": "12345"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["field"], "account_id");

    // Role B's trust policy has no External ID condition.
    let team_b = world.deployment.create_team("b").await;
    set_external_id(
        &world.deployment,
        &team_b,
        world.moto.fixture["customers"]["b"]["external_id"]
            .as_str()
            .unwrap(),
    )
    .await;
    let (status, error) = world
        .link(&team_b, json!({"account_id": world.account("b")}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sts:ExternalId"),
        "{error}"
    );
    let (_, settings) = world
        .request(&team_b, reqwest::Method::GET, "/v1/integrations/aws", None)
        .await;
    assert_eq!(settings["delegated_access_active"], false);

    // Team A's role enforces the External ID; a wrong one is refused.
    let (status, _) = world
        .link(team, json!({"account_id": world.account("a")}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, report) = world
        .request(
            team,
            reqwest::Method::POST,
            "/v1/integrations/aws/verify",
            Some(json!({"uri": world.uri("customer_a", "plus")})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["access_path"], "delegated");

    // Unlinking returns the team to cross-account access.
    let (status, settings) = world
        .request(team, reqwest::Method::DELETE, "/v1/integrations/aws", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["delegated_access_active"], false);
    let (_, report) = world
        .request(
            team,
            reqwest::Method::POST,
            "/v1/integrations/aws/verify",
            Some(json!({"uri": world.uri("customer_a", "plus")})),
        )
        .await;
    assert_eq!(report["access_path"], "cross_account");
    assert_eq!(
        report["ok"], false,
        "our identity may not read A's bucket: {report}"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_assume_the_role_once() {
    let world = AwsWorld::start(64).await;
    let team = &world.deployment.team;
    let (status, _) = world
        .link(team, json!({"account_id": world.account("a"), "bucket_owner_account_ids": [world.account("a")]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let calls_before = world.sts.assume_role_calls();

    // 20 tasks of 10 attachments: 200 fetches from a cold cache.
    let receiver = Receiver::start([]).await;
    for _ in 0..20 {
        let attachments: Vec<Value> = (0..10)
            .map(|index| json!({"uri": world.uri("customer_a", KEY_LABELS[index % 8])}))
            .collect();
        let (status, _) = world
            .deployment
            .submit(
                &json!({"callback_url": receiver.url(), "attachments": attachments}),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let callbacks = receiver.wait_for(20).await;
    for callback in callbacks {
        assert_eq!(
            callback.json()["data"]["status"],
            "succeeded",
            "{}",
            callback.body
        );
    }
    assert_eq!(world.sts.assume_role_calls() - calls_before, 1);

    // Every GetObject carried the expected-bucket-owner check.
    let gets: Vec<_> = world
        .s3
        .requests()
        .into_iter()
        .filter(|request| request.method == reqwest::Method::GET)
        .collect();
    assert!(gets.len() >= 200, "{}", gets.len());
    for request in gets {
        let owner = request
            .headers
            .get("x-amz-expected-bucket-owner")
            .and_then(|value| value.to_str().ok());
        assert_eq!(owner, Some(world.account("a").as_str()), "{}", request.path);
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bucket_in_another_region_is_followed() {
    let world = AwsWorld::start(8).await;
    let team = world.deployment.create_team("cross-account").await;
    world.s3.redirect_next_get("eu-west-1");
    let payload = world
        .run_task(&team, &[world.uri("vendor_readable", "plus")])
        .await;

    let attachment = &payload["data"]["attachments"][0];
    assert_eq!(attachment["status"], "succeeded", "{attachment}");
    assert_eq!(
        attachment["sha256"],
        world.object("vendor_readable", "plus")["sha256"]
    );
    let gets: Vec<_> = world
        .s3
        .requests()
        .into_iter()
        .filter(|request| request.method == reqwest::Method::GET)
        .collect();
    assert_eq!(gets.len(), 2, "one redirect, one retry");
    let signed_for = |index: usize| {
        gets[index].headers["authorization"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        signed_for(0).contains("/us-east-1/s3/"),
        "{}",
        signed_for(0)
    );
    assert!(
        signed_for(1).contains("/eu-west-1/s3/"),
        "{}",
        signed_for(1)
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_transfer_fails_the_checksum_and_is_retried() {
    let world = AwsWorld::start(8).await;
    let team = world.deployment.create_team("cross-account").await;
    world.s3.corrupt_next_get();
    let payload = world
        .run_task(&team, &[world.uri("vendor_readable", "space")])
        .await;

    let attachment = &payload["data"]["attachments"][0];
    assert_eq!(attachment["status"], "succeeded", "{attachment}");
    assert_eq!(
        attachment["sha256"],
        world.object("vendor_readable", "space")["sha256"]
    );
    let database = world.deployment.database().await;
    let row = database
        .query_one("SELECT attempts, error_code FROM attachments", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2, "the corrupted attempt was retried");
    let metrics = world
        .deployment
        .http
        .get(format!("http://{}/metrics", world.deployment.admin[1]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let retried_for_checksum = metrics.lines().any(|line| {
        line.starts_with("attache_fetches_total{")
            && line.contains("code=\"checksum_mismatch\"")
            && line.contains("outcome=\"retry\"")
    });
    assert!(
        retried_for_checksum,
        "the first attempt failed its checksum"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_credentials_are_renewed_once() {
    let world = AwsWorld::start(8).await;
    let team = &world.deployment.team;
    let (status, _) = world
        .link(team, json!({"account_id": world.account("a")}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let calls_before = world.sts.assume_role_calls();
    world.s3.expire_next_get();
    let payload = world
        .run_task(team, &[world.uri("customer_a", "space")])
        .await;

    let attachment = &payload["data"]["attachments"][0];
    assert_eq!(attachment["status"], "succeeded", "{attachment}");
    assert_eq!(
        attachment["sha256"],
        world.object("customer_a", "space")["sha256"]
    );
    assert_eq!(
        world.sts.assume_role_calls() - calls_before,
        2,
        "the first credentials, then one renewal"
    );
    let attempts: i32 = world
        .deployment
        .database()
        .await
        .query_one("SELECT attempts FROM attachments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1, "renewed within the same attempt");
    world.stop().await;
}
