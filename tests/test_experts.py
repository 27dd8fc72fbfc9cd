"""Corpus experts: the gate-weighted blend of per-corpus emotion heads, and a real run on several corpora
whose saved network predicts (Keras and LiteRT alike) without being told a clip's corpus."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ser_core.errors import ConfigError
from ser_core.training import Logger, TrainConfig, train

from conftest import ROOT

CLIP = ROOT / "data" / "samples" / "03-01-05-02-01-01-01.flac"


@pytest.fixture(scope="module")
def keras():
    from ser_core.tf_setup import keras as _keras

    return _keras()


def small_network(keras, n_in=6, n_out=4, seed=0):
    inp = keras.Input((n_in,))
    h = keras.layers.Dense(5, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(seed))(inp)
    return keras.Model(inp, keras.layers.Dense(n_out, activation="softmax")(h))


def test_the_answer_is_the_experts_probabilities_weighted_by_the_gate(keras):
    from ser_core import experts

    model, training = experts.wrap(small_network(keras), 3)
    x = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    out = model.predict(x, verbose=0)
    both = training.predict(x, verbose=0)
    np.testing.assert_allclose(both[:, :4], out, atol=1e-6)      # the training model's emotion part is the answer
    gate = both[:, 4:]
    np.testing.assert_allclose(gate.sum(axis=1), 1.0, atol=1e-5)
    # By hand: the shared representation, each expert's softmax, the gate's mean of them.
    h = keras.Model(model.inputs, model.get_layer("corpus_experts").input).predict(x, verbose=0)
    w, b = model.get_layer("corpus_experts").get_weights()
    logits = (h @ w + b).reshape(len(x), 3, 4)
    per_expert = np.exp(logits - logits.max(axis=2, keepdims=True))
    per_expert /= per_expert.sum(axis=2, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bc,bce->be", gate, per_expert), atol=1e-5)
    assert experts.n_experts(model) == 3 and experts.n_experts(small_network(keras)) == 0
    assert model.output_shape == (None, 4)
    with pytest.raises(ValueError, match="two or more"):
        experts.wrap(small_network(keras), 1)


def test_a_bfloat16_network_comes_back_in_float32_with_its_experts(keras):
    from ser_core import experts, models
    from ser_core.fitting import as_float32, precision_policy

    cfg = TrainConfig(dataset="ravdess+emovo", arch="seed004_dnn", precision="bfloat16", corpus_experts=True)
    shape = (193,)                      # any input width will do for a dense network
    with precision_policy("bfloat16"):
        model, _ = experts.wrap(models.build(cfg.arch, shape, 8, seed=0), 2)
    assert model.get_layer("corpus_experts").dtype_policy.compute_dtype == "bfloat16"
    clean = as_float32(model, cfg, shape, 8, n_experts=2)
    assert clean.get_layer("corpus_experts").dtype_policy.compute_dtype == "float32"
    assert experts.n_experts(clean) == 2
    for a, b in zip(model.get_weights(), clean.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_an_experts_run_trains_on_several_corpora_and_predicts_without_a_corpus_name(data_root, tmp_path):
    cfg = TrainConfig(dataset="ravdess+emovo+ased", arch="seed004_dnn", test_speakers=("ravdess-01",),
                      n_val_speakers=0, epochs=3, batch_size=8, workers=1, precision="float32",
                      corpus_experts=True).resolved()
    run = tmp_path / "run"
    metrics = train(run, cfg, log=Logger(run, to_file=True, echo=False))
    log = (run / "log.txt").read_text()
    assert "corpus experts: one emotion head for each of ased, emovo, ravdess" in log
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 3 and all(0.0 <= row["corpus_accuracy"] <= 1.0 for row in history)
    assert 0.0 <= metrics["accuracy"] <= 1.0

    from ser_core import experts, lite
    from ser_core.predict import Predictor

    p = Predictor(run / "model", runtime="keras")
    assert len(p.model.outputs) == 1 and p.model.output_shape[-1] == len(p.labels)
    assert experts.n_experts(p.model) == 3
    keras_probs = p.predict_file(CLIP).probabilities
    assert sum(keras_probs.values()) == pytest.approx(1.0, abs=1e-5)
    lite.export(run / "model", log=lambda *a: None)
    lite_probs = Predictor(run / "model", runtime="lite").predict_file(CLIP).probabilities
    assert max(abs(keras_probs[k] - lite_probs[k]) for k in keras_probs) < 1e-4


def test_experts_need_several_corpora_and_no_adversary():
    with pytest.raises(ConfigError, match="corpus experts need two or more corpora"):
        TrainConfig(dataset="ravdess", corpus_experts=True).resolved()
    with pytest.raises(ConfigError, match="choose one"):
        TrainConfig(dataset="ravdess+emovo", corpus_experts=True, adversary=0.5).resolved()
