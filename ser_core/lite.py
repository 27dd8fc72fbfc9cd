"""A lean inference runtime: Keras networks exported to LiteRT (``model.tflite``) and run without TensorFlow.

Importing TensorFlow costs seconds and hundreds of megabytes, which every ``ser predict`` and
every batch worker would pay for a few milliseconds of arithmetic. :func:`export` converts each
network of a model folder (an ensemble's members, or the folder's own) into ``model.tflite``
beside its ``model.keras``, checks that it gives the Keras outputs, and records in the
network's ``spec.json`` (``extra["lite"]``) the SHA-256 of the ``model.keras`` it came from.
:func:`fresh` holds the file against that record, so a network retrained or replaced in place
is never answered by a stale export: prediction falls back to Keras.

Networks are exported with a batch of one: recurrent layers (``ser_crnn``) convert only with a
static batch, and a clip has a few windows, each one call. Recurrent layers are exported unrolled
(:func:`unrolled_copy`). This module imports TensorFlow only
inside :func:`export`.

``export(..., int8=True)`` writes a second copy, ``model.int8.tflite``: weights stored as int8 and
activations quantised on the fly (LiteRT's dynamic-range quantisation), about three times faster on
a CPU with 8-bit dot products. Its probabilities are not Keras's (the check allows
:data:`INT8_TOLERANCE`), so it is never chosen by ``auto``: only ``--runtime int8`` runs it, and
its record holds how far it moved from the float export on the check inputs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .config import ModelSpec
from .errors import ModelError
from .modeldir import LITE, LITE_INT8, SPEC, WEIGHTS, network_dirs

RUNTIMES = ("auto", "lite", "int8", "keras")   # auto: LiteRT where a current export exists, else Keras
SPEC_KEY = "lite"           # spec.json extra[...] of an exported network
TOLERANCE = 1e-4            # largest |lite - keras| probability an export may differ by
INT8_TOLERANCE = 0.2        # ... and an int8 export (on random inputs; see the module docstring)
CHECK_INPUTS = 4            # random inputs each export is checked on


@dataclasses.dataclass(frozen=True)
class Variant:
    """One kind of export: its file, its record in spec.json, how far from Keras it may be."""
    runtime: str
    file: str
    spec_key: str
    tolerance: float
    quantised: bool


VARIANTS = {v.runtime: v for v in (Variant("lite", LITE, SPEC_KEY, TOLERANCE, False),
                                   Variant("int8", LITE_INT8, "lite_int8", INT8_TOLERANCE, True))}


def precision(runtime: str) -> str:
    """What a runtime's answers are computed in: runtimes of one precision give the same answers."""
    return "int8" if VARIANTS.get(runtime, VARIANTS["lite"]).quantised else "float32"


def keras_digest(weights: Path) -> str:
    h = hashlib.sha256()
    with open(weights, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fresh(network_dir: Path | str, runtime: str = "lite") -> bool:
    """True when the folder's export for ``runtime`` (``model.tflite``, or ``model.int8.tflite`` for
    ``int8``) was made from the ``model.keras`` it holds now."""
    d, v = Path(network_dir), VARIANTS[runtime]
    if not (d / v.file).exists() or not (d / WEIGHTS).exists():
        return False
    try:
        record = ModelSpec.load(d / SPEC).extra.get(v.spec_key) or {}
    except ModelError:
        return False
    return bool(record.get("keras_sha256")) and record["keras_sha256"] == keras_digest(d / WEIGHTS)


def fresh_model(model_dir: Path | str, runtime: str = "lite") -> bool:
    """True when a model folder has networks and every one has a current export for ``runtime`` (see
    :func:`fresh`); a probe on Whisper's encoder has no network, so no export to offer."""
    nets = network_dirs(model_dir)
    return bool(nets) and all(fresh(d, runtime) for d in nets)


def available() -> bool:
    """Whether the LiteRT interpreter is installed."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


class LiteRuntime:
    """One exported network: ``runtime(x)`` gives its probabilities for a batch of normalised inputs.

    LiteRT interpreters are not thread-safe, so calls are serialised; the interpreter
    releases the GIL while it computes, so other threads (feature extraction) go on.
    """

    def __init__(self, path: Path | str, *, threads: int = 1, kind: str = "lite"):
        self.kind = kind
        from ai_edge_litert.interpreter import Interpreter

        from .tf_setup import native_stderr_silenced      # (imports no TensorFlow)

        try:
            with native_stderr_silenced():     # the interpreter announces its CPU delegate on stderr
                self._it = Interpreter(model_path=str(path), num_threads=threads)
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path} could not be loaded ({type(exc).__name__}: {exc})") from exc
        inp, out = self._it.get_input_details()[0], self._it.get_output_details()[0]
        self._in, self._out = inp["index"], out["index"]
        self.input_shape = tuple(int(n) for n in inp["shape"][1:])
        self.n_outputs = int(out["shape"][-1])
        self._input = self._it.tensor(self._in)       # a view maker of the interpreter's own input buffer
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self._run(len(x), lambda i: self._it.set_tensor(self._in, x[i:i + 1]))

    def normalised(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """``self((x - mean) / std)`` for float32 features and statistics of the input's shape: each window
        normalised straight into the interpreter's input buffer (the same float32 operations, without a
        normalised copy of every window to write and read again)."""
        def fill(i: int) -> None:
            buf = self._input()[0]     # a view: it ends with this call (the interpreter refuses to run while
            np.subtract(x[i], mean, out=buf)                          # a view of its buffers lives)
            np.divide(buf, std, out=buf)

        return self._run(len(x), fill)

    def _run(self, n: int, fill: Callable[[int], None]) -> np.ndarray:
        """Probabilities of ``n`` windows, ``fill(i)`` writing window ``i`` into the interpreter's input."""
        out = np.empty((n, self.n_outputs), np.float64)
        with self._lock:
            for i in range(n):
                fill(i)
                self._it.invoke()
                out[i] = self._it.get_tensor(self._out)[0]
        return out


