"""Figures and tables the app shows, built without any UI toolkit.

Every function takes engine objects (predictions, metrics, run folders) and
returns a plotly figure, a pandas table or plain text/bytes, so the Streamlit
pages stay thin and all of this can be tested without a browser. TensorFlow is
never imported here.
"""
from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ser_core import datasets, evaluation, features, models, runs, schema, splits
from ser_core.adapt import REFERENCE_CLIPS
from ser_core.config import EMOTIONS, FeatureConfig, data_dir, models_dir, project_root, public_demo
from ser_core.errors import ConfigError, SERError
from ser_core.datasets import AUDIO_EXTENSIONS, parse_ravdess
from ser_core.jsonio import read_json
from ser_core.modeldir import network_dirs

EMOTION_COLOURS = {
    "neutral": "#8d99ae", "calm": "#4ea8de", "happy": "#f9c74f", "sad": "#3a5a9b",
    "angry": "#e63946", "fearful": "#9d4edd", "disgust": "#43aa8b", "surprised": "#f3722c",
}
GENDER_COLOURS = {"female": "#c0468f", "male": "#2a7ab0"}
UPLOAD_TYPES = ("wav", "flac", "mp3", "ogg", "webm", "m4a")
MEL_DISPLAY_SECONDS = 60.0
# Streamlit's chart frontend treats colours "#000001".."#00000f" as theme placeholders and swaps them,
# which would turn Magma's black floor purple: start the scale at a visually identical near-black.
MAGMA = [[i / 9, c] for i, c in enumerate(["#010005", "#180f3d", "#440f76", "#721f81", "#9e2f7f", "#cd4071",
                                            "#f1605d", "#fd9668", "#feca8d", "#fcfdbf"])]
TOP_LEGEND = dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1)
BOTTOM_LEGEND = dict(orientation="h", yanchor="top", y=-0.18, xanchor="center", x=0.5)
LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")


def colour(label: str) -> str:
    return EMOTION_COLOURS.get(label, "#6c757d")


def samples_dir() -> Path:
    return project_root() / "data" / "samples"


def _style(fig: go.Figure, title: str | None = None, height: int | None = None) -> go.Figure:
    fig.update_layout(**LAYOUT)
    fig.update_layout(font=dict(family="Source Sans Pro, sans-serif"))
    if title is not None:
        fig.update_layout(title=dict(text=title, font=dict(size=15)))
    if height is not None:
        fig.update_layout(height=height)
    return fig


# ============================================================================ models
def member_label(member_dir: Path, fallback: str) -> str:
    """An ensemble member's architecture, with the feature settings it changed from that architecture's own,
    e.g. ``ser_crnn (n_mels 128)``, so two members of one architecture can be told apart."""
    spec = read_json(Path(member_dir) / schema.SPEC, {}) or {}
    arch = str(spec.get("arch") or fallback)
    if arch not in models.REGISTRY or not isinstance(spec.get("features"), dict):
        return arch
    base = models.get(arch).features.to_dict()
    changed = [f"{k} {v}" for k, v in sorted(spec["features"].items()) if k in base and base[k] != v]
    return f"{arch} ({', '.join(changed)})" if changed else arch


def model_summary(model_dir: Path) -> dict:
    """Name, architecture, date and cross-validated accuracy of a model folder, for the sidebar."""
    model_dir = Path(model_dir)
    spec = read_json(model_dir / schema.SPEC, {}) or {}
    metrics = read_json(model_dir / schema.METRICS, {}) or {}
    arch = str(spec.get("arch", "?"))
    title = models.REGISTRY[arch].title if arch in models.REGISTRY else arch
    extra = spec.get("extra") or {}
    members = [member_label(model_dir / schema.MEMBERS / str(name), fallback)
               for name, fallback in zip(extra.get("members") or [], extra.get("member_archs") or [])]
    shares = extra.get(schema.MEMBER_WEIGHTS)
    if arch == "ensemble" and members and isinstance(shares, list) and len(shares) == len(members):
        title = ("Ensemble of " + " + ".join(f"{m} ({100 * float(w):.0f} %)" for m, w in zip(members, shares))
                 + " (weighted mean of their probabilities)")
    elif arch == "ensemble" and members:
        title = "Ensemble of " + " + ".join(members) + " (mean of their probabilities)"
    elif arch == schema.PROBE_ARCH:
        title = f"One linear layer on the frozen encoder of {extra.get('encoder') or 'Whisper'}"
        if schema.ENCODER_SETUP in extra:
            from ser_core.whisper import recorded_setup

            try:     # how it hears: the clip alone or in a 30 s window, its blocks, int8 or float32
                title += f" ({recorded_setup(extra).describe()})"
            except SERError:         # loading it says what exactly
                title += " (an encoder setup this version cannot run)"
    is_default = model_dir.resolve() == runs.default_model_dir().resolve()
    heard: list[str] = []          # the corpora its networks learnt from: what a stranger picking a model needs
    try:
        nets = network_dirs(model_dir) or [model_dir]     # a probe on Whisper's encoder: the folder itself
    except SERError:               # a malformed folder still gets its card; loading it says what is wrong
        nets = []
    for d in nets:
        spec_d = read_json(d / schema.SPEC, {}) or {}
        for part in dataset_title(str((spec_d.get("extra") or {}).get("dataset") or "")).split("+"):
            if part and part not in heard:
                heard.append(part)
    return {
        "name": "shipped default" if is_default else model_dir.name,
        "dir": str(model_dir),
        "arch": arch,
        "title": title,
        "created": str(spec.get("created", ""))[:10],
        "accuracy": metrics.get("accuracy"),
        "uar": metrics.get("uar"),
        "protocol": str(metrics.get(schema.PROTOCOL, "")),
        "protocol_info": schema.protocol_of(metrics),
        "speaker_independent": bool(metrics.get(schema.SPEAKER_INDEPENDENT, False)),
        "n": metrics.get("n"),
        "is_default": is_default,
        "heard": heard,
        # accuracy of each corpus on its own emotions, when the evaluation spans several
        "per_corpus": {str(c): float((v.get("own") or v).get("accuracy"))
                       for c, v in sorted((metrics.get("per_corpus") or {}).items())
                       if isinstance(v, dict) and (v.get("own") or v).get("accuracy") is not None},
    }


def short_protocol(record: dict) -> str:
    """A compact name of a protocol record (:mod:`ser_core.schema`) for labels: 'emobox6 6-fold CV',
    'emobox6 fold 1', 'random fold 1, speaker-dependent'."""
    name = record.get("name") or "unknown protocol"
    folds = record.get("folds") or []
    if record.get("cross_validation"):
        short = f"{name} {len(folds)}-fold CV"
    elif folds:
        short = f"{name} fold {folds[0]}"
    else:
        short = name
    if not record.get("speaker_independent", True):
        short += ", speaker-dependent"
    return short


def metrics_protocol(metrics: dict | None) -> str:
    """The compact protocol name of a metrics file (old files, with the label only, included)."""
    return short_protocol(schema.protocol_of(metrics))


# ============================================================================ prediction
def probability_figure(probabilities: dict[str, float], highlight: str | None = None) -> go.Figure:
    """Horizontal bars of every class probability, the winner fully coloured."""
    labels = list(probabilities)
    values = [float(probabilities[k]) for k in labels]
    colours = [colour(k) if (highlight is None or k == highlight) else _fade(colour(k)) for k in labels]
    fig = go.Figure(go.Bar(x=values, y=labels, orientation="h", marker_color=colours,
                           text=[f"{v:.0%}" for v in values], textposition="outside", cliponaxis=False))
    # the percentage axis on top: on a short window (900 px) the chart's foot falls below the fold
    fig.update_xaxes(range=[0, 1.08], tickformat=".0%", title=None, side="top")
    fig.update_yaxes(autorange="reversed")
    return _style(fig, "Probability of each emotion", height=280).update_layout(margin=dict(t=70))


