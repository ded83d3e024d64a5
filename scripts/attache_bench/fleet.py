"""The Attaché fleet under test: its settings, start and stop, and its state.

`Fleet` starts one producer, N fetch-workers and one callback-worker from
the release build through `Services`, all against one database and queue
prefix (see `run_names`), and stops them between phases. `clear_data`
empties the pipeline tables and the attachment store between phases while
keeping the teams, so every phase starts from the same empty pipeline.
"""

import os
import shutil
import time
from pathlib import Path
from typing import Any

from attache_demo import DemoError, infra
from attache_demo.api import request_json
from attache_demo.services import Services, free_port

# The database of the fleet phases of a full run, also their queue prefix.
DATABASE = "attache_bench"
QUEUE_PREFIX = DATABASE
READY_TIMEOUT_SECONDS = 60
# Every receiver and source is on 127.0.0.1, so the per-host callback limit
# must be as high as the concurrency, or deliveries would be postponed.
CONCURRENCY = 128
# Each replica opens up to this many PostgreSQL connections. With four
# fetch-workers the fleet opens 6 x 12 = 72, which leaves room under
# PostgreSQL's default max_connections of 100 for other users of the server.
DATABASE_POOL_SIZE = 12
# Above the 2 GiB attachment of the memory phase.
MAX_ATTACHMENT_BYTES = 3 * 1024**3
# Attachments per task of the finished tasks that clear_data may seed.
HISTORY_ATTACHMENTS = 5


def run_names(smoke: bool) -> tuple[str, str]:
    """Return the database names of the fleet phases and of the cloud phases of a run.

    Each name is also the queue prefix of its part. A smoke run has names
    of its own and the cloud phases have theirs, so either can run beside
    a full run of the fleet phases. No name is another name followed by
    ".", "-" or "_", because `infra.Broker.owns` would then count the
    other's queues as its own and delete them.
    """
    if smoke:
        return "attache_smokebench", "attache_cloudsmoke"
    return DATABASE, "attache_cloudbench"


def fleet_env(
    database: infra.Database, store_dir: Path, queue_prefix: str = QUEUE_PREFIX
) -> dict[str, str]:
    """Return the environment shared by every binary of the benchmark."""
    # Other ATTACHE_ variables of the caller's shell are dropped, so every
    # run measures the same settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ATTACHE_") or k == "ATTACHE_AMQP_URL"
    }
    env.update(
        ATTACHE_DATABASE_URL=database.url,
        ATTACHE_DATABASE_POOL_SIZE=str(DATABASE_POOL_SIZE),
        ATTACHE_QUEUE_PREFIX=queue_prefix,
        ATTACHE_STORE_DIR=str(store_dir),
        ATTACHE_EGRESS_MEMBERS="local:127.0.0.11,local:127.0.0.12",
        ATTACHE_EGRESS_ALLOW_CIDRS="127.0.0.0/8",
        ATTACHE_FETCH_CONCURRENCY=str(CONCURRENCY),
        ATTACHE_CALLBACK_CONCURRENCY=str(CONCURRENCY),
        ATTACHE_CALLBACK_CONCURRENCY_PER_HOST=str(CONCURRENCY),
        ATTACHE_MAX_ATTACHMENT_BYTES=str(MAX_ATTACHMENT_BYTES),
        ATTACHE_SHUTDOWN_DEADLINE="5s",
        RUST_LOG="warn",
    )
    return env


