"""Live microphone classification without a UI: a rolling 16 kHz buffer and its timeline.

Browsers deliver WebRTC audio as ``av.AudioFrame`` objects, typically 48 kHz
signed 16-bit *packed* stereo, so ``frame.to_ndarray()`` has shape
``(1, samples * channels)`` with the channels interleaved. :class:`RollingBuffer`
takes such chunks (or planar ``(channels, samples)`` ones), mixes them to mono
the right way, resamples to 16 kHz with a streaming resampler (no clicks at
chunk borders) and keeps the last few seconds. :class:`LiveSession` classifies
that window about once a second and keeps a short timeline of the results.
Both are thread-safe: frames arrive on the WebRTC worker thread while the
page reads from its own.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import AudioError

TARGET_RATE = 16000
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "7.1": 8}


def channel_count(layout) -> int:
    """Channels of a layout given as a count, a name ("stereo") or an object with ``nb_channels``."""
    if isinstance(layout, (int, np.integer)):
        n = int(layout)
    elif isinstance(layout, str):
        if layout not in _LAYOUT_CHANNELS:
            raise AudioError(f"unknown channel layout {layout!r}")
        n = _LAYOUT_CHANNELS[layout]
    else:
        n = int(getattr(layout, "nb_channels", 0) or len(getattr(layout, "channels", ())))
    if n < 1:
        raise AudioError(f"a channel layout needs at least one channel, got {layout!r}")
    return n


def to_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM to float32 in [-1, 1); float input is passed through."""
    a = np.asarray(samples)
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if a.dtype == np.int32:
        return a.astype(np.float32) / 2147483648.0
    if a.dtype == np.uint8:
        return (a.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32, copy=False)
    raise AudioError(f"unsupported sample type {a.dtype}")


def downmix(samples: np.ndarray, channels: int, planar: bool | None = None) -> np.ndarray:
    """Average the channels of one chunk into a 1-D mono signal.

    Packed (interleaved) audio is ``(1, n * channels)`` or 1-D ``(n * channels,)``:
    it is reshaped to ``(n, channels)`` before averaging. Planar audio is
    ``(channels, n)``. ``planar=None`` infers the layout from the shape.
    """
    a = to_float(samples)
    if channels == 1:
        return a.reshape(-1)
    if planar is None:
        planar = a.ndim == 2 and a.shape[0] == channels
    if planar:
        if a.ndim != 2 or a.shape[0] != channels:
            raise AudioError(f"planar audio should be ({channels}, n), got shape {a.shape}")
        return a.mean(axis=0, dtype=np.float32)
    flat = a.reshape(-1)
    if flat.size % channels:
        raise AudioError(f"{flat.size} interleaved samples do not split into {channels} channels")
    return flat.reshape(-1, channels).mean(axis=1, dtype=np.float32)


class RollingBuffer:
    """The last ``seconds`` of a live stream, mono at ``rate`` Hz."""

    def __init__(self, seconds: float = 3.0, rate: int = TARGET_RATE):
        self.seconds = float(seconds)
        self.rate = int(rate)
        self.capacity = int(round(self.seconds * self.rate))
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._data = np.zeros(0, np.float32)
            self._resampler = None
            self._in_rate = None
            self.received = 0            # samples (at ``rate``) received since the start
            self.last_push = None        # time.monotonic() of the last chunk

    def push(self, samples: np.ndarray, rate: int, layout, *, planar: bool | None = None) -> None:
        """Add one chunk: ``samples`` as ``frame.to_ndarray()`` gives them, at ``rate`` Hz."""
        rate = int(rate)
        if rate <= 0:
            raise AudioError(f"sample rate must be positive, got {rate}")
        mono = downmix(samples, channel_count(layout), planar)
        with self._lock:
            y = self._resample(mono, rate)
            self.received += y.size
            self._data = np.concatenate([self._data, y])[-self.capacity:]
            self.last_push = time.monotonic()

    def push_frame(self, frame) -> None:
        """Add an ``av.AudioFrame`` (or anything with ``to_ndarray``, ``sample_rate``, ``layout``, ``format``)."""
        fmt = getattr(frame, "format", None)
        planar = getattr(fmt, "is_planar", None)
        self.push(frame.to_ndarray(), frame.sample_rate, frame.layout, planar=planar)

    def _resample(self, y: np.ndarray, rate: int) -> np.ndarray:
        if rate == self.rate:
            self._resampler, self._in_rate = None, rate
            return y
        if self._resampler is None or self._in_rate != rate:
            import soxr

            self._resampler = soxr.ResampleStream(rate, self.rate, 1, dtype="float32", quality="HQ")
            self._in_rate = rate
        return self._resampler.resample_chunk(y).astype(np.float32, copy=False)

    def snapshot(self) -> np.ndarray:
        """A copy of the buffered audio (up to ``seconds`` long)."""
        with self._lock:
            return self._data.copy()

    @property
    def buffered_seconds(self) -> float:
        with self._lock:
            return self._data.size / self.rate

    @property
    def received_seconds(self) -> float:
        with self._lock:
            return self.received / self.rate


