"""The "why this emotion" view: the occlusion map drawn over the mel spectrogram, and the codec comparison.

:func:`saliency_png` (Pillow only) lives in the engine, :mod:`ser_core.explain_png`, for
``ser predict --explain``; :func:`saliency_figure` (plotly) and :func:`why_panel` (Streamlit) import their
toolkits when called. The numbers come from :mod:`ser_core.explain`.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd

from ser_core import explain

from ser_core.explain_png import (AGAINST, FOR, GREY_FLOOR_DB, HZ_TICKS, PNG_HEIGHT, PNG_PROFILE,  # noqa: F401
                                   overlay_rgb, saliency_png)


def method_text(expl: explain.Explanation) -> str:
    """One sentence on how the map was made, for captions."""
    n_time, n_bands = expl.grid
    return (f"Occlusion saliency, {n_time} stretches of time x {n_bands} groups of mel bands: each patch of the "
            "waveform's spectrum is pulled down to the recording's background level, the audio resynthesised "
            f"and the whole model re-run ({expl.runs} runs). Red: hiding the patch lowers P({expl.emotion}), it "
            "speaks for the answer; blue: hiding it raises P, it speaks against; stronger colour = larger "
            "change. Patches that are background already change nothing and stay grey.")


def summary_text(expl: explain.Explanation) -> str:
    """Where the evidence lies: share in the voiced stretch, the strongest patch for the answer."""
    if expl.saliency.sum() <= 0:
        return "Hiding no single patch changed the answer: the evidence is spread thinner than one patch."
    text = (f"{expl.voiced_mass:.0%} of the saliency lies in the voiced stretch "
            f"{expl.voiced[0]:.2f}-{expl.voiced[1]:.2f} s that the model's trimming keeps.")
    if expl.support.max() > 0:
        t, b = np.unravel_index(int(np.argmax(expl.support)), expl.support.shape)
        text += (f" The strongest evidence for {expl.emotion} is around {expl.times[t]:.2f} s and "
                 f"{expl.mel_hz[b]:,.0f} Hz (hiding it costs {100 * expl.support[t, b]:.1f} points).")
    return text.replace("%", " %")


# --------------------------------------------------------------------------- plotly
def diverging_scale(steps: int = 8) -> list[list]:
    """Red (P falls when hidden) through transparent to blue (P rises), opacity growing with the square root
    of the size, as in :func:`overlay_rgb`: weaker patches stay visible."""
    def rgba(c: np.ndarray, a: float) -> str:
        return f"rgba({int(c[0])},{int(c[1])},{int(c[2])},{a:.3f})"

    ramp = np.linspace(0, 1, steps + 1)
    red = [[float(0.5 - 0.5 * x), rgba(FOR, 0.9 * np.sqrt(x))] for x in ramp[::-1]]
    blue = [[float(0.5 + 0.5 * x), rgba(AGAINST, 0.9 * np.sqrt(x))] for x in ramp[1:]]
    return red + blue


def saliency_figure(expl: explain.Explanation):
    """The map over the mel spectrogram, the saliency per frame under it and per band beside it."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from . import views

    bands = np.arange(len(expl.mel_hz))
    ticks = [(float(np.interp(hz, expl.mel_hz, bands)), f"{hz / 1000:g} kHz" if hz >= 1000 else f"{hz} Hz")
             for hz in HZ_TICKS if expl.mel_hz[0] <= hz <= expl.mel_hz[-1]]
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, shared_yaxes=True, column_widths=[0.86, 0.14],
                        row_heights=[0.78, 0.22], horizontal_spacing=0.015, vertical_spacing=0.04)
    hover = "%{x:.2f} s, %{customdata:.0f} Hz: hiding it moves P by %{z:+.3f}<extra></extra>"
    hz_grid = np.broadcast_to(expl.mel_hz[:, None], expl.support.T.shape)
    fig.add_trace(go.Heatmap(z=expl.mel_db.T, x=expl.times, y=bands, colorscale="Greys", reversescale=True,
                             zmin=GREY_FLOOR_DB, zmax=0, showscale=False, hoverinfo="skip"), row=1, col=1)
    peak = float(expl.saliency.max()) or 1.0
    fig.add_trace(go.Heatmap(z=-expl.support.T, x=expl.times, y=bands, customdata=hz_grid, zmin=-peak, zmax=peak,
                             colorscale=diverging_scale(),
                             colorbar=dict(title=f"change of<br>P({expl.emotion})<br>when hidden", len=0.75,
                                           y=0.62, tickformat="+.2f"),
                             hovertemplate=hover), row=1, col=1)
    fig.add_trace(go.Scatter(x=expl.times, y=expl.time_profile(), fill="tozeroy", mode="lines",
                             line=dict(color="#555555", width=1), showlegend=False,
                             hovertemplate="%{x:.2f} s: summed |change| %{y:.3f}<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Bar(x=expl.band_profile(), y=bands, orientation="h", marker_color="#555555",
                         showlegend=False, customdata=expl.mel_hz,
                         hovertemplate="%{customdata:.0f} Hz: %{x:.3f}<extra></extra>"), row=1, col=2)
    for edge in expl.voiced:
        fig.add_vline(x=edge, line_dash="dash", line_color="#0096d2", row="all", col=1)
    fig.update_yaxes(tickvals=[t for t, _ in ticks], ticktext=[s for _, s in ticks], row=1, col=1,
                     title="frequency")
    fig.update_yaxes(showticklabels=False, row=2, col=1)
    fig.update_xaxes(title="time (s)", row=2, col=1)
    fig.update_xaxes(showticklabels=False, row=1, col=2)
    title = (f"Why {expl.emotion}? What hiding each patch does to P({expl.emotion}) "
             "(dashed: the voiced stretch; grey curves: summed size)")
    return views._style(fig, title, height=430)


