"""Fold teachers for distillation, kept as tables that a later session can pick up.

A student's fold J may only learn from a teacher that never heard fold J's test speakers, so the
teacher of every fold is the recipe's members trained on that fold's training speakers: a whole
cross-validation of the ensemble (about 3 hours on 2 cores for the five-member default recipe). The
models are not kept: for each member and fold this writes what a student reads of it, the member's
probabilities of the fold's training clips, as a table (``ser_core.teacher``):

    OUT/fold-J/member-K.csv.gz   clip key, p_<label> columns
    OUT/fold-J/member-K.json     the speakers it learnt from, protocol, settings, test accuracy
    OUT/fold-J/member-K.test.csv.gz   its predictions of the fold's test clips (out of fold)

Folds go first (every member of fold 1, then of fold 2, ...), so an interrupted run leaves whole fold
teachers. Rerunning the same command skips every table already written with the same settings (and a
fold run under --work that finished with them), so it can be stopped at any point and resumed in a
later session once the tables are committed.

    python training/teachers.py --recipe training/recipes/ravdess_five.json \\
        --out training/results/teachers/ravdess_five --work runs/teachers
    python training/teachers.py --recipe training/recipes/ravdess_five.json --precision float32 \\
        --out training/results/teachers/ravdess_five --members 1,2,5 --processes 2   # two at once, pinned
    python training/teachers.py --from-model models/ravdess --dataset ravdess \\
        --out training/results/teachers/ravdess_five          # fold-all/: the final student's teacher
    python training/teachers.py --out training/results/teachers/ravdess_five --report --members 1,2,5 \\
        --table B.csv          # a subset's pooled out-of-fold figures, and its predictions.csv
    ser cv --teacher training/results/teachers/ravdess_five/fold-{fold} --distill 0.5 ...

``--from-model`` tables a finished model's networks (an ensemble's members) on every clip of a
dataset, with no training: the teacher of a final run on every speaker, where ``{fold}`` becomes
``all``.

The teacher of a clip is then the mean of its members' clip probabilities: the same rule by which the
recipe's ensemble cross-validation (`ser ensemble cv`) pools its members.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_core import datasets, evaluation, procpool, schema, splits, teacher  # noqa: E402
from ser_core.crossval import _finished_with  # noqa: E402
from ser_core.errors import SERError  # noqa: E402
from ser_core.training import Logger, StopFlag, TrainConfig, install_stop_handlers, train  # noqa: E402
from ser_core.trainconfig import PRECISIONS, setting_differences  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_default import member_recipes  # noqa: E402


member_name = teacher.member_name


def table_current(folder: Path, name: str, cfg: TrainConfig) -> bool:
    """A table of this member and fold exists, made with exactly these settings."""
    if name not in teacher.table_names(folder):
        return False
    saved = teacher.read_record(folder, name).get("config") or {}
    if setting_differences(saved, cfg, ignore=("workers",)):
        raise SystemExit(f"{folder / name} was made with other settings than the recipe's; "
                         "remove it (or use another --out) to make it again")
    return True


def clip_probabilities(model_dir: Path, rows) -> tuple[list[str], np.ndarray, list[str]]:
    """The model's raw probabilities of every readable clip with speech: (keys, rows, labels)."""
    probs, labels = teacher.model_probabilities(model_dir, rows["path"].tolist())
    known = ~np.isnan(probs).any(axis=1)
    return [k for k, ok in zip(teacher.clip_keys(rows), known) if ok], probs[known], labels


def make_table(cfg: TrainConfig, position: int, fold: int, df, out: Path, work: Path) -> dict:
    """Train (or keep) one member on one fold and write its table; returns the record."""
    fcfg = dataclasses.replace(cfg, fold=fold)
    run_dir = work / member_name(position) / schema.fold_dir_name(fold)
    t0 = time.monotonic()
    metrics = _finished_with(run_dir, fcfg)
    if metrics is None:
        metrics = train(run_dir, fcfg, log=Logger(run_dir, to_file=True), df=df, resume_run=True)
        if StopFlag.requested:
            raise SystemExit("stopped on request; rerun the same command to go on")
    split = splits.make_split(df, fcfg.protocol, fold, k=fcfg.k, n_val=fcfg.n_val_speakers, seed=fcfg.data_seed)
    rows = df.iloc[split.train].reset_index(drop=True)
    model_dir = run_dir / schema.MODEL
    learnt = json.loads((model_dir / schema.SPEC).read_text())["extra"][schema.TRAIN_SPEAKERS]
    if set(learnt) & set(df["speaker"].iloc[split.test].astype(str)):
        raise SystemExit(f"{run_dir}: its model learnt from a test speaker of fold {fold}")  # never, by the split
    keys, probs, labels = clip_probabilities(model_dir, rows)
    record = {"member": position, "fold": fold, "protocol": metrics.get(schema.PROTOCOL),
              schema.TRAIN_SPEAKERS: sorted(learnt), "clips": len(keys), "test_accuracy": metrics.get("accuracy"),
              "test_uar": metrics.get("uar"), "train_seconds": metrics.get("train_seconds"),
              "config": fcfg.to_dict(), "made_in_seconds": round(time.monotonic() - t0, 1)}
    folder = out / schema.fold_dir_name(fold)
    # out of fold: how good this teacher is
    teacher.write_held_out(folder, member_name(position), pd.read_csv(run_dir / schema.PREDICTIONS))
    teacher.write_table(folder, member_name(position), keys, probs, labels, record)
    return record


