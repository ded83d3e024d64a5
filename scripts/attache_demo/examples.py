"""Example tasks from examples/tasks/*.json and the checks run on their results.

Each example file is an object with a `description`, the `team` that
submits it, the `request` body for POST /v1/tasks, and the `expect`ed
outcome: the task `status` and, in submission order, one object per
attachment. Every key of an expected attachment must equal the key in the
callback (`status`, `error_code`, `content_type`, ...), except
`error_message_contains`, a text that the attachment's `error_message` must
contain. The request may contain placeholders, which `fill_placeholders`
replaces: {{CALLBACK_URL}}, {{FILES_URL}}, {{S3:BUCKET:OBJECT}},
{{GCS:BUCKET:OBJECT}} and {{AZURE:CONTAINER:BLOB}}. examples/README.md
describes the format with the demo's teams, buckets and containers.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TASK_STATUSES = ("succeeded", "partially_failed", "failed")
ATTACHMENT_STATUSES = ("succeeded", "failed")

# The teams that submit examples. "demo" has delegated S3 access through
# customer A's role, and "cross-account" has none. "impersonating" reads
# gs:// objects through its own service account, and "cross-project" with
# ours. "azure-linked" reads Blob Storage URLs with its linked tenant's
# tokens, and "azure-anonymous" anonymously.
TEAMS = (
    "demo",
    "cross-account",
    "impersonating",
    "cross-project",
    "azure-linked",
    "azure-anonymous",
)
DEFAULT_TEAM = "demo"

# The key of an expected attachment whose value is a text that the
# callback's error_message must contain, rather than a value to equal.
MESSAGE_CONTAINS = "error_message_contains"

# The host of every storage account's Blob Storage URL is ACCOUNT plus this.
AZURE_BLOB_HOST_SUFFIX = ".blob.core.windows.net"

PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")


class ExampleError(ValueError):
    """An example file that cannot be used, with the file named in the message."""


@dataclass(frozen=True)
class Example:
    """One example task, with the placeholders still in its request."""

    name: str
    path: Path
    description: str
    team: str
    request: dict[str, Any]
    expected_status: str
    expected_attachments: list[dict[str, Any]]


def load_examples(tasks_dir: Path) -> list[Example]:
    """Load and validate every *.json file in tasks_dir, sorted by name."""
    paths = sorted(tasks_dir.glob("*.json"))
    if not paths:
        raise ExampleError(f"{tasks_dir} contains no *.json example tasks")
    return [load_example(path) for path in paths]


def load_example(path: Path) -> Example:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ExampleError(f"{path}: cannot read example: {error}") from error

    request = document.get("request")
    expect = document.get("expect")
    if not isinstance(request, dict) or not isinstance(expect, dict):
        raise ExampleError(f'{path}: "request" and "expect" must be objects')
    attachments = request.get("attachments")
    expected_attachments = expect.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        raise ExampleError(f'{path}: "request.attachments" must be a non-empty list')
    if not isinstance(expected_attachments, list) or len(expected_attachments) != len(attachments):
        raise ExampleError(
            f'{path}: "expect.attachments" must have one entry per request attachment'
            f" ({len(attachments)})"
        )
    if expect.get("status") not in TASK_STATUSES:
        raise ExampleError(f'{path}: "expect.status" must be one of {", ".join(TASK_STATUSES)}')
    for index, expected in enumerate(expected_attachments):
        if not isinstance(expected, dict) or expected.get("status") not in ATTACHMENT_STATUSES:
            raise ExampleError(
                f'{path}: "expect.attachments[{index}].status" must be one of'
                f" {', '.join(ATTACHMENT_STATUSES)}"
            )
        if not isinstance(expected.get(MESSAGE_CONTAINS, ""), str):
            raise ExampleError(
                f'{path}: "expect.attachments[{index}].{MESSAGE_CONTAINS}" must be a string'
            )
    team = document.get("team", DEFAULT_TEAM)
    if team not in TEAMS:
        raise ExampleError(f'{path}: "team" must be one of {", ".join(TEAMS)}, not {team!r}')

    return Example(
        name=path.stem,
        path=path,
        description=str(document.get("description", "")),
        team=team,
        request=request,
        expected_status=expect["status"],
        expected_attachments=expected_attachments,
    )


def fill_placeholders(value: Any, replacements: dict[str, str]) -> Any:
    """Return a copy of value with each {{NAME}} in its strings replaced."""
    if isinstance(value, str):
        for name, replacement in replacements.items():
            value = value.replace("{{" + name + "}}", replacement)
        return value
    if isinstance(value, list):
        return [fill_placeholders(item, replacements) for item in value]
    if isinstance(value, dict):
        return {key: fill_placeholders(item, replacements) for key, item in value.items()}
    return value


def unfilled_placeholders(value: Any) -> list[str]:
    """Return every {{NAME}} left in the strings of value, such as an unknown bucket label."""
    if isinstance(value, str):
        return [match.group(0) for match in PLACEHOLDER.finditer(value)]
    if isinstance(value, list):
        return [name for item in value for name in unfilled_placeholders(item)]
    if isinstance(value, dict):
        return [name for item in value.values() for name in unfilled_placeholders(item)]
    return []


@dataclass(frozen=True)
class ExpectedContent:
    """The size and SHA-256 that a fetch of one source must report."""

    size: int
    sha256: str

    @classmethod
    def of(cls, content: bytes) -> "ExpectedContent":
        return cls(len(content), hashlib.sha256(content).hexdigest())


@dataclass(frozen=True)
class LocalFiles:
    """The directory that the demo's file server serves, and its base URL."""

    directory: Path
    url: str

    def path_of(self, uri: str) -> Path | None:
        """Return the served file behind uri, or None when uri is not one of ours."""
        prefix = self.url + "/"
        if not uri.startswith(prefix):
            return None
        path = self.directory / uri[len(prefix) :]
        return path if path.is_file() else None

    def display_name(self, uri: str) -> str:
        """Shorten uri for the table: the path under the file server, else the last segment."""
        prefix = self.url + "/"
        if uri.startswith(prefix):
            return uri[len(prefix) :]
        return uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Sources:
    """The sources whose content the demo can check: its file server and the emulated buckets."""

    files: LocalFiles
    # The objects created in moto, gcp-storage-emulator and Azurite, by
    # s3://, gs:// or Blob Storage URL.
    bucket_objects: dict[str, ExpectedContent]

    def expected_content(self, uri: str) -> ExpectedContent | None:
        """Return what a fetch of uri must report, or None when uri is not one of ours."""
        if uri in self.bucket_objects:
            return self.bucket_objects[uri]
        path = self.files.path_of(uri)
        return None if path is None else ExpectedContent.of(path.read_bytes())

    def display_name(self, uri: str) -> str:
        """Shorten uri for the table.

        An s3:// or gs:// URI is shown whole, with each non-ASCII character
        escaped as \\uXXXX, because two of the S3 fixture's keys differ only
        in a composed or decomposed é, and a combining or wide character
        breaks the table's alignment. A Blob Storage URL is shown as its
        container and blob, percent-encoded as in the URL.
        """
        if uri.startswith(("s3://", "gs://")):
            return "".join(char if char.isascii() else f"\\u{ord(char):04x}" for char in uri)
        parts = urlsplit(uri)
        if parts.hostname is not None and parts.hostname.endswith(AZURE_BLOB_HOST_SUFFIX):
            return parts.path.lstrip("/")
        return self.files.display_name(uri)


