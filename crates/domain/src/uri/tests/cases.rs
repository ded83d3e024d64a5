//! The parsing table: each input with the reference or error code it must
//! produce.

use url::Url;

use crate::error_code::ErrorCode;
use crate::uri::{AttachmentRef, MAX_URI_BYTES};

pub(super) type Expected = Result<AttachmentRef, ErrorCode>;

fn s3(bucket: &str, key: &str) -> Expected {
    s3_in(bucket, key, None)
}

fn s3_in(bucket: &str, key: &str, region: Option<&str>) -> Expected {
    Ok(AttachmentRef::S3 {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        region: region.map(str::to_owned),
    })
}

fn gcs(bucket: &str, object: &str) -> Expected {
    Ok(AttachmentRef::Gcs {
        bucket: bucket.to_owned(),
        object: object.to_owned(),
    })
}

fn azure(account: &str, container: &str, blob: &str) -> Expected {
    Ok(AttachmentRef::AzureBlob {
        account: account.to_owned(),
        container: container.to_owned(),
        blob: blob.to_owned(),
    })
}

fn http(url: &str) -> Expected {
    Ok(AttachmentRef::Http {
        url: Url::parse(url).expect("test URLs are valid"),
    })
}

const INVALID: Expected = Err(ErrorCode::InvalidUri);
const UNSUPPORTED: Expected = Err(ErrorCode::UnsupportedScheme);

const AZ: &str = "https://acct.blob.core.windows.net";

