"""The Evaluate page's multi-corpus, calibration and comparison figures and tables, built without any UI toolkit.

Every function takes a predictions table (one row per clip: ``file``, ``speaker``, ``gender``,
``corpus``, ``true``, ``pred``, ``confidence``, ``p_<emotion>``, ``fold``) or the metrics
``evaluation.evaluate`` made of it, and returns a plotly figure, a pandas table or plain data,
so the page stays thin and every number here is tested on hand-made tables. Tables meant to
be read are formatted (``"62.5%"``, ``"no male speakers"``); the exported metrics keep the raw numbers.
TensorFlow is never imported here.
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ser_core import calibration, evaluation, schema
from ser_core.evaluation import clip_keys, common_clips, paired_difference  # noqa: F401  (the Compare tab's)
from ser_core.errors import SERError
from ser_core.jsonio import read_json

from .views import BOTTOM_LEGEND, GENDER_COLOURS, TOP_LEGEND, _style, colour, format_pct, metrics_csv

GENDERS = ("female", "male")
CORPUS_COLOURS = ("#2a7ab0", "#e76f51", "#2a9d8f", "#9d4edd", "#e9c46a", "#6c757d", "#f4a261", "#264653")
POOLED = "pooled"


def _pct(v) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else format_pct(v)


def _pts(v: float) -> str:
    return f"{100 * v:+.1f} pts"


def corpus_colour(i: int) -> str:
    return CORPUS_COLOURS[i % len(CORPUS_COLOURS)]


# ============================================================================ per corpus
def corpora(df: pd.DataFrame) -> list[str]:
    """The corpora of a predictions table, RAVDESS first then by name (the order of ``loco`` folds)."""
    if "corpus" not in df:
        return []
    return sorted((str(c) for c in df["corpus"].dropna().unique()), key=lambda c: (c != "ravdess", c))


def corpus_entries(df: pd.DataFrame, labels: list[str]) -> dict[str, dict]:
    """:func:`evaluation.per_corpus` in :func:`corpora` order; also for a table of one corpus."""
    if "corpus" not in df:
        return {}
    entries = evaluation.per_corpus(df, labels)
    return {c: entries[c] for c in corpora(df)}


def corpus_gaps(df: pd.DataFrame, **kw) -> dict[str, dict | None]:
    """Each corpus's female - male gap with its speaker-bootstrap 95 % interval (None without both genders)."""
    out: dict[str, dict | None] = {}
    for name in corpora(df):
        try:
            out[name] = evaluation.gender_gap(df[df["corpus"].astype(str) == name], **kw)
        except (SERError, KeyError):
            out[name] = None
    return out


def gap_text(gap: dict | None, per_gender: dict, scope: str = "speakers") -> str:
    """'+12.1 pts (95 % CI +4.0 to +20.0)', or which gender is missing."""
    missing = [g for g in GENDERS if g not in per_gender]
    if missing:
        return " and ".join(f"no {g}" for g in missing) + f" {scope}"
    if gap is None:
        return _pts(per_gender["female"] - per_gender["male"])
    lo, hi = gap["ci95"]
    return f"{_pts(gap['gap'])} (95 % CI {100 * lo:+.1f} to {100 * hi:+.1f})"


CORPUS_COLUMNS = ["corpus", "clips", "speakers", "accuracy", "UAR", "own-emotion accuracy", "chance", "own-emotion UAR",
                  "female accuracy", "male accuracy", "gap (female − male)", "own emotions"]


def corpus_frame(df: pd.DataFrame, labels: list[str], gaps: dict[str, dict | None] | None = None) -> pd.DataFrame:
    """One row per corpus: clips, speakers, accuracy and UAR over every model label; accuracy and UAR
    with the answers restricted to the corpus's own emotions, next to chance (1 / their number);
    female and male accuracy and the gap (with its 95 % interval when ``gaps`` gives one)."""
    rows = []
    for name, e in corpus_entries(df, labels).items():
        pg = e["per_gender"]
        k = len(e["own_emotions"])
        rows.append({
            "corpus": name, "clips": e["n"], "speakers": e["speakers"] if e["speakers"] is not None else "",
            "accuracy": _pct(e["accuracy"]), "UAR": _pct(e["uar"]),
            "own emotions": f"{k}: " + ", ".join(e["own_emotions"]),
            "own-emotion accuracy": _pct(e["own"]["accuracy"]), "chance": _pct(1 / k) if k else "",
            "own-emotion UAR": _pct(e["own"]["uar"]),
            "female accuracy": _pct(pg["female"]) if "female" in pg else "no female speakers",
            "male accuracy": _pct(pg["male"]) if "male" in pg else "no male speakers",
            "gap (female − male)": gap_text((gaps or {}).get(name), pg),
        })
    return pd.DataFrame(rows, columns=CORPUS_COLUMNS)


