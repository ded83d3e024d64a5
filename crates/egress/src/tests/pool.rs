//! The pool and the guard against loopback servers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::proxy;
use super::servers::{Recorder, ScriptedLookup, closed_port, pool, settings};
use crate::guard::AddressClass;
use crate::member::MemberSpec;
use crate::resolver::SystemLookup;
use crate::{ConfigError, Egress, EgressArgs, SendError, Sent};

const MEMBER_IPS: [&str; 5] = [
    "127.0.0.11",
    "127.0.0.12",
    "127.0.0.13",
    "127.0.0.14",
    "127.0.0.15",
];

fn member_ips() -> Vec<IpAddr> {
    MEMBER_IPS.iter().map(|ip| ip.parse().unwrap()).collect()
}

fn local_members() -> Vec<String> {
    MEMBER_IPS.iter().map(|ip| format!("local:{ip}")).collect()
}

fn denied_class(sent: &Sent) -> Option<AddressClass> {
    match &sent.result {
        Err(SendError::Forbidden(denied)) => Some(denied.class),
        _ => None,
    }
}

async fn post(egress: &crate::Egress, url: url::Url) -> Sent {
    egress
        .post(url, HeaderMap::new(), Bytes::from_static(b"{}"))
        .await
}

#[tokio::test]
async fn redirect_to_a_denied_literal_is_refused() {
    let server = Recorder::start(None).await;
    let egress = pool(&[], Arc::new(SystemLookup));
    for (target, class) in [
        ("http://10.1.2.3/secret", AddressClass::Private),
        (
            "http://169.254.169.254/latest/meta-data/",
            AddressClass::LinkLocal,
        ),
        ("http://[::ffff:192.168.0.1]/", AddressClass::Private),
    ] {
        let mut url = server.url("/redirect");
        url.query_pairs_mut().append_pair("to", target);
        let sent = egress.get(url).await;
        assert_eq!(denied_class(&sent), Some(class), "{target}");
        assert_eq!(sent.member.as_deref(), Some("direct"));
    }
}

#[tokio::test]
async fn redirect_to_a_name_resolving_privately_is_refused() {
    let server = Recorder::start(None).await;
    let lookup = ScriptedLookup::new("internal.test", &[&["10.0.0.5"]]);
    let egress = pool(&[], lookup.clone());
    let mut url = server.url("/redirect");
    let target = format!("http://internal.test:{}/record", server.addr.port());
    url.query_pairs_mut().append_pair("to", &target);

    let sent = egress.get(url).await;
    assert_eq!(denied_class(&sent), Some(AddressClass::Private));
    assert_eq!(*lookup.calls.lock().unwrap(), 1);
    assert!(server.peers().is_empty(), "nothing reached the recorder");
}

#[tokio::test]
async fn rebinding_answer_cannot_reach_a_denied_address() {
    let server = Recorder::start(None).await;
    let lookup = ScriptedLookup::new("rebind.test", &[&["127.0.0.1"], &["10.0.0.7"]]);
    let egress = pool(&[], lookup.clone());
    let url: url::Url = format!("http://rebind.test:{}/record", server.addr.port())
        .parse()
        .unwrap();

    let first = post(&egress, url.clone()).await;
    assert_eq!(first.result.unwrap().status(), StatusCode::NO_CONTENT);
    let second = post(&egress, url).await;
    assert_eq!(denied_class(&second), Some(AddressClass::Private));
    assert_eq!(
        *lookup.calls.lock().unwrap(),
        2,
        "each connection resolved again"
    );
    assert_eq!(server.peers().len(), 1);
}

#[tokio::test]
async fn mixed_public_and_private_answers_are_refused() {
    let server = Recorder::start(None).await;
    let lookup = ScriptedLookup::new("mixed.test", &[&["127.0.0.1", "192.168.4.4"]]);
    let egress = pool(&[], lookup);
    let url: url::Url = format!("http://mixed.test:{}/record", server.addr.port())
        .parse()
        .unwrap();
    assert_eq!(
        denied_class(&post(&egress, url).await),
        Some(AddressClass::Private)
    );
    assert!(server.peers().is_empty());
}

#[tokio::test]
async fn requests_spread_over_every_member() {
    let server = Recorder::start(Some(member_ips())).await;
    let members = local_members();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let egress = pool(&members, Arc::new(SystemLookup));
    let url = server.url("/record");

    let sent: Vec<Sent> = futures_util::stream::iter(0..200)
        .map(|_| post(&egress, url.clone()))
        .buffer_unordered(20)
        .collect()
        .await;
    let mut per_member: HashMap<String, usize> = HashMap::new();
    for sent in sent {
        assert_eq!(sent.result.unwrap().status(), StatusCode::NO_CONTENT);
        *per_member.entry(sent.member.unwrap()).or_default() += 1;
    }

    let peers = server.peers();
    assert_eq!(peers.len(), 200);
    assert!(
        peers.iter().all(|peer| member_ips().contains(peer)),
        "{peers:?}"
    );
    assert_eq!(per_member.len(), 5, "{per_member:?}");
    for (member, count) in &per_member {
        assert!(
            *count >= 20,
            "{member} carried only {count} of 200: {per_member:?}"
        );
    }
    assert!(egress.members().iter().all(|member| member.healthy));
}

