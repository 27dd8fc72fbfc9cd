"""Property-based robustness: any bytes to the decoder, any float array to the Predictor.

Every call returns a result or raises a SERError (with a one-line message);
nothing else escapes.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from audio_fixtures import encode_av, speech_clip
from ser_core import audio
from ser_core.errors import SERError

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Encoded(list):
    """Encoded files; a short repr keeps Hypothesis' failure reports readable."""

    def __repr__(self) -> str:
        return f"<{len(self)} encoded files>"


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory, sample_clip) -> Encoded:
    """Real encoded files (WAV, FLAC, OGG, MP3, WebM) for the mutation strategy to damage."""
    y = speech_clip(sample_clip)[:16000]
    out = Encoded()
    for fmt, sub in (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")):
        buf = io.BytesIO()
        sf.write(buf, y, 16000, format=fmt, subtype=sub)
        out.append(buf.getvalue())
    tmp = tmp_path_factory.mktemp("valid")
    out.append(encode_av(tmp / "a.mp3", y, 16000, "mp3", "libmp3lame").read_bytes())
    out.append(encode_av(tmp / "a.webm", y, 16000, "webm", "libopus").read_bytes())
    return out


def check_result(y, sr=None) -> None:
    samples = y[0] if isinstance(y, tuple) else y
    assert samples.dtype == np.float32 and samples.size > 0
    if sr is not None:
        assert sr > 0


def call(fn, *args, **kw):
    """Run ``fn``; a SERError is a fine answer provided its message is one line."""
    try:
        return fn(*args, **kw)
    except SERError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


mutation = st.tuples(st.integers(0, 4), st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), max_size=12),
                     st.one_of(st.none(), st.integers(0, 10**9)))


def mutate(data: bytes, flips, cut) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        b[pos % len(b)] = val
    return bytes(b[: cut % (len(b) + 1)] if cut is not None else b)


@SETTINGS
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_to_load_and_decode(data):
    out = call(audio.decode, data, name="fuzz.wav")
    if out is not None:
        check_result(*out)
    y = call(audio.load, data, name="fuzz.wav")
    if y is not None:
        check_result(y)
        assert np.isfinite(y).all()


@SETTINGS
@given(m=mutation)
def test_damaged_real_files_to_load_and_stream(valid_files, m):
    which, flips, cut = m
    data = mutate(valid_files[which], flips, cut)
    y = call(audio.load, data, name="damaged.bin")
    if y is not None:
        check_result(y)
        assert np.isfinite(y).all()
    d = call(audio.duration_seconds, data, name="damaged.bin")
    assert d is None or d >= 0
    blocks = call(lambda: [b for b in audio.stream(data, name="damaged.bin", block_seconds=0.5)])
    assert blocks is None or all(b.dtype == np.float32 for b in blocks)


def assert_prediction(pred, labels) -> None:
    if pred.emotion is None:
        assert pred.message
        return
    probs = np.array([pred.probabilities[lab] for lab in labels])
    assert pred.emotion in labels
    assert np.isfinite(probs).all() and probs.min() >= 0
    assert probs.sum() == pytest.approx(1.0, abs=1e-3)


signal = st.tuples(
    st.integers(0, 7 * 16000),                                               # length (up to 7 s)
    st.sampled_from(["noise", "tone", "zeros", "const", "speech"]),
    st.one_of(st.floats(1e-9, 10.0), st.sampled_from([1e-30, 1e6, 1e20, 3e38])),   # scale
    st.lists(st.tuples(st.integers(0, 10**9), st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1.0, 0.0])),
             max_size=3),                                                    # special values at positions
    st.sampled_from([None, 8000, 16000, 22050, 44100, 48000]),                # sample rate
)


@SETTINGS
@given(s=signal)
def test_predict_array_on_generated_signals(predictor, sample_clip, s):
    n, kind, scale, specials, sr = s
    rng = np.random.default_rng(n)
    if kind == "noise":
        y = rng.standard_normal(n)
    elif kind == "tone":
        y = np.sin(2 * np.pi * 220 * np.arange(n) / 16000)
    elif kind == "speech":
        y = np.resize(speech_clip(sample_clip), n)
    elif kind == "const":
        y = np.ones(n)
    else:
        y = np.zeros(n)
    with np.errstate(over="ignore"):
        y = (y * scale).astype(np.float32)
    for pos, val in specials:
        if n:
            y[pos % n] = val
    pred = call(predictor.predict_array, y, sr, name="generated")
    if pred is not None:
        assert_prediction(pred, predictor.labels)


@SETTINGS
@given(y=hnp.arrays(np.float32, st.integers(0, 6000), elements=st.floats(width=32, allow_nan=True,
                                                                         allow_infinity=True)))
def test_predict_array_on_arbitrary_floats(predictor, y):
    pred = call(predictor.predict_array, y, 16000, name="arbitrary")
    if pred is not None:
        assert_prediction(pred, predictor.labels)
