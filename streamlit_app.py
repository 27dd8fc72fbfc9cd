"""Streamlit entry point: navigation over the Predict, Train and Evaluate pages and the shared sidebar.

Run with ``streamlit run streamlit_app.py`` (or ``bash scripts/app.sh``).
"""
import sys

import streamlit as st

from ser_core.config import public_demo

from ser_app import views
from ser_app.session_model import model_picker

if "tensorflow" not in sys.modules:
    # aiortc's SRTP library (used by the Predict page's live mode) crashes the process when it is loaded
    # after TensorFlow, so the WebRTC stack is imported here, before any page can load a model.
    import streamlit_webrtc  # noqa: F401

st.set_page_config(page_title="SER workbench", page_icon=":material/graphic_eq:", layout="wide")

PAGES = [
    st.Page("app_pages/predict.py", title="Predict", icon=":material/mic:", default=True),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("app_pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
]
if public_demo():
    # Strangers reach a public demo: no Train page (no training, uploads into the data root or promotion),
    # and the engine refuses those calls too (ser_core.runs, ser_core.userdata).
    PAGES = [p for p in PAGES if p.title != "Train"]


def model_card() -> None:
    """The model this session predicts with (a picker when there are several): name, date and accuracy."""
    with st.sidebar:
        st.subheader("Model")
        info = views.model_summary(model_picker())
        st.markdown(f"**{views.md_escape(info['name'])}**  \n{views.md_escape(info['title'])}")
        if info["created"]:
            st.caption(f"Trained {info['created']}")
        if info["heard"]:
            st.caption("Learnt from: " + ", ".join(views.md_escape(c) for c in info["heard"]))
        if len(info["per_corpus"]) > 1:
            scores = ", ".join(f"{views.md_escape(c)} {views.format_pct(a)}" for c, a in info["per_corpus"].items())
            st.caption(f"Accuracy · {views.short_protocol(info['protocol_info'])}, each corpus on its own "
                       f"emotions: {scores}")
        elif info["accuracy"] is not None:
            st.metric(f"Accuracy · {views.short_protocol(info['protocol_info'])}", views.format_pct(info["accuracy"]),
                      help=f"{info['protocol']}, {info['n']} clips (from the model's metrics.json)")
        else:
            st.caption("No evaluation stored with this model.")
        if info["accuracy"] is not None and not info["speaker_independent"]:
            st.warning("Measured speaker-dependently: expect lower accuracy on new voices.")
        if public_demo():
            st.caption("Public demo: Predict and Evaluate only. Nothing you upload is stored.")


page = st.navigation(PAGES)
model_card()
page.run()
