"""S3 for the cloud phases: moto with one customer account per team, behind the STS front.

`start_aws` starts moto (attache_demo.moto) and creates, with the set-up
functions of scripts/aws_fixture.py, our vendor user and, per team, an
account whose role `AttacheReader` trusts us only with that team's External
ID and may read only the team's own bucket. The `fill_bucket` callback puts
the objects in each bucket before IAM enforcement is turned on. Then the
STS front (attache_demo.sts_front) starts, enforcing the External IDs that
moto skips and counting every AssumeRole it receives.

moto's server writes a line per request it served to its log, so
`object_reads` counts the GETs of the teams' buckets in that log.
"""

import hashlib
import io
import os
import re
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

# aws_fixture sets AWS_EC2_METADATA_DISABLED and empties the AWS config
# file variables on import, so neither boto3 here nor the binaries started
# later look for credentials outside loopback.
import aws_fixture
from attache_demo import DemoError
from attache_demo.api import ApiClient
from attache_demo.moto import start_moto
from attache_demo.processes import ServerProcess
from attache_demo.s3_access import INTEGRATION, read_external_ids, warn_if_needed
from attache_demo.sts_front import StsFront
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from . import CloudContext, Team
from ..fleet import READY_TIMEOUT_SECONDS
from ..settings import MIB

# Team n's account is FIRST_TEAM_ACCOUNT + n, 12 digits like every AWS
# account ID, and apart from the accounts of aws_fixture.py.
FIRST_TEAM_ACCOUNT = 400_000_000_000
# Our user's policy names a vendor-readable bucket, which the phases do not use.
UNUSED_VENDOR_BUCKET = "attache-bench-vendor-readable"
# S3 rejects parts under 5 MiB, except the last.
MIN_PART_BYTES = 5 * MIB
LARGE_PART_BYTES = 64 * MIB
# Parts uploaded at once, each held in memory while it is sent.
UPLOAD_THREADS = 4

# Puts objects in a bucket with a set-up client and returns their SHA-256 by key.
FillBucket = Callable[[Any, str], dict[str, str]]


@dataclass(frozen=True)
class Customer:
    """One team's account, with the role we assume and the bucket it may read."""

    account_id: str
    role_arn: str
    external_id: str
    bucket: str


class BenchAws:
    """moto set up for the teams, and the STS front before it."""

    name = "S3"
    credential_service = "STS AssumeRole"
    metric_label = "aws"

    def __init__(
        self,
        moto: ServerProcess,
        vendor: dict[str, str],
        customers: list[Customer],
        sts_front: StsFront,
        digests: dict[str, str],
    ) -> None:
        self.moto = moto
        self.vendor = vendor
        self.customers = customers
        self.sts_front = sts_front
        # SHA-256 by s3:// URI.
        self.digests = digests
        self.marked_requests: Counter[str] = Counter()
        self.marked_log_bytes = 0

    def env(self) -> dict[str, str]:
        """Return the ATTACHE_AWS_* settings of the producer and the fetch-worker."""
        return {
            "ATTACHE_AWS_ACCOUNT_ID": self.vendor["account_id"],
            "ATTACHE_AWS_ROLE_NAME": aws_fixture.ROLE_NAME,
            "ATTACHE_AWS_PRINCIPAL_ARN": self.vendor["user_arn"],
            "ATTACHE_AWS_REGION": aws_fixture.REGION,
            "ATTACHE_AWS_S3_ENDPOINT_URL": self.moto.url,
            "ATTACHE_AWS_STS_ENDPOINT_URL": self.sts_front.url,
            "ATTACHE_AWS_ACCESS_KEY_ID": self.vendor["access_key_id"],
            "ATTACHE_AWS_SECRET_ACCESS_KEY": self.vendor["secret_access_key"],
        }

    def activate(self, client: ApiClient, team_index: int) -> None:
        """Activate delegated access through the team's role, as its customer would."""
        customer = self.customers[team_index]
        status, body = client.request("PUT", INTEGRATION, {"account_id": customer.account_id})
        if status != 200 or not isinstance(body, dict) or not body.get("delegated_access_active"):
            raise DemoError(
                f"PUT {INTEGRATION} with account {customer.account_id} returned {status},"
                f" expected 200 with delegated_access_active true: {body!r}"
            )

    def uris(self, team_index: int) -> list[str]:
        """Return the s3:// URIs of the team's objects."""
        bucket = self.customers[team_index].bucket
        return sorted(uri for uri in self.digests if uri.startswith(f"s3://{bucket}/"))

    def mark(self) -> None:
        """Start counting credential requests and object reads from here."""
        self.marked_requests = self.sts_front.assume_role_counts()
        self.marked_log_bytes = self.moto.log_path.stat().st_size

    def credential_requests(self) -> Counter[str]:
        """Return the AssumeRole requests per role ARN since `mark`."""
        return self.sts_front.assume_role_counts() - self.marked_requests

    def object_reads(self) -> int:
        """Return the GETs of the teams' objects that moto served with 200 since `mark`."""
        buckets = "|".join(re.escape(customer.bucket) for customer in self.customers)
        served = re.compile(rf'"GET /({buckets})/\S* HTTP/1\.1" 200 ')
        with self.moto.log_path.open("rb") as log:
            log.seek(self.marked_log_bytes)
            text = log.read().decode("utf-8", errors="replace")
        return len(served.findall(text))


