"""The Predictor: probabilities, windows for long audio, no-speech answers, bad model folders."""
import shutil

import numpy as np
import pytest

from ser_core import audio
from ser_core.errors import ModelError
from ser_core.predict import Predictor


def test_probabilities_over_the_models_labels(predictor, sample_clip):
    p = predictor.predict_file(sample_clip)
    assert list(p.probabilities) == predictor.labels and len(predictor.labels) == 8
    assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert p.emotion == max(p.probabilities, key=p.probabilities.get)
    assert p.confidence == pytest.approx(p.probabilities[p.emotion])
    assert p.duration == pytest.approx(4.104, abs=1e-3)
    # 4.1 s is more than one window plus a hop: windows at 0 s and 1 s, and one flush with the end
    assert [w.start for w in p.windows] == pytest.approx([0.0, 1.0, 1.104], abs=1e-3)
    assert p.best == p.emotion and not p.not_sure and p.top2[0] == p.emotion     # no calibration stored


def test_file_and_array_paths_agree(predictor, sample_clip):
    y = audio.load(sample_clip)
    a = predictor.predict_file(sample_clip)
    b = predictor.predict_array(y, 16000)
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


def test_a_44k_round_trip_keeps_the_answer(sample_clip):
    """Resampling changes the samples slightly, never the answer's shape (the RAVDESS ensemble: a
    3-epoch test model is too unsettled to say how much a small change may move it)."""
    from ser_core.predict import load_predictor

    from conftest import ENSEMBLE_MODEL

    pred = load_predictor(ENSEMBLE_MODEL)
    y = audio.load(sample_clip)
    a = pred.predict_array(y, 16000)
    c = pred.predict_array(audio.resample(y, 16000, 44100), 44100)
    assert c.probabilities == pytest.approx(a.probabilities, abs=0.02)
    assert c.emotion == a.emotion


def test_long_audio_is_windowed(predictor, samples_dir):
    clips = [audio.load(p) for p in sorted(samples_dir.glob("*.flac"))[:3]]
    y = np.concatenate(clips)
    p = predictor.predict_array(y, 16000, name="three.wav")
    n = y.size / 16000
    assert len(p.windows) == int(np.ceil(n - 3.0)) + 1
    assert p.windows[0].start == 0 and p.windows[-1].end == pytest.approx(n, abs=1e-6)
    speech = [w for w in p.windows if w.speech]
    mean = np.mean([[w.probabilities[lab] for lab in predictor.labels] for w in speech], axis=0)
    assert [p.probabilities[lab] for lab in predictor.labels] == pytest.approx(mean.tolist(), abs=1e-6)


def test_near_silence_says_no_speech(predictor):
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(48000) * 3e-4).astype(np.float32)   # about -70 dBFS
    p = predictor.predict_array(hiss, 16000)
    assert p.emotion is None and "no speech" in p.message
    assert p.to_dict()["emotion"] is None


def test_model_folder_problems_are_model_errors(tmp_path, tiny_model):
    with pytest.raises(ModelError, match="not found"):
        Predictor(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="could not be loaded"):
        Predictor(broken)
    nospec = tmp_path / "nospec"
    shutil.copytree(tiny_model, nospec)
    (nospec / "spec.json").unlink()
    with pytest.raises(ModelError, match="spec.json"):
        Predictor(nospec)


def test_quiet_speech_is_heard_and_steady_noise_is_not(predictor, sample_clip):
    y = audio.load(sample_clip)
    quiet = predictor.predict_array(y * 10 ** (-35 / 20), 16000)     # a far-away laptop microphone
    assert quiet.emotion in predictor.labels
    rng = np.random.default_rng(1)
    hiss = (rng.standard_normal(48000) * 0.1).astype(np.float32)    # loud, but steady: no speech
    assert predictor.predict_array(hiss, 16000).emotion is None


def test_many_predictors_in_one_process_print_no_tensorflow_warnings(tiny_model, sample_clip):
    """A robustness run builds a Predictor per fold and member; TensorFlow warned about
    'retracing' from the fifth one on."""
    import subprocess
    import sys

    code = ("import sys; from ser_core.predict import Predictor; "
            "[Predictor(sys.argv[1]).predict_file(sys.argv[2]) for _ in range(7)]; print('done')")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_model), str(sample_clip)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    assert "retracing" not in r.stderr and "WARNING" not in r.stderr, r.stderr


def test_robustness_workers_print_no_tensorflow_warnings(tiny_model, sample_clip, tmp_path):
    """A robustness worker imports TensorFlow itself (one thread) before any Predictor exists;
    the retracing warnings must stay quiet there too."""
    import subprocess
    import sys

    code = ("import sys; from ser_core import robustness; robustness._init_worker(sys.argv[3]); "
            "from ser_core.predict import Predictor; "
            "[Predictor(sys.argv[1]).predict_file(sys.argv[2]) for _ in range(7)]; print('done')")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_model), str(sample_clip), str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    assert "retracing" not in r.stderr and "WARNING" not in r.stderr, r.stderr


