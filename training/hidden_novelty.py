"""A novelty gate on what a network computes (candidate G2 of ``docs/preregistration-session25.md``).

    python training/hidden_novelty.py CV_DIR --model models/ravdess --strangers ased+emovo+urdu \\
        --out training/results/candidates/novelty_G2.json

``CV_DIR`` is a speaker-fold cross-validation (``ser cv ... --out CV_DIR``) whose folds kept their models. A
clip's signature is the mean, over its windows that hold speech, of the values the network's last hidden layer
gives (what its softmax layer reads), the windows cut and normalised as the Predictor cuts and normalises them.

For each fold: the gate is the Mahalanobis distance from that fold's training clips' signatures under its
model (``ser_core.novelty.fit``: Ledoit-Wolf), divided by those training clips' median distance. Each held-out
clip gets its fold's normalised novelty; each clip of ``--strangers`` (corpora no fold heard) the median of its
normalised novelties under every fold. The threshold is the ``--quantile`` of the held-out novelties, pooled.

Then, as session 12's ``training/novelty.py`` reports a gate: how many held-out clips it flags, and on each
stranger corpus how often ``--model`` (the model whose answers the gate would guard; its answers through
``predict_many``, the path of ``ser predict``) says "not sure" on its wrong and on its right answers, from its
calibrated confidence alone and with the gate. Needs TensorFlow (the fold models are read with Keras).
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

from novelty import BLOCK, shares  # noqa: E402  (training/novelty.py: session 12's report)
from strangers import predictions as answers_of  # noqa: E402  (training/strangers.py: ser predict's answers)

from ser_core import audio, datasets, novelty, schema  # noqa: E402
from ser_core.config import ModelSpec  # noqa: E402
from ser_core.jsonio import write_json  # noqa: E402
from ser_core.predict import Predictor, many_window_features  # noqa: E402


def fold_models(cv_dir: Path) -> dict[int, Path]:
    """Every finished fold's model folder, by fold number."""
    out = {}
    for d in sorted(cv_dir.glob(f"{schema.FOLD_PREFIX}*")):
        model = d / schema.MODEL
        if (model / schema.WEIGHTS).exists() and d.name[len(schema.FOLD_PREFIX):].isdigit():
            out[int(d.name[len(schema.FOLD_PREFIX):])] = model
    return out


