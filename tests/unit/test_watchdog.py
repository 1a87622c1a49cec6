"""The stub watchdog's decisions, without a server (a fake repository index and fake /proc listing)."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
from router_launcher.watchdog import StubProcess, StubWatchdog, expected_instances, parse_stub_cmdline
from tritonclient.utils import InferenceServerException

STUB_ARGV = [
    "/tmp/run/backends/python/triton_python_backend_stub",
    "/tmp/run/models/tier_small/1/model.py",
    "llmrouter_1_abc_uuid",
    "4194304",
    "4194304",
    "1234",
    "/tmp/run/backends/python",
    "336",
    "tier_small_0_0",
    "DEFAULT",
]


def test_parse_stub_cmdline() -> None:
    assert parse_stub_cmdline(STUB_ARGV) == ("tier_small_0_0", "tier_small")
    other = [*STUB_ARGV[:8], "router_stream_1_2", "DEFAULT"]
    assert parse_stub_cmdline(other) == ("router_stream_1_2", "router_stream")
    assert parse_stub_cmdline(["/usr/bin/python3", "x.py"]) is None
    assert parse_stub_cmdline(STUB_ARGV[:5]) is None
    autocomplete = [*STUB_ARGV[:8], "tier_small", "DEFAULT"]  # the config auto-complete stub of a loading model
    assert parse_stub_cmdline(autocomplete) is None


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"backend": "python", "instance_group": [{"count": 2, "kind": "KIND_CPU"}]}, 2),
        ({"backend": "python", "instance_group": [{"count": 1, "kind": "KIND_GPU", "gpus": [0, 1]}]}, 2),
        ({"backend": "python"}, 1),
        ({"backend": "onnxruntime", "instance_group": [{"count": 2, "kind": "KIND_CPU"}]}, 0),
        ({"platform": "ensemble"}, 0),
    ],
)
def test_expected_instances(config: dict, expected: int) -> None:
    assert expected_instances(config) == expected


class FakeTriton:
    """The tritonclient.http calls the watchdog makes: repository index, load and unload (recorded)."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = dict(states)
        self.calls: list[tuple[str, str]] = []
        self.refuse_load: set[str] = set()

    def get_model_repository_index(self) -> list[dict[str, str]]:
        return [{"name": name, "version": "1", "state": state} for name, state in self.states.items()]

    def unload_model(self, model: str) -> None:
        self.calls.append(("unload", model))
        self.states[model] = "UNAVAILABLE"

    def load_model(self, model: str) -> None:
        self.calls.append(("load", model))
        if model in self.refuse_load:
            raise InferenceServerException(f"failed to load '{model}'")
        self.states[model] = "READY"


def _watchdog(api: FakeTriton, stubs: list[StubProcess], action: str = "restart") -> tuple[StubWatchdog, list]:
    events: list[str] = []
    exits: list[bool] = []
    dog = StubWatchdog(
        "unused", 1, action=action, api=api, list_stubs=lambda pid: list(stubs), log=events.append,
        on_exit=lambda: exits.append(True),
    )  # fmt: skip
    return dog, [events, exits]


def test_a_stub_missing_on_two_polls_of_a_ready_model_is_restarted() -> None:
    api = FakeTriton({"router": "READY", "tier_small": "READY"})
    stubs = [StubProcess(10, "router_0_0", "router"), StubProcess(11, "tier_small_0_0", "tier_small")]
    dog, (events, _) = _watchdog(api, stubs)
    assert dog.poll() == []
    del stubs[1]
    assert dog.poll() == [], "one missing poll may be a race: not dead yet"
    assert api.calls == []
    assert dog.poll() == ["tier_small"]
    assert api.calls == [("unload", "tier_small"), ("load", "tier_small")]
    assert dog.restarts == [("tier_small", "tier_small_0_0", True)]
    assert any("tier_small_0_0" in line and "died" in line for line in events)


