"""The wall between engine and screen: nothing under ser_core/ imports plotly, streamlit or the app side."""
import re

from conftest import ROOT

FORBIDDEN = re.compile(r"^\s*(?:import|from)\s+(plotly|streamlit|streamlit_webrtc|ser_app)\b", re.M)


def test_the_engine_imports_no_presentation():
    found = {p.name: FORBIDDEN.findall(p.read_text()) for p in (ROOT / "ser_core").glob("*.py")}
    assert {name: mods for name, mods in found.items() if mods} == {}
