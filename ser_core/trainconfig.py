"""Training options, declared once: the fields of :class:`TrainConfig`.

Each field carries its label, help, choices and bounds (``dataclasses.field(metadata=...)``).
The ``ser train`` / ``ser cv`` flags, the Train page's form and the validation in
:meth:`TrainConfig.resolved` are all built from them (:func:`options`), so a new option or
a changed default is written here and nowhere else. Importing this module is light: no
TensorFlow, no audio stack.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import models, schema
from .config import FeatureConfig, reject_unknown
from .errors import ConfigError

ONLINE_AUGS = ("time_mask", "freq_mask", "brightness_contrast", "freq_shift", "time_stretch")
AUG_TITLES = {"time_mask": "time masking", "freq_mask": "frequency masking",
              "brightness_contrast": "brightness / contrast", "freq_shift": "frequency shift (a few mel bands)",
              "time_stretch": "time stretch (0.85-1.15x)"}
PRECISIONS = ("auto", "float32", "bfloat16")
SCHEDULES = ("plateau", "cosine")
SCHEDULE_TITLES = {"plateau": "halve on plateau", "cosine": "cosine decay"}
BALANCES = ("emotion", "corpus", "cell")
BALANCE_TITLES = {"emotion": "within each emotion", "corpus": "within each corpus",
                  "cell": "every emotion of every corpus"}
PROTOCOL_TITLES = {
    "emobox6": "EmoBox 6-fold (speaker-independent)",
    "speaker_kfold": "Speaker k-fold (speaker-independent)",
    "loco": "Leave one corpus out (speaker-independent)",
    "random": "Random clips (speaker-DEPENDENT)",
    "all": "All speakers, no test set (a final model)",
}


def _protocols() -> tuple[str, ...]:
    from . import splits

    return (*splits.PROTOCOLS, "all")


def _profiles() -> tuple[str, ...]:
    from .channel import CHANNEL_PROFILES

    return tuple(CHANNEL_PROFILES)


def _profiles_help() -> str:
    from .channel import profiles_help

    return "background noise in the channel copies: " + profiles_help()


def _arch_title(name: str) -> str:
    return f"{models.get(name).title} ({name})" if name in models.REGISTRY else name


def option(default: Any = dataclasses.MISSING, *, label: str, help: str | Callable[[], str],
           default_factory: Callable[[], Any] | Any = dataclasses.MISSING, flag: str | None = None,
           choices: tuple | Callable[[], tuple] | None = None, titles: dict | Callable[[str], str] | None = None,
           min: float | None = None, max: float | None = None, above: float | None = None,
           below: float | None = None, span: tuple | None = None, picks: tuple | None = None,
           arch_fallback: Any = dataclasses.MISSING, per_fold: bool = False, speaker_ids: bool = False):
    """A TrainConfig field with what its CLI flag, form widget and validation need.

    Parameters
    ----------
    label, help
        Short name (form label, error messages) and one-line help (CLI help, form tooltip);
        ``help`` may be a function, for help built from a registry.
    flag
        The CLI flag when it is not ``--field-name`` (booleans that default to true are
        ``--no-field-name``).
    choices, titles
        The allowed values (a tuple, or a function returning one, for registries) and how
        each reads (a dict or a function).
    min, max, above, below
        Bounds checked by :meth:`TrainConfig.resolved`: inclusive (``min``, ``max``) or
        exclusive (``above``, ``below``).
    span, picks
        What a form offers: ``(low, high[, step])`` for a number or slider, or a few values
        to pick from; within the bounds but narrower.
    arch_fallback
        Marks a field whose ``None`` takes the architecture's training default, and the value
        used when the architecture has none.
    per_fold
        A setting of one run only (fold, test speakers): ``ser cv`` has no flag for it.
    speaker_ids
        The CLI reads ``1,2`` as RAVDESS speaker ids.
    """
    meta = {"label": label, "help": help, "flag": flag, "choices": choices, "titles": titles, "min": min,
            "max": max, "above": above, "below": below, "span": span, "picks": picks, "per_fold": per_fold,
            "speaker_ids": speaker_ids}
    meta = {k: v for k, v in meta.items() if v is not None and v is not False}
    if arch_fallback is not dataclasses.MISSING:
        meta["arch_fallback"] = arch_fallback
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@functools.lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where mixed precision pays."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _same_kind(value: Any, default: Any) -> bool:
    """Whether an override fits a setting: bool for bool, str for str, int for int, a number (or None) for floats."""
    if isinstance(default, (bool, str)):
        return type(value) is type(default)
    if isinstance(value, bool):
        return False
    if isinstance(default, int):
        return isinstance(value, int)
    return value is None or isinstance(value, (int, float))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``None`` fields take the architecture's default."""

    dataset: str = option("ravdess", label="Dataset",
                          help="a corpus under the data root (ravdess, ased, emovo, urdu), NAME:PATH for a "
                               "corpus elsewhere (tess, crema-d, savee, emodb), a CSV, or a folder per label; "
                               "join with + (ravdess+ased)")
    arch: str = option("ser_crnn", label="Architecture", choices=models.names, titles=_arch_title,
                       help="the model to train (ser archs lists them; ser_crnn is the project's own)")
    protocol: str = option("emobox6", label="Protocol", choices=_protocols, titles=PROTOCOL_TITLES,
                           help="which speakers test: emobox6 (RAVDESS's six speaker folds), speaker_kfold "
                                "(k speaker folds), loco (leave one corpus out), random (random clips, "
                                "speaker-DEPENDENT), all (no test set: a final model)")
    fold: int = option(1, label="Fold", min=1, per_fold=True, help="which of the protocol's folds tests")
    k: int = option(5, label="Speaker folds", min=2, help="how many folds speaker_kfold deals the speakers into")
    speakers: tuple[str, ...] = option((), label="Speakers", speaker_ids=True,
                                       help="train and test on these speakers only, e.g. 1,2,3,4 for RAVDESS "
                                            "actors")
    test_speakers: tuple[str, ...] = option((), label="Test speakers", per_fold=True, speaker_ids=True,
                                            help="test on these speakers instead of the protocol's fold, e.g. "
                                                 "1,2 for RAVDESS actors")
    n_val_speakers: int = option(2, label="Validation speakers", flag="--val-speakers", min=0, span=(0, 6),
                                 help="training speakers held out for early stopping; 0 trains on all of "
                                      "them and keeps the last epoch (the shipped recipe)")
    epochs: int = option(60, label="Epochs", min=1, span=(1, 500),
                         help="passes over the training clips (early stopping may end sooner)")
    batch_size: int = option(32, label="Batch size", min=1, picks=(8, 16, 32, 64, 128),
                             help="clips per gradient step")
    learning_rate: float = option(1e-3, label="Learning rate", flag="--lr", above=0,
                                  picks=(1e-4, 3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3),
                                  help="Adam's learning rate (the peak of the cosine schedule)")
    label_smoothing: float | None = option(None, label="Label smoothing", min=0, below=1, span=(0.0, 0.3, 0.05),
                                           arch_fallback=0.0,
                                           help="share of each target spread over the other emotions")
    teacher: str = option("", label="Teacher model",
                          help="distil a model folder's probabilities (or a folder of teacher tables, see "
                               "training/teachers.py) into this one; {fold} in the path becomes the run's fold "
                               "('all' for a run on every speaker), "
                               "so each fold learns from a teacher of its own training speakers (a teacher that "
                               "learnt from a speaker the run holds out is refused); empty: no teacher")
    distill: float = option(0.0, label="Distillation share", min=0, max=1, span=(0.0, 1.0, 0.1),
                            help="share of the teacher's probabilities in every training target (the rest is "
                                 "the clip's emotion); 0 is off")
    distill_temperature: float = option(1.0, label="Teacher temperature", above=0, picks=(1.0, 2.0, 4.0),
                                        help="soften the teacher's probabilities as softmax(log p / T) before they "
                                             "enter the targets: a teacher sure of the clips it learnt from then "
                                             "still tells which wrong emotions it finds close; 1 keeps them")
    class_weights: bool = option(True, label="Class weights",
                                 help="weight the loss so rare emotions (neutral) count as much as the others")
    corpus_balance: bool = option(True, label="Corpus balance",
                                  help="with class weights, every corpus that has an emotion weighs the same "
                                       "within it, so the largest corpus does not decide what an emotion "
                                       "sounds like (no effect on one corpus)")
    balance_within: str = option("emotion", label="Balance", choices=BALANCES, titles=BALANCE_TITLES,
                                 help="with corpus balance: every emotion weighs the same and, within it, every "
                                      "corpus that has it (emotion); or every corpus weighs the same and, "
                                      "within it, every emotion it has (corpus), so no corpus's own emotions "
                                      "are skewed by how many other corpora share them; or every emotion of "
                                      "every corpus weighs the same (cell): each corpus balanced on its own "
                                      "and weighing by how many emotions it has")
    adversary: float = option(0.0, label="Corpus adversary", min=0, max=2, span=(0.0, 2.0, 0.1),
                              help="strength of a corpus-adversarial head: a small classifier learns which "
                                   "training corpus a clip comes from, and its reversed gradient teaches the "
                                   "network to forget it (ramped up over the run); needs two or more corpora; "
                                   "0 is off")
    corpus_experts: bool = option(False, label="Corpus experts",
                                  help="one emotion head per training corpus, blended by a small classifier of "
                                       "which corpus a clip sounds like, so corpora that draw an emotion's "
                                       "boundary differently need not share one; the saved model needs no "
                                       "corpus name to predict; needs two or more corpora")
    targeted_aug: bool | None = option(None, label="Targeted augmentation", arch_fallback=False,
                                       help="noisy, gain-shifted and masked copies of minority-class clips "
                                            "until the classes balance")
    online_aug: tuple[str, ...] | None = option(None, label="Online augmentation", flag="--aug",
                                                choices=ONLINE_AUGS, titles=AUG_TITLES, arch_fallback=(),
                                                help="augmentations of every training batch")
    mixup: float | None = option(None, label="Mixup alpha (0 = off)", min=0, span=(0.0, 0.4, 0.1),
                                 arch_fallback=0.0,
                                 help="blend pairs of training examples and their labels (Beta(alpha, alpha) "
                                      "weights); 0 is off")
    channel_aug: float | None = option(None, label="Channel augmentation", min=0, span=(0.0, 2.0, 0.1),
                                       arch_fallback=0.0,
                                       help="extra training copies per clip through a random room, background "
                                            "noise, microphone and codec (1.0 doubles the training set; "
                                            "training speakers only)")
    channel_profile: str = option("v1", label="Channel profile", choices=_profiles, help=_profiles_help)
    patience: int = option(15, label="Early-stopping patience", min=1, span=(1, 500),
                           help="stop when validation accuracy has not improved for this many epochs")
    schedule: str = option("plateau", label="Learning-rate schedule", choices=SCHEDULES, titles=SCHEDULE_TITLES,
                           help="halve the rate when validation loss stalls, or warm up for two epochs and "
                                "decay along a cosine to 1 % by the last epoch")
    precision: str = option("auto", label="Precision", choices=PRECISIONS,
                            help="bfloat16 mixed precision where the CPU has native bfloat16 (auto), or force one")
    seed: int = option(0, label="Seed", min=0, span=(0, 10_000),
                       help="seed of the initial weights, the augmentation and (without a split seed) the split")
    split_seed: int | None = option(None, label="Split seed", min=0,
                                    help="seed of the random split and of the validation speakers (default: the "
                                         "seed), so models with different seeds can share one split")
    ensemble: int = option(1, label="Ensemble size", min=1,
                           help="train N seeds and average them into one model")
    features: dict = option(label="Feature settings", flag="--feature", default_factory=dict,
                            help="override one of the architecture's feature settings, e.g. n_mels=128 "
                                 "(saved with the model, so prediction uses it too)")
    arch_params: dict = option(label="Architecture parameters", flag="--param", default_factory=dict,
                               help="an architecture parameter, e.g. width=32")
    workers: int | None = option(None, label="Feature workers", min=0,
                                 help="processes extracting features (default: one per core)")

    def resolved(self) -> "TrainConfig":
        """Fill ``None`` fields from the architecture's defaults and validate every option."""
        models.get(self.arch)
        filled = {name: value for name, value in arch_defaults(self.arch).items() if getattr(self, name) is None}
        if "online_aug" in filled or self.online_aug is not None:
            filled["online_aug"] = tuple(filled.get("online_aug", self.online_aug))
        if self.precision == "auto":
            filled["precision"] = "bfloat16" if bf16_supported() else "float32"
        cfg = dataclasses.replace(self, **filled)
        for opt in options():
            opt.check(getattr(cfg, opt.name))
        models.check_params(cfg.arch, cfg.arch_params)
        cfg.feature_config()
        if cfg.distill > 0 and not cfg.teacher:
            raise ConfigError("a distillation share needs a teacher model (--teacher)")
        if cfg.adversary > 0 and len(cfg.dataset.split("+")) < 2:
            raise ConfigError("a corpus adversary needs two or more corpora, e.g. --dataset ravdess+ased")
        if cfg.corpus_experts and len(cfg.dataset.split("+")) < 2:
            raise ConfigError("corpus experts need two or more corpora, e.g. --dataset ravdess+ased")
        if cfg.corpus_experts and cfg.adversary > 0:
            raise ConfigError("corpus experts and a corpus adversary pull opposite ways (the gate needs the "
                              "corpus the adversary hides): choose one")
        return cfg

    def teacher_dir(self) -> Path | None:
        """The teacher of this run's fold (``{fold}`` in ``teacher`` replaced by the fold, or by ``all`` for
        a run on every speaker), or None without distillation."""
        if self.distill <= 0 or not self.teacher:
            return None
        fold = schema.ALL_FOLD if self.protocol == "all" else str(self.fold)
        return Path(self.teacher.replace("{fold}", fold)).expanduser()

    @property
    def data_seed(self) -> int:
        """Seed of the split's random draws (random 80/20 split, validation actors).

        ``split_seed`` lets models with different seeds share one split, so they can be
        compared and ensembled on the same test clips; unset, the model seed draws it.
        """
        return self.seed if self.split_seed is None else self.split_seed

    def feature_config(self) -> FeatureConfig:
        """The architecture's feature settings with this run's overrides (``features``) applied."""
        base = models.get(self.arch).features
        if not self.features:
            return base
        reject_unknown(FeatureConfig, self.features, "feature setting")
        for key, value in self.features.items():
            default = getattr(base, key)
            if not _same_kind(value, default):
                raise ConfigError(f"feature setting {key} must be like its default {default!r}, not {value!r}")
        return dataclasses.replace(base, **self.features)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """A config from ``config.json`` or a recipe; settings added since it was saved take their defaults."""
        reject_unknown(cls, d, "training setting")
        d = dict(d)
        for opt in options():
            if opt.kind == "strs" and d.get(opt.name) is not None:
                d[opt.name] = tuple(d[opt.name])
        return cls(**d)


