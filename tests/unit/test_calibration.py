"""Outcome-log readers, the replay simulator and the calibrator on small hand-made logs with known answers."""

import csv
import gzip
import json
import math

import numpy as np
import pytest
from llm_router.core.decide import validate_overrides
from llm_router.core.policy import load_policy
from router_calibration.calibrate import calibrate
from router_calibration.cli import main
from router_calibration.fit import (
    Candidates,
    curve_metrics,
    enumerate_candidates,
    oracle_point,
    path_candidates,
    random_mix_quality,
    select_fst,
    select_lcb,
    select_naive,
    single_tier_points,
)
from router_calibration.logs import (
    OutcomeLogError,
    OutcomeRow,
    build_log,
    load_log,
    read_any,
    read_routellm,
    read_routerbench_wide,
)
from router_calibration.replay import cascade_outcomes, policy_for_chain, replay
from router_calibration.report import REPORT_PAIRS, peek_bound

# prompt: (small correct, small confidence, large correct); small costs 1, large 10; tokens_out small 5, large 7
HAND = {
    "p1": (1, -0.1, 1),  # confident and right
    "p2": (0, -0.2, 1),  # confident and wrong
    "p3": (0, -2.0, 1),  # unsure and wrong -> escalation helps
    "p4": (1, -3.0, 0),  # unsure, right, large wrong -> escalation hurts
}


def hand_rows(extra=None):
    rows = []
    for pid, (sc, conf, lc) in HAND.items():
        rows.append(
            {
                "prompt_id": pid,
                "prompt": f"question {pid}",
                "tier": "small",
                "tier_pos": 0,
                "correct": bool(sc),
                "confidence": conf,
                "cost_usd": 1.0,
                "tokens_in": 10,
                "tokens_out": 5,
            }
        )
        rows.append(
            {
                "prompt_id": pid,
                "prompt": f"question {pid}",
                "tier": "large",
                "tier_pos": 1,
                "correct": bool(lc),
                "confidence": -0.05,
                "cost_usd": 10.0,
                "tokens_in": 10,
                "tokens_out": 7,
            }
        )
    for r in extra or []:
        rows.append(r)
    return rows


def hand_log(rows=None):
    return build_log([OutcomeRow.from_raw(r) for r in (rows or hand_rows())], "hand")


