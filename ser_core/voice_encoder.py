"""A pretrained speaker encoder, run with numpy: what a network that heard thousands of voices keeps of a clip.

The network is Resemblyzer's GE2E voice encoder (Jemine, Apache-2.0; Wan et al. 2018, "Generalized
end-to-end loss for speaker verification"), trained on LibriSpeech, VoxCeleb1 and VoxCeleb2: a three-layer
LSTM of 256 units over 40-band mel power frames (25 ms, 10 ms hop), whose last state goes through a dense
layer, a ReLU and an L2 norm. Its weights ship in ``models/voice_encoder/`` (converted from the PyPI wheel's
``pretrained.pt`` by ``training/encoder_probe.py --convert``; no torch is needed to run it, none to read it).

Small pure functions on arrays, as in :mod:`ser_core.features`:

* :func:`mel_frames` - the encoder's input for a waveform, ``(T, 40)``
* :func:`partial_slices` - where Resemblyzer cuts an utterance into 1.6 s partials
* :func:`lstm_states` - every layer's hidden states for a batch of partials
* :func:`clip_vector` - one clip's ``(768,)`` summary: the utterance embedding (256), and the mean and
  standard deviation over time of the last layer's hidden states (256 + 256)
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ModelError
from .features import mel_filterbank, stft_magnitude

SAMPLE_RATE = 16000
N_FFT = 400                  # 25 ms
HOP = 160                    # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160         # 1.6 s
PARTIAL_RATE = 1.3           # partials per second of audio (Resemblyzer's default)
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0          # Resemblyzer raises quieter clips to this level, never lowers louder ones
HIDDEN = 256
N_LAYERS = 3
VECTOR_SIZE = 3 * HIDDEN

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "voice_encoder" / "ge2e_resemblyzer.npz"
#: The arrays a weights file must hold, with their shapes (PyTorch's names and gate order i, f, g, o).
SHAPES = {**{f"lstm.weight_ih_l{k}": (4 * HIDDEN, N_MELS if k == 0 else HIDDEN) for k in range(N_LAYERS)},
          **{f"lstm.weight_hh_l{k}": (4 * HIDDEN, HIDDEN) for k in range(N_LAYERS)},
          **{f"lstm.bias_ih_l{k}": (4 * HIDDEN,) for k in range(N_LAYERS)},
          **{f"lstm.bias_hh_l{k}": (4 * HIDDEN,) for k in range(N_LAYERS)},
          "linear.weight": (HIDDEN, HIDDEN), "linear.bias": (HIDDEN,)}


@lru_cache(maxsize=2)
def load_weights(path: str | Path = WEIGHTS) -> dict[str, np.ndarray]:
    """The encoder's arrays from an ``.npz`` file, checked against :data:`SHAPES`."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"voice encoder weights not found: {path}")
    with np.load(path) as z:
        w = {k: z[k].astype(np.float32) for k in z.files}
    wrong = [k for k, shape in SHAPES.items() if k not in w or w[k].shape != shape]
    if wrong:
        raise ModelError(f"{path} is not the voice encoder's weights (missing or misshapen: {', '.join(wrong)})")
    return w


