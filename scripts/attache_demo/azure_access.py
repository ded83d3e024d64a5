"""The demo's Azure Blob Storage side: Azurite, and the teams' links under /v1/integrations/azure.

`start_azure` starts Azurite, creates its containers and blobs, and starts
the mock token endpoint and the Blob Storage front before Azurite (see
azure_fronts.py). Tenant A's application may read the private container
and tenant B's the other tenant's container. No tenant's application has a
role on the public one. `azure_settings` returns what the producer and the
fetch-worker need to use it all.

Once the binaries run, `link_tenant` links a team to tenant A through the
real admin-consent flow. It takes the `state` from the consent URL that
POST /v1/integrations/azure/connect returns, and sends the redirect that
Microsoft would send the administrator's browser to after consent. Then it
sends the same redirect again, which the API must reject because a state
works once. `show_anonymous`, `show_verification` and `check_traffic`
check the other team, one verify report and what the fronts received.
Each returns the differences from the expected outcome, one line each.
"""

import json
import textwrap
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from .api import ApiClient, request_json
from .azure_emulator import CONTAINERS, AzureFixture, create_fixture, start_azurite
from .azure_fronts import CLIENT_ID, CLIENT_SECRET, BlobFront, Directory, MockTokens
from .processes import ServerProcess
from .s3_access import warn_if_needed

INTEGRATION = "/v1/integrations/azure"
# The tenants of two customers. The linked team's tenant is A.
TENANT_A = "aaaaaaaa-0000-4000-8000-00000000000a"
TENANT_B = "bbbbbbbb-0000-4000-8000-00000000000b"
READER_ROLE = "Storage Blob Data Reader"


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


@dataclass(frozen=True)
class DemoAzure:
    """Azurite with its blobs, and the fronts before it."""

    azurite: ServerProcess
    fixture: AzureFixture
    directory: Directory
    tokens: MockTokens
    front: BlobFront


def start_azure(stack: ExitStack, run_dir: Path) -> DemoAzure:
    """Start Azurite, create its blobs and start both fronts, all stopped with stack."""
    azurite = start_azurite(run_dir)
    stack.callback(warn_if_needed, azurite.stop)
    fixture = create_fixture(azurite.url)
    names = [name for name, _ in CONTAINERS.values()]
    say(
        f"Azurite is Azure Blob Storage at {azurite.url}, with {len(fixture.blobs)} blobs"
        f" in the containers {', '.join(names)}"
    )

    directory = Directory()
    directory.allow_read(TENANT_A, CONTAINERS["private"][0])
    directory.allow_read(TENANT_B, CONTAINERS["other_tenant"][0])

    tokens_log = stack.enter_context(open(run_dir / "azure-tokens.log", "w", encoding="utf-8"))
    tokens = MockTokens(directory, tokens_log)
    tokens.start()
    stack.callback(tokens.stop)
    front_log = stack.enter_context(open(run_dir / "azure-front.log", "w", encoding="utf-8"))
    front = BlobFront(azurite.url, directory, fixture.sas, front_log)
    front.start()
    stack.callback(front.stop)
    say(
        f"Blob Storage at {front.url} checks each token's tenant per container, and the"
        f" token endpoint at {tokens.url} issues tokens only to consented tenants;"
        f" tenant {TENANT_A} may read {CONTAINERS['private'][0]},"
        f" tenant {TENANT_B} may read {CONTAINERS['other_tenant'][0]}"
    )
    return DemoAzure(azurite, fixture, directory, tokens, front)


def azure_settings(azure: DemoAzure, api_url: str) -> dict[str, str]:
    """Return the ATTACHE_AZURE_* settings of the producer and the fetch-worker."""
    return {
        "ATTACHE_AZURE_CLIENT_ID": CLIENT_ID,
        "ATTACHE_AZURE_CLIENT_SECRET": CLIENT_SECRET,
        "ATTACHE_AZURE_AUTHORITY": azure.tokens.url,
        "ATTACHE_AZURE_REDIRECT_URL": f"{api_url}{INTEGRATION}/consent",
        "ATTACHE_AZURE_BLOB_ENDPOINT_TEMPLATE": azure.front.endpoint_template,
    }


def error_of(body: object) -> dict[str, object]:
    """Return the `error` object of an API error body, or an empty one."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def consent_state(client: ApiClient, team: str, azure: DemoAzure) -> tuple[str | None, list[str]]:
    """Start admin consent for team and return the consent URL's state, or None and the problems."""
    status, body = client.request("POST", f"{INTEGRATION}/connect")
    consent_url = body.get("consent_url") if isinstance(body, dict) else None
    if status != 200 or not isinstance(consent_url, str):
        return None, [
            f"POST {INTEGRATION}/connect for team {team} returned {status},"
            f" expected 200 with a consent_url: {body!r}"
        ]
    query = parse_qs(urlsplit(consent_url).query)
    problems = []
    if not consent_url.startswith(f"{azure.tokens.url}/"):
        problems.append(f"the consent URL {consent_url} is not on the authority {azure.tokens.url}")
    if query.get("client_id") != [CLIENT_ID]:
        problems.append(
            f"the consent URL names client_id {query.get('client_id')}, expected {CLIENT_ID}"
        )
    states = query.get("state", [])
    if len(states) != 1:
        return None, problems + [f"the consent URL {consent_url} has no single state"]
    say(f"team {team} started admin consent: POST {INTEGRATION}/connect returned a consent URL")
    return states[0], problems


