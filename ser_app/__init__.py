"""ser_app: what the Streamlit app shows (figures, tables, choices) and the benchmark that drives it.

The engine (``ser_core``) knows no screen; everything that draws or starts a browser lives here.
"""
