"""Channel shifts: what a browser, a laptop microphone and a room do to a clip.

Small pure functions on mono float32 arrays at a sample rate ``sr``; the
random ones take a numpy ``Generator`` and are deterministic given it. Every
function returns float32 of the input's length.

``SHIFTS`` holds the fixed evaluation conditions (measured on test audio by
:mod:`ser_core.robustness`); :func:`random_channel` draws a random chain of the
same effects for training-time augmentation (training split only).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .audio import resample
from .errors import ConfigError

OPUS_RATE = 48000
TELEPHONE_RATE = 8000
TELEPHONE_BAND = (300.0, 3400.0)
BABBLE_TALKERS = 4
DECAY_60DB = 3 * np.log(10)     # amplitude exp(-DECAY_60DB * t / rt60) is 60 dB down at t = rt60


def _f32(y: np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=np.float32).reshape(-1)


def _power(y: np.ndarray) -> float:
    return float(np.mean(np.square(y, dtype=np.float64))) if y.size else 0.0


def opus(y: np.ndarray, sr: int, bitrate: int = 16000) -> np.ndarray:
    """Opus encode/decode round trip (libopus, VoIP mode, as WebRTC sends it) at 48 kHz, back to ``sr``."""
    import av

    y = _f32(y)
    x = resample(y, sr, OPUS_RATE)
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = OPUS_RATE, "mono", "flt", int(bitrate)
    enc.options = {"application": "voip"}
    enc.open()
    pre_skip = int.from_bytes(bytes(enc.extradata)[10:12], "little")   # OpusHead's pre-skip field
    frame = enc.frame_size
    padded = np.concatenate([np.clip(x, -1.0, 1.0), np.zeros((-x.size) % frame + frame, np.float32)])
    packets = []
    for start in range(0, padded.size, frame):
        f = av.AudioFrame.from_ndarray(padded[None, start:start + frame], format="flt", layout="mono")
        f.sample_rate, f.pts = OPUS_RATE, start
        packets.extend(enc.encode(f))
    packets.extend(enc.encode(None))
    dec = av.CodecContext.create("opus", "r")
    dec.sample_rate, dec.layout = OPUS_RATE, "mono"
    out = [f.to_ndarray().astype(np.float32).mean(axis=0) for p in packets for f in dec.decode(p)]
    z = np.concatenate(out)[pre_skip:pre_skip + x.size]
    z = np.pad(z, (0, x.size - z.size))
    return _fit(resample(z, OPUS_RATE, sr), y.size)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to ``n`` samples (resampling round trips can be off by one)."""
    y = _f32(y)
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


def telephone(y: np.ndarray, sr: int) -> np.ndarray:
    """Narrowband telephone channel: 8 kHz sampling and a 300-3400 Hz band-pass, back to ``sr``."""
    from scipy.signal import butter, sosfilt

    y = _f32(y)
    x = resample(y, sr, TELEPHONE_RATE)
    sos = butter(4, TELEPHONE_BAND, btype="bandpass", fs=TELEPHONE_RATE, output="sos")
    x = sosfilt(sos, x).astype(np.float32)
    return _fit(resample(x, TELEPHONE_RATE, sr), y.size)


def gain(y: np.ndarray, db: float) -> np.ndarray:
    """Scale by ``db`` decibels, clipping at +-1 as a real converter would."""
    return np.clip(_f32(y) * np.float32(10 ** (db / 20)), -1.0, 1.0).astype(np.float32)


