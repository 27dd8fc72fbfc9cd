"""Import TensorFlow/Keras quietly and with thread settings that suit a small CPU machine."""
from __future__ import annotations

import os


def keras():
    """Return the ``keras`` module, importing TensorFlow on first use only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras as _keras
    import tensorflow as tf

    n = os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
    except RuntimeError:
        pass  # already initialised by an earlier import in this process
    return _keras
