"""The ``ser`` command line: predict, export, train, cv, evaluate, runs, data.

Every expected failure prints one line (``error: ...``) and exits non-zero;
no traceback reaches the user.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import ConfigError, SERError

EXIT_ERROR = 2
LEAN_COMMANDS = ("predict", "export")


def _files(targets: list[str]) -> list[Path]:
    from .audio import AUDIO_EXTENSIONS

    out: list[Path] = []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS))
        else:
            out.append(p)
    return out


def cmd_predict(args) -> int:
    from . import runs
    from .predict import answer_shares, load_predictor, one_mood_note
    from .progress import Progress

    files = _files(args.inputs)
    if not files:
        raise SERError("no audio files found in the given paths")
    predictor = load_predictor(args.model or runs.active_model_dir(), runtime=args.runtime)
    adapted = None
    if args.adapt:
        if args.explain:
            raise SERError("--explain shows what the one-clip model heard; it does not go with --adapt")
        if not hasattr(predictor, "predict_adapted"):
            raise SERError(f"{predictor.model_dir or 'this model'} is not a Whisper probe: it has no adapted mode")
        answers_adapted, n_ref = predictor.predict_adapted([str(f) for f in files])
        adapted = iter(answers_adapted)
        # on stderr: stdout stays one row (or JSON line) per file
        print(f"adapted to this recording setup: its {n_ref} clips with speech are the reference "
              f"(they should hold its ordinary mix of speech, not one emotion)", file=sys.stderr, flush=True)
        note = one_mood_note(answers_adapted)
        if note:
            print(f"warning: {note}", file=sys.stderr, flush=True)
    failed, answers = 0, []
    if not args.json:
        print(f"{'file':<40} {'emotion':<26} {'confidence':>10}")
    for f in files:
        bar = None
        try:
            def show(done, total, _f=f):
                nonlocal bar
                if bar is None:
                    bar = Progress(int(total), f"{_f.name}", enabled=None)
                bar.update(int(done) - bar.done)

            if adapted is not None:
                pred = next(adapted)
                if isinstance(pred, Exception):
                    raise pred
            else:
                pred = predictor.predict_file(f, name=str(f), progress=show)
        except SERError as exc:
            failed += 1
            msg = str(exc)
            if args.json:
                print(json.dumps({"file": str(f), "error": msg}), flush=True)
            else:
                print(f"{str(f):<40} error: {msg}", flush=True)
            continue
        finally:
            if bar is not None:
                bar.close()
        answers.append(pred)
        if args.json:
            mark = {"adapted": True} if adapted is not None else {}
            print(json.dumps({**pred.to_dict(windows=args.windows), **mark}), flush=True)
        else:
            emo = pred.summary() if pred.speech else "(no speech)"
            note = "  unfamiliar recording" if pred.unfamiliar else ""
            print(f"{str(f):<40} {emo:<26} {pred.confidence:>10.3f}{note}", flush=True)
            if args.windows and len(pred.windows) > 1:
                for w in pred.windows:
                    print(f"    {w.start:7.1f}-{w.end:7.1f}s  {w.emotion or '-':<10} {w.confidence:.3f}")
    if len(files) > 1:        # on stderr: stdout stays one row (or JSON line) per file
        print(answer_shares([p.best for p in answers], [p.not_sure for p in answers]), file=sys.stderr)
    if args.explain:
        failed += write_explanations(predictor, files, Path(args.explain))
    return EXIT_ERROR if failed else 0


def write_explanations(predictor, files: list[Path], out_dir: Path) -> int:
    """``ser predict --explain DIR``: each file's occlusion map as ``DIR/NAME.why.npz`` and ``.png``.

    Progress and failures go to stderr (stdout stays the predictions); returns the number of failures.
    """
    from . import explain
    from .config import atomic_write_bytes
    from .explain_png import saliency_png

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SERError(f"cannot write explanations into {out_dir}: {exc.strerror or exc}") from None
    failed, used = 0, set()
    for f in files:
        stem, k = f.stem, 2
        while stem in used:                                # two inputs of one name from different folders
            stem, k = f"{f.stem}-{k}", k + 1
        used.add(stem)
        try:
            expl = explain.explain_file(predictor, f, name=str(f))
        except SERError as exc:
            failed += 1
            print(f"error: {exc} (no explanation written)", file=sys.stderr, flush=True)
            continue
        try:
            npz = explain.save_npz(expl, out_dir / f"{stem}.why.npz")
            png = atomic_write_bytes(out_dir / f"{stem}.why.png", saliency_png(expl))
        except OSError as exc:
            failed += 1
            print(f"error: {f}: cannot write its explanation into {out_dir}: {exc.strerror or exc}", file=sys.stderr)
            continue
        print(f"why {f}: {npz}, {png.name} ({expl.emotion}; {100 * expl.voiced_mass:.0f} % of the saliency in the "
              f"voiced stretch {expl.voiced[0]:.2f}-{expl.voiced[1]:.2f} s)", file=sys.stderr, flush=True)
    return failed


def cmd_batch(args) -> int:
    from . import lite, runs
    from .batch import answer_summary, run_batch

    model_dir = args.model or runs.active_model_dir()
    res = run_batch(args.inputs, args.out, model_dir, engine=args.engine,
                    workers=args.workers, address=args.address, windows=args.windows, csv=args.csv,
                    part_files=args.part_files, chunk=args.chunk, runtime=args.runtime)
    note = f", {res.resumed} already done by an earlier run" if res.resumed else ""
    if res.steady_note is None:      # the rate an archive's job settles at, as the bench measures it
        note = f"; {res.steady_clips_per_s:.1f} after a {res.first_result_s:.1f} s start-up" + note
    print(f"scored {res.scored} of {res.files} files in {res.seconds:.1f} s ({res.clips_per_s:.1f} clips/s{note}); "
          f"{res.errors} error rows")
    print(answer_summary(res.paths["results"]))
    for path in res.paths.values():
        print(f"written: {path}")
    if args.runtime == "auto" and lite.fresh_model(model_dir, "int8"):
        print(INT8_HINT)
    return 0


#: What ``ser batch`` says after a float job on a model with int8 copies (for the RAVDESS ensemble in models/ravdess,
#: the default until session 36, the bench's local-N-int8 against local-N rates and their agreement:
#: training/results/bench.json, docs/speed.md).
INT8_HINT = ("this model has int8 copies: --runtime int8 scores about twice the clips a second, with the float "
             "model's answer on all but a few clips in a thousand (use a new --out folder)")


def cmd_export(args) -> int:
    from . import lite
    from .modeldir import is_model_dir, is_probe

    if not is_model_dir(args.model_dir):
        raise SERError(f"{args.model_dir} is not a model folder (spec.json and model.keras, an ensemble, or a probe)")
    if is_probe(args.model_dir):
        print(f"{args.model_dir} is a probe on Whisper's encoder: no network to export, and it runs without "
              "TensorFlow already")
        return 0
    if not lite.available():
        raise SERError("the LiteRT runtime is not installed: pip install -r requirements.txt")
    lite.export(args.model_dir, int8=args.int8)
    return 0


def _train_config(args):
    """The TrainConfig of ``ser train`` / ``ser cv``: the flags given, TrainConfig's defaults for the rest."""
    from .trainconfig import TrainConfig, options

    d = {}
    for opt in options():
        value = getattr(args, opt.name, None)
        if value is None:
            continue
        if opt.kind == "strs":
            parts = [p.strip() for p in value.split(",") if p.strip()]
            value = tuple(_speaker_ids(value) if opt.meta.get("speaker_ids") else parts)
        elif opt.kind == "dict":
            value = _pairs(value, opt.flag)
        elif opt.kind == "bool" and opt.optional:
            value = value == "on"
        d[opt.name] = value
    return TrainConfig(**d).resolved()