def export(model_dir: Path | str, *, int8: bool = False, log=print) -> list[Path]:
    """Write ``model.tflite`` (``int8``: ``model.int8.tflite``) for every network of a model folder;
    returns the files written.

    Each export is checked on random inputs against the Keras network it came from and
    refused (nothing written) when a probability differs by more than its variant's tolerance.
    Needs TensorFlow (the converter is part of it); training has it loaded anyway.
    """
    written = []
    for d in network_dirs(model_dir):
        written.append(export_network(d, int8=int8))
        if log:
            log(f"exported {written[-1]}")
    return written


def export_network(network_dir: Path | str, *, int8: bool = False) -> Path:
    """Convert one ``model.keras`` (with a batch of one) and record it in the folder's spec.json."""
    v = VARIANTS["int8" if int8 else "lite"]
    from . import layers as _registered  # noqa: F401  (custom layers must be known before loading)
    from .tf_setup import keras, native_stderr_silenced

    d = Path(network_dir)
    weights = d / WEIGHTS
    if not weights.exists():
        raise ModelError(f"no {WEIGHTS} in {d}")
    spec = ModelSpec.load(d / SPEC)
    import tensorflow as tf

    try:
        model = keras().models.load_model(weights, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for damaged or unsafe files
        raise ModelError(f"{weights} could not be loaded safely ({type(exc).__name__})") from exc
    shape = tuple(model.input_shape[1:])
    unrolled = unrolled_copy(model)
    call = tf.function(lambda x: unrolled(x, training=False),
                       input_signature=[tf.TensorSpec((1, *shape), tf.float32)])
    import logging

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)        # "please provide trackable_obj": we mean the frozen path
    try:
        # Without a trackable object the converter freezes the variables into constants, which
        # is what an inference file wants (the other path keeps resource variables it cannot run).
        converter = tf.lite.TFLiteConverter.from_concrete_functions([call.get_concrete_function()])
        if v.quantised:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]    # no dataset: dynamic-range int8
        with native_stderr_silenced():
            blob = converter.convert()
    except Exception as exc:  # the converter raises its own error types
        raise ModelError(f"{weights} could not be exported to LiteRT ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]})") from exc
    finally:
        absl.setLevel(level)
    tmp = d / f".{v.file}.{os.getpid()}.tmp"
    tmp.write_bytes(blob)
    try:
        x = np.random.default_rng(0).standard_normal((CHECK_INPUTS, *shape)).astype(np.float32)
        got, want = LiteRuntime(tmp)(x), model(x, training=False).numpy()
        diff = float(np.abs(got - want).max())
        if diff > v.tolerance:
            raise ModelError(f"the LiteRT {v.runtime} export of {weights} differs from Keras by {diff:.2g} "
                             f"(allowed {v.tolerance:g}); not written")
        os.replace(tmp, d / v.file)
    finally:
        tmp.unlink(missing_ok=True)
    import ai_edge_litert

    record = {"file": v.file, "keras_sha256": keras_digest(weights), "max_abs_diff": diff,
              "runtime": f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}"}
    if v.quantised:
        record["quantisation"] = "dynamic-range int8 (weights int8, activations quantised per call)"
        record["same_answer_on_check_inputs"] = float(np.mean(got.argmax(axis=1) == want.argmax(axis=1)))
    dataclasses.replace(spec, extra={**spec.extra, v.spec_key: record}).save(d / SPEC)
    return d / v.file


RECURRENT = ("GRU", "LSTM", "SimpleRNN")


def unrolled_copy(model):
    """The Keras network with its recurrent layers unrolled over their fixed number of steps (the same
    weights and arithmetic: Keras gives the same outputs), or the network itself when it has none.

    A recurrent layer otherwise converts to a LiteRT ``WHILE`` loop whose body the int8 conversion leaves
    in float32 and the interpreter steps through op by op; unrolled, every step's products are quantised
    like the rest of the network (``ser_crnn``'s int8 copy about a quarter faster, session 28). Every
    export is still checked against ``model`` itself."""
    config = model.get_config()
    found = []

    def unroll(node):
        if isinstance(node, dict):
            if node.get("class_name") in RECURRENT and isinstance(node.get("config"), dict):
                node["config"]["unroll"] = True
                found.append(node["class_name"])
            for value in node.values():
                unroll(value)
        elif isinstance(node, list):
            for value in node:
                unroll(value)

    unroll(config)
    if not found:
        return model
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def try_export(network_dir: Path | str, *, log=print) -> bool:
    """:func:`export_network` where an export is a speed-up, never a condition (end of training,
    ensemble building): a network that does not convert says so and runs on Keras."""
    try:
        export_network(network_dir)
        return True
    except (ModelError, ImportError) as exc:
        if log:
            log(f"warning: {network_dir} will predict on Keras, not LiteRT ({exc})")
        return False
