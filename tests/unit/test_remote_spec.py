"""The `remote:` block of a policy tier (llm_router.core.policy.RemoteSpec): kinds, URLs, keys only by env name."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import policy_tier
from llm_router.core.policy import INTENTS, PolicyError, RemoteSpec, load_policy, parse_policy

SECRET = "sk-live-abcdefghijklmnop0123456789"


def _policy(remote: dict[str, Any] | None) -> dict[str, Any]:
    large = policy_tier("tier_large", 30.0)
    if remote is not None:
        large["remote"] = remote
    return {
        "version": 1,
        "tiers": [policy_tier("tier_small", 5.0), large],
        "start_tier_by_intent": dict.fromkeys(INTENTS, "tier_small"),
        "max_escalations": 1,
        "default_start_tier": "tier_small",
    }


def _remote(remote: dict[str, Any]) -> RemoteSpec:
    spec = parse_policy(_policy(remote)).tier("tier_large").remote
    assert spec is not None
    return spec


def _error(remote: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(_policy(remote))
    return str(info.value)


def test_triton_tier_as_in_the_readme() -> None:
    spec = _remote({"url": "trtllm:8001", "model": "ensemble"})
    assert (spec.kind, spec.url, spec.model, spec.api_key_env, spec.confidence_when_missing) == (
        "triton", "trtllm:8001", "ensemble", None, None,
    )  # fmt: skip


def test_openai_tier_with_every_field() -> None:
    spec = _remote(
        {
            "kind": "openai",
            "url": "https://llm.example.com/v1",
            "model": "llama-3.1-70b-instruct",
            "api": "completions",
            "api_key_env": "ROUTER_LARGE_API_KEY",
            "confidence_when_missing": -1.0,
        }
    )
    assert spec.kind == "openai" and spec.api == "completions" and spec.confidence_when_missing == -1.0


@pytest.mark.parametrize(
    ("url", "kind"), [("http://127.0.0.1:8080/v1", "openai"), ("https://x.example/v1", "openai"), ("h:8001", "triton")]
)
def test_kind_defaults_from_the_url(url: str, kind: str) -> None:
    assert _remote({"url": url}).kind == kind


def test_unknown_kind_is_refused_naming_the_field() -> None:
    message = _error({"kind": "grpc", "url": "h:8001"})
    assert "tiers[1].remote.kind" in message and "'triton'" in message and "'openai'" in message


def test_missing_url_is_refused_naming_the_field() -> None:
    assert "tiers[1].remote.url: required field is missing" in _error({"kind": "openai", "model": "m"})
    assert "tiers[1].remote.url: must not be empty" in _error({"url": ""})


def test_inline_api_key_is_refused_and_not_repeated() -> None:
    message = _error({"url": "https://llm.example.com/v1", "api_key": SECRET})
    assert "tiers[1].remote.api_key" in message and "api_key_env" in message
    assert SECRET not in message


def test_api_key_env_must_be_a_variable_name_not_the_key() -> None:
    message = _error({"url": "https://llm.example.com/v1", "api_key_env": SECRET})
    assert "tiers[1].remote.api_key_env" in message and "NAME of an environment variable" in message
    assert SECRET not in message


def test_urls_must_match_the_kind() -> None:
    assert "host:port without a scheme" in _error({"kind": "triton", "url": "http://trtllm:8001"})
    assert "http:// or https://" in _error({"kind": "openai", "url": "llm.example.com/v1"})


def test_confidence_when_missing_is_a_log_prob() -> None:
    assert "tiers[1].remote.confidence_when_missing: must be <= 0" in _error(
        {"url": "https://x.example/v1", "confidence_when_missing": 0.5}
    )


def test_unknown_field_is_refused() -> None:
    assert "tiers[1].remote.timeout: unknown field" in _error({"url": "h:1", "timeout": 3})


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    policy = parse_policy(_policy({"url": "https://x.example/v1", "api_key_env": "K", "confidence_when_missing": -2}))
    path = tmp_path / "policy.yaml"
    path.write_text(policy.to_yaml())
    again = load_policy(path)
    assert again == policy
    assert "api_key:" not in path.read_text()
    assert yaml.safe_load(path.read_text())["tiers"][1]["remote"]["kind"] == "openai"


def test_policy_without_remote_is_unchanged() -> None:
    data = _policy(None)
    assert parse_policy(copy.deepcopy(data)).tier("tier_large").remote is None
