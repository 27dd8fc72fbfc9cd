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
