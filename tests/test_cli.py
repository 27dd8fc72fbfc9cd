"""The `ser` command line, run as a real subprocess."""
import json
import os
import subprocess
import sys
from collections import Counter

import pandas as pd
import pytest

from conftest import ROOT

EMOTIONS = {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"}


def ser(*args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "ser_core", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_predict_json_lines_and_errors(tmp_path, tiny_model, samples_dir):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 3)
    clips = sorted(samples_dir.glob("*.flac"))[:2]
    r = ser("predict", "--json", "--model", tiny_model, *clips, bad)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(c) for c in clips] + [str(bad)]
    for line in lines[:2]:
        assert set(line) >= {"file", "emotion", "confidence", "probabilities"}
        assert line["emotion"] in EMOTIONS and set(line["probabilities"]) == EMOTIONS
        assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert line["confidence"] == pytest.approx(line["probabilities"][line["emotion"]], abs=1e-6)
    assert set(lines[2]) == {"file", "error"} and "broken.wav" in lines[2]["error"]


def test_predict_uses_the_default_model_and_a_folder(samples_dir):
    """Without --model: the shipped default (the probe on Whisper's encoder), which says "not sure" on some clips."""
    r = ser("predict", "--json", samples_dir)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 32 and all(line["best"] in EMOTIONS for line in lines)
    assert all(line["emotion"] == ("not sure" if line["not_sure"] else line["best"]) for line in lines)
    # no TensorFlow start-up chatter between a user and the answer: stderr holds the closing answer shares only
    counts = Counter(line["best"] for line in lines).most_common()     # ties in the order first met
    assert r.stderr == ("answers (most likely emotion of 32 files with speech): "
                        + ", ".join(f"{e} {c} ({100 * c / 32:.0f} %)" for e, c in counts)
                        + f"; \"not sure\" on {sum(line['not_sure'] for line in lines)}\n")


def test_answer_shares_count_answers_only():
    from ser_core.predict import answer_shares

    assert answer_shares(["sad", None, "sad", float("nan"), "angry"], [True, False, False, False, True]) == (
        'answers (most likely emotion of 3 files with speech): sad 2 (67 %), angry 1 (33 %); "not sure" on 2')
    assert answer_shares([None, None]) == "answers: none (no file with speech was scored)"


def test_predict_table_output(tiny_model, sample_clip):
    r = ser("predict", "--model", tiny_model, sample_clip)
    assert r.returncode == 0
    header, row = r.stdout.splitlines()[:2]
    assert header.split() == ["file", "emotion", "confidence"]
    assert row.split()[1] in EMOTIONS and 0 < float(row.split()[2]) <= 1