def corpus_confusion(df: pd.DataFrame, corpus: str, labels: list[str], *, own: bool = False
                     ) -> tuple[list[str], list[str], np.ndarray]:
    """(rows, columns, counts) of one corpus's confusion matrix: rows its own emotions; columns every
    model label, or with ``own`` only its own emotions (each clip answered by its most probable own emotion)."""
    g = df[df["corpus"].astype(str) == corpus] if "corpus" in df else df
    rows = evaluation.own_emotions(g, labels)
    cols = rows if own else list(labels)
    pred = evaluation.restricted_pred(g, rows) if own else g["pred"].to_numpy()
    full = evaluation.confusion(g["true"].to_numpy(), pred, list(labels))
    ri = [labels.index(r) for r in rows]
    ci = [labels.index(c) for c in cols]
    return rows, cols, full[np.ix_(ri, ci)]


def corpus_confusion_figure(df: pd.DataFrame, corpus: str, labels: list[str], *, own: bool = False) -> go.Figure:
    """The confusion matrix of one corpus, each row normalised to 100 % (counts in the hover text)."""
    rows, cols, cm = corpus_confusion(df, corpus, labels, own=own)
    cm = cm.astype(float)
    sums = cm.sum(axis=1, keepdims=True)
    z = np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)
    fig = go.Figure(go.Heatmap(z=z, x=cols, y=rows, colorscale="Blues", zmin=0, zmax=1,
                               text=[[f"{v:.0%}" for v in r] for r in z], texttemplate="%{text}",
                               customdata=cm.astype(int), colorbar=dict(title="share"),
                               hovertemplate="true %{y}, predicted %{x}: %{text} (%{customdata} clips)<extra></extra>"))
    fig.update_xaxes(title="predicted" + (" (own emotions only)" if own else ""), side="bottom", type="category")
    fig.update_yaxes(title="true", autorange="reversed", type="category")
    return _style(fig, f"{corpus}: confusion matrix (each row sums to 100 %)", height=140 + 48 * len(rows))


# ============================================================================ leave one corpus out
def is_loco(metrics: dict) -> bool:
    return str(metrics.get("protocol") or "").startswith("loco")


def loco_folds(df: pd.DataFrame) -> dict[str, str]:
    """Fold -> the corpus it tested, when every fold tested exactly one whole corpus; else ``{}``.

    A leave-one-corpus-out cross-validation (or one of its folds) has this shape: it is read
    from the predictions themselves, so no corpus order has to be known."""
    if "corpus" not in df or df.empty:
        return {}
    if "fold" not in df:
        names = corpora(df)
        return {"": names[0]} if len(names) == 1 else {}
    held = df.groupby("fold", sort=True)["corpus"].agg(lambda s: sorted(set(map(str, s))))
    if any(len(v) != 1 for v in held) or len({v[0] for v in held}) != len(held):
        return {}
    return {str(k): v[0] for k, v in held.items()}


def answer_shares(df: pd.DataFrame, labels: list[str], column: str = "pred") -> pd.DataFrame:
    """Share of each emotion among a column's values (``pred``: what the model answered), one row per corpus."""
    groups = df.groupby(df["corpus"].astype(str)) if "corpus" in df else [("all", df)]
    rows = {}
    for name, g in groups:
        counts = g[column].value_counts()
        rows[name] = [counts.get(lab, 0) / len(g) for lab in labels]
    order = [c for c in corpora(df) if c in rows] or list(rows)
    return pd.DataFrame([rows[c] for c in order], index=order, columns=list(labels))


