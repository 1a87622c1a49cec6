"""router-client without a router: argument checks, prompt files, output formatting, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from router_client import cli
from router_client.client import RouterError, RouterResult
from router_launcher.serve import free_ports


def test_one_prompt_or_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["p", "--file", "x.jsonl"]):
        with pytest.raises(SystemExit) as info:
            cli.parse_args(argv)
        assert info.value.code == 2
    assert "one prompt or --file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--file", "p.jsonl", "--stream"], "--stream"),
        (["p", "--output", "o.jsonl"], "--output needs --file"),
        (["--file", "p.jsonl", "--concurrency", "0"], "--concurrency"),
        (["p", "--max-tokens", "0"], "--max-tokens"),
    ],
)
def test_bad_combinations_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_overrides_become_route_options() -> None:
    args = cli.parse_args(
        ["p", "--force-tier", "tier_large", "--min-tier", "tier_small", "--max-tier", "tier_medium",
         "--confidence-threshold", "-0.5", "--trace", "--max-tokens", "12", "--url", "h:1"]
    )  # fmt: skip
    options = cli.route_options(args)
    assert (options.force_tier, options.min_tier, options.max_tier) == (
        "tier_large",
        "tier_small",
        "tier_medium",
    )
    assert options.confidence_threshold == -0.5 and options.return_trace
    assert args.max_tokens == 12 and args.url == "h:1"
    assert cli.parse_args(["p"]).url == "localhost:8001"


def test_prompt_file_accepts_objects_and_strings(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "first", "source": "x"}\n\n"second"\n{"prompt": "line\\u2028sep"}\n')
    assert cli.read_prompt_file(path) == ["first", "second", "line\u2028sep"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "ok"}\n{broken\n', "p.jsonl:2: not JSON"),
        ('{"text": "no prompt field"}\n', "p.jsonl:1: expected an object"),
        ("\n\n", "no prompts"),
    ],
)
def test_bad_prompt_files_say_where(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(cli.UsageError, match=message):
        cli.read_prompt_file(path)


def test_missing_prompt_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--file", str(tmp_path / "absent.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _result(tier: str, cost: float, latency: float, escalated: bool = False) -> RouterResult:
    return RouterResult("answer", tier, escalated, cost, {"intent": "coding"}, latency_ms=latency)


def test_describe_and_summary() -> None:
    assert cli.describe(_result("tier_small", 0.0000123, 41.6)) == (
        "[tier_small, escalated=no, cost=$0.000012, intent=coding, 42 ms]"
    )
    results = [
        _result("tier_small", 0.001, 10),
        _result("tier_large", 0.004, 30, True),
        RouterError("bad", "INVALID_ARGUMENT"),
    ]
    text = cli.summarize(results)
    assert "3 prompts: 2 answered, 1 failed" in text
    assert "tier_large 1, tier_small 1" in text
    assert "escalated: 1  cost: $0.005000" in text
    assert cli.result_line(2, "p", results[2]) == {
        "index": 2, "prompt": "p", "error": "bad", "status": "INVALID_ARGUMENT"
    }  # fmt: skip
    assert cli.result_line(0, "p", results[0])["tier"] == "tier_small"


def test_unreachable_server_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    (port,) = free_ports(1)  # nothing listens there
    assert cli.main(["hello", "--url", f"127.0.0.1:{port}", "--timeout", "5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("router-client: error: UNAVAILABLE")


def test_file_mode_reports_failures_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (port,) = free_ports(1)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    out = tmp_path / "out.jsonl"
    argv = ["--file", str(prompts), "--url", f"127.0.0.1:{port}", "--output", str(out), "--no-progress"]
    code = cli.main([*argv, "--timeout", "5"])
    assert code == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    assert all(r["status"] == "UNAVAILABLE" for r in rows)
    err = capsys.readouterr().err
    assert "2 prompts: 0 answered, 2 failed" in err
    assert "(and 1 more)" in err


@pytest.mark.parametrize("value", ["0.5", "inf", "nan"])
def test_a_confidence_threshold_above_zero_or_not_finite_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.parse_args(["hi", f"--confidence-threshold={value}"])
    assert info.value.code == 2
    assert "--confidence-threshold must be a log-prob, a finite number <= 0" in capsys.readouterr().err
    assert cli.parse_args(["hi", "--confidence-threshold", "-1.5"]).confidence_threshold == -1.5


def test_messages_file(tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text('[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]')
    assert cli.read_messages_file(path)[1] == {"role": "user", "content": "Hi"}
    path.write_text('{"role": "user"}')
    with pytest.raises(cli.UsageError, match="non-empty list"):
        cli.read_messages_file(path)


def test_summary_compares_with_the_largest_tier_and_trace_lines() -> None:
    route = {"largest_tier_cost": 0.004, "intent": "coding", "difficulty": 0.5,
             "attempts": [{"tier": "tier_small", "step": "start", "outcome": "ok", "confidence": -2.1000000000000001,
                           "threshold": -1.5, "input_tokens": 9, "output_tokens": 4, "latency_ms": 12.3456,
                           "cost": 2.1000000000000002e-06, "result": "escalated"}],
             "final_reason": "done"}  # fmt: skip
    result = RouterResult("a", "tier_medium", True, 0.001, route)
    assert "cost $0.001000 vs always-tier_large $0.004000: 25.0% of it, saved $0.003000" in cli.summarize(
        [result], "tier_large"
    )
    assert cli.trace_lines(result)[1] == (
        "  tier_small: start, ok, confidence -2.1 vs threshold -1.5, 9+4 tokens, 12.3 ms, $2.1e-06 -> escalated"
    )
