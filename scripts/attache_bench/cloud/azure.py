"""Azure Blob Storage for the cloud phases: Azurite behind the demo's fronts, a container per team.

`start_azure` starts Azurite (attache_demo.azure_emulator), creates one
container per team with small blobs and a read-only SAS each, and starts
`MockTokens` and `BlobFront` (attache_demo.azure_fronts). `activate` links
one team to a tenant of its own through admin consent, as the demo does,
after granting that tenant read access to the team's container only.
MockTokens records every token request and the front every blob request,
which `credential_requests` and `object_reads` count.
"""

import hashlib
import os
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from attache_demo import DemoError
from attache_demo.api import ApiClient
from attache_demo.azure_access import INTEGRATION, send_consent_redirect
from attache_demo.azure_emulator import ACCOUNT, ACCOUNT_KEY, blob_uri, start_azurite
from attache_demo.azure_fronts import CLIENT_ID, CLIENT_SECRET, BlobFront, Directory, MockTokens
from attache_demo.processes import ServerProcess
from attache_demo.s3_access import warn_if_needed
from azure.core.exceptions import AzureError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from . import CloudContext

# The SAS outlives any benchmark run.
SAS_LIFETIME = timedelta(days=1)


class BenchAzure:
    """Azurite with a container per team, and the fronts before it."""

    name = "Azure Blob"
    credential_service = "tenant token (client credentials)"
    metric_label = "azure"

    def __init__(
        self,
        azurite: ServerProcess,
        directory: Directory,
        tokens: MockTokens,
        front: BlobFront,
        digests: dict[str, str],
    ) -> None:
        self.azurite = azurite
        self.directory = directory
        self.tokens = tokens
        self.front = front
        # SHA-256 by blob URL.
        self.digests = digests
        self.marked_requests = 0
        self.marked_reads = 0

    def env(self, api_url: str) -> dict[str, str]:
        """Return the ATTACHE_AZURE_* settings of the producer and the fetch-worker.

        api_url is the producer's, where the consent redirect arrives.
        """
        return {
            "ATTACHE_AZURE_CLIENT_ID": CLIENT_ID,
            "ATTACHE_AZURE_CLIENT_SECRET": CLIENT_SECRET,
            "ATTACHE_AZURE_AUTHORITY": self.tokens.url,
            "ATTACHE_AZURE_REDIRECT_URL": f"{api_url}{INTEGRATION}/consent",
            "ATTACHE_AZURE_BLOB_ENDPOINT_TEMPLATE": self.front.endpoint_template,
        }

    def activate(self, client: ApiClient, team_index: int) -> None:
        """Link the team to its own tenant by admin consent, as the tenant's administrator would."""
        status, body = client.request("POST", f"{INTEGRATION}/connect")
        consent_url = body.get("consent_url") if isinstance(body, dict) else None
        states = parse_qs(urlsplit(consent_url).query).get("state", []) if consent_url else []
        if status != 200 or len(states) != 1:
            raise DemoError(
                f"POST {INTEGRATION}/connect returned {status}, expected 200 with a"
                f" consent_url that has one state: {body!r}"
            )
        tenant = team_tenant(team_index)
        self.directory.allow_read(tenant, team_container(team_index))
        self.directory.consent(tenant)
        status, body = send_consent_redirect(client.base_url, tenant, states[0])
        if status != 200 or not isinstance(body, dict) or body.get("tenant") != tenant:
            raise DemoError(
                f"GET {INTEGRATION}/consent for tenant {tenant} returned {status}, expected 200"
                f" with that tenant: {body!r}"
            )

    def uris(self, team_index: int) -> list[str]:
        """Return the blob URLs of the team's blobs."""
        prefix = blob_uri(team_container(team_index), "")
        return sorted(uri for uri in self.digests if uri.startswith(prefix))

    def mark(self) -> None:
        """Start counting credential requests and object reads from here."""
        self.marked_requests = len(self.tokens.received())
        self.marked_reads = len(self.front.received())

    def credential_requests(self) -> Counter[str]:
        """Return the token requests per tenant since `mark`."""
        received = self.tokens.received()[self.marked_requests :]
        return Counter(request.tenant for request in received)

    def object_reads(self) -> int:
        """Return the blob reads with a tenant's token that Azurite served with 200 since `mark`."""
        received = self.front.received()[self.marked_reads :]
        return sum(1 for read in received if read.status == 200 and read.tenant is not None)


def team_container(team_index: int) -> str:
    return f"attache-bench-team-{team_index + 1}"


def team_tenant(team_index: int) -> str:
    """Return a tenant ID of its own for the team, in the GUID form of Microsoft Entra IDs."""
    number = team_index + 1
    return f"{number:08x}-0000-4000-8000-{number:012x}"


def start_azure(
    stack: ExitStack, ctx: CloudContext, team_count: int, blobs: int, size: int
) -> BenchAzure:
    """Start Azurite with `blobs` blobs of `size` bytes per team container, and both fronts."""
    azurite = start_azurite(ctx.run_dir)
    stack.callback(warn_if_needed, azurite.stop)
    digests, sas = create_containers(azurite.url, team_count, blobs, size)

    directory = Directory()
    tokens_log = stack.enter_context(open(ctx.run_dir / "azure-tokens.log", "w", encoding="utf-8"))
    tokens = MockTokens(directory, tokens_log)
    tokens.start()
    stack.callback(tokens.stop)
    front_log = stack.enter_context(open(ctx.run_dir / "azure-front.log", "w", encoding="utf-8"))
    front = BlobFront(azurite.url, directory, sas, front_log)
    front.start()
    stack.callback(front.stop)
    return BenchAzure(azurite, directory, tokens, front, digests)


def create_containers(
    azurite_url: str, team_count: int, blobs: int, size: int
) -> tuple[dict[str, str], dict[str, str]]:
    """Create a private container per team with its blobs.

    Returns the SHA-256 of each blob by URL and a read-only SAS by container.
    """
    service = BlobServiceClient(
        account_url=f"{azurite_url}/{ACCOUNT}",
        credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
        # Azurite is on loopback, so no proxy from the environment applies.
        transport=RequestsTransport(use_env_settings=False),
    )
    expiry = datetime.now(UTC) + SAS_LIFETIME
    digests = {}
    sas = {}
    try:
        for team_index in range(team_count):
            container = team_container(team_index)
            client = service.create_container(container)
            for index in range(blobs):
                body = os.urandom(size)
                client.upload_blob(f"object-{index}", body)
                digests[blob_uri(container, f"object-{index}")] = hashlib.sha256(body).hexdigest()
            sas[container] = generate_container_sas(
                ACCOUNT,
                container,
                account_key=ACCOUNT_KEY,
                permission=ContainerSasPermissions(read=True),
                expiry=expiry,
            )
    except AzureError as error:
        raise DemoError(f"creating the benchmark containers in Azurite failed: {error}") from error
    return digests, sas
