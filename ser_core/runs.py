"""Training runs on disk: create, start as a subprocess, watch, stop, promote.

A run is a directory ``runs/<id>/`` with ``config.json``, ``status.json``,
``history.jsonl``, ``log.txt`` and, once trained, ``model/`` (spec + weights),
``metrics.json`` and ``predictions.csv`` (the names are :mod:`ser_core.schema`'s).
Every file is replaced atomically, so a reader never sees half a file and a killed
run never damages another.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from . import schema
from .config import atomic_write_text, models_dir, public_demo, runs_dir
from .errors import ModelError, RunError
from .jsonio import read_json, write_json

ACTIVE_STATES = ("queued", "running")
STATES = ("queued", "running", "finished", "failed", "stopped", "interrupted")
STOP_FILE = schema.STOP


def refuse_in_public_demo(what: str) -> None:
    """Raise when the app serves the public (``SER_PUBLIC_DEMO``): nothing may be trained, promoted or written."""
    if public_demo():
        raise RunError(f"this is a public demo (SER_PUBLIC_DEMO): {what} is switched off")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_dir(name: str, root: Path | None = None) -> Path:
    root = Path(root) if root is not None else runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run = root / (f"{stamp}-{name}" + (f"-{n}" if n else ""))
        try:
            run.mkdir()
            return run
        except FileExistsError:
            continue
    raise RunError(f"could not create a run directory under {root}")


def write_status(run_dir: Path, state: str, **fields) -> dict:
    """Merge ``fields`` into status.json and set its state (atomic)."""
    if state not in STATES:
        raise RunError(f"unknown run state {state!r}")
    status = read_json(Path(run_dir) / schema.STATUS, {}) or {}
    status.update(fields)
    status["state"] = state
    status["updated"] = now_iso()
    write_json(Path(run_dir) / schema.STATUS, status)
    return status


def _process_alive(pid: int | None, started: float | None) -> bool:
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - float(started)) < 2.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def read_status(run_dir: Path) -> dict:
    """status.json, with a run whose process died mid-way reported as ``interrupted``."""
    run_dir = Path(run_dir)
    status = read_json(run_dir / schema.STATUS)
    if status is None:
        return {"state": "failed", "message": "status.json is missing or unreadable"}
    if status.get("state") in ACTIVE_STATES and not _process_alive(status.get("pid"), status.get("pid_started")):
        # a queued run without a pid yet is being launched; one whose recorded process is gone died early
        grace = (status.get("state") == "queued" and not status.get("pid")
                 and time.time() - status.get("queued_at", 0) < 30)
        if not grace:
            from . import resume

            point = resume.read(run_dir)
            message = ("the training process ended without finishing (killed or crashed); "
                       + (f"Resume (Train page) or `ser resume {run_dir.name}` goes on after epoch {point.epoch}"
                          if point is not None else "the last good checkpoint is kept"))
            if public_demo():          # report it, but a public demo writes into no run folder
                status = {**status, "state": "interrupted", "message": message}
            else:
                status = write_status(run_dir, "interrupted", message=message)
    return status


class Logger:
    """Timestamped lines to the run's log (and the terminal)."""

    def __init__(self, run_dir: Path | None, *, to_file: bool, echo: bool = True):
        self.path = Path(run_dir) / schema.LOG if (run_dir and to_file) else None
        self.echo = echo

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if self.echo:
            print(line, file=sys.stdout, flush=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")


def read_history(run_dir: Path) -> list[dict]:
    """Epoch rows of history.jsonl (a torn last line, if any, is skipped)."""
    rows = []
    try:
        with open(Path(run_dir) / schema.HISTORY, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows


def write_history(run_dir: Path, rows: list[dict]) -> None:
    """Replace history.jsonl with ``rows``, atomically so it is never torn."""
    atomic_write_text(Path(run_dir) / schema.HISTORY, "".join(json.dumps(r) + "\n" for r in rows))


def append_history(run_dir: Path, row: dict) -> None:
    """Add one epoch row (the file is rewritten atomically)."""
    write_history(run_dir, read_history(run_dir) + [row])


def list_runs(root: Path | None = None) -> list[dict]:
    """Every run under ``root`` with its config and (liveness-checked) status, newest first."""
    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    out = []
    for d in sorted((p for p in root.iterdir() if p.is_dir() and (p / schema.CONFIG).exists()), reverse=True):
        cfg = read_json(d / schema.CONFIG, {}) or {}
        out.append({"id": d.name, "dir": str(d), "config": cfg, "status": read_status(d),
                    "metrics": read_json(d / schema.METRICS)})
    return out


def active_run(root: Path | None = None) -> dict | None:
    for run in list_runs(root):
        if run["status"].get("state") in ACTIVE_STATES:
            return run
    return None


def start(config: dict, *, root: Path | None = None, name: str | None = None, env: dict | None = None) -> Path:
    """Launch ``python -m ser_core.training RUN_DIR`` in the background; one run at a time."""
    refuse_in_public_demo("training")
    _refuse_if_busy(root)
    run_dir = new_run_dir(name or config.get("arch", "run"), root)
    write_json(run_dir / schema.CONFIG, config)
    _launch(run_dir, env)
    return run_dir


def _refuse_if_busy(root: Path | None) -> None:
    """One run trains at a time on this machine: a RunError naming the one that does."""
    busy = active_run(root)
    if busy is not None:
        raise RunError(f"run {busy['id']} is still {busy['status']['state']}; only one run trains at a time "
                       "on this machine. Stop it or wait for it to finish.")


def resumable(run_dir: Path) -> bool:
    """Whether a stopped or interrupted run can go on where it stood: a single run with a resume point
    (:mod:`ser_core.resume`), or a cross-validation (its finished folds are kept, the others resumed)."""
    from . import resume

    run_dir = Path(run_dir)
    if read_status(run_dir).get("state") not in ("stopped", "interrupted"):
        return False
    config = read_json(run_dir / schema.CONFIG, {}) or {}
    return schema.CV_FOLDS in config or resume.read(run_dir) is not None


def resume_run(run_dir: Path, *, root: Path | None = None, env: dict | None = None) -> Path:
    """Launch ``python -m ser_core.training RUN_DIR --resume``: a stopped or interrupted run goes on from its
    last finished epoch, in its own folder, with its own settings."""
    refuse_in_public_demo("training")
    run_dir = Path(run_dir)
    _refuse_if_busy(root)
    ready_to_resume(run_dir)
    _launch(run_dir, env, "--resume")
    return run_dir


def ready_to_resume(run_dir: Path) -> None:
    """Check that ``run_dir`` can be resumed (else a RunError saying why) and clear the stop request it obeyed."""
    if not resumable(run_dir):
        state = read_status(run_dir).get("state", "unknown")
        raise RunError(f"run {Path(run_dir).name} cannot be resumed (it is {state}): only a stopped or interrupted "
                       "run that finished at least one epoch can")
    (Path(run_dir) / STOP_FILE).unlink(missing_ok=True)


def _launch(run_dir: Path, env: dict | None, *extra: str) -> None:
    """Start the training process of ``run_dir`` in the background, its output appended to its log."""
    write_status(run_dir, "queued", queued_at=time.time())
    log = open(run_dir / schema.LOG, "ab")
    # no cwd of its own: the run reads its config's relative paths (a dataset folder, a teacher) from the
    # folder its caller works in, as an in-process run does (ser_core.crossval starts its folds alike)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ser_core.training", str(Path(run_dir).resolve()), *extra],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )
    log.close()
    import psutil

    write_status(run_dir, "queued", pid=proc.pid, pid_started=psutil.Process(proc.pid).create_time(),
                 queued_at=time.time())
    _CHILDREN.append(proc)


_CHILDREN: list[subprocess.Popen] = []


def reap() -> None:
    """Collect finished child processes so they do not linger as zombies."""
    for proc in list(_CHILDREN):
        if proc.poll() is not None:
            _CHILDREN.remove(proc)


def stop(run_dir: Path) -> None:
    """Ask a run to stop: it finishes its current batch, keeps its best checkpoint and exits."""
    refuse_in_public_demo("stopping runs")
    run_dir = Path(run_dir)
    (run_dir / STOP_FILE).write_text(now_iso())
    status = read_json(run_dir / schema.STATUS, {}) or {}
    if _process_alive(status.get("pid"), status.get("pid_started")):
        try:
            os.kill(int(status["pid"]), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def wait(run_dir: Path, timeout: float = 600.0, poll: float = 0.5) -> dict:
    """Block until a run leaves the queued/running states (for scripts and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap()
        status = read_status(run_dir)
        if status.get("state") not in ACTIVE_STATES:
            return status
        time.sleep(poll)
    raise RunError(f"run {Path(run_dir).name} did not finish within {timeout:.0f} s")


# ----------------------------------------------------------------------------- models
def default_model_dir() -> Path:
    return models_dir() / "default"


def active_model_dir() -> Path:
    """The model the app and ``ser predict`` use: the promoted one, else the shipped default."""
    from .modeldir import is_model_dir

    pointer = read_json(models_dir() / schema.ACTIVE)
    if pointer and pointer.get("model"):
        cand = models_dir() / str(pointer["model"])
        if is_model_dir(cand):
            return cand
    return default_model_dir()


def model_dirs() -> list[Path]:
    """Every complete model folder under the models folder: the shipped default first, then the others
    by name (another shipped model, promoted runs); half-copied folders and non-models are left out."""
    from .modeldir import is_model_dir

    root = models_dir()
    found = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and is_model_dir(d)) \
        if root.is_dir() else []
    default = default_model_dir()
    return [d for d in found if d == default] + [d for d in found if d != default]


def promote(run_dir: Path) -> Path:
    """Copy a finished run's model into ``models/<run id>/`` and make it the active model.

    The copy is made under a temporary name and renamed into place, so the
    active model is always complete; the shipped default is never touched.
    """
    refuse_in_public_demo("promoting a model")
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    src = run_dir / schema.MODEL
    if status.get("state") not in ("finished", "stopped") or not (src / schema.WEIGHTS).exists():
        raise ModelError(f"run {run_dir.name} has no finished model to promote (state: {status.get('state')})")
    dest = models_dir() / run_dir.name
    tmp = models_dir() / f".{run_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    for extra in (schema.METRICS, schema.PREDICTIONS, schema.CONFIG):
        if (run_dir / extra).exists():
            shutil.copy2(run_dir / extra, tmp / extra)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    write_json(models_dir() / schema.ACTIVE, {"model": dest.name, "promoted": now_iso()})
    return dest


def reset_active() -> None:
    """Go back to the shipped default model."""
    refuse_in_public_demo("changing the active model")
    try:
        (models_dir() / schema.ACTIVE).unlink()
    except FileNotFoundError:
        pass
