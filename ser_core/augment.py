"""Data augmentation, applied to the training split only.

Waveform functions take a float32 signal and a numpy ``Generator``; feature
masks take one example ``(F, T, C)``. The TensorFlow batch versions used
during training live in :mod:`ser_core.training`.
"""
from __future__ import annotations

import numpy as np


def add_noise(y: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (15.0, 30.0)) -> np.ndarray:
    """White noise at a random signal-to-noise ratio."""
    power = float(np.mean(y ** 2)) + 1e-12
    snr = rng.uniform(*snr_db)
    noise = rng.standard_normal(y.shape).astype(np.float32) * np.sqrt(power / 10 ** (snr / 10))
    return (y + noise).astype(np.float32)


def random_gain(y: np.ndarray, rng: np.random.Generator, db: tuple[float, float] = (-6.0, 6.0)) -> np.ndarray:
    return np.clip(y * 10 ** (rng.uniform(*db) / 20), -1.0, 1.0).astype(np.float32)


def time_mask(x: np.ndarray, rng: np.random.Generator, max_frac: float = 0.15) -> np.ndarray:
    """Zero a random span of frames (axis 1) of one (F, T, C) example."""
    x = x.copy()
    t = x.shape[1]
    w = int(rng.integers(0, max(1, int(t * max_frac)) + 1))
    s = int(rng.integers(0, t - w + 1))
    x[:, s:s + w] = 0.0
    return x


def freq_mask(x: np.ndarray, rng: np.random.Generator, max_frac: float = 0.15) -> np.ndarray:
    """Zero a random band of rows (axis 0) of one (F, T, C) example."""
    x = x.copy()
    f = x.shape[0]
    w = int(rng.integers(0, max(1, int(f * max_frac)) + 1))
    s = int(rng.integers(0, f - w + 1))
    x[s:s + w] = 0.0
    return x


def minority_plan(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of training clips to copy so every class reaches the largest class's count."""
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.max()
    picks = [rng.choice(np.flatnonzero(labels == c), target - n, replace=True)
             for c, n in zip(classes, counts) if n < target]
    return np.concatenate(picks).astype(int) if picks else np.zeros(0, dtype=int)
