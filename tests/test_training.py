"""A real (tiny) training run: its artefacts, its honesty, stopping it, cross-validation."""
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ser_core import datasets, evaluation, features, runs, schema
from ser_core.cache import corpus_features
from ser_core.config import ModelSpec
from ser_core.training import Logger, TrainConfig, cross_validate

from conftest import SAMPLES


def test_run_directory_is_complete(tiny_run):
    for name in ("config.json", "status.json", "history.jsonl", "log.txt", "metrics.json", "predictions.csv",
                 "model/spec.json", "model/model.keras", "checkpoint/best.keras"):
        assert (tiny_run / name).exists(), name
    status = runs.read_status(tiny_run)
    assert status["state"] == "finished" and status["epoch"] == 3
    history = runs.read_history(tiny_run)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all({"accuracy", "loss", "val_accuracy", "val_loss", "lr", "seconds"} <= set(h) for h in history)
    assert not list(tiny_run.rglob("*.tmp*"))


def test_test_set_is_the_held_out_speaker_only(tiny_run):
    preds = pd.read_csv(tiny_run / "predictions.csv")
    assert set(preds["speaker"]) == {"ravdess-01"} and len(preds) == 8
    np.testing.assert_allclose(preds.filter(like="p_").sum(axis=1), 1.0, atol=1e-4)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx((preds["true"] == preds["pred"]).mean())
    assert metrics["speaker_independent"] is True
    assert metrics["protocol_info"] == schema.protocol_record("custom", [1], speaker_independent=True,
                                                               cross_validation=False, label=metrics["protocol"])


def test_status_and_metrics_name_the_best_validation_accuracy_alike(tiny_run):
    best = max(h["val_accuracy"] for h in runs.read_history(tiny_run))
    metrics = json.loads((tiny_run / schema.METRICS).read_text())
    assert runs.read_status(tiny_run)[schema.BEST_VAL_ACCURACY] == pytest.approx(best)
    assert metrics[schema.BEST_VAL_ACCURACY] == pytest.approx(best)


def test_normalisation_stats_come_from_training_speakers_only(tiny_run):
    """Recompute the stats from the training clips alone: they must equal the saved ones."""
    spec = ModelSpec.load(tiny_run / "model" / "spec.json")
    df = datasets.load_ravdess(SAMPLES)
    val_speakers = set(df["speaker"]) - {"ravdess-01"} - _train_speakers(tiny_run)
    assert len(val_speakers) == 1
    train = df[df["speaker"].isin(_train_speakers(tiny_run))]
    x = corpus_features(train["path"].tolist(), spec.features, workers=1).x
    # the run also added augmented copies of its minority class (neutral); recompute without them is
    # not equal, so compare against the clean clips within a tolerance the copies cannot exceed, and
    # check the test speaker's features would move the mean further than that
    mean, _ = features.norm_stats(x)
    saved = np.asarray(spec.norm_mean, np.float32)
    test = df[df["speaker"] == "ravdess-01"]
    xt = corpus_features(test["path"].tolist(), spec.features, workers=1).x
    leaky, _ = features.norm_stats(np.concatenate([x, xt]))
    assert np.abs(saved - mean).mean() < np.abs(leaky - mean).mean()


def _train_speakers(run_dir):
    log = (run_dir / "log.txt").read_text()
    assert "train" in log
    cfg = json.loads((run_dir / "config.json").read_text())
    df = datasets.load_ravdess(SAMPLES)
    from ser_core import splits

    s = splits.make_split(df, cfg["protocol"], cfg["fold"], n_val=cfg["n_val_speakers"], seed=cfg["seed"],
                          test_speakers=cfg["test_speakers"])
    return set(df["speaker"].iloc[s.train])