def _speaker_ids(text: str) -> list[str]:
    """'1,2,5' -> RAVDESS speaker ids; other ids pass through."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if part.isdigit():
            out.append(f"ravdess-{int(part):02d}")
        elif part:
            out.append(part)
    return out


def cmd_train(args) -> int:
    from . import runs, schema
    from .training import Logger, install_stop_handlers, train

    cfg = _train_config(args)
    if args.background:
        run_dir = runs.start(cfg.to_dict())
        print(f"started run {run_dir.name} in the background; follow it with: ser runs, "
              f"or tail {run_dir / schema.LOG}")
        return 0
    run_dir = Path(args.run_dir) if args.run_dir else runs.new_run_dir(cfg.arch)
    run_dir.mkdir(parents=True, exist_ok=True)
    install_stop_handlers()
    log = Logger(run_dir, to_file=True)
    try:
        metrics = train(run_dir, cfg, log=log)
    except SERError as exc:
        runs.write_status(run_dir, "failed", message=str(exc))
        raise
    print(f"run: {run_dir}")
    if "accuracy" in metrics:
        print(f"accuracy {metrics['accuracy']:.3f}  UAR {metrics['uar']:.3f}  ({metrics['protocol']})")
    return 0


def cmd_cv(args) -> int:
    from . import runs
    from .training import Logger, cross_validate, install_stop_handlers

    cfg = _train_config(args)
    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out: the cross-validation folder to continue")
    if args.processes < 1:
        raise ConfigError(f"--processes must be 1 or more, not {args.processes}")
    out = Path(args.out) if args.out else runs.new_run_dir(f"cv-{cfg.arch}")
    out.mkdir(parents=True, exist_ok=True)
    install_stop_handlers()
    metrics = cross_validate(cfg, out, folds=folds, log=Logger(out, to_file=True), resume=args.resume,
                             processes=args.processes)
    print(f"cv: {out}")
    _print_metrics(metrics)
    return 0


def _print_metrics(metrics: dict) -> None:
    from .evaluation import classification_report

    print(f"protocol: {metrics.get('protocol')}")
    print(classification_report(metrics))
    for fold, m in metrics.get("per_fold", {}).items():
        print(f"  fold {fold}: accuracy {m['accuracy']:.3f}  UAR {m['uar']:.3f}")
    for name, c in metrics.get("per_corpus", {}).items():
        own = c["own"]
        print(f"  {name:<10} {c['n']:>5} clips: accuracy {c['accuracy']:.3f}; on its own {len(c['own_emotions'])} "
              f"emotions {own['accuracy']:.3f} (chance {1 / len(c['own_emotions']):.3f}), UAR {own['uar']:.3f}")


def cmd_evaluate(args) -> int:
    from . import schema
    from .evaluation import evaluate, gender_gap, load_predictions, paired_difference
    from .jsonio import read_json

    csv = _predictions_csv(args.run)
    df = load_predictions(csv)
    prior = read_json(csv.parent / schema.METRICS, {}) or {}
    labels = [c[2:] for c in df.columns if c.startswith("p_")] or sorted(set(df["true"]) | set(df["pred"]))
    metrics = evaluate(df, labels, protocol=prior.get(schema.PROTOCOL, ""),
                       speaker_independent=prior.get(schema.SPEAKER_INDEPENDENT, True))
    if schema.PROTOCOL_INFO in prior:
        metrics[schema.PROTOCOL_INFO] = prior[schema.PROTOCOL_INFO]
    try:
        metrics["gender_gap"] = gender_gap(df)
    except SERError:
        pass
    if args.against:
        other_csv = _predictions_csv(args.against)
        other = load_predictions(other_csv)
        metrics["against"] = {"predictions": str(other_csv),
                              **(paired_difference(df, other) or {"n": 0, "text": "The two share no clip: "
                                                                   "their accuracies cannot be compared clip by clip."})}
    if args.json:
        print(json.dumps(metrics, indent=1))
        return 0
    _print_metrics(metrics)
    if "gender_gap" in metrics:
        g = metrics["gender_gap"]
        print(f"gender gap (female - male): {g['gap'] * 100:+.1f} points, 95% CI "
              f"[{g['ci95'][0] * 100:+.1f}, {g['ci95'][1] * 100:+.1f}] — {g['verdict']}")
    if args.against:
        print(f"A: this evaluation, B: {metrics['against']['predictions']}. {metrics['against']['text']}")
    return 0


def _predictions_csv(name: str) -> Path:
    """A predictions.csv, a run or cross-validation folder holding one, or a run's name under the runs folder."""
    from . import runs, schema

    target = Path(name)
    if not target.exists():
        cand = runs.runs_dir() / name
        target = cand if cand.exists() else target
    return target if target.name.endswith((".csv", ".csv.gz")) else target / schema.PREDICTIONS


