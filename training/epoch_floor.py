"""Measure what one epoch costs on a tiny training set: the fixed part of an epoch (validation pass,
checkpoint, BatchNorm recalibration) that the per-clip figures of bench.json cannot show.

For each architecture, `ser train` on the bundled samples (16 training clips, 8 validation clips)
for a few epochs; the median of the epochs after the first (which also builds the graph) goes to
training/results/epoch_floor.json with the command, the training clips and the load average, so
the Train page's duration estimate says where its floor comes from.

    python training/epoch_floor.py [--archs a,b] [--epochs 4]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser_core import models, runs  # noqa: E402
from ser_core.machine import usable_cpus  # noqa: E402

OUT = ROOT / "training" / "results" / "epoch_floor.json"


def measure(arch: str, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = ["train", "--arch", arch, "--dataset", f"ravdess:{ROOT / 'data' / 'samples'}", "--epochs",
                   str(epochs), "--patience", str(epochs), "--val-speakers", "1", "--batch-size", "8",
                   "--run-dir", str(run_dir)]
        env = {**os.environ, "SER_RUNS_DIR": tmp, "SER_CACHE_DIR": str(Path(tmp) / "cache"),
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        load = os.getloadavg()[0]
        subprocess.run([sys.executable, "-m", "ser_core", *command], check=True, cwd=ROOT, env=env,
                       capture_output=True)
        rows = runs.read_history(run_dir)
        later = [float(r["seconds"]) for r in rows if r.get("epoch") != 1]
        clips = json.loads((run_dir / "model" / "spec.json").read_text())["extra"]["train_clips"]
    return {"median_s": round(statistics.median(later), 3), "epochs": [round(float(r["seconds"]), 3) for r in rows],
            "train_clips": clips, "load_avg_1min": round(load, 2),
            "command": "ser " + " ".join(command[:-2]).replace(str(ROOT) + "/", "")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", help="comma-separated subset (default: all)")
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args()
    result = json.loads(OUT.read_text()) if OUT.exists() else {}
    result["cpus"] = usable_cpus()
    for arch in args.archs.split(",") if args.archs else models.names():
        result.setdefault("archs", {})[arch] = measure(arch, args.epochs)
        print(arch, result["archs"][arch]["median_s"], "s an epoch", flush=True)
        OUT.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
