"""Rewrite the README's result tables from the files the measurements wrote.

Blocks between `<!-- NAME:start -->` and `<!-- NAME:end -->` are replaced:
`default` (models/default/metrics.json and robustness.json), `zoo`
(training/results/*.json via training/zoo.py) and `bench`
(training/results/bench.json from `python -m ser_app.bench --json`).

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
    if fm.get("members"):
        lines += ["", "It is an ensemble: the mean of its members' probabilities. Each member's own "
                      "cross-validation on the same folds, and its final model:", "",
                  "| member | its own CV accuracy | final model |", "|---|---|---|"]
        for mem, acc in zip(fm["members"], m.get("member_accuracy", [])):
            r = mem.get("recipe", {})
            aug = f"channel augmentation {r.get('channel_aug') or 0:g}"
            if r.get("channel_aug"):
                aug += f", {r.get('channel_profile', 'v1')} noise profile"
            aug += "".join(f", {k} {v}" for k, v in sorted((r.get("features") or {}).items()))
            lines.append(f"| `{mem['arch']}` (seed {r.get('seed', 0)}, {aug}) "
                         f"| {pct(acc)} | {mem['trained_on']}, {mem['epochs']} epochs |")
        lines += ["", "The ensemble's figures above average the members' out-of-fold probabilities fold by fold "
                      "(every fold's members trained on the same actors, so no test actor was seen); the final "
                      f"models train for the {fm['members'][0]['epochs_rule']}."]
    elif fm:
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
    m = b["machine"]
    f, e, c = b["features"], b["end_to_end"], b["corpus"]
    lines = [f"Measured by `python -m ser_app.bench{' --quick' if m.get('quick') else ''}` on this {m['cpus']}-core "
             f"machine (Python {m['python']}, load average {m['load_avg'][0]:.1f} from other jobs: compare the ratios, "
             "which come from one run, more than the times). Reference = what the seeds do: `librosa.load`, separate "
             "librosa feature calls, `model.predict`.", "",
             "| what | project (median / p95) | reference | ratio | target |", "|---|---|---|---|---|"]
    for name, v in f.items():
        lines.append(f"| features of a 3 s clip, {name} | {v['project']['median_ms']:.2f} / {v['project']['p95_ms']:.2f} ms"
                     f" | {v['reference']['median_ms']:.2f} ms | {v['ratio']:.1f}x | {'≥ 5x' if name == 'seed000' else '—'} |")
    a = b["agreement"]
    lines.append(f"| features agree with librosa ({a['clips']} clips) | max diff: mel {a['max_abs_diff']['mel_db']:.1e} dB,"
                 f" MFCC {a['max_abs_diff']['mfcc']:.1e}, chroma {a['max_abs_diff']['chroma']:.1e}, contrast "
                 f"{a['max_abs_diff']['contrast']:.2f} dB | — | {'within' if a['within'] else 'OUTSIDE'} tolerance | "
                 "the feature test's tolerance |")
    s1, bt = e["single"], e["batch"]
    lines.append(f"| one clip from disk, warm ({e['arch']}) | {s1['project']['median_ms']:.1f} / "
                 f"{s1['project']['p95_ms']:.1f} ms | {s1['reference']['median_ms']:.1f} ms | {s1['ratio']:.1f}x | "
                 "≥ 5x, < 20 ms |")
    lines.append(f"| batch of {bt['clips']} clips | {bt['clips_per_s']['project']:.0f} clips/s | "
                 f"{bt['clips_per_s']['reference']:.0f} clips/s | {bt['ratio']:.1f}x | — |")
    lines.append(f"| whole corpus ({c['clips']} clips) | cold {c['cold_s']:.1f} s, warm {c['warm_s']:.2f} s | — | — | "
                 "< 20 s, < 2 s |")
    for arch, t in b.get("training", {}).items():
        rate = t.get("gflop_per_s")
        rates = (f"; {rate['project']:.0f} vs {rate['plain']:.0f} GFLOP/s" if rate and t.get("gflop_per_epoch", 0) >= 1
                 else "")
        fastest = ""
        if "ratio_fastest" in t:
            fastest = (f"; fastest epochs {t['epochs']['project']['min_ms'] / 1000:.2f} s vs "
                       f"{t['epochs']['plain']['min_ms'] / 1000:.2f} s, {t['ratio_fastest']:.2f}x")
        lines.append(f"| training epoch, {arch} ({t['train_clips']} clips) | {t['epochs']['project']['median_ms'] / 1000:.2f} s"
                     f" | {t['epochs']['plain']['median_ms'] / 1000:.2f} s (plain `model.fit`) | {t['ratio']:.2f}x"
                     f"{fastest}{rates} | ≥ 2x |")
    if "default_epoch" in b:
        d = b["default_epoch"]
        lines.append(f"| training epoch, default model (one epoch of each member: {', '.join(d['members'])}) | "
                     f"{d['median_ms']['project'] / 1000:.2f} s | {d['median_ms']['plain'] / 1000:.2f} s (plain "
                     f"`model.fit`) | {d['median_ms']['ratio']:.2f}x; fastest epochs {d['min_ms']['project'] / 1000:.2f}"
                     f" s vs {d['min_ms']['plain'] / 1000:.2f} s, {d['min_ms']['ratio']:.2f}x | ≥ 2x |")
    if "train_process" in b:
        tp = b["train_process"]
        lines.append(f"| `ser train` start → first finished epoch | {tp['launch_to_first_epoch_s']:.1f} s | — | — | — |")
        lines.append(f"| peak memory: `ser train` / `ser predict` | {tp['peak_rss_mb']} MB / "
                     f"{b['predict_process']['peak_rss_mb']} MB | — | — | — |")
    if "app" in b:
        ap = b["app"]
        lines.append(f"| app cold start: `streamlit run` → first prediction in Chromium | {ap['first_prediction_s']:.1f} s "
                     f"(page shown {ap['predict_page_shown_s']:.1f} s, model loaded {ap['model_loaded_s']:.1f} s) | — | — | — |")
    ratios = {f"`{a}`": t["ratio"] for a, t in b.get("training", {}).items()}
    if "default_epoch" in b:
        ratios = {"the default model (every member)": b["default_epoch"]["median_ms"]["ratio"], **ratios}
    met = [a for a, r in ratios.items() if r >= 2]
    missed = [a for a in ratios if a not in met]
    lines += ["", "Training epochs: the project's path is `ser train`'s own (tf.data gathering shuffled batches from "
                  "arrays held once, prefetch, the autotuner off, fused BatchNorm that reads bfloat16, dropout masks from 16 random bits, "
                  "bfloat16 mixed precision where the CPU has native bfloat16) and it also runs the "
                  "online augmentation (masks, band shifts, time stretch) that the plain `model.fit` skips. "
                  f"In this run the 2x target (median epochs) is met for {', '.join(met) or 'no architecture'}"
                  + (f" and NOT met for {', '.join(missed)}" if missed else "") + "."]
    return "\n".join(lines)


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
