"""Set up a fresh moto server as the AWS side of the S3 tests, then turn on IAM enforcement.

    .venv/bin/python scripts/aws_fixture.py --endpoint http://127.0.0.1:PORT \\
        --external-id-a X --external-id-b Y

Run it once per moto process (`python -m moto.server -H 127.0.0.1 -p PORT`).
It creates four accounts, separated by moto's `x-moto-account-id` request
header:

- the vendor account, with the IAM user `attache-vendor` and an access key.
  Its policy allows sts:AssumeRole on any account's `AttacheReader` role and
  s3:GetObject in the vendor-readable bucket.
- customer A, whose role `AttacheReader` trusts the vendor user only with
  `sts:ExternalId` equal to X and may read the bucket `attache-customer-a`.
  A also owns `attache-unreadable`, which no policy grants to anyone.
- customer B, whose role `AttacheReader` trusts the vendor user with no
  External ID condition and may read `attache-customer-b`.
- a third account that owns `attache-vendor-readable`. Only the vendor
  user's own policy grants reading it, because moto 5.2.5 does not treat a
  bucket policy as a grant. A bucket policy that allows a named principal
  also makes moto respond to unsigned reads with 500, so the bucket has none.

Every bucket contains the same object keys: keys with spaces, `+`, `%`, `%2F`,
`é` in NFC and in NFD, `a//b`, a leading `/`, and an object of 1 MiB and
1 byte (see OBJECT_KEYS for their labels). Each body is derived from its
bucket's name, so a read from the wrong bucket shows up as a wrong digest.
The script reads every object back before it turns on enforcement
(`POST /moto-api/reset-auth`), after which moto accepts only the access
keys that its IAM API created.

On success it prints one JSON object on stdout and exits 0:

    {"endpoint": ..., "region": "us-east-1",
     "vendor": {"account_id", "user_arn", "access_key_id", "secret_access_key"},
     "customers": {"a" | "b": {"account_id", "role_arn", "external_id",
                               "requires_external_id", "bucket"}},
     "buckets": {"customer_a" | "customer_b" | "vendor_readable" | "unreadable":
                 {"name", "owner_account_id",
                  "objects": {LABEL: {"key", "size", "sha256"}}}}}

What moto 5.2.5 decides after enforcement, as observed on loopback: a
role's permission policy limits which objects its credentials can read, and
the vendor user's own policy limits what the user can read. moto evaluates
a role's trust policy only when the role is in the caller's own account, so
it does not check the External ID or the principal of these cross-account
roles. It ignores `x-amz-expected-bucket-owner`.

Exit status 1: moto rejected a request or could not be reached. Exit status
2: moto is older than 5.2.5, the endpoint is not on loopback, or moto
altered an object or a key.
"""

import argparse
import hashlib
import importlib.metadata
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

# Set before boto3 is imported, so no credential lookup can reach the
# instance metadata address and no local AWS configuration is read.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

REGION = "us-east-1"
VENDOR_ACCOUNT = "100000000000"
ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
THIRD_PARTY_ACCOUNT = "333333333333"
ROLE_NAME = "AttacheReader"
VENDOR_USER = "attache-vendor"

# moto 5.2.1 rejects the SigV4 signature of keys with `%`, `+` or non-ASCII
# characters once enforcement is on, but 5.2.5 accepts them. Releases in
# between were not tried.
OLDEST_WORKING_MOTO = (5, 2, 5)

# moto accepts any credentials until enforcement is on.
SET_UP_ACCESS_KEY = "testing"
SET_UP_SECRET_KEY = "testing"

# One byte more than 1 MiB, so the object does not end on a power-of-two
# chunk boundary.
LARGE_OBJECT_SIZE = 1024 * 1024 + 1

