"""Which model answers this browser session: the active model, unless the sidebar picked another folder.

A stranger whose voice the shipped default does not know can try the other shipped model (or a promoted
run) without changing anyone else's: the pick lives in the session only and writes nothing, so a public demo
stays read-only and five users can each predict with their own. Picking the active model again, or a
promotion while nothing else is picked, leaves the session following the active model.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from ser_core import runs

from . import views

PICKED = "model_picked"          # session_state: the folder name picked in the sidebar, when not the active one


def session_model_dir() -> Path:
    """The model folder this session predicts with."""
    name = st.session_state.get(PICKED)
    if name:
        for d in runs.model_dirs():
            if d.name == name:
                return d
    return runs.active_model_dir()


def model_picker() -> Path:
    """A sidebar select box of every model folder (none with a single one); returns the session's model."""
    dirs = runs.model_dirs()
    active = runs.active_model_dir()
    current = session_model_dir()
    if len(dirs) < 2:
        st.session_state.pop(PICKED, None)
        return current
    names = [d.name for d in dirs]
    summaries = {d.name: views.model_summary(d) for d in dirs}

    def label(name: str) -> str:
        info = summaries[name]
        return info["name"] + (" (active)" if name == active.name else "")

    # no key: the widget's identity follows its default, so after a promotion a session that picked
    # nothing shows, and predicts with, the new active model
    picked = st.selectbox("Model", names, index=names.index(current.name) if current.name in names else 0,
                          format_func=label, label_visibility="collapsed",
                          help="Which model answers your predictions in this browser tab. Your pick is yours "
                               "alone: it changes nothing for other users or for `ser predict`.")
    if picked == active.name:
        st.session_state.pop(PICKED, None)
    else:
        st.session_state[PICKED] = picked
    return session_model_dir()
