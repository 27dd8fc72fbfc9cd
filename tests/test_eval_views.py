"""The Evaluate page's per-corpus, leave-one-corpus-out, calibration, gender-gap and compare views,
checked against numbers worked out by hand on a ten-clip, two-corpus predictions table."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from ser_app import eval_views as ev
from ser_core import calibration, evaluation

NAN = float("nan")
LABELS = ["neutral", "calm", "happy", "sad"]
LOCO_PROTOCOL = "loco 2-fold cross-validation, out-of-fold predictions"
# A leave-one-corpus-out cross-validation in miniature. Fold 1 tests RAVDESS with a model trained on URDU,
# which has no calm, so that model gave calm no probability at all (an empty cell, as in a real pooled table);
# fold 2 tests URDU (neutral, happy, sad) with a model that knows all four labels.
# (file, speaker, gender, corpus, true, p_neutral, p_calm, p_happy, p_sad, fold); pred = the most probable label
ROWS = [
    ("r1.flac", "ravdess-01", "female", "ravdess", "neutral", 0.6, NAN, 0.3, 0.1, 1),   # right, 0.6
    ("r2.flac", "ravdess-01", "female", "ravdess", "calm", 0.5, NAN, 0.2, 0.3, 1),      # wrong (cannot say calm)
    ("r3.flac", "ravdess-01", "female", "ravdess", "happy", 0.2, NAN, 0.7, 0.1, 1),     # right, 0.7
    ("r4.flac", "ravdess-02", "male", "ravdess", "sad", 0.5, NAN, 0.1, 0.4, 1),         # wrong, 0.5
    ("r5.flac", "ravdess-02", "male", "ravdess", "happy", 0.1, NAN, 0.3, 0.6, 1),       # wrong, 0.6
    ("r6.flac", "ravdess-02", "male", "ravdess", "neutral", 0.8, NAN, 0.1, 0.1, 1),     # right, 0.8
    ("u1.wav", "urdu-F1", "female", "urdu", "neutral", 0.3, 0.4, 0.2, 0.1, 2),          # calm; own: neutral, right
    ("u2.wav", "urdu-F1", "female", "urdu", "sad", 0.1, 0.2, 0.1, 0.6, 2),              # right both ways
    ("u3.wav", "urdu-M1", "male", "urdu", "happy", 0.1, 0.5, 0.3, 0.1, 2),              # calm; own: happy, right
    ("u4.wav", "urdu-M1", "male", "urdu", "sad", 0.25, 0.5, 0.15, 0.1, 2),              # calm; own: neutral, wrong
]


def table() -> pd.DataFrame:
    df = pd.DataFrame(ROWS, columns=["file", "speaker", "gender", "corpus", "true"]
                      + [f"p_{lab}" for lab in LABELS] + ["fold"])
    probs = df[[f"p_{lab}" for lab in LABELS]].fillna(0.0).to_numpy()
    df.insert(5, "pred", [LABELS[i] for i in probs.argmax(axis=1)])
    df.insert(6, "confidence", probs.max(axis=1))
    return df


def metrics_of(df: pd.DataFrame, protocol: str = LOCO_PROTOCOL) -> dict:
    return evaluation.evaluate(df, LABELS, protocol=protocol)


def test_the_hand_made_table_predicts_what_its_comments_say():
    df = table()
    assert df["pred"].tolist() == ["neutral", "neutral", "happy", "neutral", "sad", "neutral",
                                   "calm", "sad", "calm", "calm"]
    assert metrics_of(df)["accuracy"] == pytest.approx(4 / 10)


def test_empty_probability_cells_count_as_zero_not_as_the_answer():
    """np.argmax returns the position of a NaN: a fold model's missing calm must not become its answer."""
    df = table()
    ravdess = df[df["corpus"] == "ravdess"]
    assert evaluation.restricted_pred(ravdess, LABELS).tolist() == ravdess["pred"].tolist()
    probs, y, labels = calibration.table_arrays(df)
    assert labels == LABELS and not np.isnan(probs).any()
    assert probs[1].tolist() == [0.5, 0.0, 0.2, 0.3] and y[1] == 1