def test_the_ravdess_ensemble_predicts_what_it_did_before_with_the_ensembles_windows():
    """Before one prediction path, the shipped ensemble (then models/default, now models/ravdess) answered
    each sample clip with the mean of its members' answers and showed its first member's windows (tests/data holds what it said).
    Now the windows are the ensemble's own, and the clip's answer follows from them: the same."""
    import json

    from conftest import ENSEMBLE_MODEL, ROOT, SAMPLES
    from ser_core.predict import load_predictor

    from ser_core.calibration import apply_temperature

    before = json.loads((ROOT / "tests" / "data" / "default_samples_before.json").read_text())["clips"]
    ens = load_predictor(ENSEMBLE_MODEL, calibrated=False)      # the raw path: before had no calibration
    calibrated = load_predictor(ENSEMBLE_MODEL)
    assert len(before) == 32
    moved = 0
    for name, old in before.items():
        p = ens.predict_file(SAMPLES / name)
        assert p.emotion == old["emotion"], name
        c = calibrated.predict_file(SAMPLES / name)           # the shipped answer: the same, calibrated
        labels = list(old["probabilities"])
        want = apply_temperature(np.array([[old["probabilities"][lab] for lab in labels]]),
                                 calibrated.calibration.temperature)[0]
        assert [c.probabilities[lab] for lab in labels] == pytest.approx(want.tolist(), abs=1e-5), name
        assert c.best == old["emotion"] and c.emotion in (old["emotion"], "not sure")
        # 1e-5, not tighter: the stored answers have 6 decimals, and another CPU's SIMD kernels (session 11's
        # AVX2-only AMD EPYC, not the machine that wrote them) moved a probability by 3e-6; a changed window
        # grid, member or calibration moves them by 1e-3 and more
        assert p.probabilities == pytest.approx(old["probabilities"], abs=1e-5), name
        n = p.duration
        assert len(p.windows) == (1 if n <= 4.0 else int(np.ceil(n - 3.0)) + 1)      # the recording's windows
        assert p.windows[0].start == 0 and p.windows[-1].end == pytest.approx(n if n > 4.0 else min(n, 3.0))
        speech = np.array([[w.probabilities[lab] for lab in ens.labels] for w in p.windows if w.speech])
        assert [p.probabilities[lab] for lab in ens.labels] == pytest.approx(speech.mean(axis=0).tolist(), abs=1e-6)
        moved += [[round(w.start, 3), round(w.end, 3)] for w in p.windows] != old["first_member_windows"]
    assert moved > 0        # the windows shown did change: they were ser_crnn's, after its silence trim


def test_one_call_gives_everything_a_caller_shows(sample_clip):
    from conftest import ENSEMBLE_MODEL
    from ser_core.predict import Analysis, load_predictor

    ens = load_predictor(ENSEMBLE_MODEL)
    data = sample_clip.read_bytes()
    a = ens.analyse(data, name="clip.flac", whole=True)
    assert isinstance(a, Analysis) and a.sample_rate == 16000
    assert a.waveform.size == pytest.approx(4.104 * 16000, abs=2)
    assert a.prediction.probabilities == pytest.approx(ens.predict_file(sample_clip).probabilities, abs=1e-9)
    assert [m.name for m in a.inputs] == ens.member_names
    for m, member in zip(a.inputs, ens.members):
        assert m.x.shape == tuple(member.runtime.input_shape) and m.features == member.cfg


def test_a_scoring_call_works_out_each_waveforms_speech_flags_once(sample_clip, monkeypatch):
    """The speech check, the ensemble's grid and every front end look at the same waveforms; with one memo
    a waveform's levels are computed once and its window flags once, and they are the flags without it."""
    from ser_core import predict

    y = audio.load(sample_clip)
    starts, win = predict.window_starts(y.size, 48000, 16000), 48000
    plain = predict.speech_windows(y, starts, win)
    calls = []
    real = predict.frame_levels
    monkeypatch.setattr(predict, "frame_levels", lambda a, *k: calls.append(a.size) or real(a, *k))
    memo = {}
    first = predict.speech_windows(y, starts, win, memo)
    assert calls == [y.size] + [win] * len(starts)           # the recording once, then each window
    assert predict.speech_windows(y, starts, win, memo) is first and predict.recording_levels(y, memo) is not None
    assert len(calls) == 1 + len(starts)                      # nothing computed again
    np.testing.assert_array_equal(first, plain)
    other = y.copy()                                          # another waveform (same samples) is its own entry
    predict.speech_windows(other, starts, win, memo)
    assert len(calls) == 2 * (1 + len(starts))


