"""Teacher tables: what a distillation reads of a teacher, kept as a small table instead of a model.

A student of a cross-validation needs, for every fold, a teacher that learnt from that fold's
training speakers only. For an ensemble those teachers are a whole cross-validation of every member
(hours on 2 cores) and megabytes of models per fold; what the student reads of them is one row of
probabilities per training clip. So a teacher can also be a folder of tables (one fold's folder of
``training/teachers.py``'s output), one table per network:

``<name>.csv.gz``
    ``clip`` (the clip's key, :func:`clip_keys`) and ``p_<label>`` columns: the network's raw
    (uncalibrated) probabilities of the clips it trained on, through the path ``ser predict`` takes.
``<name>.test.csv.gz``
    (fold teachers) its predictions of the fold's test clips, as a cross-validation saves them: what the
    teacher scores out of fold, never read as a teacher.
``<name>.json``
    its record: the speakers it learnt from (:data:`schema.TRAIN_SPEAKERS`), its protocol, labels,
    settings and test accuracy. Written after the table, so a table without its record is not one.

The teacher's probabilities of a clip are the mean of its tables' rows for that clip. For an ensemble
that is the mean of its members' clip probabilities, where the ensemble model itself averages their
windows first: the same for clips of one window, close otherwise.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import schema
from .config import atomic_write_text
from .errors import ConfigError

TABLE = ".csv.gz"          # a network's probabilities of its training clips
HELD_OUT = ".test.csv.gz"  # beside a fold teacher's table: its predictions of the fold's test clips, never read as
#                            a teacher (they tell how good the teacher is, out of fold)
RECORD = ".json"           # the record that makes it a table
KEY = "clip"               # the table's clip column


def clip_keys(rows: pd.DataFrame, roots: dict[str, Path] | None = None) -> list[str]:
    """A key per manifest row that names the clip on any machine: ``<corpus>/<path inside the corpus>``
    (the file name where the clip lies outside its corpus's folder)."""
    if roots is None:
        from .datasets import corpus_dirs

        roots = corpus_dirs()
    keys = []
    for path, corpus in zip(rows["path"], rows["corpus"]):
        p, root = Path(path), roots.get(str(corpus))
        try:
            rel = p.resolve().relative_to(root.resolve()).as_posix() if root is not None else p.name
        except ValueError:
            rel = p.name
        keys.append(f"{corpus}/{rel}")
    return keys


def table_names(folder: Path | str) -> list[str]:
    """The tables of a folder (those with their record), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = (p.name[:-len(TABLE)] for p in folder.glob(f"*{TABLE}") if not p.name.endswith(HELD_OUT))
    return sorted(n for n in names if (folder / f"{n}{RECORD}").is_file())


def is_table_dir(folder: Path | str) -> bool:
    return bool(table_names(folder))


def read_record(folder: Path | str, name: str) -> dict:
    return json.loads((Path(folder) / f"{name}{RECORD}").read_text())


def model_probabilities(model_dir: Path | str, paths: list[str], labels: list[str] | None = None,
                        batch: int = 64) -> tuple[np.ndarray, list[str]]:
    """A model's raw (uncalibrated) probabilities of each file through ``ser predict``'s path, each row
    summing to 1 over ``labels`` (the model's own by default); a row of NaN where the file cannot be
    read or holds no speech. Returns the rows and the labels."""
    from .predict import load_predictor

    predictor = load_predictor(model_dir, calibrated=False)
    labels = list(predictor.labels) if labels is None else list(labels)
    out = np.full((len(paths), len(labels)), np.nan, np.float32)
    for start in range(0, len(paths), batch):
        for j, pred in enumerate(predictor.predict_many(paths[start:start + batch])):
            if isinstance(pred, BaseException) or not pred.speech:
                continue
            v = np.array([pred.probabilities.get(lab, 0.0) for lab in labels], np.float32)
            if v.sum() > 0:
                out[start + j] = v / v.sum()
    return out, labels


def _write_gz(df: pd.DataFrame, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    df.to_csv(tmp, index=False, compression="gzip", float_format="%.6g")
    os.replace(tmp, dest)


def write_held_out(folder: Path | str, name: str, predictions: pd.DataFrame) -> Path:
    """Write a fold teacher's predictions of its fold's test clips beside its table (atomically)."""
    dest = Path(folder) / f"{name}{HELD_OUT}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    _write_gz(predictions, dest)
    return dest


def write_table(folder: Path | str, name: str, keys: list[str], probs: np.ndarray, labels: list[str],
                record: dict) -> Path:
    """Write one network's table, then its record (each atomically); returns the table's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probs = np.asarray(probs, float)
    if probs.shape != (len(keys), len(labels)):
        raise ValueError(f"{probs.shape} probabilities for {len(keys)} clips and {len(labels)} labels")
    df = pd.DataFrame({KEY: keys, **{f"p_{lab}": np.round(probs[:, j], 6) for j, lab in enumerate(labels)}})
    dest = folder / f"{name}{TABLE}"
    _write_gz(df, dest)
    atomic_write_text(folder / f"{name}{RECORD}", json.dumps({**record, "labels": list(labels)}, indent=1) + "\n")
    return dest


def member_name(position: int) -> str:
    """The table name of a recipe's member at ``position`` (from 1) in a fold teacher's folder."""
    return f"member-{position}"


def held_out_mean(folder: Path | str, names: set[str] | None = None) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """A fold teacher's predictions of its fold's test clips, the way an ensemble's cross-validation pools them:
    the mean of its members' held-out tables (``names``: only those members) as one predictions table (the first
    member's clip columns, the mean ``p_<label>`` columns, the answer and its confidence), and the members' own
    tables in the same clip order. Empty when the folder holds none of them."""
    tests = sorted(t for t in Path(folder).glob(f"*{HELD_OUT}") if names is None or t.name[:-len(HELD_OUT)] in names)
    if not tests:
        return pd.DataFrame(), []
    first = pd.read_csv(tests[0])
    tables = [first] + [pd.read_csv(t).set_index("file").loc[first["file"]].reset_index() for t in tests[1:]]
    cols = [c for c in first.columns if c.startswith("p_")]
    mean = np.mean([t[cols].to_numpy(float) for t in tables], axis=0)
    meta = [c for c in first.columns if not c.startswith("p_") and c not in ("pred", "confidence")]
    pooled = first[meta].assign(pred=np.asarray([c[2:] for c in cols])[mean.argmax(axis=1)],
                                confidence=mean.max(axis=1))
    return pd.concat([pooled, pd.DataFrame(mean, columns=cols)], axis=1), tables


def pooled_held_out(root: Path | str, names: set[str]) -> tuple[pd.DataFrame, list[int]]:
    """Every fold teacher's :func:`held_out_mean` of exactly the members ``names`` under ``root`` (``fold-J/``),
    with a ``fold`` column: a cross-validation's out-of-fold predictions table; and the folds it holds (a fold
    without one of them is left out)."""
    parts, folds = [], []
    for folder in sorted(Path(root).glob(f"{schema.FOLD_PREFIX}*")):
        fold = schema.fold_of(folder.name)
        table, members = held_out_mean(folder, names) if fold is not None else (None, [])
        if len(members) == len(names):
            parts.append(table.assign(fold=fold))
            folds.append(fold)
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()), sorted(folds)


def table_probabilities(folder: Path | str, keys: list[str], labels: list[str],
                        held_out: set[str]) -> tuple[np.ndarray, list[str]]:
    """The mean of a folder's tables for each key, in ``labels`` order (rows of NaN where no table
    has the clip), and the names of the tables read.

    Raises ConfigError when a table learnt from a speaker in ``held_out``, or records no speakers.
    """
    folder = Path(folder)
    names = table_names(folder)
    if not names:
        raise ConfigError(f"no teacher tables in {folder}")
    total = np.zeros((len(keys), len(labels)))
    count = np.zeros(len(keys))
    index = pd.Index(keys)
    for name in names:
        rec = read_record(folder, name)
        seen = rec.get(schema.TRAIN_SPEAKERS)
        if not seen:
            raise ConfigError(f"teacher table {folder / name} does not record the speakers it learnt from")
        if held_out & set(seen):
            raise ConfigError(f"teacher table {folder / name} learnt from speakers this run holds out: "
                              f"{', '.join(sorted(held_out & set(seen))[:6])}")
        df = pd.read_csv(folder / f"{name}{TABLE}").drop_duplicates(KEY).set_index(KEY)
        at = df.index.get_indexer(index)
        hit = at >= 0
        cols = np.zeros((len(df), len(labels)))
        for j, lab in enumerate(labels):
            if f"p_{lab}" in df:
                cols[:, j] = df[f"p_{lab}"].to_numpy(float)
        total[hit] += cols[at[hit]]
        count[hit] += 1
    out = np.full((len(keys), len(labels)), np.nan, np.float32)
    known = count > 0
    mean = total[known] / count[known, None]
    sums = mean.sum(axis=1, keepdims=True)
    out[known] = np.where(sums > 0, mean / np.where(sums > 0, sums, 1.0), np.nan)
    return out, names
