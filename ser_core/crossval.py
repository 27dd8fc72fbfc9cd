"""k-fold cross-validation: one run per fold, their out-of-fold predictions pooled into one evaluation."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import pandas as pd

from . import runs, schema, splits
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


def _core_shares(n: int) -> list[list[int]]:
    """The CPU cores this process may use, dealt into ``n`` disjoint shares (at most one per core)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):          # not on Linux: no pinning, every share is "any core"
        return [[] for _ in range(n)]
    n = max(1, min(n, len(cpus)))
    return [cpus[i::n] for i in range(n)]


def _pinned(cores: list[int]):
    """What a fold's process does before it starts: run on ``cores`` only, and get SIGTERM (a clean
    stop that keeps its checkpoint) when the cross-validation's process dies, so no orphan trains on."""
    def setup():
        if cores:
            os.sched_setaffinity(0, cores)
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)      # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass                                # not Linux: the fold keeps running until it ends
    return setup


def _train_in_processes(base: TrainConfig, out_dir: Path, folds: list[int], processes: int, log: Logger) -> None:
    """Train ``folds`` as separate training processes (``python -m ser_core.training FOLD_DIR``), at most
    ``processes`` at once, each pinned to its own share of the cores; a fold starts when one ends.

    On a machine with few cores, one process per core trains faster than one process on all of them
    (two `ser_crnn` runs pinned one per core tabled 1.25x faster than one run on both, measured side by side
    in session 12, ``docs/multicorpus.md``). Each fold is an
    ordinary run folder with its own log.txt. A stop request (signal or STOP file of ``out_dir``) is passed
    on to the running folds, which keep their checkpoints, and no further fold starts. A failed fold does
    not stop the others; the cross-validation then fails, naming it.
    """
    shares = _core_shares(min(processes, len(folds)))
    (out_dir / runs.STOP_FILE).unlink(missing_ok=True)        # a stop request of an earlier process is done
    waiting, running, failed = deque(folds), {}, {}
    free = list(range(len(shares)))
    stopping = False
    log(f"training folds {', '.join(map(str, folds))} in {len(shares)} processes at once"
        + (f", on cores {' | '.join(','.join(map(str, c)) for c in shares)}" if shares[0] else ""))
    while waiting or running:
        if (out_dir / runs.STOP_FILE).exists():
            StopFlag.requested = True
        if StopFlag.requested and not stopping:
            stopping = True
            log("stop requested: passed on to the running folds"
                + (f"; folds {', '.join(map(str, waiting))} are not started" if waiting else ""))
            waiting.clear()
            for fold, _ in running.values():
                runs.stop(out_dir / schema.fold_dir_name(fold))
        while free and waiting:
            slot, fold = free.pop(0), waiting.popleft()
            fold_dir = out_dir / schema.fold_dir_name(fold)
            fold_dir.mkdir(exist_ok=True)
            (fold_dir / runs.STOP_FILE).unlink(missing_ok=True)
            write_json(fold_dir / schema.CONFIG, dataclasses.replace(base, fold=fold).to_dict())
            runs.write_status(fold_dir, "queued", queued_at=time.time())
            cores = shares[slot]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            if cores:
                env["OMP_NUM_THREADS"] = str(len(cores))
            with open(fold_dir / schema.LOG, "ab") as out:
                proc = subprocess.Popen([sys.executable, "-m", "ser_core.training", str(fold_dir)], stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                        cwd=str(runs.project_root()), preexec_fn=_pinned(cores))
            running[slot] = (fold, proc)
            log(f"fold {fold}: started in its own process" + (f" on cores {','.join(map(str, cores))}"
                                                               if cores else "") + f" (log: {fold_dir / schema.LOG})")
        time.sleep(0.5)
        for slot, (fold, proc) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[slot]
            free.append(slot)
            status = runs.read_status(out_dir / schema.fold_dir_name(fold))
            if status.get("state") == "finished":
                log(f"fold {fold}: finished")
            elif status.get("state") == "stopped":
                log(f"fold {fold}: stopped on request")
            else:
                failed[fold] = status.get("message") or f"its process exited with code {proc.returncode}"
                log(f"fold {fold}: failed: {failed[fold]}")
    if failed:
        what = "; ".join(f"fold {k}: {m}" for k, m in failed.items())
        runs.write_status(out_dir, "failed", message=what)
        raise SERError(f"cross-validation fold(s) failed: {what} (each fold's log.txt under {out_dir} says more)")


def cross_validate(base: TrainConfig, out_dir: Path, *, folds: list[int] | None = None,
                   log: Logger | None = None, resume: bool = False, processes: int = 1) -> dict:
    """Train one run per fold and pool their out-of-fold predictions into one evaluation.

    With ``resume``, a fold that already finished in ``out_dir`` with the same settings is
    kept instead of trained again, so an interrupted cross-validation loses only its last fold.
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
            _train_in_processes(base, out_dir, in_processes, processes, log)
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

            m = train(fold_dir, cfg, log=log, df=df)
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
