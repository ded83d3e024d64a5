"""The demo's two HTTP servers, each on 127.0.0.1 on a port the kernel picks.

`FileServer` serves examples/files as the customer's attachment source.
Paths under /private/ return 403, so an example can show access_denied.
`CallbackReceiver` plays the customer's callback endpoint. It verifies each
request with the `standardwebhooks` library, records it either way, and
responds with 204 when the signature is valid and 400 when it is not. Given a
`reject_first` predicate, it responds with 503 to the first valid request of
each webhook id that the predicate selects, as a customer endpoint that is
briefly down would. Given `respond_after`, it waits that many seconds after
recording a request before it responds, as an endpoint that does some work
would, so a sender can die between the two.
"""

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from standardwebhooks import Webhook, WebhookVerificationError

WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class _LoggingServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 that writes its access log to a file."""

    daemon_threads = True
    # The listen backlog. socketserver's default of 5 drops connections when
    # hundreds arrive at once, as from the fetch-worker in the benchmark's
    # credential phase, and each dropped one waits a second or more to retry.
    request_queue_size = 1024

    def __init__(self, handler: Any, log: TextIO) -> None:
        self.log = log
        self.log_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(
            target=self.serve_forever, name=type(self).__name__, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join()

    def write_log(self, line: str) -> None:
        with self.log_lock:
            self.log.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            self.log.flush()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed request in one line, such as a client that closed its connection."""
        error = sys.exc_info()[1]
        self.write_log(f"{client_address[0]} request failed: {type(error).__name__}: {error}")


class _FileHandler(SimpleHTTPRequestHandler):
    server: _LoggingServer

    def send_head(self) -> Any:
        if self.path.startswith("/private/"):
            self.send_error(HTTPStatus.FORBIDDEN, "private files need credentials")
            return None
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:
        self.server.write_log(f"{self.address_string()} {format % args}")


class FileServer(_LoggingServer):
    """Serves a directory over HTTP, the source of the examples' attachments."""

    def __init__(self, directory: Path, log: TextIO) -> None:
        super().__init__(partial(_FileHandler, directory=str(directory)), log)


@dataclass(frozen=True)
class Callback:
    """One request received by the callback receiver, valid or not."""

    path: str
    headers: dict[str, str]
    body: str
    verified: bool
    error: str | None
    payload: Any
    # The HTTP status the receiver responded with.
    status: int

    @property
    def acknowledged(self) -> bool:
        """Whether the receiver responded with 2xx, which ends delivery for the sender."""
        return 200 <= self.status < 300

    @property
    def example_name(self) -> str:
        """The last path segment, which the demo sets to the example's name."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]


class _CallbackHandler(BaseHTTPRequestHandler):
    server: "CallbackReceiver"

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None:
            self.server.record(
                self.path,
                {},
                "",
                HTTPStatus.LENGTH_REQUIRED,
                "request has no Content-Length header",
            )
            self.send_response(HTTPStatus.LENGTH_REQUIRED)
            self.end_headers()
            return

        body = self.rfile.read(int(length))
        headers = {name: self.headers.get(name, "") for name in WEBHOOK_HEADERS}
        callback = self.server.verify_and_record(self.path, headers, body)
        time.sleep(self.server.respond_after)
        self.send_response(callback.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        self.server.write_log(f"{self.address_string()} {format % args}")


class CallbackReceiver(_LoggingServer):
    """Receives and verifies Standard Webhooks callbacks signed with one secret."""

    def __init__(
        self,
        secret: str,
        log: TextIO,
        record_path: Path,
        reject_first: Callable[[str], bool] | None = None,
        respond_after: float = 0.0,
    ) -> None:
        super().__init__(_CallbackHandler, log)
        self.webhook = Webhook(secret)
        self.record_path = record_path
        self.reject_first = reject_first
        self.respond_after = respond_after
        self.rejected_ids: set[str] = set()
        self.callbacks: list[Callback] = []
        self.changed = threading.Condition()

    def verify_and_record(self, path: str, headers: dict[str, str], body: bytes) -> Callback:
        """Verify the signature over the body bytes exactly as received, then record the request."""
        text = body.decode("utf-8", errors="replace")
        try:
            payload = self.webhook.verify(body, headers)
        except (WebhookVerificationError, json.JSONDecodeError) as error:
            return self.record(
                path, headers, text, HTTPStatus.BAD_REQUEST, f"{type(error).__name__}: {error}"
            )
        status = HTTPStatus.NO_CONTENT
        if self.rejects_first_request(headers["webhook-id"]):
            status = HTTPStatus.SERVICE_UNAVAILABLE
        return self.record(path, headers, text, status, None, payload)

    def rejects_first_request(self, webhook_id: str) -> bool:
        """Tell whether this request is the first of a webhook id that `reject_first` selects."""
        if self.reject_first is None or not self.reject_first(webhook_id):
            return False
        with self.changed:
            if webhook_id in self.rejected_ids:
                return False
            self.rejected_ids.add(webhook_id)
            return True

    def record(
        self,
        path: str,
        headers: dict[str, str],
        body: str,
        status: int,
        error: str | None,
        payload: Any = None,
    ) -> Callback:
        callback = Callback(path, headers, body, error is None, error, payload, int(status))
        with self.changed:
            self.callbacks.append(callback)
            with self.record_path.open("a", encoding="utf-8") as file:
                file.write(json.dumps(asdict(callback)) + "\n")
            self.changed.notify_all()
        return callback

    def received(self) -> list[Callback]:
        """Return every request received so far, oldest first."""
        with self.changed:
            return list(self.callbacks)

    def received_for(self, example_name: str) -> list[Callback]:
        """Return every callback received so far on the example's path, oldest first."""
        with self.changed:
            return [c for c in self.callbacks if c.example_name == example_name]

    def wait_for_change(self, timeout: float) -> None:
        """Block until another callback arrives or timeout seconds pass."""
        with self.changed:
            self.changed.wait(timeout)
