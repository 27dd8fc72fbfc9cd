"""How unlike a model's training recordings a clip is: a gate that answers "not sure" to the unfamiliar.

A model that learnt from one studio's actors is confidently wrong on a stranger's phone. Its calibrated
confidence was measured on voices like its training voices and cannot know that a recording is unlike
all of them, so the gate looks at the recording itself. A clip's *signature* is each mel band's mean and
standard deviation over its frames with sound, in the log-mel dB a ``logmel`` network hears (before
normalisation): microphone, room, language and voice show there. What the model has heard is the mean
and the Ledoit-Wolf shrunk covariance of its training clips' signatures; a clip's *novelty* is its
Mahalanobis distance from them. Above the gate's threshold (chosen on held-out speakers by
``training/novelty.py``) the answer is "not sure", whatever the confidence.

Signatures are built from running sums (:class:`Moments`), so a streamed hour-long file gets one the same
way as a 3 s clip. A gate is stored with its model: the arrays in ``novelty.npz``, the threshold and
what it was fitted on in ``spec.json`` (``extra["novelty"]``).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import FeatureConfig, atomic_write_bytes
from .errors import ModelError
from .features import sound_frames
from .schema import NOVELTY

SPEC_KEY = "novelty"        # where a model's spec.json keeps its gate's record (under "extra")


@dataclass
class Moments:
    """Running per-band sums over the frames with sound of a clip's windows: enough for its signature."""

    n: int = 0
    s1: np.ndarray | None = None
    s2: np.ndarray | None = None

    def add(self, x: np.ndarray) -> "Moments":
        """Add windows' raw features ``(windows, bands, frames[, channels])`` (channel 0: the log-mel)."""
        x = np.asarray(x, np.float64)
        if x.ndim == 4:
            x = x[..., 0]
        for w in x.reshape(-1, *x.shape[-2:]):
            frames = w[:, sound_frames(w)]
            if frames.size == 0:
                continue
            if self.s1 is None:
                self.s1, self.s2 = np.zeros(len(w)), np.zeros(len(w))
            self.n += frames.shape[1]
            self.s1 += frames.sum(axis=1)
            self.s2 += (frames ** 2).sum(axis=1)
        return self

    def signature(self) -> np.ndarray | None:
        """Each band's mean, then its standard deviation (``2 * bands``); None with no frame of sound."""
        if not self.n:
            return None
        mean = self.s1 / self.n
        return np.concatenate([mean, np.sqrt(np.maximum(self.s2 / self.n - mean ** 2, 0.0))])


def signature(x: np.ndarray) -> np.ndarray | None:
    """The signature of one clip from its windows' raw features ``(windows, bands, frames[, channels])``.

    Parameters
    ----------
    x : np.ndarray
        The log-mel dB features of the clip's speech windows, as a ``logmel`` network's path computes them
        before normalisation (channel 0 when deltas are stacked).

    Returns
    -------
    np.ndarray or None
        ``(2 * bands,)``: each band's mean over the frames with sound, then its standard deviation; None when
        no frame holds sound.
    """
    return Moments().add(x).signature()


@dataclass(frozen=True)
class Gate:
    """A fitted novelty gate: ``novelty(s) = |W (s - mean)|`` with ``W`` the inverse Cholesky factor of the
    training signatures' shrunk covariance; "not sure" above ``threshold``."""

    mean: np.ndarray
    whiten: np.ndarray
    threshold: float
    features: FeatureConfig
    fitted_on: str = ""
    n: int = 0
    threshold_rule: str = ""
    extra: dict = field(default_factory=dict)

    def novelty(self, signatures: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of one signature ``(d,)`` (a float array of shape ``()``) or of rows ``(n, d)``."""
        z = (np.asarray(signatures, np.float64) - self.mean) @ self.whiten.T
        return np.sqrt((z ** 2).sum(axis=-1))

    def unfamiliar(self, novelty: float | None) -> bool:
        return novelty is not None and bool(novelty > self.threshold)

    def record(self) -> dict:
        """What ``spec.json`` keeps of the gate (the arrays live in ``novelty.npz``)."""
        return {"threshold": round(float(self.threshold), 6), "fitted_on": self.fitted_on, "n": int(self.n),
                "threshold_rule": self.threshold_rule, "features": self.features.to_dict(), **self.extra}

    def save(self, folder: Path | str) -> dict:
        """Write ``novelty.npz`` into a model folder; returns the record for its ``spec.json``."""
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, whiten=self.whiten)
        atomic_write_bytes(Path(folder) / NOVELTY, buf.getvalue())
        return self.record()

    @classmethod
    def load(cls, folder: Path | str, record: dict) -> "Gate":
        path = Path(folder) / NOVELTY
        try:
            with np.load(path) as z:
                mean, whiten = z["mean"], z["whiten"]
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: the model's novelty gate is missing or damaged ({exc})") from exc
        known = ("threshold", "fitted_on", "n", "threshold_rule", "features")
        return cls(mean, whiten, float(record["threshold"]), FeatureConfig.from_dict(record["features"]),
                   record.get("fitted_on", ""), int(record.get("n", 0)), record.get("threshold_rule", ""),
                   {k: v for k, v in record.items() if k not in known})


def fit(signatures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and whitening matrix (inverse Cholesky factor of the Ledoit-Wolf shrunk covariance) of
    training signatures ``(n, d)``."""
    from sklearn.covariance import LedoitWolf

    s = np.asarray(signatures, np.float64)
    if len(s) < 2:
        raise ModelError("a novelty gate needs the signatures of at least two training clips")
    lw = LedoitWolf().fit(s)
    return lw.location_, np.linalg.inv(np.linalg.cholesky(lw.covariance_))


def make_gate(signatures: np.ndarray, threshold: float, features: FeatureConfig, *, fitted_on: str,
              threshold_rule: str, **extra) -> Gate:
    mean, whiten = fit(signatures)
    return Gate(mean, whiten, float(threshold), features, fitted_on, len(signatures), threshold_rule, extra)


def stored_gate(spec, folder: Path | str) -> Gate | None:
    """The gate stored with a model (``spec.extra["novelty"]`` + ``novelty.npz``), or None."""
    record = (spec.extra or {}).get(SPEC_KEY)
    return Gate.load(folder, record) if record else None
