"""The memory figures: a fetch-worker's peak resident set while it streams
one large attachment, and while it runs many fetches at once."""

import signal
import time
from dataclasses import dataclass, field

from attache_demo import DemoError, infra

from . import fleet, machine
from .context import Context
from .fleet import Fleet
from .settings import size_text


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
