"""`router-calibrate join-labels`: feedback labels joined to the router's live outcome records."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from llm_router.core.decide import Attempt, Classification, Overrides, RouterFacts, make_trace
from llm_router.core.policy import INTENTS, parse_policy
from llm_router.core.records import attempt_records
from router_calibration.cli import main
from router_calibration.labels import join_labels, read_labels, read_records
from router_calibration.logs import OutcomeLogError, load_log

S, M, L = "tier_small", "tier_medium", "tier_large"
WHEN = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
P = parse_policy(
    {
        "version": 3,
        "tiers": [
            {"name": n, "cost_per_1k_input": c, "cost_per_1k_output": 2 * c, "max_tokens": 64, "deadline_s": 5}
            | ({"escalation_threshold": -1.0} if n != L else {})
            for n, c in ((S, 0.0001), (M, 0.0006), (L, 0.005))
        ],
        "start_tier_by_intent": dict.fromkeys(INTENTS, S),
        "max_escalations": 2,
        "default_start_tier": S,
    }
)
QA = Classification("factual_qa", {}, 0.2)


def _records(request_id, attempts, prompt=None, force=None):
    facts = RouterFacts(elapsed_ms=10.0, request_id=request_id)
    trace = make_trace(P, QA, attempts, Overrides(force_tier=force) if force else None, router=facts)[1]
    return attempt_records(trace, P, WHEN, prompt=prompt)


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ESCALATED = [Attempt(S, "ok", confidence=-2.0, output_tokens=3), Attempt(M, "ok", confidence=-0.2, output_tokens=3)]
FELL_BACK = [Attempt(S, "error", error="boom"), Attempt(M, "ok", confidence=-0.1, output_tokens=3)]
FAILED = [Attempt(S, "error"), Attempt(M, "timeout"), Attempt(L, "error")]


def test_labels_file_jsonl_and_csv(tmp_path):
    feedback = [
        {"id": "a", "score": 0.5, "received": "2026-11-30T01:00:00.000Z"},
        {"id": "b", "correct": True},
        {"id": "a", "correct": False},  # a later label replaces the earlier one
    ]
    assert read_labels(_jsonl(tmp_path / "f.jsonl", feedback)) == ({"a": 0.0, "b": 1.0}, 1)
    (tmp_path / "l.csv").write_text("prompt_id,correct\nx,true\ny,no\n")
    assert read_labels(tmp_path / "l.csv") == ({"x": 1.0, "y": 0.0}, 0)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"score": 1}, "missing column 'id'"),
        ({"id": "a"}, "exactly one of the columns 'score'"),
        ({"id": "a", "score": 1, "correct": True}, "exactly one of the columns 'score'"),
        ({"id": "a", "score": 1.5}, "score must be in [0, 1]"),
        ({"id": "a", "correct": "maybe"}, "correct: not a number or true/false"),
    ],
)
def test_bad_labels_are_named(tmp_path, row, message):
    with pytest.raises(OutcomeLogError, match=r"f\.jsonl:1: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        read_labels(_jsonl(tmp_path / "f.jsonl", [row]))


def test_the_label_goes_to_the_accepted_attempt_only():
    records = _records("esc", ESCALATED) + _records("fb", FELL_BACK) + _records("fail", FAILED)
    records += _records("nolabel", [Attempt(S, "ok", confidence=-0.1)])
    labels = {"esc": 1.0, "fb": 0.0, "fail": 1.0, "ghost": 1.0}
    rows, report = join_labels(records, labels)
    by = {(r["prompt_id"], r["tier"]): r for r in rows}
    assert by[("esc", M)]["score"] == 1.0 and ("esc", S) not in by  # escalated-from: no label, left out
    assert by[("fb", M)]["score"] == 0.0 and "score" not in by[("fb", S)]  # a failed attempt is kept as is
    assert all("score" not in by[("fail", t)] for t in (S, M, L))
    assert not any(r["prompt_id"] == "nolabel" for r in rows)
    assert (report.requests, report.matched, report.unmatched_labels) == (4, 2, 1)
    assert (report.labels_without_answer, report.unlabelled_requests) == (1, 1)
    assert (report.unlabelled_attempts_left_out, report.rows_written) == (2, 6)
    kept, report = join_labels(records, labels, keep_unlabelled=True)
    assert report.rows_written == len(records) == 8


def test_joined_log_loads_and_unlabelled_rows_are_refused_by_fit(tmp_path):
    records = _records("esc", ESCALATED) + _records("one", [Attempt(S, "ok", confidence=-0.1)])
    rows, _ = join_labels(records, {"esc": 1.0, "one": 0.0})
    log = load_log(_jsonl(tmp_path / "labelled.jsonl", rows))
    assert log.n == 2 and log.unlabelled == 0
    rows, _ = join_labels(records, {"esc": 1.0}, keep_unlabelled=True)
    log = load_log(_jsonl(tmp_path / "partly.jsonl", rows))
    with pytest.raises(OutcomeLogError, match="`correct`/`score`"):
        log.require_labels()


def test_group_by_prompt_needs_the_prompt_text():
    with pytest.raises(OutcomeLogError, match="outcome_records_prompts"):
        join_labels(_records("a", ESCALATED), {"a": 1.0}, group_by="prompt")


def _forced_sample(n: int, seed: int = 0):
    """Records and labels of n prompts, each sent to every tier (force_tier) and every answer labelled."""
    rng = random.Random(seed)
    records, labels = [], {}
    for i in range(n):
        for pos, tier in enumerate((S, M, L)):
            right = rng.random() < (0.6, 0.8, 0.95)[pos]
            confidence = -rng.uniform(0, 0.5) if right else -rng.uniform(0.3, 3)
            request_id = f"chatcmpl-{i}-{tier}"
            attempt = Attempt(tier, "ok", confidence=confidence, input_tokens=20, output_tokens=10)
            records += _records(request_id, [attempt], prompt=f"question {i}", force=tier)
            labels[request_id] = float(right)
    return records, labels


def test_group_by_prompt_makes_a_log_that_fit_accepts(tmp_path, capsys):
    records, labels = _forced_sample(60)
    records_dir = tmp_path / "records"
    records_dir.mkdir()
    _jsonl(records_dir / "router_0.jsonl", records[:90])
    _jsonl(records_dir / "router_0.1.jsonl", records[90:])
    _jsonl(tmp_path / "feedback.jsonl", [{"id": k, "correct": bool(v)} for k, v in labels.items()])
    assert len(read_records([records_dir])) == 180
    out = tmp_path / "labelled.jsonl"
    argv = ["join-labels", "--records", str(records_dir), "--labels", str(tmp_path / "feedback.jsonl")]
    assert main([*argv, "--out", str(out), "--group-by", "prompt", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["matched"], counts["prompts"], counts["rows_written"]) == (180, 60, 180)
    assert counts["unmatched_labels"] == 0
    log = load_log(out)
    assert log.tiers == [S, M, L] and log.n == 60 and log.complete and log.unlabelled == 0
    assert main(["fit", "--calib", str(out), "--target-quality", "0.9", "--json"]) == 0
    assert "quality_ratio" in capsys.readouterr().out


def test_cli_reports_matched_and_unmatched(tmp_path, capsys):
    _jsonl(tmp_path / "r.jsonl", _records("esc", ESCALATED) + _records("x", FELL_BACK))
    _jsonl(tmp_path / "f.jsonl", [{"id": "esc", "score": 0.75}, {"id": "zzz", "correct": False}])
    out = tmp_path / "o.jsonl"
    assert main(["join-labels", "--records", str(tmp_path / "r.jsonl"), "--labels", str(tmp_path / "f.jsonl"),
                 "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "matched: 1 requests labelled; unmatched labels: 1" in text and "unlabelled requests: 1" in text
    assert [json.loads(line)["score"] for line in out.read_text().splitlines()] == [0.75]
    assert main(["fit", "--calib", str(tmp_path / "r.jsonl")]) == 2
    assert "no `correct`/`score` column" in capsys.readouterr().err


def test_proxy_labels_from_shadow_agreement():
    from llm_router.core.records import shadow_record

    records = _records("shadowed", [Attempt(S, "ok", confidence=-0.1, output_tokens=3)])
    trace = make_trace(P, QA, [Attempt(S, "ok", confidence=-0.1)], router=RouterFacts(request_id="shadowed"))[1]
    records.append(shadow_record(trace, P, Attempt(L, "ok", confidence=-0.2, output_tokens=4), 0.4, WHEN))
    records += _records("human", [Attempt(S, "ok", confidence=-0.1)])
    trace = make_trace(P, QA, [Attempt(S, "ok", confidence=-0.1)], router=RouterFacts(request_id="human"))[1]
    records.append(shadow_record(trace, P, Attempt(L, "ok"), 1.0, WHEN))
    records += _records("failed-shadow", [Attempt(S, "ok", confidence=-0.1)])
    trace = make_trace(P, QA, [Attempt(S, "ok")], router=RouterFacts(request_id="failed-shadow"))[1]
    records.append(shadow_record(trace, P, Attempt(L, "timeout"), None, WHEN))
    rows, report = join_labels(records, {"human": 0.0})
    assert [(r["prompt_id"], r["tier"], r["score"]) for r in rows] == [("human", S, 0.0)]  # shadow rows: no label
    rows, report = join_labels(records, {"human": 0.0}, proxy=True)
    scores = {(r["prompt_id"], r["tier"]): r.get("score") for r in rows}
    assert scores == {("shadowed", S): 0.4, ("shadowed", L): 1.0, ("human", S): 0.0}  # a human label wins
    assert (report.proxy_labelled, report.matched, report.unlabelled_requests) == (1, 1, 1)
