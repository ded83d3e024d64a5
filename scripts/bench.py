"""Measure the Attaché fleet beside the parts it depends on, and write BENCHMARKS.md.

The run measures references first: the source's GET rate with wrk, the raw
GET and POST latencies with `attache-bench probe`, a local-store write, and
RabbitMQ's publish-plus-consume rate with `attache-bench broker`. Then it
measures the fleet: throughput with 1, 2 and 4 fetch-workers, latency at a
fixed task rate, and a fetch-worker's peak memory while it streams one large
attachment and while it runs many fetches at once. BENCHMARKS.md at the
repository root gets every figure as a ratio to its same-run reference.

`make bench` runs the full sizes. `make bench-smoke` is a tiny run, under a
minute, that only proves the harness works and writes
.run/bench-smoke/BENCHMARKS.md. PostgreSQL and RabbitMQ must run on
127.0.0.1 (`make services`), the release binaries must be built
(`cargo build --release --bins`) and wrk installed (`apt-get install -y
wrk`). The run drops and recreates the attache_bench database and deletes
the attache_bench queues. Logs stay in .run/bench.
"""

import argparse
import datetime
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from attache_bench import fleet, machine, memory, phases, report
from attache_bench.context import Context
from attache_bench.settings import FULL, SMOKE
from attache_bench.tools import Helper, require_wrk
from attache_demo import DemoError, infra
from attache_demo.services import Services, create_team, stop_leftovers

REPO = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes that prove the harness works in under a minute; the figures mean nothing",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the page (default: BENCHMARKS.md, or"
        " .run/bench-smoke/BENCHMARKS.md with --smoke)",
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
    args = parser.parse_args(argv)
    args.run_dir = REPO / ".run" / ("bench-smoke" if args.smoke else "bench")
    if args.output is None:
        args.output = args.run_dir / "BENCHMARKS.md" if args.smoke else REPO / "BENCHMARKS.md"
    if "MAKELEVEL" in os.environ:
        args.command = "make bench-smoke" if args.smoke else "make bench"
    else:
        args.command = shlex.join(["python3", "scripts/bench.py", *(argv or sys.argv[1:])])
    return args


def prepare(run_dir: Path, database: infra.Database, broker: infra.Broker) -> None:
    """Check the tools and services, and clear what an earlier run left."""
    require_wrk()
    if not infra.postgresql_running() or not infra.rabbitmq_running():
        raise DemoError(
            "PostgreSQL (pg_isready -h 127.0.0.1) or RabbitMQ (rabbitmq-diagnostics"
            " check_running) is not running: run `make services`"
        )
    for line in stop_leftovers(run_dir):
        say(line)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    database.recreate()
    if deleted := broker.delete_queues():
        say(f"deleted {deleted} {fleet.QUEUE_PREFIX} queues left by an earlier run")


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


def run_bench(args: argparse.Namespace, services: Services, helpers: list[Helper]) -> report.Results:
    settings = SMOKE if args.smoke else FULL
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = machine.load_average()
    database = infra.Database(fleet.DATABASE)
    prepare(args.run_dir, database, infra.Broker(fleet.QUEUE_PREFIX))
    services.run("migrate", "attache-producer", "migrate")
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
        database, team, source, receiver, tool_env,
    )

    say("references: wrk against the source and the receiver, then the broker")
    references = phases.measure_references(ctx)
    throughput = []
    for workers in settings.worker_counts:
        say(f"throughput with {workers} fetch-worker(s): {settings.attachments:,} attachments")
        run = phases.measure_throughput(ctx, workers, profile=workers == 1)
        say(f"  {run.steady_rate:,.0f} attachments/s steady, {run.seconds:.1f} s in all")
        throughput.append(run)
    say(f"latency at {settings.latency_rate:g} tasks/s for {settings.latency_seconds:g} s")
    latency = phases.measure_latency(ctx)
    say("memory: one large stream, then parallel fetches")
    memory_runs = [memory.measure_stream(ctx), memory.measure_parallel(ctx)]
    fleet.clear_data(database, ctx.store_dir)

    return report.Results(
        machine=machine.describe_machine(),
        command=args.command,
        smoke=args.smoke,
        started=started,
        load_before=load_before,
        load_after=machine.load_average(),
        revision=args.revision or revision(),
        binaries=describe_binaries(args.target_dir),
        settings=settings,
        fleet_settings={
            key: value
            for key, value in services.env.items()
            if key.startswith("ATTACHE_") and key not in ("ATTACHE_DATABASE_URL", "ATTACHE_STORE_DIR")
        } | {"RUST_LOG": services.env["RUST_LOG"]},
        references=references,
        throughput=throughput,
        latency=latency,
        memory=memory_runs,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the binaries and helpers are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    database = infra.Database(fleet.DATABASE)
    services = Services(
        args.target_dir, args.run_dir, fleet.fleet_env(database, args.run_dir / "attachments")
    )
    helpers: list[Helper] = []
    try:
        results = run_bench(args, services, helpers)
    except DemoError as error:
        print(f"bench: FAILED: {error}", file=sys.stderr)
        print(f"\nbench: last log lines (all logs are in {args.run_dir}):", file=sys.stderr)
        print(services.log_tails(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        say("interrupted, so the binaries were stopped")
        return 130
    finally:
        for warning in services.stop_all():
            say(f"warning: {warning}")
        for helper in helpers:
            helper.stop()
    report.write(results, args.output)
    say(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
