"""The breakdown of one throughput run: PostgreSQL's counters and sessions,
the CPU of the processes the fleet depends on, and the fleet's own metrics."""

import threading
import time
from dataclasses import dataclass
from typing import Any

from attache_demo import DemoError, infra

from . import fleet, machine
from .context import Context
from .fleet import Fleet
from .tools import Sampler

PG_SAMPLE_INTERVAL_MS = 50


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
            # A fetch message may carry several fetches, so fetches are
            # counted by their own gauge, callbacks by their jobs.
            for kind, names, gauge in (
                ("fetch", self.fleet.fetch_workers, "attache_fetches_in_flight"),
                ("callback", ["callback-worker"], 'attache_jobs_in_flight{queue="callback"}'),
            ):
                try:
                    samples = [fleet.scrape(self.fleet.admin_url(name)) for name in names]
                except (DemoError, OSError):
                    # A missed sample only thins the mean.
                    continue
                total = sum(s.get(gauge, 0.0) for s in samples)
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
