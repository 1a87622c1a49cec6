"""`router-calibrate`: fit a cascade policy on one outcome log to a quality target, evaluate it on another.

    router-calibrate --calib FILE --eval FILE --target-quality 0.95 [--policy-out DIR] [--plot PNG] [--json]
    router-calibrate --calib FILE --split-by-prompt 0.5 --benchmark mmlu --chain llama ...
    router-calibrate --report-pairs [FILE] [--repeats 20]

Every figure for the fitted policy comes from replaying it with the router's own `decide()`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from llm_router.core.policy import Policy, PolicyError, load_policy, write_policy

from router_calibration.fit import (
    Candidates,
    Selection,
    candidate_ratios,
    curve_metrics,
    enumerate_candidates,
    oracle_point,
    pareto_front,
    path_candidates,
    random_mix_quality,
    select_fst,
    select_lcb,
    select_naive,
    single_tier_points,
    threshold_grid,
)
from router_calibration.logs import OutcomeLog, OutcomeLogError, build_log, filter_rows, load_log, read_any
from router_calibration.replay import cascade_outcomes, policy_for_chain, replay

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "outcomes" / "llm_cascades_train.csv.gz"
METHODS = ("fst", "lcb", "naive")
REPORT_PAIRS = [(b, c) for b in ("mmlu", "medmcqa", "triviaqa", "truthfulqa") for c in ("llama", "qwen_oai")]


def _policy_dict(sel: Selection, log: OutcomeLog) -> dict[str, Any]:
    return {
        "method": sel.method,
        "chain": [log.tiers[j] for j in sel.chain],
        "thresholds": {log.tiers[j]: t for j, t in zip(sel.chain[:-1], sel.thresholds, strict=True)},
        **sel.details,
    }


def _fitted_policy(sel: Selection, log: OutcomeLog, base: Policy | None = None, tier_map=None, version=1) -> Policy:
    return policy_for_chain(log, [log.tiers[j] for j in sel.chain], sel.thresholds, base, tier_map, version)


def _measure(policy: Policy, log: OutcomeLog, sel: Selection) -> dict[str, Any]:
    """Replay with decide(); cross-checked against the vectorized evaluator the search used."""
    res = replay(policy, log)
    s, c, _ = cascade_outcomes(log, sel.chain, np.array([sel.thresholds]).reshape(1, -1))
    if not (np.allclose(res.score, s[0]) and np.allclose(res.cost, c[0])):
        raise AssertionError("replay() and the vectorized evaluator disagree: a bug in one of them")
    return res.summary()


def _front_points(cands: Candidates, calib: OutcomeLog, other: OutcomeLog) -> tuple[np.ndarray, np.ndarray]:
    """The calibration Pareto front's candidates re-measured on `other` (cost_ratio, quality_ratio)."""
    q, c = candidate_ratios(cands, calib)
    front = pareto_front(c, q)
    qs, cs = [], []
    for k in front:
        s, cc, _ = cascade_outcomes(other, cands.chains[k], np.array([cands.thresholds[k]]).reshape(1, -1))
        qs.append(s[0].sum() / other.score[:, -1].sum())
        cs.append(cc[0].sum() / other.cost[:, -1].sum())
    return np.array(cs), np.array(qs)


def _baselines(log: OutcomeLog, at_cost: float) -> dict[str, Any]:
    singles = single_tier_points(log)
    return {
        "single_tiers": singles,
        "random_mix_at_equal_cost": {"cost_ratio": at_cost, "quality_ratio": random_mix_quality(singles, at_cost)},
        "oracle": oracle_point(log),
    }


