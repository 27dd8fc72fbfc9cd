"""Benchmark every architecture on the same protocols and print the README table.

For each architecture: `ser cv` on the EmoBox 6-fold speaker-independent protocol
and one run on the random 80/20 clip split (speaker-DEPENDENT, as seed 000
reported). Results go to training/results/<arch>.json as they finish, so a
partial sweep is kept.

    python training/zoo.py [--archs a,b] [--skip-random] [--table-only]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser_core import models, runs, schema  # noqa: E402

RESULTS = ROOT / "training" / "results"
ORDER = ["seed004_dnn", "seed000_cnn", "seed002_cnn_lstm", "seed001_logmel_cnn", "seed003_image_cnn", "ser_crnn",
         "ensemble"]


def ser(*args: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "ser_core", *args], check=True, cwd=ROOT)
    return time.monotonic() - t0


def record_cv(result: dict, cv_dir: Path, secs: float, command: str) -> None:
    m = json.loads((cv_dir / schema.METRICS).read_text())
    result["cv"] = {k: m[k] for k in ("protocol", "accuracy", "uar", "macro_f1", "weighted_f1")}
    result["cv"].update({f"{g}_accuracy": m["per_gender"][g]["accuracy"] for g in ("female", "male")})
    result["cv"]["per_fold"] = m.get("per_fold", {})
    result["cv"]["wall_seconds"] = round(secs)
    result["cv"]["command"] = command
    result["cv"]["dir"] = str(cv_dir)


def run_arch(arch: str, skip_random: bool, budget: list[str]) -> dict:
    out = RESULTS / f"{arch}.json"
    result = json.loads(out.read_text()) if out.exists() else {"arch": arch}
    if "cv" not in result:
        cv_dir = runs.runs_dir() / f"zoo-cv-{arch}"
        secs = ser("cv", "--arch", arch, "--protocol", "emobox6", "--out", str(cv_dir), *budget)
        record_cv(result, cv_dir, secs, " ".join(["ser cv --arch", arch, "--protocol emobox6", *budget]))
        out.write_text(json.dumps(result, indent=1))
    if not skip_random and "random" not in result:
        run_dir = runs.runs_dir() / f"zoo-random-{arch}"
        secs = ser("train", "--arch", arch, "--protocol", "random", "--run-dir", str(run_dir), *budget)
        record_random(result, run_dir, secs, " ".join(["ser train --arch", arch, "--protocol random", *budget]))
        out.write_text(json.dumps(result, indent=1))
    return result


def record_random(result: dict, run_dir: Path, secs: float, command: str) -> None:
    m = json.loads((run_dir / schema.METRICS).read_text())
    result["random"] = {"protocol": m["protocol"], "accuracy": m["accuracy"], "uar": m["uar"],
                        "wall_seconds": round(secs), "command": command}


def recipe_text(cfg: dict) -> str:
    """The settings of a run's config.json that differ between recipes, as JSON."""
    keys = ("arch", "epochs", "patience", "schedule", "learning_rate", "mixup", "channel_aug", "channel_profile",
            "n_val_speakers", "arch_params", "features", "precision", "ensemble")
    return json.dumps({k: cfg[k] for k in keys if k in cfg})


def wall(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def table() -> str:
    rows = ["| architecture | accuracy | UAR | macro F1 | female acc | male acc | wall time | "
            "random 80/20 split (speaker-DEPENDENT) |",
            "|---|---|---|---|---|---|---|---|"]
    for arch in ORDER:
        f = RESULTS / f"{arch}.json"
        r = json.loads(f.read_text()) if f.exists() else {}
        cv = r.get("cv")
        if not cv and arch == "ensemble":
            continue
        if not cv:
            rows.append(f"| `{arch}` | not measured yet: `python training/zoo.py --archs {arch}` | | | | | | |")
            continue
        rnd = r.get("random")
        name = f"`{arch}`" if arch != "ensemble" else "**RAVDESS ensemble** (`models/ravdess`)"
        rows.append(f"| {name} | {cv['accuracy']:.1%} | {cv['uar']:.1%} | {cv['macro_f1']:.3f} | "
                    f"{cv['female_accuracy']:.1%} | {cv['male_accuracy']:.1%} | {wall(cv['wall_seconds'])} | "
                    + (f"{rnd['accuracy']:.1%} |" if rnd else "not run |"))
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(a for a in ORDER if a != "ensemble"))
    ap.add_argument("--skip-random", action="store_true")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--from-cv", metavar="ARCH=DIR",
                    help="record a finished cross-validation (e.g. the default model's) instead of running one")
    ap.add_argument("--from-random", metavar="ARCH=RUN_DIR",
                    help="record a finished random-split run (e.g. of the default recipe) instead of running one")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.from_random:
        arch, run_dir = args.from_random.split("=", 1)
        out = RESULTS / f"{arch}.json"
        result = json.loads(out.read_text()) if out.exists() else {"arch": arch}
        cfg = json.loads((Path(run_dir) / schema.CONFIG).read_text())
        m = json.loads((Path(run_dir) / schema.METRICS).read_text())
        if cfg.get("arch") == "ensemble":      # an `ser ensemble cv` of members' random-split runs
            record_random(result, Path(run_dir), m.get("wall_seconds", 0),
                          "ser cv --protocol random --split-seed 0 for each member, then ser ensemble cv (members: "
                          + ", ".join(recipe_text(c) for c in cfg.get("member_configs", [])) + ")")
        else:
            record_random(result, Path(run_dir), m.get("train_seconds", 0),
                          "ser train --protocol random, settings " + recipe_text(cfg))
        out.write_text(json.dumps(result, indent=1))
    if args.from_cv:
        arch, cv_dir = args.from_cv.split("=", 1)
        cfg = json.loads((Path(cv_dir) / schema.CONFIG).read_text())
        result = {"arch": arch}
        out = RESULTS / f"{arch}.json"
        if out.exists():
            result.update({k: v for k, v in json.loads(out.read_text()).items() if k != "cv"})
        m = json.loads((Path(cv_dir) / schema.METRICS).read_text())
        record_cv(result, Path(cv_dir), m.get("wall_seconds", 0),
                  ("ser ensemble cv (members: " + ", ".join(m.get("members", [])) + ")") if arch == "ensemble"
                  else "ser cv --protocol emobox6, settings " + recipe_text(cfg))
        out.write_text(json.dumps(result, indent=1))
    elif not args.table_only and not args.from_random:
        for arch in args.archs.split(","):
            models.get(arch)
            run_arch(arch, args.skip_random, ["--epochs", str(args.epochs), "--patience", str(args.patience)])
    print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