def table_model(model_dir: Path, dataset: str, out: Path) -> list[dict]:
    """Table every network of a finished model on every clip of ``dataset`` (OUT/fold-all/<network>)."""
    from ser_core.config import ModelSpec
    from ser_core.modeldir import network_dirs

    df = datasets.load_dataset(dataset)
    folder = out / schema.fold_dir_name(schema.ALL_FOLD)
    records = []
    for d in network_dirs(model_dir):
        spec = ModelSpec.load(d / schema.SPEC)
        learnt = spec.extra.get(schema.TRAIN_SPEAKERS)
        if learnt is None:
            # networks trained before models recorded their speakers: a run on every speaker of its dataset
            if not spec.protocol.startswith("all") or spec.extra.get("dataset") != dataset:
                raise SystemExit(f"{d} does not record the speakers it learnt from, and is not a run on every "
                                 f"speaker of {dataset}")
            learnt = sorted(set(df["speaker"].astype(str)))
        keys, probs, labels = clip_probabilities(d, df)
        rec = {"network": d.name, "model": str(model_dir), "protocol": spec.protocol,
               schema.TRAIN_SPEAKERS: sorted(learnt), "clips": len(keys)}
        teacher.write_table(folder, d.name, keys, probs, labels, rec)
        print(f"{folder / d.name}: {len(keys)} clips", flush=True)
        records.append(rec)
    return records


def report(out: Path, members: list[int] | None = None, table: Path | None = None) -> dict:
    """How good the fold teachers are out of fold: per fold, the accuracy on the fold's test clips of the mean of
    the members tabled so far (the ensemble's own cross-validation rule); ``members``: only these positions, to
    ask what a smaller ensemble of the same networks would score. Over the folds that have every one of
    ``members``, the pooled out-of-fold figures too (accuracy, UAR, female - male gap): the ones a
    pre-registered rule compares (``docs/preregistration-session19.md``). ``table``: also write those pooled
    clips as an out-of-fold ``predictions.csv`` (the members' mean probabilities, a ``fold`` column), which
    ``training/emobox_report.py`` reads and a calibration can be fitted on."""
    folds = {}
    wanted = None if members is None else {member_name(m) for m in members}
    for folder in sorted(out.glob(f"{schema.FOLD_PREFIX}*")):
        fold = schema.fold_of(folder.name)
        mean, tables = teacher.held_out_mean(folder, wanted) if fold is not None else (None, [])
        if not tables:
            continue
        folds[fold] = {"members": len(tables), "clips": len(mean),
                       "accuracy": float(np.mean(mean["pred"] == mean["true"])),
                       "member_accuracy": [round(float(np.mean(t["pred"] == t["true"])), 4) for t in tables]}
        print(f"fold {fold}: {len(tables)} member(s), mean of members {folds[fold]['accuracy']:.1%} "
              f"on {len(mean)} test clips (members {folds[fold]['member_accuracy']})")
    rows, got = teacher.pooled_held_out(out, wanted) if wanted is not None else (pd.DataFrame(), [])
    if got:
        labels = [c[2:] for c in rows.columns if c.startswith("p_")]
        figures = evaluation.summary(rows["true"], rows["pred"], labels)
        try:
            gap = evaluation.gender_gap(rows)
            said = f", female - male {gap['gap'] * 100:+.1f} points"
        except SERError:                    # the folds' test speakers are of one gender
            gap, said = None, ""
        print(f"pooled over folds {got} ({len(rows)} clips), members {sorted(members)}: accuracy "
              f"{figures['accuracy']:.1%}, UAR {figures['uar']:.1%}{said}")
        folds["pooled"] = {"folds": got, "members": sorted(members), **figures, "gender_gap": gap}
        if table is not None:
            table.parent.mkdir(parents=True, exist_ok=True)
            rows.to_csv(table, index=False)
            print(f"pooled out-of-fold predictions: {table}")
    elif table is not None:
        raise SERError("--table needs --members and at least one fold with a table of every one of them")
    return folds


