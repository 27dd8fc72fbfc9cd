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

from ser_core import resume, runs
from test_views import KNOWN_ROWS

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "streamlit_app.py"
SAMPLES = ROOT / "data" / "samples"
DEFAULT = ROOT / "models" / "default"          # the shipped default: a linear probe on Whisper's encoder
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
    """The app starts on the shipped default, the probe on Whisper's encoder: its answer, its card (the encoder and
    the four corpora) and, in the Model input tab, the vector its linear layer reads."""
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
    card = at.sidebar.markdown[0].value
    assert card.startswith("**shipped default**") and "One linear layer on the frozen encoder of Whisper" in card
    captions = [c.value for c in at.sidebar.caption]
    learnt = next(c for c in captions if c.startswith("Learnt from: "))
    assert set(learnt.removeprefix("Learnt from: ").split(", ")) == {"ravdess", "ased", "emovo", "urdu"}
    assert any("What the linear layer reads: Whisper's encoder" in c.value for c in at.caption)


def test_one_answer_to_most_recent_recordings_is_flagged_on_the_page(no_data, reference):
    """"It always says X on my voice": four earlier recordings of this session got the answer the clip gets,
    so uploading it makes five of five and the page says so; the same audio again is not counted twice, and
    answers given by another model do not count."""
    expected = reference.predict_file(CLIP).best
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)
    at.session_state["p_answers"] = {
        str(runs.active_model_dir()): {f"earlier-{i}": expected for i in range(3)} | {"earlier-3": expected},
        "some/other/model": {f"other-{i}": "sad" for i in range(8)}}
    at.run()
    at.segmented_control(key="p_source").set_value("Upload").run()
    at.file_uploader(key="p_upload").set_value((CLIP.name, CLIP.read_bytes(), "audio/flac")).run()
    assert not at.exception and not errors(at)
    warned = [w.value for w in at.warning if "recordings came out" in w.value]
    assert warned and warned[0].startswith(f"**5 of your last 5 recordings came out {expected}.**"), warned
    at.file_uploader(key="p_upload").set_value(("renamed.flac", CLIP.read_bytes(), "audio/flac")).run()
    warned = [w.value for w in at.warning if "recordings came out" in w.value]
    assert warned and warned[0].startswith("**5 of your last 5 recordings"), warned

    fresh = start_app()                                  # a new session: one recording says nothing yet
    fresh.segmented_control(key="p_source").set_value("Upload").run()
    fresh.file_uploader(key="p_upload").set_value((CLIP.name, CLIP.read_bytes(), "audio/flac")).run()
    assert not [w for w in fresh.warning if "recordings came out" in w.value]
    assert metric(fresh, "Emotion") == reference.predict_file(CLIP).emotion


