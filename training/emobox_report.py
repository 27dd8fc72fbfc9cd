"""EmoBox cross-validations over several corpora side by side: every corpus's accuracy, RAVDESS's recall and
answer share per emotion, its gender gap and the pooled calibration error.

    python training/emobox_report.py NAME=PREDICTIONS.csv [NAME=PREDICTIONS.csv ...] [--out FILE.json]

Each table is the out-of-fold ``predictions.csv`` of a ``--protocol emobox6`` cross-validation (with one corpus
or several; a model folder's ``predictions.csv`` too). The figures are the ones the pre-registrations compare
(``docs/preregistration-session*.md``): per corpus the accuracy on its own emotions (the most likely of them;
chance = 1 / their number), UAR and accuracy per gender; for RAVDESS the recall of each emotion, the share of
its clips given each answer and the female-male gap with a speaker-bootstrap interval; pooled ECE before and
after temperature scaling cross-fitted by fold (no clip's temperature saw its fold); RAVDESS's accuracy per fold,
and for every table after the first, McNemar's exact test against the first on the RAVDESS clips both hold.
``NAME=A.csv+B.csv`` is the mean of the tables' probabilities (``tables.mean_table``). A table that holds only
some folds (a run still going) is reported with the folds it has, and says so: such figures decide nothing.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import calibration, evaluation  # noqa: E402
from tables import named_tables  # noqa: E402

HEADLINE = "ravdess"


def summary(table: pd.DataFrame) -> dict:
    """The figures of one out-of-fold predictions table (rows of every corpus it holds)."""
    labels = [c[2:] for c in table.columns if c.startswith("p_")]
    out: dict = {"folds": sorted(int(f) for f in table["fold"].unique()) if "fold" in table else [],
                 "n": int(len(table)), "corpora": {}}
    for corpus, entry in evaluation.per_corpus(table, labels).items():
        out["corpora"][corpus] = {"n": int((table["corpus"] == corpus).sum()),
                                  "own_accuracy": round(entry["own"]["accuracy"], 4),
                                  "accuracy": round(entry["accuracy"], 4), "uar": round(entry["uar"], 4),
                                  "per_gender": {g: round(v, 4) for g, v in entry["per_gender"].items()}}
    head = table[table["corpus"] == HEADLINE]
    if len(head):
        own = evaluation.own_emotions(head, labels)
        pred = pd.Series(evaluation.restricted_pred(head, own), index=head.index)
        out["ravdess_recall"] = {lab: round(float((pred[head["true"] == lab] == lab).mean()), 4) for lab in own}
        out["ravdess_answer_share"] = {lab: round(float((pred == lab).mean()), 4) for lab in own}
        if "fold" in head:
            right = head["true"].to_numpy() == pred.to_numpy()
            out["ravdess_per_fold"] = {int(f): round(float(right[(head["fold"] == f).to_numpy()].mean()), 4)
                                       for f in sorted(head["fold"].unique())}
        if head["gender"].nunique() == 2:
            gap = evaluation.gender_gap(head.assign(pred=pred))
            out["ravdess_gender_gap"] = {"gap": round(gap["gap"], 4), "ci95": [round(v, 4) for v in gap["ci95"]]}
    probs, y, _ = calibration.table_arrays(table)
    out["ece_before"] = round(calibration.ece(probs, y), 4)
    out["ece_after_cross_fitted"] = round(calibration.ece(calibration.cross_fitted(table), y), 4) \
        if len(out["folds"]) > 1 else None
    return out


def against(table: pd.DataFrame, reference: pd.DataFrame) -> dict | None:
    """McNemar's exact test of ``table`` against ``reference`` on the RAVDESS clips both hold (by file),
    each answer restricted to RAVDESS's own emotions; None when they share no RAVDESS clip."""
    labels = [c[2:] for c in table.columns if c.startswith("p_")]
    heads = [t[t["corpus"] == HEADLINE] for t in (table, reference)]
    owns = [evaluation.own_emotions(h, labels) for h in heads]
    shared = evaluation.common_clips(*heads)
    if shared[0].empty:
        return None
    right = [evaluation.restricted_pred(h, own) == h["true"].to_numpy() for h, own in zip(shared, owns)]
    return {"n": int(len(shared[0])), **evaluation.mcnemar(*right)}


def main(argv: list[str] | None = None) -> int:
    tables, out = named_tables(__doc__.split("\n\n")[0], argv)
    results = {name: summary(table) for name, table in tables.items()}
    names = list(tables)
    for name in names[1:]:
        test = against(tables[name], tables[names[0]])
        if test is not None:
            results[name]["mcnemar_against"] = {"table": names[0], **test}
    for name, res in results.items():
        folds = res["folds"]
        partial = "" if len(folds) in (0, 6) else f"  (folds {', '.join(map(str, folds))} only: decides nothing)"
        print(f"{name}: {res['n']} clips{partial}")
        for corpus, c in res["corpora"].items():
            genders = ", ".join(f"{g} {100 * v:.1f}" for g, v in c["per_gender"].items())
            print(f"  {corpus:8} own emotions {100 * c['own_accuracy']:5.1f} %  UAR {100 * c['uar']:5.1f} %  "
                  f"({c['n']} clips; {genders})")
        if "ravdess_recall" in res:
            print("  RAVDESS recall   " + "  ".join(f"{k} {100 * v:.0f}" for k, v in res["ravdess_recall"].items()))
            print("  RAVDESS answers  " + "  ".join(f"{k} {100 * v:.0f}"
                                                    for k, v in res["ravdess_answer_share"].items()))
        if "ravdess_gender_gap" in res:
            g = res["ravdess_gender_gap"]
            print(f"  RAVDESS female - male {100 * g['gap']:+.1f} points "
                  f"(95 % CI {100 * g['ci95'][0]:+.1f} to {100 * g['ci95'][1]:+.1f})")
        if "ravdess_per_fold" in res:
            print("  RAVDESS per fold " + " / ".join(f"{100 * v:.1f}" for v in res["ravdess_per_fold"].values()))
        if "mcnemar_against" in res:
            m = res["mcnemar_against"]
            print(f"  against {m['table']} on {m['n']} RAVDESS clips: right where it is wrong {m['a_only']}, "
                  f"the reverse {m['b_only']} (McNemar exact p = {m['p']:.3g})")
        after = res["ece_after_cross_fitted"]
        print(f"  pooled ECE {res['ece_before']:.3f}" + ("" if after is None else f", {after:.3f} calibrated "
                                                          "(cross-fitted by fold)"))
    if out:
        out.write_text(json.dumps(results, indent=1, default=lambda v: v.item() if isinstance(v, np.generic)
                                       else str(v)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
