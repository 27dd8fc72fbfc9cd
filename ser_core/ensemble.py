"""Ensembles of models that hear different features: one model folder, averaged probabilities.

Models trained on different inputs (log-mel sequences, MFCC/chroma images, per-clip
statistics) make different mistakes, so the mean of their probabilities beats each of
them. An ensemble folder holds an ordinary ``spec.json`` whose ``arch`` is
``"ensemble"`` (features and sample rate are its first member's) and a ``members/``
folder with one complete model folder per member. Every member runs its own path
(conditioning, windows, normalisation); the clip's answer is the mean of their
clip-level probabilities. Per-window results shown for long audio are the first
member's.

Cross-validation of an ensemble combines finished cross-validations of its members:
every fold's members were trained on the same training actors, so averaging their
out-of-fold probabilities is an honest out-of-fold prediction of the ensemble.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from . import runs, schema
from .config import ModelSpec, atomic_write_text
from .errors import ModelError, SERError

ARCH = "ensemble"
MEMBERS = "members"


def is_ensemble(model_dir: Path | str) -> bool:
    d = Path(model_dir)
    spec = runs.read_json(d / "spec.json", {}) or {}
    return spec.get("arch") == ARCH and (d / MEMBERS).is_dir()


def member_dirs(model_dir: Path | str) -> list[Path]:
    spec = ModelSpec.load(Path(model_dir) / "spec.json")
    names = spec.extra.get("members") or []
    if not names:
        raise ModelError(f"ensemble {model_dir} lists no members")
    return [Path(model_dir) / MEMBERS / str(n) for n in names]


def model_files(model_dir: Path | str) -> list[Path]:
    """The files a model folder's predictions depend on (for change stamps)."""
    d = Path(model_dir)
    dirs = member_dirs(d) if is_ensemble(d) else [d]
    return [d / "spec.json"] + [m / f for m in dirs for f in ("spec.json", "model.keras")]


def is_model_dir(model_dir: Path | str) -> bool:
    try:
        return all(f.exists() for f in model_files(model_dir))
    except SERError:
        return False


