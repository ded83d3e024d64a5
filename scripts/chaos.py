"""Check that Attaché loses nothing while its workers crash and its services restart.

The chaos test submits N tasks of three attachments each, served on
127.0.0.1 by sources that are plain, slow, flaky (5xx a few times, then 200)
or missing (404). While the tasks flow, it kills the fetch-worker three
times and the callback-worker twice with SIGKILL, starting each again at
once, and restarts RabbitMQ and PostgreSQL once each. The callback receiver
verifies every signature, responds with 503 to the first request of a share
of webhook ids, and waits a moment before each response, so that a killed
callback-worker has deliveries in flight.

At the end every attachment must be final with the outcome its source was
set up for, every task must have exactly one delivered callback carrying
that outcome, and nothing may be left pending, queued or due in the outbox.
It prints figures and exits 0 only when all of that holds.

`make chaos` runs 1,000 tasks and `make chaos-small` (part of `make test`)
runs 60. PostgreSQL and RabbitMQ must run on 127.0.0.1 (`make services`),
and the binaries must be built (`cargo build --bins`). The run drops and
recreates the attache_chaos database and deletes the attache_chaos queues.
Restarting PostgreSQL and RabbitMQ also interrupts anything else using them
on this machine. Logs, the callbacks received and the attachment store stay
in .run/chaos for inspection.
"""

import argparse
import hashlib
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from attache_demo import DemoError, infra
from attache_demo.api import ApiClient
from attache_demo.checks import (
    DatabaseState,
    InFlight,
    SubmittedTask,
    Verdict,
    check_invariants,
    check_tasks,
    wait_until_idle,
)
from attache_demo.faults import DEFAULT_SCHEDULE, FaultInjector, FaultRecord
from attache_demo.servers import Callback, CallbackReceiver
from attache_demo.services import Services, create_team, start_binaries, stop_leftovers
from attache_demo.sources import Shares, SourceKind, SourcePlan, SourceServer

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / ".run" / "chaos"
STORE_DIR = RUN_DIR / "attachments"
DATABASE = "attache_chaos"
QUEUE_PREFIX = "attache_chaos"
ATTACHMENTS_PER_TASK = 3
# Short delays and deadlines, so retries and restarts play out in seconds.
FAST_SETTINGS = {
    "ATTACHE_FETCH_RETRY_DELAY": "200ms",
    "ATTACHE_CALLBACK_RETRY_DELAY": "200ms",
    "ATTACHE_RELAY_POLL_INTERVAL": "200ms",
    "ATTACHE_SHUTDOWN_DEADLINE": "5s",
    "ATTACHE_FETCH_MAX_ATTEMPTS": "6",
    "ATTACHE_CALLBACK_MAX_ATTEMPTS": "8",
}
# Readiness is expected within seconds of a start or a restart: the workers
# reconnect with back-off of at most 5 s. The rest is margin for a loaded
# 2-core CI machine.
READY_TIMEOUT_SECONDS = 60
SUBMIT_TIMEOUT_SECONDS = 120
# Time for the last rows and acks to settle after the last callback.
IDLE_TIMEOUT_SECONDS = 60


def say(message: str) -> None:
    print(f"chaos: {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks to submit (default: 1000)")
    parser.add_argument(
        "--rate",
        type=float,
        default=20,
        help="tasks submitted per second; the faults are spread over the"
        " submission time, tasks divided by rate (default: 20)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="seconds to wait for the last callbacks after the last submission (default: 300)",
    )

    parser.add_argument("--seed", type=int, default=1, help="seed of the source plan (default: 1)")
    parser.add_argument(
        "--slow-share", type=float, default=0.10, help="share of slow sources (default: 0.10)"
    )
    parser.add_argument(
        "--flaky-share", type=float, default=0.15, help="share of flaky sources (default: 0.15)"
    )
    parser.add_argument(
        "--missing-share", type=float, default=0.05, help="share of missing sources (default: 0.05)"
    )

    parser.add_argument(
        "--reject-share",
        type=float,
        default=0.25,
        help="share of webhook ids whose first request gets 503 (default: 0.25)",
    )
    parser.add_argument(
        "--respond-after",
        type=float,
        default=0.3,
        help="seconds the callback receiver waits before it responds, so that a killed"
        " callback-worker has deliveries in flight (default: 0.3)",
    )
    parser.add_argument(
        "--broker-down-seconds",
        type=float,
        default=2,
        help="seconds between rabbitmqctl stop_app and start_app (default: 2)",
    )
    parser.add_argument(
        "--target-dir",
        type=Path,
        default=REPO / "target" / "debug",
        help="directory of the built binaries (default: target/debug)",
    )

    args = parser.parse_args(argv)
    if args.tasks < 1 or args.rate <= 0:
        parser.error("--tasks must be at least 1 and --rate above 0")
    if not 0 <= args.reject_share <= 1:
        parser.error("--reject-share must be between 0 and 1")
    try:
        args.shares = Shares(args.slow_share, args.flaky_share, args.missing_share)
    except ValueError as error:
        parser.error(str(error))
    return args