def calibrate(
    calib: OutcomeLog,
    evaluation: OutcomeLog | None,
    target: float,
    method: str = "fst",
    delta: float = 0.1,
    grid: int = 6,
    max_chain: int | None = None,
    with_curves: bool = True,
    path_steps: int = 41,
) -> dict[str, Any]:
    """Fit on `calib` (method 'fst', 'lcb' or 'naive'), measure on both logs; the JSON report as a dict.

    The report's top level is `method`'s result; the other two methods' results are under their names."""
    for log in (calib, evaluation):
        if log is not None and not log.complete:
            raise OutcomeLogError(f"{log.name}: every tier must have an OK row for every prompt to calibrate")
    if evaluation is not None and evaluation.tiers != calib.tiers:
        raise OutcomeLogError(f"calib tiers {calib.tiers} differ from eval tiers {evaluation.tiers}")
    grids = {j: threshold_grid(calib.confidence[:, j], grid) for j in range(len(calib.tiers))}
    cands = enumerate_candidates(calib, grid, max_chain, grids)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} ({', '.join(METHODS)})")
    path = path_candidates(calib, path_steps, max_chain)
    selections = {
        "naive": select_naive(cands, calib, target),
        "lcb": select_lcb(cands, calib, target, delta),
        "fst": select_fst(path, calib, target, delta),
    }
    report: dict[str, Any] = {
        "target_quality": target,
        "method": method,
        "candidates": len(cands),
        "path_candidates": len(path),
        "tiers": calib.tiers,
    }
    for name, sel in selections.items():
        policy = _fitted_policy(sel, calib)
        part = {"policy": _policy_dict(sel, calib), "calib": _measure(policy, calib, sel)}
        if evaluation is not None:
            part["eval"] = _measure(policy, evaluation, sel)
        if name == method:
            report.update(part)
            report["selection"] = sel
        else:
            report[name] = part
    for split, log in (("calib", calib), ("eval", evaluation)):
        if log is None:
            continue
        section = report[split]
        section["baselines"] = _baselines(log, section["cost_ratio"])
        if with_curves:
            cs, qs = _front_points(cands, calib, log)
            section["curve"] = {"cost_ratio": cs.tolist(), "quality_ratio": qs.tolist()}
            section.update(curve_metrics(log, cs, qs))
    return report


# -- policy-out -------------------------------------------------------------------------------------------------


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def write_policy_version(
    model_dir: Path, sel: Selection, calib: OutcomeLog, tier_map: dict[str, str], header: str
) -> Path:
    """DIR/<latest+1>/policy.yaml (+ a copy of the latest version's model.py); the base policy's tier specs
    are reused for tiers it has (after `tier_map`)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    versions = _versions(model_dir)
    latest = model_dir / str(versions[-1]) if versions else None
    base = None
    if latest is not None and (latest / "policy.yaml").is_file():
        base = load_policy(latest / "policy.yaml")
    new_version = (versions[-1] + 1) if versions else 1
    policy = _fitted_policy(sel, calib, base, tier_map, version=new_version)
    out = model_dir / str(new_version)
    out.mkdir()
    try:
        write_policy(policy, out / "policy.yaml", header=header)
        if latest is not None and (latest / "model.py").is_file():
            shutil.copy2(latest / "model.py", out / "model.py")
    except Exception:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


# -- plot -------------------------------------------------------------------------------------------------------


def plot_report(report: dict[str, Any], path: Path, title: str) -> None:
    """Cost-quality curve (calibration front measured on calib and eval) with baselines and the chosen policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    colors = {"calib": "tab:blue", "eval": "tab:orange"}
    for split in ("calib", "eval"):
        if split not in report:
            continue
        sec = report[split]
        if "curve" in sec:
            order = np.argsort(sec["curve"]["cost_ratio"])
            ax.step(
                np.array(sec["curve"]["cost_ratio"])[order],
                np.array(sec["curve"]["quality_ratio"])[order],
                where="post",
                color=colors[split],
                alpha=0.6,
                label=f"cascade front ({split})",
            )
        ax.scatter(
            [sec["cost_ratio"]],
            [sec["quality_ratio"]],
            marker="*",
            s=220,
            color=colors[split],
            edgecolor="k",
            zorder=5,
            label=f"fitted policy ({split})",
        )
        if "naive" in report and split in report["naive"]:
            nv = report["naive"][split]
            ax.scatter(
                [nv["cost_ratio"]],
                [nv["quality_ratio"]],
                marker="x",
                s=90,
                color=colors[split],
                zorder=5,
                label=f"naive grid search ({split})",
            )
    base = report.get("eval", report["calib"])["baselines"]
    singles = sorted(base["single_tiers"], key=lambda p: p["cost_ratio"])
    ax.scatter(
        [p["cost_ratio"] for p in singles],
        [p["quality_ratio"] for p in singles],
        color="k",
        zorder=4,
        label="single tiers (eval)" if "eval" in report else "single tiers",
    )
    for p in singles:
        ax.annotate(
            p["tier"], (p["cost_ratio"], p["quality_ratio"]), fontsize=7, xytext=(4, -10), textcoords="offset points"
        )
    xs = np.linspace(0, 1, 200)
    ax.plot(xs, [random_mix_quality(singles, x) for x in xs], "k:", label="random mix at equal cost")
    orc = base["oracle"]
    ax.scatter([orc["cost_ratio"]], [orc["quality_ratio"]], marker="D", color="tab:green", zorder=4, label="oracle")
    ax.axhline(report["target_quality"], color="tab:red", ls="--", lw=1, label=f"target {report['target_quality']}")
    ax.set_xlabel("cost ratio (vs. the most expensive tier)")
    ax.set_ylabel("quality ratio (vs. the most expensive tier)")
    ax.set_xlim(0, 1.05)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- report over the 8 (benchmark, chain) pairs -----------------------------------------------------------------


