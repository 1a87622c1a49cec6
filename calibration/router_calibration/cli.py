"""`router-calibrate`: fit a cascade policy on one outcome log to a quality target, evaluate it on another.

    router-calibrate [fit] --calib FILE --eval FILE --target-quality 0.95 [--policy-out DIR] [--plot PNG] [--json]
    router-calibrate [fit] --calib FILE --split-by-prompt 0.5 --benchmark mmlu --chain llama ...
    router-calibrate report-pairs [FILE] [--repeats 20] [--method fst] [--plot PNG] [--json]
    router-calibrate peek-bound [FILE] [--levels 0.95 0.96 0.97 0.98] [--repeats 20] [--json]
    router-calibrate join-labels --records DIR_OR_FILE... --labels FEEDBACK.jsonl --out LABELLED.jsonl
    router-calibrate drift-check --policy POLICY.yaml --log RECENT_LOG [--window 100] [--json]
    router-calibrate [fit] --calib OLD_LOG --recent RECENT_LOG [--eval FILE] [--prior N] [--policy-out DIR] [--json]
    router-calibrate drift-drill [FILE] [--recent-n 100] [--repeats 10] [--shift unsure|length|none] [--json]

`fit` is the default command. Every figure for the fitted policy comes from replaying it with the router's own
`decide()`. The library: router_calibration.calibrate, .report, .plots, .versioning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llm_router.core.policy import PolicyError, load_policy

from router_calibration import drill, recent
from router_calibration.calibrate import METHODS, calibrate
from router_calibration.drift import format_alarms, replay_alarms, rules_summary
from router_calibration.labels import add_parser as add_join_labels
from router_calibration.labels import run as join_labels
from router_calibration.logs import OutcomeLogError, load_log
from router_calibration.plots import plot_report
from router_calibration.report import (
    DEFAULT_DATA,
    PEEK_LEVELS,
    format_calibration,
    format_pairs,
    format_peek_bound,
    peek_bound,
    report_pairs,
    to_json,
)
from router_calibration.versioning import parse_tier_map, write_policy_version

COMMANDS = ("fit", "report-pairs", "peek-bound", "drift-check", "join-labels", "drift-drill")
REMOVED_FLAGS = {"--report-pairs": "report-pairs", "--peek-bound": "peek-bound"}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target-quality", type=float, default=0.95, help="quality_ratio to reach (default 0.95)")
    p.add_argument("--path-steps", type=int, default=41, help="fst: candidates per chain path (default 41)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _fitting(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        default="fst",
        choices=list(METHODS),
        help="fst: fixed-sequence test along per-chain paths (default); lcb: bound on a threshold grid; naive",
    )
    p.add_argument("--delta", type=float, default=0.1, help="risk level of the lower bound (default 0.1)")
    p.add_argument("--grid", type=int, default=6, help="threshold quantiles per tier (default 6)")
    p.add_argument("--max-chain", type=int, default=None, help="at most this many tiers in the chain")
    p.add_argument("--seed", type=int, default=0, help="seed of the (first) prompt split (default 0)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the cost-quality curve")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="router-calibrate",
        description=__doc__.split("\n\n")[0],
        epilog="Without a command, `fit` is run: `router-calibrate --calib FILE ...` = `router-calibrate fit ...`.",
    )
    sub = p.add_subparsers(dest="command", metavar="{fit,report-pairs,peek-bound,drift-check,join-labels,drift-drill}")
    fit = sub.add_parser("fit", help="fit on --calib, evaluate on --eval (the default command)")
    fit.add_argument("--calib", type=Path, required=True, help="calibration outcome log (CSV, CSV.GZ, JSONL, ...)")
    fit.add_argument("--eval", type=Path, help="evaluation outcome log (default: the other part of --split-by-prompt)")
    fit.add_argument("--format", default="auto", choices=["auto", "outcomes", "routellm", "routerbench"])
    fit.add_argument("--benchmark", help="keep only rows of this benchmark")
    fit.add_argument("--chain", help="keep only rows of this chain (needed when a file mixes chains)")
    fit.add_argument(
        "--split-by-prompt",
        type=float,
        metavar="FRACTION",
        help="fit on this fraction of --calib's prompts and evaluate on the rest",
    )
    fit.add_argument(
        "--policy-out",
        type=Path,
        metavar="DIR",
        help="router model directory: writes DIR/<latest+1>/policy.yaml (+ model.py of the latest)",
    )
    fit.add_argument("--tier-map", help="LOG_TIER=ROUTER_TIER,... names in the written policy")
    recent.add_arguments(fit)
    _fitting(fit)
    _common(fit)

    pairs = sub.add_parser("report-pairs", help="the 8 (benchmark, chain) pairs, each split 50/50 by prompt")
    pairs.add_argument("file", nargs="?", type=Path, default=DEFAULT_DATA, help=f"outcome log (default {DEFAULT_DATA})")
    pairs.add_argument("--repeats", type=int, default=1, help="also count hits over N random splits (default 1)")
    _fitting(pairs)
    _common(pairs)

    peek = sub.add_parser("peek-bound", help="the reach of a selection that peeks at the eval halves")
    peek.add_argument("file", nargs="?", type=Path, default=DEFAULT_DATA, help=f"outcome log (default {DEFAULT_DATA})")
    peek.add_argument(
        "--levels",
        nargs="+",
        type=float,
        default=list(PEEK_LEVELS),
        metavar="LEVEL",
        help="select per pair at each quality LEVEL on all prompts (default 0.95 0.96 0.97 0.98)",
    )
    peek.add_argument("--repeats", type=int, default=1, help="random splits (default 1)")
    _common(peek)

    drift = sub.add_parser("drift-check", help="replay a recent log through a policy: would its drift alarms fire?")
    drift.add_argument("--policy", type=Path, required=True, help="policy file with a fitted band (`fitted`)")
    drift.add_argument("--log", type=Path, required=True, help="recent outcome log, in arrival order")
    drift.add_argument("--window", type=int, default=100, help="prompts per sliding window (default 100)")
    drift.add_argument("--step", type=int, help="prompts the window moves each time (default window/10)")
    drift.add_argument("--format", default="auto", choices=["auto", "outcomes", "routellm", "routerbench"])
    drift.add_argument("--benchmark", help="keep only rows of this benchmark")
    drift.add_argument("--chain", help="keep only rows of this chain")
    drift.add_argument("--tier-map", help="LOG_TIER=ROUTER_TIER,... when the policy names tiers as the router does")
    drift.add_argument("--json", action="store_true", help="print one JSON object")
    add_join_labels(sub)
    drill.add_parser(sub)
    return p


def _with_command(argv: list[str]) -> list[str]:
    """`fit` when no command is given (the options-only form of earlier versions keeps working)."""
    for flag, command in REMOVED_FLAGS.items():
        if flag in argv:
            print(
                f"router-calibrate: error: {flag} is now a command: router-calibrate {command} [FILE] ...",
                file=sys.stderr,
            )
            raise SystemExit(2)
    if argv and argv[0] in (*COMMANDS, "-h", "--help"):
        return argv
    return ["fit", *argv]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_with_command(list(sys.argv[1:] if argv is None else argv)))
    try:
        if not 0 < getattr(args, "target_quality", 1.0) <= 2:
            raise ValueError(f"--target-quality must be in (0, 2], got {args.target_quality}")
        commands = {"fit": _fit, "report-pairs": _report_pairs, "peek-bound": _peek_bound, "drift-check": _drift_check}
        commands["join-labels"] = join_labels
        commands["drift-drill"] = drill.run
        lines = commands[args.command](args)
    except (OutcomeLogError, PolicyError, ValueError, OSError) as exc:
        print(f"router-calibrate: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _drift_check(args: argparse.Namespace) -> list[str]:
    policy = load_policy(args.policy)
    log = load_log(args.log, args.format, args.benchmark, args.chain)
    alarms = replay_alarms(policy, log, args.window, args.step, parse_tier_map(args.tier_map))
    if not args.json:
        return format_alarms(alarms, policy, log, args.window)
    report = {
        "log": log.name,
        "prompts": log.n,
        "window": args.window,
        "policy_version": policy.version,
        "fitted": policy.to_dict().get("fitted"),
        "rules": rules_summary(),
        "fired": bool(alarms),
        "alarms": [a.to_dict() for a in alarms],
    }
    return [to_json(report)]


def _peek_bound(args: argparse.Namespace) -> list[str]:
    bound = peek_bound(args.file, args.target_quality, args.levels, max(1, args.repeats), args.path_steps)
    return [to_json(bound, indent=1)] if args.json else format_peek_bound(bound, args.target_quality)


def _report_pairs(args: argparse.Namespace) -> list[str]:
    table = report_pairs(
        args.file,
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
    return [to_json(table, indent=1)] if args.json else format_pairs(table)


def _fit(args: argparse.Namespace) -> list[str]:
    if args.recent is not None:  # recalibrate from a recent sample, --calib as the prior (recent.py)
        report = recent.run_fit(args)
        return [to_json(report)] if args.json else recent.format_fit(report)
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
    sel = report.pop("selection")
    if args.policy_out is not None:
        header = (
            f"fitted by router-calibrate on {calib.name} ({calib.n} prompts): target quality_ratio "
            f"{args.target_quality}, method {args.method}, delta {args.delta}; confidences must be on the log's scale"
        )
        out = write_policy_version(args.policy_out, sel, calib, parse_tier_map(args.tier_map), header)
        report["policy_out"] = str(out / "policy.yaml")
    if args.plot is not None:
        plot_report(report, args.plot, f"{calib.name}: target {args.target_quality}")
        report["plot"] = str(args.plot)
    return [to_json(report)] if args.json else format_calibration(report)


if __name__ == "__main__":
    sys.exit(main())
