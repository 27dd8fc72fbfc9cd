"""Batch scoring: many audio files -> a Parquet table, on a local process pool or a Ray cluster.

``ser batch INPUT... --out OUT`` scores files, folders, glob patterns and CSV lists of
paths with the same predictor ``ser predict`` uses (:func:`ser_core.predict.load_predictor`,
``predict_file``), one row per file. Two engines run the predictor:

- ``local``: a process pool sized to the cores, the model loaded once per worker process;
- ``ray``: Ray Data, a dataset of paths mapped in batches by a callable class that loads the
  model once per actor (an actor pool of ``workers`` actors), on a local ``ray.init`` or an
  existing cluster (``--address``; the audio and the model must be on storage every node sees).

Resumable and exactly once. ``OUT`` is a folder::

    job.json                          the model and settings the results belong to
    parts/part-00001.parquet          one row per file, committed atomically (temp file + os.replace)
    parts/part-00001.windows.parquet  its per-window rows (``--windows``), committed just before it
    predictions.parquet               every input's row in input order, assembled from the parts
    windows.parquet                   (``--windows``) every window's row
    predictions.csv, windows.csv      (``--csv``)

Only this driver process writes, and a file's row is kept only when its whole result has
reached the driver, so a worker that dies mid-task loses nothing but its task (the engine
runs it again: a rebuilt pool, or Ray's actor restart and task retry) and a row is never
written twice: the driver drops a file it already holds. A part is the commit unit: a
rerun of the same command after the whole job was killed reads the files its parts cover
and scores only the rest. A file the engine cannot score (corrupt, silent, no speech, a
decoder that crashed its worker twice) is a row with an ``error``; the job goes on.
"""
from __future__ import annotations

import glob
import hashlib
import importlib.abc
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .config import ModelSpec, atomic_write_text
from .errors import ModelError, SERError
from .lite import RUNTIMES, precision
from .machine import usable_cpus
from .modeldir import check_runtime
from .procpool import core_shares
from .progress import Progress

ENGINES = ("local", "ray")
JOB = "job.json"
PARTS = "parts"
LOCK = ".lock"
RESULTS = "predictions.parquet"
WINDOW_RESULTS = "windows.parquet"
PART_NAME = re.compile(r"^part-(\d{5,})\.parquet$")
WINDOW_SUFFIX = ".windows.parquet"
FILE_COLUMNS = ("file", "emotion", "confidence", "duration", "error")        # then p_<emotion>, then extras
WINDOW_COLUMNS = ("file", "window", "start", "end", "emotion", "confidence", "speech")
# files per task: long enough to hide the hand-over, short enough to lose little; a Ray task costs more
# to hand over (4000 clips, single network, 2 workers: 16 files per task 280 clips/s, 64 files 388; the pool 437/482)
CHUNKS = {"local": 16, "ray": 64}
PART_FILES = 512           # a part is committed after this many files...
PART_SECONDS = 30.0        # ...or this many seconds, whichever comes first (what a kill can cost)
STRIKES = 2                # a task whose worker died this often is retried file by file, alone
RAY_OBJECT_STORE_MB = 256  # paths and result rows are small; the default (30 % of RAM) is not needed
STEADY_HANDOVERS = 4       # hand-overs of results after the first quarter a steady rate needs: Ray Data can
                           # hold finished batches back and hand them over together at the end
JOB_VERSION = 1


# ============================================================================ inputs
def _audio_in(folder: Path) -> list[Path]:
    from .audio import AUDIO_EXTENSIONS

    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)


def _csv_paths(path: Path) -> list[str]:
    """The paths of a CSV list: its ``path`` (or ``file``) column, else its first column (a list
    without a header row is one whose first line already names an audio file); relative paths are
    relative to the CSV's folder."""
    import pandas as pd

    from .audio import AUDIO_EXTENSIONS

    def read(header):
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, header=header)
        except Exception as exc:  # pandas raises many types for a malformed CSV
            raise SERError(f"{path}: not a readable CSV list of paths ({type(exc).__name__})") from exc

    df = read(0)
    if len(df.columns) and str(df.columns[0]).strip().lower().endswith(AUDIO_EXTENSIONS):
        df = read(None)
    if df.empty or not len(df.columns):
        raise SERError(f"{path}: the CSV list holds no paths")
    col = next((c for c in df.columns if str(c).strip().lower() in ("path", "file")), df.columns[0])
    out = []
    for p in df[col]:
        p = p.strip()
        if p:
            out.append(p if os.path.isabs(p) else str(path.parent / p))
    return out


