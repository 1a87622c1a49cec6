import copy
import json
from pathlib import Path

import pytest
import yaml
from helpers import policy_tier
from llm_router.core.policy import INTENTS, PolicyError, load_policy, parse_policy, write_policy

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "model_repository" / "router" / "1" / "policy.yaml"

BASE = {
    "version": 1,
    "tiers": [
        policy_tier("tier_small", 5.0, confidence={"function": "mean_logprob"}, escalation_threshold=-1.0),
        policy_tier(
            "tier_medium", 8.0, confidence={"function": "first_k_mean", "params": {"k": 4}}, escalation_threshold=-0.5
        ),
        policy_tier("tier_large", 15.0),
    ],
    "start_tier_by_intent": {
        **dict.fromkeys(INTENTS, "tier_small"),
        "coding": "tier_medium",
        "planning": "tier_large",
    },
    "difficulty_rule": {"above": 0.7, "min_tier": "tier_medium"},
    "max_escalations": 2,
    "default_start_tier": "tier_small",
    "holdback_tokens": 8,
}


def broken(**changes):
    """BASE with changes applied; keys are dotted paths like 'tiers.1.cost_per_1k_output'."""
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DELETE:
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


_DELETE = object()


def test_valid_policy_parses_and_lookups():
    p = parse_policy(BASE)
    assert p.tier_names == ["tier_small", "tier_medium", "tier_large"]
    assert p.tier_index("tier_medium") == 1
    assert p.tier("tier_medium").confidence.params == {"k": 4}
    assert p.largest_tier.name == "tier_large"
    assert p.tier("tier_large").escalation_threshold is None
    assert p.difficulty_rule.min_tier == "tier_medium"


def test_legacy_difficulty_rule_below_reads_as_above():
    """`below` was a bound on P(correct); difficulty is now P(wrong), so `below: 0.3` means `above: 0.7`."""
    data = copy.deepcopy(BASE)
    data["difficulty_rule"] = {"below": 0.3, "min_tier": "tier_medium"}
    assert parse_policy(data).difficulty_rule.above == pytest.approx(0.7)
    data["difficulty_rule"] = {"below": 0.3, "above": 0.6, "min_tier": "tier_medium"}
    with pytest.raises(PolicyError, match="below"):
        parse_policy(data)


def test_default_policy_file_loads():
    p = load_policy(DEFAULT_POLICY)
    assert p.tier_names == ["tier_small", "tier_medium", "tier_large"]
    assert p.start_tier_by_intent["planning"] == "tier_large"
    assert p.start_tier_by_intent["summarization"] == "tier_small"
    assert p.holdback_tokens == 8


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tiers.1.cost_per_1k_output": -1}, "tiers[1].cost_per_1k_output: must be >= 0"),
        ({"tiers.0.max_tokens": 0}, "tiers[0].max_tokens: must be >= 1"),
        ({"tiers.2.deadline_s": 0}, "tiers[2].deadline_s: must be > 0"),
        ({"tiers.0.escalation_threshold": 0.5}, "tiers[0].escalation_threshold: must be <= 0"),
        (
            {"tiers.0.escalation_threshold": float("nan")},
            "tiers[0].escalation_threshold: must be a finite number",
        ),
        ({"tiers.0.name": "tier_medium"}, "tiers[1].name: duplicate tier name 'tier_medium'"),
        (
            {"tiers.0.confidence": {"function": "median_logprob"}},
            "tiers[0].confidence: unknown confidence function",
        ),
        ({"tiers.1.confidence.params": {"k": 0}}, "tiers[1].confidence: k must be an integer >= 1"),
        ({"tiers.1.confidence.params": {"q": 2}}, "tiers[1].confidence: bad parameters for first_k_mean"),
        ({"tiers.1.deadline": 3}, "tiers[1].deadline: unknown field"),
        ({"tiers.1.max_tokens": _DELETE}, "tiers[1].max_tokens: required field is missing"),
        (
            {"tiers.2.cost_per_1k_output": 0.0001, "tiers.2.cost_per_1k_input": 0.0001},
            "tiers[2]: tiers must be ordered by cost",
        ),
        ({"start_tier_by_intent.coding": "tier_xl"}, "start_tier_by_intent.coding: unknown tier 'tier_xl'"),
        ({"start_tier_by_intent.poetry": "tier_small"}, "start_tier_by_intent: unknown intent(s) ['poetry']"),
        ({"start_tier_by_intent.planning": _DELETE}, "start_tier_by_intent: missing intent(s) ['planning']"),
        ({"default_start_tier": "tier_tiny"}, "default_start_tier: unknown tier 'tier_tiny'"),
        ({"difficulty_rule.min_tier": "big"}, "difficulty_rule.min_tier: unknown tier 'big'"),
        ({"difficulty_rule.above": 1.5}, "difficulty_rule.above: must be <= 1"),
        ({"max_escalations": -1}, "max_escalations: must be >= 0"),
        ({"holdback_tokens": -2}, "holdback_tokens: must be >= 0"),
        ({"version": 0}, "version: must be >= 1"),
        ({"tiers": []}, "tiers: must have at least 1 item(s)"),
    ],
)
def test_invalid_field_is_named(changes, expected):
    with pytest.raises(PolicyError) as err:
        parse_policy(broken(**changes))
    assert expected in str(err.value)


def test_all_errors_reported_together():
    with pytest.raises(PolicyError) as err:
        parse_policy(broken(**{"tiers.0.max_tokens": 0, "max_escalations": -1}))
    assert "tiers[0].max_tokens" in str(err.value) and "max_escalations" in str(err.value)


def test_load_yaml_and_json_roundtrip(tmp_path):
    p = parse_policy(BASE)
    yml = tmp_path / "policy.yaml"
    write_policy(p, yml, header="fitted by test")
    assert yml.read_text().startswith("# fitted by test\n")
    assert load_policy(yml) == p
    js = tmp_path / "policy.json"
    js.write_text(json.dumps(BASE))
    assert load_policy(js) == p


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(PolicyError, match="top level must be a mapping"):
        load_policy(lst)
    neg = tmp_path / "neg.yaml"
    neg.write_text(yaml.safe_dump(broken(**{"tiers.1.cost_per_1k_output": -1})))
    with pytest.raises(PolicyError, match=r"neg.yaml: tiers\[1\].cost_per_1k_output: must be >= 0"):
        load_policy(neg)


def test_policy_is_immutable():
    p = parse_policy(BASE)
    with pytest.raises(Exception):  # noqa: B017 - pydantic frozen model
        p.max_escalations = 5
