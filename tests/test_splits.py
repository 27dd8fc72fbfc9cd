"""Splits: speaker-independent by construction, the EmoBox folds exactly as published."""
import numpy as np
import pandas as pd
import pytest

from ser_core import splits
from ser_core.errors import ConfigError


def fake_ravdess():
    rows = [{"path": f"{a}-{e}-{i}", "emotion": e, "speaker": f"ravdess-{a:02d}", "actor": a,
             "gender": "male" if a % 2 else "female"}
            for a in range(1, 25) for e in ("neutral", "calm", "happy", "sad") for i in range(3)]
    return pd.DataFrame(rows)


def test_emobox_folds_cover_every_actor_once():
    actors = [a for fold in splits.EMOBOX_RAVDESS_FOLDS for a in fold]
    assert sorted(actors) == list(range(1, 25))
    assert splits.EMOBOX_RAVDESS_FOLDS[0] == (1, 11, 20, 21)
    assert splits.EMOBOX_RAVDESS_FOLDS[5] == (6, 13, 17, 22)


@pytest.mark.parametrize("fold", range(1, 7))
def test_emobox_split_is_speaker_independent(fold):
    df = fake_ravdess()
    s = splits.make_split(df, "emobox6", fold, n_val=2)
    test_actors = set(df["actor"].iloc[s.test])
    assert test_actors == set(splits.EMOBOX_RAVDESS_FOLDS[fold - 1])
    parts = [set(df["speaker"].iloc[i]) for i in (s.train, s.val, s.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(parts[1]) == 2 and set(df.loc[df["speaker"].isin(parts[1]), "gender"]) == {"male", "female"}
    assert len(s.train) + len(s.val) + len(s.test) == len(df)
    assert s.speaker_independent and "speaker-independent" in s.label


def test_speaker_kfold_partitions_speakers():
    df = fake_ravdess()
    tests = [set(df["speaker"].iloc[splits.make_split(df, "speaker_kfold", f, k=4).test]) for f in range(1, 5)]
    assert set().union(*tests) == set(df["speaker"])
    assert sum(len(t) for t in tests) == 24


def test_random_split_is_labelled_speaker_dependent():
    df = fake_ravdess()
    s = splits.make_split(df, "random", seed=3)
    assert not s.speaker_independent and "DEPENDENT" in s.label
    assert set(df["speaker"].iloc[s.train]) & set(df["speaker"].iloc[s.test])
    assert len(s.test) == pytest.approx(0.2 * len(df), abs=4)
    assert len(np.intersect1d(s.train, s.test)) == 0
    assert len(s.val) == pytest.approx(0.1 * len(df), abs=4)
    no_val = splits.make_split(df, "random", n_val=0, seed=3)        # a recipe without validation trains on 80 %
    assert len(no_val.val) == 0 and np.array_equal(no_val.test, s.test)
    assert all(part.dtype.kind == "i" for part in (no_val.train, no_val.val, no_val.test))   # usable as indices
    assert np.array_equal(no_val.train, np.union1d(s.train, s.val))


def test_check_disjoint_catches_leaks():
    df = fake_ravdess()
    leaky = splits.Split("x", 1, np.array([0, 1]), np.array([], int), np.array([2]), True)
    with pytest.raises(ConfigError, match="shares speakers"):
        splits.check_disjoint(df, leaky)


def test_bad_fold_and_protocol_are_clear():
    df = fake_ravdess()
    with pytest.raises(ConfigError, match="folds 1-6"):
        splits.make_split(df, "emobox6", 7)
    with pytest.raises(ConfigError, match="unknown protocol"):
        splits.make_split(df, "loo")
