"""Benchmark helpers whose figures the README quotes."""
import pytest

from ser_core import models
from ser_app import bench
from ser_core.tf_setup import keras as _keras

from conftest import DEFAULT_MODEL, ENSEMBLE_MODEL


def test_forward_flops_count_conv_and_dense_multiply_adds():
    keras = _keras()
    inp = keras.Input((8, 10, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)            # 8*10*4 outputs x 3*3*3 taps
    x = keras.layers.MaxPooling2D(2)(x)                            # (4, 5, 4): not counted
    x = keras.layers.Reshape((4, 20))(x)
    x = keras.layers.Dense(6)(x)                                   # 4 positions x 20 -> 6
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(2)(x)                                 # 6 -> 2
    model = keras.Model(inp, out)
    assert bench.forward_flops(model) == 2 * (8 * 10 * 4 * 27 + 4 * 20 * 6 + 6 * 2)


def test_forward_flops_of_the_default_architecture_are_dominated_by_its_convolutions():
    model = models.build("ser_crnn", (64, 94, 3), 8, width=32, units=64)
    flops = bench.forward_flops(model)
    conv1 = 2 * 64 * 94 * 32 * 27                                   # first block alone, full resolution
    assert 1.5e8 < flops < 2.5e8 and flops > 10 * conv1


def test_an_ensemble_epoch_is_one_epoch_of_every_member_counted_as_often_as_it_appears(capsys):
    from ser_app.bench import _verdicts, ensemble_epoch

    def arch(project, plain, project_min, plain_min):
        return {"epochs": {"project": {"median_ms": project, "min_ms": project_min},
                           "plain": {"median_ms": plain, "min_ms": plain_min}}, "ratio": round(plain / project, 2)}

    training = {"a": arch(2000, 3600, 1800, 3400), "b": arch(3000, 9000, 2900, 8000)}
    d = ensemble_epoch(training, ["a", "a", "b"])
    assert d["median_ms"] == {"project": 7000, "plain": 16200, "ratio": 2.31}
    assert d["min_ms"] == {"project": 6500, "plain": 14800, "ratio": 2.28}
    assert "one epoch of every member 7.00 s vs 16.20 s plain, 2.31x" in capsys.readouterr().out
    lines = _verdicts({"training": training, "default_epoch": d})
    assert lines[0].startswith("  [ok] training epoch, default model (every member): 2.31x")
    assert lines[1].startswith("  [--] training epoch, a: 1.8x")


def test_batch_summary_takes_medians_and_compares_engines_at_the_same_worker_count():
    from ser_app.bench import batch_summary

    def run(engine, workers, steady, cpu_ms, rss):
        return {"engine": engine, "workers": workers, "steady_clips_per_s": steady, "clips_per_s": steady / 2,
                "startup_s": 4.0, "cpu_ms_per_clip": cpu_ms, "worker_peak_rss_mb": rss}

    runs = [run("local", 1, 40.0, 20.0, [300]), run("local", 2, 70.0, 24.0, [310, 320]),
            run("ray", 2, 63.0, 30.0, [330, 340]), run("ray", 2, 77.0, 34.0, [350, 360]),
            run("local", 2, 80.0, 16.0, [300, 300]), run("local", 1, 50.0, None, [290])]
    s = batch_summary(runs, cpus=2)
    assert s["configs"]["local-1"]["steady_clips_per_s"] == 45.0
    assert s["configs"]["local-1"]["cpu_ms_per_clip"] == 20.0            # a run without a CPU figure is left out
    assert s["configs"]["ray-2"]["worker_rss_mb"] == 345.0
    assert s["configs"]["local-2"]["cpu_bound_clips_per_s"] == 100.0     # 2 workers / 20 ms
    assert s["configs"]["ray-2"]["cpu_bound_clips_per_s"] == 62.5        # 2 workers / 32 ms
    assert s["scaling"] == round(75.0 / 45.0, 2) and s["ray_vs_local"] == round(70.0 / 75.0, 2)
    assert s["ray_vs_local_cpu"] == 0.62
    assert s["per_core_clips_s"] == 37.5 and s["per_core_cpu_bound_clips_s"] == 50.0


def test_the_million_hour_projection_counts_clips_and_one_window_per_second_of_long_audio():
    from ser_app.bench import projection

    p = projection(50.0, hours=1e6, clip_seconds=3.6, nodes=10, cores_per_node=36)
    assert p["clips"] == 1e9 and p["long_windows"] == 3.6e9
    assert p["core_hours_clips"] == pytest.approx(1e9 / 50 / 3600)
    assert p["wall_days_clips"] == pytest.approx(1e9 / 50 / 3600 / 360 / 24)
    assert p["core_hours_long"] == pytest.approx(3.6 * p["core_hours_clips"])


def test_batch_verdicts_judge_the_cpu_bound_rate_and_the_engine_gap():
    from ser_app.bench import _verdicts

    res = {"machine": {"cpus": 2}, "batch": {
        "configs": {"local-1": {"steady_clips_per_s": 300.0, "cpu_bound_clips_per_s": 400.0},
                    "local-2": {"steady_clips_per_s": 20.0, "cpu_bound_clips_per_s": 90.0},
                    "ray-2": {"steady_clips_per_s": 15.0, "cpu_bound_clips_per_s": 80.0}},
        "ray_vs_local": 0.75, "ray_vs_local_cpu": 0.89}}
    lines = _verdicts(res)
    assert lines[0].startswith("  [--] batch on 2 cores: 90.0 clips/s CPU-bound, 20.0 measured (target 250)")
    assert lines[1].startswith("  [ok] batch engines agree: ray / local 0.89 CPU-bound, 0.75 measured")


def test_batch_profile_names_every_network_and_adds_up(samples_dir):
    from ser_app.bench import batch_profile
    from ser_core.modeldir import member_dirs

    prof = batch_profile(ENSEMBLE_MODEL, [str(p) for p in sorted(samples_dir.glob("*.flac"))], n_clips=6)
    assert prof["clips"] == 6
    assert set(prof["infer_ms"]) == {d.name for d in member_dirs(ENSEMBLE_MODEL)}
    covered = [m for group in prof["features_ms"] for m in group.split("+")]
    assert sorted(covered) == sorted(prof["infer_ms"])          # every member's features, each once
    assert len(prof["features_ms"]) < len(prof["infer_ms"])     # members that hear the same features share them
    assert len(prof["features_ms"]) == 2                        # ... and the ensemble's two front ends their STFTs
    parts = prof["decode_ms"] + sum(prof["features_ms"].values()) + sum(prof["infer_ms"].values())
    assert prof["total_ms"] == pytest.approx(parts, abs=0.05) and prof["total_ms"] > 0
    assert set(prof["worker_ms"]) == {"auto", "int8"} and min(prof["worker_ms"].values()) > 0    # the shipped copies
    # three ser_crnn (0.18, 0.18, 0.36 GFLOP a window) and the image CNN (0.41 a window, one or more windows)
    assert 1.1 < prof["gflop_per_clip"] < 2.5
    assert prof["network_bound_clips_per_s"] == pytest.approx(
        prof["cpus"] * 1000 / sum(prof["infer_ms"].values()), rel=1e-3)


def test_batch_profile_of_a_probe_says_in_one_line_that_it_is_for_networks(samples_dir, capsys):
    """The shipped default is a probe on Whisper's encoder: no network to profile, so no crash but one line."""
    from ser_app.bench import batch_profile

    prof = batch_profile(DEFAULT_MODEL, [str(p) for p in sorted(samples_dir.glob("*.flac"))], n_clips=6)
    assert set(prof) == {"skipped"} and "models of networks" in prof["skipped"]
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "skipped" in out[0] and "models of networks" in out[0]


def test_network_ceiling_is_the_arithmetic_over_the_measured_rate():
    from ser_app.bench import network_ceiling

    c = network_ceiling(1.3e9, 15.0, 2)
    assert c == {"gflop_per_clip": 1.3, "network_gflop_per_s": 86.7, "cpus": 2, "network_bound_clips_per_s": 133.3}


def test_cpu_of_a_worker_that_has_exited_still_counts():
    """Ray's actors end with the job, before its last CPU sample: their CPU time must not vanish."""
    import subprocess
    import sys
    import time

    from ser_app.bench import _tree_cpu_s

    seen: dict = {}
    base = _tree_cpu_s()                     # this process alone so far
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.4: pass\ntime.sleep(30)"])
    try:
        while _tree_cpu_s(seen) - base < 0.35:   # until the child's burn shows (no timing asserted)
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    assert _tree_cpu_s(seen) - base >= 0.35      # the exited child still counts ...
    assert _tree_cpu_s() - base < 0.2            # ... where a reading without memory has lost it


def test_a_configuration_without_a_steady_rate_keeps_its_note_and_enters_no_ratio():
    from ser_app.bench import batch_summary

    note = "only 2 hand-over(s) of results after the first quarter of the files"
    runs = [{"engine": "local", "workers": 2, "steady_clips_per_s": 45.0, "clips_per_s": 31.0, "startup_s": 1.9,
             "cpu_ms_per_clip": 43.0, "worker_peak_rss_mb": [138], "steady_note": None},
            {"engine": "ray", "workers": 2, "steady_clips_per_s": 11.0, "clips_per_s": 11.0, "startup_s": 13.45,
             "cpu_ms_per_clip": None, "worker_peak_rss_mb": [350], "steady_note": note}]
    s = batch_summary(runs, cpus=2)
    assert s["configs"]["ray-2"]["steady_note"] == note and s["configs"]["ray-2"]["steady_clips_per_s"] == 11.0
    assert "steady_note" not in s["configs"]["local-2"]
    assert "ray_vs_local" not in s and "ray_vs_local_cpu" not in s


def test_a_ray_job_of_a_few_batches_reports_no_steady_rate_and_no_cpu_per_clip(tmp_path, tiny_model, samples_dir):
    """The bench's Ray configuration, for real: 160 files are three Ray batches of at most 64, handed to the
    driver together at the end, so neither a steady rate nor the CPU per clip can be timed from their arrival
    (/tmp/bench-s13.json had 3296.7 clips/s and 0.8 CPU ms per clip for an ensemble costing ~37)."""
    pytest.importorskip("ray")
    from ser_app.bench import _linked, batch_run

    clips = sorted(str(p) for p in samples_dir.glob("*.flac"))
    files = _linked((clips * (160 // len(clips) + 1))[:160], tmp_path / "in")
    r = batch_run(tiny_model, files, tmp_path / "out", "ray", 2)
    assert r["clips"] == 160 and r["errors"] == 0
    assert r["steady_clips_per_s"] == r["clips_per_s"] and r["cpu_ms_per_clip"] is None
    assert r["steady_note"] and 1 <= r["handovers"] <= 3


def test_the_int8_runtime_is_judged_on_its_own_line_and_its_answers_compared(tmp_path):
    import pandas as pd

    from ser_app.bench import _verdicts, answers_agree, batch_summary, config_key

    res = {"machine": {"cpus": 2}, "batch": {
        "configs": {"local-2": {"steady_clips_per_s": 80.0, "cpu_bound_clips_per_s": 90.0},
                    "local-2-int8": {"steady_clips_per_s": 150.0, "cpu_bound_clips_per_s": 170.0}}}}
    lines = _verdicts(res)
    assert lines[0].startswith("  [--] batch on 2 cores: 90.0 clips/s CPU-bound")
    assert lines[1].startswith("  [--] batch on 2 cores, int8 runtime: 170.0 clips/s CPU-bound")
    assert config_key({"engine": "local", "workers": 2, "runtime": "int8"}) == "local-2-int8"
    assert config_key({"engine": "ray", "workers": 2, "runtime": "auto"}) == "ray-2"
    runs = [{"engine": engine, "workers": 2, "runtime": rt, "steady_clips_per_s": v, "clips_per_s": v,
             "startup_s": 1.0, "cpu_ms_per_clip": ms, "worker_peak_rss_mb": [100]}
            for engine, rt, v, ms in (("local", "auto", 80.0, 20.0), ("local", "int8", 150.0, 10.0),
                                      ("ray", "int8", 120.0, 12.5))]
    s = batch_summary(runs, 2)
    assert s["int8_vs_float_cpu"] == 2.0
    assert s["ray_vs_local_int8"] == 0.8 and s["ray_vs_local_int8_cpu"] == 0.8     # int8 engines with each other
    assert "ray_vs_local" not in s                                                 # no float Ray run to compare
    lines = _verdicts({"machine": {"cpus": 2}, "batch": s})
    assert lines[0].startswith("  [--] batch on 2 cores: 100.0 clips/s CPU-bound")
    assert lines[1].startswith("  [--] batch on 2 cores, int8 runtime: 200.0 clips/s CPU-bound")   # the faster engine
    assert lines[2].startswith("  [ok] batch engines agree, int8 runtime: ray / local 0.80 CPU-bound, 0.8 measured")
    for name, p_sad in (("a", [0.6, 0.2, 0.5]), ("b", [0.61, 0.3, 0.5])):
        (tmp_path / name).mkdir()
        pd.DataFrame({"file": ["x", "y", "z"], "emotion": ["sad", "not sure" if name == "a" else "happy", "sad"],
                      "p_sad": p_sad}).to_parquet(tmp_path / name / "predictions.parquet")
    assert answers_agree(tmp_path / "a", tmp_path / "b") == {"files": 3, "same_answer": round(2 / 3, 4),
                                                             "max_abs_prob_diff": 0.1}


def test_one_clip_is_timed_with_the_int8_copies_beside_the_float_ones(tmp_path, tiny_model, samples_dir, capsys):
    """Section 2 times `--runtime int8` in the same interleaved run as the float path and the seeds' path, and
    says how often its answer is the float one's; a model without int8 copies gets no such row."""
    import shutil

    from ser_app.bench import bench_end_to_end
    from ser_core import lite

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    clips = sorted(str(p) for p in samples_dir.glob("*.flac"))[:3]
    plain = bench_end_to_end(model, clips, clips[:2], repeats=2, batch_repeats=1)
    assert "int8" not in plain["single"] and "int8 runtime" not in capsys.readouterr().out
    assert plain["reference_path"] == "the model's networks"        # a Keras model's reference: its own networks
    lite.export(model, int8=True, log=lambda *a: None)
    res = bench_end_to_end(model, clips, clips[:2], repeats=2, batch_repeats=1)
    single = res["single"]
    assert {"project", "reference", "int8"} <= set(single) and single["int8"]["median_ms"] > 0
    assert 0.0 <= single["int8_same_answer"] <= 1.0 and single["int8_ratio"] > 0
    row = res["consecutive"]                  # the same paths timed with clips one after another
    assert {"project", "reference", "int8"} <= set(row) and row["int8"]["n"] == row["reference"]["n"] == 2 * len(clips)
    assert row["int8_ratio"] == round(row["reference"]["median_ms"] / row["int8"]["median_ms"], 2)
    out = capsys.readouterr().out
    assert out.count("one clip, --runtime int8") == 2 and "clips one after another" in out


def test_consecutive_timing_gives_each_path_its_own_turns():
    """Each function runs ``block`` calls in a row after one uncounted call, the functions taking turns."""
    from ser_app.bench import consecutive

    calls = []
    res = consecutive({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))}, rounds=2, block=3)
    turn = lambda k: [(k, 0), (k, 0), (k, 1), (k, 2)]          # noqa: E731
    assert calls == turn("a") + turn("b") + turn("a") + turn("b")
    assert res["a"]["n"] == res["b"]["n"] == 6


def test_the_speed_page_shows_what_the_committed_bench_measured():
    """docs/speed.md's bench block is training/report.py's rendering of training/results/bench.json, and it
    carries the issues' speed rows: one clip with the int8 copies, `ser predict` cold, `ser batch` per engine."""
    import json
    import re
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'training'); "
                          "from report import bench_block; print(bench_block(), end='')"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    page = (ROOT / "docs" / "speed.md").read_text()
    block = re.search(r"<!-- bench:start -->\n(.*?)\n<!-- bench:end -->", page, flags=re.S).group(1)
    assert block == out.stdout
    bench = json.loads((ROOT / "training" / "results" / "bench.json").read_text())
    int8 = bench["batch"]["configs"]["local-2-int8"]
    assert f"| `ser batch` of {bench['batch']['clips']} clips, local-2-int8 " in block
    assert f"{int8['steady_clips_per_s']:.0f} clips/s after start-up" in block
    row = bench["end_to_end"]["consecutive"]
    assert (f"clips one after another, `--runtime int8` | {row['int8']['median_ms']:.1f} / " in block
            and "≤ 10 ms, ≥ 5x (issue 15)" in block)
    assert f"interleaved with the other paths', `--runtime int8` | {bench['end_to_end']['single']['int8']['median_ms']:.1f} / " in block
    assert f"| `ser predict` of one clip, cold | {bench['predict_process']['wall_s']:.2f} s" in block


def test_every_model_folder_is_timed_on_the_same_clips_against_the_first(tmp_path, tiny_model, samples_dir, capsys,
                                                                         monkeypatch):
    """Section 2b: each model folder (the shipped default first, then the others by name) answers the same clips
    in interleaved turns; each row after the first is compared with the default's."""
    from ser_app.bench import bench_models

    models = tmp_path / "models"
    models.mkdir()
    (models / "default").symlink_to(DEFAULT_MODEL)
    (models / "ravdess").symlink_to(ENSEMBLE_MODEL)
    (models / "tiny").symlink_to(tiny_model)
    monkeypatch.setenv("SER_MODELS_DIR", str(models))
    clips = sorted(str(p) for p in samples_dir.glob("*.flac"))[:2]
    res = bench_models(clips, repeats=2)
    assert list(res) == ["default", "ravdess", "tiny"]
    assert res["default"]["arch"] == "whisper_probe" and res["ravdess"]["arch"] == "ensemble"
    assert res["tiny"]["median_ms"] > 0 and res["tiny"]["n"] == 2
    out = capsys.readouterr().out
    assert "2b. One clip end to end" in out and out.count("x (cpu") == 2       # ravdess and tiny vs the default


def test_whisper_setups_are_timed_on_the_same_clips_against_the_first(samples_dir, capsys):
    """Section 2c: each way of running Whisper's encoder (session 33's 30 s window first) makes a vector of the
    same clips in interleaved turns, each row after the first compared with it."""
    from ser_app.bench import bench_whisper_setups, whisper_setups

    clips = sorted(str(p) for p in samples_dir.glob("*.flac"))[:2]
    res = bench_whisper_setups(clips, repeats=2)
    assert list(res) == list(whisper_setups()) and len(res) == 5
    assert all(r["n"] == 2 and r["median_ms"] > 0 for r in res.values())
    out = capsys.readouterr().out
    assert "2c. Whisper's encoder" in out and out.count("faster than WNA") == 4


def test_whisper_setups_include_the_probes_of_sessions_35_and_36():
    """WU2S is the shipped default's recorded setup: WU2M (session 35's probe) hearing the speech span only."""
    import json

    from conftest import ROOT
    from ser_app.bench import whisper_setups
    from ser_core.whisper import Setup

    setups = list(whisper_setups().items())
    (m_name, wu2m), (s_name, wu2s) = setups[-2:]
    assert m_name.startswith("WU2M: ") and s_name.startswith("WU2S: ")
    spec = json.loads((ROOT / "models" / "default" / "spec.json").read_text())
    assert wu2s == Setup(**spec["extra"]["encoder_setup"]) and wu2s.speech_only
    assert wu2s == Setup(unpadded=True, layers=2, level=True, compute="int8", pooling="both", speech_only=True)
    assert wu2m == Setup(unpadded=True, layers=2, level=True, compute="int8", pooling="both") and not wu2m.speech_only


def test_a_probe_is_timed_against_the_seeds_path_with_a_seed000_cnn_and_no_int8_row(samples_dir, capsys):
    """Section 2 on a linear probe on Whisper's encoder (no Keras network to run the seeds' way): the reference is
    issue 15's own seeds' path, librosa and a seed-000 CNN, and there is no int8 row (a probe refuses a forced
    `runtime`)."""
    from conftest import ROOT
    from ser_app.bench import bench_end_to_end

    clips = sorted(str(p) for p in samples_dir.glob("*.flac"))[:2]
    res = bench_end_to_end(ROOT / "models" / "default", clips, clips, repeats=2, batch_repeats=1)
    assert res["reference_path"] == "seed000_cnn" and res["arch"] == "whisper_probe"
    for part in ("single", "consecutive"):
        assert set(res[part]) & {"int8", "int8_ratio", "int8_same_answer"} == set()
        assert res[part]["reference"]["median_ms"] > 0 and res[part]["project"]["median_ms"] > 0
    assert res["single"]["reference"]["n"] == 2 and res["consecutive"]["reference"]["n"] == 2 * len(clips)
    assert res["consecutive"]["project_ratio"] == round(res["consecutive"]["reference"]["median_ms"]
                                                       / res["consecutive"]["project"]["median_ms"], 2)
    assert res["batch"]["clips"] == 2 and res["batch"]["reference"]["n"] == 1
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("2. End-to-end"))
    assert "seed000_cnn" in header and "int8" not in out                 # the header line says which reference



