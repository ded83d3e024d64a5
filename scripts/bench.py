"""Measure the Attaché fleet beside the parts it depends on, and write BENCHMARKS.md.

The run measures references first: the source's GET rate with wrk, the raw
GET and POST latencies with `attache-bench probe`, a local-store write, and
RabbitMQ's publish-plus-consume rate with `attache-bench broker`. Then it
measures the fleet: throughput with 1, 2 and 4 fetch-workers, then two more
rounds of the broker's rate followed by 1 fetch-worker. The median of the
three ratios is held against the target. Then come latency at a fixed task
rate, and a fetch-worker's peak memory while it streams one large
attachment and while it runs many fetches at once. Last come the cloud
phases against the stand-ins of `make demo`: the credential requests that a
cold fetch-worker makes for many teams of each delegated provider (S3, Cloud
Storage, Azure Blob), and the peak memory while it streams one large S3
object. BENCHMARKS.md at the repository root gets every figure as a ratio to
its same-run reference.

`make bench` runs the full sizes. `make bench-smoke` is a tiny run, about a
minute, that only proves the harness works and writes
.run/bench-smoke/BENCHMARKS.md. `--only PHASE,...` runs some phases alone
and writes RUN_DIR/BENCHMARKS.md, where RUN_DIR is .run/bench-only or
.run/bench-smoke-only. PostgreSQL and RabbitMQ must run on 127.0.0.1
(`make services`), the release binaries must be built (`cargo build
--release --bins`), wrk installed (`apt-get install -y wrk`), and the
Python packages of the stand-ins installed (`make python-env`, then run
this file with .venv/bin/python). The run drops and recreates its
databases and deletes their queues: attache_bench and attache_cloudbench,
or attache_smokebench and attache_cloudsmoke with --smoke (see
`fleet.run_names`). Logs stay in RUN_DIR.
"""

import argparse
import datetime
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from attache_bench import credentials, fleet, machine, memory, phases, report
from attache_bench.cloud import CloudContext, stop_leftover_servers
from attache_bench.context import Context
from attache_bench.credentials import CredentialRun
from attache_bench.memory import MemoryRun
from attache_bench.phases import LatencyRun, References, Round, ThroughputRun
from attache_bench.settings import FULL, SMOKE, Settings, size_text
from attache_bench.tools import Helper, require_wrk
from attache_demo import DemoError, infra
from attache_demo.services import Services, create_team, stop_leftovers

REPO = Path(__file__).resolve().parent.parent
# The phases in the order they run. The fleet phases share one fleet set-up,
# the cloud phases another.
FLEET_PHASES = ("references", "throughput", "latency", "memory")
CLOUD_PHASES = ("credentials", "memory-s3")
PHASES = FLEET_PHASES + CLOUD_PHASES


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes that prove the harness works in about a minute; the figures mean nothing",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the page (default: BENCHMARKS.md, or BENCHMARKS.md in the"
        " run directory with --smoke or --only)",
    )
    parser.add_argument(
        "--target-dir",
        type=Path,
        default=REPO / "target" / "release",
        help="directory of the release binaries (default: target/release)",
    )
    parser.add_argument(
        "--revision",
        help="the source revision the binaries were built from, as shown in the page"
        " (default: this work tree's commit, marked when it has uncommitted changes)",
    )
    parser.add_argument(
        "--keep-files",
        action="store_true",
        help="leave the fetched files of this run for the next run to move aside, instead of"
        " deleting them at the end: deleting tens of thousands of files slows file creation"
        " for minutes after, so back-to-back runs compare fairly only with this flag."
        " Delete .run/bench*-trash and .run/bench*/retired-attachments when done",
    )
    parser.add_argument(
        "--only",
        type=parse_phases,
        default=PHASES,
        metavar="PHASE,...",
        help=f"run only these phases, comma-separated, of {', '.join(PHASES)}"
        " (default: all); throughput and latency also run references, which their"
        " figures are compared with. Logs go to .run/bench-only or .run/bench-smoke-only",
    )
    args = parser.parse_args(argv)
    partial = args.only != PHASES
    run_name = "bench-smoke" if args.smoke else "bench"
    if partial:
        run_name += "-only"
    args.run_dir = REPO / ".run" / run_name
    if args.output is None:
        in_run_dir = args.smoke or partial
        args.output = args.run_dir / "BENCHMARKS.md" if in_run_dir else REPO / "BENCHMARKS.md"
    if "MAKELEVEL" in os.environ:
        args.command = "make bench-smoke" if args.smoke else "make bench"
    else:
        args.command = shlex.join([interpreter(), "scripts/bench.py", *(argv or sys.argv[1:])])
    return args


