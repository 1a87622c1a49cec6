"""Outcome logs: what each tier answered for each prompt. Readers and the in-memory table.

The format is documented in OUTCOME_LOG_FORMAT.md: one row per (prompt, tier). Readers turn CSV, CSV.GZ and
JSONL files of that format (including ``llm_cascades_train.csv.gz``), RouteLLM's response CSVs and RouterBench's
wide CSV into canonical rows, and `build_logs` groups them into `OutcomeLog` tables (prompts x tiers).
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
from typing import Any

import numpy as np

# canonical column -> accepted aliases (first match wins)
ALIASES: dict[str, tuple[str, ...]] = {
    "prompt_id": ("prompt_id", "id", "sample_id"),
    "prompt": ("prompt", "text", "text_input"),
    "tier": ("tier", "tier_model", "model"),
    "tier_pos": ("tier_pos", "tier_position"),
    "score": ("score", "correct"),
    "confidence": ("confidence", "confidence_log"),
    "cost_usd": ("cost_usd", "cost"),
    "tokens_in": ("tokens_in", "input_tokens"),
    "tokens_out": ("tokens_out", "output_tokens"),
    "latency_ms": ("latency_ms",),
    "outcome": ("outcome", "status"),
    "intent": ("intent",),
    "difficulty": ("difficulty",),
}
GROUP_COLUMNS = ("benchmark", "chain", "split")
REQUIRED = ("prompt_id", "tier", "score", "cost_usd")


class OutcomeLogError(ValueError):
    """An outcome log file is unreadable or a row is invalid; the message names file, row and column."""


def _to_float(value: Any, what: str) -> float:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "yes"):
            return 1.0
        if v in ("false", "no"):
            return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        raise OutcomeLogError(f"{what}: not a number: {value!r}") from None


def normalize_row(raw: dict[str, Any], where: str = "row") -> dict[str, Any]:
    """Map a raw row (any alias spelling) to canonical names and types; OutcomeLogError names what is wrong."""
    row: dict[str, Any] = {}
    for canon, names in ALIASES.items():
        for name in names:
            if name in raw and raw[name] is not None and raw[name] != "":
                row[canon] = raw[name]
                break
    missing = [c for c in REQUIRED if c not in row]
    if missing:
        raise OutcomeLogError(f"{where}: missing column(s) {missing} (see OUTCOME_LOG_FORMAT.md)")
    out: dict[str, Any] = {
        "prompt_id": str(row["prompt_id"]),
        "prompt": row.get("prompt"),
        "tier": str(row["tier"]),
        "tier_pos": None,
        "score": _to_float(row["score"], f"{where}: score"),
        "confidence": _to_float(row.get("confidence"), f"{where}: confidence"),
        "cost_usd": _to_float(row["cost_usd"], f"{where}: cost_usd"),
        "tokens_in": _to_float(row.get("tokens_in"), f"{where}: tokens_in"),
        "tokens_out": _to_float(row.get("tokens_out"), f"{where}: tokens_out"),
        "latency_ms": _to_float(row.get("latency_ms"), f"{where}: latency_ms"),
        "outcome": str(row.get("outcome", "ok")).lower(),
        "intent": row.get("intent"),
        "difficulty": _to_float(row.get("difficulty"), f"{where}: difficulty"),
    }
    if "tier_pos" in row:
        pos = _to_float(row["tier_pos"], f"{where}: tier_pos")
        if math.isnan(pos) or pos != int(pos) or pos < 0:
            raise OutcomeLogError(f"{where}: tier_pos must be an integer >= 0, got {row['tier_pos']!r}")
        out["tier_pos"] = int(pos)
    if out["outcome"] not in ("ok", "error", "timeout"):
        raise OutcomeLogError(f"{where}: outcome must be ok, error or timeout, got {out['outcome']!r}")
    if out["outcome"] == "ok" and not 0.0 <= out["score"] <= 1.0:
        raise OutcomeLogError(f"{where}: score/correct must be in [0, 1], got {row['score']!r}")
    if not out["cost_usd"] >= 0:
        raise OutcomeLogError(f"{where}: cost_usd must be >= 0, got {row['cost_usd']!r}")
    if not math.isnan(out["confidence"]) and out["confidence"] > 1e-9:
        raise OutcomeLogError(f"{where}: confidence is log-scale and must be <= 0, got {row['confidence']!r}")
    for key in GROUP_COLUMNS:
        if raw.get(key) not in (None, ""):
            out[key] = str(raw[key])
    return out


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


def read_outcome_rows(path: str | Path) -> list[dict[str, Any]]:
    """Canonical rows of a file in the outcome-log format (this is also the llm_cascades_train.csv.gz shape)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if path.suffix == ".gz":
        head = gzip.open(path).read(4096)
    first_line = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    if "|total_cost" in first_line:
        return read_routerbench_wide(path)
    return [normalize_row(raw, where) for where, raw in iter_raw_rows(path)]


# -- RouteLLM ------------------------------------------------------------------------------------------------

# Public per-million-token prices quoted by RouteLLM's paper (blended): used because its files have no costs.
ROUTELLM_PRICE_PER_M = {"mistralai/Mixtral-8x7B-Instruct-v0.1": 0.24, "gpt-4-1106-preview": 24.7}


