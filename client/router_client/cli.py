"""`router-client`: call the router from the command line.

    router-client "Summarize: ..."                       # answer on stdout, tier/cost/latency on stderr
    router-client --stream "Write a haiku about GPUs"    # tokens as they arrive (router_stream)
    router-client --json --max-tier tier_medium "..."    # the full result (text, tier, cost, route) as JSON
    router-client --file prompts.jsonl --concurrency 8 --output results.jsonl

A prompt of `-` is read from stdin. `--file` reads JSONL: one object per line with a `prompt` field (a line
may also be a JSON string); it writes one JSON result per line (in input order) and a summary on stderr.
Exit status: 0 when every request succeeded, 1 when the server reported an error, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from router_client.client import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    AsyncRouterClient,
    RouteOptions,
    RouterClient,
    RouterError,
    RouterResult,
    StreamDelta,
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
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight with --file (default 4)")
    parser.add_argument("--output", type=Path, help="with --file: write the results here instead of stdout")
    parser.add_argument("--stream", action="store_true", help="use router_stream and print tokens as they arrive")
    parser.add_argument("--json", action="store_true", help="print JSON (the result; with --stream one line/event)")
    parser.add_argument("--url", default=DEFAULT_URL, help="Triton gRPC endpoint (default %(default)s)")
    parser.add_argument("--max-tokens", type=int, help="answer length cap (the policy caps it per tier too)")
    parser.add_argument("--force-tier", help="answer with exactly this tier, no escalation (e.g. tier_large)")
    parser.add_argument("--min-tier", help="never start below this tier")
    parser.add_argument("--max-tier", help="never escalate above this tier")
    parser.add_argument("--confidence-threshold", type=float, help="escalation threshold for every tier (<= 0)")
    parser.add_argument("--trace", action="store_true", help="ask for the detailed route trace (return_trace)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request")
    parser.add_argument("--no-progress", action="store_true", help="with --file: no progress bar")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.prompt is None) == (args.file is None):
        parser.error("give one prompt or --file (not both)")
    if args.file is not None and args.stream:
        parser.error("--stream prints one answer as it is generated; it cannot be combined with --file")
    if args.output is not None and args.file is None:
        parser.error("--output needs --file")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.max_tokens is not None and args.max_tokens < 1:
        parser.error("--max-tokens must be positive")
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


def describe(result: RouterResult) -> str:
    """The one-line summary printed on stderr after an answer."""
    parts = [result.tier, f"escalated={'yes' if result.escalated else 'no'}", f"cost=${result.cost:.6f}"]
    if result.intent:
        parts.append(f"intent={result.intent}")
    parts.append(f"{result.latency_ms:.0f} ms")
    return "[" + ", ".join(parts) + "]"


def error_line(exc: RouterError) -> str:
    return f"{PROG}: error: {exc}"


def run_one(args: argparse.Namespace, prompt: str, out: TextIO, err: TextIO) -> int:
    with RouterClient(args.url, timeout_s=args.timeout) as client:
        if not args.stream:
            result = client.route(prompt, max_tokens=args.max_tokens, options=route_options(args))
            if args.json:
                print(json.dumps(result.to_dict(), ensure_ascii=False), file=out)
            else:
                print(result.text, file=out)
                print(describe(result), file=err)
            return 0
        printed = False
        try:
            for event in client.stream(prompt, max_tokens=args.max_tokens, options=route_options(args)):
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
                    print(describe(event), file=err)
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


def summarize(results: Sequence[RouterResult | RouterError]) -> str:
    ok = [r for r in results if isinstance(r, RouterResult)]
    errors = len(results) - len(ok)
    lines = [f"{len(results)} prompts: {len(ok)} answered, {errors} failed"]
    if ok:
        tiers = Counter(r.tier for r in ok)
        latencies = sorted(r.latency_ms for r in ok)
        p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
        lines.append("tiers: " + ", ".join(f"{tier} {count}" for tier, count in sorted(tiers.items())))
        lines.append(
            f"escalated: {sum(r.escalated for r in ok)}  cost: ${sum(r.cost for r in ok):.6f}  "
            f"latency p50 {statistics.median(latencies):.0f} ms, p95 {p95:.0f} ms"
        )
    return "\n".join(lines)


def result_line(index: int, prompt: str, result: RouterResult | RouterError) -> dict[str, Any]:
    if isinstance(result, RouterError):
        return {"index": index, "prompt": prompt, "error": result.message, "status": result.status}
    return {"index": index, "prompt": prompt, **result.to_dict()}


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
    print(summarize(results), file=err)
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
