"""An interrupted training run continues from its last finished epoch (``ser_core.resume``).

Real training processes: one is SIGKILLed a few epochs in, the same command with ``--resume`` finishes it,
and its curves are compared with a run of the same settings that was never interrupted.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ser_core import resume, runs
from ser_core.training import Logger, TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
EPOCHS = 20


def config(**over) -> TrainConfig:
    settings = dict(dataset=f"ravdess:{SAMPLES}", arch="seed000_cnn", test_speakers=("ravdess-01",),
                    n_val_speakers=0, epochs=EPOCHS, batch_size=8, workers=1, schedule="cosine")
    settings.update(over)
    return TrainConfig(**settings)


def start(run_dir: Path, cfg: TrainConfig, *extra: str) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    with open(run_dir / "log.txt", "a") as log:      # as `ser train --background` starts a run
        return subprocess.Popen([sys.executable, "-m", "ser_core.training", str(run_dir), *extra], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log,
                                stderr=subprocess.PIPE, text=True)


def kill_after(proc: subprocess.Popen, run_dir: Path, epochs: int, timeout: float = 300) -> None:
    """Freeze the process (SIGSTOP: it cannot finish meanwhile) once ``epochs`` rows are in its history,
    then SIGKILL it."""
    deadline = time.monotonic() + timeout
    while len(runs.read_history(run_dir)) < epochs:
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the first epochs"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_resume_point_puts_back_every_variable_of_the_model_and_of_its_optimizer(tmp_path):
    from ser_core import models
    from ser_core.fitting import compile_model
    from ser_core.tf_setup import keras

    cfg = config(arch="seed004_dnn", epochs=3)
    x = np.random.default_rng(0).normal(size=(32, 40)).astype(np.float32)
    y = keras().utils.to_categorical(np.arange(32) % 8, 8)

    def built():
        model = models.build("seed004_dnn", x.shape[1:], 8, seed=0)
        return compile_model(model, cfg, steps_per_epoch=4)

    trained = built()
    trained.fit(x, y, epochs=2, batch_size=8, verbose=0)
    point = resume.ResumePoint(member=0, epoch=2, best=0.5, best_epoch=2, done=False, row={"epoch": 2},
                               counters={}, settings=json.loads(json.dumps(cfg.to_dict())))
    resume.save(tmp_path, trained, point)
    assert resume.read(tmp_path) == point
    fresh = built()
    assert not np.allclose(fresh.get_weights()[0], trained.get_weights()[0])
    resume.restore(tmp_path, fresh)
    for a, b in zip(trained.variables, fresh.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(fresh.optimizer.iterations) == int(trained.optimizer.iterations) == 8
    for a, b in zip(trained.optimizer.variables, fresh.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = compile_model(models.build("seed004_dnn", (20,), 8, seed=0), cfg, steps_per_epoch=4)
    with pytest.raises(ValueError, match="do not fit"):
        resume.restore(tmp_path, other)
    resume.clear(tmp_path)
    assert resume.read(tmp_path) is None and not resume.path(tmp_path).exists()


def test_a_killed_run_goes_on_from_its_last_finished_epoch_along_the_same_schedule(tmp_path):
    cfg = config()
    killed = tmp_path / "killed"
    kill_after(start(killed, cfg), killed, 3)
    point = resume.read(killed)
    assert point is not None and point.epoch >= 3 and not point.done
    assert not (killed / "model").exists()
    status = runs.read_status(killed)
    assert status["state"] == "interrupted"
    assert f"`ser resume killed` goes on after epoch {point.epoch}" in status["message"]

    done = subprocess.run([sys.executable, "-m", "ser_core", "resume", str(killed)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and "run killed: finished" in done.stdout, done.stderr[-3000:]
    log = (killed / "log.txt").read_text()
    assert f"resumed after epoch {point.epoch}" in log
    history = runs.read_history(killed)
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))         # every epoch exactly once
    status = runs.read_status(killed)
    assert status["state"] == "finished" and status["resumed_at_epoch"] == point.epoch
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["resumed_at_epoch"] == point.epoch and metrics["epochs_run"] == EPOCHS
    assert metrics["train_seconds"] >= point.row["elapsed"]
    assert not resume.path(killed).exists()                  # finished and saved: nothing left to resume
    assert (killed / "model" / "model.keras").exists() and len(open(killed / "predictions.csv").readlines()) == 9

    # the optimizer's step count came back: the learning rate goes on along the one cosine schedule an
    # uninterrupted run follows (had it restarted, epoch point+1 would be back in the warm-up)
    whole = tmp_path / "whole"
    train(whole, cfg, log=Logger(whole, to_file=True, echo=False))
    np.testing.assert_allclose([h["lr"] for h in history], [h["lr"] for h in runs.read_history(whole)],
                               rtol=1e-6)
    # and so did the weights: the first resumed epoch learns on from where the killed process was
    assert history[point.epoch]["loss"] < history[0]["loss"]


def test_a_resume_point_of_other_settings_is_refused_and_the_run_starts_afresh(tmp_path):
    from ser_core import models
    from ser_core.fitting import compile_model

    cfg, other = config(epochs=6), config(epochs=6, learning_rate=0.002)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    net = compile_model(models.build("seed004_dnn", (20,), 8, seed=0), cfg)
    resume.save(run_dir, net, resume.ResumePoint(member=0, epoch=3, best=0.5, best_epoch=3, done=False,
                                                 row={"epoch": 3}, counters={}, settings=cfg.resolved().to_dict()))
    runs.write_history(run_dir, [{"epoch": e, "loss": 9.0} for e in (1, 2, 3)])   # a dead attempt's rows
    train(run_dir, other, log=Logger(run_dir, to_file=True, echo=False), resume_run=True)
    log = (run_dir / "log.txt").read_text()
    assert "the resume point was written with other settings (learning_rate): training from the first epoch" in log
    assert "resumed after" not in log
    history = runs.read_history(run_dir)
    assert [h["epoch"] for h in history] == list(range(1, 7)) and all(h["loss"] != 9.0 for h in history)
    assert "resumed_at_epoch" not in json.loads((run_dir / "metrics.json").read_text())
    assert not resume.path(run_dir).exists()


def test_ser_resume_refuses_a_run_that_has_nothing_to_resume(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / "config.json").write_text(json.dumps(config().to_dict()))
    runs.write_status(done, "finished")
    for name, says in ((str(done), "cannot be resumed (it is finished)"), ("no-such-run", "no run named no-such-run")):
        out = subprocess.run([sys.executable, "-m", "ser_core", "resume", name], capture_output=True, text=True,
                             cwd=ROOT, timeout=120, env={**os.environ, "SER_RUNS_DIR": str(tmp_path)})
        assert out.returncode != 0 and says in out.stderr and "Traceback" not in out.stderr


def test_a_cross_validation_killed_in_processes_resumes_each_fold_where_it_stood(tmp_path):
    """``ser cv --processes 2`` SIGKILLed: its folds get SIGTERM from the kernel and stop; ``--resume``
    passes on to the fold processes, and each fold goes on from its own last finished epoch."""
    epochs = 80
    out = tmp_path / "cv"
    argv = [sys.executable, "-m", "ser_core", "cv", "--arch", "seed004_dnn", "--dataset", f"ravdess:{SAMPLES}",
            "--protocol", "speaker_kfold", "--k", "2", "--val-speakers", "0", "--epochs", str(epochs),
            "--batch-size", "8", "--processes", "2", "--out", str(out)]
    parent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    folds = [out / f"fold-{k}" for k in (1, 2)]
    for _ in range(1200):                     # a bound, not a timing assertion: until both folds train
        if all(len(runs.read_history(f)) >= 3 for f in folds):
            break
        time.sleep(0.1)
    parent.kill()
    parent.wait(timeout=60)
    for _ in range(600):
        if all(runs.read_status(f)["state"] not in ("running", "queued") for f in folds):
            break
        time.sleep(0.2)
    points = [resume.read(f) for f in folds]
    assert all(p is not None and 3 <= p.epoch < epochs for p in points), points
    again = subprocess.run(argv + ["--resume"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    for fold_dir, point in zip(folds, points):
        assert f"resumed after epoch {point.epoch}" in (fold_dir / "log.txt").read_text()
        assert [h["epoch"] for h in runs.read_history(fold_dir)] == list(range(1, epochs + 1))
        assert runs.read_status(fold_dir)["state"] == "finished" and not resume.path(fold_dir).exists()
    assert len(pd.read_csv(out / "predictions.csv")) == 32


def test_a_seed_ensemble_killed_in_its_second_member_keeps_the_first_and_resumes_the_second(tmp_path):
    cfg = config(arch="seed004_dnn", ensemble=2, epochs=30)
    run_dir = tmp_path / "ens"
    proc = start(run_dir, cfg)
    for _ in range(3000):                     # a bound, not a timing assertion: until member 2 has 3 epochs
        if sum(h.get("member") == 2 for h in runs.read_history(run_dir)) >= 3 or proc.poll() is not None:
            break
        time.sleep(0.02)
    kill_after(proc, run_dir, 0)
    point = resume.read(run_dir)
    assert point.member == 1 and point.epoch >= 3
    proc = start(run_dir, cfg, "--resume")
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    log = (run_dir / "log.txt").read_text()
    assert "member 1: finished by an earlier process, its checkpoint kept" in log
    assert f"resumed member 2 after epoch {point.epoch}" in log
    history = runs.read_history(run_dir)
    assert [(h["member"], h["epoch"]) for h in history] == [(m, e) for m in (1, 2) for e in range(1, 31)]
    assert runs.read_status(run_dir)["state"] == "finished"