def report_pairs(
    path: Path,
    target: float,
    delta: float,
    grid: int,
    seed: int,
    repeats: int,
    plot: Path | None = None,
    method: str = "fst",
    max_chain: int | None = None,
    path_steps: int = 41,
) -> dict[str, Any]:
    """Split every (benchmark, chain) pair by prompt (half/half), fit on one half, evaluate on the other.

    Every method is fitted on the same splits; `method` is the one whose policy, curve and metrics are shown."""
    rows = read_any(path)
    table: dict[str, Any] = {"target_quality": target, "delta": delta, "seed": seed, "method": method, "pairs": []}
    hits: dict[str, list[list[bool]]] = {m: [] for m in METHODS}
    costs: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    for b, c in REPORT_PAIRS:
        log = build_log(filter_rows(rows, benchmark=b, chain=c), f"{b}/{c}")
        per_seed = {m: ([], []) for m in METHODS}
        for s in range(seed, seed + max(1, repeats)):
            cal, ev = log.split_by_prompt(0.5, s)
            rep = calibrate(
                cal, ev, target, method, delta, grid, max_chain, with_curves=(s == seed), path_steps=path_steps
            )
            parts = {m: (rep if m == method else rep[m]) for m in METHODS}
            for m, part in parts.items():
                per_seed[m][0].append(part["eval"]["quality_ratio"] >= target)
                per_seed[m][1].append(part["eval"]["cost_ratio"])
            if s == seed:
                entry: dict[str, Any] = {"benchmark": b, "chain": c, "calib_prompts": cal.n, "eval_prompts": ev.n}
                for m, part in parts.items():
                    keys = ("quality_ratio", "cost_ratio", "escalation_rate")
                    if m == method:
                        keys += ("apgr", "cpt_50", "cpt_80", "auc")
                    entry[m] = {"policy": part["policy"]} | {
                        split: {k: part[split][k] for k in keys} for split in ("calib", "eval")
                    }
                table["pairs"].append(entry)
                if plot is not None and (b, c) == REPORT_PAIRS[0]:
                    plot_report(rep, plot, f"{b} / {c}: fit on {cal.n} prompts, eval on {ev.n} (seed {s})")
        for m in METHODS:
            hits[m].append(per_seed[m][0])
            costs[m].append(per_seed[m][1])
    for m in METHODS:
        h, cst = np.array(hits[m]), np.array(costs[m])  # (pairs, repeats)
        table[f"{m}_summary"] = {
            "pairs_meeting_target_first_split": int(h[:, 0].sum()),
            "mean_eval_cost_ratio_first_split": float(cst[:, 0].mean()),
            "repeats": int(h.shape[1]),
            "hit_rate_over_pairs_and_splits": float(h.mean()),
            "hit_rate_per_pair": [float(x) for x in h.mean(1)],
            "splits_with_all_pairs_meeting_target": float(h.all(0).mean()),
            "mean_eval_cost_ratio_over_splits": float(cst.mean()),
        }
    return table


