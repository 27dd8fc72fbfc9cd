"""Faults in real training subprocesses: SIGKILL at several moments, bad configs, unreadable training files.

A killed run reads as "interrupted", keeps a loadable checkpoint if it wrote
one, and leaves other runs and the active model byte-identical; failures are
one clear message in status.json and `ser runs`; writes leave no temp files;
a fresh process rediscovers every run and its state.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from ser_core import runs
from ser_core.datasets import parse_ravdess

ROOT = Path(__file__).resolve().parents[1]
POLL = 0.02


class Lab:
    """A runs root with a finished neighbour run and an active model that no fault may touch."""

    def __init__(self, base: Path, tiny_run: Path):
        self.root = base / "runs"
        self.models = base / "models"
        self.base = base
        self.root.mkdir()
        self.neighbour = self.root / "20000101-000000-neighbour"
        shutil.copytree(tiny_run, self.neighbour)
        self.expected: dict[str, str] = {self.neighbour.name: "finished"}

    def env(self, cache: str = "cache") -> dict:
        return {"SER_CACHE_DIR": str(self.base / cache), "SER_MODELS_DIR": str(self.models),
                "SER_RUNS_DIR": str(self.root), "PYTHONPATH": str(ROOT)}

    def start(self, config: dict, cache: str = "cache") -> Path:
        return runs.start(config, root=self.root, env=self.env(cache))

    def snapshot(self) -> dict[str, str]:
        out = {}
        for top in (self.neighbour, self.models):
            for p in sorted(top.rglob("*")):
                if p.is_file():
                    out[str(p.relative_to(self.base))] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_run):
    base = tmp_path_factory.mktemp("faults")
    lab = Lab(base, tiny_run)
    old = os.environ.get("SER_MODELS_DIR")
    os.environ["SER_MODELS_DIR"] = str(lab.models)
    runs.promote(lab.neighbour)
    assert runs.active_model_dir() == lab.models / lab.neighbour.name
    lab.before = lab.snapshot()
    yield lab
    if old is None:
        os.environ.pop("SER_MODELS_DIR", None)
    else:
        os.environ["SER_MODELS_DIR"] = old


def sample_config(samples_dir: Path, **over) -> dict:
    cfg = {"dataset": f"ravdess:{samples_dir}", "arch": "seed000_cnn", "test_speakers": ["ravdess-01"],
           "n_val_speakers": 1, "epochs": 300, "patience": 300, "batch_size": 8, "workers": 1}
    cfg.update(over)
    return cfg


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(POLL)
    raise AssertionError(f"timed out waiting for {what}")


def pid_of(run_dir: Path) -> int:
    return int(runs.read_json(run_dir / "status.json")["pid"])


def sigkill(run_dir: Path) -> list[int]:
    """SIGKILL the training process (not its workers); returns the pids of its children at that moment."""
    proc = psutil.Process(pid_of(run_dir))
    children = [c.pid for c in proc.children(recursive=True)]
    os.kill(proc.pid, signal.SIGKILL)
    psutil.wait_procs([proc], timeout=30)
    runs.reap()
    return children


def log_text(run_dir: Path) -> str:
    return (run_dir / "log.txt").read_text(errors="replace") if (run_dir / "log.txt").exists() else ""


def assert_interrupted(lab: Lab, run_dir: Path) -> dict:
    status = runs.read_status(run_dir)
    assert status["state"] == "interrupted", status
    assert "killed or crashed" in status["message"]
    assert runs.active_run(lab.root) is None, "a dead run must not block the next one"
    lab.expected[run_dir.name] = "interrupted"
    return status


def test_kill_right_after_launch(lab, samples_dir):
    run = lab.start(sample_config(samples_dir))
    sigkill(run)
    assert_interrupted(lab, run)
    assert not (run / "model").exists()


def test_kill_during_feature_extraction(lab, samples_dir, tmp_path):
    # a corpus big enough that extraction takes a while: every sample clip listed eight times, two workers
    clips = sorted(samples_dir.glob("*.flac"))
    rows = ["path,label,speaker,gender"]
    for rep in range(8):
        for c in clips:
            copy = tmp_path / f"r{rep}-{c.name}"
            shutil.copy(c, copy)
            info = parse_ravdess(c.name)
            rows.append(f"{copy},{info['emotion']},s{info['actor']},{info['gender']}")
    csv = tmp_path / "big.csv"
    csv.write_text("\n".join(rows) + "\n")
    run = lab.start(sample_config(samples_dir, dataset=str(csv), test_speakers=["s1"], workers=2),
                    cache="cache-extract")
    wait_for(lambda: "extracting" in log_text(run), 120, "feature extraction to start")
    time.sleep(0.3)
    children = sigkill(run)
    assert "features ready" not in log_text(run), "the kill should land during extraction"
    assert_interrupted(lab, run)
    assert not (run / "checkpoint" / "best.keras").exists()
    # worker processes of the killed run do not linger
    wait_for(lambda: not [p for p in children if psutil.pid_exists(p) and
                          psutil.Process(p).status() != psutil.STATUS_ZOMBIE], 30, "extraction workers to exit")


def test_kill_after_first_checkpoint(lab, samples_dir):
    from ser_core.tf_setup import keras

    run = lab.start(sample_config(samples_dir))
    ckpt = run / "checkpoint" / "best.keras"
    wait_for(lambda: ckpt.exists() and (runs.read_json(run / "status.json", {}) or {}).get("epoch", 0) >= 1,
             240, "the first epoch checkpoint")
    sigkill(run)
    status = assert_interrupted(lab, run)
    assert status["epoch"] >= 1 and status["epoch"] < 300
    history = runs.read_history(run)
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    model = keras().models.load_model(ckpt, safe_mode=True)
    assert model.output_shape[-1] == 8
    assert not (run / "model").exists()


@pytest.mark.parametrize("over, message", [
    ({"arch": "no_such_arch"}, "unknown architecture 'no_such_arch'"),
    ({"dataset": "EMPTY"}, "no audio found"),
    ({"learning_rates": 0.1}, "unknown training setting(s): learning_rates"),
])
def test_bad_config_fails_with_a_clear_message(lab, samples_dir, tmp_path, over, message):
    if over.get("dataset") == "EMPTY":
        (tmp_path / "empty-corpus").mkdir()
        over = {"dataset": str(tmp_path / "empty-corpus")}
    run = lab.start(sample_config(samples_dir, **over))
    status = runs.wait(run, timeout=180, poll=0.1)
    assert status["state"] == "failed"
    assert message in status["message"] and "\n" not in status["message"]
    assert "Traceback" not in log_text(run)
    lab.expected[run.name] = "failed"
    out = subprocess.run([sys.executable, "-m", "ser_core", "runs"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, **lab.env()})
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith(run.name))
    assert " failed " in line and message in line


def test_unreadable_training_files_are_skipped_and_listed(lab, samples_dir, tmp_path):
    """A CSV corpus mixing the sample clips with corrupt files trains to the end; the bad files are listed."""
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "empty.wav").write_bytes(b"")
    (bad_dir / "noise-bytes.wav").write_bytes(os.urandom(20000))
    (bad_dir / "words.wav").write_text("this is a text file\n" * 50)
    sf.write(bad_dir / "silent.wav", np.zeros(48000, np.float32), 16000)
    corrupt = {"empty.wav": "s2", "noise-bytes.wav": "s3", "words.wav": "s4", "silent.wav": "s2",
               "missing.wav": "s3"}
    rows = ["path,label,speaker,gender"]
    for c in sorted(samples_dir.glob("*.flac")):
        info = parse_ravdess(c.name)
        rows.append(f"{c},{info['emotion']},s{info['actor']},{info['gender']}")
    for name, spk in corrupt.items():
        rows.append(f"bad/{name},angry,{spk},female")
    csv = tmp_path / "mixed.csv"
    csv.write_text("\n".join(rows) + "\n")
    run = lab.start(sample_config(samples_dir, dataset=str(csv), test_speakers=["s1"], epochs=3))
    status = runs.wait(run, timeout=400, poll=0.2)
    assert status["state"] == "finished", status
    lab.expected[run.name] = "finished"
    assert status["skipped_files"] == len(corrupt)
    assert sorted(m.split(":")[0] for m in status["skipped"]) == sorted(corrupt)
    log = log_text(run)
    assert f"skipped {len(corrupt)} unreadable file(s)" in log
    for name in corrupt:
        assert f"  - {name}:" in log
    # atomic writes leave nothing behind
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith((".tmp", ".part")) or ".tmp." in p.name]
    assert leftovers == []
    assert (run / "model" / "model.keras").exists() and (run / "model" / "spec.json").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert [h["epoch"] for h in runs.read_history(run)] == [1, 2, 3]


def test_a_new_process_rediscovers_every_run(lab):
    code = ("import json; from ser_core import runs; "
            "print(json.dumps({r['id']: r['status']['state'] for r in runs.list_runs()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, **lab.env()})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == lab.expected


def test_other_runs_and_the_active_model_are_untouched(lab):
    assert lab.snapshot() == lab.before
    assert runs.active_model_dir() == lab.models / lab.neighbour.name
