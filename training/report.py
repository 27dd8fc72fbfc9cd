"""Rewrite the README's result tables from the files the measurements wrote.

Blocks between `<!-- NAME:start -->` and `<!-- NAME:end -->` are replaced:
`default` (models/default/metrics.json and robustness.json), `zoo`
(training/results/*.json via training/zoo.py) and `bench`
(training/results/bench.json from `python -m ser_core.bench --json`).

    python training/report.py
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "training"))


def pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def default_block() -> str:
    d = ROOT / "models" / "default"
    m = json.loads((d / "metrics.json").read_text())
    lines = [f"Protocol: **{m['protocol']}** (speaker-independent: no actor is in both training and test data; "
             "normalisation statistics, early stopping and model selection use training actors only).", "",
             "| metric | value |", "|---|---|"]
    for key, name in (("accuracy", "accuracy"), ("uar", "UAR (unweighted average recall)"),
                      ("macro_f1", "macro F1"), ("weighted_f1", "weighted F1")):
        lines.append(f"| {name} | {pct(m[key]) if key in ('accuracy', 'uar') else f'{m[key]:.3f}'} |")
    for g in ("female", "male"):
        lines.append(f"| {g} accuracy | {pct(m['per_gender'][g]['accuracy'])} |")
    if m.get("per_fold"):
        folds = ", ".join(f"{pct(v['accuracy'])}" for _, v in sorted(m["per_fold"].items()))
        lines.append(f"| per fold (1–6) | {folds} |")
    fm = m.get("final_model", {})
    if fm:
        lines += ["", f"The shipped model itself is the same recipe trained on {fm['trained_on']} for {fm['epochs']} "
                      f"epochs ({fm['epochs_rule']}); the figures above are its recipe's out-of-fold estimate."]
    rob = d / "robustness.json"
    if rob.exists():
        r = json.loads(rob.read_text())
        lines += ["", "Robustness: the same six fold models, their test audio passed through a channel shift "
                      "(training audio untouched; drop = clean minus shifted accuracy):", "",
                  "| test audio | accuracy | UAR | drop (points) |", "|---|---|---|---|"]
        for name, v in r["results"].items():
            lines.append(f"| {name} | {pct(v['accuracy'])} | {pct(v['uar'])} | {v.get('drop', 0):+.1f} |")
        lines += ["", f"Largest drop: {r['max_drop']:.1f} points ({r['worst_shift']}); the target of "
                      f"{r['target_drop_points']:.0f} points is {'met' if r['within_target'] else 'NOT met'}. "
                      "Reproduce: `ser robustness <cv folder>`."]
    return "\n".join(lines)


def zoo_block() -> str:
    from zoo import table

    return table()


def bench_block() -> str:
    b = json.loads((ROOT / "training" / "results" / "bench.json").read_text())
    if "markdown" in b:
        return b["markdown"]
    return "```\n" + json.dumps(b, indent=1) + "\n```"


BLOCKS = {"default": default_block, "zoo": zoo_block, "bench": bench_block}


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name, fn in BLOCKS.items():
        try:
            body = fn()
        except FileNotFoundError as exc:
            print(f"{name}: skipped ({exc.filename} missing)")
            continue
        text, n = re.subn(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)",
                          lambda mt: mt.group(1) + body + "\n" + mt.group(2), text, flags=re.S)
        print(f"{name}: {'updated' if n else 'no markers in README'}")
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
