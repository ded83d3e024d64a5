"""The shared part of the phases that read from stand-ins of S3, Cloud Storage and Azure Blob.

These phases use a database and queue prefix of their own
(`fleet.run_names`), with the binaries' logs, pid files and attachments
under RUN_DIR/cloud, so they can run alone (`bench.py --only credentials`)
beside a run of the fleet phases. The stand-ins are those of `make demo`,
from scripts/attache_demo: moto behind the STS front (`aws`),
gcp-storage-emulator behind its Cloud Storage front beside a mock IAM
Credentials (`gcp`), and Azurite behind its Blob Storage front beside a
mock token endpoint (`azure`).

Attachments are submitted with the producer's API from Python, because
`attache-bench submit` writes only http:// URIs. Each team gets its own
`attache-bench receiver`, because a receiver verifies the signatures of
one team's secret.
"""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attache_demo import DemoError, infra
from attache_demo.api import ApiClient, request_json
from attache_demo.services import Services, create_team, stop_leftovers

from ..settings import Settings
from ..tools import Helper

# Task submissions in flight at once, as `attache-bench submit` sends by default.
SUBMIT_CONCURRENCY = 8
# Command-line fragments of the stand-ins that write pid files under
# RUN_DIR/cloud. A pid file whose pid now belongs to another process is skipped.
SERVER_MARKERS = (b"moto.server", b"gcp_storage_emulator", b"azurite-blob")


@dataclass(frozen=True)
class Team:
    """A team created with `attache-producer team create`."""

    name: str
    api_key: str
    signing_secret: str


@dataclass
class CloudContext:
    """Everything the cloud phases share."""

    settings: Settings
    bench_binary: Path
    run_dir: Path
    store_dir: Path
    services: Services
    database: infra.Database
    tool_env: dict[str, str]