def test_per_corpus_table_has_own_emotion_accuracy_chance_and_the_gender_gap():
    df = table()
    frame = ev.corpus_frame(df, LABELS, ev.corpus_gaps(df, n_boot=200)).set_index("corpus")
    assert list(frame.index) == ["ravdess", "urdu"]
    r, u = frame.loc["ravdess"], frame.loc["urdu"]
    assert (r["clips"], r["speakers"], r["accuracy"], r["UAR"]) == (6, 2, "50.0%", "37.5%")   # UAR (1+0+.5+0)/4
    assert r["own emotions"] == "4: neutral, calm, happy, sad"
    assert (r["own-emotion accuracy"], r["chance"], r["own-emotion UAR"]) == ("50.0%", "25.0%", "37.5%")
    assert (r["female accuracy"], r["male accuracy"]) == ("66.7%", "33.3%")
    # one speaker of each gender: every bootstrap resample is the same pair, so the interval is a point
    assert r["gap (female − male)"] == "+33.3 pts (95 % CI +33.3 to +33.3)"
    assert (u["clips"], u["accuracy"], u["UAR"]) == (4, "25.0%", "16.7%")        # only u2 right; sad recall 1/2
    assert u["own emotions"] == "3: neutral, happy, sad"
    assert (u["own-emotion accuracy"], u["chance"], u["own-emotion UAR"]) == ("75.0%", "33.3%", "83.3%")
    assert (u["female accuracy"], u["male accuracy"]) == ("50.0%", "0.0%")
    assert u["gap (female − male)"] == "+50.0 pts (95 % CI +50.0 to +50.0)"


def test_a_corpus_without_one_gender_says_so():
    df = table()
    df.loc[df["corpus"] == "urdu", "gender"] = "female"
    frame = ev.corpus_frame(df, LABELS, ev.corpus_gaps(df, n_boot=50)).set_index("corpus")
    assert frame.loc["urdu", "male accuracy"] == "no male speakers"
    assert frame.loc["urdu", "gap (female − male)"] == "no male speakers"
    assert ev.corpus_gaps(df, n_boot=50)["urdu"] is None


def test_leave_one_corpus_out_view_shows_what_the_model_answered_on_each_held_out_corpus():
    df = table()
    assert ev.loco_folds(df) == {"1": "ravdess", "2": "urdu"}
    frame = ev.loco_frame(df, LABELS).set_index("held-out corpus")
    r, u = frame.loc["ravdess"], frame.loc["urdu"]
    assert (r["fold"], r["never heard in training"], u["never heard in training"]) == ("1", "calm", "none")
    assert (u["own-emotion accuracy"], u["chance"], u["own-emotion UAR"]) == ("75.0%", "33.3%", "83.3%")
    assert u["accuracy (all labels)"] == "25.0%"
    assert u["most frequent answers"] == "calm 75%, sad 25%"
    assert (u["top-2 answers' share"], u["top-2 share of its true emotions"]) == ("100.0%", "75.0%")
    assert r["most frequent answers"] == "neutral 67%, happy 17%, sad 17%"
    assert (r["top-2 answers' share"], r["top-2 share of its true emotions"]) == ("83.3%", "66.7%")


def test_folds_that_mix_corpora_are_not_a_leave_one_corpus_out_view():
    df = table()
    df.loc[0, "fold"] = 2
    assert ev.loco_folds(df) == {}
    assert ev.loco_frame(df, LABELS).empty
    assert ev.loco_folds(df[df["corpus"] == "urdu"].drop(columns="fold")) == {"": "urdu"}


