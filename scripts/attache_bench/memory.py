"""The memory figures: a fetch-worker's peak resident set while it streams
one large attachment over HTTP or from S3, and while it runs many fetches
at once."""

import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from attache_demo import DemoError
from attache_demo.api import ApiClient

from . import fleet, machine
from .cloud import CloudContext, TeamReceivers, count_succeeded, create_teams, submit_tasks
from .cloud.aws import large_object, start_aws
from .context import Context
from .fleet import Fleet
from .settings import size_text


@dataclass
class MemoryRun:
    scenario: str
    idle_rss: int
    peak_rss: int
    seconds: float
    # The bytes of every attachment of the scenario together.
    total_bytes: int
    # Whether the scenario streams one attachment, which has a target for
    # the peak above idle.
    one_stream: bool = False
    # The maximum number of fetches in flight, from polling the worker's gauge.
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
    scenario = f"one {size_text(settings.stream_bytes)} stream over HTTP"
    return MemoryRun(scenario, idle, peak, seconds, settings.stream_bytes, one_stream=True)


def measure_s3_stream(ctx: CloudContext) -> MemoryRun:
    """Measure a fresh fetch-worker's peak RSS while it streams one large object from S3.

    The object is uploaded to moto in parts before the fleet starts, and
    the worker reads it as a team with delegated access, so its AssumeRole
    call falls inside the measured window.
    """
    settings = ctx.settings
    size = settings.s3_stream_bytes
    fleet.clear_data(ctx.database, ctx.store_dir)
    teams = create_teams(ctx, ["s3-memory"])
    with ExitStack() as stack:
        receivers = TeamReceivers(ctx, teams, stack)
        aws = start_aws(stack, ctx, teams, large_object("large.bin", size))
        fleet_ = Fleet(ctx.services)
        concurrency = {"ATTACHE_FETCH_CONCURRENCY": str(settings.parallel_fetches)}
        fleet_.start(1, {**aws.env(), **concurrency})
        try:
            aws.activate(ApiClient(fleet_.api_url, teams[0].api_key), 0)
            pid = fleet_.pids()["fetch-worker-1"]
            idle = settle_and_read_idle(pid)
            started = time.monotonic()
            submit_tasks(fleet_.api_url, teams, receivers, [aws.uris(0)], 1, "s3-stream")
            receivers.wait(ctx, 1)
            seconds = time.monotonic() - started
            peak = machine.memory(pid)["VmHWM"]
        finally:
            fleet_.stop()
    count_succeeded(ctx.database, aws.digests)
    scenario = f"one {size_text(size)} stream from S3 (moto, delegated access)"
    return MemoryRun(scenario, idle, peak, seconds, size, one_stream=True)


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
            fleet.wait_for_empty_outbox(ctx.database, settings.phase_timeout)
            started = time.monotonic()
        finally:
            worker.process.send_signal(signal.SIGCONT)
        max_in_flight = watch_in_flight(ctx, admin_url, count)
        seconds = time.monotonic() - started
        peak = machine.memory(pid)["VmHWM"]
    finally:
        fleet_.stop()
    scenario = f"{count} fetches of {size_text(settings.parallel_bytes)} at once"
    total = count * settings.parallel_bytes
    return MemoryRun(scenario, idle, peak, seconds, total, max_in_flight=max_in_flight)


def settle_and_read_idle(pid: int) -> int:
    """Wait for a just-started worker to settle, then return its resident set in bytes."""
    time.sleep(2)
    return machine.memory(pid)["VmRSS"]


def watch_in_flight(ctx: Context, admin_url: str, tasks: int) -> int:
    """Poll the fetch gauge until every task's callback arrived; return the highest value."""
    highest = 0
    deadline = time.monotonic() + ctx.settings.phase_timeout
    while fleet.receiver_stats(ctx.receiver.url)["unique_tasks"] < tasks:
        samples = fleet.scrape(admin_url)
        highest = max(highest, int(samples.get("attache_fetches_in_flight", 0)))
        if time.monotonic() > deadline:
            raise DemoError(
                f"the parallel fetches did not finish within {ctx.settings.phase_timeout:.0f} s:"
                f" see the logs in {ctx.run_dir}"
            )
        time.sleep(0.05)
    ctx.wait(tasks)
    return highest
