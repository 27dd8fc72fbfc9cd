"""Robustness of a cross-validated model to channel shifts of its test audio.

For every fold of a cross-validation directory, each test clip is decoded,
passed through every shift of :data:`ser_core.channel.SHIFTS` and classified
with that fold's model through :meth:`Predictor.predict_array`, the same path
the app uses. The clean figure is computed the same way on the unshifted
audio, so a drop measures the shift and nothing else.

Feature extraction costs more than inference here, so each worker process
decodes, shifts *and* classifies whole clips with its own copy of the fold's
model (TensorFlow on one thread per worker); this process only collects
rows. Each clip's randomness is seeded by (seed, file name, shift name), so
results do not depend on scheduling or on which shifts are requested.

Babble is drawn from clips of the fold's *training* speakers: it is
background noise, so either set would be fair, but this way no test clip is
ever heard inside another test clip's mixture.
"""
from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from . import audio, channel, datasets, schema
from .config import ModelSpec, atomic_write_text
from .modeldir import is_model_dir
from .errors import ConfigError, DatasetError, SERError
from .jsonio import read_json, write_json
from .machine import usable_cpus

CLEAN = "clean"
BABBLE_POOL = 24          # clips of training speakers that babble talkers are drawn from
TARGET_DROP_POINTS = 10.0
RESULT_FILE = schema.ROBUSTNESS
PREDICTIONS_FILE = schema.ROBUSTNESS_PREDICTIONS


def clip_rng(seed: int, name: str, shift: str) -> np.random.Generator:
    """The generator of one (clip, shift) pair: independent of order and of the other shifts."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(shift.encode())])


_OTHERS: dict[tuple[str, ...], list[np.ndarray]] = {}


def _babble_clips(paths: tuple[str, ...], sr: int) -> list[np.ndarray]:
    """Decoded babble pool, cached per process (each fold has its own pool)."""
    if paths not in _OTHERS:
        _OTHERS.clear()
        clips = []
        for p in paths:
            try:
                clips.append(audio.load(p, sr=sr, name=os.path.basename(p)))
            except SERError:
                continue
        _OTHERS[paths] = clips
    return _OTHERS[paths]


def shifted_versions(path: str, sr: int, shifts: Sequence[str], seed: int,
                     babble_paths: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Decode one clip and apply every shift: {'clean': y, shift: y', ...}."""
    name = os.path.basename(path)
    y = audio.load(path, sr=sr, name=name)
    out = {CLEAN: y}
    for s in shifts:
        others = _babble_clips(babble_paths, sr) if s.startswith("babble") else ()
        out[s] = channel.SHIFTS[s](y, sr, clip_rng(seed, name, s), others)
    return out


_PREDICTOR: list = []     # this process's [(model_dir, mtime), Predictor]; one fold at a time


def _predictor(model_dir: str):
    from .modeldir import model_files
    from .predict import load_predictor

    key = (model_dir, max(f.stat().st_mtime_ns for f in model_files(model_dir)))
    if not _PREDICTOR or _PREDICTOR[0] != key:
        _PREDICTOR[:] = [key, load_predictor(model_dir)]
    return _PREDICTOR[1]


def classify_clip(path: str, model_dir: str, shifts: Sequence[str], seed: int,
                  babble_paths: tuple[str, ...]) -> list[tuple[str, str, float, str]]:
    """(condition, predicted emotion or '' for no speech, confidence, error) for the clean clip and each shift."""
    predictor = _predictor(model_dir)
    try:
        versions = shifted_versions(path, predictor.cfg.sample_rate, shifts, seed, babble_paths)
    except SERError as exc:
        return [(s, "", 0.0, str(exc)) for s in [CLEAN, *shifts]]
    out = []
    for s, y in versions.items():
        try:
            p = predictor.predict_array(y, predictor.cfg.sample_rate, name=os.path.basename(path))
            out.append((s, p.best or "", float(p.confidence), ""))
        except SERError as exc:
            out.append((s, "", 0.0, str(exc)))
    return out


