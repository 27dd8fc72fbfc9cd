"""Bad and odd audio through every entry point: `ser predict --json`, the Predictor API and corpus loading.

Each fixture (tests/audio_fixtures.py) either yields a valid prediction or a
one-line message naming the file and its problem, with the right error type;
never a traceback, never a hang.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audio_fixtures import LONG, NAMES, Fixture, make_all, speech_clip
from ser_core import audio
from ser_core.cache import corpus_features
from ser_core.errors import SERError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fx(tmp_path_factory, sample_clip) -> dict[str, Fixture]:
    """Every fixture, in a folder whose name has a space, like many users' folders."""
    return make_all(tmp_path_factory.mktemp("bad audio"), speech_clip(sample_clip))


SHORT_NAMES = [n for n in NAMES if n != LONG]


def assert_valid_prediction(d: dict, labels: list[str]) -> None:
    assert "error" not in d, d
    assert d["emotion"] in labels
    probs = d["probabilities"]
    assert list(probs) == labels
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    assert d["confidence"] == pytest.approx(max(probs.values()), abs=1e-5)
    assert probs[d["emotion"]] == max(probs.values())


def assert_clear_message(msg: str, f: Fixture) -> None:
    assert "\n" not in msg and "Traceback" not in msg
    assert f.name in msg, f"message does not name the file: {msg}"
    assert f.word.lower() in msg.lower(), f"message does not say '{f.word}': {msg}"


def test_cli_predict_json(fx, tiny_model, predictor):
    """All fixtures in one `ser predict --json` call (the 20-minute file is streamed)."""
    paths = [str(f.path) for f in fx.values()]
    proc = subprocess.run([sys.executable, "-m", "ser_core", "predict", "--json", "--model", str(tiny_model), *paths],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, "some inputs are errors, so the exit status says so"
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(fx)
    by_file = {Path(r["file"]).name: r for r in rows}
    assert set(by_file) == set(fx)
    for name, f in fx.items():
        row = by_file[name]
        if f.expect is None:
            assert_valid_prediction(row, predictor.labels)
            assert row["duration"] < 60 or name == LONG, "the decoded length, not a header's claim"
        else:
            assert set(row) == {"file", "error"}, row
            assert_clear_message(row["error"], f)
    assert by_file[LONG]["duration"] == pytest.approx(1200, abs=1)


@pytest.mark.parametrize("name", SHORT_NAMES)
def test_predictor_api(fx, predictor, name):
    f = fx[name]
    for source, kw in ((f.path, {"name": f.name}), (f.path.read_bytes(), {"name": f.name})):
        if f.expect is None:
            pred = predictor.predict_file(source, **kw)
            assert_valid_prediction(pred.to_dict(), predictor.labels)
            assert pred.file == f.name
            assert 0.1 < pred.duration < 60
        else:
            with pytest.raises(f.expect) as err:
                predictor.predict_file(source, **kw)
            assert_clear_message(str(err.value), f)


@pytest.mark.parametrize("name", SHORT_NAMES)
def test_audio_load(fx, name):
    """The loader's own outcome: mono float32 at 16 kHz within [-1, 1], or the typed error."""
    f = fx[name]
    if f.expect is None:
        y = audio.load(f.path, name=f.name)
        assert y.dtype == np.float32 and y.ndim == 1
        assert np.isfinite(y).all() and np.abs(y).max() <= 1.0 + 1e-3
        assert 3.5 < y.size / 16000 < 4.5 or name == "truncated_data.wav"
    else:
        with pytest.raises(f.expect) as err:
            audio.load(f.path, name=f.name)
        assert_clear_message(str(err.value), f)


def test_long_file_is_refused_by_the_whole_file_loader_with_a_limit(fx):
    f = fx[LONG]
    from ser_core.errors import TooLongError

    with pytest.raises(TooLongError, match="1200 s long; the limit is 600 s"):
        audio.load(f.path, name=f.name, max_seconds=600)


def test_training_data_loading(fx, predictor):
    """corpus_features reads the good files and reports each bad one, naming it, without aborting."""
    names = sorted(fx)
    fs = corpus_features([str(fx[n].path) for n in names], predictor.cfg, workers=1, use_cache=False, progress=False)
    errors = {Path(p).name: msg for p, msg in fs.errors}
    for i, n in enumerate(names):
        f = fx[n]
        if f.expect is None:
            assert fs.ok[i], f"{n}: {errors.get(n)}"
            assert np.isfinite(fs.x[i]).all()
        else:
            assert not fs.ok[i]
            assert_clear_message(errors[n], f)
    assert len(fs.errors) == sum(f.expect is not None for f in fx.values())


def test_predict_array_edge_cases(predictor, sample_clip):
    y = speech_clip(sample_clip)
    stereo = np.stack([y, y], axis=1)
    ref = predictor.predict_array(y, 16000)
    for arr in (stereo, stereo.T):
        got = predictor.predict_array(arr, 16000)
        assert got.emotion == ref.emotion
        assert np.allclose(list(got.probabilities.values()), list(ref.probabilities.values()), atol=1e-5)
    with pytest.raises(SERError, match="sample values reach"):
        predictor.predict_array((y * 32767).astype(np.int16), 16000)
    with pytest.raises(SERError, match="invalid sample rate"):
        predictor.predict_array(y, -5)
