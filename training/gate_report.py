"""Which expert answers: the corpus gate of a ``--corpus-experts`` cross-validation, clip by clip.

    python training/gate_report.py CV_DIR [CV_DIR ...] [--out FILE.json]

For every fold model under the given cross-validation folders (``fold-*/model``), the gate's weights
on that fold's own test clips (the rows of its ``predictions.csv``), through the same windowed path
``ser predict`` uses (the gate is read as if it were the model's output, windows averaged). Prints and
saves, per test corpus, the mean weight of every training corpus's expert and how often each weighs
most. A fold model never saw its test speakers, so these are the gate's out-of-fold answers; under
``--protocol loco`` the test corpus has no expert of its own, and the table says which it is blended from.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import datasets, schema  # noqa: E402
from ser_core.config import ModelSpec  # noqa: E402


def fold_gate(fold_dir: Path, paths: dict[tuple[str, str], str]) -> pd.DataFrame:
    """The gate's weights on one fold's test clips: a row per clip, a column per training corpus."""
    from ser_core import experts
    from ser_core.predict import Predictor, load_keras

    spec = ModelSpec.load(fold_dir / schema.MODEL / schema.SPEC)
    model = load_keras(fold_dir / schema.MODEL / schema.WEIGHTS)
    if not experts.n_experts(model):
        raise SystemExit(f"{fold_dir}: this model has no corpus experts")
    rows = pd.read_csv(fold_dir / schema.PREDICTIONS)
    corpora = sorted(str(spec.extra["dataset"]).split("+"))
    if len(corpora) != experts.n_experts(model):     # a loco fold: the test corpus is not among them
        test = set(rows["corpus"].astype(str))
        corpora = [c for c in corpora if c not in test]
    from ser_core.tf_setup import keras

    gate = keras().Model(model.inputs, model.get_layer(experts.GATE).output)
    predictor = Predictor.from_model(gate, dataclasses.replace(spec, labels=tuple(corpora)))
    out = []
    for corpus, name in zip(rows["corpus"].astype(str), rows["file"].astype(str)):
        p = predictor.predict_file(paths[(corpus, name)]).probabilities
        out.append({"corpus": corpus, "file": name, **{f"w_{c}": p[c] for c in corpora}})
    return pd.DataFrame(out)


def summary(table: pd.DataFrame) -> dict[str, dict]:
    """Per test corpus: mean weight of each expert and the share of clips where it weighs most."""
    cols = [c for c in table.columns if c.startswith("w_")]
    out = {}
    for corpus, part in table.groupby("corpus"):
        w = part[cols].fillna(0.0).to_numpy()
        top = np.asarray(cols)[w.argmax(axis=1)]
        out[corpus] = {"n": len(part),
                       "mean_weight": {c[2:]: round(float(part[c].fillna(0.0).mean()), 4) for c in cols},
                       "weighs_most": {c[2:]: round(float((top == c).mean()), 4) for c in cols}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cv_dirs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    folds = sorted(f for d in args.cv_dirs for f in d.glob("fold-*") if (f / schema.MODEL / schema.SPEC).exists())
    if not folds:
        raise SystemExit("no fold models found under " + ", ".join(map(str, args.cv_dirs)))
    spec = ModelSpec.load(folds[0] / schema.MODEL / schema.SPEC)
    df = datasets.load_dataset(str(spec.extra["dataset"]))
    paths = {(str(c), Path(p).name): str(p) for c, p in zip(df["corpus"], df["path"])}
    table = pd.concat([fold_gate(f, paths) for f in folds], ignore_index=True)
    result = summary(table)
    for corpus, s in result.items():
        print(f"{corpus} ({s['n']} clips): mean weight "
              + ", ".join(f"{c} {w:.2f}" for c, w in s["mean_weight"].items())
              + "; weighs most " + ", ".join(f"{c} {w:.0%}" for c, w in s["weighs_most"].items()))
    if args.out:
        args.out.write_text(json.dumps({"folds": [str(f) for f in folds], "corpora": result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
