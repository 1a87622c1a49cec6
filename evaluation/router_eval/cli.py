"""`router-eval`: graded evaluation of the tiers and the router against a running server.

    router-eval [eval] --url HOST:PORT --data FILE.jsonl [--tiers tier_small ...] [--router] [--out LOG]
                [--plot PNG] [--json] [--confidence FUNCTION[:k=V]] [--self-verify]
    router-eval build-data [--data-dir ../shared/data] --out artifacts/eval/simple.jsonl [--nq N] [--labels N]
                [--templates basic|wide] [--exclude FILE ...] [--seed S]

`eval` (the default command) sends every row of FILE to each named tier (directly, with per-token log-probs) and/or
through the router, grades the answers (router_eval.data), and reports per tier: n, accuracy, the AUROC of the
policy's confidence function for that tier (how well it separates right from wrong answers), accuracy at coverage,
and the AUROC of every other confidence function. `--out` writes the outcome log that `router-calibrate` reads.
Without --tiers and --router, every tier of the policy is evaluated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

COMMANDS = ("eval", "build-data")
PROG = "router-eval"


def _default_policy() -> Path:
    """The latest version's policy under ./model_repository/router/ (what router-serve serves from here)."""
    base = Path("model_repository/router")
    versions = sorted((int(p.name) for p in base.iterdir() if p.name.isdigit()), reverse=True) if base.is_dir() else []
    for v in versions:
        if (base / str(v) / "policy.yaml").is_file():
            return base / str(v) / "policy.yaml"
    return base / "1" / "policy.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", metavar="{eval,build-data}")
    ev = sub.add_parser("eval", help="evaluate against a running server (the default command)")
    ev.add_argument("--url", default="localhost:8001", help="Triton gRPC host:port (default localhost:8001)")
    ev.add_argument("--data", type=Path, required=True, help="labelled rows (JSONL; see router_eval.data)")
    ev.add_argument("--tiers", nargs="+", metavar="TIER", help="tier models to evaluate (default: all, or none "
                    "with --router)")  # fmt: skip
    ev.add_argument("--router", action="store_true", help="also send every row through the router's cascade")
    ev.add_argument("--policy", type=Path, help="the router's policy (default: latest model_repository/router/N)")
    ev.add_argument("--out", type=Path, metavar="LOG", help="write the outcome log (.jsonl, .csv, optionally .gz)")
    ev.add_argument("--plot", type=Path, metavar="PNG", help="plot accuracy against coverage per tier")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument(
        "--confidence",
        action="append",
        default=[],
        metavar="FUNCTION[:k=V]",
        help="also report this confidence function's AUROC (repeatable); every registered log-prob function is "
        "always reported",
    )
    ev.add_argument(
        "--self-verify",
        action="store_true",
        help="also score self_verify (asks each tier a second time whether its answer is correct)",
    )
    ev.add_argument("--max-tokens", type=int, default=32, help="answer length cap (default 32; the policy caps too)")
    ev.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    ev.add_argument("--timeout", type=float, default=120.0, help="seconds per call (default 120)")
    ev.add_argument("--limit", type=int, help="only the first N rows")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")

    bd = sub.add_parser("build-data", help="build a labelled set from ../shared/data (never commit the output)")
    bd.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="default ../shared/data")
    bd.add_argument("--out", type=Path, required=True, help="output JSONL (e.g. artifacts/eval/simple.jsonl)")
    bd.add_argument("--nq", type=int, default=100, help="NQ-open questions (default 100)")
    bd.add_argument("--labels", type=int, default=200, help="label prompts from T0 templates (default 200)")
    bd.add_argument("--max-prompt-chars", type=int, default=400, help="longest label prompt (default 400)")
    bd.add_argument(
        "--templates",
        choices=("basic", "wide"),
        default="basic",
        help="label templates: basic "
        "(sentiment, news topic; default) or wide (also yes/no, paraphrase, answer checks, ratings)",
    )
    bd.add_argument(
        "--exclude",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="skip ids found in these row files or outcome logs (a new set of new prompts)",
    )
    bd.add_argument("--seed", type=int, default=0)
    return p


