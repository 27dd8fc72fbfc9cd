"""Build the shipped default model in models/default.

The recipe (training/default.json) lists one or more members. For each member:

1. 6-fold speaker-independent cross-validation (EmoBox folds): metrics.json and
   out-of-fold predictions.csv (or reuse a finished one with --member-cv ARCH=DIR;
   ARCH@SEED when two members share an architecture, N=DIR for the recipe's N-th member).
2. The final model: the same recipe trained on all 24 actors for the median number
   of epochs the folds chose (their last epoch when a recipe trains without a
   validation split; no test actor exists any more, so nothing is selected on test data),
   or a finished one given with --member-final ARCH=DIR.

With several members, their cross-validations are combined into the ensemble's
(`ser ensemble cv`: the mean of the members' out-of-fold probabilities, fold by fold)
and the final models into one ensemble folder. models/default is replaced in one
rename, so it is never half-written.

    python training/build_default.py [--member-cv ser_crnn=runs/cv-... ...]
Then `ser robustness <ensemble cv dir>` and `python training/build_default.py --robustness <dir>`
copy the channel-shift results next to the model.
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

from ser_core import ensemble, runs  # noqa: E402
from ser_core.config import models_dir  # noqa: E402
from ser_core.training import (Logger, TrainConfig, _StopFlag, cross_validate, install_stop_handlers,  # noqa: E402
                               setting_differences, train)

HERE = Path(__file__).resolve().parent


def member_recipes(recipe: dict) -> list[TrainConfig]:
    items = recipe["members"] if "members" in recipe else [recipe]
    return [TrainConfig.from_dict(item).resolved() for item in items]


def final_epochs(cfg: TrainConfig, metrics: dict) -> int:
    epochs = sorted(f["best_epoch"] for f in metrics.get("folds", []) if f.get("best_epoch"))
    return epochs[len(epochs) // 2] if epochs else cfg.epochs


def reused(position: int, cfg: TrainConfig, given: dict[str, str]) -> Path | None:
    """The folder given for the recipe's ``position``-th member (from 1): keyed by that number, ARCH@SEED,
    or just ARCH. A key that fits a member trained on other settings is refused later by check_reused."""
    for key in (str(position), f"{cfg.arch}@{cfg.seed}", cfg.arch):
        if key in given:
            return Path(given[key])
    return None


def build_member(cfg: TrainConfig, reuse: Path | None, final: Path | None) -> tuple[Path, Path, dict] | None:
    """(cv dir, final run dir, cv metrics) of one member, or None when stopped or incomplete."""
    if reuse:
        cv_dir = reuse
        check_reused(cv_dir, cfg, "metrics.json", "cross-validation")
        metrics = json.loads((cv_dir / "metrics.json").read_text())
    else:
        cv_dir = runs.new_run_dir(f"cv-default-{cfg.arch}")
        metrics = cross_validate(cfg, cv_dir, log=Logger(cv_dir, to_file=True))
    if _StopFlag.requested or len(metrics.get("folds", [])) != 6:
        print(f"cross-validation of {cfg.arch} did not complete; models/default is left as it was", file=sys.stderr)
        return None
    final_cfg = dataclasses.replace(cfg, protocol="all", n_val_speakers=0, epochs=final_epochs(cfg, metrics))
    if final is not None:
        check_reused(final, final_cfg, "model", "all-actor run")
        return cv_dir, final, metrics
    final_dir = runs.new_run_dir(f"final-{cfg.arch}")
    train(final_dir, final_cfg, log=Logger(final_dir, to_file=True))
    if _StopFlag.requested:
        print("final training was stopped; models/default is left as it was", file=sys.stderr)
        return None
    return cv_dir, final_dir, metrics


def check_reused(run_dir: Path, cfg: TrainConfig, product: str, what: str) -> None:
    """Refuse a reused run that did not finish or trained another recipe than this member's."""
    diff = setting_differences(runs.read_json(run_dir / "config.json") or {}, cfg, ignore=("workers", "fold"))
    if diff or not (run_dir / product).exists():
        raise SystemExit(f"{run_dir} is not a finished {what} of this member's recipe "
                         f"(differs in: {', '.join(diff) or product + ' missing'})")