def send_consent_redirect(api_url: str, tenant: str, state: str) -> tuple[int, object]:
    """Send the redirect that Microsoft sends the administrator's browser to, without an API key."""
    query = urlencode({"tenant": tenant, "admin_consent": "True", "state": state})
    return request_json("GET", f"{api_url}{INTEGRATION}/consent?{query}")


def link_tenant(client: ApiClient, team: str, azure: DemoAzure) -> list[str]:
    """Link team to tenant A by admin consent, send the redirect again, and return the problems."""
    state, problems = consent_state(client, team, azure)
    if state is None:
        return problems

    # The administrator of tenant A opens the consent URL and accepts.
    azure.directory.consent(TENANT_A)
    status, body = send_consent_redirect(client.base_url, TENANT_A, state)
    linked = isinstance(body, dict) and body.get("linked") is True
    if status != 200 or not linked or body.get("tenant") != TENANT_A:
        return problems + [
            f"GET {INTEGRATION}/consent for team {team} returned {status}, expected 200 with"
            f" linked true and tenant {TENANT_A}: {body!r}"
        ]
    say(f"tenant {TENANT_A} consented and GET {INTEGRATION}/consent linked team {team} to it")

    status, settings = client.request("GET", INTEGRATION)
    if status != 200 or not isinstance(settings, dict) or settings.get("tenant") != TENANT_A:
        problems.append(
            f"GET {INTEGRATION} for team {team} returned {status}, expected 200 with"
            f" tenant {TENANT_A}: {settings!r}"
        )
    elif settings.get("role") != READER_ROLE or settings.get("client_id") != CLIENT_ID:
        problems.append(
            f"GET {INTEGRATION} shows role {settings.get('role')!r} and client_id"
            f" {settings.get('client_id')!r}, expected {READER_ROLE!r} and {CLIENT_ID!r}"
        )

    status, body = send_consent_redirect(client.base_url, TENANT_A, state)
    error = error_of(body)
    message = str(error.get("message", ""))
    if (
        status != 400
        or error.get("code") != "consent_state_used"
        or f"POST {INTEGRATION}/connect" not in message
    ):
        return problems + [
            f"a second GET {INTEGRATION}/consent with the same state returned {status}, expected"
            f" 400 consent_state_used naming POST {INTEGRATION}/connect: {body!r}"
        ]
    say(
        f"the same consent redirect sent again was rejected with {status} {error['code']}:"
        f" {message}"
    )
    return problems


def show_anonymous(client: ApiClient, team: str) -> list[str]:
    """Check that team, which linked no tenant, reads blobs anonymously."""
    status, settings = client.request("GET", INTEGRATION)
    unlinked = isinstance(settings, dict) and settings.get("linked") is False
    if status != 200 or not unlinked:
        return [
            f"GET {INTEGRATION} for team {team} returned {status},"
            f" expected 200 with linked false: {settings!r}"
        ]
    say(
        f"team {team} linked no tenant, so its blobs are read anonymously, which only"
        f" {CONTAINERS['public'][0]} allows"
    )
    return []


def show_verification(client: ApiClient, team: str, uri: str) -> list[str]:
    """Print the verify report of uri for a linked team, and check it."""
    status, report = client.request("POST", f"{INTEGRATION}/verify", {"uri": uri})
    say(f"POST {INTEGRATION}/verify of {uri} for team {team} returned {status}:")
    print(textwrap.indent(json.dumps(report, indent=2, ensure_ascii=False), "  "), flush=True)
    if (
        status != 200
        or not isinstance(report, dict)
        or report.get("ok") is not True
        or report.get("access_path") != "service_principal"
    ):
        return [
            f"POST {INTEGRATION}/verify of {uri} for team {team} returned {status},"
            ' expected 200 with "ok": true and "access_path": "service_principal"'
        ]
    return []


def check_traffic(azure: DemoAzure, egress_ips: Iterable[str]) -> list[str]:
    """Check what the fronts received once every task has finished.

    Every request must come from an egress pool member, and token requests
    must name only tenant A, the linked team's tenant.
    """
    allowed = set(egress_ips)
    problems = []
    token_requests = azure.tokens.received()
    peers = [r.peer for r in azure.front.received()] + [r.peer for r in token_requests]
    if strays := sorted(set(peers) - allowed):
        problems.append(
            f"Blob Storage or token requests came from {', '.join(strays)},"
            f" not only from the egress pool ({', '.join(sorted(allowed))})"
        )
    if other_tenants := sorted({r.tenant for r in token_requests} - {TENANT_A}):
        problems.append(
            f"tokens were requested for {', '.join(other_tenants)}, expected only {TENANT_A}"
        )
    if not any(r.status == 200 and r.tenant is not None for r in azure.front.received()):
        problems.append("the Blob Storage front served no read with a tenant's token")
    if not any(r.status == 200 and r.tenant is None for r in azure.front.received()):
        problems.append("the Blob Storage front served no anonymous read")
    return problems
