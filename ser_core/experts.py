"""Corpus experts (``TrainConfig.corpus_experts``): one emotion head per training corpus, blended by a gate.

Corpora may draw the boundaries between emotions in different places (a four-corpus network with
one softmax answered RAVDESS's happy and sad far less often than they occur). Here the network's
last layer, a dense softmax over the emotions, is replaced by one such softmax per training corpus
(the experts), all reading the representation the old layer read, and a gate: a small classifier
of which training corpus a clip sounds like. The answer is the experts' probabilities weighted by
the gate's, so the saved network maps features to emotion probabilities like any other and needs
no corpus name at prediction time: a clip that sounds like one corpus gets that corpus's expert, a
voice like none of them gets a blend. (Measured in session 17, ``docs/multicorpus.md``: the gate
sends every RAVDESS test clip to the RAVDESS expert, and that expert still rarely answers happy or
sad, so the boundary was not where four-corpus networks lose RAVDESS.)

During :func:`ser_core.fitting.fit` the gate also learns from each clip's corpus: the training model
outputs the blended emotion probabilities and the gate's side by side, with the corpus one-hot beside the
emotion target, the layout and loss of :mod:`ser_core.adversary` (without its gradient reversal: here the
representation is meant to know the corpus). This module imports TensorFlow.
"""
from __future__ import annotations

from .tf_setup import keras as _keras

keras = _keras()

GATE_HIDDEN = 64     # units of the gate's hidden layer
GATE = "corpus_gate"  # the gate's output layer; the training model reads it


def wrap(network, n_corpora: int):
    """The emotion network with corpus experts, and the training model that also outputs the gate.

    ``network`` is a freshly built architecture; its last layer (a dense softmax over the emotions)
    is dropped and replaced. Returns ``(emotion_model, training_model)``, sharing every layer.
    """
    if n_corpora < 2:
        raise ValueError("corpus experts need two or more training corpora")
    shared = network.layers[-1].input
    n = network.output_shape[-1]
    h = keras.layers.Dense(GATE_HIDDEN, activation="relu", name="corpus_gate_hidden")(shared)
    gate = keras.layers.Dense(n_corpora, activation="softmax", dtype="float32", name=GATE)(h)
    logits = keras.layers.Dense(n_corpora * n, name="corpus_experts")(shared)
    experts = keras.layers.Reshape((n_corpora, n), name="corpus_experts_split")(logits)
    experts = keras.layers.Softmax(axis=-1, dtype="float32", name="corpus_experts_softmax")(experts)
    # (batch, corpora) . (batch, corpora, emotions) over the corpora: the gate-weighted mean of the experts.
    blend = keras.layers.Dot(axes=(1, 1), dtype="float32", name="emotion")([gate, experts])
    emotion_model = keras.Model(network.inputs, blend, name=f"{network.name}_experts")
    both = keras.layers.Concatenate(dtype="float32", name="emotion_and_corpus")([blend, gate])
    return emotion_model, keras.Model(network.inputs, both, name=f"{network.name}_experts_training")


def n_experts(model) -> int:
    """How many corpus experts a saved network holds (0 for a network without them)."""
    names = {layer.name: layer for layer in model.layers}
    return names[GATE].units if GATE in names else 0
