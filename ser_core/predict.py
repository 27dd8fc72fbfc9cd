"""Prediction: a saved model folder -> what a caller shows for a recording.

One path serves every caller (``ser predict``, batch workers, the Predict page, live mode,
robustness): :meth:`BasePredictor.analyse` takes a file, bytes or a waveform and returns an
:class:`Analysis` (the :class:`Prediction`, its per-window results, the waveform it used and
each network's model input). :class:`Predictor` runs one network, :class:`EnsemblePredictor`
several (an ensemble folder, built by :mod:`ser_core.ensemble`), :class:`ProbePredictor` a linear
probe on Whisper's frozen encoder (:mod:`ser_core.whisper`); each is a :class:`BasePredictor`,
which holds that path once. They live in one module so that :func:`load_predictor` can choose
between them without an import circle; what a model folder holds is :mod:`ser_core.modeldir`'s.

With a calibration stored (``spec.json`` ``extra["calibration"]``), window and clip
probabilities are calibrated; the clip's are the calibrated mean of the uncalibrated speech
windows (the temperature was fitted on clip-level out-of-fold predictions).

Audio up to ``duration + 1 s`` is one window; longer audio is cut into windows (``duration``
long, 1 s hop). The clip's probabilities are the mean of the windows that hold speech, then
calibrated (the model's stored temperature); below the stored threshold the answer is
"not sure" with the two most likely emotions. So it is, whatever the confidence, when the model
stores a novelty gate (:mod:`ser_core.novelty`) and the recording is unlike every recording it
learnt from. Files longer than a minute are streamed, so memory stays flat however long the file is.

Networks run on LiteRT when their folder holds a current export (no TensorFlow import), else
on Keras: see :mod:`ser_core.lite`.
"""
from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from . import audio, features, novelty
from .calibration import NOT_SURE, SPEC_KEY, Calibration, apply_temperature
from .config import FeatureConfig, ModelSpec, max_audio_seconds
from .errors import (AudioError, EmptyAudioError, ModelError, SERError, SilentAudioError, TooLongError,
                     TooShortError)
from .lite import RUNTIMES
from .machine import keep_freed_memory, usable_cpus
from .modeldir import LITE, LITE_INT8, SPEC, WEIGHTS, check_runtime, is_ensemble, is_probe
from .schema import MEMBER_WEIGHTS

HOP_SECONDS = 1.0
STREAM_ABOVE_SECONDS = 60.0
SPEECH_FLOOR_DBFS = -80.0   # nothing whose loudest 32 ms frame stays below this is speech
SPEECH_RANGE_DB = 6.0       # speech frames stand this far above the recording's quiet frames
WINDOW_RANGE_DB = 35.0      # a window more than this below the recording's loudest frame holds no speech
BATCH = 32
NO_SPEECH = "no speech detected: the recording is silent or too quiet"

Progress = Callable[[float, float], None]


# ============================================================================ results
@dataclass
class Window:
    """One window of the recording: its most likely emotion and calibrated probabilities."""

    start: float
    end: float
    emotion: str | None
    confidence: float
    probabilities: dict[str, float]
    speech: bool = True


@dataclass
class Prediction:
    """The answer for one recording.

    ``emotion`` is the answer: an emotion, ``"not sure"`` (the calibrated confidence is
    below the model's threshold, or the recording is ``unfamiliar``: its ``novelty`` is above
    the model's gate) or None (no speech). ``best`` is the most likely emotion whatever the
    answer, ``top2`` the two most likely; ``confidence`` and ``probabilities`` are calibrated.
    ``novelty`` is None when the model stores no gate.
    """

    file: str
    emotion: str | None
    confidence: float
    probabilities: dict[str, float]
    duration: float
    windows: list[Window] = field(default_factory=list)
    message: str = ""
    best: str | None = None
    top2: tuple[str, ...] = ()
    not_sure: bool = False
    novelty: float | None = None
    unfamiliar: bool = False
    #: In the adapted mode, the same clip's answer one clip at a time (the folder's own probe), shown beside.
    one_clip: Prediction | None = None

    @property
    def speech(self) -> bool:
        return self.best is not None

    def summary(self) -> str:
        """The answer in words: ``angry``, ``not sure: sad or neutral`` or ``no speech``."""
        return answer_text(self.emotion, self.top2)

    def to_dict(self, *, windows: bool = False) -> dict:
        d = {"file": self.file, "emotion": self.emotion, "best": self.best, "top2": list(self.top2),
             "not_sure": bool(self.not_sure), "confidence": round(float(self.confidence), 6),
             "probabilities": {k: round(float(v), 6) for k, v in self.probabilities.items()},
             "duration": round(self.duration, 3)}
        if self.novelty is not None:
            d.update(novelty=round(float(self.novelty), 4), unfamiliar=bool(self.unfamiliar))
        if self.message:
            d["message"] = self.message
        if windows:
            d["windows"] = [asdict(w) for w in self.windows]
        if self.one_clip is not None:
            d["one_clip"] = {"emotion": self.one_clip.emotion, "best": self.one_clip.best,
                             "confidence": round(float(self.one_clip.confidence), 6)}
        return d


def answer_text(emotion: str | None, top2) -> str:
    if emotion is None:
        return "no speech"
    if emotion == NOT_SURE:
        return f"{NOT_SURE}: {' or '.join(top2)}"
    return emotion


def answer_shares(best, not_sure=None) -> str:
    """One line about many files' answers: how often each emotion is the most likely one over the files with
    speech (``best``: each file's ``Prediction.best``; ``None`` or a table's NaN for no answer), commonest first
    (ties in the order first met), and how many of them are "not sure" (``not_sure``: one flag per file)."""
    best = list(best)
    flags = list(not_sure) if not_sure is not None else [False] * len(best)
    answered = [(b, bool(u)) for b, u in zip(best, flags) if isinstance(b, str)]
    if not answered:
        return "answers: none (no file with speech was scored)"
    n = len(answered)
    shares = ", ".join(f"{e} {c} ({100 * c / n:.0f} %)" for e, c in Counter(b for b, _ in answered).most_common())
    unsure = sum(u for _, u in answered)
    return f"answers (most likely emotion of {n} files with speech): {shares}; \"not sure\" on {unsure}"


#: "It always says X on my voice": a model that does not know a voice, language or room tends to settle on one
#: or two emotions, however its confidence looks on each clip (a clip-level gate does not see it:
#: docs/multicorpus.md, sessions 12 and 25), while a speaker's run of recordings shows it. The rule: one emotion
#: answers SETTLED_COUNT or more of the last SETTLED_WINDOW recordings. For the default, measured by
#: training/answer_spread.py on clips of speakers it never heard, 8 random clips of one speaker set it off for 3 %
#: of RAVDESS's held-out actors and for 24-57 % of EMOVO's, ASED's and URDU's speakers, whose answers are then
#: right 14-21 % of the time (docs/multicorpus.md, "Session 26").
SETTLED_WINDOW, SETTLED_COUNT = 8, 5

#: A folder for the adapted mode that its one-clip answers put mostly in one emotion may really be mostly one mood,
#: and standardising by its own clips then takes that mood out. Session 40 (docs/multicorpus.md) measured it on
#: one speaker's folders: URDU's talk-show speakers with 20+ clips are 90-100 % one emotion, the adapted mode
#: answers them worse than one clip at a time (41-45 % against 50 %), and the commonest one-clip answer covers a
#: median 68-71 % of their clips against 22-45 % for the other corpora's speakers. The share that warns sits
#: between (set from that look at all four corpora, not from held-out figures).
ONE_MOOD_SHARE = 0.6


