"""The routing policy file: one pydantic schema, validated on load, errors that name the bad field.

A policy file is YAML (``yaml.safe_load``) or JSON (``.json``), versioned with the router model
(``model_repository/router/<version>/policy.yaml``). Every problem becomes a ``PolicyError`` whose message
lists each bad field by its path, e.g. ``tiers[1].cost_per_1k_output: must be >= 0``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_router.core.confidence import check_confidence_params

INTENTS: tuple[str, ...] = (
    "summarization",
    "extraction",
    "classification",
    "factual_qa",
    "rewriting",
    "creative_writing",
    "coding",
    "reasoning",
    "planning",
)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class PolicyError(ValueError):
    """The policy file is missing, unreadable or invalid; the message names each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfidenceSpec(_Strict):
    """Which registered confidence function scores a tier's answer, and its parameters (e.g. k).

    `self_verify` (a verification function, llm_router.core.confidence.needs_verification) makes the router call
    the tier a second time to ask whether its answer is correct, and scores that verdict.
    """

    function: str = "mean_logprob"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_function(self) -> ConfidenceSpec:
        check_confidence_params(self.function, self.params)
        return self


class RemoteSpec(_Strict):
    """A tier served outside this Triton server; the router calls it with llm_router.router.remote.

    - ``kind: triton``: another Triton server (e.g. TensorRT-LLM's ``ensemble``) over gRPC; ``url`` is
      ``host:port`` (tritonclient's form, no scheme); ``model`` defaults to the tier's name.
    - ``kind: openai``: an OpenAI-compatible endpoint; ``url`` is its base URL including ``/v1`` (as the OpenAI
      SDK's ``base_url``); ``model`` defaults to the tier's name; ``api: chat`` posts to ``/chat/completions``,
      ``api: completions`` to ``/completions``; log-probs are always requested.
    - ``kind`` may be left out: a URL with an http(s) scheme means ``openai``, anything else ``triton``.
    - ``api_key_env``: the NAME of an environment variable holding the API key (sent as ``Authorization: Bearer``;
      gRPC metadata for ``triton``), read at call time. A key itself is never accepted in the file.
    - ``confidence_when_missing``: the confidence (log-prob scale, <= 0) given to an answer that came without
      log-probs (an endpoint that does not return them); unset, such an answer scores -inf, so it escalates
      whenever a larger tier is allowed (and is accepted only as the last resort).
    """

    kind: Literal["triton", "openai"] | None = None
    url: str = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1)
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str | None = None
    confidence_when_missing: float | None = Field(default=None, le=0, allow_inf_nan=False)
    api_key: str | None = Field(default=None, exclude=True)  # only to refuse it with a clear message

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_inline_key(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(
                "unknown field: an API key must never be written in the policy file; put it in an environment "
                "variable and name that variable with api_key_env"
            )
        return None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError("must be the NAME of an environment variable (letters, digits, _), not the key itself")
        return value

    @model_validator(mode="after")
    def _url_matches_kind(self) -> RemoteSpec:
        has_scheme = bool(_URL_SCHEME.match(self.url))
        kind = self.kind or ("openai" if has_scheme else "triton")
        if kind == "triton" and has_scheme:
            raise ValueError(
                f"url: a Triton gRPC URL is host:port without a scheme (e.g. trtllm:8001), got {self.url!r}"
            )
        if kind == "openai" and not self.url.startswith(("http://", "https://")):
            raise ValueError(
                f"url: an OpenAI-compatible endpoint needs an http:// or https:// base URL (e.g. "
                f"https://api.example.com/v1), got {self.url!r}"
            )
        if kind == "triton" and self.api != "chat":
            raise ValueError("api: only for kind openai")
        object.__setattr__(self, "kind", kind)
        return self


class TierSpec(_Strict):
    """One tier of the cascade; `name` is the Triton model name."""

    name: str = Field(min_length=1)
    cost_per_1k_input: float = Field(ge=0, allow_inf_nan=False)
    cost_per_1k_output: float = Field(ge=0, allow_inf_nan=False)
    max_tokens: int = Field(ge=1)
    deadline_s: float = Field(gt=0, allow_inf_nan=False)
    confidence: ConfidenceSpec = Field(default_factory=ConfidenceSpec)
    escalation_threshold: float | None = Field(default=None, le=0, allow_inf_nan=False)
    remote: RemoteSpec | None = None

    @property
    def blended_cost_per_1k(self) -> float:
        return self.cost_per_1k_input + self.cost_per_1k_output


class DifficultyRule(_Strict):
    """If difficulty (0 = easy, 1 = hard: P(the small tier answers wrong)) is above `above`, start at least at
    `min_tier`. A legacy `below: x` (from when difficulty was P(correct)) reads as `above: 1 - x`."""

    above: float = Field(ge=0, le=1, allow_inf_nan=False)
    min_tier: str

    @model_validator(mode="before")
    @classmethod
    def _legacy_below(cls, data: Any) -> Any:
        if isinstance(data, dict) and "below" in data and "above" not in data:
            data = dict(data)
            below = data.pop("below")
            is_number = isinstance(below, int | float) and not isinstance(below, bool)
            data["above"] = 1 - below if is_number else below
        return data


class FittedConfidence(_Strict):
    """Confidence quantiles (log-prob scale) of a tier's answered attempts when the policy was fitted, estimated as
    Prometheus's histogram_quantile does from the router_confidence buckets (llm_router.core.drift)."""

    p10: float = Field(le=0, allow_inf_nan=False)
    p25: float = Field(le=0, allow_inf_nan=False)
    p50: float = Field(le=0, allow_inf_nan=False)
    p75: float = Field(le=0, allow_inf_nan=False)
    p90: float = Field(le=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> FittedConfidence:
        values = [self.p10, self.p25, self.p50, self.p75, self.p90]
        if values != sorted(values):
            raise ValueError(f"quantiles must not decrease from p10 to p90, got {values}")
        return self


class FittedTier(_Strict):
    """What replaying the policy on its calibration log gave for one tier: the drift alarms' band.

    `attempts`: the tier's answered attempts; `escalation_rate`: the share of them after which the router escalated;
    `confidence`: their quantiles (absent when no answer had a confidence)."""

    attempts: int = Field(ge=0)
    escalation_rate: float = Field(ge=0, le=1, allow_inf_nan=False)
    confidence: FittedConfidence | None = None


class Policy(_Strict):
    """A whole routing policy; see the module docstring and docs for each field's meaning."""

    version: int = Field(ge=1)
    tiers: list[TierSpec] = Field(min_length=1)
    start_tier_by_intent: dict[str, str]
    difficulty_rule: DifficultyRule | None = None
    max_escalations: int = Field(ge=0)
    default_start_tier: str
    holdback_tokens: int = Field(default=8, ge=0)
    # share of answered requests also sent, after answering, to the largest allowed tier: a proxy label for the
    # outcome records (core/records.py; needs records on). None or 0: off
    shadow_rate: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    # the band of the drift alarms, by tier name (written by `router-calibrate fit --policy-out`; none: no alarms)
    fitted: dict[str, FittedTier] | None = None

    @field_validator("start_tier_by_intent")
    @classmethod
    def _all_intents(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(INTENTS))
        if unknown:
            raise ValueError(f"unknown intent(s) {unknown}; intents are {list(INTENTS)}")
        missing = [i for i in INTENTS if i not in value]
        if missing:
            raise ValueError(f"missing intent(s) {missing}: every intent must map to a tier")
        return value

    @model_validator(mode="after")
    def _cross_fields(self) -> Policy:
        errors: list[str] = []
        names = [t.name for t in self.tiers]
        for i, name in enumerate(names):
            if name in names[:i]:
                errors.append(f"tiers[{i}].name: duplicate tier name {name!r}")
        for i in range(1, len(self.tiers)):
            prev, cur = self.tiers[i - 1], self.tiers[i]
            if cur.blended_cost_per_1k < prev.blended_cost_per_1k:
                errors.append(
                    f"tiers[{i}]: tiers must be ordered by cost (input+output per 1k): {cur.name} costs "
                    f"{cur.blended_cost_per_1k:g} < {prev.name} {prev.blended_cost_per_1k:g}"
                )
        known = set(names)
        refs = [(f"start_tier_by_intent.{k}", v) for k, v in self.start_tier_by_intent.items()]
        refs.append(("default_start_tier", self.default_start_tier))
        if self.difficulty_rule is not None:
            refs.append(("difficulty_rule.min_tier", self.difficulty_rule.min_tier))
        refs.extend((f"fitted.{name}", name) for name in self.fitted or {})
        for path, tier in refs:
            if tier not in known:
                errors.append(f"{path}: unknown tier {tier!r} (tiers: {', '.join(names)})")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    # -- lookups used by decide() and the router ------------------------------------------------------------
    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def tier_index(self, name: str) -> int:
        """Position of tier `name` (0 = cheapest); KeyError if unknown."""
        for i, tier in enumerate(self.tiers):
            if tier.name == name:
                return i
        raise KeyError(name)

    def tier(self, name: str) -> TierSpec:
        return self.tiers[self.tier_index(name)]

    @property
    def largest_tier(self) -> TierSpec:
        return self.tiers[-1]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (drops unset optional blocks) that `parse_policy` reads back to an equal policy."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "missing": "required field is missing",
    "extra_forbidden": "unknown field (typo?)",
    "finite_number": "must be a finite number",
    "too_short": "must have at least {min_length} item(s)",
    "string_too_short": "must not be empty",
}


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        # discriminator-free models: pydantic may append the failing type name to the loc; drop it
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        ctx = err.get("ctx") or {}
        if err["type"] == "value_error":
            msg = str(ctx.get("error", err["msg"]))
        elif err["type"] in _MESSAGES:
            msg = _MESSAGES[err["type"]].format(**ctx)
        else:
            msg = err["msg"]
            if "input" in err and not isinstance(err["input"], dict | list):
                msg += f" (got {err['input']!r})"
        path = _path(loc)
        # cross-field messages already start with their own field path
        lines.append(f"{path}: {msg}" if path else msg)
    return "; ".join(lines)


def parse_policy(data: Any, source: str = "policy") -> Policy:
    """Validate a policy given as a dict (e.g. parsed YAML/JSON); PolicyError names every bad field."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"{source}: {_format_errors(exc)}") from None


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file (.json as JSON, anything else as YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}") from None
    return parse_policy(data, source=str(path))


def write_policy(policy: Policy, path: str | Path, header: str | None = None) -> None:
    """Write `policy` as YAML (with an optional comment header); it is re-validated before writing."""
    parse_policy(policy.to_dict())
    text = policy.to_yaml()
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    Path(path).write_text(text, encoding="utf-8")
