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

from ser_app import views
from ser_core.config import data_dir
from ser_core.errors import SERError


@st.cache_data(max_entries=16, show_spinner=False)
def load(directory: str, stamp: float):
    """Predictions and metrics of one source (``stamp`` = the predictions file's mtime)."""
    return views.load_source(views.EvalSource("", "", directory))


@st.cache_data(max_entries=16, show_spinner="Bootstrapping the gender gap...")
def gender_gap(directory: str, stamp: float):
    df, _ = load(directory, stamp)
    return evaluation.gender_gap(df)


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


def overview(metrics: dict, figs: dict) -> None:
    c1, c2 = st.columns([1, 1])
    figs["confusion"] = views.confusion_figure(metrics)
    figs["per_class"] = views.per_class_figure(metrics)
    c1.plotly_chart(figs["confusion"], key="e_confusion", theme=None)
    c2.plotly_chart(figs["per_class"], key="e_per_class", theme=None)
    c2.dataframe(views.per_class_frame(metrics), hide_index=True,
                 column_config={k: st.column_config.NumberColumn(format="%.3f") for k in ("precision", "recall", "f1")})
    if metrics.get("per_fold"):
        st.markdown("**Per fold**")
        st.dataframe(pd.DataFrame(metrics["per_fold"]).T.rename_axis("fold").reset_index(), hide_index=True)


def fairness(source: views.EvalSource, metrics: dict, figs: dict) -> None:
    if not metrics.get("per_gender"):
        st.info("These predictions carry no speaker gender.")
        return
    figs["gender"] = views.gender_figure(metrics)
    st.plotly_chart(figs["gender"], key="e_gender", theme=None)
    try:
        gap = gender_gap(source.dir, stamp_of(source))
    except SERError as exc:
        st.info(views.md_escape(exc))
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
    pick = st.selectbox("Listen to a clip", files, key="e_listen",
                        format_func=lambda f: "{} (true {}, predicted {})".format(
                            f, *shown.loc[shown["file"].astype(str) == f, ["true", "pred"]].iloc[0]))
    path = views.find_audio(pick, index)
    if path is None:
        st.caption("This clip is not under the data folder or data/samples, so it cannot be played.")
    else:
        st.audio(str(path), format=views.mime_for(path.name))


def compare(source: views.EvalSource, metrics: dict, sources: list[views.EvalSource]) -> None:
    others = [s for s in sources if s.key != source.key]
    if not others:
        st.caption("Only one evaluation is available: train a run to compare against.")
        return
    other = st.selectbox("Compare with", others, format_func=lambda s: s.title, key="e_compare")
    try:
        _, m2 = load(other.dir, stamp_of(other))
    except SERError as exc:
        st.error(views.md_escape(exc))
        return
    table = views.compare_frame(metrics, m2, "A: " + source.title, "B: " + other.title)
    st.plotly_chart(views.compare_figure(table), key="e_compare_fig", theme=None)
    st.dataframe(table, hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns[1:]})
    c1, c2 = st.columns(2)
    for col, m, name, key in ((c1, metrics, "A: " + source.title, "e_cmp_a"), (c2, m2, "B: " + other.title, "e_cmp_b")):
        col.plotly_chart(views.confusion_figure(m).update_layout(title=name), key=key, theme=None)


def export(source: views.EvalSource, metrics: dict, figs: dict) -> None:
    stem = Path(source.dir).name
    c1, c2, c3 = st.columns(3)
    c1.download_button("Metrics (JSON)", views.metrics_json(metrics), file_name=f"{stem}-metrics.json",
                       mime="application/json", icon=":material/download:")
    c2.download_button("Metrics (CSV)", views.metrics_csv(metrics), file_name=f"{stem}-metrics.csv",
                       mime="text/csv", icon=":material/download:")
    c3.download_button("Predictions (CSV)", source.predictions.read_bytes(), file_name=f"{stem}-predictions.csv",
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
    df, metrics = load(source.dir, stamp_of(source))
except SERError as exc:
    st.error(views.md_escape(exc))
    st.stop()

metric_row(metrics)
figs: dict = {}
tabs = st.tabs(["Confusion & classes", "Gender bias", "Speakers & intensity", "Misclassified clips",
                "Compare", "Export"])
with tabs[0]:
    overview(metrics, figs)
with tabs[1]:
    fairness(source, metrics, figs)
with tabs[2]:
    speakers(df, metrics, figs)
with tabs[3]:
    mistakes(df)
with tabs[4]:
    compare(source, metrics, sources)
with tabs[5]:
    export(source, metrics, figs)
