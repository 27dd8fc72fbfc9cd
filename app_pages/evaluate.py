"""Evaluate page: how good is a model, for whom, and where does it go wrong?

Every number is recomputed from a predictions table (out-of-fold or test-fold
predictions), so the shipped model's cross-validation and every run share one
code path. No TensorFlow is imported here.
"""
import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import streamlit as st

from ser_core import evaluation

from ser_app import eval_views, views
from ser_core.adapt import REFERENCE_CLIPS
from ser_core.config import data_dir
from ser_core.errors import SERError


@st.cache_data(max_entries=16, show_spinner=False)
def load(src: tuple, stamp: float):
    """Predictions and metrics of one source (``src``: :func:`fields` of it; ``stamp``: its table's mtime)."""
    return views.load_source(views.EvalSource("", "", *src))


def fields(source: views.EvalSource) -> tuple:
    """What decides a source's numbers, hashable for the caches: folder, table, protocol, calibrated."""
    return source.dir, source.table, source.protocol, source.calibrated


@st.cache_data(max_entries=16, show_spinner="Bootstrapping the gender gap...")
def gender_gap(src: tuple, stamp: float):
    df, _ = load(src, stamp)
    return evaluation.gender_gap(df)


@st.cache_data(max_entries=16, show_spinner="Bootstrapping each corpus's gender gap...")
def corpus_gaps(src: tuple, stamp: float):
    df, _ = load(src, stamp)
    return eval_views.corpus_gaps(df)


@st.cache_data(max_entries=32, show_spinner="Calibrating...")
def calibration_view(src: tuple, stamp: float, mode: str):
    df, _ = load(src, stamp)
    return eval_views.calibration_summary(df, mode, eval_views.stored_calibration(src[0], calibrated=src[3]))


@st.cache_data(ttl=600, show_spinner=False)
def audio_lookup(roots: tuple[str, ...]) -> dict[str, str]:
    return views.audio_index([Path(r) for r in roots])


def stamp_of(source: views.EvalSource) -> float:
    return source.predictions.stat().st_mtime


def kaleido_ready() -> bool:
    """PNG export needs the kaleido package and a Chromium/Chrome binary."""
    if importlib.util.find_spec("kaleido") is None:
        return False
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def metric_row(metrics: dict) -> None:
    cols = st.columns(4)
    for col, (label, value, _, protocol) in zip(cols, views.metric_cards(metrics)):
        col.metric(label, value, delta=protocol, delta_color="off", delta_arrow="off", border=True,
                   help=f"Protocol: {metrics.get('protocol') or 'unknown'}; {metrics['n']} clips")
    if not metrics.get("speaker_independent", True):
        st.warning("These numbers come from a speaker-dependent split: the same voices were in training, "
                   "so they overstate accuracy on new speakers.")


def overview(df: pd.DataFrame, metrics: dict, figs: dict) -> None:
    c1, c2 = st.columns([1, 1])
    figs["confusion"] = views.confusion_figure(metrics)
    figs["per_class"] = views.per_class_figure(metrics)
    c1.plotly_chart(figs["confusion"], key="e_confusion", theme=None)
    c2.plotly_chart(figs["per_class"], key="e_per_class", theme=None)
    c2.dataframe(views.per_class_frame(metrics), hide_index=True,
                 column_config={k: st.column_config.NumberColumn(format="%.3f") for k in ("precision", "recall", "f1")})
    if metrics.get("per_fold"):
        st.markdown("**Per fold**")
        st.dataframe(eval_views.per_fold_frame(metrics, df), hide_index=True)


