"""gcp-storage-emulator as the demo's Cloud Storage: its server process and the objects in it.

`start_emulator` runs `python -m gcp_storage_emulator start --in-memory` on
a free loopback port as a `ServerProcess` (processes.py), which writes its
pid to RUN_DIR/gcs-emulator.pid while it runs, so scripts/demo.sh can stop
it if the demo dies first. `create_fixture` creates
two buckets with the same object names, uploads each object through the
emulator's JSON API and reads it back, and returns a `GcsFixture`.

The emulator accepts any bearer token, or none. The demo's binaries reach
it only through `StorageFront` (gcp_fronts.py), which decides who may read
which bucket.
"""

import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from . import DemoError
from .examples import ExpectedContent
from .processes import ServerCommand, ServerProcess

# Time allowed for one request of the set-up, a 1 MiB upload included.
REQUEST_TIMEOUT_SECONDS = 30

# Bucket labels of the examples' {{GCS:BUCKET:OBJECT}} placeholders, with
# the bucket names. Cloud Storage bucket names are global, hence the prefix.
BUCKETS = {
    "customer": "attache-demo-customer",
    "vendor_readable": "attache-demo-vendor-readable",
}

# Object labels with the object names, which every bucket contains. Each
# name must reach Cloud Storage byte for byte, so the fetch-worker must
# percent-encode it as one path segment.
OBJECT_NAMES = {
    "space": "with space.txt",
    "hash": "notes#1.txt",
    "question": "report?v=1&x=2.csv",
    "percent": "100%25 done%2Fsplit.txt",
    "nested": "dir/sub dir/é-ü.txt",
    "non_ascii": "naïve 文件.bin",
    "large": "large.bin",
}

# One byte over 1 MiB, so the body spans more than one read buffer.
LARGE_OBJECT_BYTES = 1024 * 1024 + 1

# Every address the demo talks to is on 127.0.0.1, so no proxy from the
# environment applies.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def object_body(bucket: str, name: str) -> bytes:
    """Return the bytes stored for name in bucket, distinct per bucket and name.

    A read from the wrong bucket or of the wrong object then shows up as a
    wrong SHA-256 in the demo's checks.
    """
    line = f"{bucket}/{name}\n".encode()
    if name == OBJECT_NAMES["large"]:
        return (line * (LARGE_OBJECT_BYTES // len(line) + 1))[:LARGE_OBJECT_BYTES]
    return line * 20


def emulator_arguments(port: int) -> list[str]:
    """Return the arguments after `python` that start the emulator on port, in memory."""
    return [
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
    ]


def start_emulator(run_dir: Path) -> ServerProcess:
    """Start gcp-storage-emulator on a free loopback port and wait until it responds.

    Raises DemoError with the emulator's log tail when it does not start.
    """
    command = ServerCommand("gcp-storage-emulator", "gcs-emulator", emulator_arguments, "/")
    return ServerProcess.start(run_dir, command)


@dataclass(frozen=True)
class GcsObject:
    """One object of the fixture, with the size and SHA-256 of its body."""

    uri: str
    content: ExpectedContent


@dataclass(frozen=True)
class GcsFixture:
    """The objects that `create_fixture` created, keyed by (bucket label, object label)."""

    objects: dict[tuple[str, str], GcsObject]

    def uri(self, bucket_label: str, object_label: str) -> str:
        return self.objects[(bucket_label, object_label)].uri

    def placeholders(self) -> dict[str, str]:
        """Return the GCS:BUCKET:OBJECT placeholder names of the examples with their URIs."""
        return {
            f"GCS:{bucket_label}:{object_label}": item.uri
            for (bucket_label, object_label), item in self.objects.items()
        }

    def contents_by_uri(self) -> dict[str, ExpectedContent]:
        return {item.uri: item.content for item in self.objects.values()}


def create_fixture(emulator_url: str) -> GcsFixture:
    """Create BUCKETS with every object of OBJECT_NAMES in the emulator and read each back.

    Raises DemoError when the emulator rejects a request or returns other
    bytes than were uploaded.
    """
    objects = {}
    for bucket_label, bucket in BUCKETS.items():
        bucket_resource = json.dumps({"name": bucket}).encode()
        send(emulator_url, "POST", "/storage/v1/b", bucket_resource, "application/json")
        for object_label, name in OBJECT_NAMES.items():
            body = object_body(bucket, name)
            upload = f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quote(name, safe='')}"
            send(emulator_url, "POST", upload, body)
            stored = send(emulator_url, "GET", media_path(bucket, name))
            if stored != body:
                raise DemoError(
                    f"gcp-storage-emulator returned {len(stored)} other bytes for"
                    f" gs://{bucket}/{name} than the {len(body)} uploaded"
                )
            content = ExpectedContent(len(body), hashlib.sha256(body).hexdigest())
            objects[(bucket_label, object_label)] = GcsObject(f"gs://{bucket}/{name}", content)
    return GcsFixture(objects)


def media_path(bucket: str, name: str) -> str:
    """Return the JSON API download path of an object, its name encoded as one path segment."""
    return f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}?alt=media"


def send(
    base_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/octet-stream",
) -> bytes:
    """Send one request to the emulator and return the response body.

    Raises DemoError unless the status is 2xx.
    """
    request = urllib.request.Request(f"{base_url}{path}", data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with _opener.open(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", errors="replace")[:300]
        raise DemoError(
            f"gcp-storage-emulator returned {error.code} to {method} {path}: {detail}"
        ) from error
    except (urllib.error.URLError, OSError) as error:
        raise DemoError(
            f"gcp-storage-emulator did not respond to {method} {path}: {error}"
        ) from error
