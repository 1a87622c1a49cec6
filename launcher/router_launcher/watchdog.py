"""Detect dead Python-backend stub processes, which Triton 2.51 neither restarts nor reports.

What Triton 2.51 (NGC 24.10) does when a model's stub process dies (measured, see tests/integration/
test_reliability.py): every later request to that model fails within ~1 s with INTERNAL "Stub process
'<instance>' is not healthy." (no hang), the stub is never restarted, and `/v2/health/ready` and the model's
readiness stay 200. Loading the model again is a no-op while its config is unchanged; an unload followed by a load
starts a new stub. (Upstream: triton-inference-server/server#8604; readiness that reflects the stub came later,
server#8552.)

So the project watches the stubs itself:
- `StubWatchdog` (started by `router-serve` / `LocalTritonServer`) polls the repository index and the processes.
  A READY model whose stub it has seen alive, and whose stub is gone on two polls in a row, is dead. Action
  `restart` (explicit model control): unload + load it (readiness is false meanwhile, and stays false if the load
  fails), and load again any model that was READY before and is not after (an ensemble whose step was reloaded).
  Action `exit`: stop tritonserver, so `router-serve` exits 1 and a supervisor restarts it. Every detection is
  logged.
- `python -m router_launcher.watchdog check --url http://localhost:8000` is a one-shot health check for deployments that
  run tritonserver directly (docker HEALTHCHECK, Kubernetes probe): exit 0 when the server (or, with `--models`,
  each named model) is ready and every READY Python-backend model has all its stub processes, 1 otherwise.

Talks to Triton through tritonclient.http and reads processes with psutil (Linux: a stub's argv names its model
instance). It runs next to the server, not inside it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import psutil
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from router_launcher import procfs

STUB_BINARY = "triton_python_backend_stub"
ACTIONS = ("restart", "exit", "off")
_INSTANCE_SUFFIX = re.compile(r"^(?P<model>.+)_\d+_\d+$")
# what a query to a busy, stopping or gone server raises (tritonclient: the server's error; the socket: OSError)
POLL_ERRORS = (InferenceServerException, OSError, ValueError)


@dataclass(frozen=True)
class StubProcess:
    """One live Python-backend stub: its pid, model instance name (e.g. `tier_small_0_0`) and model name."""

    pid: int
    instance: str
    model: str


def parse_stub_cmdline(argv: list[str]) -> tuple[str, str] | None:
    """(instance, model) from a stub's argv, or None when argv is not a model instance's stub.

    argv: stub, <repo>/<model>/<version>/model.py, shm region, shm default size, shm growth size, parent pid,
    python lib dir, ipc handle, instance name (`<model>_<group>_<index>`), runtime model dir. The short-lived stub
    that auto-completes a config while a model loads is named after the model alone: it is not an instance.
    """
    if len(argv) < 9 or not argv[0].endswith(STUB_BINARY):
        return None
    match = _INSTANCE_SUFFIX.match(argv[8])
    return (argv[8], match.group("model")) if match else None


def live_stubs(server_pid: int) -> list[StubProcess]:
    """The live (not zombie) stub processes whose parent is `server_pid`."""
    stubs = []
    for child in procfs.live_children(server_pid):
        parsed = parse_stub_cmdline(procfs.cmdline(child))  # [] when it is gone meanwhile: not a stub
        if parsed is not None:
            stubs.append(StubProcess(child.pid, parsed[0], parsed[1]))
    return stubs


def find_server_pids(name: str = "tritonserver") -> list[int]:
    """PIDs of live (not zombie) processes named `name`."""
    return [
        p.pid
        for p in psutil.process_iter(["name", "status"])
        if p.info["name"] == name and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


def http_client(url: str, timeout_s: float = 5.0) -> httpclient.InferenceServerClient:
    """tritonclient's HTTP client for `url` (with or without `http://`), every call bounded by `timeout_s`."""
    address = url.split("://", 1)[-1].rstrip("/")
    return httpclient.InferenceServerClient(address, connection_timeout=timeout_s, network_timeout=timeout_s)


def model_states(client: httpclient.InferenceServerClient) -> dict[str, str]:
    """Model name -> state (READY, UNAVAILABLE, LOADING, UNLOADING) from the repository index."""
    return {m["name"]: m.get("state", "") for m in client.get_model_repository_index()}


