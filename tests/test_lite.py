"""The lean runtime: LiteRT exports give the Keras answers, and `ser predict` needs no TensorFlow."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ser_core import lite
from ser_core.config import ModelSpec
from ser_core.errors import ModelError
from ser_core.modeldir import LITE, network_dirs
from ser_core.predict import Predictor, load_predictor

from conftest import DEFAULT_MODEL, ENSEMBLE_MODEL, ROOT, SAMPLES

TOLERANCE = 1e-4


def vectors(pred, labels):
    return np.array([pred.probabilities[lab] for lab in labels]), \
        np.array([[w.probabilities[lab] for lab in labels] for w in pred.windows])


def test_the_ravdess_ensemble_on_litert_equals_keras_on_every_sample_clip():
    fast, slow = load_predictor(ENSEMBLE_MODEL), load_predictor(ENSEMBLE_MODEL, runtime="keras")
    assert {m.runtime.kind for m in fast.members} == {"lite"}
    assert {m.runtime.kind for m in slow.members} == {"keras"}
    clips = sorted(SAMPLES.glob("*.flac"))
    assert len(clips) == 32
    worst = 0.0
    for clip in clips:
        a, b = fast.predict_file(clip), slow.predict_file(clip)
        assert a.emotion == b.emotion
        (ca, wa), (cb, wb) = vectors(a, fast.labels), vectors(b, fast.labels)
        worst = max(worst, float(np.abs(ca - cb).max()), float(np.abs(wa - wb).max()))
    assert worst <= TOLERANCE


def test_training_exports_and_a_stale_export_falls_back_to_keras(tiny_model, sample_clip, tmp_path):
    assert lite.fresh(tiny_model)                          # written at the end of training
    on_lite, on_keras = Predictor(tiny_model), Predictor(tiny_model, runtime="keras")
    assert on_lite.runtime.kind == "lite" and on_keras.runtime.kind == "keras"
    a, b = on_lite.predict_file(sample_clip), on_keras.predict_file(sample_clip)
    assert np.abs(vectors(a, a.probabilities)[0] - vectors(b, a.probabilities)[0]).max() <= TOLERANCE
    stale = tmp_path / "stale"
    shutil.copytree(tiny_model, stale)
    spec = ModelSpec.load(stale / "spec.json")
    record = {**spec.extra[lite.SPEC_KEY], "keras_sha256": "0" * 64}   # as if model.keras changed since
    ModelSpec.from_dict({**spec.to_dict(), "extra": {**spec.extra, lite.SPEC_KEY: record}}).save(stale / "spec.json")
    assert not lite.fresh(stale)
    assert Predictor(stale).runtime.kind == "keras"
    with pytest.raises(ModelError, match="ser export"):
        Predictor(stale, runtime="lite")


def test_ser_export_writes_a_checked_lite_file_for_every_network(tiny_model, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model, plain)
    (plain / LITE).unlink()
    assert not lite.fresh(plain) and Predictor(plain).runtime.kind == "keras"
    r = subprocess.run([sys.executable, "-m", "ser_core", "export", str(plain)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert lite.fresh(plain)
    record = ModelSpec.load(plain / "spec.json").extra[lite.SPEC_KEY]
    assert record["max_abs_diff"] <= TOLERANCE and record["file"] == LITE
    bad = subprocess.run([sys.executable, "-m", "ser_core", "export", str(tmp_path / "nope")], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "is not a model folder" in bad.stderr and "Traceback" not in bad.stderr
    probe = tmp_path / "default"          # the shipped default, a probe on Whisper's encoder: nothing to export
    shutil.copytree(DEFAULT_MODEL, probe)
    r = subprocess.run([sys.executable, "-m", "ser_core", "export", str(probe)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "no network to export" in r.stdout
    assert sorted(p.name for p in probe.iterdir()) == sorted(p.name for p in DEFAULT_MODEL.iterdir())


def test_every_network_of_the_ravdess_ensemble_has_a_current_export():
    assert all(lite.fresh(d) for d in network_dirs(ENSEMBLE_MODEL)) and lite.fresh_model(ENSEMBLE_MODEL)


def test_ser_predict_imports_neither_tensorflow_nor_pandas(sample_clip):
    """The cold-start path, a clip in a fresh process: neither the shipped default (the probe on Whisper's encoder)
    nor the RAVDESS ensemble on LiteRT imports TensorFlow, Keras, pandas or librosa (with its numba: the probe's
    front end, ``ser_core.whisper.log_mel``, redoes librosa's STFT and mel filters without it)."""
    code = ("import json, sys; from ser_core.cli import main; rc = main(['predict', '--json', *sys.argv[1:]]); "
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'pandas', 'librosa', 'numba') if m in sys.modules); "
            "print(json.dumps(heavy)); sys.exit(rc)")
    for model in ([], ["--model", str(ENSEMBLE_MODEL)]):
        r = subprocess.run([sys.executable, "-c", code, *model, str(sample_clip)], capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr
        result, heavy = r.stdout.strip().splitlines()
        assert json.loads(heavy) == [], model
        assert json.loads(result)["emotion"] == "angry"


def test_the_int8_copy_of_the_ensemble_answers_like_the_float_model_and_is_never_chosen_by_itself():
    """``--runtime int8``: the RAVDESS ensemble's quantised copy gives the same answer on every sample clip,
    probabilities within 0.02 of the float export's; ``auto`` keeps the float export."""
    assert all(lite.fresh(d, "int8") for d in network_dirs(ENSEMBLE_MODEL)) and lite.fresh_model(ENSEMBLE_MODEL, "int8")
    auto, int8 = load_predictor(ENSEMBLE_MODEL), load_predictor(ENSEMBLE_MODEL, runtime="int8")
    assert {m.runtime.kind for m in auto.members} == {"lite"}
    assert {m.runtime.kind for m in int8.members} == {"int8"}
    worst = 0.0
    for clip in sorted(SAMPLES.glob("*.flac")):
        a, b = auto.predict_file(clip), int8.predict_file(clip)
        assert (a.emotion, a.best) == (b.emotion, b.best)
        worst = max(worst, float(np.abs(vectors(a, auto.labels)[0] - vectors(b, auto.labels)[0]).max()))
    assert 0 < worst <= 0.02                       # quantised: close, not equal


def test_ser_export_int8_writes_a_second_checked_copy_and_int8_needs_it(tiny_model, sample_clip, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model, plain)
    (plain / lite.LITE_INT8).unlink(missing_ok=True)
    with pytest.raises(ModelError, match="ser export --int8"):
        Predictor(plain, runtime="int8")
    r = subprocess.run([sys.executable, "-m", "ser_core", "export", "--int8", str(plain)], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert lite.fresh(plain, "int8") and lite.fresh(plain)          # the float export is kept as it was
    extra = ModelSpec.load(plain / "spec.json").extra
    record = extra[lite.VARIANTS["int8"].spec_key]
    assert record["file"] == lite.LITE_INT8 and "int8" in record["quantisation"]
    assert record["max_abs_diff"] <= lite.INT8_TOLERANCE and extra[lite.SPEC_KEY]["max_abs_diff"] <= TOLERANCE
    a, b = Predictor(plain).predict_file(sample_clip), Predictor(plain, runtime="int8").predict_file(sample_clip)
    assert np.abs(vectors(a, a.probabilities)[0] - vectors(b, a.probabilities)[0]).max() <= 0.05
    assert lite.precision("int8") == "int8" and {lite.precision(r) for r in ("auto", "lite", "keras")} == {"float32"}


def test_recurrent_networks_are_exported_unrolled_with_the_keras_outputs(tmp_path):
    """A GRU exported as LiteRT's WHILE loop leaves its steps in float32 in the int8 copy, run op by op;
    unrolled (session 28) the steps are quantised like the rest. Both exports of the RAVDESS ensemble's
    first ``ser_crnn`` come out without a loop, the float one still equal to the looped export it replaces."""
    from ai_edge_litert.interpreter import Interpreter

    net = tmp_path / "ser_crnn"
    shutil.copytree(network_dirs(ENSEMBLE_MODEL)[0], net)
    assert ModelSpec.load(net / "spec.json").arch == "ser_crnn"
    looped = lite.LiteRuntime(net / LITE)
    assert "WHILE" in {op["op_name"] for op in Interpreter(str(net / LITE))._get_ops_details()}
    shape = looped.input_shape
    for f in (LITE, lite.LITE_INT8):
        (net / f).unlink()
    lite.export(net, log=None)
    lite.export(net, int8=True, log=None)
    for f in (LITE, lite.LITE_INT8):
        ops = {op["op_name"] for op in Interpreter(str(net / f))._get_ops_details()}
        assert "WHILE" not in ops and "FULLY_CONNECTED" in ops, f
    x = np.random.default_rng(3).standard_normal((6, *shape)).astype(np.float32)
    assert np.abs(lite.LiteRuntime(net / LITE)(x) - looped(x)).max() <= 1e-6
    assert lite.fresh(net) and lite.fresh(net, "int8")
