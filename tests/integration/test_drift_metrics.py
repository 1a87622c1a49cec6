"""Drift alarms against the real server (issue 18.3): the router exports the fitted band of the policy it serves as
gauges on the metrics port beside the live per-tier attempts, and a hot-reloaded policy version replaces them."""

from __future__ import annotations

import math
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from helpers import router_inputs, server_options
from llm_router.core.drift import QUANTILES
from llm_router.core.policy import parse_policy, write_policy
from prometheus_client.parser import text_string_to_metric_families
from router_export.stand_in import overlay_repository
from router_launcher.serve import LocalTritonServer

PROJECT = Path(__file__).resolve().parents[2]
SERVED = overlay_repository(PROJECT / "model_repository")
MODEL = "router_drift"
NEVER_CONFIDENT = -1e-9  # no answer of a random-weight stand-in reaches this mean log-prob


def band(rate: float, p25: float) -> dict:
    return {
        "attempts": 400,
        "escalation_rate": rate,
        "confidence": {"p10": p25 - 1.0, "p25": p25, "p50": p25 / 2, "p75": p25 / 4, "p90": p25 / 8},
    }


def write_version(model_dir: Path, version: int, fitted: dict | None) -> None:
    """model_dir/<version>: the shipped router's model.py and policy, with `fitted` as its band."""
    target = model_dir / str(version)
    target.mkdir()
    shutil.copy2(PROJECT / "model_repository" / "router" / "1" / "model.py", target / "model.py")
    data = yaml.safe_load((PROJECT / "model_repository" / "router" / "1" / "policy.yaml").read_text())
    data["version"] = version
    if fitted is not None:
        data["fitted"] = fitted
    write_policy(parse_policy(data), target / "policy.yaml")


def samples(url: str, name: str) -> dict[tuple[str, ...], float]:
    """MODEL's samples of `name`: (tier, quantile) or (tier,) or () -> value."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("model") == MODEL:
                key = tuple(sample.labels[k] for k in ("tier", "quantile") if k in sample.labels)
                out[key] = sample.value
    return out


def fitted_gauges(url: str) -> dict[str, dict]:
    """The band the router exports, per tier, in the policy's shape (NaN where the tier has none)."""
    attempts = samples(url, "router_fitted_attempts")
    rates = samples(url, "router_fitted_escalation_rate")
    quantiles = samples(url, "router_fitted_confidence")
    by_q = {f"{q:g}": name for name, q in QUANTILES.items()}
    return {
        tier: {
            "attempts": attempts[(tier,)],
            "escalation_rate": rates[(tier,)],
            "confidence": {by_q[q]: v for (t, q), v in quantiles.items() if t == tier},
        }
        for (tier,) in rates
    }


def gauges_become(url: str, version: int, timeout_s: float = 20) -> dict[str, dict]:
    deadline = time.monotonic() + timeout_s
    while samples(url, "router_policy_version").get(()) != version and time.monotonic() < deadline:
        time.sleep(0.2)
    assert samples(url, "router_policy_version").get(()) == version
    return fitted_gauges(url)


@pytest.fixture(scope="module")
def drift_server(tmp_path_factory: pytest.TempPathFactory):
    """A server of its own (a version change leaves Triton 2.51's strict server readiness false, see
    test_policy_reload.py), serving a copy of the router whose version 1 policy has a band."""
    work = tmp_path_factory.mktemp("drift")
    model_dir = work / "models" / MODEL
    model_dir.mkdir(parents=True)
    config = (PROJECT / "model_repository" / "router" / "config.pbtxt").read_text()
    (model_dir / "config.pbtxt").write_text(config.replace('name: "router"', f'name: "{MODEL}"'))
    write_version(model_dir, 1, {"tier_small": band(0.3, -1.0), "tier_medium": band(0.2, -0.8)})
    server = LocalTritonServer(server_options(SERVED, work, extra_model_repositories=[work / "models"]))
    server.start()
    try:
        yield server, model_dir
    finally:
        server.stop()


def _route_escalating(url: str) -> None:
    client = grpcclient.InferenceServerClient(url)
    client.infer(
        MODEL,
        router_inputs("Summarize: the meeting moved to Friday at noon."),
        parameters={"max_tier": "tier_medium", "confidence_threshold": NEVER_CONFIDENT},
        client_timeout=60,
    )
    client.close()


def test_band_gauges_follow_the_served_policy_version(drift_server) -> None:
    server, model_dir = drift_server
    url = server.metrics_url
    exported = gauges_become(url, 1)
    assert exported["tier_small"] == {**band(0.3, -1.0), "attempts": 400.0}
    assert exported["tier_medium"]["escalation_rate"] == 0.2
    assert math.isnan(exported["tier_large"]["escalation_rate"]), "a tier without a band reads NaN"
    assert all(math.isnan(v) for v in exported["tier_large"]["confidence"].values())

    # the live side: an answered attempt per tier tried, and the escalation between them
    attempts = samples(url, "router_tier_attempts_total")
    escalations = samples(server.metrics_url, "router_escalations_total")
    assert attempts[("tier_large",)] == 0, "every tier's attempts series exists from the load"
    _route_escalating(server.grpc_url)
    deadline = time.monotonic() + 10
    while samples(url, "router_tier_attempts_total")[("tier_medium",)] < attempts[("tier_medium",)] + 1:
        assert time.monotonic() < deadline, "the router records metrics just after answering"
        time.sleep(0.1)
    after = samples(url, "router_tier_attempts_total")
    assert after[("tier_small",)] == attempts[("tier_small",)] + 1
    assert after[("tier_medium",)] == attempts[("tier_medium",)] + 1
    assert np.isclose(sum(samples(url, "router_escalations_total").values()), sum(escalations.values()) + 1)

    # a new version with another band (tier_medium's dropped), hot-reloaded: the gauges follow
    write_version(model_dir, 2, {"tier_small": band(0.45, -1.5)})
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.load_model(MODEL)
    exported = gauges_become(url, 2)
    assert exported["tier_small"]["escalation_rate"] == 0.45
    assert exported["tier_small"]["confidence"]["p25"] == -1.5
    assert math.isnan(exported["tier_medium"]["escalation_rate"]), "a band the new version lacks must not linger"

    # a version without a band (the shipped, hand-set policy): every fitted gauge reads NaN, so no alarm can fire
    write_version(model_dir, 3, None)
    client.load_model(MODEL)
    exported = gauges_become(url, 3)
    assert all(math.isnan(e["escalation_rate"]) and math.isnan(e["attempts"]) for e in exported.values())
    client.close()
