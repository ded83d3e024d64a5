"""Loopback stand-ins for Google's access control: a Cloud Storage front and a mock IAM Credentials.

gcp-storage-emulator accepts any bearer token, or none, so on its own it
could not show which identity read an object. `StorageFront` checks each
request's token against the buckets that its service account may read, as
Cloud Storage's IAM would, with Google's 401 and 403 error bodies, and
forwards allowed requests to the emulator. Google publishes no emulator of
IAM Credentials, so `MockIam` implements `generateAccessToken` itself. It
mints a token only for a (caller's service account, target service
account) pair that `Grants.allow_impersonation` allowed, and registers the
token for the front. Both record the source address of every request, so
the demo can check that the binaries sent them through the egress pool.
"""

import contextlib
import http.client
import json
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from .servers import _LoggingServer
from .sts_front import HOP_BY_HOP, UPSTREAM_TIMEOUT_SECONDS

# The scope the fetch-worker must request for impersonated tokens.
READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
# generateAccessToken bodies are small JSON objects, so a larger one is rejected.
MAX_IAM_BODY_BYTES = 64 * 1024
# The lifetime of minted tokens, which Google also grants by default.
TOKEN_LIFETIME = timedelta(hours=1)


class Grants:
    """The service account of each token, and the roles granted to each service account.

    Shared by `MockIam`, which adds tokens, and `StorageFront`, which checks
    them. Every method may be called from any server thread.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tokens: dict[str, str] = {}
        self.readers: dict[str, set[str]] = {}
        self.token_creators: set[tuple[str, str]] = set()

    def add_token(self, token: str, service_account: str) -> None:
        with self.lock:
            self.tokens[token] = service_account

    def allow_read(self, service_account: str, bucket: str) -> None:
        """Grant service_account the role Storage Object Viewer on bucket."""
        with self.lock:
            self.readers.setdefault(service_account, set()).add(bucket)

    def allow_impersonation(self, caller: str, target: str) -> None:
        """Grant caller the role Service Account Token Creator on target."""
        with self.lock:
            self.token_creators.add((caller, target))

    def principal(self, authorization: str | None) -> str | None:
        """Return the service account of a `Bearer` Authorization header, or None."""
        if authorization is None or not authorization.startswith("Bearer "):
            return None
        with self.lock:
            return self.tokens.get(authorization.removeprefix("Bearer "))

    def may_read(self, principal: str, bucket: str) -> bool:
        with self.lock:
            return bucket in self.readers.get(principal, set())

    def may_impersonate(self, caller: str, target: str) -> bool:
        with self.lock:
            return (caller, target) in self.token_creators


def send_google_error(handler: BaseHTTPRequestHandler, status: HTTPStatus, message: str) -> None:
    """Respond with a Google API error body, as Cloud Storage and IAM Credentials do."""
    body = json.dumps({"error": {"code": int(status), "message": message}}).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=UTF-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@dataclass(frozen=True)
class TokenRequest:
    """One generateAccessToken request that `MockIam` received, rejected ones included."""

    service_account: str
    scope: Any
    lifetime: Any
    peer: str
    status: int


class _IamHandler(BaseHTTPRequestHandler):
    server: "MockIam"

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        prefix, suffix = "/v1/projects/-/serviceAccounts/", ":generateAccessToken"
        if not (path.startswith(prefix) and path.endswith(suffix)):
            send_google_error(self, HTTPStatus.NOT_FOUND, f"no such method: {path}")
            return

        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_IAM_BODY_BYTES:
            send_google_error(self, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except json.JSONDecodeError:
            body = None
        body = body if isinstance(body, dict) else {}

        target = unquote(path[len(prefix) : -len(suffix)])
        caller = self.server.grants.principal(self.headers.get("Authorization"))
        status, response_text = self.server.generate_access_token(caller, target, body)
        self.server.record(
            TokenRequest(
                target, body.get("scope"), body.get("lifetime"), self.client_address[0], status
            )
        )

        if status != HTTPStatus.OK:
            send_google_error(self, status, response_text)
            return
        encoded = response_text.encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.write_log(f"{self.address_string()} {format % args}")


class MockIam(_LoggingServer):
    """IAM Credentials `generateAccessToken` on 127.0.0.1, minting tokens that `Grants` allows."""

    def __init__(self, grants: Grants, log: TextIO) -> None:
        super().__init__(_IamHandler, log)
        self.grants = grants
        self.requests_lock = threading.Lock()
        self.requests: list[TokenRequest] = []

    def generate_access_token(
        self, caller: str | None, target: str, body: dict[str, Any]
    ) -> tuple[HTTPStatus, str]:
        """Return the status and, on 200, the JSON response body, else Google's error message."""
        if caller is None:
            return HTTPStatus.UNAUTHORIZED, "Request had invalid authentication credentials."
        if not self.grants.may_impersonate(caller, target):
            return (
                HTTPStatus.FORBIDDEN,
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource"
                " (or it may not exist).",
            )
        scope = body.get("scope")
        if not isinstance(scope, list) or READ_ONLY_SCOPE not in scope:
            return HTTPStatus.BAD_REQUEST, f"scope must contain {READ_ONLY_SCOPE}"
        if not isinstance(body.get("lifetime"), str):
            return HTTPStatus.BAD_REQUEST, "lifetime is required, such as 3600s"

        token = f"impersonated-{secrets.token_urlsafe(24)}"
        self.grants.add_token(token, target)
        expire_time = datetime.now(UTC) + TOKEN_LIFETIME
        token_response = {
            "accessToken": token,
            "expireTime": expire_time.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        self.write_log(f"minted a token for {target} on behalf of {caller}")
        return HTTPStatus.OK, json.dumps(token_response)

    def record(self, request: TokenRequest) -> None:
        with self.requests_lock:
            self.requests.append(request)

    def received(self) -> list[TokenRequest]:
        """Return every generateAccessToken request received so far, oldest first."""
        with self.requests_lock:
            return list(self.requests)


@dataclass(frozen=True)
class Download:
    """One request that `StorageFront` let through to the emulator."""

    principal: str
    bucket: str
    status: int
    # Whether the emulator's response carried a CRC32C in x-goog-hash,
    # which the fetch-worker checks the body against.
    has_crc32c: bool


class _StorageHandler(BaseHTTPRequestHandler):
    server: "StorageFront"

    def do_GET(self) -> None:
        self.server.record_peer(self.client_address[0])
        path = urlsplit(self.path).path
        bucket = unquote(path.removeprefix("/storage/v1/b/").split("/", 1)[0])
        authorization = self.headers.get("Authorization")
        principal = self.server.grants.principal(authorization)
        if principal is None:
            message = (
                "Anonymous caller does not have storage.objects.get access."
                if authorization is None
                else "Invalid Credentials"
            )
            send_google_error(self, HTTPStatus.UNAUTHORIZED, message)
            return
        if not path.startswith("/storage/v1/b/") or not self.server.grants.may_read(
            principal, bucket
        ):
            message = (
                f"{principal} does not have storage.objects.get access to the"
                " Google Cloud Storage object."
            )
            send_google_error(self, HTTPStatus.FORBIDDEN, message)
            return
        self.forward(principal, bucket)

    def forward(self, principal: str, bucket: str) -> None:
        """Send the GET to the emulator as received and relay its response."""
        upstream = http.client.HTTPConnection(
            self.server.upstream_host, self.server.upstream_port, timeout=UPSTREAM_TIMEOUT_SECONDS
        )
        try:
            with self.server.upstream_slot():
                upstream.putrequest("GET", self.path, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "host":
                        upstream.putheader(name, value)
                upstream.endheaders()
                response = upstream.getresponse()
                body = response.read()
        except (OSError, http.client.HTTPException) as error:
            message = f"forwarding to gcp-storage-emulator at {self.server.upstream_url} failed"
            self.server.write_log(f"{message}: {error}")
            send_google_error(self, HTTPStatus.BAD_GATEWAY, f"{message}: {error}")
            return
        finally:
            upstream.close()

        hashes = response.getheader("x-goog-hash") or ""
        has_crc32c = any(part.strip().startswith("crc32c=") for part in hashes.split(","))
        self.server.record_download(Download(principal, bucket, response.status, has_crc32c))
        self.log_request(response.status)
        # send_response_only, because send_response would add a second
        # Server and Date header to the emulator's.
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.write_log(f"{self.address_string()} {format % args}")


class StorageFront(_LoggingServer):
    """The Cloud Storage JSON API on 127.0.0.1: checks each token's bucket access, then forwards."""

    def __init__(
        self, upstream_url: str, grants: Grants, log: TextIO, upstream_limit: int | None = None
    ) -> None:
        """Forward to gcp-storage-emulator at upstream_url what grants allows.

        With upstream_limit, at most that many requests are forwarded at
        once and the rest wait their turn. gcp-storage-emulator 2026.7.19
        serves one request at a time with a listen backlog of 5, so a burst
        of connections beyond that is dropped and retried a second or more
        later.
        """
        super().__init__(_StorageHandler, log)
        self.upstream_slots: threading.Semaphore | None = None
        if upstream_limit is not None:
            self.upstream_slots = threading.Semaphore(upstream_limit)
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream_url {upstream_url!r} is not an http URL with a port")
        self.upstream_url = upstream_url
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.grants = grants
        self.records_lock = threading.Lock()
        self.peers: list[str] = []
        self.downloads: list[Download] = []

    def upstream_slot(self) -> contextlib.AbstractContextManager[Any]:
        """Return a context that takes one of the upstream_limit slots while entered, if limited."""
        if self.upstream_slots is None:
            return contextlib.nullcontext()
        return self.upstream_slots

    def record_peer(self, peer: str) -> None:
        with self.records_lock:
            self.peers.append(peer)

    def record_download(self, download: Download) -> None:
        with self.records_lock:
            self.downloads.append(download)

    def received_from(self) -> list[str]:
        """Return the source address of every request received so far."""
        with self.records_lock:
            return list(self.peers)

    def forwarded(self) -> list[Download]:
        """Return every request let through to the emulator so far, oldest first."""
        with self.records_lock:
            return list(self.downloads)
