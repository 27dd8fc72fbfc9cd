"""The "why this emotion" view: occlusion saliency that points at speech, on the file's own time axis.

Both the RAVDESS ensemble in models/ravdess (whose members hear log-mel sequences, pictures and
per-clip statistics) and a tiny single model are explained; the Predict page explains the shipped default, a
probe on Whisper's encoder (tests/test_whisper.py explains a probe in detail). The grids are coarse to keep the
suite fast; ``python -m ser_app.bench`` is not involved: these tests assert where the saliency
lies, not how fast it comes.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

from conftest import DEFAULT_MODEL, ENSEMBLE_MODEL, SAMPLES
from ser_core import audio, explain
from ser_core.errors import SilentAudioError, TooLongError

SR = 16000
PAD_SECONDS = 2.0
COARSE = {"seconds": 0.5, "bands": 3}      # a few patches: the tests check where mass lies, not detail
CLIPS = sorted(SAMPLES.glob("*.flac"))


@pytest.fixture(scope="module")
def ensemble():
    from ser_core.predict import load_predictor

    return load_predictor(ENSEMBLE_MODEL)


@pytest.fixture(scope="module", params=["ensemble", "tiny"])
def model(request, ensemble):
    return ensemble if request.param == "ensemble" else request.getfixturevalue("predictor")


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


def test_the_grid_has_the_voiced_ends_as_edges(ensemble):
    edges, hz = explain.patch_edges(4.0, (0.8, 2.3), ensemble.cfg, seconds=0.5, bands=4)
    assert edges[0] == 0 and edges[-1] == 4.0
    assert 0.8 in edges and 2.3 in edges
    assert np.all(np.diff(edges) <= 0.5 + 1e-9)
    assert hz[0] == 0 and hz[-1] == pytest.approx(SR / 2) and len(hz) == 5
    assert np.all(np.diff(features_mel(hz)) == pytest.approx(np.diff(features_mel(hz))[0]))
    many, _ = explain.patch_edges(30.0, (1.0, 29.0), ensemble.cfg, seconds=0.25, bands=2, max_time=20)
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


def test_the_map_is_aligned_to_the_files_mel_spectrogram(ensemble):
    clip = CLIPS[18]
    e = explain.explain_file(ensemble, clip, **COARSE)
    cfg = ensemble.cfg
    y = audio.load(clip)
    n_frames = 1 + y.size // cfg.hop_length
    assert e.saliency.shape == e.mel_db.shape == (n_frames, cfg.n_mels)
    assert e.times == pytest.approx(np.arange(n_frames) * cfg.hop_length / SR)
    assert e.duration == pytest.approx(y.size / SR)
    assert np.all(np.diff(e.mel_hz) > 0) and e.mel_hz[-1] < SR / 2
    assert e.saliency.min() >= 0 and e.saliency == pytest.approx(np.abs(e.support))
    pred = ensemble.predict_array(y, SR)
    assert e.emotion == pred.best and e.confidence == pytest.approx(pred.confidence, abs=1e-5)
    assert e.grid[1] == COARSE["bands"] and e.runs <= e.grid[0] * e.grid[1]
    with np.load(io.BytesIO(e.npz_bytes())) as z:
        assert z["saliency"].shape == (n_frames, cfg.n_mels)
        assert z["saliency"] == pytest.approx(np.abs(z["support"]))
        assert z["times"] == pytest.approx(e.times)
        assert str(z["emotion"]) == e.emotion and z["mel_hz"].shape == (cfg.n_mels,)
        assert "occlusion" in str(z["method"])


def test_nothing_to_explain_without_speech_and_long_files_are_refused(ensemble, monkeypatch):
    hiss = (np.random.default_rng(0).standard_normal(SR * 3) * 3e-4).astype(np.float32)   # about -70 dBFS
    with pytest.raises(SilentAudioError, match="no speech detected: nothing to explain"):
        explain.explain_array(ensemble, hiss, name="quiet.wav")
    with pytest.raises(SilentAudioError):
        explain.explain_array(ensemble, np.zeros(SR * 2, np.float32), name="zeros.wav")
    monkeypatch.setattr(explain, "MAX_SECONDS", 2.0)
    with pytest.raises(TooLongError, match="up to 2 s"):
        explain.explain_file(ensemble, CLIPS[0])


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


def test_codec_comparison_predicts_each_version(ensemble):
    y = audio.load(CLIPS[18])
    rows = explain.codec_comparison(ensemble, y, name="clip.flac")
    assert [r.codec for r in rows] == [explain.ORIGINAL, *explain.CODECS]
    assert rows[0].probabilities == pytest.approx(ensemble.predict_array(y, SR).probabilities, abs=1e-6)
    assert all(r.best in ensemble.labels and r.size_bytes for r in rows[1:])
    spread = explain.codec_spread(rows)
    values = [r.probabilities[rows[0].best] for r in rows]
    assert spread == pytest.approx(max(values) - min(values)) and 0 <= spread <= 1


# ----------------------------------------------------------------------------- what the user gets
def test_png_and_figure_draw_the_map(ensemble):
    from PIL import Image

    from ser_app import explain_views

    e = explain.explain_file(ensemble, CLIPS[18], **COARSE)
    png = explain_views.saliency_png(e)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width >= 480 and img.height > explain_views.PNG_HEIGHT
    rgb = explain_views.overlay_rgb(e)
    assert rgb.shape == (e.saliency.shape[1], e.saliency.shape[0], 3)
    support = e.support.T[::-1]
    band, frame = np.unravel_index(np.argmax(np.abs(support)), support.shape)
    r, g, b = rgb[band, frame].astype(int)
    assert (r - b > 100) if support[band, frame] > 0 else (b - r > 100)   # red for the answer, blue against
    untouched = rgb[support == 0]
    assert len(untouched) and np.all(untouched == untouched[:, :1])        # patches that never mattered: grey
    fig = explain_views.saliency_figure(e)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 2 and np.asarray(heat[1].z) == pytest.approx(-e.support.T)
    assert list(heat[1].x) == pytest.approx(e.times.tolist())
    assert "occlusion" in explain_views.method_text(e).lower()
    assert f"{e.voiced_mass:.0%}".replace("%", " %") in explain_views.summary_text(e)


def test_codec_table_says_how_far_the_codecs_move_the_answer():
    from ser_app import explain_views

    rows = [explain.CodecResult(explain.ORIGINAL, "sad", "sad", 0.487, {"sad": 0.487, "calm": 0.3}),
            explain.CodecResult("MP3 128 kbit/s", "sad", "sad", 0.5, {"sad": 0.5, "calm": 0.3}, 50_000),
            explain.CodecResult("Ogg/Opus 12 kbit/s", "calm", "calm", 0.45, {"sad": 0.3, "calm": 0.45}, 6_000)]
    df = explain_views.codec_frame(rows)
    assert df["version"].tolist() == [explain.ORIGINAL, "MP3 128 kbit/s", "Ogg/Opus 12 kbit/s"]
    assert df["P(sad) %"].tolist() == [48.7, 50.0, 30.0]
    assert df["change (points)"].tolist() == [0.0, 1.3, -18.7]
    text = explain_views.codec_text(rows)
    assert "20.0 points" in text and "changes the answer for Ogg/Opus 12 kbit/s" in text


def test_cli_explain_writes_a_map_and_a_png_per_file(tmp_path, tiny_model):
    import shutil

    from test_cli import ser

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(CLIPS[18], tmp_path / "a" / "clip.flac")
    shutil.copy(CLIPS[9], tmp_path / "b" / "clip.flac")                 # the same name in another folder
    (tmp_path / "b" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 3)
    out = tmp_path / "why"
    r = ser("predict", "--json", "--model", tiny_model, "--explain", out, tmp_path / "a", tmp_path / "b")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [__import__("json").loads(line) for line in r.stdout.splitlines()]     # stdout: predictions only
    assert len(lines) == 3
    assert sorted(p.name for p in out.iterdir()) == ["clip-2.why.npz", "clip-2.why.png", "clip.why.npz",
                                                     "clip.why.png"]
    assert "broken.wav" in r.stderr and "no explanation written" in r.stderr
    for stem, clip, line in (("clip", CLIPS[18], lines[0]), ("clip-2", CLIPS[9], lines[2])):
        with np.load(out / f"{stem}.why.npz") as z:
            assert z["saliency"].ndim == 2 and z["saliency"].shape[0] == z["times"].size
            assert z["saliency"].shape[1] == z["mel_hz"].size
            assert z["times"][0] == 0 and z["times"][-1] <= audio.load(clip).size / SR
            assert str(z["emotion"]) == line["best"]
        assert (out / f"{stem}.why.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_page_explains_on_request(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from ser_core.predict import load_predictor

    monkeypatch.setenv("SER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("SER_DATA_DIR", str(tmp_path / "no-data-here"))
    monkeypatch.setattr(explain, "PATCH_SECONDS", 0.5)          # the page's grid, coarser for the test
    monkeypatch.setattr(explain, "N_BANDS", 3)
    clip = CLIPS[18]
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.segmented_control(key="p_source").set_value("Upload").run()
    at.file_uploader(key="p_upload").set_value((clip.name, clip.read_bytes(), "audio/flac")).run()
    assert not at.exception and not at.error
    assert "Why this emotion?" in [e.label for e in at.expander]
    charts = len(at.get("plotly_chart"))
    at.button(key="p_why_go").click().run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == charts + 1
    table = next(d.value for d in at.dataframe if "version" in d.value.columns)
    rows = explain.codec_comparison(load_predictor(DEFAULT_MODEL), audio.load(clip), name=clip.name)   # the app's model
    assert table["version"].tolist() == [r.codec for r in rows]
    assert table["answer"].tolist() == [r.answer for r in rows]
    assert any("occlusion" in c.value.lower() for c in at.caption)
    assert {"Map as NumPy .npz", "Map as PNG"} <= {b.label for b in at.get("download_button")}
    at.run()                                                    # a rerun keeps the answer, no second run
    assert len(at.get("plotly_chart")) == charts + 1 and not at.exception


def test_cli_explain_into_a_place_that_cannot_hold_a_folder_is_one_line(tmp_path, tiny_model):
    from test_cli import ser

    (tmp_path / "file").write_text("not a folder")
    r = ser("predict", "--model", tiny_model, "--explain", tmp_path / "file" / "why", CLIPS[18])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot write explanations into")
