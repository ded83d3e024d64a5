"""Example tasks from examples/tasks/*.json and the checks run on their results.

Each example file is an object with a `description`, the `request` body for
POST /v1/tasks, and the `expect`ed outcome: the task `status` and, in
submission order, one object per attachment. Every key of an expected
attachment must equal the key in the callback (`status`, `error_code`,
`content_type`, ...). The request may contain two placeholders, which
`fill_placeholders` replaces: {{CALLBACK_URL}} and {{FILES_URL}}.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK_STATUSES = ("succeeded", "partially_failed", "failed")
ATTACHMENT_STATUSES = ("succeeded", "failed")


class ExampleError(ValueError):
    """An example file that cannot be used, with the file named in the message."""


@dataclass(frozen=True)
class Example:
    """One example task, with the placeholders still in its request."""

    name: str
    path: Path
    description: str
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

    return Example(
        name=path.stem,
        path=path,
        description=str(document.get("description", "")),
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


def check_task(
    example: Example,
    request: dict[str, Any],
    data: dict[str, Any],
    files: LocalFiles,
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
        label = f"attachment {index} ({files.display_name(sent['uri'])})"
        problems.extend(
            f"{label}: {problem}" for problem in check_attachment(sent, expected, actual, files)
        )
    return problems


def check_attachment(
    sent: dict[str, Any],
    expected: dict[str, Any],
    actual: dict[str, Any],
    files: LocalFiles,
) -> list[str]:
    problems = []
    if actual.get("uri") != sent["uri"]:
        problems.append(f"uri is {actual.get('uri')!r}, expected {sent['uri']!r} (order changed?)")
    for key, value in expected.items():
        if actual.get(key) != value:
            problems.append(f"{key} is {actual.get(key)!r}, expected {value!r}")
    if actual.get("status") != "succeeded":
        return problems

    if actual.get("error_code") is not None:
        problems.append(f"succeeded but error_code is {actual['error_code']!r}")
    # The size and sha256 reported for the stored copy must match the served file.
    source = files.path_of(sent["uri"])
    if source is not None:
        content = source.read_bytes()
        if actual.get("size_bytes") != len(content):
            problems.append(
                f"size_bytes is {actual.get('size_bytes')!r}, the file has {len(content)}"
            )
        digest = hashlib.sha256(content).hexdigest()
        if str(actual.get("sha256", "")).lower() != digest:
            problems.append(f"sha256 is {actual.get('sha256')!r}, the file's is {digest!r}")
    return problems
