"""`ser batch`: both engines (a real process pool, a real local Ray with 2 CPUs) give `ser predict`'s
answers, keep going past bad files, survive a killed worker, and resume after the whole job is SIGKILLed."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from ser_core import batch
from ser_core.cli import INT8_HINT
from ser_core.errors import SERError

ROOT = Path(__file__).resolve().parents[1]
CLIPS = 10          # real sample clips per engine run: few, so the file stays within about two minutes


def ser(*args, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "ser_core", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600, **kw)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, samples_dir) -> dict:
    """Real clips, a corrupt file and a silent one, in a folder; and what `ser predict --json` says of each."""
    folder = tmp_path_factory.mktemp("batch-in")
    for f in sorted(samples_dir.glob("*.flac"))[:CLIPS]:
        shutil.copy(f, folder / f.name)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + os.urandom(400))
    sf.write(folder / "silent.wav", np.zeros(16000 * 3, np.float32), 16000)
    files = sorted(str(p) for p in folder.iterdir())
    return {"folder": folder, "files": files}


@pytest.fixture(scope="module")
def predicted(inputs, tiny_model) -> dict[str, dict]:
    """`ser predict --json` of every input, as a real subprocess: {absolute path: its JSON line}."""
    r = ser("predict", *inputs["files"], "--model", tiny_model, "--json")
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(inputs["files"]), r.stderr
    return {os.path.abspath(d["file"]): d for d in lines}


def assert_same_as_predict(table: pd.DataFrame, predicted: dict[str, dict]) -> None:
    assert sorted(table["file"]) == sorted(predicted)
    assert not table["file"].duplicated().any()
    for _, row in table.iterrows():
        want = predicted[row["file"]]
        if "error" in want or want.get("emotion") is None:
            assert isinstance(row["error"], str) and row["error"]
            assert pd.isna(row["emotion"])
            continue
        assert pd.isna(row["error"]) and row["emotion"] == want["emotion"]
        assert row["duration"] == pytest.approx(want["duration"], abs=1e-3)
        for emo, p in want["probabilities"].items():      # thread counts differ: last-digit noise only
            assert row[f"p_{emo}"] == pytest.approx(p, abs=2e-5)
        assert row["confidence"] == pytest.approx(want["confidence"], abs=2e-5)


def covered(out: Path) -> list[str]:
    """Every file of every committed part, duplicates included."""
    return [f for p in sorted((out / batch.PARTS).glob("part-*[0-9].parquet"))
            for f in pq.read_table(p, columns=["file"]).column("file").to_pylist()]


def kill_one_worker_after_first_part(killed: list):
    def on_part(part, engine):
        pids = [p for p in engine.worker_pids() if p not in killed]
        if not killed and pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    return on_part


# ----------------------------------------------------------------------------- inputs and rows
def test_inputs_are_files_folders_globs_and_csv_lists_each_once(tmp_path):
    d = tmp_path / "audio"
    (d / "sub").mkdir(parents=True)
    for name in ("a.wav", "b.flac", "sub/c.mp3", "notes.txt"):
        (d / name).write_bytes(b"x")
    (tmp_path / "list.csv").write_text("path,label\naudio/b.flac,x\n/nowhere/gone.wav,y\n")
    (tmp_path / "bare.csv").write_text("audio/sub/c.mp3\n/nowhere/else.flac\n")      # no header row
    got = batch.collect_inputs([str(d / "a.wav"), str(d), str(tmp_path / "audio" / "*.wav"),
                                str(tmp_path / "list.csv"), str(tmp_path / "none-*.wav"), str(tmp_path / "bare.csv")])
    assert got == [str(d / "a.wav"), str(d / "b.flac"), str(d / "sub" / "c.mp3"), "/nowhere/gone.wav",
                   "/nowhere/else.flac"]


def test_prediction_rows_flatten_probabilities_and_turn_no_speech_into_an_error():
    d = {"file": "/x.wav", "emotion": "sad", "confidence": 0.7, "duration": 3.2,
         "probabilities": {"sad": 0.7, "happy": 0.3}, "runners_up": ["sad", "happy"],
         "windows": [{"start": 0.0, "end": 3.0, "emotion": "sad", "confidence": 0.7,
                      "probabilities": {"sad": 0.7, "happy": 0.3}, "speech": True}]}
    row, wins = batch.prediction_rows(d, windows=True)
    assert row == {"file": "/x.wav", "emotion": "sad", "confidence": 0.7, "duration": 3.2, "error": None,
                   "p_sad": 0.7, "p_happy": 0.3, "runners_up": '["sad", "happy"]'}
    assert wins == [{"file": "/x.wav", "window": 0, "start": 0.0, "end": 3.0, "emotion": "sad",
                     "confidence": 0.7, "speech": True, "p_sad": 0.7, "p_happy": 0.3}]
    quiet, _ = batch.prediction_rows({"file": "/q.wav", "emotion": None, "confidence": 0.0, "duration": 2.0,
                                      "probabilities": {"sad": 0.0}, "message": "no speech detected"})
    assert quiet["emotion"] is None and quiet["error"] == "no speech detected"


def test_a_task_whose_worker_keeps_dying_is_split_and_then_given_up_file_by_file():
    eng = batch.LocalEngine("/m", False, 2)
    queue, suspects = batch.deque(), batch.deque()
    task = batch._Task(["a", "b"])
    eng._strike(task, queue, suspects)
    assert list(queue) == [task] and not suspects            # first break: retried as it was
    eng._strike(queue.popleft(), queue, suspects)
    assert [t.paths for t in suspects] == [["a"], ["b"]]     # second: each file alone
    eng._strike(suspects.popleft(), queue, suspects)
    assert eng.lost == ["a"]


def test_the_batched_path_answers_what_predict_file_answers_for_a_model_and_an_ensemble(tmp_path, inputs,
                                                                                        tiny_model, samples_dir):
    from ser_core import ensemble
    from ser_core.predict import load_predictor

    long = tmp_path / "long.wav"                      # several windows in one file
    sf.write(long, np.concatenate([sf.read(f, dtype="float32")[0] for f in sorted(samples_dir.glob("*.flac"))[:3]]),
             16000)
    files = [*inputs["files"], str(long)]
    for model in (tiny_model, ensemble.build([tiny_model, tiny_model], tmp_path / "ens")):
        predictor = load_predictor(model)
        calls = []
        for net in getattr(predictor, "members", [predictor]):      # count the model calls of every network
            net.predict_features = (lambda run: lambda x: calls.append(len(x)) or run(x))(net.predict_features)
        fast = predictor.predict_many(files)
        n_nets = len(getattr(predictor, "members", [predictor]))
        assert len(calls) == n_nets, calls                  # all the files' windows in one call per network
        assert sum(calls) > n_nets * (len(files) - 2)       # ... several windows each (two inputs are not audio)
        answered = 0
        for f, got in zip(files, fast):
            try:
                want = predictor.predict_file(f, name=f)
            except SERError as exc:
                assert isinstance(got, SERError) and str(got) == str(exc)
                continue
            answered += 1
            assert got.to_dict(windows=True).keys() == want.to_dict(windows=True).keys()
            assert (got.emotion, got.top2, got.not_sure) == (want.emotion, want.top2, want.not_sure), f
            assert got.probabilities == pytest.approx(want.probabilities, abs=1e-6), f
            assert [w.probabilities for w in got.windows] == [pytest.approx(w.probabilities, abs=1e-6)
                                                               for w in want.windows], f
        assert answered >= len(files) - 2
        rows = batch.Scorer(str(model), windows=False).score(files)
        for (got, _), f in zip(rows, files):
            want, _ = batch.score_file(predictor, f, windows=False)
            assert got.keys() == want.keys() and got["file"] == f
            for key, value in want.items():
                assert got[key] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value), key


# ----------------------------------------------------------------------------- the engines
def test_local_engine_answers_like_ser_predict_past_a_corrupt_file_and_a_killed_worker(tmp_path, inputs, predicted,
                                                                                         tiny_model):
    killed: list[int] = []
    res = batch.run_batch([str(inputs["folder"] / "*")], tmp_path / "out", tiny_model, engine="local", workers=2,
                          chunk=1, part_files=2, windows=True, csv=True, progress=False,
                          on_part=kill_one_worker_after_first_part(killed))
    assert killed and res.restarts >= 1                      # a worker really died, and a new pool took over
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    table = pd.read_parquet(res.paths["results"])
    assert list(table["file"]) == inputs["files"]            # input order, each file once
    assert sorted(covered(tmp_path / "out")) == inputs["files"]
    assert_same_as_predict(table, predicted)
    assert res.errors == 2 and set(table.loc[table["error"].notna(), "file"]) == {
        str(inputs["folder"] / "corrupt.wav"), str(inputs["folder"] / "silent.wav")}
    wins = pd.read_parquet(res.paths["windows"])
    assert set(wins["file"]) == set(table.loc[table["error"].isna(), "file"])
    assert (tmp_path / "out" / "predictions.csv").exists() and (tmp_path / "out" / "windows.csv").exists()
    said = batch.answer_summary(res.paths["results"])          # the two error rows are no answers
    assert said.startswith(f"answers (most likely emotion of {CLIPS} files with speech): ")
    assert sum(int(part.split()[1]) for part in said.split(": ", 1)[1].split(";")[0].split(", ")) == CLIPS


def test_local_workers_each_keep_a_core_of_their_own_also_after_a_crash(tmp_path, inputs, tiny_model):
    """The local engine pins each worker to its own share of the cores as the pool starts it (session 29),
    and a pool started after a worker is killed is pinned the same way."""
    cores = sorted(os.sched_getaffinity(0))
    killed: list[int] = []
    kill = kill_one_worker_after_first_part(killed)
    seen: list[dict] = []

    def affinity(pid: int) -> list[int] | None:
        try:
            return sorted(os.sched_getaffinity(pid))
        except ProcessLookupError:      # a worker of a pool breaking under us may end between listing and reading
            return None

    def on_part(part, engine):
        shares = {pid: affinity(pid) for pid in engine.worker_pids() if pid not in killed}
        seen.append({pid: share for pid, share in shares.items() if share is not None})
        kill(part, engine)

    res = batch.run_batch(inputs["files"], tmp_path / "out", tiny_model, engine="local", workers=2, chunk=1,
                          part_files=2, progress=False, on_part=on_part)
    assert killed and res.restarts >= 1 and len(seen) >= 2
    first, last = seen[0], seen[-1]
    assert killed[0] in first and not last.keys() & first.keys()      # the last look is at the new pool
    for pool in (first, last):
        shares = list(pool.values())
        assert pool and all(share for share in shares)
        if len(cores) >= 2:                 # one core each, never the same one
            assert all(len(share) == 1 for share in shares) and len({s[0] for s in shares}) == len(shares)


def test_ray_engine_answers_like_ser_predict_when_an_actor_is_killed(tmp_path, inputs, predicted, tiny_model):
    pytest.importorskip("ray")
    killed: list[int] = []
    res = batch.run_batch(inputs["files"], tmp_path / "out", tiny_model, engine="ray", workers=2, chunk=1,
                          part_files=2, progress=False, on_part=kill_one_worker_after_first_part(killed))
    assert killed
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    table = pd.read_parquet(res.paths["results"])
    assert list(table["file"]) == inputs["files"]
    assert sorted(covered(tmp_path / "out")) == inputs["files"]
    assert_same_as_predict(table, predicted)
    assert res.errors == 2


def test_a_rerun_after_sigkill_of_the_whole_job_scores_only_the_rest(tmp_path, inputs, tiny_model, samples_dir):
    many = tmp_path / "many"          # enough files that the job is still running when it is killed
    many.mkdir()
    clip = sorted(samples_dir.glob("*.flac"))[0]
    for i in range(150):
        (many / f"clip-{i:03d}.flac").symlink_to(clip)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ser_core", "batch", str(many), "--out", str(out), "--model", str(tiny_model),
           "--workers", "1", "--chunk", "1", "--part-files", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    job = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list((out / batch.PARTS).glob("part-*[0-9].parquet"))) < 3 and job.poll() is None:
        assert time.monotonic() < deadline, "no part committed in 300 s"
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)       # the driver and its workers, all at once
    job.wait()
    first = {p.name: p.stat().st_mtime_ns for p in (out / batch.PARTS).glob("part-*[0-9].parquet")}
    done_before = covered(out)
    assert not (out / batch.RESULTS).exists() and 0 < len(done_before) < 150

    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"scored {150 - len(done_before)} of 150 files" in r.stdout
    assert f"{len(done_before)} already done" in r.stdout
    # enough hand-overs for a steady rate: the closing line gives it beside the whole run's
    assert re.search(r"clips/s; \d+\.\d after a \d+\.\d s start-up, \d+ already done by an earlier run\)", r.stdout)
    for name, mtime in first.items():        # the first run's parts are kept as they were
        assert (out / batch.PARTS / name).stat().st_mtime_ns == mtime
    assert sorted(covered(out)) == sorted(str(p) for p in many.iterdir())     # each file exactly once
    table = pd.read_parquet(out / batch.RESULTS)
    assert len(table) == 150 and table["error"].isna().all()
    assert table["emotion"].nunique() == 1                  # one clip, 150 names: one answer


def test_results_of_another_model_or_a_busy_folder_are_refused(tmp_path, tiny_model, sample_clip):
    out = tmp_path / "out"
    store = batch.PartStore(out, {"model_stamp": "a", "windows": False})
    with pytest.raises(SERError, match="another ser batch is writing"):
        batch.PartStore(out, {"model_stamp": "a", "windows": False})
    store.close()
    with pytest.raises(SERError, match="another model"):
        batch.run_batch([str(sample_clip)], out, tiny_model)
    r = ser("batch", tmp_path / "nothing-here-*.wav", "--out", tmp_path / "o2", "--model", tiny_model)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == "error: no audio files found in the given inputs"
    broken = tmp_path / "broken"               # a spec the driver can read, weights no worker can load
    broken.mkdir()
    shutil.copy(tiny_model / "spec.json", broken / "spec.json")
    (broken / "model.keras").write_bytes(b"not a keras file")
    r = ser("batch", sample_clip, "--out", tmp_path / "o3", "--model", broken, "--workers", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "could not be loaded" in last


def test_no_steady_rate_from_results_handed_over_together():
    """The bench's Ray run of 160 clips (/tmp/bench-s13.json): Ray Data handed its three batches to the
    driver within 29 ms at the end, after 13.45 s; the window from the first quarter on then timed the
    hand-over, not the scoring (3296.7 clips/s on 2 cores). Too few hand-overs: the whole run's rate."""
    def result(timeline, seconds):
        return batch.BatchResult(Path("out"), 160, 160, 0, 0, seconds, 0, [], timeline=timeline)

    bunched = result([(13.45, 64), (13.465, 128), (13.479, 160)], 14.6)
    assert bunched.steady_clips_per_s == bunched.clips_per_s == 160 / 14.6
    assert "only 2 hand-over(s)" in bunched.steady_note and "13.45 s" in bunched.steady_note
    assert result([(5.0, 160)], 5.5).steady_note == "1 hand-over(s) of results in all"
    # a pool handing over 16 files at a time, one batch every 0.4 s after a 1.2 s start-up
    steady = result([(1.2 + 0.4 * k, 16 * (k + 1)) for k in range(10)], 5.0)
    assert steady.steady_note is None
    assert steady.steady_clips_per_s == pytest.approx(16 / 0.4)       # from 48 files (2.0 s) to 144 (4.4 s)
    assert steady.steady_files == (48, 144)


