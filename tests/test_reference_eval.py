"""training/reference_eval.py (candidate E): a speaker's neutral clip taken out of their other answers."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import reference_eval  # noqa: E402

PROBS = ["p_neutral", "p_sad", "p_fearful"]


def test_corrected_divides_by_the_reference_and_multiplies_by_the_familiar_profile():
    p = np.array([[0.2, 0.2, 0.6]])
    r = np.array([0.1, 0.1, 0.8])          # the speaker's neutral voice already sounds fearful to the model
    q = np.array([0.8, 0.1, 0.1])          # a familiar speaker's neutral voice
    out = reference_eval.corrected(p, r, q)
    want = np.array([0.2 * 8, 0.2 * 1, 0.6 * 0.125])
    assert out[0] == pytest.approx(want / want.sum())
    assert out.sum() == pytest.approx(1.0)
    # a speaker who sounds exactly like the familiar profile is left as they are
    assert reference_eval.corrected(p, q, q) == pytest.approx(p)


def test_with_reference_uses_the_first_neutral_clip_and_never_scores_it():
    rows = []
    for f, (true, probs) in enumerate([("neutral", [0.1, 0.1, 0.8]), ("neutral", [0.3, 0.1, 0.6]),
                                       ("sad", [0.02, 0.38, 0.6]), ("fearful", [0.05, 0.05, 0.9])]):
        rows.append({"corpus": "x", "speaker": "x-1", "file": f"{f}.wav", "true": true,
                     **dict(zip(PROBS, probs))})
    rows.append({"corpus": "x", "speaker": "x-2", "file": "9.wav", "true": "sad", **dict(zip(PROBS, [0.1, 0.5, 0.4]))})
    table = pd.DataFrame(rows).sample(frac=1, random_state=1)          # file order, not row order, picks it
    q = np.array([0.8, 0.1, 0.1])
    scored = reference_eval.with_reference(table, PROBS, lambda row: q, k=1)
    assert sorted(scored["file"]) == ["1.wav", "2.wav", "3.wav"]        # x-2 has no neutral clip; 0.wav is the reference
    by = scored.set_index("file")
    assert list(by.loc[["1.wav", "2.wav", "3.wav"], "plain"]) == ["fearful"] * 3     # it always says fearful
    assert by.loc["1.wav", "ref"] == "neutral" and by.loc["2.wav", "ref"] == "sad"
    assert by.loc["3.wav", "ref"] == "neutral"           # 0.05 * 8 > 0.9 / 8: a wrong answer E brings too
    figs = reference_eval.figures(scored)["x"]
    assert figs["accuracy"] == {"without": pytest.approx(1 / 3, abs=1e-4), "with_reference": pytest.approx(2 / 3, abs=1e-4)}
    assert figs["two_commonest_share_plain"] == 1.0
