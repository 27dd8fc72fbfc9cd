"""Several corpora: their file names, a data root holding them, folds across them, balanced weights,
per-corpus metrics and calibration."""

import numpy as np
import pandas as pd
import pytest

from ser_core import calibration, datasets, evaluation, splits
from ser_core.errors import DatasetError
from ser_core.training import example_weights


# ----------------------------------------------------------------------------- file names
@pytest.mark.parametrize("name, expected", [
    ("f2-07-01-01-31.flac", {"emotion": "fearful", "speaker": "ased-31", "gender": "female", "corpus": "ased",
                             "sentence": 7, "repetition": 1}),
    ("a5-10-02-02-44.flac", {"emotion": "angry", "speaker": "ased-44", "gender": "male", "corpus": "ased",
                             "sentence": 10, "repetition": 2}),
    ("S4-04-02-01-29.flac", {"emotion": "sad", "speaker": "ased-29", "gender": "female", "corpus": "ased",
                             "sentence": 4, "repetition": 2}),
])
def test_ased_names(name, expected):
    assert datasets.parse_ased(name) == expected


def test_emovo_and_urdu_names():
    assert datasets.parse_emovo("pau-f1-l3.flac") == {"emotion": "fearful", "speaker": "emovo-f1", "gender": "female",
                                                      "corpus": "emovo", "sentence": "l3"}
    assert datasets.parse_emovo("gio-m2-n5.flac")["emotion"] == "happy"
    assert datasets.parse_emovo("sor-m3-b1.flac")["emotion"] == "surprised"
    assert datasets.parse_urdu("SM4_F2_A054.flac") == {"emotion": "angry", "speaker": "urdu-M4", "gender": "male",
                                                       "corpus": "urdu"}
    assert datasets.parse_urdu("SF11_F3_N012.flac")["speaker"] == "urdu-F11"
    for bad, parser in (("x2-07-01-01-31", datasets.parse_ased), ("f2-07-01-03-31", datasets.parse_ased),
                        ("xyz-f1-l3", datasets.parse_emovo), ("pau-f4-l3", datasets.parse_emovo),
                        ("SM4_F2_X054", datasets.parse_urdu), ("hello", datasets.parse_urdu)):
        assert parser(bad) is None


def test_every_corpus_is_credited_with_its_own_emotions():
    assert set(datasets.CORPORA) == {"ravdess", "ased", "emovo", "urdu"}
    assert set(datasets.CORPORA["urdu"].emotions) == {"neutral", "happy", "sad", "angry"}
    assert "calm" not in datasets.CORPORA["emovo"].emotions
    assert all(info.citation and info.licence for info in datasets.CORPORA.values())


# ----------------------------------------------------------------------------- a data root (conftest.data_root)
def test_data_root_finds_corpora_by_name(data_root):
    found = datasets.corpus_dirs()
    assert found == {"ased": data_root / "ased", "emovo": data_root / "emovo", "ravdess": data_root / "RAVDESS"}
    df = datasets.load_dataset("ravdess+emovo+ased")
    assert df.groupby("corpus").size().to_dict() == {"ased": 3, "emovo": 3, "ravdess": 32}
    assert df.loc[df["corpus"] == "ased", "gender"].tolist() == ["female"] * 3     # the majority of its names
    assert datasets.load_dataset("emovo")["emotion"].tolist() == ["happy", "neutral", "sad"]


def test_a_root_that_is_ravdess_itself_keeps_working(samples_dir, monkeypatch):
    monkeypatch.setenv("SER_DATA_DIR", str(samples_dir))
    assert datasets.corpus_dirs() == {"ravdess": samples_dir}
    assert len(datasets.load_dataset("ravdess")) == 32


def test_a_missing_corpus_says_what_was_found(data_root):
    with pytest.raises(DatasetError, match=r"no corpus 'urdu' under the data root .*found: ased, emovo, ravdess"):
        datasets.load_dataset("ravdess+urdu")
    with pytest.raises(DatasetError, match="unknown dataset 'nosuch'"):
        datasets.load_dataset("nosuch")


