"""CPU and memory of processes on this machine, from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _status(pid: int, field: str) -> int:
    """The first number of a field of /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def parent(pid: int) -> int:
    return _status(pid, "PPid")


def postgres_cpu_seconds(postmaster: int) -> float:
    """CPU of the Postgres server: the postmaster and every process it forked
    (backends, WAL writer, checkpointer) that is alive now."""
    total = cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if parent(int(entry.name)) == postmaster:
                total += cpu_seconds(int(entry.name))
        except (OSError, RuntimeError):
            continue  # gone meanwhile
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (/proc/PID/status, VmRSS, in KiB)."""
    return _status(pid, "VmRSS") * 1024