class Fleet:
    """One producer, N fetch-workers and one callback-worker."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.api_url = ""
        self.fetch_workers: list[str] = []

    def start(
        self,
        fetch_workers: int,
        extra_env: dict[str, str] | None = None,
        api_addr: str | None = None,
    ) -> None:
        """Start the fleet and wait until every binary's /readyz returns 200.

        The API listens on api_addr, or on a free loopback port when it is None.
        """
        extra = dict(extra_env or {})
        api_addr = api_addr or f"127.0.0.1:{free_port()}"
        self.api_url = f"http://{api_addr}"
        self.services.start(
            "producer",
            "attache-producer",
            "serve",
            env={**extra, "ATTACHE_API_ADDR": api_addr, "ATTACHE_ADMIN_ADDR": _admin_addr()},
        )
        self.fetch_workers = []
        for _ in range(fetch_workers):
            self.start_fetch_worker(extra)
        self.services.start(
            "callback-worker",
            "attache-callback-worker",
            env={**extra, "ATTACHE_ADMIN_ADDR": _admin_addr()},
        )
        self.services.wait_ready(READY_TIMEOUT_SECONDS)

    def start_fetch_worker(self, extra_env: dict[str, str]) -> str:
        """Start one more fetch-worker and return its name. `services.wait_ready` waits for it."""
        name = f"fetch-worker-{len(self.fetch_workers) + 1}"
        self.services.start(
            name, "attache-fetch-worker", env={**extra_env, "ATTACHE_ADMIN_ADDR": _admin_addr()}
        )
        self.fetch_workers.append(name)
        return name

    def pids(self) -> dict[str, int]:
        """Return the pid of each running binary by name."""
        with self.services.lock:
            return {service.name: service.process.pid for service in self.services.running}

    def admin_url(self, name: str) -> str:
        service = self.services.find(name)
        if service is None:
            raise DemoError(f"{name} is not running")
        return service.admin_url

    def stop(self) -> None:
        """Stop every binary; raise DemoError if one had exited on its own."""
        exited = self.services.exited()
        for warning in self.services.stop_all():
            print(f"bench: warning: {warning}", flush=True)
        if exited:
            raise DemoError("; ".join(exited))


def _admin_addr() -> str:
    return f"127.0.0.1:{free_port()}"


def retired_stores(store_dir: Path) -> Path:
    """Return the directory where clear_data moves the attachment stores of finished runs."""
    return store_dir.parent / "retired-attachments"


def clear_data(database: infra.Database, store_dir: Path, history_tasks: int = 0) -> None:
    """Empty the pipeline tables, keeping the teams, and start a new attachment store.

    The first team then gets `history_tasks` finished tasks of
    HISTORY_ATTACHMENTS attachments each, and the tables are analyzed. A
    running service has such history, and PostgreSQL plans prepared
    statements by the table sizes it last analyzed. With empty tables, the
    fleet keeps sequential-scan plans until autovacuum analyzes again, after
    autovacuum_naptime (one minute by default), so for a whole run. Each
    scan then reads every row inserted so far.

    The old store is moved aside, not deleted: ext4 skips recently freed
    inodes when it allocates new ones, after reading each one's deletion
    time, and with tens of thousands freed just before a run this doubled
    the fetch-worker's CPU time. bench.py deletes the moved stores at the end.
    """
    infra.run(
        [
            "psql",
            "-h",
            infra.POSTGRESQL_HOST,
            "-U",
            "postgres",
            "-d",
            database.name,
            "-w",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "TRUNCATE outbox, callback_attempts, callbacks, attachments, tasks",
            "-c",
            history_sql(history_tasks),
            "-c",
            "VACUUM ANALYZE",
            # The next checkpoint would otherwise write the seeded pages
            # during the run, and count as the fleet's PostgreSQL time.
            "-c",
            "CHECKPOINT",
        ]
    )
    if store_dir.exists():
        retired = retired_stores(store_dir)
        retired.mkdir(exist_ok=True)
        store_dir.rename(retired / f"{time.time_ns()}")
    store_dir.mkdir(parents=True)


def history_sql(tasks: int) -> str:
    """Return the statement that gives the first team `tasks` finished tasks.

    Each task has HISTORY_ATTACHMENTS succeeded attachments and a delivered
    callback, all an hour old, with loopback URIs that nothing fetches.
    """
    return f"""
        WITH team AS (SELECT id FROM teams ORDER BY id LIMIT 1),
        task AS (
            INSERT INTO tasks (id, team_id, callback_url, status, request_hash,
                               created_at, completed_at)
            SELECT gen_random_uuid(), team.id, 'http://127.0.0.1:9/history', 'succeeded',
                   '\\x00', now() - interval '1 hour', now() - interval '1 hour'
            FROM team, generate_series(1, {int(tasks)})
            RETURNING id
        ), attachment AS (
            INSERT INTO attachments (id, task_id, position, uri, provider, status, attempts,
                                     size_bytes, sha256, content_type, storage_key,
                                     created_at, updated_at, completed_at)
            SELECT gen_random_uuid(), task.id, position,
                   'http://127.0.0.1:9/history/' || position, 'http', 'succeeded', 1,
                   4096, repeat('0', 64), 'application/octet-stream', 'history',
                   now() - interval '1 hour', now() - interval '1 hour',
                   now() - interval '1 hour'
            FROM task, generate_series(0, {HISTORY_ATTACHMENTS - 1}) AS position
        )
        INSERT INTO callbacks (id, task_id, url, payload, status, attempts, created_at,
                               last_attempt_at, delivered_at)
        SELECT gen_random_uuid(), task.id, 'http://127.0.0.1:9/history', '{{}}',
               'delivered', 1, now() - interval '1 hour', now() - interval '1 hour',
               now() - interval '1 hour'
        FROM task
    """


def wait_for_empty_outbox(database: infra.Database, timeout: float) -> None:
    """Wait until the relay has published every outbox row."""
    deadline = time.monotonic() + timeout
    while database.scalar("SELECT count(*) FROM outbox") != 0:
        if time.monotonic() > deadline:
            raise DemoError(f"the outbox still had rows after {timeout:.0f} s")
        time.sleep(0.2)


def receiver_stats(receiver_url: str) -> dict[str, Any]:
    status, stats = request_json("GET", f"{receiver_url}/stats")
    if status != 200 or not isinstance(stats, dict):
        raise DemoError(f"GET {receiver_url}/stats returned {status}: {stats!r}")
    return stats


def wait_for_callbacks(
    receiver_url: str, services: Services, expected: int, timeout: float
) -> dict[str, Any]:
    """Wait until the receiver has callbacks of `expected` distinct tasks; return its stats.

    Raises DemoError when a binary exits on its own or timeout seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        stats = receiver_stats(receiver_url)
        if stats["unique_tasks"] >= expected:
            return stats
        if exited := services.exited():
            raise DemoError(f"a binary exited during the run: {'; '.join(exited)}")
        if time.monotonic() > deadline:
            raise DemoError(
                f"only {stats['unique_tasks']} of {expected} callbacks arrived within"
                f" {timeout:.0f} s (receiver stats: {stats})"
            )
        time.sleep(0.2)


def scrape(admin_url: str) -> dict[str, float]:
    """Return the samples of an admin /metrics page, keyed by name with labels."""
    status, text = request_json("GET", f"{admin_url}/metrics")
    if status != 200 or not isinstance(text, str):
        raise DemoError(f"GET {admin_url}/metrics returned {status}")
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def metric_sum(samples: dict[str, float], name: str) -> float:
    """Sum every sample of one metric name, whatever its labels."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))
