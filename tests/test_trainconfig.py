"""Training options are declared once (TrainConfig's fields): the CLI and the form follow the declaration."""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ser_core import schema
from ser_core.cli import _train_config, build_parser
from ser_core.errors import ConfigError
from ser_core.trainconfig import ONLINE_AUGS, TrainConfig, arch_defaults, option_named, options, setting_differences

ROOT = Path(__file__).resolve().parents[1]


def test_every_option_is_declared_with_a_label_and_help():
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert [o.name for o in options()] == names
    for opt in options():
        assert opt.label and opt.help, opt.name
    assert option_named("corpus_balance").default is True and "corpus" in option_named("corpus_balance").help


def test_the_cli_has_one_flag_per_option_and_leaves_every_default_to_trainconfig():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    train, cv = commands["train"], commands["cv"]
    dests = {a.dest for a in train._actions}
    assert {o.name for o in options()} <= dests
    assert {"fold", "test_speakers"}.isdisjoint({a.dest for a in cv._actions})      # one run's settings only
    assert _train_config(parser.parse_args(["train"])) == TrainConfig().resolved()
    assert TrainConfig().arch == "ser_crnn"
    aug = next(a for a in train._actions if a.dest == "online_aug")
    assert all(name in aug.help for name in ONLINE_AUGS)                              # all five, not three
    schedule = next(a for a in train._actions if a.dest == "schedule")
    assert tuple(schedule.choices) == option_named("schedule").choices


def test_cli_flags_reach_the_config():
    args = build_parser().parse_args(
        ["cv", "--arch", "seed004_dnn", "--aug", "time_mask,freq_shift", "--targeted-aug", "on",
         "--no-class-weights", "--no-corpus-balance", "--speakers", "1,2", "--lr", "0.002", "--param", "units=8",
         "--k", "3", "--val-speakers", "0", "--precision", "float32"])
    cfg = _train_config(args)
    assert (cfg.online_aug, cfg.targeted_aug, cfg.class_weights, cfg.corpus_balance) == \
        (("time_mask", "freq_shift"), True, False, False)
    assert (cfg.speakers, cfg.learning_rate, cfg.arch_params, cfg.k, cfg.n_val_speakers) == \
        (("ravdess-01", "ravdess-02"), 0.002, {"units": 8}, 3, 0)
    assert _train_config(build_parser().parse_args(["train", "--aug", ""])).online_aug == ()


@pytest.mark.parametrize("bad, message", [
    ({"epochs": 0}, "epochs must be at least 1, not 0"),
    ({"label_smoothing": 1.0}, "label smoothing must be below 1"),
    ({"learning_rate": 0.0}, "learning rate must be above 0"),
    ({"online_aug": ("time_warp",)}, "unknown online augmentation(s): time_warp"),
    ({"schedule": "sawtooth"}, "unknown learning-rate schedule 'sawtooth'"),
    ({"protocol": "loso"}, "unknown protocol 'loso'"),
    ({"batch_size": "32"}, "batch size must be a whole number, not '32'"),
    ({"class_weights": 1}, "class weights must be true or false"),
])
def test_bounds_and_choices_come_from_the_declaration(bad, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(arch="seed004_dnn", **bad).resolved()


def test_options_the_architecture_sets_take_its_defaults():
    assert arch_defaults("seed003_image_cnn")["label_smoothing"] == 0.1
    assert arch_defaults("seed000_cnn") == {"label_smoothing": 0.0, "targeted_aug": False, "online_aug": (),
                                            "mixup": 0.0, "channel_aug": 0.0}
    cfg = TrainConfig(arch="ser_crnn").resolved()
    assert cfg.online_aug == ("time_mask", "freq_mask", "freq_shift", "time_stretch") and cfg.targeted_aug is False


def test_every_recipe_loads_and_old_configs_read_with_defaults():
    recipes = sorted((ROOT / "training").rglob("*.json"))
    loaded = 0
    for path in recipes:
        data = json.loads(path.read_text())
        items = data.get("members", [data]) if isinstance(data, dict) else []
        items = items if isinstance(items, list) else []        # a run's status.json counts its "members"
        for item in items:
            if isinstance(item, dict) and "arch" in item and item.get("arch") != "ensemble" and "dataset" in item:
                TrainConfig.from_dict(item).resolved()
                loaded += 1
    assert loaded >= 5
    saved = {"arch": "seed000_cnn", "dataset": "ravdess", "epochs": 60}       # before newer settings existed
    cfg = TrainConfig.from_dict(saved)
    assert cfg.corpus_balance is True and cfg.channel_profile == "v1"
    assert setting_differences(saved, cfg) == []


def test_the_package_names_its_api_lazily_without_tensorflow():
    script = ("import sys, ser_core\n"
              "names = [getattr(ser_core, n) for n in ser_core.__all__]\n"
              "from ser_core import TrainConfig, train, cross_validate, load_predictor\n"
              "import ser_core.training\n"
              "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_protocol_records_and_old_label_only_metrics():
    cv = schema.cv_protocol("random", [1], speaker_independent=False)
    assert cv == {"name": "random", "folds": [1], "cross_validation": True, "speaker_independent": False,
                  "label": "random 1-fold cross-validation, out-of-fold predictions (speaker-DEPENDENT)"}
    assert schema.protocol_of({"protocol": "x", schema.PROTOCOL_INFO: cv}) == cv
    old = {"protocol": "emobox6 6-fold cross-validation, out-of-fold predictions", "speaker_independent": True,
           "folds": [{"fold": k} for k in range(1, 7)]}
    assert schema.protocol_of(old) == schema.cv_protocol("emobox6", [1, 2, 3, 4, 5, 6], True)
    assert schema.protocol_of({"protocol": "emobox6 fold 3 (speaker-independent)"})["folds"] == [3]
    assert schema.best_key(schema.VAL_MONITOR) == schema.BEST_VAL_ACCURACY == "best_val_accuracy"
    assert schema.fold_of(schema.fold_dir_name(4)) == 4 and schema.fold_of("model") is None
