"""The live-mode rolling buffer: correct downmix of interleaved WebRTC frames, resampling, the 3 s window."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from ser_core import audio
from ser_core.errors import AudioError
from ser_core.live import LiveSession, RollingBuffer, channel_count, downmix

ROOT = Path(__file__).resolve().parents[1]
CHROME_FRAME = 1920          # samples per channel in one 40 ms Chromium frame at 48 kHz


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def s16_stereo_frames(left: np.ndarray, right: np.ndarray, rate: int = 48000, size: int = CHROME_FRAME):
    """av.AudioFrames exactly as Chromium delivers them: packed s16 stereo, shape (1, 2 * size)."""
    inter = np.stack([left, right], axis=1)
    pcm = np.clip(np.round(inter * 32767), -32768, 32767).astype(np.int16)
    for i in range(0, len(pcm) - size + 1, size):
        frame = av.AudioFrame.from_ndarray(pcm[i:i + size].reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = rate
        yield frame


def dominant_hz(y: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / rate)[np.argmax(spec)])


def test_interleaved_stereo_is_averaged_per_sample_pair():
    left = np.array([0.2, 0.4, 0.6], np.float32)
    right = np.array([0.0, -0.4, 0.2], np.float32)
    packed = np.stack([left, right], axis=1).reshape(1, -1)          # (1, 6): L R L R L R
    planar = np.stack([left, right])                                 # (2, 3)
    np.testing.assert_allclose(downmix(packed, 2), [0.1, 0.0, 0.4], atol=1e-7)
    np.testing.assert_allclose(downmix(planar, 2, planar=True), [0.1, 0.0, 0.4], atol=1e-7)
    np.testing.assert_allclose(downmix(packed.reshape(-1), 2), [0.1, 0.0, 0.4], atol=1e-7)


def test_int16_is_scaled_to_unit_range():
    y = downmix(np.array([[16384, -32768]], np.int16), 1)
    np.testing.assert_allclose(y, [0.5, -1.0])


def test_odd_interleaved_length_and_bad_layouts_are_rejected():
    with pytest.raises(AudioError):
        downmix(np.zeros((1, 5), np.int16), 2)
    with pytest.raises(AudioError):
        channel_count("surround-9000")
    with pytest.raises(AudioError):
        RollingBuffer().push(np.zeros((1, 4), np.int16), 0, 1)
    assert channel_count("stereo") == 2 and channel_count(1) == 1
    assert channel_count(av.AudioLayout("stereo")) == 2


def test_chromium_frames_become_the_left_channel_tone_at_16k():
    """Left = 440 Hz, right = silence: mono must be the tone at half amplitude, still 440 Hz."""
    left = tone(440, 2.0, 48000, amp=0.6)
    buf = RollingBuffer(seconds=3.0)
    for frame in s16_stereo_frames(left, np.zeros_like(left)):
        assert frame.to_ndarray().shape == (1, 2 * CHROME_FRAME)
        buf.push_frame(frame)
    y = buf.snapshot()
    assert buf.rate == 16000
    assert abs(buf.received_seconds - 2.0) < 0.05
    assert abs(dominant_hz(y[1600:], 16000) - 440) < 5
    assert abs(float(np.abs(y[1600:-1600]).max()) - 0.3) < 0.01


def test_treating_interleaved_frames_as_mono_would_be_detectably_wrong():
    """Guards the test above: reading (1, 3840) as 3840 mono samples doubles the length and halves the pitch."""
    left = tone(440, 1.0, 48000)
    frames = list(s16_stereo_frames(left, left))
    wrong = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32) / 32768
    right = np.concatenate([downmix(f.to_ndarray(), 2) for f in frames])
    assert len(wrong) == 2 * len(right)
    assert abs(dominant_hz(right, 48000) - 440) < 3
    assert abs(dominant_hz(wrong, 48000) - 220) < 3


def test_buffer_keeps_exactly_the_last_three_seconds():
    rate = 16000
    signal = (np.arange(5 * rate) % 1000 / 1000).astype(np.float32)
    buf = RollingBuffer(seconds=3.0, rate=rate)
    for i in range(0, len(signal), 640):
        buf.push(signal[i:i + 640], rate, "mono")
    np.testing.assert_array_equal(buf.snapshot(), signal[-3 * rate:])
    assert buf.buffered_seconds == 3.0
    assert buf.received_seconds == 5.0


def test_rate_change_mid_stream_is_resampled_too():
    buf = RollingBuffer(seconds=3.0)
    for rate in (48000, 44100):
        y = tone(300, 1.0, rate)
        for i in range(0, len(y), rate // 50):
            buf.push(y[i:i + rate // 50], rate, 1)
    assert abs(buf.received_seconds - 2.0) < 0.05
    assert abs(dominant_hz(buf.snapshot()[-16000:], 16000) - 300) < 5


def stream(session: LiveSession, y48: np.ndarray, predictor) -> list:
    """Push a 48 kHz waveform through the session as Chromium's frames; the points it classified on the way."""
    points = []
    for frame in s16_stereo_frames(y48, y48):
        session.push_frame(frame)
        point = session.step(predictor)
        if point is not None:
            points.append(point)
    return points


@pytest.fixture(scope="module")
def default_predictor():
    from ser_core.predict import load_predictor

    return load_predictor(ROOT / "models" / "default")


def test_live_session_classifies_about_once_per_second(default_predictor):
    clip = ROOT / "data" / "samples" / "03-01-05-02-01-01-01.flac"
    y48 = audio.load(clip, sr=48000)
    session = LiveSession(seconds=3.0, every=1.0)
    points = stream(session, y48, default_predictor)
    assert session.receiving()
    assert len(points) == int(len(y48) / 48000)          # one classification per second of stream
    assert points[-1].best in default_predictor.labels        # the last 3 s hold the whole phrase
    assert all(p.best in default_predictor.labels or (p.emotion is None and "no speech" in p.message)
               for p in points)                                # the first second is the silent lead-in
    assert [round(p.time) for p in points] == list(range(1, len(points) + 1))
    assert abs(sum(points[-1].probabilities.values()) - 1.0) < 1e-4
    assert session.step(default_predictor) is None        # nothing new since the last one


def test_live_session_reports_silence_as_no_speech(default_predictor):
    session = LiveSession(seconds=3.0, every=1.0)
    silence = np.zeros(48000 * 2, np.float32)
    for frame in s16_stereo_frames(silence, silence):
        session.push_frame(frame)
    point = session.step(default_predictor)
    assert point is not None and point.emotion is None
    assert "silent" in point.message
    session.reset()
    assert session.timeline == [] and session.buffer.received == 0


def test_a_pause_between_utterances_is_no_speech(default_predictor):
    """Speech, then three seconds of room noise: once the window holds mostly the pause, the answer is
    "no speech", not an emotion (pauses came out as "fearful" before)."""
    from ser_core.live import PAUSE_MESSAGE

    clip = ROOT / "data" / "samples" / "03-01-05-02-01-01-01.flac"
    speech = audio.load(clip, sr=48000)
    room = (np.random.default_rng(0).normal(0, 1e-3, 4 * 48000)).astype(np.float32)
    y48 = np.concatenate([speech, room])
    session = LiveSession(seconds=3.0, every=1.0)
    points = stream(session, y48, default_predictor)
    assert any(p.best in default_predictor.labels for p in points[:4])     # the phrase is judged
    assert points[-1].emotion is None and points[-1].message == PAUSE_MESSAGE  # 3 s of pause: no emotion