def test_the_steady_rate_does_not_credit_work_done_before_its_window():
    """Two workers that started together, tasks of 64 files taking 0.55 s each (233 clips/s), hand over in
    pairs a few milliseconds apart. A window from the first hand-over past a quarter of the files to the last
    result counts the partner's 64 files, scored before the window opened, as scored in it (271 clips/s,
    what session 28 saw from a pool given 64-file tasks); whole cycles of the two workers do not."""
    def result(timeline, workers):
        return batch.BatchResult(Path("out"), 640, 640, 0, 0, timeline[-1][0], 0, [], timeline=timeline,
                                 workers=workers)

    pairs = [(0.7 + 0.55 * (k // 2 + 1) + 0.005 * (k % 2), 64 * (k + 1)) for k in range(10)]
    job = result(pairs, workers=2)
    (t1, n1), (t2, n2) = pairs[2], pairs[-1]
    assert (n2 - n1) / (t2 - t1) == pytest.approx(270.7, abs=0.1)    # the old window: a sixth too fast
    assert job.steady_note is None and job.steady_files == (192, 448)
    assert job.steady_clips_per_s == pytest.approx(128 / 0.55)
    # workers out of step (the second half a task behind) give the same rate, and one worker its own
    staggered = [(0.7 + 0.275 * (k + 1), 64 * (k + 1)) for k in range(10)]
    assert result(staggered, workers=2).steady_clips_per_s == pytest.approx(64 / 0.275)
    assert result(staggered, workers=1).steady_clips_per_s == pytest.approx(64 / 0.275)
    too_few = result(pairs[:7], workers=2)
    assert too_few.steady_clips_per_s == too_few.clips_per_s and "whole cycles of the 2 workers" in too_few.steady_note


def test_an_int8_job_answers_like_predict_on_int8_and_a_float_job_is_not_resumed_in_it(tmp_path, samples_dir):
    """``--runtime int8`` on the RAVDESS ensemble reaches every worker (the answers are the quantised model's), and one output
    folder never mixes answers of the two precisions."""
    from conftest import ENSEMBLE_MODEL
    from ser_core.predict import load_predictor

    clips = [str(p) for p in sorted(samples_dir.glob("*.flac"))[:3]]
    out = tmp_path / "out"
    r = ser("batch", *clips, "--out", out, "--model", ENSEMBLE_MODEL, "--workers", "1", "--runtime", "int8")
    assert r.returncode == 0, r.stderr
    table = pd.read_parquet(out / "predictions.parquet").set_index("file")
    int8, auto = load_predictor(ENSEMBLE_MODEL, runtime="int8"), load_predictor(ENSEMBLE_MODEL)
    differs = 0.0
    for clip in clips:
        q, f = int8.predict_file(clip, name=clip), auto.predict_file(clip, name=clip)
        for lab in int8.labels:
            assert table.loc[clip, f"p_{lab}"] == pytest.approx(q.probabilities[lab], abs=1e-6)
            differs = max(differs, abs(q.probabilities[lab] - f.probabilities[lab]))
    assert differs > 1e-6                             # the int8 copy, not the float export, answered
    counts = Counter(table.loc[clips, "best"]).most_common()   # the job's closing line sums its answers up
    shares = ", ".join(f"{e} {c} ({100 * c / 3:.0f} %)" for e, c in counts)
    assert (f"answers (most likely emotion of 3 files with speech): {shares}; "
            f"\"not sure\" on {int(table['not_sure'].sum())}") in r.stdout
    assert json.loads((out / "job.json").read_text())["precision"] == "int8"
    assert INT8_HINT not in r.stdout
    assert "start-up" not in r.stdout                 # one hand-over: no steady rate to give
    r = ser("batch", *clips, "--out", out, "--model", ENSEMBLE_MODEL, "--workers", "1")
    assert r.returncode == 2 and "another runtime precision" in r.stderr and "Traceback" not in r.stderr
    r = ser("batch", clips[0], "--out", tmp_path / "float", "--model", ENSEMBLE_MODEL, "--workers", "1")
    assert r.returncode == 0 and INT8_HINT in r.stdout    # a float job is told the faster copies are there


def test_the_shipped_default_probe_scores_a_batch_and_offers_no_int8_copy(tmp_path, samples_dir):
    """`ser batch` without --model, a real subprocess with a local worker: the shipped default, a probe on Whisper's
    encoder, scores each file with the probe's answer through `ser predict`'s path; the job does not point to int8
    copies a probe does not have, and `--runtime int8` is refused in one line before any folder is made."""
    from conftest import DEFAULT_MODEL
    from ser_core import lite
    from ser_core.predict import load_predictor

    whisper = DEFAULT_MODEL
    assert not lite.fresh_model(whisper, "int8") and not lite.fresh_model(whisper)
    clips = [str(p) for p in sorted(samples_dir.glob("*.flac"))[::11]]
    out = tmp_path / "out"
    r = ser("batch", *clips, "--out", tmp_path / "int8", "--workers", "1", "--runtime", "int8")
    assert r.returncode == 2 and "Traceback" not in r.stderr and not (tmp_path / "int8").exists()
    assert r.stderr.strip() == (f"error: {whisper} is a probe on Whisper's encoder: it has no network exports, so "
                                "--runtime int8 does not apply (leave --runtime out; its encoder runs as the probe's "
                                "spec records)")
    r = ser("batch", *clips, "--out", out, "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert INT8_HINT not in r.stdout
    assert json.loads((out / "job.json").read_text())["model"] == str(whisper)
    table = pd.read_parquet(out / "predictions.parquet").set_index("file")
    probe = load_predictor(whisper)
    for clip in clips:
        want = probe.predict_file(clip, name=clip)
        assert table.loc[clip, "best"] == want.best
        assert table.loc[clip, "p_angry"] == pytest.approx(want.probabilities["angry"], abs=1e-5)
