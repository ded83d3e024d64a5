//! Generated inputs, built from fixed pieces by a seeded generator, that
//! check the parser never panics and always explains a rejection.

use crate::uri::parse;

/// Starts of the generated inputs: well-formed prefixes of each form, so
/// that many inputs reach the object name checks, and bare schemes.
const PREFIXES: &[&str] = &[
    "s3://bucket/",
    "gs://bucket/",
    "https://bucket.s3.amazonaws.com/",
    "https://bucket.s3.us-east-1.amazonaws.com/",
    "https://s3-eu-west-1.amazonaws.com/bucket/",
    "https://acct.blob.core.windows.net/container/",
    "https://example.com/",
    "s3://",
    "gs://",
    "https://",
    "http://",
    "",
];

/// Pieces appended after a prefix: delimiters, encodings, provider hosts and
/// awkward characters.
const FRAGMENTS: &[&str] = &[
    "s3://",
    "ftp://",
    "S3:",
    "://",
    "/",
    "//",
    "%",
    "%2",
    "%2F",
    "%252F",
    "%FF",
    "%C3%A9",
    "%0A",
    "?",
    "#",
    "@",
    ":",
    ".",
    "..",
    "a",
    "Z",
    "-",
    "_",
    " ",
    "+",
    "\u{e9}",
    "e\u{301}",
    "\u{1F600}",
    "[",
    "]",
    "[::1]",
    "$root",
    "$web",
    "bucket",
    "xn--",
    "1.2.3.4",
    ".s3.amazonaws.com",
    "s3.amazonaws.com",
    ".s3-us-east-1",
    ".amazonaws.com",
    ".blob.core.windows.net",
    "acct",
    "?X-Amz-Signature=1",
    "Signature",
    "=",
    "&",
    "\t",
    "\u{0}",
    "\u{85}",
    "goog",
    ".well-known/acme-challenge/",
    ":8443",
    "file.pdf",
    "dir/",
    "file.pdf",
    "dir/",
];

#[test]
fn generated_inputs_never_panic() {
    // A fixed-seed linear congruential generator, so every run checks the
    // same inputs and a failure can be reproduced.
    let mut state: u64 = 0x5eed_1234_abcd_ef01;
    let mut next = move |bound: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize % bound
    };

    for _ in 0..3000 {
        let mut input = PREFIXES[next(PREFIXES.len())].to_owned();
        for _ in 0..next(8) {
            input.push_str(FRAGMENTS[next(FRAGMENTS.len())]);
        }

        let first = parse(&input);
        assert_eq!(
            first,
            parse(&input),
            "parsing {input:?} is not deterministic"
        );
        if let Err(error) = first {
            assert!(!error.message().is_empty(), "empty message for {input:?}");
        }
    }
}
