"""Feature extraction: waveform -> model input, every kind from a single STFT.

Small pure functions on numpy arrays. Every function accepts a leading batch
axis, so a corpus can be processed in blocks; per-clip quantities (dB
reference, top-dB clipping, chroma tuning) are computed per clip, so a clip's
features never depend on what else is in its batch.

Kinds (``FeatureConfig.kind``):

* ``seed000``  – (32, T, 2): mel(32) dB | MFCC(13)+chroma(12)+contrast(7)
* ``logmel``   – (n_mels, T, 1 or 3): log-mel dB, optional deltas
* ``mfcc_seq`` – (n_mfcc, T, 1 or 3): MFCC sequence, optional deltas
* ``image``    – (size, size, 3): log-mel picture coloured with viridis
* ``stats``    – (D,): per-clip mean and std of MFCC, chroma, contrast,
  tonnetz, ZCR and RMS
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft

from .audio import fix_length, normalise_loudness, trim_silence
from .config import FeatureConfig

AMIN = 1e-10
TOP_DB = 80.0
CONTRAST_BANDS = 6
CONTRAST_FMIN = 200.0
CONTRAST_QUANTILE = 0.02


# --------------------------------------------------------------------------- filterbanks
@lru_cache(maxsize=16)
def hann_window(n_fft: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


@lru_cache(maxsize=32)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


@lru_cache(maxsize=256)
def chroma_filterbank(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    import librosa

    return librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning, n_chroma=12).astype(np.float32)


@lru_cache(maxsize=8)
def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II rows, as ``scipy.fft.dct(..., norm='ortho')`` applies them."""
    return scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc].astype(np.float32)


@lru_cache(maxsize=8)
def contrast_bands(sr: int, n_fft: int) -> tuple[tuple[np.ndarray, int, bool], ...]:
    """librosa.feature.spectral_contrast's octave bands: (bin mask, quantile count, drop last bin)."""
    freq = np.fft.rfftfreq(n_fft, 1.0 / sr)
    octa = np.zeros(CONTRAST_BANDS + 2)
    octa[1:] = CONTRAST_FMIN * (2.0 ** np.arange(0, CONTRAST_BANDS + 1))
    bands = []
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:])):
        band = np.logical_and(freq >= f_low, freq <= f_high)
        idx = np.flatnonzero(band)
        if k > 0:
            band[idx[0] - 1] = True
        if k == CONTRAST_BANDS:
            band[idx[-1] + 1:] = True
        n = max(int(np.rint(CONTRAST_QUANTILE * np.sum(band))), 1)
        bands.append((np.flatnonzero(band), n, k < CONTRAST_BANDS))
    return tuple(bands)


# --------------------------------------------------------------------------- building blocks
def stft_magnitude(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """|STFT| like ``librosa.stft`` (centred, zero padded, periodic Hann): (..., 1 + n_fft/2, T)."""
    y = np.asarray(y, dtype=np.float32)
    pad = [(0, 0)] * (y.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    padded = np.pad(y, pad)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop_length, :]
    spec = scipy.fft.rfft(frames * hann_window(n_fft), axis=-1, workers=1)
    return np.abs(spec).swapaxes(-1, -2)


def power_to_db(s: np.ndarray, ref: str | float = 1.0, top_db: float | None = TOP_DB) -> np.ndarray:
    """``librosa.power_to_db`` applied per clip (the last two axes are one clip)."""
    log = 10.0 * np.log10(np.maximum(AMIN, s))
    if ref == "max":
        log -= 10.0 * np.log10(np.maximum(AMIN, s.max(axis=(-2, -1), keepdims=True)))
    elif ref != 1.0:
        log -= 10.0 * np.log10(max(AMIN, float(ref)))
    if top_db is not None:
        log = np.maximum(log, log.max(axis=(-2, -1), keepdims=True) - top_db)
    return log.astype(np.float32)


def mel_power(power: np.ndarray, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
              fmax: float | None = None) -> np.ndarray:
    return mel_filterbank(sr, n_fft, n_mels, fmin, fmax) @ power


def mfcc(power: np.ndarray, sr: int, n_fft: int, n_mfcc: int = 13, n_mels: int = 128) -> np.ndarray:
    """``librosa.feature.mfcc`` from a power spectrogram."""
    return dct_matrix(n_mfcc, n_mels) @ power_to_db(mel_power(power, sr, n_fft, n_mels))


def estimate_tuning(power: np.ndarray, sr: int, n_fft: int, fmin: float = 150.0, fmax: float = 4000.0,
                    resolution: float = 0.01) -> float:
    """``librosa.estimate_tuning(S=power, bins_per_octave=12)`` for one clip.

    Same piptrack peaks and histogram, computed only on the bins inside
    ``[fmin, fmax)`` (all interior bins, so neighbours always exist).
    """
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    idx = np.flatnonzero((fmin <= freqs) & (freqs < min(fmax, sr / 2)))
    centre, prev, nxt = power[idx], power[idx - 1], power[idx + 1]
    ref = 0.1 * power.max(axis=0, keepdims=True)
    peak = (centre > ref) & (centre > prev * (prev > ref)) & (centre >= nxt * (nxt > ref))
    curvature = nxt + prev - 2 * centre
    slope = 0.5 * (nxt - prev)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(slope) >= np.abs(curvature), 0.0, -slope / curvature)
    f_idx, t_idx = np.nonzero(peak)
    if f_idx.size == 0:
        return 0.0
    pitches = (idx[f_idx] + shift[f_idx, t_idx]) * float(sr) / n_fft
    mags = centre[f_idx, t_idx] + 0.5 * slope[f_idx, t_idx] * shift[f_idx, t_idx]
    positive = pitches > 0
    if not positive.any():
        return 0.0
    chosen = pitches[(mags >= np.median(mags[positive])) & positive]
    residual = np.mod(12 * np.log2(chosen / (440.0 / 16)), 1.0)
    residual[residual >= 0.5] -= 1.0
    counts, edges = np.histogram(residual, np.linspace(-0.5, 0.5, int(np.ceil(1.0 / resolution)) + 1))
    return float(edges[np.argmax(counts)])


