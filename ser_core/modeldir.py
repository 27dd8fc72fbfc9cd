"""What a model folder holds, read from the folder alone (no model is loaded, nothing is imported).

A model folder holds ``spec.json`` and ``model.keras`` (and, once exported, ``model.tflite``,
which inference prefers: see :mod:`ser_core.lite`). An ensemble folder holds a ``spec.json``
whose ``arch`` is ``"ensemble"`` and a ``members/`` folder with one such model folder per
member. A probe folder holds a ``spec.json`` whose ``arch`` is ``"whisper_probe"`` and ``probe.npz``,
a linear layer on Whisper's frozen encoder (:mod:`ser_core.whisper`): no Keras network.
Run-folder code, the prediction code and the pages all ask here, so none of them
needs the others to know what a model is.
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import ModelSpec
from .errors import ModelError, SERError
from .schema import ADAPTED, ADAPTED_PROBE, ENSEMBLE_ARCH, LITE, LITE_INT8, MEMBERS, PROBE, PROBE_ARCH, SPEC, WEIGHTS

__all__ = ["ENSEMBLE_ARCH", "LITE", "LITE_INT8", "MEMBERS", "PROBE", "PROBE_ARCH", "SPEC", "WEIGHTS", "is_ensemble",
           "is_probe", "is_model_dir", "member_dirs", "network_dirs", "model_files", "check_runtime"]


def _spec_dict(model_dir: Path) -> dict:
    try:
        d = json.loads((model_dir / SPEC).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return d if isinstance(d, dict) else {}


def is_ensemble(model_dir: Path | str) -> bool:
    d = Path(model_dir)
    return _spec_dict(d).get("arch") == ENSEMBLE_ARCH and (d / MEMBERS).is_dir()


def is_probe(model_dir: Path | str) -> bool:
    """A linear probe on Whisper's encoder (``arch`` ``"whisper_probe"``): no Keras network in it."""
    return _spec_dict(Path(model_dir)).get("arch") == PROBE_ARCH


def check_runtime(model_dir: Path | str, runtime: str) -> None:
    """Refuse a forced ``--runtime`` (lite, int8, keras) for a probe on Whisper's encoder: those pick among a Keras
    network's exports, and a probe has no network (``auto`` is its only runtime: the encoder runs as its spec says)."""
    if runtime != "auto" and is_probe(model_dir):
        raise ModelError(f"{model_dir} is a probe on Whisper's encoder: it has no network exports, so --runtime "
                         f"{runtime} does not apply (leave --runtime out; its encoder runs as the probe's spec records)")


def member_dirs(model_dir: Path | str) -> list[Path]:
    """An ensemble's member folders, in the order its spec lists them."""
    spec = ModelSpec.load(Path(model_dir) / SPEC)
    names = spec.extra.get("members") or []
    if not names:
        raise ModelError(f"ensemble {model_dir} lists no members")
    return [Path(model_dir) / MEMBERS / str(n) for n in names]


def network_dirs(model_dir: Path | str) -> list[Path]:
    """The folders that hold one Keras network each: an ensemble's members, the folder itself, or none (a probe)."""
    if is_probe(model_dir):
        return []
    return member_dirs(model_dir) if is_ensemble(model_dir) else [Path(model_dir)]


def model_files(model_dir: Path | str) -> list[Path]:
    """The files a model folder's predictions depend on (for change stamps); exported lite
    files and an adapted probe count once they exist, so exporting a model or shipping its adapted mode in
    place is seen as a change."""
    d = Path(model_dir)
    files = [d / SPEC] + ([d / PROBE] if is_probe(d) else [])
    files += [d / f for f in (ADAPTED, ADAPTED_PROBE) if (d / f).exists()]    # the adapted mode, once shipped
    for m in network_dirs(d):
        files += [m / SPEC, m / WEIGHTS] + [m / f for f in (LITE, LITE_INT8) if (m / f).exists()]
    return files


def is_model_dir(model_dir: Path | str) -> bool:
    try:
        return all(f.exists() for f in model_files(model_dir))
    except SERError:
        return False
