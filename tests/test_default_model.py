"""The shipped default model: honest, self-consistent cross-validation numbers."""
import json

import pandas as pd
import pytest

from ser_core import evaluation, lite, modeldir
from ser_core.config import ModelSpec
from ser_core.splits import EMOBOX_RAVDESS_FOLDS

from conftest import DEFAULT_MODEL


@pytest.fixture(scope="module")
def shipped():
    metrics = json.loads((DEFAULT_MODEL / "metrics.json").read_text())
    preds = pd.read_csv(DEFAULT_MODEL / "predictions.csv")
    return metrics, preds


def test_files_and_size():
    total = sum(p.stat().st_size for p in DEFAULT_MODEL.rglob("*") if p.is_file())
    assert total < 16 * 1024 * 1024         # Keras weights for training, LiteRT copies for prediction
    spec = ModelSpec.load(DEFAULT_MODEL / "spec.json")
    assert set(spec.labels) == {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"}
    members = modeldir.network_dirs(DEFAULT_MODEL)
    for d in members:
        member = ModelSpec.load(d / "spec.json")
        assert set(member.labels) == set(spec.labels)
        assert member.norm_mean and member.norm_std, d      # every member normalises with its training stats
        assert (d / "model.keras").exists()
        assert lite.fresh(d), d                             # prediction needs no TensorFlow


def test_metrics_come_from_the_six_fold_protocol(shipped):
    metrics, preds = shipped
    assert "emobox6 6-fold cross-validation" in metrics["protocol"]
    assert metrics["speaker_independent"] is True
    assert len(preds) == 1440 and preds["file"].is_unique
    for fold, actors in enumerate(EMOBOX_RAVDESS_FOLDS, start=1):
        assert set(preds.loc[preds["fold"] == fold, "actor"]) == set(actors)


def test_metrics_agree_with_predictions(shipped):
    metrics, preds = shipped
    labels = [c[2:] for c in preds.columns if c.startswith("p_")]
    again = evaluation.evaluate(preds, labels)
    for key in ("accuracy", "uar", "macro_f1", "weighted_f1"):
        assert metrics[key] == pytest.approx(again[key], abs=1e-9), key
    for g in ("female", "male"):
        assert metrics["per_gender"][g]["accuracy"] == pytest.approx(again["per_gender"][g]["accuracy"])
    assert (preds["pred"] == preds[[f"p_{lab}" for lab in labels]].idxmax(axis=1).str[2:]).all()


def test_multicorpus_pair_is_half_default_half_its_own_network(sample_clip):
    """models/multicorpus (training/pair.py --install) answers the calibrated mean of the default's raw
    probabilities and its multi-corpus network's, each half, and its metrics are its predictions'."""
    import numpy as np

    from ser_core.calibration import apply_temperature
    from ser_core.predict import load_predictor

    pair_dir = DEFAULT_MODEL.parent / "multicorpus"
    spec = ModelSpec.load(pair_dir / "spec.json")
    shares = spec.extra["member_weights"]
    assert sum(shares) == pytest.approx(1) and shares[-1] == pytest.approx(0.5)
    pair = load_predictor(pair_dir)
    default = load_predictor(DEFAULT_MODEL, calibrated=False)
    net = load_predictor(modeldir.member_dirs(pair_dir)[-1], calibrated=False)
    labs = pair.labels
    raw = [np.array([m.predict_file(sample_clip).probabilities[lab] for lab in labs]) for m in (default, net)]
    got = pair.predict_file(sample_clip)
    np.testing.assert_allclose([got.probabilities[lab] for lab in labs],
                               apply_temperature((raw[0] + raw[1]) / 2, pair.calibration.temperature), atol=1e-6)
    metrics = json.loads((pair_dir / "metrics.json").read_text())
    preds = pd.read_csv(pair_dir / "predictions.csv")
    assert set(preds["corpus"]) == {"ravdess", "ased", "emovo", "urdu"} and preds["file"].is_unique
    again = evaluation.evaluate(preds, labs)
    assert metrics["accuracy"] == pytest.approx(again["accuracy"], abs=1e-9)
    assert metrics["per_corpus"]["ravdess"]["accuracy"] == pytest.approx(again["per_corpus"]["ravdess"]["accuracy"])
