"""What the Train page shows, computed without a browser: corpora and protocols for a pick, presets read from
the recipe file, expected durations from the measured results, why a run stopped, cross-validation progress,
what a promotion replaces, and the public demo mode's refusals."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import psutil
import pytest

from ser_app import views
from ser_core import datasets, models, runs, userdata
from ser_core.errors import ConfigError, RunError

from conftest import ROOT, SAMPLES
from test_userdata import make_zip, variants

RESULTS = ROOT / "training" / "results"


@pytest.fixture
def corpora_root(tmp_path, monkeypatch):
    """A data root of corpora: RAVDESS (the sample clips), a small fake ASED (sample audio under ASED names,
    3 speakers of each gender) and one imported user corpus."""
    root = tmp_path / "data"
    shutil.copytree(SAMPLES, root / "ravdess")
    (root / "ased").mkdir()
    clips = sorted(SAMPLES.glob("*.flac"))
    for i, clip in enumerate(clips[:24]):
        gender, speaker = ("01", 10 + i % 3) if i % 2 else ("02", 20 + i % 3)
        (root / "ased" / f"{'nfhsa'[i % 5]}1-{i:02d}-01-{gender}-{speaker:02d}.flac").write_bytes(clip.read_bytes())
    monkeypatch.setenv("SER_DATA_DIR", str(root))
    monkeypatch.delenv("SER_PUBLIC_DEMO", raising=False)
    zipped = make_zip({f"happy/{n}": b for n, b in variants("happy", 10)}
                      | {f"sad/{n}": b for n, b in variants("sad", 10)})
    userdata.import_corpus(zipped, "mycorpus", filename="mine.zip")
    return root


def test_corpora_under_the_data_root_and_the_spec_of_a_pick(corpora_root):
    choices = views.dataset_choices()
    assert [c.key for c in choices] == ["ased", "mycorpus", "ravdess", "samples"]
    labels = {c.key: c.label for c in choices}
    assert labels["ased"] == "ASED v1 (Amharic)"
    assert labels["mycorpus"] == "mycorpus (your corpus, 20 clips, speakers unknown)"
    assert views.dataset_spec(["ravdess", "ased", "mycorpus"], choices) == "ravdess+ased+mycorpus"
    assert views.dataset_spec(["samples"], choices) == f"ravdess:{SAMPLES}"
    with pytest.raises(ConfigError, match="RAVDESS or the bundled samples, not both"):
        views.dataset_spec(["ravdess", "samples"], choices)
    with pytest.raises(ConfigError, match="at least one corpus"):
        views.dataset_spec([], choices)
    df = datasets.load_dataset(views.dataset_spec(["ravdess", "ased", "mycorpus"], choices))
    assert set(df["corpus"]) == {"ravdess", "ased", "mycorpus"} and len(df) == 32 + 24 + 20
    assert views.dataset_title(f"ravdess:{SAMPLES}+ased") == "samples+ased"


def test_protocols_and_folds_that_make_sense_for_a_pick(corpora_root):
    samples = datasets.load_dataset(f"ravdess:{SAMPLES}")
    offered, why = views.protocol_choices(samples)
    assert offered == ["emobox6", "random"]
    assert why == {"speaker_kfold": "needs at least 5 speakers; the pick has 4",
                   "loco": "needs at least two corpora (train on the others, test on one)"}
    # the samples hold actors 1-4: only the EmoBox folds that test one of them are offered
    assert [f for f, _ in views.fold_choices(samples, "emobox6")] == [1, 2, 4, 5]
    assert views.fold_choices(samples, "emobox6")[0] == (1, "fold 1 · 8 test clips")
    both = datasets.load_dataset("ravdess+ased")
    offered, why = views.protocol_choices(both)
    assert offered == ["emobox6", "speaker_kfold", "loco", "random"] and not why
    assert views.fold_choices(both, "loco") == [(1, "test corpus ravdess · 32 test clips"),
                                                (2, "test corpus ased · 24 test clips")]
    ased = datasets.load_named("ased")
    offered, why = views.protocol_choices(ased)
    assert "emobox6" not in offered and why["emobox6"] == "needs RAVDESS in the pick (its folds are RAVDESS actors)"


def test_quick_run_keeps_some_speakers_of_every_corpus(corpora_root):
    df = datasets.load_dataset("ravdess+ased")
    quick = views.quick_speakers("emobox6", 1, df)
    assert quick[:8] == views.quick_speakers("emobox6", 1)          # RAVDESS part unchanged
    ased = [s for s in quick if s.startswith("ased-")]
    assert len(ased) == 6 and len(set(ased)) == 6
    kept = views.quick_subset(df, quick)
    assert set(kept["speaker"]) == {"ravdess-01", "ravdess-02", "ravdess-03", "ravdess-04"} | set(ased)
    assert views.quick_speakers("loco", 2, datasets.load_named("ased"))[0].startswith("ased-")


def test_presets_read_the_recipe_file(corpora_root, tmp_path):
    choices = views.dataset_choices()
    found = {p.key: p for p in views.presets(choices)}
    assert found["quick"].corpora == ("samples",) and found["quick"].settings["arch"] == "seed004_dnn"
    recipe = json.loads((ROOT / "training" / "recipes" / "multicorpus.json").read_text())["members"][0]
    shipped = found["recipe"]
    assert shipped.settings == {k: v for k, v in recipe.items() if k != "dataset"}
    wanted = recipe["dataset"].split("+")
    assert shipped.corpora == tuple(c for c in wanted if c in ("ravdess", "ased"))
    assert set(shipped.missing) == set(wanted) - {"ravdess", "ased"}
    own = tmp_path / "recipe.json"
    own.write_text(json.dumps({"members": [{"arch": "seed002_cnn_lstm", "dataset": "ravdess+mycorpus", "epochs": 7},
                                           {"arch": "ser_crnn"}]}))
    mine = {p.key: p for p in views.presets(choices, recipe=own)}["recipe"]
    assert mine.settings == {"arch": "seed002_cnn_lstm", "epochs": 7} and mine.corpora == ("ravdess", "mycorpus")
    assert "(member 1 of 2)" in mine.description and "seed002_cnn_lstm for 7 epochs" in mine.description
    assert [p.key for p in views.presets([c for c in choices if c.key == "ased"])] == ["recipe"]
    (nothing,) = views.presets([])                  # listed, with no corpora and a word on what it needs
    assert nothing.key == "recipe" and nothing.corpora == () and "None of its corpora" in nothing.description


def test_expected_durations_come_from_the_measured_results():
    bench = json.loads((RESULTS / "bench.json").read_text())
    costs = views.epoch_costs()
    crnn = bench["training"]["ser_crnn"]
    assert costs["ser_crnn"].seconds_per_clip == pytest.approx(
        crnn["epochs"]["project"]["median_ms"] / 1000 / crnn["train_clips"])
    assert "measured" in costs["ser_crnn"].source and "bench.json" in costs["ser_crnn"].source
    zoo = json.loads((RESULTS / "seed000_cnn.json").read_text())["cv"]
    assert costs["seed000_cnn"].seconds_per_clip == pytest.approx(zoo["wall_seconds"] / (6 * 30) / 1080)
    assert costs["seed000_cnn"].source.startswith("derived") and "seed000_cnn.json" in costs["seed000_cnn"].source
    assert set(costs) == set(models.names())
    floor = json.loads((RESULTS / "epoch_floor.json").read_text())["archs"]["ser_crnn"]
    fixed = floor["median_s"] - costs["ser_crnn"].seconds_per_clip * floor["train_clips"]
    assert costs["ser_crnn"].fixed == pytest.approx(max(fixed, 0.0))
    assert "epoch_floor.json" in costs["ser_crnn"].source
    est = views.duration_estimate("ser_crnn", 2000, 20, costs=costs, startup=10.0)
    assert est["per_epoch"] == pytest.approx(costs["ser_crnn"].fixed + costs["ser_crnn"].seconds_per_clip * 2000)
    assert est["seconds"] == pytest.approx(10.0 + 20 * est["per_epoch"])
    assert views.startup_seconds() == bench["train_process"]["launch_to_first_epoch_s"]
    table = views.durations_frame(costs)
    assert list(table["architecture"]) == models.names() and table["source"].str.len().gt(20).all()
    assert views.format_seconds(0.42) == "0.4 s" and views.format_seconds(125) == "2 min 05 s"
    assert views.format_seconds(7500) == "2 h 05 min"


def test_why_a_run_stopped():
    rows = [{"epoch": e, "val_accuracy": 0.3} for e in range(1, 28)]
    cfg = {"patience": 15, "epochs": 40}
    early = views.stop_reason({"state": "finished", "epoch": 27, "epochs": 40, "best_epoch": 12}, cfg, rows)
    assert early == ("Early stopping at epoch 27 of 40: validation accuracy had not improved for 15 epochs "
                     "(patience 15); the model of epoch 12, its best validation accuracy, was kept.")
    stopped = views.stop_reason({"state": "stopped", "epoch": 5, "epochs": 40, "best_epoch": 4}, cfg, rows[:5])
    assert stopped.startswith("Stopped on request at epoch 5 of 40; the model of epoch 4")
    full = views.stop_reason({"state": "finished", "epoch": 20, "epochs": 20}, {"epochs": 20},
                             [{"epoch": e, "accuracy": 0.5} for e in range(1, 21)])
    assert full == "Finished all 20 epochs; the last epoch's model was kept."
    assert views.stop_reason({"state": "running", "epoch": 3, "epochs": 20}, cfg, rows[:3]) is None


def fake_fold(d: Path, state: str, *, pid: int | None = None, epochs: int = 10, done: int = 0,
              accuracy: float | None = None, seconds: float | None = None) -> None:
    d.mkdir(parents=True)
    status = {"state": state, "epochs": epochs, "epoch": done, "first_epoch_seconds": 12.0}
    if pid:
        status |= {"pid": pid, "pid_started": psutil.Process(pid).create_time()}
    (d / "status.json").write_text(json.dumps(status))
    (d / "history.jsonl").write_text("".join(json.dumps({"epoch": e, "seconds": 5.0 if e > 1 else 12.0,
                                                         "accuracy": 0.4}) + "\n" for e in range(1, done + 1)))
    if accuracy is not None:
        (d / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "uar": accuracy, "train_seconds": seconds,
                                                    "protocol": "emobox6 fold 1 (speaker-independent)"}))


def test_cross_validation_progress_counts_folds_and_the_current_folds_epochs(tmp_path):
    cv = tmp_path / "cv"
    me = os.getpid()                            # this test process plays the live training process
    config = {"arch": "seed004_dnn", "dataset": "ravdess", "protocol": "emobox6", "cv_folds": [1, 2, 3]}
    fake_fold(cv / "fold-1", "finished", epochs=10, done=10, accuracy=0.5, seconds=100.0)
    fake_fold(cv / "fold-2", "running", pid=me, epochs=10, done=4)
    (cv / "config.json").write_text(json.dumps(config))
    status = {"state": "running", "pid": me, "pid_started": psutil.Process(me).create_time(), "folds": [1, 2, 3]}
    (cv / "status.json").write_text(json.dumps(status))
    p = views.cv_progress(cv, runs.read_status(cv), config)
    assert p["finished"][0]["fold"] == 1 and p["finished"][0]["accuracy"] == 0.5 and p["current"] == 2
    assert p["fraction"] == pytest.approx((1 + 0.4) / 3)
    assert p["eta"] == pytest.approx(5.0 * 6 + 100.0)        # this fold's 6 epochs, then one fold like fold 1
    assert p["text"] == "Fold 2 (2 of 3, 1 done) · epoch 4 of 10 · about 2 min 10 s left"
    row = views.runs_frame([{"id": "cv", "dir": str(cv), "config": config, "status": status, "metrics": None}])
    assert row.iloc[0]["epochs"] == "1/3 folds"
    done = {"state": "finished", "folds": [1, 2, 3]}
    assert views.cv_stop_reason(done, p) == "Finished all 3 folds; the metrics pool their out-of-fold predictions."


def test_promotion_preview_says_what_is_replaced(tiny_run, tmp_path, monkeypatch):
    models_dir = tmp_path / "models"
    shutil.copytree(ROOT / "models" / "default", models_dir / "default")
    monkeypatch.setenv("SER_MODELS_DIR", str(models_dir))
    preview = views.promotion_preview(tiny_run)
    assert preview["current"]["name"] == "shipped default" and preview["current"]["accuracy"] > 0.6
    new = preview["candidate"]
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert new["accuracy"] == metrics["accuracy"] and new["protocol"] == metrics["protocol"]
    assert any(n.startswith("The two accuracies come from different test sets (4902 clips") for n in preview["notes"])
    runs.promote(tiny_run)
    again = views.promotion_preview(tiny_run)
    assert any(f"models/{tiny_run.name}) is replaced" in n for n in again["notes"])
    assert again["current"]["name"] == tiny_run.name


def test_public_demo_refuses_every_write_and_reads_runs_without_writing(tiny_run, tmp_path, monkeypatch):
    models_dir = tmp_path / "models"
    shutil.copytree(ROOT / "models" / "default", models_dir / "default")
    monkeypatch.setenv("SER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("SER_RUNS_DIR", str(tmp_path / "runs"))
    dead = tmp_path / "runs" / "20260101-000000-dead"
    dead.mkdir(parents=True)
    (dead / "config.json").write_text(json.dumps({"arch": "seed000_cnn"}))
    (dead / "status.json").write_text(json.dumps({"state": "running", "pid": 2 ** 22 + 7, "pid_started": 1.0}))
    shutil.copy(tiny_run / "predictions.csv", dead / "predictions.csv")
    before = (dead / "status.json").read_bytes()
    monkeypatch.setenv("SER_PUBLIC_DEMO", "1")
    assert runs.read_status(dead)["state"] == "interrupted"
    assert (dead / "status.json").read_bytes() == before                  # reported, not written
    # the served model's own evaluations, no operator run listed
    assert [s.key for s in views.evaluation_sources()] == ["default", "loco-calibrated:default", "adapted:default"]
    for call, what in ((lambda: runs.start({"arch": "seed004_dnn"}), "training"),
                       (lambda: runs.promote(tiny_run), "promoting a model"),
                       (lambda: runs.reset_active(), "changing the active model"),
                       (lambda: runs.stop(dead), "stopping runs")):
        with pytest.raises(RunError, match=f"public demo \\(SER_PUBLIC_DEMO\\): {what} is switched off"):
            call()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [dead.name]
    assert sorted(p.name for p in models_dir.iterdir()) == ["default"]
    monkeypatch.delenv("SER_PUBLIC_DEMO")
    assert runs.read_status(dead)["state"] == "interrupted"
    assert json.loads((dead / "status.json").read_text())["state"] == "interrupted"     # full mode records it
    assert "run:20260101-000000-dead" in [s.key for s in views.evaluation_sources()]
