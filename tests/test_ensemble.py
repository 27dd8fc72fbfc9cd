"""Ensembles: honest combined cross-validation, a model folder that predicts what the CV recorded."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ser_core import ensemble, evaluation, runs
from ser_core.errors import ModelError, SERError
from ser_core.training import Logger, TrainConfig, cross_validate

from conftest import ROOT, SAMPLES

MEMBERS = ("seed004_dnn", "seed001_logmel_cnn")


@pytest.fixture(scope="module")
def member_cvs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    out = []
    for arch in MEMBERS:
        cfg = TrainConfig(dataset=f"ravdess:{SAMPLES}", arch=arch, protocol="speaker_kfold", k=2, n_val_speakers=1,
                          epochs=2, batch_size=8, workers=1)
        cross_validate(cfg, root / arch, log=Logger(None, to_file=False, echo=False))
        out.append(root / arch)
    return out


@pytest.fixture(scope="module")
def ens_cv(member_cvs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ens-cv") / "cv"
    ensemble.combine_cv(member_cvs, out)
    return out


def test_combined_cv_is_the_mean_of_the_members_out_of_fold_probabilities(member_cvs, ens_cv):
    parts = [pd.read_csv(d / "predictions.csv").set_index("file").sort_index() for d in member_cvs]
    labels = [c[2:] for c in parts[0].columns if c.startswith("p_")]
    cols = [f"p_{lab}" for lab in labels]
    mean = (parts[0][cols] + parts[1].loc[parts[0].index, cols]) / 2
    combined = pd.read_csv(ens_cv / "predictions.csv").set_index("file").loc[mean.index]
    np.testing.assert_allclose(combined[cols].to_numpy(), mean.to_numpy(), atol=1e-9)
    assert (combined["pred"] == mean.idxmax(axis=1).str[2:]).all()
    metrics = json.loads((ens_cv / "metrics.json").read_text())
    again = evaluation.evaluate(combined.reset_index(), labels)
    assert metrics["accuracy"] == pytest.approx(again["accuracy"])
    assert metrics["members"] == list(MEMBERS) and len(metrics["member_accuracy"]) == 2
    assert metrics["speaker_independent"] is True and "2-fold cross-validation" in metrics["protocol"]
    # every fold's test speakers are the members' test speakers of that fold
    for k in (1, 2):
        fold = pd.read_csv(ens_cv / f"fold-{k}" / "predictions.csv")
        assert set(fold["speaker"]) == set(pd.read_csv(member_cvs[0] / f"fold-{k}" / "predictions.csv")["speaker"])


def test_ensemble_fold_model_predicts_what_the_cv_recorded(ens_cv):
    from ser_core.predict import BasePredictor, EnsemblePredictor, load_predictor

    pred = load_predictor(ens_cv / "fold-1" / "model")
    assert isinstance(pred, EnsemblePredictor) and isinstance(pred, BasePredictor) and len(pred.members) == 2
    table = pd.read_csv(ens_cv / "fold-1" / "predictions.csv")
    labels = [c[2:] for c in table.columns if c.startswith("p_")]
    for _, row in table.head(4).iterrows():
        p = pred.predict_file(SAMPLES / row["file"])
        np.testing.assert_allclose([p.probabilities[lab] for lab in labels], row[[f"p_{lab}" for lab in labels]]
                                   .to_numpy(float), atol=1e-6)
        assert p.emotion == row["pred"]


def test_ensemble_says_no_speech_for_silence(ens_cv):
    from ser_core.predict import load_predictor

    hiss = (np.random.default_rng(0).standard_normal(32000) * 3e-4).astype(np.float32)   # about -70 dBFS, steady
    p = load_predictor(ens_cv / "fold-1" / "model").predict_array(hiss, 16000)
    assert p.emotion is None and "no speech" in p.message


def test_ser_predict_and_robustness_take_an_ensemble(ens_cv, tmp_path):
    from ser_core.robustness import evaluate_shifts

    r = subprocess.run([sys.executable, "-m", "ser_core", "predict", "--json", "--model",
                        str(ens_cv / "fold-2" / "model"), str(SAMPLES / "03-01-05-02-01-01-01.flac")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert abs(sum(json.loads(r.stdout)["probabilities"].values()) - 1) < 1e-3
    cv = tmp_path / "cv"
    shutil.copytree(ens_cv, cv)
    result = evaluate_shifts(cv, shifts=["gain-20db"], folds=[1], workers=0)
    recorded = pd.read_csv(cv / "fold-1" / "predictions.csv")
    assert result["results"]["clean"]["accuracy"] == pytest.approx((recorded["true"] == recorded["pred"]).mean())


def test_ensemble_refuses_what_does_not_fit(member_cvs, tmp_path):
    single = member_cvs[0] / "fold-1" / "model"
    with pytest.raises(ModelError, match="at least two"):
        ensemble.build([single], tmp_path / "one")
    other = tmp_path / "other-labels"
    shutil.copytree(single, other)
    spec = json.loads((other / "spec.json").read_text())
    spec["labels"] = spec["labels"][:-1] + ["bored"]
    (other / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="same emotions"):
        ensemble.build([single, other], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    short = tmp_path / "short-cv"
    shutil.copytree(member_cvs[1], short)
    cfg = runs.read_json(short / "config.json")
    runs.write_json(short / "config.json", {**cfg, "cv_folds": [1]})
    with pytest.raises(SERError, match="differ in cv_folds"):
        ensemble.combine_cv([member_cvs[0], short], tmp_path / "mixed")


def test_weighted_ensemble_answers_the_weighted_mean_and_refuses_bad_weights(member_cvs, sample_clip, tmp_path):
    """Two models as one whatever their member counts (training/pair.py --install) need a weighted mean."""
    from ser_core.predict import load_predictor

    singles = [d / "fold-1" / "model" for d in member_cvs]
    out = ensemble.build(singles, tmp_path / "weighted", export=False, weights=[3, 1])
    assert json.loads((out / "spec.json").read_text())["extra"]["member_weights"] == [0.75, 0.25]
    from ser_app import views

    assert views.model_summary(out)["title"].endswith("(75 %) + seed001_logmel_cnn (25 %) (weighted mean of "
                                                      "their probabilities)")
    ens = load_predictor(out, calibrated=False)
    got = ens.predict_file(sample_clip).probabilities
    alone = [load_predictor(d, calibrated=False).predict_file(sample_clip).probabilities for d in singles]
    for lab in ens.labels:
        assert got[lab] == pytest.approx(0.75 * alone[0][lab] + 0.25 * alone[1][lab], abs=1e-6)
    assert got != pytest.approx({lab: (alone[0][lab] + alone[1][lab]) / 2 for lab in ens.labels}, abs=1e-6)
    for bad, message in (([1], "needs 2 positive weights"), ([1, -1], "needs 2 positive weights"),
                         (["a", 1], "must be numbers")):
        with pytest.raises(ModelError, match=message):
            ensemble.build(singles, tmp_path / "bad", export=False, weights=bad)
    spec = json.loads((out / "spec.json").read_text())
    spec["extra"]["member_weights"] = [1, 0]                       # a hand-edited spec is refused on load
    (out / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="needs 2 positive weights"):
        load_predictor(out)


def test_views_name_an_ensemble(ens_cv):
    from ser_app import views

    summary = views.model_summary(ens_cv / "fold-1" / "model")
    assert summary["arch"] == "ensemble"
    assert summary["title"] == "Ensemble of seed004_dnn + seed001_logmel_cnn (mean of their probabilities)"


def test_ensemble_cli_names_a_bad_folder(member_cvs, tmp_path):
    r = subprocess.run([sys.executable, "-m", "ser_core", "ensemble", "cv", str(member_cvs[0]), str(tmp_path / "nope"),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{tmp_path / 'nope'} is not a finished cross-validation" in r.stderr


def test_the_ravdess_ensemble_answers_the_mean_of_its_members(sample_clip):
    """The ensemble's shared feature extraction and grouped, overlapped model calls give what
    each member says on its own, averaged window by window on the recording's own windows;
    also for audio longer than one batch of windows."""
    from conftest import ENSEMBLE_MODEL
    from ser_core import audio, features
    from ser_core.predict import BATCH, WindowScores, aligned, load_predictor

    ens = load_predictor(ENSEMBLE_MODEL, calibrated=False)   # the mean itself; calibration is tested apart
    assert len(ens._groups) == len({m.cfg for m in ens.members})     # members with equal features share them
    assert all(len({ens.members[i].cfg for i in g}) == 1 for g in ens._groups)
    # feature groups that condition, cut and transform the signal alike share one front end
    assert sorted(map(tuple, (g for f in ens._fronts for g in f))) == sorted(map(tuple, ens._groups))
    assert all(len({features.front_end(ens.members[g[0]].cfg) for g in f}) == 1 for f in ens._fronts)
    assert len(ens._fronts) == len({features.front_end(m.cfg) for m in ens.members}) == 2
    y = audio.load(sample_clip)
    long = np.tile(y, BATCH // 3 + 2)                               # > BATCH windows
    for wave in (y, long):
        got = ens.predict_array(wave, 16000)
        n = wave.size / 16000
        # the recording's windows: 3 s, 1 s hop, the last flush with the end
        assert got.windows[0].start == 0 and got.windows[-1].end == pytest.approx(n)
        assert len(got.windows) == (1 if n <= 4 else int(np.ceil(n - 3.0)) + 1)
        grid = WindowScores(np.array([w.start for w in got.windows]), np.array([w.end for w in got.windows]),
                            None, None)
        each = []
        for m in ens.members:
            alone = m.predict_array(wave, 16000)
            probs = np.array([[w.probabilities[lab] for lab in ens.labels] for w in alone.windows])
            each.append(aligned(grid, WindowScores(np.array([w.start for w in alone.windows]),
                                                   np.array([w.end for w in alone.windows]), probs, None)))
        want = np.mean(each, axis=0)
        if wave is y:       # a short clip: also the mean of what the members answer for the clip
            alone = [m.predict_array(wave, 16000).probabilities for m in ens.members]
            np.testing.assert_allclose([got.probabilities[lab] for lab in ens.labels],
                                       np.mean([[p[lab] for lab in ens.labels] for p in alone], axis=0), atol=1e-6)
        np.testing.assert_allclose([[w.probabilities[lab] for lab in ens.labels] for w in got.windows], want,
                                   atol=1e-6)
        speech = [w for w in got.windows if w.speech]
        clip = np.mean([[w.probabilities[lab] for lab in ens.labels] for w in speech], axis=0)
        np.testing.assert_allclose([got.probabilities[lab] for lab in ens.labels], clip, atol=1e-6)


def test_an_ensemble_without_a_gate_flags_speech_on_the_recordings_windows_only(sample_clip, monkeypatch):
    """The answer is averaged over the recording's own windows with speech (its grid); each front end's flags,
    of its own trimmed and normalised signal, only enter a novelty gate's signature, so without a gate they
    are not worked out (session 29: two frame-level passes a clip saved) and the answer is the same."""
    from conftest import ENSEMBLE_MODEL
    from ser_core import predict

    ens = predict.load_predictor(ENSEMBLE_MODEL, runtime="int8")
    assert ens.gate is None and not any(m.signs for m in ens.members)
    want = ens.predict_file(sample_clip)
    flagged = []
    real = predict.speech_windows
    monkeypatch.setattr(predict, "speech_windows", lambda y, *a, **k: flagged.append(y.size) or real(y, *a, **k))
    got = ens.predict_file(sample_clip)
    assert got.probabilities == want.probabilities and [w.speech for w in got.windows] == [w.speech for w in want.windows]
    assert flagged == [predict.audio.load(sample_clip).size]      # once, on the recording itself
    spans, _, _ = predict.many_window_features([predict.audio.load(sample_clip)], [ens.members[0].cfg], {},
                                               speech=False)
    assert spans[0][2] is None