def raise_quiet(y: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Scale a clip up to ``target_dbfs`` RMS if it is quieter (Resemblyzer's ``increase_only``)."""
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    if rms <= 0:
        return y
    gain_db = target_dbfs - 20 * np.log10(rms)
    return y * np.float32(10 ** (gain_db / 20)) if gain_db > 0 else y


def mel_frames(y: np.ndarray) -> np.ndarray:
    """Mel power frames ``(T, 40)`` as ``librosa.feature.melspectrogram(sr=16000, n_fft=400, hop_length=160,
    n_mels=40)`` gives them (power, not dB: the encoder was trained on these)."""
    power = stft_magnitude(y, N_FFT, HOP) ** 2
    return (mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS) @ power).T.astype(np.float32)


def partial_slices(n_samples: int, rate: float = PARTIAL_RATE, min_coverage: float = MIN_COVERAGE) -> list[slice]:
    """Frame slices of the partial utterances (Resemblyzer's ``compute_partial_slices``): 160 frames each,
    ``rate`` per second; the last is dropped when it covers less than ``min_coverage`` of its span and
    is not the only one."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((SAMPLE_RATE / rate) / HOP))
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))        # exact, and never overflows


def lstm_states(x: np.ndarray, w: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Hidden states of every layer, ``[(B, T, 256)] * 3``, for a batch of mel frames ``(B, T, 40)``
    (PyTorch's ``nn.LSTM``, zero initial state)."""
    out, states = np.asarray(x, np.float32), []
    for k in range(N_LAYERS):
        w_hh = w[f"lstm.weight_hh_l{k}"].T
        gates_in = out @ w[f"lstm.weight_ih_l{k}"].T + (w[f"lstm.bias_ih_l{k}"] + w[f"lstm.bias_hh_l{k}"])
        b, t = gates_in.shape[:2]
        h = np.zeros((b, HIDDEN), np.float32)
        c = np.zeros((b, HIDDEN), np.float32)
        hs = np.empty((b, t, HIDDEN), np.float32)
        for step in range(t):
            g = gates_in[:, step] + h @ w_hh
            i, f = _sigmoid(g[:, :HIDDEN]), _sigmoid(g[:, HIDDEN:2 * HIDDEN])
            c = f * c + i * np.tanh(g[:, 2 * HIDDEN:3 * HIDDEN])
            h = _sigmoid(g[:, 3 * HIDDEN:]) * np.tanh(c)
            hs[:, step] = h
        states.append(hs)
        out = hs
    return states


def embeddings(last_states: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """Partial embeddings ``(B, 256)`` from the last layer's states: final state, dense, ReLU, L2 norm."""
    e = np.maximum(last_states[:, -1] @ w["linear.weight"].T + w["linear.bias"], 0.0)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def clip_partials(y: np.ndarray) -> np.ndarray:
    """A 16 kHz clip's partial utterances as mel frames ``(P, 160, 40)`` (zero padded as Resemblyzer pads)."""
    y = raise_quiet(np.asarray(y, np.float32))
    slices = partial_slices(y.size)
    need = slices[-1].stop * HOP
    if need >= y.size:
        y = np.pad(y, (0, need - y.size))
    mel = mel_frames(y)
    return np.stack([mel[s] for s in slices])


def clip_vectors(waves: list[np.ndarray], w: dict[str, np.ndarray] | None = None,
                 batch: int = 256) -> np.ndarray:
    """:func:`clip_vector` of several clips ``(N, 768)``, their partials run through the LSTM together."""
    w = load_weights() if w is None else w
    parts = [clip_partials(y) for y in waves]
    owner = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    stacked = np.concatenate(parts) if parts else np.zeros((0, PARTIAL_FRAMES, N_MELS), np.float32)
    emb = np.empty((len(stacked), HIDDEN), np.float32)
    mean = np.empty_like(emb)
    sq = np.empty_like(emb)
    for a in range(0, len(stacked), batch):
        last = lstm_states(stacked[a:a + batch], w)[-1]
        emb[a:a + batch] = embeddings(last, w)
        mean[a:a + batch] = last.mean(axis=1)
        sq[a:a + batch] = np.square(last).mean(axis=1)
    out = np.empty((len(parts), VECTOR_SIZE), np.float32)
    for n in range(len(parts)):
        rows = owner == n
        e = emb[rows].mean(axis=0)
        m, s2 = mean[rows].mean(axis=0), sq[rows].mean(axis=0)
        out[n] = np.concatenate([e / max(float(np.linalg.norm(e)), 1e-12), m, np.sqrt(np.maximum(s2 - m * m, 0))])
    return out


def clip_vector(y: np.ndarray, w: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """One 16 kHz clip's summary ``(768,)``: the L2-normed mean of its partials' embeddings (Resemblyzer's
    ``embed_utterance``), then the mean and standard deviation over every frame of every partial of the
    last LSTM layer's hidden states."""
    return clip_vectors([y], w)[0]
