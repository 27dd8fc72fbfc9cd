"""Import TensorFlow/Keras quietly and with thread settings that suit a small CPU machine."""
from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """TensorFlow's C++ start-up lines (absl, oneDNN) ignore TF_CPP_MIN_LOG_LEVEL; hide file
    descriptor 2 while it loads. Python errors still surface as exceptions."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def keras():
    """Return the ``keras`` module, importing TensorFlow on first use only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "tensorflow" not in sys.modules:
        with native_stderr_silenced():
            import tensorflow as tf

            from .machine import usable_cpus

            n = usable_cpus()
            try:
                tf.config.threading.set_intra_op_parallelism_threads(n)
                tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
            except RuntimeError:
                pass  # the runtime was already initialised elsewhere in this process
            tf.constant(0.0) + 1.0    # first op: CPU-feature notices are printed here, also hidden
    import keras as _keras
    import tensorflow as tf

    # Python-side notices too, also when TensorFlow was imported elsewhere first (robustness workers
    # set their own threads): every Predictor traces its own tf.function once, and after five
    # (a robustness run builds dozens) TensorFlow warns about "retracing" on every one
    tf.get_logger().setLevel("ERROR")
    return _keras
