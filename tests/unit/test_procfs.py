"""router_launcher.procfs against real processes: live children, process groups, stub names, CPU time, sockets.

psutil does the reading; these check the project's view on top of it (zombies left out, names, sums).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from router_launcher import procfs
from router_launcher.watchdog import find_server_pids, live_stubs

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts processes in new sessions (so each is its own process group) and kills their groups afterwards."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], **kwargs: object) -> subprocess.Popen:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)


def _missing_pid() -> int:
    """A pid no process can have (above the kernel's pid_max)."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_children_and_group_members_of_a_process_tree(spawn: Callable[..., subprocess.Popen]) -> None:
    shell = spawn(["sh", "-c", "sleep 30 & sleep 31 & wait"])
    kids = lambda: sorted(c.pid for c in procfs.live_children(shell.pid))  # noqa: E731
    assert _wait_for(lambda: len(kids()) == 2), kids()
    assert sorted(procfs.cmdline(k)[1] for k in kids()) == ["30", "31"]
    assert sorted(procfs.group_members(shell.pid)) == sorted([shell.pid, *kids()])
    assert shell.pid not in procfs.group_members(os.getpgrp())
    mine = {c.pid for c in procfs.live_children(os.getpid())}
    assert shell.pid in mine and not set(kids()) & mine  # grandchildren are not children
    os.killpg(shell.pid, signal.SIGKILL)
    shell.wait(timeout=10)
    assert _wait_for(lambda: procfs.group_members(shell.pid) == []), procfs.group_members(shell.pid)


def test_zombies_are_left_out(spawn: Callable[..., subprocess.Popen]) -> None:
    proc = spawn(["true"])  # exits at once; not waited for until the end, so it stays a zombie
    assert _wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE)
    assert proc.pid not in {c.pid for c in procfs.live_children(os.getpid())}
    assert procfs.group_members(proc.pid) == []
    assert procfs.cmdline(proc.pid) == []
    assert procfs.server_processes(proc.pid) == {proc.pid: "tritonserver"}
    assert proc.pid not in find_server_pids("true")


def test_a_process_that_does_not_exist() -> None:
    pid = _missing_pid()
    assert procfs.cmdline(pid) == []
    assert procfs.live_children(pid) == []
    assert procfs.group_members(pid) == []
    assert procfs.cpu_seconds({pid: "gone"}) == {}
    assert procfs.server_processes(pid) == {pid: "tritonserver"}


def test_cpu_seconds_are_summed_by_name() -> None:
    times = os.times()
    mine = procfs.cpu_seconds({os.getpid(): "me"})["me"]
    assert abs(mine - (times.user + times.system)) < 0.05
    # several pids under one name are summed; an exited pid is left out
    both = procfs.cpu_seconds({os.getpid(): "x", os.getppid(): "x", _missing_pid(): "y"})
    assert set(both) == {"x"}
    assert both["x"] >= mine


def test_server_processes_names_stubs_by_instance(spawn: Callable[..., subprocess.Popen]) -> None:
    code = "import subprocess, sys, time; [subprocess.Popen(a) for a in sys.argv[1:]]; time.sleep(30)"
    stub = [sys.executable, "-c", "import time; time.sleep(30)", "3", "4", "5", "6", "7", "tier_small_0_0"]
    server = spawn([sys.executable, "-c", code.replace("sys.argv[1:]", repr([stub, ["sleep", "30"]]))])
    assert _wait_for(lambda: len(procfs.server_processes(server.pid)) == 3), procfs.server_processes(server.pid)
    names = procfs.server_processes(server.pid)
    assert sorted(names.values()) == ["stub:sleep", "stub:tier_small_0_0", "tritonserver"]
    assert names[server.pid] == "tritonserver"
    assert set(names) == {server.pid, *(c.pid for c in procfs.live_children(server.pid))}


def test_watchdog_finds_stubs_and_servers(spawn: Callable[..., subprocess.Popen], tmp_path: Path) -> None:
    stub_binary = tmp_path / "triton_python_backend_stub"
    stub_binary.symlink_to(sys.executable)
    argv = [str(stub_binary), "-c", "import time; time.sleep(30)", "3", "4", "5", "6", "7"]
    script = (
        "import subprocess, sys, time; "
        f"[subprocess.Popen({argv!r} + [name]) for name in ('tier_small_0_0', 'tier_small_0_1', 'tier_small')]; "
        "time.sleep(30)"
    )
    server = spawn([sys.executable, "-c", script])
    assert _wait_for(lambda: len(procfs.live_children(server.pid)) == 3)
    stubs = live_stubs(server.pid)
    # the third stub is named after the model alone (a config auto-complete stub), not an instance
    assert sorted((s.instance, s.model) for s in stubs) == [
        ("tier_small_0_0", "tier_small"),
        ("tier_small_0_1", "tier_small"),
    ]
    assert {s.pid for s in stubs} < {c.pid for c in procfs.live_children(server.pid)}
    assert live_stubs(os.getpid()) == []
    # the kernel keeps 15 bytes of a process name; psutil completes it from argv[0]
    assert _wait_for(lambda: {s.pid for s in stubs} <= set(find_server_pids("triton_python_backend_stub")))
    assert server.pid not in find_server_pids("triton_python_backend_stub")


def test_pid_listening_on() -> None:
    with socket.socket() as listening, socket.socket() as bound_only:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        bound_only.bind(("127.0.0.1", 0))
        assert procfs.pid_listening_on(listening.getsockname()[1]) == os.getpid()
        assert procfs.pid_listening_on(bound_only.getsockname()[1]) is None
