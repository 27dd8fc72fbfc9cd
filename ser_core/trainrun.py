"""One training run end to end: split, features, fit, save the model, test it, write its metrics."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import resume, runs, schema, splits
from .config import ModelSpec, atomic_write_text
from .errors import SERError
from .evaluation import evaluate
from .fitting import StopFlag, fit
from .jsonio import write_json
from .prepare import load_manifest, prepare
from .runs import Logger
from .trainconfig import TrainConfig


def predictions_table(predictor, rows: pd.DataFrame, fold: int | None = None) -> pd.DataFrame:
    """Per-clip predictions through the same windowed path ``ser predict`` uses."""
    labels = predictor.labels
    probs, kept = [], []
    for i, path in enumerate(rows["path"]):
        try:
            p = predictor.predict_file(path)
        except SERError:
            continue
        kept.append(i)
        probs.append([p.probabilities[lab] for lab in labels])
    rows = rows.iloc[kept].reset_index(drop=True)
    probs = np.asarray(probs, dtype=float).reshape(len(kept), len(labels))
    out = pd.DataFrame({
        "file": [Path(p).name for p in rows["path"]],
        "speaker": rows["speaker"].to_numpy(),
        "gender": rows["gender"].to_numpy(),
        "true": rows["emotion"].to_numpy(),
        "pred": [labels[i] for i in probs.argmax(axis=1)],
        "confidence": probs.max(axis=1, initial=0.0),
    })
    for col in ("actor", "intensity", "statement", "corpus"):
        if col in rows:
            out.insert(2, col, rows[col].to_numpy())
    for j, lab in enumerate(labels):
        out[f"p_{lab}"] = probs[:, j]
    if fold is not None:
        out["fold"] = fold
    return out


def save_model(run_dir: Path, model, spec: ModelSpec) -> Path:
    """Write ``model/`` (spec.json, model.keras and its LiteRT export) under a temporary name, then
    rename into place."""
    import shutil

    final = run_dir / schema.MODEL
    tmp = run_dir / f".{schema.MODEL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save(tmp / schema.WEIGHTS)
    spec.save(tmp / schema.SPEC)
    from .lite import try_export

    try_export(tmp)         # LiteRT beside Keras: prediction will not need TensorFlow
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def split_of(cfg: TrainConfig, df: pd.DataFrame) -> splits.Split:
    """The train / validation / test split a run of ``cfg`` uses on the manifest ``df``."""
    return splits.make_split(df, cfg.protocol, cfg.fold, k=cfg.k, n_val=cfg.n_val_speakers, seed=cfg.data_seed,
                             test_speakers=list(cfg.test_speakers) or None)


def train(run_dir: Path, cfg: TrainConfig, *, log: Logger | None = None, df: pd.DataFrame | None = None,
          resume_run: bool = False) -> dict:
    """Train one run in this process; writes every artefact into ``run_dir``. Returns its metrics.

    With ``resume_run``, a run of the same settings interrupted in ``run_dir`` continues from its last
    finished epoch (:mod:`ser_core.resume`) instead of the first."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = log or Logger(run_dir, to_file=True)
    t_start = time.monotonic()
    cfg = cfg.resolved()
    write_json(run_dir / schema.CONFIG, cfg.to_dict())
    runs.write_status(run_dir, "running", pid=os.getpid(), pid_started=own_create_time(),
                      started=runs.now_iso(), epochs=cfg.epochs, epoch=0, resumed_at_epoch=None, resumed_elapsed=None)
    df = load_manifest(cfg) if df is None else df
    split = split_of(cfg, df)
    log(f"{split.label}: {len(split.train)} train, {len(split.val)} val, {len(split.test)} test clips")
    data = prepare(cfg, df, split, log)
    runs.write_status(run_dir, "running", skipped_files=len(data.skipped),
                      skipped=[m for _, m in data.skipped][:50])
    model = fit(run_dir, cfg, data, log, t_start, resume_run=resume_run)
    fcfg = cfg.feature_config()
    spec = ModelSpec(arch=cfg.arch, features=fcfg, labels=tuple(data.labels),
                     norm_mean=tuple(np.asarray(data.spec_norm[0]).tolist()),
                     norm_std=tuple(np.asarray(data.spec_norm[1]).tolist()),
                     protocol=split.label, created=runs.now_iso(),
                     extra={"train_clips": int(len(data.x["train"])), "dataset": cfg.dataset,
                            schema.TRAIN_SPEAKERS: sorted(set(data.rows["train"]["speaker"].astype(str)))})
    save_model(run_dir, model, spec)
    if not StopFlag.requested:
        resume.clear(run_dir)       # trained to the end and saved: nothing left to resume
    return _test_and_record(run_dir, split, model, spec, data.rows["test"], data.labels, log, t_start)