def collect_inputs(items: Iterable[str]) -> list[str]:
    """Absolute paths of every file named by ``items`` (files, folders, glob patterns, ``.csv`` lists),
    each once, in the order given (folders and pattern matches sorted).

    A path that does not exist is kept: its row says "file not found", as ``ser predict`` does.
    """
    out: dict[str, None] = {}

    def add(p) -> None:
        out.setdefault(os.path.abspath(os.fspath(p)), None)

    for item in items:
        p = Path(item)
        if p.is_dir():
            for f in _audio_in(p):
                add(f)
        elif p.is_file() and p.suffix.lower() == ".csv":
            for f in _csv_paths(p):
                add(f)
        elif not p.exists() and glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                print(f"warning: no file matches {item}", file=sys.stderr)
            for m in matches:
                if os.path.isdir(m):
                    for f in _audio_in(Path(m)):
                        add(f)
                else:
                    add(m)
        else:
            add(p)
    return list(out)


# ============================================================================ the model
def model_stamp(model_dir: Path | str) -> str:
    """A hash of a model folder's specs and weights: results of another model must not be mixed in.

    Reports beside the model (metrics, predictions) and exports derived from the weights
    (a lean-runtime copy) are left out, so writing them does not orphan finished results.
    """
    d = Path(model_dir)
    files = sorted(f for f in d.rglob("*") if f.is_file() and (f.name == "spec.json" or f.suffix == ".keras"))
    if not files:
        files = sorted(f for f in d.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(d)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def model_labels(model_dir: Path | str) -> list[str]:
    """The emotions a model folder predicts, from its spec.json alone (no model is loaded here)."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelError(f"model folder not found: {d}")
    return list(ModelSpec.load(d / "spec.json").labels)


# ============================================================================ rows
def error_row(path: str, message: str) -> dict:
    return {"file": path, "emotion": None, "confidence": None, "duration": None, "error": message}


def prediction_rows(d: dict, *, windows: bool = False) -> tuple[dict, list[dict]]:
    """One file's row and its window rows from ``Prediction.to_dict()`` (what ``ser predict --json`` prints).

    Probabilities become ``p_<emotion>`` columns; a prediction without an emotion (no speech)
    is an error row carrying its message; keys this module does not know (added to the
    prediction later, e.g. a "not sure" answer's runners-up) are kept as extra columns.
    """
    row = {"file": d["file"], "emotion": d.get("emotion"), "confidence": d.get("confidence"),
           "duration": d.get("duration"), "error": None}
    row.update({f"p_{k}": v for k, v in d.get("probabilities", {}).items()})
    for k, v in d.items():
        if k in ("file", "emotion", "confidence", "duration", "probabilities", "windows"):
            continue
        if k == "message" and row["emotion"] is None:
            row["error"] = v or "no emotion"
        else:
            row[k] = v if v is None or isinstance(v, (str, int, float, bool)) else json.dumps(v)
    if row["emotion"] is None and not row["error"]:
        row["error"] = "no emotion"
    wrows = []
    for i, w in enumerate(d.get("windows", []) if windows else []):
        wr = {"file": d["file"], "window": i, "start": w["start"], "end": w["end"], "emotion": w["emotion"],
              "confidence": w["confidence"], "speech": w.get("speech", True)}
        wr.update({f"p_{k}": v for k, v in w.get("probabilities", {}).items()})
        wrows.append(wr)
    return row, wrows


def _failure_row(path: str, exc: BaseException) -> dict:
    if isinstance(exc, SERError):
        return error_row(path, str(exc))
    if isinstance(exc, MemoryError):
        return error_row(path, f"{path}: out of memory while scoring")
    detail = " ".join(str(exc).split())[:200]
    return error_row(path, f"{path}: could not be scored ({type(exc).__name__}: {detail})")


def score_file(predictor, path: str, *, windows: bool = False) -> tuple[dict, list[dict]]:
    """``predictor.predict_file`` of one path as rows; any failure is an error row, never an exception."""
    try:
        pred = predictor.predict_file(path, name=path)
    except Exception as exc:  # a decoder or runtime failure on one file must not end a job of millions
        return _failure_row(path, exc), []
    return prediction_rows(pred.to_dict(windows=windows), windows=windows)


# ============================================================================ worker processes
class _AfterImport(importlib.abc.MetaPathFinder):
    """Run ``fn(module)`` right after the top-level module ``name`` is first imported."""

    def __init__(self, name: str, fn: Callable):
        self.name, self.fn = name, fn

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module, fn = spec.loader.exec_module, self.fn

        def exec_then(module):
            exec_module(module)
            fn(module)

        spec.loader.exec_module = exec_then
        return spec


def _one_tensorflow_thread(tf) -> None:
    """One TensorFlow thread in a worker (the pool already fills every core), fixed before anything can
    raise it: the runtime is initialised here, so a later request for more threads is refused."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.list_logical_devices()
    except (RuntimeError, AttributeError):
        pass


def worker_setup(numba_root: str | None = None) -> None:
    """Settings of a scoring process, before its model loads: one BLAS and one TensorFlow thread (if
    TensorFlow gets imported at all: a lean runtime need not), and a private numba cache, so
    parallel workers never compile into one cache at once."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-", dir=numba_root)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "tensorflow" in sys.modules:
        _one_tensorflow_thread(sys.modules["tensorflow"])
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport("tensorflow", _one_tensorflow_thread))


class Scorer:
    """A loaded predictor that turns lists of paths into rows (one per worker process or actor).

    A list is scored with ``predict_many`` (the windows of all its files in one model call per network);
    if that fails as a whole, each file is scored alone, so one bad file costs speed, never other answers.
    """

    def __init__(self, model_dir: str, windows: bool, runtime: str = "auto"):
        from .predict import load_predictor

        self.predictor = load_predictor(model_dir, runtime=runtime)
        self.windows = windows

    def score(self, paths: list[str]) -> list[tuple[dict, list[dict]]]:
        try:
            preds = self.predictor.predict_many(paths)
        except Exception:  # noqa: BLE001  (a model call failed for the whole list: find the file alone)
            return [score_file(self.predictor, p, windows=self.windows) for p in paths]
        return [(_failure_row(p, pred), []) if isinstance(pred, BaseException) else
                prediction_rows(pred.to_dict(windows=self.windows), windows=self.windows)
                for p, pred in zip(paths, preds)]


_SCORER: Scorer | None = None
_SCORER_ERROR: str | None = None


def _init_local(model_dir: str, windows: bool, numba_root: str, runtime: str = "auto") -> None:
    global _SCORER, _SCORER_ERROR
    from .cache import _die_with_parent

    _die_with_parent()               # a SIGKILLed job leaves no worker behind
    worker_setup(numba_root)
    try:
        _SCORER = Scorer(model_dir, windows, runtime)
    except SERError as exc:          # reported by the first task: a failing initializer would only
        _SCORER_ERROR = str(exc)     # break the pool, again and again, without saying why
    except Exception as exc:
        _SCORER_ERROR = f"the model in {model_dir} could not be loaded ({type(exc).__name__}: {exc})"


def _score_chunk(paths: list[str]) -> tuple[int, list[tuple[dict, list[dict]]]]:
    if _SCORER is None:
        raise ModelError(_SCORER_ERROR or "the worker has no model")
    return os.getpid(), _SCORER.score(paths)


# ============================================================================ engines
Result = tuple[dict, list[dict]]


@dataclass
class _Task:
    paths: list[str]
    strikes: int = 0


class LocalEngine:
    """A process pool (forked before TensorFlow is loaded when possible), the model loaded once per worker.

    When a worker dies (killed, out of memory, a decoder crash) the pool breaks and every task in
    flight fails: those tasks go back to the queue and a new pool starts. A task that was in flight
    at ``STRIKES`` breaks is split into single files run alone, so a file that kills its worker every
    time is found and given an error row instead of stopping the job.
    """

    name = "local"

    def __init__(self, model_dir: str, windows: bool, workers: int, chunk: int = CHUNKS["local"],
                 runtime: str = "auto"):
        self.model_dir, self.windows, self.workers, self.chunk = model_dir, windows, max(1, workers), chunk
        self.runtime = runtime
        self.restarts = 0
        self.pids: set[int] = set()
        self.lost: list[str] = []        # files whose worker died every time they were tried
        self.cores: dict[int, list[int]] = {}    # each live worker's share of the cores
        self._pool = None
        self._numba_root = tempfile.mkdtemp(prefix="ser-numba-")

    def _start(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        from .cache import _context

        self._pool = ProcessPoolExecutor(self.workers, mp_context=_context(), initializer=_init_local,
                                         initargs=(self.model_dir, self.windows, self._numba_root, self.runtime))

    def worker_pids(self) -> list[int]:
        """The pool's live worker processes (for tests that kill one, and for the memory benchmark)."""
        procs = getattr(self._pool, "_processes", None) or {}
        # a broken pool keeps its dead workers listed until it is replaced: leave them out
        return [pid for pid, proc in procs.items() if pid and proc.is_alive()]

    def run(self, paths: list[str]) -> Iterator[list[Result]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        queue = deque(_Task(paths[i:i + self.chunk]) for i in range(0, len(paths), self.chunk))
        suspects: deque[_Task] = deque()
        inflight: dict = {}
        self._start()
        while queue or suspects or inflight:
            broken = False
            try:
                self._fill(queue, suspects, inflight)
            except BrokenProcessPool:        # a worker died while this driver was busy elsewhere
                broken = True
            self._pin_workers()
            if not broken:
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = inflight.pop(fut)
                    try:
                        pid, results = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        self._strike(task, queue, suspects)
                        continue
                    self.pids.add(pid)
                    yield results
            if broken:
                for fut, task in list(inflight.items()):       # the pool is gone: these fail too,
                    wait([fut])                                  # unless they finished first
                    try:
                        pid, results = fut.result()
                    except BrokenProcessPool:
                        self._strike(task, queue, suspects)
                        continue
                    self.pids.add(pid)
                    yield results
                inflight.clear()
                self._pool.shutdown(wait=True, cancel_futures=True)
                self.restarts += 1
                self._start()

    def _pin_workers(self) -> None:
        """Each worker on its own share of the cores, set from here as the pool starts them (a new pool after
        a crash too): a worker that stays on one core keeps its networks' weights and buffers in that core's
        cache. Two pinned workers scored about 4 % more clips a second than two free ones (12 of 16
        alternating pairs, docs/speed.md, session 29); a lone worker keeps every core for its ensemble's threads."""
        shares = [share for share in core_shares(self.workers) if share]
        if not shares:
            return                           # not Linux: no pinning
        live = set(self.worker_pids())
        self.cores = {pid: share for pid, share in self.cores.items() if pid in live}
        for pid in sorted(live - self.cores.keys()):
            share = min(shares, key=lambda s: sum(held == s for held in self.cores.values()))   # the least used
            try:
                os.sched_setaffinity(pid, share)
            except OSError:                  # the worker is already gone: the pool will say so
                continue
            self.cores[pid] = share

    def _fill(self, queue: deque, suspects: deque, inflight: dict) -> None:
        """Keep two tasks per worker in flight; a suspect task runs alone, so its failure is its own."""
        from concurrent.futures.process import BrokenProcessPool

        def submit(task: _Task, source: deque) -> None:
            try:
                inflight[self._pool.submit(_score_chunk, task.paths)] = task
            except BrokenProcessPool:
                source.appendleft(task)      # it never ran: no strike
                raise

        if suspects:
            if not inflight:
                submit(suspects.popleft(), suspects)
            return
        while queue and len(inflight) < 2 * self.workers:
            submit(queue.popleft(), queue)

    def _strike(self, task: _Task, queue: deque, suspects: deque) -> None:
        task.strikes += 1
        if task.strikes < STRIKES:
            queue.appendleft(task)
        elif len(task.paths) > 1:
            suspects.extend(_Task([p], strikes=STRIKES - 1) for p in task.paths)
        else:
            # alone in the pool and its worker died again: this file kills the decoder or runtime
            self.lost.append(task.paths[0])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class _RayScorer:
    """Ray Data's callable class: one per actor, the model loaded once, numpy batches of paths in,
    one JSON result per path out (the driver turns them into rows)."""

    def __init__(self, model_dir: str, windows: bool, runtime: str = "auto"):
        worker_setup()
        self.error = None
        try:
            self.scorer = Scorer(model_dir, windows, runtime)
        except SERError as exc:
            self.error = str(exc)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        if self.error:
            raise ModelError(self.error)
        paths = [str(p) for p in batch["file"]]
        results = self.scorer.score(paths)
        return {"file": np.array(paths, dtype=object),
                "result": np.array([json.dumps(r) for r in results], dtype=object),
                "pid": np.full(len(paths), os.getpid(), dtype=np.int64)}


def _ray_cause(exc: BaseException) -> BaseException:
    """The error raised inside a Ray worker, under Ray's wrappers (a SERError keeps its one-line message)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, SERError):
            return exc
        nxt = getattr(exc, "cause", None)
        exc = nxt if isinstance(nxt, BaseException) else (exc.__cause__ or exc.__context__)
    return exc


class RayEngine:
    """Ray Data: a dataset of paths, ``map_batches`` over an actor pool of ``workers`` actors (one CPU each).

    Ray Data gives its actors unlimited restarts and task retries, so a killed actor is replaced
    (its model loaded again) and its batch runs again; the driver keeps each file's first result.
    """

    name = "ray"

    def __init__(self, model_dir: str, windows: bool, workers: int | None, chunk: int = CHUNKS["ray"],
                 address: str | None = None, runtime: str = "auto"):
        try:
            import ray
        except ImportError as exc:
            raise SERError("the ray engine needs Ray: pip install 'ray[data]' (see requirements.txt)") from exc
        self.ray = ray
        self.model_dir, self.windows, self.chunk, self.address = model_dir, windows, chunk, address
        self.runtime = runtime
        self.pids: set[int] = set()
        self.restarts = 0
        self.lost: list[str] = []        # Ray retries a dead actor's batch itself; nothing is given up
        self._owns_ray = False
        if not ray.is_initialized():
            import logging

            # Ray Data's actor pool makes every restartable actor log a C++ warning about its
            # constructor arguments (ray-project/ray#53727); the driver's own errors still surface
            # as exceptions. Setting the level logs one line of its own while Ray starts, hence
            # the silenced start.
            from .tf_setup import native_stderr_silenced

            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
            with native_stderr_silenced():
                if address:
                    runtime_env = {"py_modules": [str(Path(__file__).resolve().parent)]}   # this engine's code
                    try:
                        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False,
                                 logging_level=logging.ERROR)
                    except (ConnectionError, RuntimeError, ValueError) as exc:
                        raise SERError(f"could not join the Ray cluster at {address}: "
                                       f"{' '.join(str(exc).split())[:200]}") from exc
                else:
                    # the local cluster's processes inherit this environment: they find ser_core here
                    saved = os.environ.get("PYTHONPATH")
                    root = str(Path(__file__).resolve().parent.parent)
                    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, saved) if p)
                    try:
                        ray.init(num_cpus=workers or usable_cpus(), include_dashboard=False,
                                 log_to_driver=False, logging_level=logging.ERROR,
                                 object_store_memory=RAY_OBJECT_STORE_MB << 20)
                    finally:
                        if saved is None:
                            os.environ.pop("PYTHONPATH", None)
                        else:
                            os.environ["PYTHONPATH"] = saved
            self._owns_ray = True
        self.workers = int(workers or ray.cluster_resources().get("CPU", 1))

    def worker_pids(self) -> list[int]:
        return sorted(self.pids)

    def run(self, paths: list[str]) -> Iterator[list[Result]]:
        import logging

        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False           # the driver draws its own bar
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        blocks = max(1, min(math.ceil(len(paths) / self.chunk), 100_000))
        ds = self.ray.data.from_items([{"file": p} for p in paths], override_num_blocks=blocks)
        pool = ActorPoolStrategy(size=min(self.workers, blocks), max_tasks_in_flight_per_actor=2)
        ds = ds.map_batches(_RayScorer, fn_constructor_args=(self.model_dir, self.windows, self.runtime), compute=pool,
                            batch_size=self.chunk, batch_format="numpy", num_cpus=1, udf_modifying_row_count=False)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                self.pids.update(int(p) for p in batch["pid"])
                yield [tuple(json.loads(s)) for s in batch["result"]]
        except Exception as exc:
            cause = _ray_cause(exc)
            if isinstance(cause, SERError):
                raise cause from None
            raise SERError(f"the Ray job failed: {type(cause).__name__}: "
                           f"{' '.join(str(cause).split())[:300]}") from exc

    def close(self) -> None:
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()


# ============================================================================ the parts on disk
def _write_parquet(table, path: Path) -> None:
    """Write ``table`` so readers see the whole file or nothing (temp file, fsync, os.replace)."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _arrow_type(column: str):
    """The type of a known column (so a part whose rows are all errors has the same schema), else None."""
    import pyarrow as pa

    if column.startswith("p_") or column in ("confidence", "duration", "start", "end"):
        return pa.float64()
    return {"file": pa.string(), "emotion": pa.string(), "error": pa.string(), "window": pa.int64(),
            "speech": pa.bool_()}.get(column)


def _table(rows: list[dict], columns: list[str]):
    """An Arrow table with the known columns in order and type, then any extra keys the rows carry."""
    import pyarrow as pa

    extra = sorted({k for r in rows for k in r} - set(columns))
    return pa.table({c: pa.array([r.get(c) for r in rows], type=_arrow_type(c)) for c in [*columns, *extra]})


class PartStore:
    """The parts of one output folder: which files they cover, new parts, the final assembly.

    Holds an exclusive lock on the folder while open, so two jobs never write one output.
    """

    def __init__(self, out: Path | str, job: dict):
        import fcntl

        self.out = Path(out)
        self.parts = self.out / PARTS
        if self.out.exists() and not self.out.is_dir():
            raise SERError(f"--out {self.out} is a file; batch results go to a folder")
        self.parts.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.out / LOCK, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock.close()
            raise SERError(f"another ser batch is writing to {self.out}") from exc
        self._check_job(job)
        self._clean()
        self.files = self._covered()
        self.next_index = 1 + max((int(m.group(1)) for f in self.parts.iterdir()
                                   if (m := PART_NAME.match(f.name))), default=0)

    def _check_job(self, job: dict) -> None:
        from .runs import read_json

        path = self.out / JOB
        prev = read_json(path)
        if prev is None and any(self.parts.iterdir()):
            raise SERError(f"{self.out} holds parts but no readable {JOB}; choose another --out")
        if prev is not None:
            prev = {"precision": "float32", **prev}      # jobs from before --runtime int8 were float32
            job = {"precision": "float32", **job}
            for key, what in (("model_stamp", "another model"), ("windows", "another --windows setting"),
                              ("precision", "another runtime precision (--runtime int8 or not)")):
                if prev.get(key) != job[key]:
                    raise SERError(f"{self.out} holds results of {what} ({key} {prev.get(key)} here, "
                                   f"{job[key]} now); choose another --out or remove that folder")
        atomic_write_text(path, json.dumps({**(prev or {}), **job}, indent=1))

    def _clean(self) -> None:
        """Temp files of a killed writer, and window parts whose part was never committed."""
        names = {f.name for f in self.parts.iterdir()}
        for name in names:
            orphan = name.endswith(WINDOW_SUFFIX) and name[: -len(WINDOW_SUFFIX)] + ".parquet" not in names
            if name.endswith(".tmp") or orphan:
                (self.parts / name).unlink(missing_ok=True)
        for f in self.out.glob(".*.tmp"):
            f.unlink(missing_ok=True)

    def part_paths(self) -> list[Path]:
        return sorted(f for f in self.parts.iterdir() if PART_NAME.match(f.name))

    def _covered(self) -> dict[str, str]:
        import pyarrow.parquet as pq

        files: dict[str, str] = {}
        for part in self.part_paths():
            for f in pq.read_table(part, columns=["file"]).column("file").to_pylist():
                files.setdefault(f, part.name)
        return files

    def commit(self, rows: list[dict], wrows: list[dict] | None, labels: list[str]) -> Path:
        """Write one part (and its window rows first: the part's arrival is what commits both)."""
        p_cols = [f"p_{lab}" for lab in labels]
        path = self.parts / f"part-{self.next_index:05d}.parquet"
        if wrows is not None:
            _write_parquet(_table(wrows, [*WINDOW_COLUMNS, *p_cols]),
                           path.with_name(path.name.replace(".parquet", WINDOW_SUFFIX)))
        _write_parquet(_table(rows, [*FILE_COLUMNS, *p_cols]), path)
        self.next_index += 1
        for r in rows:
            self.files.setdefault(r["file"], path.name)
        return path

    def assemble(self, order: list[str], *, windows: bool, csv: bool) -> dict[str, Path]:
        """The final tables: every file of ``order`` once, in that order, replacing the old ones atomically."""
        out = {}
        out["results"] = self._assemble(self.part_paths(), order, ["file"], self.out / RESULTS, csv)
        if windows:
            wparts = [p.with_name(p.name.replace(".parquet", WINDOW_SUFFIX)) for p in self.part_paths()]
            out["windows"] = self._assemble([p for p in wparts if p.exists()], order, ["file", "window"],
                                            self.out / WINDOW_RESULTS, csv)
        return out

    def _assemble(self, parts: list[Path], order: list[str], keys: list[str], dest: Path, csv: bool) -> Path:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(p) for p in parts]
        table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({"file": []})
        rank = {f: i for i, f in enumerate(order)}
        pos = np.array([rank.get(f, -1) for f in table.column("file").to_pylist()], dtype=np.int64)
        sub = np.array(table.column(keys[1]).to_pylist(), dtype=np.int64) if len(keys) > 1 else np.zeros(len(pos))
        keep = np.flatnonzero(pos >= 0)
        idx = keep[np.lexsort((sub[keep], pos[keep]))]
        if len(keys) == 1:       # a file twice in the parts would be a bug; keep its first row all the same
            _, first = np.unique(pos[idx], return_index=True)
            idx = idx[np.sort(first)]
        table = table.take(pa.array(idx, type=pa.int64()))
        _write_parquet(table, dest)
        if csv:
            atomic_write_text(dest.with_suffix(".csv"), table.to_pandas().to_csv(index=False))
        return dest

    def close(self) -> None:
        if not self._lock.closed:
            self._lock.close()


# ============================================================================ the job
class RateProgress(Progress):
    """The progress bar with this run's throughput (clips/s) beside the ETA."""

    def _draw(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = self.done / self.total
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            text = (f"\r{self.label} [{'#' * int(frac * 30):<30}] {self.done}/{self.total} "
                    f"{rate:6.1f} clips/s  eta {eta:6.1f}s ")
        else:
            text = f"\r{self.label} {self.done} {rate:6.1f} clips/s "
        self.stream.write(text)
        self.stream.flush()


@dataclass
class BatchResult:
    out: Path
    files: int                     # inputs of this job
    scored: int                    # scored by this run
    resumed: int                   # already in the parts when this run started
    errors: int                    # error rows among all inputs
    seconds: float
    restarts: int
    worker_pids: list[int]
    paths: dict[str, Path] = field(default_factory=dict)
    timeline: list[tuple[float, int]] = field(default_factory=list)   # (seconds since start, files scored)
    workers: int = 1               # the engine's workers (hand-overs come in cycles of one per worker)

    @property
    def first_result_s(self) -> float | None:
        """Start-up: the engine and its models loading, until the first result arrived (an upper bound:
        when the engine holds finished results back, see :attr:`steady_note`, it includes scoring)."""
        return self.timeline[0][0] if self.timeline else None

    @property
    def clips_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def _steady_window(self) -> tuple[tuple[float, int], tuple[float, int]] | str:
        """The steady window's ends, (seconds, files) each, or why there is none."""
        if len(self.timeline) < 2:
            return f"{len(self.timeline)} hand-over(s) of results in all"
        i = next(k for k, (_, n) in enumerate(self.timeline) if n >= self.scored / 4)
        after = len(self.timeline) - 1 - i
        if after < STEADY_HANDOVERS:
            return (f"only {after} hand-over(s) of results after the first quarter of the files (at least "
                    f"{STEADY_HANDOVERS} needed): results handed over together time the hand-over, not the "
                    f"scoring, and the first result ({self.timeline[0][0]:.2f} s) may include scoring")
        # Whole cycles of hand-overs (one per worker), ending before the last cycle. When the window opens at a
        # hand-over, the other workers' tasks are part done; ending it at the job's last result, when nothing is
        # in flight, would credit the window with that earlier work (workers started together, with tasks of
        # 64 files, showed a sixth more clips/s than they scored); ending it a whole number of cycles later, in
        # the same phase, does not, and the last cycle, where workers run out of work one by one, is left out.
        w = max(1, self.workers)
        j = i + w * ((len(self.timeline) - 1 - w - i) // w)
        if j - i < STEADY_HANDOVERS:
            return (f"only {max(j - i, 0)} hand-over(s) in whole cycles of the {w} workers between the first "
                    f"quarter of the files and the last cycle (at least {STEADY_HANDOVERS} needed)")
        (t1, n1), (t2, n2) = self.timeline[i], self.timeline[j]
        if t2 <= t1:
            return "the results after the first quarter of the files arrived at one instant"
        return (t1, n1), (t2, n2)

    @property
    def steady_files(self) -> tuple[int, int] | None:
        """Files scored at the steady window's two ends (None without a steady window), for figures that
        must cover the same window (the bench's CPU seconds per clip)."""
        w = self._steady_window()
        return None if isinstance(w, str) else (w[0][1], w[1][1])

    @property
    def steady_note(self) -> str | None:
        """Why :attr:`steady_clips_per_s` is the whole run's rate instead (None when it is a steady rate)."""
        w = self._steady_window()
        return w if isinstance(w, str) else None

    @property
    def steady_clips_per_s(self) -> float:
        """Throughput from a quarter of the files on, over whole cycles of hand-overs (one per worker) up to
        the last cycle: every worker has started by then (they start at different times), and no start-up
        or shutdown is counted. Only the driver's arrival times are known, so it needs results handed over
        one batch at a time: with fewer than ``STEADY_HANDOVERS`` hand-overs in that window it is
        :attr:`clips_per_s` (the reason in :attr:`steady_note`)."""
        w = self._steady_window()
        if isinstance(w, str):
            return self.clips_per_s
        (t1, n1), (t2, n2) = w
        return (n2 - n1) / (t2 - t1)


def answer_summary(results: Path | str) -> str:
    """:func:`ser_core.predict.answer_shares` of a finished job's table (files with speech only). An archive
    whose answers pile onto one or two emotions it did not expect is the batch form of "it always says X"."""
    import pyarrow.parquet as pq

    from .predict import answer_shares

    names = pq.read_schema(results).names
    table = pq.read_table(results, columns=[c for c in ("best", "not_sure") if c in names]).to_pandas()
    best = table["best"].tolist() if "best" in table else []
    unsure = table["not_sure"].fillna(False).astype(bool).tolist() if "not_sure" in table else [False] * len(best)
    return answer_shares(best, unsure)


def make_engine(engine: str, model_dir: str, windows: bool, workers: int | None, *, chunk: int | None = None,
                address: str | None = None, runtime: str = "auto"):
    chunk = chunk or CHUNKS.get(engine, 1)
    if engine == "local":
        if address:
            raise SERError("--address is for --engine ray")
        return LocalEngine(model_dir, windows, workers or usable_cpus(), chunk, runtime)
    if engine == "ray":
        return RayEngine(model_dir, windows, workers, chunk, address, runtime)
    raise SERError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


def run_batch(inputs: Iterable[str], out: Path | str, model_dir: Path | str, *, engine: str = "local",
              workers: int | None = None, address: str | None = None, windows: bool = False, csv: bool = False,
              chunk: int | None = None, part_files: int = PART_FILES, part_seconds: float = PART_SECONDS,
              progress: bool | None = None, callback: Callable[[int, int], None] | None = None,
              on_part: Callable[[Path, object], None] | None = None, runtime: str = "auto") -> BatchResult:
    """Score every input file into ``out`` (see the module docstring); resumes a job killed earlier.

    ``on_part(path, engine)`` is called after each committed part (tests kill workers from it).
    """
    if workers is not None and workers < 1:
        raise SERError(f"--workers must be at least 1, not {workers}")
    if part_files < 1 or (chunk is not None and chunk < 1):
        raise SERError("part and chunk sizes must be at least 1 file")
    model_dir = str(Path(model_dir).resolve())
    labels = model_labels(model_dir)
    paths = collect_inputs(inputs)
    if not paths:
        raise SERError("no audio files found in the given inputs")
    if runtime not in RUNTIMES:
        raise SERError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    check_runtime(model_dir, runtime)        # before the output folder: a probe has no exports to force
    job = {"version": JOB_VERSION, "model": model_dir, "model_stamp": model_stamp(model_dir), "windows": windows,
           "labels": labels, "precision": precision(runtime)}
    store = PartStore(out, job)
    try:
        todo = [p for p in paths if p not in store.files]
        resumed = len(paths) - len(todo)
        t0 = time.monotonic()
        timeline: list[tuple[float, int]] = []
        eng = None
        restarts, pids = 0, []
        if todo:
            eng = make_engine(engine, model_dir, windows, workers, chunk=chunk, address=address, runtime=runtime)
            bar = RateProgress(len(todo), f"ser batch ({eng.name}, {eng.workers} workers)", enabled=progress,
                               callback=callback)
            rows: list[dict] = []
            wrows: list[dict] = []
            held: set[str] = set()       # files of the rows not yet committed
            last = time.monotonic()

            def keep(row: dict, wr: list[dict]) -> bool:
                if row["file"] in store.files or row["file"] in held:
                    return False         # exactly once: a retried task's second answer is dropped
                rows.append(row)
                wrows.extend(wr)
                held.add(row["file"])
                return True

            def commit() -> None:
                nonlocal rows, wrows, last
                if rows:
                    part = store.commit(rows, wrows if windows else None, labels)
                    rows, wrows = [], []
                    held.clear()
                    if on_part is not None:
                        on_part(part, eng)
                last = time.monotonic()

            try:
                for results in eng.run(todo):
                    bar.update(sum(keep(row, wr) for row, wr in results))
                    timeline.append((time.monotonic() - t0, bar.done))
                    if len(rows) >= part_files or time.monotonic() - last >= part_seconds:
                        commit()
                for p in eng.lost:
                    keep(error_row(p, f"{p}: the worker scoring it died {STRIKES} times (a crash in the "
                                      f"decoder or runtime); skipped"), [])
                commit()
            except BaseException:
                commit()             # Ctrl-C or an engine failure: what has arrived is kept
                raise
            finally:
                bar.close()
                restarts, pids = eng.restarts, eng.worker_pids() or sorted(eng.pids)
                eng.close()
        seconds = time.monotonic() - t0
        final = store.assemble(paths, windows=windows, csv=csv)
        import pyarrow.parquet as pq

        err = pq.read_table(final["results"], columns=["error"]).column("error").to_pylist()
        return BatchResult(Path(out), len(paths), len(todo), resumed, sum(e is not None for e in err), seconds,
                           restarts, pids, final, timeline, eng.workers if eng is not None else 1)
    finally:
        store.close()