def interpreter() -> str:
    """Return this Python's path as run from the repository root, such as .venv/bin/python."""
    # normpath, unlike resolve, keeps the venv's own path rather than its symlink's target.
    path = Path(os.path.normpath(os.path.abspath(sys.executable)))
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def parse_phases(text: str) -> tuple[str, ...]:
    """Parse --only into phase names in run order, adding references where a phase needs it."""
    chosen = {name.strip() for name in text.split(",") if name.strip()}
    if not chosen:
        raise argparse.ArgumentTypeError(f"name at least one phase of {', '.join(PHASES)}")
    if unknown := sorted(chosen - set(PHASES)):
        raise argparse.ArgumentTypeError(
            f"unknown phase {', '.join(unknown)}: choose from {', '.join(PHASES)}"
        )
    if chosen & {"throughput", "latency"}:
        chosen.add("references")
    return tuple(name for name in PHASES if name in chosen)


def prepare(run_dir: Path, phases: tuple[str, ...]) -> None:
    """Check the tools and services, and stop and clear what an earlier run left."""
    if set(phases) & set(FLEET_PHASES):
        require_wrk()
    if not infra.postgresql_running() or not infra.rabbitmq_running():
        raise DemoError(
            "PostgreSQL (pg_isready -h 127.0.0.1) or RabbitMQ (rabbitmq-diagnostics"
            " check_running) is not running: run `make services`"
        )
    for line in stop_leftovers(run_dir) + stop_leftover_servers(run_dir / "cloud"):
        say(line)
    # Deleting many files now would slow the file creation that the runs
    # measure (see fleet.clear_data), so the last run's directory is moved
    # aside and deleted at the end.
    if run_dir.exists():
        run_dir.rename(trash_dir(run_dir) / f"{time.time_ns()}")
    (run_dir / "cloud").mkdir(parents=True)


def trash_dir(run_dir: Path) -> Path:
    """Return the directory of run directories and stores to delete at the end."""
    trash = run_dir.parent / f"{run_dir.name}-trash"
    trash.mkdir(parents=True, exist_ok=True)
    return trash


def recreate(database: infra.Database, services: Services) -> None:
    """Recreate the database, delete the queues of its prefix and run the migrations."""
    database.recreate()
    if deleted := infra.Broker(database.name).delete_queues():
        say(f"deleted {deleted} {database.name} queues left by an earlier run")
    services.run("migrate", "attache-producer", "migrate")


def revision() -> str:
    """Return the commit of the work tree, marked when it has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} with uncommitted changes" if git("status", "--porcelain") else commit


def describe_binaries(target_dir: Path) -> str:
    """Return the binaries' directory and the build time of the fetch-worker."""
    built = datetime.datetime.fromtimestamp(
        (target_dir / "attache-fetch-worker").stat().st_mtime, datetime.timezone.utc
    )
    try:
        displayed = target_dir.relative_to(REPO)
    except ValueError:
        displayed = target_dir
    return f"`{displayed}`, built {built:%Y-%m-%d %H:%M} UTC"


@dataclass
class Figures:
    """The figures of the phases run so far. A phase left out keeps its empty value."""

    references: References | None = None
    throughput: list[ThroughputRun] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    latency: LatencyRun | None = None
    memory: list[MemoryRun] = field(default_factory=list)
    credentials: list[CredentialRun] = field(default_factory=list)


def run_fleet_phases(
    args: argparse.Namespace,
    settings: Settings,
    services: Services,
    helpers: list[Helper],
    figures: Figures,
) -> None:
    """Run the chosen fleet phases against the source and receiver helpers."""
    database = infra.Database(services.env["ATTACHE_QUEUE_PREFIX"])
    recreate(database, services)
    team = create_team(services, "bench")

    bench_binary = args.target_dir / "attache-bench"
    tool_env = dict(services.env)
    source = Helper(bench_binary, args.run_dir, "source", ["source"], tool_env)
    helpers.append(source)
    receiver_env = {**tool_env, "ATTACHE_BENCH_SIGNING_SECRET": team["signing_secret"]}
    receiver = Helper(bench_binary, args.run_dir, "receiver", ["receiver"], receiver_env)
    helpers.append(receiver)
    ctx = Context(
        settings, bench_binary, args.run_dir, args.run_dir / "attachments", services,
        database, team, source, receiver, tool_env, queue_prefix=database.name,
    )

    if "references" in args.only:
        say("references: wrk against the source and the receiver, then the broker")
        figures.references = phases.measure_references(ctx)
    if "throughput" in args.only:
        for workers in settings.worker_counts:
            say(f"throughput with {workers} fetch-worker(s): {settings.attachments:,} attachments")
            run = phases.measure_throughput(ctx, workers, profile=workers == 1)
            say(f"  {run.steady_rate:,.0f} attachments/s steady, {run.seconds:.1f} s in all")
            figures.throughput.append(run)
        figures.rounds.append(phases.Round(figures.references.broker, figures.throughput[0]))
        for number in range(2, settings.throughput_rounds + 1):
            say(f"throughput round {number} of {settings.throughput_rounds}: the broker, then 1 fetch-worker")
            broker = phases.measure_broker(ctx)
            run = phases.measure_throughput(ctx, 1, profile=False)
            say(f"  {broker['rate']:,.0f} msg/s, then {run.steady_rate:,.0f} attachments/s steady")
            figures.rounds.append(phases.Round(broker, run))
    if "latency" in args.only:
        say(f"latency at {settings.latency_rate:g} tasks/s for {settings.latency_seconds:g} s")
        figures.latency = phases.measure_latency(ctx)
    if "memory" in args.only:
        say("memory: one large stream, then parallel fetches")
        figures.memory += [memory.measure_stream(ctx), memory.measure_parallel(ctx)]
    fleet.clear_data(database, ctx.store_dir)


