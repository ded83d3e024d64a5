"""Verify one request with `standardwebhooks`, the Standard Webhooks Python library.

Reads one JSON object on standard input:

    {"secret": "whsec_...",
     "headers": {"webhook-id": "...", "webhook-timestamp": "...",
                 "webhook-signature": "v1,..."},
     "body": "<the request body exactly as sent>"}

Exit status 0: the signature is valid, and the parsed body is printed as one
JSON line. Exit status 1: verification failed, and the library's error is
printed on standard output. Exit status 2: the input itself is malformed, and
the reason is printed on standard error.

The Rust tests run it as `.venv/bin/python scripts/verify_webhook.py` after
scripts/python-env.sh has installed `standardwebhooks`.
"""

import binascii
import json
import sys

from standardwebhooks import Webhook, WebhookVerificationError
from standardwebhooks.webhooks import EmptyWebhookSecretError

HEADER_NAMES = ("webhook-id", "webhook-timestamp", "webhook-signature")


def read_request(text: str) -> tuple[str, dict[str, str], str]:
    """Parse the input object into secret, headers and body, or raise ValueError."""
    try:
        request = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"standard input is not JSON: {error}") from error
    if not isinstance(request, dict):
        raise ValueError("standard input must be a JSON object")

    secret = request.get("secret")
    headers = request.get("headers")
    body = request.get("body")
    if not isinstance(secret, str):
        raise ValueError('"secret" must be a string such as "whsec_..."')
    if not isinstance(headers, dict) or not all(
        isinstance(value, str) for value in headers.values()
    ):
        raise ValueError(f'"headers" must be an object of strings with {", ".join(HEADER_NAMES)}')
    if not isinstance(body, str):
        raise ValueError('"body" must be the request body as a string')
    return secret, headers, body


def main() -> int:
    try:
        secret, headers, body = read_request(sys.stdin.read())
    except ValueError as error:
        print(f"verify_webhook: invalid input: {error}", file=sys.stderr)
        return 2

    # A secret that is not valid base64 fails the check like a wrong signature,
    # because a sender with that secret cannot produce a verifiable request.
    try:
        webhook = Webhook(secret)
        webhook.verify(body, headers, json_parse=False)
    except (WebhookVerificationError, EmptyWebhookSecretError, binascii.Error) as error:
        print(f"{type(error).__name__}: {error}")
        return 1

    try:
        payload = json.loads(body)
    except json.JSONDecodeError as error:
        print(f"signature is valid but the body is not JSON: {error}")
        return 1
    print(json.dumps(payload, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