def settled_answer(answers, window: int = SETTLED_WINDOW,
                   count: int = SETTLED_COUNT) -> tuple[str, int, int] | None:
    """Has one emotion taken over the recent answers? ``answers``: a speaker's answers, oldest first (each
    recording's most likely emotion, ``Prediction.best``; ``None`` for no speech is skipped).

    Returns ``(emotion, times, out_of)`` when one emotion is the answer to at least ``count`` of the last
    ``window`` answers (a tie goes to the most recent), else ``None``.
    """
    recent = [a for a in answers if a is not None][-window:]
    if len(recent) < count:
        return None
    times = Counter(recent)
    top = max(times.values())
    emotion = next(a for a in reversed(recent) if times[a] == top)
    return (emotion, top, len(recent)) if top >= count else None


def one_mood(answers, share: float = ONE_MOOD_SHARE) -> tuple[str, int, int] | None:
    """Is a folder mostly one mood, by its one-clip answers? ``answers``: each clip's most likely emotion one clip
    at a time (``Prediction.best``; ``None`` for no speech is skipped).

    Returns ``(emotion, times, out_of)`` when one emotion is the answer to at least ``share`` of them, else
    ``None``: :func:`settled_answer` over all of them (a tie, possible only for a share of one half or less, goes
    to the most recent).
    """
    n = sum(a is not None for a in answers)
    return settled_answer(answers, window=n, count=max(1, math.ceil(share * n - 1e-9))) if n else None


def one_mood_note(answers) -> str | None:
    """What to tell a user whose folder, answered in the adapted mode, looks mostly one mood (:func:`one_mood` of
    its clips' one-clip answers; ``answers``: :meth:`ProbePredictor.predict_adapted`'s), or None."""
    mood = one_mood([a.one_clip.best for a in answers if isinstance(a, Prediction) and a.one_clip is not None])
    if mood is None:
        return None
    emotion, times, n = mood
    return (f"{times} of these {n} clips sound {emotion} one clip at a time. If the folder really is mostly "
            f"{emotion}, adapting to it takes that mood out: read the one-clip answers beside the adapted ones.")


@dataclass
class ModelInput:
    """What one network sees: its first window's normalised features, ``x`` (worked out from the raw window
    when first asked for: a batch job scores thousands of windows and shows none of them)."""

    name: str
    features: FeatureConfig
    raw: np.ndarray = field(repr=False)
    normalise: Callable[[np.ndarray], np.ndarray] = field(repr=False)

    @cached_property
    def x(self) -> np.ndarray:
        return self.normalise(self.raw)


@dataclass
class Analysis:
    """Everything a caller shows for one recording."""

    prediction: Prediction
    waveform: np.ndarray | None      # the checked mono waveform at ``sample_rate``; None when streamed
    sample_rate: int
    inputs: list[ModelInput] = field(default_factory=list)


@dataclass
class WindowScores:
    """Uncalibrated window probabilities on the recording's own timeline (seconds)."""

    starts: np.ndarray
    ends: np.ndarray
    probs: np.ndarray          # (windows, labels)
    speech: np.ndarray         # (windows,) bool
    signature: np.ndarray | None = None   # for a novelty gate (ser_core.novelty), when the model has one