def _with_command(argv: list[str]) -> list[str]:
    if argv and argv[0] in (*COMMANDS, "-h", "--help"):
        return argv
    return ["eval", *argv]


def _build_data(args: argparse.Namespace) -> list[str]:
    from router_eval.build_data import build_dataset, excluded_ids
    from router_eval.data import RowSummary, write_rows

    exclude = frozenset(excluded_ids(args.exclude))
    rows = build_dataset(args.data_dir, args.nq, args.labels, args.seed, args.max_prompt_chars, args.templates, exclude)
    write_rows(rows, args.out)
    s = RowSummary.of(rows)
    return [f"{args.out}: {s.n} rows; by source {s.by_source}; by grader {s.by_grader}"]


def _eval(args: argparse.Namespace) -> list[str]:
    from llm_router.core.policy import load_policy
    from tqdm import tqdm

    from router_eval.data import load_rows
    from router_eval.report import format_summary, plot_coverage, router_summary, tier_summary, write_log
    from router_eval.runner import SELF_VERIFY, ConfidenceChoice, run_all

    if args.max_tokens < 1 or args.concurrency < 1 or args.timeout <= 0:
        raise ValueError("--max-tokens and --concurrency must be >= 1 and --timeout > 0")
    policy = load_policy(args.policy or _default_policy())
    rows = load_rows(args.data)[: args.limit] if args.limit else load_rows(args.data)
    tiers = args.tiers if args.tiers is not None else ([] if args.router else policy.tier_names)
    unknown = [t for t in tiers if t not in policy.tier_names]
    if unknown:
        raise ValueError(f"unknown tier(s) {unknown} (the policy's tiers: {', '.join(policy.tier_names)})")
    if (args.out or args.plot) and not tiers:
        raise ValueError("--out and --plot need at least one tier (--tiers)")
    from llm_router.core.confidence import CONFIDENCE_FUNCTIONS, VERIFICATION_FUNCTIONS

    names = [n for n in CONFIDENCE_FUNCTIONS if n not in VERIFICATION_FUNCTIONS]
    choices = [ConfidenceChoice.of(n) for n in names] + [ConfidenceChoice.parse(c) for c in args.confidence]
    if args.self_verify:
        choices.append(ConfidenceChoice.of(SELF_VERIFY))
    choices = list(dict.fromkeys(choices))
    policy_keys = {
        t: ConfidenceChoice.of(policy.tier(t).confidence.function, policy.tier(t).confidence.params).key for t in tiers
    }
    total = len(rows) * (len(tiers) + int(args.router))
    with tqdm(total=total, desc=PROG, unit="call", disable=args.no_progress, file=sys.stderr) as bar:
        by_tier, routed = asyncio.run(
            run_all(
                args.url, policy, rows, tiers, args.router, choices, args.max_tokens, args.timeout,
                args.concurrency, on_done=lambda: bar.update(1),
            )
        )  # fmt: skip
    report: dict[str, Any] = {"data": str(args.data), "url": args.url, "n_rows": len(rows), "tiers": {}}
    for tier, outcomes in by_tier.items():
        report["tiers"][tier] = tier_summary(outcomes, policy_keys[tier])
    if args.router:
        report["router"] = router_summary(routed)
    if args.out:
        report["log"] = str(args.out)
        report["log_rows"] = write_log(by_tier, policy_keys, args.out)
    if args.plot:
        plot_coverage(by_tier, policy_keys, args.plot, title=f"{PROG}: {args.data.name}")
        report["plot"] = str(args.plot)
    if args.json:
        return [json.dumps(report, indent=1)]
    lines = format_summary(report)
    lines += [f"{k}: {report[k]}" for k in ("log", "plot") if k in report]
    return lines


def main(argv: list[str] | None = None) -> int:
    from llm_router.core.policy import PolicyError
    from router_client.client import RouterError

    from router_eval.data import EvalDataError

    args = build_parser().parse_args(_with_command(list(sys.argv[1:] if argv is None else argv)))
    try:
        lines = {"eval": _eval, "build-data": _build_data}[args.command](args)
    except (EvalDataError, PolicyError, RouterError, ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