def expected_instances(config: dict) -> int:
    """How many instances (stubs) a model config asks for; 0 for an ensemble or a non-Python backend."""
    if config.get("backend") != "python":
        return 0
    total = 0
    for group in config.get("instance_group") or [{"count": 1}]:
        count = int(group.get("count", 1) or 1)
        gpus = group.get("gpus") or []
        total += count * max(1, len(gpus)) if group.get("kind") == "KIND_GPU" else count
    return total


def check(url: str, server_pid: int | None = None, models: Sequence[str] = ()) -> list[str]:
    """Problems found (empty when healthy): server not ready, or a READY Python model lacking stub processes.

    With `models`, each of them must be ready instead of the server: Triton 2.51 keeps /v2/health/ready false for
    good after any model version change (e.g. a policy reload of `router`), although every model keeps serving.
    """
    api = http_client(url)
    if models:
        not_ready = [m for m in models if not api.is_model_ready(m)]
        if not_ready:
            return [f"model(s) not ready: {', '.join(not_ready)}"]
    elif not api.is_server_ready():
        return [f"{url}/v2/health/ready is not 200"]
    pids = [server_pid] if server_pid else find_server_pids()
    if len(pids) != 1:
        return [f"expected one tritonserver process, found {pids}; pass --server-pid"]
    stubs: dict[str, int] = {}
    for stub in live_stubs(pids[0]):
        stubs[stub.model] = stubs.get(stub.model, 0) + 1
    problems = []
    for model, state in sorted(model_states(api).items()):
        if state != "READY":
            continue
        want = expected_instances(api.get_model_config(model))
        if stubs.get(model, 0) < want:
            problems.append(f"model {model!r} is READY but has {stubs.get(model, 0)} of {want} stub process(es)")
    return problems


