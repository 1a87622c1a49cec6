"""`router-demo`: start the local Triton server, route real prompts of every intent over gRPC, print the results.

`make demo` runs it after building the models. With `--url` it uses a server that is already running.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from router_launcher.serve import LocalTritonServer, ServeError, ServerOptions, free_ports, port_is_free

from router_client.client import RouteOptions, RouterClient, RouterError, RouterResult, StreamDelta

DEMO_PROMPTS = Path(__file__).parent / "data" / "demo_prompts.jsonl"


def load_prompts(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def run_demo(url: str, prompts: list[dict[str, str]], max_tokens: int) -> int:
    client = RouterClient(url, timeout_s=120)
    header = f"{'#':>2}  {'expected intent':<16} {'classified as':<16} {'tier':<12} {'esc':<4} {'cost USD':>11}  prompt"
    print(header)
    print("-" * len(header))
    total_cost = total_large = 0.0
    escalations = 0
    tiers: dict[str, int] = {}
    failures = 0
    for index, item in enumerate(prompts, 1):
        try:
            result = client.route(item["prompt"], max_tokens=max_tokens)
        except RouterError as exc:
            failures += 1
            print(f"{index:>2}  {item.get('expected_intent', '?'):<16} ERROR: {exc}")
            continue
        route = result.route
        total_cost += result.cost
        total_large += float(route.get("largest_tier_cost", 0.0))
        escalations += int(result.escalated)
        tiers[result.tier] = tiers.get(result.tier, 0) + 1
        print(
            f"{index:>2}  {item.get('expected_intent', '?'):<16} {route.get('intent') or '-':<16} {result.tier:<12} "
            f"{'yes' if result.escalated else 'no':<4} {result.cost:>11.7f}  {_short(item['prompt'], 60)}"
        )
    print("-" * len(header))
    answered = len(prompts) - failures
    print(f"answered {answered}/{len(prompts)}   tiers {dict(sorted(tiers.items()))}   escalations {escalations}")
    if total_large > 0:
        print(
            f"cost {total_cost:.7f} USD vs always-{'tier_large'} {total_large:.7f} USD "
            f"({100 * total_cost / total_large:.1f}% of it, saved {total_large - total_cost:.7f} USD)"
        )
    print("\nStreaming one prompt through router_stream (hold-back, then tokens as they arrive):")
    sample = prompts[0]["prompt"]
    print(textwrap.indent(_short(sample, 100), "  prompt: "))
    print("  answer: ", end="", flush=True)
    try:
        for event in client.stream(sample, max_tokens=max_tokens, options=RouteOptions()):
            if isinstance(event, StreamDelta):
                print(event.text, end="", flush=True)
            elif isinstance(event, RouterResult):
                print(f"\n  -> answered by {event.tier}, escalated={event.escalated}, cost={event.cost:.7f} USD")
    except RouterError as exc:
        print(f"\n  stream failed: {exc}")
        failures += 1
    print(
        "\n(The tiers here are tiny random-weight decoders built locally, so the answers are gibberish; the routing,"
        "\n confidence scoring, escalation and cost accounting are the real thing. Export real checkpoints with"
        "\n router-export-tier to serve real answers.)"
    )
    client.close()
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="router-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="use a running server (host:grpc_port) instead of starting one")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--prompts", type=Path, default=DEMO_PROMPTS, help="JSONL with a `prompt` field per line")
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args(argv)
    prompts = load_prompts(args.prompts)
    if args.url:
        return run_demo(args.url, prompts, args.max_tokens)
    ports = [8001, 8000, 8002]
    if not all(port_is_free("127.0.0.1", p) for p in ports):
        ports = free_ports(3)
    options = ServerOptions(
        model_repository=args.model_repository, grpc_port=ports[0], http_port=ports[1], metrics_port=ports[2]
    )
    print(f"Starting the local Triton server on {args.model_repository} (gRPC 127.0.0.1:{ports[0]}) ...", flush=True)
    try:
        server = LocalTritonServer(options).start()
    except ServeError as exc:
        print(f"router-demo: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"ready in {server.startup_seconds:.1f}s; routing {len(prompts)} real prompts over gRPC\n", flush=True)
        return run_demo(server.grpc_url, prompts, args.max_tokens)
    finally:
        server.stop()
        print("server stopped")


if __name__ == "__main__":
    raise SystemExit(main())
