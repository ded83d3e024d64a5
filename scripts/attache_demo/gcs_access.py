"""The demo's Cloud Storage side: the emulator with its fronts, and the teams' /v1/integrations/gcp.

`start_gcp` starts gcp-storage-emulator, creates the buckets and objects,
and starts `MockIam` and `StorageFront` (gcp_fronts.py). Our service
account may read the vendor-readable bucket only. `gcp_settings` returns
the ATTACHE_GCP_* settings that point the producer and the fetch-worker at
the fronts, with a static token of our service account made up per run.

Once the binaries run, `activate_impersonation` plays a customer who reads
the team's identifier from GET /v1/integrations/gcp. It first names a
service account without the identifier, which the API must reject with a
suggestion. Then it creates
`attache-{identifier}@demo-project.iam.gserviceaccount.com`, lets our
service account impersonate it, lets it read the customer bucket, and
activates it. `show_cross_project` and `show_verification` print what the
API returns for the other team and for one object, and `check_traffic`
inspects what the fronts received. Each returns the differences from the
expected outcome, one line each.
"""

import json
import secrets
import textwrap
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .api import ApiClient
from .gcp_fronts import READ_ONLY_SCOPE, Grants, MockIam, StorageFront
from .gcs_emulator import BUCKETS, GcsFixture, create_fixture, start_emulator
from .processes import ServerProcess
from .s3_access import warn_if_needed

INTEGRATION = "/v1/integrations/gcp"
OUR_SERVICE_ACCOUNT = "attache-reader@attache-vendor.iam.gserviceaccount.com"
# The project in which the customer creates its service accounts.
CUSTOMER_PROJECT = "demo-project"
# A service account email whose ID lacks the team's identifier.
EMAIL_WITHOUT_IDENTIFIER = f"storage-reader@{CUSTOMER_PROJECT}.iam.gserviceaccount.com"
# The lifetime the fetch-worker requests by default (ATTACHE_GCP_TOKEN_LIFETIME of 1 h).
EXPECTED_LIFETIME = "3600s"


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


@dataclass(frozen=True)
class DemoGcp:
    """The emulator with its objects, the fronts before it, and our static token."""

    emulator: ServerProcess
    fixture: GcsFixture
    grants: Grants
    iam: MockIam
    storage: StorageFront
    our_token: str


def start_gcp(stack: ExitStack, run_dir: Path) -> DemoGcp:
    """Start the emulator, create its objects and start both fronts, all stopped with stack."""
    emulator = start_emulator(run_dir)
    stack.callback(warn_if_needed, emulator.stop)
    fixture = create_fixture(emulator.url)
    say(
        f"gcp-storage-emulator is Cloud Storage at {emulator.url}, with"
        f" {len(fixture.objects)} objects in the buckets {', '.join(BUCKETS.values())}"
    )

    grants = Grants()
    our_token = f"demo-own-token-{secrets.token_urlsafe(16)}"
    grants.add_token(our_token, OUR_SERVICE_ACCOUNT)
    grants.allow_read(OUR_SERVICE_ACCOUNT, BUCKETS["vendor_readable"])

    iam_log = stack.enter_context(open(run_dir / "gcp-iam.log", "w", encoding="utf-8"))
    iam = MockIam(grants, iam_log)
    iam.start()
    stack.callback(iam.stop)
    storage_log = stack.enter_context(open(run_dir / "gcs-front.log", "w", encoding="utf-8"))
    storage = StorageFront(emulator.url, grants, storage_log)
    storage.start()
    stack.callback(storage.stop)
    say(
        f"Cloud Storage at {storage.url} checks each token's access per bucket, and"
        f" IAM Credentials at {iam.url} mints tokens only where a grant allows it;"
        f" {OUR_SERVICE_ACCOUNT} may read {BUCKETS['vendor_readable']}"
    )
    return DemoGcp(emulator, fixture, grants, iam, storage, our_token)


def gcp_settings(gcp: DemoGcp) -> dict[str, str]:
    """Return the ATTACHE_GCP_* settings of the producer and the fetch-worker."""
    return {
        "ATTACHE_GCP_SERVICE_ACCOUNT": OUR_SERVICE_ACCOUNT,
        "ATTACHE_GCP_ACCESS_TOKEN": gcp.our_token,
        "ATTACHE_GCP_STORAGE_ENDPOINT": gcp.storage.url,
        "ATTACHE_GCP_IAM_ENDPOINT": gcp.iam.url,
    }


