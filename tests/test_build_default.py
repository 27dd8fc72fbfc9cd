"""training/build_default.py: reused cross-validations and final runs are matched to the right member."""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from ser_core.training import TrainConfig

from conftest import ROOT

spec = importlib.util.spec_from_file_location("build_default", ROOT / "training" / "build_default.py")
build_default = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_default)


def test_members_of_one_architecture_are_told_apart_by_seed_or_position():
    given = {"ser_crnn@1": "runs/seed1", "ser_crnn": "runs/any", "seed004_dnn": "runs/dnn", "5": "runs/fifth"}
    first = TrainConfig(arch="ser_crnn", seed=0)
    second = dataclasses.replace(first, seed=1)
    assert str(build_default.reused(1, first, given)) == "runs/any"
    assert str(build_default.reused(2, second, given)) == "runs/seed1"
    assert str(build_default.reused(4, TrainConfig(arch="seed004_dnn"), given)) == "runs/dnn"
    assert build_default.reused(3, TrainConfig(arch="seed000_cnn"), given) is None
    assert str(build_default.reused(5, dataclasses.replace(first, features={"n_mels": 128}), given)) == "runs/fifth"


def _run(tmp_path, cfg, **extra):
    (tmp_path / "model").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_dict(), "workers": 2, **extra}))
    return tmp_path


def test_a_reused_run_must_be_this_members_recipe_and_finished(tmp_path):
    final_cfg = TrainConfig(arch="ser_crnn", protocol="all", n_val_speakers=0, epochs=60, seed=1, channel_aug=0.6)
    run = _run(tmp_path, final_cfg, cv_folds=[1, 2])
    build_default.check_reused(run, final_cfg, "model", "all-actor run")
    with pytest.raises(SystemExit, match=r"differs in: channel_aug, seed\)"):
        build_default.check_reused(run, dataclasses.replace(final_cfg, seed=0, channel_aug=0.3), "model", "run")
    (run / "model").rmdir()
    with pytest.raises(SystemExit, match="model missing"):
        build_default.check_reused(run, final_cfg, "model", "all-actor run")


def test_a_run_saved_before_a_setting_existed_counts_as_its_default(tmp_path):
    cfg = TrainConfig(arch="ser_crnn", protocol="all", n_val_speakers=0, epochs=60, channel_aug=0.3)
    saved = {k: v for k, v in cfg.to_dict().items() if k != "channel_profile"}
    (tmp_path / "model").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(saved))
    build_default.check_reused(tmp_path, cfg, "model", "all-actor run")
    with pytest.raises(SystemExit, match=r"differs in: channel_profile\)"):
        build_default.check_reused(tmp_path, dataclasses.replace(cfg, channel_profile="noisy"), "model", "run")


def test_robustness_is_copied_only_from_the_models_own_cross_validation(tmp_path):
    preds = "file,true,pred,p_angry,p_sad\na.wav,sad,sad,0.2,0.8\nb.wav,angry,angry,0.9,0.1\n"
    model, cv, other = (tmp_path / n for n in ("model", "cv", "other"))
    for d in (model, cv, other):
        d.mkdir()
    (model / "predictions.csv").write_text(preds)
    (cv / "predictions.csv").write_text(preds.replace("a.wav,sad,sad,0.2,0.8\n", "") + "a.wav,sad,sad,0.2,0.8\n")
    (other / "predictions.csv").write_text(preds.replace("0.9,0.1", "0.6,0.4"))
    with pytest.raises(SystemExit, match="ser robustness"):
        build_default.copy_robustness(cv, model)
    for d in (cv, other):
        (d / "robustness.json").write_text(json.dumps({"max_drop": float(d == cv)}))
    with pytest.raises(SystemExit, match="predictions differ"):
        build_default.copy_robustness(other, model)
    assert not (model / "robustness.json").exists()
    build_default.copy_robustness(cv, model)                      # same clips in another order
    assert json.loads((model / "robustness.json").read_text()) == {"max_drop": 1.0}


