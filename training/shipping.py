"""Installing a built model: its calibration fitted on out-of-fold predictions, and the folder swapped into
``models/<name>`` in one rename, so it is never half-written. Shared by ``build_default.py`` (networks and
probes), ``whisper_probe.py`` and ``pair.py``."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import calibration  # noqa: E402
from ser_core.config import ModelSpec, models_dir  # noqa: E402


def store_calibration(model_dir: Path, calib: calibration.Calibration) -> None:
    """Write the calibration into the model folder's spec.json (atomically, like every spec)."""
    spec = ModelSpec.load(model_dir / "spec.json")
    extra = {**spec.extra, calibration.SPEC_KEY: calib.to_dict()}
    dataclasses.replace(spec, extra=extra).save(model_dir / "spec.json")


def calibrate(cv_dir: Path, loco_dir: Path | None) -> tuple[calibration.Calibration, dict]:
    """The model's calibration from out-of-fold predictions, and the report of what it does
    (pooled and per corpus; for leave-one-corpus-out, each held-out corpus calibrated with a
    temperature from the other corpora's out-of-fold predictions only)."""
    import pandas as pd

    oof = pd.read_csv(cv_dir / "predictions.csv")
    calib = calibration.fit_table(oof, fitted_on=f"out-of-fold predictions of {cv_dir.name} ({len(oof)} clips)")
    report = {"cv": calibration.summary(oof, calib), "cv_cross_fitted_ece": calib.ece_after}
    if loco_dir is not None:
        report["loco"] = calibration.transfer_summary(pd.read_csv(loco_dir / "predictions.csv"), oof,
                                                      threshold=calib.threshold)
    return calib, report


def install(model_src: Path | None, cv_dir: Path, metrics: dict, builder,
            calib: calibration.Calibration | None = None, loco_dir: Path | None = None,
            name: str = "default") -> Path:
    """Write the new models/<name> under a temporary name, then swap it in."""
    target = models_dir() / name
    tmp = models_dir() / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if model_src is not None:
        shutil.copytree(model_src, tmp)
    else:
        builder(tmp)
    if calib is not None:
        store_calibration(tmp, calib)
    if loco_dir is not None:
        shutil.copy2(loco_dir / "predictions.csv", tmp / "loco_predictions.csv")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    shutil.copy2(cv_dir / "predictions.csv", tmp / "predictions.csv")
    if (cv_dir / "robustness.json").exists():
        shutil.copy2(cv_dir / "robustness.json", tmp / "robustness.json")
    old = models_dir() / f".{name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
