"""Calibration at prediction time: a model folder's stored temperature and "not sure" threshold
reach the Predictor, `ser predict --json` and live mode alike."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ser_core import audio
from ser_core.calibration import NOT_SURE, SPEC_KEY, Calibration, apply_temperature
from ser_core.config import ModelSpec
from ser_core.predict import Predictor

from conftest import ROOT

TEMPERATURE = 2.5


def with_calibration(src, dest, calibration: Calibration):
    shutil.copytree(src, dest)
    spec = ModelSpec.load(dest / "spec.json")
    ModelSpec.from_dict({**spec.to_dict(), "extra": {**spec.extra, SPEC_KEY: calibration.to_dict()}}
                        ).save(dest / "spec.json")
    return dest


@pytest.fixture(scope="module")
def unsure_model(tiny_model, tmp_path_factory):
    """The tiny model with a temperature that softens it and a threshold no answer of it reaches."""
    return with_calibration(tiny_model, tmp_path_factory.mktemp("calib") / "unsure",
                            Calibration(temperature=TEMPERATURE, threshold=0.99, fitted_on="test"))


def test_the_stored_calibration_softens_the_answer_and_says_not_sure(unsure_model, tiny_model, sample_clip):
    raw = Predictor(tiny_model).predict_file(sample_clip)
    assert raw.not_sure is False and raw.emotion == raw.best      # no calibration stored: as before
    p = Predictor(unsure_model).predict_file(sample_clip)
    labels = list(raw.probabilities)
    want = apply_temperature(np.array([raw.probabilities[lab] for lab in labels]), TEMPERATURE)
    np.testing.assert_allclose([p.probabilities[lab] for lab in labels], want, atol=1e-6)
    order = np.argsort(-want)
    assert p.emotion == NOT_SURE and p.not_sure
    assert p.best == raw.best == labels[order[0]]                  # temperature never moves the argmax
    assert p.top2 == (labels[order[0]], labels[order[1]])
    assert p.confidence == pytest.approx(want[order[0]]) and p.confidence < 0.99
    assert p.summary() == f"not sure: {labels[order[0]]} or {labels[order[1]]}"
    for w, rw in zip(p.windows, raw.windows):                      # windows are calibrated too
        np.testing.assert_allclose([w.probabilities[lab] for lab in labels],
                                   apply_temperature(np.array([rw.probabilities[lab] for lab in labels]),
                                                     TEMPERATURE), atol=1e-6)


def test_a_confident_answer_stays_an_emotion(tiny_model, sample_clip, tmp_path):
    sure = with_calibration(tiny_model, tmp_path / "sure", Calibration(temperature=TEMPERATURE, threshold=0.0))
    p = Predictor(sure).predict_file(sample_clip)
    assert p.emotion == p.best and not p.not_sure and p.summary() == p.best


def test_ser_predict_json_keeps_the_probabilities_and_says_not_sure(unsure_model, sample_clip):
    r = subprocess.run([sys.executable, "-m", "ser_core", "predict", "--json", "--model", str(unsure_model),
                        str(sample_clip)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    want = Predictor(unsure_model).predict_file(sample_clip)
    assert d["emotion"] == NOT_SURE and d["not_sure"] is True
    assert d["best"] == want.best and d["top2"] == list(want.top2)
    assert d["confidence"] == pytest.approx(want.confidence, abs=1e-6) and d["confidence"] < 0.99
    assert d["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)
    assert sum(d["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    r = subprocess.run([sys.executable, "-m", "ser_core", "predict", "--model", str(unsure_model),
                        str(sample_clip)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert f"not sure: {want.top2[0]} or {want.top2[1]}" in r.stdout


def test_live_mode_says_not_sure(unsure_model, sample_clip):
    from ser_core.live import LiveSession

    predictor = Predictor(unsure_model)
    session = LiveSession(seconds=3.0, every=1.0)
    y = audio.load(sample_clip)
    session.buffer.push(y, 16000, "mono")
    point = session.step(predictor, force=True)
    assert point.emotion == NOT_SURE and point.not_sure and point.best in predictor.labels
    assert point.summary == f"not sure: {point.top2[0]} or {point.top2[1]}"
    assert sum(point.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_no_speech_is_neither_an_emotion_nor_not_sure(unsure_model):
    hiss = (np.random.default_rng(0).standard_normal(48000) * 3e-4).astype(np.float32)
    d = Predictor(unsure_model).predict_array(hiss, 16000).to_dict()
    assert d["emotion"] is None and d["best"] is None and d["not_sure"] is False and d["top2"] == []


def test_a_bad_stored_calibration_is_a_model_error(tiny_model, tmp_path):
    from ser_core.errors import ModelError

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    spec = json.loads((bad / "spec.json").read_text())
    spec["extra"][SPEC_KEY] = {"temperature": -1.0, "threshold": 0.5}
    (bad / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="calibration"):
        Predictor(bad)
