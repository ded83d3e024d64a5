"""The end state of a chaos run, checked task by task and as a whole.

Each task is checked three ways against what its `SourcePlan` set up: the
rows in PostgreSQL, the file in the attachment store, and the signed
callback the receiver acknowledged. Delivery is at least once, so one
webhook id acknowledged twice is a duplicate that is only counted. Two
different webhook ids for one task, or none, fail the task. The invariants then check
that nothing was lost or left in flight: no row pending, no due outbox row,
no message in a work queue or a dead-letter queue.
"""

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import DemoError
from .infra import Broker, Database
from .servers import Callback
from .sources import CONTENT_TYPE, Source


@dataclass(frozen=True)
class SubmittedTask:
    """A task as the API accepted it."""

    index: int
    task_id: str
    attachment_ids: list[str]

    @property
    def callback_path(self) -> str:
        return f"/callbacks/task-{self.index}"


def expected_task_status(sources: list[Source]) -> str:
    succeeded = sum(1 for source in sources if source.succeeds)
    if succeeded == len(sources):
        return "succeeded"
    return "failed" if succeeded == 0 else "partially_failed"


@dataclass
class DatabaseState:
    """The rows of one chaos database, grouped by task id."""

    tasks: dict[str, dict[str, Any]]
    attachments: dict[str, list[dict[str, Any]]]
    callbacks: dict[str, list[dict[str, Any]]]
    outbox_due: int
    outbox_later: int

    @classmethod
    def load(cls, database: Database) -> "DatabaseState":
        tasks = database.query("SELECT id::text AS id, status, metadata FROM tasks")
        attachments = database.query(
            "SELECT id::text AS id, task_id::text AS task_id, position, uri, status, attempts,"
            " error_code, size_bytes, sha256, content_type, storage_key"
            " FROM attachments ORDER BY task_id, position"
        )
        callbacks = database.query(
            "SELECT id::text AS id, task_id::text AS task_id, status, attempts,"
            " last_status_code, last_error FROM callbacks"
        )
        outbox = database.query(
            "SELECT count(*) FILTER (WHERE available_at <= now()) AS due,"
            " count(*) FILTER (WHERE available_at > now()) AS later FROM outbox"
        )[0]
        by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in attachments:
            by_task[row["task_id"]].append(row)
        callbacks_by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in callbacks:
            callbacks_by_task[row["task_id"]].append(row)
        return cls(
            tasks={row["id"]: row for row in tasks},
            attachments=dict(by_task),
            callbacks=dict(callbacks_by_task),
            outbox_due=outbox["due"],
            outbox_later=outbox["later"],
        )

    def count(self, rows: str, status: str) -> int:
        grouped = self.attachments if rows == "attachments" else self.callbacks
        return sum(1 for group in grouped.values() for row in group if row["status"] == status)

    def retries(self, rows: str) -> int:
        """Sum of attempts minus one over the attachments or callbacks: the retries made."""
        grouped = self.attachments if rows == "attachments" else self.callbacks
        return sum(max(0, row["attempts"] - 1) for group in grouped.values() for row in group)


@dataclass(frozen=True)
class InFlight:
    """Counts of the work still pending, queued or in the outbox at one moment."""

    pending_attachments: int
    pending_callbacks: int
    outbox_rows: int
    queued_messages: int

    @property
    def idle(self) -> bool:
        return not (
            self.pending_attachments
            or self.pending_callbacks
            or self.outbox_rows
            or self.queued_messages
        )


def look_in_flight(database: Database, broker: Broker) -> InFlight:
    counts = database.query(
        "SELECT (SELECT count(*) FROM attachments WHERE status = 'pending') AS attachments,"
        " (SELECT count(*) FROM callbacks WHERE status = 'pending') AS callbacks,"
        " (SELECT count(*) FROM outbox) AS outbox"
    )[0]
    queued = sum(depth.ready + depth.unacknowledged for depth in broker.depths())
    return InFlight(counts["attachments"], counts["callbacks"], counts["outbox"], queued)