# ============================================================================ small pure functions
def frame_levels(y: np.ndarray, frame: int = 512) -> np.ndarray:
    """RMS level of each ~32 ms frame, in dB relative to full scale (DC removed)."""
    # One private float64 copy worked on in place (every scoring call takes these levels of each waveform
    # and window): the same operations, in the same order, as removing the mean, squaring and averaging
    # frames on fresh arrays, a quarter of the cost.
    y = np.array(y, dtype=np.float64)
    if y.size:
        y -= y.mean()
    n = max(y.size // frame, 1)
    if y.size < frame:
        y = np.pad(y, (0, frame - y.size))
    squares = np.square(y[: n * frame], out=y[: n * frame]).reshape(n, frame)
    return 20 * np.log10(np.maximum(np.sqrt(np.add.reduce(squares, axis=1) / frame), 1e-10))


def speech_present(levels: np.ndarray) -> bool:
    """Speech rises above the recording's own floor: loud enough and not a steady hiss or hum.

    Absolute level alone cannot tell a quiet laptop microphone from a silent
    room, so the loudest frame must also stand ``SPEECH_RANGE_DB`` above the
    quietest tenth of frames.
    """
    peak = float(levels.max())
    return peak > SPEECH_FLOOR_DBFS and peak - quiet_level(levels) > SPEECH_RANGE_DB


def quiet_level(levels: np.ndarray) -> float:
    """``np.percentile(levels, 10)`` of finite levels: numpy's linear interpolation between the two order
    statistics around ``0.1 * (n - 1)``, the same arithmetic, without the general function's work (a tenth
    of a millisecond, once per recording scored)."""
    a = np.asarray(levels, dtype=np.float64).reshape(-1)
    at = (a.size - 1) * 0.1
    lo = int(np.floor(at))
    if lo >= a.size - 1:                  # one level
        return float(a[-1])
    ordered = np.partition(a, (lo, lo + 1))
    below, above = ordered[lo], ordered[lo + 1]
    gamma = at - lo
    step = above - below
    return float(above - step * (1 - gamma) if gamma >= 0.5 else below + step * gamma)


def window_starts(n: int, win: int, hop: int) -> list[int]:
    """Window starts over ``n`` samples: one window up to ``win + hop``, else a ``hop`` grid
    and a last window flush with the end."""
    if n <= win + hop:
        return [0]
    starts = list(range(0, n - win + 1, hop))
    if starts[-1] + win < n:
        starts.append(n - win)
    return starts


def recording_levels(y: np.ndarray, memo: dict | None = None) -> np.ndarray:
    """:func:`frame_levels` of a whole recording, computed once per waveform object while ``memo`` lives.

    ``memo`` is a plain dict that one scoring call hands to every step that looks at the same waveforms
    (the speech check, the ensemble's window grid, each front end's windows), so a waveform's levels and
    speech flags are worked out once, not once per step. It keeps a reference to each waveform it holds
    figures of, so an ``id`` in it always means that waveform."""
    return _remembered(memo, y, "levels", lambda: frame_levels(y))


def _remembered(memo: dict | None, y: np.ndarray, what: tuple | str, compute):
    """``compute()``, or what ``memo`` holds of it for this waveform object (stored with the waveform)."""
    if memo is None:
        return compute()
    key = (id(y), what)
    held = memo.get(key)
    if held is not None and held[0] is y:
        return held[1]
    value = compute()
    memo[key] = (y, value)
    return value


def speech_windows(y: np.ndarray, starts: list[int], win: int, memo: dict | None = None) -> np.ndarray:
    """Which windows hold speech: their loudest frame is within ``WINDOW_RANGE_DB`` of the recording's
    (``memo``: see :func:`recording_levels`)."""
    def flags():
        loudest = float(recording_levels(y, memo).max())
        return np.array([frame_levels(audio.fix_length(y[s:s + win], win)).max() > loudest - WINDOW_RANGE_DB
                         for s in starts])
    return _remembered(memo, y, (tuple(starts), win), flags)


def window_features(y: np.ndarray, cfgs: list[FeatureConfig], memo: dict | None = None
                    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """For a checked waveform and configs with one front end (``features.front_end``): window starts and
    ends (seconds of the recording), each config's raw feature arrays and which windows hold speech.
    Windows cut the conditioned signal, which starts where the silence trim (if any) begins; the signal
    is conditioned and cut once and each window's STFT computed once for all the configs (``memo``: see
    :func:`recording_levels`)."""
    t0, ends, per_window, speech = _windows(y, cfgs, memo)
    return t0, ends, [np.stack([w[k] for w in per_window]) for k in range(len(cfgs))], speech


def _windows(y: np.ndarray, cfgs: list[FeatureConfig], memo: dict | None, speech: bool = True
             ) -> tuple[np.ndarray, np.ndarray, list[list[np.ndarray]], np.ndarray | None]:
    """:func:`window_features` with each window's arrays (one per config) not yet stacked
    (``speech=False``: no speech flags, None in their place)."""
    cfg = cfgs[0]
    sr, win = cfg.sample_rate, cfg.n_samples
    yc, offset = features.condition_span(y, cfg)
    starts = window_starts(yc.size, win, int(HOP_SECONDS * sr))
    per_window = [features.from_waveform_shared(audio.fix_length(yc[s:s + win], win), cfgs) for s in starts]
    t0 = (offset + np.asarray(starts)) / sr
    return (t0, np.minimum(t0 + cfg.duration, (offset + yc.size) / sr), per_window,
            speech_windows(yc, starts, win, memo) if speech else None)


def many_window_features(ys: list[np.ndarray], cfgs: list[FeatureConfig], memo: dict | None = None,
                         speech: bool = True) -> tuple[list[tuple], list[np.ndarray], np.ndarray]:
    """:func:`window_features` of several waveforms: for each its (starts, ends, speech), each config's
    feature arrays of all of them stacked, and where each waveform's rows begin and end in those stacks
    (``speech=False``: None for the speech flags, which are not worked out)."""
    feats = [_windows(y, cfgs, memo, speech) for y in ys]
    # every window of every waveform stacked once (not per waveform, then again for all of them)
    xs = [np.stack([w[k] for f in feats for w in f[2]]) if feats else
          np.zeros((0, *features.input_shape(c)), np.float32) for k, c in enumerate(cfgs)]
    return [(f[0], f[1], f[3]) for f in feats], xs, np.cumsum([0] + [len(f[2]) for f in feats])


def buckets(items, key) -> list[list]:
    """``items`` in lists of equal ``key(item)``, in the order each key first appears."""
    out: dict = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return list(out.values())


def checked_waveform(y: np.ndarray, sr: int | None, rate: int, name: str) -> np.ndarray:
    """A mono float32 waveform at ``rate``, validated (too short, too long, not finite...)."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:                  # multichannel: (n, ch) or (ch, n), channels are the short axis
        y = y.mean(axis=int(np.argmin(y.shape)), dtype=np.float32)
    y = y.reshape(-1)
    sr = sr or rate
    if not isinstance(sr, (int, np.integer)) or not 0 < sr <= 1_000_000:
        raise AudioError(f"invalid sample rate {sr!r}", source=name)
    y = audio.resample(y, sr, rate) if sr != rate else y
    audio.validate(y, rate, label=name, max_seconds=max_audio_seconds())
    return y


def aligned(grid: WindowScores, member: WindowScores) -> np.ndarray:
    """A network's probabilities on another window grid: for each grid window, the network's
    window that overlaps it most (the nearest centre on a tie or without overlap).

    Networks that trim silence first see fewer windows than the recording has; a network
    with one window for a clip gives that window's answer to every window of the clip.
    """
    if len(member.probs) == 1:        # what the rule below picks, without its matrices (most clips: 3-4 s)
        return np.repeat(member.probs, len(grid.starts), axis=0)
    overlap = (np.minimum(grid.ends[:, None], member.ends[None, :])
               - np.maximum(grid.starts[:, None], member.starts[None, :])).clip(min=0)
    distance = np.abs((grid.starts + grid.ends)[:, None] - (member.starts + member.ends)[None, :]) / 2
    most = overlap.max(axis=1, keepdims=True)
    pick = np.where(overlap >= most - 1e-9, distance, np.inf).argmin(axis=1)
    return member.probs[pick]


def decide(probs: np.ndarray, labels: list[str], calibration: Calibration | None, unfamiliar: bool = False) -> dict:
    """The answer from calibrated probabilities: best, top two, "not sure" below the threshold or for an
    unfamiliar recording."""
    order = np.argsort(-probs, kind="stable")
    best, confidence = labels[int(order[0])], float(probs[order[0]])
    not_sure = unfamiliar or (calibration is not None and confidence < calibration.threshold)
    return {"emotion": NOT_SURE if not_sure else best, "best": best, "confidence": confidence,
            "top2": tuple(labels[int(i)] for i in order[:2]), "not_sure": bool(not_sure)}


def no_speech(name: str, duration: float, labels: list[str], windows: list[Window] | None = None) -> Prediction:
    return Prediction(name, None, 0.0, {lab: 0.0 for lab in labels}, duration, windows or [], message=NO_SPEECH)


def prediction(scores: WindowScores, labels: list[str], calibration: Calibration | None, name: str,
               duration: float, gate: novelty.Gate | None = None) -> Prediction:
    """The clip's answer from its window scores: the mean over speech windows, calibrated; "not sure" for an
    unfamiliar recording when there is a ``gate`` (its novelty from the scores' signature)."""
    temperature = calibration.temperature if calibration else 1.0
    windows = []
    for start, end, p, s in zip(scores.starts, scores.ends, apply_temperature(scores.probs, temperature),
                                scores.speech):
        i = int(np.argmax(p))
        windows.append(Window(float(start), float(end), labels[i] if s else None, float(p[i]) if s else 0.0,
                              dict(zip(labels, map(float, p))), bool(s)))
    if not scores.speech.any():
        return no_speech(name, duration, labels, windows)
    clip = apply_temperature(scores.probs[scores.speech].mean(axis=0), temperature)
    nov = None if gate is None or scores.signature is None else float(gate.novelty(scores.signature))
    unfamiliar = gate is not None and gate.unfamiliar(nov)
    return Prediction(name, probabilities=dict(zip(labels, map(float, clip))), duration=duration,
                      windows=windows, novelty=nov, **decide(clip, labels, calibration, unfamiliar),
                      unfamiliar=unfamiliar)


# ============================================================================ runtimes
class Runtime(Protocol):
    """One network's inference: normalised inputs (batch, *input_shape) -> probabilities."""

    kind: str
    input_shape: tuple[int, ...]
    n_outputs: int

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def load_keras(weights: Path):
    """A saved Keras model, loaded in safe mode (imports TensorFlow)."""
    from . import layers as _registered  # noqa: F401  (custom layers must be known before loading)
    from .tf_setup import keras

    try:
        return keras().models.load_model(weights, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for damaged or unsafe files
        detail = " ".join(str(exc).split())          # Keras messages span lines; ours is one
        raise ModelError(f"{weights} could not be loaded safely ({type(exc).__name__}: "
                         f"{detail[:300]}{'...' if len(detail) > 300 else ''})") from exc


class KerasRuntime:
    """A Keras model behind one traced function (thread-safe)."""

    kind = "keras"

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self.input_shape = tuple(int(n) for n in model.input_shape[1:])
        self.n_outputs = int(model.output_shape[-1])
        # One trace for every batch size (a 2-window file must not retrace), no XLA: it
        # saves ~2 ms per clip on ser_crnn but costs seconds of compilation at load.
        self._infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                                  input_signature=[tf.TensorSpec((None, *self.input_shape), tf.float32)])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._infer(x).numpy().astype(np.float64)


def open_runtime(network_dir: Path, runtime: str = "auto") -> Runtime:
    """LiteRT when the folder holds a current export (``auto``) or when asked (``lite``; ``int8``: its
    quantised copy, only when asked), else Keras."""
    from . import lite

    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "int8":
        if not lite.fresh(network_dir, "int8"):
            raise ModelError(f"no current {LITE_INT8} in {network_dir}: export it with `ser export --int8`")
        return lite.LiteRuntime(network_dir / LITE_INT8, kind="int8")
    if runtime == "lite" or (runtime == "auto" and lite.fresh(network_dir) and lite.available()):
        if not lite.fresh(network_dir):
            raise ModelError(f"no current {LITE} in {network_dir}: export it with `ser export`")
        return lite.LiteRuntime(network_dir / LITE)
    return KerasRuntime(load_keras(network_dir / WEIGHTS))


def stored_calibration(spec: ModelSpec, where) -> Calibration | None:
    try:
        return Calibration.from_dict(spec.extra.get(SPEC_KEY))
    except (TypeError, ValueError, SERError) as exc:
        raise ModelError(f"the calibration stored in {where} is invalid ({exc})") from exc


def stored_gate(spec: ModelSpec, where) -> novelty.Gate | None:
    try:
        return novelty.stored_gate(spec, where)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"the novelty gate stored in {where} is invalid ({exc})") from exc


def gate_network(predictor: "BasePredictor") -> "Predictor":
    """The network whose windows give a predictor's signatures: the one hearing its gate's features, else
    (a gate yet to be fitted) its first ``logmel`` network."""
    nets = getattr(predictor, "members", [predictor])
    gate = getattr(predictor, "gate", None)
    for net in nets:
        if (net.cfg == gate.features) if gate is not None else net.cfg.kind == "logmel":
            return net
    raise ModelError("no network of this model hears " +
                     ("its novelty gate's features" if gate is not None else "a log-mel spectrogram"))


class WindowStream:
    """A file read block by block and cut into ``win``-sample windows every ``hop`` samples: iterating gives
    (start sample, window); a last shorter window holds the rest when it is longer than ``hop`` (or is all there
    is). Memory stays flat however long the file is. After the loop, :meth:`finish` refuses an empty, silent or
    windowless stream, and ``duration`` is the decoded length (not the header's claim: a damaged header can
    promise hours)."""

    def __init__(self, source, label: str, sr: int, win: int, hop: int, total: float, progress: Progress | None):
        self.source, self.label, self.sr, self.win, self.hop = source, label, sr, win, hop
        self.total, self.progress = total, progress
        self.n_read = 0

    def __iter__(self):
        buf = np.zeros(0, np.float32)
        offset, cut = 0, False           # offset: absolute sample index of buf[0]
        for block in audio.stream(self.source, sr=self.sr, name=self.label):
            audio.check_samples(block, self.label)
            self.n_read += block.size
            buf = np.concatenate([buf, block])
            while buf.size >= self.win:
                yield offset, buf[:self.win]
                cut = True
                buf = buf[self.hop:]
                offset += self.hop
            if self.progress:
                self.progress(min(offset / self.sr, self.total), self.total)
        if buf.size > self.hop or not cut:
            yield offset, buf

    @property
    def duration(self) -> float:
        return self.n_read / self.sr

    def finish(self, seen_signal: bool, n_windows: int) -> None:
        """Report the whole file read, then refuse what holds no answer."""
        if self.progress:
            self.progress(self.total, self.total)
        if self.n_read == 0:
            raise EmptyAudioError("audio stream holds no samples", source=self.label)
        if not seen_signal:
            raise SilentAudioError("audio is silent (no signal above the noise floor)", source=self.label)
        if not n_windows:
            raise TooShortError("audio holds no complete window", source=self.label)


# ============================================================================ predictors
class BasePredictor(ABC):
    """What every predictor offers: :meth:`analyse`, and the two shortcuts to its prediction.

    A subclass scores the windows of waveforms (:meth:`_scores`, several at once) and a streamed file's
    (:meth:`stream_scores`); decoding, checks, the window mean, calibration and the
    answer are here, once. Thread-safe after construction.
    """

    model_dir: Path | None
    spec: ModelSpec
    labels: list[str]
    cfg: FeatureConfig
    calibration: Calibration | None
    gate: novelty.Gate | None = None
    signs: bool = False         # its window scores carry the clip's signature (for its own or an ensemble's gate)

    def use_gate(self, gate: novelty.Gate | None) -> None:
        """Answer "not sure" for recordings above ``gate``'s novelty threshold (None: no gate)."""
        self.gate = gate
        if gate is not None:
            gate_network(self).signs = True

    # ------------------------------------------------------------------ subclass part
    def window_scores(self, y: np.ndarray, memo: dict | None = None) -> tuple[WindowScores, list[ModelInput]]:
        """Window scores of a checked waveform with speech in it, and what each network saw (``memo``: see
        :func:`recording_levels`)."""
        return self._scores([y], memo)[0]

    def window_scores_many(self, ys: list[np.ndarray], memo: dict | None = None) -> list[WindowScores]:
        """:meth:`window_scores` of several waveforms, with one model call per network for all their windows."""
        return [scores for scores, _ in self._scores(ys, memo)]

    @abstractmethod
    def _scores(self, ys: list[np.ndarray], memo: dict | None = None) -> list[tuple[WindowScores, list[ModelInput]]]:
        """Window scores and network inputs of each waveform, its windows scored together with the others'."""

    @abstractmethod
    def stream_scores(self, source, label: str, total: float,
                      progress: Progress | None) -> tuple[WindowScores, float]:
        """Window scores of a file read block by block, and the decoded duration (seconds)."""

    # ------------------------------------------------------------------ the one path
    def analyse(self, source, *, sr: int | None = None, name: str | None = None,
                progress: Progress | None = None, whole: bool = False) -> Analysis:
        """Everything a caller shows for a file, path, bytes or waveform (``sr`` for a waveform).

        Files longer than ``STREAM_ABOVE_SECONDS`` are streamed (the analysis then holds no
        waveform) unless ``whole`` asks for the decoded waveform, which is then limited to
        ``max_audio_seconds()``. Raises :class:`~ser_core.errors.AudioError` for bad audio.
        """
        rate = self.cfg.sample_rate
        if isinstance(source, np.ndarray):
            label = name or "<array>"
            return self._analyse_waveform(checked_waveform(source, sr, rate, label), label)
        label = name or (Path(source).name if isinstance(source, (str, Path)) else "<audio>")
        if whole:
            return self._analyse_waveform(self._load_whole(source, label), label)
        y = audio.load(source, sr=rate, name=label, max_seconds=max_audio_seconds(), longer_than=STREAM_ABOVE_SECONDS)
        if isinstance(y, float):                 # a long file, measured and not decoded: streamed
            return self._streamed(source, label, y, progress)
        return self._analyse_waveform(y, label)

    def _streamed(self, source, label: str, total: float, progress: Progress | None) -> Analysis:
        scores, duration = self.stream_scores(source, label, total, progress)
        return Analysis(prediction(scores, self.labels, self.calibration, label, duration, self.gate), None,
                        self.cfg.sample_rate)

    def predict_file(self, source, *, name: str | None = None, progress: Progress | None = None) -> Prediction:
        """The prediction for a file, path or bytes (long files streamed)."""
        return self.analyse(source, name=name, progress=progress).prediction

    def predict_many(self, paths: list[str]) -> list[Prediction | Exception]:
        """For each path, what ``predict_file(path, name=path)`` gives, or the exception it raises.

        The windows of all the short files go through each network in one call (``window_scores_many``),
        which is what makes batch scoring fast; long files are streamed one by one as ``predict_file`` does.
        """
        rate = self.cfg.sample_rate
        out: list = [None] * len(paths)
        ready: list[tuple[int, np.ndarray]] = []
        memo: dict = {}
        for i, path in enumerate(paths):
            try:
                y = audio.load(path, sr=rate, name=path, max_seconds=max_audio_seconds(),
                               longer_than=STREAM_ABOVE_SECONDS)
                if isinstance(y, float):         # a long file: streamed as predict_file does
                    out[i] = self._streamed(path, path, y, None).prediction
                    continue
            except Exception as exc:  # noqa: BLE001  (the caller reports it as that file's answer)
                out[i] = exc
                continue
            if speech_present(recording_levels(y, memo)):
                ready.append((i, y))
            else:
                out[i] = no_speech(path, y.size / rate, self.labels)
        for (i, y), scores in zip(ready, self.window_scores_many([y for _, y in ready], memo)):
            out[i] = prediction(scores, self.labels, self.calibration, paths[i], y.size / rate, self.gate)
        return out

    def predict_array(self, y: np.ndarray, sr: int | None = None, *, name: str = "<array>") -> Prediction:
        """The prediction for a waveform (any rate; resampled to the model's rate)."""
        return self.analyse(np.asarray(y), sr=sr, name=name).prediction

    def _load_whole(self, source, label: str) -> np.ndarray:
        limit = max_audio_seconds()
        y = audio.load(source, sr=self.cfg.sample_rate, name=label, max_seconds=limit, longer_than=limit)
        if isinstance(y, float):       # refused before decoding
            raise TooLongError(f"audio is {y:.0f} s long; the limit is {limit:.0f} s", source=label)
        return y

    def _analyse_waveform(self, y: np.ndarray, label: str) -> Analysis:
        rate = self.cfg.sample_rate
        duration = y.size / rate
        memo: dict = {}
        if not speech_present(recording_levels(y, memo)):
            return Analysis(no_speech(label, duration, self.labels), y, rate)
        scores, inputs = self.window_scores(y, memo)
        return Analysis(prediction(scores, self.labels, self.calibration, label, duration, self.gate), y, rate,
                        inputs)


class Predictor(BasePredictor):
    """One network from a model folder (``model.tflite`` when current, else ``model.keras``).

    ``calibrated=False`` leaves out the folder's stored calibration (an ensemble calibrates
    the mean of its members, not each member).
    """

    def __init__(self, model_dir: Path | str, *, runtime: str = "auto", calibrated: bool = True):
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ModelError(f"model folder not found: {self.model_dir}")
        if not (self.model_dir / WEIGHTS).exists():
            raise ModelError(f"no {WEIGHTS} in {self.model_dir}")
        spec = ModelSpec.load(self.model_dir / SPEC)
        self._keras = None
        self._setup(open_runtime(self.model_dir, runtime), spec, calibrated)

    @classmethod
    def from_model(cls, model, spec: ModelSpec) -> "Predictor":
        """Wrap an in-memory Keras model (training evaluates its test clips through this)."""
        obj = cls.__new__(cls)
        obj.model_dir, obj._keras = None, model
        obj._setup(KerasRuntime(model), spec, True)
        return obj

    def _setup(self, runtime: Runtime, spec: ModelSpec, calibrated: bool) -> None:
        self.spec, self.runtime = spec, runtime
        self.labels = list(spec.labels)
        self.cfg = spec.features
        expected = tuple(features.input_shape(self.cfg))
        if runtime.input_shape != expected or runtime.n_outputs != len(self.labels):
            raise ModelError(f"model in {self.model_dir} does not match its spec.json "
                             f"(input {runtime.input_shape} vs {expected})")
        # The training statistics (per band and channel) spread to the whole input shape once: subtracting
        # and dividing by contiguous arrays of the window's own shape gives the same float32 values as
        # broadcasting the small ones, about seven times faster (a batch job normalises every window)
        self._mean, self._std = (None if not v else np.ascontiguousarray(
            np.broadcast_to(np.asarray(v, np.float32), expected)) for v in (spec.norm_mean, spec.norm_std))
        self.calibration = stored_calibration(spec, self.model_dir) if calibrated else None
        self.use_gate(stored_gate(spec, self.model_dir) if calibrated else None)
        features.warm_up(self.cfg)      # filterbanks now, not during the first answer
        self.infer(np.zeros((1, *expected), np.float32))

    @property
    def model(self):
        """The Keras model (loaded on first use when inference runs on LiteRT)."""
        if self._keras is None:
            self._keras = self.runtime.model if isinstance(self.runtime, KerasRuntime) else \
                load_keras(self.model_dir / WEIGHTS)
        return self._keras

    # ------------------------------------------------------------------ building blocks
    def normalise(self, x: np.ndarray) -> np.ndarray:
        if self._mean is None:
            return x.astype(np.float32, copy=False)
        if x.dtype != np.float32:          # features are float32; anything else is computed as it comes
            return ((x - self._mean) / self._std).astype(np.float32)
        out = np.subtract(x, self._mean)
        return np.divide(out, self._std, out=out)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of normalised inputs (any length; run ``BATCH`` at a time)."""
        return np.concatenate([self.runtime(x[b:b + BATCH]) for b in range(0, len(x), BATCH)])

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of raw (un-normalised) feature arrays (what ``infer(normalise(x))``
        gives; on LiteRT each window is normalised into the interpreter's input, not into a copy)."""
        if self._mean is not None and x.dtype == np.float32 and hasattr(self.runtime, "normalised"):
            return self.runtime.normalised(x, self._mean, self._std)
        return self.infer(self.normalise(x))

    def window_features(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For a checked waveform: window starts and ends (seconds of the recording), raw
        feature arrays and which windows hold speech (see :func:`window_features`)."""
        t0, ends, (x,), speech = window_features(y, [self.cfg])
        return t0, ends, x, speech

    def clip_signature(self, y: np.ndarray) -> np.ndarray | None:
        """The novelty signature of a checked waveform: from the raw features of its speech windows."""
        _, _, x, speech = self.window_features(y)
        return novelty.signature(x[speech])

    def many_window_features(self, ys: list[np.ndarray], memo: dict | None = None
                             ) -> tuple[list[tuple], np.ndarray, np.ndarray]:
        """:meth:`window_features` of several waveforms: for each its (starts, ends, speech), all their
        feature arrays stacked, and where each waveform's rows begin and end in that stack."""
        spans, (x,), bounds = many_window_features(ys, [self.cfg], memo)
        return spans, x, bounds

    # ------------------------------------------------------------------ BasePredictor
    def _scores(self, ys: list[np.ndarray], memo: dict | None = None) -> list[tuple[WindowScores, list[ModelInput]]]:
        spans, x, bounds = self.many_window_features(ys, memo)
        probs = self.predict_features(x)
        return [(WindowScores(t0, ends, probs[a:b], speech, self._signature(x[a:b], speech)),
                 [ModelInput(self.spec.arch, self.cfg, x[a], self.normalise)])
                for (t0, ends, speech), a, b in zip(spans, bounds[:-1], bounds[1:])]

    def _signature(self, x: np.ndarray, speech: np.ndarray) -> np.ndarray | None:
        return novelty.signature(x[speech]) if self.signs else None

    def stream_scores(self, source, label: str, total: float,
                      progress: Progress | None) -> tuple[WindowScores, float]:
        sr, win = self.cfg.sample_rate, self.cfg.n_samples
        hop = int(HOP_SECONDS * sr)
        pending, starts, all_probs, all_speech = [], [], [], []
        seen_signal = False
        moments = novelty.Moments()

        def flush():
            if pending:
                x = np.stack([features.from_waveform(w, self.cfg) for w in pending])
                all_probs.append(self.predict_features(x))
                if self.signs:
                    moments.add(x[np.asarray(all_speech[-len(pending):])])
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

        stream = WindowStream(source, label, sr, win, hop, total, progress)
        for start, w in stream:
            take(w, start)
        flush()
        stream.finish(seen_signal, len(starts))
        duration = stream.duration
        t0 = np.asarray(starts) / sr
        return WindowScores(t0, np.minimum(t0 + self.cfg.duration, duration), np.concatenate(all_probs),
                            np.array(all_speech), moments.signature() if self.signs else None), duration


class EnsemblePredictor(BasePredictor):
    """Several networks that hear different features, as one predictor (see :mod:`ser_core.ensemble`).

    Every member runs its own path (conditioning, windows, normalisation). The ensemble's
    windows are the recording's own (``duration`` long, 1 s hop, as a single model with no
    silence trim would cut them); each window's probabilities are the mean of the members'
    (:func:`aligned` places a member's windows on that grid), and the clip's are the mean of
    the windows that hold speech, calibrated with the ensemble's own stored calibration.
    """

    def __init__(self, model_dir: Path | str, *, runtime: str = "auto", calibrated: bool = True):
        from .ensemble import member_weights
        from .modeldir import member_dirs

        self.model_dir = Path(model_dir)
        self.spec = ModelSpec.load(self.model_dir / SPEC)
        dirs = member_dirs(self.model_dir)
        self.members = [Predictor(d, runtime=runtime, calibrated=False) for d in dirs]
        self.member_names = [d.name for d in dirs]
        self.labels = list(self.spec.labels)
        for m, n in zip(self.members, self.member_names):
            if set(m.labels) != set(self.labels):
                raise ModelError(f"ensemble member {n} predicts {m.labels}, not {self.labels}")
        rates = {m.cfg.sample_rate for m in self.members}
        if len(rates) != 1:
            raise ModelError(f"ensemble members expect different sample rates: {sorted(rates)}")
        self.cfg = self.members[0].cfg
        self.weights = np.asarray(member_weights(self.spec.extra.get(MEMBER_WEIGHTS), len(self.members)))
        self.calibration = stored_calibration(self.spec, self.model_dir) if calibrated else None
        self.use_gate(stored_gate(self.spec, self.model_dir) if calibrated else None)
        self._columns = [[m.labels.index(lab) for lab in self.labels] for m in self.members]
        # Members that hear the same features share one extraction (a group), and groups whose features
        # share conditioning, windows and STFT (``features.front_end``: the 64- and 128-band log-mels; the
        # image and the utterance statistics) share one front end: the signal is conditioned and cut once
        # and each window transformed once for all of them. Each front end (its features, then its
        # networks) is one job for a pool of one thread per usable core, the costliest first (the most
        # input values to run through networks): the feature code and both runtimes release the GIL for
        # most of their time, so the jobs run side by side.
        cfg_of = [m.cfg for m in self.members]
        self._groups: list[list[int]] = buckets(range(len(self.members)), lambda i: cfg_of[i])
        self._fronts: list[list[list[int]]] = buckets(self._groups, lambda g: features.front_end(cfg_of[g[0]]))
        self._fronts.sort(key=lambda f: -sum(int(np.prod(self.members[i].runtime.input_shape)) for g in f for i in g))
        self._runner = ThreadPoolExecutor(max_workers=usable_cpus(), thread_name_prefix="ser-ensemble")

    def _mean_on(self, grid: WindowScores, parts: list[WindowScores]) -> WindowScores:
        probs = np.average([aligned(grid, WindowScores(p.starts, p.ends, p.probs[:, cols], p.speech))
                            for p, cols in zip(parts, self._columns)], axis=0, weights=self.weights)
        signature = next((p.signature for p in parts if p.signature is not None), None)
        return WindowScores(grid.starts, grid.ends, probs, grid.speech, signature)

    def _grid(self, y: np.ndarray, memo: dict | None = None) -> WindowScores:
        """The recording's own windows, where the members' probabilities are averaged."""
        sr, win = self.cfg.sample_rate, self.cfg.n_samples
        starts = window_starts(y.size, win, int(HOP_SECONDS * sr))
        t0 = np.asarray(starts) / sr
        return WindowScores(t0, np.minimum(t0 + self.cfg.duration, y.size / sr), np.zeros((len(starts), 0)),
                            speech_windows(y, starts, win, memo))

    def _scores(self, ys: list[np.ndarray], memo: dict | None = None) -> list[tuple[WindowScores, list[ModelInput]]]:
        memo = {} if memo is None else memo       # shared by the front ends' threads (a dict's get/set are atomic)

        def front_job(front: list[list[int]]):
            # the answer is averaged on the recording's own windows and their speech flags (_grid); a front
            # end's flags, of its own conditioned signal, only enter a novelty gate's signature
            signs = any(self.members[i].signs for group in front for i in group)
            spans, xs, bounds = many_window_features(ys, [self.members[group[0]].cfg for group in front], memo,
                                                     speech=signs)
            done = []
            for group, x in zip(front, xs):
                done.append((group, x, [self.members[i].predict_features(x) for i in group]))
            return spans, bounds, done

        pending = [self._runner.submit(front_job, front) for front in self._fronts]
        parts = [[None] * len(self.members) for _ in ys]
        inputs = [[None] * len(self.members) for _ in ys]
        for spans, bounds, done in (future.result() for future in pending):
            for group, x, probs_of in done:
                for i, probs in zip(group, probs_of):
                    for j, ((starts_s, ends, speech), a, b) in enumerate(zip(spans, bounds[:-1], bounds[1:])):
                        sig = self.members[i]._signature(x[a:b], speech)    # the group's raw features
                        parts[j][i] = WindowScores(starts_s, ends, probs[a:b], speech, sig)
                        inputs[j][i] = ModelInput(self.member_names[i], self.members[i].cfg, x[a],
                                                  self.members[i].normalise)
        return [(self._mean_on(self._grid(y, memo), p), inp) for y, p, inp in zip(ys, parts, inputs)]

    def stream_scores(self, source, label: str, total: float,
                      progress: Progress | None) -> tuple[WindowScores, float]:
        n = len(self.members)
        parts = []
        for k, m in enumerate(self.members):
            step = None if progress is None else (lambda done, tot, k=k: progress((k * tot + done) / n, tot))
            scores, duration = m.stream_scores(source, label, total, step)
            parts.append(scores)
        return self._mean_on(parts[0], parts), duration


#: A probe's windows: a recording up to its ``duration`` plus this is heard whole, as its training clips were
#: (docs/preregistration-session33.md: 6 s windows every 3 s, up to 9 s whole).
PROBE_HOP_SECONDS = 3.0
PROBE_BATCH = 8                  # windows per encoder call (a 30 s window each, or each alone: ser_core.whisper.embed)


def read_probe(path: Path, n_labels: int, size: int) -> dict[str, np.ndarray]:
    """A probe's arrays (``mean``, ``std``: the vector's standardisation; ``coef`` labels x values, ``bias``),
    checked against each other and the vector size of its encoder's setup (``size``, :attr:`Setup.size
    <ser_core.whisper.Setup.size>`)."""
    try:
        with np.load(path) as z:
            arrays = {k: np.asarray(z[k], np.float64) for k in ("mean", "std", "coef", "bias")}
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"unreadable probe {path}: {exc}") from None
    shapes = {k: v.shape for k, v in arrays.items()}
    if shapes != {"mean": (size,), "std": (size,), "coef": (n_labels, size),
                  "bias": (n_labels,)} or not all(np.isfinite(v).all() for v in arrays.values()) \
            or (arrays["std"] <= 0).any():
        raise ModelError(f"probe {path} does not match its spec.json ({n_labels} labels, {size} values): "
                         f"{shapes}")
    return arrays


def write_probe(dest: Path, spec: ModelSpec, arrays: dict[str, np.ndarray]) -> Path:
    """A probe folder: ``probe.npz`` (checked as :func:`read_probe` reads it), then ``spec.json``."""
    from .schema import PROBE, PROBE_ARCH
    from .whisper import recorded_setup

    if spec.arch != PROBE_ARCH:
        raise ModelError(f"a probe folder's spec says arch {PROBE_ARCH!r}, not {spec.arch!r}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{PROBE}"
    with open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.asarray(arrays[k], np.float64) for k in ("mean", "std", "coef", "bias")})
    read_probe(tmp, len(spec.labels), recorded_setup(spec.extra).size)
    tmp.replace(dest / PROBE)
    spec.save(dest / SPEC)
    return dest


@dataclass(frozen=True)
class AdaptedProbe:
    """A probe folder's adapted probe (:mod:`ser_core.adapt`): its arrays, its calibration and its record."""

    arrays: dict
    calibration: Calibration
    record: dict


def read_adapted(model_dir: Path, n_labels: int, size: int) -> AdaptedProbe | None:
    """The adapted probe of a probe folder (None when it has none), checked as :func:`read_probe` checks."""
    from .jsonio import read_json
    from .schema import ADAPTED, ADAPTED_PROBE

    model_dir = Path(model_dir)
    if not (model_dir / ADAPTED_PROBE).exists() and not (model_dir / ADAPTED).exists():
        return None
    record = read_json(model_dir / ADAPTED)
    if not isinstance(record, dict):
        raise ModelError(f"{model_dir / ADAPTED} is missing or unreadable (its {ADAPTED_PROBE} needs it)")
    try:
        calib = Calibration.from_dict(record.get(SPEC_KEY))
    except (ValueError, TypeError, SERError) as exc:
        raise ModelError(f"unreadable calibration in {model_dir / ADAPTED}: {exc}") from None
    if calib is None:
        raise ModelError(f"{model_dir / ADAPTED} holds no calibration")
    return AdaptedProbe(read_probe(model_dir / ADAPTED_PROBE, n_labels, size), calib, record)


def write_adapted(dest: Path, arrays: dict[str, np.ndarray], record: dict) -> Path:
    """A probe folder's adapted probe: ``ADAPTED_PROBE`` (checked as :func:`read_adapted` reads it) and
    ``ADAPTED`` (``record``, its calibration under ``SPEC_KEY``), each written whole before it is renamed."""
    from .jsonio import write_json
    from .schema import ADAPTED, ADAPTED_PROBE
    from .whisper import recorded_setup

    dest = Path(dest)
    spec = ModelSpec.load(dest / SPEC)
    tmp = dest / f".{ADAPTED_PROBE}"
    with open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.asarray(arrays[k], np.float64) for k in ("mean", "std", "coef", "bias")})
    read_probe(tmp, len(spec.labels), recorded_setup(spec.extra).size)
    Calibration.from_dict(record[SPEC_KEY])
    tmp.replace(dest / ADAPTED_PROBE)
    write_json(dest / ADAPTED, record)
    return dest