def test_background_run_streams_history_and_stops_cleanly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)              # the data path is relative to where `ser train --background` runs
    (tmp_path / "clips").symlink_to(SAMPLES)
    cfg = TrainConfig(dataset="ravdess:clips", arch="seed004_dnn", test_speakers=("ravdess-01",),
                      n_val_speakers=1, epochs=500, batch_size=4, patience=1000, workers=1).resolved()
    run_dir = runs.start(cfg.to_dict(), root=tmp_path)
    with pytest.raises(Exception, match="only one run"):
        runs.start(cfg.to_dict(), root=tmp_path)
    deadline = time.monotonic() + 240
    while len(runs.read_history(run_dir)) < 2:
        assert runs.read_status(run_dir)["state"] in runs.ACTIVE_STATES, (run_dir / "log.txt").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.3)
    runs.stop(run_dir)
    status = runs.wait(run_dir, timeout=120)
    assert status["state"] == "stopped"
    n = len(runs.read_history(run_dir))
    assert 2 <= n < 500
    assert (run_dir / "model" / "model.keras").exists() and (run_dir / "predictions.csv").exists()


def test_failed_run_says_why(tmp_path):
    cfg = TrainConfig(dataset=str(tmp_path / "no-such-folder"), arch="seed004_dnn").to_dict()
    run_dir = runs.start(cfg, root=tmp_path)
    status = runs.wait(run_dir, timeout=120)
    assert status["state"] == "failed"
    assert "not found" in status["message"]


def test_unknown_setting_is_refused():
    with pytest.raises(Exception, match="unknown training setting"):
        TrainConfig.from_dict({"arch": "seed000_cnn", "epochz": 3})
    with pytest.raises(Exception, match="unknown architecture"):
        TrainConfig(arch="nope").resolved()
    with pytest.raises(Exception, match="unknown channel profile"):
        TrainConfig(arch="seed004_dnn", channel_aug=0.5, channel_profile="cafe").resolved()


def test_runs_saved_before_channel_profiles_read_as_the_first_profile():
    assert TrainConfig.from_dict({"arch": "ser_crnn", "channel_aug": 0.3}).channel_profile == "v1"


def test_cross_validation_pools_out_of_fold_predictions(tmp_path):
    base = TrainConfig(dataset=f"ravdess:{SAMPLES}", arch="seed004_dnn", protocol="speaker_kfold", k=2,
                       n_val_speakers=1, epochs=2, batch_size=8, workers=1)
    metrics = cross_validate(base, tmp_path / "cv", log=Logger(None, to_file=False, echo=False))
    preds = pd.read_csv(tmp_path / "cv" / "predictions.csv")
    assert len(preds) == 32 and preds["file"].is_unique
    assert preds.groupby("speaker")["fold"].nunique().eq(1).all()
    assert sorted(preds["fold"].unique()) == [1, 2]
    labels = [c[2:] for c in preds.columns if c.startswith("p_")]
    again = evaluation.evaluate(preds, labels)
    assert metrics["accuracy"] == pytest.approx(again["accuracy"])
    assert metrics["uar"] == pytest.approx(again["uar"])
    assert set(metrics["per_fold"]) == {"1", "2"}
    assert "speaker_kfold 2-fold cross-validation" in metrics["protocol"]
    assert metrics["protocol_info"] == schema.cv_protocol("speaker_kfold", [1, 2], speaker_independent=True)
    assert json.loads((tmp_path / "cv" / "metrics.json").read_text())["protocol_info"] == metrics["protocol_info"]


def test_channel_augmentation_adds_copies_of_training_clips_only(tmp_path):
    from ser_core.training import train

    cfg = TrainConfig(dataset=f"ravdess:{SAMPLES}", arch="seed004_dnn", test_speakers=("ravdess-01",),
                      n_val_speakers=1, epochs=1, batch_size=8, channel_aug=0.5, workers=1)
    train(tmp_path, cfg, log=Logger(tmp_path, to_file=True, echo=False))
    log = (tmp_path / "log.txt").read_text()
    assert "channel augmentation: 8 copies" in log          # half of the 16 training clips
    assert "on 24 clips, validating on 8" in log             # 16 + 8 train, validation untouched
    assert len(pd.read_csv(tmp_path / "predictions.csv")) == 8