class StubWatchdog:
    """Polls a running server; restarts (explicit model control) or stops it when a model's stub has died."""

    def __init__(
        self,
        http_url: str,
        server_pid: int,
        action: str = "restart",
        interval_s: float = 1.0,
        log: Callable[[str], None] | None = None,
        on_exit: Callable[[], None] | None = None,
        api: httpclient.InferenceServerClient | None = None,
        list_stubs: Callable[[int], list[StubProcess]] = live_stubs,
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
        self.http_url = http_url
        # tritonclient.http's sockets are gevent's, usable only in the thread that made them: the watchdog's thread
        # makes its clients (`_run`); `api` (a test's fake) is used as it is
        self.api = api
        self.control = api
        self.list_stubs = list_stubs
        self.server_pid = server_pid
        self.action = action
        self.interval_s = interval_s
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.on_exit = on_exit or (lambda: os.kill(server_pid, signal.SIGTERM))
        self.known: dict[str, set[str]] = {}  # READY model -> stub instance names seen alive
        self.suspects: set[str] = set()  # instances missing on the last poll
        self.restarts: list[tuple[str, str, bool]] = []  # (model, dead instances, restarted ok)
        self._stop = threading.Event()
        self._baseline = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StubWatchdog:
        """Start polling; returns once the first poll is done (a stub that dies right after is still noticed)."""
        self._thread = threading.Thread(target=self._run, name="stub-watchdog", daemon=True)
        self._thread.start()
        self._baseline.wait()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        owned = self.api is None
        if owned:
            self.api = http_client(self.http_url)
            # loading a model takes minutes, a poll must not: the unload/load calls get a client of their own
            self.control = http_client(self.http_url, timeout_s=300)
        try:
            try:
                self.poll()
            except POLL_ERRORS as exc:
                self.log(f"stub-watchdog: first poll failed: {exc}")
            finally:
                self._baseline.set()
            while not self._stop.wait(self.interval_s):
                try:
                    self.poll()
                except POLL_ERRORS as exc:  # server busy or going away: try again next time
                    if self._stop.is_set():
                        return
                    self.log(f"stub-watchdog: poll failed: {exc}")
        finally:
            if owned:
                self.api.close()
                self.control.close()

    def poll(self) -> list[str]:
        """One round: returns the models found dead (and acted on)."""
        states = model_states(self.api)
        alive: dict[str, set[str]] = {}
        for stub in self.list_stubs(self.server_pid):
            alive.setdefault(stub.model, set()).add(stub.instance)
        ready = {m for m, s in states.items() if s == "READY"}
        for model in list(self.known):
            if model not in ready:
                del self.known[model]  # unloaded (or reloading): its stubs are legitimately gone
        missing_now: set[str] = set()
        dead: dict[str, set[str]] = {}
        for model in ready:
            seen = self.known.setdefault(model, set())
            seen |= alive.get(model, set())
            for instance in seen - alive.get(model, set()):
                missing_now.add(instance)
                if instance in self.suspects:
                    dead.setdefault(model, set()).add(instance)
        self.suspects = missing_now
        if not dead or self._stop.is_set():
            return []
        # confirm against a fresh index: a model being unloaded by someone else is not READY any more
        states = model_states(self.api)
        dead = {m: i for m, i in dead.items() if states.get(m) == "READY"}
        for model, instances in sorted(dead.items()):
            self._act(model, instances, ready)
        return sorted(dead)

    def _act(self, model: str, instances: Iterable[str], ready_before: set[str]) -> None:
        names = ", ".join(sorted(instances))
        self.log(
            f"stub-watchdog: the Python stub of {names} (model {model!r}) has died; Triton keeps reporting the "
            f"model ready but every request to it fails; action: {self.action}"
        )
        if self.action == "off":
            return
        if self.action == "exit":
            self.log("stub-watchdog: stopping tritonserver so that its supervisor restarts it")
            self._stop.set()
            self.on_exit()
            return
        error = self._control("unload_model", model)
        if error is None:
            self.known.pop(model, None)
            error = self._control("load_model", model)
        after = model_states(self.api)
        for other in sorted(ready_before - {model}):
            if after.get(other) != "READY":  # e.g. an ensemble whose step was just reloaded
                reload_error = self._control("load_model", other)
                if reload_error:
                    self.log(f"stub-watchdog: could not load {other!r} again: {reload_error}")
        ok = error is None and model_states(self.api).get(model) == "READY"
        self.restarts.append((model, names, ok))
        self.suspects -= set(instances)
        if ok:
            self.log(f"stub-watchdog: restarted model {model!r} (new stub process)")
        else:
            self.log(f"stub-watchdog: FAILED to restart model {model!r}: {error}; the server is not ready")

    def _control(self, call: str, model: str) -> str | None:
        """Unload or load `model`: None on success, else why not."""
        try:
            getattr(self.control, call)(model)
        except InferenceServerException as exc:
            return exc.message()
        except OSError as exc:
            return str(exc)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router_launcher.watchdog",
        description="Health of a Triton server's Python-backend stubs (Triton 2.51 does not report dead stubs).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check_cmd = sub.add_parser("check", help="exit 0 when ready and every READY Python model has its stubs")
    watch_cmd = sub.add_parser("watch", help="poll until stopped; restart or stop on a dead stub")
    for cmd in (check_cmd, watch_cmd):
        cmd.add_argument("--url", default="http://localhost:8000", help="Triton's HTTP endpoint")
        cmd.add_argument("--server-pid", type=int, default=None, help="default: the only `tritonserver` process")
    check_cmd.add_argument(
        "--models", nargs="+", default=[], help="require these models' readiness instead of the server's"
    )
    watch_cmd.add_argument("--action", choices=ACTIONS, default="restart")
    watch_cmd.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.command == "check":
        try:
            problems = check(args.url, args.server_pid, args.models)
        except POLL_ERRORS as exc:
            problems = [f"cannot query {args.url}: {exc}"]
        for problem in problems:
            print(f"unhealthy: {problem}", file=sys.stderr)
        return 1 if problems else 0
    pids = [args.server_pid] if args.server_pid else find_server_pids()
    if len(pids) != 1:
        print(f"expected one tritonserver process, found {pids}; pass --server-pid", file=sys.stderr)
        return 2
    watchdog = StubWatchdog(args.url, pids[0], action=args.action, interval_s=args.interval)
    watchdog.start()
    try:
        while watchdog._thread is not None and watchdog._thread.is_alive():
            watchdog._thread.join(timeout=1)
    except KeyboardInterrupt:
        watchdog.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
