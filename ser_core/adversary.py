"""Corpus-adversarial training (``TrainConfig.adversary``): forget the corpus, keep the emotion.

A small corpus classifier reads the representation the emotion head reads, through a
:class:`~ser_core.layers.GradientReversal` layer (Ganin et al. 2016). The classifier learns
which training corpus a clip comes from; the reversed gradient pushes the shared layers to make
that impossible, so what they keep is what the corpora share rather than a corpus's room,
microphone or language. Only the emotion network is saved: the corpus head exists during
:func:`ser_core.fitting.fit` alone, so prediction, export and evaluation never see it.

The training model outputs the emotion probabilities and the corpus probabilities side by side
in one tensor, and its targets are the emotion target and the corpus one-hot side by side, so
the tf.data pipeline and its augmentations carry them unchanged. This module imports TensorFlow.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError
from .tf_setup import keras as _keras

keras = _keras()
import tensorflow as tf  # noqa: E402  (after tf_setup)

from .layers import GradientReversal  # noqa: E402

HIDDEN = 64          # units of the corpus classifier's hidden layer
RAMP = 10.0          # Ganin's schedule: strength * (2 / (1 + exp(-RAMP * p)) - 1), p the share of epochs done


def corpus_codes(groups: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """Each training example's corpus as an index into the sorted corpus names.

    Raises :class:`ConfigError` when the training data hold fewer than two corpora: there is
    nothing for the adversary to tell apart.
    """
    if groups is None or len(set(groups.tolist())) < 2:
        raise ConfigError("a corpus adversary needs training clips from two or more corpora")
    names = sorted(set(groups.tolist()))
    return np.searchsorted(names, groups).astype(np.int64), names


def adversarial_targets(targets: np.ndarray, codes: np.ndarray, n_corpora: int) -> np.ndarray:
    """The emotion targets with each example's corpus one-hot appended."""
    return np.concatenate([np.asarray(targets, np.float32), np.eye(n_corpora, dtype=np.float32)[codes]], axis=1)


def wrap(network, n_corpora: int):
    """The training model: ``network``'s emotion probabilities and a corpus head's, concatenated.

    The corpus head reads the input of the network's last layer (every registered
    architecture ends with a dense softmax over the emotions). Returns the model and its
    reversal layer (whose strength :class:`Ramp` sets).
    """
    shared = network.layers[-1].input
    reversal = GradientReversal(name="corpus_reversal")
    h = keras.layers.Dense(HIDDEN, activation="relu", name="corpus_hidden")(reversal(shared))
    corpus = keras.layers.Dense(n_corpora, activation="softmax", dtype="float32", name="corpus")(h)
    out = keras.layers.Concatenate(dtype="float32", name="emotion_and_corpus")([network.output, corpus])
    return keras.Model(network.inputs, out, name=f"{network.name}_adversarial"), reversal


def loss(n_emotions: int, label_smoothing: float = 0.0):
    """Cross-entropy of the emotion columns (smoothed as Keras smooths) plus that of the corpus columns."""
    def emotion_and_corpus_crossentropy(y_true, y_pred):
        e_true, c_true = y_true[:, :n_emotions], y_true[:, n_emotions:]
        if label_smoothing:
            e_true = e_true * (1.0 - label_smoothing) + label_smoothing / n_emotions
        y_pred = tf.clip_by_value(tf.cast(y_pred, tf.float32), 1e-7, 1.0)
        emotion = -tf.reduce_sum(e_true * tf.math.log(y_pred[:, :n_emotions]), axis=-1)
        corpus = -tf.reduce_sum(c_true * tf.math.log(y_pred[:, n_emotions:]), axis=-1)
        return emotion + corpus
    return emotion_and_corpus_crossentropy


def metrics(n_emotions: int) -> list:
    """``accuracy`` on the emotion columns (the name every run logs and keeps its epoch by) and
    ``corpus_accuracy``: how well the adversary still tells the corpora apart."""
    def part_accuracy(lo, hi, name):
        def fn(y_true, y_pred):
            return tf.cast(tf.equal(tf.argmax(y_true[:, lo:hi], axis=-1), tf.argmax(y_pred[:, lo:hi], axis=-1)),
                           tf.float32)
        fn.__name__ = name
        return fn
    return [part_accuracy(0, n_emotions, "accuracy"), part_accuracy(n_emotions, None, "corpus_accuracy")]


def strength_at(epoch: int, epochs: int, strength: float) -> float:
    """The reversal's strength for an epoch (Ganin's ramp: 0 at the start, near ``strength`` at the end)."""
    p = epoch / max(1, epochs)
    return strength * (2.0 / (1.0 + math.exp(-RAMP * p)) - 1.0)


class Ramp(keras.callbacks.Callback):
    """Sets the reversal layer's strength at the start of every epoch."""

    def __init__(self, reversal, epochs: int, strength: float):
        super().__init__()
        self.reversal, self.epochs, self.target = reversal, epochs, strength

    def on_epoch_begin(self, epoch, logs=None):
        self.reversal.strength.assign(strength_at(epoch, self.epochs, self.target))
