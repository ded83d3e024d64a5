"""The Attaché binaries as subprocesses of the demo, each with its own log file.

`Services` starts the long-running binaries, polls their /readyz, and stops
them with SIGTERM, then SIGKILL after a grace period. It writes each pid to
RUN_DIR/NAME.pid while the process runs, so scripts/demo.sh can still stop
it if this Python process dies first.
"""

import os
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from . import DemoError
from .api import answers_ok


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when this function checked it."""
    # NOTE: another process may take the port before the binary binds it. The
    # binary then fails to start and the demo stops with its log tail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tail(path: Path, lines: int) -> str:
    """Return the last lines of a text file, or a note when it is missing."""
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            return "".join(deque(file, maxlen=lines))
    except FileNotFoundError:
        return "(no log written)\n"


@dataclass
class Service:
    """One running binary and where to reach its admin endpoints."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    pid_path: Path
    admin_url: str


class Services:
    """Starts, watches and stops the binaries from one target directory."""

    def __init__(self, target_dir: Path, run_dir: Path, env: dict[str, str]) -> None:
        self.target_dir = target_dir
        self.run_dir = run_dir
        self.env = env
        self.running: list[Service] = []
        self.log_paths: list[Path] = []

    def binary(self, name: str) -> str:
        path = self.target_dir / name
        if not os.access(path, os.X_OK):
            raise DemoError(f"{path} is missing or not executable: run `cargo build --bins` first")
        return str(path)

    def run(self, log_name: str, binary: str, *args: str, timeout: float = 120) -> str:
        """Run a one-shot command to completion and return its standard output.

        Standard error goes to RUN_DIR/LOG_NAME.log. Standard output is only
        returned, never written to a log, because it may contain secrets.
        """
        log_path = self.run_dir / f"{log_name}.log"
        self.log_paths.append(log_path)
        command = [self.binary(binary), *args]
        with log_path.open("ab") as log:
            try:
                result = subprocess.run(
                    command,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise DemoError(
                    f"`{binary} {' '.join(args)}` timed out after {timeout} s"
                ) from error
        if result.returncode != 0:
            raise DemoError(
                f"`{binary} {' '.join(args)}` exited with status {result.returncode}."
                f" Last lines of {log_path}:\n{tail(log_path, 30)}"
            )
        return result.stdout.decode("utf-8", errors="replace")

    def start(self, name: str, binary: str, *args: str, env: dict[str, str]) -> Service:
        """Start a long-running binary. env must set its ATTACHE_ADMIN_ADDR."""
        log_path = self.run_dir / f"{name}.log"
        pid_path = self.run_dir / f"{name}.pid"
        self.log_paths.append(log_path)
        with log_path.open("ab") as log:
            # A new session keeps a Ctrl-C in the terminal from reaching the
            # binaries directly, so only `stop_all` signals them.
            process = subprocess.Popen(
                [self.binary(binary), *args],
                env={**self.env, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid_path.write_text(f"{process.pid}\n")
        service = Service(name, process, log_path, pid_path, f"http://{env['ATTACHE_ADMIN_ADDR']}")
        self.running.append(service)
        return service

    def exited(self) -> list[str]:
        """Return a message for each started binary that has exited on its own."""
        return [
            f"{service.name} exited with status {service.process.returncode}"
            for service in self.running
            if service.process.poll() is not None
        ]

    def wait_ready(self, timeout: float) -> None:
        """Poll each binary's /readyz until it returns status 200 or timeout seconds pass."""
        deadline = time.monotonic() + timeout
        waiting = list(self.running)
        while waiting:
            if problems := self.exited():
                raise DemoError("; ".join(problems))
            waiting = [s for s in waiting if not answers_ok(f"{s.admin_url}/readyz")]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{s.name} ({s.admin_url}/readyz)" for s in waiting)
                raise DemoError(f"not ready after {timeout:.0f} s: {names}")
            time.sleep(0.3)

    def stop_all(self, grace: float = 10.0) -> list[str]:
        """Send SIGTERM to every running binary, SIGKILL to those still up after grace seconds.

        Returns a warning for each binary that needed SIGKILL or exited with a
        status other than 0 after SIGTERM. A binary that had already exited is
        left to `exited`.
        """
        signalled = [service for service in self.running if service.process.poll() is None]
        for service in signalled:
            service.process.send_signal(signal.SIGTERM)

        warnings = []
        deadline = time.monotonic() + grace
        for service in signalled:
            try:
                code = service.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
                warnings.append(f"{service.name} ignored SIGTERM for {grace:.0f} s and was killed")
            else:
                if code != 0:
                    warnings.append(f"{service.name} exited with status {code} after SIGTERM")
        for service in self.running:
            service.pid_path.unlink(missing_ok=True)
        self.running = []
        return warnings

    def log_tails(self, lines: int = 40) -> str:
        """Return the last lines of every non-empty log written so far, each under its path."""
        return "".join(
            f"\n==> {path} <==\n{tail(path, lines)}"
            for path in self.log_paths
            if path.exists() and path.stat().st_size > 0
        )
