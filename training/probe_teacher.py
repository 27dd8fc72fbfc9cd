"""Teacher tables from a linear probe on frozen-encoder vectors, for a Keras student to distil.

    python training/probe_teacher.py --work runs/whisper-level \\
        --choices training/results/candidates/emobox6_WNA_probe_predictions_choices.json \\
        --out runs/teachers-wna [--folds 1,2] [--all [--all-c C]]
    ser cv --dataset ravdess+ased+emovo+urdu --protocol emobox6 --val-speakers 0 \\
        --teacher runs/teachers-wna/fold-{fold} --distill 0.5 ...

A probe (``encoder_probe.probe``: a logistic regression on standardised clip vectors, every (corpus, emotion)
cell weighing the same, channel copies of the training clips trained on too) is not a network ``ser_core.teacher``
can run, so its teacher is written as tables in that module's format (as ``training/teachers.py`` writes them for
networks). For every emobox6 fold K the probe is trained on the fold's training speakers only, with the C that
fold chose in the probe's cross-validation (``encoder_probe.py cv``'s ``<out>_choices.json``), and writes

    OUT/fold-K/<name>.csv.gz        clip key, p_<label> (the product's labels; one the probe never learnt: 0)
    OUT/fold-K/<name>.test.csv.gz   its predictions of the fold's test clips, as a cross-validation saves them
    OUT/fold-K/<name>.json          speakers it learnt from, protocol, labels, settings (C, copies), test accuracy

``--all`` adds OUT/fold-all/ (what ``{fold}`` becomes for a run on every speaker): the probe on every clip, C
given (``--all-c``) or chosen as ``whisper_probe.py ship`` chooses it (nested leave-one-corpus-out over all
corpora). A fold whose record exists is kept, so the command resumes; one made with other settings is refused.

The vector folder keeps only file names, while a student looks its clips up by ``ser_core.teacher.clip_keys``
(the path inside the corpus, e.g. ``ravdess/Actor_01/...``); so the clips are found in the dataset under the
data root (``SER_DATA_DIR``) exactly as ``ser cv`` finds them, and a fold is refused when a student's training
clip would find no row. The student must run with ``--val-speakers 0``: its validation speakers count as held
out, and the fold's teacher learnt from them (the reader refuses it otherwise).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from ser_core import datasets, evaluation, schema, splits, teacher  # noqa: E402
from ser_core.config import EMOTIONS, data_dir  # noqa: E402

from encoder_probe import (C_GRID, COPY_FILES, choose_c, fold_table, load_channel_vectors,  # noqa: E402
                           load_vectors, probe, rows_mask)
from whisper_probe import SETUP_FILE, read_setup  # noqa: E402

PROTOCOL = "emobox6"
KIND = "linear probe on frozen-encoder vectors (training/probe_teacher.py)"


def product_order(probs: np.ndarray, classes) -> np.ndarray:
    """A probe's probabilities (columns in its ``classes_`` order) in the product's label order
    (:data:`ser_core.config.EMOTIONS`); a label the probe never learnt is 0.

    Raises SystemExit for a class outside the product's labels (a table could not hold it).
    """
    classes = [str(c) for c in classes]
    foreign = sorted(set(classes) - set(EMOTIONS))
    if foreign:
        raise SystemExit(f"the probe learnt labels the product does not have: {', '.join(foreign)}")
    out = np.zeros((len(probs), len(EMOTIONS)))
    out[:, [EMOTIONS.index(c) for c in classes]] = probs
    return out


def dataset_keys(df: pd.DataFrame, dataset: str) -> tuple[list[str], pd.DataFrame, list[str]]:
    """The clip key of every vector row, as a student of ``dataset`` builds it.

    Parameters
    ----------
    df
        The vector folder's manifest (:func:`encoder_probe.load_vectors`): ``path`` is the clip's file name.
    dataset
        The student's dataset spec (``datasets.load_dataset``), read under the data root.

    Returns
    -------
    keys, manifest, manifest_keys
        ``df``'s keys in its row order; the dataset's manifest and its keys (a student's rows).

    Raises SystemExit when a vector row's clip is not in the dataset, or a file name is not unique in its corpus
    (the name is all the vector folder kept, so it must name one clip).
    """
    manifest = datasets.load_dataset(dataset).reset_index(drop=True)
    manifest_keys = teacher.clip_keys(manifest)
    names = pd.MultiIndex.from_arrays([manifest["corpus"].astype(str), manifest["path"].map(lambda p: Path(p).name)])
    if names.has_duplicates:
        raise SystemExit(f"{dataset} has clips of one file name in one corpus, e.g. {names[names.duplicated()][0]}: "
                         "the vector folder's file names cannot tell them apart")
    at = pd.Series(np.arange(len(manifest)), index=names)
    pos = at.reindex(pd.MultiIndex.from_arrays([df["corpus"].astype(str), df["path"].astype(str)]))
    if pos.isna().any():
        lost = df.loc[pos.isna().to_numpy(), ["corpus", "path"]]
        raise SystemExit(f"{len(lost)} clips of the vectors are not in {dataset} under the data root {data_dir()} "
                         f"(e.g. {'/'.join(lost.iloc[0])}): set SER_DATA_DIR to the corpora the vectors were made of")
    return [manifest_keys[i] for i in pos.astype(int)], manifest, manifest_keys


def check_student(keys: list[str], learnt: set[str], manifest: pd.DataFrame, manifest_keys: list[str],
                  fold: int | None) -> None:
    """Refuse a table a student of ``manifest`` could not use whole: one of the student's training clips without a
    row (the vector folder lacks it), or a speaker the student tests among those the probe ``learnt`` from (never,
    when the vectors are of the student's clips). ``fold`` None: a run on every speaker."""
    if fold is None:
        train, tested = np.arange(len(manifest)), set()
    else:
        split = splits.make_split(manifest, PROTOCOL, fold, n_val=0)
        train, tested = split.train, set(manifest["speaker"].iloc[split.test].astype(str))
    if learnt & tested:
        raise SystemExit(f"fold {fold}'s probe learnt from speakers its student tests: {sorted(learnt & tested)[:6]}")
    have = set(keys)
    lacking = [manifest_keys[i] for i in train if manifest_keys[i] not in have]
    if lacking:
        run = "run on every speaker" if fold is None else f"fold {fold}"
        raise SystemExit(f"{len(lacking)} training clips of a student's {run} have no vector (e.g. {lacking[0]}): "
                         "the vector folder lacks clips of the dataset")


def kept(folder: Path, name: str, settings: dict) -> bool:
    """A table ``name`` with its record is in ``folder``, made with ``settings`` (SystemExit when made with other
    ones: rerunning must not mix teachers of two settings)."""
    if name not in teacher.table_names(folder):
        return False
    saved = teacher.read_record(folder, name).get("settings") or {}
    differ = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if differ:
        said = ", ".join(f"{k} {old!r}, not {new!r}" for k, (old, new) in differ.items())
        raise SystemExit(f"{folder / name} was made with other settings ({said}); remove it or use another --out")
    return True


def write_probe_teachers(work: Path, choices: Path, out: Path, *, copies: str | None = "babble",
                         n_copies: int | None = 1, folds: list[int] | None = None, name: str = "probe",
                         include_all: bool = False, all_c: float | None = None,
                         dataset: str | None = None) -> list[Path]:
    """Write a probe's teacher tables (``ser_core.teacher``'s format) for emobox6 folds and, optionally, every clip.

    Parameters
    ----------
    work
        A vector folder in ``encoder_probe.py``'s layout (``vectors_<corpus>.npz``, ``manifest_<corpus>.csv`` and,
        with ``copies``, the channel copies' files).
    choices
        The probe's emobox6 cross-validation choices (``encoder_probe.py cv``'s ``<out>_choices.json``): fold K's
        probe uses fold K's C, chosen inside its training speakers.
    out
        Where the tables go: ``out/fold-K/<name>.*`` and, with ``include_all``, ``out/fold-all/<name>.*``.
    copies, n_copies
        The kind of channel copies the probe also trains on (``encoder_probe.COPY_FILES``; None: none) and how many
        of each clip's (None: all kept); WNA's: ``"babble"``, 1.
    folds
        The emobox6 folds to write (None: all six; ``[]`` with ``include_all``: fold-all alone).
    name
        The tables' name in each fold folder.
    include_all, all_c
        Also write ``fold-all`` from a probe on every clip, with C ``all_c`` or, when None, the C that nested
        leave-one-corpus-out over all corpora chooses (as ``whisper_probe.ship``).
    dataset
        The student's dataset, whose clips the keys name (default: the vector folder's corpora joined by ``+``).

    Returns
    -------
    list of Path
        The table of every fold asked for, written now or kept from before.
    """
    work, out = Path(work), Path(out)
    n_copies = n_copies if copies else None
    folds = list(range(1, splits.n_folds(PROTOCOL) + 1)) if folds is None else list(folds)
    chosen = json.loads(Path(choices).read_text()) if folds else {}
    jobs = []                 # (fold or None for every clip, C or None to choose, settings)
    for fold in folds:
        if str(fold) not in chosen:
            raise SystemExit(f"{choices} holds no choice for fold {fold}")
        c = float(chosen[str(fold)]["C"])
        jobs.append((fold, c, {"C": c, "copies": copies, "n_copies": n_copies}))
    if include_all:
        settings = {"copies": copies, "n_copies": n_copies}
        jobs.append((None, all_c, settings if all_c is None else {"C": float(all_c), **settings}))
    folder_of = {fold: out / schema.fold_dir_name(schema.ALL_FOLD if fold is None else fold) for fold, _, _ in jobs}
    tables = [folder_of[fold] / f"{name}{teacher.TABLE}" for fold, _, _ in jobs]
    pending = []
    for job in jobs:
        if kept(folder_of[job[0]], name, job[2]):
            print(f"{folder_of[job[0]] / name}: kept", flush=True)
        else:
            pending.append(job)
    if not pending:           # nothing to fit: the vectors and the dataset are not even read
        return tables

    df, x = load_vectors(work)
    df = df.reset_index(drop=True)
    aug = load_channel_vectors(work, df, copies, n_copies) if copies else None
    corpora = "+".join(splits.corpora(df))
    dataset = dataset or corpora
    keys, manifest, manifest_keys = dataset_keys(df, dataset)
    setup = dataclasses.asdict(read_setup(work)) if (work / SETUP_FILE).exists() else None
    common = {"teacher": KIND, "vectors": str(work), "encoder_setup": setup, "dataset": dataset,
              "corpora": corpora, "channel_copies": None if aug is None else int(aug.shape[1])}
    for fold, c, settings in pending:
        t0 = time.monotonic()
        folder = folder_of[fold]
        if fold is None:
            train, test = np.ones(len(df), bool), np.zeros(len(df), bool)
            protocol = f"all speakers of {corpora}"
            extra = {}
            if c is None:
                c, scores, _ = choose_c(x, df, train, C_GRID, "every corpus", aug)
                extra = {"inner_own_accuracy": {str(k): round(v, 4) for k, v in scores.items()}}
        else:
            split = splits.make_split(df, PROTOCOL, fold, n_val=0)
            splits.check_disjoint(df, split)
            train, test = rows_mask(len(df), split.train), rows_mask(len(df), split.test)
            protocol = split.label
            extra = {"choices": str(choices),
                     "inner_own_accuracy": chosen[str(fold)].get("inner_own_accuracy")}
        learnt = set(df.loc[train, "speaker"].astype(str))
        train_keys = [k for k, t in zip(keys, train) if t]
        check_student(train_keys, learnt, manifest, manifest_keys, fold)
        clf, z = probe(x, df, train, c, aug)
        record = {"fold": schema.ALL_FOLD if fold is None else fold, "protocol": protocol,
                  schema.TRAIN_SPEAKERS: sorted(learnt), "clips": int(train.sum()),
                  "learnt_labels": [str(lab) for lab in clf.classes_], **common, **extra,
                  "settings": {**settings, "C": float(c)}}
        if test.any():
            held = fold_table(df, test, product_order(clf.predict_proba(z[test]), clf.classes_), list(EMOTIONS), fold)
            # the layout of a cross-validation's predictions (as encoder_probe.write_table gives them)
            held = held.rename(columns={"path": "file"}).drop(columns=["emotion"])
            figures = evaluation.summary(held["true"], held["pred"], list(EMOTIONS))
            record.update(test_clips=int(test.sum()), test_accuracy=figures["accuracy"], test_uar=figures["uar"])
            teacher.write_held_out(folder, name, held)
        record["made_in_seconds"] = round(time.monotonic() - t0, 1)
        # the record goes last (write_table): a fold interrupted before it is made again
        teacher.write_table(folder, name, train_keys, product_order(clf.predict_proba(z[train]), clf.classes_),
                            list(EMOTIONS), record)
        said = f", test accuracy {record['test_accuracy']:.3f}" if "test_accuracy" in record else ""
        print(f"{folder / name}: C={c}, {record['clips']} training clips{said}", flush=True)
    return tables


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="the vector folder (encoder_probe.py's layout)")
    ap.add_argument("--choices", type=Path, required=True,
                    help="the probe's emobox6 choices (encoder_probe.py cv's <out>_choices.json)")
    ap.add_argument("--out", type=Path, required=True, help="folder of the tables (fold-K/<name>.*)")
    ap.add_argument("--name", default="probe", help="the tables' name in each fold folder")
    ap.add_argument("--folds", help="comma-separated emobox6 folds (default: all six; 'none': only fold-all, "
                                    "with --all)")
    ap.add_argument("--all", action="store_true", help="also fold-all/: the probe on every clip")
    ap.add_argument("--all-c", type=float, metavar="C",
                    help="with --all: this C (default: chosen by nested leave-one-corpus-out, as the shipped probe)")
    ap.add_argument("--channel-copies", choices=[*sorted(COPY_FILES), "none"], default="babble",
                    help="the channel copies the probe also trains on (WNA: babble)")
    ap.add_argument("--n-copies", type=int, default=1, metavar="N", help="each clip's first N copies (WNA: 1)")
    ap.add_argument("--dataset", help="the student's dataset, whose clips the keys name (default: the vector "
                                      "folder's corpora, under the data root SER_DATA_DIR)")
    args = ap.parse_args(argv)
    if args.all_c is not None and not args.all:
        ap.error("--all-c goes with --all")
    if args.folds == "none" and not args.all:
        ap.error("--folds none writes nothing without --all")
    folds = None if args.folds is None else [] if args.folds == "none" else [int(f) for f in args.folds.split(",")]
    tables = write_probe_teachers(args.work, args.choices, args.out,
                                  copies=None if args.channel_copies == "none" else args.channel_copies,
                                  n_copies=args.n_copies, folds=folds, name=args.name, include_all=args.all,
                                  all_c=args.all_c, dataset=args.dataset)
    print(f"{len(tables)} teacher table(s) in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