def binary_env(database: infra.Database) -> dict[str, str]:
    """Return the environment shared by every binary of the run."""
    # Other ATTACHE_ variables of the caller's shell are dropped, so every
    # run tests the same settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ATTACHE_") or k in ("ATTACHE_AMQP_URL", "ATTACHE_LOG_FORMAT")
    }
    env.update(FAST_SETTINGS)
    env.update(
        ATTACHE_DATABASE_URL=database.url,
        ATTACHE_QUEUE_PREFIX=QUEUE_PREFIX,
        ATTACHE_STORE_DIR=str(STORE_DIR),
        RUST_LOG=env.get("RUST_LOG", "info"),
        # Loopback sources and receiver, reached from two loopback source
        # addresses that need no set-up on Linux.
        ATTACHE_EGRESS_ALLOW_CIDRS="127.0.0.0/8",
        ATTACHE_EGRESS_MEMBERS="local:127.0.0.11,local:127.0.0.12",
    )
    return env


def rejects_first(share: float) -> Callable[[str], bool]:
    """Return a predicate that selects about `share` of webhook ids, the same on every call."""

    def selected(webhook_id: str) -> bool:
        digest = hashlib.sha256(webhook_id.encode()).digest()
        return int.from_bytes(digest[:4], "big") < share * 2**32

    return selected


@dataclass
class Run:
    """The record of one chaos run: what it submitted and injected, for the checks and figures."""

    plan: SourcePlan
    submitted: dict[int, SubmittedTask] = field(default_factory=dict)
    submit_retries: int = 0
    first_submitted_at: float = 0.0
    last_callback_at: float = 0.0
    faults: list[FaultRecord] = field(default_factory=list)
    faults_scheduled: int = 0
    exited: list[str] = field(default_factory=list)
    in_flight: InFlight | None = None


def prepare(database: infra.Database, broker: infra.Broker) -> None:
    """Check the services, clear what an earlier run left, and recreate the database."""
    if not infra.postgresql_running() or not infra.rabbitmq_running():
        raise DemoError(
            "PostgreSQL (pg_isready -h 127.0.0.1) or RabbitMQ (rabbitmq-diagnostics"
            " check_running) is not running: run `make services`"
        )
    for line in stop_leftovers(RUN_DIR):
        say(line)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    STORE_DIR.mkdir(parents=True)
    database.recreate()
    if deleted := broker.delete_queues():
        say(f"deleted {deleted} {QUEUE_PREFIX} queues left by an earlier run")


