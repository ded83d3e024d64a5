//! `gs://` attachments against gcp-storage-emulator: impersonation of the
//! team's service account, cross-project access with our own service
//! account, the activation checks, the token cache and the egress pool.
//!
//! The emulator accepts any token, so `StorageFront` (see support/gcp.rs)
//! decides which principal may read which bucket, as Cloud Storage's IAM
//! would, and `MockIam` mints tokens only for the service accounts our
//! service account was allowed to impersonate.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use attache_gcp::GcpArgs;
use attache_producer::keys::TeamCredentials;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::gcp::{Emulator, Grants, MockIam, StorageFront};
use crate::support::{Deployment, Options, Receiver, sha256_hex};

/// Our service account and its static token.
const OUR_ACCOUNT: &str = "attache-reader@attache-vendor.iam.gserviceaccount.com";
const OUR_TOKEN: &str = "our-own-token";
/// A bucket only the team's service account may read.
const TEAM_BUCKET: &str = "customer-bucket";
/// A bucket only our own service account may read.
const VENDOR_BUCKET: &str = "vendor-readable";
/// Source addresses of the egress pool.
const MEMBER_IPS: [&str; 2] = ["127.0.0.21", "127.0.0.22"];
/// Object names whose characters must reach Cloud Storage unchanged.
const OBJECT_NAMES: [&str; 7] = [
    "plain.txt",
    "with space.txt",
    "hash#mark",
    "question?mark=1&x",
    "dir/sub dir/é-ü.txt",
    "percent%2Fand%25",
    "naïve 文件.bin",
];

/// Returns the bytes stored for `object` in `bucket`, distinct per bucket
/// so a read from the wrong bucket shows up as a wrong digest.
fn body_of(bucket: &str, object: &str) -> Vec<u8> {
    format!("{bucket}:{object}:").repeat(50).into_bytes()
}

/// The emulator, the fronts our clients talk to, and a deployment using
/// them.
struct GcpWorld {
    _emulator: Emulator,
    grants: Arc<Grants>,
    iam: MockIam,
    storage: StorageFront,
    deployment: Deployment,
}

impl GcpWorld {
    async fn start(fetch_concurrency: u16, max_attachments_per_task: usize) -> Self {
        let emulator = Emulator::start().await;
        for bucket in [TEAM_BUCKET, VENDOR_BUCKET] {
            emulator.create_bucket(bucket).await;
            for object in OBJECT_NAMES {
                emulator
                    .upload(bucket, object, body_of(bucket, object))
                    .await;
            }
        }
        let grants = Arc::new(Grants::default());
        grants.add_token(OUR_TOKEN, OUR_ACCOUNT);
        grants.allow_read(OUR_ACCOUNT, VENDOR_BUCKET);
        let iam = MockIam::start(grants.clone()).await;
        let storage = StorageFront::start(&emulator, grants.clone()).await;

        let gcp = GcpArgs {
            gcp_service_account: Some(OUR_ACCOUNT.to_owned()),
            gcp_access_token: Some(OUR_TOKEN.to_owned()),
            gcp_storage_endpoint: storage.url().parse().unwrap(),
            gcp_iam_endpoint: iam.url().parse().unwrap(),
            ..GcpArgs::default()
        };
        let mut limits = Options::default().limits;
        limits.max_attachments_per_task = max_attachments_per_task;
        let deployment = Deployment::start(Options {
            gcp,
            fetch_concurrency,
            limits,
            egress_members: MEMBER_IPS
                .iter()
                .map(|ip| format!("local:{ip}").parse().unwrap())
                .collect(),
            ..Options::default()
        })
        .await;
        Self {
            _emulator: emulator,
            grants,
            iam,
            storage,
            deployment,
        }
    }

