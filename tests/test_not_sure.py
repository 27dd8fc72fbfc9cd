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


# ----------------------------------------------------------------------------- "it always says X on my voice"
def test_one_emotion_answering_most_recent_recordings_is_flagged():
    from ser_core.predict import SETTLED_COUNT, SETTLED_WINDOW, settled_answer

    assert (SETTLED_WINDOW, SETTLED_COUNT) == (8, 5)
    assert settled_answer(["sad"] * 4) is None                         # too few recordings to tell
    assert settled_answer(["sad"] * 5) == ("sad", 5, 5)
    assert settled_answer(["angry", "sad", "happy", "sad", "neutral", "sad", "calm", "sad"]) is None   # 4 of 8
    assert settled_answer(["angry", "sad", "sad", "happy", "sad", "neutral", "sad", "sad"]) == ("sad", 5, 8)
    # only the last eight count: five old 'fearful' answers followed by a varied run are forgotten
    varied = ["angry", "sad", "happy", "neutral", "calm", "disgust", "surprised", "angry"]
    assert settled_answer(["fearful"] * 5 + varied) is None
    assert settled_answer(varied + ["fearful"] * 5) == ("fearful", 5, 8)
    # no speech is no answer; a tie goes to the most recent emotion
    assert settled_answer([None, "sad", None, "sad", "sad", "sad", None, "sad"]) == ("sad", 5, 5)
    assert settled_answer(["sad"] * 5 + ["fearful"] * 5, window=10) == ("fearful", 5, 10)


def test_answer_spread_measures_how_often_the_rule_fires(tmp_path):
    """training/answer_spread.py on two made-up speakers: one whose answers are all 'fearful' (the rule fires on
    every draw, and those answers are wrong), one answered right across eight emotions (it never fires)."""
    import pandas as pd

    emotions = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    stuck = pd.DataFrame({"file": [f"s{i}.wav" for i in range(16)], "speaker": "stranger", "corpus": "other",
                          "true": "sad", "pred": "fearful"})
    known = pd.DataFrame({"file": [f"k{i}.wav" for i in range(16)], "speaker": "actor",
                          "true": emotions * 2, "pred": emotions * 2})
    stuck.to_csv(tmp_path / "strangers.csv", index=False)
    known.to_csv(tmp_path / "oof.csv", index=False)
    out = tmp_path / "spread.json"
    done = subprocess.run([sys.executable, str(ROOT / "training" / "answer_spread.py"), str(tmp_path / "oof.csv"),
                           str(tmp_path / "strangers.csv"), "--draws", "20", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())["n"]["8"]
    assert figures["other"] == {"draws": 20, "fires": 1.0, "accuracy_when_fired": 0.0, "accuracy_otherwise": None}
    assert figures["ravdess"] == {"draws": 20, "fires": 0.0, "accuracy_when_fired": None, "accuracy_otherwise": 1.0}