def corpora_tab(source: views.EvalSource, df: pd.DataFrame, metrics: dict, figs: dict) -> None:
    labels = metrics["labels"]
    st.markdown("**Per corpus**")
    st.dataframe(eval_views.corpus_frame(df, labels, corpus_gaps(fields(source), stamp_of(source))), hide_index=True)
    st.caption("Own-emotion accuracy and UAR: each clip answered by its most probable emotion among those its "
               "corpus uses (what a user of that corpus sees); chance is one over their number. The gap's 95 % "
               "interval comes from a bootstrap over the corpus's speakers.")
    st.markdown("**Leave one corpus out**")
    held = eval_views.loco_folds(df)
    if eval_views.is_loco(metrics) and held:
        st.dataframe(eval_views.loco_frame(df, labels), hide_index=True)
        st.caption("Each held-out corpus was tested by a model trained on the other corpora only: no speaker, "
                   "language or room of it was heard in training. When the top-2 answers' share is far above "
                   "the top-2 share of the true emotions, the model collapses onto one or two classes there.")
    elif source.table:
        st.caption("Every corpus here is one the model never trained on: no speaker, language or room of it was "
                   "heard in training, as in a leave-one-corpus-out cross-validation. Where the answers pile onto "
                   "one or two emotions far above their true share (below), the model collapses there.")
    else:
        st.caption("This evaluation is not a leave-one-corpus-out cross-validation. Run one with "
                   "`ser cv --dataset ravdess+ased+emovo+urdu --protocol loco` to see how the model does on a "
                   "corpus it never heard.")
    figs["answers"] = eval_views.answers_figure(df, labels)
    st.plotly_chart(figs["answers"], key="e_answers", theme=None)
    st.markdown("**Confusion matrix per corpus**")
    names = eval_views.corpora(df)
    if st.session_state.get("e_corpus") not in names:
        # set, not dropped: a dropped value leaves the browser showing the last evaluation's corpus
        st.session_state["e_corpus"] = names[0]
    c1, c2 = st.columns([2, 1])
    corpus = c1.selectbox("Corpus", names, key="e_corpus")
    own = c2.toggle("Own emotions only", key="e_corpus_own",
                    help="Answer each clip with its most probable emotion among those its corpus uses.")
    figs["corpus_confusion"] = eval_views.corpus_confusion_figure(df, corpus, labels, own=own)
    st.plotly_chart(figs["corpus_confusion"], key="e_corpus_confusion", theme=None)


MODE_NOTES = {
    eval_views.CROSS_FITTED: "Each fold's temperature is fitted on the other folds' predictions, so no clip's "
                             "calibration saw it (in a leave-one-corpus-out cross-validation, nor its corpus). "
                             "\"Not sure\" below the default threshold.",
    eval_views.UNCALIBRATED: "The model's raw probabilities. \"Not sure\" is decided on calibrated "
                             "probabilities, so no threshold is drawn here.",
}


