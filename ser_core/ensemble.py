"""Ensembles of models that hear different features: building the folder, combining cross-validations.

Models trained on different inputs (log-mel sequences, MFCC/chroma images, per-clip
statistics) make different mistakes, so the mean of their probabilities beats each of
them. An ensemble folder holds an ordinary ``spec.json`` whose ``arch`` is
``"ensemble"`` (features and sample rate are its first member's) and a ``members/``
folder with one complete model folder per member (:mod:`ser_core.modeldir`). It
predicts through :class:`ser_core.predict.EnsemblePredictor`: each window's
probabilities are the mean of the members', the clip's the mean of its speech windows.

Cross-validation of an ensemble combines finished cross-validations of its members:
every fold's members were trained on the same training actors, so averaging their
out-of-fold probabilities is an honest out-of-fold prediction of the ensemble.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import lite, runs, schema
from .config import ModelSpec, atomic_write_text
from .errors import ModelError, SERError
from .modeldir import ENSEMBLE_ARCH as ARCH
from .modeldir import MEMBERS, SPEC, WEIGHTS


def build(members: Sequence[Path | str], out_dir: Path | str, *, export: bool = True,
          weights: Sequence[float] | None = None) -> Path:
    """Copy finished model folders into a new ensemble folder (written under a temporary name).

    A member's LiteRT file comes along when it is current; with ``export`` the members
    without one are exported (see :mod:`ser_core.lite`), else they run on Keras. ``weights``
    (one positive number per member, stored scaled to sum to 1) make the mean a weighted one,
    e.g. two models as one whatever their member counts; without them every member counts alike.
    """
    from .config import EMOTIONS

    out_dir = Path(out_dir)
    specs = [ModelSpec.load(Path(m) / SPEC) for m in members]
    if len(specs) < 2:
        raise ModelError("an ensemble needs at least two member models")
    names = _member_names([s.arch for s in specs])
    shares = member_weights(weights, len(specs))
    labels = set(specs[0].labels)
    if any(set(s.labels) != labels for s in specs):
        raise ModelError("ensemble members must predict the same emotions")
    ordered = tuple(sorted(labels, key=lambda lab: (EMOTIONS.index(lab) if lab in EMOTIONS else 99, lab)))
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / MEMBERS).mkdir(parents=True)
    for src, name in zip(members, names):
        dest = tmp / MEMBERS / name
        dest.mkdir()
        for f in (SPEC, WEIGHTS) + tuple(v.file for v in lite.VARIANTS.values() if lite.fresh(src, v.runtime)):
            shutil.copy2(Path(src) / f, dest / f)
        if export and not lite.fresh(dest):
            lite.try_export(dest)
    first = specs[0]
    spec = ModelSpec(arch=ARCH, features=first.features, labels=ordered, protocol=first.protocol,
                     created=runs.now_iso(), extra={"members": names, "member_archs": [s.arch for s in specs],
                                                    **({schema.MEMBER_WEIGHTS: shares} if weights is not None else {}),
                                                    **_speakers_of(specs)})
    spec.save(tmp / SPEC)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def _speakers_of(specs: Sequence[ModelSpec]) -> dict:
    """Every speaker some member learnt from, when every member records them."""
    seen = [s.extra.get(schema.TRAIN_SPEAKERS) for s in specs]
    if any(v is None for v in seen):
        return {}
    return {schema.TRAIN_SPEAKERS: sorted(set().union(*seen))}


def member_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """``n`` members' shares of the mean: ``weights`` scaled to sum to 1 (equal shares when None)."""
    if weights is None:
        return [1.0 / n] * n
    try:
        w = [float(v) for v in weights]
    except (TypeError, ValueError):
        raise ModelError(f"ensemble weights must be numbers, got {weights!r}") from None
    if len(w) != n or not all(np.isfinite(v) and v > 0 for v in w):
        raise ModelError(f"an ensemble of {n} members needs {n} positive weights, got {weights!r}")
    return [v / sum(w) for v in w]


def _member_names(archs: Sequence[str]) -> list[str]:
    names = []
    for a in archs:
        n, k = a, 2
        while n in names:
            n, k = f"{a}-{k}", k + 1
        names.append(n)
    return names