    async fn request(
        &self,
        team: &TeamCredentials,
        method: Method,
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

    async fn settings(&self, team: &TeamCredentials) -> Value {
        let (status, settings) = self
            .request(team, Method::GET, "/v1/integrations/gcp", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{settings}");
        settings
    }

    /// Returns the team's suggested service account email in `project`.
    async fn team_account(&self, team: &TeamCredentials, project: &str) -> String {
        let settings = self.settings(team).await;
        let id = settings["suggested_service_account_id"].as_str().unwrap();
        format!("{id}@{project}.iam.gserviceaccount.com")
    }

    async fn link(&self, team: &TeamCredentials, service_account: &str) -> (StatusCode, Value) {
        self.request(
            team,
            Method::PUT,
            "/v1/integrations/gcp",
            Some(json!({"service_account": service_account})),
        )
        .await
    }

    /// Creates the team's service account, lets it read the team bucket
    /// and our service account impersonate it, and activates it.
    async fn link_team(&self, team: &TeamCredentials) -> String {
        let account = self.team_account(team, "customer-project").await;
        self.grants.allow_read(&account, TEAM_BUCKET);
        self.grants.allow_impersonation(OUR_ACCOUNT, &account);
        let (status, settings) = self.link(team, &account).await;
        assert_eq!(status, StatusCode::OK, "{settings}");
        assert_eq!(settings["impersonation_active"], true);
        account
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

fn uri(bucket: &str, object: &str) -> String {
    format!("gs://{bucket}/{object}")
}

fn member_ips() -> HashSet<IpAddr> {
    MEMBER_IPS.iter().map(|ip| ip.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn impersonating_team_reads_only_through_its_account() {
    let world = GcpWorld::start(8, 10).await;
    let team = &world.deployment.team;
    let account = world.link_team(team).await;

    let mut uris: Vec<String> = OBJECT_NAMES
        .iter()
        .map(|name| uri(TEAM_BUCKET, name))
        .collect();
    // Only our own service account may read this bucket: no fallback to it.
    uris.push(uri(VENDOR_BUCKET, "plain.txt"));
    let payload = world.run_task(team, &uris).await;

    let attachments = payload["data"]["attachments"].as_array().unwrap();
    for (name, attachment) in OBJECT_NAMES.iter().zip(attachments) {
        let body = body_of(TEAM_BUCKET, name);
        assert_eq!(attachment["status"], "succeeded", "{name}: {attachment}");
        assert_eq!(attachment["sha256"], sha256_hex(&body), "{name}");
        assert_eq!(attachment["size_bytes"], body.len(), "{name}");
    }
    let denied = &attachments[OBJECT_NAMES.len()];
    assert_eq!(denied["error_code"], "access_denied", "{denied}");
    let message = denied["error_message"].as_str().unwrap();
    assert!(message.contains(&account), "{message}");
    assert!(message.contains("roles/storage.objectViewer"), "{message}");
    assert!(
        world
            .storage
            .reads()
            .iter()
            .all(|(principal, _)| principal == &account),
        "our own token was never used: {:?}",
        world.storage.reads()
    );

    // Every Cloud Storage and IAM Credentials request left through a
    // member of the egress pool.
    let members = member_ips();
    assert!(!world.storage.peers().is_empty());
    for peer in world.storage.peers() {
        assert!(members.contains(&peer), "storage request from {peer}");
    }
    for request in world.iam.requests() {
        assert!(
            members.contains(&request.peer),
            "IAM request from {}",
            request.peer
        );
    }
    let rows = world
        .deployment
        .database()
        .await
        .query("SELECT egress_member FROM attachments", &[])
        .await
        .unwrap();
    for row in rows {
        let member: Option<String> = row.get(0);
        let member = member.expect("every attachment records its egress member");
        assert!(MEMBER_IPS.iter().any(|ip| member.contains(ip)), "{member}");
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_project_team_reads_with_our_account() {
    let world = GcpWorld::start(8, 10).await;
    let team = world.deployment.create_team("cross-project").await;
    let uris = [
        uri(VENDOR_BUCKET, "naïve 文件.bin"),
        uri(TEAM_BUCKET, "plain.txt"),
        uri(VENDOR_BUCKET, "missing object"),
    ];
    let payload = world.run_task(&team, &uris).await;

    let attachments = &payload["data"]["attachments"];
    assert_eq!(attachments[0]["status"], "succeeded", "{attachments}");
    assert_eq!(
        attachments[0]["sha256"],
        sha256_hex(&body_of(VENDOR_BUCKET, "naïve 文件.bin"))
    );
    assert_eq!(attachments[1]["error_code"], "access_denied");
    let message = attachments[1]["error_message"].as_str().unwrap();
    assert!(message.contains(OUR_ACCOUNT), "{message}");
    assert_eq!(attachments[2]["error_code"], "not_found", "{attachments}");
    assert!(world.iam.requests().is_empty(), "no token is minted");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activation_checks_identifier_and_grant() {
    let world = GcpWorld::start(8, 10).await;
    let team = &world.deployment.team;
    let settings = world.settings(team).await;
    let identifier = settings["identifier"].as_str().unwrap().to_owned();
    assert_eq!(identifier.len(), 8, "{settings}");
    assert!(
        identifier
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_eq!(settings["our_service_account"], OUR_ACCOUNT);
    assert_eq!(
        world.settings(team).await["identifier"],
        identifier.as_str()
    );

    // A service account without the identifier is rejected before any
    // token request.
    let (status, error) = world
        .link(
            team,
            "reader-account@customer-project.iam.gserviceaccount.com",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "invalid_service_account");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("`{identifier}`")), "{message}");
    assert!(
        message.contains(&format!("attache-{identifier}")),
        "{message}"
    );
    assert!(world.iam.requests().is_empty());

    // A service account our service account may not impersonate is
    // rejected with the missing grant.
    let account = world.team_account(team, "customer-project").await;
    let (status, error) = world.link(team, &account).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "gcp_link_failed");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("roles/iam.serviceAccountTokenCreator"),
        "{message}"
    );
    assert!(message.contains(OUR_ACCOUNT), "{message}");
    assert_eq!(world.settings(team).await["impersonation_active"], false);

    // Once granted, activation mints a token with the read-only scope.
    world.grants.allow_read(&account, TEAM_BUCKET);
    world.grants.allow_impersonation(OUR_ACCOUNT, &account);
    let (status, settings) = world.link(team, &account).await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    let last = world.iam.requests().pop().unwrap();
    assert_eq!(last.service_account, account);
    assert_eq!(
        last.body["scope"],
        json!(["https://www.googleapis.com/auth/devstorage.read_only"])
    );
    assert_eq!(last.body["lifetime"], "3600s");

    let verify = |uri: String| {
        world.request(
            team,
            Method::POST,
            "/v1/integrations/gcp/verify",
            Some(json!({ "uri": uri })),
        )
    };
    let (status, report) = verify(uri(TEAM_BUCKET, "hash#mark")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["access_path"], "impersonated");
    let (_, report) = verify(uri(VENDOR_BUCKET, "plain.txt")).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["steps"][1]["code"], "access_denied", "{report}");

    // Deactivating returns the team to cross-project access.
    let (status, settings) = world
        .request(team, Method::DELETE, "/v1/integrations/gcp", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["impersonation_active"], false);
    let (_, report) = verify(uri(VENDOR_BUCKET, "plain.txt")).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["access_path"], "cross_project");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_grant_fails_without_fallback() {
    let world = GcpWorld::start(8, 10).await;
    let team = &world.deployment.team;
    let account = world.link_team(team).await;
    // Our own account may read this bucket too, yet it is never used for
    // an impersonating team.
    world.grants.allow_read(OUR_ACCOUNT, TEAM_BUCKET);
    world.grants.revoke_impersonation(OUR_ACCOUNT, &account);

    let payload = world.run_task(team, &[uri(TEAM_BUCKET, "plain.txt")]).await;

    let attachment = &payload["data"]["attachments"][0];
    assert_eq!(
        attachment["error_code"], "impersonation_denied",
        "{attachment}"
    );
    let message = attachment["error_message"].as_str().unwrap();
    assert!(message.contains(&account), "{message}");
    assert!(
        message.contains("roles/iam.serviceAccountTokenCreator"),
        "{message}"
    );
    assert!(
        world.storage.reads().is_empty(),
        "{:?}",
        world.storage.reads()
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_transfer_fails_the_checksum_and_is_retried() {
    let world = GcpWorld::start(8, 10).await;
    let team = world.deployment.create_team("cross-project").await;
    world.storage.corrupt_next_get();
    let object = "dir/sub dir/é-ü.txt";

    let payload = world.run_task(&team, &[uri(VENDOR_BUCKET, object)]).await;

    let attachment = &payload["data"]["attachments"][0];
    assert_eq!(attachment["status"], "succeeded", "{attachment}");
    assert_eq!(
        attachment["sha256"],
        sha256_hex(&body_of(VENDOR_BUCKET, object))
    );
    let rows = world
        .deployment
        .database()
        .await
        .query("SELECT attempts FROM attachments", &[])
        .await
        .unwrap();
    let attempts: i32 = rows[0].get(0);
    assert_eq!(attempts, 2, "the corrupted first attempt was retried");
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
async fn concurrent_fetches_mint_one_token() {
    let world = GcpWorld::start(200, 200).await;
    let team = &world.deployment.team;
    let account = world.link_team(team).await;
    // Activation's own token is minted uncached, so the fetches start
    // from a cold cache.
    let before = world.iam.requests().len();

    let uris: Vec<String> = (0..200)
        .map(|index| uri(TEAM_BUCKET, OBJECT_NAMES[index % OBJECT_NAMES.len()]))
        .collect();
    let payload = world.run_task(team, &uris).await;

    let attachments = payload["data"]["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 200);
    for attachment in attachments {
        assert_eq!(attachment["status"], "succeeded", "{attachment}");
    }
    let minted: Vec<_> = world.iam.requests().split_off(before);
    assert_eq!(minted.len(), 1, "one generateAccessToken for 200 fetches");
    assert_eq!(minted[0].service_account, account);
    world.stop().await;
}
