"""A small client for the producer's HTTP API and the binaries' admin endpoints.

It uses only the standard library. Requests never go through a proxy from the
environment, because every address the demo talks to is on 127.0.0.1.
"""

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

from . import DemoError

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request_json(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """Send one request and return the status with the parsed JSON body (or the raw text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _opener.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    text = raw.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text) if text else None
    except json.JSONDecodeError:
        return status, text


def answers_ok(url: str) -> bool:
    """Tell whether a GET of url returns status 200. A refused connection counts as no."""
    try:
        status, _ = request_json("GET", url, timeout=2)
    except (urllib.error.URLError, OSError):
        return False
    return status == 200


class ApiClient:
    """Calls the producer's API, such as POST /v1/tasks, with one team's API key."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request to path under the API's base URL and return the status and body."""
        return request_json(method, f"{self.base_url}{path}", body, self.headers)

    def submit_task(self, request: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Submit a task and return the 202 response body."""
        headers = {**self.headers, "Idempotency-Key": idempotency_key}
        status, body = request_json("POST", f"{self.base_url}/v1/tasks", request, headers)
        if status != 202 or not isinstance(body, dict) or "task_id" not in body:
            raise DemoError(
                f"POST /v1/tasks returned {status}, expected 202 with a task_id: {body!r}"
            )
        return body

    def submit_task_retrying(
        self, request: dict[str, Any], idempotency_key: str, timeout: float
    ) -> tuple[dict[str, Any], int]:
        """Submit a task as a careful client does, and return the 202 body and the retry count.

        A 503 response, a refused or reset connection, or a timed-out request
        is retried every 0.5 s with the same Idempotency-Key, as the customer
        guide recommends, so a retry of a request that was stored returns the
        original task. Raises DemoError on any other status, or when timeout
        seconds pass.
        """
        headers = {**self.headers, "Idempotency-Key": idempotency_key}
        deadline = time.monotonic() + timeout
        retries = 0
        while True:
            try:
                status, body = request_json("POST", f"{self.base_url}/v1/tasks", request, headers)
                failure = f"status {status}: {body!r}"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                status, body = None, None
                failure = f"{type(error).__name__}: {error}"
            if status == 202 and isinstance(body, dict) and "task_id" in body:
                return body, retries
            if status not in (None, 503):
                raise DemoError(f"POST /v1/tasks returned {failure}, expected 202 with a task_id")
            if time.monotonic() > deadline:
                raise DemoError(
                    f"POST /v1/tasks with Idempotency-Key {idempotency_key} still failed"
                    f" after {timeout:.0f} s, last with {failure}"
                )
            retries += 1
            time.sleep(0.5)

    def get_task(self, task_id: str) -> dict[str, Any]:
        status, body = request_json(
            "GET", f"{self.base_url}/v1/tasks/{task_id}", headers=self.headers
        )
        if status != 200 or not isinstance(body, dict):
            raise DemoError(f"GET /v1/tasks/{task_id} returned {status}, expected 200: {body!r}")
        return body