def test_a_model_unloaded_by_an_operator_is_not_restarted() -> None:
    api = FakeTriton({"tier_medium": "READY"})
    stubs = [StubProcess(12, "tier_medium_0_0", "tier_medium")]
    dog, _ = _watchdog(api, stubs)
    dog.poll()
    api.states["tier_medium"] = "UNAVAILABLE"
    stubs.clear()
    for _ in range(3):
        assert dog.poll() == []
    api.states["tier_medium"] = "READY"  # loaded again later, with a new stub
    stubs.append(StubProcess(13, "tier_medium_0_0", "tier_medium"))
    assert dog.poll() == [] and api.calls == []


def test_a_model_whose_stub_was_never_seen_is_left_alone() -> None:
    api = FakeTriton({"intent_classifier": "READY"})  # an ensemble or a C++ backend: no stub at all
    dog, _ = _watchdog(api, [])
    for _ in range(3):
        assert dog.poll() == []


def test_exit_action_stops_the_server_and_the_watchdog() -> None:
    api = FakeTriton({"router": "READY"})
    stubs = [StubProcess(10, "router_0_0", "router")]
    dog, (_, exits) = _watchdog(api, stubs, action="exit")
    dog.poll()
    stubs.clear()
    dog.poll()
    assert dog.poll() == ["router"]
    assert exits == [True] and api.calls == []


def test_an_ensemble_left_unloaded_by_a_restart_is_loaded_again() -> None:
    api = FakeTriton({"classifier_tokenizer": "READY", "intent_classifier": "READY"})
    stubs = [StubProcess(10, "classifier_tokenizer_0_0", "classifier_tokenizer")]
    dog, _ = _watchdog(api, stubs)
    original_unload = api.unload_model

    def unload_with_dependent(model: str) -> None:
        original_unload(model)
        api.states["intent_classifier"] = "UNAVAILABLE"  # what Triton may do to an ensemble using the model

    api.unload_model = unload_with_dependent  # type: ignore[method-assign]
    dog.poll()
    stubs.clear()
    dog.poll()
    dog.poll()
    assert ("load", "intent_classifier") in api.calls
    assert api.states == {"classifier_tokenizer": "READY", "intent_classifier": "READY"}


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="action must be one of"):
        StubWatchdog("unused", 1, action="reboot")


def test_a_failed_restart_is_logged_and_recorded() -> None:
    api = FakeTriton({"tier_small": "READY"})
    api.refuse_load.add("tier_small")
    stubs = [StubProcess(11, "tier_small_0_0", "tier_small")]
    dog, (events, _) = _watchdog(api, stubs)
    dog.poll()
    stubs.clear()
    dog.poll()
    assert dog.poll() == ["tier_small"]
    assert dog.restarts == [("tier_small", "tier_small_0_0", False)]
    assert any("FAILED to restart model 'tier_small': failed to load 'tier_small'" in line for line in events)


def test_the_watchdog_thread_polls_a_slow_server_over_http() -> None:
    """The real client (tritonclient.http, gevent sockets that belong to one thread) from the watchdog's thread,
    against a server that answers the repository index after a delay, so every read has to wait."""
    polls: list[float] = []

    class SlowIndex(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Triton: the client reuses its socket

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(0.2)
            polls.append(time.monotonic())
            body = json.dumps([{"name": "tier_small", "version": "1", "state": "READY"}]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowIndex)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    events: list[str] = []
    stubs = [StubProcess(11, "tier_small_0_0", "tier_small")]
    url = f"http://127.0.0.1:{server.server_address[1]}"
    dog = StubWatchdog(url, 1, interval_s=0.05, log=events.append, list_stubs=lambda pid: list(stubs)).start()
    try:
        assert polls, "start() returns after the first poll"
        deadline = time.monotonic() + 10
        while len(polls) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dog._thread is not None and dog._thread.is_alive()
    finally:
        dog.stop()
        server.shutdown()
    assert len(polls) >= 4 and events == [] and dog.known == {"tier_small": {"tier_small_0_0"}}
