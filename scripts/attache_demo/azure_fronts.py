"""Loopback stand-ins for Azure's access control: a Blob Storage front and a mock token endpoint.

Over http Azurite checks no bearer token, so on its own it could not show
which tenant read a blob. `BlobFront` plays Azure RBAC in front of it. It
accepts only tokens that `MockTokens` issued and lets a tenant read only
the containers that `Directory.allow_read` granted to it. Other requests
with a token get Blob Storage's 401 and 403 error bodies. It forwards an
allowed request with a read-only container SAS in place of the token, and
a request without a token unchanged, so Azurite decides whether the
container is public. No emulator of the Microsoft identity platform
exists, so `MockTokens` implements the client-credentials token endpoint
itself and issues tokens only for tenants that consented. Both record the source
address of every request, so the demo can check that the binaries sent
them through the egress pool.
"""

import http.client
import json
import secrets
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, TextIO
from urllib.parse import parse_qsl, unquote, urlsplit

from .servers import _LoggingServer
from .sts_front import HOP_BY_HOP, UPSTREAM_TIMEOUT_SECONDS

# Our application's client ID and secret in the demo.
CLIENT_ID = "00000000-0000-4000-8000-00000000a77a"
CLIENT_SECRET = f"demo-client-secret-{secrets.token_urlsafe(16)}"
# The only scope that Attaché may request.
STORAGE_SCOPE = "https://storage.azure.com/.default"
# Token request bodies are small forms, so a larger one is rejected.
MAX_TOKEN_BODY_BYTES = 16 * 1024
# The lifetime of issued tokens, close to what the identity platform grants.
TOKEN_LIFETIME_SECONDS = 3599


class Directory:
    """The consented tenants, the tenant of each token, and the containers each tenant may read.

    Shared by `MockTokens`, which adds tokens, and `BlobFront`, which checks
    them. Every method may be called from any server thread.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.consented: set[str] = set()
        self.tokens: dict[str, str] = {}
        self.readers: set[tuple[str, str]] = set()

    def consent(self, tenant: str) -> None:
        """Record that an administrator of tenant granted our application admin consent."""
        with self.lock:
            self.consented.add(tenant)

    def allow_read(self, tenant: str, container: str) -> None:
        """Assign our application Storage Blob Data Reader in tenant on container."""
        with self.lock:
            self.readers.add((tenant, container))

    def has_consented(self, tenant: str) -> bool:
        with self.lock:
            return tenant in self.consented

    def add_token(self, token: str, tenant: str) -> None:
        with self.lock:
            self.tokens[token] = tenant

    def tenant_of(self, token: str) -> str | None:
        with self.lock:
            return self.tokens.get(token)

    def may_read(self, tenant: str, container: str) -> bool:
        with self.lock:
            return (tenant, container) in self.readers


def send_json(handler: BaseHTTPRequestHandler, status: HTTPStatus, document: object) -> None:
    body = json.dumps(document).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@dataclass(frozen=True)
class TokenRequest:
    """One token request that `MockTokens` received, rejected ones included."""

    tenant: str
    peer: str
    status: int


class _TokenHandler(BaseHTTPRequestHandler):
    server: "MockTokens"

    def do_POST(self) -> None:
        parts = urlsplit(self.path).path.strip("/").split("/")
        if len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            send_json(self, HTTPStatus.NOT_FOUND, {"error": "invalid_request"})
            return
        tenant = unquote(parts[0])

        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_TOKEN_BODY_BYTES:
            status, document = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "invalid_request"}
        else:
            form = dict(parse_qsl(self.rfile.read(length).decode("utf-8", errors="replace")))
            status, document = self.server.issue_token(tenant, form)
        self.server.record(TokenRequest(tenant, self.client_address[0], int(status)))
        send_json(self, status, document)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.write_log(f"{self.address_string()} {format % args}")


def token_error(error: str, description: str) -> dict[str, str]:
    return {"error": error, "error_description": description}


class MockTokens(_LoggingServer):
    """`POST /{tenant}/oauth2/v2.0/token` on 127.0.0.1, issuing tokens to consented tenants."""

    def __init__(self, directory: Directory, log: TextIO) -> None:
        super().__init__(_TokenHandler, log)
        self.directory = directory
        self.requests_lock = threading.Lock()
        self.requests: list[TokenRequest] = []

    def issue_token(self, tenant: str, form: dict[str, str]) -> tuple[HTTPStatus, dict[str, Any]]:
        """Return the status and the token response, or the identity platform's error body."""
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return HTTPStatus.UNAUTHORIZED, token_error(
                "invalid_client", "AADSTS7000215: Invalid client secret provided."
            )
        if form.get("grant_type") != "client_credentials" or form.get("scope") != STORAGE_SCOPE:
            return HTTPStatus.BAD_REQUEST, token_error(
                "invalid_scope",
                f"expected grant_type=client_credentials and scope={STORAGE_SCOPE}",
            )
        if not self.directory.has_consented(tenant):
            return HTTPStatus.BAD_REQUEST, token_error(
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{CLIENT_ID}' was not found in"
                f" the directory '{tenant}'.",
            )
        token = f"demo-token-{secrets.token_urlsafe(24)}"
        self.directory.add_token(token, tenant)
        self.write_log(f"issued a token for tenant {tenant}")
        return HTTPStatus.OK, {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "access_token": token,
        }

    def record(self, request: TokenRequest) -> None:
        with self.requests_lock:
            self.requests.append(request)

    def received(self) -> list[TokenRequest]:
        """Return every token request received so far, oldest first."""
        with self.requests_lock:
            return list(self.requests)