# Bucket labels in the JSON output, mapped to bucket names and owners.
BUCKETS = {
    "customer_a": ("attache-customer-a", ACCOUNT_A),
    "customer_b": ("attache-customer-b", ACCOUNT_B),
    "vendor_readable": ("attache-vendor-readable", THIRD_PARTY_ACCOUNT),
    "unreadable": ("attache-unreadable", ACCOUNT_A),
}

# Object labels in the JSON output, mapped to object keys.
OBJECT_KEYS = {
    "space": "reports/q3 summary.txt",
    "plus": "reports/a+b.txt",
    "percent": "reports/100%.txt",
    "percent_2f": "reports/a%2Fb.txt",
    "nfc": "reports/caf\u00e9.txt",
    "nfd": "reports/cafe\u0301.txt",
    "double_slash": "a//b",
    "leading_slash": "/leading-slash.txt",
    "large": "large.bin",
}


class FixtureError(Exception):
    """A set-up step or a check of its result failed. The message names which."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--endpoint",
        required=True,
        help="moto server URL on loopback, for example http://127.0.0.1:5000",
    )
    parser.add_argument(
        "--external-id-a",
        required=True,
        help="External ID that customer A's role requires in its trust policy",
    )
    parser.add_argument(
        "--external-id-b",
        required=True,
        help="External ID that customer B's team is configured with (B's role checks none)",
    )
    return parser.parse_args(argv)


def check_moto_version() -> None:
    """Raise FixtureError if this interpreter's moto is older than OLDEST_WORKING_MOTO.

    The caller starts moto's server with the same interpreter.
    """
    installed = importlib.metadata.version("moto")
    try:
        release = tuple(int(part) for part in installed.split(".")[:3])
    except ValueError:
        return
    if release < OLDEST_WORKING_MOTO:
        raise FixtureError(
            f"moto {installed} is installed, but the S3 tests need moto 5.2.5 or later: "
            "run scripts/python-env.sh and use .venv/bin/python"
        )


def check_loopback(endpoint: str) -> None:
    """Raise FixtureError unless `endpoint` is an http URL of a loopback address."""
    parts = urlsplit(endpoint)
    try:
        loopback = ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        loopback = parts.hostname == "localhost"
    if parts.scheme != "http" or not loopback or parts.port is None:
        raise FixtureError(
            f"--endpoint {endpoint!r} is not an http URL with a loopback address and port, "
            "for example http://127.0.0.1:5000"
        )


def client(service: str, endpoint: str, account_id: str) -> Any:
    """Create a boto3 client that sets up resources in `account_id` with dummy credentials."""
    session = boto3.session.Session(
        aws_access_key_id=SET_UP_ACCESS_KEY,
        aws_secret_access_key=SET_UP_SECRET_KEY,
        region_name=REGION,
    )
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    created = session.client(service, endpoint_url=endpoint, config=config)

    def add_account_header(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = account_id

    created.meta.events.register("before-sign.*.*", add_account_header)
    return created


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def object_body(bucket: str, label: str) -> bytes:
    """Return the bytes of one object, unique to its bucket and key."""
    if label == "large":
        return hashlib.shake_256(bucket.encode()).digest(LARGE_OBJECT_SIZE)
    return f"{bucket}/{OBJECT_KEYS[label]}\n".encode()


def create_vendor(endpoint: str, vendor_readable_bucket: str) -> dict[str, str]:
    iam = client("iam", endpoint, VENDOR_ACCOUNT)
    user = iam.create_user(UserName=VENDOR_USER)["User"]
    iam.put_user_policy(
        UserName=VENDOR_USER,
        PolicyName="attache-vendor",
        PolicyDocument=policy(
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": f"arn:aws:iam::*:role/{ROLE_NAME}",
            },
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{vendor_readable_bucket}/*",
            },
        ),
    )
    key = iam.create_access_key(UserName=VENDOR_USER)["AccessKey"]
    return {
        "account_id": VENDOR_ACCOUNT,
        "user_arn": user["Arn"],
        "access_key_id": key["AccessKeyId"],
        "secret_access_key": key["SecretAccessKey"],
    }


def create_reader_role(
    endpoint: str, account_id: str, vendor_arn: str, bucket: str, external_id: str | None
) -> str:
    """Create `AttacheReader` in `account_id` and return its ARN.

    The trust policy requires `external_id` unless it is None, which leaves
    the policy without a condition.
    """
    trust = {"Effect": "Allow", "Principal": {"AWS": vendor_arn}, "Action": "sts:AssumeRole"}
    if external_id is not None:
        trust["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    iam = client("iam", endpoint, account_id)
    role = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=policy(trust))["Role"]
    iam.put_role_policy(
        RoleName=ROLE_NAME,
        PolicyName="attache-read",
        PolicyDocument=policy(
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
        ),
    )
    return role["Arn"]


def create_bucket(endpoint: str, account_id: str, bucket: str) -> dict[str, Any]:
    """Create `bucket` with every object, read each back, and describe it."""
    s3 = client("s3", endpoint, account_id)
    s3.create_bucket(Bucket=bucket)
    objects = {}
    for label, key in OBJECT_KEYS.items():
        body = object_body(bucket, label)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        read_back = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if read_back != body:
            raise FixtureError(f"moto returned other bytes for s3://{bucket}/{key!r} than were put")
        objects[label] = {
            "key": key,
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }

    # A key that moto rewrote, for example `+` to a space, would make the
    # tests check the wrong thing.
    listed = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    if listed != set(OBJECT_KEYS.values()):
        raise FixtureError(
            f"moto lists other keys in {bucket} than were put: {sorted(listed)!r}"
        )
    return {"name": bucket, "owner_account_id": account_id, "objects": objects}


def enable_enforcement(endpoint: str) -> None:
    """Make moto authenticate and authorise every later request."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        status = json.load(response).get("status")
    if status != "ok":
        raise FixtureError(f"POST {endpoint}/moto-api/reset-auth returned status {status!r}")


