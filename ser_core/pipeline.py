"""The training input pipeline: loss weights, tf.data batches and the online augmentations.

The augmentation names are declared with the training options
(:data:`ser_core.trainconfig.ONLINE_AUGS`); :func:`_augment_batch` applies them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .machine import usable_cpus


# ----------------------------------------------------------------------------- loss weights
def _class_weights(y: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n).astype(float)
    w = np.where(counts > 0, len(y) / (n * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)


def example_weights(y: np.ndarray, groups: np.ndarray | None, n: int, within: str = "emotion") -> np.ndarray:
    """Per-example loss weights over several corpora (mean weight 1).

    ``within="emotion"``: every emotion weighs the same, and within an emotion every corpus
    that has it weighs the same. Without the second rule the largest corpus would set what
    each emotion sounds like (ASED has six times URDU's clips); with it, 80 URDU talk-show
    clips of "sad" count as much as 400 acted Amharic ones. But an emotion few corpora have
    gets its whole weight from them: inside RAVDESS, calm (RAVDESS alone) then weighs four
    times happy or sad (four corpora each), and a network learns to answer calm and rarely
    happy or sad on RAVDESS (session 17, ``docs/multicorpus.md``).

    ``within="corpus"``: every corpus weighs the same, and within a corpus every emotion it
    has weighs the same, so each corpus is class-balanced on its own. A corpus with few
    emotions then weighs as much as RAVDESS with eight: over four corpora RAVDESS gets a
    quarter of the loss (0.42 under ``"emotion"``).

    ``within="cell"``: every (emotion, corpus) pair present weighs the same. Each corpus is
    class-balanced on its own, as with ``"corpus"``, and weighs by how many emotions it has
    (RAVDESS a third over four corpora); an emotion weighs by how many corpora have it.

    With one corpus both are plain class weighting.
    """
    if groups is None or len(set(groups)) < 2:
        return _class_weights(y, n)[y]
    frame = pd.DataFrame({"y": y, "g": groups})
    per_cell = frame.groupby(["y", "g"])["y"].transform("size").to_numpy(float)
    if within == "corpus":
        classes_per_corpus = frame.groupby("g")["y"].transform("nunique").to_numpy(float)
        w = 1.0 / (frame["g"].nunique() * classes_per_corpus * per_cell)
    elif within == "cell":
        n_cells = frame.groupby(["y", "g"]).ngroups
        w = 1.0 / (n_cells * per_cell)
    elif within == "emotion":
        corpora_per_class = frame.groupby("y")["g"].transform("nunique").to_numpy(float)
        w = 1.0 / (frame["y"].nunique() * corpora_per_class * per_cell)
    else:
        raise ValueError(f"balance within 'emotion', 'corpus' or 'cell', not {within!r}")
    return (w * len(y)).astype(np.float32)


def training_targets(y: np.ndarray, n: int, soft: np.ndarray | None = None, share: float = 0.0,
                     temperature: float = 1.0) -> np.ndarray:
    """One target distribution per example: the one-hot emotion, or with a teacher's probabilities
    ``soft`` (rows of NaN where the teacher had no answer) ``(1 - share) * one-hot + share * soft``.

    ``temperature`` T softens the teacher first, ``softmax(log(soft) / T)`` (Hinton et al. 2015): a teacher's
    probabilities of the clips it learnt from are close to one-hot, and T > 1 brings out how it ranks the
    other emotions."""
    onehot = np.eye(n, dtype=np.float32)[y]
    if soft is None or share <= 0:
        return onehot
    soft = np.asarray(soft, np.float32)
    known = ~np.isnan(soft).any(axis=1)
    if temperature != 1.0 and known.any():
        logp = np.log(np.clip(soft[known].astype(np.float64), 1e-12, None)) / temperature
        logp -= logp.max(axis=1, keepdims=True)
        e = np.exp(logp)
        soft = soft.copy()
        soft[known] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    out = onehot.copy()
    out[known] = (1.0 - share) * onehot[known] + share * soft[known]
    return out


# ----------------------------------------------------------------------------- tf.data
def make_dataset(x: np.ndarray, y: np.ndarray, n_classes: int, *, batch_size: int, weights: np.ndarray | None,
                 training: bool, online_aug: tuple[str, ...] = (), mixup: float = 0.0, seed: int = 0,
                 sample_weight: np.ndarray | None = None, targets: np.ndarray | None = None):
    """A prefetched tf.data pipeline over arrays held once in memory: the shuffle permutes
    indices and each batch is one gather (no per-clip copies through a shuffle buffer);
    augmentation runs vectorised per batch.

    tf.data's autotuner is off and the parallelism fixed instead: Keras makes a new iterator
    every epoch, and destroying one waited for the autotuner's sleeping thread, padding an
    epoch by up to ~1.3 s of idle wall time (half of a ser_crnn epoch) on this machine.
    """
    import tensorflow as tf

    parallel = min(2, usable_cpus())

    onehot = training_targets(y, n_classes) if targets is None else np.asarray(targets, np.float32)
    if sample_weight is not None:
        w = np.asarray(sample_weight, np.float32)
    else:
        w = weights[y] if weights is not None else np.ones(len(y), np.float32)
    arrays = tuple(tf.constant(a) for a in (x, onehot, w))
    ds = tf.data.Dataset.range(len(x))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda i: tuple(tf.gather(a, i) for a in arrays))
    if training and (online_aug or mixup) and x.ndim == 4:
        gen = tf.random.Generator.from_seed(seed)
        ds = ds.map(lambda a, b, c: _augment_batch(a, b, c, online_aug, mixup, gen),
                    num_parallel_calls=parallel)
    elif training and mixup:
        gen = tf.random.Generator.from_seed(seed)
        ds = ds.map(lambda a, b, c: _augment_batch(a, b, c, (), mixup, gen), num_parallel_calls=parallel)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


# ----------------------------------------------------------------------------- online augmentation
def _band_mask(gen, batch, length: int, max_frac: float):
    import tensorflow as tf

    width = tf.cast(tf.floor(gen.uniform([batch, 1]) * (max_frac * length + 1)), tf.int32)
    start = tf.cast(tf.floor(gen.uniform([batch, 1]) * tf.cast(length - width + 1, tf.float32)), tf.int32)
    pos = tf.range(length)[None, :]
    return tf.cast(~((pos >= start) & (pos < start + width)), tf.float32)


def _shift_rows(gen, x, max_shift: int):
    """Move each example's spectrum up or down a few mel bands (a cheap vocal-tract-length perturbation)."""
    import tensorflow as tf

    b, f = tf.shape(x)[0], x.shape[1]
    shift = tf.cast(tf.round(gen.uniform([b, 1], -max_shift - 0.49, max_shift + 0.49)), tf.int32)
    idx = tf.clip_by_value(tf.range(f)[None, :] - shift, 0, f - 1)
    return tf.gather(x, idx, axis=1, batch_dims=1)


def _stretch_time(gen, x, low: float, high: float):
    """Play each example a little faster or slower (nearest-frame resampling; frames past the end are zero)."""
    import tensorflow as tf

    b, t = tf.shape(x)[0], x.shape[2]
    rate = gen.uniform([b, 1], low, high)
    src = tf.cast(tf.round(tf.cast(tf.range(t), tf.float32)[None, :] * rate), tf.int32)
    inside = tf.cast(src < t, x.dtype)
    out = tf.gather(x, tf.minimum(src, t - 1), axis=2, batch_dims=1)
    return out * inside[:, None, :, None]


def _augment_batch(x, y, w, online_aug, mixup, gen):
    import tensorflow as tf

    b = tf.shape(x)[0]
    if "time_mask" in online_aug:
        m = _band_mask(gen, b, x.shape[2], 0.15)
        x = x * m[:, None, :, None]
    if "freq_mask" in online_aug:
        m = _band_mask(gen, b, x.shape[1], 0.15)
        x = x * m[:, :, None, None]
    if "freq_shift" in online_aug:
        x = _shift_rows(gen, x, max_shift=3)
    if "time_stretch" in online_aug:
        x = _stretch_time(gen, x, low=0.85, high=1.15)
    if "brightness_contrast" in online_aug:
        contrast = gen.uniform([b, 1, 1, 1], 0.8, 1.2)
        bright = gen.uniform([b, 1, 1, 1], -0.2, 0.2)
        x = x * contrast + bright
    if mixup:
        lam = tf.random.stateless_gamma([b], seed=gen.make_seeds(1)[:, 0], alpha=mixup)
        lam2 = tf.random.stateless_gamma([b], seed=gen.make_seeds(1)[:, 0], alpha=mixup)
        lam = lam / (lam + lam2 + 1e-9)
        lam = tf.maximum(lam, 1 - lam)
        perm = tf.random.experimental.stateless_shuffle(tf.range(b), seed=gen.make_seeds(1)[:, 0])
        shape = [b] + [1] * (len(x.shape) - 1)
        x = tf.reshape(lam, shape) * x + tf.reshape(1 - lam, shape) * tf.gather(x, perm)
        y = lam[:, None] * y + (1 - lam[:, None]) * tf.gather(y, perm)
        w = lam * w + (1 - lam) * tf.gather(w, perm)
    return x, y, w
