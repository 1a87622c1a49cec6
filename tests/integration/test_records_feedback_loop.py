"""Live outcome records and feedback end to end: a server whose routers write records (turned on through the
environment, $LLM_ROUTER_OUTCOME_RECORDS_DIR), requests over gRPC and through the OpenAI front, feedback posted to
the front, `router-calibrate join-labels`, and the joined log read by load_log; shadow evaluation with a copy of the
router whose policy has `shadow_rate: 1.0`."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from helpers import metric_value, openai_front, server_options
from llm_router.core.policy import load_policy
from router_calibration.cli import main as calibrate_main
from router_calibration.logs import load_log, read_any
from router_client.client import RouteOptions, RouterClient, RouterResult, server_tiers
from router_export.stand_in import overlay_repository
from router_launcher.serve import LocalTritonServer

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
SERVED = overlay_repository(PROJECT / "model_repository")  # the repository with tiny stand-in tiers (conftest.py)
MODELS = ["intent_tokenizer", "intent_encoder", "intent_classifier", "tier_small", "tier_medium", "tier_large",
          "router", "router_stream"]  # fmt: skip
SHADOW_MODEL = "router_shadow"  # a copy of `router` whose policy shadows every answered request
PROMPTS = ["Summarize: the meeting moved to Friday at noon.", "What is the capital of France?", "Write a haiku."]


@pytest.fixture(scope="module")
def recording_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalTritonServer, Path]]:
    """A server of its own whose routers (router, router_stream, router_shadow) write outcome records, with prompts,
    to records/; router_shadow's model folder is work/models/router_shadow (the last test writes a version there)."""
    work = tmp_path_factory.mktemp("records")
    records = work / "records"
    shadow = work / "models" / SHADOW_MODEL
    shutil.copytree(PROJECT / "model_repository" / "router", shadow, ignore=shutil.ignore_patterns("__pycache__"))
    config = (shadow / "config.pbtxt").read_text().replace('name: "router"', f'name: "{SHADOW_MODEL}"')
    (shadow / "config.pbtxt").write_text(config)
    with open(shadow / "1" / "policy.yaml", "a") as policy:
        policy.write("shadow_rate: 1.0\n")
    options = server_options(
        SERVED, work, load_models=[*MODELS, SHADOW_MODEL], extra_model_repositories=[work / "models"], stop_grace_s=15
    )
    server = LocalTritonServer(options)
    with pytest.MonkeyPatch.context() as env:  # the server's stubs inherit the environment at start
        env.setenv("LLM_ROUTER_OUTCOME_RECORDS_DIR", str(records))
        env.setenv("LLM_ROUTER_OUTCOME_RECORDS_PROMPTS", "true")
        server.start()
    try:
        yield server, records
    finally:
        server.stop()


def _wait_for_records(directory: Path, request_ids: set[str], timeout_s: float = 30) -> dict[str, list[dict]]:
    """Record rows by request id, once every id in `request_ids` has its rows (they are written in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows: dict[str, list[dict]] = {}
        for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
            for line in path.read_text().splitlines():
                row = json.loads(line)
                rows.setdefault(row["prompt_id"], []).append(row)
        if request_ids <= rows.keys() or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _check_rows(rows: list[dict], result: RouterResult, prompt: str) -> None:
    """The request's rows say what its trace says."""
    route = result.route
    assert [r["tier"] for r in rows] == [a["tier"] for a in route["attempts"]]
    assert [r["attempt"] for r in rows] == list(range(len(rows)))
    assert [r["accepted"] for r in rows] == [a["result"] == "accepted" for a in route["attempts"]]
    assert [r["tokens_out"] for r in rows] == [a["output_tokens"] for a in route["attempts"]]
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(route["cost"])
    for row in rows:
        assert row["intent"] == route["intent"] and row["policy_version"] == route["policy_version"]
        assert row["final_tier"] == result.tier and row["prompt"] == prompt and row["time"].endswith("Z")
        assert "score" not in row and "correct" not in row


