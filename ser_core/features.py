"""Feature extraction: waveform -> model input, every kind from a single STFT.

Small pure functions on numpy arrays. The building blocks take one clip's
spectrogram ``(F, T)`` or a batch ``(..., F, T)``; per-clip quantities (dB
reference, top-dB clipping, chroma tuning) are computed per clip, so a clip's
features never depend on what else is in its batch.

Kinds (``FeatureConfig.kind``):

* ``seed000``  – (32, T, 2): mel(32) dB | MFCC(13)+chroma(12)+contrast(7)
* ``logmel``   – (n_mels, T, 1 or 3): log-mel dB, optional deltas
* ``mfcc_seq`` – (n_mfcc, T, 1 or 3): MFCC sequence, optional deltas
* ``image``    – (size, size, 3): log-mel picture coloured with viridis
* ``stats``    – (D,): per-clip mean and std of MFCC, chroma, contrast,
  tonnetz, ZCR and RMS

The values reproduce librosa's functions (``melspectrogram``, ``mfcc``,
``chroma_stft``, ``spectral_contrast``, ``delta``, ``tonnetz``,
``zero_crossing_rate``) within :data:`TOLERANCE`, but librosa is never
imported here: its filterbanks are rebuilt with numpy (its import alone takes
seconds), one float32 STFT serves every kind, mel filterbanks are applied as
sparse matrices, and linear maps along time (deltas, resizing) are
precomputed matrices. The first extraction limits BLAS to one thread for the
whole process: every product here is tiny, and a second BLAS thread costs more
than it saves (and stalls badly when other work shares the cores).
"""
from __future__ import annotations

import math
from functools import lru_cache, wraps

import numpy as np
import scipy.fft

from .audio import fix_length, normalise_loudness, trim_bounds
from .config import FeatureConfig

AMIN = 1e-10
TOP_DB = 80.0
CONTRAST_BANDS = 6
CONTRAST_FMIN = 200.0
CONTRAST_QUANTILE = 0.02
TUNING_FMIN, TUNING_FMAX, TUNING_THRESHOLD, TUNING_RESOLUTION = 150.0, 4000.0, 0.1, 0.01
ZCR_THRESHOLD = 1e-10

#: Largest absolute difference allowed between this module and librosa's own
#: functions on the same signal, per block (dB for mel and contrast). One
#: float32 STFT serves everything here, while librosa transforms in float64:
#: quiet bins move by about 1e-7 of the frame's peak, which shifts the mel dB
#: by ~1e-4, the MFCC (values up to ~700) by ~2e-3, and the contrast valleys of
#: near-silent frames by up to ~0.4 dB. The chroma figure holds at the same
#: tuning: librosa's tuning estimate is an argmax over a 0.01-bin histogram
#: that near-ties make sensitive to that rounding, so on a few percent of
#: RAVDESS clips (11 of 360 checked) it lands in another cell; given the same
#: spectrogram it is exact. The feature test and ``python -m ser_app.bench``
#: both check these numbers.
TOLERANCE = {"mel_db": 0.01, "mfcc": 0.01, "chroma": 1e-4, "contrast": 0.5, "delta": 1e-3, "tonnetz": 1e-5,
             "zcr": 1e-6}

_blas_limited = False


def limit_blas_threads() -> None:
    """Use one BLAS thread in this process (the products here are far too small to share)."""
    global _blas_limited
    if not _blas_limited:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
        _blas_limited = True


def _per_clip(fn):
    """Let a one-clip function ``(F, T) -> array`` accept leading batch axes."""
    @wraps(fn)
    def wrapper(x, *args, **kwargs):
        x = np.asarray(x)
        if x.ndim <= 2:
            return fn(x, *args, **kwargs)
        flat = x.reshape(-1, *x.shape[-2:])
        out = np.stack([fn(clip, *args, **kwargs) for clip in flat])
        return out.reshape(*x.shape[:-2], *out.shape[1:])
    return wrapper