def _test_and_record(run_dir: Path, split, model, spec: ModelSpec, test_rows: pd.DataFrame, labels: list[str],
                     log: Logger, t_start: float | None, note: str = "") -> dict:
    """Test a trained, saved model on its split's test clips and record the run: predictions.csv,
    metrics.json and its final status (``note`` says how it got there when not in one go)."""
    protocol = schema.split_protocol(split)
    metrics: dict = {schema.PROTOCOL: split.label, schema.SPEAKER_INDEPENDENT: split.speaker_independent}
    if len(test_rows):
        from .predict import Predictor

        preds = predictions_table(Predictor.from_model(model, spec), test_rows, fold=split.fold)
        if len(preds) < len(test_rows):
            log(f"test: {len(test_rows) - len(preds)} unreadable clip(s) left out of the metrics")
        atomic_write_text(run_dir / schema.PREDICTIONS, preds.to_csv(index=False))
        metrics = evaluate(preds, labels, protocol=split.label, speaker_independent=split.speaker_independent)
        log(f"test accuracy {metrics['accuracy']:.3f}, UAR {metrics['uar']:.3f} ({split.label})")
    metrics[schema.PROTOCOL_INFO] = protocol
    hist = runs.read_history(run_dir)
    if hist:
        # the value the best epoch was kept by: validation accuracy, or without validation speakers
        # training accuracy, under its own name (never as a validation figure)
        monitor = schema.VAL_MONITOR if any(schema.VAL_MONITOR in h for h in hist) else schema.TRAIN_MONITOR
        metrics[schema.best_key(monitor)] = max(h.get(monitor, 0) for h in hist)
        metrics["epochs_run"] = len(hist)
    status = runs.read_status(run_dir)
    metrics[schema.BEST_EPOCH] = status.get(schema.BEST_EPOCH)
    # a resumed run counts the time of the process(es) before it too
    metrics["train_seconds"] = (round(time.monotonic() - t_start + (status.get("resumed_elapsed") or 0.0), 1)
                                if t_start is not None else None)
    if status.get("resumed_at_epoch"):
        metrics["resumed_at_epoch"] = status["resumed_at_epoch"]
    write_json(run_dir / schema.METRICS, metrics)
    state = "stopped" if StopFlag.requested else "finished"
    runs.write_status(run_dir, state, finished=runs.now_iso(),
                      message="stopped on request; the best checkpoint was kept" if state == "stopped" else note)
    return metrics


def saved_untested(run_dir: Path, cfg: TrainConfig) -> bool:
    """Whether ``run_dir`` is a run of ``cfg``'s settings whose process ended after it trained to its last
    epoch and saved its model, before testing it (:func:`test_saved` finishes it)."""
    from .jsonio import read_json
    from .trainconfig import setting_differences

    run_dir = Path(run_dir)
    saved, status = read_json(run_dir / schema.CONFIG), runs.read_status(run_dir)
    weights, history = run_dir / schema.MODEL / schema.WEIGHTS, run_dir / schema.HISTORY
    return bool(saved and not setting_differences(saved, cfg.resolved()) and status.get("state") == "interrupted"
                and status.get("epoch") == cfg.epochs and status.get("member", 1) == status.get("members", 1)
                and (run_dir / schema.MODEL / schema.SPEC).exists() and weights.exists() and history.exists()
                and weights.stat().st_mtime >= history.stat().st_mtime - 1)


def test_saved(run_dir: Path, cfg: TrainConfig, *, log: Logger | None = None,
               df: pd.DataFrame | None = None) -> dict | None:
    """Finish a run whose process ended after it trained to its last epoch and saved its model, but
    before it tested that model (killed, or crashed in the test step): test the saved model and record
    the run as :func:`train` would have. Returns its metrics, or None when the run is not one of those
    (other settings, still running, stopped or ended early, no saved model), and must be trained.

    Nothing saved is lost: an hour of training is not redone for a minute of testing. The model is the
    one the run saved, tested on the same split's test speakers by the same code as in :func:`train`.
    """
    from .predict import load_keras

    run_dir = Path(run_dir)
    cfg = cfg.resolved()
    if not saved_untested(run_dir, cfg):
        return None
    model_dir = run_dir / schema.MODEL
    log = log or Logger(run_dir, to_file=True)
    df = load_manifest(cfg) if df is None else df
    split = split_of(cfg, df)
    spec = ModelSpec.load(model_dir / schema.SPEC)
    log(f"{run_dir.name}: its process ended after training all {cfg.epochs} epochs and saving the model; "
        "testing the saved model")
    return _test_and_record(run_dir, split, load_keras(model_dir / schema.WEIGHTS), spec,
                            df.iloc[split.test].reset_index(drop=True), list(spec.labels), log, None,
                            note="tested after its process ended: the model it saved at the end of training")


def own_create_time() -> float | None:
    """When this process started (status.json records it, so a reused pid is not taken for the run)."""
    try:
        import psutil

        return psutil.Process(os.getpid()).create_time()
    except Exception:
        return None
