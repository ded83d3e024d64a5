"""The references, throughput and latency measurements of one benchmark run.

Every fleet phase, here and in `memory`, starts from empty pipeline tables
and an empty attachment store, starts its own fleet, and stops it at the
end. Submission times are taken by the submitter just before each request
and arrival times by the receiver, so a task's latency runs from its
submission to its delivered, verified callback.
"""

import base64
import hashlib
import hmac
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attache_demo import DemoError

from . import machine
from .context import Context
from .fleet import Fleet
from .profile import Profile, ProfileProbe
from .tools import ProbeResult, WrkResult, run_probe, run_report, run_wrk

BINARY_KINDS = ("producer", "fetch-worker", "callback-worker")
# Bounds of the steady-state window as shares of the callbacks in arrival
# order: the middle 80 %, which leaves out the ramp-up and the drain.
STEADY_FROM, STEADY_TO = 0.10, 0.90
STORE_WRITE_FILES = 200


# References -----------------------------------------------------------------


@dataclass
class StoreWrites:
    """Times of writing small files the way the local attachment store does."""

    files: int
    size: int
    p50_ms: float
    p99_ms: float


@dataclass
class References:
    source_rate: WrkResult
    source_latency: ProbeResult
    callback_latency: ProbeResult
    broker: dict[str, Any]
    store_writes: StoreWrites


def measure_references(ctx: Context) -> References:
    """Measure the source's GET rate and latency, the receiver's POST latency and the broker."""
    settings = ctx.settings
    small = f"{ctx.source.url}/bytes/{settings.attachment_bytes}/reference"
    source_rate = run_wrk(small, threads=2, connections=64, seconds=settings.wrk_seconds)
    if source_rate.errors or source_rate.status_errors:
        raise DemoError(
            f"wrk against the source: {source_rate.errors} socket errors,"
            f" {source_rate.status_errors} error statuses"
        )
    source_latency = run_probe(ctx.bench_binary, small, settings.probe_seconds, ctx.tool_env)
    body, headers = signed_probe(ctx.team["signing_secret"], settings.attachments_per_task)
    callback_latency = run_probe(
        ctx.bench_binary,
        f"{ctx.receiver.url}/probe",
        settings.probe_seconds,
        ctx.tool_env,
        post_body=body,
        post_headers=headers,
        work_dir=ctx.run_dir,
    )
    broker = measure_broker(ctx)
    store_writes = measure_store_writes(ctx.store_dir, STORE_WRITE_FILES, settings.attachment_bytes)
    return References(source_rate, source_latency, callback_latency, broker, store_writes)


def measure_broker(ctx: Context) -> dict[str, Any]:
    """Publish with confirms and consume as many messages as a run has attachments."""
    settings = ctx.settings
    return run_report(
        ctx.bench_binary,
        ["broker", f"--queue={ctx.queue_prefix}.reference", f"--messages={settings.attachments}"],
        ctx.tool_env,
        settings.phase_timeout,
    )


def measure_store_writes(store_dir: Path, files: int, size: int) -> StoreWrites:
    """Time files written as the local store writes an attachment: a new directory,
    synced into its parent, a file without a name in it, fsync, a link to the final
    name, then a sync of the directory."""
    root = store_dir / "reference"
    root.mkdir(parents=True)
    body = os.urandom(size)
    durations = []
    for index in range(files):
        started = time.perf_counter()
        directory = root / f"task-{index}"
        directory.mkdir()
        sync_directory(root)
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        descriptor = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o666)
        try:
            os.write(descriptor, body)
            os.fsync(descriptor)
            # With a directory descriptor, CPython links with linkat, which
            # can follow the /proc link; plain link() cannot.
            os.link(
                f"/proc/self/fd/{descriptor}",
                "attachment",
                dst_dir_fd=directory_fd,
                follow_symlinks=True,
            )
            os.fsync(directory_fd)
        finally:
            os.close(descriptor)
            os.close(directory_fd)
        durations.append((time.perf_counter() - started) * 1000)
    shutil.rmtree(root)
    durations.sort()
    return StoreWrites(files, size, nearest_rank(durations, 0.50), nearest_rank(durations, 0.99))


def sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def signed_probe(secret: str, attachments: int) -> tuple[bytes, dict[str, str]]:
    """Return a callback body shaped like a real one, with valid Standard Webhooks headers."""
    attachment = {
        "attachment_id": "01900000-0000-7000-8000-000000000000",
        "uri": "http://127.0.0.1:1/bytes/4096/probe/0-0",
        "status": "succeeded",
        "size_bytes": 4096,
        "sha256": "0" * 64,
        "content_type": "application/octet-stream",
        "error_code": None,
        "error_message": None,
    }
    payload = {
        "type": "task.completed",
        "timestamp": "2026-12-04T00:00:00Z",
        "data": {
            "task_id": "01900000-0000-7000-8000-000000000001",
            "status": "succeeded",
            "metadata": {"bench_sent_us": 0},
            "attachments": [attachment] * attachments,
        },
    }
    body = json.dumps(payload).encode()
    webhook_id = "msg_probe"
    timestamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    return body, headers


# Throughput and scaling -----------------------------------------------------


