"""The Evaluate page's multi-corpus views in a real Chromium against `streamlit run`: a leave-one-corpus-out
evaluation opens on its per-corpus table, and its reliability diagram and coverage curve are drawn."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # tests/: the hand-made predictions table

from test_browser_app import (ROOT, browser, charts_drawn, expect, fake_mic, metric_value, page,  # noqa: F401
                              screenshot, server)
from test_eval_views import LABELS, LOCO_PROTOCOL, table

pytestmark = pytest.mark.browser
RUN = "20260101-000000-cv-loco"


def write_loco_run(runs_root: Path) -> None:
    run_dir = runs_root / RUN
    run_dir.mkdir(parents=True, exist_ok=True)
    table().to_csv(run_dir / "predictions.csv", index=False)
    (run_dir / "config.json").write_text(json.dumps({"arch": "seed004_dnn", "protocol": "loco"}))
    (run_dir / "status.json").write_text(json.dumps({"state": "finished"}))
    (run_dir / "metrics.json").write_text(json.dumps({"protocol": LOCO_PROTOCOL, "speaker_independent": True,
                                                      "labels": LABELS}))


def wait_metric(pg, label: str, value: str) -> None:
    """Wait until the main area's metric labelled ``label`` shows ``value`` (the page reruns after each click;
    the sidebar has an accuracy of its own)."""
    box = pg.get_by_test_id("stMain").get_by_test_id("stMetric").filter(has=pg.get_by_test_id("stMetricLabel").filter(
        has_text=re.compile(f"^{re.escape(label)}")))
    expect(box.first.get_by_test_id("stMetricValue")).to_have_text(value, timeout=60_000)


def grid_text(pg, header: str, *cells: str) -> str:
    """The text of the data grid with a column ``header``, once it holds every one of ``cells``. Streamlit draws
    grids on a canvas and mirrors the cells it draws (the columns in view) in a table that is not exposed as
    visible, so its text is read; the mirror fills column by column, and on a busy machine the header can be
    there a while before the numbers (seen with the test suite on two workers)."""
    grid = pg.locator("[data-testid=stDataFrame]").filter(has=pg.locator("th", has_text=re.compile(
        f"^{re.escape(header)}$")))
    expect(grid).to_have_count(1, timeout=60_000)
    for cell in cells:
        expect(grid).to_contain_text(cell, timeout=60_000)
    return grid.text_content()


def test_loco_evaluation_shows_the_per_corpus_table_and_the_reliability_diagram(server, page):
    write_loco_run(Path(server["state"]) / "runs")
    page.goto(f"{server['url']}/evaluate")
    metric_value(page, "Accuracy")                                  # the page is up (on the shipped model)
    page.get_by_test_id("stSelectbox").filter(has_text="Evaluation").locator("input").click()
    page.get_by_role("option", name=re.compile(re.escape(RUN))).click()
    wait_metric(page, "Accuracy", "40.0%")

    page.get_by_role("tab", name="Corpora").click()
    cells = ("ravdess", "urdu", "75.0%", "33.3%", "0.0%")
    text = grid_text(page, "corpus", *cells)
    for cell in cells:
        assert cell in text, (cell, text)
    loco = grid_text(page, "held-out corpus", "calm 75%, sad 25%", "100.0%")
    assert "calm 75%, sad 25%" in loco and "100.0%" in loco
    charts_drawn(page, 2)                                            # answers + the corpus confusion matrix
    screenshot(page, "evaluate-corpora", height=1700)

    page.get_by_role("tab", name="Calibration").click()
    page.get_by_test_id("stRadio").get_by_text("Uncalibrated", exact=True).click()
    wait_metric(page, "ECE (pooled)", "0.310")
    page.wait_for_function("""() => {
        const plot = Array.from(document.querySelectorAll('.js-plotly-plot'))
            .find(p => p._fullLayout && p.offsetParent !== null
                  && (p._fullLayout.title.text || '').startsWith('Reliability diagram'));
        return plot && plot._fullData.some(t => t.name === 'pooled (ECE 0.310)' && t._length === 5)
            && plot.querySelectorAll('.scatterlayer .trace .points path').length >= 5; }""", timeout=60_000)
    screenshot(page, "evaluate-calibration", height=1300)


def test_the_ravdess_ensembles_answers_to_strangers_open_on_their_own_corpora(server, page):
    """From the RAVDESS ensemble's cross-validation (models/ravdess: one corpus, RAVDESS) to its answers on the
    corpora it never heard: the corpus picker shows what its chart draws (it once kept showing 'ravdess' over
    ASED's chart)."""
    page.goto(f"{server['url']}/evaluate")
    metric_value(page, "Accuracy")                                  # the page is up (on the shipped model)
    page.get_by_test_id("stSelectbox").filter(has_text="Evaluation").locator("input").click()
    page.get_by_role("option", name=re.compile(r"^Model ravdess \(")).click()
    stored = json.loads((ROOT / "models" / "ravdess" / "metrics.json").read_text())
    wait_metric(page, "Accuracy", f"{100 * stored['accuracy']:.1f}%")
    page.get_by_role("tab", name="Corpora").click()
    picker = page.get_by_test_id("stSelectbox").filter(has_text="Corpus").locator("input")
    expect(picker).to_have_value("ravdess", timeout=60_000)
    page.get_by_test_id("stSelectbox").filter(has_text="Evaluation").locator("input").click()
    page.get_by_role("option", name=re.compile("never heard")).click()
    page.get_by_role("tab", name="Corpora").click()
    grid_text(page, "own-emotion accuracy", "ased", "emovo", "urdu")
    expect(picker).to_have_value("ased", timeout=60_000)
    page.wait_for_function("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(p =>
        p._fullLayout && p.offsetParent !== null && (p._fullLayout.title.text || '').startsWith('ased: confusion'))""",
                           timeout=60_000)
    screenshot(page, "evaluate-strangers", height=1500)


def test_the_defaults_recipe_on_a_corpus_left_out_opens_with_its_calibration_as_shipped(server, page):
    """The default's recipe left out of each corpus and calibrated as shipped (models/default/loco_calibration.json):
    the leave-one-corpus-out table, and each corpus's ECE as the card says it, its reliability diagram drawn."""
    stored = json.loads((ROOT / "models" / "default" / "loco_calibration.json").read_text())
    page.goto(f"{server['url']}/evaluate")
    metric_value(page, "Accuracy")
    page.get_by_test_id("stSelectbox").filter(has_text="Evaluation").locator("input").click()
    page.get_by_role("option", name=re.compile("calibrated as shipped")).click()
    page.get_by_role("tab", name="Corpora").click()
    grid_text(page, "held-out corpus", "ravdess", "ased", "emovo", "urdu")
    page.get_by_role("tab", name="Calibration").click()
    grid_text(page, "ECE", *(f"{c['ece']:.3f}" for c in stored["corpora"].values()))
    page.wait_for_function("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(p =>
        p._fullLayout && p.offsetParent !== null && (p._fullLayout.title.text || '').startsWith('Reliability diagram'))""",
                           timeout=60_000)
    screenshot(page, "evaluate-loco-calibrated", height=1300)