# --------------------------------------------------------------------------- codecs
def codec_frame(rows: list[explain.CodecResult]) -> pd.DataFrame:
    """One row per version of the clip: its answer and the probability of the original's most likely emotion."""
    emotion = rows[0].best
    base = rows[0].probabilities.get(emotion, 0.0) if emotion else 0.0
    out = []
    for r in rows:
        p = r.probabilities.get(emotion, 0.0) if emotion else 0.0
        out.append({"version": r.codec, "file size": "-" if r.size_bytes is None else f"{r.size_bytes / 1024:.0f} KiB",
                    "answer": r.answer, "confidence": round(100 * r.confidence, 1),
                    f"P({emotion}) %": round(100 * p, 1), "change (points)": round(100 * (p - base), 1)})
    return pd.DataFrame(out)


def codec_text(rows: list[explain.CodecResult]) -> str:
    emotion = rows[0].best
    spread = explain.codec_spread(rows)
    changed = [r.codec for r in rows[1:] if r.answer != rows[0].answer]
    text = (f"Re-encoding the same clip moves P({emotion}) by up to {100 * spread:.1f} points"
            + (f", and changes the answer for {', '.join(changed)}." if changed else "; the answer stays the same."))
    return text + (" A difference between two files of one recording that is no larger than this is the codec, "
                   "not the voice.")


# --------------------------------------------------------------------------- Streamlit
def why_panel(predictor, y: np.ndarray, pred, *, key: str = "p_why") -> None:
    """The "Why this emotion?" expander of the Predict page: computed on request, kept for reruns."""
    import streamlit as st

    from ser_core.errors import SERError

    from . import views

    if y is None or not pred.speech:
        return
    with st.expander("Why this emotion?", icon=":material/lightbulb:"):
        duration = y.size / predictor.cfg.sample_rate
        if duration > explain.MAX_SECONDS:
            st.info(f"The why view explains up to {explain.MAX_SECONDS:.0f} s of audio; this is {duration:.0f} s. "
                    "Upload a shorter part to see it.")
            return
        ident = (hashlib.sha1(np.ascontiguousarray(y).tobytes()).hexdigest(), str(predictor.model_dir))
        stored = st.session_state.get(key)
        if not stored or stored[0] != ident:
            intro = st.empty()
            with intro.container():
                st.caption("Occlusion: every stretch of time x band of frequencies is hidden in turn and the whole "
                           "model re-run, to see which ones its answer rests on. Also: the same clip re-encoded as "
                           "MP3 and Ogg/Opus, to see how much a codec moves the answer.")
                clicked = st.button("Explain this answer", key=f"{key}_go", icon=":material/search:")
            if not clicked:
                return
            intro.empty()
            bar = st.progress(0.0, text="Occluding patches and re-running the model...")
            try:
                expl = explain.explain_array(predictor, y, name=pred.file,
                                             progress=lambda done, total: bar.progress(done / total))
                with st.spinner("Re-encoding as MP3 and Ogg/Opus..."):
                    codecs = explain.codec_comparison(predictor, y, name=pred.file)
            except SERError as exc:
                st.error(views.md_escape(exc))
                return
            finally:
                bar.empty()
            st.session_state[key] = stored = (ident, expl, codecs)
        _, expl, codecs = stored
        st.plotly_chart(saliency_figure(expl), key=f"{key}_fig", theme=None)
        st.caption(views.md_escape(method_text(expl)))
        st.markdown(views.md_escape(summary_text(expl)))
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in pred.file.rsplit(".", 1)[0])[:60] or "audio"
        d1, d2 = st.columns(2)
        d1.download_button("Map as NumPy .npz", expl.npz_bytes(), file_name=f"{stem}-why.npz",
                           mime="application/octet-stream", icon=":material/download:", key=f"{key}_npz",
                           width="stretch")
        d2.download_button("Map as PNG", saliency_png(expl), file_name=f"{stem}-why.png", mime="image/png",
                           icon=":material/download:", key=f"{key}_png", width="stretch")
        st.markdown("**The same clip through other codecs**")
        st.dataframe(codec_frame(codecs), hide_index=True)
        st.caption(views.md_escape(codec_text(codecs)))