@dataclass
class ThroughputRun:
    fetch_workers: int
    attachments: int
    submit: dict[str, Any]
    # From the first submission to the last callback.
    seconds: float
    overall_rate: float
    steady_rate: float
    cpu_seconds: dict[str, float]
    # Share of the time of all cores that was busy during the run, by any process.
    machine_busy: float
    profile: Profile | None = None


def measure_throughput(ctx: Context, fetch_workers: int, profile: bool) -> ThroughputRun:
    """Submit every task at once to a fleet of N fetch-workers and time the callbacks."""
    settings = ctx.settings
    ctx.reset(history_tasks=settings.tasks)
    fleet_ = Fleet(ctx.services)
    fleet_.start(fetch_workers)
    probe = None
    try:
        pids = fleet_.pids()
        cpu_before = {name: machine.cpu_seconds(pid) for name, pid in pids.items()}
        busy_before, total_before = machine.machine_cpu_ticks()
        probe = ProfileProbe(ctx, fleet_) if profile else None

        submitted = ctx.submit(
            fleet_,
            settings.tasks,
            settings.attachments_per_task,
            settings.attachment_bytes,
            f"throughput{fetch_workers}",
            concurrency=settings.submit_concurrency,
        )
        ctx.wait(settings.tasks)

        cpu_after = {name: machine.cpu_seconds(pid) for name, pid in pids.items()}
        busy_after, total_after = machine.machine_cpu_ticks()
        if probe:
            probe.stop_sampling()
    finally:
        if probe:
            probe.close()
        fleet_.stop()
    profiled = probe.finish() if probe else None

    records = first_callbacks(ctx.records())
    first_sent = min(record["sent_us"] for record in records)
    arrivals = sorted(record["received_us"] for record in records)
    seconds = (arrivals[-1] - first_sent) / 1e6
    per_task = settings.attachments_per_task
    return ThroughputRun(
        fetch_workers=fetch_workers,
        attachments=len(records) * per_task,
        submit=submitted,
        seconds=seconds,
        overall_rate=len(records) * per_task / seconds,
        steady_rate=steady_rate(arrivals) * per_task,
        cpu_seconds=cpu_by_kind(cpu_before, cpu_after),
        machine_busy=(busy_after - busy_before) / max(1, total_after - total_before),
        profile=profiled,
    )


@dataclass
class Round:
    """A broker reference and the 1 fetch-worker run measured right after it."""

    broker: dict[str, Any]
    run: ThroughputRun

    @property
    def ratio(self) -> float:
        return self.run.steady_rate / self.broker["rate"]


def median_round(rounds: list[Round]) -> Round:
    """Return the round of the median ratio, the lower one of two middle rounds."""
    ordered = sorted(rounds, key=lambda each: each.ratio)
    return ordered[(len(ordered) - 1) // 2]


def first_callbacks(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first callback of each task, because delivery is at least once and may repeat."""
    first: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda record: record["received_us"]):
        first.setdefault(record["task_id"], record)
    return list(first.values())


def steady_rate(arrivals_us: list[int]) -> float:
    """Return callbacks per second between the STEADY_FROM and STEADY_TO shares of arrivals."""
    first = int(len(arrivals_us) * STEADY_FROM)
    last = max(first + 1, int(len(arrivals_us) * STEADY_TO) - 1)
    if last >= len(arrivals_us) or arrivals_us[last] == arrivals_us[first]:
        return 0.0
    return (last - first) / ((arrivals_us[last] - arrivals_us[first]) / 1e6)


def cpu_by_kind(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Sum CPU seconds per binary kind, so several fetch-workers add up."""
    totals = dict.fromkeys(BINARY_KINDS, 0.0)
    for name, seconds in after.items():
        kind = next(kind for kind in BINARY_KINDS if name.startswith(kind))
        totals[kind] += seconds - before[name]
    return totals


# Latency --------------------------------------------------------------------


@dataclass
class LatencyRun:
    rate: float
    tasks: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def measure_latency(ctx: Context) -> LatencyRun:
    """Submit tasks on a fixed schedule to a one-worker fleet and take percentiles."""
    settings = ctx.settings
    tasks = max(1, round(settings.latency_rate * settings.latency_seconds))
    ctx.reset(history_tasks=settings.tasks)
    fleet_ = Fleet(ctx.services)
    fleet_.start(1)
    try:
        ctx.submit(
            fleet_,
            tasks,
            settings.attachments_per_task,
            settings.attachment_bytes,
            "latency",
            rate=settings.latency_rate,
            concurrency=64,
        )
        ctx.wait(tasks)
    finally:
        fleet_.stop()
    latencies = sorted(
        (record["received_us"] - record["sent_us"]) / 1000
        for record in first_callbacks(ctx.records())
    )
    return LatencyRun(
        rate=settings.latency_rate,
        tasks=tasks,
        p50_ms=nearest_rank(latencies, 0.50),
        p95_ms=nearest_rank(latencies, 0.95),
        p99_ms=nearest_rank(latencies, 0.99),
        max_ms=latencies[-1],
    )


def nearest_rank(sorted_values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of sorted values."""
    # Rounding first keeps 0.95 * 100 at rank 95 despite binary fractions.
    rank = math.ceil(round(fraction * len(sorted_values), 6))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]