def cmd_runs(args) -> int:
    from . import runs

    rows = runs.list_runs()
    if not rows:
        print("no runs yet")
        return 0
    for r in rows:
        st = r["status"]
        m = r["metrics"] or {}
        acc = f"{m['accuracy']:.3f}" if "accuracy" in m else "-"
        print(f"{r['id']:<45} {st.get('state', '?'):<11} epoch {st.get('epoch', 0)}/{st.get('epochs', '?'):<4} "
              f"test acc {acc}  {st.get('message', '')}")
    return 0


def _named_run(name: str) -> Path:
    """A run folder given by its path or by its name under the runs folder; a SERError when there is none."""
    from . import runs, schema

    run_dir = Path(name) if Path(name).exists() else runs.runs_dir() / name
    if not (run_dir / schema.STATUS).exists():
        raise SERError(f"no run named {name}")
    return run_dir


def cmd_stop(args) -> int:
    from . import runs

    run_dir = _named_run(args.run)
    runs.stop(run_dir)
    print(f"asked run {run_dir.name} to stop")
    return 0


def cmd_resume(args) -> int:
    from . import runs, schema

    run_dir = _named_run(args.run)
    if args.background:
        runs.resume_run(run_dir)
        print(f"resumed run {run_dir.name} in the background; follow it with: ser runs, "
              f"or tail {run_dir / schema.LOG}")
        return 0
    from .training import run_from_dir

    runs.ready_to_resume(run_dir)
    code = run_from_dir(run_dir, log_to_file=True, resume_run=True)
    status = runs.read_status(run_dir)
    print(f"run {run_dir.name}: {status.get('state')}" + (f" ({status['message']})" if status.get("message") else ""))
    return code


