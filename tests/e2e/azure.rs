//! Azure blob attachments against Azurite: anonymous reads for unlinked
//! teams, the admin-consent flow, tenant tokens for linked teams, the
//! token cache and the egress pool.
//!
//! Azurite checks no principal's access, so `BlobFront` (see
//! support/azure.rs) decides which tenant's token may read which
//! container, as Azure RBAC would, and `MockTokens` issues tokens only to
//! tenants that consented.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use attache_azure::AzureArgs;
use attache_producer::keys::TeamCredentials;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::azure::{
    ACCOUNT, Azurite, BlobFront, CLIENT_ID, CLIENT_SECRET, ContainerSpec, Directory, MockTokens,
};
use crate::support::{Deployment, Options, Receiver, sha256_hex};

/// Tenants of two customers.
const TENANT_A: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const TENANT_B: &str = "bbbbbbbb-0000-4000-8000-00000000000b";
/// A public container that no tenant's application was assigned a role on.
const PUBLIC: &str = "public-docs";
/// A private container that tenant A's application may read.
const PRIVATE_A: &str = "private-a";
/// A private container that tenant B's application may read.
const PRIVATE_B: &str = "private-b";
/// A private container of many blobs that tenant A's application may read.
const BULK: &str = "bulk-a";
/// The consent redirect URL registered for our application.
const REDIRECT_URL: &str = "https://attache.example/v1/integrations/azure/consent";
/// Source addresses of the egress pool.
const MEMBER_IPS: [&str; 2] = ["127.0.0.31", "127.0.0.32"];
/// Blob names whose characters must reach Blob Storage unchanged.
const BLOB_NAMES: [&str; 7] = [
    "plain.txt",
    "with space.txt",
    "hash#mark",
    "question?mark=1&x",
    "dir/sub dir/é-ü.txt",
    "percent%2Fand%25",
    "naïve 文件.bin",
];
/// Blobs in `BULK`.
const BULK_BLOBS: usize = 200;

/// Characters left as they are in a URL path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Returns the bytes stored for `blob` in `container`, distinct per
/// container so a read from the wrong container shows up as a wrong digest.
fn body_of(container: &str, blob: &str) -> Vec<u8> {
    format!("{container}:{blob}:").repeat(40).into_bytes()
}

/// Returns the attachment URL of a blob, each name segment encoded once.
fn blob_uri(container: &str, blob: &str) -> String {
    let encoded: Vec<String> = blob
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    format!(
        "https://{ACCOUNT}.blob.core.windows.net/{container}/{}",
        encoded.join("/")
    )
}

fn bulk_name(index: usize) -> String {
    format!("item {index}.txt")
}

/// Azurite, the fronts our clients talk to, and a deployment using them.
struct AzureWorld {
    _azurite: Azurite,
    directory: Arc<Directory>,
    tokens: MockTokens,
    front: BlobFront,
    deployment: Deployment,
}

impl AzureWorld {
    async fn start(fetch_concurrency: u16, max_attachments_per_task: usize) -> Self {
        let azurite = Azurite::start().await;
        let named = |container: &'static str| -> Vec<(&'static str, Vec<u8>)> {
            BLOB_NAMES
                .iter()
                .map(|name| (*name, body_of(container, name)))
                .collect()
        };
        let bulk_names: Vec<String> = (0..BULK_BLOBS).map(bulk_name).collect();
        let sas = azurite
            .create(&[
                ContainerSpec {
                    name: PUBLIC,
                    public: true,
                    blobs: named(PUBLIC),
                },
                ContainerSpec {
                    name: PRIVATE_A,
                    public: false,
                    blobs: named(PRIVATE_A),
                },
                ContainerSpec {
                    name: PRIVATE_B,
                    public: false,
                    blobs: named(PRIVATE_B),
                },
                ContainerSpec {
                    name: BULK,
                    public: false,
                    blobs: bulk_names
                        .iter()
                        .map(|name| (name.as_str(), body_of(BULK, name)))
                        .collect(),
                },
            ])
            .await;
        let directory = Arc::new(Directory::default());
        directory.allow_read(TENANT_A, PRIVATE_A);
        directory.allow_read(TENANT_A, BULK);
        directory.allow_read(TENANT_B, PRIVATE_B);
        let tokens = MockTokens::start(directory.clone()).await;
        let front = BlobFront::start(&azurite, directory.clone(), sas).await;