/// Builds the parsing table: each input with the expected reference or error
/// code.
pub(super) fn cases() -> Vec<(String, Expected)> {
    let rows: Vec<(&str, Expected)> = vec![
        // s3:// keeps every byte of the key.
        ("s3://bucket/key.txt", s3("bucket", "key.txt")),
        ("S3://bucket/key.txt", s3("bucket", "key.txt")),
        ("s3://bucket/my file.pdf", s3("bucket", "my file.pdf")),
        ("s3://bucket/a+b.txt", s3("bucket", "a+b.txt")),
        ("s3://bucket/100%.txt", s3("bucket", "100%.txt")),
        ("s3://bucket/a%2Fb", s3("bucket", "a%2Fb")),
        ("s3://bucket/a%20b", s3("bucket", "a%20b")),
        ("s3://bucket/report#1.pdf", s3("bucket", "report#1.pdf")),
        ("s3://bucket/what?x=1", s3("bucket", "what?x=1")),
        ("s3://bucket/caf\u{e9}.txt", s3("bucket", "caf\u{e9}.txt")),
        (
            "s3://bucket/cafe\u{301}.txt",
            s3("bucket", "cafe\u{301}.txt"),
        ),
        ("s3://bucket//x", s3("bucket", "/x")),
        ("s3://bucket/a//b", s3("bucket", "a//b")),
        ("s3://bucket/a/./b/../c", s3("bucket", "a/./b/../c")),
        ("s3://bucket/ x", s3("bucket", " x")),
        ("s3://my.dotted.bucket/k", s3("my.dotted.bucket", "k")),
        ("s3://bucket", INVALID),
        ("s3://bucket/", INVALID),
        ("s3://bucket/dir/", INVALID),
        ("s3://bucket/   ", INVALID),
        ("s3:///key", INVALID),
        ("s3://Bucket/k", INVALID),
        ("s3://ab/k", INVALID),
        ("s3://-bucket/k", INVALID),
        ("s3://bucket-/k", INVALID),
        ("s3://my..bucket/k", INVALID),
        ("s3://under_score/k", INVALID),
        ("s3://192.168.5.4/k", INVALID),
        ("s3://user:secret@bucket/k", INVALID),
        ("s3:bucket/key", INVALID),
        // gs:// keeps every byte of the object name.
        ("gs://bucket/object.txt", gcs("bucket", "object.txt")),
        ("GS://bucket/object.txt", gcs("bucket", "object.txt")),
        ("gs://my_bucket/o", gcs("my_bucket", "o")),
        ("gs://a.b.c/o", gcs("a.b.c", "o")),
        ("gs://bucket/a#b?c", gcs("bucket", "a#b?c")),
        ("gs://bucket/./x", gcs("bucket", "./x")),
        (
            "gs://bucket/.well-known/other",
            gcs("bucket", ".well-known/other"),
        ),
        ("gs://bucket", INVALID),
        ("gs://bucket/dir/", INVALID),
        ("gs://bucket/.", INVALID),
        ("gs://bucket/..", INVALID),
        ("gs://bucket/.well-known/acme-challenge/token", INVALID),
        ("gs://goog-bucket/o", INVALID),
        ("gs://my-google-bucket/o", INVALID),
        ("gs://10.0.0.1/o", INVALID),
        ("gs://a..b/o", INVALID),
        ("gs://_bucket/o", INVALID),
        // S3 https forms decode the key once.
        (
            "https://bucket.s3.amazonaws.com/path/to/file.pdf",
            s3("bucket", "path/to/file.pdf"),
        ),
        (
            "https://bucket.s3.us-west-2.amazonaws.com/k",
            s3_in("bucket", "k", Some("us-west-2")),
        ),
        (
            "https://bucket.s3-eu-west-1.amazonaws.com/k",
            s3_in("bucket", "k", Some("eu-west-1")),
        ),
        (
            "https://my.dotted.bucket.s3.amazonaws.com/k",
            s3("my.dotted.bucket", "k"),
        ),
        ("https://s3.amazonaws.com/bucket/k", s3("bucket", "k")),
        (
            "https://s3.eu-central-1.amazonaws.com/bucket/d/k",
            s3_in("bucket", "d/k", Some("eu-central-1")),
        ),
        (
            "https://s3-us-west-2.amazonaws.com/bucket/k",
            s3_in("bucket", "k", Some("us-west-2")),
        ),
        ("HTTPS://BUCKET.S3.AMAZONAWS.COM/Key", s3("bucket", "Key")),
        (
            "https://bucket.s3.amazonaws.com/my%20file.pdf",
            s3("bucket", "my file.pdf"),
        ),
        (
            "https://bucket.s3.amazonaws.com/my file.pdf",
            s3("bucket", "my file.pdf"),
        ),
        ("https://bucket.s3.amazonaws.com/a%2Fb", s3("bucket", "a/b")),
        (
            "https://bucket.s3.amazonaws.com/a%252Fb",
            s3("bucket", "a%2Fb"),
        ),
        ("https://bucket.s3.amazonaws.com/a+b", s3("bucket", "a+b")),
        (
            "https://bucket.s3.amazonaws.com/caf%C3%A9",
            s3("bucket", "caf\u{e9}"),
        ),
        (
            "https://bucket.s3.amazonaws.com/cafe\u{301}",
            s3("bucket", "cafe\u{301}"),
        ),
        ("https://bucket.s3.amazonaws.com/%20%20", s3("bucket", "  ")),
        ("https://bucket.s3.amazonaws.com/k#part", s3("bucket", "k")),
        ("https://bucket.s3.amazonaws.com//x", s3("bucket", "/x")),
        ("https://bucket.s3.amazonaws.com/k?", s3("bucket", "k")),
        ("https://bucket.s3.amazonaws.com/", INVALID),
        ("https://bucket.s3.amazonaws.com/dir/", INVALID),
        ("https://bucket.s3.amazonaws.com/k?versionId=3", INVALID),
        ("http://bucket.s3.amazonaws.com/k", INVALID),
        ("https://bucket.s3.amazonaws.com:8443/k", INVALID),
        ("https://bucket.s3.amazonaws.com/%FF", INVALID),
        ("https://bucket.s3.amazonaws.com/a%0Ab", INVALID),
        ("https://bad_bucket.s3.amazonaws.com/k", INVALID),
        ("https://s3.amazonaws.com/", INVALID),
        ("https://s3.amazonaws.com/bucket", INVALID),
        ("https://s3.amazonaws.com/Bucket/k", INVALID),
        // Pre-signed S3 URLs grant access by themselves.
        (
            "https://bucket.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab",
            http(
                "https://bucket.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab",
            ),
        ),
        (
            "https://s3.amazonaws.com/b/k?AWSAccessKeyId=A&Expires=1&Signature=ab#x",
            http("https://s3.amazonaws.com/b/k?AWSAccessKeyId=A&Expires=1&Signature=ab"),
        ),
        (
            "http://bucket.s3.amazonaws.com/k?X-Amz-Signature=ab",
            http("http://bucket.s3.amazonaws.com/k?X-Amz-Signature=ab"),
        ),
        // Look-alike and other AWS hosts are plain URLs.
        (
            "https://bucket.s3.amazonaws.com.example.org/k",
            http("https://bucket.s3.amazonaws.com.example.org/k"),
        ),
        (
            "https://s3.amazonaws.com.evil.com/bucket/k",
            http("https://s3.amazonaws.com.evil.com/bucket/k"),
        ),
        (
            "https://evil-s3.amazonaws.com/k",
            http("https://evil-s3.amazonaws.com/k"),
        ),
        (
            "https://bucket.s3-accelerate.amazonaws.com/k",
            http("https://bucket.s3-accelerate.amazonaws.com/k"),
        ),
        (
            "https://b.s3.dualstack.us-east-1.amazonaws.com/k",
            http("https://b.s3.dualstack.us-east-1.amazonaws.com/k"),
        ),
        (
            "https://bucket.s3.amazonaws.com.cn/k",
            http("https://bucket.s3.amazonaws.com.cn/k"),
        ),
        // Azure Blob URLs decode the blob name once.
        (
            "https://acct.blob.core.windows.net/container/dir/file.pdf",
            azure("acct", "container", "dir/file.pdf"),
        ),
        (
            "https://ACCT.Blob.Core.Windows.NET/container/F.pdf",
            azure("acct", "container", "F.pdf"),
        ),
        (
            "https://acct.blob.core.windows.net/container/my%20file.pdf",
            azure("acct", "container", "my file.pdf"),
        ),
        (
            "https://acct.blob.core.windows.net/container/a%2Fb",
            azure("acct", "container", "a/b"),
        ),
        (
            "https://acct.blob.core.windows.net/container/a%252Fb",
            azure("acct", "container", "a%2Fb"),
        ),
        (
            "https://acct.blob.core.windows.net/container/f#part",
            azure("acct", "container", "f"),
        ),
        (
            "https://acct.blob.core.windows.net/$root/f.txt",
            azure("acct", "$root", "f.txt"),
        ),
        (
            "https://acct.blob.core.windows.net/%24web/index.html",
            azure("acct", "$web", "index.html"),
        ),
        (
            "https://acct.blob.core.windows.net/container/f?sv=2022-11-02&sig=SECRET",
            INVALID,
        ),
        ("http://acct.blob.core.windows.net/container/f", INVALID),
        (
            "https://acct.blob.core.windows.net:8443/container/f",
            INVALID,
        ),
        ("https://acct.blob.core.windows.net/", INVALID),
        ("https://acct.blob.core.windows.net/container", INVALID),
        ("https://acct.blob.core.windows.net/container/", INVALID),
        ("https://acct.blob.core.windows.net/container/dir/", INVALID),
        ("https://acct.blob.core.windows.net/container/%FF", INVALID),
        (
            "https://acct.blob.core.windows.net/container/a%C2%85b",
            INVALID,
        ),
        ("https://acct.blob.core.windows.net/Container/f", INVALID),
        (
            "https://acct.blob.core.windows.net/my--container/f",
            INVALID,
        ),
        ("https://acct.blob.core.windows.net/-container/f", INVALID),
        ("https://acct.blob.core.windows.net/ab/f", INVALID),
        ("https://ab.blob.core.windows.net/container/f", INVALID),
        ("https://my-acct.blob.core.windows.net/container/f", INVALID),
        // A decoded blob name may not contain an empty, `.` or `..` segment,
        // because the request URL would resolve it into another path.
        (
            "https://acct.blob.core.windows.net/container/a%2F..%2F..%2F..%2Fvictim%2Fprivate%2Fsecret.txt",
            INVALID,
        ),
        (
            "https://acct.blob.core.windows.net/container/..%2Fother%2Ff",
            INVALID,
        ),
        (
            "https://acct.blob.core.windows.net/container/a%2F.%2Fb",
            INVALID,
        ),
        (
            "https://acct.blob.core.windows.net/container/a%2F%2Fb",
            INVALID,
        ),
        ("https://acct.blob.core.windows.net/container/a//b", INVALID),
        ("https://acct.blob.core.windows.net/container//x", INVALID),
        (
            "https://acct.blob.core.windows.net/container/%2E%2E",
            INVALID,
        ),
        (
            "https://acct.blob.core.windows.net/container/...",
            azure("acct", "container", "..."),
        ),
        (
            "https://acct.blob.core.windows.net/container/.hidden/a..b",
            azure("acct", "container", ".hidden/a..b"),
        ),
        // S3 stores `.` and `..` segments as literal key names.
        (
            "https://bucket.s3.amazonaws.com/a%2F..%2Fb",
            s3("bucket", "a/../b"),
        ),
        (
            "https://acct.blob.core.windows.net.evil.com/c/f",
            http("https://acct.blob.core.windows.net.evil.com/c/f"),
        ),
        // Plain http and https URLs keep their query and lose their fragment.
        (
            "https://example.com/r.pdf?token=abc#page=2",
            http("https://example.com/r.pdf?token=abc"),
        ),
        ("http://example.com/a", http("http://example.com/a")),
        (
            "https://storage.googleapis.com/bucket/o",
            http("https://storage.googleapis.com/bucket/o"),
        ),
        ("https://93.184.216.34/x", http("https://93.184.216.34/x")),
        ("https://[::1]/x", http("https://[::1]/x")),
        ("https://user:pass@example.com/f", INVALID),
        ("https://user@example.com/f", INVALID),
        ("https://", INVALID),
        // The host must follow `//` as written, although the URL parser
        // skips extra slashes and backslashes.
        ("http:///127.0.0.1:18490/report.txt", INVALID),
        ("http:///a", INVALID),
        ("https:///a", INVALID),
        ("HTTPS:///a", INVALID),
        ("https:////a", INVALID),
        ("http://\\a/b", INVALID),
        ("https:///", INVALID),
        // No server listens on port 0.
        ("http://127.0.0.1:0/a", INVALID),
        ("http://example.com:00/a", INVALID),
        ("https://[::1]:0/x", INVALID),
        (
            "http://example.com:8080/a",
            http("http://example.com:8080/a"),
        ),
        ("https://exa mple.com/f", INVALID),
        ("https:example.com/f", INVALID),
        // Rules for every input.
        ("", INVALID),
        (" s3://bucket/k", INVALID),
        ("s3://bucket/k ", INVALID),
        ("s3://bucket/k\n", INVALID),
        ("s3://bucket/a\tb", INVALID),
        ("s3://bucket/a\u{7f}b", INVALID),
        ("bucket/key", INVALID),
        ("://bucket/key", INVALID),
        ("1s3://bucket/key", INVALID),
        ("ftp://example.com/f", UNSUPPORTED),
        ("file:///etc/passwd", UNSUPPORTED),
        ("data:text/plain,hi", UNSUPPORTED),
        ("s3a://bucket/k", UNSUPPORTED),
        ("gcs://bucket/o", UNSUPPORTED),
        ("wasb://c@acct.blob.core.windows.net/b", UNSUPPORTED),
        ("abfss://c@acct.dfs.core.windows.net/b", UNSUPPORTED),
    ];
    let mut cases: Vec<(String, Expected)> = rows
        .into_iter()
        .map(|(input, expected)| (input.to_owned(), expected))
        .collect();
    cases.extend(length_cases());
    cases
}

