"""Shared fixtures: isolated state folders, the bundled sample clips, a tiny trained model."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
DEFAULT_MODEL = ROOT / "models" / "default"      # the shipped default: a linear probe on Whisper's encoder
ENSEMBLE_MODEL = ROOT / "models" / "ravdess"    # the RAVDESS-only ensemble of five Keras networks (default until 36)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def training_module(name: str):
    """``training/<name>.py`` imported as the module ``name`` (the scripts there import one another by name)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, ROOT / "training" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session", autouse=True)
def isolated_state(tmp_path_factory):
    """Runs and the feature cache go to a temporary folder, never into the checkout."""
    base = tmp_path_factory.mktemp("state")
    old = {k: os.environ.get(k) for k in ("SER_RUNS_DIR", "SER_CACHE_DIR")}
    os.environ["SER_RUNS_DIR"] = str(base / "runs")
    os.environ["SER_CACHE_DIR"] = str(base / "cache")
    yield base
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def sample_clip() -> Path:
    """An angry clip (strong intensity) of actor 01."""
    return SAMPLES / "03-01-05-02-01-01-01.flac"


@pytest.fixture(scope="session")
def corpus_dirs() -> dict[str, Path]:
    """The corpora under the data root (SER_DATA_DIR: a folder of corpora, or RAVDESS itself; CI sets it)."""
    from ser_core import datasets

    return datasets.corpus_dirs()


@pytest.fixture(scope="session")
def ravdess_dir(corpus_dirs) -> Path | None:
    """The full RAVDESS corpus when the data root holds it, else None."""
    if "ravdess" in corpus_dirs:
        return corpus_dirs["ravdess"]
    local = ROOT / "data" / "ravdess"
    return local if local.is_dir() else None


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A real (tiny) training run on the bundled samples: actor 01 is the test speaker."""
    from ser_core.training import Logger, TrainConfig, train

    run_dir = tmp_path_factory.mktemp("tiny-run")
    cfg = TrainConfig(dataset=f"ravdess:{SAMPLES}", arch="seed000_cnn", test_speakers=("ravdess-01",),
                      n_val_speakers=1, epochs=3, batch_size=8, workers=1, precision="float32")
    train(run_dir, cfg, log=Logger(run_dir, to_file=True, echo=False))
    return run_dir


@pytest.fixture(scope="session")
def tiny_model(tiny_run) -> Path:
    return tiny_run / "model"


@pytest.fixture(scope="session")
def predictor(tiny_model):
    from ser_core.predict import Predictor

    return Predictor(tiny_model)


@pytest.fixture()
def data_root(tmp_path, samples_dir, monkeypatch):
    """A root with three corpora made of the bundled clips under other corpora's names."""
    clips = sorted(samples_dir.glob("*.flac"))
    shutil.copytree(samples_dir, tmp_path / "RAVDESS" / "Actor_01", ignore=shutil.ignore_patterns("*.md"))
    emovo = tmp_path / "emovo" / "f1"
    emovo.mkdir(parents=True)
    for clip, name in zip(clips, ("neu-f1-b1", "gio-f1-b1", "tri-f1-b1")):
        shutil.copy(clip, emovo / f"{name}.flac")
    ased = tmp_path / "ased" / "04Sad"
    ased.mkdir(parents=True)
    # speaker 09: one of its three names gives the other gender (as five real ASED speakers do)
    for clip, name in zip(clips, ("s4-01-01-01-09", "s4-02-01-01-09", "s4-03-01-02-09")):
        shutil.copy(clip, ased / f"{name}.flac")
    (tmp_path / "notes").mkdir()
    monkeypatch.setenv("SER_DATA_DIR", str(tmp_path))
    return tmp_path
