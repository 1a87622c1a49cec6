"""`router-client`: call the router from the command line.

    router-client "Summarize: ..."                       # answer on stdout, tier/cost/latency on stderr
    router-client --stream "Write a haiku about GPUs"    # tokens as they arrive (router_stream)
    router-client --json --max-tier tier_medium "..."    # the full result (text, tier, cost, route) as JSON
    router-client --file prompts.jsonl --concurrency 8 --output results.jsonl
    router-client --messages chat.json                   # a conversation: [{"role": "user", "content": "..."}]

A prompt of `-` is read from stdin. `--file` reads JSONL: one object per line with a `prompt` field (a line
may also be a JSON string); it writes one JSON result per line (in input order) and a summary on stderr.
Exit status: 0 when every request succeeded, 1 when the server reported an error, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from router_client.client import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    AsyncRouterClient,
    RouteOptions,
    RouterClient,
    RouterError,
    RouterResult,
    StreamDelta,
    messages_json,
    server_tiers,
)

PROG = "router-client"


class UsageError(ValueError):
    """Bad command-line usage or input file (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Send prompts to the Triton LLM router over gRPC.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("prompt", nargs="?", help="the prompt ('-' reads stdin)")
    parser.add_argument("--file", type=Path, help="JSONL file of prompts (objects with a `prompt` field)")
    parser.add_argument(
        "--messages",
        type=Path,
        metavar="FILE.json",
        help='a conversation instead of a prompt: a JSON list of {"role", "content"} objects, which the tiers '
        "render with their chat templates",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight with --file (default 4)")
    parser.add_argument("--output", type=Path, help="with --file: write the results here instead of stdout")
    parser.add_argument("--stream", action="store_true", help="use router_stream and print tokens as they arrive")
    parser.add_argument("--json", action="store_true", help="print JSON (the result; with --stream one line/event)")
    parser.add_argument("--url", default=DEFAULT_URL, help="Triton gRPC endpoint (default %(default)s)")
    parser.add_argument("--max-tokens", type=int, help="answer length cap (the policy caps it per tier too)")
    parser.add_argument("--force-tier", help="answer with exactly this tier, no escalation (e.g. tier_large)")
    parser.add_argument("--min-tier", help="never start below this tier")
    parser.add_argument("--max-tier", help="never escalate above this tier")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        help="escalation threshold for every tier: a mean token log-prob, so <= 0 (e.g. -1.5)",
    )
    parser.add_argument(
        "--trace", action="store_true", help="print every attempt (tier, confidence, threshold, ...) on stderr"
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request")
    parser.add_argument("--no-progress", action="store_true", help="with --file: no progress bar")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if sum(x is not None for x in (args.prompt, args.file, args.messages)) != 1:
        parser.error("give one prompt or --file or --messages (exactly one)")
    if args.file is not None and args.stream:
        parser.error("--stream prints one answer as it is generated; it cannot be combined with --file")
    if args.output is not None and args.file is None:
        parser.error("--output needs --file")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error("--max-tokens must be positive")
    threshold = args.confidence_threshold
    if threshold is not None and not (math.isfinite(threshold) and threshold <= 0):
        parser.error(
            f"--confidence-threshold must be a log-prob, a finite number <= 0 (e.g. -1.5), not {threshold:g}: "
            "a tier's answer is accepted when its mean token log-prob is at least the threshold"
        )
    return args


def route_options(args: argparse.Namespace) -> RouteOptions:
    return RouteOptions(
        force_tier=args.force_tier,
        min_tier=args.min_tier,
        max_tier=args.max_tier,
        confidence_threshold=args.confidence_threshold,
        return_trace=args.trace,
    )


def read_prompt_file(path: Path) -> list[str]:
    """Prompts from a JSONL file: objects with a `prompt` field, or JSON strings; blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if isinstance(value, dict):
            value = value.get("prompt")
        if not isinstance(value, str):
            raise UsageError(f"{path}:{number}: expected an object with a string `prompt` field")
        prompts.append(value)
    if not prompts:
        raise UsageError(f"{path}: no prompts")
    return prompts


def read_messages_file(path: Path) -> list[dict[str, Any]]:
    """A conversation from a JSON file: a list of {"role", "content"} objects."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    try:
        messages_json(value)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from exc
    return value


def _num(value: Any, digits: int = 4) -> str:
    """A trace number without float noise (4 significant digits), '-' when absent."""
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def trace_lines(result: RouterResult) -> list[str]:
    """The route trace for a human: one line per attempt, then why the router stopped."""
    route = result.route
    lines = [f"  intent {route.get('intent') or '-'} (difficulty {_num(route.get('difficulty'), 3)})"]
    for attempt in route.get("attempts", []):
        if not isinstance(attempt, dict):
            continue
        tokens = f"{attempt.get('input_tokens') or 0}+{attempt.get('output_tokens') or 0} tokens"
        lines.append(
            f"  {attempt.get('tier')}: {attempt.get('step', '-')}, {attempt.get('outcome', '-')}, "
            f"confidence {_num(attempt.get('confidence'))} vs threshold {_num(attempt.get('threshold'))}, "
            f"{tokens}, {_num(attempt.get('latency_ms'), 3)} ms, ${_num(attempt.get('cost'), 3)} -> "
            f"{attempt.get('result') or attempt.get('error') or '-'}"
        )
    if route.get("final_reason"):
        lines.append(f"  {route['final_reason']}")
    return lines


def describe(result: RouterResult) -> str:
    """The one-line summary printed on stderr after an answer."""
    parts = [result.tier, f"escalated={'yes' if result.escalated else 'no'}", f"cost=${result.cost:.6f}"]
    if result.intent:
        parts.append(f"intent={result.intent}")
    parts.append(f"{result.latency_ms:.0f} ms")
    return "[" + ", ".join(parts) + "]"


def error_line(exc: RouterError) -> str:
    return f"{PROG}: error: {exc}"


def print_summary(result: RouterResult, args: argparse.Namespace, err: TextIO) -> None:
    print(describe(result), file=err)
    if args.trace:
        print("\n".join(trace_lines(result)), file=err)


def run_one(
    args: argparse.Namespace, prompt: str, out: TextIO, err: TextIO, messages: list[dict[str, Any]] | None = None
) -> int:
    with RouterClient(args.url, timeout_s=args.timeout) as client:
        if not args.stream:
            result = client.route(prompt, max_tokens=args.max_tokens, options=route_options(args), messages=messages)
            if args.json:
                print(json.dumps(result.to_dict(), ensure_ascii=False), file=out)
            else:
                print(result.text, file=out)
                print_summary(result, args, err)
            return 0
        printed = False
        try:
            events = client.stream(prompt, max_tokens=args.max_tokens, options=route_options(args), messages=messages)
            for event in events:
                if isinstance(event, StreamDelta):
                    if args.json:
                        print(
                            json.dumps({"delta": event.text, "tier": event.tier}, ensure_ascii=False),
                            file=out,
                        )
                    else:
                        out.write(event.text)
                        printed = True
                    out.flush()
                elif args.json:
                    print(json.dumps({"result": event.to_dict()}, ensure_ascii=False), file=out)
                else:
                    out.write("\n")
                    printed = False
                    print_summary(event, args, err)
        finally:
            if printed:  # end the partial answer's line before an error message
                out.write("\n")
                out.flush()
    return 0


async def route_all(
    url: str,
    prompts: list[str],
    *,
    concurrency: int,
    max_tokens: int | None,
    options: RouteOptions,
    timeout_s: float,
    progress: bool,
) -> list[RouterResult | RouterError]:
    """Route every prompt, at most `concurrency` requests in flight; results (or errors) in input order."""
    from tqdm import tqdm

    results: list[RouterResult | RouterError | None] = [None] * len(prompts)
    semaphore = asyncio.Semaphore(concurrency)
    async with AsyncRouterClient(url, timeout_s=timeout_s) as client:
        with tqdm(total=len(prompts), desc=PROG, unit="req", disable=not progress, file=sys.stderr) as bar:

            async def one(index: int, prompt: str) -> None:
                async with semaphore:
                    try:
                        results[index] = await client.route(prompt, max_tokens=max_tokens, options=options)
                    except RouterError as exc:
                        results[index] = exc
                bar.update(1)

            await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return [r for r in results if r is not None]


def summarize(results: Sequence[RouterResult | RouterError], largest_tier: str | None = None) -> str:
    """The summary of a --file run; `largest_tier` names the policy's most expensive tier in the savings line."""
    ok = [r for r in results if isinstance(r, RouterResult)]
    errors = len(results) - len(ok)
    lines = [f"{len(results)} prompts: {len(ok)} answered, {errors} failed"]
    if ok:
        tiers = Counter(r.tier for r in ok)
        p50, p95 = np.percentile([r.latency_ms for r in ok], [50, 95])
        lines.append("tiers: " + ", ".join(f"{tier} {count}" for tier, count in sorted(tiers.items())))
        lines.append(
            f"escalated: {sum(r.escalated for r in ok)}  cost: ${sum(r.cost for r in ok):.6f}  "
            f"latency p50 {p50:.0f} ms, p95 {p95:.0f} ms"
        )
        cost = math.fsum(r.cost for r in ok)
        largest = math.fsum(float(r.route.get("largest_tier_cost") or 0.0) for r in ok)
        if largest > 0:
            lines.append(
                f"cost ${cost:.6f} vs always-{largest_tier or 'the largest tier'} ${largest:.6f}: "
                f"{100 * cost / largest:.1f}% of it, saved ${largest - cost:.6f}"
            )
    return "\n".join(lines)


def result_line(index: int, prompt: str, result: RouterResult | RouterError) -> dict[str, Any]:
    if isinstance(result, RouterError):
        return {"index": index, "prompt": prompt, "error": result.message, "status": result.status}
    return {"index": index, "prompt": prompt, **result.to_dict()}


def largest_tier(url: str, results: Sequence[RouterResult | RouterError]) -> str | None:
    """The policy's most expensive tier (its last), for the savings line; None when it cannot be asked."""
    if not any(isinstance(r, RouterResult) for r in results):
        return None
    try:
        return server_tiers(url)[-1]
    except (RouterError, IndexError):
        return None


def run_file(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    prompts = read_prompt_file(args.file)
    results = asyncio.run(
        route_all(
            args.url,
            prompts,
            concurrency=args.concurrency,
            max_tokens=args.max_tokens,
            options=route_options(args),
            timeout_s=args.timeout,
            progress=not args.no_progress,
        )
    )
    target = open(args.output, "w", encoding="utf-8") if args.output else out  # noqa: SIM115
    try:
        for index, (prompt, result) in enumerate(zip(prompts, results, strict=True)):
            print(json.dumps(result_line(index, prompt, result), ensure_ascii=False), file=target)
    finally:
        if target is not out:
            target.close()
    print(summarize(results, largest_tier(args.url, results)), file=err)
    failures = [r for r in results if isinstance(r, RouterError)]
    if failures:
        print(error_line(failures[0]) + f" (and {len(failures) - 1} more)" * (len(failures) > 1), file=err)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        if args.file is not None:
            return run_file(args, out, err)
        if args.messages is not None:
            return run_one(args, "", out, err, messages=read_messages_file(args.messages))
        prompt = sys.stdin.read().rstrip("\n") if args.prompt == "-" else args.prompt
        return run_one(args, prompt, out, err)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    except RouterError as exc:
        print(error_line(exc), file=err)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
