"""The fast training path (fused BatchNorm, bfloat16, cosine schedule) computes what the plain one does."""
import json

import numpy as np
import pytest

from ser_core import runs
from ser_core.training import Logger, TrainConfig, train

from conftest import SAMPLES


def _pair():
    from ser_core.layers import FusedBatchNormalization
    from ser_core.tf_setup import keras

    k = keras()
    stock, fused = k.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)
    for layer in (stock, fused):
        layer.build((None, 6, 5, 4))
    rng = np.random.default_rng(0)
    weights = [rng.normal(1, 0.2, 4), rng.normal(0, 0.2, 4), rng.normal(0, 1, 4), rng.uniform(0.5, 2, 4)]
    for layer in (stock, fused):
        layer.set_weights([w.astype(np.float32) for w in weights])
    x = rng.normal(3, 2, (8, 6, 5, 4)).astype(np.float32)
    return stock, fused, x


def test_fused_batchnorm_trains_and_infers_like_keras_batchnorm():
    import tensorflow as tf

    stock, fused, x = _pair()
    probe = tf.constant(np.random.default_rng(1).normal(size=x.shape).astype(np.float32))
    x = tf.constant(x)
    outs, grads = [], []
    for layer in (stock, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * probe)       # a random projection: no gradient cancels by symmetry
        outs.append(y.numpy())
        grads.append([g.numpy() for g in tape.gradient(loss, [x, layer.gamma, layer.beta])])
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # the moving averages moved by the same (biased-variance) batch statistics
    np.testing.assert_allclose(stock.moving_mean.numpy(), fused.moving_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(stock.moving_variance.numpy(), fused.moving_variance.numpy(), rtol=1e-5)


def test_fused_batchnorm_takes_bfloat16_activations_without_a_float32_round_trip():
    """Under mixed precision the kernel reads bfloat16 directly and keeps its statistics in float32."""
    import tensorflow as tf

    from ser_core.layers import FusedBatchNormalization
    from ser_core.tf_setup import keras

    k = keras()
    stock = k.layers.BatchNormalization(momentum=0.9, dtype="mixed_bfloat16")
    fused = FusedBatchNormalization(momentum=0.9, dtype="mixed_bfloat16")
    x = tf.constant(np.random.default_rng(2).normal(3, 2, (8, 6, 5, 4)).astype(np.float32))
    ys = [layer(x, training=True) for layer in (stock, fused)]
    assert ys[1].dtype == tf.bfloat16 and fused.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(ys[0], tf.float32), tf.cast(ys[1], tf.float32), atol=0.05)
    np.testing.assert_allclose(stock.moving_mean.numpy(), fused.moving_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(stock.moving_variance.numpy(), fused.moving_variance.numpy(), rtol=1e-4)
    graph = tf.function(lambda v: fused(v, training=True)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.bfloat16)).graph
    bn = [op for op in graph.get_operations() if op.type == "FusedBatchNormV3"]
    assert len(bn) == 1 and bn[0].inputs[0].dtype == tf.bfloat16
    assert not np.allclose(stock.moving_mean.numpy(), _pair()[0].moving_mean.numpy())   # they did move
    np.testing.assert_allclose(stock(x, training=False).numpy(), fused(x, training=False).numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bf16-run")
    cfg = TrainConfig(dataset=f"ravdess:{SAMPLES}", arch="seed000_cnn", test_speakers=("ravdess-01",),
                      n_val_speakers=1, epochs=3, batch_size=8, workers=1, precision="bfloat16",
                      schedule="cosine", learning_rate=2e-3)
    train(run_dir, cfg, log=Logger(run_dir, to_file=True, echo=False))
    return run_dir


def test_bfloat16_training_saves_a_float32_model(bf16_run):
    from ser_core.predict import Predictor

    assert json.loads((bf16_run / "config.json").read_text())["precision"] == "bfloat16"
    assert "bfloat16" in (bf16_run / "log.txt").read_text()
    pred = Predictor(bf16_run / "model")
    assert {layer.dtype_policy.name for layer in pred.model.layers} == {"float32"}
    assert {w.dtype for w in pred.model.weights} == {"float32"}
    assert any(type(layer).__name__ == "FusedBatchNormalization" for layer in pred.model.layers)
    result = pred.predict_file(sorted(SAMPLES.glob("*.flac"))[0])
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_cosine_schedule_warms_up_then_decays(bf16_run):
    lrs = [h["lr"] for h in runs.read_history(bf16_run)]
    assert len(lrs) == 3
    assert max(lrs) <= 2e-3 + 1e-9
    assert lrs[-1] < 0.05 * 2e-3 < lrs[0]          # ends near 1 % of the peak


def test_bad_schedule_precision_or_parameter_is_a_clear_error():
    with pytest.raises(Exception, match="unknown learning-rate schedule"):
        TrainConfig(arch="ser_crnn", schedule="sawtooth").resolved()
    with pytest.raises(Exception, match="unknown precision"):
        TrainConfig(arch="ser_crnn", precision="float8").resolved()
    with pytest.raises(Exception, match=r"ser_crnn has no parameter depth; it takes width \(default 32\)"):
        TrainConfig(arch="ser_crnn", arch_params={"depth": 3}).resolved()
