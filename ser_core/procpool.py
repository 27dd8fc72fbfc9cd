"""Run jobs as child processes, a few at once, each pinned to its own share of the cores.

On a machine with few cores, one training process per core is faster than one process on all of them
(two `ser_crnn` runs pinned one per core tabled 1.25x faster than one run on both, measured side by side
in session 12, ``docs/multicorpus.md``). ``ser cv --processes`` (its folds) and ``training/teachers.py
--processes`` (its fold-teacher tables) both schedule their jobs here; each says how to start a job and
what its end means.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path


def core_shares(n: int) -> list[list[int]]:
    """The CPU cores this process may use, dealt into ``n`` disjoint shares (at most one per core).

    Returns
    -------
    list of list of int
        ``n`` (or fewer, one per core) lists of core numbers; lists are empty off Linux, meaning "any core".
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):          # not on Linux: no pinning, every share is "any core"
        return [[] for _ in range(max(1, n))]
    n = max(1, min(n, len(cpus)))
    return [cpus[i::n] for i in range(n)]


def pinned(cores: list[int]):
    """What a child does before it starts: run on ``cores`` only, and get SIGTERM (a clean stop that keeps
    its checkpoint) when the parent dies, so no orphan trains on."""
    def setup():
        if cores:
            os.sched_setaffinity(0, cores)
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)      # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass                                # not Linux: the child keeps running until it ends
    return setup


@dataclasses.dataclass(frozen=True)
class Launch:
    """How to start one job: its command line, the file its output goes to, and where it runs."""

    argv: list[str]
    log: Path
    cwd: Path | None = None


def run_pinned(jobs: Sequence[Hashable], processes: int, launch: Callable[[Hashable], Launch], *,
               ended: Callable[[Hashable, int], str | None], log: Callable[[str], None],
               name: Callable[[Hashable], str] = str, what: str = "jobs",
               stop_requested: Callable[[], bool] = lambda: False,
               stop: Callable[[Hashable, subprocess.Popen], None] | None = None,
               numba_cache: Path | None = None, poll_seconds: float = 0.5) -> dict[Hashable, str]:
    """Run ``jobs`` as child processes, at most ``processes`` at once, each pinned to its share of the cores;
    a job starts when one ends.

    Parameters
    ----------
    jobs : sequence
        The jobs, in the order they start.
    processes : int
        How many run at once (at most one per core this process may use).
    launch : callable
        ``launch(job)`` prepares the job and says how to start it (called just before it starts).
    ended : callable
        ``ended(job, returncode)`` records a job that exited; returns why it failed, or None if it did not.
    log : callable
        Receives one line per start, end and stop request.
    name, what : callable, str
        A job's name in those lines, and the plural the stop request's line uses ("folds", "tables").
    stop_requested : callable
        Polled while jobs run (the caller's signal flag, a STOP file): once true, the running jobs are asked to
        stop and no other starts.
    stop : callable, optional
        How a running job is asked to stop (default: SIGTERM, which every training process takes as a clean
        stop that keeps its checkpoint).
    numba_cache : Path, optional
        Give every slot its own ``NUMBA_CACHE_DIR`` under this folder: librosa's JIT cache is corrupted by two
        processes writing it at once.

    Returns
    -------
    dict
        The jobs that failed, with why; empty if none did. Jobs never started after a stop are not in it.
    """
    shares = core_shares(min(processes, len(jobs)))
    waiting, running, failed = deque(jobs), {}, {}
    free = list(range(len(shares)))
    stopping = False
    while waiting or running:
        if not stopping and stop_requested():
            stopping = True
            log(f"stop requested: passed on to the running {what}"
                + (f"; not started: {', '.join(map(name, waiting))}" if waiting else ""))
            waiting.clear()
            for job, proc in running.values():
                stop(job, proc) if stop else proc.send_signal(signal.SIGTERM)
        while free and waiting:
            slot, job = free.pop(0), waiting.popleft()
            how, cores = launch(job), shares[slot]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            if cores:
                env["OMP_NUM_THREADS"] = str(len(cores))
            if numba_cache is not None:
                env["NUMBA_CACHE_DIR"] = str(Path(numba_cache) / f"numba-{slot}")
            Path(how.log).parent.mkdir(parents=True, exist_ok=True)
            with open(how.log, "ab") as out:
                proc = subprocess.Popen(how.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, cwd=str(how.cwd) if how.cwd else None, preexec_fn=pinned(cores))
            running[slot] = (job, proc)
            log(f"{name(job)}: started in its own process"
                + (f" on cores {','.join(map(str, cores))}" if cores else "") + f" (log: {how.log})")
        time.sleep(poll_seconds)
        for slot, (job, proc) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[slot]
            free.append(slot)
            why = ended(job, proc.returncode)
            if why is not None:
                failed[job] = why
    return failed