def window_inputs(cfg, paths: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw window features of every clip (stacked), each window's clip index, and whether it holds speech."""
    xs, owner, speech = [], [], []
    for s in range(0, len(paths), BLOCK):
        ys, idx = [], []
        for i in range(s, min(s + BLOCK, len(paths))):
            try:
                ys.append(audio.load(paths[i], sr=cfg.sample_rate, name=paths[i]))
                idx.append(i)
            except Exception:  # noqa: BLE001  (an unreadable clip has no signature)
                continue
        spans, (x,), bounds = many_window_features(ys, [cfg])
        for i, (_, _, sp), a, b in zip(idx, spans, bounds[:-1], bounds[1:]):
            owner += [i] * (b - a)
            speech += list(np.asarray(sp, bool))
        xs.append(x)
    return np.concatenate(xs), np.asarray(owner), np.asarray(speech)


def hidden_signatures(model_dir: Path, cfg, x: np.ndarray, owner: np.ndarray, speech: np.ndarray, n: int) -> np.ndarray:
    """Each clip's mean last-hidden-layer vector over its speech windows (NaN rows for clips without one)."""
    from ser_core.tf_setup import keras

    pred = Predictor(model_dir, runtime="keras", calibrated=False)
    if pred.cfg != cfg:
        raise SystemExit(f"{model_dir} hears other features than the first fold's model")
    net = pred.model
    hidden = keras().Model(net.inputs, net.layers[-1].input)     # what the softmax layer reads
    return clip_means(hidden.predict(pred.normalise(x), batch_size=256, verbose=0), owner, speech, n)


def clip_means(h: np.ndarray, owner: np.ndarray, speech: np.ndarray, n: int) -> np.ndarray:
    """Mean of each clip's speech windows' rows of ``h`` (``owner``: each row's clip), NaN for a clip without one."""
    h = np.asarray(h, np.float64)
    out = np.full((n, h.shape[1]), np.nan)
    sums = np.zeros((n, h.shape[1]))
    counts = np.bincount(owner[speech], minlength=n)
    np.add.at(sums, owner[speech], h[speech])
    has = counts > 0
    out[has] = sums[has] / counts[has, None]
    return out


def normalised_gate(train_sigs: np.ndarray) -> tuple[novelty.Gate, float]:
    """The gate fitted on training signatures, and their median distance (the fold's unit)."""
    mean, whiten = novelty.fit(train_sigs)
    gate = novelty.Gate(mean, whiten, np.inf, None)
    return gate, float(np.median(gate.novelty(train_sigs)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cv_dir", type=Path)
    ap.add_argument("--model", default="models/ravdess", help="the model whose answers the gate would guard")
    ap.add_argument("--quantile", type=float, default=0.99)
    ap.add_argument("--strangers", default="ased+emovo+urdu")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    folds = fold_models(args.cv_dir)
    if not folds:
        ap.error(f"{args.cv_dir} holds no fold with a kept model")
    cv_config = json.loads((args.cv_dir / schema.CONFIG).read_text())
    known = datasets.load_dataset(cv_config["dataset"]).reset_index(drop=True)
    strangers = datasets.load_dataset(args.strangers).reset_index(drop=True)
    cfg = Predictor(next(iter(folds.values())), runtime="keras", calibrated=False).cfg   # every fold's features
    kx = window_inputs(cfg, known["path"].tolist())
    sx = window_inputs(cfg, strangers["path"].tolist())
    print(f"windows: {len(kx[0])} of {len(known)} known clips, {len(sx[0])} of {len(strangers)} strangers "
          f"({time.monotonic() - t0:.0f} s)", flush=True)

    held = np.full(len(known), np.nan)
    stranger_nov = np.full((len(folds), len(strangers)), np.nan)
    per_fold = {}
    for j, (fold, model_dir) in enumerate(sorted(folds.items())):
        trained_on = set(ModelSpec.load(model_dir / schema.SPEC).extra.get(schema.TRAIN_SPEAKERS) or [])
        if not trained_on:
            ap.error(f"{model_dir} does not record its training speakers")
        ks = hidden_signatures(model_dir, cfg, *kx, len(known))
        ok = ~np.isnan(ks).any(axis=1)
        train = ok & known["speaker"].isin(trained_on).to_numpy()
        test = ok & ~known["speaker"].isin(trained_on).to_numpy()
        gate, unit = normalised_gate(ks[train])
        held[test] = gate.novelty(ks[test]) / unit
        ss = hidden_signatures(model_dir, cfg, *sx, len(strangers))
        sok = ~np.isnan(ss).any(axis=1)
        stranger_nov[j, sok] = gate.novelty(ss[sok]) / unit
        per_fold[fold] = {"train_clips": int(train.sum()), "held_out_clips": int(test.sum()),
                          "median_training_distance": round(unit, 3),
                          "held_out_median": round(float(np.median(held[test])), 3)}
        print(f"fold {fold}: {per_fold[fold]} ({time.monotonic() - t0:.0f} s)", flush=True)
    done = ~np.isnan(held)
    threshold = float(np.quantile(held[done], args.quantile))
    s_nov = np.nanmedian(stranger_nov, axis=0)
    report = {"command": "python training/hidden_novelty.py " + " ".join(argv or sys.argv[1:]),
              "folds": sorted(folds), "threshold": round(threshold, 4),
              "threshold_rule": f"{args.quantile:.0%} quantile of held-out clips' normalised novelty",
              "per_fold": per_fold,
              "held_out": {"clips": int(done.sum()), "flagged": round(float((held[done] > threshold).mean()), 4),
                           "novelty_median": round(float(np.median(held[done])), 3)}}
    rows, guarded = answers_of(args.model, strangers)        # its answers through ser predict's path
    limit = guarded.calibration.threshold
    oof = Path(args.model) / schema.PREDICTIONS
    if oof.exists():     # the guarded model's own out-of-fold answers on the known corpus, with each clip's novelty
        table = pd.read_csv(oof)
        by_file = dict(zip(known["path"].map(lambda p: Path(p).name), held))
        table["novelty"] = table["file"].map(by_file)
        table["unfamiliar"] = table["novelty"] > threshold
        table["not_sure_confidence"] = table["confidence"] < limit
        report["held_out"]["answers"] = shares(table.dropna(subset=["novelty"]))
    by_clip = dict(zip(zip(strangers["corpus"], strangers["path"].map(lambda p: Path(p).name)), s_nov))
    rows["novelty"] = [by_clip[k] for k in zip(rows["corpus"], rows["file"])]
    rows["not_sure_confidence"] = rows["confidence"] < limit
    rows = rows.dropna(subset=["novelty"])
    rows["unfamiliar"] = rows["novelty"] > threshold
    report["strangers"] = {c: shares(g.reset_index(drop=True)) for c, g in rows.groupby("corpus")}
    report["seconds"] = round(time.monotonic() - t0, 1)
    write_json(args.out, report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