def cmd_promote(args) -> int:
    from . import runs

    run_dir = _named_run(args.run)
    dest = runs.promote(run_dir)
    print(f"active model: {dest}")
    return 0


def cmd_robustness(args) -> int:
    from .progress import Progress
    from .robustness import RESULT_FILE, evaluate_shifts, format_table

    shifts = [s.strip() for s in args.shifts.split(",") if s.strip()] if args.shifts else None
    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    bar = Progress(0, "robustness")

    def show(done, total):
        bar.total = total
        bar.update(done - bar.done)

    result = evaluate_shifts(args.cv_dir, shifts=shifts, seed=args.seed, progress=show, folds=folds,
                             workers=args.workers, corpus=args.corpus)
    bar.close()
    print(format_table(result))
    print(f"written: {Path(args.cv_dir) / RESULT_FILE}")
    return 0


def cmd_ensemble(args) -> int:
    from . import ensemble, runs

    if args.ensemble_cmd == "cv":
        out = Path(args.out) if args.out else runs.new_run_dir("cv-ensemble")
        metrics = ensemble.combine_cv([Path(d) for d in args.cv_dirs], out)
        print(f"cv: {out}")
        _print_metrics(metrics)
        for arch, acc in zip(metrics["members"], metrics["member_accuracy"]):
            print(f"  member {arch}: accuracy {acc:.3f}")
        return 0
    dest = ensemble.build([Path(d) for d in args.model_dirs], Path(args.out))
    print(f"ensemble model: {dest}")
    return 0


def cmd_archs(args) -> int:
    from . import features, models

    for name in models.names():
        a = models.get(name)
        print(f"{name:<20} {str(features.input_shape(a.features)):<16} {a.title}")
    return 0


