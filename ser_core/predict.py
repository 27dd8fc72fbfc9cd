"""Prediction: a saved model directory -> per-emotion probabilities for audio.

Audio up to ``duration + 1 s`` is one window; longer audio is cut into
windows (``duration`` long, 1 s hop) whose probabilities are averaged over
the windows that hold speech. Files longer than a minute are streamed, so
memory stays flat however long the file is.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import audio, features
from .config import ModelSpec, max_audio_seconds
from .errors import AudioError, EmptyAudioError, ModelError, SilentAudioError, TooShortError

HOP_SECONDS = 1.0
STREAM_ABOVE_SECONDS = 60.0
SPEECH_FLOOR_DBFS = -80.0   # nothing whose loudest 32 ms frame stays below this is speech
SPEECH_RANGE_DB = 6.0       # speech frames stand this far above the recording's quiet frames
WINDOW_RANGE_DB = 35.0      # a window more than this below the recording's loudest frame holds no speech
BATCH = 32


@dataclass
class Window:
    start: float
    end: float
    emotion: str | None
    confidence: float
    probabilities: dict[str, float]
    speech: bool = True


@dataclass
class Prediction:
    file: str
    emotion: str | None
    confidence: float
    probabilities: dict[str, float]
    duration: float
    windows: list[Window] = field(default_factory=list)
    message: str = ""

    @property
    def speech(self) -> bool:
        return self.emotion is not None

    def to_dict(self, *, windows: bool = False) -> dict:
        d = {"file": self.file, "emotion": self.emotion, "confidence": round(float(self.confidence), 6),
             "probabilities": {k: round(float(v), 6) for k, v in self.probabilities.items()},
             "duration": round(self.duration, 3)}
        if self.message:
            d["message"] = self.message
        if windows:
            d["windows"] = [asdict(w) for w in self.windows]
        return d


def frame_levels(y: np.ndarray, frame: int = 512) -> np.ndarray:
    """RMS level of each ~32 ms frame, in dB relative to full scale (DC removed)."""
    y = np.asarray(y, dtype=np.float64)
    y = y - y.mean() if y.size else y
    n = max(y.size // frame, 1)
    chunk = np.pad(y, (0, max(frame - y.size, 0)))[: n * frame].reshape(n, frame)
    return 20 * np.log10(np.maximum(np.sqrt((chunk ** 2).mean(axis=1)), 1e-10))


def speech_present(levels: np.ndarray) -> bool:
    """Speech rises above the recording's own floor: loud enough and not a steady hiss or hum.

    Absolute level alone cannot tell a quiet laptop microphone from a silent
    room, so the loudest frame must also stand ``SPEECH_RANGE_DB`` above the
    quietest tenth of frames.
    """
    peak = float(levels.max())
    return peak > SPEECH_FLOOR_DBFS and peak - float(np.percentile(levels, 10)) > SPEECH_RANGE_DB


def load_predictor(model_dir: Path | str):
    """A Predictor for a model folder, or an EnsemblePredictor for an ensemble folder."""
    from .ensemble import EnsemblePredictor, is_ensemble

    return EnsemblePredictor(model_dir) if is_ensemble(model_dir) else Predictor(model_dir)


class Predictor:
    """Loads a model directory once; thread-safe ``predict_*`` calls afterwards."""

    def __init__(self, model_dir: Path | str):
        self.model_dir = Path(model_dir)
        spec_path, weights = self.model_dir / "spec.json", self.model_dir / "model.keras"
        if not self.model_dir.is_dir():
            raise ModelError(f"model folder not found: {self.model_dir}")
        if not weights.exists():
            raise ModelError(f"no model.keras in {self.model_dir}")
        spec = ModelSpec.load(spec_path)
        from . import layers as _registered  # noqa: F401  (custom layers must be known before loading)
        from .tf_setup import keras

        try:
            model = keras().models.load_model(weights, safe_mode=True, compile=False)
        except Exception as exc:  # Keras raises many types for damaged or unsafe files
            detail = " ".join(str(exc).split())          # Keras messages span lines; ours is one
            raise ModelError(f"{weights} could not be loaded safely ({type(exc).__name__}: "
                             f"{detail[:300]}{'...' if len(detail) > 300 else ''})") from exc
        self._setup(model, spec)

    @classmethod
    def from_model(cls, model, spec: ModelSpec) -> "Predictor":
        """Wrap an in-memory Keras model (training evaluates its test clips through this)."""
        obj = cls.__new__(cls)
        obj.model_dir = None
        obj._setup(model, spec)
        return obj

    def _setup(self, model, spec: ModelSpec) -> None:
        self.model, self.spec = model, spec
        self.labels = list(spec.labels)
        self.cfg = spec.features
        expected = tuple(features.input_shape(self.cfg))
        if tuple(model.input_shape[1:]) != expected or model.output_shape[-1] != len(self.labels):
            raise ModelError(f"model in {self.model_dir} does not match its spec.json "
                             f"(input {model.input_shape[1:]} vs {expected})")
        self._mean = np.asarray(spec.norm_mean, np.float32) if spec.norm_mean else None
        self._std = np.asarray(spec.norm_std, np.float32) if spec.norm_std else None
        import tensorflow as tf

        # One trace for every batch size (a 2-window file must not retrace), no XLA: it
        # saves ~2 ms per clip on ser_crnn but costs seconds of compilation at load.
        self._infer = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True,
                                  input_signature=[tf.TensorSpec((None, *expected), tf.float32)])
        self._lock = threading.Lock()
        features.warm_up(self.cfg)      # filterbanks now, not during the first answer
        self.predict_features(np.zeros((1, *expected), np.float32))

    # ------------------------------------------------------------------ low level
    def normalise(self, x: np.ndarray) -> np.ndarray:
        if self._mean is None:
            return x.astype(np.float32, copy=False)
        return ((x - self._mean) / self._std).astype(np.float32)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of raw (un-normalised) feature arrays."""
        return self._infer(self.normalise(x)).numpy().astype(np.float64)

    def model_input(self, y: np.ndarray) -> np.ndarray:
        """The normalised feature array the model sees for a waveform's first window (for display)."""
        return self.normalise(features.extract(y, self.cfg))

    def window_starts(self, n: int) -> list[int]:
        sr, win = self.cfg.sample_rate, self.cfg.n_samples
        hop = int(HOP_SECONDS * sr)
        if n <= win + hop:
            return [0]
        starts = list(range(0, n - win + 1, hop))
        if starts[-1] + win < n:
            starts.append(n - win)
        return starts

    def _result(self, probs: np.ndarray, speech: np.ndarray, starts: list[float], name: str, duration: float):
        sr = self.cfg.sample_rate
        windows = []
        for p, s, st in zip(probs, speech, starts):
            i = int(np.argmax(p))
            windows.append(Window(st / sr, min(st / sr + self.cfg.duration, duration),
                                  self.labels[i] if s else None, float(p[i]) if s else 0.0,
                                  dict(zip(self.labels, map(float, p))), bool(s)))
        if not speech.any():
            return self._no_speech(name, duration, windows)
        agg = probs[speech].mean(axis=0)
        i = int(np.argmax(agg))
        return Prediction(name, self.labels[i], float(agg[i]), dict(zip(self.labels, map(float, agg))),
                          duration, windows)

    def _no_speech(self, name: str, duration: float, windows: list[Window] | None = None) -> Prediction:
        return Prediction(name, None, 0.0, {lab: 0.0 for lab in self.labels}, duration, windows or [],
                          message="no speech detected: the recording is silent or too quiet")

    # ------------------------------------------------------------------ public
    def checked(self, y: np.ndarray, sr: int | None, name: str) -> np.ndarray:
        """A mono float32 waveform at the model's rate, validated (too short, too long, not finite...)."""
        y = np.asarray(y, dtype=np.float32)
        if y.ndim == 2:                  # multichannel: (n, ch) or (ch, n), channels are the short axis
            y = y.mean(axis=int(np.argmin(y.shape)), dtype=np.float32)
        y = y.reshape(-1)
        sr = sr or self.cfg.sample_rate
        if not isinstance(sr, (int, np.integer)) or not 0 < sr <= 1_000_000:
            raise AudioError(f"invalid sample rate {sr!r}", source=name)
        y = audio.resample(y, sr, self.cfg.sample_rate) if sr != self.cfg.sample_rate else y
        audio.validate(y, self.cfg.sample_rate, label=name, max_seconds=max_audio_seconds())
        return y

    def window_features(self, y: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Window starts, raw feature arrays and which windows hold speech, for a checked waveform."""
        y = features.condition(y, self.cfg)
        starts = self.window_starts(y.size)
        wins = [audio.fix_length(y[s:s + self.cfg.n_samples], self.cfg.n_samples) for s in starts]
        loudest = float(frame_levels(y).max())
        speech = np.array([frame_levels(w).max() > loudest - WINDOW_RANGE_DB for w in wins])
        return starts, np.stack([features.from_waveform(w, self.cfg) for w in wins]), speech

    def predict_array(self, y: np.ndarray, sr: int | None = None, *, name: str = "<array>") -> Prediction:
        """Classify a waveform (any rate; resampled to the model's rate)."""
        y = self.checked(y, sr, name)
        duration = y.size / self.cfg.sample_rate
        if not speech_present(frame_levels(y)):
            return self._no_speech(name, duration)
        starts, x, speech = self.window_features(y)
        probs = np.concatenate([self.predict_features(x[b:b + BATCH]) for b in range(0, len(x), BATCH)])
        return self._result(probs, speech, starts, name, duration)

    def predict_file(self, source, *, name: str | None = None,
                     progress: Callable[[float, float], None] | None = None) -> Prediction:
        """Classify a file, path or bytes. Long files are streamed window by window."""
        label = name or (Path(source).name if isinstance(source, (str, Path)) else "<audio>")
        total = audio.duration_seconds(source, name=label)
        if total <= STREAM_ABOVE_SECONDS:
            y = audio.load(source, sr=self.cfg.sample_rate, name=label, max_seconds=max_audio_seconds())
            return self.predict_array(y, name=label)
        return self._predict_stream(source, label, total, progress)

    def _predict_stream(self, source, label: str, total: float, progress) -> Prediction:
        sr, win = self.cfg.sample_rate, self.cfg.n_samples
        hop = int(HOP_SECONDS * sr)
        buf = np.zeros(0, np.float32)
        offset = 0                       # absolute sample index of buf[0]
        pending, starts, all_probs, all_speech = [], [], [], []
        seen_signal = False

        def flush():
            if pending:
                all_probs.append(self.predict_features(np.stack([features.from_waveform(w, self.cfg)
                                                                 for w in pending])))
                pending.clear()

        def take(w: np.ndarray, start: int):
            nonlocal seen_signal
            speech = speech_present(frame_levels(w))
            seen_signal = seen_signal or not audio.is_silent(w)
            w = features.condition(w, self.cfg) if self.cfg.loudness_norm and speech else w
            pending.append(audio.fix_length(w, win))
            starts.append(start)
            all_speech.append(speech)
            if len(pending) >= BATCH:
                flush()

        n_read = 0
        for block in audio.stream(source, sr=sr, name=label):
            audio.check_samples(block, label)
            n_read += block.size
            buf = np.concatenate([buf, block])
            while buf.size >= win:
                take(buf[:win], offset)
                buf = buf[hop:]
                offset += hop
            if progress:
                progress(min(offset / sr, total), total)
        if buf.size > hop or not starts:
            take(buf, offset)
        flush()
        if progress:
            progress(total, total)
        if n_read == 0:
            raise EmptyAudioError("audio stream holds no samples", source=label)
        if not seen_signal:
            raise SilentAudioError("audio is silent (no signal above the noise floor)", source=label)
        if not starts:
            raise TooShortError("audio holds no complete window", source=label)
        # the decoded length, not the header's claim (a damaged header can promise hours)
        return self._result(np.concatenate(all_probs), np.array(all_speech), starts, label, n_read / sr)