def test_evaluate_prints_the_runs_metrics(tiny_run):
    r = ser("evaluate", tiny_run, "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    preds = pd.read_csv(tiny_run / "predictions.csv")
    assert m["accuracy"] == pytest.approx((preds["true"] == preds["pred"]).mean())
    text = ser("evaluate", tiny_run).stdout
    assert "accuracy" in text and "UAR" in text


def test_evaluate_against_another_table_tests_the_difference_on_the_shared_clips(tmp_path):
    shipped = ROOT / "models" / "default" / "predictions.csv"
    other = pd.read_csv(shipped)
    wrong = other.index[other["true"] != other["pred"]][:12]
    other.loc[wrong, "pred"] = other.loc[wrong, "true"]            # B: right on 12 clips the default gets wrong
    other.iloc[:700].to_csv(tmp_path / "b.csv", index=False)        # ... and tested on fewer clips
    n_fixed = int((wrong < 700).sum())
    r = ser("evaluate", shipped, "--against", tmp_path / "b.csv", "--json")
    assert r.returncode == 0, r.stderr
    against = json.loads(r.stdout)["against"]
    assert (against["n"], against["a_only"], against["b_only"]) == (700, 0, n_fixed)
    assert against["p"] == pytest.approx(2 * 0.5 ** n_fixed)
    text = ser("evaluate", shipped, "--against", tmp_path / "b.csv").stdout
    assert "On the 700 clips both were tested on" in text and f"B right where A is wrong on {n_fixed}" in text
    bad = ser("evaluate", shipped, "--against", tmp_path / "b.csv" / "x")
    assert bad.returncode == 2 and bad.stderr.startswith("error: cannot read predictions") and "Traceback" not in bad.stderr


def test_clear_errors_without_tracebacks(tmp_path):
    r = ser("predict", "--model", tmp_path / "nope", tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = ser("data", "info", "--dataset", tmp_path / "missing")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = ser("evaluate", tmp_path / "norun")
    assert r.returncode == 2 and "no predictions file" in r.stderr


def test_data_info_counts(samples_dir):
    r = ser("data", "info", "--dataset", f"ravdess:{samples_dir}")
    info = json.loads(r.stdout)
    assert info["clips"] == 32 and info["speakers"] == 4 and info["genders"] == {"female": 16, "male": 16}


def test_train_cli_makes_a_loadable_run(tmp_path, samples_dir):
    run_dir = tmp_path / "r"
    r = ser("train", "--arch", "seed004_dnn", "--dataset", f"ravdess:{samples_dir}", "--test-speakers", "1",
            "--val-speakers", "1", "--epochs", "2", "--run-dir", run_dir)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "accuracy" in r.stdout and (run_dir / "model" / "model.keras").exists()
    r = ser("predict", "--json", "--model", run_dir / "model", samples_dir / "03-01-01-01-01-01-01.flac")
    assert json.loads(r.stdout)["emotion"] in EMOTIONS


def test_train_cli_architecture_parameters(tmp_path, samples_dir):
    common = ("train", "--arch", "seed004_dnn", "--dataset", f"ravdess:{samples_dir}", "--test-speakers", "1",
              "--val-speakers", "1", "--epochs", "1")
    r = ser(*common, "--param", "units=16", "--run-dir", tmp_path / "ok")
    assert r.returncode == 0, r.stderr + r.stdout
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["arch_params"] == {"units": 16}
    r = ser(*common, "--param", "layers=3", "--run-dir", tmp_path / "bad")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "seed004_dnn has no parameter layers; it takes units (default 256), dropout (default 0.4)" in r.stderr


def test_train_cli_feature_override_travels_with_the_model(tmp_path, samples_dir):
    common = ("train", "--arch", "ser_crnn", "--dataset", f"ravdess:{samples_dir}", "--test-speakers", "1",
              "--val-speakers", "1", "--epochs", "1", "--param", "width=4", "--param", "units=4")
    r = ser(*common, "--feature", "n_mels=48", "--run-dir", tmp_path / "ok")
    assert r.returncode == 0, r.stderr + r.stdout
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["features"] == {"n_mels": 48}
    spec = json.loads((tmp_path / "ok" / "model" / "spec.json").read_text())
    assert spec["features"]["n_mels"] == 48 and spec["features"]["n_fft"] == 1024
    r = ser("predict", "--json", "--model", tmp_path / "ok" / "model", samples_dir / "03-01-01-01-01-01-01.flac")
    assert r.returncode == 0 and json.loads(r.stdout)["emotion"] in EMOTIONS
    for bad, message in (("n_mel=48", "unknown feature setting(s): n_mel"),
                         ("n_mels=many", "feature setting n_mels must be like its default 64, not 'many'"),
                         ("n_mels", "--feature takes NAME=VALUE, got 'n_mels'")):
        r = ser(*common, "--feature", bad, "--run-dir", tmp_path / "bad")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert message in r.stderr
        assert not (tmp_path / "bad" / "model").exists()


def test_python_dash_m_and_console_script_agree():
    r = ser("archs")
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert {"seed000_cnn", "seed001_logmel_cnn", "seed002_cnn_lstm", "seed003_image_cnn", "seed004_dnn",
            "ser_crnn"} <= set(names)


def test_cv_resume_needs_the_folder_it_continues(samples_dir):
    r = ser("cv", "--arch", "seed004_dnn", "--dataset", f"ravdess:{samples_dir}", "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--resume needs --out" in r.stderr


def test_split_seed_reaches_the_run_config(tmp_path, samples_dir):
    r = ser("train", "--arch", "seed004_dnn", "--dataset", f"ravdess:{samples_dir}", "--protocol", "random",
            "--val-speakers", "0", "--epochs", "1", "--seed", "3", "--split-seed", "0", "--run-dir", tmp_path / "r")
    assert r.returncode == 0, r.stderr + r.stdout
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (cfg["seed"], cfg["split_seed"]) == (3, 0)