def test_full_corpora_counts(corpus_dirs):
    if not {"ased", "emovo", "urdu"} <= set(corpus_dirs):
        pytest.skip("the data root holds no ASED/EMOVO/URDU (set SER_DATA_DIR to the folder of corpora)")
    df = datasets.load_dataset("ased+emovo+urdu")
    per = df.groupby("corpus").agg(n=("path", "size"), speakers=("speaker", "nunique"))
    assert per.to_dict("index") == {"ased": {"n": 2474, "speakers": 65}, "emovo": {"n": 588, "speakers": 6},
                                    "urdu": {"n": 400, "speakers": 29}}
    genders = df.drop_duplicates("speaker").groupby(["corpus", "gender"]).size().to_dict()
    assert genders[("ased", "female")] == 25 and genders[("ased", "male")] == 40
    assert df.groupby("speaker")["gender"].nunique().eq(1).all()
    assert set(df["emotion"]) <= set(datasets.CORPORA["emovo"].emotions)


# ----------------------------------------------------------------------------- folds
def fake_corpora():
    rows = [{"path": f"r{a}-{e}", "emotion": e, "speaker": f"ravdess-{a:02d}", "actor": a, "corpus": "ravdess",
             "gender": "male" if a % 2 else "female"} for a in range(1, 25) for e in ("neutral", "calm", "sad")]
    rows += [{"path": f"a{s}-{e}", "emotion": e, "speaker": f"ased-{s:02d}", "corpus": "ased",
              "gender": "female" if s <= 25 else "male"} for s in range(1, 66) for e in ("neutral", "sad")]
    rows += [{"path": f"e{s}-{e}", "emotion": e, "speaker": f"emovo-{s}", "corpus": "emovo",
              "gender": "female" if s[0] == "f" else "male"} for s in ("f1", "f2", "f3", "m1", "m2", "m3")
             for e in ("neutral", "sad")]
    return pd.DataFrame(rows)


def test_emobox6_over_corpora_tests_every_speaker_exactly_once():
    df = fake_corpora()
    tested = []
    for fold in range(1, 7):
        s = splits.make_split(df, "emobox6", fold, n_val=0)
        test = df.iloc[s.test]
        assert set(test.loc[test["corpus"] == "ravdess", "actor"]) == set(splits.EMOBOX_RAVDESS_FOLDS[fold - 1])
        assert test.groupby("corpus")["speaker"].nunique().to_dict() == {
            "ased": 11 if fold <= 5 else 10, "emovo": 1, "ravdess": 4}
        assert not set(df["speaker"].iloc[s.train]) & set(test["speaker"])
        assert set(df["corpus"].iloc[s.train]) == {"ravdess", "ased", "emovo"}    # other corpora in every fold
        tested += list(test["speaker"].unique())
    assert sorted(tested) == sorted(df["speaker"].unique())
    # the other corpora's folds do not depend on the model seed (members of an ensemble share them)
    assert np.array_equal(splits.make_split(df, "emobox6", 3, n_val=0, seed=7).test,
                          splits.make_split(df, "emobox6", 3, n_val=0, seed=0).test)


def test_leave_one_corpus_out():
    df = fake_corpora()
    assert splits.corpora(df) == ["ravdess", "ased", "emovo"]
    assert splits.n_folds("loco", df=df) == 3
    for fold, name in enumerate(["ravdess", "ased", "emovo"], 1):
        s = splits.make_split(df, "loco", fold, n_val=0)
        assert set(df["corpus"].iloc[s.test]) == {name}
        assert len(s.test) == (df["corpus"] == name).sum()
        assert name not in set(df["corpus"].iloc[s.train])
        assert splits.fold_name("loco", fold, df) == f"test corpus {name}"
    with pytest.raises(Exception, match="at least two corpora"):
        splits.make_split(df[df["corpus"] == "ased"], "loco", 1)


# ----------------------------------------------------------------------------- balance
def test_every_emotion_and_every_corpus_within_it_weigh_the_same():
    y = np.array([0] * 10 + [0] * 2 + [1] * 4 + [2] * 3)
    g = np.array(["big"] * 10 + ["small"] * 2 + ["big"] * 4 + ["small"] * 3)
    w = example_weights(y, g, 3)
    assert w.mean() == pytest.approx(1.0)
    totals = {k: w[y == k].sum() for k in range(3)}
    assert totals[0] == pytest.approx(totals[1]) == pytest.approx(totals[2])
    assert w[(y == 0) & (g == "big")].sum() == pytest.approx(w[(y == 0) & (g == "small")].sum())
    # one corpus: plain class weighting, as before
    np.testing.assert_allclose(example_weights(y, np.array(["one"] * len(y)), 3),
                               np.array([19 / (3 * 12)] * 12 + [19 / (3 * 4)] * 4 + [19 / (3 * 3)] * 3), rtol=1e-6)


