"""BENCHMARKS.md: every figure of one run beside its same-run reference."""

import datetime
from dataclasses import dataclass
from pathlib import Path

from .credentials import CredentialRun
from .machine import Machine
from .memory import MemoryRun
from .fleet import HISTORY_ATTACHMENTS
from .phases import LatencyRun, References, Round, ThroughputRun, median_round
from .settings import Settings, size_text

MIB = 1024**2
THROUGHPUT_TARGET = 0.25  # of the broker's publish-plus-consume rate
STREAM_MEMORY_TARGET = 64 * MIB  # peak above idle while streaming


@dataclass
class Results:
    machine: Machine
    command: str
    smoke: bool
    # The phases that ran, in run order. The page shows only their figures.
    phases: tuple[str, ...]
    started: datetime.datetime
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    revision: str
    # The directory and build time of the measured binaries.
    binaries: str
    settings: Settings
    fleet_settings: dict[str, str]
    references: References | None
    throughput: list[ThroughputRun]
    # Broker references with the 1 fetch-worker run after each; the first
    # round's run is throughput[0].
    rounds: list[Round]
    latency: LatencyRun | None
    memory: list[MemoryRun]
    credentials: list[CredentialRun]


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.2f}" for value in values)


def met(condition: bool) -> str:
    return "met" if condition else "**not met**"


def render(results: Results) -> str:
    """Return the whole page as Markdown, with a section per phase that ran."""
    sections = [_header(results), _summary(results)]
    if results.throughput:
        sections.append(_throughput(results))
    if results.references:
        sections.append(_references(results))
    if results.latency:
        sections.append(_latency(results))
    if results.memory:
        sections.append(_memory(results))
    if results.throughput:
        sections.append(_profile(results))
    if results.credentials:
        sections.append(_credentials(results))
    return "\n".join(sections)


SMOKE_NOTE = """
**A smoke run:** its sizes only prove that the harness works, and its figures
mean nothing. `make bench` writes the real page.
"""

CLOUD_NOTE = """
The cloud phases (credentials and the S3 memory scenario) run their own
fleet, with a database and queue prefix of their own, beside moto,
gcp-storage-emulator and Azurite with the Python fronts of `make demo` on
the same cores. Beyond the settings above, their binaries get the
ATTACHE_AWS_, ATTACHE_GCP_ and ATTACHE_AZURE_ settings that point at those
stand-ins, and their fetch-worker the ATTACHE_FETCH_CONCURRENCY that each
section states.
"""


def _header(results: Results) -> str:
    m = results.machine
    settings = ", ".join(f"`{k}={v}`" for k, v in results.fleet_settings.items())
    smoke = SMOKE_NOTE if results.smoke else ""
    cloud = CLOUD_NOTE if set(results.phases) & {"credentials", "memory-s3"} else ""
    return f"""# Benchmarks
{smoke}
Written by `scripts/bench.py`, run as `{results.command}`. Every figure sits
beside a reference measured in the same run on the same machine, as a ratio
to it and with the raw numbers. So a run on a busy or slow machine still compares the
fleet with the parts it depends on.

| | |
| --- | --- |
| date | {results.started:%Y-%m-%d %H:%M} UTC |
| command | `{results.command}` |
| phases | {", ".join(results.phases)} |
| revision | {results.revision} |
| binaries | {results.binaries} |
| machine | {m.cores} cores (`nproc`), {m.memory_bytes / 1024**3:.1f} GiB memory, {m.cpu_model} |
| OS | {m.os_name}, Linux {m.kernel} |
| load average (1 / 5 / 15 min) | {_load(results.load_before)} at the start, {_load(results.load_after)} at the end |
| fleet settings | {settings} |

Everything runs on this one machine: PostgreSQL, RabbitMQ, the fleet, the
source (`attache-bench source`, Rust), the callback receiver
(`attache-bench receiver`, Rust, verifies every signature), the submitter
and wrk. They share the cores, so a reference measured alone has the
machine to itself while the fleet shares it with the source, the receiver
and the submitter. Other work on the machine shows in the load average.
{cloud}"""


