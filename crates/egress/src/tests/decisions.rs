//! The guard's decisions on addresses and URL spellings. Nothing here
//! connects anywhere.

use std::net::IpAddr;

use url::Url;

use crate::guard::{AddressClass, DestinationPolicy};

/// URL spellings and the class the guard must deny them as, or `None` when
/// the URL's literal host is public (or a name, judged at resolution).
const CASES: &[(&str, Option<AddressClass>)] = &[
    ("http://127.0.0.1/", Some(AddressClass::Loopback)),
    ("http://127.1/", Some(AddressClass::Loopback)),
    ("http://2130706433/", Some(AddressClass::Loopback)),
    ("http://0x7f000001/", Some(AddressClass::Loopback)),
    ("http://0177.0.0.1/", Some(AddressClass::Loopback)),
    (
        "http://127.255.255.254:8080/x",
        Some(AddressClass::Loopback),
    ),
    ("http://[::1]/", Some(AddressClass::Loopback)),
    ("http://[::ffff:127.0.0.1]/", Some(AddressClass::Loopback)),
    ("https://[::ffff:7f00:1]/", Some(AddressClass::Loopback)),
    ("http://[::127.0.0.1]/", Some(AddressClass::Loopback)),
    ("http://[64:ff9b::7f00:1]/", Some(AddressClass::Loopback)),
    ("http://[2002:7f00:1::]/", Some(AddressClass::Loopback)),
    (
        "http://169.254.169.254/latest/meta-data/",
        Some(AddressClass::LinkLocal),
    ),
    (
        "http://[::ffff:169.254.169.254]/",
        Some(AddressClass::LinkLocal),
    ),
    (
        "http://[64:ff9b::a9fe:a9fe]/",
        Some(AddressClass::LinkLocal),
    ),
    ("http://[2002:a9fe:a9fe::1]/", Some(AddressClass::LinkLocal)),
    ("http://[fe80::1]/", Some(AddressClass::LinkLocal)),
    ("http://10.0.0.1/", Some(AddressClass::Private)),
    ("http://[::ffff:10.0.0.1]/", Some(AddressClass::Private)),
    ("http://172.16.5.4/", Some(AddressClass::Private)),
    ("http://172.31.255.255/", Some(AddressClass::Private)),
    ("http://192.168.1.1/", Some(AddressClass::Private)),
    ("http://100.64.0.1/", Some(AddressClass::CarrierGradeNat)),
    (
        "http://100.127.255.255/",
        Some(AddressClass::CarrierGradeNat),
    ),
    ("http://0.0.0.0/", Some(AddressClass::Unspecified)),
    ("http://0/", Some(AddressClass::Unspecified)),
    ("http://[::]/", Some(AddressClass::Unspecified)),
    ("http://255.255.255.255/", Some(AddressClass::Broadcast)),
    ("http://224.0.0.1/", Some(AddressClass::Multicast)),
    ("http://239.255.255.250/", Some(AddressClass::Multicast)),
    ("http://[ff02::1]/", Some(AddressClass::Multicast)),
    ("http://192.0.2.10/", Some(AddressClass::Documentation)),
    ("http://198.51.100.7/", Some(AddressClass::Documentation)),
    ("http://203.0.113.9/", Some(AddressClass::Documentation)),
    ("http://[2001:db8::1]/", Some(AddressClass::Documentation)),
    ("http://[3fff::1]/", Some(AddressClass::Documentation)),
    ("http://198.18.0.1/", Some(AddressClass::Benchmarking)),
    ("http://198.19.255.255/", Some(AddressClass::Benchmarking)),
    ("http://240.0.0.1/", Some(AddressClass::Reserved)),
    ("http://192.0.0.8/", Some(AddressClass::Reserved)),
    ("http://192.88.99.1/", Some(AddressClass::Reserved)),
    ("http://[2001::1]/", Some(AddressClass::Reserved)),
    ("http://[100::1]/", Some(AddressClass::Reserved)),
    ("http://[64:ff9b:1::a00:1]/", Some(AddressClass::Reserved)),
    ("http://[4000::1]/", Some(AddressClass::Reserved)),
    ("http://[fc00::1]/", Some(AddressClass::UniqueLocal)),
    ("http://[fd12:3456::1]/", Some(AddressClass::UniqueLocal)),
    ("http://[fec0::1]/", Some(AddressClass::SiteLocal)),
    ("http://172.32.0.1/", None),
    ("http://100.128.0.1/", None),
    ("http://192.0.3.1/", None),
    ("http://8.8.8.8/", None),
    ("http://1.1.1.1:8080/x", None),
    ("http://[2606:4700::1111]/", None),
    ("http://[::ffff:8.8.8.8]/", None),
    ("http://[64:ff9b::808:808]/", None),
    ("http://[2002:808:808::]/", None),
    ("http://files.example.com/a.pdf", None),
    ("http://localhost/", None),
];

#[test]
fn url_spellings_get_their_decisions() {
    let policy = DestinationPolicy::default();
    for (text, expected) in CASES {
        let url = Url::parse(text).unwrap();
        let decision = policy.check_literal(&url).err().map(|denied| denied.class);
        assert_eq!(decision, *expected, "{text}");
    }
    assert!(CASES.len() >= 40);
}

#[test]
fn denial_names_the_host_as_written_and_the_class() {
    let policy = DestinationPolicy::default();
    let url = Url::parse("http://[::ffff:169.254.169.254]/latest").unwrap();
    let denied = policy.check_literal(&url).unwrap_err();
    assert_eq!(denied.host, "[::ffff:a9fe:a9fe]");
    assert_eq!(
        denied.to_string(),
        "the destination `[::ffff:a9fe:a9fe]` is a link-local address, which Attaché does not connect to"
    );
}

#[test]
fn allowed_ranges_override_the_class() {
    let policy = DestinationPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
    assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()));
    assert_eq!(policy.check(ip("10.0.0.1")), Err(AddressClass::Private));
    assert_eq!(policy.check(ip("::1")), Err(AddressClass::Loopback));
    assert_eq!(
        policy.check(ip("169.254.169.254")),
        Err(AddressClass::LinkLocal)
    );
}

#[test]
fn a_name_with_any_denied_answer_is_denied() {
    let policy = DestinationPolicy::default();
    let public: IpAddr = "8.8.8.8".parse().unwrap();
    let private: IpAddr = "10.1.2.3".parse().unwrap();
    assert!(policy.check_all("mixed.example", &[public]).is_ok());
    let denied = policy
        .check_all("mixed.example", &[public, private])
        .unwrap_err();
    assert_eq!(denied.host, "mixed.example");
    assert_eq!(denied.class, AddressClass::Private);
    assert!(
        !denied.to_string().contains("10.1.2.3"),
        "the resolved address stays hidden"
    );
}
