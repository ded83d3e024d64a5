"""The sizes of one benchmark run: the full run behind `make bench` and the
smoke run behind `make bench-smoke`, which only proves that the harness
works and whose figures mean nothing."""

from dataclasses import dataclass, replace

KIB = 1024
MIB = 1024**2
GIB = 1024**3


def size_text(size: int) -> str:
    """Write a byte count in the largest binary unit that divides it, such as 16 MiB."""
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


@dataclass(frozen=True)
class Settings:
    # Throughput and scaling: tasks per run, all submitted at once by
    # `submit_concurrency` requests in flight. The steady rate counts the
    # middle 80% of callbacks, so 25,000 attachments leave 20,000 in it.
    tasks: int = 5000
    attachments_per_task: int = 5
    attachment_bytes: int = 4096
    submit_concurrency: int = 8
    worker_counts: tuple[int, ...] = (1, 2, 4)
    # Rounds of a broker reference followed by a 1 fetch-worker run. The
    # target's ratio is the median round's, because the broker's rate alone
    # ranged from 10,511 to 16,887 msg/s across the runs of one hour here.
    throughput_rounds: int = 3
    # Latency: tasks per second on a fixed schedule, for this many seconds.
    latency_rate: float = 50
    latency_seconds: float = 30
    # Memory: one streamed attachment, then parallel fetches at once.
    stream_bytes: int = 2 * GIB
    parallel_fetches: int = 256
    parallel_bytes: int = 16 * MIB
    # Memory over S3: one object of this size, uploaded to moto in parts.
    s3_stream_bytes: int = 2 * GIB
    # Credentials, per provider: this many teams with delegated access, and
    # this many attachments in all, spread over the teams, which one cold
    # fetch-worker fetches with `credential_fetches` in flight.
    credential_teams: int = 10
    credential_attachments: int = 10_000
    credential_bytes: int = 4 * KIB
    credential_fetches: int = 256
    # References: wrk's duration for the source's rate and for each latency probe.
    wrk_seconds: float = 10
    probe_seconds: float = 5
    # Time allowed for the last callback of a phase.
    phase_timeout: float = 900

    @property
    def attachments(self) -> int:
        return self.tasks * self.attachments_per_task


FULL = Settings()
SMOKE = replace(
    FULL,
    tasks=40,
    worker_counts=(1, 2),
    throughput_rounds=2,
    latency_rate=10,
    latency_seconds=2,
    stream_bytes=64 * MIB,
    parallel_fetches=16,
    parallel_bytes=1 * MIB,
    s3_stream_bytes=32 * MIB,
    credential_teams=2,
    credential_attachments=100,
    wrk_seconds=1,
    probe_seconds=1,
    phase_timeout=60,
)