def _summary(results: Results) -> str:
    rows = [
        *_throughput_rows(results),
        *_latency_rows(results),
        *_memory_rows(results),
        *_scaling_rows(results),
        *_credential_rows(results),
    ]
    lines = [
        "## Summary",
        "",
        "| figure | result | same-run reference | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines) + "\n"


Row = tuple[str, str, str, str, str]


def _throughput_rows(results: Results) -> list[Row]:
    refs = results.references
    if not results.throughput or refs is None or not results.rounds:
        return []
    one = results.throughput[0]
    median = median_round(results.rounds)
    broker_rate = median.broker["rate"]
    target_met = met(median.ratio >= THROUGHPUT_TARGET)
    return [
        (
            "throughput, 1 fetch-worker (attachments/s), the median of"
            f" {len(results.rounds)} rounds",
            f"{median.run.steady_rate:,.0f}",
            f"broker publish-with-confirms plus consume, same round: {broker_rate:,.0f} msg/s",
            f"{median.ratio:.3f}",
            f"≥ {THROUGHPUT_TARGET}: {target_met}",
        ),
        (
            "throughput, 1 fetch-worker, against the source",
            f"{one.steady_rate:,.0f}",
            f"source GET with wrk: {refs.source_rate.rate:,.0f} req/s",
            f"{one.steady_rate / refs.source_rate.rate:.3f}",
            "",
        ),
    ]


def _latency_rows(results: Results) -> list[Row]:
    lat = results.latency
    if lat is None or results.references is None:
        return []
    get, post = results.references.source_latency, results.references.callback_latency
    rows = []
    for name, fleet_ms, get_ms, post_ms in (
        ("p50", lat.p50_ms, get.p50_ms, post.p50_ms),
        ("p95", lat.p95_ms, get.p95_ms, post.p95_ms),
        ("p99", lat.p99_ms, get.p99_ms, post.p99_ms),
    ):
        rows.append(
            (
                f"latency {name} at {lat.rate:g} tasks/s (ms)",
                f"{fleet_ms:,.1f}",
                f"raw GET {get_ms:.2f} + raw POST {post_ms:.2f} = {get_ms + post_ms:.2f} ms",
                f"{fleet_ms / (get_ms + post_ms):,.0f}",
                "",
            )
        )
    return rows


def _memory_rows(results: Results) -> list[Row]:
    rows = []
    for run in results.memory:
        above = run.peak_rss - run.idle_rss
        target = ""
        if run.one_stream:
            target = f"< 64 MiB above idle: {met(above < STREAM_MEMORY_TARGET)}"
        rows.append(
            (
                f"fetch-worker peak RSS, {run.scenario}",
                f"{run.peak_rss / MIB:.1f} MiB ({above / MIB:+.1f} MiB)",
                f"idle RSS {run.idle_rss / MIB:.1f} MiB",
                f"{run.peak_rss / run.idle_rss:.2f}",
                target,
            )
        )
    return rows


def _scaling_rows(results: Results) -> list[Row]:
    if not results.throughput:
        return []
    one = results.throughput[0]
    return [
        (
            f"throughput, {run.fetch_workers} fetch-workers (attachments/s)",
            f"{run.steady_rate:,.0f}",
            f"1 fetch-worker: {one.steady_rate:,.0f}",
            f"{run.steady_rate / one.steady_rate:.2f}",
            "",
        )
        for run in results.throughput[1:]
    ]


def _throughput(results: Results) -> str:
    s = results.settings
    lines = [
        "## Throughput and scaling",
        "",
        f"Each run starts from a database that holds {s.tasks:,} finished tasks of"
        f" {HISTORY_ATTACHMENTS} attachments, analyzed, as a running service's does: after"
        " empty tables are analyzed, PostgreSQL keeps sequential-scan plans until autovacuum"
        " analyzes again, which it does after a minute, later than a run ends. It then"
        f" submits {s.tasks:,} tasks of {s.attachments_per_task} attachments of"
        f" {s.attachment_bytes:,} bytes ({s.attachments:,} attachments) with"
        f" {s.submit_concurrency} requests in flight, as fast as the API accepts them, and"
        " waits for every verified callback. The steady rate counts the callbacks between"
        " the 10th and the 90th percentile of arrival times, leaving out the ramp-up and the"
        " drain; the overall rate runs from the first submission to the last callback."
        " CPU seconds are utime + stime from /proc/PID/stat, summed over the"
        " processes of each binary, per 1,000 attachments; the share is of all the CPU"
        " time the machine was busy during the run.",
        "",
        "| fetch-workers | steady att/s | overall att/s | seconds | submitted tasks/s"
        " | API p50 / p99 ms | producer CPU s | fetch-worker CPU s | callback-worker CPU s"
        " | machine busy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in results.throughput:
        lines.append(f"| {run.fetch_workers} | {_run_cells(run, results.machine.cores)} |")
    lines += _rounds(results)
    return "\n".join(lines) + "\n"


def _run_cells(run: ThroughputRun, cores: int) -> str:
    """Return the cells of a run's row, from the steady rate to the machine's busy share."""
    per_thousand = {k: v * 1000 / run.attachments for k, v in run.cpu_seconds.items()}
    busy_seconds = run.machine_busy * cores * run.seconds
    cpu = []
    for kind in ("producer", "fetch-worker", "callback-worker"):
        share = run.cpu_seconds[kind] / busy_seconds if busy_seconds else 0.0
        cpu.append(f"{per_thousand[kind]:.2f} ({share:.0%})")
    return (
        f"{run.steady_rate:,.0f} | {run.overall_rate:,.0f}"
        f" | {run.seconds:.1f} | {run.submit['rate']:,.0f}"
        f" | {run.submit['api_latency_p50_ms']:.1f} / {run.submit['api_latency_p99_ms']:.1f}"
        f" | {' | '.join(cpu)} | {run.machine_busy:.0%}"
    )


def _rounds(results: Results) -> list[str]:
    """Return the table of the rounds behind the target's ratio."""
    if not results.rounds:
        return []
    median = median_round(results.rounds)
    lines = [
        "",
        f"The target's ratio is the median of {len(results.rounds)} rounds. A round measures"
        " the broker reference and then runs 1 fetch-worker as above, so each ratio compares"
        " two figures taken about a minute apart. The first round is the first run above;"
        " the scaling runs follow it.",
        "",
        "| round | broker msg/s | ratio | steady att/s | overall att/s | seconds"
        " | submitted tasks/s | API p50 / p99 ms | producer CPU s | fetch-worker CPU s"
        " | callback-worker CPU s | machine busy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for number, measured in enumerate(results.rounds, start=1):
        label = f"{number} (median)" if measured is median else f"{number}"
        lines.append(
            f"| {label} | {measured.broker['rate']:,.0f} | {measured.ratio:.3f}"
            f" | {_run_cells(measured.run, results.machine.cores)} |"
        )
    return lines


def _references(results: Results) -> str:
    refs = results.references
    broker = refs.broker
    s = results.settings
    rows = [
        (
            "broker: publish with confirms in batches of 100 plus consume with prefetch 100,"
            f" individual acks, one quorum queue, {broker['messages']:,} persistent messages"
            f" of {broker['message_bytes']} bytes (`attache-bench broker`)",
            f"{broker['rate']:,.0f} msg/s end to end; publishing alone finished at"
            f" {broker['publish_rate']:,.0f} msg/s",
        ),
        (
            f"source GET of {s.attachment_bytes:,} bytes, wrk 2 threads, 64 connections,"
            f" {refs.source_rate.seconds:.0f} s",
            f"{refs.source_rate.rate:,.0f} req/s ({refs.source_rate.requests:,} requests)",
        ),
        (
            f"local store: {refs.store_writes.files} files of"
            f" {size_text(refs.store_writes.size)}, each a new directory"
            " synced into its parent, a file without a name (`O_TMPFILE`), fsync, a link to"
            " the final name and a sync of the directory, as the fetch-worker writes them"
            " (Python, one at a time)",
            f"p50 {refs.store_writes.p50_ms:.2f} ms, p99 {refs.store_writes.p99_ms:.2f} ms",
        ),
        (
            f"source GET latency of {size_text(s.attachment_bytes)}, sequential requests on one"
            " connection with reqwest, the fleet's HTTP client (`attache-bench probe`)",
            _percentiles(refs.source_latency),
        ),
        (
            "callback POST latency, a signed body of a 5-attachment callback that the"
            " receiver verifies, sequential requests as above",
            _percentiles(refs.callback_latency),
        ),
    ]
    lines = ["## References", "", "| reference | result |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def _percentiles(result) -> str:
    return (
        f"p50 {result.p50_ms:.2f} ms, p95 {result.p95_ms:.2f} ms, p99 {result.p99_ms:.2f} ms"
        f" ({result.requests:,} requests)"
    )


def _latency(results: Results) -> str:
    lat = results.latency
    return f"""## Latency

{lat.tasks:,} tasks of {results.settings.attachments_per_task} attachments submitted on a fixed
schedule of {lat.rate:g} tasks/s to a fleet with one fetch-worker, after the
same {results.settings.tasks:,} finished tasks of history as the throughput runs. A task's latency
runs from just before its POST /v1/tasks to the arrival of its verified
callback, both read from the wall clock of this machine:
p50 {lat.p50_ms:.1f} ms, p95 {lat.p95_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms, max {lat.max_ms:.1f} ms.
"""


def _memory(results: Results) -> str:
    lines = [
        "## Memory",
        "",
        "Each scenario starts a new fetch-worker with"
        f" `ATTACHE_FETCH_CONCURRENCY={results.settings.parallel_fetches}`, reads its VmRSS"
        " two seconds after it is ready (idle), runs the scenario and then reads VmHWM, the"
        " peak resident set"
        " of the process's life, from /proc/PID/status. For the parallel scenario the"
        " worker is stopped with SIGSTOP while the tasks are submitted and published,"
        " so every job reaches it at once; the highest `attache_fetches_in_flight` seen"
        " is listed. The S3 scenario reads one object from moto, uploaded in parts before the"
        " fleet starts, with a team's role assumed through the STS front, so its seconds"
        " include the AssumeRole call and the time moto, a Python server, takes to serve"
        " the object.",
        "",
        "| scenario | idle RSS MiB | peak RSS MiB | above idle MiB | seconds | MiB/s"
        " | most fetches in flight |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in results.memory:
        lines.append(
            f"| {run.scenario} | {run.idle_rss / MIB:.1f} | {run.peak_rss / MIB:.1f}"
            f" | {(run.peak_rss - run.idle_rss) / MIB:.1f} | {run.seconds:.1f}"
            f" | {run.total_bytes / MIB / run.seconds:,.0f} | {run.max_in_flight or '1'} |"
        )
    return "\n".join(lines) + "\n"


def _profile(results: Results) -> str:
    run = results.throughput[0]
    refs = results.references
    p = run.profile
    if p is None:
        return ""
    per_attachment = {
        "commits": p.commits / run.attachments,
        "wal_syncs": p.wal_syncs / run.attachments,
        "wal_records": p.wal_records / run.attachments,
        "outbox": p.outbox_inserts / run.attachments,
    }
    per_thousand = {
        name: seconds * 1000 / run.attachments
        for name, seconds in (
            ("postgres", p.postgres_cpu),
            ("rabbitmq", p.rabbitmq_cpu),
            ("source", p.source_cpu),
            ("receiver", p.receiver_cpu),
        )
    }
    little = p.fetch_in_flight_mean / run.overall_rate if run.overall_rate else 0
    lines = [
        "## Where the time goes (the 1 fetch-worker run)",
        "",
        "Read around the same run as the first throughput row. PostgreSQL's WAL"
        " counters and the CPU of all `postgres` and `beam.smp` processes are"
        " server-wide, so other users of the servers add to them.",
        "",
        "| measure | value |",
        "| --- | --- |",
        "| transactions committed in the fleet's database per attachment (`xact_commit`, which also"
        f" counts read-only statements and statement preparations) | {per_attachment['commits']:.2f} |",
        f"| WAL syncs per attachment (server-wide) | {per_attachment['wal_syncs']:.2f} |",
        f"| WAL records per attachment (server-wide) | {per_attachment['wal_records']:.1f} |",
        f"| outbox rows inserted per attachment | {per_attachment['outbox']:.2f} |",
        f"| PostgreSQL CPU s per 1,000 attachments | {per_thousand['postgres']:.2f} |",
        f"| RabbitMQ CPU s per 1,000 attachments | {per_thousand['rabbitmq']:.2f} |",
        f"| source / receiver CPU s per 1,000 attachments | {per_thousand['source']:.2f} / {per_thousand['receiver']:.2f} |",
        f"| mean fetch (GET + hash + store) from `attache_fetch_duration_seconds` | {p.fetch_mean_seconds * 1000:.1f} ms |",
        f"| same-run references: raw GET p50 + store write p50 | {refs.source_latency.p50_ms:.2f} + {refs.store_writes.p50_ms:.2f} ms |",
        f"| mean fetches in flight (`attache_fetches_in_flight`), sampled each second | {p.fetch_in_flight_mean:.1f} |",
        f"| mean fetch time by Little's law (in flight / overall rate) | {little * 1000:.1f} ms |",
        f"| mean callback POST from `attache_callback_duration_seconds` | {p.callback_mean_seconds * 1000:.1f} ms |",
        f"| mean callback jobs in flight, sampled each second | {p.callback_in_flight_mean:.1f} |",
        "",
        f"`attache-bench pg-sample` read `pg_stat_activity` every {p.pg_sample['interval_ms']} ms"
        f" ({p.pg_sample['samples']:,} samples). Average sessions per state, wait event and"
        " statement, largest first (idle sessions wait in the pools):",
        "",
        "| sessions | state | wait event | statement |",
        "| --- | --- | --- | --- |",
    ]
    for row in p.pg_sample["rows"][:15]:
        query = row["query"].replace("|", "\\|")
        statement = f"`{query}`" if query else ""
        lines.append(
            f"| {row['average_sessions']:.2f} | {row['state']} | {row['wait'] or '-'}"
            f" | {statement} |"
        )
    return "\n".join(lines) + "\n"


def _credential_rows(results: Results) -> list[Row]:
    rows = []
    for run in results.credentials:
        rows.append(
            (
                f"{run.provider} credential requests: {run.credential_service}, {run.teams}"
                f" teams, {run.attachments:,} attachments from a cold fetch-worker",
                f"{run.requests:,}",
                f"object reads at the storage endpoint: {run.object_reads:,}",
                f"{run.requests / run.object_reads:.4f}" if run.object_reads else "",
                f"= {run.target}, one per team: {met(run.requests == run.target)}",
            )
        )
    return rows


def _credentials(results: Results) -> str:
    s = results.settings
    first = results.credentials[0]
    lines = [
        "## Credentials",
        "",
        f"For each delegated provider, {first.teams} teams each have delegated access of"
        " their own: an AWS role that trusts us with the team's External ID, a service"
        " account that ours may impersonate, or an Azure tenant that consented. Each"
        " team's role, service account or tenant may read only the team's own bucket or"
        " container, so a credential used for another team fails the fetch."
        f" {first.attachments:,} attachments of {size_text(s.credential_bytes)}, in tasks of"
        f" {s.attachments_per_task} given to the teams in turn, are all queued before a new"
        " fetch-worker starts with"
        f" `ATTACHE_FETCH_CONCURRENCY={first.fetch_concurrency}`, so its first fetches start"
        " together with nothing cached.",
        "",
        "Credential requests are counted where they arrive, from just before the"
        " fetch-worker starts until it stops after the last callback, so the producer's"
        " requests during the activations are left out: every AssumeRole at the STS front"
        " before moto (rejected ones included), every generateAccessToken at the mock IAM"
        " Credentials, and every token request at the mock token endpoint. The fetch-worker's"
        " own counts come from its `attache_credential_requests_total` and"
        " `attache_credential_cache_total`, read just before it stopped.",
        "",
        "The same-run reference is the object reads that reached the storage endpoint: GETs"
        " of the teams' buckets that moto served with 200 (from its request log), downloads"
        " that the Cloud Storage front forwarded to gcp-storage-emulator and that returned"
        " 200, and reads with a tenant's token that Azurite served with 200 through the Blob"
        " Storage front. Every attachment must succeed with the SHA-256 of its object, or"
        " the run fails. The seconds run from the fetch-worker's start to the last callback."
        " They include the time of the stand-ins, which are Python servers (moto,"
        " gcp-storage-emulator and the fronts) and Node (Azurite) on the same machine, and"
        " the fetch-worker's CPU seconds show its own share.",
        "",
        "| provider | credential service | requests at the endpoint | target | max for one"
        " team | fetch-worker's own count | cache misses / hits | attachments succeeded"
        " | seconds | fetch-worker CPU s | object reads at the storage endpoint |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in results.credentials:
        lines.append(
            f"| {run.provider} | {run.credential_service} | {run.requests:,}"
            f" | {run.target} ({met(run.requests == run.target)}) | {run.max_per_team}"
            f" | {run.worker_requests:,} | {run.cache_misses:,} / {run.cache_hits:,}"
            f" | {run.attachments:,} | {run.seconds:.1f} | {run.worker_cpu_seconds:.1f}"
            f" | {run.object_reads:,} |"
        )
    return "\n".join(lines) + "\n"


def write(results: Results, path: Path) -> None:
    path.write_text(render(results), encoding="utf-8")
