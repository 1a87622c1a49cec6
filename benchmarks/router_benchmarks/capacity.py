"""Capacity on paper: replicas per pool (router, each tier) from `router-bench` results and a traffic mix.

Per-replica capacity of a model = the highest throughput that `router-bench` measured for it (summary.csv, one row
per load level, see bench.write_summary_csv) among the levels whose p99 latency meets the SLO (`--p99-ms`; every
ok level without one). A replica of a pool is one pod like the one benchmarked (same GPU, same instance count).

Load on each tier of the cascade, for R requests/s with start-tier shares s_i and escalation rates e_i (the fraction
of the answers of tier i that escalate to tier i+1):

    load_0 = R * s_0,    load_i = R * s_i + load_{i-1} * e_{i-1}

and the router sees every request once (R). Replicas = ceil(load / (capacity * target utilization)), at least
`--min-replicas` (headroom for a pod lost to a rollout or a node drain comes from the utilization target).

    python -m router_benchmarks.capacity artifacts/bench/summary.csv --rps 200 \
        --start tier_small=0.6,tier_medium=0.3,tier_large=0.1 --escalation 0.25 --p99-ms 2000
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROUTER = "router"


class CapacityError(ValueError):
    """Bad input: a missing model in the results, shares that do not add up, an unknown tier."""


@dataclass(frozen=True)
class PoolPlan:
    """One pool's figures: load (requests/s), capacity per replica (requests/s) and the replicas needed."""

    pool: str
    load_rps: float
    capacity_rps: float
    replicas: int
    utilization: float  # load / (replicas * capacity) at that replica count


def read_capacities(path: Path, p99_ms: float | None = None) -> dict[str, float]:
    """Per model, the best measured throughput (requests/s) among ok levels within the p99 SLO."""
    best: dict[str, float] = {}
    seen: set[str] = set()
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            seen.add(row["model"])
            if row["status"] != "ok" or not row["throughput"]:
                continue
            if p99_ms is not None and (not row["p99_ms"] or float(row["p99_ms"]) > p99_ms):
                continue
            best[row["model"]] = max(best.get(row["model"], 0.0), float(row["throughput"]))
    for model in sorted(seen - set(best)):
        best.setdefault(model, 0.0)  # measured, but no level met the SLO (or every level failed)
    return best


def tier_loads(rps: float, start: dict[str, float], escalation: dict[str, float], tiers: Sequence[str]) -> list[float]:
    """Requests/s reaching each tier (in cascade order): its starters plus the escalations from the tier below."""
    unknown = sorted(set(start) - set(tiers))
    if unknown:
        raise CapacityError(f"start shares name unknown tier(s) {unknown}; tiers: {list(tiers)}")
    total = sum(start.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise CapacityError(f"start shares must add up to 1, got {total:g}")
    loads: list[float] = []
    for index, tier in enumerate(tiers):
        escalated = loads[-1] * escalation.get(tiers[index - 1], 0.0) if index else 0.0
        loads.append(rps * start.get(tier, 0.0) + escalated)
    return loads


def plan(
    capacities: dict[str, float],
    rps: float,
    start: dict[str, float],
    escalation: dict[str, float],
    tiers: Sequence[str],
    target_utilization: float = 0.7,
    min_replicas: int = 1,
    router_capacity: float | None = None,
) -> list[PoolPlan]:
    """Replicas of the router pool and of every tier pool for the traffic mix."""
    if not 0 < target_utilization <= 1:
        raise CapacityError("target utilization must be in (0, 1]")
    pools = [(ROUTER, rps, router_capacity if router_capacity is not None else capacities.get(ROUTER))]
    loads = tier_loads(rps, start, escalation, tiers)
    pools += [(t, load, capacities.get(t)) for t, load in zip(tiers, loads, strict=True)]
    out = []
    for pool, load, capacity in pools:
        if capacity is None:
            raise CapacityError(f"no router-bench result for {pool!r} (models: {sorted(capacities)})")
        if capacity <= 0 and load > 0:
            raise CapacityError(f"{pool}: no measured level met the SLO, so no replica count serves {load:g} req/s")
        needed = math.ceil(load / (capacity * target_utilization) - 1e-9) if load > 0 else 0
        replicas = max(min_replicas, needed)
        utilization = load / (replicas * capacity) if replicas and capacity else 0.0
        out.append(PoolPlan(pool, load, capacity, replicas, utilization))
    return out


def parse_mapping(text: str, tiers: Sequence[str] | None = None) -> dict[str, float]:
    """`a=0.6,b=0.4` -> {"a": 0.6, "b": 0.4}; a bare number applies to every tier in `tiers`."""
    text = text.strip()
    if "=" not in text:
        if tiers is None:
            raise CapacityError(f"expected NAME=VALUE pairs, got {text!r}")
        return {t: float(text) for t in tiers}
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        out[name.strip()] = float(value)
    return out


def markdown(plans: Sequence[PoolPlan]) -> str:
    lines = [
        "| pool | load req/s | capacity req/s per replica | replicas | utilization |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {p.pool} | {p.load_rps:.1f} | {p.capacity_rps:.2f} | {p.replicas} | {p.utilization:.0%} |" for p in plans
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router_benchmarks.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("summary_csv", type=Path, help="router-bench's summary.csv")
    parser.add_argument("--rps", type=float, required=True, help="requests/s to the router")
    parser.add_argument("--tiers", default="tier_small,tier_medium,tier_large", help="tiers in cascade order")
    parser.add_argument("--start", required=True, help="share of requests starting at each tier: t=0.6,u=0.4")
    parser.add_argument(
        "--escalation",
        default="0",
        help="fraction of a tier's answers that escalate: one number for every tier, or t=0.3,u=0.2",
    )
    parser.add_argument("--p99-ms", type=float, help="latency SLO: only load levels with p99 <= this count")
    parser.add_argument("--target-utilization", type=float, default=0.7, help="plan each pool to run this busy")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--router-capacity", type=float, help="router requests/s per replica (default: bench's)")
    args = parser.parse_args(argv)
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    try:
        escalation = parse_mapping(args.escalation, tiers[:-1])
        plans = plan(
            read_capacities(args.summary_csv, args.p99_ms),
            args.rps,
            parse_mapping(args.start),
            escalation,
            tiers,
            args.target_utilization,
            args.min_replicas,
            args.router_capacity,
        )
    except (CapacityError, OSError, KeyError, ValueError) as exc:
        parser.exit(2, f"capacity: {exc}\n")
    print(markdown(plans), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
