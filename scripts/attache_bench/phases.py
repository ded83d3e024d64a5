"""The measurements of one benchmark run, one function per figure.

Every phase starts from empty pipeline tables and an empty attachment
store, starts its own fleet, and stops it at the end. Submission times are
taken by the submitter just before each request and arrival times by the
receiver, so a task's latency runs from its submission to its delivered,
verified callback.
"""

import base64
import hashlib
import hmac
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attache_demo import DemoError, infra
from attache_demo.api import request_json
from attache_demo.services import Services

from . import fleet, machine
from .fleet import Fleet
from .settings import Settings, size_text
from .tools import Helper, ProbeResult, Sampler, WrkResult, run_probe, run_report, run_wrk

BINARY_KINDS = ("producer", "fetch-worker", "callback-worker")
# Bounds of the steady-state window as shares of the callbacks in arrival
# order: the middle 80 %, which leaves out the ramp-up and the drain.
STEADY_FROM, STEADY_TO = 0.10, 0.90
PG_SAMPLE_INTERVAL_MS = 50
STORE_WRITE_FILES = 200


@dataclass
class Context:
    """Everything the phases share."""

    settings: Settings
    bench_binary: Path
    run_dir: Path
    store_dir: Path
    services: Services
    database: infra.Database
    team: dict[str, str]
    source: Helper
    receiver: Helper
    tool_env: dict[str, str]

    def submit(
        self, fleet_: Fleet, tasks: int, per_task: int, size: int, run_id: str, **options: Any
    ) -> dict[str, Any]:
        """Submit tasks with `attache-bench submit` and return its report."""
        args = [
            "submit",
            f"--api-url={fleet_.api_url}",
            f"--source-url={self.source.url}",
            f"--callback-url={self.receiver.url}/callbacks",
            f"--tasks={tasks}",
            f"--attachments-per-task={per_task}",
            f"--attachment-bytes={size}",
            f"--run-id={run_id}",
            *(f"--{name.replace('_', '-')}={value}" for name, value in options.items()),
        ]
        env = {**self.tool_env, "ATTACHE_BENCH_API_KEY": self.team["api_key"]}
        report = run_report(self.bench_binary, args, env, self.settings.phase_timeout)
        if report["failed"]:
            raise DemoError(f"{report['failed']} task submissions failed: {report['errors']}")
        return report

    def reset(self) -> None:
        """Empty the pipeline and the receiver before a phase."""
        fleet.clear_data(self.database, self.store_dir)
        status, _ = request_json("POST", f"{self.receiver.url}/reset")
        if status != 204:
            raise DemoError(f"POST {self.receiver.url}/reset returned {status}")

    def records(self) -> list[dict[str, Any]]:
        status, records = request_json("GET", f"{self.receiver.url}/records", timeout=60)
        if status != 200 or not isinstance(records, list):
            raise DemoError(f"GET {self.receiver.url}/records returned {status}")
        return records

    def wait(self, tasks: int) -> dict[str, Any]:
        """Wait for the callbacks of `tasks` tasks; raise if any did not succeed."""
        stats = fleet.wait_for_callbacks(
            self.receiver.url, self.services, tasks, self.settings.phase_timeout
        )
        if stats["not_succeeded"] or stats["rejected"]:
            raise DemoError(
                f"{stats['not_succeeded']} callbacks reported a task that did not succeed and"
                f" {stats['rejected']} requests failed verification: see {self.run_dir}"
            )
        return stats


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
    broker = run_report(
        ctx.bench_binary,
        ["broker", f"--queue={fleet.QUEUE_PREFIX}.reference", f"--messages={settings.attachments}"],
        ctx.tool_env,
        settings.phase_timeout,
    )
    store_writes = measure_store_writes(ctx.store_dir, STORE_WRITE_FILES, settings.attachment_bytes)
    return References(source_rate, source_latency, callback_latency, broker, store_writes)


