"""Drift alarms (issue 18.3): the fitted band in the policy, the alarm rules, the Prometheus rules built from the same
constants, and `router-calibrate drift-check` on logs with and without a shift."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import write_outcome_log
from llm_router.core import drift
from llm_router.core.drift import Breach, TierAttempt, breaches, fitted_band, histogram_quantile
from llm_router.core.policy import PolicyError, load_policy, parse_policy
from router_calibration.cli import main as calibrate_main
from router_calibration.drift import band_for, replay_alarms, with_band
from router_calibration.logs import load_log
from router_calibration.replay import replay

PROJECT = Path(__file__).resolve().parents[2]
SHIPPED = PROJECT / "model_repository" / "router" / "1" / "policy.yaml"
RULES = PROJECT / "docker" / "prometheus" / "rules" / "router-drift.yml"
CHART_RULES = PROJECT / "deploy" / "helm" / "triton-llm-router" / "files" / "router-drift-rules.yaml"


def shipped_dict() -> dict:
    return yaml.safe_load(SHIPPED.read_text())


def band_entry(rate: float = 0.3, attempts: int = 500, quartiles: tuple[float, float] = (-1.0, -0.25)) -> dict:
    return {
        "attempts": attempts,
        "escalation_rate": rate,
        "confidence": {"p10": -2.0, "p25": quartiles[0], "p50": -0.5, "p75": quartiles[1], "p90": -0.1},
    }


# -- histogram_quantile ------------------------------------------------------------------------------------------


def test_histogram_quantile_interpolates_within_a_bucket_as_prometheus_does() -> None:
    # 10 values in (-1.0, -0.75], 10 in (-0.5, -0.25]: rank 10 of 20 is the top of the first bucket
    values = [-0.8] * 10 + [-0.3] * 10
    assert histogram_quantile(0.5, values) == pytest.approx(-0.75)
    # rank 5 of 20: half way through (-1.0, -0.75]
    assert histogram_quantile(0.25, values) == pytest.approx(-0.875)
    # rank 15: half way through (-0.5, -0.25] (the empty (-0.75, -0.5] bucket is passed over)
    assert histogram_quantile(0.75, values) == pytest.approx(-0.375)


def test_histogram_quantile_edges() -> None:
    assert math.isnan(histogram_quantile(0.5, []))
    assert histogram_quantile(0.5, [-20.0, -30.0]) == -8.0  # lowest bucket with bounds <= 0: its upper bound
    # rank 2.7 of 3 falls in (-0.001, 0], which holds the two zeros above the one -0.05: interpolated inside it
    assert histogram_quantile(0.9, [0.0, 0.0, -0.05]) == pytest.approx(-0.001 + 0.001 * (2.7 - 1) / 2)
    assert histogram_quantile(0.9, [-0.2, -0.2, -0.15]) == pytest.approx(-0.25 + 0.15 * 0.9)  # all in (-0.25, -0.1]
    # a value on a bound belongs to that bound's bucket (le)
    assert histogram_quantile(1.0, [-0.5]) == pytest.approx(-0.5)


# -- band and breaches -------------------------------------------------------------------------------------------


def test_fitted_band_counts_escalations_and_quantiles_per_tier() -> None:
    attempts = [TierAttempt("a", k < 3, -0.3) for k in range(10)] + [TierAttempt("b", False, None)] * 4
    band = fitted_band(attempts, ["a", "b", "c"])
    assert list(band) == ["a", "b"]
    assert band["a"]["attempts"] == 10 and band["a"]["escalation_rate"] == pytest.approx(0.3)
    assert band["a"]["confidence"]["p50"] == pytest.approx(histogram_quantile(0.5, [-0.3] * 10))
    assert band["b"] == {"attempts": 4, "escalation_rate": 0.0}  # no confidence: no quantiles


def _window(rate: float, n: int, confidence: float = -0.5, tier: str = "t") -> list[TierAttempt]:
    escalated = round(rate * n)
    return [TierAttempt(tier, k < escalated, confidence) for k in range(n)]


def test_breaches_follow_the_rules() -> None:
    band = {"t": band_entry(rate=0.3)}
    assert breaches(band, _window(0.3, 200)) == []
    [high] = breaches(band, _window(0.6, 200))
    assert (high.kind, high.live, high.fitted, high.attempts) == ("escalation_rate", 0.6, 0.3, 200)
    assert breaches(band, _window(0.6, drift.MIN_WINDOW_ATTEMPTS - 1)) == []  # too few attempts: quiet
    # beyond the tolerance but within 3 standard errors of a 40-attempt window (3 * sqrt(.21 / 40) = 0.217)
    assert breaches(band, _window(0.3 + drift.ESCALATION_RATE_TOLERANCE + 0.05, 40)) == []
    assert breaches(band, _window(0.3 + drift.ESCALATION_RATE_TOLERANCE + 0.05, 2000)) != []
    # median confidence below the fitted p25 / above p75 / within
    assert breaches(band, _window(0.3, 200, confidence=-1.7)) == [Breach("t", "confidence", -1.75, -1.0, 200)]
    assert [b.fitted for b in breaches(band, _window(0.3, 200, confidence=-0.05))] == [-0.25]
    assert breaches(band, _window(0.3, 200, confidence=-0.6)) == []
    # a band fitted on too few attempts, or no band at all: quiet
    assert breaches({"t": band_entry(rate=0.3, attempts=drift.MIN_FITTED_ATTEMPTS - 1)}, _window(0.9, 200)) == []
    assert breaches({}, _window(0.9, 200)) == []


# -- the policy schema -------------------------------------------------------------------------------------------


def test_policy_accepts_a_band_and_writes_it_back() -> None:
    data = shipped_dict()
    data["fitted"] = {"tier_small": band_entry(), "tier_medium": {"attempts": 40, "escalation_rate": 0.0}}
    policy = parse_policy(data)
    assert policy.fitted["tier_small"].confidence.p25 == -1.0
    assert policy.fitted["tier_medium"].confidence is None
    assert parse_policy(yaml.safe_load(policy.to_yaml())) == policy
    assert load_policy(SHIPPED).fitted is None  # the shipped policy is hand-set: no band, no alarm


@pytest.mark.parametrize(
    ("fitted", "message"),
    [
        ({"tier_small": {**band_entry(), "escalation_rate": 1.5}}, "fitted.tier_small.escalation_rate: must be <= 1"),
        ({"tier_small": {**band_entry(), "attempts": -1}}, "fitted.tier_small.attempts: must be >= 0"),
        ({"tier_small": {"escalation_rate": 0.2}}, "fitted.tier_small.attempts: required field is missing"),
        (
            {"tier_small": band_entry(quartiles=(-0.2, -0.9))},
            "fitted.tier_small.confidence: quantiles must not decrease from p10 to p90",
        ),
        (
            {"tier_small": {**band_entry(), "confidence": {**band_entry()["confidence"], "p90": 0.5}}},
            "fitted.tier_small.confidence.p90: must be <= 0",
        ),
        ({"tier_typo": band_entry()}, "fitted.tier_typo: unknown tier 'tier_typo'"),
        ({"tier_small": {**band_entry(), "rate": 0.1}}, "fitted.tier_small.rate: unknown field"),
    ],
)
def test_policy_band_errors_name_the_field(fitted: dict, message: str) -> None:
    data = shipped_dict()
    data["fitted"] = fitted
    with pytest.raises(PolicyError) as info:
        parse_policy(data)
    assert message in str(info.value)


# -- the Prometheus rules ----------------------------------------------------------------------------------------


def test_rules_files_are_built_from_the_constants() -> None:
    """docker's rules file and the chart's copy are what llm_router.core.drift builds (deploy/generate.py writes
    them); the thresholds in the expressions are the constants the replay alarms use."""
    assert RULES.read_text() == drift.rules_yaml(), "run `python deploy/generate.py`"
    assert CHART_RULES.read_text() == drift.rules_yaml(), "run `python deploy/generate.py`"
    rules = {r.get("alert") or r["record"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    escalation, confidence = rules["LLMRouterEscalationRateDrift"], rules["LLMRouterConfidenceDrift"]
    for alert in (escalation, confidence):
        assert alert["for"] == drift.ALERT_FOR
        assert f">= {drift.MIN_WINDOW_ATTEMPTS}\n" in alert["expr"] and alert["expr"].endswith(
            f">= {drift.MIN_FITTED_ATTEMPTS}"
        )
    assert f"> {drift.ESCALATION_RATE_TOLERANCE:g}\n" in escalation["expr"]
    assert f"> {drift.ESCALATION_RATE_Z:g} * sqrt(" in escalation["expr"]
    assert f"histogram_quantile({drift.CONFIDENCE_LIVE_QUANTILE:g}," in rules["router:confidence_p50:30m"]["expr"]
    low, high = (drift.QUANTILES[name] for name in drift.CONFIDENCE_BAND)
    assert f'quantile="{low:g}"' in rules["router:fitted_confidence_p25"]["expr"]
    assert f'quantile="{high:g}"' in rules["router:fitted_confidence_p75"]["expr"]
    assert all(f"[{drift.RATE_WINDOW}]" in r["expr"] for r in rules.values() if "[" in r["expr"])
    prometheus = yaml.safe_load((PROJECT / "docker" / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    compose = (PROJECT / "docker-compose.yml").read_text()
    assert "./docker/prometheus/rules:/etc/prometheus/rules:ro" in compose


def test_chart_prometheus_rule_carries_the_drift_groups() -> None:
    rendered = yaml.safe_load((PROJECT / "deploy" / "k8s" / "base" / "prometheusrule-llm-router.yaml").read_text())
    groups = {g["name"]: g for g in rendered["spec"]["groups"]}
    for group in drift.prometheus_rules()["groups"]:
        assert groups[group["name"]] == group


def _promtool() -> str | None:
    in_venv = Path(sys.executable).parent / "promtool"  # `make setup` puts it there
    return os.environ.get("PROMTOOL") or shutil.which("promtool") or (str(in_venv) if in_venv.exists() else None)


def _series(labels: str, start: float, per_min: float, minutes: int = 90) -> dict:
    return {"series": labels, "values": f"{start:g}+{per_min:g}x{minutes}"}


def _router_series(model: str, attempts: float, escalations: float, conf_bucket: float, band: dict | None) -> list:
    """One model's tier_small per minute: attempts, escalations, its confidences all in the bucket le=conf_bucket."""
    tier = f'model="{model}",tier="tier_small"'
    series = [
        _series(f"router_tier_attempts_total{{{tier}}}", 0, attempts),
        _series(f'router_escalations_total{{model="{model}",from_tier="tier_small",to_tier="tier_medium"}}',
                0, escalations),
    ]  # fmt: skip
    for bound in [*drift.CONFIDENCE_BUCKETS, "+Inf"]:
        inside = bound == "+Inf" or bound >= conf_bucket
        series.append(_series(f'router_confidence_bucket{{{tier},le="{bound}"}}', 0, attempts if inside else 0))

    def constant(value: float | None) -> str:  # promtool's series notation has no NaN repeat: spell it out
        return " ".join(["NaN"] * 91) if value is None else f"{value:g}x90"

    fitted = band or {"escalation_rate": None, "confidence": dict.fromkeys(drift.QUANTILES)}
    series.append({"series": f"router_fitted_attempts{{{tier}}}", "values": constant(500 if band else None)})
    rate = fitted["escalation_rate"]
    series.append({"series": f"router_fitted_escalation_rate{{{tier}}}", "values": constant(rate)})
    for name, q in drift.QUANTILES.items():
        value = fitted["confidence"][name]
        series.append({"series": f'router_fitted_confidence{{{tier},quantile="{q:g}"}}', "values": constant(value)})
    return series