def peek_bound(path: Path, target: float, levels: list[float], repeats: int, path_steps: int = 41) -> list[dict]:
    """What selecting from the path family could reach on the eval halves if it could PEEK at them.

    Per pair, the cheapest path candidate whose quality_ratio on ALL prompts (both halves) is >= level is
    evaluated on each split's eval half. No honest method, which sees only the calibration half, can do better
    than peeking at the same level; so when even this misses the target on some pair in most splits, the
    target is out of reach of the data (each eval half has ~150 prompts) rather than of the method.
    """
    rows = read_any(path)
    logs = [build_log(filter_rows(rows, benchmark=b, chain=c), f"{b}/{c}") for b, c in REPORT_PAIRS]
    families = [path_candidates(log, path_steps) for log in logs]  # fixed by the confidences: once per pair
    ratios = [candidate_ratios(cands, log) for cands, log in zip(families, logs, strict=True)]
    eval_halves = [[log.split_indices(0.5, seed)[1] for seed in range(repeats)] for log in logs]
    results = []
    for level in levels:
        chosen = []  # per pair: the cheapest candidate reaching `level` on all prompts (the best one if none does)
        for quality, cost in ratios:
            passing = np.flatnonzero(quality >= level)
            chosen.append(passing[np.argmin(cost[passing])] if passing.size else int(np.argmax(quality)))
        hits, all_hit, costs = [], [], []
        for seed in range(repeats):
            split_hits = []
            for log, cands, k, halves in zip(logs, families, chosen, eval_halves, strict=True):
                ev = halves[seed]
                split_hits.append(cands.score[k, ev].sum() / log.score[ev, -1].sum() >= target)
                costs.append(cands.cost[k, ev].sum() / log.cost[ev, -1].sum())
            hits += split_hits
            all_hit.append(all(split_hits))
        results.append(
            {
                "select_at_quality": level,
                "eval_hit_rate": float(np.mean(hits)),
                "all_pairs_hit_rate": float(np.mean(all_hit)),
                "mean_eval_cost_ratio": float(np.mean(costs)),
            }
        )
    return results


