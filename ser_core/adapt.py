"""A probe adapted to a recording setup from the setup's own unlabelled clips (session 38, candidate WU2A).

A corpus, a call archive or one user's sessions each have their own microphones, room, language and speakers,
and these move every clip's encoder vector alike. A probe that learnt from four corpora reads a fifth one's
clips as if they were its training corpora's, and answers one or two emotions, sure of itself. The adapted probe
learnt from every training corpus **standardised by its own clips**; a new setup's clips are standardised by a
reference of that setup's clips (at least :data:`REFERENCE_CLIPS`, no label needed) before it reads them, so
what the whole setup shares is taken out and what differs from clip to clip is left.

What the reference must be: clips of one setup with its ordinary mix of speech. Standardising removes what the
reference's clips share, so 20 clips of one emotion would remove that emotion (measured in
``docs/multicorpus.md``, session 38).

The functions here are pure (arrays in, arrays out); :class:`ser_core.predict.ProbePredictor` reads a model
folder's adapted probe (:data:`ser_core.schema.ADAPTED_PROBE`, :data:`ser_core.schema.ADAPTED`) and gives its
answers over a folder of clips (``ser predict --adapt``); ``training/adapt_probe.py`` measures and builds it. The
shipped default's adapted probe (session 39's WU2A-H, docs/preregistration-session39.md) is a hybrid
(:func:`hybrid`): its answer is multiplied by the folder's own one-clip probe's.
"""
from __future__ import annotations

import numpy as np

from .errors import SERError

#: The fewest clips with speech a reference may hold (the number the adapted probe was measured and calibrated
#: with: docs/preregistration-session38.md).
REFERENCE_CLIPS = 20
SD_FLOOR = 1e-6         # a value constant over the reference is centred, not blown up


def reference_stats(vectors: np.ndarray, minimum: int = REFERENCE_CLIPS) -> tuple[np.ndarray, np.ndarray]:
    """The mean and standard deviation of a reference's vectors.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, values)
        Encoder vectors of the reference clips (one per clip, or per window of a long recording).
    minimum : int
        The fewest rows accepted.

    Returns
    -------
    mean, sd : np.ndarray, shape (values,)
        ``sd`` has :data:`SD_FLOOR` added, so it is never 0.

    Raises
    ------
    SERError
        Fewer than ``minimum`` rows, or a value that is not finite.
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or len(v) < minimum:
        n = len(v) if v.ndim == 2 else 0
        raise SERError(f"adapting to a recording setup needs at least {minimum} clips with speech from it; "
                       f"{n} given")
    if not np.isfinite(v).all():
        raise SERError("a reference vector is not finite")
    return v.mean(axis=0), v.std(axis=0) + SD_FLOOR


def standardise(vectors: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Vectors standardised by a group's ``(mean, sd)`` (:func:`reference_stats` of the group's clips)."""
    mean, sd = stats
    return (np.asarray(vectors, dtype=np.float64) - mean) / sd


def logits(vectors: np.ndarray, stats: tuple[np.ndarray, np.ndarray], probe: dict[str, np.ndarray]) -> np.ndarray:
    """The adapted probe's scores: the vectors standardised by their setup's reference ``stats``, then as the
    probe's training rows were (its ``mean`` and ``std``), then its linear layer (``coef``, ``bias``)."""
    z = (standardise(vectors, stats) - probe["mean"]) / probe["std"]
    return z @ probe["coef"].T + probe["bias"]


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``scores / temperature``."""
    s = np.asarray(scores, dtype=np.float64) / temperature
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def hybrid(adapted: np.ndarray, single: np.ndarray) -> np.ndarray:
    """Scores of a hybrid (session 39's WU2A-H): the adapted probe's log-probabilities plus the single-clip
    probe's, over the same labels (a product of the two answers; a temperature then divides the sum).

    Parameters
    ----------
    adapted, single : np.ndarray
        Each probe's scores (clips x labels, the same labels in the same order).

    Returns
    -------
    np.ndarray
        The summed log-probabilities (clips x labels).
    """
    def log_softmax(s: np.ndarray) -> np.ndarray:
        s = s - s.max(axis=1, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=1, keepdims=True))

    return log_softmax(np.asarray(adapted, np.float64)) + log_softmax(np.asarray(single, np.float64))