def set_up(endpoint: str, external_id_a: str, external_id_b: str) -> dict[str, Any]:
    buckets = {label: name for label, (name, _) in BUCKETS.items()}
    vendor = create_vendor(endpoint, buckets["vendor_readable"])
    customers = {
        "a": {
            "account_id": ACCOUNT_A,
            "role_arn": create_reader_role(
                endpoint, ACCOUNT_A, vendor["user_arn"], buckets["customer_a"], external_id_a
            ),
            "external_id": external_id_a,
            "requires_external_id": True,
            "bucket": buckets["customer_a"],
        },
        "b": {
            "account_id": ACCOUNT_B,
            "role_arn": create_reader_role(
                endpoint, ACCOUNT_B, vendor["user_arn"], buckets["customer_b"], None
            ),
            "external_id": external_id_b,
            "requires_external_id": False,
            "bucket": buckets["customer_b"],
        },
    }

    described = {
        label: create_bucket(endpoint, owner, name) for label, (name, owner) in BUCKETS.items()
    }

    enable_enforcement(endpoint)
    return {
        "endpoint": endpoint,
        "region": REGION,
        "vendor": vendor,
        "customers": customers,
        "buckets": described,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    endpoint = args.endpoint.rstrip("/")
    try:
        check_moto_version()
        check_loopback(endpoint)
        fixture = set_up(endpoint, args.external_id_a, args.external_id_b)
    except FixtureError as error:
        print(f"aws_fixture: error: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        print(
            f"aws_fixture: error: moto at {endpoint} rejected a set-up request ({error}). "
            "Run the script against a fresh moto process, because one it has set up "
            "before already enforces IAM and holds these names.",
            file=sys.stderr,
        )
        return 1
    except (BotoCoreError, urllib.error.URLError) as error:
        message = f"a request to moto at {endpoint} failed: {error}"
        print(f"aws_fixture: error: {message}", file=sys.stderr)
        return 1
    json.dump(fixture, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