def calibration_tab(source: views.EvalSource, df: pd.DataFrame, figs: dict) -> dict | None:
    """Reliability diagram, ECE and accuracy against coverage; returns the numbers for the export."""
    if not evaluation.probability_columns(df):
        st.info("These predictions carry no class probabilities (p_<emotion> columns), so their calibration "
                "cannot be measured.")
        return None
    calib = eval_views.stored_calibration(source.dir, calibrated=source.calibrated)
    modes = eval_views.calibration_modes(df, calib, calibrated=source.calibrated)
    if st.session_state.get("e_cal_for") != source.key or st.session_state.get("e_cal_mode") not in modes:
        st.session_state["e_cal_mode"] = modes[0]        # a newly picked source opens on its stored calibration
        st.session_state["e_cal_for"] = source.key
    mode = st.radio("Probabilities", modes, horizontal=True, key="e_cal_mode",
                    help="The model's stored calibration, when it has one, is what Predict uses.")
    try:
        summary = calibration_view(fields(source), stamp_of(source), mode)
    except SERError as exc:
        st.info(views.md_escape(exc))
        return None
    if mode == eval_views.STORED and source.protocol == views.LOCO_CALIBRATION_PROTOCOL:
        note = (f"Each corpus was answered by the model's recipe trained on the other three and calibrated the way "
                f"the model is (one temperature from speaker folds inside those three corpora); \"not sure\" below "
                f"{calib.threshold:.0%} confidence. Where the curve runs under the diagonal, the answers are surer "
                "than they are right: what the model's confidence means for a corpus it never heard.")
    elif mode == eval_views.STORED and source.protocol == views.ADAPTED_PROTOCOL:
        note = (f"Each corpus was answered by the adapted mode's recipe trained on the other three, the corpus "
                f"standardised by {REFERENCE_CLIPS} of its unlabelled clips drawn at random (every clip once per draw) and calibrated "
                f"by one temperature fitted inside the training corpora; \"not sure\" below {calib.threshold:.0%} "
                "confidence. Where the curve runs near the diagonal, the confidence means what it says for a "
                "recording setup the model never heard.")
    elif mode == eval_views.STORED and source.calibrated:
        note = (f"The model's answers as Predict gives them (its stored temperature already applied); \"not sure\" "
                f"below {calib.threshold:.0%} confidence. A model that knew these voices would say \"not sure\" far "
                "more often to its wrong answers than to its right ones.")
    elif mode == eval_views.STORED:
        note = (f"Temperature {calib.temperature:.3g}, fitted on {calib.fitted_on or 'unnamed predictions'} "
                f"({calib.n} clips); \"not sure\" below {calib.threshold:.0%} confidence.")
        if calib.ece_after is not None:
            before = f" (uncalibrated {calib.ece_before:.3f})" if calib.ece_before is not None else ""
            note += (f" If these are the predictions it was fitted on, the ECE here is in-sample: cross-fitted by "
                     f"fold it was {calib.ece_after:.3f}{before}.")
    else:
        note = MODE_NOTES[mode]
    st.caption(note)
    pooled = summary["pooled"]
    c1, c2, c3 = st.columns(3)
    c1.metric("ECE (pooled)", f"{pooled['ece']:.3f}", help="Expected calibration error: the clip-weighted mean "
              "gap between confidence and accuracy over ten confidence bins.")
    if summary["threshold"] is None:
        conf, acc = eval_views.confidence_and_accuracy(pooled)
        c2.metric("Mean confidence (pooled)", views.format_pct(conf), help="Of the answers (the highest probability)")
        c3.metric("Accuracy (pooled)", views.format_pct(acc), help="Far below the mean confidence: overconfident")
    else:
        c2.metric("\"Not sure\" answers", views.format_pct(pooled["not_sure"]),
                  help=f"Confidence below {summary['threshold']:.0%}")
        if pooled.get("answered_accuracy") is not None:
            c3.metric("Accuracy when answering", views.format_pct(pooled["answered_accuracy"]))
    figs["reliability"] = eval_views.reliability_figure(summary)
    figs["coverage"] = eval_views.coverage_figure(summary)
    c1, c2 = st.columns(2)
    c1.plotly_chart(figs["reliability"], key="e_reliability", theme=None)
    c2.plotly_chart(figs["coverage"], key="e_coverage", theme=None)
    st.dataframe(eval_views.calibration_frame(summary), hide_index=True)
    return eval_views.calibration_export(summary, mode)


def gap_or_none(source: views.EvalSource) -> tuple[dict | None, str]:
    try:
        return gender_gap(fields(source), stamp_of(source)), ""
    except SERError as exc:
        return None, str(exc)


def fairness(source: views.EvalSource, metrics: dict, figs: dict) -> None:
    if not metrics.get("per_gender"):
        st.info("These predictions carry no speaker gender.")
        return
    gap, why = gap_or_none(source)
    figs["gender"] = eval_views.gender_figure(metrics, gap)
    st.plotly_chart(figs["gender"], key="e_gender", theme=None)
    if gap is None:
        missing = [g for g in ("female", "male") if g not in metrics["per_gender"]]
        st.info(f"No {missing[0]} test speakers in this evaluation (EmoBox RAVDESS fold 2, for one, tests four "
                "actresses), so there is no gender gap to measure." if missing else views.md_escape(why))
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("Female accuracy", views.format_pct(gap["accuracy"]["female"]))
    c2.metric("Male accuracy", views.format_pct(gap["accuracy"]["male"]))
    c3.metric("Gap (female − male)", f"{100 * gap['gap']:+.1f} pts",
              help=f"95 % CI {100 * gap['ci95'][0]:+.1f} to {100 * gap['ci95'][1]:+.1f} points")
    st.caption(views.gender_gap_text(gap))
    if min(gap["speakers"].values()) < 4:
        st.caption("With fewer than four speakers of a gender the bootstrap interval is not meaningful.")
    (st.success if gap["within_noise"] else st.warning)(gap["verdict"])