def test_records_feedback_and_labels_end_to_end(recording_server, tmp_path: Path) -> None:
    server, records = recording_server
    tiers = server_tiers(server.grpc_url)
    results: dict[str, tuple[RouterResult, str]] = {}
    with RouterClient(server.grpc_url, timeout_s=120) as client:
        result = client.route(PROMPTS[0], max_tokens=4, request_id="client-chosen-id")
        assert result.route["request_id"] == "client-chosen-id"
        results["client-chosen-id"] = (result, PROMPTS[0])
        result = client.route(PROMPTS[1], max_tokens=4)  # no id: the router makes one up
        generated = result.route["request_id"]
        assert len(generated) == 32 and generated != "client-chosen-id"
        results[generated] = (result, PROMPTS[1])
        *_, last = client.stream(PROMPTS[2], max_tokens=4, request_id="streamed-id")
        assert isinstance(last, RouterResult) and last.route["request_id"] == "streamed-id"
        results["streamed-id"] = (last, PROMPTS[2])
        # the labelling sample for a fit: one prompt sent to every tier
        for tier in tiers:
            request_id = f"forced-{tier}"
            result = client.route(
                PROMPTS[1], max_tokens=4, options=RouteOptions(force_tier=tier), request_id=request_id
            )
            results[request_id] = (result, PROMPTS[1])

    feedback = tmp_path / "feedback.jsonl"
    with openai_front(server.grpc_url, feedback_file=feedback) as url:
        body = {"model": "router", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 4}
        completion = _post(f"{url}/chat/completions", body)
        completion_id = completion["id"]
        assert completion_id.startswith("chatcmpl-") and completion["route"]["request_id"] == completion_id
        assert _post(f"{url}/feedback", {"id": completion_id, "correct": True}) == {
            "object": "feedback", "id": completion_id, "received": True,
        }  # fmt: skip
        _post(f"{url}/feedback", {"id": "client-chosen-id", "score": 0.5})
        _post(f"{url}/feedback", {"id": "never-routed", "correct": False})
        for tier in tiers:
            _post(f"{url}/feedback", {"id": f"forced-{tier}", "correct": tier != tiers[0]})

    rows = _wait_for_records(records, {*results, completion_id})
    for request_id, (result, prompt) in results.items():
        _check_rows(rows[request_id], result, prompt)
    assert {r["router_model"] for r in rows["streamed-id"]} == {"router_stream"}
    files = sorted(p.name for p in records.iterdir())  # one file per model instance (its instance name)
    assert files == ["router_0_0.jsonl", "router_stream_0_0.jsonl"], files
    assert rows[completion_id][-1]["accepted"] and rows[completion_id][-1]["tier"] == completion["usage"]["tier"]
    log = load_log(records)  # unlabelled records load as they are (replay reads them)
    assert log.n == len(rows) and log.unlabelled > 0 and read_any(records)

    out = tmp_path / "labelled.jsonl"
    assert calibrate_main(["join-labels", "--records", str(records), "--labels", str(feedback), "--out", str(out),
                           "--json"]) == 0  # fmt: skip
    labelled = load_log(out)
    labelled.require_labels()
    # the labelled requests (the label for a request never routed is left out)
    assert set(labelled.prompt_ids) == {completion_id, "client-chosen-id", *(f"forced-{t}" for t in tiers)}
    i = labelled.prompt_ids.index("client-chosen-id")
    assert labelled.score[i, labelled.tiers.index(results["client-chosen-id"][0].tier)] == 0.5

    # one prompt sent to every tier: grouped by prompt text, a complete labelled prompt (what fit needs)
    grouped = tmp_path / "grouped.jsonl"
    assert calibrate_main(["join-labels", "--records", str(records), "--labels", str(feedback), "--out",
                           str(grouped), "--group-by", "prompt"]) == 0  # fmt: skip
    log = load_log(grouped)
    forced = log.prompt_ids.index("forced-" + tiers[0])
    assert log.tiers == tiers and log.ok[forced].all()
    assert list(log.score[forced]) == [0.0] + [1.0] * (len(tiers) - 1)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_shadow_evaluation_records_agreement_and_its_cost_apart(recording_server, tmp_path: Path) -> None:
    server, records = recording_server
    tiers = server_tiers(server.grpc_url)
    accept_at_once = RouteOptions(confidence_threshold=-1000.0)  # answered by the start tier: the shadow has work
    with RouterClient(server.grpc_url, timeout_s=120) as client:
        answered = client.route(PROMPTS[0], model=SHADOW_MODEL, max_tokens=4, options=accept_at_once,
                                request_id="shadowed")  # fmt: skip
        on_top = client.route(PROMPTS[1], model=SHADOW_MODEL, max_tokens=4, options=RouteOptions(force_tier=tiers[-1]),
                              request_id="largest-answered")  # fmt: skip
    assert answered.tier != tiers[-1] and on_top.tier == tiers[-1]
    rows = _wait_for_records(records, {"shadowed", "largest-answered"})
    deadline = time.monotonic() + 60
    while not any(r.get("shadow") for r in rows["shadowed"]) and time.monotonic() < deadline:
        rows = _wait_for_records(records, {"shadowed"})  # the shadow call ends after the answer
    shadow = [r for r in rows["shadowed"] if r.get("shadow")]
    assert len(shadow) == 1 and shadow[0]["tier"] == tiers[-1] and shadow[0]["step"] == "shadow"
    assert shadow[0]["outcome"] == "ok" and 0.0 <= shadow[0]["agreement"] <= 1.0 and shadow[0]["cost_usd"] > 0
    _check_rows([r for r in rows["shadowed"] if not r.get("shadow")], answered, PROMPTS[0])  # cost: the request's
    assert not any(r.get("shadow") for r in rows["largest-answered"])  # the largest tier answered: nothing to shadow
    # its cost is counted apart: the shadow counter has it, the routed-cost counter has the requests' only
    shadow_cost = metric_value(server.metrics_url, "router_shadow_cost_usd_total", model=SHADOW_MODEL)
    assert shadow_cost == pytest.approx(shadow[0]["cost_usd"], rel=1e-4)
    routed = metric_value(server.metrics_url, "router_cost_usd_total", model=SHADOW_MODEL)
    assert routed == pytest.approx(answered.cost + on_top.cost, rel=1e-4)
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    lost = [line for line in text.splitlines() if line.startswith("router_outcome_records_lost_total{")]
    assert len(lost) == 3 and all(line.endswith(" 0") for line in lost), lost  # one series per recording model

    labelled = tmp_path / "proxy.jsonl"
    (tmp_path / "none.jsonl").write_text("")
    assert calibrate_main(["join-labels", "--records", str(records), "--labels", str(tmp_path / "none.jsonl"),
                           "--out", str(labelled), "--proxy-labels"]) == 0  # fmt: skip
    log = load_log(labelled)
    i = log.prompt_ids.index("shadowed")
    assert log.score[i, log.tiers.index(tiers[-1])] == 1.0
    assert log.score[i, log.tiers.index(answered.tier)] == shadow[0]["agreement"]


