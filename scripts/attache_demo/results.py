"""The demo's results: what each submitted example produced, and the table of them.

`evaluate` checks the first verified callback of a submission against its
example and against GET /v1/tasks/{id}. `print_table` shows one row per
attachment, with the task's file, team, id and status on its first row,
then the error message of each failed attachment.
"""

from dataclasses import dataclass, field
from typing import Any

from .api import ApiClient
from .examples import Example, Sources, check_task
from .servers import CallbackReceiver


@dataclass
class Submission:
    """An example as submitted: the filled-in request and the task id it got."""

    example: Example
    request: dict[str, Any]
    task_id: str


@dataclass
class Outcome:
    """The task data seen for one submission, and its differences from the expectation."""

    submission: Submission
    data: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def evaluate(
    submission: Submission, receiver: CallbackReceiver, client: ApiClient, sources: Sources
) -> Outcome:
    """Check the callback for one submission and compare it with GET /v1/tasks/{id}.

    receiver and client must belong to the team that submitted the example.
    """
    example = submission.example
    api_view = client.get_task(submission.task_id)
    callbacks = receiver.received_for(example.name)
    verified = [c for c in callbacks if c.verified]
    if not callbacks:
        return Outcome(submission, api_view, ["no callback arrived before the timeout"])
    if not verified:
        return Outcome(
            submission, api_view, [f"callback failed verification: {callbacks[0].error}"]
        )

    payload = verified[0].payload
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        return Outcome(
            submission, api_view, [f"callback body has no data object: {verified[0].body[:200]}"]
        )
    problems = []
    notes = []
    if payload.get("type") != "task.completed":
        problems.append(f"callback type is {payload.get('type')!r}, expected 'task.completed'")
    if data.get("task_id") != submission.task_id:
        problems.append(
            f"callback task_id is {data.get('task_id')!r}, expected {submission.task_id!r}"
        )
    if len(verified) > 1:
        notes.append(f"received {len(verified)} verified callbacks")
    problems += check_task(example, submission.request, data, sources)
    problems += compare_with_api(data, api_view)
    return Outcome(submission, data, problems, notes)


def compare_with_api(data: dict[str, Any], api_view: dict[str, Any]) -> list[str]:
    problems = []
    if api_view.get("status") != data.get("status"):
        problems.append(
            f"GET /v1/tasks shows status {api_view.get('status')!r},"
            f" the callback {data.get('status')!r}"
        )
    api_statuses = [a.get("status") for a in api_view.get("attachments", [])]
    callback_statuses = [a.get("status") for a in data.get("attachments", [])]
    if api_statuses != callback_statuses:
        problems.append(
            f"GET /v1/tasks shows attachment statuses {api_statuses},"
            f" the callback {callback_statuses}"
        )
    return problems


def attachment_cells(attachment: dict[str, Any], sources: Sources) -> list[str]:
    """Return the table cells for one attachment: name, status, error code, size."""
    size = attachment.get("size_bytes")
    return [
        sources.display_name(attachment.get("uri", "-")),
        str(attachment.get("status", "-")),
        str(attachment.get("error_code") or "-"),
        "-" if size is None else str(size),
    ]


def print_table(outcomes: list[Outcome], sources: Sources) -> None:
    header = [
        "task file",
        "team",
        "task id",
        "task status",
        "attachment",
        "status",
        "error code",
        "size",
        "check",
    ]
    rows = []
    for outcome in outcomes:
        data = outcome.data or {}
        task_cells = [
            outcome.submission.example.path.name,
            outcome.submission.example.team,
            outcome.submission.task_id,
            str(data.get("status", "-")),
            "",
            "",
            "",
            "",
            "FAIL" if outcome.problems else "ok",
        ]
        for index, attachment in enumerate(data.get("attachments") or [{}]):
            cells = task_cells if index == 0 else [""] * len(header)
            cells[4:8] = attachment_cells(attachment, sources)
            rows.append(cells)

    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    size_column = header.index("size")

    def line(cells: list[str]) -> str:
        padded = [
            cell.rjust(width) if column == size_column else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    print()
    print(line(header))
    print(line(["-" * width for width in widths]))
    for row in rows:
        print(line(row))
    print()
    print_error_messages(outcomes, sources)
    for outcome in outcomes:
        for note in outcome.notes:
            print(f"demo: note: {outcome.submission.example.path.name} {note}")


def print_error_messages(outcomes: list[Outcome], sources: Sources) -> None:
    """Print the error_message of each failed attachment, as the customer receives it."""
    failed = [
        (outcome.submission.example.path.name, attachment)
        for outcome in outcomes
        for attachment in (outcome.data or {}).get("attachments") or []
        if attachment.get("status") == "failed"
    ]
    if not failed:
        return
    print("error messages of the failed attachments:")
    for task_file, attachment in failed:
        name = sources.display_name(attachment.get("uri", "-"))
        print(f"  {task_file} {name}: {attachment.get('error_message')}")
    print()
