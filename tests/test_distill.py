"""Distillation: training targets mix the emotion with a teacher's probabilities, and only a teacher that
never heard this run's held-out speakers is accepted."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ser_core import datasets, splits
from ser_core.errors import ConfigError
from ser_core.pipeline import training_targets
from ser_core.prepare import prepare
from ser_core.training import Logger, TrainConfig, train

from conftest import SAMPLES


def test_targets_are_the_emotion_mixed_with_the_teacher_where_it_answered():
    soft = np.array([[0.2, 0.8, 0.0], [np.nan, np.nan, np.nan]], np.float32)
    got = training_targets(np.array([0, 2]), 3, soft, 0.25)
    np.testing.assert_allclose(got, [[0.8, 0.2, 0.0], [0.0, 0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(training_targets(np.array([1]), 3), [[0, 1, 0]])
    assert training_targets(np.array([0, 2]), 3, soft, 0.0)[0].tolist() == [1, 0, 0]


def test_a_temperature_softens_the_teacher_as_softmax_of_its_log_probabilities_over_t():
    soft = np.array([[0.9, 0.08, 0.02], [np.nan, np.nan, np.nan]], np.float32)
    got = training_targets(np.array([0, 1]), 3, soft, 0.5, temperature=2.0)
    root = np.sqrt([0.9, 0.08, 0.02])                     # T = 2: p ** (1/2), renormalised
    np.testing.assert_allclose(got[0], 0.5 * np.array([1, 0, 0]) + 0.5 * root / root.sum(), atol=1e-6)
    np.testing.assert_allclose(got[1], [0, 1, 0])         # no answer from the teacher: the emotion alone
    np.testing.assert_allclose(got.sum(axis=1), [1, 1], atol=1e-6)
    # the ranking of the other emotions is kept, the gap to the top shrinks; T = 1 leaves the teacher as it is
    assert got[0, 1] > got[0, 2] and got[0, 0] < 0.5 + 0.5 * 0.9
    np.testing.assert_allclose(training_targets(np.array([0]), 3, soft[:1], 0.5, temperature=1.0),
                               training_targets(np.array([0]), 3, soft[:1], 0.5), atol=0)
    # a zero probability stays finite (log of a clipped value), and a very high T tends to uniform
    hot = training_targets(np.array([2]), 3, np.array([[1.0, 0.0, 0.0]], np.float32), 1.0, temperature=1e6)
    assert np.isfinite(hot).all() and np.allclose(hot, 1 / 3, atol=1e-3)
    with pytest.raises(ConfigError, match="teacher temperature must be above 0"):
        TrainConfig(teacher="t", distill=0.5, distill_temperature=0.0).resolved()


def test_a_share_without_a_teacher_is_refused():
    with pytest.raises(ConfigError, match="needs a teacher model"):
        TrainConfig(distill=0.5).resolved()
    assert TrainConfig(teacher="t/fold-{fold}/model", distill=0.5, fold=4).resolved().teacher_dir().as_posix() \
        == "t/fold-4/model"
    # a final run on every speaker learns from the teacher made for that: fold-all
    assert TrainConfig(teacher="t/fold-{fold}", distill=0.5, protocol="all").teacher_dir().as_posix() == "t/fold-all"


def student(teacher: str, test: str, **kw) -> TrainConfig:
    return TrainConfig(dataset=f"ravdess:{SAMPLES}", arch="seed004_dnn", test_speakers=(test,), n_val_speakers=0,
                       epochs=2, batch_size=8, workers=1, precision="float32", teacher=teacher, distill=0.5,
                       **kw).resolved()


def test_the_student_learns_from_a_teacher_of_its_own_training_speakers_only(tiny_model, tmp_path):
    # tiny_model learnt from actors 02-04 (01 was its test speaker, one of the others its validation speaker)
    learnt = set(json.loads((tiny_model / "spec.json").read_text())["extra"]["train_speakers"])
    assert "ravdess-01" not in learnt and learnt
    cfg = student(str(tiny_model), "ravdess-01", channel_aug=0.5)
    df = datasets.load_dataset(cfg.dataset)
    split = splits.make_split(df, cfg.protocol, cfg.fold, n_val=0, test_speakers=["ravdess-01"])
    data = prepare(cfg, df, split, Logger(None, to_file=False, echo=False))
    n_clips = len(data.rows["train"])
    assert data.soft.shape == (n_clips, len(data.labels))
    np.testing.assert_allclose(data.soft.sum(axis=1), 1.0, atol=1e-5)
    assert len(data.source) == len(data.y["train"]) > n_clips                # augmented copies ...
    assert (data.y["train"] == data.y["train"][:n_clips][data.source]).all()   # ... keep their clip's row
    log = tmp_path / "run"
    train(log, cfg, log=Logger(log, to_file=True, echo=False))
    assert "teacher " in (log / "log.txt").read_text() and (log / "model" / "model.keras").exists()

    taught = next(iter(learnt))                      # a speaker the teacher learnt from may not be tested
    with pytest.raises(ConfigError, match=f"learnt from speakers this run holds out: {taught}"):
        train(tmp_path / "bad", student(str(tiny_model), taught), log=Logger(None, to_file=False, echo=False))
    with pytest.raises(ConfigError, match="teacher not found"):
        train(tmp_path / "none", student(str(tmp_path / "fold-{fold}"), "ravdess-01"),
              log=Logger(None, to_file=False, echo=False))


def test_fold_teachers_are_tables_a_student_reads_and_a_rerun_keeps(tmp_path):
    import subprocess
    import sys

    import pandas as pd

    from ser_core import teacher
    from conftest import ROOT

    member = {"arch": "seed004_dnn", "dataset": f"ravdess:{SAMPLES}", "protocol": "speaker_kfold", "k": 2,
              "epochs": 2, "batch_size": 8, "n_val_speakers": 0, "precision": "float32", "workers": 1}
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"members": [member, {**member, "seed": 1}]}))
    out = tmp_path / "tables"
    cmd = [sys.executable, str(ROOT / "training" / "teachers.py"), "--recipe", str(recipe), "--out", str(out),
           "--work", str(tmp_path / "work"), "--folds", "1"]
    # the two tables at once, each made by its own pinned process of the script (what a long session runs)
    first = subprocess.run(cmd + ["--processes", "2"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert first.stdout.count("started in its own process") == 2 and first.stdout.count("table written") == 2
    assert sorted(p.name for p in (tmp_path / "work" / "logs").glob("*.log")) == ["fold-1-member-1.log",
                                                                                "fold-1-member-2.log"]
    fold = out / "fold-1"
    assert teacher.table_names(fold) == ["member-1", "member-2"]
    assert not (tmp_path / "work" / "member-1" / "fold-1").exists()      # the model is not kept, its table is
    rec = teacher.read_record(fold, "member-1")
    df = datasets.load_dataset(member["dataset"])
    split = splits.make_split(df, "speaker_kfold", 1, k=2, n_val=0)
    test_speakers = set(df["speaker"].iloc[split.test].astype(str))
    assert set(rec["train_speakers"]) == set(df["speaker"].iloc[split.train].astype(str))
    assert not set(rec["train_speakers"]) & test_speakers and rec["clips"] == len(split.train)
    held = pd.read_csv(fold / f"member-1{teacher.HELD_OUT}")                 # its out-of-fold predictions
    assert set(held["speaker"].astype(str)) == test_speakers and len(held) == len(split.test)

    rows = df.iloc[split.train].reset_index(drop=True)
    keys = teacher.clip_keys(rows)
    labels = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    got, names = teacher.table_probabilities(fold, keys, labels, held_out=test_speakers)

    one, two = (pd.read_csv(fold / f"{n}{teacher.TABLE}").set_index("clip").loc[keys] for n in names)
    mean = (one.to_numpy() + two.to_numpy()) / 2
    np.testing.assert_allclose(got, mean / mean.sum(axis=1, keepdims=True), atol=1e-5)  # the members' mean
    with pytest.raises(ConfigError, match="learnt from speakers this run holds out"):
        teacher.table_probabilities(fold, keys, labels, held_out={rec["train_speakers"][0]})

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("table kept") == 2, again.stdout[-2000:]
    rep = subprocess.run(cmd + ["--report"], capture_output=True, text=True, timeout=300)
    assert "fold 1: 2 member(s)" in rep.stdout, rep.stdout + rep.stderr[-2000:]
    own = (held["pred"] == held["true"]).mean()
    rep = subprocess.run(cmd + ["--report", "--members", "1"], capture_output=True, text=True, timeout=300)
    assert f"fold 1: 1 member(s), mean of members {own:.1%}" in rep.stdout, rep.stdout + rep.stderr[-2000:]
    assert f"pooled over folds [1] ({len(held)} clips), members [1]: accuracy {own:.1%}" in rep.stdout
    # the pooled mean of members 1 and 2 as an out-of-fold predictions table (what a subset's calibration is fitted on)
    pooled = tmp_path / "pooled.csv"
    rep = subprocess.run(cmd + ["--report", "--members", "1,2", "--table", str(pooled)], capture_output=True,
                         text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    both = pd.read_csv(pooled).set_index("file")
    held2 = pd.read_csv(fold / f"member-2{teacher.HELD_OUT}").set_index("file").loc[both.index]
    cols = [c for c in both.columns if c.startswith("p_")]
    np.testing.assert_allclose(both[cols].to_numpy(),
                               (held.set_index("file").loc[both.index, cols].to_numpy() + held2[cols].to_numpy()) / 2,
                               atol=1e-9)
    assert (both["fold"] == 1).all() and len(both) == len(held)
    assert (both["pred"] == np.asarray([c[2:] for c in cols])[both[cols].to_numpy().argmax(axis=1)]).all()
    assert np.allclose(both["confidence"], both[cols].max(axis=1))
    lone = subprocess.run(cmd + ["--report", "--table", str(pooled)], capture_output=True, text=True, timeout=300)
    assert lone.returncode == 2 and "--table needs --members" in lone.stderr and "Traceback" not in lone.stderr
    other = subprocess.run(cmd + ["--precision", "bfloat16"], capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "other settings" in other.stderr     # never a table of two precisions
    changed = recipe.read_text().replace('"epochs": 2', '"epochs": 3', 1)
    recipe.write_text(changed)
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "other settings" in refused.stderr

    cfg = TrainConfig(dataset=member["dataset"], arch="seed004_dnn", protocol="speaker_kfold", k=2, fold=1,
                      n_val_speakers=0, epochs=1, batch_size=8, workers=1, precision="float32",
                      teacher=str(out / "fold-{fold}"), distill=0.5).resolved()
    data = prepare(cfg, df, split, Logger(None, to_file=False, echo=False))
    np.testing.assert_allclose(data.soft, got, atol=1e-6)
    wrong = TrainConfig(**{**cfg.to_dict(), "fold": 2, "teacher": str(out / "fold-1")}).resolved()  # fold 1's
    #                                                   teachers learnt from the speakers fold 2 tests on
    with pytest.raises(ConfigError, match="holds out"):
        prepare(wrong, df, splits.make_split(df, "speaker_kfold", 2, k=2, n_val=0),
                Logger(None, to_file=False, echo=False))


def test_a_finished_model_is_tabled_on_every_clip_as_the_final_runs_teacher(tiny_model, tmp_path):
    import subprocess
    import sys

    from ser_core import teacher
    from conftest import ROOT

    dataset = f"ravdess:{SAMPLES}"
    done = subprocess.run([sys.executable, str(ROOT / "training" / "teachers.py"), "--from-model", str(tiny_model),
                           "--dataset", dataset, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "fold-all"
    assert teacher.table_names(folder) == ["model"]
    df = datasets.load_dataset(dataset)
    rec = teacher.read_record(folder, "model")
    learnt = json.loads((tiny_model / "spec.json").read_text())["extra"]["train_speakers"]
    assert rec["train_speakers"] == sorted(learnt) and rec["clips"] == len(df)
    got, _ = teacher.table_probabilities(folder, teacher.clip_keys(df), ["neutral", "happy"], held_out=set())
    assert not np.isnan(got).any() and np.allclose(got.sum(axis=1), 1.0)


def test_a_stopped_teacher_run_in_processes_stops_its_tables_and_writes_none(tmp_path):
    """SIGTERM to teachers.py --processes 2 reaches both running tables, which stop cleanly; no table is
    written for a member that did not finish, and the command fails saying what was not made."""
    import signal
    import subprocess
    import sys
    import time

    from ser_core import runs, teacher
    from conftest import ROOT

    member = {"arch": "seed004_dnn", "dataset": f"ravdess:{SAMPLES}", "protocol": "speaker_kfold", "k": 2,
              "epochs": 5000, "batch_size": 8, "n_val_speakers": 0, "precision": "float32", "workers": 1}
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"members": [member, {**member, "seed": 1}]}))
    out, work = tmp_path / "tables", tmp_path / "work"
    parent = subprocess.Popen([sys.executable, str(ROOT / "training" / "teachers.py"), "--recipe", str(recipe),
                               "--out", str(out), "--work", str(work), "--folds", "1", "--processes", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs = [work / f"member-{k}" / "fold-1" / "log.txt" for k in (1, 2)]
    for _ in range(600):                      # bound, not a timing assertion: until both tables train
        if all(p.exists() and "epoch 3/" in p.read_text() for p in logs):
            break
        time.sleep(0.2)
    parent.send_signal(signal.SIGTERM)
    stdout, stderr = parent.communicate(timeout=120)
    assert parent.returncode == 1 and "stop requested: passed on to the running tables" in stdout, stdout + stderr
    assert "not made: fold 1 member-1, fold 1 member-2" in stderr
    states = [runs.read_status(p.parent) for p in logs]
    assert [s["state"] for s in states] == ["stopped", "stopped"]
    assert not any(runs._process_alive(s["pid"], None) for s in states)
    assert not (out / "fold-1").exists() or teacher.table_names(out / "fold-1") == []