def test_recalibrated_policy_from_records_and_labels_serves_its_band(recording_server, tmp_path: Path) -> None:
    """The loop a platform team runs: a labelling sample (prompts sent to every tier) is recorded, labelled, joined
    and fitted; `--policy-out` writes router_shadow's next version with its fitted band, Triton hot-reloads it and the
    router exports that band for the drift alarms, and `drift-check` replays the live records against it. Last in
    this module: the reload leaves Triton 2.51's strict server readiness false (test_policy_reload.py)."""
    server, records = recording_server
    tiers = server_tiers(server.grpc_url)
    prompts = [f"Sample prompt {i}: what is {i} plus {i}?" for i in range(8)]
    labels = tmp_path / "labels.jsonl"
    with RouterClient(server.grpc_url, timeout_s=120) as client, labels.open("w") as out:
        for i, prompt in enumerate(prompts):
            for tier in tiers:
                request_id = f"sample-{i}-{tier}"
                client.route(prompt, max_tokens=4, options=RouteOptions(force_tier=tier), request_id=request_id)
                # the cheapest tier is right on half the prompts, the larger ones on all
                out.write(json.dumps({"id": request_id, "correct": tier != tiers[0] or i % 2 == 0}) + "\n")
    _wait_for_records(records, {f"sample-{i}-{t}" for i in range(len(prompts)) for t in tiers})
    grouped = tmp_path / "sample.jsonl"
    assert calibrate_main(["join-labels", "--records", str(records), "--labels", str(labels), "--out", str(grouped),
                           "--group-by", "prompt"]) == 0  # fmt: skip
    log = load_log(grouped)
    sample = [log.prompt_ids.index(f"sample-{i}-{tiers[0]}") for i in range(len(prompts))]
    assert log.tiers == tiers and log.ok[sample].all()

    model_dir = server.options.extra_model_repositories[0] / SHADOW_MODEL
    assert calibrate_main(["fit", "--calib", str(grouped), "--eval", str(grouped), "--target-quality", "0.9",
                           "--policy-out", str(model_dir), "--json"]) == 0  # fmt: skip
    written = load_policy(model_dir / "2" / "policy.yaml")
    assert written.version == 2 and written.fitted, "--policy-out records the band it was fitted with"
    grpcclient.InferenceServerClient(server.grpc_url).load_model(SHADOW_MODEL)
    deadline = time.monotonic() + 30
    while metric_value(server.metrics_url, "router_policy_version", model=SHADOW_MODEL) != 2:
        assert time.monotonic() < deadline, "the reloaded router exports its policy version"
        time.sleep(0.2)
    for tier, band in written.fitted.items():
        exported = metric_value(server.metrics_url, "router_fitted_escalation_rate", model=SHADOW_MODEL, tier=tier)
        assert exported == pytest.approx(band.escalation_rate)
        attempts = metric_value(server.metrics_url, "router_fitted_attempts", model=SHADOW_MODEL, tier=tier)
        assert attempts == band.attempts
    # the live records replayed against the new band (unlabelled rows are enough for the alarms)
    report = tmp_path / "drift.json"
    with report.open("w") as handle, contextlib.redirect_stdout(handle):
        assert calibrate_main(["drift-check", "--policy", str(model_dir / "2" / "policy.yaml"), "--log",
                               str(records), "--window", "10", "--json"]) == 0  # fmt: skip
    assert "alarms" in json.loads(report.read_text())