# --------------------------------------------------------------------------- filterbanks (librosa's, in numpy)
_MEL_SP = 200.0 / 3                     # Hz per mel below 1 kHz (Slaney)
_MEL_LOG_HZ, _MEL_LOG_STEP = 1000.0, np.log(6.4) / 27.0
_MEL_LOG_MEL = _MEL_LOG_HZ / _MEL_SP


def hz_to_mel(f):
    """Slaney mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asanyarray(f, dtype=np.float64)
    log = _MEL_LOG_MEL + np.log(np.maximum(f, _MEL_LOG_HZ) / _MEL_LOG_HZ) / _MEL_LOG_STEP
    return np.where(f >= _MEL_LOG_HZ, log, f / _MEL_SP)


def mel_to_hz(m):
    m = np.asanyarray(m, dtype=np.float64)
    return np.where(m >= _MEL_LOG_MEL, _MEL_LOG_HZ * np.exp(_MEL_LOG_STEP * (m - _MEL_LOG_MEL)), _MEL_SP * m)


def mel_frequencies(n_mels: int, fmin: float = 0.0, fmax: float = 11025.0) -> np.ndarray:
    """Centre frequencies of ``n_mels`` bands evenly spaced on the mel scale (``librosa.mel_frequencies``)."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels))


@lru_cache(maxsize=16)
def hann_window(n_fft: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


@lru_cache(maxsize=32)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``librosa.filters.mel`` (Slaney scale and area normalisation), float32 ``(n_mels, 1 + n_fft/2)``."""
    fmax = float(sr) / 2 if fmax is None else fmax
    mel_f = mel_frequencies(n_mels + 2, fmin, fmax)
    ramps = np.subtract.outer(mel_f, np.fft.rfftfreq(n_fft, 1.0 / sr))
    fdiff = np.diff(mel_f)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)).astype(np.float32)
    enorm = 2.0 / (mel_f[2:] - mel_f[:-2])
    return (weights * enorm[:, None]).astype(np.float32)


@lru_cache(maxsize=32)
def _mel_sparse(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None):
    """The mel filterbank as a CSR matrix: each FFT bin feeds at most two bands."""
    import scipy.sparse

    return scipy.sparse.csr_matrix(mel_filterbank(sr, n_fft, n_mels, fmin, fmax))


@lru_cache(maxsize=256)
def chroma_filterbank(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    """``librosa.filters.chroma`` (12 classes starting at C, Gaussian octave weighting), float32."""
    n_chroma, ctroct, octwidth = 12, 5.0, 2.0
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    freqs = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    frqbins = n_chroma * np.log2(freqs / (a440 / 16))
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidth = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    d = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(float(n_chroma) / 2)
    d = np.remainder(d + half + 10 * n_chroma, n_chroma) - half
    wts = np.exp(-0.5 * (2 * d / np.tile(binwidth, (n_chroma, 1))) ** 2)
    length = np.sqrt(np.sum(wts ** 2, axis=0, keepdims=True))
    wts = wts / np.where(length < np.finfo(np.float64).tiny, 1.0, length)
    wts *= np.tile(np.exp(-0.5 * ((frqbins / n_chroma - ctroct) / octwidth) ** 2), (n_chroma, 1))
    wts = np.roll(wts, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(wts[:, : int(1 + n_fft / 2)], dtype=np.float32)


@lru_cache(maxsize=8)
def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II rows, as ``scipy.fft.dct(..., norm='ortho')`` applies them."""
    return scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc].astype(np.float32)


