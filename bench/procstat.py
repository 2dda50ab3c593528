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


def cpu_times() -> list[int]:
    """The machine's CPU time so far, by kind, in ticks (/proc/stat's first
    line): user, nice, system, idle, iowait, irq, softirq, steal."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def steal_share(before: list[int], after: list[int]) -> float:
    """The share of the machine's CPU time between two `cpu_times()` that the
    hypervisor gave to other guests (0 to 1). This machine is a shared VM:
    its benchmarks ran up to 3x slower on some days and within the hour, and
    this is where it shows (up to 42% of a whole load run on 2026-12-07)."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent)
    return spent[7] / total if total else 0.0


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (/proc/PID/status, VmRSS, in KiB)."""
    return _status(pid, "VmRSS") * 1024
