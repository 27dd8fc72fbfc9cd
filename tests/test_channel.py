"""Channel shifts: each changes the signal in the way it claims, deterministically."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core import audio, channel
from ser_core.errors import ConfigError

SR = 16000


def _db(a: float, b: float) -> float:
    return 10 * np.log10(a / b)


def _power(y: np.ndarray) -> float:
    return float(np.mean(np.square(y, dtype=np.float64)))


def _band_power(y: np.ndarray, lo: float, hi: float, sr: int = SR) -> float:
    f = np.fft.rfftfreq(y.size, 1 / sr)
    p = np.abs(np.fft.rfft(y)) ** 2
    return float(p[(f >= lo) & (f < hi)].sum())


def _rt60(h: np.ndarray, sr: int = SR) -> float:
    """Reverberation time from Schroeder's backward-integrated decay, fitted between -10 and -30 dB."""
    e = np.cumsum((h.astype(np.float64) ** 2)[::-1])[::-1]
    edc = 10 * np.log10(e / e[0] + 1e-300)
    t = np.arange(edc.size) / sr
    m = (edc < -10) & (edc > -30)
    return -60 / np.polyfit(t[m], edc[m], 1)[0]


@pytest.fixture(scope="module")
def speech(sample_clip) -> np.ndarray:
    return audio.load(sample_clip, sr=SR)


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32)


@pytest.fixture(scope="module")
def others(samples_dir) -> list[np.ndarray]:
    return [audio.load(p, sr=SR) for p in sorted(samples_dir.glob("*-02.flac"))[:5]]


def test_registry_names_and_outputs(speech, others):
    assert list(channel.SHIFTS) == ["opus16k", "telephone", "gain-20db", "gain+10db", "white10db",
                                    "babble10db", "reverb"]
    for name, fn in channel.SHIFTS.items():
        z = fn(speech, SR, np.random.default_rng(0), others)
        assert z.dtype == np.float32 and z.shape == speech.shape, name
        assert np.isfinite(z).all(), name
        assert not np.array_equal(z, speech), name


def test_telephone_keeps_only_the_300_3400_hz_band(noise):
    z = channel.telephone(noise, SR)
    assert z.shape == noise.shape
    assert _db(_band_power(z, 4100, 8000), _band_power(noise, 4100, 8000)) < -40
    assert _db(_band_power(z, 0, 200), _band_power(noise, 0, 200)) < -15
    assert abs(_db(_band_power(z, 500, 3000), _band_power(noise, 500, 3000))) < 1.0


def test_telephone_works_from_other_rates():
    sr = 44100
    x = (0.1 * np.random.default_rng(1).standard_normal(sr)).astype(np.float32)
    z = channel.telephone(x, sr)
    assert z.shape == x.shape
    assert _db(_band_power(z, 4100, 20000, sr), _band_power(x, 4100, 20000, sr)) < -40


def test_opus_round_trip_is_close_but_lossy(speech):
    z = channel.opus(speech, SR, 16000)
    assert z.shape == speech.shape
    assert np.corrcoef(z, speech)[0, 1] > 0.85          # aligned: the codec delay is removed
    assert np.max(np.abs(z - speech)) > 1e-3            # and really coded
    assert abs(_db(_power(z), _power(speech))) < 2.0
    x = audio.resample(speech, SR, 48000)                # the codec's own rate: no resampling around it
    zz = channel.opus(x, 48000, 16000)
    assert zz.shape == x.shape and np.corrcoef(zz, x)[0, 1] > 0.85


def test_opus_bitrate_changes_the_result(speech):
    lo, hi = channel.opus(speech, SR, 8000), channel.opus(speech, SR, 64000)
    err_lo, err_hi = _power(lo - speech), _power(hi - speech)
    assert err_hi < err_lo


def test_gain_scales_rms_by_db_and_clips(speech):
    quiet = speech * np.float32(0.05 / np.abs(speech).max())
    assert _db(_power(channel.gain(quiet, -20.0)), _power(quiet)) == pytest.approx(-20.0, abs=0.01)
    assert _db(_power(channel.gain(quiet, 10.0)), _power(quiet)) == pytest.approx(10.0, abs=0.01)
    loud = channel.gain(speech * np.float32(0.9 / np.abs(speech).max()), 10.0)
    assert np.abs(loud).max() == pytest.approx(1.0)
    assert (np.abs(loud) >= 1.0).sum() > 10                   # flat-topped, as a clipping converter


