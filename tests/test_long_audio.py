"""An hour of audio through `ser predict`: it finishes, draws a progress bar, and memory does not grow with length.

Peak RSS of the real CLI process (from wait4's rusage) for a 10-minute and a
60-minute file must be about the same: the file is streamed window by window.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from audio_fixtures import write_long_wav

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 900


def run_predict(model: Path, wav: Path, out_dir: Path) -> tuple[dict, str, int]:
    """`ser predict --json` with stderr on a terminal; returns (result row, terminal text, peak RSS in KiB)."""
    master, slave = os.openpty()
    stdout_path = out_dir / f"{wav.stem}.json"
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ser_core", "predict", "--json", "--model", str(model),
                                 str(wav)], stdout=out, stderr=slave, stdin=subprocess.DEVNULL, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(slave)
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:         # EIO once the child has closed the terminal
                break
            if not data:
                break
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        watchdog.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, terminal[-2000:]
    rows = [json.loads(line) for line in stdout_path.read_text().splitlines()]
    assert len(rows) == 1
    return rows[0], terminal, usage.ru_maxrss


@pytest.fixture(scope="module")
def long_files(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("long")
    return {m: write_long_wav(folder / f"tones_{m}min.wav", m * 60) for m in (10, 60)}


def test_an_hour_streams_with_flat_memory(long_files, tiny_model, predictor, tmp_path):
    results = {}
    for minutes, wav in sorted(long_files.items()):
        row, terminal, peak_kib = run_predict(tiny_model, wav, tmp_path)
        results[minutes] = peak_kib
        assert "Traceback" not in terminal
        assert row["duration"] == pytest.approx(minutes * 60, abs=1)
        assert row["emotion"] in predictor.labels
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        # the progress bar was drawn, and it ends full
        total = minutes * 60
        assert f"{wav.name} [" in terminal and "eta" in terminal
        assert f"[{'#' * 30}] {total}/{total}" in terminal
    ratio = results[60] / results[10]
    assert ratio < 1.3, f"peak RSS grew from {results[10] / 1024:.0f} MiB (10 min) to {results[60] / 1024:.0f} MiB (60 min)"


def test_a_long_file_in_a_batch_is_streamed_as_predict_file_streams_it(long_files, predictor, sample_clip,
                                                                        monkeypatch):
    """predict_many measures a long file once (load answers its length, undecoded) and streams it as
    predict_file does, beside the short files it scores together: the same answers."""
    from ser_core import audio, predict

    wav = long_files[10]
    want = [predictor.predict_file(str(wav), name=str(wav)), predictor.predict_file(str(sample_clip),
                                                                                    name=str(sample_clip))]
    measured = []
    real = audio.duration_seconds
    monkeypatch.setattr(audio, "duration_seconds", lambda *a, **k: measured.append(a) or real(*a, **k))
    got = predictor.predict_many([str(wav), str(sample_clip)])
    assert not measured                                   # the length came with load's answer
    for g, w in zip(got, want):
        assert g.probabilities == pytest.approx(w.probabilities, abs=1e-6) and g.duration == pytest.approx(w.duration)
    assert got[0].duration == pytest.approx(600, abs=1) and predict.STREAM_ABOVE_SECONDS < 600
