"""Cloud Storage for the cloud phases: gcp-storage-emulator behind the demo's fronts.

`start_gcp` starts the emulator (attache_demo.gcs_emulator), creates one
bucket per team with small objects, and starts `MockIam` and `StorageFront`
(attache_demo.gcp_fronts). `activate` plays one team's customer. It creates
the team's service account from the identifier that GET
/v1/integrations/gcp returns, lets our service account impersonate it and
lets it read only the team's bucket, then activates it. MockIam records
every generateAccessToken request and the front every download, which
`credential_requests` and `object_reads` count.
"""

import hashlib
import json
import os
import secrets
from collections import Counter
from contextlib import ExitStack
from urllib.parse import quote

from attache_demo import DemoError
from attache_demo.api import ApiClient
from attache_demo.gcp_fronts import Grants, MockIam, StorageFront
from attache_demo.gcs_access import CUSTOMER_PROJECT, INTEGRATION, OUR_SERVICE_ACCOUNT
from attache_demo.gcs_emulator import send, start_emulator
from attache_demo.processes import ServerProcess
from attache_demo.s3_access import warn_if_needed

from . import CloudContext

# Requests that the front forwards at once: gcp-storage-emulator serves one
# at a time and drops connections beyond its listen backlog of 5.
EMULATOR_CONNECTIONS = 4


class BenchGcp:
    """The emulator with a bucket per team, and the fronts before it."""

    name = "GCS"
    credential_service = "IAM Credentials generateAccessToken"
    metric_label = "gcp"

    def __init__(
        self,
        emulator: ServerProcess,
        grants: Grants,
        iam: MockIam,
        storage: StorageFront,
        our_token: str,
        digests: dict[str, str],
    ) -> None:
        self.emulator = emulator
        self.grants = grants
        self.iam = iam
        self.storage = storage
        self.our_token = our_token
        # SHA-256 by gs:// URI.
        self.digests = digests
        self.marked_requests = 0
        self.marked_downloads = 0

    def env(self) -> dict[str, str]:
        """Return the ATTACHE_GCP_* settings of the producer and the fetch-worker."""
        return {
            "ATTACHE_GCP_SERVICE_ACCOUNT": OUR_SERVICE_ACCOUNT,
            "ATTACHE_GCP_ACCESS_TOKEN": self.our_token,
            "ATTACHE_GCP_STORAGE_ENDPOINT": self.storage.url,
            "ATTACHE_GCP_IAM_ENDPOINT": self.iam.url,
        }

    def activate(self, client: ApiClient, team_index: int) -> None:
        """Create the team's service account with read access to its bucket, and activate it."""
        status, settings = client.request("GET", INTEGRATION)
        identifier = settings.get("identifier") if isinstance(settings, dict) else None
        if status != 200 or not isinstance(identifier, str):
            raise DemoError(f"GET {INTEGRATION} returned {status}, expected 200: {settings!r}")
        account = f"attache-{identifier}@{CUSTOMER_PROJECT}.iam.gserviceaccount.com"
        self.grants.allow_impersonation(OUR_SERVICE_ACCOUNT, account)
        self.grants.allow_read(account, team_bucket(team_index))
        status, body = client.request("PUT", INTEGRATION, {"service_account": account})
        if status != 200 or not isinstance(body, dict) or not body.get("impersonation_active"):
            raise DemoError(
                f"PUT {INTEGRATION} with {account} returned {status}, expected 200 with"
                f" impersonation_active true: {body!r}"
            )

    def uris(self, team_index: int) -> list[str]:
        """Return the gs:// URIs of the team's objects."""
        prefix = f"gs://{team_bucket(team_index)}/"
        return sorted(uri for uri in self.digests if uri.startswith(prefix))

    def mark(self) -> None:
        """Start counting credential requests and object reads from here."""
        self.marked_requests = len(self.iam.received())
        self.marked_downloads = len(self.storage.forwarded())

    def credential_requests(self) -> Counter[str]:
        """Return the generateAccessToken requests per target service account since `mark`."""
        received = self.iam.received()[self.marked_requests :]
        return Counter(request.service_account for request in received)

    def object_reads(self) -> int:
        """Return the downloads that the emulator served with 200 since `mark`."""
        forwarded = self.storage.forwarded()[self.marked_downloads :]
        return sum(1 for download in forwarded if download.status == 200)


def team_bucket(team_index: int) -> str:
    return f"attache-bench-team-{team_index + 1}"


def start_gcp(
    stack: ExitStack, ctx: CloudContext, team_count: int, objects: int, size: int
) -> BenchGcp:
    """Start the emulator with `objects` objects of `size` bytes per team, and both fronts."""
    emulator = start_emulator(ctx.run_dir)
    stack.callback(warn_if_needed, emulator.stop)
    digests = {}
    for team_index in range(team_count):
        bucket = team_bucket(team_index)
        resource = json.dumps({"name": bucket}).encode()
        send(emulator.url, "POST", "/storage/v1/b", resource, "application/json")
        for index in range(objects):
            body = os.urandom(size)
            name = f"object-{index}"
            upload = f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quote(name)}"
            send(emulator.url, "POST", upload, body)
            digests[f"gs://{bucket}/{name}"] = hashlib.sha256(body).hexdigest()

    grants = Grants()
    our_token = f"bench-own-token-{secrets.token_urlsafe(16)}"
    grants.add_token(our_token, OUR_SERVICE_ACCOUNT)
    iam_log = stack.enter_context(open(ctx.run_dir / "gcp-iam.log", "w", encoding="utf-8"))
    iam = MockIam(grants, iam_log)
    iam.start()
    stack.callback(iam.stop)
    storage_log = stack.enter_context(open(ctx.run_dir / "gcs-front.log", "w", encoding="utf-8"))
    storage = StorageFront(emulator.url, grants, storage_log, upstream_limit=EMULATOR_CONNECTIONS)
    storage.start()
    stack.callback(storage.stop)
    return BenchGcp(emulator, grants, iam, storage, our_token, digests)
