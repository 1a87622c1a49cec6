"""Outcome logs: what each tier answered for each prompt. Readers and the in-memory table.

The format is documented in OUTCOME_LOG_FORMAT.md: one row per (prompt, tier). Readers turn CSV, CSV.GZ and
JSONL files of that format (including ``llm_cascades_train.csv.gz``), RouteLLM's response CSVs and RouterBench's
wide CSV into canonical rows (`OutcomeRow`, a pydantic model), and `build_log` groups them into `OutcomeLog` tables
(prompts x tiers).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticUndefined


class OutcomeLogError(ValueError):
    """An outcome log file is unreadable or a row is invalid; the message names file, row and column."""


_WORDS = {"true": 1.0, "yes": 1.0, "false": 0.0, "no": 0.0}


def _number(value: Any) -> Any:
    """`true`/`yes`/`false`/`no` (any case) as 1/0; everything else is left to pydantic's float parsing."""
    return _WORDS.get(value.strip().lower(), value) if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


Number = Annotated[float, BeforeValidator(_number)]


def _column(*aliases: str, default: Any = PydanticUndefined, **constraints: Any) -> Any:
    """A field read from the first of `aliases` present in a row (the canonical name first)."""
    return Field(default, validation_alias=AliasChoices(*aliases), **constraints)


# what the format requires of a column whose value pydantic refused (OUTCOME_LOG_FORMAT.md)
_RULES = {
    "tier_pos": "must be an integer >= 0",
    "outcome": "must be ok, error or timeout",
    "cost_usd": "must be >= 0",
}