def _fade(hex_colour: str, alpha: float = 0.35) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def waveform_figure(y: np.ndarray, sr: int, points: int = 1500) -> go.Figure:
    """The waveform as a min/max envelope (fast for long audio)."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    n = max(1, y.size // points)
    usable = (y.size // n) * n
    if usable == 0:
        lo = hi = y
        t = np.arange(y.size) / sr
    else:
        blocks = y[:usable].reshape(-1, n)
        lo, hi = blocks.min(axis=1), blocks.max(axis=1)
        t = (np.arange(blocks.shape[0]) * n + n / 2) / sr
    fig = go.Figure([
        go.Scatter(x=t, y=hi, mode="lines", line=dict(width=0.6, color="#2a7ab0"), showlegend=False,
                   hoverinfo="skip"),
        go.Scatter(x=t, y=lo, mode="lines", line=dict(width=0.6, color="#2a7ab0"), fill="tonexty",
                   fillcolor="rgba(42,122,176,0.45)", showlegend=False, hoverinfo="skip"),
    ])
    peak = float(max(np.abs(y).max(initial=0.0), 1e-3))
    fig.update_xaxes(title="time (s)")
    fig.update_yaxes(range=[-peak * 1.05, peak * 1.05], title="amplitude")
    return _style(fig, "Waveform", height=240)


def mel_db(y: np.ndarray, cfg: FeatureConfig, n_mels: int = 64,
           max_seconds: float = MEL_DISPLAY_SECONDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-mel spectrogram (dB re. max) of up to ``max_seconds``: (db[n_mels, T], times, band centres in Hz)."""
    sr = cfg.sample_rate
    y = np.asarray(y, dtype=np.float32)[: int(max_seconds * sr)]
    power = features.stft_magnitude(y, cfg.n_fft, cfg.hop_length) ** 2
    db = features.power_to_db(features.mel_power(power, sr, cfg.n_fft, n_mels), ref="max")
    times = np.arange(db.shape[-1]) * cfg.hop_length / sr
    freqs = features.mel_frequencies(n_mels + 2, 0.0, sr / 2)[1:-1]
    return db, times, freqs


def mel_figure(y: np.ndarray, cfg: FeatureConfig, n_mels: int = 64) -> go.Figure:
    db, times, freqs = mel_db(y, cfg, n_mels)
    fig = go.Figure(go.Heatmap(z=db, x=times, y=np.round(freqs).astype(int), colorscale=MAGMA,
                               colorbar=dict(title="dB"), zmin=-80, zmax=0,
                               hovertemplate="%{x:.2f} s, %{y} Hz: %{z:.1f} dB<extra></extra>"))
    fig.update_xaxes(title="time (s)")
    fig.update_yaxes(title="mel band centre (Hz)", type="category", nticks=8)
    cut = len(y) / cfg.sample_rate > MEL_DISPLAY_SECONDS
    return _style(fig, f"Mel spectrogram ({n_mels} bands" + (f", first {MEL_DISPLAY_SECONDS:.0f} s)" if cut else ")"),
                  height=320)


def channel_names(cfg: FeatureConfig) -> list[str]:
    """What each input channel of a feature kind holds."""
    deltas = ["Δ", "ΔΔ"] if cfg.deltas else []
    if cfg.kind == "seed000":
        return [f"mel ({cfg.n_mels} bands, dB)", f"MFCC {cfg.n_mfcc} + chroma 12 + contrast 7"]
    if cfg.kind == "logmel":
        return [f"log-mel ({cfg.n_mels} bands)"] + deltas
    if cfg.kind == "mfcc_seq":
        return [f"MFCC ({cfg.n_mfcc})"] + deltas
    if cfg.kind == "image":
        return ["red", "green", "blue"]
    return ["clip statistics"]


def model_input_figure(x: np.ndarray, cfg: FeatureConfig) -> go.Figure:
    """Each channel of the (normalised) model input as a heatmap; statistics vectors as bars."""
    x = np.asarray(x)
    names = channel_names(cfg)
    if x.ndim == 1:
        fig = go.Figure(go.Bar(y=x, marker_color="#2a7ab0"))
        fig.update_xaxes(title="feature index")
        return _style(fig, "Model input: per-clip statistics (normalised)", height=280)
    n = x.shape[-1]
    fig = make_subplots(rows=1, cols=n, subplot_titles=[names[i] if i < len(names) else f"channel {i + 1}"
                                                        for i in range(n)], horizontal_spacing=0.06)
    for i in range(n):
        fig.add_trace(go.Heatmap(z=x[..., i], colorscale="RdBu_r", zmid=0, showscale=i == n - 1,
                                 colorbar=dict(title="z"),
                                 hovertemplate="frame %{x}, row %{y}: %{z:.2f}<extra></extra>"), 1, i + 1)
        fig.update_xaxes(title="frame", row=1, col=i + 1)
    fig.update_yaxes(title="row", row=1, col=1)
    fig.update_annotations(font_size=13)
    return _style(fig, None, height=320).update_layout(margin=dict(t=50))


def timeline_figure(windows: list, labels: list[str]) -> go.Figure:
    """Per-window probabilities over time; window centres on the x axis, winner marked on top."""
    mids = [(w.start + w.end) / 2 for w in windows]
    fig = go.Figure()
    for lab in labels:
        fig.add_trace(go.Scatter(x=mids, y=[w.probabilities.get(lab, 0.0) for w in windows], name=lab,
                                 mode="lines+markers", line=dict(color=colour(lab), width=2), marker=dict(size=5)))
    tops = [w.emotion or "no speech" for w in windows]
    fig.add_trace(go.Scatter(x=mids, y=[1.06] * len(mids), mode="markers", name="top emotion",
                             marker=dict(size=11, symbol="square", color=[colour(t) for t in tops]),
                             text=tops, hovertemplate="%{x:.1f} s: %{text}<extra></extra>", showlegend=False))
    fig.update_xaxes(title="time (s, window centre)")
    fig.update_yaxes(range=[0, 1.12], tickformat=".0%", title="probability")
    return _style(fig, "Emotion over time (3 s windows, 1 s hop)", height=340)


def windows_frame(windows: list) -> pd.DataFrame:
    return pd.DataFrame([{"start (s)": round(w.start, 2), "end (s)": round(w.end, 2),
                          "emotion": w.emotion or "no speech", "confidence": round(w.confidence, 3)}
                         for w in windows])


def settled_text(emotion: str, times: int, out_of: int) -> str:
    """The Predict page's warning when one emotion answers most of a user's recent recordings
    (``ser_core.predict.settled_answer``): "it always says X on my voice"."""
    said = md_escape(emotion)
    return (f"**{times} of your last {out_of} recordings came out {said}.** If you did not mean {said} each time: "
            "a model that keeps giving one answer usually does not know the voice, language or room (the "
            "RAVDESS-only ensemble's such answers, on corpora it never heard, were mostly wrong). Read them with "
            "care, or try another model from the sidebar.")


def prediction_record(pred, model: dict | None = None) -> dict:
    """The result as a JSON-ready dict (with windows and the model that made it)."""
    d = pred.to_dict(windows=True)
    if model:
        d["model"] = {k: model[k] for k in ("name", "arch", "created") if k in model}
    return d


def prediction_json(pred, model: dict | None = None) -> str:
    return json.dumps(prediction_record(pred, model), indent=1)