def test_the_robustness_command_copies_into_the_model_it_names(tmp_path):
    """`--robustness CV --target NAME` fills models/NAME; models/default is left as it was."""
    preds = "file,true,pred,p_angry,p_sad\na.wav,sad,sad,0.2,0.8\n"
    models, cv = tmp_path / "models", tmp_path / "cv"
    for d in (models / "fast", models / "default", cv):
        d.mkdir(parents=True)
        (d / "predictions.csv").write_text(preds)
    (cv / "robustness.json").write_text(json.dumps({"max_drop": 4.0}))
    out = subprocess.run([sys.executable, str(ROOT / "training" / "build_default.py"), "--robustness", str(cv),
                          "--target", "fast"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SER_MODELS_DIR": str(models)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((models / "fast" / "robustness.json").read_text()) == {"max_drop": 4.0}
    assert not (models / "default" / "robustness.json").exists()


def _tiny_root(tmp_path, samples_dir):
    """RAVDESS samples (actors 1-4) and the same clips under EMOVO and ASED names: three corpora, six speakers."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(samples_dir, root / "ravdess", ignore=shutil.ignore_patterns("*.md"))
    clips = sorted(samples_dir.glob("*.flac"))
    (root / "emovo" / "f1").mkdir(parents=True)
    (root / "ased" / "x").mkdir(parents=True)
    for i, (emovo, ased) in enumerate([("neu", "n1"), ("tri", "s4"), ("rab", "a5")] * 2):
        shutil.copy(clips[i], root / "emovo" / "f1" / f"{emovo}-f1-{('b1', 'b2', 'b3', 'd1', 'd2', 'l1')[i]}.flac")
        shutil.copy(clips[i + 8], root / "ased" / "x" / f"{ased}-0{i + 1}-01-02-07.flac")
    return root


@pytest.mark.slow
def test_multi_corpus_build_resumes_and_stores_its_calibration(tmp_path, samples_dir):
    import os
    import subprocess
    import sys

    root = _tiny_root(tmp_path, samples_dir)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"loco": True, "members": [{
        "arch": "seed004_dnn", "dataset": "ravdess+emovo+ased", "protocol": "speaker_kfold", "k": 2, "epochs": 2,
        "batch_size": 8, "n_val_speakers": 0, "precision": "float32", "workers": 1}]}))
    env = {**os.environ, "SER_DATA_DIR": str(root), "SER_MODELS_DIR": str(tmp_path / "models"),
           "SER_RUNS_DIR": str(tmp_path / "runs"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, str(ROOT / "training" / "build_default.py"), "--recipe", str(recipe),
           "--work", str(tmp_path / "work"), "--target", "cand", "--processes", "2"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    model = tmp_path / "models" / "cand"
    spec = json.loads((model / "spec.json").read_text())
    calib = spec["extra"]["calibration"]
    assert calib["temperature"] > 0 and calib["threshold"] == 0.5 and "out-of-fold" in calib["fitted_on"]
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["final_model"]["trained_on"] == "all speakers of ravdess (4), ased (1), emovo (1)"
    assert set(metrics["per_corpus"]) == {"ravdess", "emovo", "ased"}
    assert set(metrics["calibration"]["loco"]) == {"ravdess", "emovo", "ased"}
    loco = json.loads((tmp_path / "work" / "member-1-loco" / "metrics.json").read_text())
    assert [f["fold"] for f in loco["folds"]] == [1, 2, 3] and loco["n"] == 32 + 6 + 6
    log = (tmp_path / "work" / "member-1-loco" / "log.txt").read_text()        # folds 1-3 in 2 processes
    assert "training folds 1, 2, 3 in" in log and "fold 3: started in its own process" in log
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "work").rglob("model.keras")}
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("kept the finished run") == 2 + 3 and "kept the finished final run" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps              # nothing was trained again


@pytest.mark.slow
def test_a_probe_recipe_is_built_step_by_step_and_resumes(tmp_path, samples_dir):
    """A probe recipe ({"probe": ...}) through build_default.py on three tiny corpora, the real encoder: the
    vectors and copies in the work folder, the emobox6 folds, the six folds' shifts and leaving one corpus out as
    the candidate's tables, then the probe on every clip, recording the recipe's setup; the same command again
    keeps every step. The bundled clips' actors are spread over RAVDESS's six EmoBox folds (each fold tests at
    most one clip of an emotion, so every fold trains on all eight)."""
    import shutil

    from ser_core import splits
    from ser_core.whisper import Setup

    root, clips = tmp_path / "data", sorted(samples_dir.glob("*.flac"))
    for p in clips:
        f = p.stem.split("-")
        emotion, actor = int(f[2]) - 1, int(f[6])
        new = splits.EMOBOX_RAVDESS_FOLDS[(emotion + actor) % 6][actor - 1]
        (root / "ravdess" / f"Actor_{new:02d}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / "ravdess" / f"Actor_{new:02d}" / ("-".join(f[:6] + [f"{new:02d}"]) + ".flac"))
    # six speakers each in EMOVO and ASED, three emotions each: every fold trains on five of them
    for k, spk in enumerate(["f1", "f2", "f3", "m1", "m2", "m3"]):
        (root / "emovo" / spk).mkdir(parents=True)
        (root / "ased" / f"s{k}").mkdir(parents=True)
        for j, (emovo, ased) in enumerate([("neu", "n1"), ("tri", "s4"), ("rab", "a5")]):
            clip = clips[(8 * j + k) % len(clips)]
            shutil.copy(clip, root / "emovo" / spk / f"{emovo}-{spk}-b{j + 1}.flac")
            shutil.copy(clip, root / "ased" / f"s{k}" / f"{ased}-0{j + 1}-01-0{1 + k % 2}-{k + 10}.flac")
    setup = Setup(unpadded=True, layers=2, level=True, compute="int8", pooling="both")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"probe": {"candidate": "TINY", "dataset": "ravdess+emovo+ased",
                                            "encoder_setup": setup.to_dict(), "channel_copies": "babble:1"}}))
    results, work = tmp_path / "results", tmp_path / "work"
    env = {**os.environ, "SER_DATA_DIR": str(root), "SER_MODELS_DIR": str(tmp_path / "models"),
           "SER_RUNS_DIR": str(tmp_path / "runs"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, str(ROOT / "training" / "build_default.py"), "--recipe", str(recipe), "--work", str(work),
           "--target", "cand", "--results", str(results)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert sorted(f.name for f in results.iterdir()) == [
        "emobox6_TINY_probe_predictions.csv.gz", "emobox6_TINY_probe_predictions_choices.json",
        "emobox6_TINY_shifts.csv.gz", "emobox6_TINY_shifts_all_folds.json", "emobox6_TINY_shifts_fold1.json",
        "loco_TINY_predictions.csv.gz", "loco_TINY_predictions_choices.json",
        "loco_calibration_TINY.json", "loco_calibration_TINY_predictions.csv.gz"]
    model = tmp_path / "models" / "cand"
    spec = json.loads((model / "spec.json").read_text())
    assert spec["arch"] == "whisper_probe" and Setup.from_dict(spec["extra"]["encoder_setup"]) == setup
    assert spec["extra"]["trained_on"] == "68 clips and 1 channel copy each" and spec["extra"]["candidate"] == "TINY"
    metrics = json.loads((model / "metrics.json").read_text())
    assert set(metrics["per_corpus"]) == {"ravdess", "emovo", "ased"} and metrics["n"] == 68
    assert metrics["shifts_all_folds"]["folds"] == [1, 2, 3, 4, 5, 6] and metrics["shifts_fold1"]["folds"] == [1]
    assert metrics["shifts_all_folds"]["clips"] == 32 and set(metrics["loco"]["per_corpus"]) == {"ravdess", "emovo",
                                                                                               "ased"}
    assert spec["extra"]["calibration"]["temperature"] > 0
    # leaving each corpus out, calibrated as shipped: kept in the folder for the card, with the command that made it
    held = json.loads((model / "loco_calibration.json").read_text())
    assert set(held["corpora"]) == {"ravdess", "emovo", "ased"} and held["command"].endswith(
        f"--parts loco --out {(results / 'loco_calibration_TINY.json').as_posix()}")
    assert all(0 <= c["ece"] <= 1 and c["n"] > 0 for c in held["corpora"].values())
    import pandas as pd

    rows = pd.read_csv(model / held["table"])           # its held-out rows, for the Evaluate page: a corpus per fold
    assert rows.groupby("fold")["corpus"].nunique().eq(1).all() and set(rows["corpus"]) == set(held["corpora"])
    stamps = {p: p.stat().st_mtime_ns for p in [*work.glob("*.npz"), *results.iterdir()]}
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert all(f"step {k}: kept" in again.stdout for k in (3, 4, 5, "5b")) and again.stdout.count("done before") == 6   # vectors, copies
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps              # nothing was made again


def test_a_probe_recipe_is_checked_before_anything_runs(tmp_path):
    """A probe recipe with a key missing or unknown, or a setting the encoder cannot run, is refused with what is
    wrong, and nothing is made."""
    bad = [({"candidate": "X", "dataset": "ravdess", "encoder_setup": {}}, "missing: channel_copies"),
           ({"candidate": "X", "dataset": "ravdess", "encoder_setup": {}, "channel_copies": "babble:1", "C": 1},
            "unknown: C"),
           ({"candidate": "X", "dataset": "ravdess", "encoder_setup": {"pooling": "max"}, "channel_copies": "babble"},
            "unknown pooling 'max'"),
           ({"candidate": "X", "dataset": "ravdess", "encoder_setup": {}, "channel_copies": "snow:2"}, "'snow:2'"),
           ({"candidate": "X", "dataset": "ravdess", "encoder_setup": {}, "channel_copies": "babble:1",
             "copy_weight": 0}, "a copy's weight must be positive, not 0")]
    for probe, says in bad:
        recipe = tmp_path / "recipe.json"
        recipe.write_text(json.dumps({"probe": probe}))
        out = subprocess.run([sys.executable, str(ROOT / "training" / "build_default.py"), "--recipe", str(recipe),
                              "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "SER_MODELS_DIR": str(tmp_path / "models")})
        assert out.returncode != 0 and says in out.stderr and "Traceback" not in out.stderr, out.stderr[-1500:]
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


def test_a_subset_of_the_ravdess_ensembles_networks_is_built_with_its_fold_teachers_figures(tiny_model, tmp_path):
    """--subset: no training; the networks are the RAVDESS ensemble's own (models/ravdess), the figures the same
    members' fold teachers'."""
    import os
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    from ser_core import ensemble
    from ser_core.predict import load_predictor

    models = tmp_path / "models"
    ensemble.build([tiny_model] * 3, models / "ravdess")
    labels = json.loads((tiny_model / "spec.json").read_text())["labels"]
    rng = np.random.default_rng(0)
    tables = tmp_path / "tables"
    for fold in (1, 2):
        for member in (1, 2, 3):
            probs = rng.dirichlet(np.ones(len(labels)), size=10)
            table = pd.DataFrame({"file": [f"f{fold}-{i}.flac" for i in range(10)],
                                  "speaker": [f"s{fold}-{i % 2}" for i in range(10)],
                                  "gender": ["female", "male"] * 5, "true": rng.choice(labels, 10),
                                  "pred": np.asarray(labels)[probs.argmax(axis=1)], "confidence": probs.max(axis=1),
                                  **{f"p_{lab}": probs[:, j] for j, lab in enumerate(labels)}})
            (tables / f"fold-{fold}").mkdir(parents=True, exist_ok=True)
            table.to_csv(tables / f"fold-{fold}" / f"member-{member}.test.csv.gz", index=False)
            made = {"protocol": "emobox6", "arch": "seed000_cnn", "seed": member, "epochs": 3}
            (tables / f"fold-{fold}" / f"member-{member}.json").write_text(json.dumps({"config": made}))
    finals = [{"arch": "seed000_cnn", "trained_on": "all 4 actors", "epochs": 3, "epochs_rule": "as the folds",
               "recipe": {"arch": "seed000_cnn", "seed": member, "epochs": 3}} for member in (1, 2, 3)]
    (models / "ravdess" / "metrics.json").write_text(json.dumps({"final_model": {"members": finals}}))
    env = {**os.environ, "SER_MODELS_DIR": str(models), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, str(ROOT / "training" / "build_default.py"), "--subset", "1,3", "--tables", str(tables)]
    done = subprocess.run(cmd + ["--target", "quick"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    model = models / "quick"
    assert json.loads((model / "spec.json").read_text())["extra"]["members"] == ["seed000_cnn", "seed000_cnn-2"]
    pooled = pd.read_csv(model / "predictions.csv")
    cols = [f"p_{lab}" for lab in labels]
    for fold in (1, 2):
        one, three = (pd.read_csv(tables / f"fold-{fold}" / f"member-{m}.test.csv.gz") for m in (1, 3))
        rows = pooled[pooled["fold"] == fold].set_index("file").loc[one["file"]]
        np.testing.assert_allclose(rows[cols].to_numpy(), (one[cols].to_numpy() + three[cols].to_numpy()) / 2)
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(float((pooled["pred"] == pooled["true"]).mean()))
    assert [f["fold"] for f in metrics["folds"]] == [1, 2] and metrics["positions"] == [1, 3]
    assert "emobox6 2-fold" in metrics["protocol"]
    stored = metrics["calibration"]["stored"]
    assert json.loads((model / "spec.json").read_text())["extra"]["calibration"] == stored
    assert load_predictor(model).calibration.temperature == pytest.approx(stored["temperature"])

    card = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'training'); from report import "
                           f"model_card; from pathlib import Path; print(model_card(Path('{model}'), 'quick'))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert card.returncode == 0 and "members [1, 3] of `models/ravdess`" in card.stdout, card.stderr[-2000:]

    finals[2]["recipe"]["epochs"] = 4                               # tables of another recipe than the network's
    (models / "ravdess" / "metrics.json").write_text(json.dumps({"final_model": {"members": finals}}))
    other = subprocess.run(cmd + ["--target", "other"], env=env, capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "member 3 differ from its network's recipe in epochs" in other.stderr
    finals[2]["recipe"]["epochs"] = 3
    (models / "ravdess" / "metrics.json").write_text(json.dumps({"final_model": {"members": finals}}))
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)      # no --target
    assert refused.returncode == 2 and "never replaced by a subset" in refused.stderr
    for bad, says in (("1", "two or more different member positions"), ("1,1", "two or more different"),
                      ("1,x", "member positions such as 1,2,5, not '1,x'")):
        wrong = subprocess.run(cmd[:2] + ["--subset", bad, "--target", "one"], env=env, capture_output=True,
                               text=True, timeout=300)
        assert wrong.returncode == 2 and says in wrong.stderr and "Traceback" not in wrong.stderr
    (tables / "fold-2" / "member-3.test.csv.gz").unlink()                # a fold the subset is not tabled on
    partial = subprocess.run(cmd + ["--target", "other"], env=env, capture_output=True, text=True, timeout=300)
    assert partial.returncode != 0 and "tabled on folds [1] of [1, 2]" in partial.stderr
    assert "Traceback" not in partial.stderr and not (models / "other").exists()


def test_without_a_recipe_it_rebuilds_the_shipped_default_wu2s():
    """DEFAULT_RECIPE is the recipe of what models/default holds: WU2S's candidate, corpora, setup and copies."""
    recipe = json.loads(build_default.DEFAULT_RECIPE.read_text())["probe"]
    shipped = json.loads((ROOT / "models" / "default" / "spec.json").read_text())["extra"]
    assert build_default.DEFAULT_RECIPE.name == "whisper_wu2s.json" and recipe["candidate"] == "WU2S"
    assert shipped["candidate"].split(" ")[0] == recipe["candidate"]
    assert shipped["encoder_setup"] == recipe["encoder_setup"]
    assert shipped["channel_copies"] == recipe["channel_copies"]
    assert set(shipped["dataset"].split("+")) == set(recipe["dataset"].split("+"))
