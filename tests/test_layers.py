"""FastDropout: the stock layer's distribution from a cheaper mask; the bench's reference swaps it back."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def tf():
    from ser_core.tf_setup import keras

    keras()
    import tensorflow

    return tensorflow


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_fast_dropout_keeps_one_minus_rate_and_preserves_the_mean(tf, rate):
    from ser_core.layers import FastDropout

    layer = FastDropout(rate, seed=1)
    x = tf.ones([500, 801], tf.float32)                 # odd element count: the last 16-bit half is unused
    y = layer(x, training=True).numpy()
    kept = y != 0
    assert kept.mean() == pytest.approx(1 - rate, abs=0.003)      # 400,500 draws: 5 sigma is ~0.003
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)
    assert y.mean() == pytest.approx(1.0, abs=0.005)
    assert abs(kept[:, :400].mean() - kept[:, 400:].mean()) < 0.01   # no position is favoured
    again = layer(x, training=True).numpy() != 0
    assert (again != kept).mean() > 2 * rate * (1 - rate) * 0.9       # a fresh mask every call


def test_fast_dropout_is_the_identity_at_inference_and_masks_gradients(tf):
    from ser_core.layers import FastDropout

    layer = FastDropout(0.5, seed=3)
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 6, 5, 3)).astype(np.float32))
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y)
    grad = tape.gradient(loss, x).numpy()
    np.testing.assert_allclose(grad, np.where(y.numpy() != 0, 2.0, 0.0), rtol=1e-6)


def test_fast_dropout_in_bfloat16_and_after_a_save(tf, tmp_path):
    from ser_core import models
    from ser_core.layers import FastDropout
    from ser_core.tf_setup import keras

    layer = FastDropout(0.2, dtype="mixed_bfloat16")
    y = layer(tf.ones([64, 256]), training=True)
    assert y.dtype == tf.bfloat16 and float(tf.reduce_mean(tf.cast(y != 0, tf.float32))) == pytest.approx(0.8, abs=0.02)
    model = models.build("seed004_dnn", (32,), 8, units=16)
    assert any(isinstance(lay, FastDropout) for lay in model.layers)
    model.save(tmp_path / "m.keras")
    loaded = keras().models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert [type(lay).__name__ for lay in loaded.layers] == [type(lay).__name__ for lay in model.layers]
    x = np.random.default_rng(1).normal(size=(3, 32)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)


def test_the_bench_reference_uses_keras_own_layers(tf):
    from ser_core import models
    from ser_app.bench import stock_layers
    from ser_core.layers import FastDropout, FusedBatchNormalization

    ours = models.build("ser_crnn", (64, 94, 3), 8, width=8, units=8)
    plain = stock_layers(ours)
    custom = (FastDropout, FusedBatchNormalization)
    assert any(isinstance(lay, custom) for lay in ours.layers)
    assert not any(isinstance(lay, custom) for lay in plain.layers)
    assert sorted(type(lay).__name__ for lay in plain.layers) == sorted(
        {"FastDropout": "Dropout", "FusedBatchNormalization": "BatchNormalization"}.get(type(lay).__name__,
                                                                                       type(lay).__name__)
        for lay in ours.layers)
    x = np.random.default_rng(2).normal(size=(2, 64, 94, 3)).astype(np.float32)
    np.testing.assert_allclose(plain(x, training=False), ours(x, training=False), rtol=1e-4, atol=1e-6)
