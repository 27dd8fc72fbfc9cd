"""ser_core: the speech-emotion-recognition engine (no UI).

The public API, importable from the package (``from ser_core import TrainConfig, train``):

- training: :class:`TrainConfig` (every option, declared once), :func:`train` (one run),
  :func:`cross_validate`, :class:`Logger`
- prediction: :func:`load_predictor` (a model, ensemble or Whisper-probe folder), :class:`Predictor`,
  :class:`ProbePredictor`
- data and evaluation: :func:`load_dataset`, :func:`make_split`, :func:`evaluate`
- configuration that travels with a model: :class:`FeatureConfig`, :class:`ModelSpec`
- errors: :class:`SERError` and its kinds (:class:`ConfigError`, :class:`AudioError`, ...)
- run and model folders: the modules :mod:`ser_core.runs` and :mod:`ser_core.schema`

The names are loaded on first use, so ``import ser_core`` stays light and never loads
TensorFlow (the Train and Evaluate pages rely on that); submodules import as usual.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the submodule that defines it
_API = {
    "TrainConfig": "trainconfig",
    "train": "trainrun",
    "cross_validate": "crossval",
    "Logger": "runs",
    "load_predictor": "predict",
    "Predictor": "predict",
    "ProbePredictor": "predict",
    "load_dataset": "datasets",
    "make_split": "splits",
    "evaluate": "evaluation",
    "FeatureConfig": "config",
    "ModelSpec": "config",
    "SERError": "errors",
    "ConfigError": "errors",
    "AudioError": "errors",
    "DatasetError": "errors",
    "ModelError": "errors",
    "RunError": "errors",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ser_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value          # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
