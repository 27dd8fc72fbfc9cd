"""Calibration: probabilities that mean what they say, and when to answer "not sure".

Everything here works on arrays of class probabilities (one row per clip) and
integer true labels, so a model, an ensemble (whose output is a mean of
probabilities) and a saved predictions table share it.

Temperature scaling divides the log-probabilities by one number ``T`` fitted
by maximum likelihood on out-of-fold predictions (never on the clips a model
trained on); it changes confidences, never the argmax. A model stores its
:class:`Calibration` in ``spec.json`` (``extra["calibration"]``), and its
prediction answers "not sure" below the stored threshold.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import SERError

if TYPE_CHECKING:      # pandas is imported where a table is built: prediction needs none (cold start)
    import pandas as pd

NOT_SURE = "not sure"
SPEC_KEY = "calibration"          # where a model's spec.json keeps its Calibration (under "extra")
DEFAULT_THRESHOLD = 0.5           # calibrated: below it the answer is more likely wrong than right
N_BINS = 10


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and the confidence below which the answer is "not sure".

    ``fitted_on`` says which predictions the temperature came from (it must name
    out-of-fold predictions); ``ece_before`` / ``ece_after`` are their expected
    calibration errors, the second cross-fitted (see :func:`cross_fitted`).
    """

    temperature: float = 1.0
    threshold: float = DEFAULT_THRESHOLD
    fitted_on: str = ""
    n: int = 0
    ece_before: float | None = None
    ece_after: float | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise SERError(f"calibration temperature must be positive, not {self.temperature!r}")
        if not 0 <= self.threshold < 1:
            raise SERError(f"'not sure' threshold must be in [0, 1), not {self.threshold!r}")

    def apply(self, probs: np.ndarray) -> np.ndarray:
        return apply_temperature(probs, self.temperature)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Calibration | None":
        if not d:
            return None
        known = {k: d[k] for k in asdict(cls()) if k in d}
        return cls(**known)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row: T > 1 softens, T < 1 sharpens, the argmax stays."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return p
    logp = np.log(np.clip(p, 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=-1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=-1, keepdims=True)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.asarray(probs, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of the true labels."""
    from scipy.optimize import minimize_scalar

    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        raise SERError("no predictions to calibrate on")
    res = minimize_scalar(lambda log_t: nll(apply_temperature(probs, float(np.exp(log_t))), y),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def reliability(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> pd.DataFrame:
    """Equal-width confidence bins: clips, mean confidence and accuracy in each (empty bins dropped)."""
    import pandas as pd

    p = np.asarray(probs, dtype=np.float64)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "n": int(sel.sum()),
                         "confidence": float(conf[sel].mean()), "accuracy": float(correct[sel].mean())})
    return pd.DataFrame(rows, columns=["bin_low", "bin_high", "n", "confidence", "accuracy"])


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error: the clip-weighted mean |accuracy - confidence| over bins."""
    table = reliability(probs, y, n_bins)
    if table.empty:
        return 0.0
    return float((table["n"] * (table["accuracy"] - table["confidence"]).abs()).sum() / table["n"].sum())


def coverage_curve(probs: np.ndarray, y: np.ndarray, points: int = 21) -> pd.DataFrame:
    """Accuracy of the answers kept when only the most confident fraction (coverage) is answered."""
    import pandas as pd

    p = np.asarray(probs, dtype=np.float64)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == np.asarray(y)).astype(float)
    order = np.argsort(-conf, kind="stable")
    cum = np.cumsum(correct[order])
    rows = []
    for cov in np.linspace(1.0 / points, 1.0, points):
        k = max(1, int(round(cov * len(order))))
        rows.append({"coverage": k / len(order), "accuracy": float(cum[k - 1] / k),
                     "threshold": float(conf[order][k - 1])})
    return pd.DataFrame(rows)


def not_sure_rate(probs: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """How often the answer is "not sure", and the accuracy of the answers given and withheld."""
    p = np.asarray(probs, dtype=np.float64)
    unsure = p.max(axis=1) < threshold
    correct = p.argmax(axis=1) == np.asarray(y)
    return {"not_sure": float(unsure.mean()) if len(p) else 0.0,
            "answered_accuracy": float(correct[~unsure].mean()) if (~unsure).any() else None,
            "withheld_accuracy": float(correct[unsure].mean()) if unsure.any() else None,
            "not_sure_when_wrong": float(unsure[~correct].mean()) if (~correct).any() else None,
            "not_sure_when_right": float(unsure[correct].mean()) if correct.any() else None}


# ----------------------------------------------------------------------------- predictions tables
def table_arrays(df: pd.DataFrame, labels: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Probabilities and true-label indices of a predictions table (``p_<label>`` columns);
    rows whose true emotion the model cannot say are left out."""
    labels = labels or [c[2:] for c in df.columns if c.startswith("p_")]
    if not labels:
        raise SERError("the predictions table has no probability columns (p_<emotion>)")
    known = df["true"].isin(labels).to_numpy()
    # A pooled cross-validation whose fold models know different labels (leave-one-corpus-out) has empty
    # cells where a fold's model lacks a label: that model gave it probability 0.
    probs = np.nan_to_num(df.loc[known, [f"p_{lab}" for lab in labels]].to_numpy(dtype=np.float64), nan=0.0)
    y = df.loc[known, "true"].map({lab: i for i, lab in enumerate(labels)}).to_numpy(dtype=np.int64)
    return probs, y, labels


def cross_fitted(df: pd.DataFrame, group: str = "fold") -> np.ndarray:
    """Calibrated probabilities of every row, each group's temperature fitted on the other groups.

    An honest ECE of temperature scaling: no clip's temperature saw that clip (nor, with
    ``group="fold"`` on a speaker-independent cross-validation, any clip of its speakers).
    Rows whose true emotion is not a model label are dropped, as in :func:`table_arrays`."""
    probs, y, labels = table_arrays(df)
    keys = df.loc[df["true"].isin(labels), group].to_numpy() if group in df else np.zeros(len(y))
    out = probs.copy()
    if len(set(keys)) < 2:
        return apply_temperature(probs, fit_temperature(probs, y))
    for k in sorted(set(keys)):
        held = keys == k
        out[held] = apply_temperature(probs[held], fit_temperature(probs[~held], y[~held]))
    return out


def fit_table(df: pd.DataFrame, *, threshold: float = DEFAULT_THRESHOLD, fitted_on: str = "") -> Calibration:
    """A Calibration from an out-of-fold predictions table: the temperature from all its rows,
    the reported ECE after calibration cross-fitted by fold."""
    probs, y, _ = table_arrays(df)
    t = fit_temperature(probs, y)
    return Calibration(temperature=round(t, 4), threshold=threshold, fitted_on=fitted_on, n=int(len(y)),
                       ece_before=round(ece(probs, y), 4), ece_after=round(ece(cross_fitted(df), y), 4))


def calibrated_table(df: pd.DataFrame, calib: Calibration) -> pd.DataFrame:
    """The predictions table with calibrated probabilities and confidence (predictions unchanged)."""
    cols = [c for c in df.columns if c.startswith("p_")]
    out = df.copy()
    probs = calib.apply(out[cols].to_numpy(dtype=np.float64))
    out[cols] = probs
    out["confidence"] = probs.max(axis=1)
    return out


def summary(df: pd.DataFrame, calib: Calibration | None = None, *, by: str | None = "corpus") -> dict:
    """ECE, reliability bins, coverage curve and "not sure" figures, pooled and per ``by`` group."""
    def one(part: pd.DataFrame) -> dict:
        probs, y, _ = table_arrays(part)
        if calib is not None:
            probs = calib.apply(probs)
        out = {"n": int(len(y)), "ece": ece(probs, y),
               "reliability": reliability(probs, y).to_dict(orient="list"),
               "coverage": coverage_curve(probs, y).to_dict(orient="list")}
        if calib is not None:
            out.update(not_sure_rate(probs, y, calib.threshold))
        return out

    res = {"pooled": one(df)}
    if by and by in df and df[by].nunique() > 1:
        res["groups"] = {str(k): one(g) for k, g in df.groupby(by, sort=True)}
    return res


def transfer_summary(held_out: pd.DataFrame, oof: pd.DataFrame, *, threshold: float = DEFAULT_THRESHOLD,
                     by: str = "corpus") -> dict[str, dict]:
    """Calibration where the test corpus was never seen (leave-one-corpus-out predictions).

    For each held-out corpus, the temperature is fitted on the out-of-fold predictions ``oof`` of
    the OTHER corpora only, as a model trained without that corpus would have to: ECE before and
    after, the "not sure" figures at ``threshold``, and what the model answered there (the share
    of each predicted emotion, to show a collapse onto one or two classes)."""
    import pandas as pd

    out = {}
    for name, part in held_out.groupby(by, sort=True):
        probs, y, labels = table_arrays(part)
        others = oof[oof[by] != name] if by in oof else oof
        o_probs, o_y, _ = table_arrays(others, labels)
        t = fit_temperature(o_probs, o_y)
        fixed = apply_temperature(probs, t)
        answered = pd.Series(np.asarray(labels)[probs.argmax(axis=1)]).value_counts(normalize=True)
        out[str(name)] = {"n": int(len(y)), "temperature": round(t, 4), "ece_before": ece(probs, y),
                          "ece_after": ece(fixed, y), **not_sure_rate(fixed, y, threshold),
                          "answers": {k: round(float(v), 4) for k, v in answered.items()}}
    return out
