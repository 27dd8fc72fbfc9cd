"""The scheduler of pinned child processes that ``ser cv --processes`` and ``teachers.py --processes`` share."""
from __future__ import annotations

import json
import os
import sys

from ser_core import procpool

REPORT = ("import json, os, sys\n"
          "print(json.dumps({'cores': sorted(os.sched_getaffinity(0)), 'omp': os.environ.get('OMP_NUM_THREADS'),"
          " 'numba': os.environ.get('NUMBA_CACHE_DIR'), 'cwd': os.getcwd()}))\n"
          "sys.exit(int(sys.argv[1]))\n")


def test_core_shares_are_disjoint_and_cover_the_usable_cores():
    cpus = sorted(os.sched_getaffinity(0))
    shares = procpool.core_shares(len(cpus) + 3)                 # never more shares than cores
    assert len(shares) == len(cpus)
    assert sorted(c for share in shares for c in share) == cpus
    assert procpool.core_shares(1) == [cpus]


def test_jobs_run_pinned_with_their_own_numba_cache_and_a_failure_is_named(tmp_path):
    """Every job runs, in the order given, on its slot's cores, with OMP threads sized to them and a numba
    cache of its own slot; a job that exits non-zero is returned with why, and does not stop the others."""
    lines, ends = [], []
    exit_codes = {"a": 0, "b": 3, "c": 0}

    def launch(job):
        return procpool.Launch([sys.executable, "-c", REPORT, str(exit_codes[job])], tmp_path / "logs" / f"{job}.log",
                               cwd=tmp_path)

    def ended(job, code):
        ends.append((job, code))
        return None if code == 0 else f"exit code {code}"

    failed = procpool.run_pinned(list("abc"), 2, launch, ended=ended, log=lines.append, name=lambda j: f"job {j}",
                                 numba_cache=tmp_path / "numba", poll_seconds=0.05)
    assert failed == {"b": "exit code 3"}
    assert sorted(ends) == [("a", 0), ("b", 3), ("c", 0)]
    assert [line.split(":")[0] for line in lines] == ["job a", "job b", "job c"]
    seen = {job: json.loads((tmp_path / "logs" / f"{job}.log").read_text()) for job in "abc"}
    shares = procpool.core_shares(2)
    assert seen["a"]["cores"] == shares[0] and seen["b"]["cores"] == shares[-1]
    assert seen["a"]["omp"] == str(len(shares[0]))
    assert seen["a"]["cwd"] == str(tmp_path)
    if len(shares) == 2:                                        # two slots: two caches, never one shared
        assert seen["a"]["numba"] != seen["b"]["numba"]
    assert {seen[j]["numba"] for j in "abc"} <= {str(tmp_path / "numba" / f"numba-{s}") for s in range(2)}


def test_a_stop_request_stops_the_running_jobs_and_starts_no_other(tmp_path):
    """Once a stop is requested, every running job is asked to stop (SIGTERM by default) and the waiting ones
    never start; the stopped jobs come back as failed, the unstarted ones not at all."""
    started, lines = [], []

    def launch(job):
        started.append(job)
        return procpool.Launch([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / f"{job}.log")

    failed = procpool.run_pinned(
        ["x", "y", "z"], 1, launch, ended=lambda job, code: f"exit code {code}", log=lines.append,
        what="tables", stop_requested=lambda: bool(started), poll_seconds=0.05)
    assert started == ["x"]
    assert failed == {"x": "exit code -15"}
    assert any(line.startswith("stop requested: passed on to the running tables; not started: y, z")
               for line in lines), lines
