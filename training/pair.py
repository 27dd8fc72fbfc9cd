"""Two models as one: the mean of their probabilities, measured without training anything new.

    python training/pair.py MODEL_A MODEL_B OUT_DIR [--install NAME]

MODEL_A was trained on some corpora (its own cross-validation's out-of-fold predictions in
``predictions.csv``); MODEL_B on more of them (``predictions.csv`` from the same EmoBox folds over
all its corpora, and ``loco_predictions.csv``). Every figure stays speaker-independent:

- B's cross-validation rows: on A's corpora, A's out-of-fold probabilities of the same fold (the same
  test speakers; the folds are checked to match); on the others, A's final model, which never heard
  any speaker of them;
- B's leave-one-corpus-out rows: a corpus A trained on is held out from B alone (A has no version
  without it); any other gets A's final model too.

OUT_DIR gets ``cv/predictions.csv``, ``loco/predictions.csv`` and ``report.json`` (per-corpus metrics,
calibration fitted on the pair's out-of-fold predictions, leave-one-corpus-out with transfer calibration).
The pre-registered candidate B of ``docs/preregistration-session9.md``.

``--install NAME`` also writes ``models/NAME``: one ensemble folder holding both models' networks,
weighted so that each model is half of the mean whatever its member count, with the pair's
calibration, out-of-fold predictions and metrics (the folder ``ser predict --model`` and the pages use).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shipping import calibrate, install  # noqa: E402

from ser_core import datasets, ensemble, evaluation  # noqa: E402
from ser_core.modeldir import network_dirs  # noqa: E402
from ser_core.predict import load_predictor  # noqa: E402


def probs(df: pd.DataFrame, labels: list[str]) -> np.ndarray:
    return np.nan_to_num(df[[f"p_{lab}" for lab in labels]].to_numpy(dtype=float), nan=0.0)


def final_probs(model_dir: Path, rows: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """The raw (uncalibrated) probabilities of a model's final networks for these rows' clips."""
    paths = datasets.load_dataset("+".join(sorted(rows["corpus"].unique())))
    where = {(c, Path(p).name): p for c, p in zip(paths["corpus"], paths["path"])}
    files = [where[(c, f)] for c, f in zip(rows["corpus"], rows["file"])]
    predictor = load_predictor(model_dir, calibrated=False)
    out = np.zeros((len(files), len(labels)))
    for s in range(0, len(files), 64):
        for j, p in enumerate(predictor.predict_many(files[s:s + 64])):
            if isinstance(p, BaseException) or p.emotion is None:
                raise SystemExit(f"{files[s + j]}: {p if isinstance(p, BaseException) else 'no speech'}")
            out[s + j] = [p.probabilities[lab] for lab in labels]
        print(f"  {min(s + 64, len(files))}/{len(files)} clips through {model_dir.name}", file=sys.stderr)
    return out


def with_probs(df: pd.DataFrame, p: np.ndarray, labels: list[str]) -> pd.DataFrame:
    out = df.copy()
    out[[f"p_{lab}" for lab in labels]] = p
    out["pred"] = np.asarray(labels)[p.argmax(axis=1)]
    out["confidence"] = p.max(axis=1)
    return out


def install_pair(a_dir: Path, b_dir: Path, out: Path, labels: list[str], calib, calib_report: dict,
                 name: str) -> Path:
    """models/NAME: both models' networks in one ensemble, each model half of the weighted mean."""
    cv, loco = (pd.read_csv(out / part / "predictions.csv") for part in ("cv", "loco"))
    b_metrics = json.loads((b_dir / "metrics.json").read_text())
    metrics = evaluation.evaluate(cv, labels, protocol=b_metrics["protocol"], speaker_independent=True)
    metrics["loco"] = evaluation.evaluate(loco, labels, protocol=b_metrics["loco"]["protocol"], speaker_independent=True)
    metrics["calibration"] = {**calib_report, "stored": calib.to_dict()}
    metrics["arch"] = "ensemble"
    metrics["final_model"] = {"pair": {"models": [str(a_dir), str(b_dir)], "shares": [0.5, 0.5],
                                       "a_final": json.loads((a_dir / "metrics.json").read_text()).get("final_model"),
                                       "b_final": b_metrics.get("final_model")}}
    nets = [network_dirs(a_dir), network_dirs(b_dir)]
    weights = [0.5 / len(n) for n in nets for _ in n]
    with tempfile.TemporaryDirectory() as tmp:        # built from both before models/NAME (maybe B) is replaced
        built = ensemble.build(nets[0] + nets[1], Path(tmp) / "pair", weights=weights)
        return install(built, out / "cv", metrics, None, calib=calib, loco_dir=out / "loco", name=name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_a", type=Path)
    ap.add_argument("model_b", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--install", metavar="NAME", help="also write the pair as models/NAME")
    ap.add_argument("--loco-only", action="store_true",
                    help="MODEL_B is a leave-one-corpus-out run folder (its predictions.csv): measure the pair's "
                         "leave-one-corpus-out accuracy only (a candidate stopped after that step)")
    args = ap.parse_args()
    a_dir, b_dir, out = args.model_a, args.model_b, args.out_dir
    if args.loco_only and args.install:
        raise SystemExit("--install needs the pair's cross-validation: not with --loco-only")
    a_oof = pd.read_csv(a_dir / "predictions.csv")
    b_loco = pd.read_csv(b_dir / ("predictions.csv" if args.loco_only else "loco_predictions.csv"))
    b_oof = b_loco.iloc[:0] if args.loco_only else pd.read_csv(b_dir / "predictions.csv")
    labels = [c[2:] for c in b_loco.columns if c.startswith("p_")]
    a_corpora = set(a_oof["corpus"])
    key = ["corpus", "file"]

    # A on the clips of corpora it never heard: its final model (the same clips serve the CV and LOCO rows)
    unheard = pd.concat([b_oof[key], b_loco[key]]).drop_duplicates()
    unheard = unheard[~unheard["corpus"].isin(a_corpora)].reset_index(drop=True)
    a_final = pd.concat([unheard, pd.DataFrame(final_probs(a_dir, unheard, labels),
                                               columns=[f"p_{lab}" for lab in labels])], axis=1)

    def a_for(rows: pd.DataFrame, own: pd.DataFrame) -> np.ndarray:
        got = rows[key].merge(pd.concat([own, a_final]), on=key, how="left", validate="one_to_one")
        if got[[f"p_{lab}" for lab in labels]].isna().all(axis=1).any():
            raise SystemExit("some clips have no prediction of model A")
        return probs(got, labels)

    heard_b = b_oof[b_oof["corpus"].isin(a_corpora)]
    folds = heard_b[key + ["fold"]].merge(a_oof[key + ["fold"]], on=key, suffixes=("_b", "_a"))
    if len(folds) != len(heard_b) or (folds["fold_a"] != folds["fold_b"]).any():
        raise SystemExit("the two cross-validations do not use the same folds on the shared corpora")
    a_own = a_oof[key + [f"p_{lab}" for lab in labels]]
    cv = with_probs(b_oof, (probs(b_oof, labels) + a_for(b_oof, a_own)) / 2, labels)

    loco_pair = ~b_loco["corpus"].isin(a_corpora)
    p = probs(b_loco, labels)
    p[loco_pair.to_numpy()] = (p[loco_pair.to_numpy()] + a_for(b_loco[loco_pair], a_own.iloc[:0])) / 2
    loco = with_probs(b_loco, p, labels)
    if args.loco_only:
        (out / "loco").mkdir(parents=True, exist_ok=True)
        loco.to_csv(out / "loco" / "predictions.csv", index=False)
        report = {"models": [str(a_dir), str(b_dir)], "loco": evaluation.per_corpus(loco, labels)}
        (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
        paired = sorted(set(loco["corpus"]) - a_corpora)
        for c in sorted(report["loco"]):
            print(f"{c:<8} LOCO own {report['loco'][c]['own']['accuracy']:.3f}"
                  + ("" if c in paired else f" ({b_dir.name} alone: {a_dir.name} trained on it)"))
        mean = np.mean([report["loco"][c]["own"]["accuracy"] for c in paired])
        print(f"mean over {', '.join(paired)}: {mean:.3f}")
        return 0

    for name, table in (("cv", cv), ("loco", loco)):
        (out / name).mkdir(parents=True, exist_ok=True)
        table.to_csv(out / name / "predictions.csv", index=False)
    calib, calib_report = calibrate(out / "cv", out / "loco")
    calib = dataclasses.replace(calib, fitted_on=f"out-of-fold predictions of the pair {a_dir.name} + {b_dir.name} "
                                                 f"({calib.n} clips)")
    report = {"models": [str(a_dir), str(b_dir)], "cv": evaluation.per_corpus(cv, labels),
              "loco": evaluation.per_corpus(loco, labels), "calibration": calib.to_dict(),
              "calibration_report": {"cv_cross_fitted_ece": calib_report["cv_cross_fitted_ece"],
                                     "loco": calib_report["loco"]}}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"{'corpus':<8} {'CV acc':>7} {'UAR':>6} {'own':>6} {'F':>6} {'M':>6} | {'LOCO own':>8} {'ECE':>6}")
    for c in sorted(report["cv"]):
        m, lo = report["cv"][c], report["loco"][c]
        g = m["per_gender"]
        print(f"{c:<8} {m['accuracy']:7.3f} {m['uar']:6.3f} {m['own']['accuracy']:6.3f} "
              f"{g.get('female', float('nan')):6.3f} {g.get('male', float('nan')):6.3f} | "
              f"{lo['own']['accuracy']:8.3f} {calib_report['loco'][c]['ece_after']:6.3f}")
    print(f"pooled ECE cross-fitted {calib.ece_before:.3f} -> {calib.ece_after:.3f} (T {calib.temperature})")
    if args.install:
        print(f"{install_pair(a_dir, b_dir, out, labels, calib, calib_report, args.install)}: written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