        let azure = AzureArgs {
            azure_client_id: Some(CLIENT_ID.to_owned()),
            azure_client_secret: Some(CLIENT_SECRET.to_owned()),
            azure_authority: tokens.url().parse().unwrap(),
            azure_redirect_url: Some(REDIRECT_URL.parse().unwrap()),
            azure_blob_endpoint_template: front.template(),
        };
        let mut limits = Options::default().limits;
        limits.max_attachments_per_task = max_attachments_per_task;
        let deployment = Deployment::start(Options {
            azure,
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
            _azurite: azurite,
            directory,
            tokens,
            front,
            deployment,
        }
    }

    async fn request(
        &self,
        team: &TeamCredentials,
        method: Method,
        path: &str,
    ) -> (StatusCode, Value) {
        self.request_with(team, method, path, None).await
    }

    async fn request_with(
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
            .request(team, Method::GET, "/v1/integrations/azure")
            .await;
        assert_eq!(status, StatusCode::OK, "{settings}");
        settings
    }

    /// Starts admin consent for `team` and returns the consent URL.
    async fn connect(&self, team: &TeamCredentials) -> url::Url {
        let (status, body) = self
            .request(team, Method::POST, "/v1/integrations/azure/connect")
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["consent_url"].as_str().unwrap().parse().unwrap()
    }

    /// Sends the browser's redirect from Microsoft, without an API key.
    async fn redirect(&self, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .deployment
            .http
            .get(format!(
                "http://{}/v1/integrations/azure/consent",
                self.deployment.api
            ))
            .query(query)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Lets `tenant` consent and links `team` to it.
    async fn link(&self, team: &TeamCredentials, tenant: &str) {
        self.directory.consent(tenant);
        let state = state_of(&self.connect(team).await);
        let (status, body) = self
            .redirect(&[
                ("tenant", tenant),
                ("admin_consent", "True"),
                ("state", &state),
            ])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["tenant"], tenant);
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

    /// Checks that every token and blob request, and every recorded
    /// attachment, went through an egress pool member.
    async fn assert_all_through_egress(&self) {
        let members: HashSet<IpAddr> = MEMBER_IPS.iter().map(|ip| ip.parse().unwrap()).collect();
        assert!(!self.front.requests().is_empty() || !self.tokens.requests().is_empty());
        for request in self.front.requests() {
            assert!(
                members.contains(&request.peer),
                "blob request from {}",
                request.peer
            );
        }
        for request in self.tokens.requests() {
            assert!(
                members.contains(&request.peer),
                "token request from {}",
                request.peer
            );
        }
        let rows = self
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
    }

    async fn stop(self) {
        self.deployment.stop().await;
    }
}

/// Returns the `state` of a consent URL.
fn state_of(url: &url::Url) -> String {
    url.query_pairs()
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned())
        .expect("the consent URL has a state")
}

