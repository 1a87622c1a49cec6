"""The process readings the project needs about tritonserver and its Python stubs, on top of psutil.

psutil reads the processes; what is left here is the project's view of them: tritonserver's live (not zombie)
children named `tritonserver` / `stub:<model instance>`, a process group's members, CPU time summed by name and the
owner of a listening port. Used by `router-serve` (process-group shutdown), the stub watchdog, the soak and the
benchmarks (memory and CPU per process) and the tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil


def _alive(proc: psutil.Process) -> bool:
    """Still there and not a zombie (a zombie has no argv, memory or CPU left to read)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def live_children(pid: int) -> list[psutil.Process]:
    """The direct children of `pid` that are not zombies (empty when `pid` is gone)."""
    try:
        return [child for child in psutil.Process(pid).children() if _alive(child)]
    except psutil.Error:
        return []


def group_members(pgid: int) -> list[int]:
    """PIDs of the live processes in process group `pgid` (psutil has no process-group query)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and _alive(proc):
                members.append(proc.pid)
        except OSError:  # gone meanwhile
            continue
    return members


def cmdline(proc: psutil.Process | int) -> list[str]:
    """A process's argv; empty when it is gone or a zombie."""
    try:
        return (proc if isinstance(proc, psutil.Process) else psutil.Process(proc)).cmdline()
    except psutil.Error:
        return []


def server_processes(server_pid: int) -> dict[int, str]:
    """tritonserver and its live stub processes: pid -> `tritonserver` or `stub:<model instance>`."""
    names = {server_pid: "tritonserver"}
    for child in live_children(server_pid):
        argv = cmdline(child)
        if argv:
            names[child.pid] = f"stub:{argv[8]}" if len(argv) > 8 else f"stub:{Path(argv[0]).name}"
    return names


def cpu_seconds(pids: dict[int, str]) -> dict[str, float]:
    """User + system CPU seconds used so far, summed by name (processes that have exited are left out)."""
    totals: dict[str, float] = {}
    for pid, name in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        totals[name] = totals.get(name, 0.0) + times.user + times.system
    return totals


def pid_listening_on(port: int) -> int | None:
    """The pid owning the LISTEN socket of a TCP port (to find a server given only its URL)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None
