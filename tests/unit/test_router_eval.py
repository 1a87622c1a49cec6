"""router-eval: graders, row validation (errors name the line), AUROC / coverage maths, outcome-log output."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from router_calibration.logs import load_log, read_any
from router_eval.build_data import build_dataset, excluded_ids, label_rows, nq_rows
from router_eval.cli import main
from router_eval.data import EvalDataError, EvalRow, first_choice, grade, load_rows, normalize
from router_eval.metrics import accuracy_at_coverage, auroc, coverage_curve, threshold_for_coverage
from router_eval.report import tier_summary, write_log
from router_eval.runner import ConfidenceChoice, Generation, TierOutcome

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "evaluation" / "router_eval" / "data" / "sample.jsonl"
POLICY = ROOT / "model_repository" / "router" / "1" / "policy.yaml"


# -- graders ----


def test_normalize_is_squad_style():
    assert normalize("  The Eiffel-Tower, in PARIS!  ") == "eiffel tower in paris"


@pytest.mark.parametrize(
    ("output", "answers", "expected"),
    [
        ("The capital of France is Paris.", ["Paris"], True),
        ("paris", ["Paris"], True),
        ("Parisian food is great", ["Paris"], False),  # whole words only
        ("It was in December 1972.", ["14 December 1972 UTC", "December 1972"], True),
        ("someone", ["one"], False),
        ("", ["Paris"], False),
    ],
)
def test_contains(output, answers, expected):
    assert grade("contains", output, answers) is expected


def test_exact_uses_the_first_non_blank_line():
    assert grade("exact", "\n H2O.\nBecause water is...", ["H2O"])
    assert not grade("exact", "It is H2O", ["H2O"])


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("2 + 3 = 5", True),  # the LAST number counts
        ("The answer is 5.", True),
        ("5.0", True),
        ("The answer is 6, not 5? No: 6", False),
        ("five", False),
        ("1,000 - 995 = 5", True),
    ],
)
def test_number_takes_the_last_number(output, expected):
    assert grade("number", output, ["5"]) is expected


def test_number_thousands_separator():
    assert grade("number", "It costs 1,250 dollars", ["1250"])


def test_choice_takes_the_first_named_label():
    choices = ["positive", "negative"]
    assert grade("choice", "Positive. Not negative at all.", ["positive"], choices)
    assert not grade("choice", "It is negative, not positive.", ["positive"], choices)
    assert not grade("choice", "I cannot tell.", ["positive"], choices)
    # two labels starting at the same place: the longer one is named
    assert first_choice("not equivalent", ["equivalent", "not equivalent"]) == "not equivalent"
    assert first_choice("Science and technology", ["Sports", "Science and technology"]) == "Science and technology"


def test_unknown_grader_raises():
    with pytest.raises(ValueError, match="unknown grader"):
        grade("fuzzy", "x", ["x"])


# -- rows ----


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = '{"id": "a", "prompt": "Capital of France?", "answers": ["Paris"], "grader": "contains"}'


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a row must be a JSON object"),
        ('{"id": "b", "answers": ["x"], "grader": "contains"}', "exactly one of `prompt` and `messages`"),
        (
            '{"id": "b", "prompt": "p", "messages": [{"role": "user", "content": "p"}], "answers": ["x"], '
            '"grader": "contains"}',
            "exactly one of",
        ),
        ('{"id": "b", "prompt": "p", "answers": [], "grader": "contains"}', "answers"),
        ('{"id": "b", "prompt": "p", "answers": ["x"], "grader": "fuzzy"}', "unknown grader 'fuzzy'"),
        ('{"id": "b", "prompt": "p", "answers": ["x"], "grader": "choice"}', "needs `choices`"),
        ('{"id": "b", "prompt": "p", "answers": ["x"], "grader": "choice", "choices": ["y", "z"]}', "not among"),
        ('{"id": "b", "prompt": "p", "answers": ["x"], "grader": "contains", "choices": ["x", "y"]}', "only for"),
        ('{"id": "b", "prompt": "p", "answers": ["ten"], "grader": "number"}', "numeric answers"),
        ('{"id": "b", "prompt": "p", "answer": ["x"], "grader": "contains"}', "unknown field"),
        ('{"id": "b", "prompt": "   ", "answers": ["x"], "grader": "contains"}', "the prompt is empty"),
        ('{"id": "a", "prompt": "p", "answers": ["x"], "grader": "contains"}', "id 'a' already used on line 1"),
    ],
)
def test_bad_row_names_its_line(tmp_path, bad, message):
    path = _write(tmp_path, GOOD, "", bad)
    with pytest.raises(EvalDataError, match=message) as info:
        load_rows(path)
    assert str(info.value).startswith(f"{path}:3: ")


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(EvalDataError, match="no rows"):
        load_rows(_write(tmp_path, ""))


def test_messages_render_like_the_openai_front():
    one = EvalRow.model_validate(
        {"id": 1, "messages": [{"role": "user", "content": "Hi?"}], "answers": ["x"], "grader": "contains"}
    )
    assert one.id == "1" and one.prompt_text == "Hi?"
    two = EvalRow.model_validate(
        {
            "id": "m",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
            "answers": ["x"],
            "grader": "contains",
        }
    )
    assert two.prompt_text == "System: Be brief.\n\nUser: Hi?"


def test_committed_sample_is_valid_and_covers_every_grader():
    rows = load_rows(SAMPLE)
    assert len(rows) >= 30
    assert {r.grader for r in rows} == {"contains", "exact", "number", "choice"}
    assert any(r.messages for r in rows)
    for r in rows:  # every gold answer passes its own grader
        assert r.grade(r.answers[0]), r.id


# -- metrics on hand-made numbers ----


def test_auroc_known_values():
    # right answers at 0.9, 0.8, 0.3; wrong at 0.5, 0.1: pairs (right > wrong) = 2 + 2 + 1 of 6
    conf = [-0.1, -0.2, -0.7, -0.5, -0.9]
    correct = [True, True, True, False, False]
    assert auroc(conf, correct) == pytest.approx(5 / 6)
    assert auroc([-1.0, -2.0], [True, False]) == 1.0
    assert auroc([-2.0, -1.0], [True, False]) == 0.0
    assert auroc([-1.0, -1.0], [True, False]) == 0.5  # a tie counts half
    assert auroc([-1.0, -2.0], [True, True]) is None  # undefined with one class


def test_auroc_ranks_minus_inf_and_nan_lowest():
    conf = [-0.5, -math.inf, math.nan, -3.0]
    correct = [True, False, False, True]
    assert auroc(conf, correct) == 1.0
    # -inf and NaN tie with each other
    assert auroc([-math.inf, math.nan], [True, False]) == 0.5


def test_accuracy_at_coverage_known_values():
    conf = [-0.1, -0.2, -0.3, -0.4]
    correct = [True, True, False, True]
    acc = accuracy_at_coverage(conf, correct, coverages=(0.25, 0.5, 0.75, 1.0))
    assert acc == {"0.25": 1.0, "0.5": 1.0, "0.75": pytest.approx(2 / 3), "1": 0.75}
    # coverage 0.1 of 4 answers keeps ceil(0.4) = 1 answer
    assert accuracy_at_coverage(conf, correct, coverages=(0.1,)) == {"0.1": 1.0}
    cov, curve = coverage_curve(conf, correct)
    assert list(cov) == [0.25, 0.5, 0.75, 1.0]
    assert list(curve) == pytest.approx([1.0, 1.0, 2 / 3, 0.75])
    assert threshold_for_coverage(conf, 0.5) == -0.2


def test_accuracy_at_coverage_order_is_by_confidence_not_input():
    conf = [-3.0, -0.1, -2.0]
    correct = [False, True, False]
    assert accuracy_at_coverage(conf, correct, coverages=(1 / 3, 1.0)) == {
        "0.333333": 1.0,
        "1": pytest.approx(1 / 3),
    }


# -- outcome log read back by router_calibration.logs ----


def _outcome(row: EvalRow, tier: str, pos: int, text: str, logprobs: list[float], ok: bool = True) -> TierOutcome:
    gen = Generation(
        text=text,
        pieces=[(text, logprobs)] if ok else [],
        input_tokens=10,
        output_tokens=len(logprobs),
        latency_ms=12.5,
        outcome="ok" if ok else "error",
        error=None if ok else "boom",
    )
    conf = {"mean_logprob": sum(logprobs) / len(logprobs) if ok else -math.inf}
    return TierOutcome(
        row=row,
        tier=tier,
        tier_pos=pos,
        answer=gen,
        correct=ok and row.grade(text),
        confidences=conf,
        policy_confidence=conf["mean_logprob"],
        cost_usd=0.001 * (pos + 1),
        tokens_in=10,
        tokens_out=len(logprobs),
        latency_ms=12.5,
    )


@pytest.mark.parametrize("name", ["log.jsonl", "log.csv", "log.jsonl.gz"])
def test_outcome_log_reads_back(tmp_path, name):
    rows = load_rows(SAMPLE)[:3]
    outcomes = {
        "tier_small": [
            _outcome(rows[0], "tier_small", 0, "Paris", [-0.1, -0.3]),
            _outcome(rows[1], "tier_small", 0, "Kyoto", [-2.0]),
            _outcome(rows[2], "tier_small", 0, "", [], ok=False),
        ],
        "tier_large": [_outcome(r, "tier_large", 2, r.answers[0], [-0.05]) for r in rows],
    }
    path = tmp_path / name
    assert write_log(outcomes, {"tier_small": "mean_logprob", "tier_large": "mean_logprob"}, path) == 6
    canon = read_any(path)
    assert {r.tier for r in canon} == {"tier_small", "tier_large"}
    log = load_log(path)
    assert log.tiers == ["tier_small", "tier_large"]
    assert log.prompt_ids == [r.id for r in rows]
    assert log.score[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert log.score[:, 1].tolist() == [1.0, 1.0, 1.0]
    assert log.confidence[0, 0] == pytest.approx(-0.2)
    assert log.confidence[2, 0] == -math.inf
    assert log.cost[0].tolist() == pytest.approx([0.001, 0.003])
    assert log.tokens_out[0, 0] == 2 and log.latency_ms[0, 0] == 12.5
    assert log.outcome[2, 0] == "error" and not log.ok[2, 0]


def test_tier_summary_fields():
    rows = load_rows(SAMPLE)[:3]
    outs = [
        _outcome(rows[0], "tier_small", 0, "Paris", [-0.1]),
        _outcome(rows[1], "tier_small", 0, "Kyoto", [-2.0]),
        _outcome(rows[2], "tier_small", 0, "Rome", [-0.5]),
    ]
    s = tier_summary(outs, "mean_logprob")
    assert s["n"] == 3 and s["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["auroc"] == 1.0 and s["confidences"]["mean_logprob"]["auroc"] == 1.0
    assert s["accuracy_at_coverage"]["0.5"] == 1.0 and s["accuracy_at_coverage"]["1"] == pytest.approx(0.6667)
    assert s["by_source"] == {"capitals": {"n": 3, "accuracy": pytest.approx(0.6667)}}


def test_confidence_choice_parse():
    assert ConfidenceChoice.parse("first_k_mean:k=4").key == "first_k_mean:k=4"
    assert ConfidenceChoice.parse("first_k_mean:k=4").params == (("k", 4),)
    assert ConfidenceChoice("self_verify").verification
    assert not ConfidenceChoice("mean_logprob").verification
    with pytest.raises(ValueError, match="k must be"):
        ConfidenceChoice.parse("first_k_mean:k=0")
    with pytest.raises(ValueError, match="unknown confidence function"):
        ConfidenceChoice.parse("nope")


# -- CLI errors ----


def test_cli_bad_row_is_one_line_error(tmp_path, capsys):
    path = _write(tmp_path, GOOD, '{"id": "b", "prompt": "p", "answers": ["x"], "grader": "fuzzy"}')
    assert main(["--url", "127.0.0.1:1", "--data", str(path), "--policy", str(POLICY)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"router-eval: error: {path}:2: grader: unknown grader 'fuzzy'")


def test_cli_unknown_tier(tmp_path, capsys):
    assert main(["--data", str(SAMPLE), "--policy", str(POLICY), "--tiers", "tier_huge"]) == 2
    assert "unknown tier(s) ['tier_huge']" in capsys.readouterr().err


def test_cli_unreachable_server(capsys):
    assert main(["--url", "127.0.0.1:1", "--data", str(SAMPLE), "--policy", str(POLICY), "--no-progress"]) == 2
    assert "cannot reach Triton at 127.0.0.1:1" in capsys.readouterr().err


# -- build-data (only with ../shared/data; never required) ----

SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "qa" / "nq_open").is_dir(), reason="../shared/data is not present")
def test_build_dataset_from_shared_data():
    rows = build_dataset(SHARED, nq=10, labels=40, seed=1)
    assert sum(r.source == "nq_open" for r in rows) == 10
    labels = [r for r in rows if r.grader == "choice"]
    assert len(labels) == 40 and all(r.answers[0] in r.choices for r in labels)
    assert [r.id for r in rows] == [r.id for r in build_dataset(SHARED, nq=10, labels=40, seed=1)]


def test_build_data_missing_dir_names_the_flag(tmp_path, capsys):
    assert main(["build-data", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "--data-dir" in capsys.readouterr().err


def _fake_shared(root: Path) -> Path:
    """A tiny ../shared/data: 6 NQ-open questions and two yes/no templates over the same 6 rows."""
    nq = root / "qa" / "nq_open" / "NQ-open.dev.jsonl"
    nq.parent.mkdir(parents=True)
    nq.write_text("".join(json.dumps({"question": f"who is {i}", "answer": [f"p{i}"]}) + "\n" for i in range(6)))
    t0 = root / "intent" / "t0_templates"
    t0.mkdir(parents=True)
    for name in ("glue_qqp_duplicate.jsonl", "glue_qqp_meaning.jsonl"):
        rows = [{"prompt": f"{name} pair {i}?", "completion": ["yes", "no"][i % 2] + "<|endoftext|>"} for i in range(6)]
        (t0 / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_build_dataset_wide_templates_skip_excluded_ids(tmp_path):
    data = _fake_shared(tmp_path / "shared")
    templates = {"glue_qqp_duplicate.jsonl": ("yes", "no"), "glue_qqp_meaning.jsonl": ("Yes", "No")}
    first = build_dataset(data, nq=3, labels=0, seed=0)
    log = tmp_path / "log.jsonl"  # an outcome log names rows by prompt_id
    log.write_text("".join(json.dumps({"prompt_id": r.id, "tier": "tier_small"}) + "\n" for r in first))
    rows_file = tmp_path / "rows.jsonl"  # a row file names them by id
    rows_file.write_text(json.dumps({"id": "glue_qqp_meaning-0"}) + "\n")
    exclude = frozenset(excluded_ids([log, rows_file]))
    assert exclude == {r.id for r in first} | {"glue_qqp_meaning-0"}
    rng = random.Random(1)
    second = nq_rows(data, 10, rng, exclude) + label_rows(data, 12, rng, 400, templates, exclude)
    ids = [r.id for r in second]
    assert not set(ids) & exclude
    assert sum(i.startswith("nq-") for i in ids) == 3  # the 3 questions not asked before
    assert {r.source for r in second} == {"nq_open", "glue_qqp_duplicate", "glue_qqp_meaning"}
    assert sum(r.source == "glue_qqp_meaning" for r in second) == 5
    labels = [r for r in second if r.source != "nq_open"]
    assert all(r.grader == "choice" and r.grade(r.answers[0]) for r in labels)


def test_build_data_cli_wide_and_exclude(tmp_path, capsys):
    data = _fake_shared(tmp_path / "shared")
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["build-data", "--data-dir", str(data), "--out", str(out1), "--nq", "4", "--labels", "0"]) == 0
    args = ["build-data", "--data-dir", str(data), "--out", str(out2), "--nq", "4", "--labels", "0"]
    assert main([*args, "--exclude", str(out1), "--templates", "wide"]) == 0
    assert len(load_rows(out2)) == 2 and not {r.id for r in load_rows(out1)} & {r.id for r in load_rows(out2)}
    assert "2 rows" in capsys.readouterr().out
    with pytest.raises(EvalDataError, match="unknown template set"):
        build_dataset(data, nq=1, labels=0, template_set="nope")
