"""A model on corpora it never trained on: accuracy on all eight and on each corpus's own emotions,
ECE, "not sure" figures and what it answers (to see a collapse onto one or two classes).

    python training/strangers.py MODEL_DIR OUT.csv [DATASET]     (DATASET default: ased+emovo+urdu)

Every clip goes through the same path as `ser predict`. Only meaningful for corpora the model never heard.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np, pandas as pd
from ser_core import datasets, evaluation, calibration
from ser_core.predict import load_predictor
from ser_core.errors import SERError
model = sys.argv[1]; out = sys.argv[2]
pred = load_predictor(model)
df = datasets.load_dataset(sys.argv[3] if len(sys.argv) > 3 else "ased+emovo+urdu")
rows = []
for r in df.itertuples():
    try:
        p = pred.predict_file(r.path)
    except SERError:
        continue
    rows.append({"file": r.path.split("/")[-1], "corpus": r.corpus, "speaker": r.speaker, "gender": r.gender,
                 "true": r.emotion, "pred": p.best, "not_sure": p.not_sure, "confidence": p.confidence,
                 **{f"p_{k}": v for k, v in p.probabilities.items()}})
t = pd.DataFrame(rows); t.to_csv(out, index=False)
labels = list(pred.labels)
m = evaluation.evaluate(t, labels)
res = {}
for c, g in t.groupby("corpus"):
    probs, y, _ = calibration.table_arrays(g, labels)
    res[c] = {"n": len(g), "own_acc": m["per_corpus"][c]["own"]["accuracy"], "acc": m["per_corpus"][c]["accuracy"],
              "ece": calibration.ece(probs, y), **calibration.not_sure_rate(probs, y, pred.calibration.threshold if pred.calibration else 0.5),
              "answers": g["pred"].value_counts(normalize=True).round(3).head(3).to_dict()}
print(json.dumps(res, indent=1))
