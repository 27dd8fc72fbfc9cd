"""Features equal librosa's own functions (within features.TOLERANCE) and keep their layout.

The fast paths in ser_core.features (one float32 STFT, numpy filterbanks,
sparse mel products, delta and resize matrices) are checked against direct
librosa calls on real clips, so speed work can never silently change what
the models see.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ser_core import audio, features, models
from ser_core.cache import corpus_features
from ser_core.config import FeatureConfig

librosa = pytest.importorskip("librosa")

TOL = features.TOLERANCE
SEED000 = FeatureConfig(kind="seed000")
KINDS = {name: models.get(name).features for name in models.names()}


@pytest.fixture(scope="module")
def clips(samples_dir) -> list:
    """Eight bundled clips (every emotion, two actors), each as the 3 s window the model sees."""
    paths = sorted(samples_dir.glob("*.flac"))[::4]
    assert len(paths) == 8
    return [features.prepare(audio.load(p), SEED000) for p in paths]


def librosa_power(y: np.ndarray, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    return np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop)) ** 2


def test_seed000_channels_equal_the_direct_librosa_calls(clips):
    sr = SEED000.sample_rate
    same_tuning = 0
    for y in clips:
        x = features.from_waveform(y, SEED000)
        assert x.shape == (32, 94, 2) and x.dtype == np.float32
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=32), ref=np.max)
        np.testing.assert_allclose(x[..., 0], mel, rtol=0, atol=TOL["mel_db"])
        np.testing.assert_allclose(x[:13, :, 1], librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13), rtol=0, atol=TOL["mfcc"])
        np.testing.assert_allclose(x[25:, :, 1], librosa.feature.spectral_contrast(y=y, sr=sr), rtol=0,
                                   atol=TOL["contrast"])
        tuning = round(features.estimate_tuning(features.stft_magnitude(y, 2048, 512) ** 2, sr, 2048), 2)
        np.testing.assert_allclose(x[13:25, :, 1], librosa.feature.chroma_stft(y=y, sr=sr, tuning=tuning), rtol=0,
                                   atol=TOL["chroma"])
        if tuning == round(float(librosa.estimate_tuning(S=librosa_power(y), sr=sr)), 2):
            same_tuning += 1
            np.testing.assert_allclose(x[13:25, :, 1], librosa.feature.chroma_stft(y=y, sr=sr), rtol=0,
                                       atol=TOL["chroma"])
    # float32 STFT rounding moves librosa's near-tied tuning histogram on a few percent of clips (see TOLERANCE)
    assert same_tuning >= len(clips) - 1


def test_tuning_estimate_is_librosas_on_the_same_spectrogram(clips):
    for y in clips:
        power = librosa_power(y)
        assert features.estimate_tuning(power, 16000, 2048) == librosa.estimate_tuning(S=power, sr=16000)


def test_filterbanks_are_librosas_bit_for_bit():
    for sr, n_fft, n_mels, fmin, fmax in [(16000, 2048, 32, 0.0, None), (16000, 1024, 64, 0.0, None),
                                          (16000, 2048, 128, 50.0, 7000.0), (22050, 2048, 40, 0.0, None)]:
        np.testing.assert_array_equal(features.mel_filterbank(sr, n_fft, n_mels, fmin, fmax),
                                      librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))
    for tuning in (-0.5, -0.13, 0.0, 0.49):
        np.testing.assert_array_equal(features.chroma_filterbank(16000, 2048, tuning),
                                      librosa.filters.chroma(sr=16000, n_fft=2048, tuning=tuning))
    np.testing.assert_allclose(features.mel_frequencies(66, 0.0, 8000.0),
                               librosa.mel_frequencies(n_mels=66, fmin=0.0, fmax=8000.0), rtol=1e-12)


def test_logmel_with_deltas_is_librosas_melspectrogram_in_db(clips):
    cfg = KINDS["ser_crnn"]
    assert cfg.kind == "logmel" and cfg.deltas
    for y in clips[:3]:
        w = features.prepare(y, cfg)
        x = features.from_waveform(w, cfg)
        assert x.shape == features.input_shape(cfg) == (64, 94, 3)
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=w, sr=16000, n_fft=1024, hop_length=512,
                                                                 n_mels=64), ref=np.max)
        np.testing.assert_allclose(x[..., 0], mel, rtol=0, atol=TOL["mel_db"])
        for order in (1, 2):
            np.testing.assert_allclose(x[..., order], librosa.feature.delta(mel, order=order), rtol=0,
                                       atol=TOL["delta"])


def test_delta_matrix_handles_edges_like_savgol():
    rng = np.random.default_rng(0)
    for frames in (9, 10, 94):
        x = rng.normal(size=(5, frames)).astype(np.float32) * 20
        for order in (1, 2):
            np.testing.assert_allclose(features.delta(x, order), librosa.feature.delta(x, order=order), rtol=0,
                                       atol=TOL["delta"])
    with pytest.raises(ValueError, match="at least 9 frames"):
        features.delta(np.zeros((2, 8), np.float32))


def test_mfcc_sequence_is_librosas_mfcc(clips):
    cfg = KINDS["seed002_cnn_lstm"]
    x = features.from_waveform(clips[0], cfg)
    assert x.shape == features.input_shape(cfg) == (40, 94, 1)
    ref = librosa.feature.mfcc(y=clips[0], sr=16000, n_mfcc=40, n_mels=128)
    np.testing.assert_allclose(x[..., 0], ref, rtol=0, atol=TOL["mfcc"])


def test_stats_vector_is_mean_then_std_of_the_librosa_features(clips):
    cfg = KINDS["seed004_dnn"]
    y = clips[1]
    x = features.from_waveform(y, cfg)
    n = cfg.n_mfcc + 12 + 7 + 6 + 2
    assert x.shape == features.input_shape(cfg) == (2 * n,) and np.isfinite(x).all()
    mean, std = x[:n], x[n:]
    mf = librosa.feature.mfcc(y=y, sr=16000, n_mfcc=cfg.n_mfcc, n_mels=128)
    np.testing.assert_allclose(mean[:cfg.n_mfcc], mf.mean(axis=1), rtol=0, atol=TOL["mfcc"])
    np.testing.assert_allclose(std[:cfg.n_mfcc], mf.std(axis=1), rtol=0, atol=TOL["mfcc"])
    chroma = features.chroma(features.stft_magnitude(y, 2048, 512) ** 2, 16000, 2048)
    np.testing.assert_allclose(mean[cfg.n_mfcc:cfg.n_mfcc + 12], chroma.mean(axis=1), rtol=0, atol=1e-6)
    ton = librosa.feature.tonnetz(chroma=chroma)
    np.testing.assert_allclose(features.tonnetz_from_chroma(chroma), ton, rtol=0, atol=TOL["tonnetz"])
    np.testing.assert_allclose(mean[cfg.n_mfcc + 19:cfg.n_mfcc + 25], ton.mean(axis=1), rtol=0, atol=1e-5)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)
    np.testing.assert_allclose(features.zero_crossing_rate(y, 2048, 512), zcr, rtol=0, atol=TOL["zcr"])
    assert mean[n - 2] == pytest.approx(zcr.mean(), abs=1e-6)
    assert (std >= 0).all() and (mean[cfg.n_mfcc:cfg.n_mfcc + 12] <= 1).all()


def test_viridis_table_is_frozen_in_the_engine():
    """The image members' colour table is pinned: first, middle and last colours and a checksum of all 256."""
    lut = features._viridis_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.float32
    np.testing.assert_allclose(lut[0], np.array([0x44, 0x01, 0x54]) / 255, atol=1e-7)
    np.testing.assert_allclose(lut[-1], np.array([0xfd, 0xe7, 0x25]) / 255, atol=1e-7)
    np.testing.assert_allclose(lut[128], [0.13480969, 0.56664360, 0.54671282], atol=1e-6)
    assert float(lut.sum()) == pytest.approx(332.32141, abs=1e-3)


