"""k-fold cross-validation: one run per fold, their out-of-fold predictions pooled into one evaluation."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import pandas as pd

from . import procpool, runs, schema, splits
from .config import atomic_write_text
from .errors import SERError
from .evaluation import evaluate
from .fitting import StopFlag
from .jsonio import read_json, write_json
from .prepare import load_manifest
from .runs import Logger
from .trainconfig import TrainConfig, setting_differences
from .trainrun import own_create_time, saved_untested, test_saved, train


def _finished_with(fold_dir: Path, cfg: TrainConfig) -> dict | None:
    """The metrics of a fold run that finished with exactly ``cfg``'s settings, else None."""
    saved = read_json(fold_dir / schema.CONFIG)
    metrics = read_json(fold_dir / schema.METRICS)
    if (not saved or not metrics or runs.read_status(fold_dir).get("state") != "finished"
            or not (fold_dir / schema.PREDICTIONS).exists()):
        return None
    same = set(saved) <= set(cfg.to_dict()) and not setting_differences(saved, cfg)
    return metrics if same else None


def _stopped(fold_dir: Path) -> dict | None:
    """The metrics of a fold run that was stopped on request and still tested its model, else None."""
    metrics = read_json(fold_dir / schema.METRICS)
    if runs.read_status(fold_dir).get("state") == "stopped" and metrics and (fold_dir / schema.PREDICTIONS).exists():
        return metrics
    return None


def _train_in_processes(base: TrainConfig, out_dir: Path, folds: list[int], processes: int, log: Logger,
                        resume_folds: bool = False) -> None:
    """Train ``folds`` as separate training processes (``python -m ser_core.training FOLD_DIR``), at most
    ``processes`` at once, each pinned to its own share of the cores (``procpool.run_pinned``).

    Each fold is an ordinary run folder with its own log.txt; with ``resume_folds`` an interrupted fold
    continues from its last finished epoch. A stop request (signal or STOP file of
    ``out_dir``) is passed on to the running folds, which keep their checkpoints, and no further fold
    starts. A failed fold does not stop the others; the cross-validation then fails, naming it.
    """
    (out_dir / runs.STOP_FILE).unlink(missing_ok=True)        # a stop request of an earlier process is done
    shares = procpool.core_shares(min(processes, len(folds)))
    log(f"training folds {', '.join(map(str, folds))} in {len(shares)} processes at once"
        + (f", on cores {' | '.join(','.join(map(str, c)) for c in shares)}" if shares[0] else ""))

    def launch(fold: int) -> procpool.Launch:
        fold_dir = out_dir / schema.fold_dir_name(fold)
        fold_dir.mkdir(exist_ok=True)
        (fold_dir / runs.STOP_FILE).unlink(missing_ok=True)
        write_json(fold_dir / schema.CONFIG, dataclasses.replace(base, fold=fold).to_dict())
        runs.write_status(fold_dir, "queued", queued_at=time.time())
        # no cwd of its own: a fold process reads the relative paths of ``ser cv`` (its --out, a --teacher
        # folder) from the folder they were typed in, as an in-process fold does
        return procpool.Launch([sys.executable, "-m", "ser_core.training", str(fold_dir)]
                               + (["--resume"] if resume_folds else []), fold_dir / schema.LOG)

    def ended(fold: int, returncode: int) -> str | None:
        status = runs.read_status(out_dir / schema.fold_dir_name(fold))
        if status.get("state") in ("finished", "stopped"):
            log(f"fold {fold}: " + ("finished" if status["state"] == "finished" else "stopped on request"))
            return None
        why = status.get("message") or f"its process exited with code {returncode}"
        log(f"fold {fold}: failed: {why}")
        return why

    def stop_requested() -> bool:
        if (out_dir / runs.STOP_FILE).exists():
            StopFlag.requested = True           # as a signal: the pooling below then marks the run stopped
        return StopFlag.requested

    failed = procpool.run_pinned(
        folds, processes, launch, ended=ended, log=log, name=lambda f: f"fold {f}", what="folds",
        stop_requested=stop_requested,
        stop=lambda fold, _proc: runs.stop(out_dir / schema.fold_dir_name(fold)))
    if failed:
        what = "; ".join(f"fold {k}: {m}" for k, m in failed.items())
        runs.write_status(out_dir, "failed", message=what)
        raise SERError(f"cross-validation fold(s) failed: {what} (each fold's log.txt under {out_dir} says more)")