def test_resumed_cross_validation_keeps_finished_folds_and_trains_the_rest(tmp_path):
    base = TrainConfig(dataset=f"ravdess:{SAMPLES}", arch="seed004_dnn", protocol="speaker_kfold", k=2,
                       n_val_speakers=1, epochs=2, batch_size=8, workers=1)
    quiet = Logger(None, to_file=False, echo=False)
    out = tmp_path / "cv"
    first = cross_validate(base, out, log=quiet)
    kept = (out / "fold-1" / "model" / "model.keras").stat().st_mtime_ns
    runs.write_status(out / "fold-2", "running")                     # fold 2 was interrupted
    (out / "fold-2" / "metrics.json").unlink()
    again = cross_validate(base, out, log=Logger(out, to_file=True, echo=False), resume=True)
    assert (out / "fold-1" / "model" / "model.keras").stat().st_mtime_ns == kept
    assert runs.read_status(out / "fold-2")["state"] == "finished"
    assert "fold 1: kept the finished run" in (out / "log.txt").read_text()
    assert "fold 2: kept" not in (out / "log.txt").read_text()
    assert len(pd.read_csv(out / "predictions.csv")) == 32
    assert again["per_fold"]["1"] == first["per_fold"]["1"]
    cross_validate(dataclasses.replace(base, epochs=1), out, log=quiet, resume=True)
    assert (out / "fold-1" / "model" / "model.keras").stat().st_mtime_ns != kept  # other settings: retrained
    assert runs.read_status(out / "fold-1")["epoch"] == 1