def _mix_at_snr(y: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``y`` plus ``noise`` scaled so that power(y) / power(noise) is ``snr_db`` (whole-clip powers)."""
    pn = _power(noise)
    if pn <= 0:
        return y
    scale = np.sqrt(_power(y) / (pn * 10 ** (snr_db / 10)))
    return (y + noise * scale).astype(np.float32)


def white_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise at ``snr_db`` relative to the whole clip's power."""
    y = _f32(y)
    return _mix_at_snr(y, rng.standard_normal(y.size).astype(np.float32), snr_db)


def babble(y: np.ndarray, snr_db: float, others: Sequence[np.ndarray], rng: np.random.Generator,
           talkers: int = BABBLE_TALKERS) -> np.ndarray:
    """Several other speakers talking at once (``others``: clips at the same rate), mixed at ``snr_db``."""
    y = _f32(y)
    pool = [o for o in (_f32(o) for o in others) if _power(o) > 0]
    if not pool:
        raise ConfigError("babble noise needs at least one non-silent clip of other speech")
    picks = rng.choice(len(pool), size=min(talkers, len(pool)), replace=False)
    mix = np.zeros(y.size, np.float32)
    for i in picks:
        o = pool[int(i)]
        o = np.roll(np.resize(o, max(y.size, o.size)), int(rng.integers(0, o.size)))[:y.size]
        mix += o / np.float32(np.sqrt(_power(o)) + 1e-12)
    return _mix_at_snr(y, mix, snr_db)


def room_impulse(sr: int, rt60: float, rng: np.random.Generator, drr_db: float = 3.0) -> np.ndarray:
    """Synthetic small-room response: a unit direct path, then exponentially decaying noise.

    The tail starts after a 2-8 ms gap (first reflections), decays 60 dB in
    ``rt60`` seconds and holds ``drr_db`` dB less energy than the direct path.
    """
    n = int(sr * rt60 * 1.2) + 1
    gap = int(sr * rng.uniform(0.002, 0.008))
    t = np.arange(n - gap) / sr
    tail = rng.standard_normal(t.size) * np.exp(-DECAY_60DB * t / rt60)
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail ** 2))
    h = np.zeros(n)
    h[0] = 1.0
    h[gap:] += tail
    return h.astype(np.float32)


def reverb(y: np.ndarray, sr: int, rt60: float = 0.3, rng: np.random.Generator | None = None,
           drr_db: float = 3.0) -> np.ndarray:
    """Convolve with :func:`room_impulse` (seeded by ``rng``, default seed 0), keeping the input's RMS."""
    from scipy.signal import fftconvolve

    y = _f32(y)
    rng = rng if rng is not None else np.random.default_rng(0)
    z = fftconvolve(y, room_impulse(sr, rt60, rng, drr_db))[:y.size]
    pz = _power(z)
    return (z * np.sqrt(_power(y) / pz)).astype(np.float32) if pz > 0 else z.astype(np.float32)


def eq_curve(freqs: np.ndarray, tilt_db_per_octave: float, peak_hz: float, peak_db: float,
             peak_octaves: float, low_cut_hz: float) -> np.ndarray:
    """Gain in dB: a tilt around 1 kHz (capped at +-6 dB), one bell, and a 2nd-order low cut."""
    octaves = np.log2(np.maximum(freqs, 1.0) / 1000.0)
    db = np.clip(tilt_db_per_octave * octaves, -6.0, 6.0)
    db += peak_db * np.exp(-0.5 * (np.log2(np.maximum(freqs, 1.0) / peak_hz) / peak_octaves) ** 2)
    ratio = (np.maximum(freqs, 1e-3) / low_cut_hz) ** 2
    db += 10 * np.log10(ratio ** 2 / (1 + ratio ** 2))
    return db