def test_image_is_a_viridis_picture_of_the_log_mel(clips):
    cfg = KINDS["seed003_image_cnn"]
    x = features.from_waveform(clips[2], cfg)
    assert x.shape == (128, 128, 3) and x.dtype == np.float32
    lut = features._viridis_lut()
    colours = {tuple(c) for c in lut}
    assert {tuple(p) for p in x.reshape(-1, 3)} <= colours         # every pixel is a colour of the map
    assert len({tuple(p) for p in x.reshape(-1, 3)}) > 50           # and the picture is not flat
    rows = np.random.default_rng(1).random((4, 94))
    grid_src, grid_dst = np.linspace(0, 1, 94), np.linspace(0, 1, 128)
    np.testing.assert_allclose(rows @ features.resize_matrix(94, 128),
                               np.stack([np.interp(grid_dst, grid_src, r) for r in rows]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch", sorted(KINDS))
def test_batch_extraction_equals_clip_by_clip(arch, clips):
    cfg = KINDS[arch]
    waves = np.stack([features.prepare(y, cfg) for y in clips[:3]])
    one_by_one = np.stack([features.from_waveform(w, cfg) for w in waves])
    assert one_by_one.shape == (3, *features.input_shape(cfg))
    np.testing.assert_array_equal(features.from_waveform(waves, cfg), one_by_one)
    np.testing.assert_array_equal(features.from_waveform(waves.reshape(1, 3, -1), cfg)[0], one_by_one)
    np.testing.assert_array_equal(features.extract_batch(list(clips[:3]), cfg),
                                  np.stack([features.extract(y, cfg) for y in clips[:3]]))


def test_configs_sharing_a_front_end_get_what_each_gets_alone(clips):
    """One STFT for several kinds (an ensemble's members): the same arrays, bit for bit, as one call each."""
    from conftest import ENSEMBLE_MODEL
    from ser_core.config import ModelSpec
    from ser_core.modeldir import member_dirs

    cfgs = [ModelSpec.load(d / "spec.json").features for d in member_dirs(ENSEMBLE_MODEL)]
    fronts: dict[tuple, list] = {}
    for cfg in cfgs:
        fronts.setdefault(features.front_end(cfg), []).append(cfg)
    assert len(fronts) == 2 and sorted(map(len, fronts.values())) == [2, 3]
    for shared in fronts.values():
        for y in clips[:3]:
            w = features.prepare(y, shared[0])
            for got, cfg in zip(features.from_waveform_shared(w, shared), shared):
                np.testing.assert_array_equal(got, features.from_waveform(w, cfg))
    logmel, image = KINDS["ser_crnn"], KINDS["seed003_image_cnn"]
    with pytest.raises(ValueError, match="different front ends"):
        features.from_waveform_shared(features.prepare(clips[0], logmel), [logmel, image])


@pytest.mark.parametrize("arch", sorted(KINDS))
def test_silence_and_tiny_signals_give_finite_features(arch):
    cfg = KINDS[arch]
    for y in (np.zeros(cfg.n_samples, np.float32), np.full(cfg.n_samples, 1e-9, np.float32)):
        x = features.from_waveform(y, cfg)
        assert x.shape == features.input_shape(cfg) and np.isfinite(x).all()


def test_parallel_corpus_equals_serial_and_the_warm_cache_returns_the_same_arrays(samples_dir, tmp_path):
    paths = [str(p) for p in sorted(samples_dir.glob("*.flac"))]
    for cfg in (SEED000, KINDS["ser_crnn"]):
        parallel = corpus_features(paths, cfg, workers=2, root=tmp_path / "a", progress=False)
        serial = corpus_features(paths, cfg, workers=1, root=tmp_path / "b", progress=False)
        assert parallel.ok.all() and not parallel.errors
        np.testing.assert_array_equal(parallel.x, serial.x)
        np.testing.assert_array_equal(parallel.x[5], features.extract(audio.load(paths[5]), cfg))
        warm = corpus_features(paths, cfg, workers=2, root=tmp_path / "a", progress=False)
        np.testing.assert_array_equal(warm.x, parallel.x)
        other = dataclasses.replace(cfg, hop_length=256)          # another config is another cache entry
        assert corpus_features(paths[:2], other, workers=1, root=tmp_path / "a", progress=False).x.shape[2] == 188


def test_band_norm_removes_a_fixed_channel_tilt_and_ignores_padding(samples_dir):
    """A clip through a fixed filter (a 'microphone') gets nearly the same band-normalised log-mel as the
    clean clip, where the plain log-mel differs by the filter's tilt; padding is not averaged in."""
    base = KINDS["ser_crnn"]
    cfg = dataclasses.replace(base, band_norm=True, trim_silence=False, loudness_norm=False)
    plain = dataclasses.replace(cfg, band_norm=False)
    speech = features.condition(audio.load(sorted(samples_dir.glob("*.flac"))[4]), base)[:28_000]  # 1.75 s
    tilted = np.convolve(speech, [1.0, -0.9])[: len(speech)].astype(np.float32)  # pre-emphasis: a tilt
    x, xt = (features.extract(w, cfg)[..., 0] for w in (speech, tilted))
    p, pt = (features.extract(w, plain)[..., 0] for w in (speech, tilted))
    inside = slice(5, 50)                             # frames well inside the 55 frames of sound
    assert np.abs(pt - p)[:, inside].mean() > 5.0     # the tilt moves the plain features by decibels ...
    assert np.abs(xt - x)[:, inside].mean() < 0.1 * np.abs(pt - p)[:, inside].mean()   # ... not these
    sound = (p > p.min() + 1e-3).any(axis=0)
    assert 55 <= sound.sum() <= 58 and not sound[60:].any()          # 1.75 s of sound, then padding
    assert np.allclose(x[:, sound].mean(axis=1), 0.0, atol=1e-3)     # every band's mean over sound is 0
    assert np.allclose(x[:, 60:], x[:, -1:])                         # and the padding frames are all alike


@pytest.mark.parametrize("settings, message", [
    ({"kind": "seed000", "n_mels": 64}, "n_mels must be n_mfcc + 19 = 32"),
    ({"kind": "logmel", "fmax": 9000.0}, "got fmin 0, fmax 9000"),
    ({"kind": "logmel", "fmin": 500.0, "fmax": 400.0}, "need 0 <= fmin < fmax <= 8000 Hz"),
    ({"kind": "logmel", "n_mels": 0}, "n_mels, n_mfcc and image_size must be positive"),
    ({"kind": "image", "band_norm": True}, "band_norm applies to logmel features, not 'image'"),
])
def test_impossible_feature_settings_are_refused_before_any_audio_is_read(settings, message):
    from ser_core.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        FeatureConfig(**settings)


def test_feature_overrides_must_look_like_the_setting_they_replace():
    from ser_core.errors import ConfigError
    from ser_core.training import TrainConfig

    ok = TrainConfig(arch="ser_crnn", features={"n_mels": 128, "fmax": 7000, "deltas": False}).resolved()
    assert (ok.feature_config().n_mels, ok.feature_config().fmax, ok.feature_config().deltas) == (128, 7000, False)
    for bad in ({"n_mels": 12.5}, {"n_mels": True}, {"deltas": 1}, {"n_mel": 128}):
        with pytest.raises(ConfigError):
            TrainConfig(arch="ser_crnn", features=bad).resolved()


def _plain_zcr(y: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """The zero-crossing rate written the plain way (edge-padded copy, int64 running count)."""
    padded = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(frame // 2, frame // 2)], mode="edge")
    negative = padded < -features.ZCR_THRESHOLD
    crossings = np.concatenate([np.zeros((*y.shape[:-1], 1), np.int64),
                                np.cumsum(negative[..., 1:] != negative[..., :-1], axis=-1)], axis=-1)
    starts = np.arange(0, padded.shape[-1] - frame + 1, hop)
    return ((crossings[..., starts + frame - 1] - crossings[..., starts]) / frame).astype(np.float32)[..., None, :]


def test_fast_paths_give_the_plain_definitions_values_bit_for_bit(clips):
    """Speed work on the batch path (session 28) may change how a value is computed, never the value:
    the zero-crossing rate (by running count, and by hop-long blocks where the hop divides the frame), the
    tuning estimate, the spectral contrast, the mean power, a mono file's samples, the colour lookup and the
    silence trim equal their plain numpy definitions exactly, on real clips, short and batched signals and odd frame sizes."""
    signals = [*clips, clips[0][:700], np.zeros(3000, np.float32), np.stack(clips[:3])]
    for y in signals:
        for frame, hop in ((2048, 512), (1024, 256), (2047, 100), (512, 128), (512, 512), (8, 2), (3, 1)):
            np.testing.assert_array_equal(features.zero_crossing_rate(y, frame, hop), _plain_zcr(y, frame, hop))
    for y in clips:
        for n_fft in (2048, 1024):       # the peaks are found by flat index: librosa's estimate, exactly
            power = features.stft_magnitude(y, n_fft, 512) ** 2
            want = librosa.estimate_tuning(S=power, sr=16000, n_fft=n_fft)
            assert features.estimate_tuning(power, 16000, n_fft) == want
            assert features.estimate_tuning(np.asfortranarray(power), 16000, n_fft) == want
        frames = np.lib.stride_tricks.sliding_window_view(y, 512)[::128]
        db = 20 * np.log10(np.sqrt(np.mean(frames ** 2, axis=1) + 1e-12) / np.sqrt(np.mean(frames ** 2, axis=1)
                                                                                    + 1e-12).max())
        voiced = np.flatnonzero(db > -40.0)
        assert audio.trim_bounds(y, 40.0) == (int(voiced[0] * 128), int(min(voiced[-1] * 128 + 512, y.size)))
        mag = features.stft_magnitude(y, 2048, 512)
        np.testing.assert_array_equal(features._mean_over_bins(mag ** 2), np.mean(mag ** 2, axis=-2, keepdims=True))
        peak, valley = [], []
        for lo, hi, n in features.contrast_bands(16000, 2048):
            ordered = np.sort(np.ascontiguousarray(mag[lo:hi].T), axis=-1)   # rows in memory: how np.mean sums
            valley.append(ordered[:, :n].mean(axis=-1))
            peak.append(ordered[:, -n:].mean(axis=-1))
        plain = features.power_to_db(np.array(peak, np.float64)) - features.power_to_db(np.array(valley, np.float64))
        np.testing.assert_array_equal(features.spectral_contrast(mag, 16000, 2048), plain.astype(np.float32))
        np.testing.assert_array_equal(audio.to_mono(y[:, None]), y[:, None].mean(axis=1, dtype=np.float32))
    cfg = KINDS["seed003_image_cnn"]
    power = features.stft_magnitude(clips[3], cfg.n_fft, cfg.hop_length) ** 2
    scaled = np.clip((features._mel_db(power, cfg, cfg.image_size) + features.TOP_DB) / features.TOP_DB, 0, 1)[::-1]
    idx = np.round(scaled @ features.resize_matrix(scaled.shape[-1], cfg.image_size) * 255).astype(np.int32)
    np.testing.assert_array_equal(features.from_waveform(clips[3], cfg), features._viridis_lut()[idx])
