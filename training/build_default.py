"""Build the shipped default model in models/default.

1. 6-fold speaker-independent cross-validation (EmoBox folds) of the recipe in
   training/default.json: metrics.json and out-of-fold predictions.csv.
2. The final model: the same recipe trained on all 24 actors for the median
   number of epochs the folds' early stopping chose (no test actor exists any
   more, so nothing is selected on test data).
3. models/default is replaced in one rename, so it is never half-written.

    python training/build_default.py [--cv-dir DIR]   (reuse a finished cv)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import runs  # noqa: E402
from ser_core.config import models_dir  # noqa: E402
from ser_core.training import (Logger, TrainConfig, _StopFlag, cross_validate, install_stop_handlers,  # noqa: E402
                               train)

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(HERE / "default.json"))
    ap.add_argument("--cv-dir", help="a finished cross-validation of the same recipe to reuse")
    args = ap.parse_args()
    install_stop_handlers()
    cfg = TrainConfig.from_dict(json.loads(Path(args.recipe).read_text())).resolved()
    if args.cv_dir:
        cv_dir = Path(args.cv_dir)
        metrics = json.loads((cv_dir / "metrics.json").read_text())
    else:
        cv_dir = runs.new_run_dir(f"cv-default-{cfg.arch}")
        metrics = cross_validate(cfg, cv_dir, log=Logger(cv_dir, to_file=True))
    if _StopFlag.requested or len(metrics.get("folds", [])) != 6:
        print("cross-validation did not complete; models/default is left as it was", file=sys.stderr)
        return 1
    epochs = sorted(f["best_epoch"] for f in metrics["folds"] if f.get("best_epoch"))
    final_epochs = epochs[len(epochs) // 2] if epochs else cfg.epochs
    final_cfg = dataclasses.replace(cfg, protocol="all", n_val_speakers=0, epochs=final_epochs)
    final_dir = runs.new_run_dir(f"final-{cfg.arch}")
    train(final_dir, final_cfg, log=Logger(final_dir, to_file=True))
    if _StopFlag.requested:
        print("final training was stopped; models/default is left as it was", file=sys.stderr)
        return 1

    target = models_dir() / "default"
    tmp = models_dir() / ".default.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(final_dir / "model", tmp)
    metrics["final_model"] = {"trained_on": "all 24 RAVDESS actors", "epochs": final_epochs,
                              "epochs_rule": "median of the folds' early-stopping epochs",
                              "recipe": cfg.to_dict()}
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    shutil.copy2(cv_dir / "predictions.csv", tmp / "predictions.csv")
    if (cv_dir / "robustness.json").exists():
        shutil.copy2(cv_dir / "robustness.json", tmp / "robustness.json")
    old = models_dir() / ".default.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    print(f"models/default: cv accuracy {metrics['accuracy']:.3f}, UAR {metrics['uar']:.3f}; "
          f"final model trained {final_epochs} epochs on all actors (cv in {cv_dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