def _print_pairs(table: dict[str, Any]) -> None:
    t, main_m = table["target_quality"], table["method"]
    others = [m for m in ("naive", "lcb", "fst") if m != main_m]
    print(
        f"target quality_ratio >= {t} on eval; split by prompt 50/50, seed {table['seed']}; delta {table['delta']};"
        f" policy shown: {main_m}"
    )
    head = (
        f"{'benchmark':<11}{'chain':<9}|"
        + "".join(f" {m + ' q':>8}{m + ' c':>8} |" for m in others)
        + f" {main_m + ' q':>8}{main_m + ' c':>8}{'esc':>6}{'APGR':>6}{'CPT50':>7}{'CPT80':>7}"
        + f" | {main_m} chain : thresholds"
    )
    print(head)
    print("-" * len(head))
    mark = lambda q: "*" if q < t else " "  # noqa: E731
    for p in table["pairs"]:
        line = f"{p['benchmark']:<11}{p['chain']:<9}|"
        for m in others:
            e = p[m]["eval"]
            line += f" {e['quality_ratio']:>7.3f}{mark(e['quality_ratio'])}{e['cost_ratio']:>8.3f} |"
        e, pol = p[main_m]["eval"], p[main_m]["policy"]
        thr = ", ".join(f"{v:.3g}" for v in pol["thresholds"].values())
        line += (
            f" {e['quality_ratio']:>7.3f}{mark(e['quality_ratio'])}{e['cost_ratio']:>8.3f}{e['escalation_rate']:>6.2f}"
            f"{e['apgr']:>6.2f}{e['cpt_50']:>7.3f}{e['cpt_80']:>7.3f} | {' > '.join(pol['chain'])} : {thr}"
        )
        print(line)
    for m in ("naive", "lcb", "fst"):
        s = table[f"{m}_summary"]
        print(
            f"{m:>5}: {s['pairs_meeting_target_first_split']}/8 pairs meet the target, mean eval cost_ratio "
            f"{s['mean_eval_cost_ratio_first_split']:.3f};  over {s['repeats']} random splits: hit rate "
            f"{s['hit_rate_over_pairs_and_splits']:.2f}, all 8 in {s['splits_with_all_pairs_meeting_target']:.0%}"
            f" of splits, mean cost_ratio {s['mean_eval_cost_ratio_over_splits']:.3f}"
        )
    print("(* = below target; q = quality_ratio, c = cost_ratio on the held-out half)")


# -- main -------------------------------------------------------------------------------------------------------