def chroma(power: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    """``librosa.feature.chroma_stft`` (tuning estimated per clip, max-normalised frames)."""
    if power.ndim > 2:
        return np.stack([chroma(p, sr, n_fft) for p in power])
    tuning = round(estimate_tuning(power, sr, n_fft), 2)
    raw = chroma_filterbank(sr, n_fft, tuning) @ power
    peak = np.abs(raw).max(axis=0, keepdims=True)
    tiny = np.finfo(raw.dtype).tiny
    return np.where(peak < tiny, raw, raw / np.where(peak < tiny, 1, peak)).astype(np.float32)


def spectral_contrast(mag: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    """``librosa.feature.spectral_contrast`` (6 bands + 1) from a magnitude spectrogram."""
    peaks, valleys = [], []
    for idx, n, drop_last in contrast_bands(sr, n_fft):
        ordered = np.sort(mag[..., idx[:-1] if drop_last else idx, :], axis=-2)
        valleys.append(ordered[..., :n, :].mean(axis=-2))
        peaks.append(ordered[..., -n:, :].mean(axis=-2))
    peak = np.stack(peaks, axis=-2)
    valley = np.stack(valleys, axis=-2)
    return (power_to_db(peak) - power_to_db(valley)).astype(np.float32)


def delta(x: np.ndarray, order: int = 1, width: int = 9) -> np.ndarray:
    """``librosa.feature.delta`` along time."""
    import librosa

    return librosa.feature.delta(x, width=width, order=order, axis=-1).astype(np.float32)


def tonnetz_from_chroma(ch: np.ndarray) -> np.ndarray:
    import librosa

    return librosa.feature.tonnetz(chroma=ch).astype(np.float32)


def zero_crossing_rate(y: np.ndarray, frame: int, hop: int) -> np.ndarray:
    import librosa

    return librosa.feature.zero_crossing_rate(y, frame_length=frame, hop_length=hop).astype(np.float32)


@lru_cache(maxsize=1)
def _viridis_lut() -> np.ndarray:
    from plotly.colors import hex_to_rgb, sequential

    anchors = np.array([hex_to_rgb(c) for c in sequential.Viridis], dtype=np.float32) / 255.0
    pos = np.linspace(0, 1, len(anchors))
    grid = np.linspace(0, 1, 256)
    return np.stack([np.interp(grid, pos, anchors[:, k]) for k in range(3)], axis=-1).astype(np.float32)


def _resize_time(x: np.ndarray, n: int) -> np.ndarray:
    src = np.linspace(0, 1, x.shape[-1])
    dst = np.linspace(0, 1, n)
    flat = x.reshape(-1, x.shape[-1])
    return np.stack([np.interp(dst, src, row) for row in flat]).reshape(*x.shape[:-1], n)


# --------------------------------------------------------------------------- kinds
def condition(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Whole-signal conditioning the config asks for: silence trim, loudness normalisation."""
    y = np.asarray(y, dtype=np.float32)
    if cfg.trim_silence:
        y = trim_silence(y, cfg.trim_top_db)
    if cfg.loudness_norm:
        y = normalise_loudness(y)
    return y


def prepare(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Conditioned and cut or padded to the model's fixed duration."""
    return fix_length(condition(y, cfg), cfg.n_samples)


def _stack_deltas(x: np.ndarray, deltas: bool) -> np.ndarray:
    chans = [x] + ([delta(x, 1), delta(x, 2)] if deltas else [])
    return np.stack(chans, axis=-1)


def from_waveform(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Features of fixed-length waveforms ``(..., n_samples)`` -> ``(..., *input_shape(cfg))``."""
    sr, n_fft, hop = cfg.sample_rate, cfg.n_fft, cfg.hop_length
    mag = stft_magnitude(y, n_fft, hop)
    power = mag ** 2
    if cfg.kind == "seed000":
        mel_db = power_to_db(mel_power(power, sr, n_fft, cfg.n_mels, cfg.fmin, cfg.fmax), ref="max")
        stacked = np.concatenate([mfcc(power, sr, n_fft, cfg.n_mfcc), chroma(power, sr, n_fft),
                                  spectral_contrast(mag, sr, n_fft)], axis=-2)
        return np.stack([mel_db, stacked], axis=-1)
    if cfg.kind == "logmel":
        mel_db = power_to_db(mel_power(power, sr, n_fft, cfg.n_mels, cfg.fmin, cfg.fmax), ref="max")
        return _stack_deltas(mel_db, cfg.deltas)
    if cfg.kind == "mfcc_seq":
        return _stack_deltas(mfcc(power, sr, n_fft, cfg.n_mfcc, max(cfg.n_mels, cfg.n_mfcc)), cfg.deltas)
    if cfg.kind == "image":
        mel_db = power_to_db(mel_power(power, sr, n_fft, cfg.image_size, cfg.fmin, cfg.fmax), ref="max")
        scaled = np.clip((mel_db + TOP_DB) / TOP_DB, 0.0, 1.0)[..., ::-1, :]
        idx = np.round(_resize_time(scaled, cfg.image_size) * 255).astype(np.int32)
        return _viridis_lut()[idx]
    if cfg.kind == "stats":
        ch = chroma(power, sr, n_fft)
        frames = [mfcc(power, sr, n_fft, cfg.n_mfcc, max(cfg.n_mels, cfg.n_mfcc)), ch,
                  spectral_contrast(mag, sr, n_fft), tonnetz_from_chroma(ch),
                  zero_crossing_rate(y, n_fft, hop), np.sqrt(np.mean(power, axis=-2, keepdims=True) * 2 / n_fft)]
        stacked = np.concatenate(frames, axis=-2)
        return np.concatenate([stacked.mean(axis=-1), stacked.std(axis=-1)], axis=-1).astype(np.float32)
    raise ValueError(f"unknown feature kind {cfg.kind!r}")


def extract(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Features of one waveform of any length (it is conditioned and cut/padded first)."""
    return from_waveform(prepare(y, cfg), cfg)


def extract_batch(waves: list[np.ndarray], cfg: FeatureConfig) -> np.ndarray:
    """Features of many waveforms (clip by clip: small arrays stay in the CPU cache)."""
    if not waves:
        return np.zeros((0, *input_shape(cfg)), np.float32)
    return np.stack([extract(w, cfg) for w in waves])


def warm_up(cfg: FeatureConfig) -> None:
    """Build every filterbank the config can need, e.g. before forking workers."""
    if cfg.kind in ("seed000", "stats"):
        for tuning in np.linspace(-0.5, 0.5, 101):
            chroma_filterbank(cfg.sample_rate, cfg.n_fft, round(float(tuning), 2))
    extract(np.full(cfg.n_samples, 1e-3, np.float32), cfg)


def input_shape(cfg: FeatureConfig) -> tuple[int, ...]:
    """Shape of one example, without computing it."""
    chans = 3 if cfg.deltas else 1
    t = cfg.n_frames
    return {
        "seed000": (cfg.n_mels, t, 2),
        "logmel": (cfg.n_mels, t, chans),
        "mfcc_seq": (cfg.n_mfcc, t, chans),
        "image": (cfg.image_size, cfg.image_size, 3),
        "stats": (2 * (cfg.n_mfcc + 12 + 7 + 6 + 2),),
    }[cfg.kind]


def norm_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over clips (and time, for 2-D features) of a training set."""
    axes = (0, 2) if x.ndim == 4 else (0,)
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)[0]
    std = x.std(axis=axes, keepdims=True, dtype=np.float64)[0]
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)
