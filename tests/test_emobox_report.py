"""training/emobox_report.py: the figures the pre-registrations compare, on a hand-made predictions table."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

import emobox_report  # noqa: E402

LABELS = ["neutral", "calm", "happy", "sad"]


def row(corpus, speaker, gender, true, probs, fold):
    p = dict(zip(LABELS, probs))
    return {"file": f"{speaker}-{true}-{fold}-{len(probs)}.flac", "speaker": speaker, "corpus": corpus,
            "gender": gender, "true": true, "pred": max(p, key=p.get), "confidence": max(probs),
            **{f"p_{k}": v for k, v in p.items()}, "fold": fold}


def table() -> pd.DataFrame:
    rows = []
    for fold, (f_spk, m_spk) in enumerate([("ravdess-02", "ravdess-01"), ("ravdess-04", "ravdess-03")], start=1):
        # RAVDESS: the female speaker is right on all four emotions, the male one only on calm and happy
        for true in LABELS:
            hit = [0.1] * 4
            hit[LABELS.index(true)] = 0.7
            rows.append(row("ravdess", f_spk, "female", true, hit, fold))
            rows.append(row("ravdess", m_spk, "male", true, hit if true in ("calm", "happy") else
                            [0.1, 0.7, 0.1, 0.1], fold))
        # another corpus without calm: calm is the top answer, but among its own emotions sad wins
        rows.append(row("other", f"other-{fold}", "female", "sad", [0.1, 0.5, 0.1, 0.3], fold))
        rows.append(row("other", f"other-{fold}", "female", "neutral", [0.6, 0.2, 0.1, 0.1], fold))
    return pd.DataFrame(rows)


def test_figures_per_corpus_and_for_ravdess():
    res = emobox_report.summary(table())
    assert res["folds"] == [1, 2] and res["n"] == 20
    rav, other = res["corpora"]["ravdess"], res["corpora"]["other"]
    assert rav["own_accuracy"] == pytest.approx(12 / 16)
    assert rav["per_gender"] == {"female": 1.0, "male": 0.5}
    assert other["own_accuracy"] == 1.0 and other["accuracy"] == 0.5      # own emotions: calm is not one
    assert res["ravdess_recall"] == {"neutral": 0.5, "calm": 1.0, "happy": 1.0, "sad": 0.5}
    assert res["ravdess_answer_share"] == {"neutral": 0.125, "calm": 0.5, "happy": 0.25, "sad": 0.125}
    assert res["ravdess_gender_gap"]["gap"] == pytest.approx(0.5)
    assert 0 < res["ece_before"] < 1 and res["ece_after_cross_fitted"] is not None


def test_command_line_says_when_folds_are_missing_and_refuses_a_table_that_is_not_one(tmp_path):
    path = tmp_path / "p.csv"
    table().to_csv(path, index=False)
    script = ROOT / "training" / "emobox_report.py"
    done = subprocess.run([sys.executable, str(script), f"X={path}", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, check=True)
    assert "folds 1, 2 only: decides nothing" in done.stdout
    assert "RAVDESS female - male +50.0 points" in done.stdout
    assert (tmp_path / "r.json").is_file()
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    bad = subprocess.run([sys.executable, str(script), f"X={tmp_path / 'bad.csv'}"], capture_output=True, text=True)
    assert bad.returncode == 2 and "is not a predictions table (no corpus, true, pred column)" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, str(script), "X=nowhere.csv"], capture_output=True, text=True)
    assert missing.returncode == 2 and "not NAME=PREDICTIONS.csv" in missing.stderr


def test_per_fold_accuracy():
    assert emobox_report.summary(table())["ravdess_per_fold"] == {1: 0.75, 2: 0.75}


def test_mean_of_two_tables_averages_probabilities_and_answers_from_the_mean():
    from tables import mean_table

    a = table()
    b = a.copy()
    # b is sure of neutral wherever a hesitates between neutral and calm (the male speaker's misses)
    b[[f"p_{k}" for k in LABELS]] = [0.1, 0.1, 0.1, 0.1]
    b["p_neutral"] = 0.9
    mean = mean_table([a, b.sample(frac=1, random_state=0)])          # row order does not matter
    row = mean[mean["file"] == a["file"][0]].iloc[0]
    assert row["p_neutral"] == pytest.approx((0.7 + 0.9) / 2) and row["p_calm"] == pytest.approx(0.1)
    assert set(mean["pred"]) == {"neutral"} and mean["confidence"].min() >= 0.5
    with pytest.raises(ValueError, match="same clips"):
        mean_table([a, b.iloc[1:]])
    with pytest.raises(ValueError, match="different folds"):
        mean_table([a, b.assign(fold=3 - b["fold"])])


def test_mcnemar_against_the_first_table_on_the_command_line(tmp_path):
    a, b = table(), table()
    b.loc[b["gender"] == "male", "pred"] = b.loc[b["gender"] == "male", "true"]     # b also right on the male misses
    for c in ("p_neutral", "p_calm", "p_happy", "p_sad"):
        b[c] = [0.7 if f"p_{t}" == c else 0.1 for t in b["true"]]
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    script = ROOT / "training" / "emobox_report.py"
    done = subprocess.run([sys.executable, str(script), f"A={tmp_path / 'a.csv'}", f"B={tmp_path / 'b.csv'}",
                           f"AB={tmp_path / 'a.csv'}+{tmp_path / 'b.csv'}"], capture_output=True, text=True, check=True)
    # the four male misses of a: b right, a wrong; never the reverse; p = 2 * 0.5 ** 4
    assert "against A on 16 RAVDESS clips: right where it is wrong 4, the reverse 0 (McNemar exact p = 0.125)" \
        in done.stdout
    assert done.stdout.count("against A") == 2
    mismatch = subprocess.run([sys.executable, str(script), f"X={tmp_path / 'a.csv'}+{tmp_path / 'a.csv'}x"],
                              capture_output=True, text=True)
    assert mismatch.returncode == 2 and "Traceback" not in mismatch.stderr