def probe_input(vectors: np.ndarray, probe: dict[str, np.ndarray]) -> np.ndarray:
    """Encoder vectors as a probe's linear layer reads them: standardised with its training clips' statistics."""
    return (vectors - probe["mean"]) / probe["std"]


def probe_logits(vectors: np.ndarray, probe: dict[str, np.ndarray]) -> np.ndarray:
    """A linear probe's scores of encoder vectors (its linear layer on :func:`probe_input`), vectors x labels."""
    return probe_input(vectors, probe) @ probe["coef"].T + probe["bias"]


def probe_probabilities(vectors: np.ndarray, probe: dict[str, np.ndarray]) -> np.ndarray:
    """A linear probe's probabilities (softmax of the standardised vectors' logits), vectors x labels."""
    logits = probe_logits(vectors, probe)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


_ENCODERS: dict = {}               # one Whisper encoder per setup and process, shared by every probe predictor
_ENCODER_LOCK = threading.Lock()   # app sessions load models on their own threads: the weights are loaded once


def whisper_encoder(setup=None):
    """The process's Whisper encoder (:class:`ser_core.whisper.Encoder`) for ``setup`` (None: session 33's
    WNA's), loaded on first use."""
    from .whisper import WNA_SETUP, Encoder

    setup = setup or WNA_SETUP
    with _ENCODER_LOCK:
        if setup not in _ENCODERS:
            # a clip heard alone is a short input: a second thread, woken in each of the encoder's parallel steps,
            # costs more than it takes over (WU2S 8.5 ms a clip end to end against 10.6 with two, on 2 cores,
            # session 36); a 30 s window (WNA) is long enough to share
            _ENCODERS[setup] = Encoder(threads=1 if setup.unpadded else usable_cpus(), setup=setup)
        return _ENCODERS[setup]