@dataclass(frozen=True)
class BlobRead:
    """One blob request that `BlobFront` received."""

    # The tenant of the request's token, or None for an anonymous request.
    tenant: str | None
    container: str
    peer: str
    status: int


class _BlobHandler(BaseHTTPRequestHandler):
    server: "BlobFront"

    def do_GET(self) -> None:
        self.authorize_and_forward()

    def do_HEAD(self) -> None:
        self.authorize_and_forward()

    def authorize_and_forward(self) -> None:
        # The path is /{account}/{container}/{blob}.
        path = urlsplit(self.path).path
        container = unquote(path.split("/")[2]) if path.count("/") >= 2 else ""
        authorization = self.headers.get("Authorization")
        token = authorization.removeprefix("Bearer ") if authorization else None
        tenant = self.server.directory.tenant_of(token) if token else None

        if token is None:
            status = self.forward(self.path)
        elif tenant is None:
            status = self.send_storage_error(
                HTTPStatus.UNAUTHORIZED,
                "InvalidAuthenticationInfo",
                "Server failed to authenticate the request. The token was not issued.",
            )
        elif not self.server.directory.may_read(tenant, container):
            status = self.send_storage_error(
                HTTPStatus.FORBIDDEN,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            )
        else:
            status = self.forward(f"{path}?{self.server.sas[container]}")
        self.server.record(BlobRead(tenant, container, self.client_address[0], status))

    def send_storage_error(self, status: HTTPStatus, code: str, message: str) -> int:
        """Respond with a Blob Storage error body and x-ms-error-code, and return the status."""
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-ms-error-code", code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return int(status)

    def forward(self, target: str) -> int:
        """Send the request to Azurite at target without its token, and relay the response.

        Returns the status sent to the client.
        """
        upstream = http.client.HTTPConnection(
            self.server.upstream_host, self.server.upstream_port, timeout=UPSTREAM_TIMEOUT_SECONDS
        )
        try:
            upstream.putrequest(self.command, target, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP | {"host", "authorization"}:
                    upstream.putheader(name, value)
            upstream.endheaders()
            response = upstream.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            message = f"forwarding to Azurite at {self.server.upstream_url} failed"
            self.server.write_log(f"{message}: {error}")
            self.send_error(HTTPStatus.BAD_GATEWAY, message)
            return int(HTTPStatus.BAD_GATEWAY)
        finally:
            upstream.close()

        self.log_request(response.status)
        # send_response_only, because send_response would add a second
        # Server and Date header to Azurite's.
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        # A HEAD response keeps Azurite's Content-Length, the blob's size.
        length = response.getheader("Content-Length") if self.command == "HEAD" else len(body)
        self.send_header("Content-Length", str(length or 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return response.status

    def log_message(self, format: str, *args: Any) -> None:
        self.server.write_log(f"{self.address_string()} {format % args}")


class BlobFront(_LoggingServer):
    """Blob Storage on 127.0.0.1: checks each token's container access, then forwards to Azurite."""

    def __init__(
        self, upstream_url: str, directory: Directory, sas: dict[str, str], log: TextIO
    ) -> None:
        """Forward to Azurite at upstream_url, appending sas[container] to authorized reads."""
        super().__init__(_BlobHandler, log)
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream_url {upstream_url!r} is not an http URL with a port")
        self.upstream_url = upstream_url
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.directory = directory
        self.sas = sas
        self.reads_lock = threading.Lock()
        self.reads: list[BlobRead] = []

    @property
    def endpoint_template(self) -> str:
        """Return the ATTACHE_AZURE_BLOB_ENDPOINT_TEMPLATE that points at this front."""
        return f"{self.url}/{{account}}"

    def record(self, read: BlobRead) -> None:
        with self.reads_lock:
            self.reads.append(read)

    def received(self) -> list[BlobRead]:
        """Return every blob request received so far, oldest first."""
        with self.reads_lock:
            return list(self.reads)
