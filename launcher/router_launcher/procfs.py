"""The few /proc readings the project needs about tritonserver and its Python stubs (Linux only, stdlib only).

Used by `router-serve` (process-group shutdown), the stub watchdog, the soak and the benchmarks (memory and CPU
per process) and the tests.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcStat:
    """The /proc/<pid>/stat fields the project reads."""

    pid: int
    state: str  # R, S, D, Z, ...
    ppid: int
    pgid: int
    cpu_s: float  # user + system CPU time of the process (all its threads), seconds

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def stat(pid: int | str) -> ProcStat | None:
    """The stat of one process, or None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # fields from `state` on; the command name may contain spaces
    return ProcStat(
        pid=int(pid),
        state=fields[0],
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        cpu_s=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
    )


def all_stats() -> list[ProcStat]:
    """The stat of every process (those that vanish while being read are left out)."""
    stats = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            found = stat(entry.name)
            if found is not None:
                stats.append(found)
    return stats


def children(pid: int, include_zombies: bool = False) -> list[int]:
    """PIDs of the direct children of `pid`."""
    return [s.pid for s in all_stats() if s.ppid == pid and (include_zombies or not s.zombie)]


def group_members(pgid: int, include_zombies: bool = False) -> list[int]:
    """PIDs in process group `pgid`."""
    return [s.pid for s in all_stats() if s.pgid == pgid and (include_zombies or not s.zombie)]


def cmdline(pid: int) -> list[str]:
    """A process's argv (empty when it is gone or a kernel thread)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def command_name(pid: int) -> str | None:
    """/proc/<pid>/comm (the first 15 bytes of the executable's name)."""
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return None


def rss_bytes(pid: int) -> int | None:
    """VmRSS of a live process (0 for a zombie), or None when it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return 0


def server_processes(server_pid: int) -> dict[int, str]:
    """tritonserver and its live stub processes: pid -> `tritonserver` or `stub:<model instance>`."""
    names = {server_pid: "tritonserver"}
    for pid in children(server_pid):
        argv = cmdline(pid)
        if argv:
            names[pid] = f"stub:{argv[8]}" if len(argv) > 8 else f"stub:{Path(argv[0]).name}"
    return names


def cpu_seconds(pids: dict[int, str]) -> dict[str, float]:
    """CPU seconds used so far, summed by name (processes that have exited are left out)."""
    totals: dict[str, float] = {}
    for pid, name in pids.items():
        found = stat(pid)
        if found is not None:
            totals[name] = totals.get(name, 0.0) + found.cpu_s
    return totals


def pid_listening_on(port: int) -> int | None:
    """The pid owning the LISTEN socket of a TCP port (to find a server given only its URL)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(fields[9])
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                link = str(fd.readlink())
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(entry.name)
    return None