fn assert_succeeded(attachment: &Value, container: &str, blob: &str) {
    let body = body_of(container, blob);
    assert_eq!(attachment["status"], "succeeded", "{blob}: {attachment}");
    assert_eq!(attachment["sha256"], sha256_hex(&body), "{blob}");
    assert_eq!(attachment["size_bytes"], body.len(), "{blob}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlinked_team_reads_public_containers_anonymously() {
    let world = AzureWorld::start(8, 10).await;
    let team = &world.deployment.team;
    let mut uris: Vec<String> = BLOB_NAMES
        .iter()
        .map(|name| blob_uri(PUBLIC, name))
        .collect();
    uris.push(blob_uri(PRIVATE_A, "plain.txt"));
    uris.push(blob_uri(PUBLIC, "missing.txt"));
    let payload = world.run_task(team, &uris).await;

    let attachments = payload["data"]["attachments"].as_array().unwrap();
    for (name, attachment) in BLOB_NAMES.iter().zip(attachments) {
        assert_succeeded(attachment, PUBLIC, name);
    }
    let private = &attachments[BLOB_NAMES.len()];
    assert_eq!(private["error_code"], "azure_not_linked", "{private}");
    let message = private["error_message"].as_str().unwrap();
    assert!(message.contains("not public"), "{message}");
    assert!(
        message.contains("/v1/integrations/azure/connect"),
        "{message}"
    );
    let missing = &attachments[BLOB_NAMES.len() + 1];
    assert_eq!(missing["error_code"], "not_found", "{missing}");

    assert!(world.tokens.requests().is_empty(), "no token is requested");
    assert!(
        world.front.requests().iter().all(|r| r.tenant.is_none()),
        "{:?}",
        world.front.requests()
    );
    world.assert_all_through_egress().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linked_team_reads_only_with_its_tenant_token() {
    let world = AzureWorld::start(8, 10).await;
    let team = &world.deployment.team;
    // Tenant B consented too, so a token for B would be issued: the
    // team's fetches must still ask only for A, the tenant of its consent.
    world.directory.consent(TENANT_B);
    world.link(team, TENANT_A).await;

    let mut uris: Vec<String> = BLOB_NAMES
        .iter()
        .map(|name| blob_uri(PRIVATE_A, name))
        .collect();
    uris.push(blob_uri(PUBLIC, "plain.txt"));
    uris.push(blob_uri(PRIVATE_B, "plain.txt"));
    let payload = world.run_task(team, &uris).await;

    let attachments = payload["data"]["attachments"].as_array().unwrap();
    for (name, attachment) in BLOB_NAMES.iter().zip(attachments) {
        assert_succeeded(attachment, PRIVATE_A, name);
    }
    // A public container is not read anonymously once the team linked
    // Azure: the tenant token has no role there, so access is denied.
    for denied in &attachments[BLOB_NAMES.len()..] {
        assert_eq!(denied["error_code"], "access_denied", "{denied}");
        let message = denied["error_message"].as_str().unwrap();
        assert!(message.contains("Storage Blob Data Reader"), "{message}");
        assert!(message.contains(CLIENT_ID), "{message}");
        assert!(message.contains(TENANT_A), "{message}");
    }
    let requests = world.front.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.tenant.as_deref() == Some(TENANT_A)),
        "every blob request carried tenant A's token: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.container == PUBLIC),
        "{requests:?}"
    );
    let tenants: HashSet<String> = world
        .tokens
        .requests()
        .into_iter()
        .map(|request| request.tenant)
        .collect();
    assert_eq!(tenants, HashSet::from([TENANT_A.to_owned()]));

    // Verification runs the same access path without storing anything.
    let verify = |uri: String| {
        world.request_with(
            team,
            Method::POST,
            "/v1/integrations/azure/verify",
            Some(json!({"uri": uri})),
        )
    };
    let (status, report) = verify(blob_uri(PRIVATE_A, "dir/sub dir/é-ü.txt")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["access_path"], "service_principal");
    let (_, report) = verify(blob_uri(PUBLIC, "plain.txt")).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["steps"][1]["code"], "access_denied", "{report}");
    world.assert_all_through_egress().await;

    // After unlinking, the public container is read anonymously again.
    let (status, unlinked) = world
        .request(team, Method::DELETE, "/v1/integrations/azure")
        .await;
    assert_eq!(status, StatusCode::OK, "{unlinked}");
    assert_eq!(unlinked["linked"], false);
    assert_eq!(unlinked["tenant"], Value::Null);
    let note = unlinked["note"].as_str().unwrap();
    assert!(note.contains("Enterprise applications"), "{note}");
    let before = world.front.requests().len();
    let payload = world
        .run_task(
            team,
            &[
                blob_uri(PUBLIC, "plain.txt"),
                blob_uri(PRIVATE_A, "plain.txt"),
            ],
        )
        .await;
    let attachments = &payload["data"]["attachments"];
    assert_succeeded(&attachments[0], PUBLIC, "plain.txt");
    assert_eq!(
        attachments[1]["error_code"], "azure_not_linked",
        "{attachments}"
    );
    let after = world.front.requests();
    assert!(
        after[before..].iter().all(|r| r.tenant.is_none()),
        "{after:?}"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consent_links_only_with_a_valid_state() {
    let world = AzureWorld::start(8, 10).await;
    let team = &world.deployment.team;
    let settings = world.settings(team).await;
    assert_eq!(settings["linked"], false, "{settings}");
    assert_eq!(settings["role"], "Storage Blob Data Reader");
    assert_eq!(settings["client_id"], CLIENT_ID);

    let url = world.connect(team).await;
    assert_eq!(url.path(), "/organizations/v2.0/adminconsent");
    assert!(url.as_str().starts_with(&world.tokens.url()), "{url}");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert!(pairs.contains(&("client_id".to_owned(), CLIENT_ID.to_owned())));
    assert!(pairs.contains(&(
        "scope".to_owned(),
        "https://storage.azure.com/.default".to_owned()
    )));
    assert!(pairs.contains(&("redirect_uri".to_owned(), REDIRECT_URL.to_owned())));
    let state = state_of(&url);
    assert!(state.len() >= 43, "{state}");

    // A tenant that did not consent refuses the token: not linked.
    let (status, error) = world
        .redirect(&[
            ("tenant", TENANT_A),
            ("admin_consent", "True"),
            ("state", &state),
        ])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "azure_consent_missing");
    assert_eq!(world.settings(team).await["linked"], false);

    // The state was used up by that attempt.
    world.directory.consent(TENANT_A);
    let (status, error) = world
        .redirect(&[
            ("tenant", TENANT_A),
            ("admin_consent", "True"),
            ("state", &state),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "consent_state_used");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("POST /v1/integrations/azure/connect"),
        "{message}"
    );

    // A forged state names no team.
    let (status, error) = world
        .redirect(&[
            ("tenant", TENANT_A),
            ("admin_consent", "True"),
            ("state", "forged"),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "consent_state_invalid");

    // An expired state is refused.
    let state = state_of(&world.connect(team).await);
    world
        .deployment
        .database()
        .await
        .execute(
            "UPDATE azure_consent_states SET expires_at = now() - interval '1 minute'
             WHERE used_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    let (status, error) = world
        .redirect(&[
            ("tenant", TENANT_A),
            ("admin_consent", "True"),
            ("state", &state),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "consent_state_expired");

    // A refused consent is reported with the next step.
    let state = state_of(&world.connect(team).await);
    let (status, error) = world
        .redirect(&[
            ("error", "access_denied"),
            (
                "error_description",
                "AADSTS65004: User declined to consent.",
            ),
            ("state", &state),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "azure_consent_refused");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("AADSTS65004"), "{message}");
    assert!(message.contains("administrator"), "{message}");
    let state = state_of(&world.connect(team).await);
    let (status, error) = world
        .redirect(&[
            ("tenant", TENANT_A),
            ("admin_consent", "False"),
            ("state", &state),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "azure_consent_refused");
    assert_eq!(world.settings(team).await["linked"], false);

    // A valid state links the team that requested it, and no other.
    let other = world.deployment.create_team("other").await;
    let state = state_of(&world.connect(team).await);
    let (status, linked) = world
        .redirect(&[
            ("tenant", TENANT_A),
            ("admin_consent", "True"),
            ("state", &state),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{linked}");
    assert_eq!(linked["linked"], true);
    let settings = world.settings(team).await;
    assert_eq!(settings["linked"], true, "{settings}");
    assert_eq!(settings["tenant"], TENANT_A);
    assert!(settings["linked_at"].is_string(), "{settings}");
    assert_eq!(world.settings(&other).await["linked"], false);

    // Tokens were requested only for the tenant the redirect named.
    assert!(
        world
            .tokens
            .requests()
            .iter()
            .all(|request| request.tenant == TENANT_A)
    );
    world.assert_all_through_egress().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_share_one_token_request() {
    let world = AzureWorld::start(64, BULK_BLOBS).await;
    let team = &world.deployment.team;
    world.link(team, TENANT_A).await;
    // The consent check sent one request, from the producer.
    assert_eq!(world.tokens.requests().len(), 1);

    let uris: Vec<String> = (0..BULK_BLOBS)
        .map(|index| blob_uri(BULK, &bulk_name(index)))
        .collect();
    let payload = world.run_task(team, &uris).await;
    let attachments = payload["data"]["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), BULK_BLOBS);
    for (index, attachment) in attachments.iter().enumerate() {
        assert_succeeded(attachment, BULK, &bulk_name(index));
    }
    assert_eq!(
        world.tokens.requests().len(),
        2,
        "the fetch-worker sent one token request: {:?}",
        world.tokens.requests()
    );
    world.assert_all_through_egress().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_tenant_token_fails_without_fallback() {
    let world = AzureWorld::start(8, 10).await;
    let team = &world.deployment.team;
    world.link(team, TENANT_A).await;
    // The application is removed from the tenant after the link: tenant A
    // now refuses tokens, and the worker's cache is still cold.
    world.directory.revoke(TENANT_A);

    let payload = world.run_task(team, &[blob_uri(PUBLIC, "plain.txt")]).await;
    let attachment = &payload["data"]["attachments"][0];
    assert_eq!(
        attachment["error_code"], "azure_consent_missing",
        "{attachment}"
    );
    let message = attachment["error_message"].as_str().unwrap();
    assert!(
        message.contains("/v1/integrations/azure/connect"),
        "{message}"
    );
    assert!(
        world.front.requests().is_empty(),
        "the public blob was not read anonymously: {:?}",
        world.front.requests()
    );
    world.stop().await;
}
