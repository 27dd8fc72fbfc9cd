"""The "why this emotion" view: occlusion saliency that points at speech, on the file's own time axis.

Both the shipped default (an ensemble whose members hear log-mel sequences, pictures and
per-clip statistics) and a tiny single model are explained. The grids are coarse to keep the
suite fast; ``python -m ser_app.bench`` is not involved: these tests assert where the saliency
lies, not how fast it comes.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

from conftest import DEFAULT_MODEL, SAMPLES
from ser_core import audio, explain
from ser_core.errors import SilentAudioError, TooLongError

SR = 16000
PAD_SECONDS = 2.0
COARSE = {"seconds": 0.5, "bands": 3}      # a few patches: the tests check where mass lies, not detail
CLIPS = sorted(SAMPLES.glob("*.flac"))


@pytest.fixture(scope="module")
def default():
    from ser_core.predict import load_predictor

    return load_predictor(DEFAULT_MODEL)


@pytest.fixture(scope="module", params=["default", "tiny"])
def model(request, default):
    return default if request.param == "default" else request.getfixturevalue("predictor")


def padded(y: np.ndarray, seconds: float = PAD_SECONDS, seed: int = 0) -> np.ndarray:
    """``y`` with ``seconds`` of room noise at each end, 50 dB under the speech (a quiet room, not zeros)."""
    start, end = audio.trim_bounds(y)
    level = float(np.sqrt(np.mean(y[start:end] ** 2)))
    pad = np.zeros(int(seconds * SR), np.float32)
    out = np.concatenate([pad, y, pad])
    rng = np.random.default_rng(seed)
    return (out + rng.standard_normal(out.size).astype(np.float32) * level * 10 ** (-50 / 20)).astype(np.float32)


# ----------------------------------------------------------------------------- pieces
def test_batched_probabilities_are_the_predictors_own_answers(model):
    waves = [audio.load(c) for c in CLIPS[:2]]
    waves.append(padded(waves[0]))
    got = explain.clip_probabilities(model, waves)
    for w, row in zip(waves, got):
        want = model.predict_array(w, SR).probabilities
        assert row == pytest.approx([want[lab] for lab in model.labels], abs=1e-5)
    silent = explain.clip_probabilities(model, [np.zeros(SR * 3, np.float32)])
    assert not silent.any()


def test_the_grid_has_the_voiced_ends_as_edges(default):
    edges, hz = explain.patch_edges(4.0, (0.8, 2.3), default.cfg, seconds=0.5, bands=4)
    assert edges[0] == 0 and edges[-1] == 4.0
    assert 0.8 in edges and 2.3 in edges
    assert np.all(np.diff(edges) <= 0.5 + 1e-9)
    assert hz[0] == 0 and hz[-1] == pytest.approx(SR / 2) and len(hz) == 5
    assert np.all(np.diff(features_mel(hz)) == pytest.approx(np.diff(features_mel(hz))[0]))
    many, _ = explain.patch_edges(30.0, (1.0, 29.0), default.cfg, seconds=0.25, bands=2, max_time=20)
    assert len(many) - 1 <= 20 and 1.0 in many and 29.0 in many


def features_mel(hz):
    from ser_core.features import hz_to_mel

    return hz_to_mel(hz)


def test_occluding_background_changes_nothing_and_speech_only_its_patch():
    y = padded(audio.load(CLIPS[20]))
    voiced = tuple(b / SR for b in audio.trim_bounds(y))
    end = y.size / SR
    # patches 0 and 4 are pure padding (room noise); 1 and 3 hold the recording's own quiet ends
    edges = np.array([0.0, PAD_SECONDS, voiced[0], (voiced[0] + voiced[1]) / 2, voiced[1], end - PAD_SECONDS, end])
    bands = np.array([0.0, 1000.0, SR / 2])
    occ = explain.Occluder(y, SR, edges, bands, voiced)
    waves, changed = occ.waves([(0, 0), (0, 1), (5, 0), (5, 1), (2, 0), (3, 1)])
    assert changed == [False, False, False, False, True, True]
    for w in waves[:4]:
        assert np.array_equal(w, y)
    # occluding the first half of the speech below 1 kHz: quieter there, untouched away from it
    w = waves[4]
    frame = int(explain.RESYNTH_FRAME_SECONDS * SR)
    a, b = int(edges[2] * SR), int(edges[3] * SR)
    assert np.sum(w[a:b] ** 2) < 0.5 * np.sum(y[a:b] ** 2)
    assert np.array_equal(w[: a - frame], y[: a - frame]) and np.array_equal(w[b + frame:], y[b + frame:])
    low = np.abs(np.fft.rfft(w[a:b])), np.abs(np.fft.rfft(y[a:b]))
    f = np.fft.rfftfreq(b - a, 1 / SR)
    assert np.sum(low[0][f < 900] ** 2) < 0.1 * np.sum(low[1][f < 900] ** 2)
    assert np.sum(low[0][f > 1200] ** 2) == pytest.approx(np.sum(low[1][f > 1200] ** 2), rel=0.2)


# ----------------------------------------------------------------------------- the requirements
def test_saliency_lies_in_the_voiced_stretch_of_every_sample_clip(model):
    """At least 80 % of the saliency mass inside the stretch the model's own trimming keeps."""
    shares = {}
    for clip in CLIPS:
        e = explain.explain_file(model, clip, **COARSE)
        assert e.saliency.sum() > 0, f"{clip.name}: empty map"
        shares[clip.name] = e.voiced_mass
    low = {k: round(v, 3) for k, v in shares.items() if v < 0.8}
    assert not low, f"under 80 % in the voiced stretch: {low}"


