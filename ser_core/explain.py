"""Why this emotion: which stretches of time and which frequency bands drove a model's answer.

Method: occlusion on the waveform, so it works for every model the app can load
(a single model or an ensemble whose members hear log-mel sequences, pictures or
per-clip statistics; a gradient would exist only for some of them). The file is
cut into a grid of patches: stretches of time by groups of mel bands (equal
widths on the mel scale). For each patch, the bins of the waveform's short-time
spectrum that stand more than :data:`BACKGROUND_MARGIN_DB` above the
recording's background are pulled down to that background (phase kept), and the
waveform is resynthesised. The model's whole prediction path then runs on it:
voice-activity trimming, loudness normalisation, windows, every ensemble member
with its own features, averaging. A patch's ``support`` is how much the
predicted emotion's probability drops when it is occluded (negative: it rises,
the patch speaks against the answer); its ``saliency`` is the size of that
change, how much the answer rests on the patch either way.

The background, per frequency bin, is the median over the stretches the model's
trimming cuts (the file's own silence), or a low percentile over the whole file
when there is too little of it. Occluding a patch that is background already
changes nothing at all, so it scores zero without a model run: silence cannot
collect saliency merely because an occluder put something unusual there (the
image and statistics members never trim, and the latter reacts to the faintest
change in the silence it hears). The ends of the voiced stretch are patch
edges, so no patch mixes audio the trimming keeps with audio it cuts.

Time axis: the occlusion acts on the ORIGINAL file (resampled to the model's
rate, nothing cut), so the map lies on the file's own time axis whatever
trimming or normalisation the model applies afterwards.

The map is drawn on a mel spectrogram of the file computed with the model's
STFT settings (for an ensemble, its first member's): ``saliency`` and
``mel_db`` are ``(frames, mel bands)``; ``times`` holds each frame's centre in
seconds from the start of the file, ``mel_hz`` each band's centre frequency.
Every cell of a patch carries the patch's value.

The codec comparison (:func:`codec_comparison`) re-encodes the clip as real MP3
and Ogg/Opus files in memory, decodes them as an upload would be, and predicts
each, so a user can see how much of a difference between two files of one
recording is the codec.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import audio, features
from .config import FeatureConfig, atomic_write_bytes
from .errors import SERError, TooLongError

METHOD = ("occlusion: each time x mel-band patch of the waveform's spectrum is pulled down to the recording's "
          "background level, the audio resynthesised and the whole model (trimming, loudness normalisation, "
          "every member) re-run; support = the drop of the predicted emotion's probability, "
          "saliency = its size")
PATCH_SECONDS = 0.25          # default length of a time patch
N_BANDS = 8                   # default number of mel-band groups
MAX_TIME_PATCHES = 48         # longer files get longer patches (the cost grows with time x bands)
WINDOW_BUDGET = 1600          # at most about this many model windows per member: long files, coarser grids
MAX_SECONDS = 20.0            # occlusion runs the whole model once per patch: longer files are refused
BACKGROUND_PERCENTILE = 90.0  # the background per frequency bin: this percentile of the silence around the speech
FLOOR_PERCENTILE = 10.0       # ... or of the whole file, when it has too little silence
MIN_BACKGROUND_SECONDS = 0.1  # silence needed to measure the background on it
BACKGROUND_MARGIN_DB = 10.0   # a bin is occluded only this far above the background (noise: ~1e-10 odds)
RESYNTH_FRAME_SECONDS = 0.032  # STFT used for occlusion and resynthesis (Hann, 75 % overlap)
VARIANTS_PER_CALL = 16        # occluded waveforms whose windows go through the model in one batch
RESYNTH_BUDGET = 4_000_000    # complex STFT cells resynthesised at once (64 MB)


@dataclass
class Explanation:
    """An occlusion saliency map on the file's mel spectrogram (see the module docstring)."""

    file: str
    emotion: str
    confidence: float
    support: np.ndarray           # (frames, mel bands): drop of P(emotion) when the cell's patch is occluded
    times: np.ndarray             # (frames,) seconds from the start of the file
    mel_hz: np.ndarray            # (mel bands,) centre frequencies
    mel_db: np.ndarray            # (frames, mel bands), dB re. the loudest cell
    voiced: tuple[float, float]   # seconds: the stretch the model's voice-activity trimming keeps
    duration: float
    grid: tuple[int, int]         # (time patches, band groups)
    method: str = METHOD
    runs: int = 0                 # occluded waveforms that went through the model
    probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def saliency(self) -> np.ndarray:
        """(frames, mel bands): how much P(emotion) changes, either way, when the cell's patch is occluded."""
        return np.abs(self.support)

    def mass_between(self, start: float, end: float) -> float:
        """Share of the saliency mass in frames whose time lies in ``[start, end)`` (0 if the map is empty)."""
        total = float(self.saliency.sum())
        if total <= 0:
            return 0.0
        inside = (self.times >= start) & (self.times < end)
        return float(self.saliency[inside].sum()) / total

    @property
    def voiced_mass(self) -> float:
        """Share of the saliency mass inside the voiced stretch."""
        return self.mass_between(*self.voiced)

    def time_profile(self) -> np.ndarray:
        """Saliency summed over bands, per frame."""
        return self.saliency.sum(axis=1)

    def band_profile(self) -> np.ndarray:
        """Saliency summed over frames, per mel band."""
        return self.saliency.sum(axis=0)

    def npz_bytes(self) -> bytes:
        """The map as a NumPy ``.npz`` archive (see :func:`save_npz` for the keys)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, saliency=self.saliency.astype(np.float32), support=self.support.astype(np.float32),
                            times=self.times.astype(np.float64),
                            mel_hz=self.mel_hz.astype(np.float64), mel_db=self.mel_db.astype(np.float32),
                            emotion=np.array(self.emotion), confidence=np.float64(self.confidence),
                            voiced=np.array(self.voiced, np.float64), grid=np.array(self.grid, np.int64),
                            method=np.array(self.method), source=np.array(self.file))
        return buf.getvalue()


def save_npz(expl: Explanation, path: Path | str) -> Path:
    """Write ``saliency`` and ``support`` (frames x mel bands), ``times`` (s from the file's start),
    ``mel_hz``, ``mel_db``, ``emotion``, ``confidence``, ``voiced`` (start, end in s), ``grid``, ``method``
    and ``source`` (the file name); atomically."""
    return atomic_write_bytes(path, expl.npz_bytes())


# --------------------------------------------------------------------------- pieces
def members_of(predictor) -> list:
    """The single predictors behind a Predictor (itself) or an EnsemblePredictor (its members)."""
    return list(getattr(predictor, "members", [predictor]))


def trim_config(predictor) -> FeatureConfig:
    """The feature settings whose voice-activity trimming defines the voiced stretch.

    The first member that trims; a model that never trims is measured with the
    same rule at its configured ``trim_top_db``.
    """
    cfgs = [m.cfg for m in members_of(predictor)]
    return next((c for c in cfgs if c.trim_silence), cfgs[0])


def voiced_region(predictor, y: np.ndarray) -> tuple[float, float]:
    """Seconds (start, end) of the stretch the model's voice-activity trimming keeps, for a checked waveform."""
    cfg = trim_config(predictor)
    start, end = audio.trim_bounds(np.asarray(y, np.float32), cfg.trim_top_db)
    return start / cfg.sample_rate, end / cfg.sample_rate


def display_mel(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The file's mel spectrogram with the model's STFT: (dB (frames, bands), frame times, band centres in Hz)."""
    sr = cfg.sample_rate
    power = features.stft_magnitude(np.asarray(y, np.float32), cfg.n_fft, cfg.hop_length) ** 2
    db = features.power_to_db(features.mel_power(power, sr, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax), ref="max")
    times = np.arange(db.shape[-1]) * cfg.hop_length / sr
    fmax = sr / 2 if cfg.fmax is None else cfg.fmax
    mel_hz = features.mel_frequencies(cfg.n_mels + 2, cfg.fmin, fmax)[1:-1]
    return db.T.astype(np.float32), times, mel_hz


def patch_edges(duration: float, voiced: tuple[float, float], cfg: FeatureConfig, seconds: float = PATCH_SECONDS,
                bands: int = N_BANDS, max_time: int = MAX_TIME_PATCHES) -> tuple[np.ndarray, np.ndarray]:
    """Time edges (s) and band edges (Hz, equal widths on the mel scale) of the occlusion grid.

    The voiced stretch's ends are edges, so no patch mixes audio the model's
    trimming keeps with audio it cuts; the stretches before, inside and after
    it are each split into equal patches of about ``seconds`` (longer when
    there would be more than ``max_time`` patches).
    """
    if seconds <= 0 or bands < 1 or max_time < 3:
        raise SERError("occlusion needs a positive patch length, at least one band and three time patches")
    start, end = min(max(voiced[0], 0.0), duration), min(max(voiced[1], 0.0), duration)
    pieces = [(a, b) for a, b in ((0.0, start), (start, end), (end, duration)) if b - a > 1e-6]
    while True:
        counts = [max(int(np.ceil((b - a) / seconds - 1e-9)), 1) for a, b in pieces]
        if sum(counts) <= max_time:
            break
        seconds *= 1.25
    edges = np.unique(np.concatenate([np.linspace(a, b, n + 1) for (a, b), n in zip(pieces, counts)]))
    fmax = cfg.sample_rate / 2 if cfg.fmax is None else cfg.fmax
    hz = features.mel_to_hz(np.linspace(features.hz_to_mel(cfg.fmin), features.hz_to_mel(fmax), bands + 1))
    return edges, hz


def background_level(mag: np.ndarray, times: np.ndarray, voiced: tuple[float, float] | None) -> np.ndarray:
    """Per frequency bin, how loud the file gets when nobody speaks ``(bins, 1)``.

    The :data:`BACKGROUND_PERCENTILE` th percentile of the magnitude over the
    frames outside the voiced stretch when there are at least
    :data:`MIN_BACKGROUND_SECONDS` of them, else the :data:`FLOOR_PERCENTILE` th
    percentile over all frames. The loud end of the silence, not its median: a
    recording's silences differ (RAVDESS clips open with gated digital silence
    near -110 dBFS and close on room noise near -70 dBFS), and room noise must
    count as background, not as something to remove.
    """
    if voiced is not None:
        outside = (times < voiced[0]) | (times >= voiced[1])
        step = times[1] - times[0] if times.size > 1 else 1.0
        if outside.sum() * step >= MIN_BACKGROUND_SECONDS:
            return np.percentile(mag[:, outside], BACKGROUND_PERCENTILE, axis=1, keepdims=True)
    return np.percentile(mag, FLOOR_PERCENTILE, axis=1, keepdims=True)


def _group(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the interval ``[edges[i], edges[i+1])`` each value falls in (the outer intervals extend)."""
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


class Occluder:
    """Occluded versions of one waveform, patch by patch (see the module docstring)."""

    def __init__(self, y: np.ndarray, sr: int, time_edges: np.ndarray, band_edges: np.ndarray,
                 voiced: tuple[float, float] | None = None):
        from scipy.signal import stft

        self.y, self.sr = np.asarray(y, np.float64), sr
        self.nperseg = max(int(round(RESYNTH_FRAME_SECONDS * sr)), 16)
        self.noverlap = self.nperseg - self.nperseg // 4
        freqs, times, spec = stft(self.y, sr, nperseg=self.nperseg, noverlap=self.noverlap)
        mag = np.abs(spec)
        background = background_level(mag, times, voiced)
        # Bins standing more than BACKGROUND_MARGIN_DB above the background are pulled down to it (phase
        # kept); the rest, which is background already, stays exactly as it is.
        loud = mag > background * 10 ** (BACKGROUND_MARGIN_DB / 20)
        self.excess = np.where(loud, spec * (1.0 - background / np.maximum(mag, 1e-20)), 0.0)
        self.frame_patch = _group(times, time_edges)
        self.bin_band = _group(freqs, band_edges)
        self.per_call = int(np.clip(RESYNTH_BUDGET // spec.size, 1, VARIANTS_PER_CALL))

    def removed(self, k: int, g: int) -> np.ndarray:
        """The STFT that occluding patch (time k, band g) subtracts."""
        mask = (self.frame_patch == k)[None, :] & (self.bin_band == g)[:, None]
        return self.excess * mask

    def waves(self, patches: list[tuple[int, int]]) -> tuple[list[np.ndarray], list[bool]]:
        """The occluded waveforms, and whether each differs measurably from the original."""
        from scipy.signal import istft

        if not patches:
            return [], []
        stack = np.stack([self.removed(k, g) for k, g in patches])
        _, delta = istft(stack, self.sr, nperseg=self.nperseg, noverlap=self.noverlap)
        delta = delta[:, : self.y.size]
        delta = np.pad(delta, ((0, 0), (0, self.y.size - delta.shape[1])))
        changed = [bool(np.any(d)) for d in delta]
        return [(self.y - d).astype(np.float32) for d in delta], changed


def clip_probabilities(predictor, waves: list[np.ndarray], name: str = "<array>") -> np.ndarray:
    """Clip probabilities ``(len(waves), len(predictor.labels))`` of checked waveforms, batched.

    The same numbers as ``predictor.predict_array`` gives for each waveform (calibrated, as the
    user sees them): each network's own conditioning and windows (``Predictor.window_features``),
    the ensemble's window grid and member mean (as ``EnsemblePredictor.window_scores``, through
    its ``_mean_on``), the speech rule and :func:`~ser_core.predict.prediction`. But every window
    of every waveform goes through each network in one call, and networks that hear the same
    features share one extraction. A waveform without speech gives zeros.
    """
    from .predict import (HOP_SECONDS, WindowScores, frame_levels, prediction, speech_present, speech_windows,
                          window_starts)

    labels = list(predictor.labels)
    out = np.zeros((len(waves), len(labels)))
    live = [i for i, w in enumerate(waves) if speech_present(frame_levels(w))]
    if not live:
        return out
    rate = predictor.cfg.sample_rate
    if not hasattr(predictor, "window_features") and not hasattr(predictor, "members"):
        # no network of features (a probe on Whisper's encoder): its own windows, all the waveforms at once
        for i, scores in zip(live, predictor.window_scores_many([waves[i] for i in live])):
            pred = prediction(scores, labels, predictor.calibration, name, waves[i].size / rate)
            out[i] = [pred.probabilities.get(lab, 0.0) for lab in labels]
        return out
    members = members_of(predictor)
    shared: dict[FeatureConfig, list] = {}
    per_member = []
    for m in members:
        if m.cfg not in shared:
            shared[m.cfg] = [m.window_features(waves[i]) for i in live]
        parts = shared[m.cfg]
        probs = m.predict_features(np.concatenate([p[2] for p in parts]))
        scores, at = [], 0
        for t0, ends, x, speech in parts:
            scores.append(WindowScores(t0, ends, probs[at:at + len(x)], speech))
            at += len(x)
        per_member.append(scores)
    for j, i in enumerate(live):
        y = waves[i]
        if hasattr(predictor, "members"):
            win = predictor.cfg.n_samples
            starts = window_starts(y.size, win, int(HOP_SECONDS * rate))
            t0 = np.asarray(starts) / rate
            grid = WindowScores(t0, np.minimum(t0 + predictor.cfg.duration, y.size / rate),
                                np.zeros((len(starts), 0)), speech_windows(y, starts, win))
            scores = predictor._mean_on(grid, [p[j] for p in per_member])
        else:
            scores = per_member[0][j]
        pred = prediction(scores, labels, predictor.calibration, name, y.size / rate)
        out[i] = [pred.probabilities.get(lab, 0.0) for lab in labels]
    return out


# --------------------------------------------------------------------------- public
def explain_array(predictor, y: np.ndarray, sr: int | None = None, *, name: str = "<array>",
                  seconds: float | None = None, bands: int | None = None, max_time: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Explanation:
    """Occlusion saliency of one waveform for a Predictor or an EnsemblePredictor.

    Parameters
    ----------
    predictor : Predictor or EnsemblePredictor
    y, sr : the waveform and its rate (default: the model's); resampled to the model's rate.
    seconds, bands, max_time : the patch grid: time patches of about ``seconds`` (at most
        ``max_time`` of them) by ``bands`` mel-band groups; default :data:`PATCH_SECONDS`,
        :data:`N_BANDS`, :data:`MAX_TIME_PATCHES`. The model runs once per patch that changes the audio.
    progress : called with (patches done, patches in all) after each batch.

    Raises
    ------
    TooLongError
        Longer than :data:`MAX_SECONDS`.
    SilentAudioError
        No speech, so there is no answer to explain.
    """
    from .errors import SilentAudioError

    seconds = PATCH_SECONDS if seconds is None else seconds
    bands = N_BANDS if bands is None else bands
    max_time = MAX_TIME_PATCHES if max_time is None else max_time
    from .predict import HOP_SECONDS, checked_waveform, window_starts

    cfg = predictor.cfg
    y = checked_waveform(y, sr, cfg.sample_rate, name)
    duration = y.size / cfg.sample_rate
    if duration > MAX_SECONDS:
        raise TooLongError(f"the why view explains up to {MAX_SECONDS:.0f} s of audio, this is {duration:.0f} s; "
                           "cut a shorter part", source=name)
    base = clip_probabilities(predictor, [y], name)[0]
    if not base.any():
        raise SilentAudioError("no speech detected: nothing to explain", source=name)
    target = int(np.argmax(base))
    voiced = voiced_region(predictor, y)
    windows = len(window_starts(y.size, cfg.n_samples, int(HOP_SECONDS * cfg.sample_rate)))   # untrimmed: most
    max_time = max(3, min(max_time, WINDOW_BUDGET // (bands * windows)))
    time_edges, band_edges = patch_edges(duration, voiced, cfg, seconds, bands, max_time)
    occluder = Occluder(y, cfg.sample_rate, time_edges, band_edges, voiced)
    patches = [(k, g) for k in range(len(time_edges) - 1) for g in range(bands)]
    drop = np.zeros((len(time_edges) - 1, bands))
    runs = 0
    for b in range(0, len(patches), occluder.per_call):
        chunk = patches[b:b + occluder.per_call]
        waves, changed = occluder.waves(chunk)
        todo = [i for i, c in enumerate(changed) if c]
        if todo:
            probs = clip_probabilities(predictor, [waves[i] for i in todo], name)
            runs += len(todo)
            for i, p in zip(todo, probs):
                drop[chunk[i]] = base[target] - p[target]
        if progress:
            progress(b + len(chunk), len(patches))
    mel_db, times, mel_hz = display_mel(y, cfg)
    support = drop[_group(times, time_edges)][:, _group(mel_hz, band_edges)].astype(np.float32)
    labels = list(predictor.labels)
    return Explanation(file=name, emotion=labels[target], confidence=float(base[target]), support=support,
                       times=times, mel_hz=mel_hz, mel_db=mel_db, voiced=voiced,
                       duration=duration, grid=(len(time_edges) - 1, bands), runs=runs,
                       probabilities=dict(zip(labels, map(float, base))))


def explain_file(predictor, source, *, name: str | None = None, **kwargs) -> Explanation:
    """:func:`explain_array` of a file, path or bytes (refused beyond :data:`MAX_SECONDS` before decoding)."""
    label = name or (Path(source).name if isinstance(source, (str, Path)) else "<audio>")
    y = audio.load(source, sr=predictor.cfg.sample_rate, name=label, max_seconds=MAX_SECONDS + 1,
                   longer_than=MAX_SECONDS + 1)
    if isinstance(y, float):        # refused before decoding: its length
        raise TooLongError(f"the why view explains up to {MAX_SECONDS:.0f} s of audio, this is {y:.0f} s; "
                           "cut a shorter part", source=label)
    return explain_array(predictor, y, name=label, **kwargs)


# --------------------------------------------------------------------------- codecs
#: The codec round trips of the comparison: label -> (container, encoder, bit rate, encoder rate).
#: Opus at 12 kbit/s is a voice message or a poor call, 32 kbit/s a browser recording; MP3 at
#: 32 kbit/s a small download, 128 kbit/s a common file.
CODECS: dict[str, tuple[str, str, int, int]] = {
    "MP3 128 kbit/s": ("mp3", "libmp3lame", 128000, 16000),
    "MP3 32 kbit/s": ("mp3", "libmp3lame", 32000, 16000),
    "Ogg/Opus 32 kbit/s": ("ogg", "libopus", 32000, 48000),
    "Ogg/Opus 12 kbit/s": ("ogg", "libopus", 12000, 48000),
}
ORIGINAL = "as given"


def encode(y: np.ndarray, sr: int, container: str, codec: str, bit_rate: int, rate: int | None = None) -> bytes:
    """A real audio file (``container`` format, ``codec`` encoder) of a mono waveform, in memory."""
    import av

    rate = rate or sr
    x = audio.resample(np.asarray(y, np.float32), sr, rate) if rate != sr else np.asarray(y, np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.bit_rate, stream.layout = int(bit_rate), "mono"
        frame = av.AudioFrame.from_ndarray(np.clip(x, -1.0, 1.0)[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, 0          # pts 0: the encoder's delay is recorded, not added
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@dataclass
class CodecResult:
    """One version of the clip: ``best`` is its most likely emotion, ``answer`` what the user is
    told (an emotion, "not sure: a or b", or "no speech"); probabilities are calibrated."""

    codec: str
    best: str | None
    answer: str
    confidence: float
    probabilities: dict[str, float]
    size_bytes: int | None = None


def codec_comparison(predictor, y: np.ndarray, *, name: str = "<array>",
                     codecs: dict[str, tuple[str, str, int, int]] | None = None) -> list[CodecResult]:
    """The prediction of the clip as given and after each codec round trip (encoded and decoded for real).

    ``y`` is a waveform at the model's rate. The first row is the clip as given.
    """
    sr = predictor.cfg.sample_rate
    pred = predictor.predict_array(y, name=name)
    rows = [CodecResult(ORIGINAL, pred.best, pred.summary(), pred.confidence, pred.probabilities)]
    for label, (container, codec, bit_rate, rate) in (codecs or CODECS).items():
        data = encode(y, sr, container, codec, bit_rate, rate)
        z = audio.load(data, sr=sr, name=f"{name}.{container}")
        pred = predictor.predict_array(z, name=name)
        rows.append(CodecResult(label, pred.best, pred.summary(), pred.confidence, pred.probabilities, len(data)))
    return rows


def codec_spread(rows: list[CodecResult], emotion: str | None = None) -> float:
    """How far the codecs move one emotion's probability: max minus min over the rows (``emotion``:
    default the most likely emotion of the clip as given)."""
    emotion = emotion or rows[0].best
    if emotion is None:
        return 0.0
    values = [r.probabilities.get(emotion, 0.0) for r in rows]
    return float(max(values) - min(values))
