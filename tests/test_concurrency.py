"""One Predictor shared by many threads: same answers as serial calls, model loaded once; unsafe models refused."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ser_core.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("runtime", ["keras", "lite"])
def test_threads_match_serial_and_load_once(tiny_model, samples_dir, monkeypatch, runtime):
    from ser_core.predict import Predictor
    from ser_core.tf_setup import keras

    loads = []
    real_load = keras().models.load_model

    def counting_load(*args, **kw):
        loads.append(args[0])
        return real_load(*args, **kw)

    monkeypatch.setattr(keras().models, "load_model", counting_load)
    predictor = Predictor(tiny_model, runtime=runtime)
    clips = sorted(samples_dir.glob("*.flac"))[:16]
    serial = [predictor.predict_file(c) for c in clips]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(predictor.predict_file, clips))
        # each clip twice at once too, so threads also collide on the same input
        doubled = list(pool.map(predictor.predict_file, clips + clips))
    assert len(loads) == (1 if runtime == "keras" else 0)       # LiteRT needs no Keras model at all
    for got in (threaded, doubled[:16], doubled[16:]):
        for s, t in zip(serial, got):
            assert t.file == s.file and t.emotion == s.emotion
            assert np.allclose([t.probabilities[k] for k in predictor.labels],
                               [s.probabilities[k] for k in predictor.labels], atol=1e-6)


@pytest.fixture(scope="module")
def lambda_model(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """A model folder whose model.keras holds a Lambda layer (arbitrary code) that writes a marker when run."""
    from ser_core.config import ModelSpec
    from ser_core import features
    from ser_core.tf_setup import keras

    k = keras()
    folder = tmp_path_factory.mktemp("lambda-model")
    marker = folder / "LAMBDA_RAN"
    spec = ModelSpec.load(tiny_model / "spec.json")
    shape = features.input_shape(spec.features)

    inp = k.Input(shape)
    code = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).write_text('ran'), t)[1]")
    x = k.layers.Lambda(code)(inp)
    out = k.layers.Dense(len(spec.labels), activation="softmax")(k.layers.Flatten()(x))
    k.Model(inp, out).save(folder / "model.keras")
    shutil.copy(tiny_model / "spec.json", folder / "spec.json")
    marker.unlink(missing_ok=True)      # building the model ran it once; only loading matters below
    return folder, marker


def test_lambda_model_is_refused_not_executed(lambda_model):
    from ser_core.predict import Predictor

    folder, marker = lambda_model
    with pytest.raises(ModelError) as err:
        Predictor(folder)
    msg = str(err.value)
    assert "\n" not in msg and "could not be loaded safely" in msg and "arbitrary code" in msg
    assert not marker.exists(), "the Lambda's code ran"
    # control: the same file loaded unsafely does run the embedded code, so the marker is a real witness
    from ser_core.tf_setup import keras

    keras().models.load_model(folder / "model.keras", safe_mode=False)
    assert marker.read_text() == "ran"
    marker.unlink()


def test_lambda_model_through_the_cli(lambda_model, sample_clip):
    folder, marker = lambda_model
    proc = subprocess.run([sys.executable, "-m", "ser_core", "predict", "--json", "--model", str(folder),
                           str(sample_clip)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "could not be loaded safely" in errors[0]
    assert proc.stdout == ""
    assert not marker.exists()


def test_damaged_model_files_are_model_errors(tiny_model, tmp_path):
    from ser_core.predict import Predictor

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.keras").write_bytes(b"PK\x03\x04 not really a keras archive")
    with pytest.raises(ModelError, match="could not be loaded safely"):
        Predictor(broken)
    spec_bad = tmp_path / "spec-bad"
    shutil.copytree(tiny_model, spec_bad)
    (spec_bad / "spec.json").write_text(json.dumps({"arch": "x"}))
    with pytest.raises(ModelError, match="spec is malformed"):
        Predictor(spec_bad)
    with pytest.raises(ModelError, match="not found"):
        Predictor(tmp_path / "nowhere")


def test_pinned_process_sizes_its_threads_to_its_cores():
    """A job pinned to one core (``taskset -c 0``, a cpuset) runs TensorFlow, tf.data and worker pools on one
    thread: two trainings pinned to the two cores of this machine then share it without oversubscription."""
    probe = ("from ser_core.machine import usable_cpus\n"
             "from ser_core.tf_setup import keras\n"
             "keras()\n"
             "import tensorflow as tf\n"
             "print(usable_cpus(), tf.config.threading.get_intra_op_parallelism_threads())\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert out.stdout.split() == ["1", "1"]


_FAULTS_PROBE = """
import resource, sys
import numpy as np
mode = sys.argv[1]
if mode == "keep":
    from ser_core.machine import keep_freed_memory
    assert keep_freed_memory()
elif mode == "predictor":
    from ser_core.predict import load_predictor
    load_predictor(sys.argv[2], runtime="lite")
def task():
    held = [np.ones(1 << 18, np.float32) for _ in range(16)]    # a task's 16 clips, 1 MiB each, held together
    return len(held)
task()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    task()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20 / 16)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_by_scoring_processes():
    """A scoring process keeps the memory it frees. Sixteen 1 MiB arrays held together and freed together, as a
    task's clips are, twenty times: a plain process returns them to the kernel each time and takes about 256
    page faults an array to get them back; one that keeps its freed memory (as loading a predictor makes it)
    takes none (the RAVDESS ensemble on LiteRT, as a batch worker loads it)."""
    from conftest import ENSEMBLE_MODEL

    def faults(*args) -> float:
        out = subprocess.run([sys.executable, "-c", _FAULTS_PROBE, *args], cwd=ROOT, capture_output=True,
                             text=True, check=True)
        return float(out.stdout.split()[-1])
    assert faults("plain") > 200
    assert faults("keep") < 1
    assert faults("predictor", str(ENSEMBLE_MODEL)) < 1
