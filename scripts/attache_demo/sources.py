"""Attachment sources with planned behaviour, for the chaos test.

A `SourcePlan` decides, from a seed, what each attachment's URL does when
fetched, and what the pipeline must record for it in the end:

- plain: 200 with the whole body at once.
- slow: 200 whose body is sent in chunks spread over 1 to 3 seconds, which
  is below the fetch-worker's read timeout (30 s by default).
- flaky: a 5xx status for the first 1 to 3 requests, then like plain.
- missing: 404, so the attachment must fail with `not_found`.

`SourceServer` serves a plan on 127.0.0.1. It counts requests per path on the
server side, so a flaky source fails its first requests from any worker
process, also when a killed worker sent one and never recorded its attempt. Bodies
are generated from the seed on each request rather than kept in memory.
"""

import hashlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, TextIO

from .servers import _LoggingServer

CONTENT_TYPE = "application/octet-stream"
# Bodies are 1 to 64 KiB: enough for several chunks, small enough that
# thousands of them hash in about a second.
MIN_BODY_BYTES = 1
MAX_BODY_BYTES = 64 * 1024
SLOW_CHUNKS = 8
FLAKY_STATUSES = (
    HTTPStatus.INTERNAL_SERVER_ERROR,
    HTTPStatus.BAD_GATEWAY,
    HTTPStatus.SERVICE_UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT,
)


class SourceKind(Enum):
    PLAIN = "plain"
    SLOW = "slow"
    FLAKY = "flaky"
    MISSING = "missing"


@dataclass(frozen=True)
class Shares:
    """Fractions of attachments per kind. Plain sources take the rest."""

    slow: float = 0.10
    flaky: float = 0.15
    missing: float = 0.05

    def __post_init__(self) -> None:
        for name in ("slow", "flaky", "missing"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"share of {name} sources must be between 0 and 1")
        if self.slow + self.flaky + self.missing > 1:
            raise ValueError("shares of slow, flaky and missing sources add up to more than 1")


@dataclass(frozen=True)
class Source:
    """One attachment's URL path, its behaviour, and the result the pipeline must record."""

    path: str
    kind: SourceKind
    body_seed: int
    size_bytes: int
    sha256: str
    # Seconds over which a slow source sends its body, 0 for other kinds.
    send_seconds: float
    # Requests that get `failure_status` before the first success.
    failures: int
    failure_status: int

    @property
    def succeeds(self) -> bool:
        return self.kind is not SourceKind.MISSING

    def body(self) -> bytes:
        return random.Random(self.body_seed).randbytes(self.size_bytes)


class SourcePlan:
    """The sources of every attachment of every task, drawn from one seed."""

    def __init__(self, tasks: int, attachments_per_task: int, shares: Shares, seed: int) -> None:
        draw = random.Random(seed)
        self.by_path: dict[str, Source] = {}
        self.tasks: list[list[Source]] = []
        for task in range(tasks):
            sources = [
                self._draw_source(draw, f"task-{task}/attachment-{position}", shares)
                for position in range(attachments_per_task)
            ]
            self.tasks.append(sources)
            self.by_path.update((source.path, source) for source in sources)

    @staticmethod
    def _draw_source(draw: random.Random, name: str, shares: Shares) -> Source:
        roll = draw.random()
        if roll < shares.slow:
            kind = SourceKind.SLOW
        elif roll < shares.slow + shares.flaky:
            kind = SourceKind.FLAKY
        elif roll < shares.slow + shares.flaky + shares.missing:
            kind = SourceKind.MISSING
        else:
            kind = SourceKind.PLAIN

        body_seed = draw.getrandbits(64)
        size = draw.randint(MIN_BODY_BYTES, MAX_BODY_BYTES)
        body = random.Random(body_seed).randbytes(size)
        return Source(
            path=f"/sources/{kind.value}/{name}.bin",
            kind=kind,
            body_seed=body_seed,
            size_bytes=size,
            sha256=hashlib.sha256(body).hexdigest(),
            send_seconds=draw.uniform(1.0, 3.0) if kind is SourceKind.SLOW else 0.0,
            failures=draw.randint(1, 3) if kind is SourceKind.FLAKY else 0,
            failure_status=int(draw.choice(FLAKY_STATUSES)),
        )

    def count(self, kind: SourceKind) -> int:
        return sum(1 for source in self.by_path.values() if source.kind is kind)


class _SourceHandler(BaseHTTPRequestHandler):
    server: "SourceServer"
    # HTTP/1.1 keeps connections open, as real file servers do, so a
    # worker's connection pool is exercised across kills too.
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        source = self.server.plan.by_path.get(self.path)
        request_number = self.server.count_request(self.path)
        if source is None or not source.succeeds:
            self.send_empty(HTTPStatus.NOT_FOUND)
            return
        if request_number <= source.failures:
            self.send_empty(source.failure_status)
            return

        body = source.body()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if source.kind is SourceKind.SLOW:
            self.send_slowly(body, source.send_seconds)
        else:
            self.wfile.write(body)

    def send_empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_slowly(self, body: bytes, seconds: float) -> None:
        chunk_size = max(1, -(-len(body) // SLOW_CHUNKS))
        pause = seconds / SLOW_CHUNKS
        for start in range(0, len(body), chunk_size):
            time.sleep(pause)
            self.wfile.write(body[start : start + chunk_size])
            self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        self.server.write_log(f"{self.address_string()} {format % args}")


class SourceServer(_LoggingServer):
    """Serves a `SourcePlan` and counts the requests for each path."""

    def __init__(self, plan: SourcePlan, log: TextIO) -> None:
        super().__init__(_SourceHandler, log)
        self.plan = plan
        self.requests: Counter[str] = Counter()
        self.requests_lock = threading.Lock()

    def count_request(self, path: str) -> int:
        """Count a request for path and return how many there have been, this one included."""
        with self.requests_lock:
            self.requests[path] += 1
            return self.requests[path]

    def requests_by_kind(self) -> Counter[str]:
        """Return the number of requests received per source kind."""
        with self.requests_lock:
            totals: Counter[str] = Counter()
            for path, count in self.requests.items():
                source = self.plan.by_path.get(path)
                totals[source.kind.value if source else "unknown"] += count
            return totals