def speakers(df: pd.DataFrame, metrics: dict, figs: dict) -> None:
    figs["speakers"] = views.speaker_figure(df)
    st.plotly_chart(figs["speakers"], key="e_speakers", theme=None)
    if metrics.get("per_intensity"):
        st.markdown("**RAVDESS intensity: normal vs strong**")
        figs["intensity"] = views.intensity_figure(metrics)
        st.plotly_chart(figs["intensity"], key="e_intensity", theme=None)
        st.caption("Neutral has no strong version in RAVDESS, so it only counts under normal.")


def mistakes(df: pd.DataFrame) -> None:
    wrong = views.misclassified_frame(df)
    st.caption(f"{len(wrong)} of {len(df)} clips misclassified.")
    if wrong.empty:
        return
    c1, c2, c3, c4 = st.columns(4)
    true = c1.multiselect("True emotion", sorted(wrong["true"].unique()), key="e_f_true")
    pred = c2.multiselect("Predicted", sorted(wrong["pred"].unique()), key="e_f_pred")
    spk = c3.multiselect("Speaker", sorted(wrong["speaker"].unique()) if "speaker" in wrong else [], key="e_f_spk")
    conf = c4.slider("Minimum confidence", 0.0, 1.0, 0.0, 0.05, key="e_f_conf")
    shown = views.filter_misclassified(wrong, true=true, pred=pred, speakers=spk, min_confidence=conf)
    st.dataframe(shown, hide_index=True,
                 column_config={"confidence": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0,
                                                                              format="percent")})
    if shown.empty or "file" not in shown:
        return
    index = audio_lookup((str(data_dir()), str(views.samples_dir())))
    files = shown["file"].astype(str).tolist()[:500]
    # one lookup table, not a scan of the table per option: 500 scans took seconds on every rerun
    answers = dict(zip(files, zip(shown["true"], shown["pred"])))
    pick = st.selectbox("Listen to a clip", files, key="e_listen",
                        format_func=lambda f: "{} (true {}, predicted {})".format(f, *answers[f]))
    path = views.find_audio(pick, index)
    if path is None:
        st.caption("This clip is not under the data folder or data/samples, so it cannot be played.")
    else:
        st.audio(str(path), format=views.mime_for(path.name))


def compare(source: views.EvalSource, df: pd.DataFrame, metrics: dict, sources: list[views.EvalSource]) -> None:
    others = [s for s in sources if s.key != source.key]
    if not others:
        st.caption("Only one evaluation is available: train a run to compare against.")
        return
    if st.session_state.get("e_compare_for") != source.key:
        # another evaluation opened: compare it with the first other one (the shipped default) again, not
        # with whatever the previous evaluation's list happened to start with
        st.session_state.pop("e_compare", None)
        st.session_state["e_compare_for"] = source.key
    other = st.selectbox("Compare with", others, format_func=lambda s: s.title, key="e_compare")
    try:
        df2, m2 = load(fields(other), stamp_of(other))
    except SERError as exc:
        st.error(views.md_escape(exc))
        return
    sets = eval_views.compare_test_sets(df, metrics, df2, m2)
    (st.success if sets.same else st.warning)(views.md_escape(sets.text))
    if not sets.same and sets.common and st.toggle(f"Compare on the {sets.common} clips both were tested on",
                                                   key="e_cmp_common"):
        a, b = eval_views.common_clips(df, df2)
        metrics = evaluation.evaluate(a, metrics["labels"], protocol=metrics.get("protocol", ""),
                                      speaker_independent=metrics.get("speaker_independent", True))
        m2 = evaluation.evaluate(b, m2["labels"], protocol=m2.get("protocol", ""),
                                 speaker_independent=m2.get("speaker_independent", True))
    table = views.compare_frame(metrics, m2, "A: " + source.title, "B: " + other.title)
    st.plotly_chart(views.compare_figure(table), key="e_compare_fig", theme=None)
    paired = eval_views.paired_difference(df, df2)
    if paired:
        st.info(paired["text"])          # numbers and fixed words only: nothing to escape
    st.dataframe(table, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns[1:]})
    gaps = eval_views.missing_genders(metrics, "A") + eval_views.missing_genders(m2, "B")
    if gaps:
        st.caption(" ".join(gaps))
    c1, c2 = st.columns(2)
    for col, m, name, key in ((c1, metrics, "A: " + source.title, "e_cmp_a"), (c2, m2, "B: " + other.title, "e_cmp_b")):
        col.plotly_chart(views.confusion_figure(m).update_layout(title=name), key=key, theme=None)