def read_routellm(path: str | Path, prices_per_m: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Rows from RouteLLM's eval responses: a CSV (prompt, <model> True/False, ...) or a directory of them.

    The files carry no cost, tokens or confidence: tokens are estimated as len(prompt)/4, the cost from
    `prices_per_m` (USD per million tokens; defaults: RouteLLM's quoted prices), confidence is unknown (NaN,
    which the policy treats as "not confident"). The prompt id is "<file stem>:<row>".
    """
    prices = prices_per_m or ROUTELLM_PRICE_PER_M
    path = Path(path)
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    out: list[dict[str, Any]] = []
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
                    normalize_row(
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


def read_routerbench_wide(path: str | Path) -> list[dict[str, Any]]:
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
    mean_cost = {m: np.nanmean([_to_float(r[f"{m}|total_cost"], m) for _, r in raws]) for m in models}
    ordered = sorted(models, key=lambda m: mean_cost[m])
    out = []
    for n, (where, raw) in enumerate(raws):
        pid = raw.get("sample_id") or str(n)
        for pos, model in enumerate(ordered):
            out.append(
                normalize_row(
                    {
                        "prompt_id": pid,
                        "prompt": raw.get("prompt"),
                        "tier": model,
                        "tier_pos": pos,
                        "score": raw[model],
                        "cost_usd": raw[f"{model}|total_cost"],
                        "benchmark": raw.get("eval_name"),
                    },
                    where,
                )
            )
    return out


def read_any(path: str | Path, fmt: str = "auto") -> list[dict[str, Any]]:
    """Read `path` as fmt 'outcomes' (the documented format), 'routellm', 'routerbench' or 'auto'."""
    path = Path(path)
    if fmt == "auto":
        if path.is_dir():
            fmt = "routellm"
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


def _tier_order(rows: list[dict[str, Any]]) -> list[str]:
    pos: dict[str, set[int]] = defaultdict(set)
    costs: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["tier_pos"] is not None:
            pos[r["tier"]].add(r["tier_pos"])
        costs[r["tier"]].append(r["cost_usd"])
    tiers = list(costs)
    if all(len(pos[t]) == 1 for t in tiers) and len(pos) == len(tiers):
        by_pos = {t: next(iter(pos[t])) for t in tiers}
        if len(set(by_pos.values())) != len(tiers):
            raise OutcomeLogError(f"two tiers share a tier_pos: {by_pos}")
        return sorted(tiers, key=by_pos.__getitem__)
    return sorted(tiers, key=lambda t: float(np.mean(costs[t])))


def build_log(rows: list[dict[str, Any]], name: str = "log", key_columns: Iterable[str] = ()) -> OutcomeLog:
    """One table from canonical rows; prompts are keyed by (key_columns..., prompt_id)."""
    if not rows:
        raise OutcomeLogError(f"{name}: no rows")
    keys = tuple(key_columns)
    tiers = _tier_order(rows)
    tier_idx = {t: i for i, t in enumerate(tiers)}
    prompt_idx: dict[tuple, int] = {}
    for r in rows:
        prompt_idx.setdefault(tuple(r.get(k, "") for k in keys) + (r["prompt_id"],), len(prompt_idx))
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
        key = tuple(r.get(k, "") for k in keys) + (r["prompt_id"],)
        i, j = prompt_idx[key], tier_idx[r["tier"]]
        if seen[i, j]:
            raise OutcomeLogError(f"{name}: prompt {key} has two rows for tier {r['tier']}")
        seen[i, j] = True
        ids[i] = ":".join(str(k) for k in key) if keys else r["prompt_id"]
        arrays["score"][i, j] = r["score"]
        arrays["confidence"][i, j] = r["confidence"]
        arrays["cost"][i, j] = r["cost_usd"]
        arrays["tokens_in"][i, j] = r["tokens_in"]
        arrays["tokens_out"][i, j] = r["tokens_out"]
        arrays["latency_ms"][i, j] = r["latency_ms"]
        outcome[i, j] = r["outcome"]
        ok[i, j] = r["outcome"] == "ok"
        prompts[i] = prompts[i] or r["prompt"]
        intents[i] = intents[i] or r["intent"]
        if not math.isnan(r["difficulty"]):
            difficulty[i] = r["difficulty"]
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


def group_rows(rows: list[dict[str, Any]], by: Iterable[str] = ("benchmark", "chain")) -> dict[tuple, list[dict]]:
    """Rows grouped by the values of `by` (missing columns count as '')."""
    by = tuple(by)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k, "") for k in by)].append(r)
    return dict(groups)


def filter_rows(rows: list[dict[str, Any]], **equal: str | None) -> list[dict[str, Any]]:
    """Rows whose columns equal the given values (None = no filter); case-insensitive."""
    want = {k: v.lower() for k, v in equal.items() if v}
    return [r for r in rows if all(str(r.get(k, "")).lower() == v for k, v in want.items())]


def load_log(
    path: str | Path, fmt: str = "auto", benchmark: str | None = None, chain: str | None = None, name: str | None = None
) -> OutcomeLog:
    """Read a file, filter by benchmark/chain, and build one table; all remaining rows must share one tier set."""
    rows = filter_rows(read_any(path, fmt), benchmark=benchmark, chain=chain)
    if not rows:
        raise OutcomeLogError(f"{path}: no rows match benchmark={benchmark!r} chain={chain!r}")
    chains = {r.get("chain", "") for r in rows}
    tiersets = {frozenset(r["tier"] for r in g) for g in group_rows(rows, ("chain",)).values()}
    if len(tiersets) > 1:
        raise OutcomeLogError(
            f"{path}: rows of several chains with different tiers ({sorted(chains)}): choose one with --chain"
        )
    keys = [k for k in ("benchmark", "chain") if len({r.get(k, "") for r in rows}) > 1]
    label = name or "/".join(x for x in (Path(path).name, benchmark, chain) if x)
    return build_log(rows, label, key_columns=keys)


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    return _SAFE.sub("_", text).strip("_")