def stop_leftover_servers(cloud_dir: Path) -> list[str]:
    """Stop the stand-ins and binaries that an earlier run left, and return one line per process.

    They keep no state worth a clean shutdown, so each gets SIGKILL.
    """
    stopped = []
    for pid_path in sorted(cloud_dir.glob("*.pid")):
        try:
            pid = int(pid_path.read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if any(marker in command for marker in SERVER_MARKERS):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            pid_path.unlink(missing_ok=True)
            stopped.append(f"stopped {pid_path.stem} (pid {pid}) left by an earlier run")
    return stopped + stop_leftovers(cloud_dir)


def create_teams(ctx: CloudContext, names: list[str]) -> list[Team]:
    """Create one team per name."""
    teams = []
    for name in names:
        team = create_team(ctx.services, name)
        teams.append(Team(name, team["api_key"], team["signing_secret"]))
    return teams


class TeamReceivers:
    """One `attache-bench receiver` per team, each stopped when stack closes."""

    def __init__(self, ctx: CloudContext, teams: list[Team], stack: ExitStack) -> None:
        self.receivers: list[Helper] = []
        for team in teams:
            env = {**ctx.tool_env, "ATTACHE_BENCH_SIGNING_SECRET": team.signing_secret}
            receiver = Helper(
                ctx.bench_binary, ctx.run_dir, f"receiver-{team.name}", ["receiver"], env
            )
            stack.callback(receiver.stop)
            self.receivers.append(receiver)

    def callback_url(self, team_index: int, name: str) -> str:
        return f"{self.receivers[team_index].url}/callbacks/{name}"

    def reset(self) -> None:
        """Clear every receiver's records."""
        for receiver in self.receivers:
            status, _ = request_json("POST", f"{receiver.url}/reset")
            if status != 204:
                raise DemoError(f"POST {receiver.url}/reset returned {status}")

    def stats(self) -> list[dict[str, Any]]:
        """Return each receiver's /stats."""
        all_stats = []
        for receiver in self.receivers:
            status, stats = request_json("GET", f"{receiver.url}/stats")
            if status != 200 or not isinstance(stats, dict):
                raise DemoError(f"GET {receiver.url}/stats returned {status}: {stats!r}")
            all_stats.append(stats)
        return all_stats

    def wait(self, ctx: CloudContext, tasks: int) -> int:
        """Wait for the callbacks of `tasks` distinct tasks and return the last arrival time, in µs.

        Raises DemoError as soon as a callback reports a task that did not
        succeed or fails verification, when a binary exits, or when the
        phase timeout passes.
        """
        deadline = time.monotonic() + ctx.settings.phase_timeout
        while True:
            stats = self.stats()
            if sum(s["not_succeeded"] for s in stats) or sum(s["rejected"] for s in stats):
                raise DemoError(
                    "a callback reported a task that did not succeed, or failed verification:"
                    f" {describe_failures(ctx.database)}. Logs are in {ctx.run_dir}"
                )
            received = sum(s["unique_tasks"] for s in stats)
            if received >= tasks:
                return max(s["last_received_us"] for s in stats if s["last_received_us"])
            if exited := ctx.services.exited():
                raise DemoError(f"a binary exited during the run: {'; '.join(exited)}")
            if time.monotonic() > deadline:
                raise DemoError(
                    f"only {received} of {tasks} callbacks arrived within"
                    f" {ctx.settings.phase_timeout:.0f} s: see the logs in {ctx.run_dir}"
                )
            time.sleep(0.2)


def submit_tasks(
    api_url: str,
    teams: list[Team],
    receivers: TeamReceivers,
    uris: list[list[str]],
    tasks: int,
    run_id: str,
) -> None:
    """Submit `tasks` tasks, task i for team i modulo the team count, reading that team's uris.

    Raises DemoError when the API rejects a task.
    """
    clients = [ApiClient(api_url, team.api_key) for team in teams]

    def submit(index: int) -> None:
        team_index = index % len(teams)
        name = f"{run_id}-{index}"
        request = {
            "callback_url": receivers.callback_url(team_index, name),
            "attachments": [{"uri": uri} for uri in uris[team_index]],
        }
        clients[team_index].submit_task(request, idempotency_key=name)

    with ThreadPoolExecutor(max_workers=SUBMIT_CONCURRENCY) as pool:
        # list() raises the first DemoError of any submission.
        list(pool.map(submit, range(tasks)))


def describe_failures(database: infra.Database) -> str:
    """Return the failed and pending attachments by error code, for an error message."""
    rows = database.query(
        "SELECT status, coalesce(error_code, '') AS code, min(error_message) AS message,"
        " count(*) AS count FROM attachments WHERE status <> 'succeeded'"
        " GROUP BY status, error_code ORDER BY count(*) DESC"
    )
    if not rows:
        return "no attachment failed"
    return "; ".join(
        f"{row['count']} {row['status']} {row['code']} ({row['message']})".replace(" ()", "")
        for row in rows
    )


def count_succeeded(database: infra.Database, digests: dict[str, str]) -> int:
    """Return the number of succeeded attachments after checking each one's SHA-256.

    Raises DemoError when an attachment failed, is still pending, or was
    stored with another digest than its object's in `digests`, keyed by URI.
    """
    rows = database.query(
        "SELECT uri, sha256, count(*) AS count FROM attachments"
        " WHERE status = 'succeeded' GROUP BY uri, sha256"
    )
    others = database.scalar("SELECT count(*) FROM attachments WHERE status <> 'succeeded'")
    if others:
        raise DemoError(f"not every attachment succeeded: {describe_failures(database)}")
    wrong = [row["uri"] for row in rows if digests.get(row["uri"]) != row["sha256"]]
    if wrong:
        raise DemoError(
            f"{len(wrong)} objects were stored with another SHA-256 than was uploaded,"
            f" such as {wrong[0]}: the fetch-worker read the wrong object or bytes"
        )
    return sum(row["count"] for row in rows)


def now_us() -> int:
    """Return the wall-clock time in microseconds, as the receivers record arrivals."""
    return time.time_ns() // 1000
