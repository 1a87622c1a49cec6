"""Recalibration from a small recent sample (router_calibration.recent) and the drift drill (drill), on synthetic
outcome logs whose shift is known: on long ("recent") prompts the small tier is confidently wrong far more often."""

import csv
import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from llm_router.core.policy import load_policy
from router_calibration.cli import main
from router_calibration.drill import drift_drill, shifted_split
from router_calibration.fit import Selection, path_candidates, select_fst
from router_calibration.logs import OutcomeRow, build_log
from router_calibration.recent import (
    concat_logs,
    evaluate_selection,
    fit_recent,
    sample_size_curve,
    samples_needed,
    weighted_lower_bounds,
)
from router_calibration.report import DEFAULT_DATA, REPORT_PAIRS

TARGET = 0.95


def synthetic_rows(n: int, shifted: bool, seed: int, prefix: str = "p", **group: str) -> list[dict]:
    """Two tiers (small: cost 1, large: cost 10, right 95% of the time). The small tier's confidence is uniform
    on [-1, 0] for old prompts, 0.3 lower for shifted ones (which are also longer); when it is above -0.5 the small
    answer is right 97% of the time on old prompts but only 30% on shifted ones, below it 50% / 20%."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        conf = float(rng.uniform(-1.0, 0.0)) - (0.3 if shifted else 0.0)
        p_small = (0.3 if conf > -0.5 else 0.2) if shifted else (0.97 if conf > -0.5 else 0.5)
        text = f"{prefix}{i} " + ("a long question about something else entirely " * 3 if shifted else "short?")
        pid = f"{prefix}{i}"
        for pos, (tier, right, c, cost) in enumerate(
            [("small", rng.random() < p_small, conf, 1.0), ("large", rng.random() < 0.95, -0.01, 10.0)]
        ):
            rows.append(
                {
                    "prompt_id": pid,
                    "prompt": text,
                    "tier": tier,
                    "tier_pos": pos,
                    "correct": bool(right),
                    "confidence": c,
                    "cost_usd": cost,
                    "tokens_in": 20,
                    "tokens_out": 5 + pos,
                    **group,
                }
            )
    return rows


def as_log(rows: list[dict], name: str):
    return build_log([OutcomeRow.from_raw(r) for r in rows], name)


def write_csv(path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def logs():
    old = as_log(synthetic_rows(300, False, 1, "o"), "old")
    sample = as_log(synthetic_rows(100, True, 2, "s"), "recent sample")
    evaluation = as_log(synthetic_rows(400, True, 3, "e"), "recent eval")
    return old, sample, evaluation


def test_train_only_misses_on_shifted_traffic_and_the_recent_fit_holds(logs):
    old, sample, evaluation = logs
    train = select_fst(path_candidates(old, 41), old, TARGET, 0.1)
    q_train, c_train = evaluate_selection(train, evaluation)
    assert q_train < 0.9  # the old fit accepts the small tier's confident answers, now mostly wrong
    fit = fit_recent(old, sample, TARGET, 0.1)
    q, c = evaluate_selection(fit.selection, evaluation)
    assert q >= TARGET - 0.02  # the target, within the noise of 400 eval prompts
    assert c > c_train  # holding the promise on the new traffic costs more escalations
    summary = fit.summary()
    assert summary["prior_weight"] == 100 and summary["recent_prompts"] == 100 and summary["old_prompts"] == 300


def test_the_recent_sample_vetoes_what_the_prior_alone_would_certify(logs):
    old, sample, evaluation = logs
    heavy = fit_recent(old, sample, TARGET, 0.1, prior=3000, recent_delta=None)
    q_heavy = evaluate_selection(heavy.selection, evaluation)[0]
    assert q_heavy < 0.9  # the old log outweighs the recent sample
    vetoed = fit_recent(old, sample, TARGET, 0.1, prior=3000)
    assert evaluate_selection(vetoed.selection, evaluation)[0] >= TARGET - 0.02


def test_weighted_bound_equals_the_plain_paired_bound_with_equal_weights():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 2, (3, 50)).astype(float)
    ref = rng.integers(0, 2, 50).astype(float)
    d = score - TARGET * ref
    plain = d.mean(1) - NormalDist().inv_cdf(0.9) * d.std(1, ddof=1) / math.sqrt(50)
    np.testing.assert_allclose(weighted_lower_bounds(score, ref, np.ones(50), TARGET, 0.1), plain)
    # zero weights drop prompts: the same as the bound on the rest
    w = np.r_[np.zeros(20), np.ones(30)]
    np.testing.assert_allclose(
        weighted_lower_bounds(score, ref, w, TARGET, 0.1),
        weighted_lower_bounds(score[:, 20:], ref[20:], w[20:], TARGET, 0.1),
    )


def test_samples_needed_follows_the_bound(logs):
    _, sample, _ = logs
    large_only = Selection((1,), (), "test")
    need = samples_needed(large_only, sample, TARGET, 0.1)
    d = (1 - TARGET) * sample.score[:, 1]
    expected = math.ceil((NormalDist().inv_cdf(0.9) * d.std(ddof=1) / d.mean()) ** 2)
    assert need["prompts_needed"] == max(2, expected)
    assert need["certified_by_recent_alone"] == (expected <= sample.n)
    small_only = Selection((0,), (), "test")  # the small tier alone misses the target on shifted prompts
    assert samples_needed(small_only, sample, TARGET, 0.1)["prompts_needed"] is None


def test_sample_size_curve(logs):
    old, sample, evaluation = logs
    curve = sample_size_curve(old, sample, evaluation, TARGET, 0.1, sizes=(10, 50, 500), repeats=3)
    assert [r["recent_prompts"] for r in curve] == [10, 50, 100]  # sizes beyond the sample: the whole sample once
    assert [r["fits"] for r in curve] == [3, 3, 1]
    assert all(0 <= r["hit_rate"] <= 1 and r["mean_cost_ratio"] > 0 for r in curve)
    whole = evaluate_selection(fit_recent(old, sample, TARGET, 0.1).selection, evaluation)
    assert curve[-1]["worst_quality_ratio"] == pytest.approx(whole[0])
    assert curve[-1]["mean_cost_ratio"] == pytest.approx(whole[1])


def test_concat_logs_keeps_order_and_refuses_other_tiers(logs):
    old, sample, _ = logs
    both = concat_logs(old, sample)
    assert both.n == old.n + sample.n and both.prompt_ids[: old.n] == old.prompt_ids
    other = as_log([dict(r, tier="x" if r["tier"] == "small" else r["tier"]) for r in synthetic_rows(5, False, 0)], "o")
    with pytest.raises(ValueError, match="tiers"):
        concat_logs(old, other)


def test_cli_fit_recent(tmp_path, capsys):
    paths = {}
    for name, (n, shifted, seed) in {"old": (300, False, 1), "recent": (100, True, 2), "eval": (300, True, 3)}.items():
        paths[name] = tmp_path / f"{name}.csv"
        write_csv(paths[name], synthetic_rows(n, shifted, seed, name))
    out = tmp_path / "router"
    argv = ["--calib", str(paths["old"]), "--recent", str(paths["recent"]), "--eval", str(paths["eval"])]
    argv += ["--sizes", "25", "100", "--size-repeats", "2", "--policy-out", str(out), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "recent" and report["eval"]["quality_ratio"] >= TARGET - 0.02
    assert report["samples_needed"]["recent_prompts"] == 100
    assert [r["recent_prompts"] for r in report["sample_size_curve"]] == [25, 100]
    assert (out / "1" / "policy.yaml").is_file() and report["policy_out"].endswith("1/policy.yaml")
    written = load_policy(out / "1" / "policy.yaml")
    assert written.fitted and set(written.fitted) <= {"small", "large"}  # the drift band, on the recent sample
    assert "prompts_needed_by_curve" in report
    assert main(argv[:6]) == 0  # text form
    assert "labelled recent prompts to certify" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--split-by-prompt", "0.5"], "--recent and --split-by-prompt exclude each other"),
        (["--size-repeats", "0"], "--size-repeats must be >= 1"),
        (["--prior", "-1"], "prior weight must be >= 0"),
    ],
)
def test_cli_fit_recent_errors(tmp_path, capsys, extra, message):
    old, rec = tmp_path / "old.csv", tmp_path / "recent.csv"
    write_csv(old, synthetic_rows(40, False, 1))
    write_csv(rec, synthetic_rows(20, True, 2))
    assert main(["--calib", str(old), "--recent", str(rec), *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_fit_recent_missing_file(tmp_path, capsys):
    old = tmp_path / "old.csv"
    write_csv(old, synthetic_rows(40, False, 1))
    assert main(["--calib", str(old), "--recent", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def drill_file(tmp_path_factory):
    """All eight report pairs, each 150 old-style (short) and 300 shifted (long) prompts."""
    rows = []
    for k, (b, c) in enumerate(REPORT_PAIRS):
        rows += synthetic_rows(150, False, 10 + k, f"{b}{c}o", benchmark=b, chain=c)
        rows += synthetic_rows(300, True, 20 + k, f"{b}{c}r", benchmark=b, chain=c)
    path = tmp_path_factory.mktemp("drill") / "pairs.csv"
    write_csv(path, rows)
    return path


def test_shifted_split_takes_the_longest_prompts():
    log = as_log(synthetic_rows(30, False, 0, "a") + synthetic_rows(60, True, 1, "b"), "mix")
    old, recent = shifted_split(log, 2 / 3, "length")
    assert all(log.prompt_ids[i].startswith("b") for i in recent) and len(recent) == 60
    with pytest.raises(ValueError, match="recent share"):
        shifted_split(log, 1.0)
    with pytest.raises(ValueError, match="unknown shift"):
        shifted_split(log, 0.5, "sideways")


def test_drift_drill_on_a_known_shift(drill_file):
    report = drift_drill(drill_file, TARGET, recent_n=100, repeats=2, recent_share=2 / 3, delta=0.1, shift="length")
    s = report["summary"]
    assert s["train_only"]["pairs_holding_mean"] == 0  # the old fit misses the target on every pair
    # naive pooling lets the 150 old prompts outvote the 100 recent ones; the prior-weighted fit with the veto does not
    assert s["recent"]["pairs_holding_mean"] >= s["pooling"]["pairs_holding_mean"] + 3
    assert s["recent"]["worst_pair_quality_min"] > 0.9 > s["pooling"]["worst_pair_quality_min"]
    pair = report["pairs"][0]
    assert (pair["old_prompts"], pair["recent_prompts"], pair["eval_prompts"]) == (150, 300, 200)
    assert len(pair["recent"]["quality_ratio"]) == 2
    # the alarms: the old fit's band is left on the shifted traffic, kept on held-out old traffic
    assert sum(p["alarms"]["recent"]["fired"] for p in report["pairs"]) == 8
    assert not any(p["alarms"]["old_held_out"]["fired"] for p in report["pairs"])


def test_cli_drift_drill(drill_file, capsys):
    assert main(["drift-drill", str(drill_file), "--repeats", "1", "--delta", "0.1", "--shift", "length"]) == 0
    text = capsys.readouterr().out
    assert "train_only" in text and "pooling" in text and "alarms" in text
    assert main(["drift-drill", str(drill_file), "--recent-n", "300"]) == 2
    assert "leaves no recent prompts to evaluate on" in capsys.readouterr().err
    assert main(["drift-drill", str(drill_file), "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err
    assert main(["drift-drill", str(drill_file.parent / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.skipif(not DEFAULT_DATA.is_file(), reason="needs ../shared/data/outcomes/llm_cascades_train.csv.gz")
def test_drift_drill_on_the_cascade_log():
    report = drift_drill(DEFAULT_DATA, TARGET, recent_n=100, repeats=1, shift="unsure")
    assert len(report["pairs"]) == 8
    # the shift to prompts the cheapest tier is unsure of breaks the old fit on some pairs
    assert report["summary"]["train_only"]["pairs_holding_mean"] <= 6
    assert not any(p["alarms"]["old_held_out"]["fired"] for p in report["pairs"])


def test_cli_fit_recent_refuses_an_unlabelled_sample(tmp_path, capsys):
    old, rec = tmp_path / "old.csv", tmp_path / "recent.jsonl"
    write_csv(old, synthetic_rows(40, False, 1))
    with open(rec, "w") as fh:  # live records before feedback: no `correct`
        for row in synthetic_rows(20, True, 2):
            fh.write(json.dumps({k: v for k, v in row.items() if k != "correct"}) + "\n")
    assert main(["--calib", str(old), "--recent", str(rec)]) == 2
    assert "no `correct`/`score` column" in capsys.readouterr().err
