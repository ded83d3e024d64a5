"""Azurite as the demo's Azure Blob Storage: its server process and the blobs in it.

`start_azurite` runs .tools/azurite (installed by scripts/install-azurite.sh)
over http on a free loopback port as a `ServerProcess` (processes.py),
storing into RUN_DIR/azurite. `create_fixture` creates a public and two
private containers with the same blob names through the azure-storage-blob
package, signed with Azurite's development account key, reads each blob
back, and returns an `AzureFixture` with a read-only SAS per container.

Over http Azurite serves anonymous reads of public containers as Blob
Storage does, but checks no bearer token. The binaries reach it only through
`BlobFront` (azure_fronts.py), which decides which tenant may read which
container.
"""

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from azure.core.exceptions import AzureError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from . import DemoError
from .examples import ExpectedContent
from .processes import ServerCommand, ServerProcess

REPO = Path(__file__).resolve().parent.parent.parent
AZURITE_BLOB = REPO / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"

# Azurite's development account, the only one it serves by default, with
# its published key. The key is the same in every Azurite and grants
# nothing outside the emulator.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

# Container labels of the examples' {{AZURE:CONTAINER:BLOB}} placeholders,
# with the container names and whether anonymous reads are allowed.
CONTAINERS = {
    "public": ("attache-demo-public", True),
    "private": ("attache-demo-private", False),
    "other_tenant": ("attache-demo-other-tenant", False),
}

# Blob labels with the blob names, which every container contains. Each
# `/`-separated segment must reach Blob Storage byte for byte.
BLOB_NAMES = {
    "space": "with space.txt",
    "nested": "dir/sub dir/é-ü.txt",
    "non_ascii": "naïve 文件.bin",
    "large": "large.bin",
}

# One byte over 1 MiB, so the body spans more than one read buffer.
LARGE_BLOB_BYTES = 1024 * 1024 + 1
# The SAS outlives any demo run.
SAS_LIFETIME = timedelta(days=1)


def blob_body(container: str, name: str) -> bytes:
    """Return the bytes stored for name in container, distinct per container and name.

    A read from the wrong container or of the wrong blob then shows up as a
    wrong SHA-256 in the demo's checks.
    """
    line = f"{container}/{name}\n".encode()
    if name == BLOB_NAMES["large"]:
        return (line * (LARGE_BLOB_BYTES // len(line) + 1))[:LARGE_BLOB_BYTES]
    return line * 20


def blob_uri(container: str, name: str) -> str:
    """Return the attachment URL of a blob, each `/`-separated segment percent-encoded once."""
    segments = "/".join(quote(segment, safe="") for segment in name.split("/"))
    return f"https://{ACCOUNT}.blob.core.windows.net/{container}/{segments}"


def responds(url: str) -> bool:
    """Tell whether url returns any HTTP response, because Azurite has no health path."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def start_azurite(run_dir: Path) -> ServerProcess:
    """Start Azurite's blob service on a free loopback port and wait until it responds.

    Raises DemoError with Azurite's log tail when it does not start.
    """
    location = run_dir / "azurite"
    location.mkdir(exist_ok=True)

    def arguments(port: int) -> list[str]:
        return [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            # --loose accepts headers that Azurite does not implement, and
            # --skipApiVersionCheck the x-ms-version that the fetch-worker
            # and azure-storage-blob send, which may be newer than Azurite's.
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--location",
            str(location),
        ]

    command = ServerCommand(
        "Azurite",
        "azurite",
        arguments,
        "/",
        program=str(AZURITE_BLOB),
        is_ready=responds,
        install_hint="Azurite comes from npm: run scripts/install-azurite.sh.",
    )
    if not AZURITE_BLOB.exists():
        raise DemoError(f"{AZURITE_BLOB} is missing: run scripts/install-azurite.sh")
    return ServerProcess.start(run_dir, command)


@dataclass(frozen=True)
class AzureBlob:
    """One blob of the fixture, with the size and SHA-256 of its body."""

    uri: str
    content: ExpectedContent


@dataclass(frozen=True)
class AzureFixture:
    """The blobs that `create_fixture` created, keyed by (container label, blob label)."""

    blobs: dict[tuple[str, str], AzureBlob]
    # A read-only SAS query per container name.
    sas: dict[str, str]

    def uri(self, container_label: str, blob_label: str) -> str:
        return self.blobs[(container_label, blob_label)].uri

    def placeholders(self) -> dict[str, str]:
        """Return the AZURE:CONTAINER:BLOB placeholder names of the examples with their URLs."""
        return {
            f"AZURE:{container_label}:{blob_label}": item.uri
            for (container_label, blob_label), item in self.blobs.items()
        }

    def contents_by_uri(self) -> dict[str, ExpectedContent]:
        return {item.uri: item.content for item in self.blobs.values()}


def create_fixture(azurite_url: str) -> AzureFixture:
    """Create CONTAINERS with every blob of BLOB_NAMES in Azurite and read each back.

    Raises DemoError when Azurite rejects a request or returns other bytes
    than were uploaded.
    """
    # No proxy from the environment applies, because Azurite is on loopback.
    service = BlobServiceClient(
        account_url=f"{azurite_url}/{ACCOUNT}",
        credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
        transport=RequestsTransport(use_env_settings=False),
    )
    expiry = datetime.now(UTC) + SAS_LIFETIME
    blobs = {}
    sas = {}
    try:
        for container_label, (container, public) in CONTAINERS.items():
            client = service.create_container(container, public_access="blob" if public else None)
            for blob_label, name in BLOB_NAMES.items():
                body = blob_body(container, name)
                client.upload_blob(name, body, overwrite=True)
                stored = client.download_blob(name).readall()
                if stored != body:
                    raise DemoError(
                        f"Azurite returned {len(stored)} other bytes for {container}/{name}"
                        f" than the {len(body)} uploaded"
                    )
                content = ExpectedContent(len(body), hashlib.sha256(body).hexdigest())
                blobs[(container_label, blob_label)] = AzureBlob(blob_uri(container, name), content)
            sas[container] = generate_container_sas(
                ACCOUNT,
                container,
                account_key=ACCOUNT_KEY,
                permission=ContainerSasPermissions(read=True),
                expiry=expiry,
            )
    except AzureError as error:
        raise DemoError(f"creating the demo's containers in Azurite failed: {error}") from error
    return AzureFixture(blobs, sas)
