"""Streamlit entry point (the full multipage app is built on ser_core; see pages/)."""
import streamlit as st

st.set_page_config(page_title="SER workbench", page_icon="🎙️", layout="wide")
st.title("Speech emotion recognition workbench")
st.write("Predict, train and evaluate speech-emotion models. Pages are being built.")
