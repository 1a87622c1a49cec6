"""The drift drill: simulate a traffic shift with one outcome log and recalibrate from a small recent sample.

Every (benchmark, chain) pair of the log (`report.REPORT_PAIRS`) is split by prompt into an "old" part and a
shifted "recent" part, the `recent_share` (default 2/3) of the pair's prompts that rank highest by the shift:

* `unsure`: the prompts the cheapest tier is least confident on (traffic moves to what the cheap model finds
  hard; the old part is the cheap tier's confident third, where its accuracy is far higher);
* `length`: the longest prompt texts (longer questions are harder for the cheap tiers: on llm_cascades_train the
  cheapest tier's accuracy drops by up to 0.2 from the short to the long half, the top tier's by at most 0.04);
* `none`: a random share (the control: no shift, only the smaller samples).

Each repeat draws `recent_n` labelled prompts of the recent part at random and evaluates on the REMAINING recent
prompts three fits, side by side, all at the same `delta`:

* train_only: `select_fst` on the old part only (the policy one had before the drift);
* pooling: `select_fst` on the old part plus the recent sample, unweighted;
* recent: `recent.fit_recent` (the old log as a prior worth `prior` recent prompts, the recent sample's veto).

Two reference rows that are NOT methods show the reach of the data: `peek_L` takes, per pair, the cheapest path
policy whose quality on ALL recent prompts (the eval ones included) is >= L. The alarms: `alarm_demo` fits a
train-only policy with its drift band (`drift.with_band`) on half the old part and replays the other half
(held-out old traffic) and the recent part through `drift.replay_alarms`.

`router-calibrate drift-drill [FILE] [--recent-n 100] [--repeats 10] [--shift unsure|length|none] [--json]`;
figures in docs/calibration.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from router_calibration.calibrate import fitted_policy
from router_calibration.drift import replay_alarms, with_band
from router_calibration.fit import Selection, candidate_ratios, path_candidates, select_fst
from router_calibration.logs import OutcomeLog, build_log, filter_rows, read_any
from router_calibration.recent import concat_logs, evaluate_selection, fit_recent
from router_calibration.report import DEFAULT_DATA, REPORT_PAIRS, to_json

DRILL_METHODS = ("train_only", "pooling", "recent")
PEEK_LEVELS = (0.97, 0.98)  # reference rows: selection that peeks at every recent prompt (see `peek_selection`)
MAX_COST_RATIO = 0.35  # the cost target for the drill


SHIFTS = {
    "length": "recent = the longest prompts",
    "unsure": "recent = the prompts the cheapest tier is least confident on",
    "none": "recent = a random share of the prompts (no shift: the control)",
}


def shifted_split(log: OutcomeLog, recent_share: float = 2 / 3, shift: str = "unsure") -> tuple[np.ndarray, np.ndarray]:
    """(old, recent) prompt indices: the `recent_share` of prompts that rank highest by the shift's key (SHIFTS)."""
    if not 0.0 < recent_share < 1.0:
        raise ValueError(f"the recent share must be in (0, 1), got {recent_share}")
    if shift == "length":
        key = np.array([len(p or "") for p in log.prompts], dtype=float)
    elif shift == "unsure":
        key = -np.nan_to_num(log.confidence[:, 0], nan=-np.inf, posinf=0.0)
    elif shift == "none":
        key = np.random.default_rng(len(log.prompt_ids)).random(log.n)
    else:
        raise ValueError(f"unknown shift {shift!r} ({', '.join(SHIFTS)})")
    order = np.lexsort((np.arange(log.n), key))  # lowest key first; ties by position
    k = int(round((1 - recent_share) * log.n))
    return np.sort(order[:k]), np.sort(order[k:])


def fit_methods(
    old: OutcomeLog,
    sample: OutcomeLog,
    target: float,
    delta: float,
    prior: float | None = None,
    path_steps: int = 41,
) -> dict[str, Selection]:
    """The three drill methods' selections from the old part and the labelled recent sample."""
    pooled = concat_logs(old, sample)
    return {
        "train_only": select_fst(path_candidates(old, path_steps), old, target, delta),
        "pooling": select_fst(path_candidates(pooled, path_steps), pooled, target, delta),
        "recent": fit_recent(old, sample, target, delta, prior, path_steps=path_steps).selection,
    }


def peek_selection(recent: OutcomeLog, level: float, path_steps: int = 41) -> Selection:
    """NOT a method, the reach of the data: the cheapest path candidate whose quality_ratio on ALL recent prompts
    (the eval prompts included) is >= level (as `report.peek_bound`). No honest fit does better than peeking."""
    cands = path_candidates(recent, path_steps)
    quality, cost = candidate_ratios(cands, recent)
    passing = np.flatnonzero(quality >= level)
    k = int(passing[np.argmin(cost[passing])]) if passing.size else int(np.argmax(quality))
    return Selection(cands.chains[k], cands.thresholds[k], f"peek_{level}")


