"""A loopback proxy in front of moto's STS that enforces the External ID of cross-account roles.

moto 5.2.5 evaluates a role's trust policy only when the role is in the
caller's own account, so it lets our identity assume a customer's role with
a wrong External ID or with none. `StsFront` rejects an AssumeRole for each
role it is given unless the request's ExternalId equals that role's, with
the 403 and error XML that AWS STS returns. It reads the parameters from the
query string and from a form body, so a GET is checked as well as a POST.
It forwards every other request to moto unchanged, the Host header
included, because SigV4 signs that header and moto checks the signature.
"""

import http.client
import threading
import uuid
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

from .servers import _LoggingServer

# Headers that describe one connection rather than the message. Content-Length
# is not among them, but the response's is set again after moto's body is read.
HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    )
)

# STS request bodies are small forms, so a larger one is rejected.
MAX_BODY_BYTES = 1024 * 1024

# Time allowed for moto to respond to one forwarded request.
UPSTREAM_TIMEOUT_SECONDS = 30


class _FrontHandler(BaseHTTPRequestHandler):
    server: "StsFront"

    def do_GET(self) -> None:
        self.handle_sts_request()

    def do_POST(self) -> None:
        self.handle_sts_request()

    def handle_sts_request(self) -> None:
        body = self.read_body()
        if body is None:
            return
        rejected_role = self.server.check_external_id(self.path, self.headers, body)
        if rejected_role is not None:
            self.send_assume_role_denied(rejected_role)
            return
        self.forward(body)

    def read_body(self) -> bytes | None:
        """Read the request body, or respond with an error and return None."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # The AWS SDKs send STS forms with a Content-Length.
            self.send_error(HTTPStatus.LENGTH_REQUIRED, "chunked request bodies are not supported")
            return None
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "STS request body over 1 MiB")
            return None
        return self.rfile.read(length)

    def send_assume_role_denied(self, role_arn: str) -> None:
        request_id = str(uuid.uuid4())
        body = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<Error><Type>Sender</Type><Code>AccessDenied</Code>"
            f"<Message>User is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
            "</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        self.send_response(HTTPStatus.FORBIDDEN)
        self.send_header("Content-Type", "text/xml")
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def forward(self, body: bytes) -> None:
        """Send the request to moto as received and relay moto's response."""
        upstream = http.client.HTTPConnection(
            self.server.upstream_host, self.server.upstream_port, timeout=UPSTREAM_TIMEOUT_SECONDS
        )
        try:
            # skip_host and skip_accept_encoding keep http.client from adding
            # its own Host and Accept-Encoding, so moto receives the signed
            # headers as the client sent them.
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.endheaders(body)
            response = upstream.getresponse()
            response_body = response.read()
        except (OSError, http.client.HTTPException) as error:
            message = f"forwarding to moto at {self.server.upstream_url} failed: {error}"
            self.server.write_log(message)
            self.send_error(HTTPStatus.BAD_GATEWAY, message)
            return
        finally:
            upstream.close()

        # send_response_only, because send_response would add a second
        # Server and Date header to moto's.
        self.log_request(response.status)
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response_body)))
        self.end_headers()
        self.wfile.write(response_body)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.write_log(f"{self.address_string()} {format % args}")


class StsFront(_LoggingServer):
    """An STS endpoint on 127.0.0.1 that checks External IDs, then forwards to moto."""

    def __init__(self, upstream_url: str, required: dict[str, str], log: TextIO) -> None:
        """Forward to moto at upstream_url. required maps a role ARN to its ExternalId."""
        super().__init__(_FrontHandler, log)
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream_url {upstream_url!r} is not an http URL with a port")
        self.upstream_url = upstream_url
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.required = dict(required)
        self.counts_lock = threading.Lock()
        self.assume_role_requests = 0
        self.assume_role_rejected = 0
        self.assume_role_by_arn: Counter[str] = Counter()

    def check_external_id(self, path: str, headers: Any, body: bytes) -> str | None:
        """Return the role ARN when the request is an AssumeRole to reject, else None."""
        parameters = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
        content_type = headers.get("Content-Type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = body.decode("utf-8", errors="replace")
            parameters.update(parse_qsl(form, keep_blank_values=True))
        if parameters.get("Action") != "AssumeRole":
            return None

        role_arn = parameters.get("RoleArn", "")
        required = self.required.get(role_arn)
        external_id = parameters.get("ExternalId")
        rejected = required is not None and external_id != required
        with self.counts_lock:
            self.assume_role_requests += 1
            self.assume_role_rejected += int(rejected)
            self.assume_role_by_arn[role_arn] += 1
        if not rejected:
            return None
        problem = "missing" if external_id is None else "wrong"
        self.write_log(f"rejected AssumeRole of {role_arn}: ExternalId {problem}")
        return role_arn

    def assume_role_counts(self) -> Counter[str]:
        """Return the AssumeRole requests received so far per role ARN, rejected ones included."""
        with self.counts_lock:
            return Counter(self.assume_role_by_arn)
