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
        x = tf.cast(inputs, tf.float32) if inputs.dtype != tf.float32 else inputs
        y, mean, var, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.convert_to_tensor(self.gamma), offset=tf.convert_to_tensor(self.beta),
            mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
            epsilon=self.epsilon, is_training=True, data_format="NHWC")
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        var = var * (n - 1.0) / tf.maximum(n, 2.0)     # the kernel reports Bessel-corrected variance
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + var * (1.0 - self.momentum))
        return tf.cast(y, inputs.dtype)
