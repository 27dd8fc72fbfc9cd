"""A model on corpora it never trained on: accuracy on all eight and on each corpus's own emotions,
ECE, "not sure" figures and what it answers (to see a collapse onto one or two classes).

    python training/strangers.py MODEL_DIR OUT.csv [DATASET]     (DATASET default: ased+emovo+urdu)

Every clip goes through the same path as `ser predict` (``predict_many``: its batched form). Only
meaningful for corpora the model never heard.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import calibration, datasets, evaluation  # noqa: E402
from ser_core.predict import load_predictor  # noqa: E402

BLOCK = 64      # files per predict_many call


def predictions(model_dir: str, df: pd.DataFrame) -> tuple[pd.DataFrame, object]:
    """One row per readable clip: truth, the model's answer, "not sure" and calibrated probabilities."""
    pred = load_predictor(model_dir)
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


def main() -> int:
    model, out = sys.argv[1], sys.argv[2]
    df = datasets.load_dataset(sys.argv[3] if len(sys.argv) > 3 else "ased+emovo+urdu")
    table, pred = predictions(model, df)
    table.to_csv(out, index=False)
    threshold = pred.calibration.threshold if pred.calibration else calibration.DEFAULT_THRESHOLD
    print(json.dumps(report(table, list(pred.labels), threshold), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
