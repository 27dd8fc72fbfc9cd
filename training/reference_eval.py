"""Candidate E of ``docs/preregistration-session25.md``: one neutral clip of the speaker's as a reference.

    python training/reference_eval.py --oof models/ravdess/predictions.csv \\
        --strangers STRANGERS.csv [--k 1] [--out training/results/candidates/reference_E.json]

``STRANGERS.csv`` is ``training/strangers.py MODEL OUT.csv``'s table (the model's calibrated probabilities of
clips of corpora it never heard, through ``ser predict``'s path); ``--oof`` the same model's out-of-fold table
on its own corpus (RAVDESS). For every speaker with a neutral clip, the reference ``r`` is the mean
probabilities of their first ``k`` neutral clips (file-name order), and every other clip of theirs is answered
from ``p * q / r`` (renormalised), ``q`` the mean probabilities of the out-of-fold table's neutral clips (for one
of its own clips, from the other folds only): what the model hears in the speaker's neutral voice beyond what it
hears in a familiar one is taken out. Answers are the most likely of the corpus's own emotions; the reference
clips are never scored. Per corpus: accuracy without and with the reference on the same clips, McNemar's exact
test, the share of the two commonest answers, and the answers' shares.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import evaluation  # noqa: E402
from ser_core.jsonio import write_json  # noqa: E402

NEUTRAL = "neutral"


def corrected(p: np.ndarray, r: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``p * q / r`` row by row, renormalised (``p``: clips' probabilities; ``r``: the speaker's reference's;
    ``q``: a familiar speaker's neutral profile)."""
    out = np.asarray(p, np.float64) * (np.asarray(q, np.float64) / np.maximum(np.asarray(r, np.float64), 1e-12))
    return out / out.sum(axis=-1, keepdims=True)


def neutral_profile(oof: pd.DataFrame, probs: list[str], fold=None) -> np.ndarray:
    """Mean probabilities of the out-of-fold table's neutral clips (those outside ``fold`` when given)."""
    sel = oof["true"] == NEUTRAL
    if fold is not None:
        sel &= oof["fold"] != fold
    if not sel.any():
        raise SystemExit("the out-of-fold table has no neutral clip to take a profile from")
    return oof.loc[sel, probs].to_numpy(np.float64).mean(axis=0)


def with_reference(table: pd.DataFrame, probs: list[str], profile, k: int) -> pd.DataFrame:
    """Every scored clip (speakers with a neutral clip, references left out) with its answer without
    (``plain``) and with (``ref``) the reference, both among the corpus's own emotions.
    ``profile(row)`` gives ``q`` for a clip."""
    rows = []
    for corpus, c in table.groupby("corpus"):
        own = [p for p in probs if p[2:] in set(c["true"])]
        cols = [probs.index(p) for p in own]
        for speaker, s in c.groupby("speaker"):
            refs = s[s["true"] == NEUTRAL].sort_values("file").head(k)
            if len(refs) < k:
                continue
            r = refs[probs].to_numpy(np.float64).mean(axis=0)
            rest = s.drop(index=refs.index)
            if rest.empty:
                continue
            p = rest[probs].to_numpy(np.float64)
            q = np.stack([profile(row) for _, row in rest.iterrows()])
            fixed = corrected(p, r, q)
            rows.append(pd.DataFrame({
                "corpus": corpus, "speaker": speaker, "file": rest["file"].to_numpy(), "true": rest["true"].to_numpy(),
                "plain": [own[i][2:] for i in p[:, cols].argmax(axis=1)],
                "ref": [own[i][2:] for i in fixed[:, cols].argmax(axis=1)]}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def figures(scored: pd.DataFrame) -> dict:
    """Per corpus: accuracy without and with the reference, McNemar, the two commonest answers' share."""
    out = {}
    for corpus, g in scored.groupby("corpus"):
        plain, ref = (g["plain"] == g["true"]).to_numpy(), (g["ref"] == g["true"]).to_numpy()
        entry = {"clips": int(len(g)), "speakers": int(g["speaker"].nunique()),
                 "accuracy": {"without": round(float(plain.mean()), 4), "with_reference": round(float(ref.mean()), 4)},
                 "mcnemar": evaluation.mcnemar(ref, plain)}
        for name in ("plain", "ref"):
            share = g[name].value_counts(normalize=True)
            entry[f"two_commonest_share_{name}"] = round(float(share.head(2).sum()), 4)
            entry[f"answers_{name}"] = share.round(3).to_dict()
        out[corpus] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oof", required=True, help="the model's out-of-fold predictions on its own corpus")
    ap.add_argument("--strangers", required=True, help="training/strangers.py's table of the same model")
    ap.add_argument("--k", type=int, default=1, help="neutral clips per speaker in the reference")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    oof, strangers = pd.read_csv(args.oof), pd.read_csv(args.strangers)
    probs = [c for c in oof.columns if c.startswith("p_")]
    if sorted(probs) != sorted(c for c in strangers.columns if c.startswith("p_")):
        ap.error("the two tables do not predict the same emotions")
    folds = {f: neutral_profile(oof, probs, f) for f in oof["fold"].unique()}
    everyone = neutral_profile(oof, probs)
    scored = pd.concat([with_reference(oof, probs, lambda row: folds[row["fold"]], args.k),
                        with_reference(strangers, probs, lambda row: everyone, args.k)], ignore_index=True)
    report = {"command": "python training/reference_eval.py " + " ".join(argv or sys.argv[1:]), "k": args.k,
              "neutral_profile": dict(zip([p[2:] for p in probs], np.round(everyone, 4).tolist())),
              "corpora": figures(scored)}
    print(json.dumps(report, indent=1))
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