class ProbePredictor(BasePredictor):
    """A linear probe on Whisper's frozen encoder, from a folder whose ``arch`` is ``"whisper_probe"``
    (:mod:`ser_core.whisper`; no Keras network, so ``runtime`` can only be ``auto``: a forced one is refused).

    Each window is given to the encoder as the probe's recorded setup says (:func:`ser_core.whisper.recorded_setup`:
    at the product's loudness, in a 30 s window or alone, ...), its vector pooled over its own frames (as the
    training clips were); a recording up to ``duration + PROBE_HOP_SECONDS`` is one window, whole, and a longer
    one is cut into ``duration`` windows every ``PROBE_HOP_SECONDS``. The answer, calibration and "not sure" are every model's (:class:`BasePredictor`).
    """

    def __init__(self, model_dir: Path | str, *, runtime: str = "auto", calibrated: bool = True):
        from .schema import PROBE
        from .whisper import SAMPLE_RATE, recorded_setup

        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ModelError(f"model folder not found: {self.model_dir}")
        check_runtime(self.model_dir, runtime)
        self.spec = ModelSpec.load(self.model_dir / SPEC)
        self.labels = list(self.spec.labels)
        self.cfg = self.spec.features
        if self.cfg.sample_rate != SAMPLE_RATE:
            raise ModelError(f"{self.model_dir}: Whisper hears {SAMPLE_RATE} Hz, its spec says {self.cfg.sample_rate}")
        try:
            setup = recorded_setup(self.spec.extra)
            self.encoder = whisper_encoder(setup)
        except ModelError as exc:
            raise ModelError(f"{self.model_dir}: {exc}") from None
        self.probe = read_probe(self.model_dir / PROBE, len(self.labels), setup.size)
        self.calibration = stored_calibration(self.spec, self.model_dir) if calibrated else None

    def vectors(self, waves: list[np.ndarray]) -> np.ndarray:
        """The encoder's vectors of checked 16 kHz windows, each heard whole (windows x its setup's size)."""
        vecs = [self.encoder(waves[b:b + PROBE_BATCH]) for b in range(0, len(waves), PROBE_BATCH)]
        return np.concatenate(vecs) if vecs else np.zeros((0, self.encoder.setup.size), np.float32)

    def probabilities(self, waves: list[np.ndarray]) -> np.ndarray:
        """Uncalibrated probabilities of checked 16 kHz windows, each heard whole (windows x labels)."""
        return probe_probabilities(self.vectors(waves), self.probe)

    def standardise(self, vector: np.ndarray) -> np.ndarray:
        """A vector as the probe's linear layer reads it (the training clips' statistics)."""
        return probe_input(vector, self.probe).astype(np.float32)

    @cached_property
    def adapted(self) -> AdaptedProbe | None:
        """The folder's probe adapted to a recording setup (:mod:`ser_core.adapt`), or None."""
        return read_adapted(self.model_dir, len(self.labels), self.encoder.setup.size)

    def predict_adapted(self, sources: list, names: list[str] | None = None
                        ) -> tuple[list[Prediction | Exception], int]:
        """Answers for clips of one recording setup, read by the adapted probe after standardising them by
        the setup's own clips with speech (all of the ``sources``' speech windows; at least
        :data:`ser_core.adapt.REFERENCE_CLIPS` clips with speech). ``sources``: paths, or bytes (an upload) with
        their ``names``. As :meth:`predict_many`, each source's prediction or the exception its audio raised;
        and how many clips the reference held.

        Raises :class:`~ser_core.errors.ModelError` when the folder has no adapted probe and
        :class:`~ser_core.errors.SERError` when too few clips have speech."""
        from . import adapt

        probe = self.adapted
        if probe is None:
            raise ModelError(f"{self.model_dir} has no probe adapted to a recording setup "
                             f"(python training/adapt_probe.py ship --model {self.model_dir} ...)")
        rate = self.cfg.sample_rate
        names = [str(s) for s in sources] if names is None else list(names)
        out: list = [None] * len(sources)
        heard: list[tuple[int, float, list[int], list[int], np.ndarray, np.ndarray]] = []
        for i, (source, name) in enumerate(zip(sources, names)):
            try:
                y = self._load_whole(source, name)
            except Exception as exc:  # noqa: BLE001  (the caller reports it as that file's answer)
                out[i] = exc
                continue
            memo: dict = {}
            if not speech_present(recording_levels(y, memo)):
                out[i] = no_speech(name, y.size / rate, self.labels)
                continue
            starts, windows, speech = self.cut(y, memo)
            # the vectors are kept, the waveform is not: a folder of a thousand clips holds a thousand vectors
            heard.append((i, y.size / rate, starts, [w.size for w in windows], speech, self.vectors(windows)))
        if len(heard) < adapt.REFERENCE_CLIPS:
            raise SERError(f"adapting to a recording setup needs at least {adapt.REFERENCE_CLIPS} clips with speech "
                           f"from it; {len(heard)} of the {len(sources)} given have speech")
        stats = adapt.reference_stats(np.concatenate([v[sp] for *_, sp, v in heard]), adapt.REFERENCE_CLIPS)
        for i, duration, starts, sizes, speech, vecs in heard:
            t0 = np.asarray(starts) / rate
            ends = t0 + np.asarray(sizes) / rate
            single = probe_logits(vecs, self.probe)
            s = adapt.logits(vecs, stats, probe.arrays)
            if probe.record.get("hybrid"):      # WU2A-H: the folder's own one-clip answer multiplied in
                s = adapt.hybrid(s, single)
            out[i] = prediction(WindowScores(t0, ends, adapt.softmax(s), speech), self.labels, probe.calibration,
                                names[i], duration)
            # the clip's answer on its own, as `ser predict` gives it (see ONE_MOOD_SHARE)
            out[i].one_clip = prediction(WindowScores(t0, ends, adapt.softmax(single), speech), self.labels,
                                         self.calibration, names[i], duration, self.gate)
        return out, len(heard)

    def cut(self, y: np.ndarray, memo: dict | None = None) -> tuple[list[int], list[np.ndarray], np.ndarray]:
        """A checked waveform's window starts, windows and speech flags (one window: the whole recording,
        whose speech was checked before it got here)."""
        win, hop = self.cfg.n_samples, int(PROBE_HOP_SECONDS * self.cfg.sample_rate)
        starts = window_starts(y.size, win, hop)
        if len(starts) == 1:
            return starts, [y], np.ones(1, bool)
        return starts, [y[s:s + win] for s in starts], speech_windows(y, starts, win, memo)

    def _scores(self, ys: list[np.ndarray], memo: dict | None = None) -> list[tuple[WindowScores, list[ModelInput]]]:
        cuts = [self.cut(y, memo) for y in ys]
        vecs = self.vectors([w for _, windows, _ in cuts for w in windows])
        probs = probe_probabilities(vecs, self.probe)
        out, at = [], 0
        for (starts, windows, speech) in cuts:
            t0 = np.asarray(starts) / self.cfg.sample_rate
            ends = t0 + np.array([w.size for w in windows]) / self.cfg.sample_rate
            # what the linear layer reads: the first window's vector, standardised
            out.append((WindowScores(t0, ends, probs[at:at + len(windows)], speech),
                        [ModelInput(self.spec.arch, self.cfg, vecs[at], self.standardise)]))
            at += len(windows)
        return out

    def stream_scores(self, source, label: str, total: float,
                      progress: Progress | None) -> tuple[WindowScores, float]:
        sr = self.cfg.sample_rate
        stream = WindowStream(source, label, sr, self.cfg.n_samples, int(PROBE_HOP_SECONDS * sr), total, progress)
        pending, starts, sizes, speech, probs = [], [], [], [], []
        seen_signal = False
        for start, w in stream:
            seen_signal = seen_signal or not audio.is_silent(w)
            starts.append(start)
            sizes.append(w.size)
            speech.append(speech_present(frame_levels(w)))
            pending.append(w if w.size else np.zeros(1, np.float32))     # the stream's windows are never reused
            if len(pending) >= PROBE_BATCH:
                probs.append(self.probabilities(pending))
                pending.clear()
        if pending:
            probs.append(self.probabilities(pending))
        stream.finish(seen_signal, len(starts))
        t0 = np.asarray(starts) / sr
        return WindowScores(t0, t0 + np.asarray(sizes) / sr, np.concatenate(probs), np.array(speech)), stream.duration


def load_predictor(model_dir: Path | str, *, runtime: str = "auto", calibrated: bool = True) -> BasePredictor:
    """A Predictor for a model folder, an EnsemblePredictor for an ensemble folder, or a ProbePredictor for a
    probe on Whisper's encoder (``calibrated=False``: without the folder's stored calibration, the raw
    probabilities).

    The process then keeps the memory it frees for reuse (:func:`ser_core.machine.keep_freed_memory`):
    a predictor allocates the same arrays clip after clip."""
    keep_freed_memory()
    cls = ProbePredictor if is_probe(model_dir) else EnsemblePredictor if is_ensemble(model_dir) else Predictor
    return cls(model_dir, runtime=runtime, calibrated=calibrated)
