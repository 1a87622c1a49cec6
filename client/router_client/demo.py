"""`router-demo`: start the local Triton server, route real prompts of every intent over gRPC, print the results.

`make demo` runs it after building the models (`make demo PORTS=9000`: HTTP 9000, gRPC 9001, metrics 9002). With
`--url` it uses a server that is already running. It says which tiers are real models and which are stand-ins (from
each tier's `<tier>/<version>/model/export.json` in the model repository) and prints the real tiers' answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from router_launcher.serve import LocalTritonServer, ServeError, ServerOptions, free_ports, port_is_free

from router_client.client import RouteOptions, RouterClient, RouterError, RouterResult, StreamDelta

DEMO_PROMPTS = Path(__file__).parent / "data" / "demo_prompts.jsonl"
STAND_IN_MARKER = "tiny_tier.json"  # router-build-tiny-tiers writes it into each random-weight checkpoint
DEFAULT_PORTS = {"grpc": 8001, "http": 8000, "metrics": 8002}


@dataclass(frozen=True)
class TierOrigin:
    """What a tier serves: a real checkpoint (`real`) or a random-weight stand-in, as its export.json says."""

    tier: str
    real: bool | None  # None: unknown (no local export, e.g. a remote tier or another machine's repository)
    source: str

    def describe(self) -> str:
        if self.real is None:
            return f"{self.tier}: {self.source}"
        if self.real:
            return f"{self.tier}: real model, exported from {self.source}"
        return f"{self.tier}: stand-in, tiny random-weight decoder (gibberish text; real log-probs, latency, routing)"


def tier_origin(repository: Path, tier: str) -> TierOrigin:
    """Read `<repository>/<tier>/<newest version>/model/export.json` (written by router-export-tier)."""
    stamps = sorted(Path(repository).glob(f"{tier}/[0-9]*/model/export.json"), key=lambda p: int(p.parts[-3]))
    if not stamps:
        return TierOrigin(tier, None, "no local export (a remote tier, or a repository on another machine)")
    try:
        source = Path(json.loads(stamps[-1].read_text(encoding="utf-8"))["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return TierOrigin(tier, None, f"unreadable {stamps[-1]}")
    stand_in = (source / STAND_IN_MARKER).exists() or source.parent.name == "tiny_tiers"
    return TierOrigin(tier, not stand_in, source.name)


def load_prompts(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def run_demo(url: str, prompts: list[dict[str, str]], max_tokens: int, repository: Path | None = None) -> int:
    client = RouterClient(url, timeout_s=120)
    try:
        policy_tiers = client.tiers()
    except RouterError as exc:
        print(f"router-demo: cannot ask the server for its tiers: {exc}", file=sys.stderr)
        client.close()
        return 1
    origins = {t: tier_origin(repository, t) if repository else TierOrigin(t, None, "unknown") for t in policy_tiers}
    print("Tiers (cheapest first):")
    for origin in origins.values():
        print(f"  {origin.describe()}")
    print()
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
        if origins.get(result.tier, TierOrigin(result.tier, None, "")).real:
            print(f"{'':>4}answer: {_short(result.text, 110)}")
    print("-" * len(header))
    answered = len(prompts) - failures
    print(f"answered {answered}/{len(prompts)}   tiers {dict(sorted(tiers.items()))}   escalations {escalations}")
    if total_large > 0:
        print(
            f"cost {total_cost:.7f} USD vs always-{policy_tiers[-1]} {total_large:.7f} USD "
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
    stand_ins = [o.tier for o in origins.values() if o.real is False]
    if stand_ins:
        print(
            f"\n({', '.join(stand_ins)} {'is a' if len(stand_ins) == 1 else 'are'} tiny random-weight stand-in"
            f"{'' if len(stand_ins) == 1 else 's'} built locally: {'its' if len(stand_ins) == 1 else 'their'} text is"
            " gibberish (not printed above),\n while the routing, confidence scoring, escalation and cost accounting"
            " are the real thing. router-export-tier exports a real checkpoint into a tier.)"
        )
    client.close()
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="router-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="use a running server (host:grpc_port) instead of starting one")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--prompts", type=Path, default=DEMO_PROMPTS, help="JSONL with a `prompt` field per line")
    parser.add_argument("--max-tokens", type=int, default=24)
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(
            f"--{name}-port",
            type=int,
            help=f"{name} port of the server it starts (default {port}, or free ports when the defaults are taken; "
            "a port given here must be free)",
        )
    args = parser.parse_args(argv)
    prompts = load_prompts(args.prompts)
    if args.url:
        local = args.model_repository if args.model_repository.is_dir() else None
        return run_demo(args.url, prompts, args.max_tokens, local)
    chosen = {name: getattr(args, f"{name}_port") for name in DEFAULT_PORTS}
    if any(port is not None for port in chosen.values()):
        ports = [chosen[name] or DEFAULT_PORTS[name] for name in ("grpc", "http", "metrics")]
    else:
        ports = [DEFAULT_PORTS[name] for name in ("grpc", "http", "metrics")]
        if not all(port_is_free("127.0.0.1", p) for p in ports):
            ports = free_ports(3)
    options = ServerOptions(
        model_repository=args.model_repository, grpc_port=ports[0], http_port=ports[1], metrics_port=ports[2]
    )
    print(
        f"Starting the local Triton server on {args.model_repository} (gRPC 127.0.0.1:{ports[0]}, HTTP {ports[1]}, "
        f"metrics {ports[2]}) ...",
        flush=True,
    )
    try:
        server = LocalTritonServer(options).start()
    except ServeError as exc:
        print(f"router-demo: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"ready in {server.startup_seconds:.1f}s; routing {len(prompts)} real prompts over gRPC\n", flush=True)
        return run_demo(server.grpc_url, prompts, args.max_tokens, args.model_repository)
    finally:
        server.stop()
        print("server stopped")


if __name__ == "__main__":
    raise SystemExit(main())