@pytest.mark.parametrize("snr", [10.0, 0.0, 25.0])
def test_white_noise_hits_the_snr(speech, snr):
    z = channel.white_noise(speech, snr, np.random.default_rng(3))
    assert _db(_power(speech), _power(z - speech)) == pytest.approx(snr, abs=0.5)
    again = channel.white_noise(speech, snr, np.random.default_rng(3))
    assert np.array_equal(z, again)


def test_babble_is_other_speech_at_the_snr(speech, others):
    z = channel.babble(speech, 10.0, others, np.random.default_rng(4))
    assert _db(_power(speech), _power(z - speech)) == pytest.approx(10.0, abs=0.5)


def test_babble_noise_comes_from_the_given_clips(speech):
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    z = channel.babble(speech, 0.0, [tone], np.random.default_rng(5))
    residual = z - speech
    f = np.fft.rfftfreq(residual.size, 1 / SR)
    assert abs(f[np.argmax(np.abs(np.fft.rfft(residual)))] - 440) < 5
    with pytest.raises(ConfigError):
        channel.babble(speech, 10.0, [], np.random.default_rng(0))
    with pytest.raises(ConfigError):
        channel.babble(speech, 10.0, [np.zeros(100, np.float32)], np.random.default_rng(0))


@pytest.mark.parametrize("rt60", [0.3, 0.6])
def test_reverb_decays_at_the_requested_rate(rt60):
    impulse = np.zeros(SR, np.float32)
    impulse[0] = 1.0
    h = channel.reverb(impulse, SR, rt60, np.random.default_rng(6))
    assert _rt60(h) == pytest.approx(rt60, rel=0.15)


def test_reverb_fills_the_silence_after_a_burst_and_keeps_level():
    rng = np.random.default_rng(7)
    y = np.zeros(SR, np.float32)
    y[:2000] = 0.3 * rng.standard_normal(2000)
    z = channel.reverb(y, SR, 0.3, np.random.default_rng(8))
    assert _power(y[2400:4000]) == 0
    tail = _db(_power(z[2400:4000]), _power(z[:2000]))
    assert -40 < tail < -3
    assert _power(z) == pytest.approx(_power(y), rel=1e-3)


def test_eq_is_gentle_and_random(noise):
    outs = [channel.eq(noise, SR, np.random.default_rng(s)) for s in range(6)]
    for z in outs:
        assert z.shape == noise.shape
        for lo, hi in [(300, 600), (600, 1200), (1200, 2400), (2400, 4800)]:
            assert abs(_db(_band_power(z, lo, hi), _band_power(noise, lo, hi))) < 13
    assert not np.allclose(outs[0], outs[1])
    assert np.array_equal(outs[0], channel.eq(noise, SR, np.random.default_rng(0)))


def test_random_channel_is_deterministic_per_seed(speech, others):
    a = channel.random_channel(speech, SR, np.random.default_rng(11), others)
    b = channel.random_channel(speech, SR, np.random.default_rng(11), others)
    assert np.array_equal(a, b)
    outs = [channel.random_channel(speech, SR, np.random.default_rng(s), others) for s in range(8)]
    assert all(o.shape == speech.shape and o.dtype == np.float32 and np.isfinite(o).all() for o in outs)
    distinct = {o.tobytes() for o in outs}
    assert len(distinct) == len(outs)
    assert sum(np.array_equal(o, speech) for o in outs) <= 1          # almost every draw changes the clip


def test_random_channel_without_others_uses_white_noise(speech):
    outs = [channel.random_channel(speech, SR, np.random.default_rng(s)) for s in range(8)]
    assert all(o.shape == speech.shape and np.isfinite(o).all() for o in outs)


def test_channel_profiles_set_how_often_and_how_loud_the_noise_is():
    """A pure tone has no energy at 1.5-3 kHz, so energy there is the chain's added noise."""
    t = np.arange(3 * SR) / SR
    tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    def noise_db(y: np.ndarray) -> float:
        return _db(_band_power(y, 1500, 3000) + 1e-30, _band_power(y, 0, SR / 2))

    levels = {name: np.array([noise_db(channel.random_channel(tone, SR, np.random.default_rng(s), None, name))
                              for s in range(80)])
              for name in ("v1", "noisy", "babble")}
    for name, lv in levels.items():
        assert abs(np.mean(lv > -35) - channel.CHANNEL_PROFILES[name].p_noise) < 0.15
    assert np.mean(levels["noisy"] > -20) > 1.5 * np.mean(levels["v1"] > -20)     # louder noise, more often
    # other talkers in every copy of "babble" (white noise here: no clips given to mix in), never quieter than 15 dB
    assert np.mean(levels["babble"] > -35) == 1.0
    with pytest.raises(ConfigError, match="unknown channel profile"):
        channel.random_channel(tone, SR, np.random.default_rng(0), None, "cafe")