def wait_until_idle(database: Database, broker: Broker, timeout: float) -> InFlight:
    """Poll until nothing is pending, queued or in the outbox, or timeout seconds pass.

    The callback receiver acknowledges before the callback-worker commits
    the delivery, so the last rows settle shortly after the last callback.
    Returns the last state seen, idle or not.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = look_in_flight(database, broker)
        except DemoError:
            if time.monotonic() > deadline:
                raise
            state = None
        if state is not None and (state.idle or time.monotonic() > deadline):
            return state
        time.sleep(1)


@dataclass
class Verdict:
    """Problems per task and per invariant, and the delivery counts behind them."""

    task_problems: dict[int, list[str]] = field(default_factory=dict)
    invariants: list[tuple[str, str | None]] = field(default_factory=list)
    unique_callbacks: int = 0
    duplicate_callbacks: int = 0

    @property
    def passed(self) -> int:
        tasks = sum(1 for problems in self.task_problems.values() if not problems)
        return tasks + sum(1 for _, problem in self.invariants if problem is None)

    @property
    def failed(self) -> int:
        tasks = sum(1 for problems in self.task_problems.values() if problems)
        return tasks + sum(1 for _, problem in self.invariants if problem is not None)


def check_tasks(
    plan_tasks: list[list[Source]],
    submitted: dict[int, SubmittedTask],
    state: DatabaseState,
    callbacks: list[Callback],
    store_dir: Path,
    verdict: Verdict,
) -> None:
    """Check every planned task and fill in the verdict's task problems and delivery counts."""
    acknowledged: dict[str, list[Callback]] = defaultdict(list)
    for callback in callbacks:
        if callback.verified and callback.acknowledged:
            acknowledged[callback.path].append(callback)

    for index, sources in enumerate(plan_tasks):
        task = submitted.get(index)
        if task is None:
            verdict.task_problems[index] = ["the API never accepted the task"]
            continue
        problems = check_rows(task, sources, state, store_dir)
        deliveries = acknowledged.get(task.callback_path, [])
        problems += check_deliveries(task, sources, state, deliveries, verdict)
        verdict.task_problems[index] = problems


def check_rows(
    task: SubmittedTask, sources: list[Source], state: DatabaseState, store_dir: Path
) -> list[str]:
    """Compare a task's rows and stored files with its plan."""
    row = state.tasks.get(task.task_id)
    if row is None:
        return [f"task {task.task_id} is not in the tasks table"]
    problems = []
    expected_status = expected_task_status(sources)
    if row["status"] != expected_status:
        problems.append(f"task status is {row['status']!r}, expected {expected_status!r}")

    rows = state.attachments.get(task.task_id, [])
    if [r["id"] for r in rows] != task.attachment_ids:
        problems.append(
            f"attachment rows {[r['id'] for r in rows]} differ from the accepted"
            f" ids {task.attachment_ids}"
        )
    for source, attachment in zip(sources, rows, strict=False):
        problems += [
            f"attachment {attachment['position']} ({source.kind.value}): {problem}"
            for problem in compare_attachment(source, attachment, store_dir)
        ]
    return problems


def compare_attachment(source: Source, row: dict[str, Any], store_dir: Path) -> list[str]:
    """Compare one attachment, as a row or as a callback entry, with its source."""
    problems = []
    if not row.get("uri", "").endswith(source.path):
        problems.append(f"uri is {row.get('uri')!r}, expected one ending in {source.path}")
    if source.succeeds:
        expected = {
            "status": "succeeded",
            "size_bytes": source.size_bytes,
            "sha256": source.sha256,
            "content_type": CONTENT_TYPE,
            "error_code": None,
        }
    else:
        expected = {
            "status": "failed",
            "size_bytes": None,
            "sha256": None,
            "error_code": "not_found",
        }
    for key, value in expected.items():
        if row.get(key) != value:
            problems.append(f"{key} is {row.get(key)!r}, expected {value!r}")
    if source.succeeds and "storage_key" in row:
        problems += check_stored_file(source, store_dir, row["storage_key"])
    return problems


def check_stored_file(source: Source, store_dir: Path, storage_key: str | None) -> list[str]:
    if not storage_key:
        return ["succeeded without a storage_key"]
    try:
        data = (store_dir / storage_key).read_bytes()
    except OSError as error:
        return [f"stored file {storage_key} cannot be read: {error}"]
    if len(data) != source.size_bytes or hashlib.sha256(data).hexdigest() != source.sha256:
        return [
            f"stored file {storage_key} has {len(data)} bytes and a different sha256"
            f" than the {source.size_bytes} bytes served"
        ]
    return []