def alarm_demo(old: OutcomeLog, recent: OutcomeLog, target: float, delta: float, window: int, seed: int) -> dict:
    """The drift alarms in replay: a train-only policy fitted (with its band) on half the old part, replayed on the
    other, held-out half of the old traffic (should stay quiet) and on the recent part in random arrival order."""
    first, held_out = old.split_by_prompt(0.5, seed)
    sel = select_fst(path_candidates(first, 41), first, target, delta)
    policy = with_band(fitted_policy(sel, first), first)
    shuffled = recent.subset(np.random.default_rng(seed).permutation(recent.n))
    out: dict[str, Any] = {"window": window, "fit_prompts": first.n}
    for name, log in (("old_held_out", held_out), ("recent", shuffled)):
        alarms = replay_alarms(policy, log, window=min(window, log.n))
        out[name] = {"prompts": log.n, "fired": bool(alarms), "alarms": [a.to_dict() for a in alarms]}
    return out


def drift_drill(
    path: Path,
    target: float = 0.95,
    recent_n: int = 100,
    repeats: int = 10,
    seed: int = 0,
    delta: float = 0.05,
    recent_share: float = 2 / 3,
    prior: float | None = None,
    shift: str = "unsure",
    alarm_window: int = 50,
    path_steps: int = 41,
) -> dict[str, Any]:
    """Run the drill on every pair (module doc); per pair and method: eval quality/cost per repeat."""
    if recent_n < 2:
        raise ValueError(f"--recent-n must be >= 2, got {recent_n}")
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    rows = read_any(path)
    out: dict[str, Any] = {
        "target_quality": target,
        "recent_n": recent_n,
        "repeats": repeats,
        "seed": seed,
        "delta": delta,
        "recent_share": recent_share,
        "prior": prior,
        "shift": shift,
        "shift_rule": SHIFTS.get(shift, shift),
        "pairs": [],
    }
    for b, c in REPORT_PAIRS:
        log = build_log(filter_rows(rows, benchmark=b, chain=c), f"{b}/{c}")
        old_idx, recent_idx = shifted_split(log, recent_share, shift)
        if recent_n >= len(recent_idx):
            raise ValueError(f"{b}/{c}: --recent-n {recent_n} leaves no recent prompts to evaluate on")
        old = log.subset(old_idx, f"{b}/{c} [old]")
        entry: dict[str, Any] = {
            "benchmark": b,
            "chain": c,
            "tiers": log.tiers,
            "old_prompts": int(len(old_idx)),
            "recent_prompts": int(len(recent_idx)),
            "eval_prompts": int(len(recent_idx) - recent_n),
            "accuracy_old": [float(x) for x in log.score[old_idx].mean(0)],
            "accuracy_recent": [float(x) for x in log.score[recent_idx].mean(0)],
        }
        rows_of = (*DRILL_METHODS, *(f"peek_{x}" for x in PEEK_LEVELS))
        per: dict[str, dict[str, list[float]]] = {m: {"quality_ratio": [], "cost_ratio": []} for m in rows_of}
        recent_all = log.subset(recent_idx, f"{b}/{c} [recent]")
        peeks = {f"peek_{x}": peek_selection(recent_all, x, path_steps) for x in PEEK_LEVELS}
        rng = np.random.default_rng(seed)
        for _ in range(repeats):
            pick = rng.permutation(recent_idx)
            sample = log.subset(np.sort(pick[:recent_n]), f"{b}/{c} [recent sample]")
            evaluation = log.subset(np.sort(pick[recent_n:]), f"{b}/{c} [recent eval]")
            for m, sel in (fit_methods(old, sample, target, delta, prior, path_steps) | peeks).items():
                q, cst = evaluate_selection(sel, evaluation)
                per[m]["quality_ratio"].append(q)
                per[m]["cost_ratio"].append(cst)
        entry.update(per)
        entry["alarms"] = alarm_demo(old, recent_all, target, delta, alarm_window, seed)
        out["pairs"].append(entry)
    out["summary"] = summarize(out["pairs"], target)
    return out