def measure_store_writes(store_dir: Path, files: int, size: int) -> StoreWrites:
    """Time files written as the local store writes an attachment: a new directory,
    a temporary file, fsync, then a rename to the final name."""
    root = store_dir / "reference"
    body = os.urandom(size)
    durations = []
    for index in range(files):
        started = time.perf_counter()
        directory = root / f"task-{index}"
        directory.mkdir(parents=True)
        temporary = directory / ".attachment.tmp"
        with temporary.open("wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        temporary.rename(directory / "attachment")
        durations.append((time.perf_counter() - started) * 1000)
    shutil.rmtree(root)
    durations.sort()
    return StoreWrites(files, size, nearest_rank(durations, 0.50), nearest_rank(durations, 0.99))


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
class Profile:
    """The breakdown of one throughput run: database, processes and fleet metrics."""

    commits: int
    wal_syncs: int
    wal_records: int
    outbox_inserts: int
    postgres_cpu: float
    rabbitmq_cpu: float
    source_cpu: float
    receiver_cpu: float
    fetch_mean_seconds: float
    callback_mean_seconds: float
    fetch_in_flight_mean: float
    callback_in_flight_mean: float
    pg_sample: dict[str, Any]


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
    ctx.reset()
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


def first_callbacks(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first callback of each task; delivery is at least once, so repeats can occur."""
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


class ProfileProbe:
    """Database, process and fleet counters read around one throughput run.

    Call `stop_sampling` while the fleet still runs, because a process's
    CPU time leaves with it, then `finish` after the fleet stopped, because
    PostgreSQL backends publish their statistics when they exit.
    """

    def __init__(self, ctx: Context, fleet_: Fleet) -> None:
        self.ctx = ctx
        self.fleet = fleet_
        self.database = ctx.database
        self.counters_before = self._database_counters()
        self.process_cpu_before = self._process_cpu()
        self.process_cpu: dict[str, float] = {}
        self.fleet_means: dict[str, float] = {}
        self.pg_sample: dict[str, Any] = {}
        self.in_flight: dict[str, list[float]] = {"fetch": [], "callback": []}
        self.stopped = threading.Event()
        self.poller = threading.Thread(target=self._poll_in_flight, daemon=True)
        self.poller.start()
        self.sampler = Sampler(
            ctx.bench_binary,
            infra.Database("postgres").url,
            self.database.name,
            ctx.tool_env,
            PG_SAMPLE_INTERVAL_MS,
        )

    def _database_counters(self) -> dict[str, int]:
        row = self.database.query(
            "SELECT d.xact_commit AS commits, w.wal_sync AS wal_syncs,"
            " w.wal_records AS wal_records,"
            " (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'outbox') AS outbox"
            f" FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = '{self.database.name}'"
        )[0]
        return {key: int(value) for key, value in row.items()}

    def _process_cpu(self) -> dict[str, float]:
        cpu = machine.cpu_seconds_by_command(("postgres", "beam.smp"))
        cpu["source"] = machine.cpu_seconds(self.ctx.source.process.pid)
        cpu["receiver"] = machine.cpu_seconds(self.ctx.receiver.process.pid)
        return cpu

    def _poll_in_flight(self) -> None:
        while not self.stopped.wait(1.0):
            for kind, names in (
                ("fetch", self.fleet.fetch_workers),
                ("callback", ["callback-worker"]),
            ):
                try:
                    samples = [fleet.scrape(self.fleet.admin_url(name)) for name in names]
                except (DemoError, OSError):
                    # A missed sample only thins the mean.
                    continue
                total = sum(
                    s.get(f'attache_jobs_in_flight{{queue="{kind}"}}', 0.0) for s in samples
                )
                self.in_flight[kind].append(total)

    def _mean_seconds(self, names: list[str], metric: str) -> float:
        samples = [fleet.scrape(self.fleet.admin_url(name)) for name in names]
        total = sum(fleet.metric_sum(s, f"{metric}_sum") for s in samples)
        count = sum(fleet.metric_sum(s, f"{metric}_count") for s in samples)
        return total / count if count else 0.0

    def stop_sampling(self) -> None:
        """Read the process CPU and the fleet's metrics, and stop both samplers."""
        self.process_cpu = {
            key: value - self.process_cpu_before[key] for key, value in self._process_cpu().items()
        }
        self.fleet_means = {
            "fetch": self._mean_seconds(self.fleet.fetch_workers, "attache_fetch_duration_seconds"),
            "callback": self._mean_seconds(["callback-worker"], "attache_callback_duration_seconds"),
        }
        self.pg_sample = self.sampler.finish()
        self.close()

    def close(self) -> None:
        """Stop the samplers; safe to call more than once."""
        self.sampler.kill()
        self.stopped.set()
        self.poller.join()

    def finish(self) -> Profile:
        """Return the profile once the fleet's database sessions have ended."""
        wait_for_sessions_to_end(self.database)
        counters = self._database_counters()
        delta = {key: counters[key] - self.counters_before[key] for key in counters}
        return Profile(
            commits=delta["commits"],
            wal_syncs=delta["wal_syncs"],
            wal_records=delta["wal_records"],
            outbox_inserts=delta["outbox"],
            postgres_cpu=self.process_cpu["postgres"],
            rabbitmq_cpu=self.process_cpu["beam.smp"],
            source_cpu=self.process_cpu["source"],
            receiver_cpu=self.process_cpu["receiver"],
            fetch_mean_seconds=self.fleet_means["fetch"],
            callback_mean_seconds=self.fleet_means["callback"],
            fetch_in_flight_mean=_mean(self.in_flight["fetch"]),
            callback_in_flight_mean=_mean(self.in_flight["callback"]),
            pg_sample=self.pg_sample,
        )


def wait_for_sessions_to_end(database: infra.Database, timeout: float = 10) -> None:
    """Wait until no other session is connected to the database, so its statistics are in."""
    deadline = time.monotonic() + timeout
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        f" WHERE datname = '{database.name}' AND pid <> pg_backend_pid()"
    )
    while database.scalar(query) != 0:
        if time.monotonic() > deadline:
            raise DemoError(
                f"sessions of {database.name} were still open {timeout:.0f} s after the fleet"
                " stopped: look for another client of that database"
            )
        time.sleep(0.2)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


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
    ctx.reset()
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


# Memory ---------------------------------------------------------------------


@dataclass
class MemoryRun:
    scenario: str
    idle_rss: int
    peak_rss: int
    seconds: float
    # The maximum number of fetch jobs in flight, from polling the worker's gauge.
    max_in_flight: int = 0
    notes: list[str] = field(default_factory=list)


def measure_stream(ctx: Context) -> MemoryRun:
    """Peak RSS of a fresh fetch-worker while it streams one large attachment."""
    settings = ctx.settings
    ctx.reset()
    fleet_ = Fleet(ctx.services)
    fleet_.start(1, {"ATTACHE_FETCH_CONCURRENCY": str(settings.parallel_fetches)})
    try:
        pid = fleet_.pids()["fetch-worker-1"]
        idle = settle_and_read_idle(pid)
        started = time.monotonic()
        ctx.submit(fleet_, 1, 1, settings.stream_bytes, "stream")
        ctx.wait(1)
        seconds = time.monotonic() - started
        peak = machine.memory(pid)["VmHWM"]
    finally:
        fleet_.stop()
    return MemoryRun(f"one {size_text(settings.stream_bytes)} stream", idle, peak, seconds)


def measure_parallel(ctx: Context) -> MemoryRun:
    """Peak RSS of a fresh fetch-worker handed every parallel fetch job at once.

    The worker is stopped with SIGSTOP after its idle reading while the
    tasks are submitted and the relay publishes their jobs, then resumed,
    so all jobs arrive together up to the prefetch.
    """
    settings = ctx.settings
    count = settings.parallel_fetches
    ctx.reset()
    fleet_ = Fleet(ctx.services)
    fleet_.start(1, {"ATTACHE_FETCH_CONCURRENCY": str(count)})
    try:
        pid = fleet_.pids()["fetch-worker-1"]
        admin_url = fleet_.admin_url("fetch-worker-1")
        idle = settle_and_read_idle(pid)
        worker = ctx.services.find("fetch-worker-1")
        assert worker is not None
        worker.process.send_signal(signal.SIGSTOP)
        try:
            ctx.submit(fleet_, count, 1, settings.parallel_bytes, "parallel", concurrency=16)
            wait_for_empty_outbox(ctx.database, settings.phase_timeout)
            started = time.monotonic()
        finally:
            worker.process.send_signal(signal.SIGCONT)
        max_in_flight = watch_in_flight(ctx, admin_url, count)
        seconds = time.monotonic() - started
        peak = machine.memory(pid)["VmHWM"]
    finally:
        fleet_.stop()
    scenario = f"{count} fetches of {size_text(settings.parallel_bytes)} at once"
    return MemoryRun(scenario, idle, peak, seconds, max_in_flight=max_in_flight)


def settle_and_read_idle(pid: int) -> int:
    """Wait for a just-started worker to settle, then return its resident set in bytes."""
    time.sleep(2)
    return machine.memory(pid)["VmRSS"]


def wait_for_empty_outbox(database: infra.Database, timeout: float) -> None:
    """Wait until the relay has published every outbox row."""
    deadline = time.monotonic() + timeout
    while database.scalar("SELECT count(*) FROM outbox") != 0:
        if time.monotonic() > deadline:
            raise DemoError(f"the outbox still had rows after {timeout:.0f} s")
        time.sleep(0.2)


def watch_in_flight(ctx: Context, admin_url: str, tasks: int) -> int:
    """Poll the fetch gauge until every task's callback arrived; return the highest value."""
    highest = 0
    deadline = time.monotonic() + ctx.settings.phase_timeout
    while fleet.receiver_stats(ctx.receiver.url)["unique_tasks"] < tasks:
        samples = fleet.scrape(admin_url)
        highest = max(highest, int(samples.get('attache_jobs_in_flight{queue="fetch"}', 0)))
        if time.monotonic() > deadline:
            raise DemoError(
                f"the parallel fetches did not finish within {ctx.settings.phase_timeout:.0f} s:"
                f" see the logs in {ctx.run_dir}"
            )
        time.sleep(0.05)
    ctx.wait(tasks)
    return highest