/// Cases at and just past each length limit.
fn length_cases() -> Vec<(String, Expected)> {
    let key_1024 = "k".repeat(1024);
    let parts_222 = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(30)
    );
    let parts_223 = format!("{parts_222}d");
    let blob_1024 = "b".repeat(1024);
    let deep_blob = vec!["d"; 255].join("/");
    let url_4096 = format!("https://example.com/{}", "p".repeat(MAX_URI_BYTES - 20));
    vec![
        (format!("s3://bucket/{key_1024}"), s3("bucket", &key_1024)),
        (format!("s3://bucket/{key_1024}k"), INVALID),
        (
            format!("s3://{}/k", "a".repeat(63)),
            s3(&"a".repeat(63), "k"),
        ),
        (format!("s3://{}/k", "a".repeat(64)), INVALID),
        (format!("gs://bucket/{key_1024}"), gcs("bucket", &key_1024)),
        (format!("gs://bucket/{key_1024}k"), INVALID),
        (format!("gs://{}/o", "a".repeat(64)), INVALID),
        (format!("gs://{parts_222}/o"), gcs(&parts_222, "o")),
        (format!("gs://{parts_223}/o"), INVALID),
        (format!("gs://{}.b/o", "a".repeat(64)), INVALID),
        (
            format!("{AZ}/container/{blob_1024}"),
            azure("acct", "container", &blob_1024),
        ),
        (format!("{AZ}/container/{blob_1024}b"), INVALID),
        (format!("{AZ}/container/{deep_blob}"), INVALID),
        (url_4096.clone(), http(&url_4096)),
        (format!("{url_4096}p"), INVALID),
    ]
}
