"""Training: the public face of the training modules, and the training process's entry point.

``python -m ser_core.training RUN_DIR [--resume]`` trains the run whose ``config.json`` is in RUN_DIR
(this is how the app and ``ser train --background`` start it; ``--resume`` continues an interrupted run
from its last finished epoch). The work is split by concern:

- :mod:`ser_core.trainconfig`: the options (:class:`TrainConfig`), declared once
- :mod:`ser_core.prepare`: the manifest, the split's features, augmented copies
- :mod:`ser_core.pipeline`: loss weights, tf.data batches, online augmentation
- :mod:`ser_core.fitting`: compile, callbacks, precision, seed ensembles, stop requests
- :mod:`ser_core.trainrun`: one run end to end (:func:`train`)
- :mod:`ser_core.crossval`: k-fold cross-validation (:func:`cross_validate`)

Features are extracted (cached, on all cores) before TensorFlow is imported.
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

from . import runs, schema
from .crossval import cross_validate
from .errors import SERError
from .fitting import (STEPS_PER_EXECUTION, StopFlag, all_layers, as_float32, average_models, compile_model, fit,
                      install_stop_handlers, precision_policy, recalibrate_batchnorm)
from .jsonio import read_json
from .pipeline import _class_weights, example_weights, make_dataset
from .prepare import Prepared, load_manifest, prepare
from .runs import Logger
from .trainconfig import (ONLINE_AUGS, PRECISIONS, SCHEDULES, TrainConfig, bf16_supported, options,
                          setting_differences)
from .trainrun import predictions_table, save_model, train

_StopFlag = StopFlag     # the name training/build_default.py imports

__all__ = [
    "ONLINE_AUGS", "PRECISIONS", "SCHEDULES", "STEPS_PER_EXECUTION", "Logger", "Prepared", "StopFlag",
    "TrainConfig", "all_layers", "as_float32", "average_models", "bf16_supported", "compile_model",
    "cross_validate", "example_weights", "fit", "install_stop_handlers", "load_manifest", "make_dataset",
    "options", "precision_policy", "predictions_table", "prepare", "recalibrate_batchnorm", "run_from_dir",
    "save_model", "setting_differences", "train", "_class_weights",
]


def run_from_dir(run_dir: Path, *, log_to_file: bool, resume_run: bool = False) -> int:
    """Entry point of a training process: read config.json, train, record the outcome. With ``resume_run``
    an interrupted run of the same settings continues from its last finished epoch (a cross-validation: its
    finished folds are kept too)."""
    run_dir = Path(run_dir)
    log = Logger(run_dir, to_file=log_to_file)
    install_stop_handlers()
    try:
        raw = read_json(run_dir / schema.CONFIG)
        if not isinstance(raw, dict):
            raise SERError(f"{run_dir / schema.CONFIG} is missing or not valid JSON")
        cv = raw.pop(schema.CV_FOLDS, None)
        cfg = TrainConfig.from_dict(raw)
        if cv is not None:
            cross_validate(cfg, run_dir, folds=cv, log=log, resume=resume_run)
        else:
            train(run_dir, cfg, log=log, resume_run=resume_run)
        return 0
    except SERError as exc:
        log(f"failed: {exc}")
        runs.write_status(run_dir, "failed", message=str(exc))
    except (OSError, MemoryError) as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        runs.write_status(run_dir, "failed", message=f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        log(traceback.format_exc())
        runs.write_status(run_dir, "failed", message=f"internal error: {type(exc).__name__}: {exc}")
    return 1


if __name__ == "__main__":
    args = sys.argv[1:]
    resuming = "--resume" in args
    args = [a for a in args if a != "--resume"]
    if len(args) != 1:
        print("usage: python -m ser_core.training RUN_DIR [--resume]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run_from_dir(Path(args[0]), log_to_file=False, resume_run=resuming))