def _init_worker(numba_dir: str) -> None:
    """One BLAS and one TensorFlow thread per worker: the pool already fills every core."""
    from . import cache
    from .tf_setup import native_stderr_silenced

    cache._init_worker(numba_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():      # TensorFlow's C++ start-up notices, once per worker
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.list_logical_devices()      # initialise now, so tf_setup cannot raise the counts again


def _fold_dirs(cv_dir: Path, folds: Sequence[int] | None) -> list[tuple[int, Path]]:
    found = []
    for d in sorted(cv_dir.glob(schema.FOLD_PREFIX + "*")):
        k = schema.fold_of(d.name)
        if k is None:
            continue
        if is_model_dir(d / schema.MODEL) and (d / schema.PREDICTIONS).exists():
            found.append((k, d))
    if folds:
        missing = sorted(set(folds) - {k for k, _ in found})
        if missing:
            raise SERError(f"{cv_dir}: fold(s) {', '.join(map(str, missing))} have no finished model "
                           f"and predictions.csv")
        found = [(k, d) for k, d in found if k in set(folds)]
    if not found:
        raise SERError(f"{cv_dir}: no finished fold (fold-K/ with model/ and predictions.csv)")
    return sorted(found)


def _babble_pool(manifest: pd.DataFrame, test: pd.DataFrame, seed: int, fold: int) -> tuple[str, ...]:
    """Clips of speakers outside the fold's test set (else of files outside it), a fixed random subset."""
    names = manifest["path"].map(lambda p: Path(p).name)
    pool = manifest[~manifest["speaker"].isin(set(test["speaker"]))]
    if pool.empty:
        pool = manifest[~names.isin(set(test["file"]))]
    if pool.empty:
        raise DatasetError("babble noise needs clips outside the test set, and this dataset has none")
    rng = np.random.default_rng([seed, fold])
    pick = rng.choice(len(pool), size=min(BABBLE_POOL, len(pool)), replace=False)
    return tuple(str(p) for p in pool["path"].to_numpy()[np.sort(pick)])


def _score(rows: pd.DataFrame, labels: list[str]) -> dict:
    from .evaluation import summary

    s = summary(rows["true"].to_numpy(), rows["pred"].to_numpy(), labels)
    failed = int((rows["error"] != "").sum())
    return {"n": s["n"], "accuracy": s["accuracy"], "uar": s["uar"],
            "per_gender": {str(g): float((r["true"] == r["pred"]).mean())
                           for g, r in rows.groupby("gender", sort=True)} if "gender" in rows else {},
            "no_speech": int((rows["pred"] == "").sum()) - failed, "failed": failed}


def summarise(preds: pd.DataFrame, labels: list[str], shifts: Sequence[str]) -> dict:
    """Per-shift accuracy, UAR, per-gender accuracy and drop (points) from a robustness predictions table."""
    results = {s: _score(preds[preds["shift"] == s], labels) for s in [CLEAN, *shifts]}
    clean = results[CLEAN]
    for s, r in results.items():
        r["drop"] = round((clean["accuracy"] - r["accuracy"]) * 100, 2)
        r["uar_drop"] = round((clean["uar"] - r["uar"]) * 100, 2)
    per_fold = {str(f): {s: float((g[g["shift"] == s]["true"] == g[g["shift"] == s]["pred"]).mean())
                         for s in [CLEAN, *shifts]}
                for f, g in preds.groupby("fold", sort=True)}
    worst = max(shifts, key=lambda s: results[s]["drop"]) if shifts else None
    return {"results": results, "per_fold": per_fold, "worst_shift": worst,
            "max_drop": results[worst]["drop"] if worst else 0.0,
            "target_drop_points": TARGET_DROP_POINTS,
            "within_target": bool(worst is None or results[worst]["drop"] < TARGET_DROP_POINTS)}




def evaluate_shifts(cv_dir: Path | str, shifts: Sequence[str] | None = None, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None, *, folds: Sequence[int] | None = None,
                    workers: int | None = None, corpus: str | None = None) -> dict:
    """Accuracy of each fold's model on its test clips, clean and after each channel shift.

    Writes ``robustness.json`` (the returned dict) and ``robustness_predictions.csv``
    (one row per clip and condition) into ``cv_dir``. ``corpus`` keeps only that corpus's test clips
    (a multi-corpus cross-validation measured on its RAVDESS folds). ``workers`` processes
    (default: one per core) each decode, shift and classify clips; ``workers=0``
    does everything in this process.
    """
    from .evaluation import summary

    t0 = time.monotonic()
    cv_dir = Path(cv_dir)
    shifts = list(channel.SHIFTS) if shifts is None else list(shifts)
    unknown = [s for s in shifts if s not in channel.SHIFTS]
    if unknown:
        raise ConfigError(f"unknown shift(s): {', '.join(unknown)}; known: {', '.join(channel.SHIFTS)}")
    config = read_json(cv_dir / schema.CONFIG)
    if not config or "dataset" not in config:
        raise SERError(f"{cv_dir}: not a cross-validation folder (config.json with a 'dataset' is missing)")
    fold_dirs = _fold_dirs(cv_dir, folds)
    manifest = datasets.load_dataset(config["dataset"])
    by_name = dict(zip(manifest["path"].map(lambda p: Path(p).name), manifest["path"]))

    plans = []
    for k, d in fold_dirs:
        test = pd.read_csv(d / schema.PREDICTIONS)
        if corpus is not None:
            if "corpus" not in test or not (test["corpus"] == corpus).any():
                raise DatasetError(f"fold {k} of {cv_dir} has no test clips of corpus {corpus!r}")
            test = test[test["corpus"] == corpus].reset_index(drop=True)
        missing = [f for f in test["file"] if f not in by_name]
        if missing:
            raise DatasetError(f"{len(missing)} test clip(s) of fold {k} are not in dataset "
                               f"{config['dataset']!r} (first: {missing[0]})")
        plans.append((k, d, test, _babble_pool(manifest, test, seed, k)))
    total = sum(len(t) for _, _, t, _ in plans) * (len(shifts) + 1)
    n_workers = min(usable_cpus() if workers is None else max(0, int(workers)), total)
    pool = None
    if n_workers:
        import tempfile

        from .cache import _context

        pool = ProcessPoolExecutor(n_workers, mp_context=_context(), initializer=_init_worker,
                                   initargs=(tempfile.mkdtemp(prefix="ser-numba-"),))
    rows, done = [], 0
    try:
        for k, d, test, babble_paths in plans:
            jobs = [(str(by_name[f]), str(d / schema.MODEL), shifts, seed, babble_paths) for f in test["file"]]
            results = (pool.map(classify_clip, *zip(*jobs)) if pool is not None
                       else (classify_clip(*job) for job in jobs))
            for (_, r), outcome in zip(test.iterrows(), results):
                base = {"fold": k, "file": r["file"], "speaker": r.get("speaker", ""),
                        "gender": r.get("gender", ""), "true": r["true"]}
                rows.extend({**base, "shift": s, "pred": pred, "confidence": round(conf, 6), "error": err}
                            for s, pred, conf, err in outcome)
                done += len(outcome)
                if progress:
                    progress(done, total)
    finally:
        _PREDICTOR.clear()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    preds = pd.DataFrame(rows)
    labels = list(ModelSpec.load(fold_dirs[0][1] / schema.MODEL / schema.SPEC).labels)
    recorded = pd.concat([t for _, _, t, _ in plans], ignore_index=True)
    result = {
        "cv_dir": str(cv_dir), "dataset": config["dataset"], "arch": config.get("arch"), "corpus": corpus,
        "folds": [k for k, *_ in plans], "n_clips": int(len(recorded)), "seed": seed, "shifts": shifts,
        "babble_source": f"{channel.BABBLE_TALKERS} talkers drawn from {BABBLE_POOL} clips of each fold's "
                         "training speakers (never test audio)",
        "recorded_accuracy": summary(recorded["true"].to_numpy(), recorded["pred"].to_numpy(), labels)["accuracy"],
        **summarise(preds, labels, shifts),
        "predictions_csv": PREDICTIONS_FILE,
        "seconds": round(time.monotonic() - t0, 1),
    }
    atomic_write_text(cv_dir / PREDICTIONS_FILE, preds.to_csv(index=False))
    write_json(cv_dir / RESULT_FILE, result)
    return result


def _cell(value: float | None) -> str:
    return f"{value:>7.3f}" if value is not None else f"{'-':>7}"


def format_table(result: dict) -> str:
    """The CLI's table: one line per condition."""
    lines = [f"{'shift':<12} {'accuracy':>9} {'UAR':>7} {'drop':>7} {'female':>7} {'male':>7} {'no speech':>9}"]
    for s, r in result["results"].items():
        g = r.get("per_gender", {})
        lines.append(f"{s:<12} {r['accuracy']:>9.3f} {r['uar']:>7.3f} {r['drop'] if s != CLEAN else 0:>+7.1f} "
                     f"{_cell(g.get('female'))} {_cell(g.get('male'))} "
                     f"{r['no_speech']:>9d}")
    lines.append(f"{result['n_clips']} test clips, folds {','.join(map(str, result['folds']))}; "
                 f"largest drop {result['max_drop']:+.1f} points ({result['worst_shift']}), "
                 f"target < {result['target_drop_points']:.0f}: {'met' if result['within_target'] else 'NOT met'}")
    return "\n".join(lines)
