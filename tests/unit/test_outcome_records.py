"""Live outcome records: the pure rows (core/records.py), the rotating writer (router/records.py), and how the
outcome-log readers, replay and fit take unlabelled records."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from llm_router.core.decide import Attempt, Classification, Overrides, RouterFacts, make_trace
from llm_router.core.policy import INTENTS, parse_policy
from llm_router.core.records import answer_agreement, attempt_records, iso_utc, shadow_record, shadow_tier
from llm_router.router.records import OutcomeRecorder, RecordSettings, record_settings, rotated_name
from router_calibration.calibrate import calibrate
from router_calibration.logs import OutcomeLogError, OutcomeRow, build_log, load_log, read_any
from router_calibration.replay import replay

S, M, L = "tier_small", "tier_medium", "tier_large"
WHEN = datetime(2026, 11, 30, 1, 2, 3, 456000, tzinfo=UTC)


def _policy():
    tiers = [
        {"name": name, "cost_per_1k_input": cin, "cost_per_1k_output": cout, "max_tokens": 64, "deadline_s": 5}
        | ({"escalation_threshold": thr} if thr is not None else {})
        for name, cin, cout, thr in ((S, 0.0001, 0.0002, -1.0), (M, 0.0006, 0.0012, -0.5), (L, 0.005, 0.015, None))
    ]
    return parse_policy(
        {
            "version": 7,
            "tiers": tiers,
            "start_tier_by_intent": dict.fromkeys(INTENTS, S),
            "max_escalations": 2,
            "default_start_tier": S,
        }
    )


P = _policy()
QA = Classification("factual_qa", {"factual_qa": 0.9}, difficulty=0.25)


def _trace(attempts, request_id="req-1", classification=QA):
    facts = RouterFacts(elapsed_ms=100.0, request_id=request_id)
    return make_trace(P, classification, attempts, router=facts)[1]


def test_one_row_per_attempt_in_the_outcome_log_shape():
    attempts = [
        Attempt(S, "ok", confidence=-2.0, input_tokens=10, output_tokens=5, latency_ms=30.0),
        Attempt(M, "timeout", error="deadline", latency_ms=5000.0),
        Attempt(L, "ok", confidence=-math.inf, input_tokens=10, output_tokens=7, latency_ms=50.0),
    ]
    trace = _trace(attempts)
    assert trace.to_dict()["request_id"] == "req-1"
    rows = attempt_records(trace, P, WHEN, "router")
    assert [r["tier"] for r in rows] == [S, M, L] and [r["tier_pos"] for r in rows] == [0, 1, 2]
    assert {r["prompt_id"] for r in rows} == {"req-1"} and rows[0]["time"] == "2026-11-30T01:02:03.456Z"
    assert [r["step"] for r in rows] == ["start", "escalate", "fallback"]
    assert [r["outcome"] for r in rows] == ["ok", "timeout", "ok"]
    assert [r["accepted"] for r in rows] == [False, False, True]
    assert [r["escalated"] for r in rows] == [True, False, False]
    assert rows[0]["confidence"] == -2.0 and rows[1]["confidence"] is None and rows[2]["confidence"] == "-inf"
    assert rows[0]["cost_usd"] == pytest.approx(10 * 0.0001 / 1000 + 5 * 0.0002 / 1000)
    assert (rows[0]["intent"], rows[0]["difficulty"], rows[0]["policy_version"]) == ("factual_qa", 0.25, 7)
    assert rows[2]["final_tier"] == L and rows[2]["request_status"] == "accepted"
    assert "score" not in rows[0] and "correct" not in rows[0]  # unlabelled
    assert "prompt" not in rows[0] and "messages" not in rows[0]  # prompts are off unless asked for
    json.dumps(rows, allow_nan=False)  # strict JSON


def test_prompt_and_messages_only_when_given():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    rows = attempt_records(_trace([Attempt(S, "ok", confidence=-0.1)]), P, WHEN, prompt="Capital of France?")
    assert rows[0]["prompt"] == "Capital of France?" and "messages" not in rows[0]
    rows = attempt_records(_trace([Attempt(S, "ok", confidence=-0.1)]), P, WHEN, "x", "Capital?", messages)
    assert rows[0]["messages"] == messages


def test_rows_need_a_request_id_and_offline_traces_have_none():
    offline = make_trace(P, QA, [Attempt(S, "ok", confidence=-0.1)])[1]
    assert "request_id" not in offline.to_dict()
    with pytest.raises(ValueError, match="request_id"):
        attempt_records(offline, P, WHEN)


def test_iso_utc_converts_to_utc():
    from datetime import timedelta, timezone

    assert iso_utc(datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))) == "2026-01-01T00:00:00.000Z"


def _requests(n=6):
    """Records of n requests: even ones escalate tier_small -> tier_medium, odd ones are answered by tier_small."""
    rows = []
    for i in range(n):
        if i % 2 == 0:
            attempts = [Attempt(S, "ok", confidence=-3.0, output_tokens=4), Attempt(M, "ok", confidence=-0.1)]
        else:
            attempts = [Attempt(S, "ok", confidence=-0.2, output_tokens=4)]
        rows += attempt_records(_trace(attempts, f"r{i}"), P, WHEN)
    return rows


def _write(rows, path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_unlabelled_records_load_and_replay(tmp_path):
    log = load_log(_write(_requests(), tmp_path / "records.jsonl"))
    assert log.tiers == [S, M] and log.n == 6 and log.unlabelled == 9 and np.isnan(log.score).all()
    assert log.intents == ["factual_qa"] * 6
    # replaying the same policy (its tiers: those of the log) escalates the same requests again
    policy = parse_policy({**P.to_dict(), "tiers": P.to_dict()["tiers"][:2]})
    result = replay(policy, log)
    assert list(result.escalations) == [1, 0] * 3 and list(result.final_tier) == [1, 0] * 3


def test_fit_names_the_missing_label_column(tmp_path):
    log = load_log(_write(_requests(), tmp_path / "records.jsonl"))
    with pytest.raises(OutcomeLogError, match="no `correct`/`score` column.*join-labels"):
        log.require_labels()
    with pytest.raises(OutcomeLogError, match="no `correct`/`score` column"):
        calibrate(log, None, 0.95)


def test_a_directory_of_records_is_one_log_in_arrival_order(tmp_path):
    rows = _requests()  # r0 (2 rows), r1, r2 (2), r3, r4 (2), r5
    for row in rows:
        row["time"] = f"2026-11-30T01:00:0{row['prompt_id'][1]}.000Z"
    _write(rows[:3], tmp_path / "router_0.2.jsonl")  # rotated: the oldest file
    _write(rows[6:], tmp_path / "router_0.jsonl")  # the current file
    _write(rows[3:6], tmp_path / "router_0.1.jsonl")
    _write([rows[-1] | {"prompt_id": "s0", "time": "2026-11-30T01:00:02.500Z"}], tmp_path / "router_stream_0.jsonl")
    assert len(read_any(tmp_path)) == len(rows) + 1
    assert load_log(tmp_path).prompt_ids == ["r0", "r1", "r2", "s0", "r3", "r4", "r5"]


# -- the writer ------------------------------------------------------------------------------------------------------


def test_settings_from_config_and_environment():
    params = {"outcome_records_dir": "/data/records", "outcome_records_max_bytes": "1000"}
    settings = record_settings(params.get, environ={})
    assert settings == RecordSettings(Path("/data/records"), False, 1000, 10)
    assert record_settings({}.get, environ={}).directory is None  # off by default
    env = {"LLM_ROUTER_OUTCOME_RECORDS_DIR": "/env/dir", "LLM_ROUTER_OUTCOME_RECORDS_PROMPTS": "true"}
    assert record_settings({}.get, environ=env) == RecordSettings(Path("/env/dir"), True)
    assert record_settings(params.get, environ=env).directory == Path("/data/records")  # config.pbtxt wins
    with pytest.raises(ValueError, match="outcome_records_prompts must be true or false"):
        record_settings({"outcome_records_prompts": "maybe"}.get, environ={})
    with pytest.raises(ValueError, match="outcome_records_backups must be an integer >= 1"):
        record_settings({"outcome_records_backups": "0"}.get, environ={})


def test_rotated_files_keep_the_jsonl_suffix():
    assert rotated_name("/d/router_0.jsonl.3") == "/d/router_0.3.jsonl"
    assert rotated_name("/d/other.log.1") == "/d/other.log.1"


def test_recorder_writes_and_rotates_by_size(tmp_path):
    rows = _requests(40)
    size = len(json.dumps(rows[0], separators=(",", ":"))) + 1
    recorder = OutcomeRecorder(tmp_path / "records", "router_0", max_bytes=size * 10, backups=2)
    recorder.write(rows)
    recorder.close()
    files = sorted(p.name for p in (tmp_path / "records").iterdir())
    assert files == ["router_0.1.jsonl", "router_0.2.jsonl", "router_0.jsonl"]  # older files were dropped
    kept = read_any(tmp_path / "records")
    assert 10 < len(kept) < len(rows) and all(p.stat().st_size <= size * 11 for p in (tmp_path / "records").iterdir())
    assert (recorder.written, recorder.failed, recorder.dropped) == (len(rows), 0, 0)
    newest = [json.loads(line) for line in (tmp_path / "records" / "router_0.jsonl").read_text().splitlines()]
    assert newest[-1] == json.loads(json.dumps(rows[-1]))  # the last row is in the current file


def test_a_failed_write_is_counted_not_raised(tmp_path):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    errors: list[str] = []
    recorder = OutcomeRecorder(blocker / "records", "router_0", on_error=errors.append)
    recorder.write(_requests(2))
    recorder.close()
    assert (recorder.written, recorder.failed) == (0, 3)
    assert "outcome records directory" in errors[0]
    assert sum("not written" in e for e in errors) == 2  # the 1st and 2nd failure (then the 4th, 8th, ...)


def test_a_full_queue_drops_and_counts(tmp_path):
    errors: list[str] = []
    recorder = OutcomeRecorder(tmp_path, "router_0", queue_size=1, on_error=errors.append)
    recorder._listener.stop()  # no writer: the queue fills
    recorder.write(_requests(2))
    assert recorder.dropped == 2 and any("queue full" in e for e in errors)
    recorder._listener.start()
    recorder.close()
    assert recorder.written == 1


# -- shadow evaluation -----------------------------------------------------------------------------------------------


def test_shadow_goes_to_the_largest_allowed_tier_not_tried():
    answered = _trace([Attempt(S, "ok", confidence=-0.1)])
    assert shadow_tier(P, answered) == L
    assert shadow_tier(P, answered, Overrides(max_tier=M)) == M
    assert shadow_tier(P, _trace([Attempt(S, "ok", confidence=-3.0), Attempt(L, "ok")])) is None  # L answered
    failed = _trace([Attempt(S, "error"), Attempt(M, "error"), Attempt(L, "error")])
    assert failed.status == "failed" and shadow_tier(P, failed) is None
    forced = make_trace(P, QA, [Attempt(M, "ok", confidence=-9.0)], Overrides(force_tier=M), RouterFacts())[1]
    assert shadow_tier(P, forced, Overrides(force_tier=M)) is None  # the only allowed tier answered


def test_answer_agreement_is_token_f1():
    assert answer_agreement("Paris.", "paris") == 1.0
    assert answer_agreement("The capital is Paris", "Paris") == pytest.approx(2 * 0.25 * 1 / 1.25)
    assert answer_agreement("Lyon", "Paris") == 0.0
    assert answer_agreement("", "") == 1.0 and answer_agreement("", "Paris") == 0.0


def test_shadow_record_has_its_own_cost_and_the_agreement():
    trace = _trace([Attempt(S, "ok", confidence=-0.1, input_tokens=10, output_tokens=5)])
    shadow = Attempt(L, "ok", confidence=-0.3, input_tokens=10, output_tokens=6, latency_ms=80.0)
    row = shadow_record(trace, P, shadow, 0.5, WHEN, prompt="Capital of France?")
    assert (row["prompt_id"], row["tier"], row["tier_pos"], row["attempt"]) == ("req-1", L, 2, 1)
    assert row["shadow"] is True and row["step"] == "shadow" and not row["accepted"] and row["agreement"] == 0.5
    assert (
        row["cost_usd"] == pytest.approx(10 * 0.005 / 1000 + 6 * 0.015 / 1000) and row["prompt"] == "Capital of France?"
    )
    assert trace.cost == pytest.approx(10 * 0.0001 / 1000 + 5 * 0.0002 / 1000)  # the request's cost is without it
    failed = shadow_record(trace, P, Attempt(L, "timeout", error="deadline"), None, WHEN)
    assert failed["outcome"] == "timeout" and failed["agreement"] is None and "prompt" not in failed
    rows = attempt_records(trace, P, WHEN) + [row]
    log = build_log([OutcomeRow.from_raw(r) for r in rows])  # one prompt: its answer and the shadow answer
    assert log.tiers == [S, L] and log.ok.all()
