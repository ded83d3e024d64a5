"""Servers that the demo runs as subprocesses on 127.0.0.1: moto, gcp-storage-emulator and Azurite.

`ServerProcess.start` runs `python -m MODULE ...` with the demo's own
interpreter, or another program such as Azurite, on a free loopback port,
in a session of its own. It writes the pid to RUN_DIR/STEM.pid while the
server runs, so scripts/demo.sh can stop it if the demo dies first. `stop`
ends it by that pid.
"""

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import DemoError
from .api import answers_ok
from .services import free_port, tail

# moto and gcp-storage-emulator responded within a second of their start
# in trial runs. The rest is margin for a loaded machine.
START_TIMEOUT_SECONDS = 60
# Another process may take the free port before the server binds it, so a
# failed start is tried again on a new port.
START_ATTEMPTS = 3
STOP_GRACE_SECONDS = 10


@dataclass(frozen=True)
class ServerCommand:
    """How to start one kind of server and tell that it is ready."""

    # The server's name in messages, such as "moto".
    name: str
    # The name of its log and pid files in the run directory, without suffix.
    file_stem: str
    # The arguments after `python`, given the port to listen on.
    arguments: Callable[[int], list[str]]
    # A path that returns status 200 once the server is ready, unless
    # is_ready accepts other responses.
    health_path: str
    # The server's environment, or None for the demo's own.
    env: dict[str, str] | None = None
    # The program that takes the arguments, or None for the demo's own Python.
    program: str | None = None
    # Tells, given the health path's URL, whether the server is ready.
    is_ready: Callable[[str], bool] = answers_ok
    # How to install the server, or None for the Python packages of
    # scripts/requirements.txt.
    install_hint: str | None = None


class ServerProcess:
    """A server process on 127.0.0.1, with its log and pid file in the run directory."""

    def __init__(
        self,
        command: ServerCommand,
        process: subprocess.Popen[bytes],
        url: str,
        log_path: Path,
        pid_path: Path,
    ) -> None:
        self.command = command
        self.process = process
        self.url = url
        self.log_path = log_path
        self.pid_path = pid_path

    @classmethod
    def start(cls, run_dir: Path, command: ServerCommand) -> "ServerProcess":
        """Start the server and wait until its health path responds.

        Raises DemoError with the server's log tail when no attempt succeeds.
        """
        failures = []
        for _ in range(START_ATTEMPTS):
            server = cls._spawn(run_dir, command)
            failure = server._wait_until_responding()
            if failure is None:
                return server
            server.stop()
            failures.append(failure)
        log_path = run_dir / f"{command.file_stem}.log"
        default_hint = (
            f"{command.name} comes from scripts/requirements.txt: run scripts/python-env.sh."
        )
        raise DemoError(
            f"{command.name} failed to start {START_ATTEMPTS} times: {'; '.join(failures)}."
            f" Last lines of {log_path}:\n{tail(log_path, 30)}"
            f"{command.install_hint or default_hint}"
        )

    @classmethod
    def _spawn(cls, run_dir: Path, command: ServerCommand) -> "ServerProcess":
        port = free_port()
        log_path = run_dir / f"{command.file_stem}.log"
        pid_path = run_dir / f"{command.file_stem}.pid"
        with log_path.open("ab") as log:
            # A session of its own keeps a Ctrl-C in the terminal from
            # reaching the server directly, as for the binaries.
            process = subprocess.Popen(
                [command.program or sys.executable, *command.arguments(port)],
                env=command.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid_path.write_text(f"{process.pid}\n")
        return cls(command, process, f"http://127.0.0.1:{port}", log_path, pid_path)

    def _wait_until_responding(self) -> str | None:
        """Poll the health path until it responds and return None, else return why it did not."""
        name = self.command.name
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"{name} at {self.url} exited with status {self.process.returncode}"
            if self.command.is_ready(f"{self.url}{self.command.health_path}"):
                return None
            time.sleep(0.2)
        return f"{name} at {self.url} did not respond within {START_TIMEOUT_SECONDS} s"

    def stop(self) -> str | None:
        """Stop the server with SIGTERM, or with SIGKILL after a grace period.

        Returns a warning when SIGKILL was needed.
        """
        warning = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                warning = (
                    f"{self.command.name} ignored SIGTERM for {STOP_GRACE_SECONDS} s"
                    " and was killed"
                )
        self.pid_path.unlink(missing_ok=True)
        return warning