def test_without_an_int8_row_one_clip_is_judged_on_the_project_path_clips_one_after_another():
    from ser_app.bench import _verdicts

    def end_to_end(consecutive_ms, ratio):
        timing = lambda ms: {"median_ms": ms, "p95_ms": ms, "min_ms": ms, "cpu_median_ms": ms, "n": 8}  # noqa: E731
        return {"end_to_end": {"reference_path": "seed000_cnn",
                               "single": {"project": timing(12.0), "reference": timing(90.0), "ratio": 7.5},
                               "consecutive": {"project": timing(consecutive_ms), "reference": timing(80.0),
                                               "project_ratio": ratio}}}

    ok = _verdicts(end_to_end(9.5, 8.42))
    assert ok[0].startswith("  [ok] end-to-end: 7.5x, 12.0 ms median")
    assert ok[1] == ("  [ok] one clip, clips one after another: 9.5 ms median, 8.42x the seeds' path (12.0 ms right "
                     "after the other paths' calls; targets <= 10 ms, 5x)")
    slow, few = _verdicts(end_to_end(10.5, 7.62))[1], _verdicts(end_to_end(9.5, 4.9))[1]
    assert slow.startswith("  [--] one clip, clips one after another: 10.5 ms median, 7.62x")
    assert few.startswith("  [--] one clip, clips one after another: 9.5 ms median, 4.9x")
    assert not any("int8" in line for line in ok + [slow, few])