@pytest.mark.parametrize("clip", [CLIPS[0], CLIPS[18]], ids=lambda c: c.stem)
def test_two_seconds_of_padding_get_at_most_a_tenth_of_the_mass(model, clip):
    y = audio.load(clip)
    e = explain.explain_array(model, padded(y), name=clip.name, **COARSE)
    speech = (PAD_SECONDS, PAD_SECONDS + y.size / SR)
    assert e.saliency.sum() > 0
    assert 1 - e.mass_between(*speech) <= 0.10
    # the map is on the padded file's own time axis: the voiced stretch moved by the padding
    start, end = (b / SR for b in audio.trim_bounds(y))
    assert e.voiced[0] == pytest.approx(PAD_SECONDS + start, abs=0.02)
    assert e.voiced[1] == pytest.approx(PAD_SECONDS + end, abs=0.02)


def test_the_map_is_aligned_to_the_files_mel_spectrogram(default):
    clip = CLIPS[18]
    e = explain.explain_file(default, clip, **COARSE)
    cfg = default.cfg
    y = audio.load(clip)
    n_frames = 1 + y.size // cfg.hop_length
    assert e.saliency.shape == e.mel_db.shape == (n_frames, cfg.n_mels)
    assert e.times == pytest.approx(np.arange(n_frames) * cfg.hop_length / SR)
    assert e.duration == pytest.approx(y.size / SR)
    assert np.all(np.diff(e.mel_hz) > 0) and e.mel_hz[-1] < SR / 2
    assert e.saliency.min() >= 0
    pred = default.predict_array(y, SR)
    assert e.emotion == pred.emotion and e.confidence == pytest.approx(pred.confidence, abs=1e-5)
    assert e.grid[1] == COARSE["bands"] and e.runs <= e.grid[0] * e.grid[1]
    with np.load(io.BytesIO(e.npz_bytes())) as z:
        assert z["saliency"].shape == (n_frames, cfg.n_mels)
        assert z["times"] == pytest.approx(e.times)
        assert str(z["emotion"]) == e.emotion and z["mel_hz"].shape == (cfg.n_mels,)
        assert "occlusion" in str(z["method"])


def test_nothing_to_explain_without_speech_and_long_files_are_refused(default, monkeypatch):
    hiss = (np.random.default_rng(0).standard_normal(SR * 3) * 3e-4).astype(np.float32)   # about -70 dBFS
    with pytest.raises(SilentAudioError, match="no speech detected: nothing to explain"):
        explain.explain_array(default, hiss, name="quiet.wav")
    with pytest.raises(SilentAudioError):
        explain.explain_array(default, np.zeros(SR * 2, np.float32), name="zeros.wav")
    monkeypatch.setattr(explain, "MAX_SECONDS", 2.0)
    with pytest.raises(TooLongError, match="up to 2 s"):
        explain.explain_file(default, CLIPS[0])


# ----------------------------------------------------------------------------- codecs
@pytest.mark.parametrize("label", list(explain.CODECS))
def test_codec_round_trips_are_real_files_of_the_same_clip(label):
    container, codec, bit_rate, rate = explain.CODECS[label]
    y = audio.load(CLIPS[18])
    data = explain.encode(y, SR, container, codec, bit_rate, rate)
    import av

    with av.open(io.BytesIO(data)) as f:
        assert f.format.name == container
        assert {"mp3": "mp3", "ogg": "opus"}[container] in f.streams.audio[0].codec_context.name
    z = audio.load(data, sr=SR, name=f"x.{container}")
    assert abs(z.size - y.size) < 0.01 * SR                    # the encoder's delay is not added
    n = min(z.size, y.size)
    err = np.sum((z[:n] - y[:n]) ** 2) / np.sum(y[:n] ** 2)
    assert err < 0.5                                           # aligned: the same waveform, give or take the codec
    assert len(data) * 8 / (y.size / SR) < 1.6 * bit_rate


def test_codec_comparison_predicts_each_version(default):
    y = audio.load(CLIPS[18])
    rows = explain.codec_comparison(default, y, name="clip.flac")
    assert [r.codec for r in rows] == [explain.ORIGINAL, *explain.CODECS]
    assert rows[0].probabilities == pytest.approx(default.predict_array(y, SR).probabilities, abs=1e-6)
    assert all(r.emotion in default.labels and r.size_bytes for r in rows[1:])
    spread = explain.codec_spread(rows)
    values = [r.probabilities[rows[0].emotion] for r in rows]
    assert spread == pytest.approx(max(values) - min(values)) and 0 <= spread <= 1