def submit_tasks(
    run: Run,
    client: ApiClient,
    services: Services,
    sources_url: str,
    callbacks_url: str,
    rate: float,
) -> None:
    """Submit every planned task at `rate` per second, retrying through outages."""
    started = time.monotonic()
    run.first_submitted_at = started
    for index, sources in enumerate(run.plan.tasks):
        time.sleep(max(0.0, started + index / rate - time.monotonic()))
        if exited := services.exited():
            run.exited = exited
            raise DemoError(f"stopped submitting: {'; '.join(exited)}")
        request = {
            "callback_url": f"{callbacks_url}/task-{index}",
            "attachments": [{"uri": f"{sources_url}{source.path}"} for source in sources],
            "metadata": {"chaos_index": index},
        }
        accepted, retries = client.submit_task_retrying(
            request, f"chaos-{index}", SUBMIT_TIMEOUT_SECONDS
        )
        run.submit_retries += retries
        attachment_ids = [a.get("attachment_id") for a in accepted.get("attachments", [])]
        run.submitted[index] = SubmittedTask(index, accepted["task_id"], attachment_ids)
        if (index + 1) % max(1, len(run.plan.tasks) // 10) == 0:
            say(f"submitted {index + 1} tasks")


def wait_for_callbacks(
    run: Run,
    receiver: CallbackReceiver,
    services: Services,
    injector: FaultInjector,
    timeout: float,
) -> None:
    """Wait until every task has an acknowledged callback and every fault is done.

    Stops early when a binary exits on its own, and after timeout seconds.
    """
    say(f"waiting up to {timeout:.0f} s for the callbacks of {len(run.submitted)} tasks")
    deadline = time.monotonic() + timeout
    paths = {task.callback_path for task in run.submitted.values()}
    while True:
        delivered = {c.path for c in receiver.received() if c.verified and c.acknowledged}
        if delivered >= paths and not run.last_callback_at:
            run.last_callback_at = time.monotonic()
        if delivered >= paths and not injector.is_alive():
            return
        if exited := services.exited():
            run.exited = exited
            say(f"a binary exited on its own: {'; '.join(exited)}")
            return
        if time.monotonic() > deadline:
            say(f"timed out with {len(paths - delivered)} tasks still without a callback")
            return
        receiver.wait_for_change(0.5)


def run_chaos(args: argparse.Namespace, run: Run, services: Services) -> Verdict:
    database = infra.Database(DATABASE)
    broker = infra.Broker(QUEUE_PREFIX)
    prepare(database, broker)
    with ExitStack() as stack:
        sources_log = stack.enter_context(open(RUN_DIR / "sources.log", "w", encoding="utf-8"))
        sources = SourceServer(run.plan, sources_log)
        sources.start()
        stack.callback(sources.stop)

        services.run("migrate", "attache-producer", "migrate")
        team = create_team(services, "chaos")
        receiver_log = stack.enter_context(
            open(RUN_DIR / "callback-receiver.log", "w", encoding="utf-8")
        )
        receiver = CallbackReceiver(
            team["signing_secret"],
            receiver_log,
            RUN_DIR / "callbacks.jsonl",
            reject_first=rejects_first(args.reject_share),
            respond_after=args.respond_after,
        )
        receiver.start()
        stack.callback(receiver.stop)

        api_url = start_binaries(services)
        services.wait_ready(READY_TIMEOUT_SECONDS)
        window = args.tasks / args.rate
        say(
            f"{args.tasks} tasks at {args.rate:g}/s over {window:.0f} s, with"
            f" {len(DEFAULT_SCHEDULE)} faults spread over that time"
        )

        injector = FaultInjector(
            services,
            DEFAULT_SCHEDULE,
            window,
            time.monotonic(),
            READY_TIMEOUT_SECONDS,
            args.broker_down_seconds,
        )
        run.faults_scheduled = len(DEFAULT_SCHEDULE)
        injector.start()
        stack.callback(stop_injector, injector)
        client = ApiClient(api_url, team["api_key"])
        submit_tasks(run, client, services, sources.url, f"{receiver.url}/callbacks", args.rate)
        wait_for_callbacks(run, receiver, services, injector, args.timeout)
        stop_injector(injector)
        run.faults = list(injector.records)

        run.in_flight = wait_until_idle(database, broker, IDLE_TIMEOUT_SECONDS)
        state = DatabaseState.load(database)
        callbacks = receiver.received()
        verdict = Verdict()
        check_tasks(run.plan.tasks, run.submitted, state, callbacks, STORE_DIR, verdict)
        check_invariants(
            args.tasks, run.submitted, state, run.in_flight, broker, callbacks, verdict
        )
        add_run_invariants(run, verdict)
        print_figures(run, state, callbacks, sources, verdict)
        return verdict


def stop_injector(injector: FaultInjector) -> None:
    """Stop the fault injector and wait for a fault under way, such as a restart, to finish."""
    injector.stop()
    injector.join(timeout=2 * READY_TIMEOUT_SECONDS)


def add_run_invariants(run: Run, verdict: Verdict) -> None:
    verdict.invariants.append(
        ("no binary exited on its own", "; ".join(run.exited) if run.exited else None)
    )
    problems = [record.problem for record in run.faults if record.problem]
    if len(run.faults) < run.faults_scheduled:
        problems.append(f"only {len(run.faults)} of {run.faults_scheduled} faults were injected")
    verdict.invariants.append(
        (
            "every fault was injected and the binaries were ready after it",
            "; ".join(problems) or None,
        )
    )


def print_figures(
    run: Run,
    state: DatabaseState,
    callbacks: list[Callback],
    sources: SourceServer,
    verdict: Verdict,
) -> None:
    """Print the figures of the run: work done, faults, deliveries and retries."""
    plan = run.plan
    kinds = ", ".join(f"{plan.count(kind)} {kind.value}" for kind in SourceKind)
    requests = sources.requests_by_kind()
    acknowledged = [c for c in callbacks if c.verified and c.acknowledged]
    rejected = sum(1 for c in callbacks if c.status == 503)
    fetch_retries = state.retries("attachments")
    callback_retries = state.retries("callbacks")
    kills = Counter(record.fault.value for record in run.faults)
    if run.last_callback_at:
        duration = f"{run.last_callback_at - run.first_submitted_at:.1f} s from first"
        duration += " submission to last callback"
    else:
        duration = (
            f"{time.monotonic() - run.first_submitted_at:.1f} s, and some callbacks never came"
        )
    temporaries = sum(1 for _ in STORE_DIR.rglob(".*.tmp"))

    print()
    say("faults injected:")
    for record in run.faults:
        ready = (
            "not ready"
            if record.ready_after_seconds is None
            else f"all ready {record.ready_after_seconds:.1f} s later"
        )
        print(f"  {record.at_seconds:6.1f} s  {record.fault.value}: {record.detail}; {ready}")
        if record.problem:
            print(f"           problem: {record.problem}")
    figures = [
        ("tasks", f"{len(plan.tasks)} planned, {len(run.submitted)} accepted"),
        ("attachments", f"{len(plan.by_path)} ({kinds})"),
        ("duration", duration),
        ("submission retries", f"{run.submit_retries} (503 or no response, same Idempotency-Key)"),
        ("source requests", ", ".join(f"{n} {kind}" for kind, n in sorted(requests.items()))),
        ("callbacks received", f"{len(callbacks)} requests, {rejected} answered 503 on purpose"),
        ("callbacks delivered", f"{len(acknowledged)} acknowledged with 2xx"),
        ("unique webhook ids", str(verdict.unique_callbacks)),
        ("duplicates", str(verdict.duplicate_callbacks)),
        ("kills and restarts", ", ".join(f"{n} x {name}" for name, n in kills.items()) or "none"),
        (
            "retries observed",
            f"{fetch_retries + callback_retries} ({fetch_retries} fetch,"
            f" {callback_retries} callback: attempts - 1 summed over the rows)",
        ),
        ("outbox rows due later", str(state.outbox_later)),
        ("unfinished uploads", f"{temporaries} temporary files left in the attachment store"),
    ]
    print()
    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        print(f"  {name.ljust(width)}  {value}")
    print()


def report(verdict: Verdict | None, problems: list[str], services: Services) -> int:
    """Print what failed, if anything, and the closing line, and return the exit status."""
    if verdict is not None:
        for index, task_problems in sorted(verdict.task_problems.items()):
            problems += [f"task {index}: {problem}" for problem in task_problems]
        problems += [f"{name}: {problem}" for name, problem in verdict.invariants if problem]
    if problems:
        listed = problems[:50]
        more = len(problems) - len(listed)
        print("chaos: FAILED", *listed, sep="\n  ", file=sys.stderr)
        if more:
            print(f"  ... and {more} more", file=sys.stderr)
        print(f"\nchaos: last log lines (all logs are in {RUN_DIR}):", file=sys.stderr)
        print(services.log_tails(), file=sys.stderr)
    # One check per task and one per invariant.
    passed = verdict.passed if verdict else 0
    failed = verdict.failed if verdict else 0
    if verdict is None or (problems and failed == 0):
        failed += 1
    print(f"chaos: {passed} passed, {failed} failed")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the binaries are stopped and the
    # services left running below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    run = Run(SourcePlan(args.tasks, ATTACHMENTS_PER_TASK, args.shares, args.seed))
    services = Services(args.target_dir, RUN_DIR, binary_env(infra.Database(DATABASE)))
    verdict = None
    problems: list[str] = []
    interrupted = False
    try:
        verdict = run_chaos(args, run, services)
    except DemoError as error:
        problems = [str(error)]
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for warning in services.stop_all():
            say(f"warning: {warning}")
        try:
            for action in infra.ensure_running():
                say(action)
        except DemoError as error:
            problems.append(f"could not leave the services running: {error}")

    if interrupted:
        say("interrupted, so the binaries were stopped")
        return 130
    return report(verdict, problems, services)


if __name__ == "__main__":
    sys.exit(main())
