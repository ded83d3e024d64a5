"""PostgreSQL and RabbitMQ on this machine, driven through their command-line tools.

`Database` recreates one database and runs read-only queries through psql,
returning rows as JSON. `Broker` lists and deletes the queues of one prefix
through rabbitmqctl. `restart_rabbitmq` and `restart_postgresql` restart the
machine's services, and `ensure_running` starts whichever of them is down,
so a run that was interrupted halfway through a restart still leaves both
running. Commands that need root go through sudo when the script runs as
another user.
"""

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import DemoError

POSTGRESQL_HOST = "127.0.0.1"
POSTGRESQL_CONFIG_DIR = Path("/etc/postgresql")
AS_ROOT = [] if os.geteuid() == 0 else ["sudo"]
# rabbitmqctl waits up to 60 s by default for a node that does not respond,
# and each call here is expected to take a second or two.
RABBITMQCTL_TIMEOUT_SECONDS = 30


def run(command: list[str], timeout: float = 120) -> str:
    """Run a command and return its standard output, or raise DemoError when it fails."""
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DemoError(f"`{' '.join(command)}` failed: {error}") from error
    if result.returncode != 0:
        raise DemoError(
            f"`{' '.join(command)}` exited with status {result.returncode}:"
            f" {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def succeeds(command: list[str], timeout: float = 30) -> bool:
    """Tell whether a command exits with status 0 within timeout seconds."""
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def wait_until(check_command: list[str], timeout: float, what: str) -> float:
    """Run check_command every 0.5 s until it succeeds, and return the seconds waited.

    Raises DemoError naming `what` when timeout seconds pass first.
    """
    started = time.monotonic()
    while not succeeds(check_command):
        if time.monotonic() - started > timeout:
            raise DemoError(f"{what} did not come back within {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


class Database:
    """One PostgreSQL database on 127.0.0.1:5432, reached as user postgres."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = f"postgres://postgres@{POSTGRESQL_HOST}:5432/{name}"

    def _psql(self, database: str, *args: str) -> list[str]:
        return [
            "psql",
            "-h",
            POSTGRESQL_HOST,
            "-U",
            "postgres",
            "-d",
            database,
            "-w",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            *args,
        ]

    def recreate(self) -> None:
        """Drop the database with its connections, and create it empty."""
        run(
            self._psql(
                "postgres",
                "-c",
                f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)",
                "-c",
                f"CREATE DATABASE {self.name}",
            )
        )

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Run one SELECT and return its rows as dicts, column name to JSON value."""
        wrapped = f"SELECT coalesce(json_agg(row_to_json(q)), '[]') FROM ({sql}) q"
        return json.loads(run(self._psql(self.name, "-A", "-t", "-c", wrapped)))

    def scalar(self, sql: str) -> Any:
        """Run a SELECT of one column and one row, and return that value."""
        rows = self.query(sql)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise DemoError(f"expected one value from `{sql}`, got {rows!r}")
        return next(iter(rows[0].values()))


@dataclass(frozen=True)
class QueueDepth:
    name: str
    ready: int
    unacknowledged: int


class Broker:
    """The queues of one prefix on the machine's RabbitMQ, through rabbitmqctl."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def owns(self, queue: str) -> bool:
        """Tell whether a queue name belongs to this prefix, as the binaries name them."""
        return queue == self.prefix or any(
            queue.startswith(self.prefix + separator) for separator in ".-_"
        )

    def depths(self) -> list[QueueDepth]:
        """Return the message counts of every queue of this prefix."""
        output = run(
            [
                *AS_ROOT,
                "rabbitmqctl",
                "--timeout",
                str(RABBITMQCTL_TIMEOUT_SECONDS),
                "list_queues",
                "--silent",
                "name",
                "messages_ready",
                "messages_unacknowledged",
            ]
        )
        depths = []
        for line in output.splitlines():
            fields = line.split("\t")
            if len(fields) == 3 and self.owns(fields[0]):
                depths.append(QueueDepth(fields[0], int(fields[1]), int(fields[2])))
        return depths

    def delete_queues(self) -> int:
        """Delete every queue of this prefix and return how many there were."""
        queues = [depth.name for depth in self.depths()]
        for queue in queues:
            run([*AS_ROOT, "rabbitmqctl", "delete_queue", "--quiet", queue])
        return len(queues)


RABBITMQ_CHECK = [*AS_ROOT, "rabbitmq-diagnostics", "-q", "check_running"]
POSTGRESQL_CHECK = ["pg_isready", "-q", "-h", POSTGRESQL_HOST]


def rabbitmq_running() -> bool:
    return succeeds(RABBITMQ_CHECK)


def postgresql_running() -> bool:
    return succeeds(POSTGRESQL_CHECK)


def postgresql_version() -> str:
    """Return the cluster version under /etc/postgresql, the newest if there are several."""
    versions = sorted(
        (path.name for path in POSTGRESQL_CONFIG_DIR.iterdir() if path.is_dir()),
        key=lambda name: [int(part) if part.isdigit() else 0 for part in name.split(".")],
    )
    if not versions:
        raise DemoError(f"{POSTGRESQL_CONFIG_DIR} has no cluster: run scripts/ensure-services.sh")
    return versions[-1]


def start_rabbitmq_app(timeout: float) -> float:
    """Start the RabbitMQ application and return the seconds until check_running passed."""
    started = time.monotonic()
    run([*AS_ROOT, "rabbitmqctl", "start_app"])
    wait_until(RABBITMQ_CHECK, timeout, "RabbitMQ")
    return time.monotonic() - started


def stop_rabbitmq_app() -> None:
    """Stop the RabbitMQ application. The node stays up, so start_app brings it back."""
    run([*AS_ROOT, "rabbitmqctl", "stop_app"])


def restart_postgresql(timeout: float) -> float:
    """Restart the PostgreSQL cluster and return the seconds until pg_isready passed."""
    run(
        [
            *AS_ROOT,
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            postgresql_version(),
            "main",
            "restart",
        ]
    )
    return wait_until(POSTGRESQL_CHECK, timeout, "PostgreSQL")


def ensure_running(timeout: float = 60) -> list[str]:
    """Start PostgreSQL or the RabbitMQ application if either is down, and list what was done."""
    actions = []
    if not postgresql_running():
        # A restart that was interrupted may still be bringing the cluster
        # up, and `pg_ctlcluster start` fails on a running cluster.
        try:
            wait_until(POSTGRESQL_CHECK, 10, "PostgreSQL")
        except DemoError:
            pass
    if not postgresql_running():
        run(
            [
                *AS_ROOT,
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                postgresql_version(),
                "main",
                "start",
            ]
        )
        wait_until(POSTGRESQL_CHECK, timeout, "PostgreSQL")
        actions.append("started PostgreSQL, which was down")
    if not rabbitmq_running():
        start_rabbitmq_app(timeout)
        actions.append("started the RabbitMQ application, which was stopped")
    return actions
