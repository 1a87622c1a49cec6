"""router_launcher.procfs against real processes: children, process groups, argv, memory, CPU time, zombies, sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from router_launcher import procfs
from router_launcher.watchdog import find_server_pids, live_stubs

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

MIB = 1024 * 1024


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


def test_stat_of_this_process() -> None:
    me = procfs.stat(os.getpid())
    assert me is not None
    assert me.pid == os.getpid()
    assert me.ppid == os.getppid()
    assert me.pgid == os.getpgrp()
    assert me.state == "R"  # it is running: it is reading its own stat
    assert not me.zombie


def test_sleeping_child_in_its_own_session(spawn: Callable[..., subprocess.Popen]) -> None:
    proc = spawn(["sleep", "30"])
    found = procfs.stat(proc.pid)
    assert found is not None
    assert (found.ppid, found.pgid) == (os.getpid(), proc.pid)
    assert _wait_for(lambda: procfs.stat(proc.pid).state == "S")
    assert proc.pid in procfs.children(os.getpid())
    assert procfs.children(proc.pid) == []
    assert procfs.group_members(proc.pid) == [proc.pid]
    assert proc.pid not in procfs.group_members(os.getpgrp())
    assert procfs.cmdline(proc.pid) == ["sleep", "30"]
    assert _wait_for(lambda: procfs.command_name(proc.pid) == "sleep"), procfs.command_name(proc.pid)
    rss = procfs.rss_bytes(proc.pid)
    assert rss is not None and 0 < rss < 64 * MIB
    assert procfs.cpu_seconds({proc.pid: "sleep"})["sleep"] < 0.5


def test_children_and_group_members_of_a_process_tree(spawn: Callable[..., subprocess.Popen]) -> None:
    shell = spawn(["sh", "-c", "sleep 30 & sleep 31 & wait"])
    assert _wait_for(lambda: len(procfs.children(shell.pid)) == 2), procfs.children(shell.pid)
    kids = procfs.children(shell.pid)
    assert sorted(procfs.cmdline(k)[1] for k in kids) == ["30", "31"]
    assert sorted(procfs.group_members(shell.pid)) == sorted([shell.pid, *kids])
    assert shell.pid in procfs.children(os.getpid())
    assert not set(kids) & set(procfs.children(os.getpid()))  # grandchildren are not children
    os.killpg(shell.pid, signal.SIGKILL)
    shell.wait(timeout=10)
    assert _wait_for(lambda: procfs.group_members(shell.pid) == []), procfs.group_members(shell.pid)


def test_command_name_with_spaces_and_parentheses(spawn: Callable[..., subprocess.Popen], tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    odd.symlink_to("/bin/sleep")
    proc = spawn([str(odd), "30"])
    # the kernel renames the process a moment after the parent may resume from exec: wait for it
    assert _wait_for(lambda: procfs.command_name(proc.pid) == "a) b (c"), procfs.command_name(proc.pid)
    found = procfs.stat(proc.pid)
    assert found is not None and (found.ppid, found.pgid) == (os.getpid(), proc.pid), found
    assert _wait_for(lambda: procfs.stat(proc.pid).state == "S"), procfs.stat(proc.pid)


def test_zombie_child(spawn: Callable[..., subprocess.Popen]) -> None:
    proc = spawn(["true"])  # exits at once; not waited for until the end, so it stays a zombie
    assert _wait_for(lambda: procfs.stat(proc.pid).zombie), procfs.stat(proc.pid)
    assert procfs.stat(proc.pid).ppid == os.getpid()
    assert proc.pid not in procfs.children(os.getpid())
    assert proc.pid in procfs.children(os.getpid(), include_zombies=True)
    assert procfs.group_members(proc.pid) == []
    assert procfs.group_members(proc.pid, include_zombies=True) == [proc.pid]
    assert procfs.cmdline(proc.pid) == []
    assert procfs.rss_bytes(proc.pid) == 0
    assert proc.pid not in find_server_pids("true")
    proc.wait(timeout=10)
    assert procfs.stat(proc.pid) is None


def test_a_process_that_does_not_exist() -> None:
    pid = _missing_pid()
    assert procfs.stat(pid) is None
    assert procfs.cmdline(pid) == []
    assert procfs.command_name(pid) is None
    assert procfs.rss_bytes(pid) is None
    assert procfs.children(pid) == []
    assert procfs.group_members(pid) == []
    assert procfs.cpu_seconds({pid: "gone"}) == {}
    assert procfs.server_processes(pid) == {pid: "tritonserver"}
    assert pid not in {s.pid for s in procfs.all_stats()}


def test_all_stats_lists_this_process_and_its_child(spawn: Callable[..., subprocess.Popen]) -> None:
    proc = spawn(["sleep", "30"])
    pids = {s.pid for s in procfs.all_stats()}
    assert {os.getpid(), os.getppid(), proc.pid} <= pids


def test_rss_of_this_process_follows_allocations() -> None:
    before = procfs.rss_bytes(os.getpid())
    block = b"\x01" * (64 * MIB)  # written, so resident
    after = procfs.rss_bytes(os.getpid())
    assert before is not None and after is not None
    assert after - before >= 48 * MIB, (before, after)
    del block


def test_cpu_seconds_of_this_process_match_os_times() -> None:
    def used() -> float:
        times = os.times()
        return times.user + times.system

    start = procfs.cpu_seconds({os.getpid(): "me"})["me"]
    assert abs(start - used()) < 0.05
    begin = used()
    while used() - begin < 0.3:  # burn CPU
        sum(range(10_000))
    spent = procfs.cpu_seconds({os.getpid(): "me"})["me"] - start
    assert 0.25 <= spent <= 0.6, spent
    # several pids under one name are summed; an exited pid is left out
    both = procfs.cpu_seconds({os.getpid(): "x", os.getppid(): "x", _missing_pid(): "y"})
    assert set(both) == {"x"}
    assert both["x"] >= start + spent


def test_server_processes_names_stubs_by_instance(spawn: Callable[..., subprocess.Popen]) -> None:
    code = "import subprocess, sys, time; [subprocess.Popen(a) for a in sys.argv[1:]]; time.sleep(30)"
    stub = [sys.executable, "-c", "import time; time.sleep(30)", "3", "4", "5", "6", "7", "tier_small_0_0"]
    server = spawn([sys.executable, "-c", code.replace("sys.argv[1:]", repr([stub, ["sleep", "30"]]))])
    assert _wait_for(lambda: len(procfs.server_processes(server.pid)) == 3), procfs.server_processes(server.pid)
    names = procfs.server_processes(server.pid)
    assert sorted(names.values()) == ["stub:sleep", "stub:tier_small_0_0", "tritonserver"]
    assert names[server.pid] == "tritonserver"
    assert set(names) == {server.pid, *procfs.children(server.pid)}


def test_watchdog_finds_stubs_and_servers_through_procfs(
    spawn: Callable[..., subprocess.Popen], tmp_path: Path
) -> None:
    stub_binary = tmp_path / "triton_python_backend_stub"
    stub_binary.symlink_to(sys.executable)
    argv = [str(stub_binary), "-c", "import time; time.sleep(30)", "3", "4", "5", "6", "7"]
    script = (
        "import subprocess, sys, time; "
        f"[subprocess.Popen({argv!r} + [name]) for name in ('tier_small_0_0', 'tier_small_0_1', 'tier_small')]; "
        "time.sleep(30)"
    )
    server = spawn([sys.executable, "-c", script])
    assert _wait_for(lambda: len(procfs.children(server.pid)) == 3)
    stubs = live_stubs(server.pid)
    # the third stub is named after the model alone (a config auto-complete stub), not an instance
    assert sorted((s.instance, s.model) for s in stubs) == [
        ("tier_small_0_0", "tier_small"),
        ("tier_small_0_1", "tier_small"),
    ]
    assert {s.pid for s in stubs} < set(procfs.children(server.pid))
    assert live_stubs(os.getpid()) == []
    comm = "triton_python_b"  # the kernel keeps 15 bytes of the name
    assert _wait_for(lambda: all(procfs.command_name(s.pid) == comm for s in stubs))
    assert {s.pid for s in stubs} <= set(find_server_pids(comm))
    assert server.pid not in find_server_pids(comm)


def test_pid_listening_on() -> None:
    with socket.socket() as listening, socket.socket() as bound_only:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        bound_only.bind(("127.0.0.1", 0))
        assert procfs.pid_listening_on(listening.getsockname()[1]) == os.getpid()
        assert procfs.pid_listening_on(bound_only.getsockname()[1]) is None