def cmd_data(args) -> int:
    from . import datasets

    if args.data_cmd == "list":
        found = datasets.corpus_dirs()
        if not found:
            raise SERError(f"no corpora under the data root {datasets.data_dir()} (set SER_DATA_DIR to a folder "
                           "with one subfolder per corpus, or to RAVDESS itself)")
        for name, path in found.items():
            info = datasets.CORPORA.get(name)
            title = f"{info.title}, {info.language}" if info else "user corpus"
            print(f"{name:<12} {title:<45} {path}")
        return 0
    if args.data_cmd == "info":
        df = datasets.load_dataset(args.dataset)
        print(json.dumps(datasets.summary(df), indent=1))
        return 0
    if args.data_cmd == "download":
        from .download import download_ravdess

        dest = Path(args.dest) if args.dest else datasets.corpus_home("ravdess")
        path = download_ravdess(dest, api_url=args.api_url)
        print(f"RAVDESS is in {path}; point SER_DATA_DIR there if it is not the default")
        return 0
    if args.data_cmd == "import":
        return _data_import(args)
    raise SERError("usage: ser data download ravdess | ser data info | ser data list | "
                   "ser data import ZIP_OR_CSV --name NAME")


def _data_import(args) -> int:
    """Check a user corpus, list every problem, and store it under the data root when there is none."""
    from . import userdata
    from .progress import Progress

    if not args.check_only and not args.name:
        raise ConfigError("ser data import needs --name NAME: the new corpus's folder name under the data root")
    bar = Progress(0, "checking clips")

    def show(done, total):
        bar.total = total
        bar.update(done - bar.done)

    if args.check_only:
        result = userdata.check(args.source, progress=show)
        path = None
    else:
        path, result = userdata.import_corpus(args.source, args.name, root=args.root, progress=show)
    bar.close()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if not result.ok:
        for problem in result.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SERError(f"{result.source} cannot be imported: {len(result.problems)} problem(s) listed above; "
                       "nothing was stored")
    print(result.summary())
    if path is not None:
        print(f"stored as corpus {path.name} in {path}; train on it with: ser train --dataset {path.name}")
    return 0


