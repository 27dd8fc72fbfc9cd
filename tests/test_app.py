"""The Streamlit app driven headlessly with AppTest: real model, real decoding, a real training process.

There is no data folder in these tests (SER_DATA_DIR points nowhere): the app must
predict from uploads and samples, train on data/samples and evaluate the shipped model.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

from ser_core import runs
from test_views import KNOWN_ROWS

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "streamlit_app.py"
SAMPLES = ROOT / "data" / "samples"
DEFAULT = ROOT / "models" / "default"
CLIP = SAMPLES / "03-01-05-02-01-01-01.flac"
RUN_TIMEOUT = 300          # bound (not an assertion) for one script run, the first one loads TensorFlow
POLL_LIMIT = 400           # bound on reruns while waiting for a training process


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """Fresh runs folder, no corpus at all."""
    monkeypatch.setenv("SER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("SER_DATA_DIR", str(tmp_path / "no-data-here"))
    monkeypatch.delenv("SER_MAX_AUDIO_SECONDS", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def reference():
    """The shipped model loaded outside the app, to check what the page shows."""
    from ser_core.predict import load_predictor

    return load_predictor(DEFAULT)


def start_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


def metric(at: AppTest, label_start: str, protocol: str | None = None) -> str:
    hits = [m.value for m in at.main.metric if m.label.startswith(label_start)
            and (protocol is None or m.delta == protocol)]
    assert hits, f"no metric labelled {label_start!r}; have {[m.label for m in at.main.metric]}"
    return hits[0]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def wav_bytes(y: np.ndarray, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def button(at: AppTest, label: str):
    hits = [b for b in at.button if b.label == label]
    assert hits, f"no button {label!r}; have {[b.label for b in at.button]}"
    return hits[0]


# ----------------------------------------------------------------------------- predict
def test_upload_of_a_real_clip_shows_the_models_answer(no_data, reference):
    at = start_app()
    at.segmented_control(key="p_source").set_value("Upload").run()
    at.file_uploader(key="p_upload").set_value((CLIP.name, CLIP.read_bytes(), "audio/flac")).run()
    assert not at.exception and not errors(at)
    expected = reference.predict_file(CLIP)
    assert metric(at, "Emotion") == expected.emotion
    assert expected.emotion in reference.labels
    assert metric(at, "Confidence") == f"{100 * expected.confidence:.1f}%"
    labels = [b.label for b in at.get("download_button")]
    assert "Result as JSON" in labels and "Result as CSV" in labels


def test_sample_picker_classifies_the_chosen_clip(no_data, reference):
    at = start_app()
    at.segmented_control(key="p_source").set_value("Sample clip").run()
    other = SAMPLES / "03-01-03-02-01-01-02.flac"
    at.selectbox(key="p_sample").set_value(other).run()
    assert not at.exception and not errors(at)
    assert metric(at, "Emotion") == reference.predict_file(other).emotion


def test_audio_longer_than_a_window_gets_a_per_window_timeline(no_data, reference):
    from ser_core import audio

    y = np.concatenate([audio.load(SAMPLES / name) for name in
                        ("03-01-05-02-01-01-01.flac", "03-01-04-02-01-01-02.flac", "03-01-03-02-01-01-03.flac")])
    at = start_app()
    at.segmented_control(key="p_source").set_value("Upload").run()
    at.file_uploader(key="p_upload").set_value(("three.wav", wav_bytes(y), "audio/wav")).run()
    assert not at.exception and not errors(at)
    expected = reference.predict_array(audio.load(wav_bytes(y)), name="three.wav")
    assert len(expected.windows) > 1
    assert [t.label for t in at.tabs] == ["Waveform", "Mel spectrogram", "Model input", "Timeline"]
    windows = next(d.value for d in at.dataframe if "start (s)" in d.value.columns)
    assert windows["start (s)"].tolist() == [round(w.start, 2) for w in expected.windows]
    assert windows["emotion"].tolist() == [w.emotion or "no speech" for w in expected.windows]


def test_corrupt_upload_shows_one_line_error_and_the_page_stays_usable(no_data, reference):
    at = start_app()
    at.segmented_control(key="p_source").set_value("Upload").run()
    at.file_uploader(key="p_upload").set_value(("broken.wav", b"RIFF\x00\x00garbage" * 50, "audio/wav")).run()
    assert not at.exception
    (msg,) = errors(at)
    assert "not a decodable audio file" in msg and "\n" not in msg
    assert "upload that, or record" in msg                  # and what to do about it
    assert not [m for m in at.main.metric if m.label == "Emotion"]
    at.file_uploader(key="p_upload").set_value((CLIP.name, CLIP.read_bytes(), "audio/flac")).run()
    assert not errors(at)
    assert metric(at, "Emotion") == reference.predict_file(CLIP).emotion


def test_silent_and_too_quiet_recordings_say_no_speech(no_data):
    at = start_app()
    at.audio_input(key="p_record").set_value(("recording.wav", wav_bytes(np.zeros(48000)), "audio/wav")).run()
    assert not at.exception
    (msg,) = errors(at)
    assert msg.startswith("No speech detected")
    quiet = np.random.default_rng(0).uniform(-6e-4, 6e-4, 48000)          # about -70 dBFS: hiss, not speech
    at.audio_input(key="p_record").set_value(("recording.wav", wav_bytes(quiet), "audio/wav")).run()
    assert not at.exception and not errors(at)
    assert any(w.value.startswith("No speech detected") for w in at.warning)
    assert not [m for m in at.main.metric if m.label == "Emotion"]
    assert not at.get("download_button")                 # no JSON or CSV of an empty result


def test_audio_over_the_length_limit_is_refused_with_the_limit(no_data, monkeypatch):
    monkeypatch.setenv("SER_MAX_AUDIO_SECONDS", "2")
    at = start_app()
    at.segmented_control(key="p_source").set_value("Upload").run()
    at.file_uploader(key="p_upload").set_value((CLIP.name, CLIP.read_bytes(), "audio/flac")).run()
    assert not at.exception
    (msg,) = errors(at)
    assert "the limit is 2 s" in msg
    assert "2 MB" not in at.file_uploader(key="p_upload").label and "min)" in at.file_uploader(key="p_upload").label


# ----------------------------------------------------------------------------- train
def wait_for_history(at: AppTest, run_dir: Path, rows: int) -> str:
    """Rerun the page until its progress caption reports ``rows`` history rows (bounded)."""
    for _ in range(POLL_LIMIT):
        at.run()
        assert not at.exception, at.exception
        captions = [c.value for c in at.caption if "history rows" in c.value]
        if captions and int(captions[0].split("(")[-1].split()[0]) >= rows:
            return captions[0]
        state = runs.read_status(run_dir).get("state")
        assert state in runs.ACTIVE_STATES, f"run ended early ({state}): {runs.read_status(run_dir)}"
        time.sleep(1.0)
    raise AssertionError(f"no history rows after {POLL_LIMIT} reruns")


def test_train_watch_stop_open_and_promote_a_run(no_data, tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(DEFAULT, models / "default")
    monkeypatch.setenv("SER_MODELS_DIR", str(models))
    at = start_app("app_pages/train.py")
    dataset = at.selectbox(key="t_dataset")
    assert len(dataset.options) == 1 and "samples" in dataset.options[0].lower()
    assert at.selectbox(key="t_arch").value == "ser_crnn"          # the default, as in ser train
    at.selectbox(key="t_arch").set_value("seed000_cnn").run()       # its own option widgets appear
    at.number_input(key="t_epochs").set_value(300)
    at.number_input(key="t_patience").set_value(300)
    at.select_slider(key="t_batch").set_value(8)
    at.slider(key="t_channel_seed000_cnn").set_value(0.5)
    at.selectbox(key="t_profile").set_value("noisy")
    button(at, "Start training").click().run()
    assert not at.exception and not errors(at)
    (run,) = runs.list_runs()
    run_dir = Path(run["dir"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"] == "seed000_cnn" and config["dataset"] == f"ravdess:{SAMPLES}"
    assert config["epochs"] == 300
    assert (config["channel_aug"], config["channel_profile"], config["n_val_speakers"]) == (0.5, "noisy", 2)

    caption = wait_for_history(at, run_dir, 1)
    assert caption.startswith("Last epoch")
    assert len(runs.read_history(run_dir)) >= 1

    button(at, "Start training").click().run()                      # a second run while one is active
    assert any("only one run trains at a time" in e for e in errors(at))
    assert len(runs.list_runs()) == 1

    at.button(key="t_stop").click().run()
    status = runs.wait(run_dir, timeout=RUN_TIMEOUT)
    assert status["state"] == "stopped", status
    assert len(runs.read_history(run_dir)) < 300
    at.run()
    assert any(i.value.startswith("Stopped") for i in at.info)

    at.selectbox(key="t_pick").set_value(run_dir.name)
    at.button(key="t_open").click().run()
    assert not at.exception
    assert at.selectbox(key="e_source").value == f"run:{run_dir.name}"
    preds = pd.read_csv(run_dir / "predictions.csv")
    assert metric(at, "Accuracy") == f"{100 * (preds['true'] == preds['pred']).mean():.1f}%"

    at.switch_page("app_pages/train.py").run()
    at.selectbox(key="t_pick").set_value(run_dir.name)
    at.button(key="t_promote").click().run()
    assert not at.exception and not errors(at)
    assert runs.active_model_dir() == models / run_dir.name
    assert any(run_dir.name.replace("-", "\\-").replace("_", "\\_") in m.value for m in at.sidebar.markdown)
    at.button(key="t_reset").click().run()
    assert runs.active_model_dir() == models / "default"
    assert any("shipped default" in m.value for m in at.sidebar.markdown)


def test_train_form_mel_bands_reach_the_saved_model(no_data):
    at = start_app("app_pages/train.py")
    at.selectbox(key="t_arch").set_value("seed000_cnn").run()
    assert not [s for s in at.select_slider if s.label == "Mel bands"]     # its input stacks fixed rows
    at.selectbox(key="t_arch").set_value("ser_crnn").run()
    assert at.select_slider(key="t_mels_ser_crnn").value == 64
    at.number_input(key="t_epochs").set_value(1)
    at.select_slider(key="t_mels_ser_crnn").set_value(96)
    button(at, "Start training").click().run()
    assert not at.exception and not errors(at)
    (run,) = runs.list_runs()
    run_dir = Path(run["dir"])
    assert json.loads((run_dir / "config.json").read_text())["features"] == {"n_mels": 96}
    status = runs.wait(run_dir, timeout=RUN_TIMEOUT)
    assert status["state"] == "finished", status
    spec = json.loads((run_dir / "model" / "spec.json").read_text())
    assert spec["features"]["n_mels"] == 96 and spec["features"]["kind"] == "logmel"


def test_a_failed_run_shows_its_status_message(no_data):
    run_dir = no_data / "runs" / "20260101-000000-broken"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"arch": "seed000_cnn", "dataset": "ravdess"}))
    (run_dir / "status.json").write_text(json.dumps({"state": "failed", "message": "RAVDESS folder not found: /x"}))
    (run_dir / "log.txt").write_text("[00:00:00] failed: RAVDESS folder not found: /x\n")
    at = start_app("app_pages/train.py")
    assert any(e.startswith("Run failed: RAVDESS folder not found") for e in errors(at))
    assert "failed: RAVDESS folder not found" in at.code[0].value
    assert at.button(key="t_promote").disabled and at.button(key="t_open").disabled


# ----------------------------------------------------------------------------- evaluate
KNOWN = KNOWN_ROWS + [("03-01-04-02-01-01-04.flac", "ravdess-04", "female", "strong", "sad", "sad", 0.9)]


def test_evaluate_shows_the_metrics_of_a_known_predictions_file(no_data):
    run_dir = no_data / "runs" / "20260101-000000-known"
    run_dir.mkdir(parents=True)
    df = pd.DataFrame(KNOWN, columns=["file", "speaker", "gender", "intensity", "true", "pred", "confidence"])
    df.to_csv(run_dir / "predictions.csv", index=False)
    (run_dir / "config.json").write_text(json.dumps({"arch": "seed000_cnn", "protocol": "emobox6", "fold": 1}))
    (run_dir / "status.json").write_text(json.dumps({"state": "finished"}))
    (run_dir / "metrics.json").write_text(json.dumps({"protocol": "emobox6 fold 1 (speaker-independent)",
                                                      "speaker_independent": True,
                                                      "labels": ["neutral", "happy", "sad", "angry"]}))
    accuracy = (df["true"] == df["pred"]).mean()
    uar = np.mean([(g["pred"] == lab).mean() for lab, g in df.groupby("true")])
    at = start_app("app_pages/evaluate.py")
    at.selectbox(key="e_source").set_value(f"run:{run_dir.name}").run()
    assert not at.exception and not errors(at)
    assert metric(at, "Accuracy", "emobox6 fold 1") == f"{100 * accuracy:.1f}%" == "66.7%"
    assert metric(at, "UAR", "emobox6 fold 1") == f"{100 * uar:.1f}%"
    female = df[df["gender"] == "female"]
    assert metric(at, "Female accuracy") == f"{100 * (female['true'] == female['pred']).mean():.1f}%"
    assert any(c.value == "3 of 9 clips misclassified." for c in at.caption)
    assert at.selectbox(key="e_listen").value == "03-01-04-02-01-01-01.flac"     # most confident mistake
    assert any(el.type == "audio" for el in at.main.get("audio"))            # found in data/samples
    assert at.selectbox(key="e_compare").value.key == "default"             # compared with the shipped model
    table = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    accuracy_row = table[table["metric"] == "Accuracy"].iloc[0]
    assert accuracy_row.iloc[1] == pytest.approx(accuracy)


def test_evaluate_defaults_to_the_shipped_models_cross_validation(no_data):
    at = start_app("app_pages/evaluate.py")
    assert at.selectbox(key="e_source").value == "default"
    preds = pd.read_csv(DEFAULT / "predictions.csv")
    stored = json.loads((DEFAULT / "metrics.json").read_text())
    shown = metric(at, "Accuracy")
    assert shown == f"{100 * (preds['true'] == preds['pred']).mean():.1f}%" == f"{100 * stored['accuracy']:.1f}%"


def test_train_and_evaluate_pages_never_import_tensorflow(no_data):
    script = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "for page in ('app_pages/train.py', 'app_pages/evaluate.py'):\n"
        "    at = AppTest.from_file(page, default_timeout=120).run()\n"
        "    assert not at.exception, at.exception\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
