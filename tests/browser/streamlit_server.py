"""What the browser tests share: `streamlit run` on a free localhost port, and reading a metric off a page."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"     # Debian's, driven by Playwright (never `playwright install`)
SLOW = 180_000            # ms; bound for waits that include loading TensorFlow or a training process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(env: dict[str, str], log_path: Path):
    """The app served by `streamlit run` with ``env``, its output in ``log_path``: yields its URL once
    it answers its health check, and stops it afterwards (the server's last output if it dies first)."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.read().strip() == b"ok":
                            break
                except OSError:
                    if proc.poll() is not None:
                        raise RuntimeError(log_path.read_text()[-3000:])
                    time.sleep(0.5)
            else:
                raise RuntimeError("streamlit did not come up")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def metric_value(pg, label: str) -> str:
    """The value shown by the page's metric whose label starts with ``label``."""
    from playwright.sync_api import expect      # here: importing this module needs no browser

    box = pg.get_by_test_id("stMetric").filter(has=pg.get_by_test_id("stMetricLabel").filter(
        has_text=re.compile(f"^{re.escape(label)}")))
    expect(box.first).to_be_visible(timeout=SLOW)
    return box.first.get_by_test_id("stMetricValue").inner_text().strip()
