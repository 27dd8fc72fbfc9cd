"""Training: the public face of the training modules, and the training process's entry point.

``python -m ser_core.training RUN_DIR`` trains the run whose ``config.json`` is in RUN_DIR
(this is how the app and ``ser train --background`` start it). The work is split by concern:

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


def run_from_dir(run_dir: Path, *, log_to_file: bool) -> int:
    """Entry point of a training process: read config.json, train, record the outcome."""
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
            cross_validate(cfg, run_dir, folds=cv, log=log)
        else:
            train(run_dir, cfg, log=log)
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
    if len(sys.argv) != 2:
        print("usage: python -m ser_core.training RUN_DIR", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run_from_dir(Path(sys.argv[1]), log_to_file=False))
