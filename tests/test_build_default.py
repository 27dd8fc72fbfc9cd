"""training/build_default.py: reused cross-validations and final runs are matched to the right member."""
import dataclasses
import importlib.util
import json

import pytest

from ser_core.training import TrainConfig

from conftest import ROOT

spec = importlib.util.spec_from_file_location("build_default", ROOT / "training" / "build_default.py")
build_default = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_default)


def test_two_members_of_one_architecture_are_told_apart_by_seed():
    given = {"ser_crnn@1": "runs/seed1", "ser_crnn": "runs/any", "seed004_dnn": "runs/dnn"}
    first = TrainConfig(arch="ser_crnn", seed=0)
    second = dataclasses.replace(first, seed=1)
    assert str(build_default.reused(first, given)) == "runs/any"
    assert str(build_default.reused(second, given)) == "runs/seed1"
    assert str(build_default.reused(TrainConfig(arch="seed004_dnn"), given)) == "runs/dnn"
    assert build_default.reused(TrainConfig(arch="seed000_cnn"), given) is None


def _final_run(tmp_path, cfg):
    (tmp_path / "model").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_dict(), "workers": 2}))
    return tmp_path


def test_a_reused_final_run_must_be_this_recipe_on_all_actors(tmp_path):
    final_cfg = TrainConfig(arch="ser_crnn", protocol="all", n_val_speakers=0, epochs=60, seed=1)
    run = _final_run(tmp_path, final_cfg)
    build_default.check_final(run, final_cfg)
    with pytest.raises(SystemExit, match="epochs, seed"):
        build_default.check_final(run, dataclasses.replace(final_cfg, epochs=30, seed=0))
    (run / "model").rmdir()
    with pytest.raises(SystemExit, match="model"):
        build_default.check_final(run, final_cfg)