def error_of(body: object) -> dict[str, object]:
    """Return the `error` object of an API error body, or an empty one."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def activate_impersonation(client: ApiClient, team: str, gcp: DemoGcp) -> list[str]:
    """Set up impersonation for team as a customer would, and return the problems."""
    status, settings = client.request("GET", INTEGRATION)
    identifier = settings.get("identifier") if isinstance(settings, dict) else None
    if status != 200 or not isinstance(identifier, str):
        return [f"GET {INTEGRATION} for team {team} returned {status}: {settings!r}"]
    problems = []
    if settings.get("our_service_account") != OUR_SERVICE_ACCOUNT:
        problems.append(
            f"GET {INTEGRATION} shows our_service_account"
            f" {settings.get('our_service_account')!r}, expected {OUR_SERVICE_ACCOUNT!r}"
        )
    say(f"team {team}'s identifier from GET {INTEGRATION} is {identifier}")

    problems += reject_email_without_identifier(client, team, identifier, gcp)

    account = f"attache-{identifier}@{CUSTOMER_PROJECT}.iam.gserviceaccount.com"
    gcp.grants.allow_impersonation(OUR_SERVICE_ACCOUNT, account)
    gcp.grants.allow_read(account, BUCKETS["customer"])
    requests_before = len(gcp.iam.received())
    status, body = client.request("PUT", INTEGRATION, {"service_account": account})
    active = isinstance(body, dict) and body.get("impersonation_active") is True
    if status != 200 or not active or body.get("service_account") != account:
        return problems + [
            f"PUT {INTEGRATION} for team {team} with {account} returned {status}, expected 200"
            f" with impersonation_active true and that service_account: {body!r}"
        ]
    minted = gcp.iam.received()[requests_before:]
    expected = [(account, [READ_ONLY_SCOPE], EXPECTED_LIFETIME, 200)]
    actual = [(r.service_account, r.scope, r.lifetime, r.status) for r in minted]
    if actual != expected:
        problems.append(
            f"PUT {INTEGRATION} for team {team} sent the generateAccessToken requests {actual},"
            f" expected {expected}"
        )
    say(
        f"team {team} activated impersonation of {account}, which our service account may"
        f" impersonate and which may read {BUCKETS['customer']}: the API minted a token for it"
    )
    return problems


def reject_email_without_identifier(
    client: ApiClient, team: str, identifier: str, gcp: DemoGcp
) -> list[str]:
    """PUT a service account whose ID lacks the identifier, and check the API rejects it first."""
    requests_before = len(gcp.iam.received())
    status, body = client.request("PUT", INTEGRATION, {"service_account": EMAIL_WITHOUT_IDENTIFIER})
    error = error_of(body)
    message = str(error.get("message", ""))
    suggestion = f"attache-{identifier}@"
    if (
        status != 400
        or error.get("code") != "invalid_service_account"
        or f"`{identifier}`" not in message
        or suggestion not in message
    ):
        return [
            f"PUT {INTEGRATION} for team {team} with {EMAIL_WITHOUT_IDENTIFIER} returned {status},"
            f" expected 400 invalid_service_account naming `{identifier}` and {suggestion}:"
            f" {body!r}"
        ]
    say(
        f"team {team} tried to activate {EMAIL_WITHOUT_IDENTIFIER}, whose ID lacks the team's"
        f" identifier. The API rejected it with {status} {error['code']}: {message}"
    )
    if len(gcp.iam.received()) != requests_before:
        return [
            f"PUT {INTEGRATION} with {EMAIL_WITHOUT_IDENTIFIER} sent a generateAccessToken"
            " request, expected none before the identifier check passes"
        ]
    return []


def show_cross_project(client: ApiClient, team: str) -> list[str]:
    """Check that team, which activated nothing, reads with our own service account."""
    status, settings = client.request("GET", INTEGRATION)
    inactive = isinstance(settings, dict) and settings.get("impersonation_active") is False
    if status != 200 or not inactive:
        return [
            f"GET {INTEGRATION} for team {team} returned {status},"
            f" expected 200 with impersonation_active false: {settings!r}"
        ]
    say(
        f"team {team} has no impersonation, so {settings['our_service_account']} reads its"
        f" gs:// objects (cross-project access); it may read {BUCKETS['vendor_readable']}"
    )
    return []


def show_verification(client: ApiClient, team: str, uri: str) -> list[str]:
    """Print the verify report of uri for a team with impersonation, and check it."""
    status, report = client.request("POST", f"{INTEGRATION}/verify", {"uri": uri})
    say(f"POST {INTEGRATION}/verify of {uri} for team {team} returned {status}:")
    print(textwrap.indent(json.dumps(report, indent=2, ensure_ascii=False), "  "), flush=True)
    if (
        status != 200
        or not isinstance(report, dict)
        or report.get("ok") is not True
        or report.get("access_path") != "impersonated"
    ):
        return [
            f"POST {INTEGRATION}/verify of {uri} for team {team} returned {status},"
            ' expected 200 with "ok": true and "access_path": "impersonated"'
        ]
    return []


def check_traffic(gcp: DemoGcp, egress_ips: Iterable[str]) -> list[str]:
    """Check what the fronts received once every task has finished.

    Every request must come from an egress pool member, and every download
    that the emulator served must carry a CRC32C for the fetch-worker to
    check.
    """
    allowed = set(egress_ips)
    problems = []
    peers = gcp.storage.received_from() + [r.peer for r in gcp.iam.received()]
    if strays := sorted(set(peers) - allowed):
        problems.append(
            f"Cloud Storage or IAM Credentials requests came from {', '.join(strays)},"
            f" not only from the egress pool ({', '.join(sorted(allowed))})"
        )
    served = [d for d in gcp.storage.forwarded() if d.status == 200]
    if not served:
        problems.append("the Cloud Storage front served no download")
    if unchecked := [d for d in served if not d.has_crc32c]:
        problems.append(
            f"{len(unchecked)} downloads from gcp-storage-emulator had no crc32c in x-goog-hash,"
            " so the fetch-worker could not check them"
        )
    return problems