def _pairs(items: list[str], flag: str) -> dict:
    """``width=32`` style pairs to keyword arguments (JSON values where they parse: numbers, true, null)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes NAME=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _add_train_args(p: argparse.ArgumentParser, *, with_fold: bool) -> None:
    """One flag per training option (TrainConfig's fields, their help, choices and defaults);
    a flag left out leaves the option at TrainConfig's default."""
    from .trainconfig import options

    for opt in options():
        if opt.meta.get("per_fold") and not with_fold:
            continue
        kw: dict = {"dest": opt.name, "default": None}
        help_text = opt.help
        if opt.kind == "bool" and not opt.optional:
            kw["action"] = "store_const"
            kw["const"] = not opt.default
            help_text = f"switch {'off' if opt.default else 'on'} {opt.noun}: {help_text}"
        elif opt.kind == "bool":
            kw["choices"] = ("on", "off")
            help_text += " (default: the architecture's)"
        elif opt.kind == "strs":
            kw["metavar"] = "A,B"
            if opt.choices:
                help_text += f"; comma-separated, from {', '.join(opt.choices)} ('' for none)"
        elif opt.kind == "dict":
            kw["action"] = "append"
            kw["metavar"] = "NAME=VALUE"
            help_text += " (repeatable)"
            kw["default"] = None
        else:
            kw["type"] = {"int": int, "float": float, "str": str}[opt.kind]
            if opt.choices:
                kw["choices"] = opt.choices
            elif opt.kind != "str":
                kw["metavar"] = "N" if opt.kind == "int" else "X"
        if opt.kind != "bool" and opt.kind != "dict":
            if opt.from_arch:
                help_text += " (default: the architecture's)"
            elif opt.default not in (None, ()):
                help_text += f" (default: {opt.default})"
        kw["help"] = help_text.replace("%", "%%")
        p.add_argument(opt.flag, **kw)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or, with ``only`` one of :data:`LEAN_COMMANDS`, just the commands
    whose start-up must stay light (``ser predict`` of one clip should take a second, not ten)."""
    from .lite import RUNTIMES

    parser = argparse.ArgumentParser(prog="ser", description="Speech emotion recognition workbench")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("predict", help="classify audio files or folders")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--model", help="model folder (default: the active model)")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--adapt", action="store_true",
                   help="the inputs are clips of one recording setup (at least 20 with speech): answer with the probe "
                        "adapted to it, their own statistics as its reference (a Whisper probe with an adapted probe)")
    p.add_argument("--windows", action="store_true", help="also show per-window results")
    p.add_argument("--runtime", choices=RUNTIMES, default=RUNTIMES[0],
                   help="LiteRT when the model folder holds a current export (auto, the default), or force one "
                        "(Keras networks only: a probe on Whisper's encoder, the shipped default, has no exports)")
    p.add_argument("--explain", metavar="DIR",
                   help="also write why each answer came out (occlusion saliency over time x mel bands) into DIR: "
                        "NAME.why.npz (saliency: frames x mel bands; times: s from the file's start; mel_hz; "
                        "emotion) and NAME.why.png")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("export", help="write model.tflite (LiteRT) beside each network of a model folder, so "
                                      "prediction runs without TensorFlow")
    p.add_argument("model_dir")
    p.add_argument("--int8", action="store_true",
                   help="write model.int8.tflite instead: int8 weights, about 3x faster, probabilities within "
                        "a few hundredths of the float model's (used only with --runtime int8)")
    p.set_defaults(fn=cmd_export)
    if only in LEAN_COMMANDS:
        return parser       # the other commands' flags import pandas and the architectures: not for these

    from .batch import CHUNKS, ENGINES, PART_FILES

    p = sub.add_parser("batch", help="score many files into a Parquet table (resumable; local pool or Ray)",
                       description="Score files, folders, glob patterns and CSV lists of paths into OUT/"
                                   "predictions.parquet, one row per file. Results are committed in parts: "
                                   "rerunning the same command after a crash scores only the rest. Files "
                                   "that cannot be scored are rows with an error; the exit code is 0 when "
                                   "the job finished.")
    p.add_argument("inputs", nargs="+", help="audio files, folders, glob patterns or .csv lists of paths")
    p.add_argument("--out", required=True, help="output folder (created; an existing job there is resumed)")
    p.add_argument("--model", help="model folder (default: the active model)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: a process pool on this machine; ray: Ray Data on a local or existing Ray cluster")
    p.add_argument("--workers", type=int, help="worker processes or Ray actors (default: one per core)")
    p.add_argument("--address", help="join this existing Ray cluster (e.g. ray://head:10001 or auto)")
    p.add_argument("--windows", action="store_true", help="also write per-window rows (OUT/windows.parquet)")
    p.add_argument("--runtime", choices=RUNTIMES, default=RUNTIMES[0],
                   help="as for ser predict; int8: a Keras model's int8 copies (models/ravdess ships them; others "
                        "need `ser export --int8 MODEL`), about twice the clips a second; a probe on Whisper's "
                        "encoder (the shipped default) has no network exports, so only auto")
    p.add_argument("--csv", action="store_true", help="also write the tables as CSV")
    p.add_argument("--part-files", type=int, default=PART_FILES,
                   help=f"files per committed part (default: {PART_FILES}); a kill loses at most one part's work")
    p.add_argument("--chunk", type=int, help="files per task sent to a worker (default: "
                   + ", ".join(f"{n} for {e}" for e, n in CHUNKS.items()) + ")")
    p.set_defaults(fn=cmd_batch)

    p = sub.add_parser("train", help="train one model")
    _add_train_args(p, with_fold=True)
    p.add_argument("--run-dir")
    p.add_argument("--background", action="store_true", help="start as a separate process and return")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("cv", help="cross-validate an architecture (out-of-fold predictions for every clip)")
    _add_train_args(p, with_fold=False)
    p.add_argument("--folds", help="comma-separated subset of folds")
    p.add_argument("--out")
    p.add_argument("--resume", action="store_true",
                   help="keep folds of --out that finished with the same settings; an interrupted fold goes on "
                        "from its last finished epoch")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="train N folds at once, each in its own process pinned to its share of the CPU cores "
                        "(on few cores faster than one process on all of them); each fold keeps its own log.txt")
    p.set_defaults(fn=cmd_cv)

    p = sub.add_parser("evaluate", help="metrics of a run, cv or predictions.csv")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--against", metavar="OTHER", help="another run, cv or predictions.csv: is the difference in "
                   "accuracy real (McNemar's exact test on the clips both were tested on)?")
    p.set_defaults(fn=cmd_evaluate)

    sub.add_parser("runs", help="list training runs").set_defaults(fn=cmd_runs)
    p = sub.add_parser("stop", help="stop a running training run")
    p.add_argument("run")
    p.set_defaults(fn=cmd_stop)
    p = sub.add_parser("resume", help="continue a stopped or interrupted run from its last finished epoch "
                                      "(a cross-validation: its unfinished folds)")
    p.add_argument("run", help="the run's folder, or its name under the runs folder")
    p.add_argument("--background", action="store_true", help="as a separate process, and return")
    p.set_defaults(fn=cmd_resume)
    p = sub.add_parser("promote", help="make a finished run's model the active model")
    p.add_argument("run")
    p.set_defaults(fn=cmd_promote)
    sub.add_parser("archs", help="list architectures").set_defaults(fn=cmd_archs)

    p = sub.add_parser("robustness", help="accuracy of a cross-validation's models under channel shifts")
    p.add_argument("cv_dir")
    p.add_argument("--corpus", help="only this corpus's test clips (e.g. ravdess of a multi-corpus cross-validation)")
    p.add_argument("--shifts", help="comma-separated subset of: opus16k,telephone,gain-20db,gain+10db,"
                                    "white10db,babble10db,reverb")
    p.add_argument("--folds", help="comma-separated subset of folds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, help="worker processes (default: one per core; 0: none)")
    p.set_defaults(fn=cmd_robustness)

    p = sub.add_parser("ensemble", help="combine models that hear different features (mean of probabilities)")
    esub = p.add_subparsers(dest="ensemble_cmd", required=True)
    e = esub.add_parser("cv", help="an ensemble's cross-validation from finished member cross-validations")
    e.add_argument("cv_dirs", nargs="+")
    e.add_argument("--out")
    e = esub.add_parser("build", help="an ensemble model folder from finished model folders")
    e.add_argument("model_dirs", nargs="+")
    e.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_ensemble)

    p = sub.add_parser("data", help="dataset download, info and import of your own corpus")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    d = dsub.add_parser("download", help="download and unpack a corpus")
    d.add_argument("corpus", choices=["ravdess"])
    d.add_argument("--dest")
    d.add_argument("--api-url", help=argparse.SUPPRESS)
    d = dsub.add_parser("info", help="counts of a dataset")
    d.add_argument("--dataset", default="ravdess", help="e.g. ravdess, ravdess+ased+emovo+urdu, my.csv")
    dsub.add_parser("list", help="the corpora found under the data root (SER_DATA_DIR)")
    d = dsub.add_parser("import", help="check your own corpus and store it under the data root",
                        description="A zip (or folder) with one folder per emotion, or a CSV of path, emotion"
                                    "[, speaker, gender] (inside the zip with the audio, or on disk with paths "
                                    "relative to it). Every problem is listed; nothing is stored unless there is "
                                    "none. The corpus becomes <data root>/NAME/.")
    d.add_argument("source", metavar="ZIP_OR_CSV")
    d.add_argument("--name", help="the new corpus's name (lower-case letters, digits, - and _)")
    d.add_argument("--root", help="the data root (default: SER_DATA_DIR)")
    d.add_argument("--check-only", action="store_true", help="only check and report; store nothing")
    p.set_defaults(fn=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(only=argv[0] if argv else None).parse_args(argv)
    try:
        return args.fn(args)
    except SERError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
