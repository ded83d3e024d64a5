//! Tests of attachment URI parsing. The table of cases is in `cases`, and
//! `generated` checks that no input makes the parser panic.

mod cases;
mod generated;

use cases::cases;

use super::*;

#[test]
fn parse_table() {
    let mut failures = Vec::new();
    for (input, expected) in cases() {
        let actual = parse(&input).map_err(|error| error.code());
        if actual != expected {
            failures.push(format!("{input:?}: expected {expected:?}, got {actual:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn nfc_and_nfd_keys_differ() {
    let composed = parse("s3://bucket/caf\u{e9}").unwrap();
    let decomposed = parse("s3://bucket/cafe\u{301}").unwrap();
    assert_ne!(composed, decomposed);
}

#[test]
fn error_messages_state_problem_and_fix() {
    for (input, _) in cases() {
        if let Err(error) = parse(&input) {
            assert!(
                error.message().contains(": "),
                "message for {input:?} has no fix after a colon: {}",
                error.message()
            );
            assert_eq!(error.to_string(), error.message());
        }
    }
}

#[test]
fn error_messages_omit_secrets() {
    let inputs = [
        "https://acct.blob.core.windows.net/container/f?sv=2022-11-02&sig=SECRET",
        "https://bucket.s3.amazonaws.com/k?versionId=SECRET",
        "https://user:SECRET@example.com/f",
        "https://SECRET@example.com/f",
        "s3://user:SECRET@bucket/k",
        "gs://SECRET@bucket/o",
        "http://acct.blob.core.windows.net/container/f?sig=SECRET",
    ];
    for input in inputs {
        let error = parse(input).unwrap_err();
        assert!(
            !error.message().contains("SECRET"),
            "message for {input:?} repeats the secret: {}",
            error.message()
        );
    }
}

#[test]
fn unsupported_scheme_message_lists_forms() {
    let error = parse("ftp://example.com/f").unwrap_err();
    assert!(error.message().contains("`ftp`"), "{}", error.message());
    assert!(
        error.message().contains("s3://bucket/key"),
        "{}",
        error.message()
    );
    assert!(
        error.message().contains("gs://bucket/object"),
        "{}",
        error.message()
    );
}

#[test]
fn provider_names() {
    let names = [
        (Provider::S3, "s3"),
        (Provider::Gcs, "gcs"),
        (Provider::AzureBlob, "azure_blob"),
        (Provider::Http, "http"),
    ];
    for (provider, name) in names {
        assert_eq!(provider.as_str(), name);
        assert_eq!(provider.to_string(), name);
        assert_eq!(
            serde_json::to_string(&provider).unwrap(),
            format!("\"{name}\"")
        );
        let parsed: Provider = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(parsed, provider);
    }
}

#[test]
fn reference_reports_provider() {
    let inputs = [
        ("s3://bucket/k", Provider::S3),
        ("https://bucket.s3.amazonaws.com/k", Provider::S3),
        ("gs://bucket/o", Provider::Gcs),
        (
            "https://acct.blob.core.windows.net/c0ntainer/b",
            Provider::AzureBlob,
        ),
        ("https://example.com/f", Provider::Http),
    ];
    for (input, provider) in inputs {
        let reference = AttachmentRef::parse(input).unwrap();
        assert_eq!(reference.provider(), provider, "{input}");
    }
}

#[test]
fn http_url_needs_host_after_two_slashes() {
    for input in [
        "http:///127.0.0.1:18490/report.txt",
        "https:///a",
        "http://\\a/b",
    ] {
        let error = parse(input).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidUri, "{input}");
        assert!(
            error.message().contains("no host"),
            "{input}: {}",
            error.message()
        );
    }
}

#[test]
fn http_url_port_zero_is_rejected() {
    let error = parse("http://127.0.0.1:0/a").unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidUri);
    assert!(error.message().contains("port 0"), "{}", error.message());
}

#[test]
fn azure_blob_dot_segment_is_named() {
    let error = parse(
        "https://acct.blob.core.windows.net/container/a%2F..%2F..%2F..%2Fvictim%2Fprivate%2Fsecret.txt",
    )
    .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidUri);
    assert!(
        error.message().contains("Azure blob name"),
        "{}",
        error.message()
    );
    assert!(error.message().contains("`..`"), "{}", error.message());

    let error = parse("https://acct.blob.core.windows.net/container/a//b").unwrap_err();
    assert!(
        error.message().contains("empty path segment"),
        "{}",
        error.message()
    );
}

#[test]
fn one_character_names_are_singular() {
    let inputs = [
        "s3://a/k",
        "gs://a/o",
        "gs://./o",
        "https://acct.blob.core.windows.net/a/f",
    ];
    for input in inputs {
        let message = parse(input).unwrap_err().message().to_owned();
        assert!(message.contains("has 1 character,"), "{input}: {message}");
        assert!(!message.contains("1 characters"), "{input}: {message}");
    }
    let message = parse("s3://ab/k").unwrap_err().message().to_owned();
    assert!(message.contains("has 2 characters,"), "{message}");
}

#[test]
fn provider_names_with_article() {
    let names = [
        (Provider::S3, "an S3"),
        (Provider::Gcs, "a GCS"),
        (Provider::AzureBlob, "an Azure Blob Storage"),
        (Provider::Http, "an http or https"),
    ];
    for (provider, name) in names {
        assert_eq!(provider.name_with_article(), name);
    }
}