def prediction_csv(pred) -> str:
    """One 'overall' row then one row per window, with every class probability."""
    labels = list(pred.probabilities)
    rows = [{"scope": "overall", "start": 0.0, "end": round(pred.duration, 3), "emotion": pred.emotion or "",
             "confidence": round(pred.confidence, 6),
             **{f"p_{k}": round(float(pred.probabilities[k]), 6) for k in labels}}]
    for w in pred.windows:
        rows.append({"scope": "window", "start": round(w.start, 3), "end": round(w.end, 3),
                     "emotion": w.emotion or "", "confidence": round(w.confidence, 6),
                     **{f"p_{k}": round(float(w.probabilities.get(k, 0.0)), 6) for k in labels}})
    return pd.DataFrame(rows).to_csv(index=False)


def setup_frame(answers: list, names: list[str]) -> pd.DataFrame:
    """One row per clip of a setup read in the adapted mode: its answer in words, confidence and probabilities, its
    answer one clip at a time, or what was wrong with the file (``answers``: a ``Prediction`` or the exception its
    audio raised)."""
    rows = []
    for name, a in zip(names, answers):
        if isinstance(a, Exception):
            rows.append({"file": name, "answer": "unreadable", "confidence": None, "problem": str(a)})
            continue
        rows.append({"file": name, "answer": a.summary(), "confidence": round(float(a.confidence), 4),
                     "one clip at a time": a.one_clip.summary() if a.one_clip is not None else "",
                     "problem": a.message or "",
                     **{f"p_{k}": round(float(v), 4) for k, v in a.probabilities.items()}})
    return pd.DataFrame(rows)


def answer_share_figure(frame: pd.DataFrame) -> go.Figure:
    """How many clips of a setup got each answer ("not sure" and "no speech" counted apart)."""
    counts = frame["answer"].map(lambda a: a.split(":")[0]).value_counts()
    fig = go.Figure(go.Bar(x=counts.index.tolist(), y=counts.to_numpy(),
                           marker_color=[colour(k) for k in counts.index]))
    fig.update_layout(xaxis_title="answer", yaxis_title="clips")
    return _style(fig, "Answers over the setup's clips", height=280)


def live_figure(points: list, labels: list[str], span: float = 30.0) -> go.Figure:
    """Scrolling probability timeline of live classifications (the last ``span`` seconds)."""
    if points:
        end = points[-1].time
        points = [p for p in points if p.time >= end - span]
    x = [p.time for p in points]
    fig = go.Figure()
    for lab in labels:
        fig.add_trace(go.Scatter(x=x, y=[p.probabilities.get(lab, 0.0) for p in points], name=lab,
                                 mode="lines", line=dict(color=colour(lab), width=2)))
    right = max(x[-1] if x else 0.0, span)
    fig.update_xaxes(range=[right - span, right], title="stream time (s)")
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title="probability")
    return _style(fig, "Live emotion timeline", height=300)


AUDIO_MIME = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
              ".webm": "audio/webm", ".m4a": "audio/mp4"}


def mime_for(name: str) -> str:
    """MIME type for the audio player, from the file extension (WAV when unknown)."""
    return AUDIO_MIME.get(Path(str(name)).suffix.lower(), "audio/wav")


def sample_label(path: Path) -> str:
    """'Actor 01 (male) – angry' for a RAVDESS sample clip, else its file name."""
    info = parse_ravdess(Path(path).name)
    if not info:
        return Path(path).name
    return f"Actor {int(info['actor']):02d} ({info['gender']}), {info['emotion']}"


def sample_clips(folder: Path | None = None) -> list[Path]:
    folder = Path(folder) if folder is not None else samples_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


# ============================================================================ training
SAMPLES_KEY = "samples"
RESULTS_DIR = project_root() / "training" / "results"
RECIPE_FILE = project_root() / "training" / "recipes" / "multicorpus.json"
ETA_WINDOW = 5                 # time left from the median of the last few epoch times: steady, not swinging
QUICK_PER_CORPUS = 6           # speakers kept of each non-RAVDESS corpus in a quick run (one per emobox6 fold)
# emobox6 on RAVDESS: 1440 clips - 4 test actors (240) - 2 validation actors (120)
RAVDESS_FOLD_TRAIN_CLIPS = 1080
# The quick demo: the fastest architecture for a few epochs on the bundled samples. Measured end to end
# on this 2-core machine (process start, TensorFlow import, features, 15 epochs, test predictions): 30 s with
# `ser train --arch seed004_dnn --dataset ravdess:data/samples --epochs 15 --val-speakers 1 --batch-size 8`
# and 43 s from the Train page's Start click while other trainings ran (load ~10), 35 s at load ~4.5.
QUICK_DEMO = {"arch": "seed004_dnn", "epochs": 15, "patience": 15, "batch_size": 8, "learning_rate": 1e-3,
              "n_val_speakers": 1, "protocol": "emobox6", "fold": 1}


@dataclass(frozen=True)
class DatasetChoice:
    key: str
    label: str
    spec: str


def dataset_choices() -> list[DatasetChoice]:
    """Corpora the Train page offers: each one found under the data root (SER_DATA_DIR), then the bundled samples."""
    from ser_core import userdata

    out = []
    imported = userdata.user_corpora()
    for name in datasets.corpus_dirs():
        info = datasets.CORPORA.get(name)
        if info is not None:
            label = f"{info.title} ({info.language})"
        elif name in imported and imported[name].get("clips"):
            rec = imported[name]
            label = f"{name} (your corpus, {rec['clips']} clips" + ("" if rec.get("speakers_known") else
                                                                     ", speakers unknown") + ")"
        else:
            label = f"{name} ({datasets.USER_MANIFEST})"
        out.append(DatasetChoice(name, label, name))
    samples = sample_clips(samples_dir())
    if samples:
        out.append(DatasetChoice(SAMPLES_KEY, f"Bundled samples ({len(samples)} RAVDESS clips, actors 1-4)",
                                 f"ravdess:{samples_dir()}"))
    return out


def dataset_title(spec: str) -> str:
    """A dataset spec as a user reads it: the bundled samples' path becomes ``samples``."""
    parts = []
    for part in str(spec).split("+"):
        if part.startswith("ravdess:") and Path(part[8:]).resolve() == samples_dir().resolve():
            part = SAMPLES_KEY
        parts.append(part)
    return "+".join(parts)


def dataset_spec(keys: list[str], choices: list[DatasetChoice]) -> str:
    """The ``--dataset`` spec of a pick of corpora (joined with ``+``), refused when it makes no sense."""
    if not keys:
        raise ConfigError("pick at least one corpus")
    if SAMPLES_KEY in keys and "ravdess" in keys:
        raise ConfigError("pick RAVDESS or the bundled samples, not both: the samples are RAVDESS clips")
    by_key = {c.key: c for c in choices}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise ConfigError(f"no corpus {', '.join(missing)} under the data root {data_dir()}")
    return "+".join(by_key[k].spec for k in keys)


