"""moto as the demo's AWS: its server process and what scripts/aws_fixture.py creates in it.

`start_moto` runs `python -m moto.server` on a free loopback port as a
`ServerProcess` (processes.py), which writes its pid to RUN_DIR/moto.pid
while it runs, so scripts/demo.sh can stop it if the demo dies first.
`run_fixture` runs the fixture script once against a fresh server and
returns its output as an `AwsFixture`. The script's docstring describes
the accounts, roles, buckets and object keys.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import DemoError
from .examples import ExpectedContent
from .processes import ServerCommand, ServerProcess

FIXTURE_SCRIPT = Path(__file__).resolve().parent.parent / "aws_fixture.py"

# The fixture sends about 90 requests, eight of them with 1 MiB bodies,
# which took under 2 s in trial runs. The rest is margin.
FIXTURE_TIMEOUT_SECONDS = 180


def moto_env() -> dict[str, str]:
    """Return the environment of moto and the fixture script."""
    env = {
        name: value
        for name, value in os.environ.items()
        # MOTO_ACCOUNT_ID would override the fixture's x-moto-account-id
        # header, and INITIAL_NO_AUTH_ACTION_COUNT would enforce IAM before
        # the fixture is set up.
        if name not in ("MOTO_ACCOUNT_ID", "INITIAL_NO_AUTH_ACTION_COUNT")
    }
    # boto3 in the fixture script would send its loopback requests through
    # a proxy named in the environment.
    env.update(no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def moto_arguments(port: int) -> list[str]:
    """Return the arguments after `python` that start moto on port."""
    return ["-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def start_moto(run_dir: Path) -> ServerProcess:
    """Start moto on a free loopback port and wait until it responds.

    Raises DemoError with moto's log tail when it does not start.
    """
    command = ServerCommand("moto", "moto", moto_arguments, "/moto-api/", moto_env())
    return ServerProcess.start(run_dir, command)


# The fields of the fixture's "vendor" object, our identity.
VENDOR_FIELDS = ("account_id", "user_arn", "access_key_id", "secret_access_key")


@dataclass(frozen=True)
class S3Object:
    """One object of the fixture, with the size and SHA-256 of its body."""

    uri: str
    content: ExpectedContent


@dataclass(frozen=True)
class AwsFixture:
    """The fixture script's output, as the demo uses it."""

    region: str
    # Our identity, keyed by VENDOR_FIELDS.
    vendor: dict[str, str]
    # Per customer ("a", "b"): account_id, role_arn, external_id,
    # requires_external_id and bucket.
    customers: dict[str, dict[str, Any]]
    # Keyed by (bucket label, object label), such as ("customer_a", "space").
    objects: dict[tuple[str, str], S3Object]

    @classmethod
    def parse(cls, document: dict[str, Any]) -> "AwsFixture":
        """Parse the fixture's JSON output. Raises KeyError or TypeError when its shape differs."""
        objects = {}
        for bucket_label, bucket in document["buckets"].items():
            for object_label, item in bucket["objects"].items():
                uri = f"s3://{bucket['name']}/{item['key']}"
                content = ExpectedContent(size=int(item["size"]), sha256=str(item["sha256"]))
                objects[(bucket_label, object_label)] = S3Object(uri, content)
        return cls(
            region=str(document["region"]),
            vendor={key: str(document["vendor"][key]) for key in VENDOR_FIELDS},
            customers=dict(document["customers"]),
            objects=objects,
        )

    def uri(self, bucket_label: str, object_label: str) -> str:
        return self.objects[(bucket_label, object_label)].uri

    def placeholders(self) -> dict[str, str]:
        """Return the S3:BUCKET:OBJECT placeholder names of the examples with their URIs."""
        return {
            f"S3:{bucket_label}:{object_label}": item.uri
            for (bucket_label, object_label), item in self.objects.items()
        }

    def contents_by_uri(self) -> dict[str, ExpectedContent]:
        return {item.uri: item.content for item in self.objects.values()}

    def required_external_ids(self) -> dict[str, str]:
        """Return the External ID by role ARN of each role whose trust policy requires one."""
        return {
            customer["role_arn"]: customer["external_id"]
            for customer in self.customers.values()
            if customer["requires_external_id"]
        }


def run_fixture(moto_url: str, external_id_a: str, external_id_b: str) -> AwsFixture:
    """Run scripts/aws_fixture.py against a fresh moto and return what it created.

    Customer A's role requires external_id_a. Customer B's role requires
    none, and external_id_b is only reported back.
    """
    command = [
        sys.executable,
        str(FIXTURE_SCRIPT),
        "--endpoint",
        moto_url,
        "--external-id-a",
        external_id_a,
        "--external-id-b",
        external_id_b,
    ]
    try:
        result = subprocess.run(
            command,
            env=moto_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=FIXTURE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise DemoError(
            f"scripts/aws_fixture.py timed out after {FIXTURE_TIMEOUT_SECONDS} s"
        ) from error
    if result.returncode != 0:
        raise DemoError(
            f"scripts/aws_fixture.py exited with status {result.returncode}:"
            f" {result.stderr.decode('utf-8', errors='replace').strip()}"
        )
    # The output contains our secret access key, so it is not shown on failure.
    try:
        return AwsFixture.parse(json.loads(result.stdout))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise DemoError(
            "scripts/aws_fixture.py printed output of another shape than its docstring"
            f" describes: {type(error).__name__}: {error}"
        ) from error
