"""A model on corpora it never trained on: accuracy on all eight and on each corpus's own emotions,
ECE, "not sure" figures and what it answers (to see a collapse onto one or two classes).

    python training/strangers.py MODEL_DIR OUT.csv [DATASET] [--runtime int8] [--against EARLIER.csv]
    (DATASET default: ased+emovo+urdu; --against: how far these answers are from an earlier table's)
    python training/strangers.py models/ravdess training/results/candidates/strangers_default.csv.gz \
        --from-table --save      # the figures of a table made before, kept as MODEL_DIR/strangers.json

``--save`` writes the figures into the model folder (``schema.STRANGERS``), where the model card
(``training/report.py``) shows them: what a stranger's recording gets.

Every clip goes through the same path as `ser predict` (``predict_many``: its batched form). Only
meaningful for corpora the model never heard.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import calibration, datasets, evaluation, schema  # noqa: E402
from ser_core.config import ModelSpec  # noqa: E402
from ser_core.jsonio import write_json  # noqa: E402
from ser_core.predict import load_predictor  # noqa: E402

BLOCK = 64      # files per predict_many call


def predictions(model_dir: str, df: pd.DataFrame, runtime: str = "auto") -> tuple[pd.DataFrame, object]:
    """One row per readable clip: truth, the model's answer, "not sure" and calibrated probabilities."""
    pred = load_predictor(model_dir, runtime=runtime)
    rows = []
    paths = df["path"].tolist()
    for s in range(0, len(paths), BLOCK):
        for r, p in zip(df.iloc[s:s + BLOCK].itertuples(), pred.predict_many(paths[s:s + BLOCK])):
            if isinstance(p, BaseException) or p.emotion is None:
                continue                                    # unreadable or no speech: not an answer
            rows.append({"file": Path(r.path).name, "corpus": r.corpus, "speaker": r.speaker, "gender": r.gender,
                         "true": r.emotion, "pred": p.best, "not_sure": p.not_sure, "confidence": p.confidence,
                         **{f"p_{k}": v for k, v in p.probabilities.items()}})
    return pd.DataFrame(rows), pred


def report(table: pd.DataFrame, labels: list[str], threshold: float) -> dict:
    """Per corpus: accuracy (own emotions and all eight), ECE, "not sure" figures, the three commonest answers."""
    per = evaluation.per_corpus(table, labels)
    res = {}
    for c, g in table.groupby("corpus"):
        probs, y, _ = calibration.table_arrays(g, labels)
        res[c] = {"n": len(g), "own_acc": per[c]["own"]["accuracy"], "acc": per[c]["accuracy"],
                  "ece": calibration.ece(probs, y), **calibration.not_sure_rate(probs, y, threshold),
                  "answers": g["pred"].value_counts(normalize=True).round(3).head(3).to_dict()}
    return res


def agreement(table: pd.DataFrame, earlier: pd.DataFrame) -> dict:
    """Two tables of the same clips (e.g. the float and the int8 runtime): the share of clips with the same
    answer and the same "not sure", the largest probability difference, each one's accuracy per corpus."""
    a, b = table.set_index(["corpus", "file"]), earlier.set_index(["corpus", "file"])
    if set(a.index) != set(b.index):
        raise SystemExit("the two tables do not hold the same clips")
    b = b.loc[a.index]
    cols = [c for c in a.columns if c.startswith("p_")]
    return {"clips": len(a), "same_answer": round(float((a["pred"] == b["pred"]).mean()), 4),
            "same_not_sure": round(float((a["not_sure"] == b["not_sure"]).mean()), 4),
            "max_abs_prob_diff": round(float((a[cols] - b[cols]).abs().to_numpy().max()), 4),
            "accuracy": {c: {"this": round(float((g["true"] == g["pred"]).mean()), 4),
                             "earlier": round(float((b.loc[g.index, "true"] == b.loc[g.index, "pred"]).mean()), 4)}
                         for c, g in a.groupby(level="corpus")}}


def main() -> int:
    import argparse

    from ser_core.lite import RUNTIMES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("dataset", nargs="?", default="ased+emovo+urdu")
    ap.add_argument("--runtime", choices=RUNTIMES, default=RUNTIMES[0], help="as for ser predict")
    ap.add_argument("--against", help="an earlier OUT.csv of the same clips: print how far these answers are")
    ap.add_argument("--from-table", action="store_true",
                    help="read OUT.csv, made before by this script with this model, instead of predicting")
    ap.add_argument("--save", action="store_true",
                    help=f"also keep the figures as MODEL/{schema.STRANGERS}, for the model card")
    args = ap.parse_args()
    if args.from_table:
        table = pd.read_csv(args.out)
        spec = ModelSpec.load(Path(args.model) / "spec.json")
        labels = list(spec.labels)
        stored = spec.extra.get(calibration.SPEC_KEY)
        threshold = stored["threshold"] if stored else calibration.DEFAULT_THRESHOLD
    else:
        table, pred = predictions(args.model, datasets.load_dataset(args.dataset), args.runtime)
        table.to_csv(args.out, index=False)
        labels = list(pred.labels)
        threshold = pred.calibration.threshold if pred.calibration else calibration.DEFAULT_THRESHOLD
    figures = report(table, labels, threshold)
    print(json.dumps(figures, indent=1))
    if args.save:
        dest = Path(args.model) / schema.STRANGERS
        own = {c: evaluation.own_emotions(table[table["corpus"] == c], labels) for c in figures}
        write_json(dest, {"table": Path(args.out).as_posix(), "threshold": threshold,
                          "corpora": {c: {**v, "own_labels": own[c]} for c, v in figures.items()}})
        print(f"written: {dest}")
    if args.against:
        print(json.dumps({"against": args.against, **agreement(table, pd.read_csv(args.against))}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