def export(source: views.EvalSource, metrics: dict, figs: dict, calib: dict | None) -> None:
    stem = Path(source.dir).name + ("-strangers" if source.table else "")
    gap = gap_or_none(source)[0] if metrics.get("per_gender") else None
    out = eval_views.export_metrics(metrics, gap, calib)
    c1, c2, c3 = st.columns(3)
    c1.download_button("Metrics (JSON)", views.metrics_json(out), file_name=f"{stem}-metrics.json",
                       mime="application/json", icon=":material/download:",
                       help="With the female − male gap and its 95 % interval, and the calibration view's numbers.")
    c2.download_button("Metrics (CSV)", eval_views.export_csv(out), file_name=f"{stem}-metrics.csv",
                       mime="text/csv", icon=":material/download:")
    c3.download_button("Predictions (CSV)", views.predictions_csv_bytes(source), file_name=f"{stem}-predictions.csv",
                       mime="text/csv", icon=":material/download:")
    charts = dict(figs)
    png_ok = kaleido_ready()
    c1, c2, _ = st.columns(3)
    c1.download_button("Charts as PNG (zip)", lambda: views.figures_png_zip(charts), file_name=f"{stem}-charts.zip",
                       mime="application/zip", icon=":material/image:", disabled=not png_ok,
                       help="Rendered by plotly/kaleido in the installed Chromium; takes a few seconds."
                       if png_ok else "PNG export needs the kaleido package and Chromium; use HTML instead.")
    c2.download_button("Charts as HTML (zip)", lambda: views.figures_html_zip(charts),
                       file_name=f"{stem}-charts-html.zip", mime="application/zip", icon=":material/code:",
                       help="Interactive charts that open in any browser, no server needed.")


st.title("Evaluate")
st.caption("Speaker-independent results of the shipped model's cross-validation or of any run with test "
           "predictions. Every number is labelled with the protocol that produced it.")

sources = views.evaluation_sources()
if not sources:
    st.info("No predictions to evaluate yet: the shipped model has no predictions.csv and no run has finished.")
    st.stop()
by_key = {s.key: s for s in sources}
requested = st.session_state.pop("eval_source", None)
if requested in by_key:
    st.session_state["e_source"] = requested
key = st.selectbox("Evaluation", list(by_key), format_func=lambda k: by_key[k].title, key="e_source")
source = by_key[key]
try:
    df, metrics = load(fields(source), stamp_of(source))
except SERError as exc:
    st.error(views.md_escape(exc))
    st.stop()

metric_row(metrics)
figs: dict = {}
names = ["Confusion & classes"] + (["Corpora"] if eval_views.corpora(df) else []) + [
    "Calibration", "Gender bias", "Speakers & intensity", "Misclassified clips", "Compare", "Export"]
tabs = dict(zip(names, st.tabs(names)))
with tabs["Confusion & classes"]:
    overview(df, metrics, figs)
if "Corpora" in tabs:
    with tabs["Corpora"]:
        corpora_tab(source, df, metrics, figs)
with tabs["Calibration"]:
    calib_numbers = calibration_tab(source, df, figs)
with tabs["Gender bias"]:
    fairness(source, metrics, figs)
with tabs["Speakers & intensity"]:
    speakers(df, metrics, figs)
with tabs["Misclassified clips"]:
    mistakes(df)
with tabs["Compare"]:
    compare(source, df, metrics, sources)
with tabs["Export"]:
    export(source, metrics, figs, calib_numbers)
