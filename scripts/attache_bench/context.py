"""The state that every benchmark phase shares, and its small operations:
submitting tasks, resetting the pipeline, and reading the receiver."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attache_demo import DemoError, infra
from attache_demo.api import request_json
from attache_demo.services import Services

from . import fleet
from .fleet import Fleet
from .settings import Settings
from .tools import Helper, run_report


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
    queue_prefix: str

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
            raise DemoError(
                f"{report['failed']} task submissions failed, for example {report['errors']}:"
                f" see producer.log in {self.run_dir}"
            )
        return report

    def reset(self, history_tasks: int = 0) -> None:
        """Empty the pipeline and the receiver before a phase, then seed
        `history_tasks` finished tasks (see fleet.clear_data)."""
        fleet.clear_data(self.database, self.store_dir, history_tasks)
        status, _ = request_json("POST", f"{self.receiver.url}/reset")
        if status != 204:
            raise DemoError(f"POST {self.receiver.url}/reset returned {status}")

    def records(self) -> list[dict[str, Any]]:
        status, records = request_json("GET", f"{self.receiver.url}/records", timeout=60)
        if status != 200 or not isinstance(records, list):
            raise DemoError(f"GET {self.receiver.url}/records returned {status}")
        return records

    def wait(self, tasks: int) -> dict[str, Any]:
        """Wait for the callbacks of `tasks` tasks, and raise DemoError if any task failed."""
        stats = fleet.wait_for_callbacks(
            self.receiver.url, self.services, tasks, self.settings.phase_timeout
        )
        if stats["not_succeeded"] or stats["rejected"]:
            raise DemoError(
                f"{stats['not_succeeded']} callbacks reported a task that did not succeed and"
                f" {stats['rejected']} requests failed verification: see the logs in {self.run_dir}"
            )
        return stats