@dataclass
class LivePoint:
    """One classification of the rolling window, ``time`` seconds into the stream.

    ``emotion`` is the answer (an emotion, "not sure" or None for no speech), ``best`` the
    most likely emotion, ``summary`` the answer in words ("not sure: sad or neutral").
    """

    time: float
    emotion: str | None
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)
    message: str = ""
    best: str | None = None
    top2: tuple[str, ...] = ()
    not_sure: bool = False
    summary: str = "no speech"


PAUSE_RANGE_DB = 35.0      # a frame this far below the loudest frame heard so far is not speech
MIN_SPEECH_SHARE = 0.25    # a window with less speech than this (3 s: 0.75 s) is a pause, not an emotion
PAUSE_MESSAGE = "no speech: a pause (most of the last seconds are silence)"


def speech_share(levels: np.ndarray, loudest: float) -> float:
    """The share of ~32 ms frames within :data:`PAUSE_RANGE_DB` of the loudest frame heard so far."""
    return float(np.mean(levels > loudest - PAUSE_RANGE_DB)) if levels.size else 0.0


class LiveSession:
    """A rolling buffer plus a timeline of classifications made at most every ``every`` seconds."""

    def __init__(self, seconds: float = 3.0, every: float = 1.0, keep: int = 120, min_seconds: float = 1.0):
        self.buffer = RollingBuffer(seconds)
        self.every = float(every)
        self.keep = int(keep)
        self.min_seconds = float(min_seconds)
        self._lock = threading.Lock()
        self._timeline: list[LivePoint] = []
        self._last_at = None
        self._loudest = -np.inf           # dBFS of the loudest frame of this session: pauses are relative to it

    def reset(self) -> None:
        self.buffer.clear()
        with self._lock:
            self._timeline = []
            self._last_at = None
            self._loudest = -np.inf

    def push_frame(self, frame) -> None:
        self.buffer.push_frame(frame)

    def receiving(self, within: float = 2.0) -> bool:
        """True while chunks keep arriving (the last one came less than ``within`` seconds ago)."""
        last = self.buffer.last_push
        return last is not None and time.monotonic() - last < within

    def due(self) -> bool:
        """Enough audio, and enough new audio since the last classification."""
        now = self.buffer.received_seconds
        with self._lock:
            last = self._last_at
        return now >= self.min_seconds and (last is None or now - last >= self.every)

    def step(self, predictor, *, force: bool = False) -> LivePoint | None:
        """Classify the current window when due; returns the new point (or None when not due).

        ``predictor`` is a :class:`ser_core.predict.BasePredictor` (anything with
        ``predict_array`` and ``labels``); this module never imports TensorFlow.
        """
        if not (force or self.due()):
            return None
        from .predict import frame_levels

        at = self.buffer.received_seconds
        y = self.buffer.snapshot()
        levels = frame_levels(y)
        self._loudest = max(self._loudest, float(levels.max()) if levels.size else -np.inf)
        try:
            if speech_share(levels, self._loudest) < MIN_SPEECH_SHARE:
                # pauses between utterances came out as "fearful" (50-75 %): say there is nothing to judge
                point = LivePoint(at, None, 0.0, {lab: 0.0 for lab in predictor.labels}, PAUSE_MESSAGE)
            else:
                pred = predictor.predict_array(y, self.buffer.rate, name="live")
                point = LivePoint(at, pred.emotion, float(pred.confidence), dict(pred.probabilities),
                                  pred.message, pred.best, tuple(pred.top2), bool(pred.not_sure), pred.summary())
        except AudioError as exc:
            point = LivePoint(at, None, 0.0, {lab: 0.0 for lab in predictor.labels}, str(exc))
        with self._lock:
            self._last_at = at
            self._timeline = (self._timeline + [point])[-self.keep:]
        return point

    @property
    def timeline(self) -> list[LivePoint]:
        with self._lock:
            return list(self._timeline)

    @property
    def latest(self) -> LivePoint | None:
        with self._lock:
            return self._timeline[-1] if self._timeline else None