def test_balanced_within_each_corpus_every_corpus_and_each_of_its_emotions_weigh_the_same():
    # "big" has emotions 0, 1, 2 (2 is its own, like RAVDESS's calm); "small" has 0 and 1.
    y = np.array([0] * 10 + [1] * 5 + [2] * 5 + [0] * 2 + [1] * 3)
    g = np.array(["big"] * 20 + ["small"] * 5)
    w = example_weights(y, g, 3, within="corpus")
    assert w.mean() == pytest.approx(1.0)
    cell = {(k, c): w[(y == k) & (g == c)].sum() for k in range(3) for c in ("big", "small")}
    assert cell[0, "big"] == pytest.approx(cell[1, "big"]) == pytest.approx(cell[2, "big"])
    assert cell[0, "small"] == pytest.approx(cell[1, "small"])
    assert sum(cell[k, "big"] for k in range(3)) == pytest.approx(sum(cell[k, "small"] for k in range(3)))
    # the other rule gives the corpus's own emotion twice the weight of a shared one inside "big"
    w_e = example_weights(y, g, 3)
    assert w_e[(y == 2)].sum() == pytest.approx(2 * w_e[(y == 0) & (g == "big")].sum())
    np.testing.assert_allclose(example_weights(y, np.array(["one"] * len(y)), 3, within="corpus"),
                               example_weights(y, np.array(["one"] * len(y)), 3))
    with pytest.raises(ValueError, match="not 'speaker'"):
        example_weights(y, g, 3, within="speaker")


def test_balanced_per_cell_every_emotion_of_every_corpus_weighs_the_same():
    # five cells: "big" has emotions 0, 1, 2, "small" has 0 and 1
    y = np.array([0] * 10 + [1] * 5 + [2] * 5 + [0] * 2 + [1] * 3)
    g = np.array(["big"] * 20 + ["small"] * 5)
    w = example_weights(y, g, 3, within="cell")
    assert w.mean() == pytest.approx(1.0)
    cell = {(k, c): w[(y == k) & (g == c)].sum() for k in range(3) for c in ("big", "small")}
    present = [cell[k, c] for k, c in cell if k < 2 or c == "big"]
    assert len(present) == 5 and all(v == pytest.approx(len(y) / 5) for v in present)
    # each corpus weighs by how many emotions it has (3 : 2), unlike within="corpus" (1 : 1)
    assert w[g == "big"].sum() == pytest.approx(1.5 * w[g == "small"].sum())
    np.testing.assert_allclose(example_weights(y, np.array(["one"] * len(y)), 3, within="cell"),
                               example_weights(y, np.array(["one"] * len(y)), 3))


# ----------------------------------------------------------------------------- per-corpus metrics
def table():
    labels = ["neutral", "calm", "sad"]
    rows = [("ravdess", "female", "calm", [0.2, 0.7, 0.1]), ("ravdess", "male", "neutral", [0.6, 0.3, 0.1]),
            ("urdu", "male", "neutral", [0.3, 0.6, 0.1]),        # says calm; among urdu's own emotions: neutral
            ("urdu", "female", "sad", [0.1, 0.5, 0.4])]          # says calm; among its own: sad
    df = pd.DataFrame([{"corpus": c, "gender": g, "speaker": f"{c}-{i}", "true": t,
                        "pred": labels[int(np.argmax(p))], **{f"p_{lab}": v for lab, v in zip(labels, p)}}
                       for i, (c, g, t, p) in enumerate(rows)])
    return df, labels


def test_per_corpus_metrics_and_own_emotions():
    df, labels = table()
    m = evaluation.evaluate(df, labels)
    urdu = m["per_corpus"]["urdu"]
    assert urdu["accuracy"] == 0.0 and urdu["own_emotions"] == ["neutral", "sad"]
    assert urdu["own"]["accuracy"] == 1.0 and urdu["own"]["uar"] == 1.0
    assert urdu["per_gender"] == {"female": 0.0, "male": 0.0}
    assert urdu["confusion"] == [[0, 1, 0], [0, 0, 0], [0, 1, 0]]
    assert m["per_corpus"]["ravdess"]["accuracy"] == 1.0 and m["per_corpus"]["ravdess"]["speakers"] == 2


