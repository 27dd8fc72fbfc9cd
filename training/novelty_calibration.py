"""A temperature that grows with how unfamiliar a clip is (session 37, candidate NT,
docs/preregistration-session37.md).

    python training/novelty_calibration.py --work runs/whisper-wu2s --channel-copies babble:1+loudbabble:2 \
        --emobox6-choices training/results/candidates/emobox6_WU2S_probe_predictions_choices.json \
        --loco-choices training/results/candidates/loco_WU2S_predictions_choices.json \
        --out training/results/candidates/novelty_NT.json [--parts loco] [--save models/default]
    python training/novelty_calibration.py --out training/results/candidates/novelty_NT2_loco.json \
        --from-json --save models/default          # the figures of a run made before, kept for the card

The probe's scores are divided by ``T(x) = exp(a0 + a1 n(x))``; ``n(x)`` is the clip's mean distance to its
``K`` nearest training rows (clean clips and their channel copies) on the ``AXES`` leading principal axes of
the probe's standardised training rows, over a stored scale (the median of that distance on in-corpus
held-out rows). ``a0`` and ``a1`` are fitted by maximum likelihood on predictions of the training corpora only:
in-corpus rows (``INNER_FOLDS`` speaker folds inside the training rows) and cross-corpus rows (each training
corpus left out in turn). Beside it, fitted on the same rows: the shipped procedure (one temperature from the
in-corpus rows). Both are measured leaving each corpus out and under the emobox6 speaker folds (every fold's
calibration fitted inside its training speakers); a per-clip temperature changes no answer. NT2 (addendum 1)
chooses the novelty measure inside each fold. ``--save`` keeps the shipped procedure's leave-one-corpus-out
figures in a model folder, where its card shows them.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import encoder_probe as ep  # noqa: E402
from ser_core import calibration, splits  # noqa: E402
from ser_core.config import EMOTIONS  # noqa: E402

AXES = 64           # principal axes the nearest-rows distance is measured on (and the residual's subspace)
WHITENED_AXES = 256     # principal axes of the Mahalanobis distance (NT2)
K = 10              # nearest training rows averaged
MEASURES = ("knn", "mahalanobis", "residual")       # NT uses the first; NT2 chooses inside each fold
INNER_FOLDS = 5     # in-corpus speaker folds inside a training set


@dataclass
class Reference:
    """What a probe needs to measure a clip's novelty: the training rows' mean, their leading principal axes
    and variances (in the probe's standardised space), and the training rows on the first ``AXES`` axes."""
    mean: np.ndarray
    axes: np.ndarray      # values x WHITENED_AXES
    variances: np.ndarray
    points: np.ndarray    # rows x AXES

    @classmethod
    def fit(cls, rows: np.ndarray) -> "Reference":
        mean = rows.mean(axis=0)
        vals, vecs = np.linalg.eigh(np.cov(rows - mean, rowvar=False))
        order = np.argsort(vals)[::-1][:WHITENED_AXES]
        axes = vecs[:, order]
        return cls(mean, axes, vals[order], ((rows - mean) @ axes[:, :AXES]).astype(np.float32))

    def novelty(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """Every measure of :data:`MEASURES` for each row of ``z``."""
        c = z - self.mean
        proj = c @ self.axes
        return {"knn": self.knn(proj[:, :AXES].astype(np.float32)),
                "mahalanobis": np.sqrt((proj ** 2 / self.variances).sum(axis=1)),
                "residual": np.sqrt(np.maximum((c ** 2).sum(axis=1) - (proj[:, :AXES] ** 2).sum(axis=1), 0))}

    def knn(self, q: np.ndarray, k: int = K, chunk: int = 512) -> np.ndarray:
        """Mean Euclidean distance of each row of ``q`` (on the first axes) to its ``k`` nearest points."""
        p2 = (self.points ** 2).sum(axis=1)
        out = np.empty(len(q))
        for i in range(0, len(q), chunk):
            part = q[i:i + chunk]
            d2 = (part ** 2).sum(axis=1)[:, None] + p2[None, :] - 2 * part @ self.points.T
            near = np.partition(np.maximum(d2, 0), k - 1, axis=1)[:, :k]
            out[i:i + chunk] = np.sqrt(near).mean(axis=1)
        return out


@dataclass
class Scored:
    """Held-out rows of one inner or outer probe: scores over its labels, the true label's index (-1 when
    the probe never learnt it) and the rows' raw novelty."""
    logits: np.ndarray
    y: np.ndarray
    novelty: dict[str, np.ndarray]
    labels: list[str]


def scored(x: np.ndarray, df: pd.DataFrame, train: np.ndarray, test: np.ndarray, c: float,
           aug: np.ndarray | None, copy_weight: float = 1.0) -> Scored:
    """The probe trained on ``train`` (its copies too), scored on ``test``, with the novelty of every test row
    against the probe's training rows."""
    mu, sd = ep.standardiser(x, train, aug)
    clf, z = ep.probe(x, df, train, c, aug, copy_weight, stats=(mu, sd))
    rows = z[train] if aug is None else np.concatenate([z[train], ((aug[train] - mu) / sd).reshape(-1, x.shape[1])])
    labels = list(clf.classes_)
    truth = df.loc[test, "emotion"].to_numpy()
    y = np.array([labels.index(t) if t in labels else -1 for t in truth])
    return Scored(clf.decision_function(z[test]), y, Reference.fit(rows).novelty(z[test]), labels)


def inner_rows(x: np.ndarray, df: pd.DataFrame, train: np.ndarray, c: float, aug: np.ndarray | None,
               what: str, copy_weight: float = 1.0) -> tuple[list[Scored], list[Scored]]:
    """In-corpus rows (speaker folds inside ``train``) and cross-corpus rows (each of its corpora left out)."""
    part = df[train]
    inside = []
    for i, group in enumerate(splits.speaker_groups(part, INNER_FOLDS), 1):
        held = train & df["speaker"].isin(group).to_numpy()
        if not held.any():          # fewer speakers than folds
            continue
        inside.append(scored(x, df, train & ~held, held, c, aug, copy_weight))
        print(f"{what}: in-corpus inner fold {i}: {held.sum()} clips", flush=True)
    across = []
    for corpus in splits.corpora(part):
        held = train & (df["corpus"] == corpus).to_numpy()
        across.append(scored(x, df, train & ~held, held, c, aug, copy_weight))
        print(f"{what}: {corpus} left out inside: {held.sum()} clips", flush=True)
    return inside, across


def _stack(parts: list[Scored], measure: str) -> tuple[list[tuple], np.ndarray]:
    """Per part, the (scores, true index, novelty by ``measure``) of its rows with a known label, and all
    their novelty values."""
    keep = [(p.logits[p.y >= 0], p.y[p.y >= 0], p.novelty[measure][p.y >= 0]) for p in parts]
    return keep, np.concatenate([k[2] for k in keep])


def _nll(theta: np.ndarray, keep, scale: float) -> float:
    total, n = 0.0, 0
    for logits, y, nov in keep:
        s = logits / np.exp(theta[0] + theta[1] * nov / scale)[:, None]
        s = s - s.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        total -= float(logp[np.arange(len(y)), y].sum())
        n += len(y)
    return total / n


@dataclass
class Tempering:
    """``T(x) = exp(a0 + a1 n(x) / scale)`` with ``n`` the novelty ``measure``; ``a1 = 0`` is one temperature."""
    a0: float
    a1: float
    scale: float
    measure: str = "knn"
    auc: dict | None = None       # NT2: every measure's inner area under the curve

    def temperature(self, s: Scored) -> np.ndarray:
        return np.exp(self.a0 + self.a1 * s.novelty[self.measure] / self.scale)

    def probs(self, s: Scored) -> np.ndarray:
        z = s.logits / self.temperature(s)[:, None]
        z = z - z.max(axis=1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def separation(inside: list[Scored], across: list[Scored]) -> dict[str, float]:
    """Each measure's area under the ROC curve telling cross-corpus rows (positive) from in-corpus ones."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for m in MEASURES:
        a, b = np.concatenate([p.novelty[m] for p in inside]), np.concatenate([p.novelty[m] for p in across])
        out[m] = round(float(roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b])), 4)
    return out


def _tempering(inside: list[Scored], across: list[Scored], measure: str, with_novelty: bool) -> Tempering:
    from scipy.optimize import minimize

    keep_in, nov_in = _stack(inside, measure)
    scale = float(np.median(nov_in))
    scale = scale if scale > 0 else 1.0         # a measure that is 0 everywhere (every axis kept) carries nothing
    if not with_novelty:
        one = minimize(lambda th: _nll(np.array([th[0], 0.0]), keep_in, scale), [0.0], method="Nelder-Mead")
        return Tempering(float(one.x[0]), 0.0, scale, measure)
    keep = keep_in + _stack(across, measure)[0]
    res = minimize(lambda th: _nll(th, keep, scale), [0.0, 0.0], method="Nelder-Mead",
                   options={"xatol": 1e-4, "fatol": 1e-7, "maxiter": 2000})
    return Tempering(float(res.x[0]), float(res.x[1]), scale, measure)


def fit(inside: list[Scored], across: list[Scored]) -> dict[str, Tempering]:
    """The shipped procedure (one temperature, in-corpus rows only), NT (the nearest-rows novelty) and NT2 (the
    measure that best separates the inner rows), the last two fitted on both kinds of rows."""
    auc = separation(inside, across)
    best = max(MEASURES, key=lambda m: (auc[m], -MEASURES.index(m)))
    nt2 = _tempering(inside, across, best, True)
    nt2.auc = auc
    return {"shipped": _tempering(inside, across, "knn", False), "NT": _tempering(inside, across, "knn", True),
            "NT2": nt2}


def table(df: pd.DataFrame, test: np.ndarray, s: Scored, probs: np.ndarray, fold: int, tm: Tempering,
          kind: str) -> pd.DataFrame:
    t = ep.fold_table(df, test, probs, s.labels, fold)
    t["calibration"] = kind
    t["novelty"] = s.novelty[tm.measure]
    t["temperature"] = tm.temperature(s)
    return t


def figures(t: pd.DataFrame, threshold: float = calibration.DEFAULT_THRESHOLD) -> dict:
    probs, y, _ = calibration.table_arrays(t)
    return {"n": int(len(y)), "ece": round(calibration.ece(probs, y), 4),
            "mean_confidence": round(float(probs.max(axis=1).mean()), 4),
            "accuracy": round(float((probs.argmax(axis=1) == y).mean()), 4),
            **{k: round(v, 4) if isinstance(v, float) else v
               for k, v in calibration.not_sure_rate(probs, y, threshold).items()}}


def shown(path: Path) -> str:
    """``path`` as a committed record names it: from the checkout's root when it is inside it."""
    try:
        return Path(path).resolve().relative_to(HERE.parent).as_posix()
    except ValueError:
        return Path(path).as_posix()


def command(work: Path, emobox6_choices: Path | None, loco_choices: Path | None, out: Path, copies: str | None,
            parts: tuple[str, ...], copy_weight: float = 1.0) -> str:
    """The command line that makes ``run``'s figures (kept with them, and with a model folder's copy)."""
    args = [f"--work {shown(work)}"] + ([f"--channel-copies {copies}"] if copies else [])
    args += [f"--copy-weight {copy_weight:g}"] if copy_weight != 1 else []
    args += [f"--{k}-choices {shown(v)}" for k, v in (("emobox6", emobox6_choices), ("loco", loco_choices))
             if v is not None and k in parts]
    return f"python training/novelty_calibration.py {' '.join(args)} --parts {','.join(parts)} --out {shown(out)}"


def run(work: Path, emobox6_choices: Path | None, loco_choices: Path | None, out: Path, copies: str | None,
        parts: tuple[str, ...] = ("loco", "emobox6"), copy_weight: float = 1.0) -> dict:
    df, x = ep.load_vectors(work)
    df = df.reset_index(drop=True)
    aug = ep.load_channel_vectors(work, df, copies) if copies else None
    results: dict = {"made_by": command(work, emobox6_choices, loco_choices, out, copies, parts, copy_weight),
                     "axes": AXES, "k": K, "inner_folds": INNER_FOLDS}
    tables = []
    if "loco" in parts:
        chosen = json.loads(loco_choices.read_text())
        results["loco"] = {}
        for fold, held in enumerate(splits.corpora(df), 1):
            train = (df["corpus"] != held).to_numpy()
            c = float(chosen[held]["C"])
            inside, across = inner_rows(x, df, train, c, aug, f"{held} out", copy_weight)
            fitted = fit(inside, across)
            s = scored(x, df, train, ~train, c, aug, copy_weight)
            results["loco"][held] = {}
            for kind, tm in fitted.items():
                t = table(df, ~train, s, tm.probs(s), fold, tm, kind)
                tables.append(t.assign(protocol="loco"))
                results["loco"][held][kind] = {"a0": round(tm.a0, 4), "a1": round(tm.a1, 4), "scale": round(tm.scale, 4),
                                               "measure": tm.measure, "inner_auc": tm.auc,
                                               "median_temperature": round(float(np.median(tm.temperature(s))), 4),
                                               **figures(t)}
            print(f"{held} out: " + "; ".join(f"{k} ECE {v['ece']}, T~{v['median_temperature']}"
                                               for k, v in results["loco"][held].items()), flush=True)
    if "emobox6" in parts:
        chosen = json.loads(emobox6_choices.read_text())
        folds = []
        for fold, train, test, c in ep.emobox6_folds(df, chosen):
            inside, across = inner_rows(x, df, train, c, aug, f"emobox6 fold {fold}", copy_weight)
            fitted = fit(inside, across)
            s = scored(x, df, train, test, c, aug, copy_weight)
            for kind, tm in fitted.items():
                folds.append(table(df, test, s, tm.probs(s), fold, tm, kind).assign(protocol="emobox6"))
            results.setdefault("emobox6_folds", {})[str(fold)] = {
                k: {"a0": round(tm.a0, 4), "a1": round(tm.a1, 4), "measure": tm.measure, "inner_auc": tm.auc}
                for k, tm in fitted.items()}
            print(f"emobox6 fold {fold}: " + ", ".join(f"{k} ({tm.measure}) a0={tm.a0:.3f} a1={tm.a1:.3f}"
                                                       for k, tm in fitted.items()) + f"; AUC {fitted['NT2'].auc}",
                  flush=True)
        pooled = pd.concat(folds, ignore_index=True)
        tables.append(pooled)
        results["emobox6"] = {kind: {"pooled": figures(g), "corpora": {c: figures(gc) for c, gc in g.groupby("corpus")}}
                              for kind, g in pooled.groupby("calibration")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    if tables:
        pd.concat(tables, ignore_index=True).rename(columns={"path": "file"}).drop(columns=["emotion"]).to_csv(
            predictions_path(out), index=False)
    return results


def predictions_path(out: Path) -> Path:
    """Where :func:`run` writes the held-out rows of its figures ``out``."""
    return out.with_name(out.stem + "_predictions.csv.gz")


def save(results: dict, source: Path, model_dir: Path) -> dict:
    """The shipped procedure's figures leaving each corpus out, kept in ``model_dir`` (``schema.LOCO_CALIBRATION``)
    for its card, and its held-out rows (``schema.LOCO_CALIBRATION_TABLE``) for the Evaluate page: what the
    model's confidence means on a corpus none of its training corpora resembles."""
    from ser_core import schema
    from ser_core.jsonio import write_json

    keep = ("n", "ece", "accuracy", "mean_confidence", "not_sure", "not_sure_when_wrong", "not_sure_when_right")
    record = {"command": results["made_by"], "source": shown(source), "table": schema.LOCO_CALIBRATION_TABLE,
              "corpora": {c: {k: v["shipped"][k] for k in keep} for c, v in results["loco"].items()}}
    rows = pd.read_csv(predictions_path(source), dtype={"speaker": str})
    rows = rows[(rows["calibration"] == "shipped") & (rows["protocol"] == "loco")]
    rows.drop(columns=["calibration", "novelty", "temperature", "protocol"]).to_csv(
        model_dir / schema.LOCO_CALIBRATION_TABLE, index=False)
    write_json(model_dir / schema.LOCO_CALIBRATION, record)
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--channel-copies", default=None)
    ep.add_copy_weight(ap)
    ap.add_argument("--emobox6-choices", type=Path)
    ap.add_argument("--loco-choices", type=Path)
    ap.add_argument("--parts", default="loco,emobox6")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--save", type=Path, metavar="MODEL_DIR",
                    help="keep the shipped procedure's leave-one-corpus-out figures in the model folder, for its card")
    ap.add_argument("--from-json", action="store_true", help="with --save: read --out as made before, run nothing")
    a = ap.parse_args(argv)
    if a.from_json:
        if not a.save:
            raise SystemExit("--from-json only goes with --save")
        results = json.loads(a.out.read_text())
    else:
        parts = tuple(a.parts.split(","))
        missing = [f"--{k}" for k, v in (("work", a.work), ("loco-choices", a.loco_choices if "loco" in parts else 1),
                                           ("emobox6-choices", a.emobox6_choices if "emobox6" in parts else 1)) if not v]
        if missing:
            raise SystemExit(f"missing {', '.join(missing)}")
        results = run(a.work, a.emobox6_choices, a.loco_choices, a.out, a.channel_copies, parts, a.copy_weight)
    if a.save:
        if "loco" not in results:
            raise SystemExit(f"{a.out} holds no leave-one-corpus-out figures to save")
        save(results, a.out, a.save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