def test_normalising_with_whole_shape_statistics_gives_the_training_formulas_values():
    """Inputs are normalised with the statistics spread to the input shape once: the float32 values of
    ``(x - mean) / std`` with the per-band statistics broadcast, bit for bit."""
    from conftest import ENSEMBLE_MODEL
    from ser_core.config import ModelSpec
    from ser_core.predict import load_predictor

    member = load_predictor(ENSEMBLE_MODEL).members[2]          # the image CNN: (128, 1, 3) statistics
    spec = ModelSpec.load(member.model_dir / "spec.json")
    x = np.random.default_rng(0).normal(size=(5, *member.runtime.input_shape)).astype(np.float32)
    mean, std = np.asarray(spec.norm_mean, np.float32), np.asarray(spec.norm_std, np.float32)
    assert mean.shape == (128, 1, 3)
    for x in (x, x.astype(np.float64)):                       # float64 inputs are computed in float64, as before
        out = member.normalise(x)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, ((x - mean) / std).astype(np.float32))


def test_frame_levels_are_the_plain_formulas_values(samples_dir):
    """frame_levels works on one private copy in place (a scoring call takes it of every waveform and window):
    the float64 levels of mean removal, squaring and frame averages on fresh arrays, bit for bit, and the
    caller's samples untouched."""
    from ser_core.predict import frame_levels

    def plain(y, frame=512):
        y = np.asarray(y, dtype=np.float64)
        y = y - y.mean() if y.size else y
        n = max(y.size // frame, 1)
        chunk = np.pad(y, (0, max(frame - y.size, 0)))[: n * frame].reshape(n, frame)
        return 20 * np.log10(np.maximum(np.sqrt((chunk ** 2).mean(axis=1)), 1e-10))

    y = audio.load(sorted(samples_dir.glob("*.flac"))[5])
    for signal in (y, y[:48000], y[:300], y[:1000].astype(np.float64), np.zeros(0, np.float32), y + 0.3):
        kept = signal.copy()
        np.testing.assert_array_equal(frame_levels(signal), plain(signal))
        np.testing.assert_array_equal(signal, kept)
    np.testing.assert_array_equal(frame_levels(y, 400), plain(y, 400))


def test_a_network_with_one_window_gives_its_answer_to_every_window_of_the_recording():
    from ser_core.predict import WindowScores, aligned

    grid = WindowScores(np.array([0.0, 1.0, 2.0, 2.4]), np.array([3.0, 4.0, 5.0, 5.4]), None, None)
    probs = np.random.default_rng(0).dirichlet(np.ones(8), size=1)
    for start, end in ((0.0, 3.0), (0.7, 3.7), (4.0, 5.4), (9.0, 12.0)):     # inside, shifted, apart
        got = aligned(grid, WindowScores(np.array([start]), np.array([end]), probs, None))
        assert got.shape == (4, 8) and (got == probs[0]).all()
    two = np.random.default_rng(1).dirichlet(np.ones(8), size=2)      # two windows: the most overlapping one
    got = aligned(grid, WindowScores(np.array([0.3, 2.2]), np.array([3.3, 5.2]), two, None))
    np.testing.assert_array_equal(got, two[[0, 0, 1, 1]])


def test_the_quiet_level_is_numpys_tenth_percentile(samples_dir):
    """speech_present's quiet level is np.percentile(levels, 10) written out (session 29): equal bit for bit on
    every length from 1 to 300 (both sides of each interpolation weight), with ties, and on real recordings."""
    from ser_core.predict import frame_levels, quiet_level

    rng = np.random.default_rng(3)
    for n in range(1, 301):
        for levels in (rng.normal(-40, 20, n), np.round(rng.normal(-40, 5, n)), np.r_[np.full(n // 2, -200.0),
                                                                                      rng.normal(-30, 9, n - n // 2)]):
            assert quiet_level(levels) == np.percentile(levels, 10), n
    for path in sorted(samples_dir.glob("*.flac"))[:6]:
        levels = frame_levels(audio.load(path))
        assert quiet_level(levels) == np.percentile(levels, 10)


def test_windows_normalised_into_the_interpreter_give_the_normalised_copies_answers(sample_clip):
    """On LiteRT each window is normalised straight into the interpreter's input (session 28): the same
    probabilities as normalising a copy of every window first, bit for bit; what a network saw (``inputs``)
    is the normalised first window, worked out only when asked for."""
    from conftest import ENSEMBLE_MODEL
    from ser_core.predict import load_predictor

    ens = load_predictor(ENSEMBLE_MODEL, runtime="int8")
    y = audio.load(sample_clip)
    for front in ens._fronts:
        group = front[0]
        member = ens.members[group[0]]
        _, x, _ = member.many_window_features([y, y[: y.size // 2]])
        assert x.dtype == np.float32 and len(x) >= 2
        np.testing.assert_array_equal(member.predict_features(x), member.infer(member.normalise(x)))
    a = ens.analyse(sample_clip)
    for shown, member in zip(a.inputs, ens.members):
        assert "x" not in vars(shown)                          # not worked out yet
        _, x, _ = member.many_window_features([y])
        np.testing.assert_array_equal(shown.x, member.normalise(x)[0])