def test_answers_figure_stacks_true_and_answered_shares_per_corpus():
    fig = ev.answers_figure(table(), LABELS)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name) == LABELS
    assert [list(level) for level in by_name["calm"].y] == [["ravdess", "ravdess", "urdu", "urdu"],
                                                          ["true", "answered", "true", "answered"]]
    assert list(by_name["calm"].x) == pytest.approx([1 / 6, 0, 0, 3 / 4])
    assert list(by_name["neutral"].x) == pytest.approx([2 / 6, 4 / 6, 1 / 4, 0])


def test_corpus_confusion_over_all_labels_and_over_its_own_emotions():
    df = table()
    rows, cols, cm = ev.corpus_confusion(df, "urdu", LABELS)
    assert (rows, cols) == (["neutral", "happy", "sad"], LABELS)
    assert cm.tolist() == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 1]]
    rows, cols, cm = ev.corpus_confusion(df, "urdu", LABELS, own=True)
    assert cols == ["neutral", "happy", "sad"]
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    heat = ev.corpus_confusion_figure(df, "urdu", LABELS, own=True).data[0]
    assert np.asarray(heat.z).tolist() == [[1, 0, 0], [0, 1, 0], [0.5, 0, 0.5]]


def test_per_fold_table_says_when_a_fold_has_no_male_test_speakers():
    df = table()
    df.loc[df["corpus"] == "urdu", "gender"] = "female"
    frame = ev.per_fold_frame(metrics_of(df), df).set_index("fold")
    assert list(frame.index) == ["1 (test corpus ravdess)", "2 (test corpus urdu)"]
    assert frame.loc["2 (test corpus urdu)", "male accuracy"] == "no male test speakers in this fold"
    assert frame.loc["2 (test corpus urdu)", "female accuracy"] == "25.0%"
    assert frame.loc["1 (test corpus ravdess)", "male accuracy"] == "33.3%"


def test_gender_figure_draws_the_gap_with_its_interval():
    metrics = metrics_of(table())
    gap = {"gap": 0.10, "ci95": [-0.02, 0.25]}
    fig = ev.gender_figure(metrics, gap)
    (point,) = [t for t in fig.data if t.name == "gap"]
    assert list(point.y) == pytest.approx([10.0])
    assert list(point.error_y.array) == pytest.approx([15.0])
    assert list(point.error_y.arrayminus) == pytest.approx([12.0])
    assert [a.text for a in fig.layout.annotations][:3] == ["Accuracy", "Gap, 95 % CI", "Recall per emotion"]
    assert not [t for t in ev.gender_figure(metrics).data if t.name == "gap"]


def test_uncalibrated_reliability_ece_and_coverage_by_hand():
    # confidences and right/wrong: .6 R, .5 W, .7 R, .5 W, .6 W, .8 R | .4 W, .6 R, .5 W, .5 W
    s = ev.calibration_summary(table(), ev.UNCALIBRATED)
    assert s["threshold"] is None
    assert s["pooled"]["ece"] == pytest.approx((0.4 + 4 * 0.5 + 3 * abs(2 / 3 - 0.6) + 0.3 + 0.2) / 10)   # 0.31
    assert s["groups"]["ravdess"]["ece"] == pytest.approx((2 * 0.5 + 2 * 0.1 + 0.3 + 0.2) / 6)
    assert s["groups"]["urdu"]["ece"] == pytest.approx((0.4 + 0.4 + 2 * 0.5) / 4)
    assert ev.confidence_and_accuracy(s["pooled"]) == pytest.approx((5.7 / 10, 0.4))
    frame = ev.calibration_frame(s)
    assert frame.columns.tolist() == ["scope", "clips", "ECE"]
    assert frame.values.tolist() == [["pooled", 10, "0.310"], ["ravdess", 6, "0.283"], ["urdu", 4, "0.450"]]
    fig = ev.reliability_figure(s)
    names = [t.name for t in fig.data]
    assert names == ["perfectly calibrated", "pooled (ECE 0.310)", "ravdess (ECE 0.283)", "urdu (ECE 0.450)"]
    pooled = fig.data[1]
    assert list(pooled.x) == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8])
    assert list(pooled.y) == pytest.approx([0, 0, 2 / 3, 1, 1])
    cov = ev.coverage_figure(s)
    assert not [t for t in cov.data if t.mode == "markers"] and not cov.layout.shapes
    curve = cov.data[0]
    assert curve.x[-1] == 1.0 and curve.y[-1] == pytest.approx(0.4)