def tables_in_processes(pending: list[tuple[int, int]], common: list[str], work: Path, processes: int) -> int:
    """Make the tables ``pending`` ((fold, member) pairs) as separate processes of this script, at most
    ``processes`` at once, each pinned to its own share of the cores (``procpool.run_pinned``, as ``ser cv
    --processes``), with its own numba cache. Each process writes one table and its output to
    WORK/logs/fold-J-member-K.log. A stop request is passed on to the running ones and starts no other;
    returns 1 if any failed (naming them), else 0."""
    def name(job: tuple[int, int]) -> str:
        return f"fold {job[0]}, {member_name(job[1])}"

    def launch(job: tuple[int, int]) -> procpool.Launch:
        fold, position = job
        return procpool.Launch([sys.executable, str(Path(__file__).resolve()), *common, "--folds", str(fold),
                                "--members", str(position)],
                               work / "logs" / f"{schema.fold_dir_name(fold)}-{member_name(position)}.log")

    def ended(job: tuple[int, int], returncode: int) -> str | None:
        print(f"{name(job)}: " + ("table written" if returncode == 0 else
              f"failed or stopped (exit code {returncode}; see its log)"), flush=True)
        return None if returncode == 0 else f"exit code {returncode}"

    failed = procpool.run_pinned(pending, processes, launch, ended=ended, log=lambda line: print(line, flush=True),
                                 name=name, what="tables", stop_requested=lambda: StopFlag.requested,
                                 numba_cache=work)
    if failed:
        not_made = sorted(f"fold {fold} {member_name(position)}" for fold, position in failed)
        print(f"not made: {', '.join(not_made)}; rerun the same command to make them", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", help="a build_default recipe (its members are the teacher)")
    ap.add_argument("--from-model", metavar="DIR", help="table a finished model's networks instead (no training)")
    ap.add_argument("--dataset", default="ravdess", help="with --from-model: the clips to table")
    ap.add_argument("--report", action="store_true", help="only print the fold teachers' out-of-fold accuracy")
    ap.add_argument("--table", metavar="CSV", help="with --report --members: also write the pooled out-of-fold "
                    "predictions of those members' mean (a predictions.csv with a fold column)")
    ap.add_argument("--out", required=True, help="folder of the tables (fold-J/member-K.*), committed as they land")
    ap.add_argument("--work", default="runs/teachers", help="fold runs (models, logs); removable once tabled")
    ap.add_argument("--folds", help="comma-separated folds (default: all of the recipe's protocol)")
    ap.add_argument("--members", help="comma-separated member positions, from 1 (default: every member); with "
                    "--report, the mean of only these members")
    ap.add_argument("--precision", choices=PRECISIONS,
                    help="train every member in this precision instead of the recipe's (the tables of sessions "
                         "11-12 are float32, as the shipped default's networks; 'auto' is bfloat16 where the CPU "
                         "has it, and a table must be made in one precision to stay current)")
    ap.add_argument("--processes", type=int, default=1,
                    help="make this many tables at once, each in its own process pinned to its share of the cores")
    ap.add_argument("--keep-runs", action="store_true", help="keep each fold run's folder after its table is written")
    args = ap.parse_args(argv)
    if args.table and not args.report:
        ap.error("--table goes with --report")
    if args.report:
        try:
            report(Path(args.out), [int(m) for m in args.members.split(",")] if args.members else None,
                   Path(args.table) if args.table else None)
        except SERError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.from_model:
        table_model(Path(args.from_model), args.dataset, Path(args.out))
        return 0
    if not args.recipe:
        ap.error("give --recipe (fold teachers) or --from-model (a finished model's tables)")
    install_stop_handlers()
    cfgs = member_recipes(json.loads(Path(args.recipe).read_text()))
    if args.precision:
        cfgs = [dataclasses.replace(c, precision=args.precision).resolved() for c in cfgs]
    members = [int(m) for m in args.members.split(",")] if args.members else list(range(1, len(cfgs) + 1))
    if not set(members) <= set(range(1, len(cfgs) + 1)):
        ap.error(f"--members: the recipe has members 1 to {len(cfgs)}")
    out, work = Path(args.out), Path(args.work)
    dfs: dict[str, object] = {}
    first = cfgs[0]
    df0 = datasets.load_dataset(first.dataset)
    folds = [int(f) for f in args.folds.split(",")] if args.folds else \
        list(range(1, splits.n_folds(first.protocol, first.k, df0) + 1))
    pending = [(fold, position) for fold in folds for position, cfg in enumerate(cfgs, 1)
               if position in members and not table_current(out / schema.fold_dir_name(fold), member_name(position),
                                                            dataclasses.replace(cfg, fold=fold))]
    for fold in folds:
        for position in members:
            if (fold, position) not in pending:
                print(f"fold {fold}, {member_name(position)} ({cfgs[position - 1].arch}): table kept")
    if args.processes > 1 and len(pending) > 1:
        common = ["--recipe", args.recipe, "--out", str(out), "--work", str(work)]
        common += ["--precision", args.precision] if args.precision else []
        common += ["--keep-runs"] if args.keep_runs else []
        if tables_in_processes(pending, common, work, args.processes):
            return 1
        print(f"every table of folds {folds}, members {members} is in {out}")
        return 0
    for fold, position in pending:
        cfg, name = cfgs[position - 1], member_name(position)
        df = dfs.setdefault(cfg.dataset, datasets.load_dataset(cfg.dataset))
        rec = make_table(cfg, position, fold, df, out, work)
        print(f"fold {fold}, {name} ({cfg.arch}): test accuracy {rec['test_accuracy']:.3f}, "
              f"{rec['clips']} training clips tabled in {rec['made_in_seconds']:.0f} s", flush=True)
        if not args.keep_runs:
            shutil.rmtree(work / name / schema.fold_dir_name(fold), ignore_errors=True)
    print(f"every table of folds {folds}, members {members} is in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