def cross_validate(base: TrainConfig, out_dir: Path, *, folds: list[int] | None = None,
                   log: Logger | None = None, resume: bool = False, processes: int = 1) -> dict:
    """Train one run per fold and pool their out-of-fold predictions into one evaluation.

    With ``resume``, a fold that already finished in ``out_dir`` with the same settings is
    kept instead of trained again, and a fold that was interrupted continues from its last finished
    epoch, so an interrupted cross-validation loses at most one epoch of each running fold.
    With ``processes`` > 1 the folds to train run as that many separate processes at once, each
    pinned to its share of the cores (:func:`_train_in_processes`); the pooled result is the same kind.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = log or Logger(out_dir, to_file=True)
    base = base.resolved()
    df = load_manifest(base)
    folds = folds or list(range(1, splits.n_folds(base.protocol, base.k, df) + 1))
    write_json(out_dir / schema.CONFIG, {**base.to_dict(), schema.CV_FOLDS: folds})
    runs.write_status(out_dir, "running", pid=os.getpid(), pid_started=own_create_time(), folds=folds)
    t0 = time.monotonic()
    in_processes: list[int] = []
    if processes > 1:
        in_processes = [f for f in folds if not (resume and (
            _finished_with(out_dir / schema.fold_dir_name(f), dataclasses.replace(base, fold=f))
            or saved_untested(out_dir / schema.fold_dir_name(f), dataclasses.replace(base, fold=f))))]
        if len(in_processes) > 1:
            _train_in_processes(base, out_dir, in_processes, processes, log, resume_folds=resume)
        else:
            in_processes = []                   # one fold (or none) to train: this process does it
    tables, fold_info = [], []
    for fold in folds:
        fold_dir = out_dir / schema.fold_dir_name(fold)
        fold_dir.mkdir(exist_ok=True)
        cfg = dataclasses.replace(base, fold=fold)
        m = _finished_with(fold_dir, cfg) if resume or fold in in_processes else None
        if m is not None and fold not in in_processes:
            log(f"fold {fold}: kept the finished run (accuracy {m.get('accuracy', 0):.3f}, same settings)")
        elif m is None and resume and fold not in in_processes and saved_untested(fold_dir, cfg):
            m = test_saved(fold_dir, cfg, log=log, df=df)       # trained and saved; only its test was lost
            log(f"fold {fold}: tested the model its earlier process saved (accuracy {m.get('accuracy', 0):.3f})")
        if m is None and fold in in_processes:
            m = _stopped(fold_dir)              # stopped on request: its predictions are pooled, as here
            if m is None:
                continue                        # never started: pool the folds that ran
        elif m is None and StopFlag.requested:
            break
        elif m is None:
            from .tf_setup import keras as _keras

            m = train(fold_dir, cfg, log=log, df=df, resume_run=resume)
            _keras().backend.clear_session()
        tables.append(pd.read_csv(fold_dir / schema.PREDICTIONS))
        fold_info.append({"fold": fold, "accuracy": m.get("accuracy"), "uar": m.get("uar"),
                          "best_epoch": m.get(schema.BEST_EPOCH), "seconds": m.get("train_seconds")})
        if StopFlag.requested and not in_processes:
            break                               # trained here: no further fold starts
    if not tables:
        raise SERError("the cross-validation stopped before any fold finished")
    preds = pd.concat(tables, ignore_index=True)
    labels = [c[2:] for c in preds.columns if c.startswith("p_")]
    pooled = [info["fold"] for info in fold_info]          # all of ``folds`` unless it was stopped
    protocol = schema.cv_protocol(base.protocol, pooled, speaker_independent=base.protocol != "random")
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