def test_stored_calibration_marks_the_not_sure_threshold(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    calib = calibration.Calibration(temperature=1.0, threshold=0.55, fitted_on="a hand-made table", n=10)
    spec = {"arch": "x", "extra": {calibration.SPEC_KEY: calib.to_dict()}}
    (run / "model" / "spec.json").write_text(json.dumps(spec))
    assert ev.stored_calibration(run) == calib
    assert ev.stored_calibration(tmp_path) is None
    df = table()
    assert ev.calibration_modes(df, calib) == [ev.STORED, ev.CROSS_FITTED, ev.UNCALIBRATED]
    assert ev.calibration_modes(df[df["fold"] == 1], None) == [ev.UNCALIBRATED]
    s = ev.calibration_summary(df, ev.STORED, calib)
    # below 0.55: r2, r4, u1, u3, u4 (all wrong); answered r1, r3, r5, r6, u2: 4 of 5 right
    pooled = s["pooled"]
    assert (pooled["not_sure"], pooled["answered_accuracy"], pooled["withheld_accuracy"]) == (0.5, 0.8, 0.0)
    assert pooled["not_sure_when_wrong"] == pytest.approx(5 / 6) and pooled["not_sure_when_right"] == 0.0
    frame = ev.calibration_frame(s).set_index("scope")
    assert frame.loc["urdu"].tolist() == [4, "0.450", "75.0%", "100.0%", "0.0%", "100.0%", "0.0%"]
    cov = ev.coverage_figure(s)
    marks = {t.name: (t.x[0], t.y[0]) for t in cov.data if t.mode == "markers"}
    assert marks["pooled at the threshold"] == pytest.approx((0.5, 0.8))
    assert marks["urdu at the threshold"] == pytest.approx((0.25, 1.0))
    (line,) = cov.layout.shapes
    assert line.x0 == pytest.approx(0.5)
    assert "'not sure' below 55%: 50% of answers" in cov.layout.annotations[0].text
    exported = ev.calibration_export(s, ev.STORED)
    assert exported["threshold"] == 0.55 and exported["pooled"]["not_sure"] == 0.5
    assert "reliability" not in exported["pooled"]


def test_a_stored_temperature_changes_confidences_and_the_ece():
    calib = calibration.Calibration(temperature=2.0, threshold=0.4)
    df = table()
    s = ev.calibration_summary(df, ev.STORED, calib)
    probs, y, _ = calibration.table_arrays(df)
    soft = calibration.apply_temperature(probs, 2.0)
    assert s["pooled"]["ece"] == pytest.approx(calibration.ece(soft, y))
    assert s["pooled"]["ece"] != pytest.approx(ev.calibration_summary(df, ev.UNCALIBRATED)["pooled"]["ece"])
    assert s["pooled"]["not_sure"] == pytest.approx(float((soft.max(axis=1) < 0.4).mean()))
    with pytest.raises(evaluation.SERError):
        ev.calibration_summary(df, ev.STORED, None)


def test_cross_fitted_calibration_fits_each_fold_on_the_other():
    df = table()
    s = ev.calibration_summary(df, ev.CROSS_FITTED)
    probs, y, _ = calibration.table_arrays(df)
    t_for_urdu = calibration.fit_temperature(probs[:6], y[:6])
    urdu = calibration.apply_temperature(probs[6:], t_for_urdu)
    assert s["groups"]["urdu"]["ece"] == pytest.approx(calibration.ece(urdu, y[6:]))
    assert s["threshold"] == calibration.DEFAULT_THRESHOLD


def test_compare_says_whether_the_test_sets_are_the_same():
    df = table()
    m = metrics_of(df)
    same = ev.compare_test_sets(df, m, df.copy(), dict(m))
    assert same.same and same.common == 10
    assert same.text.startswith(f"Same protocol ({LOCO_PROTOCOL}) and the same 10 test clips")
    renamed = ev.compare_test_sets(df, m, df, {**m, "protocol": "speaker_kfold 2-fold cross-validation"})
    assert renamed.same and "different protocol names" in renamed.text
    one = df[df["fold"] == 1]
    other = ev.compare_test_sets(df, m, one, metrics_of(one, "loco fold 1 (speaker-independent)"))
    assert not other.same and (other.n_a, other.n_b, other.common) == (10, 6, 6)
    assert other.text.startswith("Different test sets: A was tested on 10 clips")
    assert "6 clips are in both" in other.text and "compare on the common clips only" in other.text
    random = ev.compare_test_sets(df, m, df, {**m, "speaker_independent": False})
    assert not random.same and "B is speaker-DEPENDENT" in random.text
    a, b = ev.common_clips(df, one.iloc[::-1])
    assert a["file"].tolist() == b["file"].tolist() == sorted(one["file"])
    assert ev.missing_genders({"per_gender": {"female": {}}}, "B") == [
        "B has no male test speakers, so its male accuracy is empty."]


def test_paired_difference_counts_the_clips_only_one_gets_right_on_the_shared_clips():
    df = table()
    right = (df["true"] == df["pred"]).to_numpy()
    assert right.sum() < len(df)                           # the hand-made table has wrong answers
    b = df.copy()
    b["pred"] = b["true"]                                  # B right everywhere
    res = ev.paired_difference(df, b.iloc[::-1])
    text = res["text"]
    wrong = int((~right).sum())
    assert f"On the 10 clips both were tested on (A {100 * right.mean():.1f} %, B 100.0 %), A is right where B " \
           f"is wrong on 0 clips and B right where A is wrong on {wrong}" in text
    p = 2 * 0.5 ** wrong if wrong else 1.0
    assert f"p = {min(p, 1.0):.2g}" in text
    assert ("unlikely to be chance" in text) == (p < 0.05)
    assert (res["n"], res["a_only"], res["b_only"]) == (10, 0, wrong)
    assert ev.paired_difference(df, df.copy())["text"].endswith("p = 1, a difference this size could be chance.")
    assert ev.paired_difference(df, df.assign(corpus="elsewhere")) is None        # no clip in common


def test_export_carries_the_gender_gap_interval_per_corpus_and_calibration_numbers():
    df = table()
    metrics = metrics_of(df)
    gap = evaluation.gender_gap(df, n_boot=200)
    calib = ev.calibration_export(ev.calibration_summary(df, ev.UNCALIBRATED), ev.UNCALIBRATED)
    out = ev.export_metrics(metrics, gap, calib)
    assert "gender_gap" not in metrics
    data = json.loads(json.dumps(out))
    assert data["gender_gap"]["gap"] == pytest.approx(gap["gap"]) and data["gender_gap"]["ci95"] == gap["ci95"]
    assert data["calibration"]["pooled"]["ece"] == pytest.approx(0.31)
    flat = pd.read_csv(io.StringIO(ev.export_csv(out)))

    def value(scope, name, metric):
        return flat[(flat["scope"] == scope) & (flat["name"].astype(str) == name)
                    & (flat["metric"] == metric)]["value"].item()

    assert value("gender_gap", "female-male", "ci95_low") == pytest.approx(gap["ci95"][0])
    assert value("gender_gap", "female-male", "ci95_high") == pytest.approx(gap["ci95"][1])
    assert value("corpus", "urdu", "own_accuracy") == pytest.approx(0.75)
    assert value("corpus", "urdu", "male_accuracy") == 0.0
    assert value("fold", "2", "accuracy") == pytest.approx(0.25)
    assert value("calibration", "pooled", "ece") == pytest.approx(0.31)
    assert value("overall", "all", "accuracy") == pytest.approx(0.4)