def _tier_map(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"--tier-map items are LOG_TIER=ROUTER_TIER, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _summary_line(name: str, sec: dict[str, Any]) -> str:
    extra = (
        f"  APGR {sec['apgr']:.3f}  CPT50 {sec['cpt_50']:.3f}  CPT80 {sec['cpt_80']:.3f}  AUC {sec['auc']:.3f}"
        if "apgr" in sec
        else ""
    )
    return (
        f"{name:<6} quality_ratio {sec['quality_ratio']:.3f}  cost_ratio {sec['cost_ratio']:.3f}  "
        f"escalation_rate {sec['escalation_rate']:.3f}  tokens_wasted {sec['tokens_wasted']}{extra}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="router-calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--calib", type=Path, help="calibration outcome log (CSV, CSV.GZ, JSONL, RouteLLM, RouterBench)")
    p.add_argument("--eval", type=Path, help="evaluation outcome log (default: the other part of --split-by-prompt)")
    p.add_argument("--format", default="auto", choices=["auto", "outcomes", "routellm", "routerbench"])
    p.add_argument("--target-quality", type=float, default=0.95, help="quality_ratio to reach (default 0.95)")
    p.add_argument(
        "--method",
        default="fst",
        choices=list(METHODS),
        help="fst: fixed-sequence test along per-chain paths (default); lcb: bound on a threshold grid; naive",
    )
    p.add_argument("--delta", type=float, default=0.1, help="risk level of the lower bound (default 0.1)")
    p.add_argument("--grid", type=int, default=6, help="threshold quantiles per tier (default 6)")
    p.add_argument("--max-chain", type=int, default=None, help="at most this many tiers in the chain")
    p.add_argument("--path-steps", type=int, default=41, help="fst: candidates per chain path (default 41)")
    p.add_argument("--benchmark", help="keep only rows of this benchmark")
    p.add_argument("--chain", help="keep only rows of this chain (needed when a file mixes chains)")
    p.add_argument(
        "--split-by-prompt",
        type=float,
        metavar="FRACTION",
        help="fit on this fraction of --calib's prompts and evaluate on the rest",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt split (default 0)")
    p.add_argument(
        "--policy-out",
        type=Path,
        metavar="DIR",
        help="router model directory: writes DIR/<latest+1>/policy.yaml (+ model.py of the latest)",
    )
    p.add_argument("--tier-map", help="LOG_TIER=ROUTER_TIER,... names in the written policy")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the cost-quality curve")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--report-pairs",
        nargs="?",
        const=DEFAULT_DATA,
        type=Path,
        metavar="FILE",
        help=f"the 8 (benchmark, chain) pairs table on FILE (default {DEFAULT_DATA})",
    )
    p.add_argument("--repeats", type=int, default=1, help="--report-pairs: also count hits over N random splits")
    p.add_argument(
        "--peek-bound",
        nargs="*",
        type=float,
        metavar="LEVEL",
        help="with --report-pairs: instead, the reach of a selection that peeks at all prompts, selecting at each "
        "quality LEVEL (default 0.95 0.96 0.97 0.98), over --repeats splits",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not 0 < args.target_quality <= 2:
            raise ValueError(f"--target-quality must be in (0, 2], got {args.target_quality}")
        if args.report_pairs is not None and args.peek_bound is not None:
            levels = args.peek_bound or [0.95, 0.96, 0.97, 0.98]
            bound = peek_bound(args.report_pairs, args.target_quality, levels, max(1, args.repeats), args.path_steps)
            if args.json:
                print(json.dumps(bound, indent=1))
            for row in [] if args.json else bound:
                print(
                    f"peek-select at quality {row['select_at_quality']:.2f} on all prompts -> eval quality >= "
                    f"{args.target_quality}: pair hit rate {row['eval_hit_rate']:.2f}, all 8 pairs in "
                    f"{row['all_pairs_hit_rate']:.0%} of splits, mean eval cost_ratio {row['mean_eval_cost_ratio']:.3f}"
                )
            return 0
        if args.report_pairs is not None:
            table = report_pairs(
                args.report_pairs,
                args.target_quality,
                args.delta,
                args.grid,
                args.seed,
                args.repeats,
                args.plot,
                args.method,
                args.max_chain,
                args.path_steps,
            )
            print(json.dumps(_finite(table), indent=1, default=_json_default)) if args.json else _print_pairs(table)
            return 0
        if args.calib is None:
            raise ValueError("--calib FILE is required (or --report-pairs)")
        calib = load_log(args.calib, args.format, args.benchmark, args.chain)
        if args.eval is not None:
            evaluation = load_log(args.eval, args.format, args.benchmark, args.chain)
        elif args.split_by_prompt is not None:
            calib, evaluation = calib.split_by_prompt(args.split_by_prompt, args.seed)
        else:
            evaluation = None
        report = calibrate(
            calib,
            evaluation,
            args.target_quality,
            args.method,
            args.delta,
            args.grid,
            args.max_chain,
            path_steps=args.path_steps,
        )
        sel: Selection = report.pop("selection")
        if args.policy_out is not None:
            header = (
                f"fitted by router-calibrate on {calib.name} ({calib.n} prompts): target quality_ratio "
                f"{args.target_quality}, method {args.method}, delta {args.delta}; confidences must be "
                "on the log's scale"
            )
            out = write_policy_version(args.policy_out, sel, calib, _tier_map(args.tier_map), header)
            report["policy_out"] = str(out / "policy.yaml")
        if args.plot is not None:
            plot_report(report, args.plot, f"{calib.name}: target {args.target_quality}")
            report["plot"] = str(args.plot)
    except (OutcomeLogError, PolicyError, ValueError, OSError) as exc:
        print(f"router-calibrate: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_finite(report), default=_json_default))
    else:
        pol = report["policy"]
        print(f"tiers: {' < '.join(report['tiers'])}")
        print(f"policy ({pol['method']}): chain {' > '.join(pol['chain'])}, thresholds {pol['thresholds']}")
        print(_summary_line("calib", report["calib"]))
        if "eval" in report:
            print(_summary_line("eval", report["eval"]))
            for m in METHODS:
                if m in report:
                    other = report[m]
                    print(_summary_line(m, other["eval"]) + f"   ({m} chain {' > '.join(other['policy']['chain'])})")
        for key in ("policy_out", "plot"):
            if key in report:
                print(f"wrote {report[key]}")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    return str(value)


def _finite(value: Any) -> Any:
    """NaN/inf -> None so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
