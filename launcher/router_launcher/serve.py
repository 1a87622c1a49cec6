"""Run the real Triton server (from the nvidia-pytriton wheel) locally on a model repository.

`router-serve` is the command-line front; `LocalTritonServer` is the same thing as a context manager that tests
and the demo use.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from llm_router import backends as _backends

from router_launcher import procfs
from router_launcher.watchdog import StubWatchdog

LOG_TAIL_LINES = 40
# Shared memory of each Python-backend stub (one /dev/shm region per model instance; Triton's default is 1 MiB
# growing by 1 MiB). The router's region holds every in-flight request's tensors: the prompt (at most 100,000
# characters = 400 kB of UTF-8) once as its input and once per BLS call (classifier, tier), plus the answer and the
# route JSON (a few kB): ~1.2 MB for a maximal prompt, ~10 kB for a typical one. 4 MiB holds 3 maximal or hundreds
# of typical requests before the region grows, and each growth step adds room for 3 more. Regions never shrink and
# are fully resident, so the total (~4 MiB x Python model instances + growth) must fit in /dev/shm (docker: shm_size).
SHM_DEFAULT_BYTES = 4 * 1024 * 1024
SHM_GROWTH_BYTES = 4 * 1024 * 1024
WATCHDOG_CHOICES = ("auto", "restart", "exit", "off")


class ServeError(RuntimeError):
    """A problem that stops the local server from starting; the message says what to do."""


@dataclass
class ServerOptions:
    """Command-line options of `router-serve`, also used by tests and the demo."""

    model_repository: Path = Path("model_repository")
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    log_file: Path | None = None
    model_control_mode: str = "none"
    load_models: list[str] = field(default_factory=list)
    backend_config: list[str] = field(default_factory=list)
    extra_model_repositories: list[Path] = field(default_factory=list)
    startup_timeout_s: float = 180.0
    stop_grace_s: float = 20.0
    log_verbose: int = 0
    echo_log: bool = False
    # dead Python stubs (Triton 2.51 neither restarts nor reports them): auto = restart in explicit model control,
    # exit otherwise (see router_launcher.watchdog)
    stub_watchdog: str = "auto"
    # an installed Triton (e.g. /opt/tritonserver in the NGC image): its bin/tritonserver and backends/ are used as
    # they are, real onnxruntime backend included; default: the nvidia-pytriton wheel + the CPU stand-in
    triton_home: Path | None = None
    extra_args: list[str] = field(default_factory=list)  # passed to tritonserver as they are

    @classmethod
    def on_free_ports(cls, model_repository: Path, **options: Any) -> ServerOptions:
        """Options for a server on gRPC, HTTP and metrics ports that are free right now (benchmarks, tests);
        `options` sets the other fields."""
        grpc_port, http_port, metrics_port = free_ports(3, options.get("host", cls.host))
        return cls(
            model_repository=model_repository,
            grpc_port=grpc_port,
            http_port=http_port,
            metrics_port=metrics_port,
            **options,
        )


@dataclass(frozen=True)
class TritonInstall:
    """Paths of the tritonserver binary, its libraries and Python backend inside the nvidia-pytriton wheel."""

    binary: Path
    libs: Path
    python_backend: Path
    stub: Path
    backends: Path | None = None  # a complete backend directory to use as it is (an installed Triton)

    @classmethod
    def find(cls) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServeError("nvidia-pytriton is not installed; run `make setup` (it ships the tritonserver binary)")
        root = Path(list(spec.submodule_search_locations)[0])
        server_dir = root / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            binary=server_dir / "bin" / "tritonserver",
            libs=root.parent / "nvidia_pytriton.libs",
            python_backend=server_dir / "backends" / "python",
            stub=server_dir / "python_backend_stubs" / version / "triton_python_backend_stub",
        )
        for what, path in (
            ("tritonserver binary", install.binary),
            ("Python backend", install.python_backend),
            (f"Python {version} backend stub", install.stub),
        ):
            if not path.exists():
                raise ServeError(f"{what} not found at {path}; reinstall nvidia-pytriton==0.7.0 (`make setup`)")
        return install

    @classmethod
    def at_home(cls, home: Path) -> TritonInstall:
        """An installed Triton (NGC image: /opt/tritonserver) with its own backends."""
        home = Path(home)
        install = cls(
            binary=home / "bin" / "tritonserver",
            libs=home / "lib",
            python_backend=home / "backends" / "python",
            stub=home / "backends" / "python" / "triton_python_backend_stub",
            backends=home / "backends",
        )
        for what, path in (("tritonserver binary", install.binary), ("Python backend", install.python_backend)):
            if not path.exists():
                raise ServeError(f"{what} not found at {path} (--triton-home {home})")
        return install


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on (host, port) and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct ports that are free right now (for tests that run several servers)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


def assemble_backend_dir(install: TritonInstall, target: Path) -> Path:
    """Build a Triton backend directory: the wheel's Python backend + stub, and our CPU onnxruntime stand-in."""
    python_dir = target / "python"
    shutil.copytree(install.python_backend, python_dir, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(install.stub, python_dir / "triton_python_backend_stub")
    ort_dir = target / "onnxruntime"
    ort_dir.mkdir(parents=True)
    shutil.copy2(_backends.ONNXRUNTIME_STANDIN_MODEL_PY, ort_dir / "model.py")
    return target


def merged_model_repository(primary: Path, extras: Sequence[Path], target: Path) -> Path:
    """One repository of symlinks to the models of several (later folders may not shadow earlier ones)."""
    target.mkdir(parents=True, exist_ok=True)
    for repo in (primary, *extras):
        for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and (p / "config.pbtxt").exists()):
            link = target / model_dir.name
            if link.exists() or link.is_symlink():
                raise ServeError(f"model {model_dir.name!r} appears in more than one model repository")
            link.symlink_to(model_dir.resolve(), target_is_directory=True)
    return target


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a text file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class LocalTritonServer:
    """The real tritonserver as a child process group, started ready and stopped without leftovers."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.install = TritonInstall.at_home(options.triton_home) if options.triton_home else TritonInstall.find()
        self.shm_prefix = f"llmrouter_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self.process: subprocess.Popen[bytes] | None = None
        self._run_dir: Path | None = None
        self._log_handle = None
        self._echo_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._log_start = 0
        self.startup_seconds: float | None = None
        self.watchdog: StubWatchdog | None = None

    # -- paths and URLs -------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.options.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.options.host}:{self.options.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.options.host}:{self.options.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        if self.options.log_file is not None:
            return Path(self.options.log_file)
        assert self._run_dir is not None
        return self._run_dir / "triton.log"

    # -- lifecycle ------------------------------------------------------------------------------
    def command(self, backend_dir: Path, repository: Path) -> list[str]:
        opts = self.options
        cmd = [
            str(self.install.binary),
            f"--model-repository={repository}",
            f"--backend-directory={backend_dir}",
            f"--grpc-address={opts.host}",
            f"--grpc-port={opts.grpc_port}",
            f"--http-address={opts.host}",
            f"--http-port={opts.http_port}",
            f"--metrics-address={opts.host}",
            f"--metrics-port={opts.metrics_port}",
            "--allow-metrics=true",
            f"--model-control-mode={opts.model_control_mode}",
            f"--exit-timeout-secs={max(1, int(opts.stop_grace_s) - 2)}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--log-verbose={opts.log_verbose}",
        ]
        cmd += [f"--load-model={name}" for name in opts.load_models]
        for key, value in (("shm-default-byte-size", SHM_DEFAULT_BYTES), ("shm-growth-byte-size", SHM_GROWTH_BYTES)):
            if not any(item.startswith(f"python,{key}=") for item in opts.backend_config):
                cmd.append(f"--backend-config=python,{key}={value}")
        cmd += [f"--backend-config={item}" for item in opts.backend_config]
        cmd += opts.extra_args
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = str(self.install.libs)
        env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        # The Python backend stub finds its packages through the first `python3` on PATH.
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def check_ports(self) -> None:
        opts = self.options
        for name, port in (
            ("gRPC", opts.grpc_port),
            ("HTTP", opts.http_port),
            ("metrics", opts.metrics_port),
        ):
            if not port_is_free(opts.host, port):
                flag = {"gRPC": "--grpc-port", "HTTP": "--http-port", "metrics": "--metrics-port"}[name]
                raise ServeError(
                    f"{name} port {port} on {opts.host} is already in use (another Triton?); "
                    f"stop that process or choose another port with {flag}"
                )

    def start(self) -> LocalTritonServer:
        opts = self.options
        repo = Path(opts.model_repository)
        if not repo.is_dir():
            raise ServeError(f"model repository {repo} does not exist; build it with `make models`")
        if opts.model_control_mode not in ("none", "explicit", "poll"):
            raise ServeError(f"--model-control-mode must be none, explicit or poll, not {opts.model_control_mode!r}")
        self.check_ports()
        self._run_dir = Path(tempfile.mkdtemp(prefix="llm-router-serve-"))
        backend_dir = self.install.backends or assemble_backend_dir(self.install, self._run_dir / "backends")
        if opts.extra_model_repositories:
            repo = merged_model_repository(repo, opts.extra_model_repositories, self._run_dir / "models")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_start = self._log_handle.tell()
        started = time.monotonic()
        self.process = subprocess.Popen(
            self.command(backend_dir, repo.resolve()),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            start_new_session=True,
        )
        if opts.echo_log:
            self._echo_thread = threading.Thread(target=self._echo_log, daemon=True)
            self._echo_thread.start()
        try:
            self.wait_ready(opts.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self.start_watchdog()
        return self

    def start_watchdog(self) -> None:
        """Watch the Python stubs: restart a dead one (explicit model control) or stop the server (see watchdog)."""
        choice = self.options.stub_watchdog
        if choice not in WATCHDOG_CHOICES:
            raise ServeError(f"stub watchdog must be one of {', '.join(WATCHDOG_CHOICES)}, not {choice!r}")
        if choice == "off" or self.process is None:
            return
        if choice == "auto":
            choice = "restart" if self.options.model_control_mode == "explicit" else "exit"
        if choice == "restart" and self.options.model_control_mode != "explicit":
            raise ServeError("--on-stub-exit restart needs --model-control-mode explicit (it unloads and loads)")
        self.watchdog = StubWatchdog(self.http_url, self.process.pid, action=choice, log=self._log_line).start()

    def _log_line(self, line: str) -> None:
        """A line into Triton's log file (and stderr), so operators find watchdog events next to Triton's."""
        print(f"router-serve: {line}", file=sys.stderr, flush=True)
        with contextlib.suppress(OSError), open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(f"router-serve: {line}\n")

    def _echo_log(self) -> None:
        with open(self.log_path, "rb") as handle:
            handle.seek(self._log_start)
            while True:
                line = handle.readline()
                if line:
                    sys.stdout.write(line.decode(errors="replace"))
                    sys.stdout.flush()
                elif self._stopping.is_set():
                    return
                else:
                    time.sleep(0.2)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise ServeError(
                    f"tritonserver exited with code {code} before it was ready; last lines of "
                    f"{self.log_path}:\n{tail(self.log_path)}"
                )
            if self.is_ready():
                return
            time.sleep(0.25)
        raise ServeError(
            f"tritonserver was not ready after {timeout_s:.0f}s; last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    def group_pids(self) -> list[int]:
        """PIDs still alive in the server's process group (tritonserver and its Python stubs)."""
        if self.process is None:
            return []
        return procfs.group_members(self.process.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole group after the grace period; remove our shm regions."""
        self._stopping.set()
        if self.watchdog is not None:
            self.watchdog.stop()  # before SIGTERM: unloading models is not a dead stub
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.options.stop_grace_s)
            except subprocess.TimeoutExpired:
                print(
                    f"router-serve: tritonserver did not stop within {self.options.stop_grace_s:.0f}s; sending SIGKILL",
                    file=sys.stderr,
                )
        if proc is not None:
            deadline = time.monotonic() + 5
            while True:
                pids = self.group_pids()
                if not pids:
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._run_dir is not None:  # backends, merged repository and (without --log-file) the log
            shutil.rmtree(self._run_dir, ignore_errors=True)

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_server(options: ServerOptions) -> Iterator[LocalTritonServer]:
    """Start the local server, yield it ready, always stop it."""
    server = LocalTritonServer(options)
    try:
        yield server.start()
    finally:
        server.stop()


def parse_args(argv: Sequence[str] | None = None) -> ServerOptions:
    """`router-serve`'s options; every default is the ServerOptions field's (each flag's dest is the field)."""
    parser = argparse.ArgumentParser(
        prog="router-serve",
        description="Run the real Triton server locally (CPU) on the project's model repository until Ctrl-C.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.set_defaults(**{f.name: getattr(ServerOptions(), f.name) for f in fields(ServerOptions)})
    parser.add_argument("--model-repository", type=Path, help="the Triton model repository")
    parser.add_argument("--host", help="address to bind (loopback only by default)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (router-client, the OpenAI front)")
    parser.add_argument("--http-port", type=int, help="HTTP/REST port (KServe v2: /v2/...)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus metrics port (/metrics)")
    parser.add_argument(
        "--log-file",
        type=Path,
        help="keep Triton's log in this file (default: a temp file, removed on exit)%(default).0s",
    )
    parser.add_argument(
        "--model-control-mode",
        choices=["none", "explicit", "poll"],
        help="none: load every model at start; explicit: load/unload through the API (--load-model)",
    )
    parser.add_argument(
        "--load-model",
        dest="load_models",
        action="append",
        metavar="LOAD_MODEL",
        help="with explicit mode: model to load at start, repeatable ('*' = all)",
    )
    parser.add_argument(
        "--backend-config", action="append", help="passed to tritonserver, e.g. python,shm-default-byte-size=..."
    )
    parser.add_argument(
        "--startup-timeout", dest="startup_timeout_s", metavar="SECONDS", type=float, help="to wait for readiness"
    )
    parser.add_argument(
        "--stop-grace", dest="stop_grace_s", metavar="SECONDS", type=float, help="between SIGTERM and SIGKILL"
    )
    parser.add_argument("--log-verbose", type=int, help="Triton's --log-verbose level")
    parser.add_argument(
        "--on-stub-exit",
        dest="stub_watchdog",
        choices=WATCHDOG_CHOICES,
        help="when a Python stub dies: restart its model (explicit mode), exit, or off; auto = restart in "
        "explicit mode, exit otherwise",
    )
    # the command echoes Triton's log unless told not to (a LocalTritonServer in a test or the demo does not)
    parser.add_argument(
        "--quiet",
        dest="echo_log",
        action="store_false",
        default=True,
        help="do not echo Triton's log to the console (default: echo it)%(default).0s",
    )
    parser.add_argument(
        "--triton-home",
        type=Path,
        help="an installed Triton (e.g. /opt/tritonserver in the NGC image) with its own backends; default: the "
        "nvidia-pytriton wheel's server and the CPU onnxruntime stand-in%(default).0s",
    )
    parser.add_argument(
        "--triton-arg",
        dest="extra_args",
        action="append",
        metavar="ARG",
        help="passed to tritonserver as it is, e.g. --triton-arg=--strict-readiness=true (repeatable)",
    )
    return ServerOptions(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        server = LocalTritonServer(options)
        server.start()
    except ServeError as exc:
        print(f"router-serve: {exc}", file=sys.stderr)
        return 2
    print(
        f"router-serve: ready in {server.startup_seconds:.1f}s  gRPC {server.grpc_url}  HTTP {server.http_url}  "
        f"metrics {server.metrics_url}  log {server.log_path}"
        + (" (removed on exit; --log-file keeps one)" if options.log_file is None else ""),
        flush=True,
    )
    try:
        while not stop_requested.is_set():
            if server.process is not None and server.process.poll() is not None:
                print(
                    f"router-serve: tritonserver exited with code {server.process.returncode}; "
                    f"last lines of its log:\n{tail(server.log_path)}",
                    file=sys.stderr,
                )
                return 1
            stop_requested.wait(0.5)
    finally:
        print("router-serve: stopping", file=sys.stderr, flush=True)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
