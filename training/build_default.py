"""Build the shipped default model in models/default.

Without --recipe it rebuilds the shipped default, WU2S (training/recipes/whisper_wu2s.json: a linear probe on
Whisper's encoder, docs/preregistration-session36.md; see the probe recipes below). A network recipe
(--recipe FILE, e.g. training/recipes/multicorpus.json) lists one or more members. For each member:

1. 6-fold speaker-independent cross-validation (EmoBox folds): metrics.json and
   out-of-fold predictions.csv (or reuse a finished one with --member-cv ARCH=DIR;
   ARCH@SEED when two members share an architecture, N=DIR for the recipe's N-th member).
2. The final model: the same recipe trained on all 24 actors for the median number
   of epochs the folds chose (their last epoch when a recipe trains without a
   validation split; no test actor exists any more, so nothing is selected on test data),
   or a finished one given with --member-final ARCH=DIR.

With several members, their cross-validations are combined into the ensemble's
(`ser ensemble cv`: the mean of the members' out-of-fold probabilities, fold by fold)
and the final models into one ensemble folder. models/default is replaced in one
rename, so it is never half-written.

3. With ``"loco": true`` in the recipe (run first), leave-one-corpus-out: the same recipe trained on all corpora but
   one and tested on all of that one, for each corpus.

The calibration (one temperature, ``ser_core.calibration``) is fitted on the cross-validation's
out-of-fold predictions only and stored in the model's spec.json with the "not sure" threshold.

A recipe of the form ``{"probe": {...}}`` (training/recipes/whisper_*.json) builds a linear probe on Whisper's
frozen encoder instead, step by step and resumably (``training/whisper_probe.py``'s ``build``: vectors, channel
copies, the emobox6 speaker folds, the six folds' channel shifts, leaving one corpus out, the final probe):

    python training/build_default.py --recipe training/recipes/whisper_wu2s.json --work runs/build-wu2s

    python training/build_default.py --recipe training/recipes/multicorpus.json --work runs/build-multicorpus
With ``--work DIR`` every step has a fixed folder there, so the same command after an interruption
(or a crash, or the end of a session) keeps every finished fold and final run and trains only the rest.
Then `ser robustness <ensemble cv dir>` and `python training/build_default.py --robustness <dir>`
copy the channel-shift results next to the model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ser_core import datasets, ensemble, runs, splits  # noqa: E402
from ser_core.config import models_dir  # noqa: E402
from ser_core.training import (Logger, TrainConfig, _StopFlag, cross_validate, install_stop_handlers,  # noqa: E402
                               setting_differences, train)
from shipping import calibrate, install, store_calibration  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_RECIPE = HERE / "recipes" / "whisper_wu2s.json"     # the shipped default, WU2S (session 36)
ENSEMBLE = "ravdess"        # models/ravdess: the RAVDESS-only ensemble whose networks --subset picks from


def member_recipes(recipe: dict) -> list[TrainConfig]:
    items = recipe["members"] if "members" in recipe else [recipe]
    return [TrainConfig.from_dict(item).resolved() for item in items]


def final_epochs(cfg: TrainConfig, metrics: dict) -> int:
    epochs = sorted(f["best_epoch"] for f in metrics.get("folds", []) if f.get("best_epoch"))
    return epochs[len(epochs) // 2] if epochs else cfg.epochs


def reused(position: int, cfg: TrainConfig, given: dict[str, str]) -> Path | None:
    """The folder given for the recipe's ``position``-th member (from 1): keyed by that number, ARCH@SEED,
    or just ARCH. A key that fits a member trained on other settings is refused later by check_reused."""
    for key in (str(position), f"{cfg.arch}@{cfg.seed}", cfg.arch):
        if key in given:
            return Path(given[key])
    return None


def step_dir(work: Path | None, position: int, step: str, cfg: TrainConfig) -> Path:
    """The folder of one build step: fixed under ``--work`` (so a rerun resumes it), else a new run folder."""
    if work is not None:
        return work / f"member-{position}-{step}"
    return runs.new_run_dir(f"{step}-default-{cfg.arch}")


def run_cv(cfg: TrainConfig, cv_dir: Path, resume: bool, processes: int = 1) -> dict | None:
    """A (resumed) cross-validation; None when it was stopped before every fold finished."""
    metrics = cross_validate(cfg, cv_dir, log=Logger(cv_dir, to_file=True), resume=resume, processes=processes)
    expected = splits.n_folds(cfg.protocol, cfg.k, datasets.load_dataset(cfg.dataset))
    if _StopFlag.requested or len(metrics.get("folds", [])) != expected:
        print(f"{cfg.protocol} cross-validation of {cfg.arch} did not complete; models/default is left as it was",
              file=sys.stderr)
        return None
    return metrics


def finished_run(run_dir: Path, cfg: TrainConfig) -> bool:
    return (runs.read_status(run_dir).get("state") == "finished" and (run_dir / "model").is_dir()
            and not setting_differences(runs.read_json(run_dir / "config.json") or {}, cfg, ignore=("workers",)))


def build_member(cfg: TrainConfig, reuse: Path | None, final: Path | None, *, position: int = 1,
                 work: Path | None = None, loco: bool = False,
                 processes: int = 1) -> tuple[Path, Path, dict, Path | None] | None:
    """(cv dir, final run dir, cv metrics, loco dir) of one member, or None when stopped or incomplete."""
    loco_dir = None
    if loco:
        # first: how the recipe hears corpora it never trained on is the question a multi-corpus run answers,
        # so an interrupted build has that answer before the longer in-corpus folds
        loco_dir = step_dir(work, position, "loco", cfg)
        if run_cv(dataclasses.replace(cfg, protocol="loco"), loco_dir, resume=work is not None,
                  processes=processes) is None:
            return None
    if reuse:
        cv_dir = reuse
        check_reused(cv_dir, cfg, "metrics.json", "cross-validation")
        metrics = json.loads((cv_dir / "metrics.json").read_text())
    else:
        cv_dir = step_dir(work, position, "cv", cfg)
        metrics = run_cv(cfg, cv_dir, resume=work is not None, processes=processes)
        if metrics is None:
            return None
    final_cfg = dataclasses.replace(cfg, protocol="all", n_val_speakers=0, epochs=final_epochs(cfg, metrics))
    if final is not None:
        check_reused(final, final_cfg, "model", "all-speaker run")
        final_dir = final
    else:
        final_dir = step_dir(work, position, "final", cfg)
        if work is not None and finished_run(final_dir, final_cfg):
            print(f"{final_dir}: kept the finished final run (same settings)")
        else:
            train(final_dir, final_cfg, log=Logger(final_dir, to_file=True))
            if _StopFlag.requested:
                print("final training was stopped; models/default is left as it was", file=sys.stderr)
                return None
    return cv_dir, final_dir, metrics, loco_dir


def trained_on(cfg: TrainConfig) -> str:
    """What a final model heard, in words: 'all 24 RAVDESS actors' or the corpora and their speakers."""
    df = datasets.load_dataset(cfg.dataset)
    if set(df["corpus"]) == {"ravdess"}:
        return f"all {df['speaker'].nunique()} RAVDESS actors"
    per = df.groupby("corpus")["speaker"].nunique()
    return "all speakers of " + ", ".join(f"{name} ({per[name]})" for name in splits.corpora(df))


def check_reused(run_dir: Path, cfg: TrainConfig, product: str, what: str) -> None:
    """Refuse a reused run that did not finish or trained another recipe than this member's."""
    diff = setting_differences(runs.read_json(run_dir / "config.json") or {}, cfg, ignore=("workers", "fold"))
    if diff or not (run_dir / product).exists():
        raise SystemExit(f"{run_dir} is not a finished {what} of this member's recipe "
                         f"(differs in: {', '.join(diff) or product + ' missing'})")


