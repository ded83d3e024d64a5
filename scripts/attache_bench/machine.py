"""Facts about this machine and its processes, read from /proc.

CPU times are the kernel's utime + stime, in seconds. Memory figures are
the kernel's VmRSS (resident now) and VmHWM (the peak resident set since
the process started), in bytes.
"""

import os
import platform
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Machine:
    cores: int
    memory_bytes: int
    cpu_model: str
    os_name: str
    kernel: str


def describe_machine() -> Machine:
    """Return the core count, memory, CPU model and OS of this machine."""
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    os_name = platform.system()
    try:
        os_name = platform.freedesktop_os_release()["PRETTY_NAME"]
    except (OSError, KeyError):
        pass
    return Machine(
        cores=os.cpu_count() or 0,
        memory_bytes=_meminfo_bytes("MemTotal"),
        cpu_model=cpu_model,
        os_name=os_name,
        kernel=platform.release(),
    )


def load_average() -> tuple[float, float, float]:
    """Return the 1, 5 and 15 minute load averages, as `uptime` prints them."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def _meminfo_bytes(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"/proc/meminfo has no {field} line")


def _stat_fields(pid: int) -> list[str]:
    """Return the fields of /proc/PID/stat after the command name, starting at the state."""
    # The command name is in brackets and may contain spaces.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds that process pid has used so far."""
    fields = _stat_fields(pid)
    # utime and stime are fields 14 and 15 of proc(5), 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def memory(pid: int) -> dict[str, int]:
    """Return VmRSS and VmHWM of process pid, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


def cpu_seconds_by_command(commands: tuple[str, ...]) -> dict[str, float]:
    """Return the CPU seconds of all live processes per command name (such as postgres).

    A process that exits between two readings takes its CPU time with it,
    so a difference of two readings can undercount.
    """
    totals = dict.fromkeys(commands, 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "comm").read_text().strip()
            if command in totals:
                totals[command] += cpu_seconds(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return totals


def machine_cpu_ticks() -> tuple[int, int]:
    """Return the busy and total CPU ticks of all cores since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal; guest time is in user.
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total