def shipped_beside_default(tmp_path, monkeypatch, name: str):
    """A models folder of the default and the shipped models/<name> (links: nothing copied), made the app's."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "default").symlink_to(DEFAULT)
    (models / name).symlink_to(ROOT / "models" / name)
    monkeypatch.setenv("SER_MODELS_DIR", str(models))
    return models


def test_sidebar_picks_the_ravdess_ensemble_and_the_page_shows_what_its_networks_see(no_data, tmp_path,
                                                                                      monkeypatch):
    """The RAVDESS ensemble that was the default until session 36 (models/ravdess) stays a pick in the sidebar:
    its answer is its predictor's, its card names its five networks and RAVDESS alone, and the Model input tab
    shows what each network sees."""
    from ser_core.predict import load_predictor

    models = shipped_beside_default(tmp_path, monkeypatch, "ravdess")
    at = start_app()
    assert at.sidebar.selectbox[0].options == ["shipped default (active)", "ravdess"]
    at.sidebar.selectbox[0].set_value("ravdess").run()
    at.segmented_control(key="p_source").set_value("Upload").run()
    at.file_uploader(key="p_upload").set_value((CLIP.name, CLIP.read_bytes(), "audio/flac")).run()
    assert not at.exception and not errors(at)
    ensemble = load_predictor(models / "ravdess")
    want = ensemble.predict_file(CLIP)
    assert metric(at, "Emotion") == want.emotion and metric(at, "Confidence") == f"{100 * want.confidence:.1f}%"
    card = at.sidebar.markdown[0].value
    assert card.startswith("**ravdess**") and "Ensemble of ser" in card
    assert "Learnt from: ravdess" in [c.value for c in at.sidebar.caption]
    assert at.selectbox(key="p_input_member").options == ensemble.member_names
    assert any("What the network sees: the first window's features" in c.value for c in at.caption)


def test_sidebar_picks_the_model_of_this_session_only(no_data, tmp_path, monkeypatch, reference):
    from ser_core.predict import load_predictor

    models = shipped_beside_default(tmp_path, monkeypatch, "multicorpus")
    at = start_app()
    picker = at.sidebar.selectbox[0]
    assert picker.label == "Model" and picker.value == "default"
    assert picker.options == ["shipped default (active)", "multicorpus"]
    picker.set_value("multicorpus").run()
    at.segmented_control(key="p_source").set_value("Upload").run()
    at.file_uploader(key="p_upload").set_value((CLIP.name, CLIP.read_bytes(), "audio/flac")).run()
    assert not at.exception and not errors(at)
    other = load_predictor(models / "multicorpus").predict_file(CLIP)
    assert metric(at, "Confidence") == f"{100 * other.confidence:.1f}%"
    assert metric(at, "Confidence") != f"{100 * reference.predict_file(CLIP).confidence:.1f}%"
    assert at.sidebar.markdown[0].value.startswith("**multicorpus**")
    captions = [c.value for c in at.sidebar.caption]
    assert "Learnt from: ravdess, ased, emovo, urdu" in captions
    assert any(c.startswith("Accuracy · emobox6 6-fold CV, each corpus on its own emotions: ased 65.4%") for c in captions)
    assert sorted(p.name for p in models.iterdir()) == ["default", "multicorpus"]     # nothing written
    fresh = start_app()                                                  # another browser tab: still the default
    assert fresh.sidebar.selectbox[0].value == "default"
    at.sidebar.selectbox[0].set_value("default").run()                   # back to following the active model
    assert not at.exception and "model_picked" not in at.session_state


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
    corpora = at.multiselect(key="t_corpora")
    assert corpora.value == ["samples"] and len(corpora.options) == 1 and "samples" in corpora.options[0].lower()
    assert at.selectbox(key="t_arch").value == "seed004_dnn"                 # the form opens on the quick demo
    assert [s.value for s in at.main.subheader] == ["New run", "All runs"]
    at.selectbox(key="t_arch").set_value("seed000_cnn").run()                # its own option widgets appear
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
    assert (config["channel_aug"], config["channel_profile"], config["n_val_speakers"]) == (0.5, "noisy", 1)

    caption = wait_for_history(at, run_dir, 1)
    assert caption.startswith("Last epoch")
    assert len(runs.read_history(run_dir)) >= 1
    assert [s.value for s in at.main.subheader][:2] == ["Progress", "New run"]   # in sight above the form while it runs

    button(at, "Start training").click().run()                      # a second run while one is active
    assert any("only one run trains at a time" in e for e in errors(at))
    assert len(runs.list_runs()) == 1

    at.button(key="t_stop").click().run()
    status = runs.wait(run_dir, timeout=RUN_TIMEOUT)
    assert status["state"] == "stopped", status
    assert len(runs.read_history(run_dir)) < 300
    at.run()
    last = runs.read_history(run_dir)[-1]["epoch"]
    assert any(i.value.startswith(f"Stopped on request at epoch {last} of 300") for i in at.info)
    assert [s.value for s in at.main.subheader][:2] == ["Last run", "New run"]

    point = resume.read(run_dir)                                     # Resume: on from the last finished epoch
    assert point is not None and point.epoch in (last - 1, last)
    at.button(key="t_resume").click().run()
    assert not at.exception and not errors(at)
    wait_for_history(at, run_dir, point.epoch + 2)
    assert f"resumed after epoch {point.epoch}" in (run_dir / "log.txt").read_text()
    at.button(key="t_stop").click().run()
    assert runs.wait(run_dir, timeout=RUN_TIMEOUT)["state"] == "stopped"
    epochs = [h["epoch"] for h in runs.read_history(run_dir)]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= point.epoch + 2   # each epoch once
    at.run()
    last = epochs[-1]
    assert any(i.value.startswith(f"Stopped on request at epoch {last} of 300") for i in at.info)
    preds = pd.read_csv(run_dir / "predictions.csv")
    assert metric(at, "Test accuracy") == f"{100 * (preds['true'] == preds['pred']).mean():.1f}%"

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
    assert runs.active_model_dir() == models / "default"                   # nothing changes before the yes
    assert metric(at, "Accuracy now") == f"{100 * json.loads((DEFAULT / 'metrics.json').read_text())['accuracy']:.1f}%"
    assert any("different test sets" in w.value for w in at.warning)
    at.button(key="t_promote_no").click().run()
    assert runs.active_model_dir() == models / "default" and not [b for b in at.button if b.key == "t_promote_yes"]
    at.button(key="t_promote").click().run()
    at.button(key="t_promote_yes").click().run()
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


@pytest.fixture
def corpora(tmp_path, monkeypatch):
    """A data root of two corpora: RAVDESS (the sample clips) and a small ASED (sample audio under ASED names)."""
    root = tmp_path / "data"
    shutil.copytree(SAMPLES, root / "ravdess")
    (root / "ased").mkdir()
    for i, clip in enumerate(sorted(SAMPLES.glob("*.flac"))[:24]):
        gender, speaker = ("01", 10 + i % 3) if i % 2 else ("02", 20 + i % 3)
        (root / "ased" / f"{'nfhsa'[i % 5]}1-{i:02d}-01-{gender}-{speaker:02d}.flac").write_bytes(clip.read_bytes())
    monkeypatch.setenv("SER_DATA_DIR", str(root))
    return root


def test_train_presets_corpora_and_protocols(no_data, corpora):
    recipe = json.loads((ROOT / "training" / "recipes" / "multicorpus.json").read_text())["members"][0]
    at = start_app("app_pages/train.py")
    assert at.multiselect(key="t_corpora").options == ["ASED v1 (Amharic)", "RAVDESS speech (English (North American))",
                                                     "Bundled samples (32 RAVDESS clips, actors 1-4)"]
    assert at.multiselect(key="t_corpora").value == ["samples"]
    assert "t_adversary" not in [w.key for w in at.slider]      # one corpus: nothing for an adversary to hide
    assert "t_corpus_experts" not in [w.key for w in at.checkbox]
    assert at.selectbox(key="t_protocol").options == ["EmoBox 6-fold (speaker-independent)",
                                                      "Random clips (speaker-DEPENDENT)"]
    assert at.selectbox(key="t_fold_emobox6").options == ["fold 1 · 8 test clips", "fold 2 · 8 test clips",
                                                          "fold 4 · 8 test clips", "fold 5 · 8 test clips"]
    assert any(c.value.startswith("Expected here: about") for c in at.caption)
    button(at, "Shipped recipe").click().run()
    assert not at.exception and not errors(at)
    wanted = [c for c in recipe["dataset"].split("+") if c in ("ravdess", "ased")]
    assert at.multiselect(key="t_corpora").value == wanted
    arch = recipe["arch"]
    assert at.selectbox(key="t_arch").value == arch and at.number_input(key="t_epochs").value == recipe["epochs"]
    assert at.number_input(key="t_val").value == recipe["n_val_speakers"]
    assert at.slider(key=f"t_channel_{arch}").value == recipe["channel_aug"]
    assert at.selectbox(key="t_profile").value == recipe["channel_profile"]
    from ser_core.trainconfig import PROTOCOL_TITLES

    assert PROTOCOL_TITLES["loco"] in at.selectbox(key="t_protocol").options
    assert any("arch\\_params = " in c.value for c in at.caption)             # settings the form has no widget for
    at.selectbox(key="t_protocol").set_value("loco").run()
    assert at.selectbox(key="t_fold_loco").options == ["test corpus ravdess · 32 test clips",
                                                       "test corpus ased · 24 test clips"]
    at.selectbox(key="t_protocol").set_value("emobox6").run()
    at.number_input(key="t_epochs").set_value(2)
    assert at.checkbox(key="t_corpus_balance").value == recipe["corpus_balance"]
    assert "t_corpus_experts" in [w.key for w in at.checkbox]   # two corpora: so are corpus experts
    at.checkbox(key="t_corpus_experts").check()
    at.slider(key="t_adversary").set_value(0.5)                 # two corpora: the corpus adversary is offered
    button(at, "Start training").click().run()
    assert any("choose one" in e for e in errors(at))           # ... but not both at once: said, nothing starts
    assert runs.list_runs() == []
    at.checkbox(key="t_corpus_experts").uncheck()
    assert at.selectbox(key="t_balance_within").value == "emotion"
    at.selectbox(key="t_balance_within").set_value("corpus")
    button(at, "Start training").click().run()
    assert not at.exception and not errors(at)
    (run,) = runs.list_runs()
    config = json.loads((Path(run["dir"]) / "config.json").read_text())
    assert config["dataset"] in ("ravdess+ased", "ased+ravdess") and config["epochs"] == 2
    assert config["arch_params"] == recipe["arch_params"] and config["corpus_balance"] == recipe["corpus_balance"]
    assert config["adversary"] == 0.5 and config["balance_within"] == "corpus"
    runs.stop(Path(run["dir"]))              # (stopped while it starts, its process may end as "interrupted")
    assert runs.wait(Path(run["dir"]), timeout=RUN_TIMEOUT)["state"] in ("stopped", "finished", "interrupted")


def zip_of(files: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_bring_your_own_data_through_the_page(no_data, corpora):
    from test_userdata import variants

    at = start_app("app_pages/train.py")
    before = sorted(p.name for p in corpora.iterdir())
    bad = zip_of({f"happy/{n}": b for n, b in variants("happy", 10)} | {f"bored/{n}": b for n, b in variants("sad", 10)}
                 | {"happy/broken.wav": b"RIFF\x00garbage" * 30})
    at.file_uploader(key="t_upload").set_value(("mine.zip", bad, "application/zip")).run()
    assert not at.exception
    (msg,) = errors(at)
    assert msg.startswith("2 problem(s) in mine\\.zip; nothing is stored until they are fixed")
    assert "**unknown label**: 'bored'" in msg and "**unreadable file**: happy/broken\\.wav" in msg
    assert not [b for b in at.button if b.key == "t_import"]
    good = zip_of({f"Joy/{n}": b for n, b in variants("happy", 10)}
                  | {f"sadness/{n}": b for n, b in variants("sad", 10)})
    at.file_uploader(key="t_upload").set_value(("My Voices.zip", good, "application/zip")).run()
    assert not at.exception and not errors(at)
    assert any("speaker-DEPENDENT" in w.value.replace("\\", "") for w in at.warning)
    assert at.text_input(key="t_corpus_name").value == "my-voices"
    at.button(key="t_import").click().run()
    assert not at.exception and not errors(at)
    assert any(s.value.startswith("Stored 20 clips as corpus my-voices") for s in at.success)
    assert sorted(p.name for p in corpora.iterdir()) == sorted(before + ["my-voices"])
    assert "my-voices (your corpus, 20 clips, speakers unknown)" in at.multiselect(key="t_corpora").options


def test_uploads_need_a_folder_of_corpora(no_data, corpora, monkeypatch):
    monkeypatch.setenv("SER_DATA_DIR", str(corpora / "ravdess"))
    at = start_app("app_pages/train.py")
    assert any("uploads need SER\\_DATA\\_DIR to be a folder of corpora" in i.value for i in at.info)
    assert at.multiselect(key="t_corpora").options[0] == "RAVDESS speech (English (North American))"


def test_a_cross_validation_started_by_ser_cv_shows_its_folds(no_data):
    env = {**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-m", "ser_core", "cv", "--arch", "seed004_dnn", "--dataset",
                          f"ravdess:{SAMPLES}", "--folds", "1,2", "--epochs", "3", "--val-speakers", "1",
                          "--batch-size", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = runs.list_runs()
    cv_dir = Path(run["dir"])
    pooled = json.loads((cv_dir / "metrics.json").read_text())
    folds = [json.loads((cv_dir / f"fold-{f}" / "metrics.json").read_text()) for f in (1, 2)]
    at = start_app("app_pages/train.py")
    texts = [p.proto.text for p in at.get("progress")]
    assert texts == ["2 of 2 folds done · finished"]
    finished = "Finished all 2 folds; the metrics pool their out\\-of\\-fold predictions\\."
    assert any(s.value == finished for s in at.success)
    assert any(c.value == "Test accuracy of each finished fold: " + ", ".join(
        f"fold {i} {100 * m['accuracy']:.1f}%" for i, m in zip((1, 2), folds)) for c in at.caption)
    assert metric(at, "Test accuracy") == f"{100 * pooled['accuracy']:.1f}%"
    table = next(d.value for d in at.dataframe if "run" in d.value.columns)
    assert table.iloc[0]["epochs"] == "2/2 folds"


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_public_demo_serves_predict_and_evaluate_and_writes_nothing(no_data, tmp_path, monkeypatch, reference):
    models = tmp_path / "models"
    shutil.copytree(DEFAULT, models / "default")
    monkeypatch.setenv("SER_MODELS_DIR", str(models))
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    dead = no_data / "runs" / "20260101-000000-dead"                         # its process died mid-run
    dead.mkdir(parents=True)
    (dead / "config.json").write_text(json.dumps({"arch": "seed000_cnn", "dataset": "ravdess"}))
    (dead / "status.json").write_text(json.dumps({"state": "running", "pid": 2 ** 22 + 7, "pid_started": 1.0}))
    shutil.copy(DEFAULT / "predictions.csv", dead / "predictions.csv")
    monkeypatch.setenv("SER_PUBLIC_DEMO", "1")
    before = {d: tree(d) for d in (no_data, models)}
    at = start_app()
    with pytest.raises(ValueError, match="Known pages: .*predict.py.*evaluate.py'\\]"):
        at.switch_page("app_pages/train.py")
    assert any("Public demo" in c.value for c in at.sidebar.caption)
    at.segmented_control(key="p_source").set_value("Upload").run()
    at.file_uploader(key="p_upload").set_value((CLIP.name, CLIP.read_bytes(), "audio/flac")).run()
    assert not at.exception and not errors(at)
    assert metric(at, "Emotion") == reference.predict_file(CLIP).emotion
    at.switch_page("app_pages/evaluate.py").run()
    assert not at.exception and not errors(at)
    assert at.selectbox(key="e_source").value == "default"           # the served model's own evaluations only:
    # the probe heard every corpus, so no strangers: its recipe left out of each corpus, calibrated as shipped, and
    # its adapted mode's
    assert at.selectbox(key="e_source").options == [
        "Shipped default model (emobox6 6-fold CV)",
        "Shipped default model: each corpus left out, calibrated as shipped (RAVDESS, ASED, EMOVO, URDU)",
        "Shipped default model, adapted mode: each corpus left out, adapted from 20 of its clips"]
    assert {d: tree(d) for d in (no_data, models)} == before       # no run folder, model or upload written
    direct = AppTest.from_file(str(ROOT / "app_pages" / "train.py"), default_timeout=RUN_TIMEOUT).run()
    assert [e.value for e in direct.error] == ["This is a public demo: training is switched off."]


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