# what a fold teacher's recipe must share with the network it stands for (the precision may differ: the tables are
# float32, a network's recorded precision is what its machine resolved "auto" to)
SUBSET_RECIPE_KEYS = ("dataset", "arch", "arch_params", "features", "seed", "epochs", "batch_size", "learning_rate",
                      "schedule", "channel_aug", "channel_profile", "mixup", "label_smoothing", "online_aug")


def shown(path: Path) -> str:
    """A path as the checkout names it, when it is inside the checkout."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def build_subset(source: Path, positions: list[int], tables: Path, name: str) -> Path:
    """models/NAME from some of an ensemble's networks, with no training: the networks of ``source`` at
    ``positions`` (from 1, in its spec's order, which is its recipe's), and as its cross-validation the pooled
    out-of-fold predictions of the same recipe's fold teachers at those positions (``training/teachers.py``,
    every fold required), on which its calibration is fitted. A faster, less accurate choice beside the ensemble,
    whose figures are measured like the ensemble's own (the mean of its members' fold models, fold by fold)."""
    import tempfile

    from ser_core import evaluation, schema, teacher
    from ser_core.modeldir import member_dirs

    networks = member_dirs(source)
    if not positions or not set(positions) <= set(range(1, len(networks) + 1)):
        raise SystemExit(f"--subset: {source} has members 1 to {len(networks)}")
    with tempfile.TemporaryDirectory() as tmp:
        cv_dir = Path(tmp) / f"{name}-cv"
        cv_dir.mkdir()
        preds, got = teacher.pooled_held_out(tables, {teacher.member_name(p) for p in positions})
        every = sorted(schema.fold_of(f.name) for f in tables.glob(f"{schema.FOLD_PREFIX}*")
                       if schema.fold_of(f.name) is not None)
        if not got or got != every:
            raise SystemExit(f"--subset: members {positions} are tabled on folds {got} of {every}")
        preds.to_csv(cv_dir / schema.PREDICTIONS, index=False)
        labels = [c[2:] for c in preds.columns if c.startswith("p_")]
        record = json.loads((source / "metrics.json").read_text()) if (source / "metrics.json").exists() else {}
        finals = (record.get("final_model") or {}).get("members") or []
        for p in positions:         # the tables must be of the networks' own recipes
            made = teacher.read_record(tables / schema.fold_dir_name(every[0]), teacher.member_name(p))["config"]
            recipe = finals[p - 1].get("recipe", {}) if len(finals) == len(networks) else made
            differ = [k for k in SUBSET_RECIPE_KEYS if made.get(k) != recipe.get(k)]
            if differ:
                raise SystemExit(f"--subset: the fold teachers of member {p} differ from its network's recipe in "
                                 f"{', '.join(differ)}")
        protocol = schema.cv_protocol(made["protocol"], every, speaker_independent=True)
        metrics = evaluation.evaluate(preds, labels, protocol=protocol["label"])
        metrics[schema.PROTOCOL_INFO] = protocol
        per_fold = [{"fold": k, **{m: evaluation.evaluate(g, labels)[m] for m in ("accuracy", "uar")}}
                    for k, g in preds.groupby("fold")]
        held = {p: teacher.pooled_held_out(tables, {teacher.member_name(p)})[0] for p in positions}
        metrics.update(folds=per_fold, arch=ensemble.ARCH, positions=sorted(positions),
                       members=[json.loads((networks[p - 1] / "spec.json").read_text())["arch"] for p in positions],
                       member_accuracy=[float((held[p]["pred"] == held[p]["true"]).mean()) for p in positions],
                       final_model={"members": [finals[p - 1] for p in positions] if len(finals) == len(networks)
                                    else [], "subset_of": source.name, "fold_teachers": shown(tables)})
        calib, metrics["calibration"] = calibrate(cv_dir, None)
        metrics["calibration"]["stored"] = calib.to_dict()
        return install(None, cv_dir, metrics, lambda out: ensemble.build([networks[p - 1] for p in positions], out),
                       calib=calib, name=name)


def copy_robustness(cv_dir: Path, model_dir: Path) -> None:
    """Copy a cross-validation's channel-shift results next to the model, but only when that
    cross-validation is the model's own: the same out-of-fold predictions, clip for clip."""
    import numpy as np
    import pandas as pd

    src = cv_dir / "robustness.json"
    if not src.exists():
        raise SystemExit(f"{src} not found: run `ser robustness {cv_dir}` first")
    ours, theirs = (pd.read_csv(d / "predictions.csv").sort_values("file").reset_index(drop=True)
                    for d in (model_dir, cv_dir))
    cols = [c for c in ours.columns if c.startswith("p_")]
    if list(ours["file"]) != list(theirs["file"]) or cols != [c for c in theirs.columns if c.startswith("p_")] \
            or not np.allclose(ours[cols].to_numpy(), theirs[cols].to_numpy(), atol=1e-6):
        raise SystemExit(f"{cv_dir} is not the cross-validation of {model_dir} (its out-of-fold predictions differ)")
    shutil.copy2(src, model_dir / "robustness.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(DEFAULT_RECIPE),
                    help="the recipe (default: training/recipes/whisper_wu2s.json, the shipped default WU2S)")
    ap.add_argument("--work", metavar="DIR",
                    help="fixed folders for every step, so rerunning the same command resumes (keeps finished folds)")
    ap.add_argument("--target", default="default", metavar="NAME",
                    help="write the model to models/NAME (default: models/default; a candidate goes elsewhere "
                         "until its pre-registered rule is checked)")
    ap.add_argument("--member-cv", action="append", default=[], metavar="ARCH=DIR",
                    help="reuse a finished cross-validation of that member's recipe (ARCH@SEED when two share an arch, "
                         "N for the recipe's N-th member)")
    ap.add_argument("--member-final", action="append", default=[], metavar="ARCH=DIR",
                    help="reuse a finished all-actor run of that member's recipe (keys as --member-cv)")
    ap.add_argument("--processes", type=int, default=1, metavar="N",
                    help="train N cross-validation folds at once, each in its own process pinned to its share of "
                         "the cores (`ser cv --processes`)")
    ap.add_argument("--robustness", metavar="CV_DIR",
                    help="only copy CV_DIR/robustness.json into models/TARGET (after `ser robustness CV_DIR`)")
    ap.add_argument("--calibrate", metavar="MODEL_DIR",
                    help="only fit the calibration of a built model folder on its own out-of-fold predictions.csv "
                         "and store it in its spec.json (and metrics.json)")
    ap.add_argument("--subset", metavar="POSITIONS",
                    help="only build models/TARGET from the networks of models/ravdess (the RAVDESS-only ensemble) "
                         "at these member positions (e.g. 1,2,5), no training; its cross-validation from --tables")
    ap.add_argument("--results", metavar="DIR",
                    help="with a probe recipe: where the candidate's tables go (default training/results/candidates)")
    ap.add_argument("--tables", default=str(HERE / "results" / "teachers" / "ravdess_five"), metavar="DIR",
                    help="with --subset: the fold teachers of the RAVDESS ensemble's recipe (ravdess_five.json; "
                         "training/teachers.py)")
    args = ap.parse_args()
    if args.subset:
        if args.target == "default":
            ap.error("--subset writes a second model: give --target NAME (the default is never replaced by a subset)")
        try:
            positions = [int(p) for p in args.subset.split(",")]
        except ValueError:
            ap.error(f"--subset takes member positions such as 1,2,5, not {args.subset!r}")
        if len(set(positions)) < 2 or len(set(positions)) < len(positions):
            ap.error("--subset needs two or more different member positions: one network is already a model "
                     f"(models/{ENSEMBLE}/members/<name>)")
        out = build_subset(models_dir() / ENSEMBLE, positions, Path(args.tables), args.target)
        m = json.loads((out / "metrics.json").read_text())
        print(f"{out}: cv accuracy {m['accuracy']:.3f}, UAR {m['uar']:.3f}, "
              f"temperature {m['calibration']['stored']['temperature']:.3f}")
        return 0
    if args.calibrate:
        model_dir = Path(args.calibrate)
        calib, report = calibrate(model_dir, None)
        store_calibration(model_dir, calib)
        metrics = json.loads((model_dir / "metrics.json").read_text())
        metrics["calibration"] = {**report, "stored": calib.to_dict()}
        (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        print(f"{model_dir}: temperature {calib.temperature:.3f}, ECE {calib.ece_before:.3f} -> {calib.ece_after:.3f} "
              "(cross-fitted)")
        return 0
    if args.robustness:
        copy_robustness(Path(args.robustness), models_dir() / args.target)
        print(f"copied {args.robustness}/robustness.json to {models_dir() / args.target}")
        return 0
    recipe = json.loads(Path(args.recipe).read_text())
    if "probe" in recipe:
        from whisper_probe import RESULTS, build as build_probe

        work = Path(args.work or f"runs/build-{recipe['probe'].get('candidate', 'probe')}")
        target = build_probe(recipe["probe"], work, args.target, Path(args.results) if args.results else RESULTS)
        m = json.loads((target / "metrics.json").read_text())
        print(f"{target}: cv accuracy {m['accuracy']:.3f}, UAR {m['uar']:.3f} (work folder {work})")
        return 0
    install_stop_handlers()
    cfgs = member_recipes(recipe)
    reuse = dict(item.split("=", 1) for item in args.member_cv)
    finals_given = dict(item.split("=", 1) for item in args.member_final)
    work = Path(args.work) if args.work else None
    loco = bool(recipe.get("loco"))
    built = []
    for position, cfg in enumerate(cfgs, 1):
        out = build_member(cfg, reused(position, cfg, reuse), reused(position, cfg, finals_given),
                           position=position, work=work, loco=loco, processes=args.processes)
        if out is None:
            return 1
        built.append((cfg, *out))
    rule = "median of the folds' chosen epochs (the last epoch for recipes without a validation split)"
    finals = [{"arch": cfg.arch, "trained_on": trained_on(cfg), "epochs": final_epochs(cfg, m),
               "epochs_rule": rule, "recipe": cfg.to_dict(), "cv_dir": str(cv)} for cfg, cv, _, m, _ in built]
    if len(built) == 1:
        cfg, cv_dir, final_dir, metrics, loco_dir = built[0]
        metrics["final_model"] = finals[0]
        model_src, builder = final_dir / "model", None
    else:
        combined = (work / "ensemble-cv") if work else runs.new_run_dir("cv-default-ensemble")
        metrics = ensemble.combine_cv([b[1] for b in built], combined)
        loco_dir = None
        if loco:
            loco_dir = (work / "ensemble-loco") if work else runs.new_run_dir("loco-default-ensemble")
            metrics["loco"] = ensemble.combine_cv([b[4] for b in built], loco_dir)
        cv_dir = combined
        metrics["final_model"] = {"members": finals}
        model_src, builder = None, (lambda tmp: ensemble.build([b[2] / "model" for b in built], tmp))
    if loco_dir is not None and "loco" not in metrics:
        metrics["loco"] = json.loads((loco_dir / "metrics.json").read_text())
    calib = None
    if recipe.get("calibrate", True):
        calib, metrics["calibration"] = calibrate(cv_dir, loco_dir)
        metrics["calibration"]["stored"] = calib.to_dict()
    target = install(model_src, cv_dir, metrics, builder, calib=calib, loco_dir=loco_dir, name=args.target)
    print(f"{target}: cv accuracy {metrics['accuracy']:.3f}, UAR {metrics['uar']:.3f} (cv in {cv_dir}); "
          f"next: ser robustness {cv_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
