"""Session 40's probe adapted to one speaker (training/speaker_probe.py, docs/preregistration-session40.md,
addendum 2; WU2A-SP failed its rule and is not shipped): who is standardised by their own clips, and a speaker
moved as a whole answered the same once adapted, without their labels being read."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_encoder_probe import _work


@pytest.fixture(scope="module")
def sp():
    from conftest import training_module

    return training_module("speaker_probe")


def test_speakers_with_enough_clips_stand_alone_and_the_rest_of_a_corpus_together(sp):
    df = pd.DataFrame({"corpus": ["a"] * 25 + ["a"] * 3 + ["b"] * 2,
                       "speaker": ["a1"] * 25 + ["a2"] * 3 + ["b1"] * 2})
    df[sp.SETUP] = sp.setups(df)
    assert df[sp.SETUP].tolist() == ["a1"] * 25 + ["a/others"] * 3 + ["b/others"] * 2
    assert [name for name, _ in sp.speakers(df, np.ones(len(df), bool))] == ["a1"]


def test_a_speaker_moved_as_a_whole_answers_the_same_and_their_labels_are_not_read(sp, tmp_path):
    import encoder_probe as ep

    answers = []
    for shift, shuffle in ((0.0, False), (4.0, False), (0.0, True)):
        df, x = ep.load_vectors(_work(tmp_path / f"{shift}{shuffle}", np.random.default_rng(2)))
        df[sp.SETUP] = sp.setups(df)
        held = (df["speaker"] == "s0").to_numpy() & (df["corpus"] == "ravdess").to_numpy()
        assert held.sum() >= 20 and (df.loc[held, sp.SETUP] == "s0").all()
        x = x + shift * held[:, None]                  # one speaker's voice moves every vector alike
        if shuffle:
            df.loc[held, "emotion"] = np.random.default_rng(0).permutation(df.loc[held, "emotion"].to_numpy())
        probe, labels = sp.ap.train(x, df, ~held, 0.1, by=sp.SETUP)
        tables = sp.answered(x, df, held, probe, labels, 1.0, 1, "test")
        answers.append(np.concatenate([t["pred"].to_numpy() for v in tables.values() for t in v]))
    assert (answers[0] == answers[1]).all() and (answers[0] == answers[2]).all()
    assert len(answers[0]) == sp.ap.DRAWS * 20


def test_each_recipe_takes_its_folds_given_parts_from_the_committed_records(sp):
    h, sph = sp.fold_records("H", sp.RESULTS), sp.fold_records("SPH", sp.RESULTS)
    keys = {f"loco:{c}" for c in ("ravdess", "ased", "emovo", "urdu")} | {f"emobox6:{k}" for k in range(1, 7)}
    assert set(h) == keys and set(sph) == keys and sp.fold_records("SP", sp.RESULTS) == {}
    # the shipped adapted mode's folds as session 39 recorded them: both halves' C and the temperature
    assert all(v["C"] > 0 and v["single_clip_C"] > 0 and v["temperature"] > 1 for v in h.values())
    assert h["loco:emovo"]["single_clip_C"] == sph["loco:emovo"]["single_clip_C"]     # WU2S's choice, both
    with pytest.raises(ValueError, match="recipe must be one of"):
        sp.measure(sp.RESULTS, sp.RESULTS / "never.json", recipe="XX")
