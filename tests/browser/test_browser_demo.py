"""The public demo mode (SER_PUBLIC_DEMO=1) in a real Chromium against `streamlit run`: Predict and Evaluate only,
no Train page even by its URL, and nothing written to the runs, models, data or cache folders while a stranger
predicts, evaluates and exports."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from streamlit_server import CHROMIUM, ROOT, SLOW, metric_value, streamlit_server

pytestmark = pytest.mark.browser

DEFAULT = ROOT / "models" / "default"
CLIP = ROOT / "data" / "samples" / "03-01-05-02-01-01-01.flac"
LABELS = json.loads((DEFAULT / "spec.json").read_text())["labels"]

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`streamlit run` in public demo mode over state folders that already hold a run, a model and a corpus."""
    state = tmp_path_factory.mktemp("demo-state")
    shutil.copytree(DEFAULT, state / "models" / "default")
    run = state / "runs" / "20260101-000000-someones-run"         # an operator's run whose process died
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"arch": "seed000_cnn", "dataset": "ravdess"}))
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": 2 ** 22 + 7, "pid_started": 1.0}))
    shutil.copy(DEFAULT / "predictions.csv", run / "predictions.csv")
    (state / "data" / "ravdess").mkdir(parents=True)
    shutil.copy(CLIP, state / "data" / "ravdess" / CLIP.name)
    (state / "cache").mkdir()
    env = {**os.environ, "SER_PUBLIC_DEMO": "1", "SER_RUNS_DIR": str(state / "runs"),
           "SER_MODELS_DIR": str(state / "models"), "SER_DATA_DIR": str(state / "data"),
           "SER_CACHE_DIR": str(state / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    before = {name: tree(state / name) for name in ("runs", "models", "data", "cache")}
    with streamlit_server(env, state / "server.log") as url:
        yield {"url": url, "state": state, "before": before}


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking",
                                                              "--disable-component-update"])
        ctx = b.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        yield ctx.new_page()
        ctx.close()
        b.close()


def test_public_demo_serves_predict_and_evaluate_and_writes_nothing(demo, page):
    page.goto(demo["url"])
    nav = page.get_by_test_id("stSidebarNav")
    expect(nav.get_by_role("link", name="Predict")).to_be_visible(timeout=SLOW)
    expect(nav.get_by_role("link", name="Evaluate")).to_be_visible()
    expect(nav.get_by_role("link", name="Train")).to_have_count(0)
    expect(page.get_by_test_id("stSidebar")).to_contain_text("Public demo: Predict and Evaluate only")

    page.get_by_test_id("stButtonGroup").get_by_text("Upload", exact=True).click(timeout=SLOW)
    page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(CLIP))
    assert metric_value(page, "Emotion") in LABELS

    page.goto(f"{demo['url']}/train")                    # the Train page is not served, even by its address
    expect(page.get_by_role("button", name="Record")).to_be_visible(timeout=SLOW)      # Predict instead
    expect(page.get_by_role("button", name="Start training")).to_have_count(0)
    expect(page.get_by_role("heading", name="Train")).to_have_count(0)

    stored = json.loads((DEFAULT / "metrics.json").read_text())
    page.goto(f"{demo['url']}/evaluate")
    assert metric_value(page, "Accuracy") == f"{100 * stored['accuracy']:.1f}%"
    page.get_by_role("tab", name="Export").click()
    with page.expect_download(timeout=SLOW) as download:
        page.get_by_role("button", name="Metrics (JSON)").click()
    assert json.loads(Path(download.value.path()).read_text())["accuracy"] == pytest.approx(stored["accuracy"])
    page.wait_for_timeout(1500)                           # let any late write land before looking
    for name, files in demo["before"].items():
        assert tree(demo["state"] / name) == files, f"the public demo wrote into {name}/"
