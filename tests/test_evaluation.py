"""Metrics against hand-computed values."""
import numpy as np
import pandas as pd
import pytest

from ser_core import evaluation
from ser_core.errors import SERError

LABELS = ["happy", "sad", "angry"]


def table():
    true = ["happy"] * 4 + ["sad"] * 4 + ["angry"] * 2
    pred = ["happy", "happy", "happy", "sad", "sad", "sad", "angry", "angry", "angry", "happy"]
    gender = ["female", "male"] * 5
    speaker = [f"s{i % 4}" for i in range(10)]
    return pd.DataFrame({"true": true, "pred": pred, "gender": gender, "speaker": speaker,
                         "intensity": ["normal"] * 5 + ["strong"] * 5})


def test_summary_values():
    df = table()
    m = evaluation.evaluate(df, LABELS, protocol="p")
    assert m["accuracy"] == pytest.approx(6 / 10)
    # recalls: happy 3/4, sad 2/4, angry 1/2
    assert m["uar"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    pc = m["per_class"]
    assert pc["happy"]["precision"] == pytest.approx(3 / 4)
    assert pc["sad"]["precision"] == pytest.approx(2 / 3)
    assert pc["angry"]["precision"] == pytest.approx(1 / 3)
    f1 = {k: 2 * v["precision"] * v["recall"] / (v["precision"] + v["recall"]) for k, v in pc.items()}
    assert m["macro_f1"] == pytest.approx(np.mean(list(f1.values())))
    assert m["weighted_f1"] == pytest.approx((4 * f1["happy"] + 4 * f1["sad"] + 2 * f1["angry"]) / 10)
    assert m["confusion"] == [[3, 1, 0], [0, 2, 2], [1, 0, 1]]
    assert m["per_gender"]["female"]["n"] == 5
    assert m["per_intensity"]["strong"]["accuracy"] == pytest.approx(2 / 5)


def test_matches_scikit_learn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    rng = np.random.default_rng(0)
    true = rng.choice(LABELS, 200)
    pred = np.where(rng.random(200) < 0.6, true, rng.choice(LABELS, 200))
    m = evaluation.summary(true, pred, LABELS)
    assert m["accuracy"] == pytest.approx(accuracy_score(true, pred))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(true, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(true, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(true, pred, average="weighted"))


def test_gender_gap_detects_a_real_gap_and_not_noise():
    rng = np.random.default_rng(1)
    rows = []
    for spk in range(12):
        g = "female" if spk % 2 else "male"
        p_ok = 0.9 if g == "female" else 0.4
        for _ in range(60):
            ok = rng.random() < p_ok
            rows.append({"speaker": f"s{spk}", "gender": g, "true": "happy", "pred": "happy" if ok else "sad"})
    gap = evaluation.gender_gap(pd.DataFrame(rows))
    assert gap["gap"] == pytest.approx(0.5, abs=0.08)
    assert gap["ci95"][0] > 0 and not gap["within_noise"]
    assert "Female speakers are recognised better" in gap["verdict"]

    same = pd.DataFrame(rows).assign(pred=lambda d: np.where(rng.random(len(d)) < 0.6, "happy", "sad"))
    g2 = evaluation.gender_gap(same)
    assert g2["within_noise"] and g2["ci95"][0] < 0 < g2["ci95"][1]


def test_gender_gap_with_too_few_speakers_does_not_claim_anything():
    df = pd.DataFrame([{"speaker": f"s{i}", "gender": "female" if i == 0 else "male", "true": "happy",
                        "pred": "happy" if i == 0 else "sad"} for i in range(4) for _ in range(10)])
    gap = evaluation.gender_gap(df)
    assert gap["gap"] == pytest.approx(1.0) and not gap["enough_speakers"]
    assert gap["verdict"].startswith("Too few speakers")


def test_gender_gap_needs_both_genders():
    df = table().assign(gender="female")
    with pytest.raises(SERError, match="both"):
        evaluation.gender_gap(df)


def test_mcnemar_counts_the_discordant_clips_and_gives_the_exact_p():
    from ser_core.evaluation import mcnemar

    a = np.array([True] * 10 + [False] * 2 + [True] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5)
    res = mcnemar(a, b)
    assert (res["a_only"], res["b_only"]) == (10, 2)
    # two-sided exact binomial: P(X <= 2) + P(X >= 10) for X ~ Bin(12, 1/2) = 2 * 79 / 4096
    assert res["p"] == pytest.approx(2 * 79 / 4096)
    assert mcnemar(a, a)["p"] == 1.0
    with pytest.raises(SERError):
        mcnemar(a, b[:-1])
