"""The Evaluate page driven headlessly with AppTest on hand-made multi-corpus predictions and the shipped model's
cross-validation: the per-corpus and leave-one-corpus-out tables, calibration, the gender gap, compare."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ser_core import calibration, evaluation
from streamlit.testing.v1 import AppTest

from test_app import DEFAULT, ROOT, errors, metric, no_data  # noqa: F401  (no_data is a fixture)
from conftest import ENSEMBLE_MODEL
from test_eval_views import LABELS, LOCO_PROTOCOL, table

PAGE = ROOT / "app_pages" / "evaluate.py"
PAGE_TIMEOUT = 120           # bound (not an assertion) for one script run


def start_page() -> AppTest:
    """The Evaluate page on its own (it loads no model, so it needs not the whole app around it)."""
    at = AppTest.from_file(str(PAGE), default_timeout=PAGE_TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def write_run(root: Path, name: str, df: pd.DataFrame, protocol: str, labels: list[str],
              calib: calibration.Calibration | None = None) -> str:
    """A finished run folder with predictions.csv and metrics.json (and a model spec holding ``calib``)."""
    run_dir = root / "runs" / name
    run_dir.mkdir(parents=True)
    df.to_csv(run_dir / "predictions.csv", index=False)
    (run_dir / "config.json").write_text(json.dumps({"arch": "seed004_dnn"}))
    (run_dir / "status.json").write_text(json.dumps({"state": "finished"}))
    (run_dir / "metrics.json").write_text(json.dumps({"protocol": protocol, "speaker_independent": True,
                                                      "labels": labels}))
    if calib is not None:
        (run_dir / "model").mkdir()
        (run_dir / "model" / "spec.json").write_text(json.dumps(
            {"arch": "seed004_dnn", "labels": labels, "extra": {calibration.SPEC_KEY: calib.to_dict()}}))
    return f"run:{name}"


def frame_with(at, *columns: str) -> pd.DataFrame:
    hits = [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]
    assert hits, f"no table with columns {columns}; have {[list(d.value.columns) for d in at.dataframe]}"
    return hits[0]


def decoded(obj):
    """A plotly JSON spec with its base64 typed arrays ({"dtype", "bdata", "shape"}) turned into lists."""
    if isinstance(obj, dict) and "bdata" in obj and "dtype" in obj:
        arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
        shape = [int(n) for n in str(obj.get("shape", len(arr))).split(",")]
        return arr.reshape(shape).tolist()
    if isinstance(obj, dict):
        return {k: decoded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decoded(v) for v in obj]
    return obj


def charts(at) -> dict[str, dict]:
    """Every plotly chart on the page by its title (or its first trace's name when it has none)."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = decoded(json.loads(el.proto.spec))
        title = (spec["layout"].get("title") or {}).get("text") or spec["data"][0].get("name")
        out[title] = spec
    return out


def open_source(key: str) -> AppTest:
    """The page opened on one evaluation, as the Train page's "Open in Evaluate" button does."""
    at = AppTest.from_file(str(PAGE), default_timeout=PAGE_TIMEOUT)
    at.session_state["eval_source"] = key
    at.run()
    assert not at.exception and not errors(at)
    assert at.selectbox(key="e_source").value == key
    return at


def test_multi_corpus_loco_evaluation_shows_corpora_loco_and_calibration(no_data):
    key = write_run(no_data, "20260101-000000-cv-loco", table(), LOCO_PROTOCOL, LABELS)
    at = open_source(key)
    assert [t.label for t in at.tabs] == ["Confusion & classes", "Corpora", "Calibration", "Gender bias",
                                          "Speakers & intensity", "Misclassified clips", "Compare", "Export"]
    corpora = frame_with(at, "own-emotion accuracy").set_index("corpus")
    assert corpora.loc["urdu", ["accuracy", "own-emotion accuracy", "chance", "male accuracy"]].tolist() == [
        "25.0%", "75.0%", "33.3%", "0.0%"]
    assert corpora.loc["ravdess", "gap (female − male)"] == "+33.3 pts (95 % CI +33.3 to +33.3)"
    loco = frame_with(at, "held-out corpus").set_index("held-out corpus")
    assert loco.loc["urdu", "most frequent answers"] == "calm 75%, sad 25%"
    assert loco.loc["ravdess", "never heard in training"] == "calm"
    folds = frame_with(at, "fold", "male accuracy")
    assert folds["fold"].tolist() == ["1 (test corpus ravdess)", "2 (test corpus urdu)"]

    assert at.selectbox(key="e_corpus").options == ["ravdess", "urdu"]
    mode = at.radio(key="e_cal_mode")
    assert mode.options == ["Cross-fitted by fold", "Uncalibrated"] and mode.value == "Cross-fitted by fold"
    at.selectbox(key="e_corpus").set_value("urdu")
    at.toggle(key="e_corpus_own").set_value(True)
    mode.set_value("Uncalibrated").run()
    assert not at.exception
    heat = charts(at)["urdu: confusion matrix (each row sums to 100 %)"]["data"][0]
    assert list(heat["x"]) == ["neutral", "happy", "sad"]
    assert [list(r) for r in heat["z"]] == [[1, 0, 0], [0, 1, 0], [0.5, 0, 0.5]]

    assert metric(at, "ECE (pooled)") == "0.310"
    assert not [m for m in at.main.metric if m.label.startswith('"Not sure"')]
    assert (metric(at, "Mean confidence (pooled)"), metric(at, "Accuracy (pooled)")) == ("57.0%", "40.0%")
    drawn = charts(at)
    assert [t["name"] for t in drawn["Reliability diagram"]["data"]] == [
        "perfectly calibrated", "pooled (ECE 0.310)", "ravdess (ECE 0.283)", "urdu (ECE 0.450)"]
    assert "Accuracy against coverage" in drawn


def test_a_models_stored_calibration_is_applied_and_its_threshold_marked(no_data):
    calib = calibration.Calibration(temperature=1.0, threshold=0.55, fitted_on="a hand-made table", n=10,
                                    ece_before=0.31, ece_after=0.2)
    key = write_run(no_data, "20260101-000000-calibrated", table(), LOCO_PROTOCOL, LABELS, calib)
    at = open_source(key)
    assert at.radio(key="e_cal_mode").value == "Stored calibration"
    assert metric(at, '"Not sure" answers') == "50.0%"
    assert metric(at, "Accuracy when answering") == "80.0%"
    assert any("fitted on a hand-made table (10 clips)" in c.value and "0.200" in c.value for c in at.caption)
    coverage = charts(at)["Accuracy against coverage"]
    marks = {t["name"]: (t["x"][0], t["y"][0]) for t in coverage["data"] if t.get("mode") == "markers"}
    assert marks["pooled at the threshold"] == pytest.approx((0.5, 0.8))
    cal = frame_with(at, "not sure").set_index("scope")
    assert cal.loc["pooled", "not sure"] == "50.0%"


def test_the_ravdess_ensembles_cv_draws_the_gap_interval_and_names_the_fold_without_male_speakers(no_data):
    """models/ravdess's cross-validation, RAVDESS alone: fold 2's four test actors are women."""
    at = start_page()
    assert at.selectbox(key="e_source").value == "default"                 # the page opens on the shipped default
    at = open_source("model:ravdess")
    folds = frame_with(at, "fold", "male accuracy").set_index("fold")
    assert folds.loc["2", "male accuracy"] == "no male test speakers in this fold"
    assert folds.loc["1", "male accuracy"].endswith("%")
    gap = evaluation.gender_gap(pd.read_csv(ENSEMBLE_MODEL / "predictions.csv"))
    point = [t for t in charts(at)["female"]["data"] if t.get("name") == "gap"][0]
    assert point["y"] == [pytest.approx(100 * gap["gap"])]
    assert point["error_y"]["array"] == [pytest.approx(100 * (gap["ci95"][1] - gap["gap"]))]
    assert point["error_y"]["arrayminus"] == [pytest.approx(100 * (gap["gap"] - gap["ci95"][0]))]
    assert "Corpora" in [t.label for t in at.tabs]           # one corpus: its table still has one row
    assert frame_with(at, "own-emotion accuracy")["corpus"].tolist() == ["ravdess"]


def test_compare_warns_that_a_one_fold_run_and_the_six_fold_cv_test_different_clips(no_data):
    shipped = pd.read_csv(DEFAULT / "predictions.csv")
    fold2 = shipped[(shipped["fold"] == 2) & (shipped["corpus"] == "ravdess")]   # four actresses: no male speaker
    labels = json.loads((DEFAULT / "metrics.json").read_text())["labels"]
    key = write_run(no_data, "20260101-000000-fold2", fold2, "emobox6 fold 2 (speaker-independent)", labels)
    at = open_source(key)
    assert at.selectbox(key="e_compare").value.key == "default"
    (warning,) = [w.value for w in at.warning if "test sets" in w.value]
    assert warning.startswith(f"Different test sets: A was tested on {len(fold2)} clips")
    assert f"{len(fold2)} clips are in both" in warning
    assert any(c.value.startswith("A has no male test speakers") for c in at.caption)
    assert any(i.value.startswith("No male test speakers in this evaluation") for i in at.info)
    at.toggle(key="e_cmp_common").set_value(True).run()
    assert not at.exception
    table = frame_with(at, "metric").set_index("metric")
    # on the common clips both columns are fold 2 of the same cross-validation: no difference at all
    assert table.loc["Accuracy", "difference"] == pytest.approx(0.0)
    assert table.loc["Accuracy"].iloc[0] == pytest.approx((fold2["true"] == fold2["pred"]).mean())
    # the same clips with the same answers: nothing only one of them gets right, so nothing to tell apart
    (paired,) = [i.value for i in at.info if i.value.startswith("Is the difference real?")]
    assert f"On the {len(fold2)} clips both were tested on" in paired and "A is right where B is wrong on 0 clips" in paired
    assert paired.endswith("could be chance.")


def test_the_ravdess_ensembles_answers_to_voices_it_never_heard_are_an_evaluation(no_data):
    """models/ravdess/strangers.json makes the RAVDESS ensemble's answers on ASED, EMOVO and URDU an evaluation of
    its own: labelled as such, each corpus on its own emotions as the model card says, the calibration as Predict
    answers (the table's probabilities already calibrated: the temperature is not applied twice), the table
    exported as CSV."""
    stored = json.loads((ENSEMBLE_MODEL / "strangers.json").read_text())
    at = open_source("strangers:ravdess")
    title = at.selectbox(key="e_source").format_func("strangers:ravdess")
    assert title == "Model ravdess on voices it never heard (ASED, EMOVO, URDU)"
    assert any(m.delta.startswith("corpora it never trained on") for m in at.main.metric)
    corpora = frame_with(at, "own-emotion accuracy").set_index("corpus")
    for name, figures in stored["corpora"].items():
        assert corpora.loc[name, "own-emotion accuracy"] == f"{100 * figures['own_acc']:.1f}%"
    mode = at.radio(key="e_cal_mode")
    assert mode.options == ["Stored calibration"]
    cal = frame_with(at, "not sure").set_index("scope")
    for name, figures in stored["corpora"].items():          # strangers.py's figures, from the same probabilities
        assert float(cal.loc[name, "not sure"].rstrip("%")) == pytest.approx(100 * figures["not_sure"], abs=0.06)
    table = pd.read_csv(ROOT / stored["table"])
    assert metric(at, "Accuracy") == f"{100 * (table['pred'] == table['true']).mean():.1f}%"
    assert [b for b in at.get("download_button") if b.proto.label == "Predictions (CSV)"]
    from ser_app import views

    source = next(s for s in views.evaluation_sources() if s.key == "strangers:ravdess")
    assert source.predictions == ROOT / stored["table"] and source.calibrated
    exported = pd.read_csv(io.BytesIO(views.predictions_csv_bytes(source)))     # plain CSV, not the gzip bytes
    pd.testing.assert_frame_equal(exported, table)


def test_the_default_probe_is_an_evaluation_with_its_corpora_and_loco(no_data):
    """The shipped default's out-of-fold predictions (the probe on Whisper's encoder, four corpora) open on the
    Evaluate page like any model's: one row per corpus in the per-corpus table, its leave-one-corpus-out evaluation
    beside it, no error; no "voices it never heard" evaluation, as it heard every corpus."""
    at = open_source("default")
    per_corpus = frame_with(at, "corpus")
    assert set(per_corpus["corpus"]) >= {"ravdess", "ased", "emovo", "urdu"}
    assert at.selectbox(key="e_source").format_func("default").startswith("Shipped default model")
    assert not [o for o in at.selectbox(key="e_source").options
                if o == "strangers:default" or o.startswith("Shipped default model on voices")]


def test_the_defaults_recipe_left_out_of_each_corpus_and_calibrated_as_shipped_is_an_evaluation(no_data):
    """models/default/loco_calibration.json (novelty_calibration.py --save) makes the default's recipe, trained on
    three corpora and calibrated as shipped, an evaluation of the fourth: labelled as such, shown as leaving one
    corpus out, its calibration as stored (the table's probabilities already calibrated) with the card's ECE and
    "not sure" figures per corpus."""
    from ser_core import schema

    stored = json.loads((ROOT / "models" / "default" / schema.LOCO_CALIBRATION).read_text())
    at = open_source("loco-calibrated:default")
    title = at.selectbox(key="e_source").format_func("loco-calibrated:default")
    assert title == "Shipped default model: each corpus left out, calibrated as shipped (RAVDESS, ASED, EMOVO, URDU)"
    assert any(m.delta.startswith("loco") for m in at.main.metric)
    held = frame_with(at, "held-out corpus")
    assert set(held["held-out corpus"]) == set(stored["corpora"])
    assert at.radio(key="e_cal_mode").options == ["Stored calibration"]
    assert any(c.value.startswith("Each corpus was answered by the model's recipe trained on the other three")
               for c in at.caption)
    cal = frame_with(at, "not sure", "ECE").set_index("scope")
    for name, figures in stored["corpora"].items():
        assert float(cal.loc[name, "ECE"]) == pytest.approx(figures["ece"], abs=6e-4)
        assert float(cal.loc[name, "not sure"].rstrip("%")) == pytest.approx(100 * figures["not_sure"], abs=0.06)


def test_the_defaults_adapted_mode_left_out_of_each_corpus_is_an_evaluation(no_data):
    """models/default/adapted.json (adapt_probe.py ship, session 39) makes the adapted mode's recipe, each corpus
    left out and adapted from 20 of its clips, an evaluation: labelled as such, shown as leaving one corpus out,
    its own-emotion accuracy per corpus the card's (every clip once per reference draw, so the pooled accuracy is
    the draws' mean)."""
    from ser_core import schema

    record = json.loads((ROOT / "models" / "default" / schema.ADAPTED).read_text())
    at = open_source("adapted:default")
    title = at.selectbox(key="e_source").format_func("adapted:default")
    assert title == "Shipped default model, adapted mode: each corpus left out, adapted from 20 of its clips"
    assert any(m.delta.startswith("loco") for m in at.main.metric)
    held = frame_with(at, "held-out corpus", "own-emotion accuracy").set_index("held-out corpus")
    assert set(held.index) == set(record["figures"]["loco"])
    for name, figures in record["figures"]["loco"].items():
        assert float(held.loc[name, "own-emotion accuracy"].rstrip("%")) == \
            pytest.approx(100 * figures["own_accuracy"], abs=0.06)
    assert at.radio(key="e_cal_mode").options == ["Stored calibration"]
    assert any(c.value.startswith("Each corpus was answered by the adapted mode's recipe trained on the other three")
               for c in at.caption)
