"""Session 37's candidates NT/NT2 (training/novelty_calibration.py) and GX/GI (training/gender_probe.py),
docs/preregistration-session37.md: what each measures, and that no held-out clip informs its own calibration
or its gender."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_encoder_probe import _speaker_work, _work


@pytest.fixture(scope="module")
def nt():
    from conftest import training_module

    return training_module("novelty_calibration")


@pytest.fixture(scope="module")
def gender():
    from conftest import training_module

    return training_module("gender_probe")


def test_nearest_rows_distance_is_the_mean_of_the_k_smallest(nt):
    rng = np.random.default_rng(0)
    rows = rng.normal(0, 1, (300, 8))
    ref = nt.Reference.fit(rows)
    q = rng.normal(0, 1, (5, 8))
    got = ref.novelty(q)["knn"]
    # every axis kept (8 < AXES): distances on the axes are the distances themselves
    brute = np.sort(np.linalg.norm(q[:, None, :] - rows[None, :, :], axis=2), axis=1)[:, :nt.K].mean(axis=1)
    assert got == pytest.approx(brute, rel=1e-4)


def test_what_each_measure_sees(nt):
    """Moved along the axes training rows vary on, a clip is far to the nearest-rows distance; moved along
    the weak axes only, the nearest-rows distance (on the leading axes) barely moves, while the Mahalanobis
    distance and the distance from the leading subspace see it (NT2's reason)."""
    rng = np.random.default_rng(1)
    strong = nt.AXES
    rows = rng.normal(0, 1, (400, 300)) * np.r_[np.full(strong, 3.0), np.ones(300 - strong)]
    ref = nt.Reference.fit(rows)
    near = rng.normal(0, 1, (50, 300)) * np.r_[np.full(strong, 3.0), np.ones(300 - strong)]
    along, across = near.copy(), near.copy()
    along[:, :strong] += 6.0
    across[:, strong:] += 1.5
    a, b, c = ref.novelty(near), ref.novelty(along), ref.novelty(across)
    assert np.median(b["knn"]) > 1.5 * np.median(a["knn"])
    assert np.median(c["knn"]) < 1.05 * np.median(a["knn"])
    for m in ("mahalanobis", "residual"):
        assert np.median(c[m]) > 1.5 * np.median(a[m]), m


def _scored(nt, rng, n, novelty, temperature):
    """Held-out rows whose true labels were drawn at ``temperature`` from their scores."""
    logits = rng.normal(0, 3, (n, 4))
    p = np.exp(logits / temperature[:, None])
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    return nt.Scored(logits, y, {m: novelty for m in nt.MEASURES}, ["neutral", "happy", "sad", "angry"])


def test_the_temperature_grows_with_novelty_when_unfamiliar_rows_are_overconfident(nt):
    rng = np.random.default_rng(2)
    n_in, n_out = rng.normal(1.0, 0.05, 3000), rng.normal(1.5, 0.05, 3000)
    inside = [_scored(nt, rng, 3000, n_in, np.full(3000, 1.5))]
    across = [_scored(nt, rng, 3000, n_out, np.full(3000, 4.0))]
    fitted = nt.fit(inside, across)
    shipped, tempered = fitted["shipped"], fitted["NT"]
    assert shipped.a1 == 0 and np.exp(shipped.a0) == pytest.approx(1.5, rel=0.1)     # in-corpus rows only
    assert tempered.a1 > 0
    assert np.median(tempered.temperature(inside[0])) == pytest.approx(1.5, rel=0.15)
    assert np.median(tempered.temperature(across[0])) == pytest.approx(4.0, rel=0.15)
    # a temperature per clip changes no answer
    assert (tempered.probs(across[0]).argmax(axis=1) == across[0].logits.argmax(axis=1)).all()
    assert set(fitted["NT2"].auc) == set(nt.MEASURES)


def test_leaving_a_corpus_out_its_clips_inform_nothing_of_its_calibration(nt, tmp_path):
    res = []
    for shift in (0.0, 4.0):        # URDU's vectors moved far: URDU's own fold fits the same calibration
        work = _work(tmp_path, np.random.default_rng(2), shift)
        for f in work.glob("manifest_*.csv"):            # speakers named per corpus, with a gender, as the adapters do
            m = pd.read_csv(f)
            m["speaker"] = m["corpus"] + "-" + m["speaker"]
            m["gender"] = np.where(m["speaker"].str.endswith("1"), "male", "female")
            m.to_csv(f, index=False)
        choices = tmp_path / "loco_choices.json"
        choices.write_text(json.dumps({c: {"C": 0.1} for c in ("ravdess", "ased", "emovo", "urdu")}))
        out = tmp_path / f"nt{shift}.json"
        res.append(nt.run(work, choices, choices, out, None, parts=("loco",)))
    urdu0, urdu1 = res[0]["loco"]["urdu"], res[1]["loco"]["urdu"]
    for kind in ("shipped", "NT", "NT2"):
        assert (urdu0[kind]["a0"], urdu0[kind]["a1"]) == (urdu1[kind]["a0"], urdu1[kind]["a1"])
    assert res[0]["loco"]["ased"]["NT"]["a0"] != res[1]["loco"]["ased"]["NT"]["a0"]     # URDU trains ASED's fold
    table = pd.read_csv(tmp_path / "nt0.0_predictions.csv.gz")
    assert set(table["calibration"]) == {"shipped", "NT", "NT2"}
    assert len(table) == 3 * 12 * (5 + 4 + 5 + 4)


def test_gender_probes_never_read_a_test_clips_gender(gender, tmp_path):
    """Fold 1's RAVDESS test actors with their gender labels flipped (RAVDESS's folds are fixed actors; the
    other corpora's speakers are dealt by gender): fold 1's answers stay (a test clip's gender comes from the
    classifier), the other folds' change (those actors train them)."""
    from ser_core import splits

    work = _speaker_work(tmp_path)
    choices = tmp_path / "choices.json"
    choices.write_text(json.dumps({str(f): {"C": 0.1} for f in range(1, 7)}))
    manifest = pd.concat([pd.read_csv(f) for f in sorted(work.glob("manifest_*.csv"))], ignore_index=True)
    test1 = manifest.loc[splits.make_split(manifest, "emobox6", 1, n_val=0).test]
    fold1 = set(test1.loc[test1["corpus"] == "ravdess", "speaker"])
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for f in work.iterdir():
        if f.name.startswith("manifest_"):
            m = pd.read_csv(f)
            mine = m["speaker"].isin(fold1)
            m.loc[mine, "gender"] = m.loc[mine, "gender"].map({"female": "male", "male": "female"})
            m.to_csv(flipped / f.name, index=False)
        else:
            (flipped / f.name).write_bytes(f.read_bytes())
    for kind in ("GX", "GI"):
        a = gender.run(work, kind, choices, tmp_path / f"{kind}.csv")
        b = gender.run(flipped, kind, choices, tmp_path / f"{kind}_flipped.csv")
        assert len(a) == len(manifest) and a["file"].is_unique and sorted(a["fold"].unique()) == [1, 2, 3, 4, 5, 6]
        cols = [c for c in a.columns if c.startswith("p_")]
        pa, pb = a[cols].fillna(0).to_numpy(), b[cols].fillna(0).to_numpy()
        assert pa.sum(axis=1) == pytest.approx(np.ones(len(pa)))
        one = (a["fold"] == 1).to_numpy()
        assert np.abs(pa[one] - pb[one]).max() < 1e-9, kind
        assert np.abs(pa[~one] - pb[~one]).max() > 1e-3, kind


def test_under_the_speaker_folds_a_folds_test_speakers_inform_nothing_of_its_calibration(nt, tmp_path):
    """Fold 1's test speakers moved far away: fold 1's calibrations stay, fold 2's (which they train) change."""
    res = []
    for move in (0.0, 9.0):
        work = _speaker_work(tmp_path, move)
        choices = tmp_path / "choices.json"
        choices.write_text(json.dumps({str(f): {"C": 0.1} for f in range(1, 7)}))
        res.append(nt.run(work, choices, None, tmp_path / f"e{move}.json", None, parts=("emobox6",)))
    (a, b) = (r["emobox6_folds"] for r in res)
    for kind in ("shipped", "NT", "NT2"):
        assert (a["1"][kind]["a0"], a["1"][kind]["a1"]) == (b["1"][kind]["a0"], b["1"][kind]["a1"])
    assert a["2"]["NT"]["a0"] != b["2"]["NT"]["a0"]
    assert set(res[0]["emobox6"]) == {"shipped", "NT", "NT2"}
    assert res[0]["emobox6"]["shipped"]["pooled"]["n"] == len(pd.read_csv(tmp_path / "e0.0_predictions.csv.gz")) // 3


def test_the_card_says_too_sure_only_when_every_held_out_corpus_is(tmp_path):
    from conftest import training_module

    from ser_core import schema

    report = training_module("report")
    figures = {"n": 10, "ece": 0.02, "accuracy": 0.40, "mean_confidence": 0.42, "not_sure": 0.5,
               "not_sure_when_wrong": 0.6, "not_sure_when_right": 0.4}
    record = {"command": "python training/novelty_calibration.py ...", "corpora": {"ased": figures, "urdu": figures}}
    (tmp_path / schema.LOCO_CALIBRATION).write_text(json.dumps(record))
    text = "\n".join(report.loco_calibration_lines(tmp_path))
    assert "too sure" not in text and "| ased | 40.0 % | 42.0 % | 0.020 |" in text
    record["corpora"]["urdu"] = {**figures, "mean_confidence": 0.60}
    (tmp_path / schema.LOCO_CALIBRATION).write_text(json.dumps(record))
    assert "too sure" not in "\n".join(report.loco_calibration_lines(tmp_path))      # one corpus is not every one
    record["corpora"]["ased"] = {**figures, "mean_confidence": 0.60}
    (tmp_path / schema.LOCO_CALIBRATION).write_text(json.dumps(record))
    assert "is too sure of itself on the fourth" in "\n".join(report.loco_calibration_lines(tmp_path))
    assert report.loco_calibration_lines(tmp_path / "nowhere") == []