def top_answers(shares: pd.Series, n: int = 3) -> str:
    """'fearful 37%, sad 31%, angry 12%': the most frequent answers of one corpus."""
    top = shares[shares > 0].sort_values(ascending=False, kind="stable").head(n)
    return ", ".join(f"{lab} {v:.0%}" for lab, v in top.items())


def unknown_labels(df: pd.DataFrame, labels: list[str]) -> list[str]:
    """Labels whose probability is empty in every row: the model (a fold's) was never trained on them."""
    return [lab for lab in labels if f"p_{lab}" in df and len(df) and df[f"p_{lab}"].isna().all()]


LOCO_COLUMNS = ["held-out corpus", "own-emotion accuracy", "chance", "own-emotion UAR", "most frequent answers",
                "top-2 answers' share", "top-2 share of its true emotions", "never heard in training",
                "accuracy (all labels)", "clips", "speakers", "own emotions", "fold"]


def loco_frame(df: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Each held-out corpus of a leave-one-corpus-out evaluation: accuracy and UAR on its own emotions
    (what a user of that corpus would see), chance, and what the model answered there. The share of
    its two most frequent answers, next to the same share of the true emotions, shows a collapse onto
    one or two classes."""
    folds = loco_folds(df)
    entries = corpus_entries(df, labels)
    answered = answer_shares(df, labels)
    truth = answer_shares(df, labels, "true")
    rows = []
    for fold, name in sorted(folds.items(), key=lambda kv: list(entries).index(kv[1])):
        e = entries[name]
        k = len(e["own_emotions"])
        rows.append({
            "fold": fold, "held-out corpus": name, "clips": e["n"],
            "speakers": e["speakers"] if e["speakers"] is not None else "",
            "own emotions": ", ".join(e["own_emotions"]),
            "never heard in training": ", ".join(lab for lab in unknown_labels(
                df[df["corpus"].astype(str) == name], labels) if lab in e["own_emotions"]) or "none",
            "own-emotion accuracy": _pct(e["own"]["accuracy"]), "chance": _pct(1 / k) if k else "",
            "own-emotion UAR": _pct(e["own"]["uar"]), "accuracy (all labels)": _pct(e["accuracy"]),
            "most frequent answers": top_answers(answered.loc[name]),
            "top-2 answers' share": _pct(float(answered.loc[name].nlargest(2).sum())),
            "top-2 share of its true emotions": _pct(float(truth.loc[name].nlargest(2).sum())),
        })
    return pd.DataFrame(rows, columns=LOCO_COLUMNS)


def answers_figure(df: pd.DataFrame, labels: list[str]) -> go.Figure:
    """Per corpus, two stacked bars: the true emotions and the model's answers, each summing to 100 %.

    A model that collapses shows one or two wide blocks in the 'answered' bar where the 'true' bar is even."""
    answered = answer_shares(df, labels)
    truth = answer_shares(df, labels, "true")
    y = [[c for c in answered.index for _ in (0, 1)], ["true", "answered"] * len(answered)]
    fig = go.Figure()
    for lab in labels:
        vals = [v for c in answered.index for v in (truth.loc[c, lab], answered.loc[c, lab])]
        if not any(vals):
            continue
        fig.add_trace(go.Bar(y=y, x=vals, name=lab, orientation="h", marker_color=colour(lab),
                             text=[f"{v:.0%}" if v >= 0.06 else "" for v in vals], textposition="inside",
                             hovertemplate=f"{lab}: " + "%{x:.1%}<extra></extra>"))
    fig.update_layout(barmode="stack", legend={**BOTTOM_LEGEND, "traceorder": "normal"})   # emotions in label order
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title=None)
    fig.update_yaxes(autorange="reversed")
    return _style(fig, "True emotions and the model's answers per corpus", height=150 + 70 * len(answered))


# ============================================================================ per fold
def per_fold_frame(metrics: dict, df: pd.DataFrame) -> pd.DataFrame:
    """Clips, accuracy, UAR and female/male accuracy of each fold, saying when a fold has no test
    speakers of a gender (EmoBox RAVDESS fold 2 tests four actresses) instead of showing an empty cell."""
    folds = metrics.get("per_fold") or {}
    held = loco_folds(df) if "fold" in df else {}
    genders = [g for g in GENDERS if "gender" in df and (df["gender"] == g).any()]
    rows = []
    for fold, m in folds.items():
        row = {"fold": f"{fold} (test corpus {held[fold]})" if fold in held else fold, "clips": m["n"],
               "accuracy": _pct(m["accuracy"]), "UAR": _pct(m["uar"])}
        for g in genders:
            v = m.get(f"{g}_accuracy")
            row[f"{g} accuracy"] = _pct(v) if v is not None else f"no {g} test speakers in this fold"
        rows.append(row)
    return pd.DataFrame(rows, columns=["fold", "clips", "accuracy", "UAR"] + [f"{g} accuracy" for g in genders])


# ============================================================================ gender gap
def gender_figure(metrics: dict, gap: dict | None = None) -> go.Figure:
    """Accuracy per gender, the female - male gap with its 95 % speaker-bootstrap interval as an error bar
    (when ``gap`` is given), and recall per emotion for each gender."""
    pg = metrics.get("per_gender", {})
    genders = [g for g in GENDERS if g in pg] + [g for g in pg if g not in GENDERS]
    widths, titles = ([0.22, 0.18, 0.6], ("Accuracy", "Gap, 95 % CI", "Recall per emotion")) if gap else \
        ([0.25, 0.75], ("Accuracy", "Recall per emotion"))
    fig = make_subplots(rows=1, cols=len(widths), column_widths=widths, subplot_titles=titles,
                        horizontal_spacing=0.07)
    last = len(widths)
    for g in genders:
        c = GENDER_COLOURS.get(g, "#888")
        fig.add_trace(go.Bar(x=[g], y=[pg[g]["accuracy"]], name=g, marker_color=c, legendgroup=g,
                             text=[format_pct(pg[g]["accuracy"])], textposition="outside", cliponaxis=False), 1, 1)
        rec = pg[g].get("recall", {})
        fig.add_trace(go.Bar(x=list(rec), y=list(rec.values()), name=g, marker_color=c, legendgroup=g,
                             showlegend=False), 1, last)
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%", row=1, col=last)
    if gap:
        lo, hi = gap["ci95"]
        fig.add_trace(go.Scatter(
            x=["female − male"], y=[100 * gap["gap"]], mode="markers", name="gap", showlegend=False,
            marker=dict(size=11, color="#333"),
            error_y=dict(type="data", symmetric=False, array=[100 * (hi - gap["gap"])],
                         arrayminus=[100 * (gap["gap"] - lo)], thickness=2, width=10, color="#333"),
            hovertemplate=(f"gap {100 * gap['gap']:+.1f} points<br>95 % CI {100 * lo:+.1f} to {100 * hi:+.1f}"
                           "<extra></extra>")), 1, 2)
        fig.add_hline(y=0, line_dash="dot", line_color="#888", row=1, col=2)
        span = max(abs(100 * lo), abs(100 * hi), 5.0) * 1.2
        fig.update_yaxes(range=[-span, span], title="points", ticksuffix="", row=1, col=2)
    fig.update_layout(barmode="group", legend=TOP_LEGEND)
    return _style(fig, None, height=340)


# ============================================================================ calibration
UNCALIBRATED, STORED, CROSS_FITTED = "Uncalibrated", "Stored calibration", "Cross-fitted by fold"


def stored_calibration(source_dir: str | Path, calibrated: bool = False) -> calibration.Calibration | None:
    """The calibration stored with the model of an evaluated folder (its spec.json or model/spec.json).

    A cross-validation folder has no model, hence none; a malformed entry counts as none. ``calibrated``:
    the evaluated table holds probabilities the temperature was already applied to, so it applies as 1
    (the threshold stays)."""
    source_dir = Path(source_dir)
    for spec_path in (source_dir / schema.SPEC, source_dir / schema.MODEL / schema.SPEC):
        spec = read_json(spec_path, None)
        if isinstance(spec, dict):
            try:
                calib = calibration.Calibration.from_dict((spec.get("extra") or {}).get(calibration.SPEC_KEY))
            except (SERError, TypeError):
                return None
            return dataclasses.replace(calib, temperature=1.0) if calib is not None and calibrated else calib
    return None


def calibration_modes(df: pd.DataFrame, calib: calibration.Calibration | None, calibrated: bool = False) -> list[str]:
    """What the calibration view can show: the stored calibration first when there is one; a temperature
    cross-fitted fold by fold (each fold's fitted on the other folds) when there are two or more folds.
    ``calibrated``: the table holds the model's calibrated answers already, so they are all it can show."""
    if calibrated:
        return [STORED] if calib is not None else [UNCALIBRATED]
    modes = [STORED] if calib is not None else []
    if "fold" in df and df["fold"].nunique() > 1:
        modes.append(CROSS_FITTED)
    return modes + [UNCALIBRATED]


def calibration_summary(df: pd.DataFrame, mode: str, calib: calibration.Calibration | None = None,
                        by: str = "corpus") -> dict:
    """:func:`calibration.summary` of the table under one mode, with the ``threshold`` in effect (None when
    uncalibrated: "not sure" is decided on calibrated probabilities) and the ``temperature`` applied."""
    if mode == STORED:
        if calib is None:
            raise SERError("this model stores no calibration")
        out = calibration.summary(df, calib, by=by)
        out.update(threshold=calib.threshold, temperature=calib.temperature)
        return out
    if mode == CROSS_FITTED:
        _, _, labels = calibration.table_arrays(df)
        part = df[df["true"].isin(labels)].copy()
        part[[f"p_{lab}" for lab in labels]] = calibration.cross_fitted(df)
        out = calibration.summary(part, calibration.Calibration(threshold=calibration.DEFAULT_THRESHOLD), by=by)
        out.update(threshold=calibration.DEFAULT_THRESHOLD, temperature=None)
        return out
    out = calibration.summary(df, None, by=by)
    out.update(threshold=None, temperature=1.0)
    return out


def _scopes(summary: dict) -> list[tuple[str, dict]]:
    """Pooled first, then the groups (corpora) RAVDESS first then by name, as in every corpus table."""
    groups = summary.get("groups") or {}
    return [(POOLED, summary["pooled"])] + [(k, groups[k]) for k in sorted(groups, key=lambda c: (c != "ravdess", c))]


def confidence_and_accuracy(scope: dict) -> tuple[float, float]:
    """Mean confidence and accuracy of one scope of a calibration summary: far apart = over- or under-confident."""
    r = scope["reliability"]
    n = np.asarray(r["n"], dtype=float)
    if not n.sum():
        return 0.0, 0.0
    return float((n * r["confidence"]).sum() / n.sum()), float((n * r["accuracy"]).sum() / n.sum())


CALIBRATION_COLUMNS = ["scope", "clips", "ECE", "not sure", "accuracy when answering", "accuracy of 'not sure' clips",
                       "'not sure' when wrong", "'not sure' when right"]


def calibration_frame(summary: dict) -> pd.DataFrame:
    """Pooled and per corpus: clips, ECE and, under a threshold, the share of "not sure" answers, the
    accuracy of the answers given and withheld, and how often "not sure" comes when the answer is wrong/right."""
    rows = []
    for name, s in _scopes(summary):
        row = {"scope": name, "clips": s["n"], "ECE": f"{s['ece']:.3f}"}
        if "not_sure" in s:
            row.update({"not sure": _pct(s["not_sure"]),
                        "accuracy when answering": _pct(s["answered_accuracy"]) or "nothing answered",
                        "accuracy of 'not sure' clips": _pct(s["withheld_accuracy"]) or "none withheld",
                        "'not sure' when wrong": _pct(s["not_sure_when_wrong"]),
                        "'not sure' when right": _pct(s["not_sure_when_right"])})
        rows.append(row)
    cols = CALIBRATION_COLUMNS if summary.get("threshold") is not None else CALIBRATION_COLUMNS[:3]
    return pd.DataFrame(rows, columns=cols)


def reliability_figure(summary: dict) -> go.Figure:
    """Accuracy against mean confidence in ten confidence bins, pooled and per corpus; the diagonal is
    perfect calibration. Marker area follows the clips in a bin; the ECE is in each trace's name."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                               line=dict(color="#999", dash="dot", width=1), hoverinfo="skip"))
    for i, (name, s) in enumerate(_scopes(summary)):
        r = s["reliability"]
        if not r["n"]:
            continue
        n = np.asarray(r["n"], dtype=float)
        pooled = name == POOLED
        fig.add_trace(go.Scatter(
            x=r["confidence"], y=r["accuracy"], mode="lines+markers", name=f"{name} (ECE {s['ece']:.3f})",
            line=dict(color="#222" if pooled else corpus_colour(i - 1), width=3 if pooled else 1.5),
            marker=dict(size=np.clip(6 + 14 * np.sqrt(n / n.max()), 6, 20)),
            customdata=np.stack([r["bin_low"], r["bin_high"], r["n"]], axis=-1),
            hovertemplate=(f"{name}: " + "confidence %{customdata[0]:.1f}-%{customdata[1]:.1f}, "
                           "%{customdata[2]} clips<br>mean confidence %{x:.1%}, accuracy %{y:.1%}<extra></extra>")))
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title="mean confidence in the bin")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title="accuracy in the bin")
    fig.update_layout(legend=BOTTOM_LEGEND)
    return _style(fig, "Reliability diagram", height=440)


def coverage_figure(summary: dict) -> go.Figure:
    """Accuracy of the answers kept when only the most confident share is answered, pooled and per corpus.
    Under a "not sure" threshold, each curve is marked where the threshold cuts it, and a dashed line
    shows the pooled coverage there (1 - the share of "not sure" answers)."""
    threshold = summary.get("threshold")
    fig = go.Figure()
    for i, (name, s) in enumerate(_scopes(summary)):
        c = s["coverage"]
        pooled = name == POOLED
        col = "#222" if pooled else corpus_colour(i - 1)
        fig.add_trace(go.Scatter(x=c["coverage"], y=c["accuracy"], mode="lines", name=name, legendgroup=name,
                                 line=dict(color=col, width=3 if pooled else 1.5), customdata=c["threshold"],
                                 hovertemplate=(f"{name}: answering the most confident " + "%{x:.0%}: accuracy "
                                                "%{y:.1%} (confidence ≥ %{customdata:.2f})<extra></extra>")))
        if threshold is not None and s.get("answered_accuracy") is not None:
            fig.add_trace(go.Scatter(x=[1 - s["not_sure"]], y=[s["answered_accuracy"]], mode="markers",
                                     name=f"{name} at the threshold", legendgroup=name, showlegend=False,
                                     marker=dict(size=11, symbol="diamond", color=col,
                                                 line=dict(color="white", width=1)),
                                     hovertemplate=(f"{name}: 'not sure' below {threshold:.0%} confidence: "
                                                    f"{s['not_sure']:.0%} not sure, answered accuracy "
                                                    f"{s['answered_accuracy']:.1%}<extra></extra>")))
    if threshold is not None:
        pooled = summary["pooled"]
        x = 1 - pooled["not_sure"]
        fig.add_vline(x=x, line_dash="dash", line_color="#555",
                      annotation_text=f"'not sure' below {threshold:.0%}: {pooled['not_sure']:.0%} of answers",
                      annotation_position="bottom right" if x < 0.5 else "bottom left")   # keep it inside
    fig.update_xaxes(range=[0, 1.01], tickformat=".0%", title="coverage (share of clips answered)")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title="accuracy of the answered clips")
    fig.update_layout(legend=BOTTOM_LEGEND)
    return _style(fig, "Accuracy against coverage", height=440)


def calibration_export(summary: dict, mode: str) -> dict:
    """The numbers of a calibration view for the exported metrics (no per-bin curves)."""
    keep = ("n", "ece", "not_sure", "answered_accuracy", "withheld_accuracy", "not_sure_when_wrong",
            "not_sure_when_right")
    return {"mode": mode, "threshold": summary.get("threshold"), "temperature": summary.get("temperature"),
            **{name: {k: s[k] for k in keep if k in s} for name, s in _scopes(summary)}}


# ============================================================================ compare
@dataclass(frozen=True)
class TestSets:
    """How the test sets of two evaluations relate: ``same`` when the clips and protocols match."""

    same: bool
    common: int
    n_a: int
    n_b: int
    text: str


def compare_test_sets(df_a: pd.DataFrame, metrics_a: dict, df_b: pd.DataFrame, metrics_b: dict) -> TestSets:
    """Compare the protocols and the test clips of two evaluations, in one sentence a user can act on."""
    pa, pb = str(metrics_a.get("protocol") or "unknown protocol"), str(metrics_b.get("protocol") or "unknown protocol")
    try:
        ka, kb = set(clip_keys(df_a)), set(clip_keys(df_b))
    except SERError as exc:
        return TestSets(False, 0, len(df_a), len(df_b), f"Cannot tell whether the test sets match: {exc}.")
    common = len(ka & kb)
    fa = sorted(map(str, df_a["fold"].unique())) if "fold" in df_a else []
    fb = sorted(map(str, df_b["fold"].unique())) if "fold" in df_b else []
    dependent = [n for n, m in (("A", metrics_a), ("B", metrics_b)) if not m.get("speaker_independent", True)]
    tail = (f" {' and '.join(dependent)} {'is' if len(dependent) == 1 else 'are'} speaker-DEPENDENT, "
            "so its accuracy is not comparable with a speaker-independent one.") if dependent else ""
    if ka == kb:
        if pa == pb and fa == fb:
            return TestSets(not dependent, common, len(ka), len(kb),
                            f"Same protocol ({pa}) and the same {common} test clips: the difference is the models'."
                            + tail)
        return TestSets(not dependent, common, len(ka), len(kb),
                        f"The same {common} test clips, under different protocol names (A: {pa}; B: {pb})." + tail)
    return TestSets(False, common, len(ka), len(kb),
                    f"Different test sets: A was tested on {len(ka)} clips ({pa}), B on {len(kb)} ({pb}); "
                    f"{common} clips are in both. A difference between them mixes the models with the test sets"
                    + (": compare on the common clips only." if common else ", and no clip is shared.") + tail)


def missing_genders(metrics: dict, name: str) -> list[str]:
    """'B has no male test speakers, ...' for each gender one evaluation lacks while the other has it."""
    return [f"{name} has no {g} test speakers, so its {g} accuracy is empty." for g in GENDERS
            if g not in (metrics.get("per_gender") or {})]


# ============================================================================ export
def export_metrics(metrics: dict, gap: dict | None = None, calib: dict | None = None) -> dict:
    """The metrics as exported: with the pooled gender gap and its 95 % interval, and the calibration view."""
    out = dict(metrics)
    if gap is not None:
        out["gender_gap"] = {k: gap[k] for k in ("accuracy", "gap", "ci95", "within_noise", "enough_speakers",
                                                  "speakers", "verdict") if k in gap}
    if calib is not None:
        out["calibration"] = calib
    return out


def export_csv(metrics: dict) -> str:
    """:func:`views.metrics_csv` plus the rows it lacks: the gender gap with its interval, per corpus and
    per fold numbers, and the calibration view's ECE and "not sure" figures."""
    base = pd.read_csv(io.StringIO(metrics_csv(metrics)))
    rows = []
    gap = metrics.get("gender_gap")
    if gap:
        rows += [("gender_gap", "female-male", "gap", gap["gap"]), ("gender_gap", "female-male", "ci95_low",
                 gap["ci95"][0]), ("gender_gap", "female-male", "ci95_high", gap["ci95"][1])]
    for name, e in (metrics.get("per_corpus") or {}).items():
        rows += [("corpus", name, k, e[k]) for k in ("accuracy", "uar", "n") if k in e]
        rows += [("corpus", name, f"own_{k}", e["own"][k]) for k in ("accuracy", "uar") if k in e.get("own", {})]
        rows += [("corpus", name, f"{g}_accuracy", v) for g, v in e.get("per_gender", {}).items()]
    for fold, m in (metrics.get("per_fold") or {}).items():
        rows += [("fold", fold, k, v) for k, v in m.items() if isinstance(v, (int, float))]
    cal = metrics.get("calibration")
    if cal:
        for name, s in cal.items():
            if isinstance(s, dict):
                rows += [("calibration", name, k, v) for k, v in s.items() if v is not None]
    extra = pd.DataFrame(rows, columns=["scope", "name", "metric", "value"])
    extra.insert(0, "protocol", metrics.get("protocol", ""))
    return pd.concat([base, extra], ignore_index=True).to_csv(index=False)
