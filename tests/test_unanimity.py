"""training/unanimity.py (candidate U): "not sure" when too few of the ensemble's networks agree with its answer."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import unanimity  # noqa: E402

LABELS = ["neutral", "sad", "fearful"]


def test_fold_tables_make_the_mean_answer_and_count_the_networks_that_agree(tmp_path):
    """Each fold's five tables are averaged, calibrated, answered; ``agree`` counts the networks whose own answer
    is the ensemble's. A clip's row keys on its file, whatever order each table holds it in."""
    fold = tmp_path / "fold-1"
    fold.mkdir()
    votes = [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.45, 0.45, 0.1], [0.1, 0.2, 0.7]]
    for m, p in enumerate(votes, 1):
        rows = [{"file": "b.wav", "true": "sad", **dict(zip([f"p_{k}" for k in LABELS], [0.1, 0.8, 0.1]))},
                {"file": "a.wav", "true": "neutral", **dict(zip([f"p_{k}" for k in LABELS], p))}]
        pd.DataFrame(rows[::1 if m % 2 else -1]).to_csv(fold / f"member-{m}.test.csv.gz", index=False)
    table = unanimity.ravdess_oof(tmp_path, LABELS, temperature=1.0, threshold=0.5).set_index("file")
    # a.wav: the mean is (0.37, 0.41, 0.22): sad, which only network 3 answers (network 4 ties, and takes the first)
    assert table.loc["a.wav", "pred"] == "sad"
    assert table.loc["a.wav", "agree"] == 1
    assert table.loc["a.wav", "confidence"] == pytest.approx(0.41)
    assert bool(table.loc["a.wav", "not_sure"])
    assert table.loc["b.wav", "agree"] == 5 and not table.loc["b.wav", "not_sure"]


def test_figures_add_disagreement_to_todays_rule():
    table = pd.DataFrame({"true": ["a", "a", "b", "b"], "pred": ["a", "a", "a", "a"],
                          "not_sure": [False, True, False, False], "agree": [5, 5, 2, 4]})
    f = unanimity.figures(table, 3)
    assert f["today"] == {"right_flagged": 0.5, "wrong_flagged": 0.0, "n_right": 2, "n_wrong": 2}
    assert f["U_3"] == {"right_flagged": 0.5, "wrong_flagged": 0.5, "n_right": 2, "n_wrong": 2}
    assert f["agree_right"] == [0, 0, 0, 0, 0, 2] and f["agree_wrong"] == [0, 0, 1, 0, 1, 0]
    np.testing.assert_array_equal(unanimity.KS, (2, 3, 4, 5))
