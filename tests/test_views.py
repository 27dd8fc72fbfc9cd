"""UI-free figure builders and data shaping behind the app's pages."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ser_core import models, runs, schema

from ser_app import views
from ser_core.config import EMOTIONS, FeatureConfig
from ser_core.predict import Prediction, Window

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "models" / "default"


def fake_prediction() -> Prediction:
    probs = [dict(zip(EMOTIONS, np.eye(8)[i] * 0.6 + 0.05)) for i in (4, 4, 2)]
    windows = [Window(float(s), float(s) + 3.0, max(p, key=p.get), 0.65, p) for s, p in zip((0, 1, 2), probs)]
    mean = {k: float(np.mean([p[k] for p in probs])) for k in EMOTIONS}
    return Prediction("take.wav", "angry", mean["angry"], mean, 5.0, windows)


def write_predictions(folder: Path, rows: list[tuple], protocol: str = "emobox6 fold 1 (speaker-independent)"):
    """A run folder with predictions.csv (file, speaker, gender, intensity, true, pred, confidence) + metrics.json."""
    folder.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows, columns=["file", "speaker", "gender", "intensity", "true", "pred", "confidence"])
    df.to_csv(folder / "predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({"protocol": protocol, "speaker_independent": True,
                                                     "labels": ["neutral", "happy", "sad", "angry"]}))
    return df


KNOWN_ROWS = [
    ("03-01-03-02-01-01-01.flac", "ravdess-01", "male", "strong", "happy", "happy", 0.9),
    ("03-01-04-02-01-01-01.flac", "ravdess-01", "male", "strong", "sad", "angry", 0.7),
    ("03-01-05-02-01-01-01.flac", "ravdess-01", "male", "strong", "angry", "angry", 0.8),
    ("03-01-01-01-01-01-02.flac", "ravdess-02", "female", "normal", "neutral", "sad", 0.4),
    ("03-01-03-02-01-01-02.flac", "ravdess-02", "female", "strong", "happy", "happy", 0.6),
    ("03-01-04-02-01-01-02.flac", "ravdess-02", "female", "strong", "sad", "sad", 0.5),
    ("03-01-05-02-01-01-02.flac", "ravdess-02", "female", "strong", "angry", "happy", 0.3),
    ("03-01-01-01-01-01-03.flac", "ravdess-03", "male", "normal", "neutral", "neutral", 0.7),
]


def test_probability_figure_shows_every_class_and_marks_the_winner():
    probs = dict(zip(EMOTIONS, [0.05, 0.05, 0.1, 0.1, 0.5, 0.1, 0.05, 0.05]))
    bar = views.probability_figure(probs, "angry").data[0]
    assert list(bar.y) == list(EMOTIONS)
    assert list(bar.x) == pytest.approx(list(probs.values()))
    colours = dict(zip(bar.y, bar.marker.color))
    assert colours["angry"] == views.EMOTION_COLOURS["angry"]
    assert colours["calm"].startswith("rgba(")


def test_waveform_envelope_keeps_the_true_extremes():
    rng = np.random.default_rng(0)
    y = rng.uniform(-0.3, 0.3, 48000).astype(np.float32)
    y[12345] = 0.9
    y[40000] = -0.8
    hi, lo = views.waveform_figure(y, 16000).data
    assert len(hi.x) <= 1600
    assert max(hi.y) == pytest.approx(0.9) and min(lo.y) == pytest.approx(-0.8)


def test_mel_spectrogram_peaks_in_the_band_of_a_tone():
    cfg = FeatureConfig()
    t = np.arange(32000) / 16000
    y = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    db, times, freqs = views.mel_db(y, cfg)
    assert db.shape == (64, 1 + 32000 // cfg.hop_length)
    assert db.max() == pytest.approx(0.0) and db.min() >= -80.0
    peak_band = int(np.argmax(db.mean(axis=1)))
    assert abs(freqs[peak_band] - 1000) < 150
    assert times[1] == pytest.approx(cfg.hop_length / 16000)
    heat = views.mel_figure(y, cfg).data[0]
    assert heat.colorscale[0][1] not in {f"#00000{i}" for i in range(10)}


def test_model_input_figure_has_one_heatmap_per_channel_and_bars_for_statistics():
    x = np.random.default_rng(1).normal(size=(32, 94, 2)).astype(np.float32)
    fig = views.model_input_figure(x, FeatureConfig(kind="seed000"))
    assert [tr.type for tr in fig.data] == ["heatmap", "heatmap"]
    np.testing.assert_array_equal(np.asarray(fig.data[1].z), x[..., 1])
    assert "MFCC" in fig.layout.annotations[1].text
    stats = views.model_input_figure(np.arange(68, dtype=np.float32), FeatureConfig(kind="stats"))
    assert stats.data[0].type == "bar" and len(stats.data[0].y) == 68


def test_timeline_and_exports_carry_every_window():
    pred = fake_prediction()
    fig = views.timeline_figure(pred.windows, list(EMOTIONS))
    angry = next(tr for tr in fig.data if tr.name == "angry")
    assert list(angry.x) == [1.5, 2.5, 3.5]
    assert list(angry.y) == pytest.approx([0.65, 0.65, 0.05])
    record = json.loads(views.prediction_json(pred, {"name": "m", "arch": "a", "created": "d", "accuracy": 1}))
    assert record["emotion"] == "angry" and len(record["windows"]) == 3
    assert record["model"] == {"name": "m", "arch": "a", "created": "d"}
    table = pd.read_csv(io.StringIO(views.prediction_csv(pred)))
    assert list(table["scope"]) == ["overall", "window", "window", "window"]
    assert list(table["emotion"]) == ["angry", "angry", "angry", "happy"]
    assert table.filter(like="p_").sum(axis=1).tolist() == pytest.approx([1.0] * 4)


def test_progress_eta_is_the_median_recent_epoch_time_times_remaining_epochs():
    rows = [{"epoch": 1, "seconds": 30.0}, {"epoch": 2, "seconds": 4.0}]       # epoch 1 also builds the graph
    info = views.progress_info({"state": "running", "epochs": 10}, rows)
    assert info["fraction"] == pytest.approx(0.2)
    assert info["eta"] == pytest.approx(4.0 * 8)
    assert info["text"].startswith("Epoch 2 of 10")
    assert "about 32 s left" in info["text"] and "at most" not in info["text"]      # no validation: no early stop
    first = views.progress_info({"state": "running", "epochs": 10}, rows[:1])
    assert first["eta"] is None and "time left known after epoch 2" in first["text"]
    done = views.progress_info({"state": "finished", "epochs": 2}, rows)
    assert done["eta"] is None and done["fraction"] == 1.0


def test_time_left_does_not_swing_with_one_slow_epoch():
    times = [40.0, 5.0, 5.2, 4.9, 25.0, 5.1, 5.0, 4.8]                       # a slow first epoch, one hiccup
    rows = [{"epoch": i + 1, "seconds": t, "val_accuracy": 0.3} for i, t in enumerate(times)]
    etas = [views.progress_info({"state": "running", "epochs": 20}, rows[:n])["eta"] / (20 - n)
            for n in range(2, len(rows) + 1)]
    assert max(etas) <= 5.2 and min(etas) >= 4.9                               # per remaining epoch: steady
    info = views.progress_info({"state": "running", "epochs": 20}, rows)
    assert "at most about" in info["text"]                                     # early stopping may end it sooner
    members = [{"epoch": e, "member": m, "seconds": 2.0} for m in (1, 2) for e in (1, 2, 3)][:5]
    ens = views.progress_info({"state": "running", "epochs": 3, "member": 2, "members": 2}, members)
    assert ens["fraction"] == pytest.approx(5 / 6) and ens["text"].startswith("Epoch 2 of 3 · member 2 of 2")
    assert ens["eta"] == pytest.approx(2.0)


def test_curves_figure_plots_train_and_validation_per_epoch():
    rows = [{"epoch": e, "accuracy": 0.1 * e, "val_accuracy": 0.05 * e, "loss": 2 - 0.1 * e,
             "val_loss": 2.1 - 0.1 * e} for e in (1, 2, 3)]
    fig = views.curves_figure(rows)
    assert len(fig.data) == 4
    assert list(fig.data[1].y) == pytest.approx([0.05, 0.1, 0.15])
    assert fig.data[1].xaxis == "x" and fig.data[3].xaxis == "x2"


def test_quick_run_keeps_the_fold_test_actors_plus_two_of_each_gender():
    spk = [int(s) for s in views.quick_speakers("emobox6", 1)]
    assert {1, 11, 20, 21} <= set(spk) and len(spk) == 8
    others = [a for a in spk if a not in (1, 11, 20, 21)]
    assert sorted(a % 2 for a in others) == [0, 0, 1, 1]
    assert views.quick_speakers("speaker_kfold", 2) == tuple(f"{a:02d}" for a in range(1, 9))


def test_dataset_choices_only_offer_configured_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_DATA_DIR", str(tmp_path / "missing"))
    assert [c.key for c in views.dataset_choices()] == ["samples"]
    (tmp_path / "corpus" / "Actor_01").mkdir(parents=True)
    monkeypatch.setenv("SER_DATA_DIR", str(tmp_path / "corpus"))
    choices = views.dataset_choices()
    assert [c.key for c in choices] == ["ravdess", "samples"]
    assert choices[0].spec == "ravdess" and choices[1].spec == f"ravdess:{views.samples_dir()}"


def test_load_source_recomputes_metrics_from_predictions(tmp_path):
    df = write_predictions(tmp_path / "run", KNOWN_ROWS)
    source = views.EvalSource("run:x", "x", str(tmp_path / "run"))
    _, metrics = views.load_source(source)
    acc = float((df["true"] == df["pred"]).mean())
    assert metrics["accuracy"] == pytest.approx(acc) == pytest.approx(5 / 8)
    cards = views.metric_cards(metrics)
    assert cards[0][:2] == ("Accuracy", "62.5%") and cards[0][3] == "emobox6 fold 1"
    assert metrics["labels"] == ["neutral", "happy", "sad", "angry"]
    z = np.asarray(views.confusion_figure(metrics).data[0].z)
    assert z.sum(axis=1) == pytest.approx([1, 1, 1, 1])
    assert metrics["per_gender"]["female"]["accuracy"] == pytest.approx(2 / 4)


def test_misclassified_table_filters_and_sorts_by_confidence():
    df = pd.DataFrame(KNOWN_ROWS, columns=["file", "speaker", "gender", "intensity", "true", "pred", "confidence"])
    wrong = views.misclassified_frame(df)
    assert list(wrong["confidence"]) == [0.7, 0.4, 0.3]
    assert list(views.filter_misclassified(wrong, speakers=["ravdess-02"])["true"]) == ["neutral", "angry"]
    assert list(views.filter_misclassified(wrong, pred=["angry"])["file"]) == ["03-01-04-02-01-01-01.flac"]
    assert views.filter_misclassified(wrong, min_confidence=0.5)["confidence"].tolist() == [0.7]


def test_audio_lookup_is_by_bare_file_name_only(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    clip = tmp_path / "Actor_01" / "03-01-05-02-01-01-01.flac"
    clip.write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not audio")
    index = views.audio_index([tmp_path])
    assert views.find_audio("03-01-05-02-01-01-01.flac", index) == clip
    assert views.find_audio("../../Actor_01/03-01-05-02-01-01-01.flac", index) == clip
    assert views.find_audio("notes.txt", index) is None
    assert views.find_audio("/etc/passwd", index) is None


def test_compare_and_metric_exports(tmp_path):
    write_predictions(tmp_path / "a", KNOWN_ROWS)
    write_predictions(tmp_path / "b", [r[:5] + (r[4], 1.0) for r in KNOWN_ROWS])   # every clip right
    _, ma = views.load_source(views.EvalSource("a", "a", str(tmp_path / "a")))
    _, mb = views.load_source(views.EvalSource("b", "b", str(tmp_path / "b")))
    table = views.compare_frame(ma, mb, "A", "B").set_index("metric")
    assert table.loc["Accuracy", "difference"] == pytest.approx(1 - 5 / 8)
    assert table.loc["female accuracy", "B"] == 1.0
    flat = pd.read_csv(io.StringIO(views.metrics_csv(ma)))
    row = flat[(flat["scope"] == "overall") & (flat["metric"] == "accuracy")]
    assert row["value"].item() == pytest.approx(5 / 8)
    assert set(flat["protocol"]) == {"emobox6 fold 1 (speaker-independent)"}
    assert json.loads(views.metrics_json(ma))["accuracy"] == pytest.approx(5 / 8)


def test_charts_export_as_html_and_png(tmp_path):
    figs = {"bars": views.probability_figure(dict(zip(EMOTIONS, [0.125] * 8))),
            "curves": views.curves_figure([{"epoch": 1, "accuracy": 0.5, "loss": 1.0}])}
    with zipfile.ZipFile(io.BytesIO(views.figures_html_zip(figs))) as z:
        assert sorted(z.namelist()) == ["bars.html", "curves.html"]
        assert b"plotly" in z.read("bars.html")
    pytest.importorskip("kaleido")
    with zipfile.ZipFile(io.BytesIO(views.figures_png_zip(figs, width=300, height=200))) as z:
        assert sorted(z.namelist()) == ["bars.png", "curves.png"]
        assert z.read("bars.png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_summary_reads_the_default_models_files():
    info = views.model_summary(DEFAULT)
    stored = json.loads((DEFAULT / "metrics.json").read_text())
    assert info["name"] == "shipped default" and info["is_default"]
    assert info["accuracy"] == stored["accuracy"]
    assert info["protocol"] == stored["protocol"]


def test_ensemble_title_tells_members_of_one_architecture_apart_by_their_features(tmp_path):
    crnn = models.get("ser_crnn").features.to_dict()
    members = {"ser_crnn": crnn, "ser_crnn-2": {**crnn, "n_mels": 128, "fmax": 7000.0}, "seed004_dnn": None}
    for name, feats in members.items():
        (tmp_path / "members" / name).mkdir(parents=True)
        if feats:
            spec = {"arch": "ser_crnn", "features": feats}
            (tmp_path / "members" / name / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "spec.json").write_text(json.dumps({"arch": "ensemble", "extra": {
        "members": list(members), "member_archs": ["ser_crnn", "ser_crnn", "seed004_dnn"]}}))
    assert views.model_summary(tmp_path)["title"] == (
        "Ensemble of ser_crnn + ser_crnn (fmax 7000.0, n_mels 128) + seed004_dnn (mean of their probabilities)")


def test_evaluation_sources_list_default_then_runs_with_predictions(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    monkeypatch.setenv("SER_RUNS_DIR", str(runs_dir))
    for name, with_preds in (("20260101-000000-a", True), ("20260101-000001-b", False)):
        (runs_dir / name).mkdir()
        (runs_dir / name / "config.json").write_text("{}")
        (runs_dir / name / "status.json").write_text(json.dumps({"state": "finished"}))
        if with_preds:
            write_predictions(runs_dir / name, KNOWN_ROWS)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    monkeypatch.setenv("SER_MODELS_DIR", str(models_dir))
    (models_dir / "default").symlink_to(DEFAULT)
    (models_dir / "multicorpus").symlink_to(ROOT / "models" / "multicorpus")
    (models_dir / "ravdess").symlink_to(ROOT / "models" / "ravdess")
    (models_dir / ".20260101-000000-a.tmp").symlink_to(DEFAULT)       # a promotion still being copied
    (models_dir / "notes").mkdir()                                    # not a model
    assert [d.name for d in runs.model_dirs()] == ["default", "multicorpus", "ravdess"]
    sources = views.evaluation_sources()
    # the default (a probe that heard every corpus) has no stranger table but its recipe left out of each corpus,
    # calibrated as shipped; the RAVDESS ensemble has a stranger table
    # ... and its adapted mode's recipe left out of each corpus (session 39)
    assert [s.key for s in sources] == ["default", "loco-calibrated:default", "adapted:default", "model:multicorpus",
                                        "model:ravdess", "strangers:ravdess", "run:20260101-000000-a"]
    assert sources[5].calibrated and sources[5].predictions.name == "strangers_default.csv.gz"   # made as the default
    assert sources[5].title == "Model ravdess on voices it never heard (ASED, EMOVO, URDU)"
    assert sources[1].calibrated and sources[1].predictions == models_dir / "default" / schema.LOCO_CALIBRATION_TABLE
    assert sources[1].protocol.startswith("loco") and sources[1].title.startswith("Shipped default model: each corpus")
    assert sources[2].calibrated and sources[2].predictions == models_dir / "default" / schema.ADAPTED_TABLE
    assert sources[2].protocol.startswith("loco") and "adapted mode" in sources[2].title
    assert sources[3].title.startswith("Model multicorpus (emobox6")
    (models_dir / schema.ACTIVE).write_text(json.dumps({"model": "multicorpus"}))
    assert views.evaluation_sources()[3].title.startswith("Active model multicorpus (")
    for record in ({"table": "training/results/no-such-table.csv", "corpora": {"ased": {}}}, {"table": 3}, []):
        (tmp_path / "copy").mkdir(exist_ok=True)                  # a table gone, or a malformed record
        (tmp_path / "copy" / schema.STRANGERS).write_text(json.dumps(record))
        (tmp_path / "copy" / schema.LOCO_CALIBRATION).write_text(json.dumps(record))
        (tmp_path / "copy" / schema.ADAPTED).write_text(json.dumps(record))
        assert views.stranger_source(tmp_path / "copy", "Model copy") is None
        assert views.loco_calibration_source(tmp_path / "copy", "Model copy") is None
        assert views.adapted_source(tmp_path / "copy", "Model copy") is None


def test_runs_table_rows():
    run = {"id": "r1", "dir": "/x", "config": {"arch": "seed000_cnn", "protocol": "emobox6", "fold": 2,
                                               "dataset": f"ravdess:{views.samples_dir()}", "epochs": 5},
           "status": {"state": "stopped", "epoch": 3, "epochs": 5, "best_val_accuracy": 0.4,
                      "message": "stopped on request"},
           "metrics": {"protocol": "emobox6 fold 2 (speaker-independent)", "accuracy": 0.25}}
    row = views.runs_frame([run]).iloc[0]
    assert row["dataset"] == "samples" and row["protocol"] == "emobox6 fold 2"
    assert row["epochs"] == "3/5" and row["best val acc"] == 0.4 and row["test acc"] == 0.25


def test_short_protocol_reads_the_record_and_old_label_only_metrics_and_markdown_escaping():
    cv = schema.cv_protocol("emobox6", [1, 2, 3, 4, 5, 6], speaker_independent=True)
    assert views.short_protocol(cv) == "emobox6 6-fold CV"
    assert views.metrics_protocol({"protocol": "something else", "protocol_info": cv}) == "emobox6 6-fold CV"
    # metrics.json files written before the record: the label alone
    assert views.metrics_protocol({"protocol": cv["label"]}) == "emobox6 6-fold CV"
    assert views.metrics_protocol({"protocol": "random fold 1 (speaker-DEPENDENT)"}) == \
        "random fold 1, speaker-dependent"
    assert views.metrics_protocol({}) == "unknown protocol"
    assert views.md_escape("[x](http://e) *b*") == r"\[x\]\(http://e\) \*b\*"


def test_a_running_cross_validation_names_its_protocol_from_its_config():
    run = {"id": "r1", "dir": "/x", "config": {"arch": "seed004_dnn", "protocol": "random", "cv_folds": [1]},
           "status": {"state": "running", "epoch": 1, "epochs": 5}, "metrics": None}
    assert views.runs_frame([run]).iloc[0]["protocol"] == "random 1-fold CV, speaker-dependent"