def eq(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A random gentle microphone response (zero-phase): tilt, one bell of +-6 dB, a low cut at 50-200 Hz."""
    y = _f32(y)
    n = int(2 ** np.ceil(np.log2(y.size + sr // 10)))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    db = eq_curve(freqs, rng.uniform(-1.5, 1.5), float(np.exp(rng.uniform(np.log(300), np.log(5000)))),
                  rng.uniform(-6.0, 6.0), rng.uniform(0.3, 1.0), float(np.exp(rng.uniform(np.log(50), np.log(200)))))
    z = np.fft.irfft(np.fft.rfft(y, n) * 10 ** (db / 20), n)[:y.size]
    return z.astype(np.float32)


ShiftFn = Callable[[np.ndarray, int, np.random.Generator, Sequence[np.ndarray]], np.ndarray]

SHIFTS: dict[str, ShiftFn] = {
    "opus16k": lambda y, sr, rng, others: opus(y, sr, 16000),
    "telephone": lambda y, sr, rng, others: telephone(y, sr),
    "gain-20db": lambda y, sr, rng, others: gain(y, -20.0),
    "gain+10db": lambda y, sr, rng, others: gain(y, 10.0),
    "white10db": lambda y, sr, rng, others: white_noise(y, 10.0, rng),
    "babble10db": lambda y, sr, rng, others: babble(y, 10.0, others, rng),
    "reverb": lambda y, sr, rng, others: reverb(y, sr, 0.3, rng),
}
#: each shift as a sentence names it (model cards)
SHIFT_NAMES = {"opus16k": "Opus at 16 kbit/s", "telephone": "the telephone band", "gain-20db": "20 dB quieter",
               "gain+10db": "10 dB louder", "white10db": "white noise at 10 dB", "babble10db": "babble at 10 dB",
               "reverb": "reverberation"}


@dataclass(frozen=True)
class ChannelProfile:
    """How often and how loud background noise is in :func:`random_channel`'s chain.

    ``babble_pool``: how many training clips the babble talkers are drawn from.
    """

    p_noise: float
    babble_share: float
    snr_db: tuple[float, float]
    babble_pool: int

    @property
    def summary(self) -> str:
        """E.g. "noise in 70 % of copies, 0-25 dB SNR", for help texts and labels."""
        lo, hi = self.snr_db
        return f"noise in {self.p_noise:.0%} of copies, {lo:g}-{hi:g} dB SNR".replace("%", " %")


CHANNEL_PROFILES: dict[str, ChannelProfile] = {
    # the first chain: noise in 40 % of copies, half of it babble, 5-30 dB
    "v1": ChannelProfile(p_noise=0.4, babble_share=0.5, snr_db=(5.0, 30.0), babble_pool=8),
    # noisier rooms: noise in 70 % of copies, mostly other talkers, 0-25 dB, more talkers to draw from
    "noisy": ChannelProfile(p_noise=0.7, babble_share=0.6, snr_db=(0.0, 25.0), babble_pool=32),
    # a crowded room: other talkers in every copy, 5-15 dB (around the babble shift's 10 dB; session 34's WUB)
    "babble": ChannelProfile(p_noise=1.0, babble_share=1.0, snr_db=(5.0, 15.0), babble_pool=32),
}


def profiles_help() -> str:
    """Every profile with its summary, for the CLI's and the app's help texts."""
    return "; ".join(f"{name}: {prof.summary}" for name, prof in CHANNEL_PROFILES.items())


def channel_profile(name: str) -> ChannelProfile:
    """The named profile, or a ConfigError listing the known ones."""
    try:
        return CHANNEL_PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown channel profile {name!r}; choose one of {', '.join(CHANNEL_PROFILES)}") from None


def random_channel(y: np.ndarray, sr: int, rng: np.random.Generator,
                   others: Sequence[np.ndarray] | None = None, profile: str = "v1") -> np.ndarray:
    """A random recording chain for training augmentation: room, noise, microphone, level, codec.

    Each stage is applied with some probability, in the order sound meets
    them: reverb (rt60 0.15-0.6 s), background noise (babble when ``others``
    is given, else white; probability and SNR range from ``profile``, see
    :data:`CHANNEL_PROFILES`), microphone EQ, gain (-25..+10 dB, clipping),
    then a codec (Opus 12-32 kbit/s or the telephone band).
    """
    prof = channel_profile(profile)
    y = _f32(y)
    if rng.random() < 0.4:
        y = reverb(y, sr, rng.uniform(0.15, 0.6), rng, drr_db=rng.uniform(0.0, 8.0))
    if rng.random() < prof.p_noise:
        snr = rng.uniform(*prof.snr_db)
        use_babble = others is not None and len(others) > 0 and rng.random() < prof.babble_share
        y = babble(y, snr, others, rng) if use_babble else white_noise(y, snr, rng)
    if rng.random() < 0.5:
        y = eq(y, sr, rng)
    if rng.random() < 0.5:
        y = gain(y, rng.uniform(-25.0, 10.0))
    codec = rng.random()
    if codec < 0.3:
        y = opus(y, sr, int(rng.choice([12000, 16000, 24000, 32000])))
    elif codec < 0.4:
        y = telephone(y, sr)
    return y
