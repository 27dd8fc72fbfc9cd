"""Corpus-adversarial training: the gradient reversal, its ramp, and a real run that saves the emotion network
alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ser_core.errors import ConfigError
from ser_core.training import Logger, TrainConfig, train

from conftest import ROOT


@pytest.fixture(scope="module")
def adv():
    from ser_core import adversary

    return adversary


def test_the_reversal_passes_values_and_turns_gradients_round(adv):
    import tensorflow as tf

    from ser_core.layers import GradientReversal

    layer = GradientReversal()
    x = tf.constant([[1.0, -2.0, 3.0]])
    layer.build(x.shape)
    layer.strength.assign(0.4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, -1.0]]))
    np.testing.assert_allclose(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-0.4, -0.8, 0.4]], rtol=1e-6)


def test_the_strength_ramps_from_zero_to_nearly_its_value(adv):
    got = [adv.strength_at(e, 20, 0.5) for e in range(20)]
    assert got[0] == 0.0
    assert all(b > a for a, b in zip(got, got[1:]))
    assert 0.49 < got[-1] < 0.5
    assert adv.strength_at(10, 20, 0.5) == pytest.approx(0.5 * (2 / (1 + np.exp(-5)) - 1))


def test_targets_carry_the_corpus_beside_the_emotion(adv):
    codes, names = adv.corpus_codes(np.array(["ravdess", "emovo", "ravdess", "ased"]))
    assert names == ["ased", "emovo", "ravdess"] and codes.tolist() == [2, 1, 2, 0]
    got = adv.adversarial_targets(np.eye(2, dtype=np.float32)[[0, 1, 1, 0]], codes, 3)
    assert got.tolist() == [[1, 0, 0, 0, 1], [0, 1, 0, 1, 0], [0, 1, 0, 0, 1], [1, 0, 1, 0, 0]]
    with pytest.raises(ConfigError, match="two or more corpora"):
        adv.corpus_codes(np.array(["ravdess", "ravdess"]))


def test_the_loss_is_both_cross_entropies_and_accuracy_reads_the_emotion_columns(adv):
    y_true = np.array([[1, 0, 0, 1], [0, 1, 1, 0]], np.float32)           # 2 emotions, 2 corpora
    y_pred = np.array([[0.8, 0.2, 0.3, 0.7], [0.6, 0.4, 0.9, 0.1]], np.float32)
    got = adv.loss(2)(y_true, y_pred).numpy()
    np.testing.assert_allclose(got, [-np.log(0.8) - np.log(0.7), -np.log(0.4) - np.log(0.9)], rtol=1e-5)
    accuracy, corpus_accuracy = adv.metrics(2)
    assert accuracy.__name__ == "accuracy"
    assert accuracy(y_true, y_pred).numpy().tolist() == [1.0, 0.0]
    assert corpus_accuracy(y_true, y_pred).numpy().tolist() == [1.0, 1.0]


def test_an_adversarial_run_trains_on_several_corpora_and_saves_the_emotion_network(data_root, tmp_path):
    cfg = TrainConfig(dataset="ravdess+emovo+ased", arch="seed004_dnn", test_speakers=("ravdess-01",),
                      n_val_speakers=0, epochs=3, batch_size=8, workers=1, precision="float32",
                      adversary=0.5).resolved()
    run = tmp_path / "run"
    metrics = train(run, cfg, log=Logger(run, to_file=True, echo=False))
    assert "corpus adversary (strength 0.5, ramped)" in (run / "log.txt").read_text()
    assert "ased, emovo, ravdess" in (run / "log.txt").read_text()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 3 and all(0.0 <= row["corpus_accuracy"] <= 1.0 for row in history)
    assert 0.0 <= metrics["accuracy"] <= 1.0

    from ser_core.predict import Predictor

    p = Predictor(run / "model", runtime="keras")
    assert len(p.model.outputs) == 1 and p.model.output_shape[-1] == len(p.labels)
    assert "corpus" not in [layer.name for layer in p.model.layers]
    probs = p.predict_file(ROOT / "data" / "samples" / "03-01-05-02-01-01-01.flac").probabilities
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_one_corpus_has_nothing_to_forget():
    with pytest.raises(ConfigError, match="two or more corpora"):
        TrainConfig(dataset="ravdess", adversary=0.5).resolved()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-m", "ser_core", "train", "--dataset", "ravdess", "--adversary", "0.5"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "a corpus adversary needs two or more corpora" in out.stderr
