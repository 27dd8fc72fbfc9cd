"""Probes that read the speaker's gender (session 37, candidates GX and GI, docs/preregistration-session37.md).

    python training/gender_probe.py --work runs/whisper-wu2s --channel-copies babble:1+loudbabble:2 \
        --choices training/results/candidates/emobox6_WU2S_probe_predictions_choices.json \
        --kind GX --out training/results/candidates/emobox6_GX_probe_predictions.csv

Under the emobox6 speaker folds over the four corpora, each fold: a gender classifier (logistic regression on
the standardised clean vectors of the fold's training speakers) gives every test clip ``P(female | x)``; no
test clip's gender label is read. Then

- ``GX``: one emotion probe on the female training rows and one on the male (with their channel copies), the
  answer ``P(f) p_f + (1 - P(f)) p_m``;
- ``GI``: one probe on ``[z, s z]`` with ``s = 2 P(f) - 1`` at test time and the labelled gender (+-1) for
  the training rows and their copies.

C is the fold's choice in ``--choices`` (WU2S's nested folds). The table is ``encoder_probe.py cv``'s layout, so
``encoder_probe.py summary`` reads it; the gender classifier's accuracy on each fold's test clips is printed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import encoder_probe as ep  # noqa: E402
from ser_core.config import EMOTIONS  # noqa: E402

GENDER_C = 0.1      # the gender classifier's regularisation (a fixed choice: gender is easy to hear)


def _fit(feats: np.ndarray, y: np.ndarray, w: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    clf = LogisticRegression(C=c, max_iter=2000)
    with threadpool_limits(1, user_api="blas"):       # as encoder_probe.probe: L-BFGS's small products
        clf.fit(feats, y, sample_weight=w)
    return clf


def _aligned(clf, feats: np.ndarray) -> np.ndarray:
    """``clf``'s probabilities on ``feats`` in EMOTIONS' order (0 for a label it never trained on)."""
    out = np.zeros((len(feats), len(EMOTIONS)))
    p = clf.predict_proba(feats)
    for k, lab in enumerate(clf.classes_):
        out[:, EMOTIONS.index(lab)] = p[:, k]
    return out


def training_rows(z: np.ndarray, df: pd.DataFrame, rows: np.ndarray, aug_z: np.ndarray | None):
    """The standardised training features of ``rows`` (and their copies' after them) and the rows' table."""
    feats, table = z[rows], df[rows].reset_index(drop=True)
    if aug_z is not None:
        k = aug_z.shape[1]
        feats = np.concatenate([feats, aug_z[rows].reshape(-1, z.shape[1])])
        table = pd.concat([table, table.loc[np.repeat(table.index.to_numpy(), k)]], ignore_index=True)
    return feats, table


def fold_probs(kind: str, x: np.ndarray, df: pd.DataFrame, train: np.ndarray, test: np.ndarray, c: float,
               aug: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One fold's test probabilities (EMOTIONS' order) and the test clips' ``P(female | x)``."""
    mu, sd = ep.standardiser(x, train, aug)
    z = (x - mu) / sd
    aug_z = None if aug is None else (aug - mu) / sd
    female = (df["gender"] == "female").to_numpy()
    gender = _fit(z[train], female[train].astype(int), np.ones(int(train.sum())), GENDER_C)
    p_f = gender.predict_proba(z[test])[:, list(gender.classes_).index(1)]
    if kind == "GX":
        probs = np.zeros((int(test.sum()), len(EMOTIONS)))
        for is_f, weight in ((True, p_f), (False, 1 - p_f)):
            rows = train & (female == is_f)
            feats, table = training_rows(z, df, rows, aug_z)
            clf = _fit(feats, table["emotion"], ep.cell_weights(table), c)
            probs += weight[:, None] * _aligned(clf, z[test])
        return probs, p_f
    if kind == "GI":
        feats, table = training_rows(z, df, train, aug_z)
        s = np.where(table["gender"] == "female", 1.0, -1.0)[:, None]
        clf = _fit(np.hstack([feats, s * feats]), table["emotion"], ep.cell_weights(table), c)
        s_test = (2 * p_f - 1)[:, None]
        return _aligned(clf, np.hstack([z[test], s_test * z[test]])), p_f
    raise SystemExit(f"unknown kind {kind!r}: GX or GI")


def run(work: Path, kind: str, choices: Path, out: Path, copies: str | None = None) -> pd.DataFrame:
    df, x = ep.load_vectors(work)
    df = df.reset_index(drop=True)
    aug = ep.load_channel_vectors(work, df, copies) if copies else None
    chosen = json.loads(choices.read_text())
    parts = []
    for fold, train, test, c in ep.emobox6_folds(df, chosen):
        probs, p_f = fold_probs(kind, x, df, train, test, c, aug)
        hit = ((p_f >= 0.5) == (df.loc[test, "gender"] == "female").to_numpy()).mean()
        parts.append(ep.fold_table(df, test, probs, list(EMOTIONS), fold))
        print(f"fold {fold}: {test.sum()} test clips, C={c}, gender classifier right on {100 * hit:.1f} %",
              flush=True)
    return ep.write_table(parts, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--kind", choices=("GX", "GI"), required=True)
    ap.add_argument("--choices", type=Path, required=True, help="the WU2S cross-validation's choices (C per fold)")
    ap.add_argument("--channel-copies", default=None)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    run(a.work, a.kind, a.choices, a.out, a.channel_copies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
