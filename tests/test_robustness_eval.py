"""evaluate_shifts on a real (tiny) cross-validation of the sample clips, and the CLI around it."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from ser_core import channel
from ser_core.errors import ConfigError, SERError
from ser_core.robustness import CLEAN, PREDICTIONS_FILE, RESULT_FILE, evaluate_shifts

SHIFT_NAMES = list(channel.SHIFTS)


@pytest.fixture(scope="module")
def tiny_cv(tmp_path_factory, samples_dir):
    """Fold 1 of a speaker cross-validation on the 32 sample clips: actors 01 (male) and 02 (female) tested."""
    from ser_core.training import Logger, TrainConfig, cross_validate

    out = tmp_path_factory.mktemp("tiny-cv")
    cfg = TrainConfig(dataset=f"ravdess:{samples_dir}", arch="seed000_cnn", protocol="speaker_kfold", k=2,
                      test_speakers=("ravdess-01", "ravdess-02"), n_val_speakers=1, epochs=2, batch_size=8,
                      workers=1)
    cross_validate(cfg, out, folds=[1], log=Logger(None, to_file=False, echo=False))
    return out


@pytest.fixture(scope="module")
def result(tiny_cv):
    return evaluate_shifts(tiny_cv, workers=0)


def _copy(cv_dir, tmp_path):
    """A private copy for tests that write robustness files, so test order does not matter."""
    import shutil

    return shutil.copytree(cv_dir, tmp_path / "cv")


def _read_preds(cv_dir) -> pd.DataFrame:
    return pd.read_csv(cv_dir / PREDICTIONS_FILE, keep_default_na=False)


def test_result_is_well_formed(result, tiny_cv):
    recorded = pd.read_csv(tiny_cv / "fold-1" / "predictions.csv")
    assert result["folds"] == [1]
    assert result["n_clips"] == len(recorded) == 16
    assert result["shifts"] == SHIFT_NAMES
    assert list(result["results"]) == [CLEAN, *SHIFT_NAMES]
    for name, r in result["results"].items():
        assert r["n"] == 16
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["uar"] <= 1.0
        assert set(r["per_gender"]) == {"female", "male"}
        assert r["drop"] == pytest.approx((result["results"][CLEAN]["accuracy"] - r["accuracy"]) * 100, abs=0.01)
        assert r["failed"] == 0
    assert result["results"][CLEAN]["drop"] == 0
    worst = max(SHIFT_NAMES, key=lambda s: result["results"][s]["drop"])
    assert result["max_drop"] == result["results"][worst]["drop"]
    assert result["within_target"] == (result["max_drop"] < result["target_drop_points"])
    assert json.loads((tiny_cv / RESULT_FILE).read_text()) == json.loads(json.dumps(result))


def test_clean_accuracy_matches_its_own_predictions(result, tiny_cv):
    preds = _read_preds(tiny_cv)
    assert len(preds) == 16 * (len(SHIFT_NAMES) + 1)
    for name, r in result["results"].items():
        rows = preds[preds["shift"] == name]
        assert len(rows) == 16 and set(rows["file"]) == set(pd.read_csv(tiny_cv / "fold-1" / "predictions.csv")["file"])
        assert r["accuracy"] == pytest.approx(float((rows["true"] == rows["pred"]).mean()))
        for gender, g in rows.groupby("gender"):
            assert r["per_gender"][gender] == pytest.approx(float((g["true"] == g["pred"]).mean()))
    assert result["results"][CLEAN]["accuracy"] == pytest.approx(result["per_fold"]["1"][CLEAN])


def test_clean_predictions_follow_the_app_path(result, tiny_cv):
    """The clean condition is Predictor.predict_array on the decoded clip, as the app classifies it."""
    from ser_core import audio
    from ser_core.datasets import load_dataset
    from ser_core.predict import Predictor

    config = json.loads((tiny_cv / "config.json").read_text())
    paths = {p.split("/")[-1]: p for p in load_dataset(config["dataset"])["path"]}
    predictor = Predictor(tiny_cv / "fold-1" / "model")
    clean = _read_preds(tiny_cv).query("shift == @CLEAN")
    for _, row in clean.head(4).iterrows():
        p = predictor.predict_array(audio.load(paths[row["file"]]), 16000)
        assert (p.emotion or "") == row["pred"]
        assert p.confidence == pytest.approx(row["confidence"], abs=1e-5)


def test_worker_processes_give_the_same_predictions(result, tiny_cv, tmp_path, capfd):
    """Per-clip seeding: a subset of shifts, computed in a worker process, repeats the full run's rows;
    the worker's TensorFlow start-up notices stay off the terminal."""
    full = _read_preds(tiny_cv)
    subset = ["babble10db", "white10db"]
    cv = _copy(tiny_cv, tmp_path)
    sub = evaluate_shifts(cv, shifts=subset, workers=1)
    assert list(sub["results"]) == [CLEAN, *subset]
    again = _read_preds(cv)
    for name in [CLEAN, *subset]:
        a = full[full["shift"] == name].set_index("file")[["pred", "confidence"]]
        b = again[again["shift"] == name].set_index("file")[["pred", "confidence"]]
        pd.testing.assert_frame_equal(a.sort_index(), b.sort_index(), atol=1e-5)
    err = capfd.readouterr().err
    assert "oneDNN" not in err and "absl" not in err, err


def test_bad_requests_are_clear_errors(tiny_cv, tmp_path):
    with pytest.raises(ConfigError, match="unknown shift"):
        evaluate_shifts(tiny_cv, shifts=["mp3"], workers=0)
    with pytest.raises(SERError, match="fold"):
        evaluate_shifts(tiny_cv, folds=[5], workers=0)
    with pytest.raises(SERError, match="not a cross-validation"):
        evaluate_shifts(tmp_path, workers=0)


def test_cli_prints_a_table(tiny_cv, tmp_path, capsys):
    from ser_core.cli import main

    tiny_cv = _copy(tiny_cv, tmp_path)
    assert main(["robustness", str(tiny_cv), "--shifts", "gain-20db,telephone", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.strip()}
    result = json.loads((tiny_cv / RESULT_FILE).read_text())
    for name in (CLEAN, "gain-20db", "telephone"):
        assert float(lines[name][1]) == pytest.approx(result["results"][name]["accuracy"], abs=5.1e-4)  # 3 decimals
        assert float(lines[name][3]) == pytest.approx(result["results"][name]["drop"], abs=0.05)
    assert "opus16k" not in lines
    assert main(["robustness", str(tiny_cv), "--shifts", "nope", "--workers", "0"]) == 2
    assert "error: unknown shift(s): nope" in capsys.readouterr().err

