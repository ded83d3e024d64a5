"""The Attaché binaries as subprocesses of the demo, each with its own log file.

`Services` starts the long-running binaries, polls their /readyz, and stops
them with SIGTERM, then SIGKILL after a grace period. It writes each pid to
RUN_DIR/NAME.pid while the process runs, so scripts/demo.sh, or
`stop_leftovers` in the next run, can still stop it if this Python process
dies first. `kill_and_restart` plays a crash: SIGKILL to one binary by pid,
then the same command again.
"""

import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from . import DemoError
from .api import answers_ok


# Ports are picked below Linux's default ephemeral range (32768-60999), which
# the kernel draws the source ports of outgoing connections from. A port
# from that range, free when checked, can become the source port of one of
# the fleet's many connections before the binary binds it.
PORT_RANGE = (20000, 32767)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when this function checked it."""
    # NOTE: another listener may take the port before the binary binds it. The
    # binary then fails to start and the demo stops with its log tail.
    for _ in range(100):
        port = random.randint(*PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise DemoError(f"no free port on 127.0.0.1 in {PORT_RANGE[0]}-{PORT_RANGE[1]}")


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
    # The command line and the variables added to the shared environment,
    # to start the binary again after a kill.
    command: list[str]
    extra_env: dict[str, str]


class Services:
    """Starts, watches and stops the binaries from one target directory."""

    def __init__(self, target_dir: Path, run_dir: Path, env: dict[str, str]) -> None:
        self.target_dir = target_dir
        self.run_dir = run_dir
        self.env = env
        self.running: list[Service] = []
        self.log_paths: list[Path] = []
        # Held while a binary is replaced, so `exited` never reports a
        # binary that `kill_and_restart` killed on purpose.
        self.lock = threading.Lock()

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
        command = [self.binary(binary), *args]
        with self.lock:
            service = self._spawn(name, command, env)
            self.running.append(service)
        return service

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> Service:
        log_path = self.run_dir / f"{name}.log"
        pid_path = self.run_dir / f"{name}.pid"
        if log_path not in self.log_paths:
            self.log_paths.append(log_path)
        with log_path.open("ab") as log:
            # A new session keeps a Ctrl-C in the terminal from reaching the
            # binaries directly, so only `stop_all` signals them.
            process = subprocess.Popen(
                command,
                env={**self.env, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid_path.write_text(f"{process.pid}\n")
        admin_url = f"http://{env['ATTACHE_ADMIN_ADDR']}"
        return Service(name, process, log_path, pid_path, admin_url, command, env)

    def kill_and_restart(self, name: str) -> tuple[int, int]:
        """Send SIGKILL to the running binary called name, start it again, return both pids.

        The new process gets the same command, environment, log file and admin
        address. Raises DemoError when no binary of that name is running.
        """
        with self.lock:
            old = next((s for s in self.running if s.name == name), None)
            if old is None or old.process.poll() is not None:
                raise DemoError(f"cannot kill {name}: it is not running")
            old.process.kill()
            old.process.wait()
            with old.log_path.open("a", encoding="utf-8") as log:
                log.write(f"\n===== chaos: SIGKILL to pid {old.process.pid}, restarting =====\n")
            new = self._spawn(name, old.command, old.extra_env)
            self.running[self.running.index(old)] = new
        return old.process.pid, new.process.pid

    def find(self, name: str) -> Service | None:
        """Return the running binary called name, if any."""
        with self.lock:
            return next((s for s in self.running if s.name == name), None)

    def exited(self) -> list[str]:
        """Return a message for each started binary that has exited on its own."""
        with self.lock:
            return [
                f"{service.name} (pid {service.process.pid}) exited with status"
                f" {service.process.returncode}"
                for service in self.running
                if service.process.poll() is not None
            ]

    def wait_ready(self, timeout: float) -> None:
        """Poll each binary's /readyz until it returns status 200 or timeout seconds pass."""
        deadline = time.monotonic() + timeout
        with self.lock:
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
        with self.lock:
            return self._stop_all(grace)

    def _stop_all(self, grace: float) -> list[str]:
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


def create_team(services: Services, name: str) -> dict[str, str]:
    """Create a team with `attache-producer team create` and return its ids and secrets."""
    output = services.run(
        "team-create", "attache-producer", "team", "create", "--name", name, "--json"
    )
    lines = [line for line in output.splitlines() if line.strip()]
    try:
        team = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as error:
        # The output is not shown because it may contain the API key.
        raise DemoError(
            f"`attache-producer team create --json` printed no JSON line: {error}"
        ) from error
    missing = [key for key in ("team_id", "api_key", "signing_secret") if key not in team]
    if missing:
        raise DemoError(f"`attache-producer team create --json` output lacks {', '.join(missing)}")
    return team


def start_binaries(
    services: Services, cloud_env: dict[str, str] | None = None, api_addr: str | None = None
) -> str:
    """Start the API and both workers, and return the API's base URL.

    cloud_env contains the ATTACHE_AWS_*, ATTACHE_GCP_* and ATTACHE_AZURE_*
    settings, which only the producer and the fetch-worker read. The API
    listens on api_addr, or on a free loopback port when it is None.
    """
    cloud_env = cloud_env or {}
    api_addr = api_addr or f"127.0.0.1:{free_port()}"
    services.start(
        "producer",
        "attache-producer",
        "serve",
        env={
            **cloud_env,
            "ATTACHE_API_ADDR": api_addr,
            "ATTACHE_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
        },
    )
    services.start(
        "fetch-worker",
        "attache-fetch-worker",
        env={**cloud_env, "ATTACHE_ADMIN_ADDR": f"127.0.0.1:{free_port()}"},
    )
    services.start(
        "callback-worker",
        "attache-callback-worker",
        env={"ATTACHE_ADMIN_ADDR": f"127.0.0.1:{free_port()}"},
    )
    return f"http://{api_addr}"


def stop_leftovers(run_dir: Path, grace: float = 10.0) -> list[str]:
    """Stop the binaries that an earlier run left running, found by their pid files.

    Only a process whose command line names an Attaché binary is signalled,
    because the pid may have been reused since the file was written. Returns
    one line per binary stopped.
    """
    stopped = []
    for pid_path in sorted(run_dir.glob("*.pid")):
        try:
            pid = int(pid_path.read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            command = b""
        if b"attache-" in command:
            _terminate(pid, grace)
            stopped.append(f"stopped {pid_path.stem} (pid {pid}) left by an earlier run")
        pid_path.unlink(missing_ok=True)
    return stopped


def _terminate(pid: int, grace: float) -> None:
    """Send SIGTERM to pid, then SIGKILL if it still runs after grace seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        # A zombie has exited; its parent, an earlier run, is gone.
        if state == "Z":
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