def write_csv(path, rows, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# -- readers -------------------------------------------------------------------------------------------------


def test_readers_csv_gz_jsonl_agree(tmp_path):
    rows = hand_rows()
    write_csv(tmp_path / "log.csv", rows)
    write_csv(tmp_path / "log.csv.gz", rows, gz=True)
    with open(tmp_path / "log.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    logs = [load_log(tmp_path / f) for f in ("log.csv", "log.csv.gz", "log.jsonl")]
    for log in logs:
        assert log.tiers == ["small", "large"]
        assert log.prompt_ids == ["p1", "p2", "p3", "p4"]
        np.testing.assert_array_equal(log.score, [[1, 1], [0, 1], [0, 1], [1, 0]])
        np.testing.assert_array_equal(log.confidence[:, 0], [-0.1, -0.2, -2.0, -3.0])
        assert log.complete


def test_llm_cascades_column_names_are_understood():
    raw = {
        "benchmark": "mmlu",
        "split": "train",
        "chain": "llama",
        "prompt_id": "7",
        "prompt": "q",
        "tier_pos": "2",
        "tier_model": "llama3.1-8b",
        "correct": "False",
        "confidence_log": "-0.25",
        "cost_usd": "1.5e-05",
        "latency_ms": "12.5",
        "tokens_in": "150",
        "tokens_out": "1",
    }
    row = OutcomeRow.from_raw(raw)
    assert (row.tier, row.tier_pos, row.score, row.confidence) == ("llama3.1-8b", 2, 0.0, -0.25)
    assert (row.benchmark, row.chain, row.cost_usd, row.tokens_out) == ("mmlu", "llama", 1.5e-05, 1)
    # the first alias with a value wins; an empty cell counts as absent (unknown: NaN)
    row = OutcomeRow.from_raw({**raw, "tier": "", "model": "other", "confidence_log": "", "id": 8, "status": "ERROR"})
    assert (row.prompt_id, row.tier, row.outcome) == ("7", "llama3.1-8b", "error") and math.isnan(row.confidence)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cost_usd": None}, "missing column(s) ['cost_usd']"),
        ({"correct": "maybe"}, "score: not a number: 'maybe'"),
        ({"correct": 1.5}, "score/correct must be in [0, 1]"),
        ({"confidence": 0.7}, "confidence is log-scale"),
        ({"tier_pos": -1}, "tier_pos must be an integer >= 0"),
        ({"outcome": "exploded"}, "outcome must be ok, error or timeout"),
    ],
)
def test_bad_rows_are_named(change, message):
    raw = {**hand_rows()[0], **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(OutcomeLogError) as e:
        OutcomeRow.from_raw(raw, "log.csv:2")
    assert "log.csv:2" in str(e.value) and message in str(e.value)


def test_duplicate_rows_rejected():
    with pytest.raises(OutcomeLogError, match="two rows for tier small"):
        hand_log(hand_rows(extra=[hand_rows()[0]]))


def test_routellm_reader(tmp_path):
    d = tmp_path / "mmlu" / "responses"
    d.mkdir(parents=True)
    (d / "mmlu_anatomy.csv").write_text(
        "prompt,mistralai/Mixtral-8x7B-Instruct-v0.1,gpt-4-1106-preview\n"
        '"' + "x" * 400 + '",True,False\n"' + "y" * 40 + '",False,True\n'
    )
    rows = read_routellm(tmp_path)
    log = build_log(rows, "routellm")
    assert log.tiers == ["mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]
    np.testing.assert_array_equal(log.score, [[1, 0], [0, 1]])
    assert log.cost[0, 1] == pytest.approx(100 * 24.7 / 1e6)  # 400 chars ~ 100 tokens
    assert np.isnan(log.confidence).all()
    assert read_any(tmp_path)[0].benchmark == "mmlu"


def test_routerbench_wide_reader(tmp_path):
    path = tmp_path / "rb.csv"
    path.write_text(
        "sample_id,prompt,eval_name,big,big|model_response,big|total_cost,tiny,tiny|model_response,tiny|total_cost\n"
        "s1,hello,mmlu,1.0,A,0.01,0.0,B,0.0001\n"
        "s2,world,gsm8k,0.5,C,0.02,1.0,D,0.0002\n"
    )
    log = build_log(read_any(path), "rb")
    assert log.tiers == ["tiny", "big"]  # ordered by mean cost
    np.testing.assert_array_equal(log.score, [[0.0, 1.0], [1.0, 0.5]])
    np.testing.assert_allclose(log.cost, [[0.0001, 0.01], [0.0002, 0.02]])
    assert read_routerbench_wide(path)[2].benchmark == "gsm8k"


# -- replay through decide() ----------------------------------------------------------------------------------


def test_replay_known_answer():
    log = hand_log()
    # escalate when small confidence < -1: p3, p4 escalate
    policy = policy_for_chain(log, ["small", "large"], [-1.0])
    res = replay(policy, log)
    np.testing.assert_array_equal(res.final_tier, [0, 0, 1, 1])
    np.testing.assert_array_equal(res.score, [1, 0, 1, 0])
    np.testing.assert_array_equal(res.cost, [1, 1, 11, 11])
    assert res.quality_ratio == pytest.approx(2 / 3)  # large alone gets 3 of 4
    assert res.cost_ratio == pytest.approx(24 / 40)
    assert res.escalation_rate == 0.5
    assert res.tier_usage() == {"small": 0.5, "large": 0.5}
    assert res.call_rate() == {"small": 1.0, "large": 0.5}
    assert res.summary()["tokens_wasted"] == 10  # two discarded small answers of 5 tokens


def test_replay_thresholds_extremes():
    log = hand_log()
    never = replay(policy_for_chain(log, ["small", "large"], [-10.0]), log)
    assert never.quality_ratio == pytest.approx(2 / 3) and never.cost_ratio == pytest.approx(0.1)
    assert never.escalation_rate == 0
    always = replay(policy_for_chain(log, ["small", "large"], [0.0]), log)
    assert always.quality_ratio == 1.0 and always.cost_ratio == pytest.approx(44 / 40)
    assert always.summary()["tokens_wasted"] == 20
    large = replay(policy_for_chain(log, ["large"], []), log)
    assert (large.quality_ratio, large.cost_ratio) == (1.0, 1.0)


def test_replay_missing_row_and_error_fall_back():
    rows = [r for r in hand_rows() if not (r["prompt_id"] == "p1" and r["tier"] == "small")]
    rows = [{**r, "outcome": "timeout"} if (r["prompt_id"], r["tier"]) == ("p2", "small") else r for r in rows]
    log = hand_log(rows)
    assert not log.complete
    res = replay(policy_for_chain(log, ["small", "large"], [-1.0]), log)
    np.testing.assert_array_equal(res.final_tier, [1, 1, 1, 1])
    np.testing.assert_array_equal(res.fallbacks, [1, 1, 0, 0])
    np.testing.assert_array_equal(res.escalations, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="complete log"):
        cascade_outcomes(log, [0, 1], np.array([[-1.0]]))


def test_replay_respects_request_overrides():
    log = hand_log()
    policy = policy_for_chain(log, ["small", "large"], [-1.0])
    res = replay(policy, log, validate_overrides(policy, max_tier="small"))
    assert (res.final_tier == 0).all() and res.escalation_rate == 0


def test_vectorized_evaluator_matches_decide_replay():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(60):
        for t, name in enumerate(["a", "b", "c"]):
            conf = -math.inf if rng.random() < 0.05 else -float(rng.exponential(1.0))
            rows.append(
                {
                    "prompt_id": str(i),
                    "tier": name,
                    "tier_pos": t,
                    "correct": bool(rng.random() < 0.3 + 0.3 * t),
                    "confidence": conf,
                    "cost_usd": float((t + 1) ** 2 * rng.uniform(0.5, 1.5)),
                    "tokens_out": int(rng.integers(1, 20)),
                }
            )
    log = hand_log(rows)
    for chain in ([0, 1, 2], [0, 2], [1, 2], [2]):
        for _ in range(5):
            thr = -rng.exponential(1.0, size=len(chain) - 1)
            s, c, stop = cascade_outcomes(log, chain, thr[None, :])
            res = replay(policy_for_chain(log, [log.tiers[j] for j in chain], thr), log)
            np.testing.assert_allclose(res.score, s[0])
            np.testing.assert_allclose(res.cost, c[0])
            np.testing.assert_array_equal(res.escalations, stop[0])


# -- fitting ---------------------------------------------------------------------------------------------------


def small_large_rows(i, confidence, small_correct, large_correct):
    """One prompt's rows of a two-tier log: small (cost 1, `confidence`) then large (cost 10, confidence -0.01)."""
    return [
        {
            "prompt_id": str(i),
            "tier": "small",
            "tier_pos": 0,
            "correct": small_correct,
            "confidence": confidence,
            "cost_usd": 1.0,
        },
        {
            "prompt_id": str(i),
            "tier": "large",
            "tier_pos": 1,
            "correct": large_correct,
            "confidence": -0.01,
            "cost_usd": 10.0,
        },
    ]


def separable_log(n=200, seed=0):
    """Small tier right exactly when its confidence > -1 (60% of prompts); large always right."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        conf = -float(rng.uniform(0, 1)) if i % 5 < 3 else -float(rng.uniform(1.01, 3))
        rows += small_large_rows(i, conf, conf > -1, True)
    return hand_log(rows)


def test_selection_on_a_separable_log_finds_the_right_threshold():
    log = separable_log()
    cands = enumerate_candidates(log, grid=20)  # quantile 0.40 falls between wrong and right
    for sel in (select_naive(cands, log, 1.0), select_lcb(cands, log, 0.99, delta=0.1)):
        assert sel.chain == (0, 1)
        res = replay(policy_for_chain(log, ["small", "large"], sel.thresholds), log)
        assert res.quality_ratio == 1.0
        assert res.cost_ratio == pytest.approx((200 + 80 * 10) / 2000)  # 40% escalate
    # nothing cheap reaches the target with a noisy cheap tier: lcb keeps more margin than naive
    assert select_naive(cands, log, 0.5).chain == (0,)


def test_lcb_is_more_conservative_than_naive_on_noisy_data():
    rng = np.random.default_rng(1)
    rows = []
    for i in range(150):
        conf = -float(rng.exponential(1.0))
        p_small = 0.9 * math.exp(conf / 2)
        # arguments are evaluated left to right: the small tier draws from rng before the large one
        rows += small_large_rows(i, conf, bool(rng.random() < p_small), bool(rng.random() < 0.9))
    log = hand_log(rows)
    report = calibrate(log, None, 0.95, "lcb", 0.1, grid=8)
    assert report["calib"]["quality_ratio"] >= report["naive"]["calib"]["quality_ratio"]
    assert report["calib"]["cost_ratio"] >= report["naive"]["calib"]["cost_ratio"]
    assert report["naive"]["calib"]["quality_ratio"] >= 0.95
    assert report["policy"]["calib_quality_ratio_lower_bound"] >= 0.95 - 1e-9


def test_path_candidates_follow_confidence_quantiles_in_test_order():
    log = separable_log(100)
    cands = path_candidates(log, steps=5)
    # chains (0,), (1,), (0, 1): one candidate for each single tier, a 5-step path for the pair
    assert cands.chains == [(0,), (1,), (0, 1), (0, 1), (0, 1), (0, 1), (0, 1)]
    np.testing.assert_array_equal(cands.path, [0, 1, 2, 2, 2, 2, 2])
    expected = np.quantile(log.confidence[:, 0], [1.0, 0.75, 0.5, 0.25, 0.0])
    np.testing.assert_allclose([t[0] for t in cands.thresholds[2:]], expected)
    # safe first: the cost falls along the path, ending at "accept everything at the small tier"
    cost = cands.cost[2:].sum(1)
    assert (np.diff(cost) <= 0).all() and cost[-1] == pytest.approx(log.n * 1.0)
    # the outcomes are the vectorized evaluator's (checked against decide() above)
    s, c, _ = cascade_outcomes(log, (0, 1), np.array(cands.thresholds[2:]))
    np.testing.assert_allclose(cands.score[2:], s)
    np.testing.assert_allclose(cands.cost[2:], c)
    with pytest.raises(ValueError, match="at least 2 steps"):
        path_candidates(log, steps=1)


def test_fst_on_a_separable_log_stops_where_the_small_tier_starts_failing():
    log = separable_log()  # small right iff confidence > -1 (60% of prompts), large always right
    cands = path_candidates(log, steps=21)  # quantile 0.40 = a step of the path, between wrong and right
    sel = select_fst(cands, log, 0.99, delta=0.1)
    assert sel.method == "fst" and sel.chain == (0, 1)
    res = replay(policy_for_chain(log, ["small", "large"], sel.thresholds), log)
    assert res.quality_ratio == 1.0
    assert res.cost_ratio == pytest.approx((200 + 80 * 10) / 2000)  # 40% escalate
    assert sel.details["calib_quality_ratio_lower_bound"] >= 0.99 - 1e-9
    # a target nothing but the reference reaches with certainty: the large tier alone
    sel = select_fst(cands, log, 1.2, delta=0.1)
    assert sel.chain == (1,) and "fallback" in sel.details
    with pytest.raises(ValueError, match="path candidates"):
        select_fst(enumerate_candidates(log, grid=4), log, 0.95)
    with pytest.raises(ValueError, match="delta"):
        select_fst(cands, log, 0.95, delta=0.6)


def test_fst_does_not_certify_past_the_first_failure():
    """A cheap candidate that passes AFTER a failing one on its path is not certified (fixed sequence), while the
    lcb rule over the same candidates, which tests each one on its own, takes it."""
    # 40 prompts; reference always right. Path candidates given by hand: (score, cost) per candidate
    n = 40
    log = hand_log(
        [
            {"prompt_id": str(i), "tier": t, "tier_pos": j, "correct": True, "confidence": -0.1, "cost_usd": c}
            for i in range(n)
            for j, (t, c) in enumerate((("small", 1.0), ("large", 10.0)))
        ]
    )
    ones = np.ones(n)
    bad = ones.copy()
    bad[:8] = 0  # quality 0.8 < 0.95
    score = np.stack([ones, bad, ones])
    cost = np.stack([ones * 5, ones * 3, ones * 1])
    cands = Candidates(
        [(0, 1)] * 3, [(-0.1,), (-0.2,), (-0.3,)], score, cost, np.zeros((3, n), dtype=bool), np.array([0, 0, 0])
    )
    assert select_fst(cands, log, 0.95, delta=0.1).thresholds == (-0.1,)
    assert select_lcb(cands, log, 0.95, delta=0.1).thresholds == (-0.3,)
    # on its own path, the cheap candidate is certified
    cands.path = np.array([0, 0, 1])
    assert select_fst(cands, log, 0.95, delta=0.1).thresholds == (-0.3,)


def test_calibrate_reports_all_three_methods():
    log = separable_log(120)
    report = calibrate(log, log, 0.95, "fst", 0.1, grid=6, path_steps=11)
    assert report["policy"]["method"] == "fst" and report["path_candidates"] == 1 + 1 + 11
    for m in ("lcb", "naive"):
        assert report[m]["policy"]["method"] == m and "eval" in report[m]
    assert report["eval"]["quality_ratio"] >= 0.95
    with pytest.raises(ValueError, match="unknown method"):
        calibrate(log, None, 0.95, "bogus")


def test_baselines_and_curve_metrics_known_values():
    log = hand_log()
    singles = single_tier_points(log)
    assert singles == [
        {"tier": "small", "quality_ratio": pytest.approx(2 / 3), "cost_ratio": pytest.approx(0.1)},
        {"tier": "large", "quality_ratio": 1.0, "cost_ratio": 1.0},
    ]
    # halfway in cost between the two tiers: halfway in quality
    assert random_mix_quality(singles, 0.55) == pytest.approx((2 / 3 + 1) / 2)
    # oracle: small answers p1 and p4 (cost 1), large p2 and p3 (cost 10): quality 4/3, cost 22/40
    assert oracle_point(log) == {"quality_ratio": pytest.approx(4 / 3), "cost_ratio": pytest.approx(22 / 40)}
    # a curve that reaches the reference quality at the cheapest cost recovers the whole gap everywhere
    m = curve_metrics(log, np.array([0.1]), np.array([1.0]))
    assert m["apgr"] == pytest.approx(1.0) and m["cpt_50"] == pytest.approx(0.1) and m["cpt_80"] == pytest.approx(0.1)
    assert m["auc"] == pytest.approx(0.9, abs=2e-3)  # 0 below cost 0.1, 1.0 above
    # no cascade point: only the two single tiers -> PGR 0 until cost 1
    m = curve_metrics(log, np.array([]), np.array([]))
    assert m["apgr"] == pytest.approx(0.0, abs=2e-3) and m["cpt_50"] == pytest.approx(1.0)


# -- CLI -------------------------------------------------------------------------------------------------------


def test_cli_json_policy_out_and_plot(tmp_path, capsys):
    calib, evaluation = tmp_path / "calib.jsonl", tmp_path / "eval.csv"
    log_rows = []
    for seed, path in ((2, calib), (3, evaluation)):
        log = separable_log(120, seed)
        log_rows = []
        for i in range(log.n):
            for j, t in enumerate(log.tiers):
                log_rows.append(
                    {
                        "prompt_id": log.prompt_ids[i],
                        "tier": t,
                        "tier_pos": j,
                        "correct": bool(log.score[i, j]),
                        "confidence": float(log.confidence[i, j]),
                        "cost_usd": float(log.cost[i, j]),
                        "tokens_in": 10,
                        "tokens_out": 4,
                    }
                )
        if path.suffix == ".jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in log_rows))
        else:
            write_csv(path, log_rows)
    model_dir = tmp_path / "router"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text("# router model\n")
    png = tmp_path / "curve.png"
    rc = main(
        [
            "--calib",
            str(calib),
            "--eval",
            str(evaluation),
            "--target-quality",
            "0.95",
            "--json",
            "--policy-out",
            str(model_dir),
            "--plot",
            str(png),
            "--tier-map",
            "small=tier_small,large=tier_large",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for split in ("calib", "eval"):
        for key in ("quality_ratio", "cost_ratio", "escalation_rate", "apgr", "cpt_50", "cpt_80", "auc", "baselines"):
            assert key in out[split]
    assert out["eval"]["quality_ratio"] >= 0.95
    assert out["policy"]["chain"] == ["small", "large"]
    assert png.stat().st_size > 10_000
    policy = load_policy(model_dir / "2" / "policy.yaml")
    assert policy.version == 2 and policy.tier_names == ["tier_small", "tier_large"]
    assert policy.tiers[0].escalation_threshold == pytest.approx(out["policy"]["thresholds"]["small"])
    assert (model_dir / "2" / "model.py").read_text() == "# router model\n"
    # a second run writes version 3
    assert main(["--calib", str(calib), "--policy-out", str(model_dir)]) == 0
    assert (model_dir / "3" / "policy.yaml").is_file()


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["--calib", str(tmp_path / "none.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    write_csv(bad, [{"prompt_id": "1", "tier": "a", "correct": "yes"}])
    assert main(["--calib", str(bad)]) == 2
    assert "missing column(s) ['cost_usd']" in capsys.readouterr().err


def known_pairs_log(path):
    """Every pair: small right exactly when confident (60%), large always right, small costs 1, large 10."""
    rng = np.random.default_rng(1)
    rows = []
    for benchmark, chain in REPORT_PAIRS:
        for i in range(60):
            conf = -float(rng.uniform(0, 1)) if i % 5 < 3 else -float(rng.uniform(1.01, 3))
            for tier, pos, correct, cost, confidence in (
                ("small", 0, conf > -1, 1.0, conf),
                ("large", 1, True, 10.0, -0.01),
            ):
                rows.append(
                    {
                        "benchmark": benchmark,
                        "chain": chain,
                        "prompt_id": f"{benchmark}-{i}",
                        "tier": tier,
                        "tier_pos": pos,
                        "correct": correct,
                        "confidence": confidence,
                        "cost_usd": cost,
                    }
                )
    write_csv(path, rows)
    return path


def test_peek_bound_on_known_pairs(tmp_path):
    """Peeking at quality 1.0 accepts the confident 60% at the small tier: eval quality 1 on every split, eval cost
    (0.6 * 1 + 0.4 * 11) / 10 ~ 0.5; at quality 0.6 peeking keeps everything at the small tier (cost 0.1) and
    misses 0.95 everywhere."""
    path = known_pairs_log(tmp_path / "pairs.csv")
    strict, loose = peek_bound(path, 0.95, [1.0, 0.6], repeats=3)
    assert strict["eval_hit_rate"] == 1.0 and strict["all_pairs_hit_rate"] == 1.0
    assert 0.4 < strict["mean_eval_cost_ratio"] < 0.6
    assert loose["eval_hit_rate"] == 0.0
    assert loose["mean_eval_cost_ratio"] == pytest.approx(0.1)


def test_cli_report_pairs_and_peek_bound_commands(tmp_path, capsys):
    """The two study commands on the known pairs: every method meets the target on every pair (small when
    confident, else large), and the JSON and text forms carry the same figures as the library."""
    path = known_pairs_log(tmp_path / "pairs.csv")
    png = tmp_path / "pairs.png"
    assert main(["report-pairs", str(path), "--repeats", "2", "--path-steps", "11", "--json", "--plot", str(png)]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [(p["benchmark"], p["chain"]) for p in table["pairs"]] == REPORT_PAIRS
    for m in ("fst", "lcb", "naive"):
        assert table[f"{m}_summary"]["repeats"] == 2
    assert table["fst_summary"]["hit_rate_over_pairs_and_splits"] == 1.0
    assert all(p["fst"]["policy"]["chain"] == ["small", "large"] for p in table["pairs"])
    assert png.stat().st_size > 10_000
    assert main(["report-pairs", str(path), "--path-steps", "11"]) == 0
    text = capsys.readouterr().out
    assert "fst: 8/8 pairs meet the target" in text and text.count("small > large") == 8
    assert main(["peek-bound", str(path), "--levels", "1.0", "0.6", "--repeats", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == peek_bound(path, 0.95, [1.0, 0.6], repeats=3)
    assert main(["peek-bound", str(path), "--levels", "1.0", "--repeats", "3"]) == 0
    assert "peek-select at quality 1.00 on all prompts -> eval quality >= 0.95: pair hit rate 1.00" in (
        capsys.readouterr().out
    )


def test_cli_old_report_flags_point_to_the_commands(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--report-pairs", "--repeats", "2"])
    assert exited.value.code == 2
    assert "router-calibrate report-pairs" in capsys.readouterr().err