def check_task(
    example: Example,
    request: dict[str, Any],
    data: dict[str, Any],
    sources: Sources,
) -> list[str]:
    """Compare a callback's `data` with the example's expectation and return the differences."""
    problems = []
    if data.get("status") != example.expected_status:
        problems.append(
            f"task status is {data.get('status')!r}, expected {example.expected_status!r}"
        )
    if "metadata" in request and data.get("metadata") != request["metadata"]:
        problems.append(f"metadata is {data.get('metadata')!r}, expected {request['metadata']!r}")

    attachments = data.get("attachments") or []
    if len(attachments) != len(example.expected_attachments):
        expected_count = len(example.expected_attachments)
        problems.append(f"callback has {len(attachments)} attachments, expected {expected_count}")
        return problems

    for index, (sent, expected, actual) in enumerate(
        zip(request["attachments"], example.expected_attachments, attachments, strict=True)
    ):
        label = f"attachment {index} ({sources.display_name(sent['uri'])})"
        problems.extend(
            f"{label}: {problem}" for problem in check_attachment(sent, expected, actual, sources)
        )
    return problems


def check_attachment(
    sent: dict[str, Any],
    expected: dict[str, Any],
    actual: dict[str, Any],
    sources: Sources,
) -> list[str]:
    problems = []
    if actual.get("uri") != sent["uri"]:
        problems.append(f"uri is {actual.get('uri')!r}, expected {sent['uri']!r} (order changed?)")
    for key, value in expected.items():
        if key == MESSAGE_CONTAINS:
            message = actual.get("error_message") or ""
            if value not in message:
                problems.append(f"error_message {message!r} does not contain {value!r}")
        elif actual.get(key) != value:
            problems.append(f"{key} is {actual.get(key)!r}, expected {value!r}")
    if actual.get("status") != "succeeded":
        return problems

    if actual.get("error_code") is not None:
        problems.append(f"succeeded but error_code is {actual['error_code']!r}")
    # The size and sha256 reported for the stored copy must match the source.
    content = sources.expected_content(sent["uri"])
    if content is not None:
        if actual.get("size_bytes") != content.size:
            problems.append(
                f"size_bytes is {actual.get('size_bytes')!r}, the source has {content.size}"
            )
        if str(actual.get("sha256", "")).lower() != content.sha256:
            problems.append(
                f"sha256 is {actual.get('sha256')!r}, the source's is {content.sha256!r}"
            )
    return problems
