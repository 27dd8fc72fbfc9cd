"""The novelty gate: a recording unlike every recording the model learnt from is answered "not sure",
whatever the confidence; the signature, the distance and the stored gate behave as documented."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ser_core import audio, novelty
from ser_core.calibration import NOT_SURE
from ser_core.config import ModelSpec
from ser_core.errors import ModelError
from ser_core.predict import Predictor, gate_network, load_predictor

from conftest import ENSEMBLE_MODEL, ROOT


def with_gate(src, dest, threshold: float, samples_dir):
    """A copy of a model with a gate fitted on the bundled samples' signatures and the given threshold."""
    shutil.copytree(src, dest)
    net = Predictor(dest)
    sigs = np.array([net.clip_signature(audio.load(f)) for f in sorted(samples_dir.glob("*.flac"))])
    gate = novelty.make_gate(sigs, threshold, net.cfg, fitted_on="test samples", threshold_rule="test")
    spec = ModelSpec.load(dest / "spec.json")
    spec.extra[novelty.SPEC_KEY] = gate.save(dest)
    spec.save(dest / "spec.json")
    return dest


def test_signature_leaves_out_padding_and_streams_like_a_whole():
    rng = np.random.default_rng(0)
    x = rng.normal(-30, 8, size=(3, 16, 40)).astype(np.float32)
    padded = x.copy()
    padded[:, :, 30:] = -80.0                          # a short clip's padding: every band at the floor
    padded[:, :, :30] = np.maximum(padded[:, :, :30], -79.0)
    sig = novelty.signature(padded)
    want = padded[:, :, :30].astype(np.float64).transpose(1, 0, 2).reshape(16, -1)
    np.testing.assert_allclose(sig, np.concatenate([want.mean(axis=1), want.std(axis=1)]), rtol=1e-9)
    streamed = novelty.Moments().add(padded[:1]).add(padded[1:])
    np.testing.assert_allclose(streamed.signature(), sig, rtol=1e-9)
    assert novelty.signature(np.full((2, 16, 40), -80.0)) is None          # no frame of sound: no signature


def test_novelty_is_the_mahalanobis_distance_under_the_shrunk_covariance():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(1)
    train = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    gate = novelty.make_gate(train, 3.0, None, fitted_on="t", threshold_rule="t")
    lw = LedoitWolf().fit(train)
    probe = rng.normal(size=(5, 6)) * 3
    d = probe - lw.location_
    want = np.sqrt(np.einsum("ij,jk,ik->i", d, np.linalg.inv(lw.covariance_), d))
    np.testing.assert_allclose(gate.novelty(probe), want, rtol=1e-8)
    assert gate.novelty(lw.location_) == pytest.approx(0.0, abs=1e-9)
    assert not gate.unfamiliar(None) and gate.unfamiliar(3.01) and not gate.unfamiliar(2.99)


def test_a_stored_gate_answers_not_sure_and_says_why(tiny_model, samples_dir, sample_clip, tmp_path):
    plain = Predictor(tiny_model).predict_file(sample_clip)
    assert plain.novelty is None and "novelty" not in plain.to_dict()       # no gate: as before
    strict = Predictor(with_gate(tiny_model, tmp_path / "strict", 0.0, samples_dir))
    p = strict.predict_file(sample_clip)
    assert p.unfamiliar and p.not_sure and p.emotion == NOT_SURE and p.novelty > 0
    assert p.best == plain.best and p.probabilities == pytest.approx(plain.probabilities)
    assert p.summary() == f"not sure: {plain.top2[0]} or {plain.top2[1]}"
    lax = Predictor(with_gate(tiny_model, tmp_path / "lax", 1e9, samples_dir))
    q = lax.predict_file(sample_clip)
    assert not q.unfamiliar and q.emotion == plain.emotion and q.novelty == pytest.approx(p.novelty)
    # the stored gate is the one fitted: same novelty through the predictor as from the signature
    sig = strict.clip_signature(audio.load(sample_clip))
    assert p.novelty == pytest.approx(float(strict.gate.novelty(sig)), rel=1e-9)


