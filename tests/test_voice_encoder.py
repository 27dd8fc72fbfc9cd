"""The pretrained speaker encoder run with numpy (ser_core.voice_encoder), on the bundled RAVDESS clips."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core import audio, datasets, voice_encoder as ve
from ser_core.errors import ModelError


@pytest.fixture(scope="module")
def clips(samples_dir):
    df = datasets.load_ravdess(samples_dir)
    return df, [audio.load(p, sr=ve.SAMPLE_RATE) for p in df["path"]]


def test_mel_frames_are_librosas(clips):
    import librosa

    y = clips[1][0]
    ours = ve.mel_frames(y)
    theirs = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    assert ours.shape == theirs.shape == (1 + y.size // 160, 40)
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-7 * theirs.max())


@pytest.mark.parametrize("seconds, n", [(0.5, 1), (1.6, 1), (2.4, 2), (3.6, 4), (10.0, 12)])   # counts from Resemblyzer 0.1.4's own function
def test_partials_follow_resemblyzer(seconds, n):
    slices = ve.partial_slices(int(seconds * 16000))
    assert len(slices) == n
    assert all(s.stop - s.start == ve.PARTIAL_FRAMES for s in slices)
    assert [s.start for s in slices] == [77 * k for k in range(n)]       # round(16000 / 1.3 / 160) frames apart


def test_the_port_tells_speakers_apart(clips):
    """Same-actor clips lie closer than other actors' (a port with its gates in the wrong order does not)."""
    df, waves = clips
    vec = ve.clip_vectors(waves)
    assert vec.shape == (len(waves), ve.VECTOR_SIZE) and np.isfinite(vec).all()
    emb = vec[:, :ve.HIDDEN]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    who = df["speaker"].to_numpy()
    iu = np.triu_indices(len(emb), 1)
    same = who[iu[0]] == who[iu[1]]
    assert sim[iu][same].mean() > sim[iu][~same].mean() + 0.05
    # the nearest other clip is mostly the same actor's
    np.fill_diagonal(sim, -np.inf)
    assert np.mean(who[sim.argmax(axis=1)] == who) >= 0.6


def test_one_clip_as_in_a_batch_and_quiet_clips_raised(clips):
    y = clips[1][3]
    alone = ve.clip_vector(y)
    np.testing.assert_allclose(alone, ve.clip_vectors(clips[1][:5])[3], atol=1e-5)
    quiet = y / np.abs(y).max() * 1e-3          # far under -30 dBFS: raised to it, whatever the level
    np.testing.assert_allclose(ve.clip_vector(quiet), ve.clip_vector(quiet * 0.1), atol=1e-4)


def test_weights_refused_when_wrong(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{"lstm.weight_ih_l0": np.zeros((3, 3), np.float32)})
    with pytest.raises(ModelError, match="not the voice encoder's weights"):
        ve.load_weights(bad)
    with pytest.raises(ModelError, match="not found"):
        ve.load_weights(tmp_path / "missing.npz")