class EnsemblePredictor:
    """The :class:`~ser_core.predict.Predictor` interface over several member models."""

    def __init__(self, model_dir: Path | str):
        from .predict import Predictor

        self.model_dir = Path(model_dir)
        self.spec = ModelSpec.load(self.model_dir / "spec.json")
        self.members = [Predictor(d) for d in member_dirs(self.model_dir)]
        self.labels = list(self.spec.labels)
        for m in self.members:
            if set(m.labels) != set(self.labels):
                raise ModelError(f"ensemble member {m.model_dir.name} predicts {m.labels}, not {self.labels}")
        rates = {m.cfg.sample_rate for m in self.members}
        if len(rates) != 1:
            raise ModelError(f"ensemble members expect different sample rates: {sorted(rates)}")
        self.cfg = self.members[0].cfg
        # Members that hear the same features share one extraction. Groups go largest input
        # first, and a worker thread runs a group's models (one graph call) while this thread
        # extracts the next group's features: TensorFlow releases the GIL, so the two overlap.
        order = sorted(range(len(self.members)), key=lambda i: -int(np.prod(self.members[i].model.input_shape[1:])))
        self._groups: list[list[int]] = []
        for i in order:
            group = next((g for g in self._groups if self.members[g[0]].cfg == self.members[i].cfg), None)
            if group is None:
                self._groups.append([i])
            else:
                group.append(i)
        self._group_calls = [_graph_call([self.members[i].model for i in g]) for g in self._groups]
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ser-ensemble")

    def model_input(self, y: np.ndarray) -> np.ndarray:
        return self.members[0].model_input(y)

    def _combine(self, preds):
        from .predict import Prediction

        first = preds[0]
        if not first.speech:
            return first
        probs = np.mean([[p.probabilities.get(lab, 0.0) for lab in self.labels] for p in preds if p.speech], axis=0)
        i = int(np.argmax(probs))
        return Prediction(first.file, self.labels[i], float(probs[i]), dict(zip(self.labels, map(float, probs))),
                          first.duration, first.windows, first.message)

    def predict_array(self, y: np.ndarray, sr: int | None = None, *, name: str = "<array>"):
        """Features once per distinct feature setting, models in one call per group, overlapped;
        a waveform longer than one batch of windows goes member by member."""
        from .predict import BATCH, frame_levels, speech_present

        first = self.members[0]
        y = first.checked(y, sr, name)
        duration = y.size / self.cfg.sample_rate
        if not speech_present(frame_levels(y)):
            return first._no_speech(name, duration)
        if max(len(m.window_starts(y.size)) for m in self.members) > BATCH:
            return self._combine([m.predict_array(y, name=name) for m in self.members])
        pending = []
        for group, call in zip(self._groups, self._group_calls):
            starts, x, speech = self.members[group[0]].window_features(y)
            inputs = [self.members[i].normalise(x) for i in group]
            future = self._runner.submit(lambda c=call, xs=inputs: [o.numpy() for o in c(*xs)])
            pending.append((group, starts, speech, future))
        preds = [None] * len(self.members)
        for group, starts, speech, future in pending:
            for i, probs in zip(group, future.result()):
                preds[i] = self.members[i]._result(probs.astype(np.float64), speech, starts, name, duration)
        return self._combine(preds)

    def predict_file(self, source, *, name: str | None = None, progress: Callable[[float, float], None] | None = None):
        from . import audio
        from .config import max_audio_seconds
        from .predict import STREAM_ABOVE_SECONDS

        label = name or (Path(source).name if isinstance(source, (str, Path)) else "<audio>")
        if audio.duration_seconds(source, name=label) > STREAM_ABOVE_SECONDS:
            n = len(self.members)
            preds = [m.predict_file(source, name=label, progress=None if progress is None else
                                    (lambda done, total, k=k: progress((k * total + done) / n, total)))
                     for k, m in enumerate(self.members)]
            return self._combine(preds)
        y = audio.load(source, sr=self.cfg.sample_rate, name=label, max_seconds=max_audio_seconds())
        return self.predict_array(y, name=label)


def _graph_call(models: list):
    """One tf.function calling several Keras models, each on its own batch of inputs."""
    import tensorflow as tf

    return tf.function(lambda *xs: [model(x, training=False) for model, x in zip(models, xs)],
                       input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.float32) for model in models])


def build(members: Sequence[Path | str], out_dir: Path | str) -> Path:
    """Copy finished model folders into a new ensemble folder (written under a temporary name)."""
    from .config import EMOTIONS

    out_dir = Path(out_dir)
    specs = [ModelSpec.load(Path(m) / "spec.json") for m in members]
    if len(specs) < 2:
        raise ModelError("an ensemble needs at least two member models")
    names = _member_names([s.arch for s in specs])
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
        for f in ("spec.json", "model.keras"):
            shutil.copy2(Path(src) / f, dest / f)
    first = specs[0]
    spec = ModelSpec(arch=ARCH, features=first.features, labels=ordered, protocol=first.protocol,
                     created=runs.now_iso(), extra={"members": names, "member_archs": [s.arch for s in specs]})
    spec.save(tmp / "spec.json")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


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
    folds = list(configs[0]["cv_folds"])
    out_dir.mkdir(parents=True, exist_ok=True)
    tables, fold_info = [], []
    for k in folds:
        parts = [pd.read_csv(d / f"fold-{k}" / "predictions.csv") for d in cv_dirs]
        files = [set(p["file"]) for p in parts]
        if any(f != files[0] for f in files):
            raise SERError(f"fold {k}: the members predicted different clips")
        table = _average(parts)
        fold_dir = out_dir / f"fold-{k}"
        fold_dir.mkdir(exist_ok=True)
        build([d / f"fold-{k}" / "model" for d in cv_dirs], fold_dir / "model")
        atomic_write_text(fold_dir / "predictions.csv", table.to_csv(index=False))
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


def _average(parts: list[pd.DataFrame]) -> pd.DataFrame:
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