def install(model_src: Path | None, cv_dir: Path, metrics: dict, builder) -> Path:
    """Write the new models/default under a temporary name, then swap it in."""
    target = models_dir() / "default"
    tmp = models_dir() / ".default.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if model_src is not None:
        shutil.copytree(model_src, tmp)
    else:
        builder(tmp)
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
    return target


def copy_robustness(cv_dir: Path, model_dir: Path) -> None:
    """Copy a cross-validation's channel-shift results next to the model, but only when that
    cross-validation is the model's own: the same out-of-fold predictions, clip for clip."""
    import numpy as np
    import pandas as pd

    src = cv_dir / "robustness.json"
    if not src.exists():
        raise SystemExit(f"{src} not found: run `ser robustness {cv_dir}` first")
    ours, theirs = (pd.read_csv(d / "predictions.csv").sort_values("file").reset_index(drop=True)
                    for d in (model_dir, cv_dir))
    cols = [c for c in ours.columns if c.startswith("p_")]
    if list(ours["file"]) != list(theirs["file"]) or cols != [c for c in theirs.columns if c.startswith("p_")] \
            or not np.allclose(ours[cols].to_numpy(), theirs[cols].to_numpy(), atol=1e-6):
        raise SystemExit(f"{cv_dir} is not the cross-validation of {model_dir} (its out-of-fold predictions differ)")
    shutil.copy2(src, model_dir / "robustness.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(HERE / "default.json"))
    ap.add_argument("--member-cv", action="append", default=[], metavar="ARCH=DIR",
                    help="reuse a finished cross-validation of that member's recipe (ARCH@SEED when two share an arch, "
                         "N for the recipe's N-th member)")
    ap.add_argument("--member-final", action="append", default=[], metavar="ARCH=DIR",
                    help="reuse a finished all-actor run of that member's recipe (keys as --member-cv)")
    ap.add_argument("--robustness", metavar="CV_DIR",
                    help="only copy CV_DIR/robustness.json into models/default (after `ser robustness CV_DIR`)")
    args = ap.parse_args()
    if args.robustness:
        copy_robustness(Path(args.robustness), models_dir() / "default")
        print(f"copied {args.robustness}/robustness.json to {models_dir() / 'default'}")
        return 0
    install_stop_handlers()
    recipe = json.loads(Path(args.recipe).read_text())
    cfgs = member_recipes(recipe)
    reuse = dict(item.split("=", 1) for item in args.member_cv)
    finals_given = dict(item.split("=", 1) for item in args.member_final)
    built = []
    for position, cfg in enumerate(cfgs, 1):
        out = build_member(cfg, reused(position, cfg, reuse), reused(position, cfg, finals_given))
        if out is None:
            return 1
        built.append((cfg, *out))
    rule = "median of the folds' chosen epochs (the last epoch for recipes without a validation split)"
    finals = [{"arch": cfg.arch, "trained_on": "all 24 RAVDESS actors", "epochs": final_epochs(cfg, m),
               "epochs_rule": rule, "recipe": cfg.to_dict(), "cv_dir": str(cv)} for cfg, cv, _, m in built]
    if len(built) == 1:
        cfg, cv_dir, final_dir, metrics = built[0]
        metrics["final_model"] = finals[0]
        install(final_dir / "model", cv_dir, metrics, None)
    else:
        cv_dir = runs.new_run_dir("cv-default-ensemble")
        metrics = ensemble.combine_cv([cv for _, cv, _, _ in built], cv_dir)
        metrics["final_model"] = {"members": finals}
        install(None, cv_dir, metrics,
                lambda tmp: ensemble.build([final / "model" for _, _, final, _ in built], tmp))
    print(f"models/default: cv accuracy {metrics['accuracy']:.3f}, UAR {metrics['uar']:.3f} (cv in {cv_dir}); "
          f"next: ser robustness {cv_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
