"""Fit and judge a model's novelty gate (``ser_core.novelty``): "not sure" for recordings unlike its training.

    python training/novelty.py models/ravdess --dataset ravdess --protocol emobox6 \\
        --strangers ased+emovo+urdu --out training/results/candidates/novelty_default.json [--install]

1. Every clip of ``--dataset`` gets its signature through the model's own path (its first ``logmel``
   network's windows, as the Predictor cuts them).
2. Threshold, from training speakers only: for each fold of ``--protocol``, the gate is fitted on the fold's
   training speakers and measures the novelty of its held-out speakers; the threshold is the
   ``--quantile`` of those held-out novelties, pooled. The share of held-out clips above it is what the
   gate costs the voices the model knows.
3. The gate of the shipped model: fitted on every clip of ``--dataset`` with that threshold.
4. ``--strangers``: corpora the model never heard, through ``predict_many`` (the path of ``ser predict``):
   per corpus, the share flagged, "not sure" on wrong and on right answers with and without the gate,
   and the commonest answers.

``--install`` writes the gate into the model folder (``novelty.npz`` and ``spec.json``'s record) once the
figures are in. Only meaningful when the model learnt from ``--dataset`` and never heard the strangers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import audio, datasets, novelty, schema, splits  # noqa: E402
from ser_core.config import ModelSpec  # noqa: E402
from ser_core.jsonio import write_json  # noqa: E402
from ser_core.predict import gate_network, load_predictor  # noqa: E402

BLOCK = 64      # files per predict_many call


def signatures(net, paths: list[str]) -> np.ndarray:
    """One signature per clip (NaN rows for clips that cannot give one), as the Predictor computes it."""
    out = np.full((len(paths), 2 * net.cfg.n_mels), np.nan)
    for i, path in enumerate(paths):
        try:
            y = audio.load(path, sr=net.cfg.sample_rate, name=path)
        except Exception:  # noqa: BLE001  (an unreadable clip has no signature; counted below)
            continue
        sig = net.clip_signature(y)
        if sig is not None:
            out[i] = sig
    return out


def cross_fitted(sigs: np.ndarray, df: pd.DataFrame, protocol: str) -> np.ndarray:
    """Each clip's novelty under a gate fitted on the training speakers of the fold that holds it out."""
    nov = np.full(len(df), np.nan)
    ok = ~np.isnan(sigs).any(axis=1)
    for fold in range(1, splits.n_folds(protocol, 5, df) + 1):
        split = splits.make_split(df, protocol, fold, n_val=0)
        train = np.asarray([i for i in split.train if ok[i]])
        test = np.asarray([i for i in split.test if ok[i]])
        mean, whiten = novelty.fit(sigs[train])
        gate = novelty.Gate(mean, whiten, np.inf, None)
        nov[test] = gate.novelty(sigs[test])
    return nov


def stranger_rows(pred, gate: novelty.Gate, df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    paths = df["path"].tolist()
    for s in range(0, len(paths), BLOCK):
        for r, p in zip(df.iloc[s:s + BLOCK].itertuples(), pred.predict_many(paths[s:s + BLOCK])):
            if isinstance(p, BaseException) or p.emotion is None:
                continue
            rows.append({"corpus": r.corpus, "true": r.emotion, "pred": p.best, "confidence": p.confidence,
                         "not_sure_confidence": p.confidence < pred.calibration.threshold,
                         "novelty": p.novelty, "unfamiliar": gate.unfamiliar(p.novelty)})
    return pd.DataFrame(rows)


def shares(t: pd.DataFrame) -> dict:
    wrong = t["pred"] != t["true"]
    every = pd.Series(True, index=t.index)
    with_gate = t["not_sure_confidence"] | t["unfamiliar"]

    def rate(mask, sel):
        return round(float(mask[sel].mean()), 4) if sel.any() else None

    return {"n": len(t), "accuracy": round(float((~wrong).mean()), 4),
            "flagged": round(float(t["unfamiliar"].mean()), 4),
            "not_sure": {"without_gate": rate(t["not_sure_confidence"], every), "with_gate": rate(with_gate, every)},
            "not_sure_when_wrong": {"without_gate": rate(t["not_sure_confidence"], wrong),
                                    "with_gate": rate(with_gate, wrong)},
            "not_sure_when_right": {"without_gate": rate(t["not_sure_confidence"], ~wrong),
                                    "with_gate": rate(with_gate, ~wrong)},
            "answers": t["pred"].value_counts(normalize=True).round(3).head(3).to_dict(),
            "novelty_median": round(float(t["novelty"].median()), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--dataset", default="ravdess", help="what the model learnt from")
    ap.add_argument("--protocol", default="emobox6", help="speaker folds for the threshold")
    ap.add_argument("--quantile", type=float, default=0.99)
    ap.add_argument("--strangers", default="", help="corpora the model never heard (e.g. ased+emovo+urdu)")
    ap.add_argument("--out", required=True, help="JSON report")
    ap.add_argument("--install", action="store_true", help="store the gate with the model")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    pred = load_predictor(args.model)
    net = gate_network(pred)
    df = datasets.load_dataset(args.dataset).reset_index(drop=True)
    sigs = signatures(net, df["path"].tolist())
    nov = cross_fitted(sigs, df, args.protocol)
    known = ~np.isnan(nov)
    threshold = float(np.quantile(nov[known], args.quantile))
    rule = (f"{args.quantile:.0%} quantile of held-out speakers' novelty, {args.dataset} {args.protocol} "
            "(each fold's gate fitted on its training speakers)")
    ok = ~np.isnan(sigs).any(axis=1)
    gate = novelty.make_gate(sigs[ok], threshold, net.cfg, fitted_on=f"{args.dataset}: {int(ok.sum())} clips",
                             threshold_rule=rule)
    report = {"command": "python training/novelty.py " + " ".join(argv or sys.argv[1:]),
              "model": args.model, "threshold": round(threshold, 4), "threshold_rule": rule,
              "held_out": {"clips": int(known.sum()), "flagged": round(float((nov[known] > threshold).mean()), 4),
                           "novelty_median": round(float(np.median(nov[known])), 2)}}
    oof = Path(args.model) / schema.PREDICTIONS
    if oof.exists():     # the model's own out-of-fold answers, with the cross-fitted novelty of each clip
        table = pd.read_csv(oof)
        by_file = dict(zip(df["path"].map(lambda p: Path(p).name), nov))
        table["novelty"] = table["file"].map(by_file)
        table["unfamiliar"] = table["novelty"] > threshold
        table["not_sure_confidence"] = table["confidence"] < pred.calibration.threshold
        report["held_out"]["answers"] = shares(table.dropna(subset=["novelty"]))
    if args.strangers:
        pred.use_gate(gate)       # the stranger answers carry the novelty of this gate
        strangers = datasets.load_dataset(args.strangers)
        rows = stranger_rows(pred, gate, strangers)
        report["strangers"] = {c: shares(g.reset_index(drop=True)) for c, g in rows.groupby("corpus")}
    report["seconds"] = round(time.monotonic() - t0, 1)
    write_json(Path(args.out), report)
    print(json.dumps(report, indent=1))
    if args.install:
        spec = ModelSpec.load(Path(args.model) / schema.SPEC)
        spec.extra[novelty.SPEC_KEY] = gate.save(args.model)
        spec.save(Path(args.model) / schema.SPEC)
        print(f"gate stored in {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