def test_prometheus_rules_fire_on_drift_and_stay_quiet_otherwise(tmp_path: Path) -> None:
    """promtool's rule unit test on synthetic series: `drifted` escalates 60% (fitted 30%) with confidences in
    (-2, -1.5] (fitted p25 -1): both alarms; `steady` stays in its band, `idle` drifts on 1 attempt per 10 minutes,
    `unfitted` has no band (NaN gauges, as the shipped policy): no alarm."""
    promtool = _promtool()
    if promtool is None:
        pytest.skip("promtool not found (apt-get install prometheus, or set PROMTOOL)")
    assert subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True).returncode == 0
    band = band_entry(rate=0.3, quartiles=(-1.0, -0.25))
    series = (
        _router_series("drifted", 10, 6, -1.5, band)
        + _router_series("steady", 10, 3, -0.5, band)
        + _router_series("idle", 0.1, 0.06, -1.5, band)
        + _router_series("unfitted", 10, 6, -1.5, None)
    )
    alerts = {r["alert"]: r for r in yaml.safe_load(RULES.read_text())["groups"][1]["rules"]}

    def expected(alert: str, value: str) -> list[dict]:
        """The one alert of `drifted`, its annotations as Prometheus renders their templates."""
        annotations = {
            key: text.replace("{{ $labels.model }}", "drifted")
            .replace("{{ $labels.tier }}", "tier_small")
            .replace('{{ $value | printf "%.2f" }}', value)
            .replace('{{ $value | printf "%.3f" }}', value)
            for key, text in alerts[alert]["annotations"].items()
        }
        labels = {"model": "drifted", "tier": "tier_small", "severity": "warning"}
        return [{"exp_labels": labels, "exp_annotations": annotations}]

    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [  # fmt: skip
                    # rate 0.6 against 0.3; median: half way through (-2, -1.5]
                    {
                        "eval_time": "85m",
                        "alertname": "LLMRouterEscalationRateDrift",
                        "exp_alerts": expected("LLMRouterEscalationRateDrift", "0.30"),
                    },
                    {
                        "eval_time": "85m",
                        "alertname": "LLMRouterConfidenceDrift",
                        "exp_alerts": expected("LLMRouterConfidenceDrift", "-1.750"),
                    },
                    # the breach holds from minute 1 (the first increase) but fires only after `for:` (15m)
                    {"eval_time": "15m", "alertname": "LLMRouterEscalationRateDrift", "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "tests.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- replay: the band written by fit --policy-out, and drift-check --------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A policy fitted on a 600-prompt log by `router-calibrate fit --policy-out` (version 2 over the shipped one)."""
    work = tmp_path_factory.mktemp("drift")
    model_dir = work / "router"
    (model_dir / "1").mkdir(parents=True)
    shutil.copy(SHIPPED, model_dir / "1" / "policy.yaml")
    calib = write_outcome_log(work / "calib.jsonl", 600, seed=0)
    args = ["--calib", str(calib), "--eval", str(calib), "--target-quality", "0.9", "--policy-out", str(model_dir)]
    assert calibrate_main([*args, "--json"]) == 0
    return model_dir / "2" / "policy.yaml", calib


def test_fit_policy_out_writes_the_band_replay_gives(fitted: tuple[Path, Path]) -> None:
    path, calib_path = fitted
    policy, calib = load_policy(path), load_log(calib_path)
    assert policy.fitted is not None and list(policy.fitted) == policy.tier_names
    first = policy.tier_names[0]
    # every prompt starts at the first tier, so its escalation rate is the share of prompts that escalated
    assert policy.fitted[first].attempts == calib.n
    assert policy.fitted[first].escalation_rate == pytest.approx(replay(policy, calib).escalation_rate, abs=1e-6)
    j = calib.tiers.index(first)
    assert policy.fitted[first].confidence.p50 == pytest.approx(histogram_quantile(0.5, calib.confidence[:, j]))
    assert policy.fitted[policy.tier_names[-1]].escalation_rate == 0.0
    assert band_for(policy, calib) == {k: v.model_dump(exclude_none=True) for k, v in policy.fitted.items()}


def test_with_band_maps_tier_names(fitted: tuple[Path, Path]) -> None:
    path, calib_path = fitted
    policy, calib = load_policy(path), load_log(calib_path)
    tier_map = {t: t.replace("tier_", "router_") for t in calib.tiers}
    text = policy.to_yaml()
    for log_name, router_name in tier_map.items():
        text = text.replace(log_name, router_name)
    renamed = yaml.safe_load(text)
    renamed.pop("fitted")
    mapped = with_band(parse_policy(renamed), calib, tier_map)
    assert {tier_map[k]: v for k, v in policy.fitted.items()} == mapped.fitted
    assert replay_alarms(mapped, calib, 100, tier_map=tier_map) == []


def test_replay_alarms_fire_on_a_shift_and_stay_quiet_without(fitted: tuple[Path, Path], tmp_path: Path) -> None:
    path, _ = fitted
    policy = load_policy(path)
    steady = load_log(write_outcome_log(tmp_path / "steady.jsonl", 600, seed=1))
    assert replay_alarms(policy, steady, window=100) == []
    shifted = load_log(write_outcome_log(tmp_path / "shifted.jsonl", 600, seed=2, shift=0.35))
    alarms = replay_alarms(policy, shifted, window=100)
    kinds = {(a.tier, a.kind) for a in alarms}
    assert ("tier_small", "escalation_rate") in kinds and ("tier_medium", "confidence") in kinds
    small = next(a for a in alarms if (a.tier, a.kind) == ("tier_small", "escalation_rate"))
    assert small.live > small.fitted + drift.ESCALATION_RATE_TOLERANCE
    assert small.start == 50  # the breach must hold over half a window (for:) before it fires
    # drift half way: the alarm fires only in the drifted half
    both = tmp_path / "both.jsonl"
    lines = (tmp_path / "steady.jsonl").read_text().splitlines()[:900]  # 300 prompts, 3 rows each
    shifted_lines = (tmp_path / "shifted.jsonl").read_text().splitlines()[:900]
    lines += [line.replace('"prompt_id": "p', '"prompt_id": "q') for line in shifted_lines]
    both.write_text("\n".join(lines) + "\n")
    late = replay_alarms(policy, load_log(both), window=100)
    assert late and min(a.start for a in late) >= 250
    # no band, no alarm
    assert replay_alarms(policy.model_copy(update={"fitted": None}), shifted) == []
    with pytest.raises(ValueError, match="window"):
        replay_alarms(policy, shifted, window=0)


def test_drift_check_cli(fitted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = fitted
    shifted = write_outcome_log(tmp_path / "shifted.jsonl", 600, seed=2, shift=0.35)
    steady = write_outcome_log(tmp_path / "steady.jsonl", 600, seed=1)
    assert calibrate_main(["drift-check", "--policy", str(path), "--log", str(shifted), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fired"] and report["window"] == 100 and report["prompts"] == 600
    assert report["rules"]["escalation_rate_tolerance"] == drift.ESCALATION_RATE_TOLERANCE
    assert {"tier", "kind", "start", "live", "fitted", "attempts"} <= set(report["alarms"][0])
    assert calibrate_main(["drift-check", "--policy", str(path), "--log", str(steady)]) == 0
    assert "no alarm" in capsys.readouterr().out
    assert calibrate_main(["drift-check", "--policy", str(SHIPPED), "--log", str(steady)]) == 0
    assert "no fitted band" in capsys.readouterr().out
    assert calibrate_main(["drift-check", "--policy", str(path), "--log", str(steady), "--tier-map", "x=y"]) == 0
    capsys.readouterr()
    assert calibrate_main(["drift-check", "--policy", str(path), "--log", str(steady), "--window", "0"]) == 2