def summarize(pairs: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Per method, over repeats: pairs holding the target, the worst pair, mean cost ratio (mean and worst)."""
    summary = {}
    for m in (*DRILL_METHODS, *(f"peek_{x}" for x in PEEK_LEVELS)):
        q = np.array([p[m]["quality_ratio"] for p in pairs])  # (pairs, repeats)
        c = np.array([p[m]["cost_ratio"] for p in pairs])
        held = (q >= target).sum(0)
        worst = q.min(0)
        cost = c.mean(0)
        summary[m] = {
            "pairs_holding_mean": float(held.mean()),
            "pairs_holding_min": int(held.min()),
            "worst_pair_quality_mean": float(worst.mean()),
            "worst_pair_quality_min": float(worst.min()),
            "mean_cost_ratio_mean": float(cost.mean()),
            "mean_cost_ratio_max": float(cost.max()),
            # the three targets at once: >= all-but-one pairs hold, worst >= target - 0.01, cost <= 0.35
            "repeats_meeting_targets": float(
                np.mean((held >= len(pairs) - 1) & (worst >= target - 0.01) & (cost <= MAX_COST_RATIO))
            ),
            "pair_hit_rate": [float(x) for x in (q >= target).mean(1)],
            "pair_mean_quality": [float(x) for x in q.mean(1)],
            "pair_mean_cost": [float(x) for x in c.mean(1)],
        }
    return summary


def format_drill(report: dict[str, Any]) -> list[str]:
    """The drill as text: per pair the three methods' mean eval figures, the alarms, then the summary table."""
    t = report["target_quality"]
    lines = [
        f"drift drill: shift {report['shift']!r} ({report['shift_rule']}, share {report['recent_share']:.2f}); "
        f"{report['recent_n']} labelled recent prompts per pair, {report['repeats']} draws (seed {report['seed']}), "
        f"target {t}, delta {report['delta']}; eval = the remaining recent prompts",
        f"{'pair':<20}{'old':>5}{'rec':>5}{'eval':>5} |"
        + "".join(f" {m:>10} q  hit   c |" for m in DRILL_METHODS)
        + " alarms: old held-out / recent",
    ]
    s = report["summary"]
    for k, p in enumerate(report["pairs"]):
        name = f"{p['benchmark']}/{p['chain']}"
        line = f"{name:<20}{p['old_prompts']:>5}{p['recent_prompts']:>5}{p['eval_prompts']:>5} |"
        for m in DRILL_METHODS:
            q, hit, cost = (s[m][key][k] for key in ("pair_mean_quality", "pair_hit_rate", "pair_mean_cost"))
            line += f" {q:>12.3f}{hit:>5.2f}{cost:>5.2f} |"
        al = p["alarms"]
        line += f" {len(al['old_held_out']['alarms'])} / {len(al['recent']['alarms'])}"
        lines.append(line)
    lines += [
        "",
        f"{'method':<12}| pairs >= {t} (mean, min) | worst pair q (mean, min) | mean cost_ratio (mean, max) |"
        " draws meeting all 3 targets",
    ]
    for m in (*DRILL_METHODS, *(f"peek_{x}" for x in PEEK_LEVELS)):
        x = s[m]
        lines.append(
            f"{m:<12}| {x['pairs_holding_mean']:>13.2f} {x['pairs_holding_min']:>4d}    |"
            f" {x['worst_pair_quality_mean']:>14.3f} {x['worst_pair_quality_min']:>6.3f}   |"
            f" {x['mean_cost_ratio_mean']:>17.3f} {x['mean_cost_ratio_max']:>6.3f}   |"
            f" {x['repeats_meeting_targets']:.0%}"
        )
    fired = sum(p["alarms"]["recent"]["fired"] for p in report["pairs"])
    quiet = sum(not p["alarms"]["old_held_out"]["fired"] for p in report["pairs"])
    window = report["pairs"][0]["alarms"]["window"]
    lines.append(
        f"alarms (train-only policy with its fitted band, windows of {window} prompts): "
        f"fired on the recent traffic of {fired}/8 pairs, quiet on held-out old traffic of {quiet}/8"
    )
    lines.append("(q: mean eval quality_ratio over draws, hit: share of draws holding the target, c: mean cost_ratio)")
    lines.append(
        "(peek_L: not a method, the reach of the data: per pair the cheapest policy of the path family whose quality"
        " on ALL recent prompts, eval included, is >= L)"
    )
    return lines


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `drift-drill` command."""
    p = sub.add_parser("drift-drill", help="simulate a traffic shift per pair and recalibrate from a recent sample")
    p.add_argument("file", nargs="?", type=Path, default=DEFAULT_DATA, help=f"outcome log (default {DEFAULT_DATA})")
    p.add_argument("--recent-n", type=int, default=100, help="labelled recent prompts per pair (default 100)")
    p.add_argument("--repeats", type=int, default=10, help="random draws of the recent sample (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first draw (default 0)")
    p.add_argument("--delta", type=float, default=0.05, help="risk level of every method's bound (default 0.05)")
    p.add_argument(
        "--shift", default="unsure", choices=list(SHIFTS), help="how the recent part differs (default unsure)"
    )
    p.add_argument(
        "--recent-share", type=float, default=2 / 3, help="share of each pair's prompts that is recent (default 2/3)"
    )
    p.add_argument(
        "--prior",
        type=float,
        help="weight of the old log in recent prompts (default --recent-n, at most the old prompts)",
    )
    p.add_argument("--alarm-window", type=int, default=50, help="prompts per alarm window in replay (default 50)")
    p.add_argument("--target-quality", type=float, default=0.95, help="quality_ratio to hold (default 0.95)")
    p.add_argument("--path-steps", type=int, default=41, help="candidates per chain path (default 41)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> list[str]:
    """`router-calibrate drift-drill`."""
    report = drift_drill(
        args.file,
        args.target_quality,
        args.recent_n,
        args.repeats,
        args.seed,
        args.delta,
        args.recent_share,
        args.prior,
        args.shift,
        args.alarm_window,
        args.path_steps,
    )
    return [to_json(report)] if args.json else format_drill(report)
