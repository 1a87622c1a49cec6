"""router-eval against the real local tritonserver (tiny tiers: the plumbing, not the accuracy)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from llm_router.core.policy import load_policy
from router_calibration.logs import load_log
from router_eval.data import load_rows
from router_eval.runner import ConfidenceChoice
from router_launcher.serve import LocalTritonServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "evaluation" / "router_eval" / "data" / "sample.jsonl"
ROUTER_EVAL = Path(sys.executable).parent / "router-eval"
POLICY = load_policy(ROOT / "model_repository/router/1/policy.yaml")


def _policy_key(tier: str) -> str:
    spec = POLICY.tier(tier).confidence
    return ConfidenceChoice.of(spec.function, spec.params).key


def _require(grpc_client: grpcclient.InferenceServerClient, *models: str) -> None:
    missing = [m for m in models if not grpc_client.is_model_ready(m)]
    if missing:
        pytest.skip(f"models not loaded on the test server: {', '.join(missing)}")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROUTER_EVAL), *args], capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)


def test_tiers_self_verify_log_and_plot(triton_server: LocalTritonServer, grpc_client, tmp_path):
    _require(grpc_client, "tier_small", "tier_medium")
    rows = load_rows(SAMPLE)[:12]  # capitals and sums: two sources
    log_path, plot = tmp_path / "log.jsonl", tmp_path / "cov.png"
    done = _run(
        "--url", triton_server.grpc_url, "--data", str(SAMPLE), "--limit", "12", "--tiers", "tier_small",
        "tier_medium", "--self-verify", "--max-tokens", "8", "--out", str(log_path), "--plot", str(plot),
        "--json", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["tiers"]) == {"tier_small", "tier_medium"}
    for tier, summary in report["tiers"].items():
        assert summary["n"] == 12 and summary["errors"] == 0
        assert 0.0 <= summary["accuracy"] <= 1.0
        assert summary["confidence_function"] == _policy_key(tier)  # the policy's function for that tier
        assert set(summary["confidences"]) == {"mean_logprob", "min_logprob", "first_k_mean:k=8", "self_verify"}
        assert set(summary["accuracy_at_coverage"]) == {f"{c / 10:g}" for c in range(1, 11)}
        assert summary["cost_usd"] > 0
    assert plot.stat().st_size > 1000
    # the outcome log: one row per (prompt, tier), read back by router-calibrate's reader
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(lines) == 24
    log = load_log(log_path)
    assert log.tiers == ["tier_small", "tier_medium"]
    assert sorted(log.prompt_ids) == sorted(f"{r.source}:{r.id}" for r in rows)  # mixed sources key by benchmark
    assert log.ok.all()
    assert (log.tokens_in > 0).all() and (log.tokens_out > 0).all() and (log.latency_ms > 0).all()
    for line in lines:
        # the log's confidence is the policy's function of the same answer; the tier answered something
        assert line["confidence_function"] == _policy_key(line["tier"])
        assert line["confidence"] == line[f"conf.{_policy_key(line['tier'])}"]
        assert line["confidence"] <= 0 and line["tokens_out"] <= 8
        assert line["verdict"] in ("yes", "no", "other")
        assert line["conf.self_verify"] <= 0 or math.isinf(line["conf.self_verify"])


def test_router_section(triton_server: LocalTritonServer, grpc_client):
    _require(grpc_client, "router", "intent_classifier", "tier_small", "tier_medium", "tier_large")
    done = _run(
        "--url", triton_server.grpc_url, "--data", str(SAMPLE), "--limit", "4", "--router", "--max-tokens", "8",
        "--json", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tiers"] == {}
    router = report["router"]
    assert router["n"] == 4 and router["errors"] == 0
    assert sum(router["tier_mix"].values()) == 4
    assert set(router["tier_mix"]) <= {"tier_small", "tier_medium", "tier_large"}
    assert 0.0 <= router["escalation_rate"] <= 1.0 and router["cost_usd"] > 0


def test_unloaded_tier_is_a_clear_error(triton_server: LocalTritonServer, tmp_path):
    policy = tmp_path / "policy.yaml"
    text = (ROOT / "model_repository/router/1/policy.yaml").read_text()
    policy.write_text(text.replace("tier_large", "tier_not_served"))
    done = _run(
        "--url", triton_server.grpc_url, "--data", str(SAMPLE), "--policy", str(policy), "--tiers",
        "tier_not_served", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 2
    assert "tier_not_served" in done.stderr and "not ready" in done.stderr
