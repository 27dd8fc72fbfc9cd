"""Corpus feature extraction on all cores, cached on disk.

Each clip's features are stored as one ``.npy`` file keyed by the clip's
identity (absolute path, size, modification time), the feature config's hash
and a hash of the decoding and feature code, so changing any of them
recomputes, and a second run only reads files.

Workers are forked before TensorFlow is loaded when possible (forkserver
otherwise) and each gets its own ``NUMBA_CACHE_DIR``, so librosa's numba
cache is never written by two processes at once.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import audio, features
from .config import FeatureConfig, cache_dir
from .errors import SERError
from .machine import usable_cpus
from .progress import Progress

CHUNK = 24


@dataclass
class FeatureSet:
    """Features of a list of clips; ``ok[i]`` is False where clip i could not be read."""

    x: np.ndarray
    ok: np.ndarray
    errors: list[tuple[str, str]] = field(default_factory=list)


def _code_hash() -> str:
    h = hashlib.sha1()
    for module in (audio, features):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:12]


CODE_KEY = _code_hash()   # of the code this process loaded, not of the files as they are later


def code_key() -> str:
    """Hash of the decoding and feature code: editing either invalidates the cache by itself."""
    return CODE_KEY


def clip_key(path: str | os.PathLike) -> str:
    p = Path(path).resolve()
    st = p.stat()
    return hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


def _cache_path(root: Path, cfg_key: str, key: str) -> Path:
    return root / cfg_key / key[:2] / f"{key}.npy"


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, path)


def _load_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        arr = np.load(path)
    except (OSError, ValueError, EOFError):
        return None
    return arr if arr.shape == shape else None


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent dies, so a SIGKILLed run leaves no orphans.

    Without it, workers of a killed training process block forever on the pool's queue.
    SIGKILL, not SIGTERM: forked workers inherit the training process's SIGTERM handler.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:          # the parent died before the request took effect
        os._exit(1)


def _init_worker(numba_dir: str) -> None:
    """One BLAS thread per worker (the pool already uses every core) and a private numba cache."""
    _die_with_parent()
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-", dir=numba_dir)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def extract_files(paths: list[str], cfg: FeatureConfig) -> tuple[list[int], np.ndarray, list[tuple[int, str]]]:
    """Decode and featurise a chunk of files; returns (ok positions, features, (position, error))."""
    waves, ok, errors = [], [], []
    for i, p in enumerate(paths):
        try:
            waves.append(audio.load(p, sr=cfg.sample_rate, name=os.path.basename(p)))
            ok.append(i)
        except SERError as exc:
            errors.append((i, str(exc)))
        except Exception as exc:  # a decoder crash on one file must not abort a corpus
            errors.append((i, f"{os.path.basename(p)}: could not be read ({type(exc).__name__})"))
    x = features.extract_batch(waves, cfg)
    return ok, x, errors


def _chunk_job(paths: list[str], cache_paths: list[str] | None, cfg: FeatureConfig):
    ok, x, errors = extract_files(paths, cfg)
    if cache_paths is not None:
        for j, i in enumerate(ok):
            _save(Path(cache_paths[i]), x[j])
    return ok, x, errors


def _context() -> mp.context.BaseContext:
    if sys.platform.startswith("linux") and "tensorflow" not in sys.modules:
        return mp.get_context("fork")
    return mp.get_context("forkserver")


def corpus_features(paths: list[str], cfg: FeatureConfig, *, use_cache: bool = True, workers: int | None = None,
                    progress: bool | None = None, callback: Callable[[int, int], None] | None = None,
                    root: Path | None = None) -> FeatureSet:
    """Features for every path (cached), computed in parallel; unreadable files are reported, not fatal."""
    shape = features.input_shape(cfg)
    n = len(paths)
    x = np.zeros((n, *shape), np.float32)
    ok = np.zeros(n, bool)
    errors: list[tuple[str, str]] = []
    root = Path(root) if root is not None else cache_dir()
    cfg_key = f"{cfg.key()}-{code_key()}"
    todo: list[int] = []
    cpaths: list[str | None] = [None] * n
    for i, p in enumerate(paths):
        try:
            key = clip_key(p)
        except OSError:
            errors.append((p, f"{os.path.basename(p)}: file not found"))
            continue
        if use_cache:
            cp = _cache_path(root, cfg_key, key)
            cpaths[i] = str(cp)
            arr = _load_cached(cp, shape) if cp.exists() else None
            if arr is not None:
                x[i], ok[i] = arr, True
                continue
        todo.append(i)
    bar = Progress(n, f"features ({cfg.kind})", enabled=progress, callback=callback)
    bar.update(n - len(todo) - len(errors))
    chunks = [todo[s:s + CHUNK] for s in range(0, len(todo), CHUNK)]
    n_workers = min(workers or usable_cpus(), len(chunks))

    def accept(chunk: list[int], result) -> None:
        ok_pos, feats, errs = result
        for j, pos in enumerate(ok_pos):
            x[chunk[pos]], ok[chunk[pos]] = feats[j], True
        errors.extend((paths[chunk[pos]], msg) for pos, msg in errs)
        bar.update(len(chunk))

    def job_args(chunk: list[int]):
        cps = [cpaths[i] for i in chunk] if use_cache else None
        return [paths[i] for i in chunk], cps, cfg

    if n_workers <= 1:
        for chunk in chunks:
            accept(chunk, _chunk_job(*job_args(chunk)))
    else:
        features.warm_up(cfg)
        numba_dir = tempfile.mkdtemp(prefix="ser-numba-")
        with ProcessPoolExecutor(n_workers, mp_context=_context(), initializer=_init_worker,
                                 initargs=(numba_dir,)) as pool:
            futures = {pool.submit(_chunk_job, *job_args(c)): c for c in chunks}
            for fut in as_completed(futures):
                accept(futures[fut], fut.result())
    bar.close()
    return FeatureSet(x, ok, errors)