#[tokio::test]
async fn unusable_member_is_skipped_and_reported() {
    let server = Recorder::start(Some(member_ips())).await;
    let broken = format!("proxy:http://127.0.0.1:{}", closed_port().await);
    let mut members = local_members();
    members.push(broken.clone());
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let egress = pool(&members, Arc::new(SystemLookup));

    for _ in 0..100 {
        let sent = post(&egress, server.url("/record")).await;
        assert_eq!(sent.result.unwrap().status(), StatusCode::NO_CONTENT);
        assert_ne!(sent.member.as_deref(), Some(broken.as_str()));
    }
    assert_eq!(server.peers().len(), 100);
    let statuses = egress.members();
    let proxy = statuses
        .iter()
        .find(|member| member.name.starts_with("proxy:"))
        .unwrap();
    assert!(!proxy.healthy, "{proxy:?}");
    assert!(proxy.consecutive_failures >= 3, "{proxy:?}");
    assert_eq!(statuses.iter().filter(|member| member.healthy).count(), 5);
}

#[tokio::test]
async fn all_members_unusable_sends_nothing() {
    let server = Recorder::start(None).await;
    let first = format!("proxy:http://127.0.0.1:{}", closed_port().await);
    let second = format!("proxy:http://127.0.0.1:{}", closed_port().await);
    let egress = pool(&[&first, &second], Arc::new(SystemLookup));

    for _ in 0..5 {
        let sent = post(&egress, server.url("/record")).await;
        assert!(
            matches!(sent.result, Err(SendError::Unavailable)),
            "{:?}",
            sent.result.err()
        );
    }
    assert!(server.peers().is_empty(), "no request went out directly");
    assert!(egress.members().iter().all(|member| !member.healthy));
}

#[tokio::test]
async fn proxy_member_carries_the_request() {
    let server = Recorder::start(None).await;
    let proxy_source: IpAddr = "127.0.0.20".parse().unwrap();
    let proxy = proxy::start(proxy_source).await;
    let member = format!("proxy:http://{proxy}");
    let egress = pool(&[&member], Arc::new(SystemLookup));

    let sent = post(&egress, server.url("/record")).await;
    assert_eq!(sent.result.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(sent.member, Some(format!("proxy:{proxy}")));
    assert_eq!(server.peers(), [proxy_source]);
}

#[tokio::test]
async fn proxy_member_still_vets_the_destination() {
    let proxy = proxy::start("127.0.0.20".parse().unwrap()).await;
    let lookup = ScriptedLookup::new("internal.test", &[&["172.20.0.9"]]);
    let egress = pool(&[&format!("proxy:http://{proxy}")], lookup);

    let by_name = post(&egress, "http://internal.test/x".parse().unwrap()).await;
    assert_eq!(denied_class(&by_name), Some(AddressClass::Private));
    let by_literal = post(&egress, "http://[fd00::1]/x".parse().unwrap()).await;
    assert_eq!(denied_class(&by_literal), Some(AddressClass::UniqueLocal));
}

#[test]
fn local_member_the_host_lacks_fails_the_start() {
    // 203.0.113.10 is a documentation address that no interface of a test
    // host has; building the pool only binds a socket to it.
    let members: Vec<MemberSpec> = ["local:127.0.0.11", "local:203.0.113.10"]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
    let args = EgressArgs {
        egress_members: members,
        egress_allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        egress_failure_threshold: 3,
        ..EgressArgs::default()
    };

    let error = match Egress::with_lookup(&args, &settings(), Arc::new(SystemLookup)) {
        Ok(_) => panic!("the pool was built with an address this host lacks"),
        Err(error) => error,
    };
    let ConfigError::LocalAddress { address, source } = &error else {
        panic!("expected a local address error, got {error}");
    };
    assert_eq!(address.to_string(), "203.0.113.10");
    assert_eq!(source.kind(), std::io::ErrorKind::AddrNotAvailable);
    let message = error.to_string();
    assert!(message.contains("ATTACHE_EGRESS_MEMBERS"), "{message}");
    assert!(message.contains("local:203.0.113.10"), "{message}");
    assert!(message.contains("assign the address"), "{message}");
}
