"""Custom Keras layers (this module imports TensorFlow: import it only where a model is built or loaded).

Importing it registers the layers, so saved models that use them load in safe mode.
"""
from __future__ import annotations

from .tf_setup import keras as _keras

keras = _keras()
import tensorflow as tf  # noqa: E402  (after tf_setup, which sets threads and silences start-up noise)


@keras.saving.register_keras_serializable(package="ser_core")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training pass on NHWC images is one fused kernel.

    Keras 3 normalises with separate moments / normalise / update ops; TensorFlow's
    ``FusedBatchNormV3`` does the same arithmetic (batch statistics, biased variance
    for the moving averages, the same epsilon and momentum) in one pass, forward
    and backward. Inference, and inputs of other ranks, use the stock layer unchanged,
    so weights and predictions are those of the stock layer.
    """

    def call(self, inputs, training=None, mask=None):
        fusable = (training and self.trainable and mask is None and len(inputs.shape) == 4
                   and self.axis in (-1, 3) and self.center and self.scale)
        if not fusable:
            return super().call(inputs, training=training, mask=mask)
        # bfloat16 goes in as is: the kernel keeps statistics in float32, and a cast would cost
        # two more passes over the activations (a quarter of a conv block's training step)
        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16) else tf.cast(inputs, tf.float32)
        y, mean, var, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.convert_to_tensor(self.gamma), offset=tf.convert_to_tensor(self.beta),
            mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
            epsilon=self.epsilon, is_training=True, data_format="NHWC")
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        var = var * (n - 1.0) / tf.maximum(n, 2.0)     # the kernel reports Bessel-corrected variance
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + var * (1.0 - self.momentum))
        return tf.cast(y, inputs.dtype)


@keras.saving.register_keras_serializable(package="ser_core")
class FastDropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` whose mask costs half: 16 random bits per element, two per Philox word.

    TensorFlow's dropout draws a float per element, which made dropout a fifth of a ser_crnn
    training step. Same distribution: each element is kept with probability 1 - rate
    (to within 1/65536) and survivors are scaled by 1 / (1 - rate). Inference, and
    ``noise_shape`` masks, use the stock layer.
    """

    def call(self, inputs, training=False):
        if not training or self.rate <= 0 or self.rate >= 1 or self.noise_shape is not None:
            return super().call(inputs, training=training)
        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)
        n = tf.size(inputs)
        bits = tf.random.stateless_uniform([(n + 1) // 2], seed=seed, minval=None, maxval=None, dtype=tf.uint32)
        halves = tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[:n]
        keep = tf.reshape(halves >= tf.constant(round(self.rate * 65536), tf.uint16), tf.shape(inputs))
        return tf.where(keep, inputs * tf.cast(1.0 / (1.0 - self.rate), inputs.dtype), tf.zeros((), inputs.dtype))


@keras.saving.register_keras_serializable(package="ser_core")
class GradientReversal(keras.layers.Layer):
    """Identity on the way forward; on the way back the gradient is multiplied by ``-strength``.

    The layer between a shared representation and a corpus classifier in domain-adversarial
    training (Ganin et al. 2016): the classifier learns to tell the corpora apart, and the
    reversed gradient teaches the layers below to make that impossible. ``strength`` is a
    non-trainable weight, so a callback can ramp it up during training.
    """

    def build(self, input_shape):
        self.strength = self.add_weight(shape=(), initializer="zeros", trainable=False, name="strength")

    def call(self, inputs):
        strength = tf.cast(tf.convert_to_tensor(self.strength), inputs.dtype)

        @tf.custom_gradient
        def reverse(x):
            return tf.identity(x), lambda dy: -strength * dy

        return reverse(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