def combine_cv(cv_dirs: Sequence[Path | str], out_dir: Path | str) -> dict:
    """The cross-validation of an ensemble from finished cross-validations of its members.

    Checks that the members used the same dataset, protocol and folds and predicted the
    same clips in each fold; writes ``fold-K/model`` (ensembles of the members' fold
    models, so ``ser robustness`` works on the result), per-fold and pooled predictions,
    ``metrics.json`` and ``config.json``.
    """
    import pandas as pd

    from .evaluation import evaluate
    from .jsonio import read_json, write_json

    cv_dirs = [Path(d) for d in cv_dirs]
    out_dir = Path(out_dir)
    if len(cv_dirs) < 2:
        raise SERError("an ensemble cross-validation needs at least two member cross-validations")
    configs = [read_json(d / schema.CONFIG) or {} for d in cv_dirs]
    for d in cv_dirs:
        if runs.read_status(d).get("state") != "finished" or not (d / schema.PREDICTIONS).exists():
            raise SERError(f"{d} is not a finished cross-validation")
    for key in ("dataset", "protocol", "cv_folds"):
        if len({str(c.get(key)) for c in configs}) != 1:
            raise SERError(f"member cross-validations differ in {key}: "
                           + ", ".join(f"{d.name}={c.get(key)}" for d, c in zip(cv_dirs, configs)))
    folds = list(configs[0][schema.CV_FOLDS])
    out_dir.mkdir(parents=True, exist_ok=True)
    tables, fold_info = [], []
    for k in folds:
        parts = [pd.read_csv(d / schema.fold_dir_name(k) / schema.PREDICTIONS) for d in cv_dirs]
        files = [set(p["file"]) for p in parts]
        if any(f != files[0] for f in files):
            raise SERError(f"fold {k}: the members predicted different clips")
        table = _average(parts)
        fold_dir = out_dir / schema.fold_dir_name(k)
        fold_dir.mkdir(exist_ok=True)
        build([d / fold_dir.name / schema.MODEL for d in cv_dirs], fold_dir / schema.MODEL, export=False)
        atomic_write_text(fold_dir / schema.PREDICTIONS, table.to_csv(index=False))
        labels = [c[2:] for c in table.columns if c.startswith("p_")]
        m = evaluate(table, labels)
        fold_info.append({"fold": k, "accuracy": m["accuracy"], "uar": m["uar"]})
        tables.append(table)
    preds = pd.concat(tables, ignore_index=True)
    labels = [c[2:] for c in preds.columns if c.startswith("p_")]
    protocol = schema.cv_protocol(configs[0]["protocol"], folds,
                                  speaker_independent=configs[0].get("protocol") != "random")
    metrics = evaluate(preds, labels, protocol=protocol["label"], speaker_independent=protocol["speaker_independent"])
    metrics[schema.PROTOCOL_INFO] = protocol
    member_metrics = [read_json(d / schema.METRICS) or {} for d in cv_dirs]
    metrics.update(folds=fold_info, arch=ARCH, members=[c.get("arch") for c in configs],
                   member_accuracy=[m.get("accuracy") for m in member_metrics],
                   wall_seconds=round(sum(m.get("wall_seconds", 0) or 0 for m in member_metrics), 1))
    atomic_write_text(out_dir / schema.PREDICTIONS, preds.to_csv(index=False))
    write_json(out_dir / schema.METRICS, metrics)
    write_json(out_dir / schema.CONFIG, {"arch": ARCH, "dataset": configs[0]["dataset"],
                                         "protocol": configs[0]["protocol"], schema.CV_FOLDS: folds,
                                         "members": [str(d) for d in cv_dirs],
                                         "member_configs": configs})
    runs.write_status(out_dir, "finished", finished=runs.now_iso())
    return metrics


def _average(parts: list):
    """Mean probabilities per clip (rows matched by file name), the members' other columns from the first."""
    labels = [c[2:] for c in parts[0].columns if c.startswith("p_")]
    base = parts[0].set_index("file")
    probs = np.mean([p.set_index("file").loc[base.index, [f"p_{lab}" for lab in labels]].to_numpy()
                     for p in parts], axis=0)
    out = base.reset_index()
    for j, lab in enumerate(labels):
        out[f"p_{lab}"] = probs[:, j]
    out["pred"] = [labels[i] for i in probs.argmax(axis=1)]
    out["confidence"] = probs.max(axis=1)
    return out