def test_cross_validation_in_two_processes_trains_each_fold_in_its_own_pinned_process(tmp_path, monkeypatch):
    base = TrainConfig(dataset=f"ravdess:{SAMPLES}", arch="seed004_dnn", protocol="speaker_kfold", k=2,
                       n_val_speakers=1, epochs=2, batch_size=8, workers=1)
    monkeypatch.chdir(tmp_path)               # an --out relative to where ser cv runs, not to the project
    out = Path("cv")
    out.mkdir()
    metrics = cross_validate(base, out, log=Logger(out, to_file=True, echo=False), processes=2)
    n = min(2, len(os.sched_getaffinity(0)))
    log = (out / "log.txt").read_text()
    assert f"training folds 1, 2 in {n} processes at once" in log
    if n == 2:
        assert "on cores " in log and "fold 1: started in its own process on cores" in log
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 32 and preds["file"].is_unique and sorted(preds["fold"].unique()) == [1, 2]
    assert set(metrics["per_fold"]) == {"1", "2"} and "speaker_kfold 2-fold" in metrics["protocol"]
    for fold in (1, 2):
        fold_dir = out / f"fold-{fold}"
        status = runs.read_status(fold_dir)
        assert status["state"] == "finished" and status["pid"] != os.getpid()      # trained by another process
        assert "epoch 2/2" in (fold_dir / "log.txt").read_text()
        assert f"fold {fold}: finished" in log
    kept = (out / "fold-1" / "model" / "model.keras").stat().st_mtime_ns
    again = cross_validate(base, out, log=Logger(out, to_file=True, echo=False), resume=True, processes=2)
    assert (out / "fold-1" / "model" / "model.keras").stat().st_mtime_ns == kept         # nothing retrained
    assert again["accuracy"] == metrics["accuracy"]
    assert "fold 2: kept the finished run" in (out / "log.txt").read_text()


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_a_stopped_or_killed_cross_validation_in_processes_stops_its_folds(tmp_path, signal_name):
    """SIGTERM (`ser stop`) is passed on to the running folds, whose stopped predictions are pooled; after a
    SIGKILL no fold trains on as an orphan: each gets SIGTERM from the kernel and stops cleanly."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "cv"
    parent = subprocess.Popen([sys.executable, "-m", "ser_core", "cv", "--arch", "seed004_dnn", "--dataset",
                               f"ravdess:{SAMPLES}", "--protocol", "speaker_kfold", "--k", "2", "--val-speakers", "0",
                               "--epochs", "5000", "--batch-size", "8", "--processes", "2", "--out", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logs = [out / f"fold-{k}" / "log.txt" for k in (1, 2)]
    for _ in range(600):                      # bound, not a timing assertion: until both folds train
        if all(p.exists() and "epoch 3/" in p.read_text() for p in logs):
            break
        time.sleep(0.2)
    parent.send_signal(getattr(signal, signal_name))
    parent.wait(timeout=120)
    pids = [runs.read_status(out / f"fold-{k}")["pid"] for k in (1, 2)]
    for _ in range(600):
        if not any(runs._process_alive(pid, None) for pid in pids):
            break
        time.sleep(0.2)
    assert [runs.read_status(out / f"fold-{k}")["state"] for k in (1, 2)] == ["stopped", "stopped"]
    if signal_name == "SIGTERM":
        assert runs.read_status(out)["state"] == "stopped"
        assert "stop requested: passed on to the running folds" in (out / "log.txt").read_text()
        assert len(pd.read_csv(out / "predictions.csv")) == 32


def test_cv_processes_must_be_one_or_more(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ser_core", "cv", "--arch", "seed004_dnn", "--dataset",
                        f"ravdess:{SAMPLES}", "--processes", "0", "--out", str(tmp_path / "cv")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--processes must be 1 or more, not 0" in r.stderr and "Traceback" not in r.stderr


def test_a_fold_whose_process_ended_after_saving_its_model_is_tested_not_retrained(tmp_path):
    """A fold killed (or crashed) between saving its model and testing it: --resume tests the saved
    model instead of training it again; a fold that ended before its last epoch is trained again."""
    base = TrainConfig(dataset=f"ravdess:{SAMPLES}", arch="seed004_dnn", protocol="speaker_kfold", k=2,
                       n_val_speakers=0, epochs=2, batch_size=8, workers=1)
    out = tmp_path / "cv"
    out.mkdir()
    first = cross_validate(base, out, log=Logger(None, to_file=False, echo=False))
    fold1, fold2 = out / "fold-1", out / "fold-2"
    before = pd.read_csv(fold1 / "predictions.csv")
    saved = (fold1 / "model" / "model.keras").stat().st_mtime_ns
    for fold_dir in (fold1, fold2):                       # as a process dies in its test step leaves it
        (fold_dir / "predictions.csv").unlink()
        (fold_dir / "metrics.json").unlink()
        runs.write_status(fold_dir, "running", pid=2 ** 22 + 7, pid_started=1.0)
    runs.write_status(fold2, "running", epoch=1)          # fold 2 died before its last epoch
    again = cross_validate(base, out, log=Logger(out, to_file=True, echo=False), resume=True)
    log = (out / "log.txt").read_text()
    assert "fold 1: tested the model its earlier process saved" in log
    assert (fold1 / "model" / "model.keras").stat().st_mtime_ns == saved             # not trained again
    pd.testing.assert_frame_equal(pd.read_csv(fold1 / "predictions.csv"), before)
    status = runs.read_status(fold1)
    assert status["state"] == "finished" and "tested after its process ended" in status["message"]
    assert "fold 2: tested" not in log and runs.read_status(fold2)["epoch"] == 2        # trained again
    assert again["per_fold"]["1"] == first["per_fold"]["1"] and len(pd.read_csv(out / "predictions.csv")) == 32


def test_split_seed_lets_differently_seeded_models_share_one_random_split(tmp_path):
    from ser_core.training import train

    def test_files(name, **kw):
        cfg = TrainConfig(dataset=f"ravdess:{SAMPLES}", arch="seed004_dnn", protocol="random", n_val_speakers=0,
                          epochs=1, batch_size=8, workers=1, **kw)
        train(tmp_path / name, cfg, log=Logger(None, to_file=False, echo=False))
        return set(pd.read_csv(tmp_path / name / "predictions.csv")["file"])

    shared = test_files("s0", seed=0)
    assert test_files("s1-shared", seed=1, split_seed=0) == shared
    assert test_files("s1-own", seed=1) != shared
    assert TrainConfig.from_dict({"arch": "ser_crnn", "seed": 4}).data_seed == 4   # runs saved before the field


def test_training_pipeline_runs_without_the_tf_data_autotuner():
    """Its per-epoch iterator teardown waited for the autotuner's thread (idle seconds per epoch)."""
    from ser_core.training import make_dataset

    x = np.zeros((10, 8, 6, 3), np.float32)
    y = np.arange(10) % 4
    for training in (True, False):
        ds = make_dataset(x, y, 4, batch_size=4, weights=None, training=training, online_aug=("time_mask",))
        assert ds.options().autotune.enabled is False
        batches = list(ds)
        assert [len(b[0]) for b in batches] == [4, 4, 2]
        assert sorted(np.concatenate([b[1].numpy().argmax(1) for b in batches]).tolist()) == sorted(y.tolist())