def start_aws(
    stack: ExitStack, ctx: CloudContext, teams: list[Team], fill_bucket: FillBucket
) -> BenchAws:
    """Start moto with an account, role and bucket per team, and the STS front.

    Both are stopped when stack closes. No binary may run yet, because
    `read_external_ids` stops every binary that ctx.services started.
    """
    external_ids = read_external_ids(
        ctx.services, [team.api_key for team in teams], READY_TIMEOUT_SECONDS
    )
    moto = start_moto(ctx.run_dir)
    stack.callback(warn_if_needed, moto.stop)
    try:
        aws_fixture.check_moto_version()
        vendor, customers, digests = set_up_accounts(moto.url, external_ids, fill_bucket)
        aws_fixture.enable_enforcement(moto.url)
    except aws_fixture.FixtureError as error:
        raise DemoError(f"setting up moto failed: {error}") from error
    except (BotoCoreError, ClientError, OSError) as error:
        raise DemoError(
            f"a set-up request to moto at {moto.url} failed: {error}."
            f" Last lines are in {moto.log_path}"
        ) from error

    log = stack.enter_context(open(ctx.run_dir / "sts-front.log", "w", encoding="utf-8"))
    required = {customer.role_arn: customer.external_id for customer in customers}
    sts_front = StsFront(moto.url, required, log)
    sts_front.start()
    stack.callback(sts_front.stop)
    return BenchAws(moto, vendor, customers, sts_front, digests)


def set_up_accounts(
    endpoint: str, external_ids: list[str], fill_bucket: FillBucket
) -> tuple[dict[str, str], list[Customer], dict[str, str]]:
    """Create our user and each team's role and bucket, and return them with the digests by URI."""
    vendor = aws_fixture.create_vendor(endpoint, UNUSED_VENDOR_BUCKET)
    customers = []
    digests = {}
    for number, external_id in enumerate(external_ids, start=1):
        account_id = str(FIRST_TEAM_ACCOUNT + number)
        bucket = f"attache-bench-team-{number}"
        role_arn = aws_fixture.create_reader_role(
            endpoint, account_id, vendor["user_arn"], bucket, external_id
        )
        s3 = aws_fixture.client("s3", endpoint, account_id)
        s3.create_bucket(Bucket=bucket)
        for key, digest in fill_bucket(s3, bucket).items():
            digests[f"s3://{bucket}/{key}"] = digest
        customers.append(Customer(account_id, role_arn, external_id, bucket))
    return vendor, customers, digests


def small_objects(count: int, size: int) -> FillBucket:
    """Return a `fill_bucket` that puts `count` objects of random bytes, object-0 and on."""

    def fill(s3: Any, bucket: str) -> dict[str, str]:
        digests = {}
        for index in range(count):
            body = os.urandom(size)
            s3.put_object(Bucket=bucket, Key=f"object-{index}", Body=body)
            digests[f"object-{index}"] = hashlib.sha256(body).hexdigest()
        return digests

    return fill


def large_object(key: str, size: int) -> FillBucket:
    """Return a `fill_bucket` that uploads one object of `size` bytes in parts.

    The object is never whole in memory: only the parts in flight are.
    """

    def fill(s3: Any, bucket: str) -> dict[str, str]:
        part = max(MIN_PART_BYTES, min(LARGE_PART_BYTES, size // 2))
        config = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=UPLOAD_THREADS
        )
        body = RepeatedBlock(size)
        # The buffered reader returns whole parts, which s3transfer reads
        # from a stream that cannot seek.
        s3.upload_fileobj(io.BufferedReader(body), bucket, key, Config=config)
        return {key: body.sha256.hexdigest()}

    return fill


class RepeatedBlock(io.RawIOBase):
    """A stream of `size` bytes, one random 1 MiB block over and over, hashed as it is read."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = os.urandom(MIB)
        self.offset = 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        length = min(len(view), self.left, len(self.block) - self.offset)
        chunk = self.block[self.offset : self.offset + length]
        view[:length] = chunk
        self.sha256.update(chunk)
        self.offset = (self.offset + length) % len(self.block)
        self.left -= length
        return length