class OutcomeRow(BaseModel):
    """One row of an outcome log (one prompt, one tier) under its canonical names; the aliases are those of
    OUTCOME_LOG_FORMAT.md. Empty cells count as absent; unknown numbers are NaN. A row without `correct`/`score` is
    unlabelled (score NaN, e.g. the router's live records): replay reads it, fitting refuses it
    (`OutcomeLog.require_labels`)."""

    model_config = ConfigDict(frozen=True, coerce_numbers_to_str=True)

    prompt_id: str = _column("prompt_id", "id", "sample_id")
    prompt: str | None = _column("prompt", "text", "text_input", default=None)
    tier: str = _column("tier", "tier_model", "model")
    tier_pos: int | None = _column("tier_pos", "tier_position", default=None, ge=0)
    score: Number = _column("score", "correct", default=math.nan)
    confidence: Number = _column("confidence", "confidence_log", default=math.nan)
    cost_usd: Number = _column("cost_usd", "cost", ge=0)
    tokens_in: Number = _column("tokens_in", "input_tokens", default=math.nan)
    tokens_out: Number = _column("tokens_out", "output_tokens", default=math.nan)
    latency_ms: Number = math.nan
    outcome: Annotated[Literal["ok", "error", "timeout"], BeforeValidator(_lower)] = _column(
        "outcome", "status", default="ok"
    )
    intent: str | None = None
    difficulty: Number = math.nan
    benchmark: str | None = None  # grouping columns
    chain: str | None = None
    split: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_empty(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            return {k: v for k, v in raw.items() if v is not None and v != ""}
        return raw

    @model_validator(mode="after")
    def _in_range(self) -> OutcomeRow:
        if self.outcome == "ok" and not math.isnan(self.score) and not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score/correct must be in [0, 1], got {self.score!r}")
        if self.confidence > 1e-9:
            raise ValueError(f"confidence is log-scale and must be <= 0, got {self.confidence!r}")
        return self

    @classmethod
    def from_raw(cls, raw: dict[str, Any], where: str = "row") -> OutcomeRow:
        """A raw row (any alias spelling) validated; OutcomeLogError names the row and what is wrong."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            errors = exc.errors()
            missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing"]
            if missing:
                raise OutcomeLogError(f"{where}: missing column(s) {missing} (see OUTCOME_LOG_FORMAT.md)") from None
            raise OutcomeLogError(f"{where}: " + "; ".join(_message(e) for e in errors)) from None


_FIELD_OF = {
    alias: name
    for name, info in OutcomeRow.model_fields.items()
    for alias in (info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) else [name])
}


def _message(error: ErrorDetails) -> str:
    """One pydantic error in the format's words."""
    if error["type"] == "value_error":  # raised by _in_range, already worded
        return str(error["ctx"]["error"])
    field = _FIELD_OF.get(str(error["loc"][0]), str(error["loc"][0])) if error["loc"] else "row"
    if error["type"].endswith("_parsing"):
        return f"{field}: not a number: {error['input']!r}"
    return f"{field} {_RULES.get(field, error['msg'])}, got {error['input']!r}"


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed by caller


def iter_raw_rows(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, raw row) for every row of a CSV, CSV.GZ, JSONL or JSONL.GZ file."""
    path = Path(path)
    if not path.is_file():
        raise OutcomeLogError(f"{path}: no such file")
    name = path.name.lower().removesuffix(".gz")
    with _open_text(path) as fh:
        if name.endswith((".jsonl", ".json")):
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield f"{path}:{n}", json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise OutcomeLogError(f"{path}:{n}: not valid JSON: {exc}") from None
        elif name.endswith(".csv"):
            for n, row in enumerate(csv.DictReader(fh), 2):
                yield f"{path}:{n}", row
        else:
            raise OutcomeLogError(f"{path}: unknown log format (expected .csv, .csv.gz, .jsonl, .jsonl.gz)")


def read_outcome_rows(path: str | Path) -> list[OutcomeRow]:
    """Canonical rows of a file in the outcome-log format (this is also the llm_cascades_train.csv.gz shape)."""
    path = Path(path)
    if path.is_dir():  # e.g. the router's live records: every JSONL file of the directory, rotated ones included
        raws = [raw for f in record_files(path) for raw in iter_raw_rows(f)]
        if all(isinstance(raw.get("time"), str) for _, raw in raws):
            raws.sort(key=lambda item: item[1]["time"])  # arrival order across files (ISO UTC times sort as text)
        return [OutcomeRow.from_raw(raw, where) for where, raw in raws]
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if path.suffix == ".gz":
        head = gzip.open(path).read(4096)
    first_line = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    if "|total_cost" in first_line:
        return read_routerbench_wide(path)
    return [OutcomeRow.from_raw(raw, where) for where, raw in iter_raw_rows(path)]


_ROTATED = re.compile(r"^(?P<base>.*?)(?:\.(?P<n>\d+))?\.jsonl(?:\.gz)?$")


def record_files(directory: str | Path) -> list[Path]:
    """The JSONL (and JSONL.GZ) files of a directory, oldest first: by name, a rotated file `x.<n>.jsonl` before
    `x.<n-1>.jsonl` and `x.jsonl` (the router's records, router/records.py); OutcomeLogError when there is none."""
    files = [p for p in Path(directory).iterdir() if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz"))]
    if not files:
        raise OutcomeLogError(f"{directory}: no .jsonl files")

    def age(path: Path) -> tuple[str, int]:
        match = _ROTATED.match(path.name)
        assert match is not None  # every name ends with .jsonl or .jsonl.gz
        return match["base"], -int(match["n"] or 0)

    return sorted(files, key=age)


# -- RouteLLM ------------------------------------------------------------------------------------------------

# Public per-million-token prices quoted by RouteLLM's paper (blended): used because its files have no costs.
ROUTELLM_PRICE_PER_M = {"mistralai/Mixtral-8x7B-Instruct-v0.1": 0.24, "gpt-4-1106-preview": 24.7}


def read_routellm(path: str | Path, prices_per_m: dict[str, float] | None = None) -> list[OutcomeRow]:
    """Rows from RouteLLM's eval responses: a CSV (prompt, <model> True/False, ...) or a directory of them.

    The files carry no cost, tokens or confidence: tokens are estimated as len(prompt)/4, the cost from
    `prices_per_m` (USD per million tokens; defaults: RouteLLM's quoted prices), confidence is unknown (NaN,
    which the policy treats as "not confident"). The prompt id is "<file stem>:<row>".
    """
    prices = prices_per_m or ROUTELLM_PRICE_PER_M
    path = Path(path)
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    out: list[OutcomeRow] = []
    for f in files:
        for where, raw in iter_raw_rows(f):
            models = [m for m in raw if m in prices]
            if not models:
                raise OutcomeLogError(f"{where}: no model column with a known price ({', '.join(prices)})")
            ordered = sorted(models, key=lambda m: prices[m])
            tokens = max(1, len(raw.get("prompt") or "") // 4)
            pid = f"{f.stem}:{where.rsplit(':', 1)[1]}"
            for pos, model in enumerate(ordered):
                out.append(
                    OutcomeRow.from_raw(
                        {
                            "prompt_id": pid,
                            "prompt": raw.get("prompt"),
                            "tier": model,
                            "tier_pos": pos,
                            "correct": raw[model],
                            "cost_usd": tokens * prices[model] / 1e6,
                            "tokens_in": tokens,
                            "benchmark": f.parent.name if f.parent.name != "responses" else f.parent.parent.name,
                        },
                        where,
                    )
                )
    return out


# -- RouterBench wide CSV -------------------------------------------------------------------------------------


def read_routerbench_wide(path: str | Path) -> list[OutcomeRow]:
    """Rows from RouterBench's wide table: per model `<model>` (score), `<model>|total_cost` (USD), and
    optionally `<model>|model_response`; plus `sample_id`, `prompt`, `eval_name`. Tiers are ordered by mean
    cost. No confidence (NaN)."""
    raws = list(iter_raw_rows(path))
    if not raws:
        return []
    columns = list(raws[0][1].keys())
    models = [c.split("|", 1)[0] for c in columns if c.endswith("|total_cost")]
    missing = [m for m in models if m not in columns]
    if not models or missing:
        raise OutcomeLogError(f"{path}: not a RouterBench wide table (models without a score column: {missing})")
    rows = [
        OutcomeRow.from_raw(
            {
                "prompt_id": raw.get("sample_id") or str(n),
                "prompt": raw.get("prompt"),
                "tier": model,
                "score": raw[model],
                "cost_usd": raw[f"{model}|total_cost"],
                "benchmark": raw.get("eval_name"),
            },
            where,
        )
        for n, (where, raw) in enumerate(raws)
        for model in models
    ]
    mean_cost = {m: np.mean([r.cost_usd for r in rows if r.tier == m]) for m in models}
    position = {m: pos for pos, m in enumerate(sorted(models, key=mean_cost.__getitem__))}
    # the order of the whole file, also for a subset of its rows (one benchmark)
    return [r.model_copy(update={"tier_pos": position[r.tier]}) for r in rows]


def read_any(path: str | Path, fmt: str = "auto") -> list[OutcomeRow]:
    """Read `path` as fmt 'outcomes' (the documented format), 'routellm', 'routerbench' or 'auto'."""
    path = Path(path)
    if fmt == "auto":
        if path.is_dir():
            jsonl = any(p.name.endswith((".jsonl", ".jsonl.gz")) for p in path.iterdir())
            fmt = "outcomes" if jsonl else "routellm"
        else:
            header = next(iter_raw_rows(path), ("", {}))[1]
            if any(k.endswith("|total_cost") for k in header):
                fmt = "routerbench"
            elif any(k in ROUTELLM_PRICE_PER_M for k in header) and "tier" not in header:
                fmt = "routellm"
            else:
                fmt = "outcomes"
    readers = {"outcomes": read_outcome_rows, "routellm": read_routellm, "routerbench": read_routerbench_wide}
    if fmt not in readers:
        raise OutcomeLogError(f"unknown format {fmt!r} (known: auto, {', '.join(readers)})")
    return readers[fmt](path)


# -- the table -------------------------------------------------------------------------------------------------


@dataclass
class OutcomeLog:
    """Prompts x tiers. Arrays are (n_prompts, n_tiers); NaN where a value is unknown or the row is missing.

    `ok[i, t]` is False when tier t has no row for prompt i or its outcome was error/timeout.
    Tiers are ordered cheapest first (by tier_pos, else by mean cost); the last tier is the reference
    ("the most expensive tier") for quality and cost ratios.
    """

    name: str
    tiers: list[str]
    prompt_ids: list[str]
    prompts: list[str | None]
    score: np.ndarray
    confidence: np.ndarray
    cost: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    latency_ms: np.ndarray
    ok: np.ndarray
    outcome: np.ndarray
    intents: list[str | None] = field(default_factory=list)
    difficulty: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.prompt_ids)

    @property
    def complete(self) -> bool:
        """Every tier answered every prompt (the fast vectorized evaluator needs this)."""
        return bool(self.ok.all())

    def subset(self, index: np.ndarray | list[int], name: str | None = None) -> OutcomeLog:
        idx = np.asarray(index, dtype=int)
        return OutcomeLog(
            name=name or self.name,
            tiers=list(self.tiers),
            prompt_ids=[self.prompt_ids[i] for i in idx],
            prompts=[self.prompts[i] for i in idx],
            score=self.score[idx],
            confidence=self.confidence[idx],
            cost=self.cost[idx],
            tokens_in=self.tokens_in[idx],
            tokens_out=self.tokens_out[idx],
            latency_ms=self.latency_ms[idx],
            ok=self.ok[idx],
            outcome=self.outcome[idx],
            intents=[self.intents[i] for i in idx] if self.intents else [],
            difficulty=None if self.difficulty is None else self.difficulty[idx],
        )

    @property
    def unlabelled(self) -> int:
        """OK rows without a `correct`/`score` label."""
        return int((self.ok & np.isnan(self.score)).sum())

    def require_labels(self) -> None:
        """OutcomeLogError naming the missing column when an OK row has no label (fitting needs every one)."""
        if self.unlabelled:
            raise OutcomeLogError(
                f"{self.name}: {self.unlabelled} OK row(s) have no `correct`/`score` column (unlabelled, e.g. live "
                "outcome records): fitting needs labels; add them with `router-calibrate join-labels`"
            )

    def split_indices(self, fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Prompt indices of a random split: (first part, the rest), each sorted."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
        order = np.random.default_rng(seed).permutation(self.n)
        k = int(round(fraction * self.n))
        return np.sort(order[:k]), np.sort(order[k:])

    def split_by_prompt(self, fraction: float = 0.5, seed: int = 0) -> tuple[OutcomeLog, OutcomeLog]:
        """Random split of the prompts (every tier's row of a prompt goes to the same side)."""
        first, rest = self.split_indices(fraction, seed)
        return self.subset(first, f"{self.name} [calib]"), self.subset(rest, f"{self.name} [eval]")


def _key(row: OutcomeRow, columns: Iterable[str]) -> tuple[str, ...]:
    """The row's values of grouping columns (benchmark, chain, split); '' where absent."""
    return tuple(getattr(row, c) or "" for c in columns)


def _tier_order(rows: list[OutcomeRow]) -> list[str]:
    pos: dict[str, set[int]] = defaultdict(set)
    costs: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.tier_pos is not None:
            pos[r.tier].add(r.tier_pos)
        costs[r.tier].append(r.cost_usd)
    tiers = list(costs)
    if all(len(pos[t]) == 1 for t in tiers) and len(pos) == len(tiers):
        by_pos = {t: next(iter(pos[t])) for t in tiers}
        if len(set(by_pos.values())) != len(tiers):
            raise OutcomeLogError(f"two tiers share a tier_pos: {by_pos}")
        return sorted(tiers, key=by_pos.__getitem__)
    return sorted(tiers, key=lambda t: float(np.mean(costs[t])))


def build_log(rows: list[OutcomeRow], name: str = "log", key_columns: Iterable[str] = ()) -> OutcomeLog:
    """One table from canonical rows; prompts are keyed by (key_columns..., prompt_id)."""
    if not rows:
        raise OutcomeLogError(f"{name}: no rows")
    keys = tuple(key_columns)
    tiers = _tier_order(rows)
    tier_idx = {t: i for i, t in enumerate(tiers)}
    prompt_idx: dict[tuple, int] = {}
    for r in rows:
        prompt_idx.setdefault(_key(r, keys) + (r.prompt_id,), len(prompt_idx))
    n, t = len(prompt_idx), len(tiers)
    arrays = {
        k: np.full((n, t), np.nan) for k in ("score", "confidence", "cost", "tokens_in", "tokens_out", "latency_ms")
    }
    ok = np.zeros((n, t), dtype=bool)
    outcome = np.full((n, t), "missing", dtype=object)
    prompts: list[str | None] = [None] * n
    intents: list[str | None] = [None] * n
    difficulty = np.full(n, np.nan)
    seen = np.zeros((n, t), dtype=bool)
    ids: list[str] = [""] * n
    for r in rows:
        key = _key(r, keys) + (r.prompt_id,)
        i, j = prompt_idx[key], tier_idx[r.tier]
        if seen[i, j]:
            raise OutcomeLogError(f"{name}: prompt {key} has two rows for tier {r.tier}")
        seen[i, j] = True
        ids[i] = ":".join(str(k) for k in key) if keys else r.prompt_id
        arrays["score"][i, j] = r.score
        arrays["confidence"][i, j] = r.confidence
        arrays["cost"][i, j] = r.cost_usd
        arrays["tokens_in"][i, j] = r.tokens_in
        arrays["tokens_out"][i, j] = r.tokens_out
        arrays["latency_ms"][i, j] = r.latency_ms
        outcome[i, j] = r.outcome
        ok[i, j] = r.outcome == "ok"
        prompts[i] = prompts[i] or r.prompt
        intents[i] = intents[i] or r.intent
        if not math.isnan(r.difficulty):
            difficulty[i] = r.difficulty
    return OutcomeLog(
        name=name,
        tiers=tiers,
        prompt_ids=ids,
        prompts=prompts,
        ok=ok,
        outcome=outcome,
        intents=intents if any(intents) else [],
        difficulty=None if np.isnan(difficulty).all() else difficulty,
        **arrays,
    )


def group_rows(rows: list[OutcomeRow], by: Iterable[str] = ("benchmark", "chain")) -> dict[tuple, list[OutcomeRow]]:
    """Rows grouped by the values of `by` (missing columns count as '')."""
    by = tuple(by)
    groups: dict[tuple, list[OutcomeRow]] = defaultdict(list)
    for r in rows:
        groups[_key(r, by)].append(r)
    return dict(groups)


def filter_rows(rows: list[OutcomeRow], **equal: str | None) -> list[OutcomeRow]:
    """Rows whose columns equal the given values (None = no filter); case-insensitive."""
    want = {k: v.lower() for k, v in equal.items() if v}
    return [r for r in rows if all(str(getattr(r, k) or "").lower() == v for k, v in want.items())]


def load_log(
    path: str | Path, fmt: str = "auto", benchmark: str | None = None, chain: str | None = None, name: str | None = None
) -> OutcomeLog:
    """Read a file, filter by benchmark/chain, and build one table; all remaining rows must share one tier set."""
    rows = filter_rows(read_any(path, fmt), benchmark=benchmark, chain=chain)
    if not rows:
        raise OutcomeLogError(f"{path}: no rows match benchmark={benchmark!r} chain={chain!r}")
    chains = {r.chain or "" for r in rows}
    tiersets = {frozenset(r.tier for r in g) for g in group_rows(rows, ("chain",)).values()}
    if len(tiersets) > 1:
        raise OutcomeLogError(
            f"{path}: rows of several chains with different tiers ({sorted(chains)}): choose one with --chain"
        )
    keys = [k for k in ("benchmark", "chain") if len({getattr(r, k) or "" for r in rows}) > 1]
    label = name or "/".join(x for x in (Path(path).name, benchmark, chain) if x)
    return build_log(rows, label, key_columns=keys)


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    return _SAFE.sub("_", text).strip("_")