def check_deliveries(
    task: SubmittedTask,
    sources: list[Source],
    state: DatabaseState,
    deliveries: list[Callback],
    verdict: Verdict,
) -> list[str]:
    """Check a task's callback rows and the signed callbacks acknowledged for it."""
    problems = []
    rows = state.callbacks.get(task.task_id, [])
    if len(rows) != 1 or rows[0]["status"] != "delivered":
        statuses = [row["status"] for row in rows]
        problems.append(f"callbacks table has {statuses} for the task, expected ['delivered']")

    by_id: dict[str, list[Callback]] = defaultdict(list)
    for delivery in deliveries:
        by_id[delivery.headers["webhook-id"]].append(delivery)
    if not by_id:
        return [*problems, "no signed callback was acknowledged"]
    if len(by_id) > 1:
        problems.append(f"{len(by_id)} different webhook ids were delivered: {sorted(by_id)}")
    verdict.unique_callbacks += len(by_id)
    verdict.duplicate_callbacks += len(deliveries) - len(by_id)

    webhook_id, copies = next(iter(by_id.items()))
    if any(copy.body != copies[0].body for copy in copies):
        problems.append(f"duplicates of {webhook_id} carry different bodies")
    if rows and webhook_id != "msg_" + rows[0]["id"].replace("-", ""):
        problems.append(f"webhook id {webhook_id} is not that of callback row {rows[0]['id']}")
    problems += check_payload(task, sources, copies[0].payload)
    return problems


def check_payload(task: SubmittedTask, sources: list[Source], payload: Any) -> list[str]:
    """Check that a verified callback body carries the task's final outcome."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        return ["callback body has no data object"]
    problems = []
    if payload.get("type") != "task.completed":
        problems.append(f"callback type is {payload.get('type')!r}, expected 'task.completed'")
    if data.get("task_id") != task.task_id:
        problems.append(f"callback task_id is {data.get('task_id')!r}")
    if data.get("status") != expected_task_status(sources):
        problems.append(
            f"callback status is {data.get('status')!r}, expected {expected_task_status(sources)!r}"
        )
    if data.get("metadata") != {"chaos_index": task.index}:
        problems.append(f"callback metadata is {data.get('metadata')!r}")

    attachments = data.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != len(sources):
        return [*problems, f"callback lists {attachments!r}, expected {len(sources)} attachments"]
    for position, (source, entry, attachment_id) in enumerate(
        zip(sources, attachments, task.attachment_ids, strict=False)
    ):
        if entry.get("attachment_id") != attachment_id:
            problems.append(f"callback attachment {position} has id {entry.get('attachment_id')}")
        problems += [
            f"callback attachment {position} ({source.kind.value}): {problem}"
            for problem in compare_attachment(source, entry, Path())
        ]
    return problems


def check_invariants(
    task_count: int,
    submitted: dict[int, SubmittedTask],
    state: DatabaseState,
    in_flight: InFlight,
    broker: Broker,
    callbacks: list[Callback],
    verdict: Verdict,
) -> None:
    """Check what must hold for the whole run, and add one result per invariant."""

    def check(name: str, problem: str | None) -> None:
        verdict.invariants.append((name, problem))

    stored = len(state.tasks)
    check(
        "every accepted task is stored exactly once",
        None
        if stored == len(submitted) == task_count
        else f"{task_count} planned, {len(submitted)} accepted, {stored} rows in tasks",
    )
    pending = state.count("attachments", "pending")
    check("no attachment pending", f"{pending} attachments pending" if pending else None)
    pending = state.count("callbacks", "pending")
    dead = state.count("callbacks", "dead")
    check(
        "no callback pending or dead",
        f"{pending} callbacks pending, {dead} dead" if pending or dead else None,
    )
    check(
        "outbox has no due row",
        f"{state.outbox_due} due rows in the outbox" if state.outbox_due else None,
    )

    depths = broker.depths()
    busy = [d for d in depths if not d.name.endswith(".dead") and d.ready + d.unacknowledged]
    dead_letters = [d for d in depths if d.name.endswith(".dead") and d.ready + d.unacknowledged]
    check(
        "work queues are empty",
        ", ".join(f"{d.name}: {d.ready} ready, {d.unacknowledged} unacked" for d in busy) or None,
    )
    check(
        "dead-letter queues are empty",
        ", ".join(f"{d.name}: {d.ready + d.unacknowledged} messages" for d in dead_letters) or None,
    )
    invalid = [c for c in callbacks if not c.verified]
    check(
        "every callback request had a valid signature",
        f"{len(invalid)} failed verification, first: {invalid[0].error}" if invalid else None,
    )
    check(
        "pipeline went idle",
        None if in_flight.idle else f"still in flight at the end: {in_flight}",
    )