def test_ser_predict_json_says_unfamiliar(tiny_model, samples_dir, sample_clip, tmp_path):
    model = with_gate(tiny_model, tmp_path / "strict", 0.0, samples_dir)
    r = subprocess.run([sys.executable, "-m", "ser_core", "predict", "--json", "--model", str(model),
                        str(sample_clip)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["emotion"] == NOT_SURE and d["unfamiliar"] is True and d["novelty"] > 0
    assert sum(d["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_a_long_streamed_file_gets_a_signature_too(tiny_model, samples_dir, tmp_path, monkeypatch):
    from ser_core import predict

    model = with_gate(tiny_model, tmp_path / "strict", 0.0, samples_dir)
    clips = [audio.load(f) for f in sorted(samples_dir.glob("*.flac"))[:6]]
    path = tmp_path / "long.wav"
    sf.write(path, np.concatenate(clips), 16000, subtype="PCM_16")
    monkeypatch.setattr(predict, "STREAM_ABOVE_SECONDS", 5.0)       # stream this 20 s file
    p = Predictor(model).predict_file(path)
    assert p.novelty is not None and p.unfamiliar and p.emotion == NOT_SURE


def test_the_ensemble_signs_with_its_gate_network(samples_dir, sample_clip):
    pred = load_predictor(ENSEMBLE_MODEL)
    net = gate_network(pred)
    assert net.cfg.kind == "logmel"
    sigs = np.array([net.clip_signature(audio.load(f)) for f in sorted(samples_dir.glob("*.flac"))])
    pred.use_gate(novelty.make_gate(sigs, 0.0, net.cfg, fitted_on="t", threshold_rule="t"))
    p = pred.predict_file(sample_clip)
    assert p.novelty == pytest.approx(float(pred.gate.novelty(net.clip_signature(audio.load(sample_clip)))))
    assert p.unfamiliar and p.emotion == NOT_SURE
    many = pred.predict_many([str(sample_clip)])[0]
    assert many.novelty == pytest.approx(p.novelty) and many.emotion == NOT_SURE


def test_a_damaged_gate_is_a_model_error(tiny_model, samples_dir, tmp_path):
    model = with_gate(tiny_model, tmp_path / "g", 1.0, samples_dir)
    (model / "novelty.npz").write_bytes(b"not an archive")
    with pytest.raises(ModelError, match="novelty gate"):
        Predictor(model)


def test_ser_batch_keeps_the_gate_answer_past_bad_files(tiny_model, samples_dir, tmp_path):
    """Parts whose rows are all errors carry no novelty column; the assembled results still hold every file
    once, with the gated answer where there was speech."""
    from ser_core import batch

    model = with_gate(tiny_model, tmp_path / "strict", 0.0, samples_dir)
    folder = tmp_path / "in"
    folder.mkdir()
    clips = sorted(samples_dir.glob("*.flac"))[:3]
    for f in clips:
        shutil.copy(f, folder / f.name)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x00" * 40)
    sf.write(folder / "silent.wav", np.zeros(16000 * 3, np.float32), 16000)
    res = batch.run_batch([str(folder)], tmp_path / "out", model, engine="local", workers=1, chunk=1,
                          part_files=1, progress=False)
    import pandas as pd

    table = pd.read_parquet(res.paths["results"]).set_index("file")
    assert len(table) == 5 and res.errors == 2
    for f in clips:
        row = table.loc[str(folder / f.name)]
        assert row["emotion"] == NOT_SURE and bool(row["unfamiliar"]) and row["novelty"] > 0
    assert table.loc[str(folder / "corrupt.wav"), "error"] and table.loc[str(folder / "silent.wav"), "error"]


def test_the_predict_page_says_the_recording_is_unfamiliar(tiny_model, samples_dir, sample_clip, tmp_path,
                                                          monkeypatch):
    from streamlit.testing.v1 import AppTest

    models = tmp_path / "models"
    models.mkdir()
    with_gate(tiny_model, models / "gated", 0.0, samples_dir)
    (models / "active.json").write_text(json.dumps({"model": "gated"}))
    monkeypatch.setenv("SER_MODELS_DIR", str(models))
    monkeypatch.setenv("SER_RUNS_DIR", str(tmp_path / "runs"))
    want = Predictor(models / "gated").predict_file(sample_clip)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.segmented_control(key="p_source").set_value("Upload").run()
    at.file_uploader(key="p_upload").set_value((sample_clip.name, sample_clip.read_bytes(), "audio/flac")).run()
    assert not at.exception, at.exception
    shown = [m.value for m in at.main.metric if m.label == "Emotion"]
    assert shown == [f"Not sure: {want.top2[0]} or {want.top2[1]}"]
    captions = " ".join(c.value for c in at.caption)
    assert "unlike every recording the model learnt from" in captions and f"{want.novelty:.1f}" in captions