# ----------------------------------------------------------------------------- the declarations, read back
_KINDS = {bool: "bool", int: "int", float: "float", str: "str", dict: "dict"}
_KIND_WORDS = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "a string",
               "strs": "a list of strings", "dict": "a mapping of names to values"}


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "float") and isinstance(value, bool):
        return False
    if kind == "strs":
        return isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
    types = {"int": int, "float": (int, float), "str": str, "dict": dict}[kind]
    return isinstance(value, types)


@dataclass(frozen=True)
class Option:
    """One TrainConfig field as the CLI and the form see it (built by :func:`options`)."""

    name: str
    kind: str                  # bool, int, float, str, strs (a tuple of strings) or dict
    optional: bool             # None is allowed (the architecture's default, or "unset")
    default: Any
    meta: dict

    @property
    def label(self) -> str:
        return self.meta["label"]

    @property
    def help(self) -> str:
        text = self.meta["help"]
        return text() if callable(text) else text

    @property
    def noun(self) -> str:
        """The label inside a sentence: 'unknown learning-rate schedule ...'."""
        return self.label[:1].lower() + self.label[1:]

    @property
    def flag(self) -> str:
        if "flag" in self.meta:
            return self.meta["flag"]
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.kind == "bool" and self.default is True else f"--{dashed}"

    @property
    def choices(self) -> tuple | None:
        c = self.meta.get("choices")
        return tuple(c()) if callable(c) else c

    def title(self, value: Any) -> str:
        """How a choice reads in the form."""
        titles = self.meta.get("titles")
        if callable(titles):
            return titles(value)
        return titles.get(value, str(value)) if titles else str(value)

    @property
    def from_arch(self) -> bool:
        return "arch_fallback" in self.meta

    def check(self, value: Any) -> None:
        """Raise :class:`ConfigError` when ``value`` is outside the choices or the bounds."""
        if value is None:
            if self.optional:
                return
            raise ConfigError(f"{self.noun} must be set")
        if not _is_kind(value, self.kind):
            raise ConfigError(f"{self.noun} must be {_KIND_WORDS[self.kind]}, not {value!r}")
        choices = self.choices
        if choices is not None and self.kind == "strs":
            bad = set(value) - set(choices)
            if bad:
                raise ConfigError(f"unknown {self.noun}(s): {', '.join(sorted(bad))}; known: {', '.join(choices)}")
        elif choices is not None and value not in choices:
            raise ConfigError(f"unknown {self.noun} {value!r}; choose one of {', '.join(map(str, choices))}")
        if self.kind in ("int", "float"):
            m = self.meta
            for key, ok, words in (("min", lambda b: value >= b, "at least"), ("max", lambda b: value <= b, "at most"),
                                   ("above", lambda b: value > b, "above"), ("below", lambda b: value < b, "below")):
                if key in m and not ok(m[key]):
                    raise ConfigError(f"{self.noun} must be {words} {m[key]:g}, not {value:g}")


@functools.lru_cache(maxsize=1)
def options() -> tuple[Option, ...]:
    """Every training option, in TrainConfig's field order."""
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        kind = "strs" if typing.get_origin(base) is tuple else _KINDS[base]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out.append(Option(f.name, kind, optional, default, dict(f.metadata)))
    return tuple(out)


def option_named(name: str) -> Option:
    for opt in options():
        if opt.name == name:
            return opt
    raise KeyError(name)


def arch_defaults(arch: str) -> dict[str, Any]:
    """The values the architecture-dependent options (``None`` in TrainConfig) take for ``arch``."""
    d = models.get(arch).train_defaults
    return {opt.name: d.get(opt.name, opt.meta["arch_fallback"]) for opt in options() if opt.from_arch}


def setting_differences(saved: dict, cfg: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """The settings in which a saved run's config.json differs from ``cfg``; settings added
    after that run was saved count as their defaults."""
    want = json.loads(json.dumps(cfg.to_dict()))
    unset = json.loads(json.dumps(TrainConfig().to_dict()))
    return sorted(k for k in want if k not in ignore and saved.get(k, unset[k]) != want[k])
