"""What the report scripts share: ``NAME=PREDICTIONS.csv`` arguments, each read and checked, and ``--out``.

``NAME=A.csv+B.csv`` names the mean of several tables of the same clips (an ensemble of the models that
made them, each clip's probabilities averaged; the clips, and their folds where the tables have them, must be
the same in every table): what averaging those models' networks would have answered out of fold.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

NEEDED = ("corpus", "true", "pred")          # the columns every out-of-fold predictions table has
CLIP_KEYS = ("corpus", "file")                # what names one clip across tables


def named_tables(description: str, argv: list[str] | None = None) -> tuple[dict[str, pd.DataFrame], Path | None]:
    """The tables named on the command line and the ``--out`` JSON path; a bad argument ends the
    program with a one-line message (exit status 2), never a traceback."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("tables", nargs="+", metavar="NAME=CSV")
    ap.add_argument("--out", type=Path, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    tables = {}
    for item in args.tables:
        name, _, spec = item.partition("=")
        paths = [spec] if Path(spec).is_file() else spec.split("+")
        if not spec or not all(p and Path(p).is_file() for p in paths):
            ap.error(f"{item!r} is not NAME=PREDICTIONS.csv (or NAME=A.csv+B.csv) of existing files")
        parts = [_read(ap, p) for p in paths]
        try:
            tables[name] = parts[0] if len(parts) == 1 else mean_table(parts)
        except ValueError as exc:
            ap.error(f"{item}: {exc}")
    return tables, args.out


def _read(ap: argparse.ArgumentParser, path: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        ap.error(f"{path} cannot be read as a CSV table ({exc})")
    missing = [c for c in NEEDED if c not in table.columns]
    if missing:
        ap.error(f"{path} is not a predictions table (no {', '.join(missing)} column)")
    return table


def mean_table(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The first table with every clip's probabilities the mean of all the tables' (``pred`` and
    ``confidence`` follow them); ``ValueError`` when the tables do not hold the same clips, folds and labels."""
    keys = [c for c in CLIP_KEYS if all(c in t.columns for t in tables)]
    if not keys:
        raise ValueError(f"the tables share none of the columns that name a clip ({', '.join(CLIP_KEYS)})")
    probs = [c for c in tables[0].columns if c.startswith("p_")]
    if not probs:
        raise ValueError("the first table has no probability columns (p_...)")
    base = tables[0].sort_values(keys).reset_index(drop=True)
    total = base[probs].to_numpy(np.float64, copy=True)
    for t in tables[1:]:
        if sorted(c for c in t.columns if c.startswith("p_")) != sorted(probs):
            raise ValueError("the tables do not predict the same emotions")
        t = t.sort_values(keys).reset_index(drop=True)
        if len(t) != len(base) or not t[keys].equals(base[keys]):
            raise ValueError("the tables do not hold the same clips")
        if "fold" in t and "fold" in base and not t["fold"].equals(base["fold"]):
            raise ValueError("the tables put some clip in different folds")
        total += t[probs].to_numpy(np.float64)
    mean = total / len(tables)
    out = base.copy()
    out[probs] = mean
    out["pred"] = [probs[i][2:] for i in mean.argmax(axis=1)]
    if "confidence" in out:
        out["confidence"] = mean.max(axis=1)
    return out
