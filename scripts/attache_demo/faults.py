"""Faults that the chaos test injects while tasks flow through the pipeline.

`FaultInjector` is a thread that runs a schedule of faults spread evenly over
a window of seconds, one after another. A worker kill is SIGKILL to the pid
of the process that `Services` started, followed at once by the same command
again. A RabbitMQ restart stops the broker application with rabbitmqctl,
keeps it stopped for a moment and starts it again. A PostgreSQL restart
restarts the cluster with pg_ctlcluster. After each fault the injector waits
until every binary's /readyz returns 200 again. It never restarts a binary
that stayed unready or exited after a broker or database restart. It records
the problem instead, because surviving those restarts is the binaries' own
job.
"""

import re
import threading
import time
import urllib.error
from dataclasses import dataclass
from enum import Enum

from . import DemoError, infra
from .api import request_json
from .services import Services


class Fault(Enum):
    KILL_FETCH_WORKER = "SIGKILL fetch-worker"
    KILL_CALLBACK_WORKER = "SIGKILL callback-worker"
    RESTART_RABBITMQ = "restart RabbitMQ"
    RESTART_POSTGRESQL = "restart PostgreSQL"


# Three fetch-worker kills, two callback-worker kills, one restart of each
# service, interleaved so that every kind of fault meets work in flight.
DEFAULT_SCHEDULE = (
    Fault.KILL_FETCH_WORKER,
    Fault.KILL_CALLBACK_WORKER,
    Fault.RESTART_RABBITMQ,
    Fault.KILL_FETCH_WORKER,
    Fault.RESTART_POSTGRESQL,
    Fault.KILL_CALLBACK_WORKER,
    Fault.KILL_FETCH_WORKER,
)

# Maximum wait, in seconds, for a worker to have a job in flight before it is killed.
KILL_WAIT_SECONDS = 5.0

# The worker binaries by fault, and the queue label of their in-flight gauge.
KILLED_WORKERS = {
    Fault.KILL_FETCH_WORKER: ("fetch-worker", "fetch"),
    Fault.KILL_CALLBACK_WORKER: ("callback-worker", "callback"),
}


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault: when, what happened, and how long recovery took."""

    fault: Fault
    # Seconds since the start of the run.
    at_seconds: float
    detail: str
    # Seconds from the end of the fault until every binary was ready again,
    # or None when they were not.
    ready_after_seconds: float | None
    problem: str | None = None


def jobs_in_flight(admin_url: str, queue: str) -> int | None:
    """Read attache_jobs_in_flight for one queue from a binary's /metrics, or None if unknown."""
    try:
        status, text = request_json("GET", f"{admin_url}/metrics", timeout=2)
    except (urllib.error.URLError, OSError):
        return None
    if status != 200 or not isinstance(text, str):
        return None
    match = re.search(rf'^attache_jobs_in_flight\{{queue="{queue}"\}} (\d+)', text, re.MULTILINE)
    return int(match.group(1)) if match else None


class FaultInjector(threading.Thread):
    """Runs a fault schedule over a window of seconds, from a thread of its own."""

    def __init__(
        self,
        services: Services,
        schedule: tuple[Fault, ...],
        window_seconds: float,
        run_started: float,
        ready_timeout: float,
        broker_down_seconds: float,
    ) -> None:
        super().__init__(name="fault-injector", daemon=True)
        self.services = services
        self.schedule = schedule
        self.window_seconds = window_seconds
        self.run_started = run_started
        self.ready_timeout = ready_timeout
        self.broker_down_seconds = broker_down_seconds
        self.stopping = threading.Event()
        self.records: list[FaultRecord] = []

    def run(self) -> None:
        started = time.monotonic()
        for index, fault in enumerate(self.schedule):
            due = started + self.window_seconds * (index + 1) / (len(self.schedule) + 1)
            if self.stopping.wait(max(0.0, due - time.monotonic())):
                return
            self.records.append(self.inject(fault))

    def stop(self) -> None:
        """Skip the faults not injected yet. A fault under way still finishes."""
        self.stopping.set()

    def inject(self, fault: Fault) -> FaultRecord:
        at_seconds = time.monotonic() - self.run_started
        try:
            if fault in KILLED_WORKERS:
                detail = self.kill_worker(fault)
            elif fault is Fault.RESTART_RABBITMQ:
                detail = self.restart_rabbitmq()
            else:
                detail = self.restart_postgresql()
        except DemoError as error:
            return FaultRecord(fault, at_seconds, "", None, f"{fault.value} failed: {error}")

        waited_from = time.monotonic()
        try:
            self.services.wait_ready(self.ready_timeout)
        except DemoError as error:
            return FaultRecord(fault, at_seconds, detail, None, f"after {fault.value}: {error}")
        return FaultRecord(fault, at_seconds, detail, time.monotonic() - waited_from)

    def kill_worker(self, fault: Fault) -> str:
        name, queue = KILLED_WORKERS[fault]
        service = self.services.find(name)
        in_flight = None
        # A kill tests recovery only while a job is in flight, so wait briefly for one.
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while service is not None and time.monotonic() < deadline:
            in_flight = jobs_in_flight(service.admin_url, queue)
            if in_flight is None or in_flight > 0:
                break
            time.sleep(0.05)
        old_pid, new_pid = self.services.kill_and_restart(name)
        jobs = "unknown" if in_flight is None else str(in_flight)
        return f"pid {old_pid} killed (in-flight jobs: {jobs}), restarted as pid {new_pid}"

    def restart_rabbitmq(self) -> str:
        infra.stop_rabbitmq_app()
        # A run that is stopping cuts the hold short, and the application is
        # started again either way.
        self.stopping.wait(self.broker_down_seconds)
        seconds = infra.start_rabbitmq_app(self.ready_timeout)
        return (
            f"stop_app, {self.broker_down_seconds:.0f} s down,"
            f" start_app; check_running passed {seconds:.1f} s after start_app"
        )

    def restart_postgresql(self) -> str:
        seconds = infra.restart_postgresql(self.ready_timeout)
        return f"pg_ctlcluster restart; pg_isready passed {seconds:.1f} s after it returned"