def protocol_choices(df: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """The protocols that make sense for a manifest, and for each other one why it is left out."""
    names = splits.corpora(df)
    n_speakers = int(df["speaker"].nunique())
    offered, why = [], {}
    for p in splits.PROTOCOLS:
        if p == "emobox6" and ("ravdess" not in names or "actor" not in df):
            why[p] = "needs RAVDESS in the pick (its folds are RAVDESS actors)"
        elif p == "loco" and len(names) < 2:
            why[p] = "needs at least two corpora (train on the others, test on one)"
        elif p == "speaker_kfold" and n_speakers < 5:
            why[p] = f"needs at least 5 speakers; the pick has {n_speakers}"
        else:
            offered.append(p)
    return offered, why


def fold_choices(df: pd.DataFrame, protocol: str, n_val: int = 2) -> list[tuple[int, str]]:
    """The folds of a protocol that have test clips in this manifest, each with a label
    (``fold 2 · 240 test clips``; leave-one-corpus-out names the corpus it tests)."""
    out = []
    for fold in range(1, splits.n_folds(protocol, df=df) + 1):
        try:
            split = splits.make_split(df, protocol, fold, n_val=n_val)
        except ConfigError:
            continue
        if len(split.test):
            out.append((fold, f"{splits.fold_name(protocol, fold, df)} · {len(split.test)} test clips"))
    return out


def fold_count(protocol: str) -> int:
    return splits.n_folds(protocol)


def quick_speakers(protocol: str, fold: int, df: pd.DataFrame | None = None) -> tuple[str, ...]:
    """Speakers of a quick run: for RAVDESS the fold's test actors plus four training actors (two of each
    gender; ``01``-style actor numbers), and up to six speakers of every other corpus in ``df``
    (genders alternating), so every emobox6 fold and every leave-one-corpus-out fold still tests something."""
    chosen: list[str] = []
    if df is None or "ravdess" in set(df["corpus"]):
        test = list(splits.EMOBOX_RAVDESS_FOLDS[fold - 1]) if protocol == "emobox6" else []
        rest = [a for a in range(1, 25) if a not in test]
        male = [a for a in rest if a % 2][:2]
        female = [a for a in rest if not a % 2][:2]
        actors = sorted(test + male + female) if test else list(range(1, 9))
        chosen += [f"{a:02d}" for a in actors]
    if df is not None:
        for corpus, part in df[df["corpus"] != "ravdess"].groupby("corpus", sort=True):
            speakers = sorted(part["speaker"].unique())
            chosen += splits.pick_validation_speakers(part, speakers, min(QUICK_PER_CORPUS, len(speakers)), 0)
    return tuple(chosen)


def quick_subset(df: pd.DataFrame, speakers: tuple[str, ...]) -> pd.DataFrame:
    """The rows a quick run keeps: speakers by id, RAVDESS actors also by their two-digit number."""
    wanted = set(speakers)
    keep = df["speaker"].isin(wanted)
    if "actor" in df:
        keep |= df["actor"].map(lambda a: f"{int(a):02d}" if pd.notna(a) else "").isin(wanted)
    return df[keep].reset_index(drop=True)


# ---------------------------------------------------------------------------- presets and durations
@dataclass(frozen=True)
class Preset:
    """A named starting point for the Train form: the corpora it trains on and its settings."""

    key: str
    title: str
    description: str
    corpora: tuple[str, ...]
    settings: dict
    quick: bool = False
    missing: tuple[str, ...] = ()      # corpora it wants that the data root lacks


def recipe_settings(path: Path = RECIPE_FILE) -> tuple[dict, int]:
    """The first member of a recipe file (training settings) and how many members it has."""
    recipe = read_json(path)
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe {path.name} is missing or not valid JSON")
    members = recipe["members"] if "members" in recipe else [recipe]
    if not members or not isinstance(members[0], dict):
        raise ConfigError(f"recipe {path.name} lists no member")
    return dict(members[0]), len(members)


def presets(choices: list[DatasetChoice], recipe: Path = RECIPE_FILE) -> list[Preset]:
    """The quick demo (on the bundled samples, else a few RAVDESS actors) and the shipped recipe
    (read from ``training/recipes/multicorpus.json``: the multi-corpus network of models/multicorpus; the shipped
    default is a probe on Whisper's encoder, which the Train page does not train) on those of its corpora that are
    here (none: the preset is listed with empty ``corpora``, so the page can say what it needs)."""
    keys = [c.key for c in choices]
    out = []
    if SAMPLES_KEY in keys or "ravdess" in keys:
        on_samples = SAMPLES_KEY in keys
        where = ("the 32 bundled RAVDESS clips (actor 1 tested, one of actors 2-4 for validation, two trained on)"
                 if on_samples else "8 RAVDESS actors (the fold's 4 test actors and 4 others)")
        out.append(Preset("quick", "Quick demo",
                          f"{QUICK_DEMO['arch']} for {QUICK_DEMO['epochs']} epochs on {where}. Finishes in 30-45 s "
                          "here, most of it starting TensorFlow: a smoke test of the whole path, "
                          "not a model worth promoting.",
                          (SAMPLES_KEY,) if on_samples else ("ravdess",), dict(QUICK_DEMO), quick=not on_samples))
    try:
        member, n_members = recipe_settings(recipe)
    except ConfigError:
        return out
    wanted = tuple(str(member.pop("dataset", "ravdess")).split("+"))
    have = tuple(c for c in wanted if c in keys)
    missing = tuple(c for c in wanted if c not in keys)
    of = f" (member 1 of {n_members})" if n_members > 1 else ""
    needs = "" if have else f" None of its corpora is under the data root {data_dir()}: it needs them to train."
    out.append(Preset("recipe", "Shipped recipe",
                      f"The recipe of the shipped multi-corpus network{of} (models/multicorpus; the shipped default "
                      "is a probe on Whisper's encoder, trained by training/whisper_probe.py, not here), read from "
                      f"{_shown_path(recipe)}: "
                      f"{member.get('arch')} for {member.get('epochs')} epochs on {'+'.join(wanted)}, "
                      f"{member.get('protocol', 'emobox6')} fold 1.{needs}",
                      have, member, missing=missing))
    return out


def _shown_path(path: Path) -> str:
    """A path inside the project as ``training/...``, any other in full."""
    try:
        return str(Path(path).resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class EpochCost:
    """What one training epoch costs on this machine: a fixed part (validation pass, checkpoint; it
    dominates on a few clips) plus a part per training clip, and where the figures come from."""

    seconds_per_clip: float
    source: str
    fixed: float = 0.0

    def epoch_seconds(self, clips: int) -> float:
        return self.fixed + self.seconds_per_clip * max(int(clips), 0)


def _bench_cost(entry: dict) -> EpochCost | None:
    try:
        ms = float(entry["epochs"]["project"]["median_ms"])
        clips, n = int(entry["train_clips"]), int(entry["epochs"]["project"]["n"])
    except (KeyError, TypeError, ValueError):
        return None
    return EpochCost(ms / 1000 / clips, f"measured: median of {n} epochs on {clips} RAVDESS training clips "
                                        "(python -m ser_app.bench, training/results/bench.json)")


def _zoo_cost(arch: str, result: dict) -> EpochCost | None:
    cv = result.get("cv") or {}
    wall, command = cv.get("wall_seconds"), str(cv.get("command", ""))
    epochs = re.search(r"--epochs (\d+)", command)
    folds = re.search(r"(\d+)-fold", str(cv.get("protocol", "")))
    if not wall or not epochs or not folds or "{" in command:      # plain zoo flags only: then 1080 clips a fold
        return None
    e, f = int(epochs[1]), int(folds[1])
    return EpochCost(float(wall) / (f * e) / RAVDESS_FOLD_TRAIN_CLIPS,
                     f"derived: the zoo's {f}-fold cross-validation took {float(wall) / 60:.0f} min with at most "
                     f"{e} epochs a fold on {RAVDESS_FOLD_TRAIN_CLIPS} clips (training/results/{arch}.json), "
                     f"counted as if every fold ran all {e} epochs, so an epoch may take longer")


def _with_floor(cost: EpochCost, floor: dict | None) -> EpochCost:
    """Add the fixed part of an epoch, measured on a tiny training set (training/epoch_floor.py)."""
    try:
        seconds, clips = float(floor["median_s"]), int(floor["train_clips"])
    except (KeyError, TypeError, ValueError):
        return cost
    fixed = max(seconds - cost.seconds_per_clip * clips, 0.0)
    return dataclasses.replace(cost, fixed=fixed, source=f"{cost.source}; plus {fixed:.2f} s fixed an epoch "
                                                         f"(measured: {seconds:.2f} s an epoch on {clips} clips, "
                                                         "training/results/epoch_floor.json)")


def epoch_costs(results: Path = RESULTS_DIR) -> dict[str, EpochCost]:
    """Per architecture, what one epoch costs here: per clip as measured by the benchmark where it was,
    else derived from the architecture zoo's cross-validation wall time; plus the fixed part measured on
    the bundled samples."""
    bench = (read_json(Path(results) / "bench.json", {}) or {}).get("training", {}) or {}
    floors = (read_json(Path(results) / "epoch_floor.json", {}) or {}).get("archs", {}) or {}
    out = {}
    for arch in models.names():
        cost = _bench_cost(bench.get(arch) or {})
        if cost is None:
            cost = _zoo_cost(arch, read_json(Path(results) / f"{arch}.json", {}) or {})
        if cost is not None:
            out[arch] = _with_floor(cost, floors.get(arch))
    return out


def startup_seconds(results: Path = RESULTS_DIR) -> float:
    """Launch of a training process to its first finished epoch (TensorFlow import, graph build), from the benchmark."""
    bench = read_json(Path(results) / "bench.json", {}) or {}
    try:
        return float(bench["train_process"]["launch_to_first_epoch_s"])
    except (KeyError, TypeError, ValueError):
        return 10.0


def duration_estimate(arch: str, train_clips: int, epochs: int, *, members: int = 1,
                      costs: dict[str, EpochCost] | None = None, startup: float | None = None) -> dict | None:
    """Expected wall time of a run: start-up plus ``epochs`` epochs over ``train_clips`` clips
    (an upper bound when early stopping can end it sooner); None without a figure for ``arch``."""
    cost = (costs if costs is not None else epoch_costs()).get(arch)
    if cost is None:
        return None
    start = startup_seconds() if startup is None else startup
    per_epoch = cost.epoch_seconds(train_clips)
    total = start + per_epoch * int(epochs) * max(int(members), 1)
    return {"seconds": total, "per_epoch": per_epoch, "startup": start, "source": cost.source}


def durations_frame(costs: dict[str, EpochCost] | None = None) -> pd.DataFrame:
    """One row per architecture: seconds per epoch on a RAVDESS fold (1080 clips), one 60-epoch fold, source."""
    costs = epoch_costs() if costs is None else costs
    rows = []
    for arch in models.names():
        c = costs.get(arch)
        per = c.epoch_seconds(RAVDESS_FOLD_TRAIN_CLIPS) if c else None
        rows.append({"architecture": arch, "seconds per epoch (1080 clips)": round(per, 2) if per else None,
                     "60 epochs": format_seconds(60 * per) if per else "unknown",
                     "source": c.source if c else "no measurement"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- progress
def history_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["epoch", "accuracy", "loss"])


def curves_figure(rows: list[dict]) -> go.Figure:
    """Train and validation accuracy (left) and loss (right) per epoch."""
    df = history_frame(rows)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Accuracy", "Loss"), horizontal_spacing=0.08)
    series = (("accuracy", "train", "#2a7ab0", 1), ("val_accuracy", "validation", "#e76f51", 1),
              ("loss", "train", "#2a7ab0", 2), ("val_loss", "validation", "#e76f51", 2))
    for col, name, col_colour, pos in series:
        if col in df and not df.empty:
            fig.add_trace(go.Scatter(x=df["epoch"], y=df[col], name=name, mode="lines+markers",
                                     line=dict(color=col_colour, width=2), marker=dict(size=5),
                                     legendgroup=name, showlegend=pos == 1), 1, pos)
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    return _style(fig, None, height=320)


def epoch_seconds(rows: list[dict]) -> float | None:
    """Typical epoch time: the median of the last few epochs, each member's first epoch (which also
    builds the graph) left out once later ones exist. A median of recent epochs does not swing with one
    slow epoch, and leaving out the first keeps the first estimate from being several times too long."""
    timed = [r for r in rows if isinstance(r.get("seconds"), (int, float))]
    later = [float(r["seconds"]) for r in timed if r.get("epoch") != 1]
    secs = later or [float(r["seconds"]) for r in timed]
    return float(np.median(secs[-ETA_WINDOW:])) if secs else None


def progress_info(status: dict, rows: list[dict]) -> dict:
    """Fraction done, a one-line text and the time left (seconds) of one training run.

    Ensembles count every member's epochs. The time left is the typical epoch time
    (:func:`epoch_seconds`) times the epochs still to run; with a validation split early
    stopping may end the run sooner, so it is then an upper bound (``eta_is_bound``)."""
    epochs = int(status.get("epochs") or 0)
    members = max(int(status.get("members") or 1), 1)
    member = min(max(int(status.get("member") or 1), 1), members)
    mine = [r for r in rows if int(r.get("member", 1)) == member] if members > 1 else rows
    done = len(mine)
    total = epochs * members
    done_total = (member - 1) * epochs + done
    state = status.get("state")
    fraction = 1.0 if state == "finished" else (min(done_total / total, 1.0) if total else 0.0)
    eta = None
    bound = any("val_accuracy" in r for r in rows)
    typical = epoch_seconds(mine or rows)
    if typical is not None and total and state in runs.ACTIVE_STATES and done >= 2:
        eta = typical * max(total - done_total, 0)
    text = f"Epoch {done} of {epochs}" if epochs else "Preparing"
    if members > 1 and epochs:
        text += f" · member {member} of {members}"
    if eta is not None:
        text += f" · {'at most ' if bound else ''}about {format_seconds(eta)} left"
    elif state in runs.ACTIVE_STATES and epochs and done < 2:
        text += " · time left known after epoch 2"
    return {"fraction": fraction, "text": text, "eta": eta, "eta_is_bound": bound, "done": done, "epochs": epochs}


def stop_reason(status: dict, config: dict, rows: list[dict]) -> str | None:
    """Why a finished or stopped run ended: early stopping (epoch N of M, patience P), a stop request,
    or all epochs run; None while it runs or when it failed (its status message says why)."""
    state = status.get("state")
    if state not in ("finished", "stopped"):
        return None
    epochs = int(status.get("epochs") or config.get("epochs") or 0)
    last = int(status.get("epoch") or (rows[-1].get("epoch", 0) if rows else 0))
    best = status.get(schema.BEST_EPOCH)
    patience = config.get("patience")
    has_val = any(schema.VAL_MONITOR in r for r in rows)
    members = int(status.get("members") or 1)
    who = f" (member {status.get('member', members)} of {members})" if members > 1 else ""
    kept = (f"the model of epoch {best}, its best validation accuracy, was kept" if has_val and best
            else "the last epoch's model was kept")
    if state == "stopped":
        return f"Stopped on request at epoch {last} of {epochs}{who}; {kept}."
    if epochs and last < epochs and has_val and best and patience and last - int(best) >= int(patience):
        return (f"Early stopping at epoch {last} of {epochs}{who}: validation accuracy had not improved for "
                f"{patience} epochs (patience {patience}); {kept}.")
    if epochs and last < epochs:
        return f"Ended at epoch {last} of {epochs}{who}; {kept}."
    return f"Finished all {epochs} epochs{who}; {kept}."


def is_cv_run(config: dict) -> bool:
    return bool(config.get(schema.CV_FOLDS))


def cv_progress(run_dir: Path, status: dict, config: dict) -> dict:
    """Progress of a cross-validation (``ser cv``): folds done of total, the current fold's epochs, each
    finished fold's test accuracy, and the time left (the current fold's epochs plus, for each fold still
    to come, the median duration of the finished folds, else the current fold's expected duration)."""
    run_dir = Path(run_dir)
    folds = [int(f) for f in (config.get(schema.CV_FOLDS) or status.get("folds") or [])]
    finished, current, cur_status, cur_rows = [], None, {}, []
    for f in folds:
        d = run_dir / schema.fold_dir_name(f)
        if not (d / schema.STATUS).exists():
            continue
        st = runs.read_status(d)
        metrics = read_json(d / schema.METRICS) or {}
        if st.get("state") == "finished" and "accuracy" in metrics:
            finished.append({"fold": f, "accuracy": metrics.get("accuracy"), "uar": metrics.get("uar"),
                             "seconds": metrics.get("train_seconds"), "protocol": metrics_protocol(metrics)})
        elif current is None:
            current, cur_status, cur_rows = f, st, runs.read_history(d)
    state = status.get("state")
    n = len(folds)
    inner = progress_info(cur_status, cur_rows) if current is not None else None
    part = inner["fraction"] if inner and cur_status.get("state") != "finished" else 0.0
    fraction = 1.0 if state == "finished" else ((len(finished) + part) / n if n else 0.0)
    eta = None
    if state in runs.ACTIVE_STATES and inner is not None and inner["eta"] is not None:
        later = n - len(finished) - 1
        fold_secs = [float(f["seconds"]) for f in finished if f.get("seconds")]
        if fold_secs:
            per_fold = float(np.median(fold_secs))
        else:
            typical = epoch_seconds(cur_rows) or 0.0
            first = float(cur_status.get("first_epoch_seconds") or typical)
            per_fold = first + typical * max(inner["epochs"] - 1, 0)
        eta = inner["eta"] + max(later, 0) * per_fold
    if state in runs.ACTIVE_STATES and current is not None:
        text = f"Fold {current} ({folds.index(current) + 1} of {n}, {len(finished)} done)"
        if inner and inner["epochs"]:
            text += f" · epoch {inner['done']} of {inner['epochs']}"
        else:
            text += " · preparing"
        if eta is not None:
            text += f" · {'at most ' if inner['eta_is_bound'] else ''}about {format_seconds(eta)} left"
    elif state in runs.ACTIVE_STATES:
        text = f"Preparing · {len(finished)} of {n} folds done"
    else:
        text = f"{len(finished)} of {n} folds done"
    return {"folds": folds, "finished": finished, "current": current, "status": cur_status, "rows": cur_rows,
            "fraction": fraction, "text": text, "eta": eta}


def cv_stop_reason(status: dict, progress: dict) -> str | None:
    state, n, done = status.get("state"), len(progress["folds"]), len(progress["finished"])
    if state == "finished":
        return f"Finished all {n} folds; the metrics pool their out-of-fold predictions."
    if state == "stopped":
        return f"Stopped on request with {done} of {n} folds finished."
    return None


def format_seconds(s: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 10 min``."""
    if s < 9.95:
        return f"{s:.1f} s"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def log_tail(run_dir: Path, lines: int = 15) -> str:
    try:
        text = (Path(run_dir) / schema.LOG).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def runs_frame(run_list: list[dict]) -> pd.DataFrame:
    """One row per run: state, dataset, architecture, protocol, epochs (folds of a cross-validation),
    best validation and test accuracy."""
    rows = []
    for r in run_list:
        cfg, st, m = r.get("config", {}), r.get("status", {}), r.get("metrics") or {}
        dataset = dataset_title(str(cfg.get("dataset", "")))
        epochs = f"{st.get('epoch', 0)}/{st.get('epochs', cfg.get('epochs', '?'))}"
        if is_cv_run(cfg):
            cv = cv_progress(Path(r["dir"]), st, cfg)
            epochs = f"{len(cv['finished'])}/{len(cv['folds'])} folds"
        best = st.get(schema.BEST_VAL_ACCURACY, m.get(schema.BEST_VAL_ACCURACY))
        rows.append({
            "run": r["id"], "state": st.get("state", "?"), "arch": cfg.get("arch", ""), "dataset": dataset,
            "protocol": run_protocol(cfg, m),
            "epochs": epochs,
            "best val acc": best if isinstance(best, (int, float)) else None,
            "test acc": m.get("accuracy"),
            "message": st.get("message", ""),
        })
    return pd.DataFrame(rows, columns=["run", "state", "arch", "dataset", "protocol", "epochs", "best val acc",
                                       "test acc", "message"])


def run_protocol(config: dict, metrics: dict) -> str:
    """A run's compact protocol name: its metrics', or before it has any, its config's."""
    if metrics.get(schema.PROTOCOL) or metrics.get(schema.PROTOCOL_INFO):
        return metrics_protocol(metrics)
    name = config.get("protocol")
    if not name:
        return ""
    cv_folds = config.get(schema.CV_FOLDS)
    return short_protocol(schema.protocol_record(
        name, cv_folds or [config.get("fold", 1)], cross_validation=bool(cv_folds),
        speaker_independent=name != "random", label=""))


def promotion_preview(run_dir: Path) -> dict:
    """What promoting a run changes: the active model it replaces and the run's model, with the caveats
    a user must see before saying yes (different test sets, other emotions, an earlier copy replaced)."""
    run_dir = Path(run_dir)
    current = model_summary(runs.active_model_dir())
    metrics = read_json(run_dir / schema.METRICS, {}) or {}
    cfg = read_json(run_dir / schema.CONFIG, {}) or {}
    spec = read_json(run_dir / schema.MODEL / schema.SPEC, {}) or {}
    old_spec = read_json(Path(current["dir"]) / schema.SPEC, {}) or {}
    record = schema.protocol_of(metrics)
    candidate = {"name": run_dir.name, "arch": str(cfg.get("arch", spec.get("arch", "?"))),
                 "dataset": str(cfg.get("dataset", "")), "accuracy": metrics.get("accuracy"),
                 "protocol": str(metrics.get(schema.PROTOCOL, "")), "protocol_info": record, "n": metrics.get("n"),
                 "labels": list(spec.get("labels", [])),
                 "speaker_independent": bool(metrics.get(schema.SPEAKER_INDEPENDENT, False))}
    notes = []
    now_rec = current["protocol_info"]
    same = all(record.get(k) == now_rec.get(k) for k in ("name", "folds", "cross_validation")) and \
        candidate["n"] == current["n"]
    if not same:
        notes.append(f"The two accuracies come from different test sets ({current['n'] or '?'} clips, "
                     f"{now_rec.get('label') or short_protocol(now_rec)}; against {candidate['n'] or '?'} clips, "
                     f"{record.get('label') or 'no test'}): they do not compare like for like.")
    if candidate["accuracy"] is not None and not candidate["speaker_independent"]:
        notes.append("The run's accuracy is speaker-DEPENDENT: expect less on new voices.")
    old_labels = list(old_spec.get("labels", []))
    if old_labels and candidate["labels"] and set(candidate["labels"]) != set(old_labels):
        notes.append(f"The run's model knows {len(candidate['labels'])} emotions ({', '.join(candidate['labels'])}); "
                     f"the current one knows {len(old_labels)}.")
    if (models_dir() / run_dir.name).exists():
        notes.append(f"A copy of this run promoted earlier (models/{run_dir.name}) is replaced.")
    return {"current": current, "candidate": candidate, "notes": notes}


# ============================================================================ evaluation
@dataclass(frozen=True)
class EvalSource:
    key: str
    title: str
    dir: str
    table: str = ""            # a predictions table other than the folder's predictions.csv (a model on strangers)
    protocol: str = ""         # that table's protocol label (the folder's metrics.json describes its own table)
    calibrated: bool = False   # its probabilities are already the model's calibrated ones, as Predict answers

    @property
    def predictions(self) -> Path:
        return Path(self.table) if self.table else Path(self.dir) / schema.PREDICTIONS

    @property
    def metrics_file(self) -> Path:
        return Path(self.dir) / schema.METRICS


def evaluation_sources() -> list[EvalSource]:
    """What the Evaluate page can show: the shipped default's CV, every other model folder's (another shipped
    model, promoted runs; the active one said so), then runs with predictions."""
    out = []
    default, active = runs.default_model_dir(), runs.active_model_dir()
    for d in runs.model_dirs():
        if not (d / schema.PREDICTIONS).exists():
            continue
        protocol = metrics_protocol(read_json(d / schema.METRICS, {}) or {})
        if d == default:
            out.append(EvalSource("default", f"Shipped default model ({protocol})", str(d)))
        else:
            title = f"{'Active model' if d == active else 'Model'} {d.name} ({protocol})"
            out.append(EvalSource(f"model:{d.name}", title, str(d)))
        name = "Shipped default model" if d == default else f"Model {d.name}"
        out += [s for s in (stranger_source(d, name), loco_calibration_source(d, name), adapted_source(d, name)) if s]
    if public_demo():
        return out          # a public demo shows the served model only: runs are the operator's, and stay unread
    for r in runs.list_runs():
        if (Path(r["dir"]) / schema.PREDICTIONS).exists():
            m = r.get("metrics") or {}
            out.append(EvalSource(f"run:{r['id']}", f"Run {r['id']} ({metrics_protocol(m)})", r["dir"]))
    return out


def stranger_source(model_dir: Path, name: str) -> EvalSource | None:
    """The model's answers on corpora it never trained on (``schema.STRANGERS``, written by
    ``training/strangers.py --save``), as an evaluation; None when the model has none or its table is gone."""
    record = read_json(model_dir / schema.STRANGERS, None)
    if not isinstance(record, dict) or not record.get("table") or not isinstance(record.get("corpora"), dict):
        return None
    table = Path(record["table"])
    table = table if table.is_absolute() else project_root() / table
    if not table.exists():
        return None
    corpora = ", ".join(c.upper() for c in record["corpora"])
    protocol = f"corpora it never trained on: {corpora}"
    return EvalSource(f"strangers:{model_dir.name}", f"{name} on voices it never heard ({corpora})", str(model_dir),
                      table=str(table), protocol=protocol, calibrated=True)


#: The protocol label of a probe's recipe left out of each corpus and calibrated as shipped (``loco`` first, so the
#: Evaluate page shows its leave-one-corpus-out view).
LOCO_CALIBRATION_PROTOCOL = "loco: its recipe trained on three corpora, calibrated as shipped, tested on the fourth"


def loco_calibration_source(model_dir: Path, name: str) -> EvalSource | None:
    """The model's recipe left out of each corpus in turn and calibrated as the model is (``schema.LOCO_CALIBRATION``,
    written by ``training/novelty_calibration.py --save``): what its confidence means on a corpus it never heard.
    None when the folder has none or its table is gone."""
    record = read_json(model_dir / schema.LOCO_CALIBRATION, None)
    if not isinstance(record, dict) or not record.get("table") or not isinstance(record.get("corpora"), dict):
        return None
    table = model_dir / record["table"]
    if not table.exists():
        return None
    corpora = ", ".join(c.upper() for c in record["corpora"])
    return EvalSource(f"loco-calibrated:{model_dir.name}", f"{name}: each corpus left out, calibrated as shipped "
                      f"({corpora})", str(model_dir), table=str(table), protocol=LOCO_CALIBRATION_PROTOCOL,
                      calibrated=True)


#: The protocol label of the adapted mode's recipe left out of each corpus (``loco`` first, as above).
ADAPTED_PROTOCOL = (f"loco, adapted mode: its recipe trained on three corpora, the fourth standardised by "
                    f"{REFERENCE_CLIPS} of its unlabelled clips (every clip once per reference draw)")


def adapted_source(model_dir: Path, name: str) -> EvalSource | None:
    """The adapted mode's recipe left out of each corpus in turn, the held-out corpus adapted from references of
    20 of its clips (``schema.ADAPTED``'s table, written by ``training/adapt_probe.py ship``); None when the folder
    has none."""
    record = read_json(model_dir / schema.ADAPTED, None)
    if not isinstance(record, dict) or not isinstance(record.get("table"), str) or not record["table"]:
        return None
    table = model_dir / record["table"]
    if not table.exists():
        return None
    return EvalSource(f"adapted:{model_dir.name}", f"{name}, adapted mode: each corpus left out, adapted from "
                      f"{REFERENCE_CLIPS} of its clips", str(model_dir), table=str(table), protocol=ADAPTED_PROTOCOL,
                      calibrated=True)


def predictions_csv_bytes(source: EvalSource) -> bytes:
    """The evaluated table as CSV bytes, for download (a gzipped table unpacked)."""
    import gzip

    data = source.predictions.read_bytes()
    return gzip.decompress(data) if source.predictions.suffix == ".gz" else data


def labels_of(df: pd.DataFrame, stored: dict | None = None) -> list[str]:
    """Label order: metrics.json's, else the probability columns', else EMOTIONS order of what occurs."""
    if stored and stored.get("labels"):
        return list(stored["labels"])
    cols = evaluation.probability_columns(df)
    if cols:
        return [c[2:] for c in cols]
    seen = set(df["true"]) | set(df["pred"])
    return [e for e in EMOTIONS if e in seen] + sorted(seen - set(EMOTIONS))


def load_source(source: EvalSource) -> tuple[pd.DataFrame, dict]:
    """Predictions and metrics recomputed from them (protocol name from metrics.json)."""
    df = evaluation.load_predictions(source.predictions)
    stored = read_json(source.metrics_file, {}) or {}
    labels = labels_of(df, stored)
    if source.protocol:           # the folder's metrics.json is about another table: keep only its label order
        stored = {schema.PROTOCOL: source.protocol, schema.SPEAKER_INDEPENDENT: True}
    protocol = schema.protocol_of(stored)
    metrics = evaluation.evaluate(df, labels, protocol=stored.get(schema.PROTOCOL, ""),
                                  speaker_independent=bool(stored.get(schema.SPEAKER_INDEPENDENT,
                                                                      protocol["speaker_independent"])))
    metrics[schema.PROTOCOL_INFO] = protocol
    return df, metrics


METRIC_NAMES = (("accuracy", "Accuracy"), ("uar", "UAR"), ("macro_f1", "Macro F1"), ("weighted_f1", "Weighted F1"))


def metric_cards(metrics: dict) -> list[tuple[str, str, float, str]]:
    """(name, formatted value, raw value, short protocol) for the four headline metrics."""
    proto = metrics_protocol(metrics)
    return [(name, format_pct(metrics[key]), float(metrics[key]), proto) for key, name in METRIC_NAMES]


def format_pct(v: float) -> str:
    return f"{100 * float(v):.1f}%"


def confusion_figure(metrics: dict, normalise: bool = True) -> go.Figure:
    """Confusion matrix; rows normalised to recall by default, counts in the hover text."""
    labels = metrics["labels"]
    cm = np.asarray(metrics["confusion"], dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    z = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalise else cm
    text = [[f"{v:.0%}" if normalise else f"{int(v)}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, colorscale="Blues", zmin=0,
                               zmax=1 if normalise else None, text=text, texttemplate="%{text}",
                               customdata=cm.astype(int),
                               hovertemplate="true %{y}, predicted %{x}: %{text} (%{customdata} clips)<extra></extra>",
                               colorbar=dict(title="share" if normalise else "clips")))
    fig.update_xaxes(title="predicted", side="bottom")
    fig.update_yaxes(title="true", autorange="reversed")
    return _style(fig, "Confusion matrix (each row sums to 100 %)" if normalise else "Confusion matrix", height=460)


def per_class_frame(metrics: dict) -> pd.DataFrame:
    pc = metrics["per_class"]
    return pd.DataFrame([{"emotion": k, **v} for k, v in pc.items()])


def per_class_figure(metrics: dict) -> go.Figure:
    df = per_class_frame(metrics)
    fig = go.Figure([go.Bar(x=df["emotion"], y=df[m], name=m, marker_color=c)
                     for m, c in (("precision", "#8ecae6"), ("recall", "#219ebc"), ("f1", "#023047"))])
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(barmode="group", legend=BOTTOM_LEGEND)
    return _style(fig, "Precision, recall and F1 per emotion", height=360)


def gender_gap_text(gap: dict) -> str:
    lo, hi = gap["ci95"]
    return (f"Female − male accuracy: {100 * gap['gap']:+.1f} points "
            f"(95 % CI {100 * lo:+.1f} to {100 * hi:+.1f}, speaker bootstrap over "
            f"{gap['speakers']['female']} female and {gap['speakers']['male']} male speakers)")


def speaker_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, clips and gender per speaker, sorted by accuracy."""
    if "speaker" not in df:
        return pd.DataFrame(columns=["speaker", "accuracy", "clips", "gender"])
    g = df.assign(correct=(df["true"] == df["pred"]).astype(float)).groupby("speaker")
    out = pd.DataFrame({"accuracy": g["correct"].mean(), "clips": g.size()})
    out["gender"] = g["gender"].first() if "gender" in df else "unknown"
    return out.reset_index().sort_values(["accuracy", "speaker"]).reset_index(drop=True)


def speaker_figure(df: pd.DataFrame) -> go.Figure:
    sp = speaker_frame(df)
    overall = float((df["true"] == df["pred"]).mean()) if len(df) else 0.0
    fig = go.Figure(go.Bar(x=sp["speaker"], y=sp["accuracy"],
                           marker_color=[GENDER_COLOURS.get(g, "#888") for g in sp["gender"]],
                           customdata=np.stack([sp["gender"], sp["clips"]], axis=-1) if len(sp) else None,
                           hovertemplate="%{x} (%{customdata[0]}): %{y:.0%} of %{customdata[1]} clips<extra></extra>"))
    fig.add_hline(y=overall, line_dash="dot", line_color="#555", annotation_text=f"overall {overall:.0%}")
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_xaxes(type="category", title=None)
    return _style(fig, "Accuracy per speaker (pink female, blue male)", height=320)


def intensity_figure(metrics: dict) -> go.Figure:
    """Accuracy per RAVDESS intensity and recall per emotion for each intensity."""
    pi = metrics.get("per_intensity", {})
    order = [k for k in ("normal", "strong") if k in pi] + [k for k in pi if k not in ("normal", "strong")]
    colours = {"normal": "#90be6d", "strong": "#f94144"}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.25, 0.75], subplot_titles=("Accuracy", "Recall per emotion"),
                        horizontal_spacing=0.08)
    for k in order:
        c = colours.get(k, "#888")
        fig.add_trace(go.Bar(x=[k], y=[pi[k]["accuracy"]], name=k, marker_color=c, legendgroup=k,
                             text=[f"{format_pct(pi[k]['accuracy'])} (n={pi[k]['n']})"], textposition="outside",
                             cliponaxis=False), 1, 1)
        rec = pi[k].get("recall", {})
        present = [lab for lab in rec if metrics["per_class"].get(lab, {}).get("support", 0)]
        fig.add_trace(go.Bar(x=present, y=[rec[lab] for lab in present], name=k, marker_color=c, legendgroup=k,
                             showlegend=False), 1, 2)
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%")
    fig.update_layout(barmode="group", legend=TOP_LEGEND)
    return _style(fig, None, height=320)


def misclassified_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Wrongly predicted clips: file, speaker, gender, true, predicted, confidence (most confident first)."""
    wrong = df[df["true"] != df["pred"]]
    cols = [c for c in ("file", "speaker", "gender", "intensity", "true", "pred", "confidence") if c in wrong]
    out = wrong[cols].copy()
    if "confidence" in out:
        out = out.sort_values("confidence", ascending=False)
    return out.reset_index(drop=True)


def filter_misclassified(wrong: pd.DataFrame, *, true=(), pred=(), speakers=(), min_confidence: float = 0.0):
    m = pd.Series(True, index=wrong.index)
    if true:
        m &= wrong["true"].isin(true)
    if pred:
        m &= wrong["pred"].isin(pred)
    if speakers and "speaker" in wrong:
        m &= wrong["speaker"].isin(speakers)
    if "confidence" in wrong:
        m &= wrong["confidence"] >= min_confidence
    return wrong[m].reset_index(drop=True)


def audio_index(roots: list[Path] | None = None) -> dict[str, str]:
    """File name -> path of every audio file under the data folder and the samples (first one wins)."""
    roots = roots if roots is not None else [data_dir(), samples_dir()]
    index: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():
                index.setdefault(p.name, str(p))
    return index


def find_audio(name: str, index: dict[str, str]) -> Path | None:
    """The clip of a predictions row, looked up by its bare file name (never a path from the table)."""
    name = Path(str(name)).name
    hit = index.get(name)
    return Path(hit) if hit else None


def compare_frame(a: dict, b: dict, name_a: str, name_b: str) -> pd.DataFrame:
    """Headline, per-gender and per-class F1 numbers of two evaluations side by side."""
    rows = [(label, a.get(key), b.get(key)) for key, label in METRIC_NAMES]
    for g in ("female", "male"):
        rows.append((f"{g} accuracy", a.get("per_gender", {}).get(g, {}).get("accuracy"),
                     b.get("per_gender", {}).get(g, {}).get("accuracy")))
    for lab in dict.fromkeys(list(a.get("per_class", {})) + list(b.get("per_class", {}))):
        rows.append((f"F1 {lab}", a.get("per_class", {}).get(lab, {}).get("f1"),
                     b.get("per_class", {}).get(lab, {}).get("f1")))
    df = pd.DataFrame(rows, columns=["metric", name_a, name_b])
    df["difference"] = df[name_b] - df[name_a]
    return df


def compare_figure(table: pd.DataFrame) -> go.Figure:
    names = [c for c in table.columns if c not in ("metric", "difference")]
    fig = go.Figure([go.Bar(x=table["metric"], y=table[n], name=n, marker_color=c)
                     for n, c in zip(names, ("#219ebc", "#fb8500"))])
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(barmode="group", legend=BOTTOM_LEGEND)
    return _style(fig, None, height=380)


def metrics_json(metrics: dict) -> str:
    return json.dumps(metrics, indent=1, default=float)


def metrics_csv(metrics: dict) -> str:
    """A flat table: one row per (scope, name, metric) so it opens cleanly in a spreadsheet."""
    rows = [("overall", "all", key, metrics[key]) for key, _ in METRIC_NAMES]
    rows.append(("overall", "all", "n", metrics["n"]))
    for lab, v in metrics["per_class"].items():
        rows += [("class", lab, k, v[k]) for k in ("precision", "recall", "f1", "support")]
    for scope in ("per_gender", "per_intensity"):
        for name, v in metrics.get(scope, {}).items():
            rows += [(scope[4:], name, k, v[k]) for k in ("accuracy", "uar", "macro_f1", "n")]
    for spk, acc in metrics.get("per_speaker", {}).items():
        rows.append(("speaker", spk, "accuracy", acc))
    df = pd.DataFrame(rows, columns=["scope", "name", "metric", "value"])
    df.insert(0, "protocol", metrics.get("protocol", ""))
    return df.to_csv(index=False)


def figures_png_zip(figs: dict[str, go.Figure], width: int = 1100, height: int = 500) -> bytes:
    """Every figure as a PNG in one zip (plotly + kaleido drive the installed Chromium)."""
    import tempfile

    import plotly.io as pio

    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{name}.png" for name in figs]
        pio.write_images(list(figs.values()), paths, width=width, height=height, scale=2)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in paths:
                z.write(p, p.name)
    return buf.getvalue()


def figures_html_zip(figs: dict[str, go.Figure]) -> bytes:
    """Every figure as a stand-alone interactive HTML file (plotly.js inlined) in one zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, fig in figs.items():
            z.writestr(f"{name}.html", fig.to_html(include_plotlyjs=True, full_html=True))
    return buf.getvalue()


def md_escape(text: str) -> str:
    """Escape Markdown syntax so user-supplied text (file names, messages) is shown literally."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", str(text))