# ----------------------------------------------------------------------------- calibration
def overconfident(n=6000, k=4, true_t=2.0, seed=0):
    """Probabilities whose labels were drawn at temperature ``true_t``: calibrated after dividing by it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, k))
    p_true = np.exp(logits / true_t)
    p_true /= p_true.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p_true])
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), y


def test_temperature_scaling_recovers_the_temperature_and_fixes_ece():
    probs, y = overconfident()
    t = calibration.fit_temperature(probs, y)
    assert t == pytest.approx(2.0, rel=0.08)
    fixed = calibration.apply_temperature(probs, t)
    assert (fixed.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert calibration.ece(probs, y) > 0.1 > 0.03 > calibration.ece(fixed, y)
    rel = calibration.reliability(fixed, y)
    assert rel["n"].sum() == len(y)
    cov = calibration.coverage_curve(fixed, y)
    assert cov["coverage"].iloc[-1] == 1.0
    assert cov["accuracy"].iloc[-1] == pytest.approx((fixed.argmax(1) == y).mean())
    assert cov["accuracy"].iloc[0] > cov["accuracy"].iloc[-1]          # the most confident answers are better


def test_calibration_from_a_table_is_cross_fitted_and_round_trips():
    probs, y = overconfident(n=3000)
    labels = ["a", "b", "c", "d"]
    df = pd.DataFrame({"true": [labels[i] for i in y], "fold": np.arange(len(y)) % 5,
                       **{f"p_{lab}": probs[:, j] for j, lab in enumerate(labels)}})
    cal = calibration.fit_table(df, fitted_on="test table")
    assert cal.temperature == pytest.approx(2.0, rel=0.1) and cal.n == 3000
    assert cal.ece_after < 0.04 < cal.ece_before
    assert calibration.Calibration.from_dict(cal.to_dict()) == cal
    assert calibration.Calibration.from_dict(None) is None
    rates = calibration.not_sure_rate(cal.apply(probs), y, cal.threshold)
    assert 0 < rates["not_sure"] < 1
    assert rates["not_sure_when_wrong"] > rates["not_sure_when_right"]
    with pytest.raises(Exception, match="threshold"):
        calibration.Calibration(threshold=1.5)


def test_held_out_corpora_are_calibrated_only_from_the_other_corpora():
    probs, y = overconfident(n=2000)
    labels = ["a", "b", "c", "d"]
    frame = pd.DataFrame({"true": [labels[i] for i in y], "corpus": np.where(np.arange(len(y)) % 2, "x", "z"),
                          **{f"p_{lab}": probs[:, j] for j, lab in enumerate(labels)}})
    # out-of-fold predictions: corpus x calibrated at T=2, corpus z needs no temperature
    oof = frame.copy()
    z = oof["corpus"] == "z"
    oof.loc[z, [f"p_{lab}" for lab in labels]] = calibration.apply_temperature(probs[z.to_numpy()], 2.0)
    res = calibration.transfer_summary(frame, oof)
    assert res["x"]["temperature"] == pytest.approx(1.0, rel=0.15)      # from z's rows only
    assert res["z"]["temperature"] == pytest.approx(2.0, rel=0.15)      # from x's rows only
    assert sum(res["x"]["answers"].values()) == pytest.approx(1.0)


def test_data_list_names_the_corpora_found(data_root):
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ser_core.cli", "data", "list"], capture_output=True, text=True,
                         env={**os.environ, "SER_DATA_DIR": str(data_root)}, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ased", "emovo", "ravdess"]
    assert "EMOVO, Italian" in lines[1]
    empty = subprocess.run([sys.executable, "-m", "ser_core.cli", "data", "list"], capture_output=True, text=True,
                           env={**os.environ, "SER_DATA_DIR": str(data_root / "notes")}, timeout=120)
    assert empty.returncode == 2 and empty.stderr.startswith("error: no corpora under the data root")
    assert "Traceback" not in empty.stderr