def run_cloud_phases(
    args: argparse.Namespace, settings: Settings, services: Services, figures: Figures
) -> None:
    """Run the chosen cloud phases against the stand-ins of S3, Cloud Storage and Azure Blob."""
    database = infra.Database(services.env["ATTACHE_QUEUE_PREFIX"])
    recreate(database, services)
    ctx = CloudContext(
        settings, args.target_dir / "attache-bench", services.run_dir,
        services.run_dir / "attachments", services, database, dict(services.env),
    )
    if "credentials" in args.only:
        say(
            f"credentials: per provider, {settings.credential_teams} teams and"
            f" {settings.credential_attachments:,} attachments, fetched by a cold fetch-worker"
            f" with {settings.credential_fetches} in flight"
        )
        figures.credentials = credentials.measure_credentials(ctx)
        for run in figures.credentials:
            say(
                f"  {run.provider}: {run.requests} {run.credential_service} requests,"
                f" {run.attachments:,} attachments in {run.seconds:.1f} s"
            )
    if "memory-s3" in args.only:
        size = size_text(settings.s3_stream_bytes)
        say(f"memory over S3: uploading one {size} object to moto, then one stream of it")
        figures.memory.append(memory.measure_s3_stream(ctx))
    fleet.clear_data(database, ctx.store_dir)


def reported_settings(env: dict[str, str]) -> dict[str, str]:
    """Return the ATTACHE_ settings of the fleet that the page lists, and RUST_LOG."""
    return {
        key: value
        for key, value in env.items()
        if key.startswith("ATTACHE_") and key not in ("ATTACHE_DATABASE_URL", "ATTACHE_STORE_DIR")
    } | {"RUST_LOG": env["RUST_LOG"]}


def run_bench(
    args: argparse.Namespace, services: Services, cloud_services: Services, helpers: list[Helper]
) -> report.Results:
    settings = SMOKE if args.smoke else FULL
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = machine.load_average()
    prepare(args.run_dir, args.only)
    figures = Figures()
    runs_fleet = bool(set(args.only) & set(FLEET_PHASES))
    if runs_fleet:
        run_fleet_phases(args, settings, services, helpers, figures)
    if set(args.only) & set(CLOUD_PHASES):
        run_cloud_phases(args, settings, cloud_services, figures)

    return report.Results(
        machine=machine.describe_machine(),
        command=args.command,
        smoke=args.smoke,
        phases=args.only,
        started=started,
        load_before=load_before,
        load_after=machine.load_average(),
        revision=args.revision or revision(),
        binaries=describe_binaries(args.target_dir),
        settings=settings,
        fleet_settings=reported_settings((services if runs_fleet else cloud_services).env),
        references=figures.references,
        throughput=figures.throughput,
        rounds=figures.rounds,
        latency=figures.latency,
        memory=figures.memory,
        credentials=figures.credentials,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the binaries, helpers and stand-ins are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    fleet_name, cloud_name = fleet.run_names(args.smoke)
    all_services = []
    for name, run_dir in ((fleet_name, args.run_dir), (cloud_name, args.run_dir / "cloud")):
        env = fleet.fleet_env(infra.Database(name), run_dir / "attachments", queue_prefix=name)
        all_services.append(Services(args.target_dir, run_dir, env))
    services, cloud_services = all_services
    helpers: list[Helper] = []
    try:
        results = run_bench(args, services, cloud_services, helpers)
    except DemoError as error:
        print(f"bench: FAILED: {error}", file=sys.stderr)
        print(f"\nbench: last log lines (all logs are in {args.run_dir}):", file=sys.stderr)
        print(services.log_tails() + cloud_services.log_tails(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        say("interrupted, so the binaries, helpers and stand-ins were stopped")
        return 130
    finally:
        for warning in services.stop_all() + cloud_services.stop_all():
            say(f"warning: {warning}")
        for helper in helpers:
            helper.stop()
        if not args.keep_files:
            for service in all_services:
                store_dir = Path(service.env["ATTACHE_STORE_DIR"])
                shutil.rmtree(fleet.retired_stores(store_dir), ignore_errors=True)
            shutil.rmtree(trash_dir(args.run_dir), ignore_errors=True)
    report.write(results, args.output)
    say(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
