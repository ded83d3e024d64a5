"""The load tools of the benchmark: the attache-bench helpers and wrk.

`Helper` runs one long-lived `attache-bench` server (source or receiver)
and reads the URL it prints. It writes the pid to RUN_DIR/NAME.pid like the
binaries, so `stop_leftovers` in the next run stops a helper that this
process left behind. `run_report` runs a one-shot subcommand and returns its
JSON report, `run_probe` times sequential requests with `attache-bench
probe`, `Sampler` runs `pg-sample` in the background, and `run_wrk` runs wrk
with wrk_report.lua and returns its JSON line.
"""

import json
import select
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attache_demo import DemoError
from attache_demo.services import tail

WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
STARTUP_TIMEOUT_SECONDS = 10
STOP_GRACE_SECONDS = 5


class Helper:
    """One running `attache-bench` server on 127.0.0.1."""

    def __init__(self, binary: Path, run_dir: Path, name: str, args: list[str], env: dict) -> None:
        self.name = name
        self.log_path = run_dir / f"{name}.log"
        self.pid_path = run_dir / f"{name}.pid"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(binary), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self.process.pid}\n")
        self.url = self._read_url()

    def _read_url(self) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], STARTUP_TIMEOUT_SECONDS)
        line = self.process.stdout.readline() if ready else b""
        try:
            return json.loads(line)["url"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            self.stop()
            raise DemoError(
                f"attache-bench {self.name} printed no URL within {STARTUP_TIMEOUT_SECONDS} s."
                f" Last lines of {self.log_path}:\n{tail(self.log_path, 20)}"
            ) from error

    def stop(self) -> None:
        """Send SIGTERM, then SIGKILL if the helper is still up after a grace period."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.pid_path.unlink(missing_ok=True)


def run_report(binary: Path, args: list[str], env: dict, timeout: float) -> dict[str, Any]:
    """Run a one-shot `attache-bench` subcommand and return the JSON report it prints last."""
    try:
        result = subprocess.run(
            [str(binary), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise DemoError(f"attache-bench {args[0]} timed out after {timeout:.0f} s") from error
    if result.returncode != 0:
        raise DemoError(
            f"attache-bench {args[0]} exited with status {result.returncode}:"
            f" {result.stderr.decode(errors='replace').strip()}"
        )
    lines = result.stdout.decode().strip().splitlines()
    if not lines:
        raise DemoError(f"attache-bench {args[0]} printed no report")
    return json.loads(lines[-1])


class Sampler:
    """`attache-bench pg-sample` running in the background until `finish`."""

    def __init__(
        self, binary: Path, database_url: str, database: str, env: dict, interval_ms: int
    ) -> None:
        self.process = subprocess.Popen(
            [
                str(binary),
                "pg-sample",
                f"--database-url={database_url}",
                f"--database={database}",
                f"--interval-ms={interval_ms}",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def finish(self) -> dict[str, Any]:
        """Stop sampling and return the report."""
        self.process.send_signal(signal.SIGTERM)
        stdout, stderr = self.process.communicate(timeout=STOP_GRACE_SECONDS * 2)
        if self.process.returncode != 0:
            raise DemoError(f"attache-bench pg-sample failed: {stderr.decode(errors='replace')}")
        return json.loads(stdout.decode().strip().splitlines()[-1])

    def kill(self) -> None:
        """Stop the sampler without a report, if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@dataclass(frozen=True)
class ProbeResult:
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def run_probe(
    binary: Path,
    url: str,
    seconds: float,
    env: dict,
    post_body: bytes | None = None,
    post_headers: dict[str, str] | None = None,
    work_dir: Path | None = None,
) -> ProbeResult:
    """Time sequential requests to url with `attache-bench probe`.

    Each request is a GET, or a POST of post_body with post_headers when given.
    """
    args = ["probe", f"--url={url}", f"--seconds={seconds}"]
    if post_body is not None:
        assert work_dir is not None, "a POST body needs a directory for its file"
        body_path = work_dir / "probe-body.json"
        body_path.write_bytes(post_body)
        args.append(f"--body-file={body_path}")
        args += [f"--header={name}: {value}" for name, value in (post_headers or {}).items()]
    report = run_report(binary, args, env, seconds + 60)
    return ProbeResult(**report)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    # Connection, read, write and timeout errors.
    errors: int
    # Responses with a status of 400 or above.
    status_errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def require_wrk() -> str:
    """Return the path of wrk, or raise DemoError saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise DemoError("wrk is not installed: run `apt-get install -y wrk` (Debian package wrk)")
    return path


def run_wrk(url: str, threads: int, connections: int, seconds: float) -> WrkResult:
    """Run wrk's GET load against url and return its results."""
    command = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    result = subprocess.run(command, capture_output=True, timeout=seconds + 60, check=False)
    output = result.stdout.decode(errors="replace")
    line = next((l for l in output.splitlines() if l.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise DemoError(
            f"`{' '.join(command)}` failed with status {result.returncode}:"
            f" {result.stderr.decode(errors='replace').strip() or output.strip()}"
        )
    report = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        errors=report["errors"],
        status_errors=report["status_errors"],
    )