@lru_cache(maxsize=8)
def contrast_bands(sr: int, n_fft: int) -> tuple[tuple[int, int, int], ...]:
    """librosa.feature.spectral_contrast's octave bands as (first bin, end bin, quantile count)."""
    freq = np.fft.rfftfreq(n_fft, 1.0 / sr)
    octa = np.zeros(CONTRAST_BANDS + 2)
    octa[1:] = CONTRAST_FMIN * (2.0 ** np.arange(0, CONTRAST_BANDS + 1))
    bands = []
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:])):
        idx = np.flatnonzero((freq >= f_low) & (freq <= f_high))
        lo = int(idx[0]) - (1 if k > 0 else 0)
        hi = len(freq) if k == CONTRAST_BANDS else int(idx[-1]) + 1
        n = max(int(np.rint(CONTRAST_QUANTILE * (hi - lo))), 1)
        bands.append((lo, hi if k == CONTRAST_BANDS else hi - 1, n))  # inner bands drop their top bin
    return tuple(bands)


@lru_cache(maxsize=16)
def delta_matrix(n_frames: int, order: int, width: int = 9) -> np.ndarray:
    """``librosa.feature.delta`` as a matrix: ``delta(x) == x @ M`` (Savitzky-Golay, 'interp' edges).

    Output frame t is the ``order``-th derivative of the least-squares
    polynomial of degree ``order`` through the ``width`` frames around t (the
    first or last ``width`` frames near the edges).
    """
    if width < 3 or width % 2 == 0:
        raise ValueError("delta width must be an odd integer >= 3")
    if n_frames < width:
        raise ValueError(f"deltas need at least {width} frames, got {n_frames}")
    pos = np.arange(width, dtype=np.float64)
    fit = np.linalg.pinv(np.vander(pos, order + 1, increasing=True))  # samples -> polynomial coefficients
    m = np.zeros((n_frames, n_frames))
    for t in range(n_frames):
        start = min(max(t - width // 2, 0), n_frames - width)
        p = t - start
        powers = np.arange(order + 1)
        deriv = np.array([math.perm(k, order) * p ** (k - order) if k >= order else 0.0 for k in powers])
        m[start:start + width, t] = deriv @ fit
    return m.astype(np.float32)


@lru_cache(maxsize=8)
def resize_matrix(n_src: int, n_dst: int) -> np.ndarray:
    """Linear interpolation along time as a matrix (``np.interp`` on an even grid)."""
    src, dst = np.linspace(0, 1, n_src), np.linspace(0, 1, n_dst)
    return np.stack([np.interp(dst, src, row) for row in np.eye(n_src)])


@lru_cache(maxsize=1)
def _tonnetz_basis() -> np.ndarray:
    """librosa.feature.tonnetz's projection: fifths, minor and major thirds as (sin, cos) pairs."""
    scale = np.asarray([7.0 / 6, 7.0 / 6, 3.0 / 2, 3.0 / 2, 2.0 / 3, 2.0 / 3])
    v = np.multiply.outer(scale, np.linspace(0, 12, num=12, endpoint=False))
    v[::2] -= 0.5
    return np.array([1, 1, 1, 1, 0.5, 0.5])[:, None] * np.cos(np.pi * v)


# --------------------------------------------------------------------------- building blocks
def stft_magnitude(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """|STFT| like ``librosa.stft`` (centred, zero padded, periodic Hann): ``(..., 1 + n_fft/2, T)`` float32."""
    y = np.asarray(y, dtype=np.float32)
    padded = np.zeros((*y.shape[:-1], y.shape[-1] + n_fft), np.float32)
    padded[..., n_fft // 2: n_fft // 2 + y.shape[-1]] = y
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop_length, :]
    spec = scipy.fft.rfft((frames * hann_window(n_fft)).swapaxes(-1, -2), axis=-2, workers=1, overwrite_x=True)
    return np.abs(spec)


def power_to_db(s: np.ndarray, ref: str | float = 1.0, top_db: float | None = TOP_DB) -> np.ndarray:
    """``librosa.power_to_db`` applied per clip (the last two axes are one clip), in the input's precision."""
    s = np.asarray(s)
    log = 10.0 * np.log10(np.maximum(AMIN, s))
    if ref == "max":
        log -= 10.0 * np.log10(np.maximum(AMIN, s.max(axis=(-2, -1), keepdims=True)))
    elif ref != 1.0:
        log -= 10.0 * np.log10(max(AMIN, float(ref)))
    if top_db is not None:
        log = np.maximum(log, log.max(axis=(-2, -1), keepdims=True) - top_db)
    return log


@_per_clip
def mel_power(power: np.ndarray, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
              fmax: float | None = None) -> np.ndarray:
    """Mel-band power ``(n_mels, T)`` from a power spectrogram (``librosa.feature.melspectrogram``)."""
    return _mel_sparse(sr, n_fft, n_mels, fmin, fmax) @ power


def mfcc(power: np.ndarray, sr: int, n_fft: int, n_mfcc: int = 13, n_mels: int = 128) -> np.ndarray:
    """``librosa.feature.mfcc`` from a power spectrogram."""
    return dct_matrix(n_mfcc, n_mels) @ power_to_db(mel_power(power, sr, n_fft, n_mels))


@lru_cache(maxsize=8)
def _tuning_bins(sr: int, n_fft: int) -> tuple[int, int]:
    """First and end FFT bin inside piptrack's [150, 4000) Hz range."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    inside = np.flatnonzero((TUNING_FMIN <= freqs) & (freqs < min(TUNING_FMAX, sr / 2)))
    return int(inside[0]), int(inside[-1]) + 1


@lru_cache(maxsize=1)
def _tuning_edges() -> np.ndarray:
    """The tuning histogram's cell edges (read-only: one array serves every clip)."""
    edges = np.linspace(-0.5, 0.5, int(np.ceil(1.0 / TUNING_RESOLUTION)) + 1)
    edges.flags.writeable = False
    return edges


def estimate_tuning(power: np.ndarray, sr: int, n_fft: int) -> float:
    """``librosa.estimate_tuning(S=power, bins_per_octave=12)`` for one clip ``(F, T)``.

    The same piptrack peaks, parabolic shifts, median threshold and 0.01-bin
    histogram, with librosa's float32/float64 arithmetic, but the shifts are
    computed only at the peaks, and only on bins inside ``[150, 4000) Hz``
    (all interior bins, so neighbours always exist).
    """
    lo, hi = _tuning_bins(sr, n_fft)
    centre, prev, nxt = power[lo:hi], power[lo - 1:hi - 1], power[lo + 1:hi + 1]
    ref = TUNING_THRESHOLD * power.max(axis=0)
    # piptrack's local maximum of S * (S > ref): with centre > ref, neighbours under ref never win
    mask = centre > ref
    mask &= centre > prev
    mask &= centre >= nxt
    # flat indices into the rows lo-1 .. hi (one flat lookup each, in np.nonzero's order)
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return 0.0
    n_frames = power.shape[-1]
    f_idx = flat // n_frames
    rows = power.reshape(-1)
    at = flat + lo * n_frames
    c, p, n = rows[at], rows[at - n_frames], rows[at + n_frames]
    curvature = (n + p).astype(np.float64) - 2 * c.astype(np.float64)
    slope = (n - p).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(slope) >= np.abs(curvature), 0.0, -slope / curvature).astype(np.float32)
    pitches = ((f_idx + lo + shift) * float(sr) / n_fft).astype(np.float32)
    mags = c + np.float32(0.5) * ((n - p) / np.float32(2.0)) * shift
    chosen = pitches[mags >= np.median(mags)]
    residual = np.mod(12 * np.log2(chosen / (440.0 / 16)), 1.0)
    residual[residual >= 0.5] -= 1.0
    counts, edges = np.histogram(residual, _tuning_edges())
    return float(edges[np.argmax(counts)])


def _max_normalise(x: np.ndarray, order: float) -> np.ndarray:
    """``librosa.util.normalize(x, norm=order, axis=-2)`` (frames below float32 tiny stay as they are)."""
    mag = np.abs(x).astype(np.float64)
    length = mag.max(axis=-2, keepdims=True) if order == np.inf else mag.sum(axis=-2, keepdims=True)
    return (x / np.where(length < np.finfo(x.dtype).tiny, 1.0, length)).astype(x.dtype)


@_per_clip
def chroma(power: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    """``librosa.feature.chroma_stft`` (tuning estimated per clip, max-normalised frames)."""
    tuning = round(estimate_tuning(power, sr, n_fft), 2)
    return _max_normalise(chroma_filterbank(sr, n_fft, tuning) @ power, np.inf)


@_per_clip
def spectral_contrast(mag: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    """``librosa.feature.spectral_contrast`` (6 bands + 1) from a magnitude spectrogram ``(F, T)``."""
    bands = contrast_bands(sr, n_fft)
    peak = np.empty((len(bands), mag.shape[-1]))
    valley = np.empty_like(peak)
    for k, (lo, hi, n) in enumerate(bands):
        band = mag[lo:hi]
        if n == 1:
            valley[k], peak[k] = band.min(axis=0), band.max(axis=0)
        else:
            ordered = np.ascontiguousarray(band.T)
            ordered.sort(axis=-1)
            # np.mean's float32 sum and division, without its per-call overhead (seven bands a window)
            valley[k], peak[k] = np.add.reduce(ordered[:, :n], axis=-1) / n, np.add.reduce(ordered[:, -n:], axis=-1) / n
    return (power_to_db(peak) - power_to_db(valley)).astype(np.float32)


def _mean_over_bins(power: np.ndarray) -> np.ndarray:
    """``np.mean(power, axis=-2, keepdims=True)`` for float32: the same sum (row after row) and division,
    without ``np.mean``'s own work, which is half its cost on one window."""
    return np.add.reduce(power, axis=-2, keepdims=True) / np.float32(power.shape[-2])


def delta(x: np.ndarray, order: int = 1, width: int = 9) -> np.ndarray:
    """``librosa.feature.delta`` along time (the last axis)."""
    return x.astype(np.float32, copy=False) @ delta_matrix(x.shape[-1], order, width)


def tonnetz_from_chroma(ch: np.ndarray) -> np.ndarray:
    """``librosa.feature.tonnetz(chroma=ch)``: (..., 6, T)."""
    return (_tonnetz_basis() @ _max_normalise(ch, 1)).astype(np.float32)


def zero_crossing_rate(y: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """``librosa.feature.zero_crossing_rate`` (centred, edge padded): (..., 1, T)."""
    y = np.asarray(y)
    half, n = frame // 2, y.shape[-1]
    negative = y < -ZCR_THRESHOLD      # librosa zeroes |y| <= threshold, then compares sign bits
    starts = np.arange(0, n + 2 * half - frame + 1, hop)
    if frame % hop == 0 and starts.size:
        return (_zcr_counts_by_hop(negative, half, frame, hop, starts.size) / frame).astype(np.float32)[..., None, :]
    # Sign changes along the edge-padded signal, counted up to each sample: the padding repeats the end
    # samples, which never change sign, so only the signal's own changes are written (int32 and no
    # padded copy: the same counts as padding and summing in int64, at a third of the cost).
    change = np.zeros((*y.shape[:-1], n + 2 * half), np.int32)
    np.not_equal(negative[..., 1:], negative[..., :-1], out=change[..., half + 1:half + n])
    crossings = np.cumsum(change, axis=-1, dtype=np.int32, out=change)
    counts = crossings[..., starts + frame - 1] - crossings[..., starts]
    return (counts / frame).astype(np.float32)[..., None, :]


def _zcr_counts_by_hop(negative: np.ndarray, half: int, frame: int, hop: int, m: int) -> np.ndarray:
    """Sign changes inside each of the ``m`` frames of the edge-padded signal when ``hop`` divides ``frame``:
    the changes are counted once per hop-long block (``count_nonzero`` of booleans), and a frame's count is
    its blocks' sum less the change at its end. The same integers as the running count, at a quarter of
    the cost (a running count reads and writes an int32 for every sample)."""
    n, per = negative.shape[-1], frame // hop
    blocks = m + per - 1
    # change[i]: padded sample i differs in sign from sample i - 1 (never inside the padding, which repeats
    # the end samples); frame k counts the changes at k * hop + 1 ... k * hop + frame - 1
    change = np.zeros((*negative.shape[:-1], blocks * hop + 1), bool)
    hi = min(half + n, change.shape[-1])           # changes past the last frame's end are counted by none
    if hi > half + 1:
        np.not_equal(negative[..., 1:hi - half], negative[..., :hi - half - 1], out=change[..., half + 1:hi])
    per_block = np.count_nonzero(change[..., 1:].reshape(*change.shape[:-1], blocks, hop), axis=-1)
    counts = per_block[..., :m].copy()
    for j in range(1, per):
        counts += per_block[..., j:j + m]
    return counts - change[..., frame::hop][..., :m]


#: The ten anchor colours of the viridis map, frozen here (they are plotly's
#: ``sequential.Viridis`` of 2026, the table ``seed003_image_cnn`` models were trained on):
#: a plotting library's upgrade must never change what a shipped model sees.
VIRIDIS_ANCHORS: tuple[str, ...] = (
    "#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725",
)


@lru_cache(maxsize=1)
def _viridis_lut() -> np.ndarray:
    """256 RGB colours in [0, 1], linearly interpolated between :data:`VIRIDIS_ANCHORS`."""
    anchors = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in VIRIDIS_ANCHORS], dtype=np.float32) / 255.0
    pos = np.linspace(0, 1, len(anchors))
    grid = np.linspace(0, 1, 256)
    return np.stack([np.interp(grid, pos, anchors[:, k]) for k in range(3)], axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- kinds
def condition(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Whole-signal conditioning the config asks for: silence trim, loudness normalisation."""
    return condition_span(y, cfg)[0]


def condition_span(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, int]:
    """:func:`condition` and the sample of ``y`` where the conditioned signal starts (after
    the silence trim), so windows of the conditioned signal can be placed on the recording."""
    y = np.asarray(y, dtype=np.float32)
    start = 0
    if cfg.trim_silence:
        start, end = trim_bounds(y, cfg.trim_top_db)
        y = y[start:end]
    if cfg.loudness_norm:
        y = normalise_loudness(y)
    return y, start


def prepare(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Conditioned and cut or padded to the model's fixed duration."""
    return fix_length(condition(y, cfg), cfg.n_samples)


def _stack_deltas(x: np.ndarray, deltas: bool) -> np.ndarray:
    chans = [x] + ([delta(x, 1), delta(x, 2)] if deltas else [])
    return np.stack(chans, axis=-1)


def _mel_db(power: np.ndarray, cfg: FeatureConfig, n_mels: int) -> np.ndarray:
    return power_to_db(mel_power(power, cfg.sample_rate, cfg.n_fft, n_mels, cfg.fmin, cfg.fmax), ref="max")


def band_normalise(x: np.ndarray) -> np.ndarray:
    """Subtract every band's mean over the frames with sound: log-mel dB ``(bands, T)`` -> ``(bands, T)``.

    Frames where every band sits at the clip's floor (``top_db`` below its peak: padding, digital
    silence) are left out of the mean, so a short clip padded to the model's length is normalised like the same clip unpadded.
    """
    sound = sound_frames(x)
    mean = x[:, sound].mean(axis=1, keepdims=True) if sound.any() else x.mean(axis=1, keepdims=True)
    return (x - mean).astype(np.float32, copy=False)


def sound_frames(x: np.ndarray) -> np.ndarray:
    """Which frames of a clip's log-mel dB ``(bands, T)`` hold sound: not every band at the clip's floor
    (``top_db`` below its peak), as padding and digital silence are. Returns ``(T,)`` bool."""
    return (x > x.min() + 1e-3).any(axis=0)


# The fields that decide a config's conditioning, windows and STFT: configs that agree on them can
# share all three (an ensemble's members of different kinds, e.g. 64 and 128 mel bands).
FRONT_END = ("sample_rate", "duration", "n_fft", "hop_length", "trim_silence", "trim_top_db", "loudness_norm")


def front_end(cfg: FeatureConfig) -> tuple:
    """The values of :data:`FRONT_END` of a config: equal for configs that can share a front end."""
    return tuple(getattr(cfg, name) for name in FRONT_END)


def _one_clip(y: np.ndarray, cfg: FeatureConfig, mag: np.ndarray | None = None) -> np.ndarray:
    sr, n_fft = cfg.sample_rate, cfg.n_fft
    mag = stft_magnitude(y, n_fft, cfg.hop_length) if mag is None else mag
    power = mag ** 2
    if cfg.kind == "seed000":
        out = np.empty((cfg.n_mels, power.shape[-1], 2), np.float32)
        out[..., 0] = _mel_db(power, cfg, cfg.n_mels)
        rows = np.concatenate([mfcc(power, sr, n_fft, cfg.n_mfcc), chroma(power, sr, n_fft),
                               spectral_contrast(mag, sr, n_fft)])
        out[..., 1] = rows
        return out
    if cfg.kind == "logmel":
        x = _mel_db(power, cfg, cfg.n_mels)
        return _stack_deltas(band_normalise(x) if cfg.band_norm else x, cfg.deltas)
    if cfg.kind == "mfcc_seq":
        return _stack_deltas(mfcc(power, sr, n_fft, cfg.n_mfcc, max(cfg.n_mels, cfg.n_mfcc)), cfg.deltas)
    if cfg.kind == "image":
        scaled = np.clip((_mel_db(power, cfg, cfg.image_size) + TOP_DB) / TOP_DB, 0.0, 1.0)[::-1]
        idx = np.round(scaled @ resize_matrix(scaled.shape[-1], cfg.image_size) * 255).astype(np.int32)
        return np.take(_viridis_lut(), idx, axis=0)       # lut[idx], three times faster
    if cfg.kind == "stats":
        ch = chroma(power, sr, n_fft)
        frames = [mfcc(power, sr, n_fft, cfg.n_mfcc, max(cfg.n_mels, cfg.n_mfcc)), ch,
                  spectral_contrast(mag, sr, n_fft), tonnetz_from_chroma(ch),
                  zero_crossing_rate(y, n_fft, cfg.hop_length),
                  np.sqrt(_mean_over_bins(power) * 2 / n_fft)]
        stacked = np.concatenate(frames, axis=-2)
        return np.concatenate([stacked.mean(axis=-1), stacked.std(axis=-1)], axis=-1).astype(np.float32)
    raise ValueError(f"unknown feature kind {cfg.kind!r}")


def from_waveform(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Features of fixed-length waveforms ``(..., n_samples)`` -> ``(..., *input_shape(cfg))``."""
    limit_blas_threads()
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        return _one_clip(y, cfg)
    flat = y.reshape(-1, y.shape[-1])
    out = np.stack([_one_clip(clip, cfg) for clip in flat]) if len(flat) else np.zeros((0, *input_shape(cfg)))
    return out.reshape(*y.shape[:-1], *out.shape[1:]).astype(np.float32, copy=False)


def from_waveform_shared(y: np.ndarray, cfgs: list[FeatureConfig]) -> list[np.ndarray]:
    """:func:`from_waveform` of one fixed-length waveform ``(n_samples,)`` for several configs with one
    :func:`front_end`, the STFT computed once: the same arrays as one call per config."""
    if len({front_end(c) for c in cfgs}) != 1:
        raise ValueError("configs with different front ends cannot share an STFT")
    limit_blas_threads()
    y = np.asarray(y, dtype=np.float32)
    mag = stft_magnitude(y, cfgs[0].n_fft, cfgs[0].hop_length)
    return [_one_clip(y, cfg, mag).astype(np.float32, copy=False) for cfg in cfgs]


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
