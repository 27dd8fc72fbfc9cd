"""k-fold cross-validation: one run per fold, their out-of-fold predictions pooled into one evaluation."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pandas as pd

from . import runs, schema, splits
from .config import atomic_write_text
from .evaluation import evaluate
from .fitting import StopFlag
from .jsonio import read_json, write_json
from .prepare import load_manifest
from .runs import Logger
from .trainconfig import TrainConfig, setting_differences
from .trainrun import own_create_time, train


def _finished_with(fold_dir: Path, cfg: TrainConfig) -> dict | None:
    """The metrics of a fold run that finished with exactly ``cfg``'s settings, else None."""
    saved = read_json(fold_dir / schema.CONFIG)
    metrics = read_json(fold_dir / schema.METRICS)
    if (not saved or not metrics or runs.read_status(fold_dir).get("state") != "finished"
            or not (fold_dir / schema.PREDICTIONS).exists()):
        return None
    same = set(saved) <= set(cfg.to_dict()) and not setting_differences(saved, cfg)
    return metrics if same else None


def cross_validate(base: TrainConfig, out_dir: Path, *, folds: list[int] | None = None,
                   log: Logger | None = None, resume: bool = False) -> dict:
    """Train one run per fold and pool their out-of-fold predictions into one evaluation.

    With ``resume``, a fold that already finished in ``out_dir`` with the same settings is
    kept instead of trained again, so an interrupted cross-validation loses only its last fold.
    """
    from .tf_setup import keras as _keras

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = log or Logger(out_dir, to_file=True)
    base = base.resolved()
    df = load_manifest(base)
    folds = folds or list(range(1, splits.n_folds(base.protocol, base.k, df) + 1))
    write_json(out_dir / schema.CONFIG, {**base.to_dict(), schema.CV_FOLDS: folds})
    runs.write_status(out_dir, "running", pid=os.getpid(), pid_started=own_create_time(), folds=folds)
    t0 = time.monotonic()
    tables, fold_info = [], []
    for fold in folds:
        fold_dir = out_dir / schema.fold_dir_name(fold)
        fold_dir.mkdir(exist_ok=True)
        cfg = dataclasses.replace(base, fold=fold)
        m = _finished_with(fold_dir, cfg) if resume else None
        if m is not None:
            log(f"fold {fold}: kept the finished run (accuracy {m.get('accuracy', 0):.3f}, same settings)")
        else:
            m = train(fold_dir, cfg, log=log, df=df)
        tables.append(pd.read_csv(fold_dir / schema.PREDICTIONS))
        fold_info.append({"fold": fold, "accuracy": m.get("accuracy"), "uar": m.get("uar"),
                          "best_epoch": m.get(schema.BEST_EPOCH), "seconds": m.get("train_seconds")})
        _keras().backend.clear_session()
        if StopFlag.requested:
            break
    preds = pd.concat(tables, ignore_index=True)
    labels = [c[2:] for c in preds.columns if c.startswith("p_")]
    protocol = schema.cv_protocol(base.protocol, folds, speaker_independent=base.protocol != "random")
    metrics = evaluate(preds, labels, protocol=protocol["label"], speaker_independent=protocol["speaker_independent"])
    metrics[schema.PROTOCOL_INFO] = protocol
    metrics["folds"] = fold_info
    metrics["arch"] = base.arch
    metrics["wall_seconds"] = round(time.monotonic() - t0, 1)
    atomic_write_text(out_dir / schema.PREDICTIONS, preds.to_csv(index=False))
    write_json(out_dir / schema.METRICS, metrics)
    runs.write_status(out_dir, "stopped" if StopFlag.requested else "finished", finished=runs.now_iso())
    log(f"cross-validation: accuracy {metrics['accuracy']:.3f}, UAR {metrics['uar']:.3f} "
        f"over {len(preds)} clips in {metrics['wall_seconds']:.0f} s")
    return metrics
